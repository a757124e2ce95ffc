//! Writing a snapshot out as a sparse raw disk image.
//!
//! Invariants: the file is exactly `disk_size` bytes; zero chunks are never written, so they stay holes;
//! each data chunk is fetched through [`ChunkStore::get`], which verifies it, and is written with a
//! positional write at its own offset, so chunks may complete in any order; the file is fsynced before
//! success is reported; on failure the partial file is removed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use ferry_chunk::{ChunkStore, ChunkStoreError, Digest, DiskIndex};
use futures::{StreamExt, stream};

use crate::error::ImageError;

/// Fetch + decode + write concurrency: two per core keeps the CPU busy decoding while other chunks
/// wait on the store or the disk.
fn concurrency() -> usize {
    2 * std::thread::available_parallelism().map_or(2, |n| n.get())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    ferry_chunk::bulk::blocking(f)
        .await
        .map_err(ImageError::Task)?
}

/// Writes the disk `index` describes to `out` (created or truncated) as a sparse raw image, fetching
/// data chunks from `chunks` with bounded concurrency. `progress` is called with the number of disk
/// bytes done so far (zero chunks count at once; the last call is `disk_size`).
///
/// This does not re-read the result: use [`crate::verify_raw_against`] (as
/// [`crate::build_disk_image`] does) to prove the file is the snapshot.
///
/// # Errors
/// [`ImageError::Index`] for an invalid index; [`ImageError::Chunk`] if a chunk is missing or damaged;
/// [`ImageError::ChunkLength`] if a chunk has the wrong length for its position;
/// [`ImageError::NoSpace`] / [`ImageError::Io`] for file errors. On error `out` is removed.
pub async fn materialize_raw(
    index: &DiskIndex,
    chunks: &ChunkStore,
    out: &Path,
    progress: impl Fn(u64),
) -> Result<(), ImageError> {
    index.validate()?;
    let result = write_image(index, chunks, out, &progress).await;
    if result.is_err() {
        // Best effort: the file may never have been created.
        let _ = tokio::fs::remove_file(out).await;
    }
    result
}

async fn write_image(
    index: &DiskIndex,
    chunks: &ChunkStore,
    out: &Path,
    progress: &impl Fn(u64),
) -> Result<(), ImageError> {
    let path = out.to_path_buf();
    let disk_size = index.disk_size;
    let file = blocking(move || {
        let f = File::create(&path).map_err(|e| ImageError::io("creating", &path, e))?;
        // Extending with set_len allocates nothing: everything not written below stays a hole.
        f.set_len(disk_size)
            .map_err(|e| ImageError::io("sizing", &path, e))?;
        Ok(f)
    })
    .await?;
    let file = Arc::new(file);

    let zero_bytes: u64 = index
        .entries
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_zero_marker())
        .map(|(i, _)| index.chunk_extent(i).1 as u64)
        .sum();
    let mut done = zero_bytes;
    progress(done);

    // Items and the per-chunk future own what they use: futures that borrow through the closure's
    // arguments are not provably Send, and the server spawns builds onto its runtime.
    let data_chunks = index
        .entries
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, d)| !d.is_zero_marker());
    let mut writes = stream::iter(data_chunks)
        .map(|(i, digest)| {
            let (offset, len) = index.chunk_extent(i);
            fetch_and_write(
                chunks.clone(),
                Arc::clone(&file),
                out.to_path_buf(),
                i,
                digest,
                offset,
                len,
            )
        })
        .buffer_unordered(concurrency());
    while let Some(written) = writes.next().await {
        done += written?;
        progress(done);
    }
    drop(writes);

    let path = out.to_path_buf();
    blocking(move || {
        file.sync_all()
            .map_err(|e| ImageError::io("syncing", &path, e))
    })
    .await
}

/// Fetches (and verifies) chunk `chunk` and writes it at `offset`; returns the bytes written.
async fn fetch_and_write(
    chunks: ChunkStore,
    file: Arc<File>,
    path: std::path::PathBuf,
    chunk: usize,
    digest: Digest,
    offset: u64,
    expected: usize,
) -> Result<u64, ImageError> {
    let chunk_error = move |source| ImageError::Chunk {
        chunk,
        offset,
        source: Box::new(source),
    };
    let blob = chunks.get_blob(&digest).await.map_err(chunk_error)?;
    blocking(move || {
        // Decoding verifies the chunk's digest; a raw payload is written straight from the blob.
        let data = ferry_chunk::decode_cow(&blob, &digest)
            .map_err(|source| chunk_error(ChunkStoreError::Corrupt { digest, source }))?;
        if data.len() != expected {
            return Err(ImageError::ChunkLength {
                chunk,
                offset,
                expected,
                actual: data.len(),
            });
        }
        file.write_all_at(&data, offset)
            .map_err(|e| ImageError::io("writing", &path, e))
    })
    .await?;
    Ok(expected as u64)
}
