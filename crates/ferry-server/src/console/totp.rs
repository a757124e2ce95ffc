//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP): HMAC-SHA1, 30-second steps, 6 digits,
//! which is what authenticator apps use for `otpauth://totp/` URIs, plus the RFC 4648 base32 they carry
//! seeds in.
//!
//! Invariants: a code is checked in constant time against the codes of the current step and one step on
//! either side (clock drift), and never against more; the caller rejects a step already used (replay).

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq as _;

/// Seconds per TOTP step.
pub const STEP_SECS: i64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Length of a new seed in bytes (160 bits, RFC 4226's recommendation for HMAC-SHA1).
pub const SEED_LEN: usize = 20;

/// The RFC 4226 HOTP value of `counter` with `digits` digits.
pub fn hotp(seed: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC accepts keys of any length; `new_from_slice` only fails for fixed-size-key MACs.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(seed) else {
        return 0;
    };
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h[h.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([
        h[offset] & 0x7f,
        h[offset + 1],
        h[offset + 2],
        h[offset + 3],
    ]);
    bin % 10u32.pow(digits)
}

/// The time step of unix time `t`.
pub fn step_of(t: i64) -> i64 {
    t.div_euclid(STEP_SECS)
}

/// The 6-digit code of time step `step`, zero-padded.
pub fn code_at_step(seed: &[u8], step: i64) -> String {
    format!(
        "{:0width$}",
        hotp(seed, step.max(0) as u64, DIGITS),
        width = DIGITS as usize
    )
}

/// The step `code` belongs to, if it is the code of the step of `now` or of one step on either side.
/// Candidates are tried newest first and compared in constant time.
pub fn verify(seed: &[u8], code: &str, now: i64) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = step_of(now);
    let mut found = None;
    for step in [current + 1, current, current - 1] {
        let expected = code_at_step(seed, step);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding (what `otpauth://` URIs and RAM's `Base32StringSeed` carry).
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((buf >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes RFC 4648 base32 (case-insensitive, padding and spaces ignored); `None` on any other character.
pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        if c == b'=' || c == b' ' {
            continue;
        }
        let v = BASE32.iter().position(|&x| x == c.to_ascii_uppercase())? as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
        buf &= (1 << bits) - 1;
    }
    Some(out)
}

/// The `otpauth://totp/…` URI authenticator apps import (as a QR code or typed), for `account` of `issuer`.
pub fn otpauth_uri(issuer: &str, account: &str, seed: &[u8]) -> String {
    let enc = percent_encode;
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(account),
        base32_encode(seed),
        enc(issuer)
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 column (8 digits, seed "12345678901234567890").
    #[test]
    fn rfc6238_sha1_vectors() {
        let seed = b"12345678901234567890";
        for (t, code) in [
            (59i64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(hotp(seed, step_of(t) as u64, 8), code, "T = {t}");
            // The 6-digit code is the last six digits of the 8-digit one.
            assert_eq!(
                code_at_step(seed, step_of(t)),
                format!("{:06}", code % 1_000_000)
            );
        }
    }

    /// RFC 4226 Appendix D.
    #[test]
    fn rfc4226_hotp_vectors() {
        let seed = b"12345678901234567890";
        let expected = [
            755_224, 287_082, 359_152, 969_429, 338_314, 254_676, 287_922, 162_583, 399_871,
            520_489,
        ];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(hotp(seed, counter as u64, 6), *code, "counter {counter}");
        }
    }

    #[test]
    fn codes_of_neighbouring_steps_are_accepted_and_others_not() {
        let seed = b"12345678901234567890";
        let now = 1_111_111_111;
        let s = step_of(now);
        for d in [-1, 0, 1] {
            assert_eq!(verify(seed, &code_at_step(seed, s + d), now), Some(s + d));
        }
        for d in [-3, -2, 2, 3] {
            assert_eq!(verify(seed, &code_at_step(seed, s + d), now), None, "{d}");
        }
        for bad in ["", "12345", "1234567", "abcdef", "12 456"] {
            assert_eq!(verify(seed, bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn base32_round_trips_and_matches_rfc4648() {
        // RFC 4648 §10 (without padding).
        for (plain, enc) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32_encode(plain.as_bytes()), enc);
            assert_eq!(base32_decode(enc).as_deref(), Some(plain.as_bytes()));
            assert_eq!(
                base32_decode(&enc.to_lowercase()).as_deref(),
                Some(plain.as_bytes())
            );
        }
        assert_eq!(base32_decode("MZXW6==="), Some(b"foo".to_vec()));
        assert_eq!(base32_decode("MZ1"), None);
    }

    #[test]
    fn otpauth_uris_carry_the_seed_in_base32() {
        let uri = otpauth_uri("Ferry 1234", "alice", b"foobar");
        assert_eq!(
            uri,
            "otpauth://totp/Ferry%201234:alice?secret=MZXW6YTBOI&issuer=Ferry%201234&algorithm=SHA1&digits=6&period=30"
        );
    }
}
