//! Disks, partition tables and filesystems.
//!
//! Block devices and raw image files go through the same code: `sfdisk -J` reads the partition table of
//! either, and `blkid -p` probes filesystems either through the partition's device node or, for image files
//! (which have no partition nodes), at the partition's byte offset with the partition's size as the probe
//! limit. Nothing here writes: `sfdisk -J` only dumps, and `blkid -p` bypasses (and so never updates) the
//! blkid cache.
//!
//! Mount points come from /proc/self/mountinfo: for block devices by the partition's `major:minor`, for
//! image files by filesystem UUID (an image of a running server's disk shares the UUIDs of its mounts).

use std::cell::OnceCell;
use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use ferry_types::inventory::{Disk, DiskSource, Filesystem, Partition, PartitionTableType};
use serde::Deserialize;
use tracing::{debug, warn};

use super::system::{MountEntry, mount_point_of};
use super::tools::{self, ToolError};
use super::{DiskSpec, InventoryError};

/// `blkid`'s exit status when it found nothing to report.
const BLKID_NOTHING_FOUND: i32 = 2;

/// Whole-disk devices that are never migrated unless named explicitly: loop devices, RAM disks, compressed
/// swap, device-mapper and MD (their underlying disks are discovered), optical, floppy and unconnected
/// network block devices.
const SKIPPED_PREFIXES: &[&str] = &["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"];

/// Splits a Linux `dev_t` (as `st_rdev` holds it) into `(major, minor)`, the layout glibc's `gnu_dev_major`
/// and `gnu_dev_minor` decode.
pub fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    // Both fit in 32 bits by construction of the masks above.
    (
        u32::try_from(major).unwrap_or(u32::MAX),
        u32::try_from(minor).unwrap_or(u32::MAX),
    )
}

/// The live mount table plus a lazily built index from filesystem UUID to mount point.
pub(crate) struct MountIndex {
    mounts: Vec<MountEntry>,
    by_uuid: OnceCell<HashMap<String, String>>,
}

impl MountIndex {
    pub(crate) fn new(mounts: Vec<MountEntry>) -> Self {
        MountIndex {
            mounts,
            by_uuid: OnceCell::new(),
        }
    }

    fn by_dev(&self, dev: (u32, u32)) -> Option<String> {
        mount_point_of(&self.mounts, dev)
    }

    /// The device of the root filesystem.
    fn root_dev(&self) -> Option<(u32, u32)> {
        self.mounts
            .iter()
            .find(|m| m.mount_point == "/" && m.root == "/")
            .map(|m| m.dev)
    }

    fn by_uuid(&self, uuid: &str) -> Option<String> {
        self.by_uuid
            .get_or_init(|| self.build_uuid_index())
            .get(&uuid.to_ascii_lowercase())
            .cloned()
    }

    /// Finds the UUID of every mounted block device: from /dev/disk/by-uuid when udev maintains it, else by
    /// probing the mount source with blkid.
    fn build_uuid_index(&self) -> HashMap<String, String> {
        let mut dev_to_uuid: HashMap<(u32, u32), String> = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/dev/disk/by-uuid") {
            for entry in entries.filter_map(Result::ok) {
                if let (Some(uuid), Ok(meta)) =
                    (entry.file_name().to_str(), std::fs::metadata(entry.path()))
                {
                    dev_to_uuid.insert(split_dev(meta.rdev()), uuid.to_ascii_lowercase());
                }
            }
        }
        let mut index = HashMap::new();
        for mount in &self.mounts {
            if !mount.source.starts_with("/dev/") {
                continue;
            }
            let uuid = match dev_to_uuid.get(&mount.dev) {
                Some(uuid) => Some(uuid.clone()),
                None => tools::run("blkid", ["-p", "-o", "export", mount.source.as_str()])
                    .ok()
                    .and_then(|out| parse_blkid_export(&out).uuid),
            };
            if let (Some(uuid), Some(mount_point)) = (uuid, self.by_dev(mount.dev)) {
                // The first mount of a UUID wins, as it does for the device itself in `by_dev`.
                index
                    .entry(uuid.to_ascii_lowercase())
                    .or_insert(mount_point);
            }
        }
        index
    }
}

