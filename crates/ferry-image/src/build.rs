//! Building a snapshot's disk images: materialize raw → verify against the snapshot → convert.
//!
//! Invariant: a [`BuiltDisk`] is only returned after the raw image's recomputed index equals the
//! snapshot's (same size, every chunk digest, root digest). On any failure every file this build created
//! is removed, so a later retry starts clean and no caller can pick up an unverified image.

use std::path::{Path, PathBuf};

use ferry_chunk::{ChunkStore, Digest, DiskIndex};

use crate::error::ImageError;
use crate::qemu::{ImageFormat, convert};

/// The verified images of one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltDisk {
    /// The sparse raw image, `<dir>/<name>.raw` (always built: every other format is converted from it).
    pub raw: PathBuf,
    /// `<dir>/<name>.qcow2` when qcow2 was asked for.
    pub qcow2: Option<PathBuf>,
    /// The snapshot's root digest, which the raw image was verified to have.
    pub root: Digest,
    /// Disk size in bytes.
    pub size_bytes: u64,
    /// Every image built, raw first, then the requested formats in request order
    /// (`<dir>/<name>.<format>`).
    pub images: Vec<(ImageFormat, PathBuf)>,
}

impl BuiltDisk {
    /// The image in `format`, if it was built.
    pub fn image(&self, format: ImageFormat) -> Option<&Path> {
        self.images
            .iter()
            .find(|(f, _)| *f == format)
            .map(|(_, p)| p.as_path())
    }
}

fn check_name(name: &str) -> Result<(), ImageError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidName {
            name: name.chars().take(200).collect(),
        })
    }
}

/// [`build_disk_image_with_progress`] without progress reports.
pub async fn build_disk_image(
    index: &DiskIndex,
    chunks: &ChunkStore,
    dir: &Path,
    name: &str,
    formats: &[ImageFormat],
) -> Result<BuiltDisk, ImageError> {
    build_disk_image_with_progress(index, chunks, dir, name, formats, |_| {}).await
}

/// Builds `<dir>/<name>.raw` from the snapshot, verifies it against `index` (re-reading the file), then
/// converts it to each of `formats` (raw is always built; duplicates are ignored). `progress` receives
/// the bytes materialized so far, as in [`crate::materialize_raw`].
///
/// # Errors
/// [`ImageError::InvalidName`] for a name unusable as a file name; every error of
/// [`crate::materialize_raw`], [`crate::verify_raw_against`] and [`crate::convert`]. Files created by
/// this call are removed on error (`dir` itself is created if missing and left in place).
pub async fn build_disk_image_with_progress(
    index: &DiskIndex,
    chunks: &ChunkStore,
    dir: &Path,
    name: &str,
    formats: &[ImageFormat],
    progress: impl Fn(u64),
) -> Result<BuiltDisk, ImageError> {
    check_name(name)?;
    index.validate()?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| ImageError::io("creating", dir, e))?;

    let raw = dir.join(format!("{name}.raw"));
    let mut images = vec![(ImageFormat::Raw, raw.clone())];
    let result = build(
        index,
        chunks,
        dir,
        name,
        formats,
        &raw,
        &mut images,
        progress,
    )
    .await;
    match result {
        Ok(()) => Ok(BuiltDisk {
            qcow2: images
                .iter()
                .find(|(f, _)| *f == ImageFormat::Qcow2)
                .map(|(_, p)| p.clone()),
            raw,
            root: index.root_digest(),
            size_bytes: index.disk_size,
            images,
        }),
        Err(e) => {
            for (_, path) in &images {
                // Best effort: a file may not have been created yet.
                let _ = tokio::fs::remove_file(path).await;
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)] // private step of the function above, sharing its state
async fn build(
    index: &DiskIndex,
    chunks: &ChunkStore,
    dir: &Path,
    name: &str,
    formats: &[ImageFormat],
    raw: &Path,
    images: &mut Vec<(ImageFormat, PathBuf)>,
    progress: impl Fn(u64),
) -> Result<(), ImageError> {
    crate::materialize_raw(index, chunks, raw, progress).await?;

    // Record every output before writing it, so a half-written one is removed on failure.
    let mut outputs = Vec::new();
    for &format in formats {
        if images.iter().any(|(f, _)| *f == format) {
            continue;
        }
        let dst = dir.join(format!("{name}.{}", format.name()));
        images.push((format, dst.clone()));
        outputs.push((format, dst));
    }
    // Verification and conversion both only read the raw image: run them side by side. Nothing is
    // reported as built unless verification passed (the caller removes every output on error).
    let (path, idx) = (raw.to_path_buf(), index.clone());
    let verify = ferry_chunk::bulk::blocking(move || crate::verify_raw_against(&path, &idx));
    let converts = async {
        for (format, dst) in &outputs {
            convert(raw, dst, *format).await?;
        }
        Ok::<_, ImageError>(())
    };
    let (verified, converted) = tokio::join!(verify, converts);
    verified.map_err(ImageError::Task)??;
    converted?;
    Ok(())
}
