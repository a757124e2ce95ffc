//! Disk index format v1: the ordered list of chunk digests that makes up one disk snapshot, and its root
//! digest.
//!
//! ```text
//! offset   size      field
//!      0      4      magic        b"FRYI"
//!      4      4      version      u32 LE = 1
//!      8      4      chunk_size   u32 LE, 1..=MAX_CHUNK_SIZE
//!     12      8      disk_size    u64 LE, bytes
//!     20      8      entry_count  u64 LE, must equal ceil(disk_size / chunk_size)
//!     28   32*n      entries      one digest per chunk, in disk order; Digest::ZERO for all-zero chunks
//!  28+32n    32      root         root digest (see DiskIndex::root_digest)
//! ```
//!
//! Chunk `i` covers bytes `[i * chunk_size, min((i + 1) * chunk_size, disk_size))`: only the last chunk may
//! be short, and its digest is over its short length. Invariants enforced by [`DiskIndex::decode`]: exact
//! length, the entry count above, and a trailer equal to the recomputed root, so a decoded index is
//! internally consistent. Decoding never allocates more than the input's own size.

use std::io::{self, Read};

use crate::blob::MAX_CHUNK_SIZE;
use crate::digest::{Digest, chunk_digest};

/// Magic bytes at the start of every index.
pub const INDEX_MAGIC: [u8; 4] = *b"FRYI";
/// The index format version this code writes and reads.
pub const INDEX_VERSION: u32 = 1;
/// Length of the fixed v1 header, before the entries.
pub const INDEX_HEADER_LEN: usize = 28;
/// Domain separation prefix of the root digest, so a root can never be confused with a chunk digest.
pub const ROOT_DOMAIN: &[u8] = b"ferry-root-v1";

/// A snapshot of one disk: its size, its chunk size and one digest per chunk.
///
/// TODO-perf: entries are one `Vec` (a 4 TiB disk at 1 MiB chunks is 4 Mi entries = 128 MiB); a streaming
/// builder and reader would bound memory for very large disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskIndex {
    /// Size of the disk in bytes.
    pub disk_size: u64,
    /// Size of every chunk but the last.
    pub chunk_size: u32,
    /// Digest of each chunk in disk order; [`Digest::ZERO`] for all-zero chunks.
    pub entries: Vec<Digest>,
}

/// Why an index was rejected or could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The bytes do not start with `FRYI`.
    #[error(
        "this is not a Ferry disk index (no FRYI magic): the upload was corrupted or the wrong object was read; re-upload the index"
    )]
    BadMagic,
    /// The version names a format this build cannot read.
    #[error(
        "the disk index has format version {0}, this build reads version 1: upgrade Ferry to read it"
    )]
    UnsupportedVersion(u32),
    /// The chunk size is 0 or larger than [`MAX_CHUNK_SIZE`].
    #[error(
        "the disk index uses chunk size {chunk_size}, outside 1..={max}: the agent is misconfigured or too new; check its version"
    )]
    BadChunkSize {
        /// The rejected chunk size.
        chunk_size: u32,
        /// [`MAX_CHUNK_SIZE`].
        max: usize,
    },
    /// The entry count is not `ceil(disk_size / chunk_size)`.
    #[error(
        "the disk index lists {actual} chunks but a {disk_size}-byte disk in {chunk_size}-byte chunks has {expected}: the index is inconsistent; the agent must re-read the disk and upload it again"
    )]
    EntryCountMismatch {
        /// Disk size from the header.
        disk_size: u64,
        /// Chunk size from the header.
        chunk_size: u32,
        /// `ceil(disk_size / chunk_size)`.
        expected: u64,
        /// The count found.
        actual: u64,
    },
    /// Fewer bytes than the header requires.
    #[error(
        "the disk index is truncated: {needed} bytes needed, {got} present; the upload was cut short, upload it again"
    )]
    Truncated {
        /// Bytes required.
        needed: u64,
        /// Bytes present.
        got: u64,
    },
    /// More bytes than the header describes.
    #[error(
        "the disk index has {got} bytes but its header describes {expected}: it was corrupted; upload it again"
    )]
    TrailingBytes {
        /// Bytes described.
        expected: u64,
        /// Bytes present.
        got: u64,
    },
    /// The trailer is not the root digest of the entries.
    #[error(
        "the disk index's root digest is {stored} but its entries give {computed}: the index was corrupted; upload it again"
    )]
    RootMismatch {
        /// The trailer.
        stored: Digest,
        /// Recomputed from the entries.
        computed: Digest,
    },
    /// The index references chunks the store does not have.
    #[error(
        "the disk index references {count} chunks that are not stored (first: {first}): the agent must upload them before committing the snapshot; resume the run"
    )]
    MissingChunks {
        /// Number of distinct missing digests.
        count: usize,
        /// The first missing digest in disk order.
        first: Digest,
    },
    /// The stream being indexed ended before `disk_size` bytes.
    #[error(
        "the disk ended after {got} bytes, {disk_size} were expected: the disk shrank or the image is truncated; check its size and retry"
    )]
    ShortStream {
        /// Bytes expected.
        disk_size: u64,
        /// Bytes read.
        got: u64,
    },
    /// Reading the stream failed.
    #[error("reading the disk at offset {offset} failed: check the device or file and retry")]
    Read {
        /// Offset of the failed read.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn check_chunk_size(chunk_size: u32) -> Result<(), IndexError> {
    if chunk_size == 0 || chunk_size as usize > MAX_CHUNK_SIZE {
        return Err(IndexError::BadChunkSize {
            chunk_size,
            max: MAX_CHUNK_SIZE,
        });
    }
    Ok(())
}

