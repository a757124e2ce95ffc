//! The lab: small, real Debian systems that stand in for on-premises source servers in tests and demos.
//!
//! Each [`LabVariant`] is a raw disk image (plus a data disk for [`LabVariant::DataDisk`]) with a kernel,
//! GRUB installed in the image, a serial console, a static IPv4 configuration, a marker service that
//! prints `FERRY-LAB-MARKER <variant> <hostname>` on the serial console at boot, a 4 MiB data file whose
//! SHA-256 is recorded, and a fake installed Ferry agent (which guest adaptation must remove).
//!
//! Invariants:
//! - One `debootstrap` per cache key: the installed root tree is cached as a tarball and every variant is
//!   derived from it.
//! - A cached artifact is complete: everything is built under a temporary name and renamed at the end,
//!   under an exclusive `flock` so that parallel tests never build the same thing twice.
//! - Cached images are never modified after they are published: boot checks run on a qcow2 overlay, and
//!   tests change files only in copies ([`copy_disks`], [`modify_file`]).
//! - Every loop device, mount and QEMU process the lab makes is released by a Drop guard, also on error.
//!
//! The layout, cache key and measured timings are in `docs/lab.md`.

mod base;
mod boot;
mod image;
mod sys;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

pub use boot::{BOOT_TIMEOUT, boot_timeout};
pub use image::MountedFs;

/// The variants of lab source server (issue 4 §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LabVariant {
    /// MBR, BIOS boot, one ext4 root.
    Bios,
    /// GPT, UEFI boot, an EFI system partition and an ext4 root.
    Uefi,
    /// MBR, BIOS boot, ext4 /boot and the root on LVM (VG `labvg`, LV `root`).
    Lvm,
    /// Like [`LabVariant::Bios`], plus a second disk with xfs mounted by device name (`/dev/sdb1`).
    DataDisk,
}

impl LabVariant {
    /// Every variant, in build order.
    pub const ALL: [LabVariant; 4] = [
        LabVariant::Bios,
        LabVariant::Uefi,
        LabVariant::Lvm,
        LabVariant::DataDisk,
    ];

    /// The variant's name: `bios`, `uefi`, `lvm`, `datadisk`.
    pub fn as_str(self) -> &'static str {
        match self {
            LabVariant::Bios => "bios",
            LabVariant::Uefi => "uefi",
            LabVariant::Lvm => "lvm",
            LabVariant::DataDisk => "datadisk",
        }
    }

    /// Does this variant boot through UEFI firmware?
    pub fn is_uefi(self) -> bool {
        self == LabVariant::Uefi
    }
}

impl fmt::Display for LabVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LabVariant {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<LabVariant> {
        LabVariant::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .with_context(|| {
                format!("unknown lab variant {s:?}: use one of bios, uefi, lvm, datadisk")
            })
    }
}

/// A built (and boot-checked) lab server.
#[derive(Debug, Clone)]
pub struct LabServer {
    pub variant: LabVariant,
    /// The cached raw disk images, system disk first. Treat them as read-only: use [`copy_disks`] to get
    /// copies a test may change.
    pub disks: Vec<PathBuf>,
    pub facts: LabFacts,
}

/// What is true of a lab server, for tests to check after migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabFacts {
    /// `lab-<variant>`.
    pub hostname: String,
    /// The exact line the marker service prints on the serial console.
    pub marker: String,
    /// The interface name the source hardware gives the NIC (e1000 at a fixed PCI slot).
    pub nic_name: String,
    /// The static address, with its prefix length (`192.0.2.10/24`).
    pub static_address: String,
    pub gateway: String,
    /// Path of the data file inside the guest.
    pub data_file: String,
    /// SHA-256 (hex) of the data file's content.
    pub data_sha256: String,
    /// `"BIOS"` or `"UEFI"`.
    #[serde(skip, default)]
    pub boot_mode: &'static str,
    /// The guest's disk devices on the source hardware (`/dev/sda`, `/dev/sdb`).
    pub source_devices: Vec<String>,
}

/// Builds the variant (or takes it from the cache) and checks once that it boots (the result is cached
/// too). Errors say which step failed and keep the tool's output.
pub async fn build(variant: LabVariant) -> anyhow::Result<LabServer> {
    tokio::task::spawn_blocking(move || build_blocking(variant))
        .await
        .context("the lab build task panicked")?
}

/// [`build`] for callers outside an async runtime (the `ferry-lab` binary uses it too).
pub fn build_blocking(variant: LabVariant) -> anyhow::Result<LabServer> {
    let server = image::build_cached(variant)?;
    boot::check_cached(&server)?;
    Ok(server)
}

/// Builds the variant's images without the boot check (cached).
pub fn build_images(variant: LabVariant) -> anyhow::Result<LabServer> {
    image::build_cached(variant)
}

/// Sparse copies of the server's disks in `dir` (same file names), which a test may change.
pub fn copy_disks(server: &LabServer, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut out = Vec::new();
    for d in &server.disks {
        let name = d.file_name().context("a lab disk path has no file name")?;
        let to = dir.join(name);
        sys::run("cp", &["--sparse=always", "--reflink=auto", &s(d), &s(&to)])?;
        out.push(to);
    }
    Ok(out)
}

/// Boots the server's disks under QEMU (TCG, the source hardware) on a throwaway overlay and waits for
/// the marker line; returns the time from QEMU's start to the marker. Not cached.
pub async fn boot_check(server: &LabServer) -> anyhow::Result<Duration> {
    let server = server.clone();
    tokio::task::spawn_blocking(move || boot::boot_check(&server))
        .await
        .context("the boot check task panicked")?
}

/// [`boot_check`], also returning the serial console's output up to the marker line.
pub async fn boot_check_console(server: &LabServer) -> anyhow::Result<(Duration, String)> {
    let server = server.clone();
    tokio::task::spawn_blocking(move || boot::boot(&server))
        .await
        .context("the boot check task panicked")?
}

/// Writes `bytes` to `guest_path` inside a (copied) lab disk, through a loop mount: the root filesystem
/// (the LVM root through a loop at the LV's offset), or for [`LabVariant::DataDisk`] the data disk's xfs
/// when `guest_path` is under `/srv/lab/` (then `disk` must be the data disk, the second one).
/// Never call it on the cached images in [`LabServer::disks`].
pub fn modify_file(
    disk: &Path,
    variant: LabVariant,
    guest_path: &str,
    bytes: &[u8],
) -> anyhow::Result<()> {
    image::modify_file(disk, variant, guest_path, bytes)
}

/// Mounts the filesystem of a lab disk that holds `guest_path` (`/` for the root), read-only unless
/// `writable`; [`MountedFs::host_path`] is where `guest_path` is on the host. Unmounted on drop.
pub fn mount_fs(
    disk: &Path,
    variant: LabVariant,
    guest_path: &str,
    writable: bool,
) -> anyhow::Result<MountedFs> {
    image::mount(disk, variant, guest_path, writable)
}

/// Reads a file inside a lab disk (read-only mount).
pub fn read_file(disk: &Path, variant: LabVariant, guest_path: &str) -> anyhow::Result<Vec<u8>> {
    let m = mount_fs(disk, variant, guest_path, false)?;
    std::fs::read(m.host_path())
        .with_context(|| format!("cannot read {guest_path} in {}", disk.display()))
}

/// The cache directory: `$FERRY_LAB_CACHE`, or `<workspace>/target/lab-cache`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FERRY_LAB_CACHE") {
        return PathBuf::from(d);
    }
    // CARGO_MANIFEST_DIR is <workspace>/crates/ferry-test-utils at compile time.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .join("target/lab-cache")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}
