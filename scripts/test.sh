#!/usr/bin/env bash
# Runs Ferry's whole test suite. Installs the system packages the tests use (Debian, as root) first, so a
# fresh clone on a fresh machine needs nothing else. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the tests drive for real: partition tables, filesystems, loop devices, image conversion, QEMU guests,
# sqlite3 (the audit-trail test edits the database behind the server's back), and the PostgreSQL server (the
# storage suite and the replica tests run on a private cluster, scripts/pg-test.sh), and Debian's chromium (the
# console's real-browser tests drive it headless; they also need Node.js >= 20 with npm, tests/console/run.sh).
# The lab of real source servers (crates/ferry-test-utils/src/lab) is built with debootstrap from the mirror apt
# is configured with, with LVM metadata from lvm2 and OVMF for UEFI guests; guest adaptation edits EFI system
# partitions with mtools (no vfat driver needed on the host); the instance tests boot Debian's kernel with a
# busybox/bash-static initramfs built with cpio.
PACKAGES=(fdisk util-linux e2fsprogs xfsprogs dosfstools qemu-utils qemu-system-x86 iproute2 mount sqlite3 postgresql chromium debootstrap ovmf lvm2 mtools busybox-static bash-static cpio)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: missing packages ${missing[*]}: run as root (or install them) so the tests can use them" >&2
    exit 1
  fi
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # qemu-system-x86 must come from the same release as an installed qemu-utils: a backported qemu-utils
  # (as on these machines) conflicts with Debian stable's qemu-system packages, and apt would remove it.
  # So take QEMU from the backports suite that qemu-utils came from.
  qemu_from=()
  if installed qemu-utils && [[ "$(dpkg-query -W -f='${Version}' qemu-utils)" == *bpo* ]]; then
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    mirror=$(scripts/debian-mirror.sh "$codename")
    echo "deb ${mirror} ${codename}-backports main" > /etc/apt/sources.list.d/ferry-test-backports.list
    qemu_from=(-t "${codename}-backports")
  fi
  others=()
  for p in "${missing[@]}"; do
    [ "$p" = qemu-system-x86 ] || others+=("$p")
  done
  apt-get update -q || true
  if [ ${#others[@]} -gt 0 ]; then
    apt-get install -y -q --no-install-recommends "${others[@]}"
  fi
  if ! installed qemu-system-x86; then
    apt-get install -y -q --no-install-recommends "${qemu_from[@]}" qemu-system-x86
  fi
fi

# A one-shot run gains nothing from incremental compilation, whose caches double the target's size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# A private PostgreSQL cluster (target/pg-test, loopback and a socket under target/ only) for the tests that
# run on both engines; stopped whatever way this script ends.
scripts/pg-test.sh start
trap 'scripts/pg-test.sh stop' EXIT

# A private S3-compatible server (s3s-fs, installed into target/tools with `cargo install` the first time:
# about 5 minutes on 2 cores; loopback only, generated credentials; scripts/s3-test.sh) for the object-store
# suite and the whole-stack S3 test, which read FERRY_TEST_S3 and the AWS_* credentials it exports.
scripts/s3-test.sh start
trap 'scripts/s3-test.sh stop; scripts/pg-test.sh stop' EXIT
eval "$(scripts/s3-test.sh env)"
FERRY_TEST_POSTGRES="$(scripts/pg-test.sh url)"
export FERRY_TEST_POSTGRES

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"

# The scenario suite with the real official Alibaba Cloud Python SDKs (tests/sdk/README.md) runs the server and
# agent binaries; `cargo test` does not necessarily leave both built, so build them (a no-op when current).
cargo build -p ferry -p ferry-agent --locked
tests/sdk/run.sh

# The web console in a real browser (headless chromium driven by playwright-core, tests/console/run.sh):
# sign-in with MFA, a whole migration from the console, a RAM denial; screenshots in target/console-artifacts/.
tests/console/run.sh
