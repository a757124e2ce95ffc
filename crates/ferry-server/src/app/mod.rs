//! The application layer: what the RPC API, the agent API and the workers share. Handlers parse and
//! authenticate at the edge and call in here; everything here speaks typed values and returns
//! `ferry_api::ApiError`, the one public error type, which the edges render.

pub mod activation;
pub mod jobs;

use ferry_api::ApiError;
use ferry_db::{AccessKeyRecord, Db};
use rand::Rng;
use sha2::{Digest as _, Sha256};

use crate::ServerError;

const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A random alphanumeric secret of `len` characters.
pub fn random_secret(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| SECRET_ALPHABET[rng.gen_range(0..SECRET_ALPHABET.len())] as char)
        .collect()
}

/// Hex SHA-256, for secrets the server only has to recognise (activation codes, agent keys).
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A 16-digit account ID, like Alibaba Cloud's.
pub fn new_account_id() -> String {
    let mut rng = rand::thread_rng();
    let first = rng.gen_range(1..10);
    let rest: String = (0..15)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect();
    format!("{first}{rest}")
}

/// The root account's access key, created on first start.
pub async fn ensure_root_key(db: &Db) -> Result<AccessKeyRecord, ServerError> {
    let wanted = format!("LTAI{}", random_secret(20));
    let id = db.meta_init("root_access_key_id", &wanted).await?;
    if let Some(k) = db.access_key_get(&id).await? {
        return Ok(k);
    }
    let key = AccessKeyRecord {
        id,
        secret: random_secret(30),
        user_name: None,
        status: "Active".to_owned(),
        created_at: ferry_db::now(),
    };
    db.access_key_create(&key).await?;
    Ok(key)
}

/// Maps a storage failure to the API's internal error, logging the cause (the caller never sees it).
pub fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "internal error");
    ApiError::internal()
}

/// Shorthand for `db_call.await.map_err(internal)`.
pub trait OrInternal<T> {
    fn or_internal(self) -> Result<T, ApiError>;
}

impl<T, E: std::fmt::Display> OrInternal<T> for Result<T, E> {
    fn or_internal(self) -> Result<T, ApiError> {
        self.map_err(internal)
    }
}
