//! `/etc/fstab`: parsing, and rewriting entries by device name (`/dev/sdb1`) to `UUID=`.
//!
//! Device names change on the target (`sd*` becomes `vd*`); UUIDs, labels and LVM names do not, so only
//! device-name entries are rewritten, each to the UUID of the matching partition on the image disks.

use serde::{Deserialize, Serialize};

use super::volumes::Volume;

/// One `/etc/fstab` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FstabEntry {
    /// The first field (`UUID=…`, `/dev/sdb1`, `/dev/mapper/vg-root`).
    pub spec: String,
    /// The mount point.
    pub mountpoint: String,
    /// The filesystem type.
    pub fstype: String,
    /// The options.
    pub options: String,
}

/// Parses fstab text (comments and malformed lines skipped).
pub fn parse(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 3 {
                return None;
            }
            Some(FstabEntry {
                spec: unescape(f[0]),
                mountpoint: unescape(f[1]),
                fstype: f[2].to_string(),
                options: f.get(3).unwrap_or(&"defaults").to_string(),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t")
}

/// A source device name split into (disk, partition): `/dev/sdb1` → (`/dev/sdb`, Some(1)),
/// `/dev/nvme0n1p2` → (`/dev/nvme0n1`, Some(2)), `/dev/xvda` → (`/dev/xvda`, None).
pub(crate) fn split_device(spec: &str) -> Option<(String, Option<u32>)> {
    let rest = spec.strip_prefix("/dev/")?;
    if let Some(n) = rest.strip_prefix("nvme") {
        // nvme<ctrl>n<ns>[p<part>]
        let (disk, part) = match n.split_once('p') {
            Some((d, p)) => (d, Some(p.parse::<u32>().ok()?)),
            None => (n, None),
        };
        let (c, ns) = disk.split_once('n')?;
        c.parse::<u32>().ok()?;
        ns.parse::<u32>().ok()?;
        return Some((format!("/dev/nvme{disk}"), part));
    }
    for prefix in ["xvd", "sd", "vd", "hd"] {
        if let Some(n) = rest.strip_prefix(prefix) {
            let letters: String = n.chars().take_while(|c| c.is_ascii_lowercase()).collect();
            let digits = &n[letters.len()..];
            if letters.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let part = if digits.is_empty() {
                None
            } else {
                Some(digits.parse::<u32>().ok()?)
            };
            return Some((format!("/dev/{prefix}{letters}"), part));
        }
    }
    None
}

/// The image disk index a source disk name maps to: by `source_devices`, else by order of its letters
/// (`sda`/`vda`/`xvda`/`hda` = 0) or controller number (`nvme1n1` = 1).
pub(crate) fn disk_index(disk: &str, source_devices: &[String]) -> Option<usize> {
    if !source_devices.is_empty() {
        return source_devices.iter().position(|d| d == disk);
    }
    let rest = disk.strip_prefix("/dev/")?;
    if let Some(n) = rest.strip_prefix("nvme") {
        return n.split_once('n')?.0.parse::<usize>().ok();
    }
    for prefix in ["xvd", "sd", "vd", "hd"] {
        if let Some(l) = rest.strip_prefix(prefix) {
            let mut idx = 0usize;
            for c in l.chars() {
                if !c.is_ascii_lowercase() {
                    return None;
                }
                idx = idx * 26 + (c as usize - 'a' as usize + 1);
            }
            return idx.checked_sub(1);
        }
    }
    None
}

/// The volume a device name denotes on the image disks, if any.
pub(crate) fn volume_for_device<'a>(
    vols: &'a [Volume],
    spec: &str,
    source_devices: &[String],
) -> Option<&'a Volume> {
    let (disk, part) = split_device(spec)?;
    let idx = disk_index(&disk, source_devices)?;
    vols.iter()
        .find(|v| v.lvm.is_none() && v.disk == idx && v.partno == part)
}

/// Rewrites device-name specs to `UUID=`. Returns the new text, the (old, new) pairs, and warnings for
/// device names with no matching partition.
pub(crate) fn rewrite(
    text: &str,
    vols: &[Volume],
    source_devices: &[String],
) -> (String, Vec<(String, String)>, Vec<String>) {
    let mut out = String::with_capacity(text.len() + 64);
    let mut changed = Vec::new();
    let mut warnings = Vec::new();
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let first = t.split_whitespace().next().unwrap_or("");
        if t.starts_with('#') || split_device(first).is_none() {
            out.push_str(line);
            continue;
        }
        match volume_for_device(vols, first, source_devices).and_then(|v| v.uuid.as_ref()) {
            Some(uuid) => {
                let new = format!("UUID={uuid}");
                let indent = &line[..line.len() - t.len()];
                out.push_str(&format!("# Ferry: was {first}\n"));
                out.push_str(indent);
                out.push_str(&new);
                out.push_str(&t[first.len()..]);
                changed.push((first.to_string(), new));
            }
            None => {
                warnings.push(format!(
                    "/etc/fstab names {first}, which matches no partition with a UUID on the image disks: it was left as is and will not be found on the target; fix /etc/fstab on the source or pass the source device names"
                ));
                out.push_str(line);
            }
        }
    }
    (out, changed, warnings)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports failure
mod tests {
    use super::*;

    #[test]
    fn splits_device_names() {
        assert_eq!(
            split_device("/dev/sdb1"),
            Some(("/dev/sdb".into(), Some(1)))
        );
        assert_eq!(split_device("/dev/xvda"), Some(("/dev/xvda".into(), None)));
        assert_eq!(
            split_device("/dev/hdc12"),
            Some(("/dev/hdc".into(), Some(12)))
        );
        assert_eq!(
            split_device("/dev/nvme0n1p2"),
            Some(("/dev/nvme0n1".into(), Some(2)))
        );
        assert_eq!(
            split_device("/dev/nvme1n1"),
            Some(("/dev/nvme1n1".into(), None))
        );
        assert_eq!(split_device("/dev/mapper/vg-root"), None);
        assert_eq!(split_device("UUID=abc"), None);
        assert_eq!(split_device("/dev/sd"), None);
        assert_eq!(split_device("/dev/sdb1x"), None);
    }

    #[test]
    fn maps_disks_by_order_or_by_list() {
        assert_eq!(disk_index("/dev/sda", &[]), Some(0));
        assert_eq!(disk_index("/dev/vdb", &[]), Some(1));
        assert_eq!(disk_index("/dev/sdaa", &[]), Some(26));
        assert_eq!(disk_index("/dev/nvme1n1", &[]), Some(1));
        let list = vec!["/dev/sdc".to_string(), "/dev/sda".to_string()];
        assert_eq!(disk_index("/dev/sda", &list), Some(1));
        assert_eq!(disk_index("/dev/sdb", &list), None);
    }

    #[test]
    fn parses_fstab() {
        let e = parse(
            "# c\nUUID=1 / ext4 errors=remount-ro 0 1\n/dev/sdb1\t/srv/my\\040data xfs\n\nbad\n",
        );
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].mountpoint, "/srv/my data");
        assert_eq!(e[1].options, "defaults");
    }
}
