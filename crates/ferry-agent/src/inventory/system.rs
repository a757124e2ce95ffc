//! Host facts: OS release, kernel, architecture, boot mode, CPUs, memory, DNS and mounts.
//!
//! The parsers here are pure functions over the text of `/etc/os-release`, `/proc/meminfo`, `/proc/cpuinfo`,
//! `/etc/resolv.conf` and `/proc/self/mountinfo`, so they are tested without the files. The readers around
//! them never fail: a missing or unreadable file yields a default value and a warning in the log, because a
//! partial inventory is more useful to the operator than none.

use std::collections::HashMap;
use std::path::Path;

use ferry_types::inventory::{BootMode, OsRelease};
use tracing::warn;

use super::tools;

/// Reads a file to a string, logging (not failing) when it cannot be read.
pub(crate) fn read_optional(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(err) => {
            warn!(path = %path.display(), error = %err, "cannot read file; the inventory field it feeds stays empty");
            None
        }
    }
}

/// Parses os-release(5): `KEY=value` lines with optional shell quoting.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut fields: HashMap<&str, String> = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            fields.insert(key.trim(), unquote_shell(value.trim()));
        }
    }
    let mut take = |key: &str| fields.remove(key).unwrap_or_default();
    OsRelease {
        id: take("ID"),
        name: take("NAME"),
        version_id: take("VERSION_ID"),
        pretty_name: take("PRETTY_NAME"),
    }
}

/// Undoes the subset of shell quoting os-release allows: one single- or double-quoted string, with backslash
/// escapes inside double quotes.
fn unquote_shell(value: &str) -> String {
    let bytes = value.as_bytes();
    if bytes.len() >= 2 && bytes[0] == b'\'' && bytes[bytes.len() - 1] == b'\'' {
        return value[1..value.len() - 1].to_owned();
    }
    if bytes.len() >= 2 && bytes[0] == b'"' && bytes[bytes.len() - 1] == b'"' {
        let mut out = String::new();
        let mut chars = value[1..value.len() - 1].chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else {
                out.push(c);
            }
        }
        return out;
    }
    value.to_owned()
}

/// Reads `<root>/etc/os-release`, falling back to `<root>/usr/lib/os-release` as os-release(5) says.
pub(crate) fn os_release(root: &Path) -> OsRelease {
    for candidate in ["etc/os-release", "usr/lib/os-release"] {
        if let Ok(text) = std::fs::read_to_string(root.join(candidate)) {
            return parse_os_release(&text);
        }
    }
    warn!(root = %root.display(), "no etc/os-release or usr/lib/os-release; the OS stays unknown");
    OsRelease::default()
}

/// `MemTotal` from /proc/meminfo, in bytes.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let multiplier = match parts.next() {
        Some("kB") | Some("KB") | Some("kb") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(multiplier)
}

/// Number of `processor` entries in /proc/cpuinfo (all online CPUs, not just the ones this process may use).
pub fn parse_cpuinfo_count(text: &str) -> u32 {
    let count = text
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Name servers from resolv.conf, in order.
pub fn parse_resolv_conf(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .map(str::to_owned)
        })
        .collect()
}

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// `(major, minor)` of the mounted device.
    pub dev: (u32, u32),
    /// The subtree of the filesystem mounted here; `/` unless this is a bind mount of a subdirectory.
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
    /// The mount source (`/dev/sda1`, `tmpfs`, ...).
    pub source: String,
}

/// Parses /proc/self/mountinfo (proc(5)); malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    if fields.len() < 5 {
        return None;
    }
    let (major, minor) = fields[2].split_once(':')?;
    let mut after = after.split(' ');
    let fs_type = after.next()?;
    let source = after.next().unwrap_or("");
    Some(MountEntry {
        dev: (major.parse().ok()?, minor.parse().ok()?),
        root: unescape_octal(fields[3]),
        mount_point: unescape_octal(fields[4]),
        fs_type: fs_type.to_owned(),
        source: unescape_octal(source),
    })
}

/// The kernel escapes space, tab, newline and backslash in mountinfo as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the filesystem on device `dev` is mounted: its first mount of the whole filesystem (root `/`),
/// else its first bind mount.
pub fn mount_point_of(mounts: &[MountEntry], dev: (u32, u32)) -> Option<String> {
    let mut on_dev = mounts.iter().filter(|m| m.dev == dev);
    let first = on_dev.clone().next()?;
    Some(
        on_dev
            .find(|m| m.root == "/")
            .unwrap_or(first)
            .mount_point
            .clone(),
    )
}

/// The live mount table; empty (with a warning) when /proc is not mounted.
pub(crate) fn mounts() -> Vec<MountEntry> {
    read_optional(Path::new("/proc/self/mountinfo"))
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

fn first_line(text: &str) -> Option<String> {
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_owned())
}

/// The running kernel's host name; falls back to `<root>/etc/hostname` (an offline source has no kernel).
pub(crate) fn hostname(root: &Path) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|t| first_line(&t))
        .or_else(|| {
            std::fs::read_to_string(root.join("etc/hostname"))
                .ok()
                .and_then(|t| first_line(&t))
        })
        .unwrap_or_else(|| {
            warn!("cannot read the host name from /proc/sys/kernel/hostname or etc/hostname");
            String::new()
        })
}

