//! Prechecks: can this source server be migrated as it is now?
//!
//! [`run`] judges an [`Inventory`] plus what the agent learned from talking to the server
//! ([`PrecheckContext`]) and returns one [`Precheck`] per check, always in the same order:
//! `clock_skew`, `connectivity`, `disks_readable`, `supported_layout`, `boot_mode_supported`.
//!
//! Invariants: every check reports (none is skipped); every `reason` says what was found and, on failure,
//! what the operator should do; `disks_readable` only reads, through a read-only file handle.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime};

use ferry_types::inventory::{BootMode, Disk, Filesystem, Inventory, PartitionTableType, Precheck};

/// Largest clock difference to the server that passes `clock_skew`. Beyond it, signed requests and
/// snapshot timestamps stop being trustworthy.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// How much `disks_readable` reads at each end of a disk.
pub const PROBE_BYTES: u64 = 4096;

pub const CLOCK_SKEW: &str = "clock_skew";
pub const CONNECTIVITY: &str = "connectivity";
pub const DISKS_READABLE: &str = "disks_readable";
pub const SUPPORTED_LAYOUT: &str = "supported_layout";
pub const BOOT_MODE_SUPPORTED: &str = "boot_mode_supported";

/// Filesystem types (blkid names) that Ferry copies and can check and adapt on the target.
pub const SUPPORTED_FILESYSTEMS: &[&str] = &[
    "ext2",
    "ext3",
    "ext4",
    "xfs",
    "btrfs",
    "vfat",
    "ntfs",
    "swap",
    "LVM2_member",
    "linux_raid_member",
];

/// Partition types that never hold a filesystem: GPT BIOS boot, Microsoft reserved and PowerPC PReP; MBR
/// extended containers (05, 0f, 85) and PReP (41).
const NO_FILESYSTEM_TYPES: &[&str] = &[
    "21686148-6449-6E6F-744E-656564454649",
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",
    "9E1A2D38-C612-4316-AA26-8B49521E5A8B",
    "5",
    "05",
    "f",
    "0f",
    "85",
    "41",
];

/// What the agent learned from the Ferry server before running the prechecks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrecheckContext {
    /// The server's clock, from the `Date` header of its last response; `None` if there was none.
    pub server_time: Option<SystemTime>,
    /// Whether the last request to the server succeeded; the error text otherwise.
    pub server_reachable: Result<(), String>,
}

/// Runs every precheck against `inv`, comparing clocks with the local clock now.
pub fn run(inv: &Inventory, ctx: &PrecheckContext) -> Vec<Precheck> {
    vec![
        clock_skew(SystemTime::now(), ctx.server_time),
        connectivity(&ctx.server_reachable),
        disks_readable(&inv.disks),
        supported_layout(&inv.disks),
        boot_mode_supported(&inv.architecture, inv.boot_mode),
    ]
}

fn check(name: &str, passed: bool, reason: String) -> Precheck {
    Precheck {
        name: name.to_owned(),
        passed,
        reason,
    }
}

fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, (secs % 3600) / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, s) => format!("{h}h {m}m {s}s"),
    }
}

/// `clock_skew`: the local clock `local` must be within [`MAX_CLOCK_SKEW`] of the server's.
pub fn clock_skew(local: SystemTime, server: Option<SystemTime>) -> Precheck {
    let Some(server) = server else {
        return check(
            CLOCK_SKEW,
            false,
            "the server's time is unknown (no response with a Date header yet), so clock skew could not be \
             measured: make the server reachable and run the prechecks again"
                .to_owned(),
        );
    };
    let (skew, direction) = match local.duration_since(server) {
        Ok(ahead) => (ahead, "ahead of"),
        Err(behind) => (behind.duration(), "behind"),
    };
    let described = format!(
        "this server's clock is {} {direction} the Ferry server's",
        human_duration(skew)
    );
    if skew > MAX_CLOCK_SKEW {
        check(
            CLOCK_SKEW,
            false,
            format!(
                "{described}, more than the {} allowed: enable time synchronisation (NTP: chrony or \
                 systemd-timesyncd) on both machines and run the prechecks again",
                human_duration(MAX_CLOCK_SKEW)
            ),
        )
    } else {
        check(
            CLOCK_SKEW,
            true,
            format!(
                "{described}, within the {} allowed",
                human_duration(MAX_CLOCK_SKEW)
            ),
        )
    }
}

