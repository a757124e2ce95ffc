//! Console passwords: the password policy and Argon2id hashing (PHC strings with a random salt, the
//! `argon2` crate's default cost: 19 MiB, 2 passes, 1 lane — OWASP's recommended minimum).
//!
//! Invariants: a password is never stored, logged or returned, only its hash; hashing and checking run on
//! the blocking pool (they take tens of milliseconds by design); checking a sign-in for a user without a
//! password costs the same as for one with a password, so that timing does not tell users apart.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use ferry_api::ApiError;

/// Shortest and longest accepted password, in characters.
pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 32;

/// Checks a new password against the policy: 8 to 32 characters, at least one letter and one digit, no
/// control characters. The error (`InvalidParameter.Password`, 400) says what is wrong, never the password.
pub fn check_policy(param: &str, password: &str) -> Result<(), ApiError> {
    let len = password.chars().count();
    let problem = if !(MIN_LEN..=MAX_LEN).contains(&len) {
        Some(format!(
            "must be {MIN_LEN} to {MAX_LEN} characters long (it is {len})"
        ))
    } else if !password.chars().any(|c| c.is_alphabetic()) {
        Some("must contain at least one letter".to_owned())
    } else if !password.chars().any(|c| c.is_ascii_digit()) {
        Some("must contain at least one digit".to_owned())
    } else if password.chars().any(char::is_control) {
        Some("must not contain control characters (tabs, line breaks…)".to_owned())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(ApiError::new(
            format!("InvalidParameter.{param}"),
            400,
            format!(
                "The {param} {why}. Use {MIN_LEN} to {MAX_LEN} characters with letters and digits."
            ),
        )),
    }
}

/// The Argon2id PHC string of `password` with a fresh random salt (runs on the blocking pool).
///
/// Errors: `InternalError` if hashing fails (it only fails on invalid parameters, i.e. a bug).
pub async fn hash(password: &str) -> Result<String, ApiError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|_| ApiError::internal())?
}

fn hash_blocking(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| {
            tracing::error!(error = %e, "password hashing failed");
            ApiError::internal()
        })
}

/// A hash no password matches (its password is random and forgotten), checked in place of a missing
/// one so that unknown users cost as much time as known ones.
static DECOY: LazyLock<String> = LazyLock::new(|| {
    let random = crate::app::random_secret(32);
    hash_blocking(&random).unwrap_or_default()
});

/// Whether `password` matches the PHC string `stored` (`None`: the user has no password; the decoy is
/// checked and `false` returned). A stored hash that does not parse never matches (and is logged).
pub async fn verify(password: &str, stored: Option<&str>) -> bool {
    let password = password.to_owned();
    let stored = stored.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let (phc, real) = match &stored {
            Some(s) => (s.as_str(), true),
            None => (DECOY.as_str(), false),
        };
        let parsed = match PasswordHash::new(phc) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "a stored password hash does not parse; the sign-in fails");
                return false;
            }
        };
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && real
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_says_what_is_wrong() {
        for (pw, why) in [
            ("short1", "8 to 32 characters long (it is 6)"),
            ("abcdefghijklmnopqrstuvwxyz0123456", "(it is 33)"),
            ("12345678", "at least one letter"),
            ("abcdefgh", "at least one digit"),
            ("abcd\t1234", "control characters"),
        ] {
            let e = check_policy("Password", pw).expect_err(pw);
            assert_eq!(e.code, "InvalidParameter.Password");
            assert_eq!(e.status, 400);
            assert!(e.message.contains(why), "{pw:?}: {}", e.message);
            assert!(
                !e.message.contains(pw),
                "the message must not echo the password"
            );
        }
        for ok in [
            "abcdefg1",
            "Pässwört 2026",
            "abcdefghijklmnopqrstuvwxyz012345",
        ] {
            check_policy("Password", ok).expect(ok);
        }
    }

    #[tokio::test]
    async fn hashes_verify_only_their_password() {
        let h = hash("correct horse 1").await.expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse 1", Some(&h)).await);
        assert!(!verify("correct horse 2", Some(&h)).await);
        assert!(!verify("correct horse 1", None).await);
        assert!(!verify("correct horse 1", Some("not a hash")).await);
        // Salted: the same password hashes differently each time.
        assert_ne!(h, hash("correct horse 1").await.expect("hash"));
    }
}
