//! Chunks and indexes on top of an [`ObjectStore`]: the only way the server writes or reads them.
//!
//! Object keys: `chunks/<hex[0..2]>/<hex[2..4]>/<hex>` for a chunk blob (two fan-out levels keep
//! directories small on a local disk and are harmless on S3) and `indexes/<name>.fidx` for a disk index.
//!
//! With [`ChunkStore::open_packed`] (the S3 store), chunks are not one object each but are buffered into
//! pack objects (`crate::pack`); everything else here works the same, and a buffered chunk counts as
//! stored only once its pack is (so `missing` may ask for it again, and `put_index` flushes first).
//!
//! Invariants: a chunk object exists only if its blob decoded and verified against its key's digest when
//! it was put (blobs are stored as received, so the stored bytes are exactly the verified bytes); an index
//! object exists only if it validated and every chunk it references was stored. [`Digest::ZERO`] is
//! never stored: it is treated as always present.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};

use crate::blob::{self, ChunkError};
use crate::digest::Digest;
use crate::index::{DiskIndex, IndexError};
use crate::pack::{PackConfig, Packer};
use crate::store::{ObjectStore, StoreError};

/// How many `exists` checks [`ChunkStore::missing`] runs at once.
const EXISTS_CONCURRENCY: usize = 32;

/// What [`ChunkStore::put_verified`] did with a valid blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The chunk was new and is now stored.
    Stored,
    /// The chunk was already stored (by any disk of any server); nothing was written.
    AlreadyPresent,
}

/// Why a chunk-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChunkStoreError {
    /// An uploaded blob failed verification and was not stored.
    #[error("chunk {digest} was rejected and not stored")]
    Rejected {
        /// The digest the upload claimed.
        digest: Digest,
        /// What was wrong with it (the message says what happens next).
        #[source]
        source: ChunkError,
    },
    /// A stored blob no longer verifies: it was damaged at rest.
    #[error(
        "stored chunk {digest} is damaged: check the data directory's disk; delete the object {} so the next run of any job that uses it uploads it again",
        ChunkStore::chunk_key(digest)
    )]
    Corrupt {
        /// The chunk's digest (its object key is [`ChunkStore::chunk_key`] of it).
        digest: Digest,
        /// What the verification found.
        #[source]
        source: ChunkError,
    },
    /// An index name is not usable in a key.
    #[error(
        "{name:?} is not a valid index name: use letters, digits, '.', '_' and '-', not starting with '.'"
    )]
    InvalidIndexName {
        /// The rejected name, cut to 200 characters.
        name: String,
    },
    /// The index is invalid or references chunks that are not stored.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A verification task died (a bug or a panic in a codec).
    #[error("chunk verification task failed; this is a bug in Ferry, please report it")]
    Task(#[source] tokio::task::JoinError),
}

/// Chunk and index access over any [`ObjectStore`]. Cheap to clone.
#[derive(Clone)]
pub struct ChunkStore {
    store: Arc<dyn ObjectStore>,
    /// `Some` when chunks are stored in packs.
    packer: Option<Arc<Packer>>,
}

impl std::fmt::Debug for ChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStore")
            .field("packed", &self.packer.is_some())
            .finish_non_exhaustive()
    }
}

impl ChunkStore {
    /// Wraps an object store, one object per chunk (the local store: files are cheap, and image tools
    /// can read a chunk in place).
    pub fn new(store: Arc<dyn ObjectStore>) -> ChunkStore {
        ChunkStore {
            store,
            packer: None,
        }
    }

    /// Wraps an object store with chunks in packs (`crate::pack`): for S3, where the object count is
    /// what costs. Loads every pack index in the store.
    ///
    /// # Errors
    /// `Store` if the store cannot be listed or a pack index cannot be read.
    pub async fn open_packed(
        store: Arc<dyn ObjectStore>,
        cfg: PackConfig,
    ) -> Result<ChunkStore, ChunkStoreError> {
        let packer = Packer::open(store.clone(), cfg).await?;
        Ok(ChunkStore {
            store,
            packer: Some(packer),
        })
    }