/// `connectivity`: the agent's last request to the server succeeded.
pub fn connectivity(reachable: &Result<(), String>) -> Precheck {
    match reachable {
        Ok(()) => check(
            CONNECTIVITY,
            true,
            "the Ferry server answered over HTTPS".to_owned(),
        ),
        Err(err) => check(
            CONNECTIVITY,
            false,
            format!(
                "the Ferry server could not be reached ({err}): check DNS, that outbound HTTPS to the server is \
                 allowed by firewalls, and HTTPS_PROXY if this network needs a proxy"
            ),
        ),
    }
}

/// Reads `len` bytes at `offset`, naming what failed.
fn read_at(file: &File, offset: u64, len: u64, what: &str) -> Result<(), String> {
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
    file.read_exact_at(&mut buf, offset)
        .map_err(|err| format!("cannot read the {what} {len} bytes (offset {offset}): {err}"))
}

fn probe_disk(disk: &Disk) -> Result<(), String> {
    if disk.size_bytes == 0 {
        return Err("its size is 0, so there is nothing to read".to_owned());
    }
    let file = File::open(&disk.path).map_err(|err| format!("cannot open it: {err}"))?;
    let len = PROBE_BYTES.min(disk.size_bytes);
    read_at(&file, 0, len, "first")?;
    read_at(&file, disk.size_bytes - len, len, "last")
}

/// `disks_readable`: each disk can be opened, and its first and last [`PROBE_BYTES`] read.
pub fn disks_readable(disks: &[Disk]) -> Precheck {
    if disks.is_empty() {
        return check(
            DISKS_READABLE,
            false,
            "the inventory has no disks: name the disks to migrate explicitly".to_owned(),
        );
    }
    let failures: Vec<String> = disks
        .iter()
        .filter_map(|d| {
            probe_disk(d)
                .err()
                .map(|why| format!("disk {} ({}): {why}", d.index, d.path))
        })
        .collect();
    if failures.is_empty() {
        let paths: Vec<&str> = disks.iter().map(|d| d.path.as_str()).collect();
        check(
            DISKS_READABLE,
            true,
            format!(
                "read the first and last {PROBE_BYTES} bytes of every disk: {}",
                paths.join(", ")
            ),
        )
    } else {
        check(
            DISKS_READABLE,
            false,
            format!(
                "{}; check that each path exists, that ferry-agent runs as root, and the kernel log (dmesg) for \
                 I/O errors",
                failures.join("; ")
            ),
        )
    }
}

fn filesystem_problem(fs: &Filesystem) -> Option<String> {
    if SUPPORTED_FILESYSTEMS.contains(&fs.fs_type.as_str()) {
        return None;
    }
    let lower = fs.fs_type.to_ascii_lowercase();
    Some(
        if lower.contains("bitlocker") || lower.contains("luks") || lower.contains("crypt") {
            format!(
                "holds an encrypted volume ({}), which Ferry cannot check or adapt: decrypt it, or leave this \
             disk out of the migration",
                fs.fs_type
            )
        } else {
            format!(
                "holds {}, which Ferry does not support (supported: {}): convert it or leave this disk out",
                fs.fs_type,
                SUPPORTED_FILESYSTEMS.join(", ")
            )
        },
    )
}

fn disk_layout_problems(disk: &Disk) -> Vec<String> {
    let name = format!("disk {} ({})", disk.index, disk.path);
    let mut problems = Vec::new();
    if disk.size_bytes == 0 {
        problems.push(format!(
            "{name} has size 0: check that the device or image is the right one"
        ));
    }
    match (disk.partition_table, &disk.filesystem) {
        (None, None) => problems.push(format!(
            "{name} has neither an MBR/GPT partition table nor a filesystem on the whole disk: \
             if it is blank or holds something else, leave it out of the migration"
        )),
        (None, Some(fs)) => {
            if let Some(p) = filesystem_problem(fs) {
                problems.push(format!("{name} {p}"));
            }
        }
        (Some(_), _) => {
            for part in &disk.partitions {
                let pname = format!("partition {} of {name}", part.number);
                match &part.filesystem {
                    Some(fs) => {
                        if let Some(p) = filesystem_problem(fs) {
                            problems.push(format!("{pname} {p}"));
                        }
                    }
                    None if NO_FILESYSTEM_TYPES.contains(&part.type_id.as_str()) => {}
                    None => problems.push(format!(
                        "{pname} (type {}) has no recognisable filesystem: it may be encrypted, raw database \
                         storage or empty; Ferry would copy it without being able to check it, so make sure \
                         that is intended or leave this disk out",
                        part.type_id
                    )),
                }
            }
        }
    }
    problems
}

