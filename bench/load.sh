#!/usr/bin/env bash
# Ferry's control-plane load benchmark (bench/README.md, "Load benchmark"), in one command:
#
#   (a) one `ferry server` on SQLite, (b) three replicas on one PostgreSQL (a private, durable cluster this
#   script starts under the work directory) sharing a --shared-dir, each driven by `ferry-loadgen`:
#   N simulated agents registered through real activation and long-polling heartbeats like ferry-agent,
#   R replication runs in flight through the real agent code, and DescribeSourceServers /
#   DescribeReplicationJobs (PageSize 50) sampled at a steady rate. Reports heartbeats/s handled, p50/p99 of
#   both Describe calls, server CPU (utime+stime of the server's process tree over the window) and peak RSS
#   (VmHWM).
#
# Then a search for the load each setup carries with p99 < 100 ms: the heartbeat interval steps down
# (30 s, 15 s, 10 s, …) with the same sources, i.e. 2x, 3x, … the heartbeat rate of N sources at 30 s, until a
# step fails (a Describe p99 >= 100 ms, heartbeats not kept up, errors, or sources shown offline). Prints a
# table and the ratio (b)/(a), and writes bench/results/load-<date>.json.
#
# Everything listens on 127.0.0.1 only. Servers and PostgreSQL are started here and stopped at the end,
# whatever way the script ends. Not part of the test suite (crates/ferry-test-utils/tests/sim_smoke.rs is).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bench/load.sh [options]

  --setups LIST        which setups, "a", "b" or "a b" (default "a b")
  --sources N          simulated source servers (default 10000)
  --runs R             replication runs in flight (default 200)
  --disk-mib M         synthetic disk size per run, MiB (default 4)
  --warmup S           seconds before each measured window (default 60; at least one heartbeat interval)
  --duration S         measured seconds of the first step, 30 s heartbeats (default 180)
  --search-duration S  measured seconds of each later step of the search (default 60)
  --intervals LIST     heartbeat intervals of the search, first one is the base load (default "30 15 10 6 3 2 1")
  --describe-rate X    calls per second of each Describe action (default 10)
  --replicas K         replicas in setup (b) (default 3)
  --pin                pin the servers (and PostgreSQL) to CPU 0 and the load generator to CPU 1
  --nice-generator     run the simulated agents at nice 19: they take only the CPU the servers leave, as
                       agents on other machines would; the Describe calls keep their own thread at
                       normal priority (an API client on its own machine)
  --idle-generator     run the simulated agents under SCHED_IDLE: they get the CPU only when the servers
                       do not want it (nice 19 still delays them on this kernel); Describe calls as above
  --pg-statements      setup (b): load pg_stat_statements into PostgreSQL and write the 30 statements
                       with the most execution time (calls, total, mean, max) after each step to
                       <workdir>/b/pg-statements-<interval>.txt (warm-up included)
  --workdir DIR        data directories and logs (default bench-out/load; wiped per setup)
  --disks-dir DIR      where the simulated agents write the synthetic disks they replicate (default: a
                       private directory in /dev/shm, removed at the end): agents' disks are on their own
                       machines, so their writes must not load the servers' disk
  --no-build           use the binaries already in target/release
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SETUPS="a b"
SOURCES=10000
RUNS=200
DISK_MIB=4
WARMUP=60
DURATION=180
SEARCH_DURATION=60
INTERVALS="30 15 10 6 3 2 1"
DESCRIBE_RATE=10
REPLICAS=3
PIN=0
NICE_GEN=0
IDLE_GEN=0
PG_STATEMENTS=0
WORKDIR=$ROOT/bench-out/load
DISKS_DIR=""
BUILD=1
while [ $# -gt 0 ]; do
  case $1 in
    --setups) SETUPS=$2; shift 2 ;;
    --sources) SOURCES=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --disk-mib) DISK_MIB=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --search-duration) SEARCH_DURATION=$2; shift 2 ;;
    --intervals) INTERVALS=$2; shift 2 ;;
    --describe-rate) DESCRIBE_RATE=$2; shift 2 ;;
    --replicas) REPLICAS=$2; shift 2 ;;
    --pin) PIN=1; shift ;;
    --nice-generator) NICE_GEN=1; shift ;;
    --idle-generator) IDLE_GEN=1; shift ;;
    --pg-statements) PG_STATEMENTS=1; shift ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --disks-dir) DISKS_DIR=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "load.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
WORKDIR=$(realpath -m "$WORKDIR")
FERRY=$ROOT/target/release/ferry
LOADGEN=$ROOT/target/release/ferry-loadgen

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'load.sh: %s\n' "$*" >&2; exit 1; }

