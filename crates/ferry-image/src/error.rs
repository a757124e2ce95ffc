//! The image builder's error type.

use std::io;
use std::path::PathBuf;

use ferry_chunk::{ChunkStoreError, Digest, IndexError};

/// Why building, verifying or converting an image failed. Each message names the file or chunk and says
/// what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The snapshot's index is not usable.
    #[error("the snapshot's disk index is invalid")]
    Index(#[from] IndexError),
    /// A chunk could not be fetched or no longer verifies.
    #[error("chunk {chunk} (disk offset {offset}) could not be read from the chunk store")]
    Chunk {
        /// Position of the chunk in the index.
        chunk: usize,
        /// Its byte offset in the disk.
        offset: u64,
        /// What the chunk store said (its message says what to do). Boxed to keep results small.
        #[source]
        source: Box<ChunkStoreError>,
    },
    /// A stored chunk has the right digest but not the length its position needs.
    #[error(
        "chunk {chunk} (disk offset {offset}) is {actual} bytes but the index needs {expected}: the snapshot's index and chunks disagree; run a full sync of this disk to make a new snapshot"
    )]
    ChunkLength {
        /// Position of the chunk in the index.
        chunk: usize,
        /// Its byte offset in the disk.
        offset: u64,
        /// Length the index implies.
        expected: usize,
        /// Length of the stored chunk.
        actual: usize,
    },
    /// The file system holding the images is full.
    #[error(
        "no space left for {}: free space in the image directory or grow the volume, then retry the build",
        path.display()
    )]
    NoSpace {
        /// The file being written.
        path: PathBuf,
    },
    /// Any other I/O error on an image file.
    #[error("{op} {} failed: check the image directory (permissions, disk health) and retry", path.display())]
    Io {
        /// What was being done ("creating", "writing", "reading", ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The image's size is not the snapshot's disk size.
    #[error(
        "{} is {actual} bytes but the snapshot's disk is {expected}: the image is truncated or belongs to another disk; rebuild it",
        path.display()
    )]
    SizeMismatch {
        /// The image.
        path: PathBuf,
        /// The snapshot's disk size.
        expected: u64,
        /// The file's size.
        actual: u64,
    },
    /// The image's content does not match the snapshot.
    #[error(
        "{} does not match the snapshot: root digest {actual}, expected {expected}{}; the image is damaged, rebuild it (if it keeps failing, check the server's disk)",
        path.display(),
        match first_bad {
            Some((c, o)) => format!(" (first differing chunk {c} at offset {o})"),
            None => String::new(),
        }
    )]
    VerifyFailed {
        /// The image.
        path: PathBuf,
        /// The snapshot's root digest.
        expected: Digest,
        /// The image's root digest.
        actual: Digest,
        /// The first chunk that differs and its byte offset, known when the caller passed the index.
        first_bad: Option<(usize, u64)>,
    },
    /// A format name was not recognised.
    #[error("{input:?} is not an image format: use raw, qcow2, vmdk, vhdx or vhd")]
    UnknownFormat {
        /// The rejected name, cut to 50 characters.
        input: String,
    },
    /// A disk name cannot be used as a file name.
    #[error(
        "{name:?} cannot name an image file: use letters, digits, '.', '_' and '-', not starting with '.'"
    )]
    InvalidName {
        /// The rejected name, cut to 200 characters.
        name: String,
    },
    /// `qemu-img` is not installed.
    #[error(
        "qemu-img was not found: install qemu-utils (apt-get install qemu-utils) on the server"
    )]
    QemuImgMissing,
    /// `qemu-img` ran and failed.
    #[error("`qemu-img {args}` failed ({status}): {stderr}")]
    QemuImg {
        /// The arguments, for reproducing by hand.
        args: String,
        /// Its exit status.
        status: String,
        /// The last lines it printed on stderr.
        stderr: String,
    },
    /// A blocking task died (a bug or a panic).
    #[error("an image builder task failed; this is a bug in Ferry, please report it")]
    Task(#[source] tokio::task::JoinError),
}

impl ImageError {
    /// Maps an I/O error on `path`, turning ENOSPC/EDQUOT into [`ImageError::NoSpace`].
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: io::Error) -> ImageError {
        if ferry_chunk::is_no_space(&source) {
            ImageError::NoSpace {
                path: path.to_path_buf(),
            }
        } else {
            ImageError::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        }
    }
}
