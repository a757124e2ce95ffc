//! Guest adaptation: make a copy of a migrated Linux guest boot on Ferry's KVM/QEMU target
//! (docs/guest-adaptation.md, docs/boot-validation.md).
//!
//! [`detect`] looks at the image files read-only (OS, boot mode, root filesystem, fstab). [`adapt`] changes
//! them in place: network to DHCP on the target NIC (the source's static settings kept on record), fstab
//! by UUID, serial console, virtio drivers in the initramfs, persistent-net leftovers, the Ferry agent
//! removed, the EFI removable-media loader, and the boot probe installed.
//!
//! How: loop devices over the image files (one per partition, at its offset), LVM logical volumes read
//! from the PV's text metadata and exposed as offset loops (no device-mapper needed), mounts, and a
//! chroot only to regenerate an initramfs. libguestfs was measured and not chosen (docs/decisions.md §13).
//!
//! Invariants:
//! - Only the given image files change, and only through the guest's filesystems. They must be copies:
//!   the stored snapshots never reach this module.
//! - Every change is reported as a [`Change`]; a second run reports none and leaves the files
//!   byte-identical (a dry run on read-only mounts comes first; nothing is mounted read-write unless
//!   there is something to change).
//! - Every loop device and mount is released on every path (guards), errors included.
//! - Disks with no Linux system give [`AdaptError::NoOperatingSystem`] quickly, files untouched.

mod ctx;
mod error;
mod esp;
mod fstab;
mod grub;
mod initramfs;
pub mod lvm;
mod network;
mod steps;
mod sys;
mod volumes;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::AdaptError;
pub use fstab::FstabEntry;
pub use network::StaticInterface;

/// The version of [`AdaptReport`] and of `/etc/ferry/source-network.json`.
pub const ADAPT_REPORT_VERSION: u32 = 1;

/// The NIC name Ferry's instances give the guest (docs/boot-validation.md; `ferry_vm::TARGET_NIC_NAME`).
pub const DEFAULT_TARGET_NIC: &str = "enp0s3";

/// The probe script installed at `/usr/lib/ferry/boot-report` (docs/boot-validation.md).
pub const BOOT_REPORT_SCRIPT: &str = include_str!("boot-report.sh");

/// What to do with the source's network configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NetworkMode {
    /// DHCP on the target NIC; the static settings stay on record (the default).
    #[default]
    Dhcp,
    /// Re-apply the source's static addresses on the target NIC's name.
    KeepStatic,
}

/// Options for [`adapt`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdaptOptions {
    /// What to do with the network configuration.
    pub network: NetworkMode,
    /// The NIC name on the target (default `enp0s3`).
    pub target_nic: String,
    /// The source device name of each image disk, in order (`["/dev/sda", "/dev/sdb"]`); empty = guess
    /// by order (`sda`/`vda`/`xvda`/`hda`/`nvme0n1` is disk 0, `sdb`… disk 1).
    pub source_devices: Vec<String>,
    /// Install the boot probe (default true).
    pub install_probe: bool,
}

impl Default for AdaptOptions {
    fn default() -> Self {
        AdaptOptions {
            network: NetworkMode::Dhcp,
            target_nic: DEFAULT_TARGET_NIC.to_string(),
            source_devices: Vec::new(),
            install_probe: true,
        }
    }
}

/// One change adaptation made (or, in a dry run, would make).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `network`, `fstab`, `serial-console`, `initramfs`, `udev-net`, `agent`, `probe`, `efi-fallback`.
    pub kind: String,
    /// The guest path changed (`/etc/fstab`).
    pub path: String,
    /// What changed, for people.
    pub detail: String,
}

/// What adaptation did; stored by the server as JSON (version 1, docs/guest-adaptation.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdaptReport {
    /// Always [`ADAPT_REPORT_VERSION`].
    pub version: u32,
    /// `PRETTY_NAME` from `/etc/os-release`.
    pub os: Option<String>,
    /// `BIOS` or `UEFI`.
    pub boot_mode: String,
    /// The root filesystem's volume (`disk0p1`, `lvm:labvg/root`).
    pub root: String,
    /// Every change made, in order.
    pub changes: Vec<Change>,
    /// The source's network settings, on record (also in the guest at `/etc/ferry/source-network.json`).
    pub source_network: Vec<StaticInterface>,
    /// Things a person should look at (crypttab present, an fstab device with no matching partition, …).
    pub warnings: Vec<String>,
}

/// One filesystem or partition found on the disks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    /// `disk0p1`, `disk1` (a filesystem on the whole disk), `lvm:vg/lv`.
    pub name: String,
    /// The filesystem type (`ext4`, `xfs`, `vfat`, `swap`, `LVM2_member`), when one was found.
    pub fstype: Option<String>,
    /// The filesystem UUID.
    pub uuid: Option<String>,
    /// The filesystem label.
    pub label: Option<String>,
    /// Size in bytes.
    pub size: u64,
}

/// What [`detect`] found, read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInfo {
    /// `PRETTY_NAME` from `/etc/os-release`.
    pub os: Option<String>,
    /// `ID` from `/etc/os-release` (`debian`, `ubuntu`, `rhel`, …).
    pub os_id: Option<String>,
    /// `BIOS` or `UEFI`.
    pub boot_mode: String,
    /// The root filesystem's volume (`disk0p1`, `lvm:labvg/root`).
    pub root: String,
    /// The guest's `/etc/fstab`.
    pub fstab: Vec<FstabEntry>,
    /// Every volume found.
    pub volumes: Vec<VolumeInfo>,
}

/// Adapts the guest on `disks` (raw image files, system disk first) in place. Needs root. Idempotent.
///
/// Errors: [`AdaptError::NoOperatingSystem`] when no disk holds a Linux system (files untouched);
/// [`AdaptError::Unsupported`] for layouts that need device-mapper (striped, thin, multi-segment LVs);
/// others when a tool or the guest's files fail. Loop devices and mounts are released in every case.
pub async fn adapt(disks: &[PathBuf], opts: &AdaptOptions) -> Result<AdaptReport, AdaptError> {
    let disks = disks.to_vec();
    let opts = opts.clone();
    ferry_chunk::bulk::blocking(move || steps::adapt_blocking(&disks, &opts))
        .await
        .map_err(|e| AdaptError::Task(e.to_string()))?
}

/// Looks at the guest on `disks` without changing them: OS, boot mode, root, fstab. Needs root.
///
/// Errors as [`adapt`]'s; [`AdaptError::NoOperatingSystem`] when no disk holds a Linux system.
pub async fn detect(disks: &[PathBuf]) -> Result<GuestInfo, AdaptError> {
    let disks = disks.to_vec();
    ferry_chunk::bulk::blocking(move || steps::detect_blocking(&disks))
        .await
        .map_err(|e| AdaptError::Task(e.to_string()))?
}

pub(crate) fn disks_list(disks: &[PathBuf]) -> String {
    disks
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn check_root() -> Result<(), AdaptError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(AdaptError::NotRoot)
    }
}

#[allow(dead_code)]
pub(crate) fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}
