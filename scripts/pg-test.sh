#!/usr/bin/env bash
# A private PostgreSQL cluster for Ferry's tests: `scripts/pg-test.sh start|stop|url|status`.
#
# The cluster lives in target/pg-test (override with PG_TEST_DIR): data/ (initdb), sock/ (the unix socket),
# port, password (0600) and log. It listens on 127.0.0.1 on a free port and on the socket only, never on
# another interface, and accepts only the generated password over TCP. `start` prints nothing; `url` prints
# the URL tests take from FERRY_TEST_POSTGRES (database `ferry_test`; tests that need a clean slate create
# their own databases from it). As root the server runs as the `postgres` user (PostgreSQL refuses root).
#
#   scripts/pg-test.sh start && export FERRY_TEST_POSTGRES=$(scripts/pg-test.sh url)
#   cargo test -p ferry-db
#   scripts/pg-test.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${PG_TEST_DIR:-$PWD/target/pg-test}"
DATA="$DIR/data"
SOCK="$DIR/sock"

die() {
  echo "scripts/pg-test.sh: $*" >&2
  exit 1
}

# The newest installed server version's binaries (Debian keeps them out of PATH).
bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] ||
    die "PostgreSQL server binaries not found under /usr/lib/postgresql: install the Debian package 'postgresql'"
  echo "$d"
}

# Runs a command as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

port_free() {
  ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

running() {
  [ -f "$DATA/PG_VERSION" ] && as_owner "$(bindir)/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

url() {
  [ -f "$DIR/port" ] && [ -f "$DIR/password" ] || die "no cluster in $DIR: run 'scripts/pg-test.sh start' first"
  echo "postgres://postgres:$(cat "$DIR/password")@127.0.0.1:$(cat "$DIR/port")/ferry_test"
}

start() {
  local bin
  bin=$(bindir)
  if running; then
    return 0
  fi
  mkdir -p "$DIR"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    rm -rf "$DATA" "$SOCK"
    mkdir -p "$DATA" "$SOCK"
    # A password of hex digits needs no escaping in a URL.
    (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$DIR/password")
    if [ "$(id -u)" -eq 0 ]; then
      id postgres >/dev/null 2>&1 || die "user 'postgres' missing: reinstall the Debian package 'postgresql'"
      chown postgres: "$DIR" "$DATA" "$SOCK"
      chmod 700 "$DATA"
      install -m 0600 -o postgres /dev/null "$DIR/pwfile"
    else
      install -m 0600 /dev/null "$DIR/pwfile"
    fi
    cat "$DIR/password" >"$DIR/pwfile"
    as_owner "$bin/initdb" -D "$DATA" -U postgres --pwfile="$DIR/pwfile" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 ||
      die "initdb failed; see $DIR/initdb.log"
    rm -f "$DIR/pwfile"
  fi
  mkdir -p "$SOCK"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$SOCK"
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 20000))
    if port_free "$port"; then break; fi
  done
  echo "$port" >"$DIR/port"
  # fsync off: a test cluster is thrown away, not recovered, and this keeps the tests fast. Many short-lived
  # per-test databases and several server replicas need more connections than the default 100.
  [ "$(id -u)" -ne 0 ] || { touch "$DIR/log" && chown postgres: "$DIR/log"; }
  as_owner "$bin/pg_ctl" -D "$DATA" -l "$DIR/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $SOCK -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null || die "PostgreSQL did not start; see $DIR/log"
  as_owner "$bin/psql" -h "$SOCK" -p "$port" -U postgres -d postgres -qAt \
    -c "SELECT 1 FROM pg_database WHERE datname = 'ferry_test'" | grep -q 1 ||
    as_owner "$bin/createdb" -h "$SOCK" -p "$port" -U postgres ferry_test
}

stop() {
  if running; then
    as_owner "$(bindir)/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) url ;;
  status) if running; then echo "running: $(url)"; else echo "stopped"; exit 3; fi ;;
  *) die "usage: scripts/pg-test.sh start|stop|url|status" ;;
esac
