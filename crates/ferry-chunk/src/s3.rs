//! [`S3Store`]: the [`ObjectStore`] on an S3-compatible service (AWS S3, MinIO, Ceph RGW, Alibaba OSS),
//! built on the `object_store` crate.
//!
//! A store is `s3://bucket/prefix`: every key `k` is the S3 object `<prefix>/k` in `bucket` (no prefix:
//! `k`). S3 gives the durability rule of [`crate::store`] by itself: a PUT is atomic and durable once it
//! has returned, so `put_deferred` is a plain `put` and `sync_deferred` has nothing to do. Large objects
//! ([`ObjectStore::put_file`]) go up as multipart uploads of [`PART_SIZE`] parts, which S3 also makes
//! visible atomically on completion (an aborted upload leaves no object).
//!
//! Many small objects are what S3 charges for, so chunks are not stored here one object each: the
//! server wraps this store in a packed [`crate::ChunkStore`] (`crate::pack`, `docs/formats.md`).
//!
//! Secrets: the secret key and session token are never printed ([`S3Config`]'s `Debug` redacts them).

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as OsPath;
use object_store::{ObjectStore as _, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt as _;

use crate::store::{ObjectStore, StoreError, validate_key, validate_prefix};

/// Part size of multipart uploads (16 MiB: S3 allows 10,000 parts, so objects up to 156 GiB).
pub const PART_SIZE: usize = 16 * 1024 * 1024;
/// Parts of one multipart upload in flight at once (memory: this many × [`PART_SIZE`]).
const PARTS_IN_FLIGHT: usize = 4;
/// The region signed into requests when none is configured (MinIO, Ceph and s3s accept any).
pub const DEFAULT_REGION: &str = "us-east-1";

/// Where and how to reach an S3-compatible bucket.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket (must exist: Ferry does not create buckets).
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
    /// The service's endpoint URL (`https://oss-cn-hangzhou.aliyuncs.com`, `http://127.0.0.1:9000`);
    /// `None` for AWS S3 in `region`.
    pub endpoint: Option<String>,
    /// The region requests are signed for.
    pub region: String,
    /// Access key ID; `None` with `secret_access_key` `None` sends unsigned requests.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// STS session token, with temporary credentials.
    pub session_token: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted ones
    /// (`bucket.endpoint/key`). `None`: path style with a custom endpoint (MinIO, Ceph, s3s), virtual
    /// hosted for AWS. Alibaba OSS needs virtual-hosted: `Some(false)`.
    pub path_style: Option<bool>,
    /// Allow `http://` endpoints that are not on loopback (loopback is always allowed: tests).
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

fn config_error(msg: impl Into<String>) -> StoreError {
    StoreError::Config(msg.into())
}

impl S3Config {
    /// Parses `s3://bucket[/prefix]` (region [`DEFAULT_REGION`], no endpoint, no credentials: set them
    /// next, e.g. with [`S3Config::with_env`]).
    ///
    /// # Errors
    /// [`StoreError::Config`] naming what is wrong with the URL.
    pub fn from_url(url: &str) -> Result<S3Config, StoreError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            config_error(format!(
                "--store {url:?} is not an S3 URL: use s3://BUCKET/PREFIX (or omit --store for the local data directory)"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !bucket_ok {
            return Err(config_error(format!(
                "{bucket:?} in --store {url:?} is not a valid bucket name: use 3-63 lower-case letters, digits, '-' and '.'"
            )));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() && validate_key(prefix).is_err() {
            return Err(config_error(format!(
                "the prefix {prefix:?} in --store {url:?} is not usable: use /-separated components of letters, digits, '.', '_' and '-' that do not start with '.'"
            )));
        }
        Ok(S3Config {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            region: DEFAULT_REGION.to_owned(),
            ..S3Config::default()
        })
    }

    /// Fills what is not set yet from the standard AWS variables: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL`, and `AWS_REGION` or
    /// `AWS_DEFAULT_REGION` (only while the region is the default).
    pub fn with_env(mut self) -> S3Config {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        self.access_key_id = self.access_key_id.or_else(|| var("AWS_ACCESS_KEY_ID"));
        self.secret_access_key = self
            .secret_access_key
            .or_else(|| var("AWS_SECRET_ACCESS_KEY"));
        self.session_token = self.session_token.or_else(|| var("AWS_SESSION_TOKEN"));
        self.endpoint = self.endpoint.or_else(|| var("AWS_ENDPOINT_URL"));
        if (self.region.is_empty() || self.region == DEFAULT_REGION)
            && let Some(r) = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION"))
        {
            self.region = r;
        }
        self
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// Whether requests use path style (see [`S3Config::path_style`]).
    pub fn uses_path_style(&self) -> bool {
        self.path_style.unwrap_or(self.endpoint.is_some())
    }

    /// Checks the configuration and says what to fix.
    ///
    /// # Errors
    /// [`StoreError::Config`].
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.region.is_empty() {
            return Err(config_error(
                "the S3 region is empty: pass --s3-region (any value, e.g. us-east-1, for MinIO, Ceph and s3s)",
            ));
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(config_error(
                    "S3 credentials are incomplete: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or --s3-access-key-id and --s3-secret-access-key)",
                ));
            }
            _ => {}
        }
        if let Some(ep) = &self.endpoint {
            let host = endpoint_host(ep).ok_or_else(|| {
                config_error(format!(
                    "--s3-endpoint {ep:?} is not a URL: use https://HOST[:PORT] (or http://127.0.0.1:PORT for a local test server)"
                ))
            })?;
            if ep.starts_with("http://") && !self.allow_http && !is_loopback_host(host) {
                return Err(config_error(format!(
                    "--s3-endpoint {ep:?} is plain HTTP on a non-loopback host: use https://, or pass --s3-allow-http if the network is trusted"
                )));
            }
            if !self.uses_path_style() && is_loopback_host(host) {
                return Err(config_error(format!(
                    "virtual-hosted requests cannot reach {ep:?} (the bucket becomes part of the host name): drop --s3-path-style=false"
                )));
            }
        }
        Ok(())
    }
}

/// The host of `http(s)://host[:port][/...]`, without brackets for IPv6.
fn endpoint_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An [`ObjectStore`] on an S3-compatible bucket. Cheap to clone.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<AmazonS3>,
    /// `prefix/` or empty.
    prefix: String,
    url: String,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("url", &self.url).finish()
    }
}

