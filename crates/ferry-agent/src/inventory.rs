//! Inventory: describing the source server for the Ferry server.
//!
//! [`collect`] gathers the OS, kernel, architecture, boot mode, CPUs, memory, disks (partition tables,
//! partitions, filesystems, mount points), network interfaces (addresses, and whether each is configured
//! static or by DHCP) and DNS into a [`ferry_types::inventory::Inventory`]. See `docs/agent-inventory.md`
//! for every field's source.
//!
//! Invariants:
//! - Read only. Collecting an inventory never writes to a disk or changes the system; the tools it runs are
//!   used in their read-only modes (`sfdisk -J`, `blkid -p`, `ip -j`).
//! - Degrade, don't fail. A missing tool or file leaves its fields empty (`None`, empty list, `Unknown`)
//!   and logs a warning. [`collect`] fails only when a disk it was asked to describe cannot be examined or
//!   the machine's disks cannot be listed, because an inventory without its disks is useless.
//! - Configuration comes from `InventoryOptions::root` (normally `/`), so that an offline tree or a test
//!   fixture can stand in for /etc; live state (kernel, CPUs, memory, interfaces, mounts) always comes from
//!   the running system.

use std::path::PathBuf;

use ferry_types::inventory::{DiskSource, Inventory, NetInterface};

mod disks;
pub mod netconfig;
mod network;
pub mod system;
mod tools;

pub use disks::{
    BlkidInfo, PartTable, RawPartition, SfdiskParseError, parse_blkid_export, parse_sfdisk_json,
};
pub use network::{LiveIface, parse_ip_addr_json, parse_ip_route_json, parse_proc_net_route};

/// A disk to describe, as the operator named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub kind: DiskSource,
}

/// What [`collect`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventoryOptions {
    /// Disks to describe, system disk first. Empty: discover the machine's disks in /sys/block (skipping
    /// loop, RAM, zram, device-mapper, MD, optical, floppy and NBD devices).
    pub disks: Vec<DiskSpec>,
    /// Root of the tree whose `etc/` holds the source's configuration; `/` on a live server.
    pub root: PathBuf,
}

impl Default for InventoryOptions {
    fn default() -> Self {
        InventoryOptions {
            disks: Vec::new(),
            root: PathBuf::from("/"),
        }
    }
}

/// Why an inventory could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot examine disk {}: check that the path exists and that ferry-agent runs as root", path.display())]
    DiskAccess {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a block device: pass raw disk image files as image files (--disk-image), not devices", path.display())]
    NotABlockDevice { path: PathBuf },
    #[error("{} is not a regular file: pass block devices as devices (--disk), not disk images", path.display())]
    NotAnImageFile { path: PathBuf },
    #[error(
        "cannot list the machine's disks in /sys/block: make sure sysfs is mounted, or name the disks explicitly"
    )]
    Discovery {
        #[source]
        source: std::io::Error,
    },
}

/// Collects the inventory of this server (or of the disks in `opts`).
///
/// Errors: [`InventoryError`] when a named disk is missing, unreadable or of the wrong kind, or when no disk
/// was named and /sys/block cannot be read. Everything else degrades to empty fields with a logged warning.
pub fn collect(opts: &InventoryOptions) -> Result<Inventory, InventoryError> {
    let mounts = disks::MountIndex::new(system::mounts());
    let specs = if opts.disks.is_empty() {
        disks::discover(&mounts)?
    } else {
        opts.disks.clone()
    };
    let disks = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| disks::describe(u32::try_from(i).unwrap_or(u32::MAX), spec, &mounts))
        .collect::<Result<Vec<_>, _>>()?;

    let rules = netconfig::gather_rules(&opts.root);
    let (live, gateway) = network::live();
    let network = live
        .into_iter()
        .map(|iface| {
            let (config, config_source) =
                netconfig::resolve(&rules, &iface.name, iface.mac.as_deref());
            NetInterface {
                name: iface.name,
                mac: iface.mac,
                addresses: iface.addresses,
                mtu: iface.mtu,
                config,
                config_source,
            }
        })
        .collect();

    Ok(Inventory {
        hostname: system::hostname(&opts.root),
        os: system::os_release(&opts.root),
        kernel: system::kernel(),
        architecture: system::architecture(),
        boot_mode: system::boot_mode(),
        cpus: system::cpus(),
        memory_bytes: system::memory_bytes(),
        disks,
        network,
        dns: system::dns(&opts.root),
        gateway,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}
