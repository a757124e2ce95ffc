//! The instance driver's error type.

use std::io;
use std::path::PathBuf;

/// Why an instance operation failed. Each message names the instance or file and says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// An instance ID that cannot name a directory safely.
    #[error(
        "{id:?} is not a valid instance ID (lower-case letters, digits and '-', 1 to 64 characters)"
    )]
    InvalidId {
        /// The rejected ID (truncated).
        id: String,
    },
    /// A QEMU program is not installed.
    #[error(
        "{program} is not installed: install QEMU (Debian/Ubuntu: apt-get install qemu-system-x86 qemu-utils)"
    )]
    QemuMissing {
        /// `qemu-system-x86_64` or `qemu-img`.
        program: String,
    },
    /// A QEMU program exited with an error.
    #[error("{program} failed ({status}) while {what}: {stderr}")]
    QemuFailed {
        /// The program.
        program: String,
        /// What it was asked to do.
        what: String,
        /// Its exit status.
        status: String,
        /// The last lines it wrote to stderr.
        stderr: String,
    },
    /// An I/O error on a file of the instance.
    #[error("{op} {} failed: check the instance directory (permissions, free space)", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The instance directory's path is too long for a unix socket address.
    #[error(
        "the QMP socket path {} is longer than 100 bytes, the limit of a unix socket address: use a shorter data directory",
        path.display()
    )]
    SocketPathTooLong {
        /// The socket path.
        path: PathBuf,
    },
    /// QEMU's control socket did not answer as expected.
    #[error("QMP of instance {id}: {detail}")]
    Qmp {
        /// The instance.
        id: String,
        /// What went wrong.
        detail: String,
    },
    /// `instance.json` is missing or unreadable.
    #[error("instance file {}: {detail}", path.display())]
    InstanceFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// QEMU did not exit after SIGKILL.
    #[error(
        "QEMU of instance {id} (pid {pid}) did not exit after SIGKILL within {secs} s: check the host (a process stuck in the kernel)"
    )]
    KillTimeout {
        /// The instance.
        id: String,
        /// Its QEMU's process ID.
        pid: u32,
        /// How long the driver waited.
        secs: u64,
    },
    /// The spec cannot run (a forward to a non-loopback address, a bad fw_cfg name, …).
    #[error("instance {id}: {detail}")]
    BadSpec {
        /// The instance.
        id: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// OVMF (UEFI firmware) is not installed.
    #[error(
        "UEFI firmware {} is missing: install OVMF (Debian/Ubuntu: apt-get install ovmf)",
        path.display()
    )]
    FirmwareMissing {
        /// The file looked for.
        path: PathBuf,
    },
    /// An operation needs the instance stopped.
    #[error("instance {id} is running (pid {pid}): stop it first")]
    AlreadyRunning {
        /// The instance.
        id: String,
        /// Its QEMU.
        pid: u32,
    },
    /// Sending a signal failed.
    #[error("cannot signal QEMU of instance {id} (pid {pid}): {source}")]
    Signal {
        /// The instance.
        id: String,
        /// The process.
        pid: u32,
        /// The error.
        #[source]
        source: nix::Error,
    },
}

impl VmError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        VmError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