impl DiskIndex {
    /// `ceil(disk_size / chunk_size)`: the number of entries a valid index has (0 for a zero chunk size,
    /// which [`DiskIndex::validate`] rejects).
    pub fn expected_entries(disk_size: u64, chunk_size: u32) -> u64 {
        if chunk_size == 0 {
            return 0;
        }
        disk_size.div_ceil(u64::from(chunk_size))
    }

    /// Checks the chunk size and the entry count.
    ///
    /// # Errors
    /// [`IndexError::BadChunkSize`] or [`IndexError::EntryCountMismatch`].
    pub fn validate(&self) -> Result<(), IndexError> {
        check_chunk_size(self.chunk_size)?;
        let expected = Self::expected_entries(self.disk_size, self.chunk_size);
        if self.entries.len() as u64 != expected {
            return Err(IndexError::EntryCountMismatch {
                disk_size: self.disk_size,
                chunk_size: self.chunk_size,
                expected,
                actual: self.entries.len() as u64,
            });
        }
        Ok(())
    }

    /// Byte offset and length of chunk `i` (the last chunk may be short). `i` must be `< entries.len()`
    /// for the result to describe a real chunk.
    pub fn chunk_extent(&self, i: usize) -> (u64, usize) {
        let offset = i as u64 * u64::from(self.chunk_size);
        let len = self
            .disk_size
            .saturating_sub(offset)
            .min(u64::from(self.chunk_size));
        (offset, len as usize)
    }

