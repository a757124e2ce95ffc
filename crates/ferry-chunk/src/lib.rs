//! Ferry's chunk layer: the storage heart of the data path (DESIGN.md §4, §5).
//!
//! - [`digest`]: BLAKE3 chunk digests and the all-zero test ([`Digest::ZERO`] marks zero chunks, which are
//!   never stored or sent).
//! - [`blob`]: chunk blob format v1, the upload body and the stored object alike; [`blob::decode`] is the
//!   one gate every chunk passes, and it proves the bytes are the chunk they claim to be.
//! - [`index`]: disk index format v1 (one digest per fixed-size chunk) and its root digest.
//! - [`store`]: the [`ObjectStore`] trait, [`LocalStore`], and [`durable_write`], the one helper for
//!   crash-safe writes.
//! - [`s3`]: [`S3Store`], the [`ObjectStore`] on an S3-compatible bucket.
//! - [`pack`]: pack format v1, which groups chunks into few large objects for stores where objects are
//!   expensive (S3).
//! - [`bulk`]: the bulk pool, lower-priority threads for data-moving work, so API calls stay quick in a
//!   migration wave.
//! - [`chunk_store`]: [`ChunkStore`], chunks and indexes on an object store, verified on the way in and out
//!   (one object per chunk, or packed).
//!
//! Formats are frozen and documented in `docs/formats.md`; each carries a version marker, and a change
//! is a new version with a reader for the old one. Nothing here trusts bytes from outside the process:
//! decoders are pure, bounded in what they allocate, and never panic on input.

pub mod blob;
pub mod bulk;
pub mod chunk_store;
pub mod digest;
pub mod index;
pub mod pack;
pub mod s3;
pub mod store;

pub use blob::{
    CHUNK_HEADER_LEN, CHUNK_MAGIC, CHUNK_VERSION, ChunkError, ChunkHeader, Codec, MAX_CHUNK_SIZE,
    decode, decode_cow, encode, encode_with_digest, peek_header,
};
pub use chunk_store::{ChunkStore, ChunkStoreError, PutOutcome};
pub use digest::{Digest, DigestParseError, chunk_digest, hash, is_zero};
pub use index::{DiskIndex, INDEX_MAGIC, INDEX_VERSION, IndexError};
pub use pack::PackConfig;
pub use s3::{S3Config, S3Store};
pub use store::{
    LocalStore, ObjectStore, StoreError, check_reserve, durable_write, durable_write_deferred,
    durable_write_secret, free_space, is_no_space,
};

/// The chunk size new snapshots use: 1 MiB, chosen by measurement (see `docs/formats.md` and
/// `examples/chunk_size.rs`). Every index records its own chunk size, so changing this is not a format
/// change; incremental runs keep the previous snapshot's chunk size.
pub const DEFAULT_CHUNK_SIZE: u32 = 1024 * 1024;

/// The zstd level agents use for uploads (fast; see the measurement in `docs/formats.md`).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
