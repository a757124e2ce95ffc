//! Packs: many chunk blobs in one object, for stores where objects are expensive (S3 charges per
//! request and per object, and its listing and lifecycle tools slow down with object count).
//!
//! Layout (`docs/formats.md`, "Pack, version 1"): a pack is `packs/<id>.pack` (magic, version, then chunk
//! blobs back to back, exactly as they were verified) and its index `packs/<id>.pidx` (which digest lives
//! at which offset, with a checksum). The index is written only after the pack, so **an index's existence
//! is the pack's commit**: a pack without an index is an interrupted upload and is never read.
//!
//! Where a chunk lives (digest → pack, offset, length) is kept in memory, loaded at start from every pack
//! index in the store, and refreshed by listing `packs/` when a lookup misses (other replicas write
//! packs too); `docs/decisions.md` ("Chunk packs on S3") says why this is not a database table.
//!
//! Invariants:
//! - A chunk is reported present (by `missing`) only once its pack and the pack's index are
//!   stored. Chunks still buffered are found by `put` (no duplicate buffering) and `get_blob`, never by
//!   `missing`.
//! - Buffered chunks are uploaded when the open pack reaches [`PackConfig::target_size`], when it is
//!   [`PackConfig::max_age`] old, and at [`Packer::sync`] (the index commit's group commit).
//! - Memory is bounded: one open pack plus at most [`PackConfig::max_sealed`] sealed packs waiting for
//!   upload; `put` waits (backpressure) when the uploads fall behind.
//! - A failed upload keeps its pack queued; the next flush retries it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _, stream};

use crate::blob::{CHUNK_HEADER_LEN, MAX_CHUNK_SIZE};
use crate::chunk_store::PutOutcome;
use crate::digest::Digest;
use crate::store::{ObjectStore, StoreError};

/// Magic bytes at the start of every pack object.
pub const PACK_MAGIC: [u8; 4] = *b"FRYP";
/// The pack format version this code writes and reads.
pub const PACK_VERSION: u32 = 1;
/// Length of the pack header (magic + version); the first blob starts here.
pub const PACK_HEADER_LEN: u64 = 8;
/// Magic bytes at the start of every pack index.
pub const PACK_INDEX_MAGIC: [u8; 4] = *b"FRYX";
/// The pack index format version this code writes and reads.
pub const PACK_INDEX_VERSION: u32 = 1;
const PACK_INDEX_HEADER_LEN: usize = 24;
const PACK_ENTRY_LEN: usize = 44;
/// The largest blob a pack index may point at (a 16 MiB chunk stored raw, plus its header).
const MAX_BLOB_LEN: u64 = (MAX_CHUNK_SIZE + CHUNK_HEADER_LEN) as u64;
/// Pack indexes fetched at once when loading.
const INDEX_FETCH_CONCURRENCY: usize = 16;
/// `missing` re-lists the store's packs at most this often (misses are normal there: new data).
const MISSING_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// When buffered chunks are written as a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackConfig {
    /// A pack is sealed and uploaded once its blobs reach this many bytes (default 64 MiB: about 16
    /// packs per stored GiB, plus one index each).
    pub target_size: u64,
    /// ... or once its first chunk has waited this long (default 30 s), so that a slow upload does
    /// not keep chunks in memory, unreported to `missing`, indefinitely.
    pub max_age: Duration,
    /// Sealed packs that may wait for upload before `put` waits for them (default 2).
    pub max_sealed: usize,
}

impl Default for PackConfig {
    fn default() -> Self {
        PackConfig {
            target_size: 64 * 1024 * 1024,
            max_age: Duration::from_secs(30),
            max_sealed: 2,
        }
    }
}

