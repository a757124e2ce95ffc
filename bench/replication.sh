#!/usr/bin/env bash
# Ferry's replication benchmark, side by side with the tools users would otherwise use, in one run:
#
#   1. a >= 4 GiB raw disk image (GPT + ext4 holding a real OS tree copied from /usr, random data,
#      deleted-file residue, zeros), cached in the work directory;
#   2. full replication: Ferry (agent -> server over loopback HTTPS, then the verified image build),
#      rsync -z over ssh to a loopback sshd started here, zstd -1 -T0 | nc, qemu-img convert -O qcow2,
#      and a first restic backup;
#   3. a ~1% change made through the mounted filesystem, then Ferry's incremental run, rsync --inplace
#      --no-whole-file and a second restic backup, plus the zstd -1 size of the 1 MiB chunks that changed;
#   4. a table (wall s, MB/s, bytes sent, CPU s, peak RSS, Ferry's ratios) printed and written to
#      <workdir>/results.md.
#
# Everything after the build runs in a private network namespace: only its own loopback exists there, so
# no byte can leave the machine, and the loopback counters count this benchmark's traffic and nothing
# else. Each tool runs in its own cgroup so that CPU time includes every process it starts (sshd's session
# and the remote rsync included). Run as root: it uses loop devices, mounts, cgroups and drops the page
# cache before every measurement. See bench/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bench/replication.sh [--workdir DIR] [--fresh] [--size-gib N] [--no-build] [--no-verify]

  --workdir DIR  where images, copies and results go (default: bench-out/ in the repository)
  --fresh        regenerate the cached source disk image
  --size-gib N   size of the disk image, at least 4 (default 4)
  --no-build     use the ferry binaries already in target/release
  --no-verify    skip the (unmeasured) byte comparison of every tool's copy with the source
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
WORKDIR=$ROOT/bench-out
FRESH=0
SIZE_MIB=4096
BUILD=1
VERIFY=1
ARGS=("$@")
while [ $# -gt 0 ]; do
  case $1 in
    --workdir) WORKDIR=${2:?--workdir needs a directory}; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    --size-gib) SIZE_MIB=$(( ${2:?--size-gib needs a number} * 1024 )); shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --no-verify) VERIFY=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "replication.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
WORKDIR=$(realpath -m "$WORKDIR")
MIB=$((1 << 20))