/// What `blkid -p -o export` reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlkidInfo {
    pub fs_type: Option<String>,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// `gpt` or `dos` when a partition table was found.
    pub pt_type: Option<String>,
    pub pt_uuid: Option<String>,
}

/// Parses `blkid -o export` output (`KEY=value` lines, with `\` escaping special characters in values).
pub fn parse_blkid_export(text: &str) -> BlkidInfo {
    let mut info = BlkidInfo::default();
    for line in text.lines() {
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let mut value = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(next) = chars.next() {
                    value.push(next);
                }
            } else {
                value.push(c);
            }
        }
        let slot = match key {
            "TYPE" => &mut info.fs_type,
            "UUID" => &mut info.uuid,
            "LABEL" => &mut info.label,
            "PTTYPE" => &mut info.pt_type,
            "PTUUID" => &mut info.pt_uuid,
            _ => continue,
        };
        *slot = Some(value);
    }
    info
}

#[derive(Deserialize)]
struct SfdiskDump {
    partitiontable: SfdiskTable,
}

#[derive(Deserialize)]
struct SfdiskTable {
    label: String,
    id: Option<String>,
    sectorsize: Option<u64>,
    #[serde(default)]
    partitions: Vec<SfdiskPartition>,
}

#[derive(Deserialize)]
struct SfdiskPartition {
    node: String,
    start: u64,
    size: u64,
    #[serde(rename = "type")]
    type_id: String,
    uuid: Option<String>,
    #[serde(default)]
    bootable: bool,
    attrs: Option<String>,
}

/// A partition table as `sfdisk -J` describes it, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartTable {
    pub kind: PartitionTableType,
    /// GPT disk GUID or MBR disk identifier (8 hex digits), lower case.
    pub id: Option<String>,
    pub partitions: Vec<RawPartition>,
}

/// One partition from `sfdisk -J`, before filesystem probing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawPartition {
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    pub type_id: String,
    pub bootable: bool,
    pub part_uuid: Option<String>,
    /// Device node the kernel gives the partition (meaningless for image files).
    pub node: String,
}

/// Why `sfdisk -J` output could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SfdiskParseError {
    #[error(
        "sfdisk printed JSON this agent does not understand: report it with your util-linux version"
    )]
    Json(#[source] serde_json::Error),
    #[error("partition table type `{0}` is not MBR or GPT, so Ferry cannot migrate this disk")]
    UnsupportedLabel(String),
}

/// Parses `sfdisk -J <disk_arg>` output. `disk_arg` is the path sfdisk was given: it prefixes each
/// partition's node name, and the rest of the node name is the partition number.
pub fn parse_sfdisk_json(text: &str, disk_arg: &str) -> Result<PartTable, SfdiskParseError> {
    let dump: SfdiskDump = serde_json::from_str(text).map_err(SfdiskParseError::Json)?;
    let table = dump.partitiontable;
    let kind = match table.label.as_str() {
        "gpt" => PartitionTableType::Gpt,
        "dos" => PartitionTableType::Mbr,
        other => return Err(SfdiskParseError::UnsupportedLabel(other.to_owned())),
    };
    let sector = table.sectorsize.unwrap_or(512);
    let mbr_id = table
        .id
        .as_deref()
        .filter(|_| kind == PartitionTableType::Mbr)
        .and_then(|id| u32::from_str_radix(id.trim_start_matches("0x"), 16).ok());
    let partitions = table
        .partitions
        .iter()
        .enumerate()
        .map(|(position, p)| {
            let number = partition_number(&p.node, disk_arg)
                .unwrap_or_else(|| u32::try_from(position + 1).unwrap_or(u32::MAX));
            let (type_id, part_uuid, bootable) = match kind {
                PartitionTableType::Gpt => (
                    p.type_id.to_ascii_uppercase(),
                    p.uuid.as_ref().map(|u| u.to_ascii_lowercase()),
                    p.attrs
                        .as_deref()
                        .is_some_and(|a| a.contains("LegacyBIOSBootable")),
                ),
                // The kernel and blkid name MBR partitions "<disk id>-<partition number>", both in hex.
                PartitionTableType::Mbr => (
                    p.type_id.to_ascii_lowercase(),
                    mbr_id.map(|id| format!("{id:08x}-{number:02x}")),
                    p.bootable,
                ),
            };
            RawPartition {
                number,
                start_bytes: p.start.saturating_mul(sector),
                size_bytes: p.size.saturating_mul(sector),
                type_id,
                bootable,
                part_uuid,
                node: p.node.clone(),
            }
        })
        .collect();
    // MBR identifiers are reported as blkid's PTUUID spells them (8 hex digits, no `0x`) so that both
    // table types compare directly with what blkid and /dev/disk/by-partuuid show.
    let id = match kind {
        PartitionTableType::Gpt => table.id.map(|id| id.to_ascii_lowercase()),
        PartitionTableType::Mbr => mbr_id.map(|id| format!("{id:08x}")),
    };
    Ok(PartTable {
        kind,
        id,
        partitions,
    })
}