# 10,000 agents hold 10,000 connections: raise the open-file limit to the hard limit for everything started.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((SOURCES + 1000)) ] ||
  die "the open-file limit ($(ulimit -n)) is too low for $SOURCES agent connections: raise it (ulimit -Hn) or pass fewer --sources"

if [ "$BUILD" = 1 ]; then
  log "building (cargo build --release -p ferry -p ferry-test-utils --bin ferry-loadgen)"
  (cd "$ROOT" && cargo build --release -p ferry && cargo build --release -p ferry-test-utils --bin ferry-loadgen)
fi
[ -x "$FERRY" ] && [ -x "$LOADGEN" ] || die "release binaries missing: run without --no-build"

SERVER_CPU=()
LOADGEN_CPU=()
if [ "$PIN" = 1 ]; then
  SERVER_CPU=(taskset -c 0)
  LOADGEN_CPU=(taskset -c 1)
fi
AGENTS_PRIORITY=(--agents-nice 0)
if [ "$NICE_GEN" = 1 ]; then
  AGENTS_PRIORITY=(--agents-nice 19)
fi
if [ "$IDLE_GEN" = 1 ]; then
  AGENTS_PRIORITY+=(--agents-idle)
fi

PIDS=()
PG_DATA=""
PG_BIN=""
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  PIDS=()
  [ -z "${OWN_DISKS_DIR:-}" ] || rm -rf "$OWN_DISKS_DIR"
  if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# The simulated agents' disks: in memory unless told otherwise (up to --runs × --disk-mib at a time).
if [ -z "$DISKS_DIR" ]; then
  OWN_DISKS_DIR=$(mktemp -d /dev/shm/ferry-load-disks.XXXXXX)
  DISKS_DIR=$OWN_DISKS_DIR
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server DATA_DIR PORT INTERVAL [extra args…]: starts a server, waits until it answers; its PID goes to
# SERVER_PID (and PIDS, for the cleanup). Not called in a subshell, so that PIDS is kept.
start_server() {
  local data=$1 port=$2 interval=$3
  shift 3
  mkdir -p "$data"
  RUST_LOG=${FERRY_BENCH_LOG:-warn} "${SERVER_CPU[@]}" "$FERRY" server --data-dir "$data" --listen "127.0.0.1:$port" \
    --heartbeat-interval "$interval" ${FERRY_BENCH_SERVER_ARGS:-} "$@" >>"$data/server.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || die "ferry server ($data) exited: see $data/server.log"
    if [ -f "$data/root-credentials.json" ] &&
      curl -sfk --max-time 2 "https://127.0.0.1:$port/agent/v1/ca.pem" >/dev/null; then
      SERVER_PID=$pid
      return
    fi
    sleep 0.2
  done
  die "ferry server ($data) did not answer within 60 s: see $data/server.log"
}

stop_servers() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  PIDS=()
}

# A private PostgreSQL cluster with the default, durable settings (fsync and synchronous_commit on, as
# SQLite's synchronous=FULL in setup (a)), listening on 127.0.0.1 and a socket under the work directory.
start_postgres() {
  local dir=$1
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] || die "PostgreSQL server binaries not found: apt-get install postgresql"
  PG_DATA=$dir/data
  mkdir -p "$dir/sock"
  head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$dir/password"
  chmod 600 "$dir/password"
  chown -R postgres "$dir"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 --pwfile="$dir/password" >"$dir/initdb.log" 2>&1
  PG_PORT=$(free_port)
  # 3 replicas x 20 pooled connections, plus headroom; 512 MiB of shared buffers holds the whole database.
  local extra=""
  [ "$PG_STATEMENTS" = 1 ] && extra="-c shared_preload_libraries=pg_stat_statements"
  runuser -u postgres -- "${SERVER_CPU[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$dir/postgres.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $dir/sock -c max_connections=200 -c shared_buffers=512MB $extra" \
    start >/dev/null
  runuser -u postgres -- "$PG_BIN/createdb" -h "$dir/sock" -p "$PG_PORT" -U postgres ferry
  [ "$PG_STATEMENTS" = 1 ] && pg_sql "CREATE EXTENSION pg_stat_statements" >/dev/null
  PG_URL="postgres://postgres:$(cat "$dir/password")@127.0.0.1:$PG_PORT/ferry"
}

# Runs SQL in the benchmark's database as the cluster's superuser (over its socket).
pg_sql() {
  runuser -u postgres -- "$PG_BIN/psql" -h "$(dirname "$PG_DATA")/sock" -p "$PG_PORT" -U postgres -d ferry -c "$1"
}

