//! Chunk digests: BLAKE3 over a chunk's raw bytes, plus the all-zero test that decides which chunks are
//! never stored.
//!
//! Invariant: [`Digest::ZERO`] is never the BLAKE3 of anything we can find, so using it as the index entry
//! for an all-zero chunk cannot collide with a real chunk. It names "this chunk is all zeros" and nothing
//! else; no object is ever stored under it.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte BLAKE3 digest of a chunk's raw (uncompressed) bytes.
///
/// Displays, parses and serializes as 64 lowercase hexadecimal characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Number of bytes in a digest.
    pub const LEN: usize = 32;

    /// The index entry of an all-zero chunk. Such chunks are never stored or sent.
    pub const ZERO: Digest = Digest([0; 32]);

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// True for [`Digest::ZERO`], the marker of an all-zero chunk.
    pub fn is_zero_marker(&self) -> bool {
        *self == Digest::ZERO
    }

    /// 64 lowercase hexadecimal characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// BLAKE3 of `data`.
pub fn hash(data: &[u8]) -> Digest {
    Digest(*blake3::hash(data).as_bytes())
}

/// The index entry for a chunk: [`Digest::ZERO`] when every byte is zero, otherwise its BLAKE3.
pub fn chunk_digest(data: &[u8]) -> Digest {
    if is_zero(data) {
        Digest::ZERO
    } else {
        hash(data)
    }
}

/// True when every byte of `data` is zero (true for an empty slice).
///
/// Compares 16-byte words and exits at the first 256-byte block holding a non-zero bit, so a data chunk
/// is usually rejected after its first block and a zero chunk is scanned at memory speed.
pub fn is_zero(data: &[u8]) -> bool {
    const BLOCK: usize = 256;
    let mut blocks = data.chunks_exact(BLOCK);
    for block in &mut blocks {
        let mut acc = 0u128;
        for word in block.chunks_exact(16) {
            let mut w = [0u8; 16];
            w.copy_from_slice(word);
            acc |= u128::from_ne_bytes(w);
        }
        if acc != 0 {
            return false;
        }
    }
    let rest = blocks.remainder();
    let mut words = rest.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        if u64::from_ne_bytes(w) != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|&b| b == 0)
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        // Encoding 32 bytes into 64 always fits; the error arm cannot happen but must not panic.
        match hex::encode_to_slice(self.0, &mut buf) {
            Ok(()) => f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A string that is not 64 hexadecimal characters was given where a digest was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a chunk digest: expected 64 hexadecimal characters (a BLAKE3 digest); check where the value came from"
)]
pub struct DigestParseError {
    /// The rejected input, cut to 80 characters so a hostile value cannot flood logs.
    pub input: String,
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(DigestParseError {
                input: s.chars().take(80).collect(),
            });
        }
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexVisitor;
        impl Visitor<'_> for HexVisitor {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a BLAKE3 digest as 64 hexadecimal characters")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Digest, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(HexVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports failure
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_marker_is_not_the_hash_of_empty_or_zero_data() {
        assert_ne!(hash(&[]), Digest::ZERO);
        assert_ne!(hash(&[0u8; 4096]), Digest::ZERO);
        assert_eq!(chunk_digest(&[0u8; 4096]), Digest::ZERO);
        assert_eq!(chunk_digest(b"x"), hash(b"x"));
    }

    #[test]
    fn hex_round_trip_and_known_value() {
        // BLAKE3("abc"), from the BLAKE3 reference test vectors.
        let d = hash(b"abc");
        assert_eq!(
            d.to_string(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(d.to_string().parse::<Digest>(), Ok(d));
        assert_eq!(d.to_hex(), d.to_string());
    }

    #[test]
    fn parse_rejects_bad_input() {
        for bad in ["", "00", &"g".repeat(64), &"0".repeat(63), &"0".repeat(65)] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} accepted");
        }
        let long = "z".repeat(500);
        let err = long.parse::<Digest>().unwrap_err();
        assert_eq!(err.input.len(), 80);
    }

    #[test]
    fn serde_as_hex_string() {
        let d = hash(b"serde");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"abc\"").is_err());
        assert!(serde_json::from_str::<Digest>("[1,2,3]").is_err());
    }

    proptest! {
        #[test]
        fn is_zero_matches_naive(len in 0usize..2000, pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut data = vec![0u8; len];
            prop_assert!(is_zero(&data));
            if len > 0 {
                let i = pos.index(len);
                data[i] = 1 << bit;
                prop_assert!(!is_zero(&data));
            }
        }
    }
}