log() { printf '\n== %s\n' "$*"; }
die() { printf 'replication.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (loop devices, mounts, cgroups and drop_caches need it): sudo $0"
[ "$SIZE_MIB" -ge 4096 ] || die "--size-gib must be at least 4"

# ------------------------------------------------------------------------------ outside the namespace

if [ -z "${FERRY_BENCH_NETNS:-}" ]; then
  # Tools this script drives. Installed with apt-get only when missing (Debian/Ubuntu, as root).
  PACKAGES=(rsync openssh-server openssh-client netcat-openbsd restic zstd qemu-utils fdisk util-linux
    e2fsprogs iproute2 jq python3)
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || true
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  if [ "$BUILD" = 1 ]; then
    log "building Ferry (cargo build --release)"
    (cd "$ROOT" && cargo build --release -p ferry -p ferry-agent)
  fi
  if unshare --net true 2>/dev/null; then
    exec unshare --net env FERRY_BENCH_NETNS=1 bash "$0" "${ARGS[@]}"
  fi
  echo "warning: cannot create a network namespace: running on the shared loopback, whose byte counters" \
    "include other traffic; the loopback column is left empty" >&2
  FERRY_BENCH_NETNS=0
fi

# ------------------------------------------------------------------------------- inside the namespace

if [ "$FERRY_BENCH_NETNS" = 1 ]; then
  ip link set lo up
fi

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
FERRY=$TARGET/release/ferry
AGENT=$TARGET/release/ferry-agent
[ -x "$FERRY" ] && [ -x "$AGENT" ] || die "no $FERRY or $AGENT: run without --no-build"
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
LIB=$BENCH/benchlib.py
CACHE=$WORKDIR/cache
RUN=$WORKDIR/run
BASE=$CACHE/base.img
DISK=$RUN/disk.img

# Processes, mounts and loop devices this script started, undone at exit (processes by PID only).
PIDS=()
CUR_MNT=""
CUR_LOOP=""
MADE_RUN_SSHD=0
CG_BASE=""

forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || { forget_pid "$pid"; return 0; }
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

cleanup() {
  set +e
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  [ -n "$CUR_MNT" ] && umount "$CUR_MNT"
  [ -n "$CUR_LOOP" ] && losetup -d "$CUR_LOOP"
  [ "$MADE_RUN_SSHD" = 1 ] && rmdir /run/sshd 2>/dev/null
  if [ -n "$CG_BASE" ] && [ -d "$CG_BASE" ]; then
    # Whatever is left in the benchmark's cgroups was started by it (an sshd session, say).
    for p in $(cat "$CG_BASE"/*/cgroup.procs 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    sleep 0.2
    for p in "$CG_BASE"/*/; do rmdir "$p" 2>/dev/null; done
    rmdir "$CG_BASE" 2>/dev/null
  fi
}
trap cleanup EXIT

# Attaches partition 1 of an image to a loop device (by offset, no partition scan needed).
attach_part() {
  local img=$1 start size
  start=$(sfdisk -J "$img" | jq '.partitiontable.partitions[0].start')
  size=$(sfdisk -J "$img" | jq '.partitiontable.partitions[0].size')
  CUR_LOOP=$(losetup --find --show --offset $((start * 512)) --sizelimit $((size * 512)) "$img")
}

# Mounts the attached partition on $1.
mount_part() {
  mkdir -p "$1"
  # nodiscard: freed blocks must keep their old data, as on most real disks.
  mount -o nodiscard "$CUR_LOOP" "$1"
  CUR_MNT=$1
}

unmount_part() {
  umount "$CUR_MNT"
  CUR_MNT=""
  losetup -d "$CUR_LOOP"
  CUR_LOOP=""
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_listen() {
  local port=$1 what=$2 i
  for i in $(seq 1 100); do
    ss -Hltn "sport = :$port" | grep -q . && return 0
    sleep 0.1
  done
  die "$what is not listening on 127.0.0.1:$port after 10 s"
}

# ------------------------------------------------------------------------------------------- cgroups

CG_ROOT=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
if [ -n "$CG_ROOT" ] && [ -w "$CG_ROOT" ]; then
  CG_MODE=v2
else
  CG_ROOT=$(awk '$3 == "cgroup" && $4 ~ /cpuacct/ { print $2; exit }' /proc/mounts)
  [ -n "$CG_ROOT" ] && [ -w "$CG_ROOT" ] ||
    die "no writable cgroup2 or cgroup v1 cpuacct hierarchy: CPU time of multi-process tools cannot be measured"
  CG_MODE=v1
fi
CG_BASE=$CG_ROOT/ferry-bench-$$
mkdir -p "$CG_BASE"

cg_new() { local c; for c in "$@"; do mkdir -p "$CG_BASE/$c"; done; }

# Runs a command inside cgroup $1; everything it starts stays in it.
cg_run() {
  local cg=$1
  shift
  bash -c 'echo $$ > "$0" && exec "$@"' "$CG_BASE/$cg/cgroup.procs" "$@"
}

# Starts a command in the background inside cgroup $1 and sets SPAWNED to its PID. The command replaces
# the helper shell (exec), so the PID is the command's own and stopping it stops the command.
SPAWNED=0
cg_spawn() {
  local cg=$1
  shift
  bash -c 'echo $$ > "$0" && exec "$@"' "$CG_BASE/$cg/cgroup.procs" "$@" &
  SPAWNED=$!
  PIDS+=("$SPAWNED")
}

# "user_usec sys_usec" of a cgroup, children included.
cg_cpu() {
  if [ "$CG_MODE" = v2 ]; then
    awk '/^user_usec/ { u = $2 } /^system_usec/ { s = $2 } END { print u, s }' "$CG_BASE/$1/cpu.stat"
  else
    echo "$(($(cat "$CG_BASE/$1/cpuacct.usage_user") / 1000)) $(($(cat "$CG_BASE/$1/cpuacct.usage_sys") / 1000))"
  fi
}

lo_bytes() {
  if [ "$FERRY_BENCH_NETNS" = 1 ]; then
    # Transmit bytes of lo (equal to its receive bytes): field 11 once "lo:" is split off.
    awk -F'[: ]+' '$2 == "lo" { print $11 }' /proc/net/dev
  else
    echo null
  fi
}

# ---------------------------------------------------------------------------------------- measuring

RESULTS=$RUN/results.jsonl
M_ID=""
M_CGS=()
M_T0=0
M_LO0=0
M_SAMPLER=0
M_LOAD=0
declare -A M_CPU0

drop_caches() {
  sync
  echo 3 >/proc/sys/vm/drop_caches || echo "warning: cannot drop the page cache" >&2
}

# measure_begin ID CGROUP...: drops the page cache, resets the peak RSS of processes already running in the
# cgroups (the Ferry server and agent, sshd) and starts counting.
measure_begin() {
  M_ID=$1
  shift
  M_CGS=("$@")
  local cg pid paths=()
  drop_caches
  for cg in "${M_CGS[@]}"; do
    for pid in $(cat "$CG_BASE/$cg/cgroup.procs"); do
      echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true
    done
    paths+=("$CG_BASE/$cg")
    M_CPU0[$cg]=$(cg_cpu "$cg")
  done
  "$PY" "$LIB" rss --out "$RUN/rss-$M_ID.json" "${paths[@]}" &
  M_SAMPLER=$!
  PIDS+=("$M_SAMPLER")
  M_LOAD=$(cut -d' ' -f1 /proc/loadavg)
  M_LO0=$(lo_bytes)
  M_T0=$(date +%s%N)
}

# measure_end LABEL SENT_BYTES|null COMMAND NOTES [EXTRA-JSON]: stops counting and appends one record to
# results.jsonl (EXTRA-JSON is merged into it: {"local": true} for tools that send nothing).
measure_end() {
  local t1 lo1 cg u0 s0 u1 s1 cpu_u=0 cpu_s=0 detail="" lo
  t1=$(date +%s%N)
  lo1=$(lo_bytes)
  for cg in "${M_CGS[@]}"; do
    read -r u0 s0 <<<"${M_CPU0[$cg]}"
    read -r u1 s1 <<<"$(cg_cpu "$cg")"
    cpu_u=$((cpu_u + u1 - u0))
    cpu_s=$((cpu_s + s1 - s0))
    detail+="${detail:+; }$cg $(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) 'BEGIN { printf "%.1f s (user %.1f + sys %.1f)", (u + s) / 1e6, u / 1e6, s / 1e6 }')"
  done
  stop_pid "$M_SAMPLER"
  lo=null
  [ "$lo1" != null ] && lo=$((lo1 - M_LO0))
  jq -cn --arg id "$M_ID" --arg lbl "$1" --argjson sent "$2" --arg command "$3" --arg notes "$4" \
    --argjson wall_ns $((t1 - M_T0)) --argjson cpu_us $((cpu_u + cpu_s)) --arg cpu_detail "$detail" \
    --argjson lo "$lo" --slurpfile rss "$RUN/rss-$M_ID.json" --argjson extra "${5:-"{}"}" \
    --argjson load "$M_LOAD" \
    '{id: $id, "label": $lbl, command: $command, notes: $notes, wall_s: ($wall_ns / 1e9),
      cpu_s: ($cpu_us / 1e6), cpu_detail: $cpu_detail, lo_bytes: $lo, sent_bytes: $sent, rss: $rss[0], load1: $load} + $extra' \
    >>"$RESULTS"
  jq -r 'select(.id == "'"$M_ID"'") | "   \(.label): \(.wall_s * 10 | round / 10) s, CPU \(.cpu_s * 10 | round / 10) s, sent \(if .sent_bytes == null then "-" else (.sent_bytes / 1048576 * 10 | round / 10 | tostring) + " MiB" end)"' "$RESULTS"
}

# ----------------------------------------------------------------------------------- the disk image

generate_base() {
  log "generating a ${SIZE_MIB} MiB disk image in $BASE"
  rm -f "$BASE" "$CACHE/mix.json"
  mkdir -p "$CACHE"
  local tmp=$CACHE/base.img.part mnt=$CACHE/mnt os_bytes used i s
  rm -f "$tmp"
  truncate -s "${SIZE_MIB}M" "$tmp"
  printf 'label: gpt\nstart=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n' | sfdisk -q "$tmp"
  attach_part "$tmp"
  # Inode tables and journal written now, not by a background thread during the measurements.
  mkfs.ext4 -q -L root -E lazy_itable_init=0,lazy_journal_init=0 "$CUR_LOOP"
  mount_part "$mnt"

  # A real OS tree: this machine's /usr, in a stable order, up to ~1.2 GiB.
  "$PY" "$LIB" oslist --bytes $((1200 * MIB)) /usr/bin /usr/sbin /usr/share /usr/include /usr/libexec \
    /usr/lib/x86_64-linux-gnu /usr/lib >"$CACHE/oslist" 2>"$CACHE/oslist.bytes"
  rsync -a --from0 --files-from="$CACHE/oslist" / "$mnt/"
  os_bytes=$(cat "$CACHE/oslist.bytes")
  mkdir -p "$mnt"/{etc,home,root,tmp,var/log,var/lib,var/tmp}
  cp /etc/os-release "$mnt/etc/os-release"
  printf 'LABEL=root / ext4 defaults 0 1\n' >"$mnt/etc/fstab"
  printf 'bench-source\n' >"$mnt/etc/hostname"

  # Random (incompressible) data: media, encrypted or compressed files, database files.
  mkdir -p "$mnt/var/lib/appdata"
  local sizes=(512 256 192 128 96 64 32 16 4) random_bytes=0
  for i in "${!sizes[@]}"; do
    s=${sizes[$i]}
    head -c "${s}M" /dev/urandom >"$mnt/var/lib/appdata/data-$i.bin"
    random_bytes=$((random_bytes + s * MIB))
  done

  # Deleted-file residue: an old release tarball (compressible) and old downloads (random), written to
  # disk, then deleted: their blocks are free but keep the old bytes.
  mkdir -p "$mnt/var/tmp/old"
  (tar -C "$mnt" -cf - usr/share 2>/dev/null || true) | head -c 150M >"$mnt/var/tmp/old/release.tar"
  head -c 150M /dev/urandom >"$mnt/var/tmp/old/downloads.bin"
  sync
  rm -rf "$mnt/var/tmp/old"
  sync
  used=$(df -B1 --output=used "$mnt" | tail -1 | tr -d ' ')
  unmount_part
  "$PY" "$LIB" mix "$tmp" | jq -c --arg os "$(wc -l < <(tr '\0' '\n' <"$CACHE/oslist")) files, $((os_bytes / MIB)) MiB of this machine's /usr" \
    --argjson random "$random_bytes" --argjson files "${#sizes[@]}" --argjson residue $((300 * MIB)) \
    --argjson used "$used" \
    '. + {os_tree: $os, random_bytes: $random, random_files: $files, residue_bytes: $residue, ext4_used_bytes: $used}' \
    >"$CACHE/mix.json"
  mv "$tmp" "$BASE"
}

if [ "$FRESH" = 1 ] || [ ! -f "$BASE" ] || [ ! -f "$CACHE/mix.json" ] ||
  [ "$(stat -c %s "$BASE")" -ne $((SIZE_MIB * MIB)) ]; then
  generate_base
else
  log "using the cached disk image $BASE (--fresh regenerates it)"
fi
jq -r '"   size \(.size_bytes / 1048576) MiB, allocated \(.allocated_bytes / 1048576 | floor) MiB\n   OS tree: \(.os_tree)\n   random data: \(.random_bytes / 1048576) MiB in \(.random_files) files\n   deleted-file residue: \(.residue_bytes / 1048576) MiB\n   ext4 used: \(.ext4_used_bytes / 1048576 | floor) MiB\n   all-zero 1 MiB chunks: \(.zero_chunks) of \(.chunks)"' "$CACHE/mix.json"

rm -rf "$RUN"
mkdir -p "$RUN"
cp --sparse=always "$BASE" "$DISK"
DISK_SIZE=$(stat -c %s "$DISK")

# ---------------------------------------------------------------------------------------------- Ferry

# The Ferry instance in use (start_ferry sets them).
FDATA=""
FAGENT=""
CG_SERVER=""
CG_AGENT=""
SERVER_PID=0
AGENT_PID=0
ferry_cli() { "$FERRY" --data-dir "$FDATA" "$@"; }

ferry_fail() {
  echo "---- last lines of $FDATA/server.log" >&2
  tail -n 40 "$FDATA/server.log" >&2 || true
  echo "---- last lines of $FAGENT/agent.log" >&2
  tail -n 40 "$FAGENT/agent.log" >&2 || true
  die "Ferry: $*"
}

# start_ferry NAME [ferry job create options]: a server with a fresh data directory and an agent for the
# disk, in cgroups NAME-server and NAME-agent, and an incremental job; sets FDATA, FAGENT, CG_SERVER,
# CG_AGENT, SERVER_PID, AGENT_PID, SOURCE and JOB.
start_ferry() {
  local name=$1
  shift
  log "starting $name: ferry server and ferry-agent (unmeasured)"
  FDATA=$RUN/$name-data
  FAGENT=$RUN/$name-agent
  CG_SERVER=$name-server
  CG_AGENT=$name-agent
  mkdir -p "$FDATA" "$FAGENT"
  cg_new "$CG_SERVER" "$CG_AGENT"
  local port i code fp
  port=$(free_port)
  cg_spawn "$CG_SERVER" env RUST_LOG=info "$FERRY" server --data-dir "$FDATA" --listen "127.0.0.1:$port" \
    --heartbeat-interval 1 >>"$FDATA/server.log" 2>&1
  SERVER_PID=$SPAWNED
  for i in $(seq 1 600); do
    kill -0 "$SERVER_PID" 2>/dev/null || ferry_fail "ferry server exited at start"
    [ -f "$FDATA/root-credentials.json" ] && ferry_cli source list >/dev/null 2>&1 && break
    [ "$i" = 600 ] && ferry_fail "the server did not answer within 60 s"
    sleep 0.1
  done
  code=$(ferry_cli activation-code create --count 1 --output json | jq -r .AccessTokenCode)
  fp=$(jq -r .ca_fingerprint "$FDATA/root-credentials.json")
  cg_spawn "$CG_AGENT" env FERRY_ACTIVATION_CODE="$code" RUST_LOG=info "$AGENT" activate \
    --server "https://127.0.0.1:$port" --ca-fingerprint "$fp" --state-dir "$FAGENT" \
    --disk-image "$DISK" --run >>"$FAGENT/agent.log" 2>&1
  AGENT_PID=$SPAWNED
  for i in $(seq 1 600); do
    kill -0 "$AGENT_PID" 2>/dev/null || ferry_fail "ferry-agent exited during activation"
    SOURCE=$(jq -r '.credentials.source_id // empty' "$FAGENT/agent.json" 2>/dev/null || true)
    if [ -n "$SOURCE" ] && [ "$(ferry_cli call DescribeSourceServers "SourceId.1=$SOURCE" |
      jq -r '.SourceServers.SourceServer[0].State')" = Available ]; then
      break
    fi
    [ "$i" = 600 ] && ferry_fail "the source did not become Available within 60 s"
    sleep 0.1
  done
  # Incremental (RunOnce=false) so that the job waits after the full run and the second run extends the
  # first snapshot; a week's frequency keeps the scheduler from starting a run of its own.
  JOB=$(ferry_cli job create --source "$SOURCE" --name bench --incremental --frequency 168 --keep 2 \
    "$@" --output json | jq -r .JobId)
  echo "   source $SOURCE, job $JOB, server https://127.0.0.1:$port"
}

# Starts run number $1 of the job and waits until it succeeded and its image is built (job Waiting).
ferry_run() {
  local n=$1 j st runs last
  ferry_cli job start "$JOB" >/dev/null || ferry_fail "ferry job start $JOB failed"
  while :; do
    j=$(ferry_cli call DescribeReplicationJobs "JobId.1=$JOB") || ferry_fail "DescribeReplicationJobs failed"
    st=$(jq -r '.ReplicationJobs.ReplicationJob[0].Status' <<<"$j")
    runs=$(jq -r '.ReplicationJobs.ReplicationJob[0].ReplicationJobRuns.ReplicationJobRun | length' <<<"$j")
    last=$(jq -r '.ReplicationJobs.ReplicationJob[0].ReplicationJobRuns.ReplicationJobRun[-1].RunStatus' <<<"$j")
    if [ "$runs" = "$n" ] && [ "$last" = Succeeded ] && { [ "$st" = Waiting ] || [ "$st" = Finished ]; }; then
      break
    fi
    if [ "$st" = InError ] || { [ "$runs" = "$n" ] && [ "$last" = Failed ]; }; then
      ferry_fail "run $n failed: $(jq -c '.ReplicationJobs.ReplicationJob[0] | {Status, ErrorCode, StatusInfo, run: .ReplicationJobRuns.ReplicationJobRun[-1].ErrorMessage}' <<<"$j")"
    fi
    sleep 0.5
  done
  FERRY_JOB_JSON=$j
}

ferry_measure() {
  local id=$1 label=$2 n=$3 run sent notes
  log "$label"
  measure_begin "$id" "$CG_SERVER" "$CG_AGENT"
  ferry_run "$n"
  run=$(jq -c ".ReplicationJobs.ReplicationJob[0].ReplicationJobRuns.ReplicationJobRun[$((n - 1))]" <<<"$FERRY_JOB_JSON")
  sent=$(jq -r .BytesSent <<<"$run")
  notes=$(jq -r '"Agent replication \(.ElapsedMs / 1000) s (the rest of the wall time is the image build: raw and its verification; qcow2 is derived after); uploaded \(.BytesUploaded / 1048576 | floor) MiB logical, zero \(.BytesZero / 1048576 | floor) MiB, unchanged \(.BytesUnchanged / 1048576 | floor) MiB, deduplicated \(.BytesDeduplicated / 1048576 | floor) MiB; image \(.ImageId)."' <<<"$run")
  measure_end "$label" "$sent" "ferry job start (server + agent on 127.0.0.1, heartbeat 1 s$FERRY_JOB_OPTS)" "$notes" \
    "$(jq -c '{replication_s: (.ElapsedMs / 1000)}' <<<"$run")"
  jq -r .ImageId <<<"$run" >"$RUN/$id.image"
}

# ---------------------------------------------------------------------------------------------- rsync

SSH_DIR=$RUN/ssh
SSH_PORT=0
start_sshd() {
  log "starting a loopback sshd (own config and keys, unmeasured)"
  mkdir -p "$SSH_DIR" "$RUN/rsync-dest"
  ssh-keygen -q -t ed25519 -N '' -f "$SSH_DIR/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$SSH_DIR/client_key"
  cp "$SSH_DIR/client_key.pub" "$SSH_DIR/authorized_keys"
  SSH_PORT=$(free_port)
  cat >"$SSH_DIR/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSH_DIR/host_key
PidFile $SSH_DIR/sshd.pid
AuthorizedKeysFile $SSH_DIR/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
EOF
  # OpenSSH's privilege-separation directory; Debian's ssh service normally creates it.
  if [ ! -d /run/sshd ]; then
    mkdir -m 0755 /run/sshd
    MADE_RUN_SSHD=1
  fi
  cg_new rsync-full rsync-incr
  cg_spawn rsync-full /usr/sbin/sshd -D -e -f "$SSH_DIR/sshd_config" 2>>"$SSH_DIR/sshd.log"
  wait_listen "$SSH_PORT" sshd
  SSH="ssh -p $SSH_PORT -i $SSH_DIR/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
  $SSH root@127.0.0.1 true || die "cannot log in to the loopback sshd: see $SSH_DIR/sshd.log"
}

RSYNC_Z=(-z)
if rsync --version | grep -A1 -i 'compress list' | grep -qw zstd; then
  RSYNC_Z=(-z --compress-choice=zstd)
fi

# rsync_measure ID LABEL CGROUP EXTRA-OPTIONS...: the sshd lives in the first rsync cgroup; the second
# measurement moves it, so that the session processes it forks land in the cgroup being measured.
rsync_measure() {
  local id=$1 label=$2 cg=$3 pid sent
  shift 3
  log "$label"
  for pid in $(cat "$CG_BASE"/rsync-*/cgroup.procs); do echo "$pid" >"$CG_BASE/$cg/cgroup.procs"; done
  local cmd=(rsync -a -S "${RSYNC_Z[@]}" "$@" --stats -e "$SSH" "$DISK" "root@127.0.0.1:$RUN/rsync-dest/disk.img")
  measure_begin "$id" "$cg"
  cg_run "$cg" "${cmd[@]}" >"$RUN/$id.stats"
  sent=$(awk -F': ' '/^Total bytes sent/ { gsub(",", "", $2); print $2 }' "$RUN/$id.stats")
  measure_end "$label" "$sent" "${cmd[*]//$SSH/ssh}" "$(grep -E '^(Literal|Matched) data' "$RUN/$id.stats" | paste -sd';')."
}

# --------------------------------------------------------------------------------------------- restic

export RESTIC_PASSWORD=ferry-bench RESTIC_CACHE_DIR=$RUN/restic-cache
REPO=$RUN/restic-repo
restic_measure() {
  local id=$1 label=$2 before after
  log "$label"
  cg_new "$id"
  before=$(du -sb "$REPO" | cut -f1)
  measure_begin "$id" "$id"
  cg_run "$id" restic -r "$REPO" backup --json "$DISK" | tail -n 1 >"$RUN/$id.json"
  after=$(du -sb "$REPO" | cut -f1)
  measure_end "$label" $((after - before)) "restic -r REPO backup $DISK (repository v2, compression auto)" \
    "$(jq -r '"Local repository: sent = its growth; data_added \(.data_added / 1048576 | floor) MiB before compression."' "$RUN/$id.json")" \
    '{"local": true}'
}

# ============================================================================================ the run

{
  echo "{}" | jq --arg date "$(date -u +%Y-%m-%dT%H:%MZ)" \
    --arg machine "$(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(($(awk '/MemTotal/ { print $2 }' /proc/meminfo) / 1048576)) GiB RAM, Linux $(uname -r)" \
    --arg commit "$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- crates || echo ' (crates modified)')" \
    --arg tools "$(rsync --version | head -1 | awk '{ print "rsync " $3 }'), $(ssh -V 2>&1 | cut -d, -f1), zstd $(zstd -V | grep -o 'v[0-9.]*'), $(qemu-img --version | head -1 | awk '{ print "qemu-img " $3 }'), $(restic version | awk '{ print "restic " $2 }')" \
    '{date: $date, machine: $machine, commit: $commit, tools: $tools}'
} >"$RUN/meta.json"

log "full replication of $DISK ($((DISK_SIZE / MIB)) MiB)"
# Ferry as installed: the agent chooses the zstd level from the link speed it measures, which on
# loopback means sending raw. A second, fresh server with the level fixed at 1 shows the bytes a slow
# link would carry (a fresh one, because the first server already stores every chunk).
FERRY_JOB_OPTS=""
start_ferry ferry
ferry_measure ferry-full "Ferry (full)" 1
FERRY_MAIN=("$FDATA" "$FAGENT" "$CG_SERVER" "$CG_AGENT" "$SERVER_PID" "$AGENT_PID" "$SOURCE" "$JOB")
FERRY_JOB_OPTS=", --compress-level 1"
start_ferry ferry-l1 --compress-level 1
ferry_measure ferry-full-l1 "Ferry (full, zstd level 1 fixed)" 1
stop_pid "$AGENT_PID"
stop_pid "$SERVER_PID"
# Its chunks and images are not needed any more; its logs stay.
rm -rf "$FDATA/objects" "$FDATA/images"
FDATA=${FERRY_MAIN[0]} FAGENT=${FERRY_MAIN[1]} CG_SERVER=${FERRY_MAIN[2]} CG_AGENT=${FERRY_MAIN[3]}
SERVER_PID=${FERRY_MAIN[4]} AGENT_PID=${FERRY_MAIN[5]} SOURCE=${FERRY_MAIN[6]} JOB=${FERRY_MAIN[7]}
FERRY_JOB_OPTS=""

start_sshd
rsync_measure rsync-full "rsync -z over ssh (full)" rsync-full

log "zstd -1 -T0 | nc (full)"
cg_new zstd-nc
NC_PORT=$(free_port)
cg_spawn zstd-nc nc -l 127.0.0.1 "$NC_PORT" >"$RUN/zstd-nc.zst" </dev/null
NC_PID=$SPAWNED
wait_listen "$NC_PORT" "nc -l"
measure_begin zstd-nc zstd-nc
cg_run zstd-nc bash -c 'zstd -1 -T0 -q -c <"$1" | nc -N 127.0.0.1 "$2"' _ "$DISK" "$NC_PORT"
wait "$NC_PID"
forget_pid "$NC_PID"
measure_end "zstd -1 -T0 | nc (full)" "$(stat -c %s "$RUN/zstd-nc.zst")" \
  "zstd -1 -T0 -c < disk.img | nc -N 127.0.0.1 PORT  (nc -l 127.0.0.1 PORT > file)" ""

log "qemu-img convert -O qcow2 (full, local)"
cg_new qemu-img
measure_begin qemu-img qemu-img
cg_run qemu-img qemu-img convert -O qcow2 "$DISK" "$RUN/qemu.qcow2"
measure_end "qemu-img convert -O qcow2 (local)" null "qemu-img convert -O qcow2 disk.img out.qcow2" \
  "Local: nothing is sent; writes a $(($(stat -c %s "$RUN/qemu.qcow2") / MIB)) MiB qcow2." '{"local": true}'

restic -r "$REPO" init --repository-version 2 -q
restic_measure restic-first "restic backup (first, local repo)"

log "changing ~1% of the used space through the mounted filesystem"
attach_part "$DISK"
mount_part "$RUN/mnt"
"$PY" "$LIB" change "$RUN/mnt" >"$RUN/change.json"
unmount_part
jq -r '"   \(.extents_rewritten) x 1 MiB extents in \(.files_with_extents) files, \(.files_upgraded) OS files replaced (\(.upgraded_bytes / 1048576 | floor) MiB), \(.new_files_bytes / 1048576 | floor) MiB new files; \(.total_bytes / 1048576 | floor) MiB of \(.used_bytes / 1048576 | floor) MiB used"' "$RUN/change.json"
"$PY" "$LIB" chunkdiff "$BASE" "$DISK" >"$RUN/chunkdiff.json"
jq -r '"   1 MiB chunks changed: \(.changed_chunks), zstd -1 of them: \(.changed_zstd1_bytes / 1048576 * 10 | round / 10) MiB"' "$RUN/chunkdiff.json"

log "incremental runs"
ferry_measure ferry-incr "Ferry (incremental)" 2
rsync_measure rsync-incr "rsync --inplace --no-whole-file (delta)" rsync-incr --inplace --no-whole-file
restic_measure restic-second "restic backup (second)"

for p in "${PIDS[@]}"; do stop_pid "$p"; done

if [ "$VERIFY" = 1 ]; then
  log "verifying every copy against its source (unmeasured)"
  check() { if "$@"; then echo "   ok: $*"; else die "copy differs: $*"; fi; }
  check cmp -s "$FDATA/images/$(cat "$RUN/ferry-full.image")/disk0.raw" "$BASE"
  check cmp -s "$FDATA/images/$(cat "$RUN/ferry-incr.image")/disk0.raw" "$DISK"
  check qemu-img compare -q -f qcow2 -F raw "$FDATA/images/$(cat "$RUN/ferry-incr.image")/disk0.qcow2" "$DISK"
  check cmp -s "$RUN/rsync-dest/disk.img" "$DISK"
  check bash -c 'zstd -dc -q "$1" | cmp -s - "$2"' _ "$RUN/zstd-nc.zst" "$BASE"
  check qemu-img compare -q -f qcow2 -F raw "$RUN/qemu.qcow2" "$BASE"
fi

log "results ($WORKDIR/results.md)"
"$PY" "$LIB" report "$WORKDIR"
