//! Ferry's image builder: turns a snapshot (a [`DiskIndex`] plus its chunks in a [`ChunkStore`]) into disk
//! images, and proves they hold exactly the snapshot's data (DESIGN.md §4 step 7).
//!
//! - [`materialize_raw`] writes a sparse raw image from the chunks (zero chunks stay holes).
//! - [`index_of_image`], [`verify_raw`] and [`verify_raw_against`] recompute an image's index from the
//!   file alone, independently of the store, and compare it with the snapshot.
//! - [`convert`] and [`qemu_img_compare`] use `qemu-img` (package `qemu-utils`) for qcow2, vmdk, vhdx and
//!   vhd.
//! - [`build_disk_image`] does all three: materialize, verify, convert.
//!
//! Invariant: nothing is reported as built unless the raw image's recomputed root digest equals the
//! snapshot's; on any failure the partial files are removed. Guest adaptation (network, fstab, drivers)
//! is a later step that works on a copy of a verified image.

pub mod adapt;
mod build;
mod error;
mod materialize;
mod qemu;
mod verify;

pub use adapt::{
    AdaptError, AdaptOptions, AdaptReport, Change, GuestInfo, NetworkMode, adapt, detect,
};
pub use build::{BuiltDisk, build_disk_image, build_disk_image_with_progress};
pub use error::ImageError;
pub use materialize::materialize_raw;
pub use qemu::{ImageFormat, convert, qemu_img_compare, qemu_img_compare_as};
pub use verify::{data_extents, index_of_image, verify_raw, verify_raw_against};

#[doc(no_inline)]
pub use ferry_chunk::{ChunkStore, Digest, DiskIndex};