fn partition_number(node: &str, disk_arg: &str) -> Option<u32> {
    if let Some(rest) = node.strip_prefix(disk_arg) {
        if let Ok(n) = rest.trim_start_matches('p').parse() {
            return Some(n);
        }
    }
    let digits = node.len() - node.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    node[node.len() - digits..].parse().ok()
}

/// MBR extended-partition containers hold other partitions' table entries, never a filesystem.
fn is_extended(kind: PartitionTableType, type_id: &str) -> bool {
    kind == PartitionTableType::Mbr && matches!(type_id, "5" | "05" | "f" | "0f" | "85")
}

/// Lists the machine's disks from /sys/block, system disk first, the others by name.
pub(crate) fn discover(mounts: &MountIndex) -> Result<Vec<DiskSpec>, InventoryError> {
    let entries =
        std::fs::read_dir("/sys/block").map_err(|source| InventoryError::Discovery { source })?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !SKIPPED_PREFIXES.iter().any(|p| n.starts_with(p)))
        .collect();
    names.sort();
    if let Some(system) = mounts.root_dev().and_then(disk_holding) {
        if let Some(pos) = names.iter().position(|n| *n == system) {
            let name = names.remove(pos);
            names.insert(0, name);
        }
    }
    Ok(names
        .into_iter()
        .map(|name| DiskSpec {
            // sysfs writes '/' in device names (cciss/c0d0) as '!'.
            path: PathBuf::from("/dev").join(name.replace('!', "/")),
            kind: DiskSource::BlockDevice,
        })
        .collect())
}

