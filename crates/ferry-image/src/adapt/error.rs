//! Guest adaptation's error type. Every message says what happened and what to do next.

use std::io;
use std::path::PathBuf;

/// Why detecting or adapting a guest failed.
///
/// [`AdaptError::NoOperatingSystem`] is not a failure of Ferry: the disks hold no Linux system (random
/// data, a data-only disk set). The server records the image as "not adapted" and skips boot validation.
#[derive(Debug, thiserror::Error)]
pub enum AdaptError {
    /// No filesystem on the disks holds `/etc/os-release` and `/etc/fstab`.
    #[error(
        "no Linux system found on {disks} (no filesystem holds /etc/os-release and /etc/fstab): the image is left unchanged and not adapted; boot validation does not apply to it"
    )]
    NoOperatingSystem {
        /// The disks looked at, comma-separated.
        disks: String,
    },
    /// The guest uses a layout adaptation cannot handle without device-mapper.
    #[error(
        "{what}: adaptation does not support this layout; adapt the image by hand or boot it unadapted"
    )]
    Unsupported {
        /// What was found, in words.
        what: String,
    },
    /// Adaptation needs root (loop devices, mounts, chroot).
    #[error("guest adaptation needs root (loop devices and mounts): run the server as root")]
    NotRoot,
    /// A host tool is missing.
    #[error("the host tool `{tool}` is missing: install the Debian package `{package}`")]
    MissingTool {
        /// The command.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// A host tool failed.
    #[error(
        "`{command}` failed ({status}): {stderr}; check that loop devices are available (losetup -f) and that the image is not in use"
    )]
    Tool {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// Regenerating an initramfs in the guest failed.
    #[error(
        "regenerating the initramfs for kernel {kernel} failed: {detail}; the guest may not boot from virtio disks: fix its initramfs tooling (update-initramfs/dracut) and rebuild the image"
    )]
    Initramfs {
        /// The kernel version.
        kernel: String,
        /// What the tool said.
        detail: String,
    },
    /// The guest's LVM metadata could not be read.
    #[error(
        "the LVM metadata on {volume} could not be read: {detail}; check the volume group with `vgck` on the source"
    )]
    Lvm {
        /// The physical volume (e.g. `disk0p2`).
        volume: String,
        /// What was wrong.
        detail: String,
    },
    /// A file in the guest or an image file could not be read or written.
    #[error("{op} {} failed: check that the image file is writable and its filesystem is not full or damaged (fsck)", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path (inside the host's view of the mounted guest).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The adaptation task itself failed (panicked or was cancelled).
    #[error("the adaptation task stopped unexpectedly: {0}; retry, and report a bug if it repeats")]
    Task(String),
}

impl AdaptError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        AdaptError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
