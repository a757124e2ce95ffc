//! Recomputing a raw image's index from the file alone, and comparing it with a snapshot.
//!
//! This is deliberately independent of the chunk store and of [`crate::materialize_raw`]: it reads the
//! finished file back (holes found with `SEEK_DATA`/`SEEK_HOLE` are zero without reading them) and
//! hashes it on every core, so a bug or a damaged chunk on the write path cannot vouch for itself.
//! Functions here block: call them from `spawn_blocking` in async code.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ferry_chunk::{Digest, DiskIndex, IndexError, MAX_CHUNK_SIZE, chunk_digest};
use nix::errno::Errno;
use nix::unistd::{Whence, lseek};

use crate::error::ImageError;

/// Bytes each worker reads at once (a whole number of chunks, at least one).
const READ_BLOCK: usize = 8 * 1024 * 1024;

/// The byte ranges `[start, end)` of `file` (of length `size`) that may hold data, in order, as reported
/// by `SEEK_DATA`/`SEEK_HOLE`. Everything outside them reads as zeros. Falls back to the whole file when
/// the file system cannot tell.
pub fn data_extents(file: &File, size: u64) -> Vec<(u64, u64)> {
    let fd = file.as_raw_fd();
    let mut extents = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let Ok(at) = i64::try_from(pos) else {
            break;
        };
        let start = match lseek(fd, at, Whence::SeekData) {
            Ok(s) => s as u64,
            // ENXIO: no data after `pos`, the rest is a hole.
            Err(Errno::ENXIO) => break,
            // The file system cannot report holes: treat everything as data.
            Err(_) => return vec![(0, size)],
        };
        if start >= size {
            break;
        }
        let end = match lseek(fd, start as i64, Whence::SeekHole) {
            Ok(e) => (e as u64).min(size),
            Err(_) => size,
        };
        if end <= start {
            // A file system that answers inconsistently: do not loop, read everything.
            return vec![(0, size)];
        }
        extents.push((start, end));
        pos = end;
    }
    extents
}

fn overlaps(extents: &[(u64, u64)], start: u64, end: u64) -> bool {
    // First extent that ends after `start`; it overlaps iff it begins before `end`.
    let i = extents.partition_point(|&(_, e)| e <= start);
    extents.get(i).is_some_and(|&(s, _)| s < end)
}

/// Computes the [`DiskIndex`] of the raw image at `path` (its whole length is the disk size), hashing
/// blocks of chunks in parallel on all cores. Equal to [`DiskIndex::from_reader`] on the same bytes.
/// Blocking.
///
/// # Errors
/// [`ImageError::Index`] for a chunk size of 0 or above `MAX_CHUNK_SIZE`, [`ImageError::Io`] if the
/// file cannot be opened or read (a file that shrinks while read is a read error).
pub fn index_of_image(path: &Path, chunk_size: u32) -> Result<DiskIndex, ImageError> {
    if chunk_size == 0 || chunk_size as usize > MAX_CHUNK_SIZE {
        return Err(IndexError::BadChunkSize {
            chunk_size,
            max: MAX_CHUNK_SIZE,
        }
        .into());
    }
    let file = File::open(path).map_err(|e| ImageError::io("opening", path, e))?;
    let disk_size = file
        .metadata()
        .map_err(|e| ImageError::io("reading the size of", path, e))?
        .len();
    let count = DiskIndex::expected_entries(disk_size, chunk_size) as usize;
    let extents = data_extents(&file, disk_size);

    let cs = chunk_size as usize;
    let per_block = (READ_BLOCK / cs).max(1);
    let blocks = count.div_ceil(per_block);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(blocks.max(1));

    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<ImageError>> = Mutex::new(None);
    let mut entries = vec![Digest::ZERO; count];
    // Workers fill disjoint per-block slices of `entries`; one uncontended mutex per slice lets them do
    // so without unsafe code.
    let slots: Vec<Mutex<&mut [Digest]>> = entries.chunks_mut(per_block).map(Mutex::new).collect();

    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut buf = vec![0u8; per_block * cs];
                loop {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= blocks {
                        return;
                    }
                    let first = b * per_block;
                    let block_start = first as u64 * u64::from(chunk_size);
                    let block_end = (block_start + (per_block * cs) as u64).min(disk_size);
                    // A block entirely in a hole is all zeros: its entries stay Digest::ZERO.
                    if !overlaps(&extents, block_start, block_end) {
                        continue;
                    }
                    let data = &mut buf[..(block_end - block_start) as usize];
                    if let Err(e) = file.read_exact_at(data, block_start) {
                        failed.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(ImageError::io("reading", path, e));
                        }
                        return;
                    }
                    let digests: Vec<Digest> = data.chunks(cs).map(chunk_digest).collect();
                    if let Ok(mut slot) = slots[b].lock() {
                        slot.copy_from_slice(&digests);
                    }
                }
            });
        }
    });
    drop(slots);
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    if failed.load(Ordering::Relaxed) {
        return Err(ImageError::io(
            "reading",
            path,
            std::io::Error::other("a hashing thread failed"),
        ));
    }
    Ok(DiskIndex {
        disk_size,
        chunk_size,
        entries,
    })
}