# One step: (re)start the setup's servers with heartbeat interval $2, run the load for $3 s; the report's
# path goes to STEP_OUT. Not called in a subshell, so that PIDS and the ports are kept.
run_step() {
  local setup=$1 interval=$2 duration=$3
  local dir=$WORKDIR/$setup
  stop_servers
  local endpoints=() watch=()
  if [ "$setup" = a ]; then
    [ -n "${PORT_A:-}" ] || PORT_A=$(free_port)
    start_server "$dir/server" "$PORT_A" "$interval"
    endpoints+=(--endpoint "https://127.0.0.1:$PORT_A")
    watch+=(--watch "server=$SERVER_PID")
    CREDS=$dir/server/root-credentials.json
  else
    local i
    [ -n "${PORTS_B:-}" ] || { PORTS_B=""; for i in $(seq 1 "$REPLICAS"); do PORTS_B="$PORTS_B $(free_port)"; done; }
    i=0
    for port in $PORTS_B; do
      i=$((i + 1))
      start_server "$dir/r$i" "$port" "$interval" --database "$PG_URL" --shared-dir "$dir/shared"
      endpoints+=(--endpoint "https://127.0.0.1:$port")
      watch+=(--watch "replica$i=$SERVER_PID")
    done
    watch+=(--watch "postgres=$(head -n 1 "$PG_DATA/postmaster.pid")")
    CREDS=$dir/r1/root-credentials.json
  fi
  local out=$dir/step-$interval.json
  log "setup ($setup): heartbeat interval ${interval} s, ${SOURCES} sources, ${RUNS} runs, ${WARMUP} s warm-up, ${duration} s measured"
  "${LOADGEN_CPU[@]}" "$LOADGEN" "${endpoints[@]}" --credentials "$CREDS" --sources "$SOURCES" --runs "$RUNS" \
    --disk-mib "$DISK_MIB" --warmup "$WARMUP" --duration "$duration" --describe-rate "$DESCRIBE_RATE" \
    --work-dir "$DISKS_DIR/$setup" --state-file "$dir/agents.json" "${AGENTS_PRIORITY[@]}" "${watch[@]}" --out "$out" >/dev/null \
    2>>"$dir/loadgen.log" || { echo "loadgen failed: see $dir/loadgen.log" >&2; return 1; }
  if [ "$setup" = b ] && [ "$PG_STATEMENTS" = 1 ]; then
    pg_sql "SELECT calls, round(total_exec_time::numeric) AS total_ms, round(mean_exec_time::numeric, 2) AS mean_ms,
              round(max_exec_time::numeric, 1) AS max_ms, left(regexp_replace(query, '\s+', ' ', 'g'), 160) AS query
            FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 30" >"$dir/pg-statements-$interval.txt"
    pg_sql "SELECT pg_stat_statements_reset()" >/dev/null
    log "PostgreSQL's statements by execution time: $dir/pg-statements-$interval.txt"
  fi
  python3 - "$out" <<'EOF' >&2
import json, sys
r = json.load(open(sys.argv[1]))
h, d, j = r["heartbeats"], r["describe_source_servers"], r["describe_replication_jobs"]
cpu = sum(p["cpu_cores"] for p in r["processes"])
print(f'   heartbeats {h["per_sec"]:.0f}/s (expected {h["expected_per_sec"]:.0f}/s, {h["errors"]} errors), '
      f'DescribeSourceServers p50/p99 {d["p50_ms"]:.1f}/{d["p99_ms"]:.1f} ms, '
      f'DescribeReplicationJobs p50/p99 {j["p50_ms"]:.1f}/{j["p99_ms"]:.1f} ms, '
      f'runs {r["replication"]["runs_succeeded"]} ({r["replication"]["runs_failed"]} failed), '
      f'server CPU {cpu:.2f} cores, unavailable {r["unavailable_sources_at_end"]}')
EOF
  STEP_OUT=$out
}

# Does a step meet the goal? p99 < 100 ms for both Describe calls, every heartbeat answered at the pace the
# sources send them (>= 90 %), no heartbeat or Describe errors, no Describe call shed, no source offline.
passes() {
  python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
h = r["heartbeats"]
ok = all(r[k]["p99_ms"] < 100 and r[k]["errors"] == 0 and r[k]["shed"] == 0 and r[k]["count"] > 0
         for k in ("describe_source_servers", "describe_replication_jobs"))
ok = ok and h["errors"] == 0 and h["per_sec"] >= 0.9 * h["expected_per_sec"]
ok = ok and r["unavailable_sources_at_end"] == 0
sys.exit(0 if ok else 1)
EOF
}

