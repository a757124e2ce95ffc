//! Sealing of MFA seeds at rest: ChaCha20-Poly1305 (ring) under a 256-bit key that lives in a file of the
//! server's (shared) data directory, not in the database, so that a copy of the database alone does not
//! give away anyone's second factor.
//!
//! Formats (version-marked, `docs/console.md`):
//! * key file `<shared-or-data-dir>/console-seal.key`, mode 0600: `ferry-seal-key v1\n<64 hex digits>\n`;
//! * sealed value: `v1:` + base64 (standard, padded) of nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes), with
//!   the device's serial number as associated data, so that a sealed seed copied onto another device's row
//!   does not open.
//!
//! Invariants: the key file is created once, atomically (written whole to a temp file, fsynced, then
//! hard-linked into place, which fails if another replica got there first; then the winner's key is read);
//! clear seeds and the key are never logged.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ferry_api::ApiError;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::AppState;

/// The key file's name.
pub const KEY_FILE: &str = "console-seal.key";
const KEY_HEADER: &str = "ferry-seal-key v1";
const SEALED_PREFIX: &str = "v1:";

/// Where the seal key lives: the directory replicas share, or the data directory of a single server.
pub fn key_path(st: &AppState) -> PathBuf {
    st.cfg
        .shared_dir
        .as_deref()
        .unwrap_or(&st.cfg.data_dir)
        .join(KEY_FILE)
}

/// Seals `clear` for the device `serial_number`.
///
/// Errors: `InternalError` (logged with the cause) when the key file cannot be read or created.
pub fn seal(st: &AppState, serial_number: &str, clear: &[u8]) -> Result<String, ApiError> {
    let key = load_or_create(&key_path(st)).map_err(key_error)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| ApiError::internal())?;
    let mut buf = clear.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(serial_number.as_bytes()),
        &mut buf,
    )
    .map_err(|_| ApiError::internal())?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(format!(
        "{SEALED_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(out)
    ))
}

/// Opens a value [`seal`] made for `serial_number`.
///
/// Errors: `InternalError` (logged) when the key is unreadable, or the value is not a v1 sealed value or
/// does not open with this key (a different key file, or a value moved to another device).
pub fn open(st: &AppState, serial_number: &str, sealed: &str) -> Result<Vec<u8>, ApiError> {
    let key = load_or_create(&key_path(st)).map_err(key_error)?;
    let bad = |why: &str| {
        tracing::error!(
            device = %serial_number,
            "a sealed MFA seed cannot be opened ({why}): was {KEY_FILE} replaced? The device must be re-created"
        );
        ApiError::internal()
    };
    let body = sealed
        .strip_prefix(SEALED_PREFIX)
        .ok_or_else(|| bad("unknown format version"))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| bad("not base64"))?;
    if raw.len() < NONCE_LEN {
        return Err(bad("too short"));
    }
    let (nonce, rest) = raw.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad("nonce"))?;
    let mut buf = rest.to_vec();
    let clear = key
        .open_in_place(nonce, Aad::from(serial_number.as_bytes()), &mut buf)
        .map_err(|_| bad("authentication failed"))?;
    Ok(clear.to_vec())
}

fn key_error(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "the MFA seal key cannot be read or created");
    ApiError::internal()
}

/// Reads the key file, creating it first if it does not exist.
fn load_or_create(path: &Path) -> std::io::Result<LessSafeKey> {
    let bytes = match std::fs::read_to_string(path) {
        Ok(text) => parse_key(&text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path)?,
        Err(e) => return Err(e),
    };
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
        .map_err(|_| std::io::Error::other("bad key length"))?;
    Ok(LessSafeKey::new(unbound))
}

fn parse_key(text: &str) -> std::io::Result<Vec<u8>> {
    let mut lines = text.lines();
    if lines.next() != Some(KEY_HEADER) {
        return Err(std::io::Error::other(format!(
            "{KEY_FILE} does not start with {KEY_HEADER:?}"
        )));
    }
    let key = lines
        .next()
        .and_then(|l| hex::decode(l.trim()).ok())
        .filter(|k| k.len() == 32)
        .ok_or_else(|| std::io::Error::other(format!("{KEY_FILE} does not hold a 256-bit key")))?;
    Ok(key)
}

fn create(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| std::io::Error::other("no system randomness"))?;
    let text = format!("{KEY_HEADER}\n{}\n", hex::encode(key));
    let tmp = path.with_extension(format!("tmp-{}", crate::app::random_secret(8)));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(key.to_vec())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            parse_key(&std::fs::read_to_string(path)?)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_made_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KEY_FILE);
        let a = create(&path).expect("create");
        let b = create(&path).expect("second create reads the first key");
        assert_eq!(a, b);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("ferry-seal-key v1\n"));
        assert_eq!(parse_key(&text).expect("parse"), a);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(parse_key("something else\n00\n").is_err());
    }
}