/// Why a pack index does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    /// Shorter than its header and checksum.
    #[error("the pack index is truncated ({got} bytes)")]
    Truncated {
        /// Bytes present.
        got: usize,
    },
    /// Does not start with `FRYX`.
    #[error("the object is not a pack index (no FRYX magic)")]
    BadMagic,
    /// A version this build cannot read.
    #[error(
        "pack index format version {0} is not supported by this server (it reads 1): upgrade Ferry"
    )]
    UnsupportedVersion(u32),
    /// The length does not match the entry count.
    #[error("the pack index length does not match its entry count {count}")]
    LengthMismatch {
        /// The entry count in the header.
        count: u64,
    },
    /// The checksum trailer does not match.
    #[error("the pack index checksum does not match: the object was damaged")]
    ChecksumMismatch,
    /// An entry points outside the pack or at an impossible blob.
    #[error("pack index entry {entry} points outside its pack")]
    EntryOutOfBounds {
        /// Its position in the index.
        entry: usize,
    },
}

/// Where one chunk's blob is inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// The chunk's digest.
    pub digest: Digest,
    /// Byte offset of the blob in the pack object.
    pub offset: u64,
    /// The blob's length.
    pub len: u32,
}

/// The index of one pack (format v1, see `docs/formats.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackIndex {
    /// Length of the pack object.
    pub pack_size: u64,
    /// One entry per blob, in pack order.
    pub entries: Vec<PackEntry>,
}

impl PackIndex {
    /// Serializes in format v1.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(PACK_INDEX_HEADER_LEN + PACK_ENTRY_LEN * self.entries.len() + 32);
        out.extend_from_slice(&PACK_INDEX_MAGIC);
        out.extend_from_slice(&PACK_INDEX_VERSION.to_le_bytes());
        out.extend_from_slice(&self.pack_size.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.digest.0);
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.len.to_le_bytes());
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Parses and checks a v1 pack index. Pure, never panics, allocates at most in proportion to the
    /// input.
    ///
    /// # Errors
    /// Every [`PackError`] variant.
    pub fn decode(bytes: &[u8]) -> Result<PackIndex, PackError> {
        let got = bytes.len();
        if got < PACK_INDEX_HEADER_LEN + 32 {
            return Err(PackError::Truncated { got });
        }
        if bytes[0..4] != PACK_INDEX_MAGIC {
            return Err(PackError::BadMagic);
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let version = u32_at(4);
        if version != PACK_INDEX_VERSION {
            return Err(PackError::UnsupportedVersion(version));
        }
        let pack_size = u64_at(8);
        let count = u64_at(16);
        let expected = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(PACK_ENTRY_LEN))
            .and_then(|n| n.checked_add(PACK_INDEX_HEADER_LEN + 32));
        if expected != Some(got) {
            return Err(PackError::LengthMismatch { count });
        }
        let body = &bytes[..got - 32];
        if blake3::hash(body).as_bytes() != &bytes[got - 32..] {
            return Err(PackError::ChecksumMismatch);
        }
        let mut entries = Vec::with_capacity((got - PACK_INDEX_HEADER_LEN - 32) / PACK_ENTRY_LEN);
        for (i, e) in body[PACK_INDEX_HEADER_LEN..]
            .chunks_exact(PACK_ENTRY_LEN)
            .enumerate()
        {
            let mut digest = [0u8; 32];
            digest.copy_from_slice(&e[0..32]);
            let mut off = [0u8; 8];
            off.copy_from_slice(&e[32..40]);
            let offset = u64::from_le_bytes(off);
            let len = u32::from_le_bytes([e[40], e[41], e[42], e[43]]);
            let in_bounds = offset >= PACK_HEADER_LEN
                && u64::from(len) >= CHUNK_HEADER_LEN as u64
                && u64::from(len) <= MAX_BLOB_LEN
                && offset
                    .checked_add(u64::from(len))
                    .is_some_and(|end| end <= pack_size);
            if !in_bounds {
                return Err(PackError::EntryOutOfBounds { entry: i });
            }
            entries.push(PackEntry {
                digest: Digest(digest),
                offset,
                len,
            });
        }
        Ok(PackIndex { pack_size, entries })
    }
}

/// The key of pack `id`'s data: `packs/<id>.pack`.
pub fn pack_key(id: &str) -> String {
    format!("packs/{id}.pack")
}

/// The key of pack `id`'s index: `packs/<id>.pidx`.
pub fn pack_index_key(id: &str) -> String {
    format!("packs/{id}.pidx")
}

