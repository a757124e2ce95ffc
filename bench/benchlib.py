#!/usr/bin/env python3
"""Helpers of bench/replication.sh that are awkward in bash.

Subcommands (each prints JSON or text on stdout, errors on stderr, exit 1 on failure):

  oslist  --bytes N ROOT...        NUL-separated list of regular files and symlinks under the given
                                    directories (relative to /), in a stable order, until N bytes.
  rss     --out FILE CGROUP...     samples VmHWM of every process in the cgroups every 100 ms until
                                    SIGTERM, then writes {cgroup: [{pid, comm, peak_kib}]}.
  change  MOUNTPOINT               rewrites ~1% of the used space of a mounted filesystem the way a
                                    running server would (in-place extents, package upgrades, new files).
  chunkdiff OLD NEW                1 MiB chunks that differ between two images, and their zstd -1 size.
  mix     IMAGE                    all-zero 1 MiB chunks and allocated bytes of an image.
  report  WORKDIR                  renders WORKDIR/run/results.jsonl (+ mix, change, chunkdiff) as the
                                    Markdown tables of results.md.

Only the standard library is used, so any Debian python3 runs it. Nothing here trusts its input beyond
the benchmark's own files: a missing or malformed file is reported with what to do, not a traceback.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time

MIB = 1 << 20
CHUNK = MIB


def die(msg):
    print(f"benchlib: {msg}", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------- oslist


def cmd_oslist(args):
    total = 0
    seen = set()
    out = sys.stdout.buffer
    for root in args.roots:
        root = os.path.abspath(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            # A later root may contain an earlier one (/usr/lib after /usr/lib/x86_64-linux-gnu):
            # skip what was already listed so each file is copied once.
            if dirpath in seen:
                dirnames[:] = []
                continue
            seen.add(dirpath)
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if not (os.path.isfile(path) or os.path.islink(path)):
                    continue
                if not os.path.islink(path) and not os.access(path, os.R_OK):
                    continue
                out.write(path.lstrip("/").encode("utf-8", "surrogateescape") + b"\0")
                if not os.path.islink(path):
                    total += st.st_size
                if total >= args.bytes:
                    print(f"{total}", file=sys.stderr)
                    return
    print(f"{total}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------- rss


def read_hwm(pid):
    """(comm, VmHWM KiB, RssAnon KiB) of a live process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            comm, hwm, anon = None, None, 0
            for line in f:
                if line.startswith("Name:"):
                    comm = line.split(None, 1)[1].strip()
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith("RssAnon:"):
                    anon = int(line.split()[1])
            # Kernel threads and zombies have no VmHWM.
            return (comm, hwm, anon) if comm is not None and hwm is not None else None
    except (OSError, ValueError):
        return None