/// `supported_layout`: every disk is non-empty and has an MBR or GPT table or a whole-disk filesystem, and
/// every filesystem found is one Ferry supports.
pub fn supported_layout(disks: &[Disk]) -> Precheck {
    if disks.is_empty() {
        return check(
            SUPPORTED_LAYOUT,
            false,
            "the inventory has no disks: name the disks to migrate explicitly".to_owned(),
        );
    }
    let problems: Vec<String> = disks.iter().flat_map(disk_layout_problems).collect();
    if problems.is_empty() {
        let summary: Vec<String> = disks
            .iter()
            .map(|d| match d.partition_table {
                Some(PartitionTableType::Gpt) => {
                    format!("{}: GPT, {} partitions", d.path, d.partitions.len())
                }
                Some(PartitionTableType::Mbr) => {
                    format!("{}: MBR, {} partitions", d.path, d.partitions.len())
                }
                None => format!(
                    "{}: whole-disk {}",
                    d.path,
                    d.filesystem
                        .as_ref()
                        .map_or("filesystem", |f| f.fs_type.as_str())
                ),
            })
            .collect();
        check(
            SUPPORTED_LAYOUT,
            true,
            format!("every disk has a supported layout ({})", summary.join("; ")),
        )
    } else {
        check(SUPPORTED_LAYOUT, false, problems.join("; "))
    }
}