/// A new pack ID: creation time in milliseconds (16 hex digits, so keys list in time order) and 64
/// random bits (replicas never collide).
fn new_pack_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    format!("{millis:016x}-{:016x}", rand::random::<u64>())
}

#[derive(Debug, Clone)]
struct Loc {
    pack: Arc<str>,
    offset: u64,
    len: u32,
}

/// A pack being filled, or sealed and waiting for upload.
struct Building {
    id: String,
    blobs: Vec<(Digest, Bytes)>,
    digests: HashMap<Digest, usize>,
    /// Bytes of the blobs (without the header).
    size: u64,
}

impl Building {
    fn new() -> Building {
        Building {
            id: new_pack_id(),
            blobs: Vec::new(),
            digests: HashMap::new(),
            size: 0,
        }
    }

    fn get(&self, d: &Digest) -> Option<Bytes> {
        self.digests.get(d).map(|&i| self.blobs[i].1.clone())
    }

    /// The pack object and its index.
    fn encode(&self) -> (Bytes, PackIndex) {
        let total = PACK_HEADER_LEN + self.size;
        let mut data = Vec::with_capacity(total as usize);
        data.extend_from_slice(&PACK_MAGIC);
        data.extend_from_slice(&PACK_VERSION.to_le_bytes());
        let mut entries = Vec::with_capacity(self.blobs.len());
        for (d, b) in &self.blobs {
            entries.push(PackEntry {
                digest: *d,
                offset: data.len() as u64,
                len: b.len() as u32,
            });
            data.extend_from_slice(b);
        }
        (
            Bytes::from(data),
            PackIndex {
                pack_size: total,
                entries,
            },
        )
    }
}

#[derive(Default)]
struct State {
    /// Durable chunks.
    known: HashMap<Digest, Loc>,
    /// Packs whose index is loaded into `known`.
    loaded: HashSet<String>,
    open: Option<Building>,
    sealed: VecDeque<Arc<Building>>,
    last_refresh: Option<Instant>,
}

impl State {
    fn pending(&self, d: &Digest) -> Option<Bytes> {
        self.open
            .as_ref()
            .and_then(|b| b.get(d))
            .or_else(|| self.sealed.iter().find_map(|b| b.get(d)))
    }

    fn seal(&mut self) {
        if let Some(b) = self.open.take()
            && !b.blobs.is_empty()
        {
            self.sealed.push_back(Arc::new(b));
        }
    }

    fn load(&mut self, id: &str, index: &PackIndex) {
        let pack: Arc<str> = Arc::from(id);
        for e in &index.entries {
            // The same chunk in two packs (two replicas raced): either copy serves.
            self.known.entry(e.digest).or_insert_with(|| Loc {
                pack: pack.clone(),
                offset: e.offset,
                len: e.len,
            });
        }
        self.loaded.insert(id.to_owned());
    }
}

/// Buffers verified chunk blobs into packs on an [`ObjectStore`] and finds them again. Used through
/// [`crate::ChunkStore::open_packed`].
pub(crate) struct Packer {
    store: Arc<dyn ObjectStore>,
    cfg: PackConfig,
    state: Mutex<State>,
    /// One pack upload at a time, in order: `sync` returning means every earlier chunk is durable.
    uploader: tokio::sync::Mutex<()>,
    refresher: tokio::sync::Mutex<()>,
    this: Weak<Packer>,
}

fn poisoned() -> StoreError {
    StoreError::Io {
        key: "(pack state)".into(),
        source: std::io::Error::other(
            "a thread panicked while holding the pack state; restart the server",
        ),
    }
}

impl Packer {
    /// Loads every pack index in `store`.
    pub(crate) async fn open(
        store: Arc<dyn ObjectStore>,
        cfg: PackConfig,
    ) -> Result<Arc<Packer>, StoreError> {
        let packer = Arc::new_cyclic(|this| Packer {
            store,
            cfg,
            state: Mutex::new(State::default()),
            uploader: tokio::sync::Mutex::new(()),
            refresher: tokio::sync::Mutex::new(()),
            this: this.clone(),
        });
        packer.refresh(None).await?;
        Ok(packer)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        self.state.lock().map_err(|_| poisoned())
    }