/// The whole disk under block device `dev`, following partitions to their disk and device-mapper/MD
/// devices to (the first of) their underlying devices.
fn disk_holding(dev: (u32, u32)) -> Option<String> {
    let mut dir = std::fs::canonicalize(format!("/sys/dev/block/{}:{}", dev.0, dev.1)).ok()?;
    for _ in 0..8 {
        if dir.join("partition").exists() {
            dir = dir.parent()?.to_path_buf();
        }
        let mut slaves: Vec<PathBuf> = std::fs::read_dir(dir.join("slaves"))
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        slaves.sort();
        match slaves.first() {
            Some(slave) => dir = std::fs::canonicalize(slave).ok()?,
            None => return dir.file_name()?.to_str().map(str::to_owned),
        }
    }
    None
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Describes one disk. Fails only when the disk itself cannot be examined; missing tools leave fields empty.
pub(crate) fn describe(
    index: u32,
    spec: &DiskSpec,
    mounts: &MountIndex,
) -> Result<Disk, InventoryError> {
    let meta = std::fs::metadata(&spec.path).map_err(|source| InventoryError::DiskAccess {
        path: spec.path.clone(),
        source,
    })?;
    // sfdisk names partitions after the path it is given, so give it the real node, not a by-id symlink.
    let path = std::fs::canonicalize(&spec.path).unwrap_or_else(|_| spec.path.clone());
    let (size_bytes, model, disk_dev) = match spec.kind {
        DiskSource::BlockDevice => {
            if !meta.file_type().is_block_device() {
                return Err(InventoryError::NotABlockDevice {
                    path: spec.path.clone(),
                });
            }
            let dev = split_dev(meta.rdev());
            let sys = PathBuf::from(format!("/sys/dev/block/{}:{}", dev.0, dev.1));
            let size = read_trimmed(&sys.join("size"))
                .and_then(|s| s.parse::<u64>().ok())
                // sysfs counts 512-byte sectors whatever the device's logical block size.
                .map(|sectors| sectors.saturating_mul(512))
                .or_else(|| lsblk_size(&path))
                .unwrap_or_else(|| {
                    warn!(disk = %path.display(), "cannot find the disk size in sysfs or with lsblk; reporting 0");
                    0
                });
            (size, read_trimmed(&sys.join("device/model")), Some(dev))
        }
        DiskSource::ImageFile => {
            if !meta.file_type().is_file() {
                return Err(InventoryError::NotAnImageFile {
                    path: spec.path.clone(),
                });
            }
            (meta.len(), None, None)
        }
    };
    let path_str = path.to_string_lossy().into_owned();
    let whole = probe(&path, None);
    let table = read_partition_table(&path_str);
    let (partition_table, table_uuid, raw_parts) = match table {
        Some(t) => (Some(t.kind), t.id, t.partitions),
        // Without sfdisk, blkid still tells whether there is a table, if not what is in it.
        None => match whole.as_ref().and_then(|w| w.pt_type.as_deref()) {
            Some("gpt") => (
                Some(PartitionTableType::Gpt),
                whole.as_ref().and_then(|w| w.pt_uuid.clone()),
                Vec::new(),
            ),
            Some("dos") => (
                Some(PartitionTableType::Mbr),
                whole.as_ref().and_then(|w| w.pt_uuid.clone()),
                Vec::new(),
            ),
            _ => (None, None, Vec::new()),
        },
    };
    let mut partitions = Vec::with_capacity(raw_parts.len());
    for raw in raw_parts {
        let filesystem = if partition_table.is_some_and(|k| is_extended(k, &raw.type_id)) {
            None
        } else {
            partition_filesystem(spec.kind, &path, disk_dev, &raw, mounts)
        };
        partitions.push(Partition {
            number: raw.number,
            start_bytes: raw.start_bytes,
            size_bytes: raw.size_bytes,
            type_id: raw.type_id,
            bootable: raw.bootable,
            part_uuid: raw.part_uuid,
            filesystem,
        });
    }
    let filesystem = if partition_table.is_none() {
        whole.and_then(|info| {
            let mount_point = match disk_dev {
                Some(dev) => mounts.by_dev(dev),
                None => info.uuid.as_deref().and_then(|u| mounts.by_uuid(u)),
            };
            to_filesystem(info, mount_point)
        })
    } else {
        None
    };
    Ok(Disk {
        index,
        path: path_str,
        source: spec.kind,
        size_bytes,
        model,
        partition_table,
        table_uuid,
        partitions,
        filesystem,
    })
}

fn lsblk_size(path: &Path) -> Option<u64> {
    let out = tools::run(
        "lsblk",
        [
            "-b".as_ref(),
            "-n".as_ref(),
            "-d".as_ref(),
            "-o".as_ref(),
            "SIZE".as_ref(),
            path.as_os_str(),
        ],
    )
    .ok()?;
    out.trim().parse().ok()
}

/// Reads the partition table; `None` (logged) when there is none, sfdisk is missing or its output is unusable.
fn read_partition_table(disk: &str) -> Option<PartTable> {
    match tools::run("sfdisk", ["-J", disk]) {
        Ok(json) => match parse_sfdisk_json(&json, disk) {
            Ok(table) => Some(table),
            Err(err) => {
                warn!(disk, error = %err, "cannot use the partition table");
                None
            }
        },
        Err(ToolError::Failed { stderr, .. })
            if stderr.contains("does not contain a recognized partition table") =>
        {
            debug!(disk, "no partition table");
            None
        }
        Err(err) => {
            warn!(disk, error = %err, "cannot read the partition table with sfdisk");
            None
        }
    }
}

/// Probes `path` (whole, or the byte range `(offset, size)`) with `blkid -p`.
fn probe(path: &Path, range: Option<(u64, u64)>) -> Option<BlkidInfo> {
    let mut args: Vec<std::ffi::OsString> = vec!["-p".into(), "-o".into(), "export".into()];
    if let Some((offset, size)) = range {
        args.extend([
            "-O".into(),
            offset.to_string().into(),
            "-S".into(),
            size.to_string().into(),
        ]);
    }
    args.push(path.as_os_str().to_owned());
    match tools::run("blkid", &args) {
        Ok(out) => Some(parse_blkid_export(&out)),
        Err(err) if err.exit_code() == Some(BLKID_NOTHING_FOUND) => None,
        Err(err) => {
            warn!(path = %path.display(), ?range, error = %err, "blkid could not probe; filesystem stays unknown");
            None
        }
    }
}

fn partition_filesystem(
    kind: DiskSource,
    disk: &Path,
    disk_dev: Option<(u32, u32)>,
    raw: &RawPartition,
    mounts: &MountIndex,
) -> Option<Filesystem> {
    if kind == DiskSource::BlockDevice {
        // Probe the partition's own node when the kernel has one: a mounted filesystem's latest superblock
        // is in the partition's page cache, which the whole-disk device does not share.
        if let Ok(meta) = std::fs::metadata(&raw.node) {
            if meta.file_type().is_block_device() {
                let dev = split_dev(meta.rdev());
                let info = probe(Path::new(&raw.node), None)?;
                return to_filesystem(info, mounts.by_dev(dev));
            }
        }
    }
    let info = probe(disk, Some((raw.start_bytes, raw.size_bytes)))?;
    let mount_point = match kind {
        // Without a device node (no udev), the kernel may still know the partition: sysfs has its number.
        DiskSource::BlockDevice => disk_dev
            .and_then(|d| sysfs_partition_dev(d, raw.number))
            .and_then(|d| mounts.by_dev(d)),
        DiskSource::ImageFile => info.uuid.as_deref().and_then(|u| mounts.by_uuid(u)),
    };
    to_filesystem(info, mount_point)
}

/// The `(major, minor)` the kernel gave partition `number` of the disk `disk_dev`, from sysfs.
fn sysfs_partition_dev(disk_dev: (u32, u32), number: u32) -> Option<(u32, u32)> {
    let dir = std::fs::read_dir(format!("/sys/dev/block/{}:{}", disk_dev.0, disk_dev.1)).ok()?;
    dir.filter_map(Result::ok).find_map(|entry| {
        let n: u32 = read_trimmed(&entry.path().join("partition"))?
            .parse()
            .ok()?;
        if n != number {
            return None;
        }
        let dev = read_trimmed(&entry.path().join("dev"))?;
        let (major, minor) = dev.split_once(':')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    })
}

fn to_filesystem(info: BlkidInfo, mount_point: Option<String>) -> Option<Filesystem> {
    Some(Filesystem {
        fs_type: info.fs_type?,
        uuid: info.uuid,
        label: info.label,
        mount_point,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_split_matches_glibc_layout() {
        assert_eq!(split_dev(0x0801), (8, 1));
        assert_eq!(split_dev((259u64 << 8) | 3), (259, 3));
        // Minor numbers above 255 spill into bits 20..
        let dev = (8u64 << 8) | (0x12u64) | (0x345u64 << 20);
        assert_eq!(split_dev(dev), (8, 0x34512));
    }

    #[test]
    fn blkid_export_with_escapes() {
        let text = "DEVNAME=t.img\nLABEL=my\\ disk\nUUID=ccd78939-b75f-49bd-9bde-0977fe9c7ac3\nTYPE=ext4\nUSAGE=filesystem\n";
        let info = parse_blkid_export(text);
        assert_eq!(info.fs_type.as_deref(), Some("ext4"));
        assert_eq!(info.label.as_deref(), Some("my disk"));
        assert_eq!(
            info.uuid.as_deref(),
            Some("ccd78939-b75f-49bd-9bde-0977fe9c7ac3")
        );
        assert_eq!(info.pt_type, None);
        let table = parse_blkid_export("PTUUID=0b3e\nPTTYPE=dos\n");
        assert_eq!(table.pt_type.as_deref(), Some("dos"));
        assert_eq!(table.fs_type, None);
    }

    const GPT: &str = r#"{"partitiontable": {"label": "gpt", "id": "011E14F6-E74B-BB4F-BC31-9055A8F99455",
        "device": "disk2", "unit": "sectors", "firstlba": 2048, "lastlba": 131038, "sectorsize": 4096,
        "partitions": [
          {"node": "disk2p1", "start": 256, "size": 1024, "type": "21686148-6449-6E6F-744E-656564454649",
           "uuid": "3CFB4348-87B3-B145-907A-B9E995AF0481", "attrs": "LegacyBIOSBootable"},
          {"node": "disk2p12", "start": 2048, "size": 4096, "type": "0fc63daf-8483-4772-8e79-3d69d8477de4",
           "uuid": "9B26FC19-3B6D-2446-861A-973BA0AD8271", "name": "root"}]}}"#;

    #[test]
    fn sfdisk_gpt_in_bytes_with_numbers_from_nodes() {
        let t = parse_sfdisk_json(GPT, "disk2").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.kind, PartitionTableType::Gpt);
        assert_eq!(
            t.id.as_deref(),
            Some("011e14f6-e74b-bb4f-bc31-9055a8f99455")
        );
        assert_eq!(t.partitions.len(), 2);
        let (p1, p12) = (&t.partitions[0], &t.partitions[1]);
        assert_eq!(
            (p1.number, p1.start_bytes, p1.size_bytes),
            (1, 256 * 4096, 1024 * 4096)
        );
        assert!(p1.bootable);
        assert_eq!(p12.number, 12);
        assert_eq!(p12.type_id, "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
        assert_eq!(
            p12.part_uuid.as_deref(),
            Some("9b26fc19-3b6d-2446-861a-973ba0ad8271")
        );
        assert!(!p12.bootable);
    }

    #[test]
    fn sfdisk_mbr_partuuid_and_extended() {
        let text = r#"{"partitiontable": {"label": "dos", "id": "0x3fe2c8e8", "device": "/dev/sda",
            "unit": "sectors", "sectorsize": 512, "partitions": [
              {"node": "/dev/sda1", "start": 2048, "size": 65536, "type": "83", "bootable": true},
              {"node": "/dev/sda2", "start": 67584, "size": 63488, "type": "5"},
              {"node": "/dev/sda11", "start": 69632, "size": 2048, "type": "B"}]}}"#;
        let t = parse_sfdisk_json(text, "/dev/sda").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.kind, PartitionTableType::Mbr);
        assert_eq!(t.id.as_deref(), Some("3fe2c8e8"));
        assert_eq!(t.partitions[0].part_uuid.as_deref(), Some("3fe2c8e8-01"));
        assert!(t.partitions[0].bootable);
        assert_eq!(t.partitions[0].start_bytes, 2048 * 512);
        assert!(is_extended(t.kind, &t.partitions[1].type_id));
        assert_eq!(t.partitions[2].number, 11);
        assert_eq!(t.partitions[2].type_id, "b");
        assert_eq!(t.partitions[2].part_uuid.as_deref(), Some("3fe2c8e8-0b"));
    }

    #[test]
    fn sfdisk_rejects_other_labels_and_garbage() {
        let sun = r#"{"partitiontable": {"label": "sun", "partitions": []}}"#;
        assert!(matches!(
            parse_sfdisk_json(sun, "x"),
            Err(SfdiskParseError::UnsupportedLabel(l)) if l == "sun"
        ));
        assert!(matches!(
            parse_sfdisk_json("{", "x"),
            Err(SfdiskParseError::Json(_))
        ));
    }
}
