#!/usr/bin/env bash
# Runs Ferry's whole test suite. Installs the system packages the tests use (Debian, as root) first, so a
# fresh clone on a fresh machine needs nothing else. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the tests drive for real: partition tables, filesystems, loop devices, image conversion.
PACKAGES=(fdisk util-linux e2fsprogs xfsprogs dosfstools qemu-utils iproute2 mount)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: missing packages ${missing[*]}: run as root (or install them) so the tests can use them" >&2
    exit 1
  fi
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q || true
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# A one-shot run gains nothing from incremental compilation, whose caches double the target's size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