/// The running kernel's release (`uname -r`).
pub(crate) fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|t| first_line(&t))
        .or_else(|| {
            tools::run("uname", ["-r"])
                .ok()
                .and_then(|t| first_line(&t))
        })
        .unwrap_or_else(|| {
            warn!("cannot find the kernel release from /proc/sys/kernel/osrelease or `uname -r`");
            String::new()
        })
}

/// The machine architecture as the kernel names it (`uname -m`). The compile-time architecture is the last
/// resort only, because a 32-bit agent can run on a 64-bit kernel.
pub(crate) fn architecture() -> String {
    std::fs::read_to_string("/proc/sys/kernel/arch")
        .ok()
        .and_then(|t| first_line(&t))
        .or_else(|| {
            tools::run("uname", ["-m"])
                .ok()
                .and_then(|t| first_line(&t))
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

/// UEFI firmware exposes /sys/firmware/efi to the running kernel; BIOS (or CSM) boots do not.
pub(crate) fn boot_mode() -> BootMode {
    if Path::new("/sys/firmware/efi").exists() {
        BootMode::Uefi
    } else {
        BootMode::Bios
    }
}

pub(crate) fn cpus() -> u32 {
    let from_cpuinfo = std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| parse_cpuinfo_count(&t))
        .unwrap_or(0);
    if from_cpuinfo > 0 {
        return from_cpuinfo;
    }
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or_else(|err| {
            warn!(error = %err, "cannot count CPUs from /proc/cpuinfo or the scheduler");
            0
        })
}

pub(crate) fn memory_bytes() -> u64 {
    read_optional(Path::new("/proc/meminfo"))
        .and_then(|t| parse_meminfo_total(&t))
        .unwrap_or_else(|| {
            warn!("no MemTotal in /proc/meminfo; memory size stays 0");
            0
        })
}

/// Name servers of the source. When resolv.conf points at systemd-resolved's local stub, the real upstream
/// servers are in /run/systemd/resolve/resolv.conf, and those are what the target needs.
pub(crate) fn dns(root: &Path) -> Vec<String> {
    let servers = read_optional(&root.join("etc/resolv.conf"))
        .map(|t| parse_resolv_conf(&t))
        .unwrap_or_default();
    if servers.iter().all(|s| s == "127.0.0.53") && !servers.is_empty() {
        if let Ok(text) = std::fs::read_to_string(root.join("run/systemd/resolve/resolv.conf")) {
            let upstream = parse_resolv_conf(&text);
            if !upstream.is_empty() {
                return upstream;
            }
        }
    }
    servers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_handles_quotes_and_comments() {
        let text = "# comment\nNAME=\"Rocky Linux\"\nVERSION_ID='9.3'\nID=rocky\n\
                    PRETTY_NAME=\"Rocky \\\"Blue\\\" Onyx\"\nID_LIKE=\"rhel centos fedora\"\n";
        let os = parse_os_release(text);
        assert_eq!(os.id, "rocky");
        assert_eq!(os.name, "Rocky Linux");
        assert_eq!(os.version_id, "9.3");
        assert_eq!(os.pretty_name, "Rocky \"Blue\" Onyx");
    }

    #[test]
    fn os_release_missing_keys_are_empty() {
        let os = parse_os_release("ID=alpine\n");
        assert_eq!(os.id, "alpine");
        assert_eq!(os.version_id, "");
    }

    #[test]
    fn meminfo_total_in_bytes() {
        let text = "MemFree:  100 kB\nMemTotal:       16318412 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(16318412 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn cpuinfo_counts_processors() {
        let text = "processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\nmodel name\t: x\n";
        assert_eq!(parse_cpuinfo_count(text), 2);
        assert_eq!(parse_cpuinfo_count(""), 0);
    }

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let text = "# generated\nsearch example.com\nnameserver 192.0.2.53\nnameserver  2001:db8::53\noptions edns0\n";
        assert_eq!(parse_resolv_conf(text), ["192.0.2.53", "2001:db8::53"]);
    }

    #[test]
    fn mountinfo_parses_and_unescapes() {
        let text = "36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    37 35 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    38 35 8:1 /srv /srv/bind rw shared:2 - ext4 /dev/sda1 rw\n\
                    garbage\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].dev, (98, 0));
        assert_eq!(mounts[0].mount_point, "/mnt/my disk");
        assert_eq!(mounts[0].root, "/mnt1");
        assert_eq!(mounts[1].fs_type, "ext4");
        assert_eq!(mounts[1].source, "/dev/sda1");
        assert_eq!(mount_point_of(&mounts, (8, 1)).as_deref(), Some("/"));
        assert_eq!(
            mount_point_of(&mounts, (98, 0)).as_deref(),
            Some("/mnt/my disk")
        );
        assert_eq!(mount_point_of(&mounts, (8, 2)), None);
    }
}
