//! Chunk blob format v1: the body of a chunk upload and, byte for byte, the stored object.
//!
//! ```text
//! offset size field
//!      0    4 magic      b"FRYC"
//!      4    1 version    1
//!      5    1 codec      0 = raw, 1 = zstd
//!      6    2 reserved   0
//!      8    4 raw_len    u32 LE, length of the raw chunk (<= MAX_CHUNK_SIZE)
//!     12    4 stored_len u32 LE, length of the payload that follows the header
//!     16    4 reserved   0
//!     20   32 digest     BLAKE3 of the raw chunk
//!     52    … payload    stored_len bytes (raw bytes, or one or more zstd frames)
//! ```
//!
//! Invariants enforced by [`decode`]: the blob is exactly `CHUNK_HEADER_LEN + stored_len` bytes; a raw
//! payload has `stored_len == raw_len`; nothing larger than [`MAX_CHUNK_SIZE`] is ever allocated, whatever
//! the header claims; the returned bytes are `raw_len` long and hash to both the caller's expected digest
//! and the header's. Decoding is pure (no I/O), so it is also the fuzzing entry point for untrusted blobs.

use crate::digest::{Digest, hash};

/// Magic bytes at the start of every chunk blob.
pub const CHUNK_MAGIC: [u8; 4] = *b"FRYC";
/// The blob format version this code writes; [`decode`] reads exactly this version.
pub const CHUNK_VERSION: u8 = 1;
/// Length of the v1 header in bytes.
pub const CHUNK_HEADER_LEN: usize = 52;
/// Largest raw chunk a blob may describe (16 MiB). Bounds what a hostile header can make us allocate.
pub const MAX_CHUNK_SIZE: usize = 16 * 1024 * 1024;

/// How a blob's payload is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Codec {
    /// The payload is the raw chunk.
    Raw = 0,
    /// The payload is zstd-compressed.
    Zstd = 1,
}

impl Codec {
    fn from_u8(v: u8) -> Option<Codec> {
        match v {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// A parsed and sanity-checked blob header (see the module doc for the layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Format version (always [`CHUNK_VERSION`] once parsed).
    pub version: u8,
    /// Payload codec.
    pub codec: Codec,
    /// Length of the raw chunk.
    pub raw_len: u32,
    /// Length of the payload after the header.
    pub stored_len: u32,
    /// BLAKE3 of the raw chunk, as claimed by the sender.
    pub digest: Digest,
}

impl ChunkHeader {
    /// Total length of a blob with this header (header plus payload).
    pub fn blob_len(&self) -> usize {
        CHUNK_HEADER_LEN + self.stored_len as usize
    }

    fn to_bytes(self) -> [u8; CHUNK_HEADER_LEN] {
        let mut h = [0u8; CHUNK_HEADER_LEN];
        h[0..4].copy_from_slice(&CHUNK_MAGIC);
        h[4] = self.version;
        h[5] = self.codec as u8;
        // h[6..8] and h[16..20] are reserved and stay zero.
        h[8..12].copy_from_slice(&self.raw_len.to_le_bytes());
        h[12..16].copy_from_slice(&self.stored_len.to_le_bytes());
        h[20..52].copy_from_slice(&self.digest.0);
        h
    }
}

/// Why a chunk blob was rejected. Messages are written for the upload path, where the sender retries;
/// callers reading stored chunks wrap these in their own "damaged at rest" error.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The blob does not start with `FRYC`.
    #[error(
        "the chunk blob does not start with the FRYC magic: the sender is not a Ferry agent or the upload was corrupted in transit; it will be retried"
    )]
    BadMagic,
    /// The version byte names a format this build cannot read.
    #[error(
        "the chunk blob has format version {0}, this server reads version 1: upgrade the Ferry server to match the agent"
    )]
    UnsupportedVersion(u8),
    /// The codec byte is unknown.
    #[error(
        "the chunk blob uses unknown codec {0} (known: 0 raw, 1 zstd): upgrade the Ferry server to match the agent"
    )]
    UnsupportedCodec(u8),
    /// A reserved header field is not zero.
    #[error(
        "the chunk blob has non-zero reserved header bytes: the upload was corrupted in transit or comes from a newer agent; it will be retried, upgrade the server if it keeps failing"
    )]
    ReservedNotZero,
    /// The blob is shorter than its header says.
    #[error(
        "the chunk blob is truncated: {needed} bytes needed, {got} received; the upload was cut short and will be retried"
    )]
    Truncated {
        /// Bytes the header (or the fixed header length) requires.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The blob is longer than its header says.
    #[error(
        "the chunk blob has {got} bytes but its header describes {expected}: the upload was corrupted in transit; it will be retried"
    )]
    TrailingBytes {
        /// Bytes the header describes.
        expected: usize,
        /// Bytes present.
        got: usize,
    },
    /// `raw_len` or `stored_len` exceeds [`MAX_CHUNK_SIZE`].
    #[error(
        "the chunk blob claims {len} bytes, more than the {max}-byte chunk limit: the upload was corrupted or the agent uses an unsupported chunk size; check the agent's version"
    )]
    TooLarge {
        /// The claimed length.
        len: u64,
        /// [`MAX_CHUNK_SIZE`].
        max: usize,
    },
    /// Lengths disagree (raw payload size vs `raw_len`, or decompressed size vs `raw_len`).
    #[error(
        "the chunk's size is wrong: {expected} bytes expected, {actual} found; the upload was corrupted in transit; it will be retried"
    )]
    SizeMismatch {
        /// Size the header promises.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// The header's digest or the hash of the decoded data is not the expected digest.
    #[error(
        "the chunk hashes to {actual} but {expected} was expected: the upload was corrupted in transit; it will be retried"
    )]
    DigestMismatch {
        /// Digest the caller asked for.
        expected: Digest,
        /// Digest found (in the header, or computed over the decoded data).
        actual: Digest,
    },
    /// The zstd payload could not be decompressed.
    #[error(
        "the chunk's zstd payload could not be decompressed: the upload was corrupted in transit; it will be retried"
    )]
    Decompress(#[source] std::io::Error),
}