/// Checks that the raw image at `path` has the root digest `expected_root` when cut into `chunk_size`
/// chunks. Use [`verify_raw_against`] when the index is at hand: it also names the first bad chunk.
/// Blocking.
///
/// # Errors
/// [`ImageError::VerifyFailed`] (without a chunk position) on a mismatch; errors of [`index_of_image`].
pub fn verify_raw(path: &Path, expected_root: &Digest, chunk_size: u32) -> Result<(), ImageError> {
    let actual = index_of_image(path, chunk_size)?.root_digest();
    if actual != *expected_root {
        return Err(ImageError::VerifyFailed {
            path: path.to_path_buf(),
            expected: *expected_root,
            actual,
            first_bad: None,
        });
    }
    Ok(())
}

/// Checks that the raw image at `path` is exactly the disk `index` describes: same size, same digest
/// for every chunk, hence the same root digest. Blocking.
///
/// # Errors
/// [`ImageError::SizeMismatch`] if the file size differs, [`ImageError::VerifyFailed`] naming the first
/// differing chunk and its offset, errors of [`index_of_image`].
pub fn verify_raw_against(path: &Path, index: &DiskIndex) -> Result<(), ImageError> {
    index.validate()?;
    let actual_size = std::fs::metadata(path)
        .map_err(|e| ImageError::io("reading the size of", path, e))?
        .len();
    if actual_size != index.disk_size {
        return Err(ImageError::SizeMismatch {
            path: path.to_path_buf(),
            expected: index.disk_size,
            actual: actual_size,
        });
    }
    let actual = index_of_image(path, index.chunk_size)?;
    let first_bad = index
        .entries
        .iter()
        .zip(&actual.entries)
        .position(|(a, b)| a != b);
    let (expected_root, actual_root) = (index.root_digest(), actual.root_digest());
    if first_bad.is_some() || expected_root != actual_root {
        return Err(ImageError::VerifyFailed {
            path: path.to_path_buf(),
            expected: expected_root,
            actual: actual_root,
            first_bad: first_bad.map(|i| (i, index.chunk_extent(i).0)),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports failure
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn overlap_logic() {
        let ext = [(10, 20), (40, 50)];
        assert!(!overlaps(&ext, 0, 10));
        assert!(overlaps(&ext, 0, 11));
        assert!(overlaps(&ext, 19, 30));
        assert!(!overlaps(&ext, 20, 40));
        assert!(overlaps(&ext, 45, 46));
        assert!(!overlaps(&ext, 50, 100));
        assert!(!overlaps(&[], 0, 100));
    }

    #[test]
    fn sparse_file_index_matches_reader_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let mut f = File::create(&path).unwrap();
        let size = 50 * 1024 * 1024 + 777;
        f.set_len(size).unwrap();
        for (off, byte) in [
            (0u64, 1u8),
            (3 * 1024 * 1024 + 5, 2),
            (30 * 1024 * 1024, 3),
            (size - 1, 4),
        ] {
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(&[byte; 4096][..(size - off).min(4096) as usize])
                .unwrap();
        }
        f.sync_all().unwrap();
        drop(f);
        let extents = data_extents(&File::open(&path).unwrap(), size);
        assert!(!extents.is_empty());
        for chunk_size in [4096u32, 65_536, 1024 * 1024, 3 * 1024 * 1024 + 1] {
            let parallel = index_of_image(&path, chunk_size).unwrap();
            let serial =
                DiskIndex::from_reader(File::open(&path).unwrap(), size, chunk_size).unwrap();
            assert_eq!(parallel, serial, "chunk size {chunk_size}");
            assert!(parallel.data_chunks().count() >= 4);
        }
        assert!(matches!(
            index_of_image(&path, 0),
            Err(ImageError::Index(IndexError::BadChunkSize { .. }))
        ));
    }

    #[test]
    fn empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.raw");
        File::create(&path).unwrap();
        let index = index_of_image(&path, 1024).unwrap();
        assert!(index.entries.is_empty());
        verify_raw_against(&path, &index).unwrap();
    }
}
