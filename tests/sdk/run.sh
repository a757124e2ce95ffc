#!/usr/bin/env bash
# Runs the scenario suite with the real official Alibaba Cloud Python SDKs against real Ferry servers.
#
# Creates (or reuses) a virtualenv in target/sdk-venv, installs tests/sdk/requirements.txt into it (only when
# that file changed since the last install), then runs pytest on tests/sdk. It builds nothing: it expects
# target/debug/ferry and target/debug/ferry-agent, so run `cargo build -p ferry -p ferry-agent` first.
#
# Usage: tests/sdk/run.sh [pytest args]   e.g. tests/sdk/run.sh -k migration -x
# Environment: FERRY_BIN_DIR (default target/debug) picks other binaries; PYTHON (default python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

bin_dir="${FERRY_BIN_DIR:-$root/target/debug}"
for b in ferry ferry-agent; do
  if [ ! -x "$bin_dir/$b" ]; then
    echo "tests/sdk/run.sh: $bin_dir/$b is missing: run \`cargo build -p ferry -p ferry-agent\` first" >&2
    exit 1
  fi
done
export FERRY_BIN_DIR="$bin_dir"

venv="$root/target/sdk-venv"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating the SDK test virtualenv in $venv"
  if ! "$python" -m venv "$venv"; then
    echo "tests/sdk/run.sh: \`$python -m venv\` failed: on Debian install python3-venv (scripts/test.sh does)" >&2
    rm -rf "$venv"
    exit 1
  fi
fi
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "installing tests/sdk/requirements.txt into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$want" >"$stamp"
fi

# Keep bytecode and pytest's cache out of the source tree.
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$here" "$@"