/// Encodes `data` as a v1 blob, hashing it first. `level` 0 stores raw; any other value is a zstd level
/// (negative levels are zstd's fast modes). When compression does not make the payload smaller the chunk is
/// stored raw, so a blob is never larger than `CHUNK_HEADER_LEN + data.len()`.
///
/// # Panics
/// If `data` is longer than [`MAX_CHUNK_SIZE`]: chunk sizes are chosen by Ferry's own code, so this is a
/// programming error, never a reaction to outside input.
pub fn encode(data: &[u8], level: i32) -> Vec<u8> {
    encode_with_digest(data, &hash(data), level)
}

/// Like [`encode`] for a caller that already hashed `data` (the agent hashes every chunk to compare it
/// with the previous snapshot before deciding to send it). `digest` must be BLAKE3 of `data`, or the
/// receiver rejects the blob.
///
/// # Panics
/// If `data` is longer than [`MAX_CHUNK_SIZE`] (see [`encode`]).
pub fn encode_with_digest(data: &[u8], digest: &Digest, level: i32) -> Vec<u8> {
    assert!(
        data.len() <= MAX_CHUNK_SIZE,
        "chunk of {} bytes exceeds MAX_CHUNK_SIZE",
        data.len()
    );
    let compressed = if level == 0 || looks_incompressible(data, level) {
        None
    } else {
        // A compression failure is not fatal: storing raw is always correct.
        compress(data, level).ok().filter(|c| c.len() < data.len())
    };
    let (codec, payload): (Codec, &[u8]) = match &compressed {
        Some(c) => (Codec::Zstd, c),
        None => (Codec::Raw, data),
    };
    let header = ChunkHeader {
        version: CHUNK_VERSION,
        codec,
        raw_len: data.len() as u32,
        stored_len: payload.len() as u32,
        digest: *digest,
    };
    let mut out = Vec::with_capacity(CHUNK_HEADER_LEN + payload.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
    out
}

/// Size of each of the three samples [`looks_incompressible`] compresses.
const SAMPLE: usize = 16 << 10;

/// Guesses from three small samples (start, middle, end) whether compressing `data` would be wasted:
/// random or already-compressed data costs a full zstd pass and then goes out raw anyway. Measured on the
/// agent, zstd spent ~45% of its CPU on such chunks; the samples cost ~5% of a full pass. A chunk that
/// is compressible anywhere in the samples is compressed in full.
fn looks_incompressible(data: &[u8], level: i32) -> bool {
    if data.len() < 8 * SAMPLE {
        return false;
    }
    let mid = data.len() / 2 - SAMPLE / 2;
    let samples = [
        &data[..SAMPLE],
        &data[mid..mid + SAMPLE],
        &data[data.len() - SAMPLE..],
    ];
    samples.iter().all(|s| {
        compress(s, level)
            .map(|c| c.len() * 100 >= s.len() * 97)
            .unwrap_or(true)
    })
}

thread_local! {
    /// One zstd context per thread and level: creating a context per chunk costs ~20% of the agent's
    /// throughput at 256 KiB chunks (measured with examples/chunk_size.rs).
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

fn compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let reuse = matches!(&*slot, Some((l, _)) if *l == level);
        if !reuse {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        match slot.as_mut() {
            Some((_, c)) => c.compress(data),
            None => zstd::bulk::compress(data, level),
        }
    })
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// Parses and checks a blob's header without touching the payload (the total length is not checked; use
/// [`ChunkHeader::blob_len`]). Useful to reject a request early from its first bytes.
///
/// # Errors
/// [`ChunkError::Truncated`] if fewer than [`CHUNK_HEADER_LEN`] bytes are given, then `BadMagic`,
/// `UnsupportedVersion`, `UnsupportedCodec`, `ReservedNotZero`, `TooLarge` (either length above
/// [`MAX_CHUNK_SIZE`]) and `SizeMismatch` (raw payload whose `stored_len != raw_len`).
pub fn peek_header(blob: &[u8]) -> Result<ChunkHeader, ChunkError> {
    if blob.len() < CHUNK_HEADER_LEN {
        return Err(ChunkError::Truncated {
            needed: CHUNK_HEADER_LEN,
            got: blob.len(),
        });
    }
    if blob[0..4] != CHUNK_MAGIC {
        return Err(ChunkError::BadMagic);
    }
    let version = blob[4];
    if version != CHUNK_VERSION {
        return Err(ChunkError::UnsupportedVersion(version));
    }
    let codec = Codec::from_u8(blob[5]).ok_or(ChunkError::UnsupportedCodec(blob[5]))?;
    if blob[6..8] != [0, 0] || blob[16..20] != [0, 0, 0, 0] {
        return Err(ChunkError::ReservedNotZero);
    }
    let raw_len = le_u32(blob, 8);
    let stored_len = le_u32(blob, 12);
    for len in [raw_len, stored_len] {
        if len as usize > MAX_CHUNK_SIZE {
            return Err(ChunkError::TooLarge {
                len: u64::from(len),
                max: MAX_CHUNK_SIZE,
            });
        }
    }
    if codec == Codec::Raw && stored_len != raw_len {
        return Err(ChunkError::SizeMismatch {
            expected: u64::from(raw_len),
            actual: u64::from(stored_len),
        });
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&blob[20..52]);
    Ok(ChunkHeader {
        version,
        codec,
        raw_len,
        stored_len,
        digest: Digest(digest),
    })
}

/// Decodes a blob and proves it is the chunk `expected`: returns the raw bytes only if the header is
/// valid, the header names `expected`, the payload decompresses to exactly `raw_len` bytes and those bytes
/// hash to `expected`. Allocates at most `raw_len` (≤ [`MAX_CHUNK_SIZE`]) bytes plus zstd's state.
///
/// # Errors
/// Every [`ChunkError`] variant; see [`peek_header`] for the header checks. After those:
/// `Truncated`/`TrailingBytes` when the blob length disagrees with `stored_len`, `DigestMismatch` when
/// the header or the data's hash is not `expected`, `Decompress` for a broken zstd payload and
/// `SizeMismatch` when it decompresses to the wrong length.
pub fn decode(blob: &[u8], expected: &Digest) -> Result<Vec<u8>, ChunkError> {
    decode_cow(blob, expected).map(std::borrow::Cow::into_owned)
}

/// Like [`decode`], without copying a raw payload: the returned bytes borrow from `blob` unless they had
/// to be decompressed. Same checks, same errors.
pub fn decode_cow<'a>(
    blob: &'a [u8],
    expected: &Digest,
) -> Result<std::borrow::Cow<'a, [u8]>, ChunkError> {
    let header = peek_header(blob)?;
    let total = header.blob_len();
    if blob.len() < total {
        return Err(ChunkError::Truncated {
            needed: total,
            got: blob.len(),
        });
    }
    if blob.len() > total {
        return Err(ChunkError::TrailingBytes {
            expected: total,
            got: blob.len(),
        });
    }
    if header.digest != *expected {
        return Err(ChunkError::DigestMismatch {
            expected: *expected,
            actual: header.digest,
        });
    }
    let payload = &blob[CHUNK_HEADER_LEN..];
    let raw: std::borrow::Cow<'_, [u8]> = match header.codec {
        Codec::Raw => std::borrow::Cow::Borrowed(payload),
        // The capacity bound makes zstd fail rather than grow the buffer if the frame holds more than
        // raw_len bytes, so a small hostile payload cannot expand beyond MAX_CHUNK_SIZE.
        Codec::Zstd => std::borrow::Cow::Owned(
            zstd::bulk::decompress(payload, header.raw_len as usize)
                .map_err(ChunkError::Decompress)?,
        ),
    };
    if raw.len() != header.raw_len as usize {
        return Err(ChunkError::SizeMismatch {
            expected: u64::from(header.raw_len),
            actual: raw.len() as u64,
        });
    }
    let actual = hash(&raw);
    if actual != *expected {
        return Err(ChunkError::DigestMismatch {
            expected: *expected,
            actual,
        });
    }
    Ok(raw)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports failure
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(len: usize) -> Vec<u8> {
        b"the quick brown fox jumps over the lazy dog\n"
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    fn random(len: usize, seed: u64) -> Vec<u8> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut v = vec![0u8; len];
        rng.fill(&mut v[..]);
        v
    }

    #[test]
    fn compressible_data_is_zstd_and_round_trips() {
        let data = text(100_000);
        let blob = encode(&data, 1);
        let h = peek_header(&blob).unwrap();
        assert_eq!(h.codec, Codec::Zstd);
        assert_eq!(h.raw_len as usize, data.len());
        assert!(blob.len() < data.len() / 10);
        assert_eq!(h.blob_len(), blob.len());
        assert_eq!(decode(&blob, &hash(&data)).unwrap(), data);
    }

    #[test]
    fn incompressible_data_and_level_zero_are_stored_raw() {
        let data = random(65_536, 1);
        for level in [0, 1, 3, -5] {
            let blob = encode(&data, level);
            assert_eq!(
                peek_header(&blob).unwrap().codec,
                Codec::Raw,
                "level {level}"
            );
            assert_eq!(blob.len(), CHUNK_HEADER_LEN + data.len());
            assert_eq!(decode(&blob, &hash(&data)).unwrap(), data);
        }
        let t = text(10_000);
        assert_eq!(peek_header(&encode(&t, 0)).unwrap().codec, Codec::Raw);
    }

    #[test]
    fn header_layout_is_as_documented() {
        let data = text(5000);
        let d = hash(&data);
        let blob = encode_with_digest(&data, &d, 1);
        assert_eq!(&blob[0..4], b"FRYC");
        assert_eq!(blob[4], 1);
        assert_eq!(blob[5], 1);
        assert_eq!(&blob[6..8], &[0, 0]);
        assert_eq!(le_u32(&blob, 8), 5000);
        assert_eq!(le_u32(&blob, 12) as usize, blob.len() - 52);
        assert_eq!(&blob[16..20], &[0, 0, 0, 0]);
        assert_eq!(&blob[20..52], d.as_bytes());
    }

    fn with_header_u32(blob: &[u8], at: usize, v: u32) -> Vec<u8> {
        let mut b = blob.to_vec();
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        b
    }

    #[test]
    fn every_corruption_is_rejected_with_the_right_variant() {
        let data = text(50_000);
        let d = hash(&data);
        let zblob = encode(&data, 3);
        let rblob = encode(&data, 0);

        let mut b = zblob.clone();
        b[0] ^= 1;
        assert!(matches!(decode(&b, &d), Err(ChunkError::BadMagic)));

        let mut b = zblob.clone();
        b[4] = 2;
        assert!(matches!(
            decode(&b, &d),
            Err(ChunkError::UnsupportedVersion(2))
        ));

        let mut b = zblob.clone();
        b[5] = 7;
        assert!(matches!(
            decode(&b, &d),
            Err(ChunkError::UnsupportedCodec(7))
        ));

        for at in [6, 7, 16, 19] {
            let mut b = zblob.clone();
            b[at] = 1;
            assert!(matches!(decode(&b, &d), Err(ChunkError::ReservedNotZero)));
        }

        // Oversized raw_len: rejected before any allocation.
        let b = with_header_u32(&zblob, 8, (MAX_CHUNK_SIZE + 1) as u32);
        assert!(matches!(decode(&b, &d), Err(ChunkError::TooLarge { .. })));
        let b = with_header_u32(&zblob, 12, u32::MAX);
        assert!(matches!(decode(&b, &d), Err(ChunkError::TooLarge { .. })));

        // raw_len smaller/larger than the real content.
        let b = with_header_u32(&zblob, 8, 49_999);
        assert!(matches!(decode(&b, &d), Err(ChunkError::Decompress(_))));
        let b = with_header_u32(&zblob, 8, 50_001);
        assert!(matches!(
            decode(&b, &d),
            Err(ChunkError::SizeMismatch {
                expected: 50_001,
                actual: 50_000
            })
        ));
        // Raw codec with a stored_len that is not raw_len.
        let b = with_header_u32(&rblob, 8, 49_000);
        assert!(matches!(
            decode(&b, &d),
            Err(ChunkError::SizeMismatch { .. })
        ));

        // Flipped digest byte in the header.
        let mut b = zblob.clone();
        b[30] ^= 0x40;
        assert!(matches!(
            decode(&b, &d),
            Err(ChunkError::DigestMismatch { expected, .. }) if expected == d
        ));

        // Flipped payload byte: raw payload hashes differently.
        let mut b = rblob.clone();
        b[CHUNK_HEADER_LEN + 1234] ^= 0x01;
        assert!(matches!(
            decode(&b, &d),
            Err(ChunkError::DigestMismatch { actual, .. }) if actual != d
        ));
        // zstd payload: either zstd notices or the hash does, never success.
        for pos in [CHUNK_HEADER_LEN, CHUNK_HEADER_LEN + 10, zblob.len() - 1] {
            let mut b = zblob.clone();
            b[pos] ^= 0x10;
            assert!(
                matches!(
                    decode(&b, &d),
                    Err(ChunkError::Decompress(_)
                        | ChunkError::DigestMismatch { .. }
                        | ChunkError::SizeMismatch { .. })
                ),
                "flip at {pos} not rejected"
            );
        }

        // Truncation anywhere, and a trailing byte.
        for cut in [0, 10, CHUNK_HEADER_LEN - 1] {
            assert!(matches!(
                decode(&zblob[..cut], &d),
                Err(ChunkError::Truncated {
                    needed: CHUNK_HEADER_LEN,
                    ..
                })
            ));
        }
        assert!(matches!(
            decode(&zblob[..zblob.len() - 1], &d),
            Err(ChunkError::Truncated { .. })
        ));
        let mut b = zblob.clone();
        b.push(0);
        assert!(matches!(
            decode(&b, &d),
            Err(ChunkError::TrailingBytes { .. })
        ));

        // A valid blob for other data does not pass as `d`.
        let other = encode(b"other", 1);
        assert!(matches!(
            decode(&other, &d),
            Err(ChunkError::DigestMismatch { .. })
        ));
        // A header that lies consistently about its digest is caught by the hash check.
        let mut b = rblob.clone();
        b[CHUNK_HEADER_LEN] ^= 0xff;
        let lying = hash(&b[CHUNK_HEADER_LEN..]);
        assert!(matches!(
            decode(&b, &lying),
            Err(ChunkError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn zstd_bomb_is_bounded() {
        // 16 MiB of zeros compresses to a few hundred bytes; claiming 1 KiB must fail, not allocate 16 MiB.
        let big = vec![7u8; MAX_CHUNK_SIZE];
        let blob = encode(&big, 1);
        assert!(blob.len() < 10_000);
        let b = with_header_u32(&blob, 8, 1024);
        assert!(matches!(
            decode(&b, &hash(&big)),
            Err(ChunkError::Decompress(_))
        ));
        assert_eq!(decode(&blob, &hash(&big)).unwrap().len(), MAX_CHUNK_SIZE);
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = ChunkError::DigestMismatch {
            expected: hash(b"a"),
            actual: hash(b"b"),
        };
        assert!(e.to_string().contains("retried"));
        assert!(
            ChunkError::UnsupportedVersion(2)
                .to_string()
                .contains("upgrade")
        );
    }

    proptest! {
        #[test]
        fn round_trip(data in prop::collection::vec(any::<u8>(), 0..5000), repeat in 1usize..20, level in -3i32..6) {
            let data: Vec<u8> = data.iter().copied().cycle().take(data.len() * repeat).collect();
            let blob = encode(&data, level);
            prop_assert!(blob.len() <= CHUNK_HEADER_LEN + data.len());
            prop_assert_eq!(decode(&blob, &hash(&data)).unwrap(), data);
        }

        #[test]
        fn decode_never_panics_and_only_accepts_the_truth(blob in prop::collection::vec(any::<u8>(), 0..300), expected in any::<[u8; 32]>()) {
            let d = Digest(expected);
            if let Ok(raw) = decode(&blob, &d) {
                prop_assert_eq!(hash(&raw), d);
            }
        }

        #[test]
        fn single_byte_flip_is_always_rejected(len in 1usize..3000, pos in any::<prop::sample::Index>(), flip in 1u8..=255, level in 0i32..3) {
            let data: Vec<u8> = (0..len).map(|i| (i % 17) as u8 * (i % 5) as u8).collect();
            let d = hash(&data);
            let mut blob = encode(&data, level);
            let i = pos.index(blob.len());
            blob[i] ^= flip;
            match decode(&blob, &d) {
                // A raw blob has no redundant byte: every flip must be caught.
                Ok(_) if level == 0 => prop_assert!(false, "flip at {} accepted", i),
                // Some zstd frame-header bits (e.g. the window size) do not change the output; what
                // must never happen is different data passing as `d`.
                Ok(raw) => prop_assert_eq!(raw, data),
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod sampling_tests {
    use super::*;

    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn random_chunks_skip_compression_and_text_chunks_do_not() {
        let random = pseudo_random(1 << 20);
        assert!(looks_incompressible(&random, 1));
        let blob = encode(&random, 1);
        assert_eq!(peek_header(&blob).map(|h| h.codec).ok(), Some(Codec::Raw));

        let text: Vec<u8> = b"ferry migrates servers; "
            .iter()
            .copied()
            .cycle()
            .take(1 << 20)
            .collect();
        assert!(!looks_incompressible(&text, 1));
        assert_eq!(
            peek_header(&encode(&text, 1)).map(|h| h.codec).ok(),
            Some(Codec::Zstd)
        );

        // Compressible data in only one sampled region still gets compressed.
        let mut mixed = pseudo_random(1 << 20);
        mixed[..64 << 10].fill(b'a');
        assert!(!looks_incompressible(&mixed, 1));
        // Small chunks are always tried in full.
        assert!(!looks_incompressible(&random[..64 << 10], 1));
    }
}
