//! Finding a running QEMU through its pidfile and `/proc`.
//!
//! A pidfile alone is not proof: after a host reboot or a crash the PID may belong to another process.
//! A process counts as the instance's QEMU only if it is alive (not a zombie) and its command line names
//! the instance's pidfile, which holds the instance ID.

use std::path::Path;

/// The PID in `pidfile` if that process is alive and its command line contains `pidfile`'s path.
pub fn live_pid(pidfile: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(pidfile).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    if pid == 0 || !alive(pid) {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let want = pidfile.as_os_str().as_encoded_bytes();
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == want)
        .then_some(pid)
}

/// Whether `pid` exists and is not a zombie (a killed QEMU whose parent has not reaped it yet is dead).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S …`: comm may contain spaces and parentheses, the state follows the last ')'.
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_but_not_an_instance() {
        assert!(alive(std::process::id()));
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("qemu.pid");
        std::fs::write(&pidfile, std::process::id().to_string()).expect("write");
        // This test process is alive, but its command line does not name the pidfile: not an instance.
        assert_eq!(live_pid(&pidfile), None);
        std::fs::write(&pidfile, "garbage").expect("write");
        assert_eq!(live_pid(&pidfile), None);
        assert_eq!(live_pid(&dir.path().join("missing.pid")), None);
    }
}
