//! CPU time and memory of server processes, read from `/proc` (Linux only): what the load benchmark
//! reports as "server CPU" and "peak RSS".
//!
//! CPU is `utime + stime` of a process and of all its live descendants, plus the `cutime + cstime` of the
//! root (children it already reaped, e.g. a finished `qemu-img`, or PostgreSQL backends that exited), so a
//! difference of two samples is the CPU the whole tree used in between. Peak RSS is the largest `VmHWM`
//! (the kernel's high-water mark) of any process of the tree. A process that cannot be read (it exited
//! between listing and reading) is skipped: samples are estimates of a moving tree, never an error.

use std::collections::HashMap;
use std::path::Path;

/// One sample of a process tree.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct TreeSample {
    /// CPU seconds used so far by the tree (see the module doc).
    pub cpu_secs: f64,
    /// Largest `VmHWM` of the tree's processes, in bytes.
    pub peak_rss_bytes: u64,
    /// Sum of `VmRSS` of the tree's processes, in bytes.
    pub rss_bytes: u64,
    /// Processes in the tree.
    pub processes: usize,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on every Linux in use).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Fields of `/proc/<pid>/stat` after the command name: (ppid, utime, stime, cutime, cstime) in ticks.
fn stat(pid: u32) -> Option<(u32, u64, u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15, cutime 16, cstime 17.
    let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some((u32::try_from(n(4)?).ok()?, n(14)?, n(15)?, n(16)?, n(17)?))
}

/// `VmHWM` and `VmRSS` of a process in bytes.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    Some((kib("VmHWM:")?, kib("VmRSS:")?))
}

/// Samples the tree rooted at `root`; `None` if `root` itself is gone.
pub fn sample_tree(root: u32, ticks_per_sec: f64) -> Option<TreeSample> {
    let (_, ru, rs, rcu, rcs) = stat(root)?;
    // Parent links of every process, to find the root's descendants.
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir(Path::new("/proc")) {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, ..)) = stat(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut ticks = ru + rs + rcu + rcs;
    let (mut peak, mut rss) = memory(root).unwrap_or((0, 0));
    let mut processes = 1;
    let mut todo: Vec<u32> = children.get(&root).cloned().unwrap_or_default();
    while let Some(pid) = todo.pop() {
        if let Some((_, u, s, _, _)) = stat(pid) {
            ticks += u + s;
            processes += 1;
            if let Some((hwm, r)) = memory(pid) {
                peak = peak.max(hwm);
                rss += r;
            }
        }
        if let Some(c) = children.get(&pid) {
            todo.extend(c);
        }
    }
    Some(TreeSample {
        cpu_secs: ticks as f64 / ticks_per_sec,
        peak_rss_bytes: peak,
        rss_bytes: rss,
        processes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu_and_memory() {
        let me = std::process::id();
        let ticks = clock_ticks();
        let a = sample_tree(me, ticks).expect("own process");
        // Burn some CPU so the second sample must be larger.
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let b = sample_tree(me, ticks).expect("own process");
        assert!(b.cpu_secs > a.cpu_secs, "{a:?} then {b:?}");
        assert!(b.peak_rss_bytes > 0 && b.rss_bytes > 0);
        assert!(sample_tree(u32::MAX, ticks).is_none());
    }
}