    /// Buffers a verified blob (see the module doc for when it becomes durable).
    pub(crate) async fn put(&self, digest: Digest, blob: Bytes) -> Result<PutOutcome, StoreError> {
        loop {
            {
                let mut st = self.lock()?;
                if st.known.contains_key(&digest) || st.pending(&digest).is_some() {
                    return Ok(PutOutcome::AlreadyPresent);
                }
                if st.sealed.len() < self.cfg.max_sealed {
                    let fresh = st.open.is_none();
                    let open = st.open.get_or_insert_with(Building::new);
                    open.digests.insert(digest, open.blobs.len());
                    open.size += blob.len() as u64;
                    open.blobs.push((digest, blob));
                    let (id, full) = (open.id.clone(), open.size >= self.cfg.target_size);
                    if full {
                        st.seal();
                        self.spawn_flush();
                    } else if fresh {
                        self.spawn_age_timer(id);
                    }
                    return Ok(PutOutcome::Stored);
                }
            }
            // Uploads fell behind: help (or wait for) them before buffering more.
            self.flush_sealed().await?;
        }
    }

    fn spawn_flush(&self) {
        let this = self.this.clone();
        tokio::spawn(async move {
            if let Some(p) = this.upgrade()
                && let Err(e) = p.flush_sealed().await
            {
                tracing::warn!(error = %e, "cannot upload a chunk pack yet; the next flush retries");
            }
        });
    }

    fn spawn_age_timer(&self, id: String) {
        let this = self.this.clone();
        let age = self.cfg.max_age;
        tokio::spawn(async move {
            tokio::time::sleep(age).await;
            let Some(p) = this.upgrade() else { return };
            let sealed = match p.lock() {
                Ok(mut st) if st.open.as_ref().is_some_and(|b| b.id == id) => {
                    st.seal();
                    true
                }
                _ => false,
            };
            if sealed && let Err(e) = p.flush_sealed().await {
                tracing::warn!(error = %e, "cannot upload a chunk pack yet; the next flush retries");
            }
        });
    }

    /// Uploads every sealed pack, oldest first.
    async fn flush_sealed(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.uploader.lock().await;
        loop {
            let Some(next) = self.lock()?.sealed.front().cloned() else {
                return Ok(());
            };
            let (data, index) = next.encode();
            // The index is the commit: only after the whole pack is stored.
            self.store.put(&pack_key(&next.id), data).await?;
            self.store
                .put(&pack_index_key(&next.id), Bytes::from(index.encode()))
                .await?;
            let mut st = self.lock()?;
            st.load(&next.id, &index);
            st.sealed.pop_front();
            tracing::debug!(pack = %next.id, chunks = index.entries.len(), bytes = index.pack_size, "chunk pack stored");
        }
    }

    /// Makes every chunk buffered so far durable (seals the open pack and uploads all sealed ones).
    pub(crate) async fn sync(&self) -> Result<(), StoreError> {
        self.lock()?.seal();
        self.flush_sealed().await
    }