    /// Whether chunks are stored in packs.
    pub fn is_packed(&self) -> bool {
        self.packer.is_some()
    }

    /// Packs and chunks stored, as far as this process knows (`None` unless packed): for measurements
    /// and tests.
    pub fn pack_counts(&self) -> Option<(usize, usize)> {
        self.packer.as_ref().and_then(|p| p.counts().ok())
    }

    /// Makes every chunk stored so far durable: uploads buffered packs, syncs deferred names.
    /// [`ChunkStore::put_index`] does this itself.
    ///
    /// # Errors
    /// `Store` if an upload or sync fails (the buffered chunks stay buffered for the next attempt).
    pub async fn flush(&self) -> Result<(), ChunkStoreError> {
        if let Some(p) = &self.packer {
            p.sync().await?;
        }
        self.store.sync_deferred().await?;
        Ok(())
    }

    /// The underlying object store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object key of a chunk: `chunks/<hex[0..2]>/<hex[2..4]>/<hex>`.
    pub fn chunk_key(digest: &Digest) -> String {
        let hex = digest.to_hex();
        format!("chunks/{}/{}/{}", &hex[0..2], &hex[2..4], hex)
    }

    /// The object key of an index: `indexes/<name>.fidx`.
    ///
    /// # Errors
    /// [`ChunkStoreError::InvalidIndexName`] unless `name` is 1–200 characters of `[A-Za-z0-9._-]` not
    /// starting with `.`.
    pub fn index_key(name: &str) -> Result<String, ChunkStoreError> {
        let ok = !name.is_empty()
            && name.len() <= 200
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(ChunkStoreError::InvalidIndexName {
                name: name.chars().take(200).collect(),
            });
        }
        Ok(format!("indexes/{name}.fidx"))
    }

    /// Verifies an uploaded blob (decode, sizes, BLAKE3 == `digest` == header digest) and, only if it is
    /// valid, stores it exactly as received. Verification runs on the blocking pool (it decompresses and
    /// hashes up to 16 MiB).
    ///
    /// # Errors
    /// [`ChunkStoreError::Rejected`] for a bad blob (nothing stored), `Store` if writing fails (`NoSpace`
    /// included), `Task` if verification panicked.
    pub async fn put_verified(
        &self,
        digest: &Digest,
        blob: Bytes,
    ) -> Result<PutOutcome, ChunkStoreError> {
        let d = *digest;
        let checked = blob.clone();
        crate::bulk::blocking(move || blob::decode_cow(&checked, &d).map(drop))
            .await
            .map_err(ChunkStoreError::Task)?
            .map_err(|source| ChunkStoreError::Rejected { digest: d, source })?;
        if let Some(p) = &self.packer {
            return Ok(p.put(d, blob).await?);
        }
        let key = Self::chunk_key(digest);
        if self.store.exists(&key).await? {
            return Ok(PutOutcome::AlreadyPresent);
        }
        // The name becomes durable when an index referencing the chunk is committed (`put_index`); a crash
        // before that can lose the chunk, never corrupt it, and the agent then sends it again.
        self.store.put_deferred(&key, blob).await?;
        Ok(PutOutcome::Stored)
    }

    /// Whether a chunk is stored ([`Digest::ZERO`] always is).
    ///
    /// # Errors
    /// `Store` if the store cannot answer.
    pub async fn has(&self, digest: &Digest) -> Result<bool, ChunkStoreError> {
        if digest.is_zero_marker() {
            return Ok(true);
        }
        if let Some(p) = &self.packer {
            return Ok(p.missing(&[*digest], false).await?.is_empty());
        }
        Ok(self.store.exists(&Self::chunk_key(digest)).await?)
    }

    /// Indices (ascending) into `digests` of the chunks that are not stored. Checks run concurrently, at
    /// most 32 at a time; duplicates are each reported.
    ///
    /// # Errors
    /// `Store` if the store cannot answer.
    pub async fn missing(&self, digests: &[Digest]) -> Result<Vec<usize>, ChunkStoreError> {
        if let Some(p) = &self.packer {
            return Ok(p.missing(digests, false).await?);
        }
        // Owned items and a named async fn: a closure returning a future that borrows its argument is
        // not provably Send, and handlers calling this run on the server's multi-threaded runtime.
        let mut missing: Vec<usize> = stream::iter(digests.iter().copied().enumerate())
            .map(|(i, d)| Self::present(self.clone(), i, d))
            .buffer_unordered(EXISTS_CONCURRENCY)
            .try_filter_map(|(i, present)| async move { Ok((!present).then_some(i)) })
            .try_collect()
            .await?;
        missing.sort_unstable();
        Ok(missing)
    }

    async fn present(self, i: usize, digest: Digest) -> Result<(usize, bool), ChunkStoreError> {
        Ok((i, self.has(&digest).await?))
    }

    /// The stored blob of a chunk, unverified (for serving it on; readers that use the data call
    /// [`ChunkStore::get`]).
    ///
    /// # Errors
    /// `Store(NotFound)` if it is not stored (including [`Digest::ZERO`]), other `Store` errors.
    pub async fn get_blob(&self, digest: &Digest) -> Result<Bytes, ChunkStoreError> {
        if let Some(p) = &self.packer {
            return Ok(p.get_blob(digest).await?);
        }
        Ok(self.store.get(&Self::chunk_key(digest)).await?)
    }

    /// A chunk's raw data, decoded and verified against `digest`.
    ///
    /// # Errors
    /// `Store(NotFound)` if it is not stored (including [`Digest::ZERO`]: callers materialize zero chunks
    /// themselves), [`ChunkStoreError::Corrupt`] if it no longer verifies.
    pub async fn get(&self, digest: &Digest) -> Result<Vec<u8>, ChunkStoreError> {
        let blob = self.get_blob(digest).await?;
        let d = *digest;
        crate::bulk::blocking(move || blob::decode(&blob, &d))
            .await
            .map_err(ChunkStoreError::Task)?
            .map_err(|source| ChunkStoreError::Corrupt { digest: d, source })
    }

    /// The local file of a chunk if the store is a local directory and chunks are not packed.
    pub fn local_chunk_path(&self, digest: &Digest) -> Option<PathBuf> {
        if self.packer.is_some() {
            return None;
        }
        self.store.local_path(&Self::chunk_key(digest))
    }

    /// Validates `index`, checks that every chunk it references is stored, then stores it under `name`.
    /// Returns its root digest. This is the commit point of a snapshot: the index exists whole or not at
    /// all.
    ///
    /// # Errors
    /// `InvalidIndexName`, `Index(BadChunkSize | EntryCountMismatch)`, `Index(MissingChunks)` (nothing
    /// stored), `Store`.
    pub async fn put_index(
        &self,
        name: &str,
        index: &DiskIndex,
    ) -> Result<Digest, ChunkStoreError> {
        let key = Self::index_key(name)?;
        index.validate()?;
        // Every chunk stored so far becomes durable before an index may reference it.
        self.flush().await?;
        let mut seen = HashSet::new();
        let unique: Vec<Digest> = index
            .data_chunks()
            .filter(|(_, d)| seen.insert(**d))
            .map(|(_, d)| *d)
            .collect();
        let missing = match &self.packer {
            // Another replica may have stored some of them a moment ago: look, whatever the last look.
            Some(p) => p.missing(&unique, true).await?,
            None => self.missing(&unique).await?,
        };
        if let Some(&first) = missing.first() {
            return Err(IndexError::MissingChunks {
                count: missing.len(),
                first: unique[first],
            }
            .into());
        }
        let root = index.root_digest();
        self.store.put(&key, Bytes::from(index.encode())).await?;
        Ok(root)
    }

    /// Reads and fully checks the index stored under `name`.
    ///
    /// # Errors
    /// `InvalidIndexName`, `Store(NotFound)`, `Index(..)` if the stored bytes do not decode.
    pub async fn get_index(&self, name: &str) -> Result<DiskIndex, ChunkStoreError> {
        let key = Self::index_key(name)?;
        let bytes = self.store.get(&key).await?;
        Ok(DiskIndex::decode(&bytes)?)
    }
}