/// `boot_mode_supported`: BIOS or UEFI on x86_64, UEFI on aarch64 (KVM's arm64 machines only boot UEFI).
pub fn boot_mode_supported(architecture: &str, mode: BootMode) -> Precheck {
    let arch = match architecture {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        other => other,
    };
    let mode_name = match mode {
        BootMode::Bios => "BIOS",
        BootMode::Uefi => "UEFI",
    };
    match (arch, mode) {
        ("x86_64", _) | ("aarch64", BootMode::Uefi) => check(
            BOOT_MODE_SUPPORTED,
            true,
            format!("{arch} booting with {mode_name} is supported"),
        ),
        ("aarch64", BootMode::Bios) => check(
            BOOT_MODE_SUPPORTED,
            false,
            "this aarch64 server does not boot through UEFI (no /sys/firmware/efi), and Ferry's aarch64 targets \
             boot only UEFI: move the server to UEFI boot with GRUB or systemd-boot first"
                .to_owned(),
        ),
        (other, _) => check(
            BOOT_MODE_SUPPORTED,
            false,
            format!(
                "architecture {other} is not supported (only x86_64 and aarch64): this server cannot be migrated \
                 with Ferry"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use ferry_types::inventory::{DiskSource, Partition};

    use super::*;

    fn disk(path: &str, size: u64) -> Disk {
        Disk {
            index: 0,
            path: path.to_owned(),
            source: DiskSource::ImageFile,
            size_bytes: size,
            model: None,
            partition_table: Some(PartitionTableType::Gpt),
            table_uuid: None,
            partitions: Vec::new(),
            filesystem: None,
        }
    }

    fn part(number: u32, type_id: &str, fs: Option<&str>) -> Partition {
        Partition {
            number,
            start_bytes: 1 << 20,
            size_bytes: 1 << 20,
            type_id: type_id.to_owned(),
            bootable: false,
            part_uuid: None,
            filesystem: fs.map(|t| Filesystem {
                fs_type: t.to_owned(),
                uuid: None,
                label: None,
                mount_point: None,
            }),
        }
    }

    #[test]
    fn clock_skew_threshold_both_directions() {
        let server = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ok = clock_skew(server + Duration::from_secs(299), Some(server));
        assert!(ok.passed, "{}", ok.reason);
        assert!(ok.reason.contains("4m 59s ahead"), "{}", ok.reason);
        let behind = clock_skew(server - Duration::from_secs(301), Some(server));
        assert!(!behind.passed);
        assert!(behind.reason.contains("5m 1s behind"), "{}", behind.reason);
        assert!(behind.reason.contains("NTP"), "{}", behind.reason);
        let ahead = clock_skew(server + Duration::from_secs(7200), Some(server));
        assert!(!ahead.passed);
        assert!(ahead.reason.contains("2h 0m 0s ahead"), "{}", ahead.reason);
        let unknown = clock_skew(server, None);
        assert!(!unknown.passed);
        assert_eq!(unknown.name, CLOCK_SKEW);
    }

    #[test]
    fn connectivity_reports_the_error() {
        assert!(connectivity(&Ok(())).passed);
        let failed = connectivity(&Err("connection refused".to_owned()));
        assert!(!failed.passed);
        assert!(failed.reason.contains("connection refused"));
        assert!(failed.reason.contains("HTTPS_PROXY"));
    }

    #[test]
    fn disks_readable_reads_both_ends() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let good = dir.path().join("good.img");
        std::fs::write(&good, vec![7u8; 10_000])?;
        let good = good.to_string_lossy().into_owned();
        assert!(disks_readable(&[disk(&good, 10_000)]).passed);
        // A disk shorter than the inventory says fails on its last bytes.
        let short = disks_readable(&[disk(&good, 20_000)]);
        assert!(!short.passed);
        assert!(short.reason.contains("last"), "{}", short.reason);
        let small = dir.path().join("small.img");
        std::fs::write(&small, [1u8; 100])?;
        assert!(disks_readable(&[disk(&small.to_string_lossy(), 100)]).passed);
        let zero = disks_readable(&[disk(&good, 0)]);
        assert!(!zero.passed);
        assert!(!disks_readable(&[]).passed);
        Ok(())
    }

    #[test]
    fn layout_flags_encryption_unknown_and_empty_disks() {
        let mut ok = disk("/d0", 1 << 30);
        ok.partitions = vec![
            part(1, "21686148-6449-6E6F-744E-656564454649", None),
            part(2, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", Some("vfat")),
            part(3, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", Some("ext4")),
        ];
        let pass = supported_layout(std::slice::from_ref(&ok));
        assert!(pass.passed, "{}", pass.reason);

        let mut locked = ok.clone();
        locked.partitions.push(part(
            4,
            "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
            Some("BitLocker"),
        ));
        let fail = supported_layout(&[locked]);
        assert!(!fail.passed);
        assert!(
            fail.reason.contains("partition 4") && fail.reason.contains("encrypted"),
            "{}",
            fail.reason
        );

        let mut unknown = ok.clone();
        unknown
            .partitions
            .push(part(5, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", None));
        let fail = supported_layout(&[unknown]);
        assert!(
            !fail.passed && fail.reason.contains("partition 5"),
            "{}",
            fail.reason
        );

        let mut blank = disk("/d1", 1 << 30);
        blank.partition_table = None;
        assert!(!supported_layout(&[ok.clone(), blank.clone()]).passed);

        let mut whole = blank;
        whole.filesystem = part(0, "", Some("xfs")).filesystem;
        assert!(supported_layout(&[ok.clone(), whole]).passed);

        let zero = disk("/d2", 0);
        let fail = supported_layout(&[zero]);
        assert!(
            !fail.passed && fail.reason.contains("size 0"),
            "{}",
            fail.reason
        );
    }

    #[test]
    fn boot_modes() {
        assert!(boot_mode_supported("x86_64", BootMode::Bios).passed);
        assert!(boot_mode_supported("x86_64", BootMode::Uefi).passed);
        assert!(boot_mode_supported("aarch64", BootMode::Uefi).passed);
        assert!(!boot_mode_supported("aarch64", BootMode::Bios).passed);
        assert!(!boot_mode_supported("ppc64le", BootMode::Bios).passed);
    }
}