    /// Loads the indexes of packs other processes stored since the last look. With `min_interval`,
    /// does nothing if the last look is more recent than that.
    pub(crate) async fn refresh(&self, min_interval: Option<Duration>) -> Result<(), StoreError> {
        let started = Instant::now();
        let _one_at_a_time = self.refresher.lock().await;
        {
            let st = self.lock()?;
            // Another caller listed after we asked: its answer is as fresh as ours would be.
            if st.last_refresh.is_some_and(|t| t >= started) {
                return Ok(());
            }
            if let (Some(min), Some(t)) = (min_interval, st.last_refresh)
                && t.elapsed() < min
            {
                return Ok(());
            }
        }
        let listed_at = Instant::now();
        // TODO-perf: list only keys after the newest loaded pack ID (minus a window for slow uploads)
        // instead of the whole `packs/` prefix: one LIST request per 1,000 objects, 32 per TiB stored.
        let keys = self.store.list("packs/").await?;
        let new: Vec<String> = {
            let st = self.lock()?;
            keys.iter()
                .filter_map(|k| k.strip_prefix("packs/")?.strip_suffix(".pidx"))
                .filter(|id| !st.loaded.contains(*id))
                .map(str::to_owned)
                .collect()
        };
        let store = self.store.clone();
        let fetched: Vec<(String, Bytes)> = stream::iter(new)
            .map(|id| {
                let store = store.clone();
                async move {
                    let bytes = store.get(&pack_index_key(&id)).await?;
                    Ok::<_, StoreError>((id, bytes))
                }
            })
            .buffer_unordered(INDEX_FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        let mut st = self.lock()?;
        for (id, bytes) in fetched {
            match PackIndex::decode(&bytes) {
                Ok(index) => st.load(&id, &index),
                // Its chunks count as missing, so agents upload them again into a new pack.
                Err(e) => {
                    tracing::warn!(pack = %id, error = %e, key = %pack_index_key(&id), "ignoring a damaged pack index; delete it and its pack")
                }
            }
        }
        st.last_refresh = Some(listed_at);
        Ok(())
    }

    /// Indices into `digests` of chunks not durably stored. Unknown digests trigger a (rate-limited)
    /// look for packs other replicas stored; with `strict`, that look is not rate-limited.
    pub(crate) async fn missing(
        &self,
        digests: &[Digest],
        strict: bool,
    ) -> Result<Vec<usize>, StoreError> {
        let scan = |st: &State| -> Vec<usize> {
            digests
                .iter()
                .enumerate()
                .filter(|(_, d)| !d.is_zero_marker() && !st.known.contains_key(d))
                .map(|(i, _)| i)
                .collect()
        };
        let first = scan(&*self.lock()?);
        if first.is_empty() {
            return Ok(first);
        }
        let interval = (!strict).then_some(MISSING_REFRESH_INTERVAL);
        self.refresh(interval).await?;
        Ok(scan(&*self.lock()?))
    }

    /// The stored blob of a chunk (buffered ones included).
    pub(crate) async fn get_blob(&self, d: &Digest) -> Result<Bytes, StoreError> {
        let not_found = || StoreError::NotFound {
            key: format!("chunk {d} (packed)"),
        };
        let loc = {
            let st = self.lock()?;
            if let Some(b) = st.pending(d) {
                return Ok(b);
            }
            st.known.get(d).cloned()
        };
        let loc = match loc {
            Some(l) => l,
            None => {
                self.refresh(None).await?;
                self.lock()?.known.get(d).cloned().ok_or_else(not_found)?
            }
        };
        self.store
            .get_range(
                &pack_key(&loc.pack),
                loc.offset..loc.offset + u64::from(loc.len),
            )
            .await
    }

    /// (packs, chunks) durably stored, as far as this process knows.
    pub(crate) fn counts(&self) -> Result<(usize, usize), StoreError> {
        let st = self.lock()?;
        Ok((st.loaded.len(), st.known.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PackIndex {
        PackIndex {
            pack_size: 8 + 100 + 200,
            entries: vec![
                PackEntry {
                    digest: crate::hash(b"a"),
                    offset: 8,
                    len: 100,
                },
                PackEntry {
                    digest: crate::hash(b"b"),
                    offset: 108,
                    len: 200,
                },
            ],
        }
    }

    #[test]
    fn index_round_trips_and_rejects_damage() {
        let idx = sample();
        let bytes = idx.encode();
        assert_eq!(bytes.len(), 24 + 2 * 44 + 32);
        assert_eq!(PackIndex::decode(&bytes), Ok(idx.clone()));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(PackIndex::decode(&b).is_err(), "flip at {i} accepted");
        }
        for n in 0..bytes.len() {
            assert!(
                PackIndex::decode(&bytes[..n]).is_err(),
                "cut at {n} accepted"
            );
        }
        let mut out_of_bounds = idx;
        out_of_bounds.entries[1].len = 201;
        assert_eq!(
            PackIndex::decode(&out_of_bounds.encode()),
            Err(PackError::EntryOutOfBounds { entry: 1 })
        );
    }

    #[test]
    fn pack_ids_are_unique_valid_keys() {
        let a = new_pack_id();
        assert_ne!(a, new_pack_id());
        crate::store::validate_key(&pack_key(&a)).expect("valid key");
        crate::store::validate_key(&pack_index_key(&a)).expect("valid key");
    }
}