def cmd_rss(args):
    peaks = {cg: {} for cg in args.cgroups}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def sample():
        for cg in args.cgroups:
            try:
                with open(os.path.join(cg, "cgroup.procs")) as f:
                    pids = [int(p) for p in f.read().split()]
            except (OSError, ValueError):
                continue
            for pid in pids:
                r = read_hwm(pid)
                if r is None:
                    continue
                comm, hwm, anon = r
                old = peaks[cg].get(pid)
                # A changed name means the PID exec'd (a wrapper shell becoming the tool): the kernel
                # restarted its high-water mark, and the wrapper's own figure is not the tool's.
                if old is None or old[0] != comm:
                    peaks[cg][pid] = (comm, hwm, anon)
                else:
                    # The kernel keeps no high-water mark of anonymous memory alone: the sampled maximum
                    # tells heap from page-cache pages mapped into the process.
                    peaks[cg][pid] = (comm, max(hwm, old[1]), max(anon, old[2]))

    while not stop:
        sample()
        time.sleep(0.1)
    sample()
    result = {
        os.path.basename(cg.rstrip("/")): [
            {"pid": pid, "comm": comm, "peak_kib": hwm, "anon_kib": anon}
            for pid, (comm, hwm, anon) in sorted(procs.items())
        ]
        for cg, procs in peaks.items()
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.rename(tmp, args.out)


# ---------------------------------------------------------------------------------------------- change


def walk_files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                yield path, os.path.getsize(path)


def cmd_change(args):
    rng = random.Random(args.seed)
    st = os.statvfs(args.mountpoint)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    budget = int(used * args.fraction)
    files = list(walk_files(args.mountpoint))
    if not files:
        die(f"no files under {args.mountpoint}: is the filesystem mounted?")

    # 1. In-place rewrites of 1 MiB extents at 4 KiB-aligned offsets inside existing files, weighted by
    #    size (a database or VM image changing pages): 60% of the budget.
    big = [(p, s) for p, s in files if s >= 4 * MIB]
    extents = max(1, int(budget * 0.60) // MIB)
    weights = [s for _, s in big]
    touched = set()
    for _ in range(extents):
        path, size = rng.choices(big, weights=weights)[0]
        off = rng.randrange(0, (size - MIB) // 4096 + 1) * 4096
        with open(path, "r+b") as f:
            f.seek(off)
            f.write(rng.randbytes(MIB))
        touched.add(path)

    # 2. A package upgrade: OS files replaced by new versions (write a new file, fsync, rename over the old
    #    one, as dpkg does), so their blocks move. The new content keeps the old one's structure and
    #    compressibility (a byte substitution), as a rebuilt binary or library would: 25% of the budget.
    os_files = [(p, s) for p, s in files if "/usr/" in p and 64 * 1024 <= s <= 8 * MIB]
    rng.shuffle(os_files)
    table = bytes((b + 1) % 256 for b in range(256))
    upgraded, upgraded_bytes = 0, 0
    for path, size in os_files:
        if upgraded_bytes >= budget * 0.25:
            break
        with open(path, "rb") as f:
            data = f.read()
        tmp = path + ".dpkg-new"
        with open(tmp, "wb") as f:
            f.write(data.translate(table))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        upgraded += 1
        upgraded_bytes += size

    # 3. New files: a text log and an uploaded blob (incompressible), 15% of the budget together.
    new_dir = os.path.join(args.mountpoint, "var", "log", "app")
    os.makedirs(new_dir, exist_ok=True)
    log_bytes = int(budget * 0.075)
    lines, n = [], 0
    t0 = 1_760_000_000
    while n < log_bytes:
        line = (
            f"2025-10-{(n // 997) % 28 + 1:02d}T{(n // 61) % 24:02d}:{n % 60:02d}:{(n // 7) % 60:02d}Z web-01 "
            f"app[{1000 + n % 37}]: GET /api/v1/items/{rng.randrange(100000)} status={rng.choice([200, 200, 200, 304, 404])} "
            f"ms={rng.randrange(1, 900)} ts={t0 + n}\n"
        )
        lines.append(line)
        n += len(line)
    with open(os.path.join(new_dir, "access.log"), "w") as f:
        f.write("".join(lines))
    blob_bytes = int(budget * 0.075)
    with open(os.path.join(args.mountpoint, "var", "lib", "upload.bin"), "wb") as f:
        f.write(rng.randbytes(blob_bytes))
    os.sync()

    summary = {
        "used_bytes": used,
        "budget_bytes": budget,
        "extents_rewritten": extents,
        "extent_bytes": extents * MIB,
        "files_with_extents": len(touched),
        "files_upgraded": upgraded,
        "upgraded_bytes": upgraded_bytes,
        "new_files_bytes": n + blob_bytes,
        "total_bytes": extents * MIB + upgraded_bytes + n + blob_bytes,
    }
    json.dump(summary, sys.stdout)
    print()


# ------------------------------------------------------------------------------------ chunkdiff and mix


def zstd1_len(data):
    r = subprocess.run(["zstd", "-1", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True)
    return len(r.stdout)


def cmd_chunkdiff(args):
    if os.path.getsize(args.old) != os.path.getsize(args.new):
        die(f"{args.old} and {args.new} differ in size: chunkdiff compares two versions of one disk")
    changed = raw = zst = became_zero = 0
    zero = bytes(CHUNK)
    with open(args.old, "rb") as a, open(args.new, "rb") as b:
        while True:
            x, y = a.read(CHUNK), b.read(CHUNK)
            if not y:
                break
            if x == y:
                continue
            changed += 1
            raw += len(y)
            if y == zero[: len(y)]:
                became_zero += 1
                continue
            zst += zstd1_len(y)
    json.dump(
        {"changed_chunks": changed, "changed_raw_bytes": raw, "changed_zstd1_bytes": zst,
         "changed_to_zero_chunks": became_zero},
        sys.stdout,
    )
    print()


def cmd_mix(args):
    zero = bytes(CHUNK)
    zeros = total = 0
    with open(args.image, "rb") as f:
        while True:
            c = f.read(CHUNK)
            if not c:
                break
            total += 1
            if c == zero[: len(c)]:
                zeros += 1
    st = os.stat(args.image)
    json.dump(
        {"size_bytes": st.st_size, "allocated_bytes": st.st_blocks * 512, "chunks": total,
         "zero_chunks": zeros},
        sys.stdout,
    )
    print()


# ---------------------------------------------------------------------------------------------- report


def load_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        die(f"cannot read {what} from {path} ({e}): run bench/replication.sh again")


def mib(b):
    return f"{b / MIB:,.1f}"


def proc_peaks(rec):
    """[(comm, peak MiB, sampled peak anonymous MiB)] of every process a measurement saw, largest first."""
    out = []
    for procs in rec.get("rss", {}).values():
        for p in procs:
            out.append((p["comm"], p["peak_kib"] / 1024, p.get("anon_kib", 0) / 1024))
    return sorted(out, key=lambda x: -x[1])


def peaks_text(rec):
    """Every process's peak, processes of the same name folded together ("bash ×4 ≤ 3")."""
    groups = {}
    for comm, m, anon in proc_peaks(rec):
        groups.setdefault(comm, []).append((m, anon))
    parts = []
    for comm, ms in sorted(groups.items(), key=lambda kv: -max(m for m, _ in kv[1])):
        top, anon = max(ms)
        # Anonymous memory is shown where it says something: large processes.
        detail = f" (anon {anon:.0f})" if top >= 32 else ""
        parts.append(f"{comm} {top:.0f}{detail}" if len(ms) == 1 else f"{comm} ×{len(ms)} ≤ {top:.0f}{detail}")
    return ", ".join(parts)


def table(records, baseline, disk_size):
    head = ("| tool | wall s | MB/s | sent MiB | loopback MiB | CPU s | peak RSS MiB, largest process | Ferry speed-up "
            "| bytes vs Ferry |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    rows = []
    for r in records:
        wall = r["wall_s"]
        mbps = disk_size / wall / 1e6 if wall > 0 else 0.0
        sent = r.get("sent_bytes")
        lo = r.get("lo_bytes")
        rss = max((m for _, m, _ in proc_peaks(r)), default=0.0)
        if r is baseline:
            speed, ratio = "1.00× (baseline)", "1.00×"
        else:
            speed = f"{wall / baseline['wall_s']:.2f}×"
            bsent = baseline.get("sent_bytes")
            ratio = f"{sent / bsent:.2f}×" if sent is not None and bsent else "—"
        label = r["label"].replace("|", "\\|")
        lo_text = "—" if r.get("local") or lo is None else mib(lo)
        rows.append(
            f"| {label} | {wall:.1f} | {mbps:.0f} | {mib(sent) if sent is not None else '—'} | "
            f"{lo_text} | {r['cpu_s']:.1f} | {rss:.0f} | {speed} | {ratio} |"
        )
    return head + "\n".join(rows) + "\n"


def split_line(ferry, records):
    """Ferry's wall time split into the agent's replication and the image build that follows it."""
    rep = ferry.get("replication_s")
    if rep is None:
        return ""
    others = ", ".join(
        f"{r['label']} {r['wall_s'] / rep:.2f}×"
        for r in records
        if not r["id"].startswith("ferry") and r["id"] != "qemu-img"
    )
    return (
        f"Ferry's wall time = agent replication {rep:.1f} s (the run's ElapsedMs) + image build, "
        f"verification {ferry['wall_s'] - rep:.1f} s. Replication alone, speed-up vs: {others}.\n"
    )


def cmd_report(args):
    run = os.path.join(args.workdir, "run")
    records = []
    with open(os.path.join(run, "results.jsonl")) as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
    meta = load_json(os.path.join(run, "meta.json"), "the run's description")
    mix = load_json(os.path.join(args.workdir, "cache", "mix.json"), "the image's mix")
    change = load_json(os.path.join(run, "change.json"), "the change summary")
    diff = load_json(os.path.join(run, "chunkdiff.json"), "the changed chunks")
    size = mix["size_bytes"]
    by = {r["id"]: r for r in records}
    full = [by[k] for k in ("ferry-full", "ferry-full-l1", "rsync-full", "zstd-nc", "qemu-img", "restic-first") if k in by]
    incr = [by[k] for k in ("ferry-incr", "rsync-incr", "restic-second") if k in by]
    if "ferry-full" not in by or "ferry-incr" not in by:
        die("the Ferry measurements are missing from results.jsonl: the run did not finish")

    o = []
    o.append(f"# Replication benchmark — {meta['date']}\n")
    o.append(f"Machine: {meta['machine']}. Ferry {meta['commit']}. {meta['tools']}.\n")
    o.append(
        f"Disk: {mib(size)} MiB raw image, GPT + one ext4 partition: {mix['os_tree']} ; "
        f"{mib(mix['random_bytes'])} MiB random data in {mix['random_files']} files; "
        f"{mib(mix['residue_bytes'])} MiB of deleted-file residue; ext4 used {mib(mix['ext4_used_bytes'])} MiB; "
        f"all-zero 1 MiB chunks {mix['zero_chunks']} of {mix['chunks']} "
        f"({mib(mix['zero_chunks'] * CHUNK)} MiB); file allocated {mib(mix['allocated_bytes'])} MiB.\n"
    )
    o.append("## Full replication\n")
    o.append(table(full, by["ferry-full"], size))
    o.append(split_line(by["ferry-full"], full))
    o.append("## Incremental run after a ~1% change\n")
    o.append(
        f"Change through the mounted filesystem: {change['extents_rewritten']} × 1 MiB extents rewritten in "
        f"{change['files_with_extents']} files, {change['files_upgraded']} OS files replaced "
        f"({mib(change['upgraded_bytes'])} MiB), {mib(change['new_files_bytes'])} MiB of new files: "
        f"{mib(change['total_bytes'])} MiB = {100 * change['total_bytes'] / change['used_bytes']:.2f}% of "
        f"{mib(change['used_bytes'])} MiB used.\n"
    )
    o.append(table(incr, by["ferry-incr"], size))
    o.append(split_line(by["ferry-incr"], incr))
    fi = by["ferry-incr"]
    o.append(
        f"1 MiB chunks that really changed: {diff['changed_chunks']} ({mib(diff['changed_raw_bytes'])} MiB raw, "
        f"{mib(diff['changed_zstd1_bytes'])} MiB after zstd -1 each; {diff['changed_to_zero_chunks']} became "
        f"all-zero). Ferry sent {mib(fi['sent_bytes'])} MiB = "
        f"{fi['sent_bytes'] / max(diff['changed_zstd1_bytes'], 1):.2f}× that.\n"
    )
    o.append("## Details\n")
    for r in full + incr:
        peaks = peaks_text(r)
        extra = f" {r['notes']}" if r.get("notes") else ""
        load = f" Load average at start: {r['load1']}." if "load1" in r else ""
        o.append(
            f"- **{r['label']}**: `{r['command']}`. CPU {r['cpu_detail']}. Peak RSS MiB: {peaks}.{extra}{load}"
        )
    for key in (k for k in ("ferry-full", "ferry-full-l1", "ferry-incr") if k in by):
        agent = [m for c, m, _ in proc_peaks(by[key]) if c.startswith("ferry-agent")]
        server = [m for c, m, _ in proc_peaks(by[key]) if c == "ferry"]
        o.append(
            f"\nFerry agent peak RSS ({by[key]['label']}): {max(agent, default=0):.0f} MiB "
            f"(server {max(server, default=0):.0f} MiB)."
        )
    o.append(
        "\nwall s: from the command's start to its end (Ferry: `ferry job start` until DescribeReplicationJobs "
        "shows the run Succeeded and the job Waiting, i.e. replication + raw image build + verification; the qcow2 is derived afterwards). "
        "MB/s: logical disk size (10^6 bytes) / wall. sent: the tool's own count of payload bytes (Ferry: the "
        "run's BytesSent; rsync: `Total bytes sent`; zstd|nc: bytes received; restic: repository growth). "
        "loopback: every byte on the benchmark's private loopback interface during the interval, both "
        "directions, with TCP/IP, TLS or SSH overhead (Ferry's includes heartbeats and the benchmark's status "
        "polls). CPU s: user+sys of every process of the tool (cgroup cpu.stat). peak RSS: the VmHWM of the "
        "tool's largest process (every process is listed above, with the largest anonymous RSS sampled every "
        "100 ms; the rest is file-backed or shared pages mapped into it). Ferry speed-up: other wall / Ferry wall. bytes vs Ferry: other sent / "
        "Ferry sent."
    )
    text = "\n".join(o) + "\n"
    with open(os.path.join(args.workdir, "results.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("oslist")
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("roots", nargs="+")
    p = sub.add_parser("rss")
    p.add_argument("--out", required=True)
    p.add_argument("cgroups", nargs="+")
    p = sub.add_parser("change")
    p.add_argument("mountpoint")
    p.add_argument("--fraction", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=11)
    p = sub.add_parser("chunkdiff")
    p.add_argument("old")
    p.add_argument("new")
    p = sub.add_parser("mix")
    p.add_argument("image")
    p = sub.add_parser("report")
    p.add_argument("workdir")
    args = ap.parse_args()
    {"oslist": cmd_oslist, "rss": cmd_rss, "change": cmd_change, "chunkdiff": cmd_chunkdiff,
     "mix": cmd_mix, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
