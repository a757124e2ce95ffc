#!/usr/bin/env bash
# Real-browser tests of Ferry's web console: Debian's chromium, headless, driven by playwright-core.
#
# Installs tests/console/package-lock.json into tests/console/node_modules (only when the lock changed since
# the last install), checks /usr/bin/chromium, starts a `ferry server` in a temp dir on a free loopback port,
# creates the test's RAM users through the `ferry` CLI with the root credentials (setup.mjs), then runs the
# scenarios (scenarios.mjs). Screenshots of every page go to target/console-artifacts/. It builds nothing: it
# expects target/debug/ferry and target/debug/ferry-agent (`cargo build -p ferry -p ferry-agent`).
#
# Usage: tests/console/run.sh [scenario-name-substring]
# Environment: FERRY_BIN_DIR (default target/debug), CHROMIUM (default /usr/bin/chromium),
#              FERRY_CONSOLE_KEEP=1 keeps the temp dir (server data, logs) for inspection.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

bin_dir="${FERRY_BIN_DIR:-$root/target/debug}"
for b in ferry ferry-agent; do
  if [ ! -x "$bin_dir/$b" ]; then
    echo "tests/console/run.sh: $bin_dir/$b is missing: run \`cargo build -p ferry -p ferry-agent\` first" >&2
    exit 1
  fi
done
export FERRY_BIN_DIR="$bin_dir"
chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "tests/console/run.sh: $chromium is missing: install Debian's chromium (apt-get install -y chromium; scripts/test.sh does)" >&2
  exit 1
fi
export CHROMIUM="$chromium"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "tests/console/run.sh: Node.js >= 20 with npm is needed (Debian 13's nodejs + npm, or NodeSource's nodejs 20+)" >&2
  exit 1
fi
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "tests/console/run.sh: Node.js $(node --version) is too old: playwright-core needs 20 or newer" >&2
  exit 1
fi

stamp="$here/node_modules/.package-lock.sha256"
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "installing tests/console/package-lock.json into $here/node_modules"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ferry-console.XXXXXX")"
server_pid=""
cleanup() {
  status=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  # Instances are QEMU processes of their own (they outlive a server restart on purpose): stop the ones
  # this run launched, found by their pidfiles under the run's directory.
  for pidfile in "$work"/server/instances/*/qemu.pid; do
    [ -f "$pidfile" ] && kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    echo "--- ferry server log (tail) ---" >&2
    tail -n 60 "$work/server/server.log" 2>/dev/null >&2 || true
  fi
  if [ "${FERRY_CONSOLE_KEEP:-}" = 1 ] || [ "$status" -ne 0 ]; then
    echo "kept $work for inspection" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT INT TERM

port="$(node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")"
mkdir -p "$work/server"
RUST_LOG="${RUST_LOG:-info}" "$bin_dir/ferry" server --data-dir "$work/server" --listen "127.0.0.1:$port" \
  --heartbeat-interval 1 >"$work/server/server.log" 2>&1 &
server_pid=$!

# The credentials file is written before the listener is up: wait for both, with a deadline.
deadline=$((SECONDS + 90))
until [ -f "$work/server/root-credentials.json" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "tests/console/run.sh: ferry server exited during start-up" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "tests/console/run.sh: ferry server did not answer on 127.0.0.1:$port within 90 s" >&2
    exit 1
  fi
  sleep 0.2
done

export FERRY_CONSOLE_WORK="$work"
export FERRY_CONSOLE_DATA_DIR="$work/server"
export FERRY_CONSOLE_ENDPOINT="https://127.0.0.1:$port"
export FERRY_CONSOLE_ARTIFACTS="$root/target/console-artifacts"
mkdir -p "$FERRY_CONSOLE_ARTIFACTS"
node "$here/setup.mjs"
node "$here/scenarios.mjs" "$@"