    /// Indices and digests of the chunks that hold data (every entry but [`Digest::ZERO`]).
    pub fn data_chunks(&self) -> impl Iterator<Item = (usize, &Digest)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.is_zero_marker())
    }

    /// The snapshot's root digest: BLAKE3 over `b"ferry-root-v1" || disk_size (u64 LE) || chunk_size
    /// (u32 LE) || every entry`. Two disks have the same root exactly when they have the same size, chunk
    /// size and content.
    pub fn root_digest(&self) -> Digest {
        let mut h = blake3::Hasher::new();
        h.update(ROOT_DOMAIN);
        h.update(&self.disk_size.to_le_bytes());
        h.update(&self.chunk_size.to_le_bytes());
        for e in &self.entries {
            h.update(&e.0);
        }
        Digest(*h.finalize().as_bytes())
    }

    /// Serializes the index in format v1 (see the module doc). Does not validate; callers that accept
    /// an index from outside call [`DiskIndex::validate`] or decode it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INDEX_HEADER_LEN + 32 * self.entries.len() + 32);
        out.extend_from_slice(&INDEX_MAGIC);
        out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        out.extend_from_slice(&self.chunk_size.to_le_bytes());
        out.extend_from_slice(&self.disk_size.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.0);
        }
        out.extend_from_slice(&self.root_digest().0);
        out
    }

    /// Parses and fully checks a v1 index. Pure; the fuzzing entry point for untrusted indexes.
    ///
    /// # Errors
    /// `Truncated` (shorter than a header), `BadMagic`, `UnsupportedVersion`, `BadChunkSize`,
    /// `EntryCountMismatch`, `Truncated`/`TrailingBytes` (length vs entry count), `RootMismatch`.
    pub fn decode(bytes: &[u8]) -> Result<DiskIndex, IndexError> {
        let got = bytes.len() as u64;
        if bytes.len() < INDEX_HEADER_LEN {
            return Err(IndexError::Truncated {
                needed: INDEX_HEADER_LEN as u64 + 32,
                got,
            });
        }
        if bytes[0..4] != INDEX_MAGIC {
            return Err(IndexError::BadMagic);
        }
        let version = read_u32(bytes, 4);
        if version != INDEX_VERSION {
            return Err(IndexError::UnsupportedVersion(version));
        }
        let chunk_size = read_u32(bytes, 8);
        check_chunk_size(chunk_size)?;
        let disk_size = read_u64(bytes, 12);
        let count = read_u64(bytes, 20);
        let expected = Self::expected_entries(disk_size, chunk_size);
        if count != expected {
            return Err(IndexError::EntryCountMismatch {
                disk_size,
                chunk_size,
                expected,
                actual: count,
            });
        }
        // u128 so that a hostile count cannot overflow the length check.
        let needed = INDEX_HEADER_LEN as u128 + 32 * u128::from(count) + 32;
        if u128::from(got) < needed {
            return Err(IndexError::Truncated {
                needed: u64::try_from(needed).unwrap_or(u64::MAX),
                got,
            });
        }
        if u128::from(got) > needed {
            return Err(IndexError::TrailingBytes {
                expected: needed as u64,
                got,
            });
        }
        // The length check bounds `count` by the input size, so this allocation is bounded too.
        let body = &bytes[INDEX_HEADER_LEN..bytes.len() - 32];
        let entries = body
            .chunks_exact(32)
            .map(|c| {
                let mut d = [0u8; 32];
                d.copy_from_slice(c);
                Digest(d)
            })
            .collect();
        let index = DiskIndex {
            disk_size,
            chunk_size,
            entries,
        };
        let mut stored = [0u8; 32];
        stored.copy_from_slice(&bytes[bytes.len() - 32..]);
        let stored = Digest(stored);
        let computed = index.root_digest();
        if stored != computed {
            return Err(IndexError::RootMismatch { stored, computed });
        }
        Ok(index)
    }

    /// Computes the index of the first `disk_size` bytes of `reader` (a disk, an image file, any stream):
    /// each chunk's [`chunk_digest`], so all-zero chunks become [`Digest::ZERO`]. Independent of any store,
    /// which is what makes it a check on built images. Single-threaded; `ferry-image` has a parallel
    /// version for files.
    ///
    /// # Errors
    /// `BadChunkSize`, `Read` on an I/O error, `ShortStream` if the reader ends early.
    pub fn from_reader(
        mut reader: impl Read,
        disk_size: u64,
        chunk_size: u32,
    ) -> Result<DiskIndex, IndexError> {
        check_chunk_size(chunk_size)?;
        let count = Self::expected_entries(disk_size, chunk_size);
        // Reserve only up to a modest bound: disk_size is a claim, the stream may end much earlier.
        let mut entries = Vec::with_capacity(count.min(1 << 20) as usize);
        let mut buf = vec![0u8; chunk_size as usize];
        let mut offset = 0u64;
        while offset < disk_size {
            let want = (disk_size - offset).min(u64::from(chunk_size)) as usize;
            let chunk = &mut buf[..want];
            let mut filled = 0;
            while filled < want {
                match reader.read(&mut chunk[filled..]) {
                    Ok(0) => {
                        return Err(IndexError::ShortStream {
                            disk_size,
                            got: offset + filled as u64,
                        });
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(IndexError::Read {
                            offset: offset + filled as u64,
                            source,
                        });
                    }
                }
            }
            entries.push(chunk_digest(chunk));
            offset += want as u64;
        }
        Ok(DiskIndex {
            disk_size,
            chunk_size,
            entries,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports failure
mod tests {
    use super::*;
    use crate::digest::hash;
    use proptest::prelude::*;

    fn sample() -> (Vec<u8>, DiskIndex) {
        let mut disk = vec![0u8; 10 * 1000 + 123];
        disk[0] = 1;
        disk[5500] = 2;
        disk[10_100] = 3;
        let index = DiskIndex::from_reader(&disk[..], disk.len() as u64, 1000).unwrap();
        (disk, index)
    }

    #[test]
    fn from_reader_marks_zero_chunks_and_short_tail() {
        let (disk, index) = sample();
        assert_eq!(index.entries.len(), 11);
        assert_eq!(index.entries[0], hash(&disk[0..1000]));
        assert_eq!(index.entries[1], Digest::ZERO);
        assert_eq!(index.entries[5], hash(&disk[5000..6000]));
        assert_eq!(index.entries[10], hash(&disk[10_000..]));
        assert_eq!(index.chunk_extent(10), (10_000, 123));
        assert_eq!(
            index.data_chunks().map(|(i, _)| i).collect::<Vec<_>>(),
            vec![0, 5, 10]
        );
        index.validate().unwrap();
    }

    #[test]
    fn from_reader_reports_short_stream() {
        let data = vec![1u8; 2500];
        assert!(matches!(
            DiskIndex::from_reader(&data[..], 3000, 1000),
            Err(IndexError::ShortStream {
                disk_size: 3000,
                got: 2500
            })
        ));
        assert!(matches!(
            DiskIndex::from_reader(&data[..], 100, 0),
            Err(IndexError::BadChunkSize { .. })
        ));
    }

    #[test]
    fn layout_and_root_are_as_documented() {
        let (_, index) = sample();
        let bytes = index.encode();
        assert_eq!(&bytes[0..4], b"FRYI");
        assert_eq!(read_u32(&bytes, 4), 1);
        assert_eq!(read_u32(&bytes, 8), 1000);
        assert_eq!(read_u64(&bytes, 12), 10_123);
        assert_eq!(read_u64(&bytes, 20), 11);
        assert_eq!(bytes.len(), 28 + 11 * 32 + 32);
        let mut manual = Vec::new();
        manual.extend_from_slice(b"ferry-root-v1");
        manual.extend_from_slice(&10_123u64.to_le_bytes());
        manual.extend_from_slice(&1000u32.to_le_bytes());
        for e in &index.entries {
            manual.extend_from_slice(&e.0);
        }
        assert_eq!(index.root_digest(), hash(&manual));
        assert_eq!(&bytes[bytes.len() - 32..], hash(&manual).as_bytes());
    }

    #[test]
    fn root_depends_on_size_chunk_size_and_entries() {
        let (_, index) = sample();
        let root = index.root_digest();
        let mut other = index.clone();
        other.disk_size += 1;
        assert_ne!(other.root_digest(), root);
        let mut other = index.clone();
        other.chunk_size += 1;
        assert_ne!(other.root_digest(), root);
        let mut other = index.clone();
        other.entries.swap(0, 5);
        assert_ne!(other.root_digest(), root);
    }

    #[test]
    fn corruptions_are_rejected() {
        let (_, index) = sample();
        let good = index.encode();
        assert_eq!(DiskIndex::decode(&good).unwrap(), index);

        let mut b = good.clone();
        b[1] = b'X';
        assert!(matches!(DiskIndex::decode(&b), Err(IndexError::BadMagic)));

        let mut b = good.clone();
        b[4] = 2;
        assert!(matches!(
            DiskIndex::decode(&b),
            Err(IndexError::UnsupportedVersion(2))
        ));

        for cs in [0u32, (MAX_CHUNK_SIZE + 1) as u32] {
            let mut b = good.clone();
            b[8..12].copy_from_slice(&cs.to_le_bytes());
            assert!(matches!(
                DiskIndex::decode(&b),
                Err(IndexError::BadChunkSize { .. })
            ));
        }

        // disk_size changed so the count no longer fits.
        let mut b = good.clone();
        b[12..20].copy_from_slice(&20_000u64.to_le_bytes());
        assert!(matches!(
            DiskIndex::decode(&b),
            Err(IndexError::EntryCountMismatch {
                expected: 20,
                actual: 11,
                ..
            })
        ));
        // disk_size changed within the last chunk: count fits, root does not.
        let mut b = good.clone();
        b[12..20].copy_from_slice(&10_999u64.to_le_bytes());
        assert!(matches!(
            DiskIndex::decode(&b),
            Err(IndexError::RootMismatch { .. })
        ));
        // Hostile huge disk size and count: rejected by the length check, no huge allocation.
        let mut b = good.clone();
        b[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        b[20..28].copy_from_slice(&u64::MAX.div_ceil(1000).to_le_bytes());
        assert!(matches!(
            DiskIndex::decode(&b),
            Err(IndexError::Truncated { .. })
        ));

        for at in [INDEX_HEADER_LEN, INDEX_HEADER_LEN + 100, good.len() - 1] {
            let mut b = good.clone();
            b[at] ^= 0x80;
            assert!(matches!(
                DiskIndex::decode(&b),
                Err(IndexError::RootMismatch { .. })
            ));
        }
        for cut in [0, 27, 100, good.len() - 1] {
            assert!(matches!(
                DiskIndex::decode(&good[..cut]),
                Err(IndexError::Truncated { .. })
            ));
        }
        let mut b = good.clone();
        b.extend_from_slice(&[0; 32]);
        assert!(matches!(
            DiskIndex::decode(&b),
            Err(IndexError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn validate_checks_count() {
        let index = DiskIndex {
            disk_size: 2049,
            chunk_size: 1024,
            entries: vec![Digest::ZERO; 2],
        };
        assert!(matches!(
            index.validate(),
            Err(IndexError::EntryCountMismatch { expected: 3, .. })
        ));
        let empty = DiskIndex {
            disk_size: 0,
            chunk_size: 1024,
            entries: vec![],
        };
        empty.validate().unwrap();
        assert_eq!(DiskIndex::decode(&empty.encode()).unwrap(), empty);
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(chunk_size in 1u32..5000, n in 0usize..200, tail in 0u32..5000, seeds in prop::collection::vec(any::<u8>(), 0..200)) {
            let tail = if n == 0 { 0 } else { tail % chunk_size + 1 };
            let disk_size = n.saturating_sub(1) as u64 * u64::from(chunk_size) + u64::from(tail);
            let entries = (0..n)
                .map(|i| match seeds.get(i) {
                    Some(0) | None => Digest::ZERO,
                    Some(s) => hash(&[*s, i as u8]),
                })
                .collect();
            let index = DiskIndex { disk_size, chunk_size, entries };
            index.validate().unwrap();
            let bytes = index.encode();
            prop_assert_eq!(DiskIndex::decode(&bytes).unwrap(), index);
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(index) = DiskIndex::decode(&bytes) {
                prop_assert!(index.validate().is_ok());
                prop_assert_eq!(index.encode(), bytes);
            }
        }

        #[test]
        fn decode_never_panics_on_valid_header(chunk_size in 0u32..100, disk_size in any::<u64>(), count in any::<u64>(), body in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(b"FRYI");
            bytes.extend_from_slice(&1u32.to_le_bytes());
            bytes.extend_from_slice(&chunk_size.to_le_bytes());
            bytes.extend_from_slice(&(disk_size % 10_000).to_le_bytes());
            bytes.extend_from_slice(&(count % 300).to_le_bytes());
            bytes.extend_from_slice(&body);
            let _ = DiskIndex::decode(&bytes);
        }
    }
}