RESULTS=()
for setup in $SETUPS; do
  dir=$WORKDIR/$setup
  rm -rf "$dir"
  mkdir -p "$dir"
  unset PORT_A PORTS_B
  if [ "$setup" = b ]; then
    log "setup (b): a private PostgreSQL cluster in $dir/pg and $REPLICAS replicas"
    start_postgres "$dir/pg"
  fi
  first=1
  steps=()
  for interval in $INTERVALS; do
    d=$SEARCH_DURATION
    [ "$first" = 1 ] && d=$DURATION
    run_step "$setup" "$interval" "$d" || break
    steps+=("$STEP_OUT")
    first=0
    passes "$STEP_OUT" || break
  done
  stop_servers
  if [ -n "$PG_DATA" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null 2>&1 || true
    PG_DATA=""
  fi
  RESULTS+=("$setup=$(IFS=,; echo "${steps[*]}")")
done

mkdir -p "$ROOT/bench/results"
OUT=$ROOT/bench/results/load-$(date -u +%Y%m%d-%H%M%S).json
python3 - "$OUT" "$(nproc)" "$(grep MemTotal /proc/meminfo | awk '{print $2}')" "$PIN" "$NICE_GEN" "$IDLE_GEN" "${RESULTS[@]}" <<'EOF'
import json, sys
out, cpus, mem_kib, pin = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
nice_gen, idle_gen = sys.argv[5] == "1", sys.argv[6] == "1"
def passes(r):
    h = r["heartbeats"]
    return (all(r[k]["p99_ms"] < 100 and r[k]["errors"] == 0 and r[k]["shed"] == 0 and r[k]["count"] > 0
                for k in ("describe_source_servers", "describe_replication_jobs"))
            and h["errors"] == 0 and h["per_sec"] >= 0.9 * h["expected_per_sec"]
            and r["unavailable_sources_at_end"] == 0)
setups = {}
for arg in sys.argv[7:]:
    name, files = arg.split("=", 1)
    steps = [json.load(open(f)) for f in files.split(",") if f]
    for s in steps:
        s["passes"] = passes(s)
    ok = [s for s in steps if s["passes"]]
    carried = max(ok, key=lambda s: s["heartbeats"]["expected_per_sec"]) if ok else None
    setups[name] = {
        "steps": steps,
        "carried_heartbeats_per_sec": carried["heartbeats"]["expected_per_sec"] if carried else 0,
        "carried_equivalent_sources_at_30s": round(carried["heartbeats"]["expected_per_sec"] * 30) if carried else 0,
    }
doc = {"format": "ferry-load-bench", "version": 1, "cpus": cpus, "mem_gib": round(mem_kib / 2**20, 1),
       "pinned": pin, "generator_nice": 19 if nice_gen else 0,
       "generator_sched": "idle" if idle_gen else "normal", "setups": setups}
a, b = setups.get("a"), setups.get("b")
if a and b and a["carried_heartbeats_per_sec"]:
    doc["ratio_b_over_a"] = b["carried_heartbeats_per_sec"] / a["carried_heartbeats_per_sec"]
json.dump(doc, open(out, "w"), indent=2)

print()
print(f"{'setup':6} {'hb int':>6} {'hb/s':>7} {'exp/s':>7} {'DSS p50':>8} {'DSS p99':>8} {'DRJ p50':>8} {'DRJ p99':>8} "
      f"{'runs/min':>8} {'srv CPU':>8} {'peak RSS MiB':>14} {'lg CPU':>6} {'ok':>3}")
for name, s in setups.items():
    for r in s["steps"]:
        h, d, j = r["heartbeats"], r["describe_source_servers"], r["describe_replication_jobs"]
        cpu = sum(p["cpu_cores"] for p in r["processes"])
        rss = "+".join(f'{p["peak_rss_mib"]:.0f}' for p in r["processes"])
        print(f"({name})    {h['heartbeat_interval_secs']:>6} {h['per_sec']:>7.0f} {h['expected_per_sec']:>7.0f} "
              f"{d['p50_ms']:>8.1f} {d['p99_ms']:>8.1f} {j['p50_ms']:>8.1f} {j['p99_ms']:>8.1f} "
              f"{r['replication']['runs_per_min']:>8.0f} {cpu:>8.2f} {rss:>14} {r['loadgen_cpu_cores']:>6.2f} "
              f"{'yes' if r['passes'] else 'NO':>3}")
print()
for name, s in setups.items():
    print(f"({name}) carries {s['carried_heartbeats_per_sec']:.0f} heartbeats/s with p99 < 100 ms "
          f"(= {s['carried_equivalent_sources_at_30s']} sources at 30 s)")
if "ratio_b_over_a" in doc:
    print(f"(b)/(a) = {doc['ratio_b_over_a']:.2f} (goal: >= 2)")
print(f"\nresults: {out}")
EOF
