#!/usr/bin/env bash
# A private S3-compatible server for Ferry's tests: `scripts/s3-test.sh start|stop|env|status`.
#
# The server is s3s-fs (crates.io: an S3 API over a directory, from the s3s project), installed once into
# target/tools with `cargo install` when missing (about 5 minutes of compiling on 2 cores). It lives in
# target/s3-test (override with S3_TEST_DIR): data/ (the buckets: one directory each), port, access-key,
# secret-key (0600), pid and log. It listens on 127.0.0.1 on a free port only, and accepts only the generated
# credentials. `start` creates the bucket `ferry-test` and prints nothing; `env` prints the variables the
# tests read (FERRY_TEST_S3 = the endpoint, FERRY_TEST_S3_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_REGION) as `export` lines:
#
#   scripts/s3-test.sh start && eval "$(scripts/s3-test.sh env)"
#   cargo test -p ferry-chunk --test object_store
#   scripts/s3-test.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."

S3S_VERSION=0.14.1 # the newest s3s-fs whose rust-version (1.92) this toolchain meets
DIR="${S3_TEST_DIR:-$PWD/target/s3-test}"
TOOLS="$PWD/target/tools"
BIN="$TOOLS/bin/s3s-fs"
BUCKET=ferry-test

die() {
  echo "scripts/s3-test.sh: $*" >&2
  exit 1
}

install_server() {
  if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$S3S_VERSION"; then
    return 0
  fi
  echo "scripts/s3-test.sh: installing s3s-fs $S3S_VERSION into $TOOLS (once)" >&2
  cargo install s3s-fs --version "$S3S_VERSION" --locked --features binary --root "$TOOLS" >&2 ||
    die "cargo install s3s-fs failed (see above): the S3 tests need it"
}

port_free() {
  ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

running() {
  [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null
}

endpoint() {
  [ -f "$DIR/port" ] || die "no server in $DIR: run 'scripts/s3-test.sh start' first"
  echo "http://127.0.0.1:$(cat "$DIR/port")"
}

env_lines() {
  running || die "the S3 test server is not running: run 'scripts/s3-test.sh start' first"
  echo "export FERRY_TEST_S3=$(endpoint)"
  echo "export FERRY_TEST_S3_BUCKET=$BUCKET"
  echo "export AWS_ACCESS_KEY_ID=$(cat "$DIR/access-key")"
  echo "export AWS_SECRET_ACCESS_KEY=$(cat "$DIR/secret-key")"
  echo "export AWS_REGION=us-east-1"
}

start() {
  install_server
  if running; then
    return 0
  fi
  mkdir -p "$DIR/data/$BUCKET"
  if [ ! -f "$DIR/secret-key" ]; then
    echo "ferrytest$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')" >"$DIR/access-key"
    (umask 077 && od -An -N20 -tx1 /dev/urandom | tr -d ' \n' >"$DIR/secret-key")
  fi
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 20000))
    if port_free "$port"; then break; fi
  done
  echo "$port" >"$DIR/port"
  # setsid: the server outlives this shell but not `stop`; its output goes to the log only.
  setsid "$BIN" --host 127.0.0.1 --port "$port" \
    --access-key "$(cat "$DIR/access-key")" --secret-key "$(cat "$DIR/secret-key")" \
    "$DIR/data" >"$DIR/log" 2>&1 </dev/null &
  echo $! >"$DIR/pid"
  # Ready when it accepts connections (bounded: 30 s).
  for _ in $(seq 1 300); do
    if ! running; then
      die "s3s-fs exited at start; see $DIR/log"
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  die "s3s-fs did not listen on 127.0.0.1:$port within 30 s; see $DIR/log"
}

stop() {
  if running; then
    local pid
    pid=$(cat "$DIR/pid")
    kill "$pid"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$DIR/pid"
  # Objects of tests that were killed before their cleanup: nothing refers to them any more.
  rm -rf "$DIR/data"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) env_lines ;;
  status) if running; then echo "running: $(endpoint)"; else echo "stopped"; exit 3; fi ;;
  *) die "usage: scripts/s3-test.sh start|stop|env|status" ;;
esac
