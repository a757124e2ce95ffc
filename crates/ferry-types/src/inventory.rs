//! Source server inventory: what an agent reports about the server it runs on.
//!
//! These are wire types of agent protocol v1 (JSON, snake_case field names, enums as their variant name in
//! snake_case). They are plain data: collecting them is the agent's job (`ferry-agent::inventory`), judging
//! them is the prechecks' and the server's. Sizes and offsets are always bytes; an `Option` that is `None`
//! means "the agent could not find out", never "zero" or "empty".

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Everything the agent knows about its source server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Inventory {
    pub hostname: String,
    pub os: OsRelease,
    /// Running kernel release, as `uname -r` prints it.
    pub kernel: String,
    /// CPU architecture as the kernel names it: `x86_64`, `aarch64`, ...
    pub architecture: String,
    pub boot_mode: BootMode,
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Disks in migration order; `disks[0]` (index 0) is the system disk.
    pub disks: Vec<Disk>,
    pub network: Vec<NetInterface>,
    /// Name servers from resolv.conf, in order.
    pub dns: Vec<String>,
    /// Default IPv4 gateway, if any.
    pub gateway: Option<String>,
    /// Version of the agent that collected this inventory.
    pub agent_version: String,
}

/// The fields of os-release(5) that identify the distribution. Missing keys are empty strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OsRelease {
    /// `ID`, e.g. `debian`, `rhel`, `ubuntu`.
    pub id: String,
    pub name: String,
    pub version_id: String,
    pub pretty_name: String,
}

/// How the firmware boots the source server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BootMode {
    Bios,
    Uefi,
}

/// Where a disk's bytes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiskSource {
    /// A block device such as `/dev/sda`.
    BlockDevice,
    /// A raw disk image file (offline sources and tests).
    ImageFile,
}

/// One disk of the source server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Disk {
    /// Position in the migration; 0 is the system disk.
    pub index: u32,
    /// Device node or image file path.
    pub path: String,
    pub source: DiskSource,
    pub size_bytes: u64,
    pub model: Option<String>,
    /// `None` when the disk has no partition table (whole-disk filesystem or blank).
    pub partition_table: Option<PartitionTableType>,
    /// GPT disk GUID or MBR disk identifier (8 hex digits, as blkid's `PTUUID`), lower case.
    pub table_uuid: Option<String>,
    pub partitions: Vec<Partition>,
    /// A filesystem written on the whole disk, without a partition table.
    pub filesystem: Option<Filesystem>,
}

/// Partition table type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartitionTableType {
    Mbr,
    Gpt,
}

/// One partition of a disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Partition {
    /// Partition number as the kernel numbers it (`sda1` is 1).
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// GPT partition type GUID (upper case) or MBR type id in hex (`83`, `ef`, ...).
    pub type_id: String,
    pub bootable: bool,
    /// GPT partition GUID or MBR `<disk id>-<nn>` (as blkid's `PARTUUID`), lower case.
    pub part_uuid: Option<String>,
    pub filesystem: Option<Filesystem>,
}

/// A filesystem (or other recognised content such as swap or an LVM physical volume).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Filesystem {
    /// Type as blkid names it: `ext4`, `xfs`, `vfat`, `swap`, `LVM2_member`, `BitLocker`, ...
    pub fs_type: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// Where it is mounted on the source server, if it is.
    pub mount_point: Option<String>,
}

/// One network interface.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NetInterface {
    pub name: String,
    pub mac: Option<String>,
    /// Addresses in CIDR notation (`192.0.2.10/24`, `2001:db8::1/64`).
    pub addresses: Vec<String>,
    pub mtu: Option<u32>,
    pub config: AddrConfig,
    /// The configuration file that decided `config`, if any.
    pub config_source: Option<String>,
}

/// How an interface gets its addresses, according to the source's configuration files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AddrConfig {
    Static,
    Dhcp,
    /// No configuration file mentions the interface, or none could be read.
    Unknown,
}

/// The result of one precheck. `reason` is always filled: why it passed or failed, and on failure what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Precheck {
    pub name: String,
    pub passed: bool,
    pub reason: String,
}