impl S3Store {
    /// Builds a client for `cfg`. Sends no request: call [`S3Store::check`] to find out whether the
    /// bucket is reachable.
    ///
    /// # Errors
    /// [`StoreError::Config`] if `cfg` does not validate or the client cannot be built.
    pub fn open(cfg: &S3Config) -> Result<S3Store, StoreError> {
        cfg.validate()?;
        let path_style = cfg.uses_path_style();
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_virtual_hosted_style_request(!path_style)
            .with_retry(object_store::RetryConfig {
                backoff: Default::default(),
                max_retries: 5,
                retry_timeout: Duration::from_secs(60),
            })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_allow_http(true)
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(300)),
            );
        if let Some(ep) = &cfg.endpoint {
            let ep = ep.trim_end_matches('/');
            // object_store expects the bucket inside a virtual-hosted endpoint; people pass the
            // service's endpoint, as every S3 client takes it.
            let ep = match (path_style, ep.split_once("://")) {
                (false, Some((scheme, host))) => format!("{scheme}://{}.{host}", cfg.bucket),
                _ => ep.to_owned(),
            };
            b = b.with_endpoint(ep);
        }
        if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(t) = &cfg.session_token {
                b = b.with_token(t);
            }
        } else {
            b = b.with_skip_signature(true);
        }
        let inner = b.build().map_err(|e| {
            config_error(format!(
                "cannot set up the S3 client for {}: {e}",
                cfg.url()
            ))
        })?;
        let prefix = if cfg.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", cfg.prefix)
        };
        Ok(S3Store {
            inner: Arc::new(inner),
            prefix,
            url: cfg.url(),
        })
    }

    /// Lists one key under the store's prefix: proves the endpoint answers, the bucket exists and the
    /// credentials may read it.
    ///
    /// # Errors
    /// [`StoreError::Remote`] with the cause.
    pub async fn check(&self) -> Result<(), StoreError> {
        let prefix = self.path("")?;
        let mut stream = self.inner.list(Some(&prefix));
        stream
            .try_next()
            .await
            .map(drop)
            .map_err(|e| self.remote("(the store's prefix)", e))
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> Result<OsPath, StoreError> {
        let full = format!("{}{key}", self.prefix);
        let full = full.trim_end_matches('/');
        OsPath::parse(full).map_err(|e| StoreError::Remote {
            key: key.to_owned(),
            store: self.url.clone(),
            source: Box::new(e),
        })
    }

    fn remote(&self, key: &str, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                key: key.to_owned(),
            },
            e => StoreError::Remote {
                key: key.to_owned(),
                store: self.url.clone(),
                source: Box::new(e),
            },
        }
    }

    fn io(&self, key: &str, e: std::io::Error) -> StoreError {
        StoreError::Io {
            key: key.to_owned(),
            source: e,
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        validate_key(key)?;
        let path = self.path(key)?;
        self.inner
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map(drop)
            .map_err(|e| self.remote(key, e))
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        validate_key(key)?;
        let path = self.path(key)?;
        let result = self
            .inner
            .get(&path)
            .await
            .map_err(|e| self.remote(key, e))?;
        result.bytes().await.map_err(|e| self.remote(key, e))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        validate_key(key)?;
        let path = self.path(key)?;
        let want = range.end.saturating_sub(range.start);
        let bytes = self
            .inner
            .get_range(&path, range)
            .await
            .map_err(|e| self.remote(key, e))?;
        if bytes.len() as u64 != want {
            // A short read means the object is shorter than its index says: damaged, never silently short.
            return Err(self.io(
                key,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("asked for {want} bytes, got {}", bytes.len()),
                ),
            ));
        }
        Ok(bytes)
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        validate_key(key)?;
        let path = self.path(key)?;
        match self.inner.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.remote(key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        let path = self.path(key)?;
        match self.inner.delete(&path).await {
            // S3 answers 204 for a missing key; some compatible servers answer 404.
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.remote(key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        validate_prefix(prefix)?;
        // object_store lists whole path segments; S3's (and this trait's) prefixes are plain strings, so
        // list the deepest complete directory and filter.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let base = self.path(dir)?;
        let base = (!base.as_ref().is_empty()).then_some(base);
        let metas: Vec<object_store::ObjectMeta> = self
            .inner
            .list(base.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.remote(prefix, e))?;
        let mut keys: Vec<String> = metas
            .into_iter()
            .filter_map(|m| {
                m.location
                    .as_ref()
                    .strip_prefix(self.prefix.as_str())
                    .map(str::to_owned)
            })
            .filter(|k| k.starts_with(prefix) && validate_key(k).is_ok())
            .collect();
        keys.sort();
        Ok(keys)
    }

    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }

    async fn put_file(&self, key: &str, src: &Path) -> Result<u64, StoreError> {
        validate_key(key)?;
        let path = self.path(key)?;
        let read_err = |e: std::io::Error| {
            self.io(
                key,
                std::io::Error::new(e.kind(), format!("reading {}: {e}", src.display())),
            )
        };
        let mut file = tokio::fs::File::open(src).await.map_err(read_err)?;
        let size = file.metadata().await.map_err(read_err)?.len();
        if size <= PART_SIZE as u64 {
            let bytes = tokio::fs::read(src).await.map_err(read_err)?;
            let n = bytes.len() as u64;
            self.put(key, Bytes::from(bytes)).await?;
            return Ok(n);
        }
        let upload = self
            .inner
            .put_multipart(&path)
            .await
            .map_err(|e| self.remote(key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; PART_SIZE];
        let mut total = 0u64;
        let result: Result<(), StoreError> = async {
            loop {
                let n = read_full(&mut file, &mut buf).await.map_err(read_err)?;
                if n == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.remote(key, e))?;
                writer.write(&buf[..n]);
                total += n as u64;
            }
        }
        .await;
        match result {
            Ok(()) => {
                writer.finish().await.map_err(|e| self.remote(key, e))?;
                Ok(total)
            }
            Err(e) => {
                // Uploaded parts cost storage until aborted; the error that matters is the first one.
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key, error = %abort, "cannot abort a failed multipart upload");
                }
                Err(e)
            }
        }
    }

    fn location(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_say_what_is_wrong() {
        let c = S3Config::from_url("s3://ferry-data/prod/objects/").expect("valid");
        assert_eq!(c.bucket, "ferry-data");
        assert_eq!(c.prefix, "prod/objects");
        assert_eq!(c.url(), "s3://ferry-data/prod/objects");
        let c = S3Config::from_url("s3://bucket").expect("valid");
        assert_eq!(c.prefix, "");
        assert_eq!(c.url(), "s3://bucket");
        for bad in [
            "bucket/x",
            "s3://",
            "s3://Bucket",
            "s3://b",
            "s3://ok-bucket/../x",
        ] {
            let e = S3Config::from_url(bad).expect_err(bad);
            assert!(matches!(e, StoreError::Config(_)), "{bad}: {e:?}");
        }
    }

    #[test]
    fn addressing_style_and_http_rules() {
        let mut c = S3Config::from_url("s3://bucket/p").expect("valid");
        assert!(!c.uses_path_style(), "AWS defaults to virtual-hosted");
        c.endpoint = Some("http://127.0.0.1:9000".into());
        assert!(
            c.uses_path_style(),
            "custom endpoints default to path style"
        );
        c.validate().expect("loopback http is fine");
        c.path_style = Some(false);
        assert!(c.validate().is_err(), "virtual-hosted cannot reach an IP");
        c.path_style = None;
        c.endpoint = Some("http://minio.example:9000".into());
        let e = c.validate().expect_err("plain http off loopback");
        assert!(e.to_string().contains("--s3-allow-http"), "{e}");
        c.allow_http = true;
        c.validate().expect("allowed explicitly");
        c.access_key_id = Some("AK".into());
        assert!(c.validate().is_err(), "a key without its secret");
        c.secret_access_key = Some("very-secret".into());
        c.validate().expect("complete credentials");
        assert!(!format!("{c:?}").contains("very-secret"));
        c.endpoint = Some("not a url".into());
        assert!(c.validate().is_err());
    }
}
