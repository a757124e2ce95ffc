//! The object-store interface and its local-directory implementation.
//!
//! Everything Ferry keeps as an object (chunks, indexes, images, console logs) goes through
//! [`ObjectStore`], so that the S3-compatible implementation ([`crate::S3Store`], on the `object_store`
//! crate) can replace [`LocalStore`] without callers changing. Keys are `/`-separated strings of `[A-Za-z0-9._-]` components
//! that do not start with `.`; the interface never exposes file paths except through
//! [`ObjectStore::local_path`], which remote stores answer with `None`.
//!
//! Durability rule: a successful `put` means the object is complete and survives a crash; a crash during
//! `put` leaves either the old object or the new one, never a mix. [`durable_write`] is the one helper
//! that implements this (temp file in the same directory → fsync → rename → fsync directory) and other
//! crates reuse it for anything that must survive a crash.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

/// Why an object-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object has this key.
    #[error("object {key} does not exist")]
    NotFound {
        /// The key asked for.
        key: String,
    },
    /// The storage is full (ENOSPC), over quota (EDQUOT), or its free space would fall below the
    /// reserve kept for the database and logs ([`LocalStore::with_reserve`]). Nothing was half-written.
    #[error(
        "no space left in the server's data directory {} (it is full, or down to the reserve kept for the database and logs, --reserve-mib): free space or grow the volume; the run resumes by itself",
        path.display()
    )]
    NoSpace {
        /// The store's root directory.
        path: PathBuf,
    },
    /// The key is not a valid object key (a bug in the caller, or hostile input reaching it).
    #[error(
        "{key:?} is not a valid object key: use /-separated components of letters, digits, '.', '_' and '-' that do not start with '.'"
    )]
    InvalidKey {
        /// The rejected key, cut to 200 characters.
        key: String,
    },
    /// The store's directory could not be created or opened.
    #[error(
        "cannot open the object store at {}: check that the directory exists and is writable by the server",
        dir.display()
    )]
    Open {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A remote store (S3) refused or failed a request, after the client's retries.
    #[error(
        "object store request on {key} at {store} failed: check the endpoint, the bucket, the credentials and the network between the server and the store"
    )]
    Remote {
        /// The key (or prefix) being accessed.
        key: String,
        /// The store, as `s3://bucket/prefix`.
        store: String,
        /// What the client reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store's configuration is unusable (the message says what to change).
    #[error("object store configuration: {0}")]
    Config(String),
    /// Any other I/O error on an object.
    #[error(
        "I/O error on object {key}: check the server's data directory (disk health, permissions)"
    )]
    Io {
        /// The key being accessed (or the prefix, for `list`).
        key: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// A flat key → bytes store. Implementations must be safe to share between tasks and replicas.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Stores `bytes` under `key`, replacing any previous object, durably and atomically (see the module
    /// doc). Errors: `InvalidKey`, `NoSpace`, `Io`.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError>;
    /// The whole object. Errors: `InvalidKey`, `NotFound`, `Io`.
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    /// Whether an object exists. Errors: `InvalidKey`, `Io`.
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// Removes an object. Idempotent: deleting a missing key succeeds, so cleanup can be retried.
    /// Errors: `InvalidKey`, `Io`.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// All keys starting with `prefix` (a plain string prefix, like S3's), sorted. Errors: `InvalidKey`
    /// (for a prefix with characters no key can have), `Io`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// The file holding `key` when the store is a local directory (lets image tools read objects in
    /// place), `None` for remote stores or invalid keys. The file may not exist.
    fn local_path(&self, key: &str) -> Option<PathBuf>;

    /// Bytes `range` of an object. Errors: `InvalidKey`, `NotFound`, `Io`/`Remote` (a range past the
    /// object's end included).
    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes, StoreError>;

    /// Stores the local file `path` under `key` without holding it in memory (image exports: many GiB),
    /// durably and atomically like [`ObjectStore::put`]; remote stores use a multipart upload. Returns
    /// the number of bytes stored. Errors: `InvalidKey`, `NoSpace`, `Io` (reading `path` included),
    /// `Remote`.
    async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError>;

    /// Where `key` lives, for people (a file path or an `s3://` URL). Never fails: an invalid key is shown
    /// as it is.
    fn location(&self, key: &str) -> String;

    /// Like [`ObjectStore::put`], except that the object's *name* may become durable only at the next
    /// [`ObjectStore::sync_deferred`]: after a crash before that, the object may be missing, but it is
    /// never incomplete. For many small writes that are committed together later (chunk uploads, committed
    /// by their index), this saves one directory sync per object.
    async fn put_deferred(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.put(key, bytes).await
    }

    /// Makes every earlier [`ObjectStore::put_deferred`] durable.
    async fn sync_deferred(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

const MAX_KEY_LEN: usize = 1024;

fn invalid_key(key: &str) -> StoreError {
    StoreError::InvalidKey {
        key: key.chars().take(200).collect(),
    }
}

fn key_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks a full key (see the module doc for the rule).
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.') && c.chars().all(key_char_ok));
    if ok { Ok(()) } else { Err(invalid_key(key)) }
}

/// Checks a `list` prefix: like a key, except that it may be empty and its last component may be empty
/// or partial.
pub fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    let ok = prefix.len() <= MAX_KEY_LEN
        && prefix
            .split('/')
            .all(|c| !c.starts_with('.') && c.chars().all(key_char_ok));
    if ok { Ok(()) } else { Err(invalid_key(prefix)) }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates `dir` and any missing ancestors, fsyncing each new directory's parent so the new entries
/// themselves survive a crash.
fn create_dirs_durably(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        // Another writer created it concurrently: fine, they sync it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Writes `bytes` to `path` so that after it returns the file is complete and survives a crash, and a
/// crash at any point leaves either the previous file or the new one: writes a temp file in the same
/// directory, fsyncs it, renames it over `path`, then fsyncs the directory. Creates missing parent
/// directories (durably). Blocking: call it from `spawn_blocking` in async code.
///
/// Temp files are named `.<file name>.<pid>.<n>.tmp`; on error the temp file is removed.
///
/// # Errors
/// The underlying I/O error (ENOSPC and EDQUOT included; callers map those, see [`is_no_space`]).
pub fn durable_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file(path, bytes, true, 0o644)
}

/// [`durable_write`] for secrets (keys, credentials): the file is readable by its owner only (mode 0600)
/// from the moment it exists.
pub fn durable_write_secret(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file(path, bytes, true, 0o600)
}

/// [`durable_write`] without the final directory sync: the file is complete whenever it is visible, but
/// its name is durable only once the caller syncs its directory (`path.parent()`).
pub fn durable_write_deferred(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file(path, bytes, false, 0o644)
}

fn write_file(path: &Path, bytes: &[u8], sync_dir: bool, mode: u32) -> io::Result<()> {
    write_durably(path, sync_dir, mode, |f| f.write_all(bytes))
}

/// The durability rule in one place: `fill` writes a new temp file beside `path` (created with `mode`),
/// which is fsynced and renamed over `path`; with `sync_dir` the directory is fsynced too. On error the
/// temp file is removed and `path` is untouched.
fn write_durably<T>(
    path: &Path,
    sync_dir: bool,
    mode: u32,
    fill: impl FnOnce(&mut std::fs::File) -> io::Result<T>,
) -> io::Result<T> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    create_dirs_durably(parent)?;
    let tmp = parent.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        let out = fill(&mut f)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if sync_dir {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(out)
    })();
    if result.is_err() {
        // Best effort: the temp file may not exist (open failed) or already be renamed.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// True for "disk full" and "quota exceeded" errors.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Bytes an unprivileged writer may still write on the filesystem holding `path`.
///
/// # Errors
/// The `statvfs` error (the path does not exist, …).
pub fn free_space(path: &Path) -> io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    // The field types are u64 on 64-bit Linux but narrower elsewhere.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (
        u64::from(st.blocks_available()),
        u64::from(st.fragment_size()),
    );
    Ok(blocks.saturating_mul(size))
}

/// Checks that writing `bytes` more under `dir` leaves at least `reserve` bytes free, and answers
/// [`StoreError::NoSpace`] otherwise. Bulk data (chunks, images, exports) stops at this watermark so
/// that the database, the audit trail and the logs on the same volume can still be written: a full
/// disk then pauses the work and the API keeps answering, instead of every call failing because the
/// audit record of the call cannot be stored. A `reserve` of 0 disables the check.
///
/// # Errors
/// `NoSpace` below the watermark; `Io` if the free space cannot be read.
pub fn check_reserve(dir: &Path, bytes: u64, reserve: u64) -> Result<(), StoreError> {
    if reserve == 0 {
        return Ok(());
    }
    let free = free_space(dir).map_err(|source| StoreError::Io {
        key: dir.display().to_string(),
        source,
    })?;
    if free < bytes.saturating_add(reserve) {
        return Err(StoreError::NoSpace {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// An [`ObjectStore`] on a local directory: key `a/b/c` is the file `<dir>/a/b/c`. Writes go through
/// [`durable_write`]; all file I/O runs on tokio's blocking pool.
///
/// Temp files left by a crash mid-put are invisible to `list`; [`LocalStore::sweep_temp_files`] removes
/// them (the server runs it at start).
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// Directories holding names written by `put_deferred` and not yet synced.
    unsynced_dirs: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<PathBuf>>>,
    /// Free bytes a put must leave on the volume ([`check_reserve`]); 0 = until ENOSPC.
    reserve: u64,
}

impl LocalStore {
    /// Opens (creating if needed) a store rooted at `dir`.
    ///
    /// # Errors
    /// [`StoreError::Open`] if the directory cannot be created or is not a directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<LocalStore, StoreError> {
        let dir = dir.as_ref();
        let open_err = |source| StoreError::Open {
            dir: dir.to_path_buf(),
            source,
        };
        create_dirs_durably(dir).map_err(open_err)?;
        let root = dir.canonicalize().map_err(open_err)?;
        if !root.is_dir() {
            return Err(open_err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        // Names a previous process wrote with `put_deferred` may not be durable yet, and this process
        // does not know which: flush the whole filesystem once, so that every object visible now is.
        {
            use std::os::fd::AsRawFd as _;
            let fd = std::fs::File::open(&root).map_err(open_err)?;
            nix::unistd::syncfs(fd.as_raw_fd()).map_err(|e| open_err(io::Error::from(e)))?;
        }
        Ok(LocalStore {
            root,
            unsynced_dirs: Default::default(),
            reserve: 0,
        })
    }

    /// Keeps `bytes` free on the store's volume: a put that would leave less answers
    /// [`StoreError::NoSpace`] before writing anything (see [`check_reserve`]).
    pub fn with_reserve(mut self, bytes: u64) -> LocalStore {
        self.reserve = bytes;
        self
    }

    /// Removes the temp files of writes that a crashed process left behind (`.<name>.<pid>.<n>.tmp`,
    /// last modified before `before`, e.g. this process's start: no write of ours can be that old).
    /// Returns how many were removed. Blocking: it walks the whole store.
    ///
    /// # Errors
    /// The first I/O error other than a file vanishing under it.
    pub fn sweep_temp_files(&self, before: std::time::SystemTime) -> io::Result<usize> {
        fn sweep(dir: &Path, before: std::time::SystemTime, removed: &mut usize) -> io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let path = entry.path();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    sweep(&path, before, removed)?;
                } else if name.starts_with('.') && name.ends_with(".tmp") {
                    let stale = entry.metadata()?.modified()? < before;
                    if stale {
                        match std::fs::remove_file(&path) {
                            Ok(()) => *removed += 1,
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            Ok(())
        }
        let mut removed = 0;
        sweep(&self.root, before, &mut removed)?;
        Ok(removed)
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn map_err(&self, key: &str, e: io::Error) -> StoreError {
        if is_no_space(&e) {
            StoreError::NoSpace {
                path: self.root.clone(),
            }
        } else if e.kind() == io::ErrorKind::NotFound {
            StoreError::NotFound {
                key: key.to_string(),
            }
        } else {
            StoreError::Io {
                key: key.to_string(),
                source: e,
            }
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        key: &str,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        match crate::bulk::blocking(f).await {
            Ok(r) => r.map_err(|e| self.map_err(key, e)),
            Err(join) => Err(StoreError::Io {
                key: key.to_string(),
                source: io::Error::other(join),
            }),
        }
    }
}

fn walk(dir: &Path, rel: &str, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        // Dot files are durable_write's temp files (or not ours): never keys.
        if name.starts_with('.') {
            continue;
        }
        let key = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if entry.file_type()?.is_dir() {
            // Only descend where keys below could still match the prefix.
            let as_dir = format!("{key}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(&entry.path(), &key, prefix, out)?;
            }
        } else if key.starts_with(prefix) {
            out.push(key);
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        check_reserve(&self.root, bytes.len() as u64, self.reserve)?;
        self.blocking(key, move || durable_write(&path, &bytes))
            .await
    }

    async fn put_deferred(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        check_reserve(&self.root, bytes.len() as u64, self.reserve)?;
        let dir = path.parent().map(Path::to_path_buf);
        self.blocking(key, move || durable_write_deferred(&path, &bytes))
            .await?;
        // Noted once written, not before: a sync running meanwhile (another upload's commit) must not
        // open a directory this write has not created yet. A put that has returned is always noted.
        if let (Some(dir), Ok(mut dirs)) = (dir, self.unsynced_dirs.lock()) {
            dirs.insert(dir);
        }
        Ok(())
    }

    async fn sync_deferred(&self) -> Result<(), StoreError> {
        let dirs: Vec<PathBuf> = match self.unsynced_dirs.lock() {
            Ok(mut d) => d.drain().collect(),
            Err(_) => Vec::new(),
        };
        let pending = dirs.clone();
        let result = self
            .blocking("(pending names)", move || {
                for d in &dirs {
                    std::fs::File::open(d)?.sync_all()?;
                }
                Ok(())
            })
            .await;
        if result.is_err() {
            // Not synced: keep them for the next attempt.
            if let Ok(mut d) = self.unsynced_dirs.lock() {
                d.extend(pending);
            }
        }
        result
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path_of(key)?;
        self.blocking(key, move || std::fs::read(&path).map(Bytes::from))
            .await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.path_of(key)?;
        self.blocking(key, move || match std::fs::metadata(&path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        self.blocking(key, move || match std::fs::remove_file(&path) {
            Ok(()) => {
                // Make the removal durable too, so a deleted object does not come back after a crash.
                match path.parent() {
                    Some(p) => std::fs::File::open(p)?.sync_all(),
                    None => Ok(()),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        validate_prefix(prefix)?;
        let root = self.root.clone();
        let p = prefix.to_string();
        let mut keys = self
            .blocking(prefix, move || {
                // Start at the deepest directory the prefix names fully, to avoid walking the store.
                let (dir, rel) = match p.rfind('/') {
                    Some(i) => (root.join(&p[..i]), p[..i].to_string()),
                    None => (root, String::new()),
                };
                let mut out = Vec::new();
                walk(&dir, &rel, &p, &mut out)?;
                Ok(out)
            })
            .await?;
        keys.sort();
        Ok(keys)
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path_of(key).ok()
    }

    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes, StoreError> {
        use std::io::{Read as _, Seek as _};
        let path = self.path_of(key)?;
        self.blocking(key, move || {
            let len = usize::try_from(range.end.saturating_sub(range.start))
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "range too large"))?;
            let mut f = std::fs::File::open(&path)?;
            f.seek(io::SeekFrom::Start(range.start))?;
            let mut buf = vec![0u8; len];
            f.read_exact(&mut buf)?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn put_file(&self, key: &str, src: &Path) -> Result<u64, StoreError> {
        let path = self.path_of(key)?;
        let len = std::fs::metadata(src).map(|m| m.len()).unwrap_or(0);
        check_reserve(&self.root, len, self.reserve)?;
        let src = src.to_path_buf();
        self.blocking(key, move || durable_copy(&src, &path)).await
    }

    fn location(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }
}

/// [`durable_write`] of a file's content, streamed: copies `src` to a temp file beside `dst`, fsyncs it,
/// renames it over `dst` and fsyncs the directory. Returns the bytes copied.
fn durable_copy(src: &Path, dst: &Path) -> io::Result<u64> {
    let mut from = std::fs::File::open(src)?;
    write_durably(dst, true, 0o644, |to| io::copy(&mut from, to))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports failure
mod tests {
    use super::*;

    #[test]
    fn key_rules() {
        for good in ["a", "chunks/ab/cd/abcd", "indexes/s-1.fidx", "A_b-c.d"] {
            validate_key(good).unwrap();
        }
        for bad in [
            "", "/a", "a/", "a//b", "../a", "a/../b", ".hidden", "a/.tmp", "a b", "a\\b", "ä",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
        validate_prefix("").unwrap();
        validate_prefix("chunks/").unwrap();
        validate_prefix("chunks/a").unwrap();
        assert!(validate_prefix("../").is_err());
    }

    #[tokio::test]
    async fn put_get_exists_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("objects")).unwrap();
        assert!(!store.exists("a/b").await.unwrap());
        assert!(matches!(
            store.get("a/b").await,
            Err(StoreError::NotFound { .. })
        ));
        store.put("a/b", Bytes::from_static(b"one")).await.unwrap();
        store.put("a/c", Bytes::from_static(b"two")).await.unwrap();
        store.put("ab", Bytes::from_static(b"three")).await.unwrap();
        store
            .put("x/y/z", Bytes::from_static(b"four"))
            .await
            .unwrap();
        assert!(store.exists("a/b").await.unwrap());
        assert!(
            !store.exists("a").await.unwrap(),
            "a directory is not an object"
        );
        assert_eq!(&store.get("a/b").await.unwrap()[..], b"one");
        // Overwrite replaces.
        store.put("a/b", Bytes::from_static(b"uno")).await.unwrap();
        assert_eq!(&store.get("a/b").await.unwrap()[..], b"uno");

        assert_eq!(store.list("").await.unwrap(), ["a/b", "a/c", "ab", "x/y/z"]);
        assert_eq!(store.list("a").await.unwrap(), ["a/b", "a/c", "ab"]);
        assert_eq!(store.list("a/").await.unwrap(), ["a/b", "a/c"]);
        assert_eq!(store.list("x/y/").await.unwrap(), ["x/y/z"]);
        assert!(store.list("nope/").await.unwrap().is_empty());

        let path = store.local_path("x/y/z").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"four");
        assert!(store.local_path("../etc/passwd").is_none());

        store.delete("a/b").await.unwrap();
        store.delete("a/b").await.unwrap();
        assert!(!store.exists("a/b").await.unwrap());
        assert_eq!(store.list("a/").await.unwrap(), ["a/c"]);

        assert!(matches!(
            store.put("../evil", Bytes::new()).await,
            Err(StoreError::InvalidKey { .. })
        ));
        // No temp files left behind.
        let leftovers: Vec<_> = std::fs::read_dir(store.root().join("a"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[tokio::test]
    async fn list_skips_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        store.put("k/v", Bytes::from_static(b"x")).await.unwrap();
        std::fs::write(store.root().join("k/.v.1.1.tmp"), b"partial").unwrap();
        assert_eq!(store.list("k/").await.unwrap(), ["k/v"]);
    }

    #[test]
    fn durable_write_creates_parents_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("deep/er/file");
        durable_write(&p, b"first").unwrap();
        durable_write(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"]);
    }

    #[test]
    fn open_rejects_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"").unwrap();
        assert!(matches!(LocalStore::open(&f), Err(StoreError::Open { .. })));
    }

    #[test]
    fn no_space_message_is_actionable() {
        let e = StoreError::NoSpace {
            path: PathBuf::from("/srv/ferry-data/objects"),
        };
        assert_eq!(
            e.to_string(),
            "no space left in the server's data directory /srv/ferry-data/objects (it is full, or down to the reserve kept for the database and logs, --reserve-mib): free space or grow the volume; the run resumes by itself"
        );
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(!is_no_space(&io::Error::from_raw_os_error(libc::EIO)));
    }
}

#[cfg(test)]
mod deferred_tests {
    use super::*;

    #[tokio::test]
    async fn deferred_names_are_tracked_until_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path()).expect("open");
        store
            .put_deferred("chunks/ab/cd/x", Bytes::from_static(b"data"))
            .await
            .expect("put");
        // Visible and complete at once; its directory is pending a sync.
        assert_eq!(
            &store.get("chunks/ab/cd/x").await.expect("get")[..],
            b"data"
        );
        let pending = |s: &LocalStore| {
            s.unsynced_dirs
                .lock()
                .map(|d| d.len())
                .unwrap_or(usize::MAX)
        };
        assert_eq!(pending(&store), 1);
        store.sync_deferred().await.expect("sync");
        assert_eq!(pending(&store), 0);
        // A plain put is durable by itself and leaves nothing pending.
        store
            .put("indexes/y", Bytes::from_static(b"i"))
            .await
            .expect("put");
        assert_eq!(pending(&store), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_beside_puts_into_new_directories_never_fails() {
        // Found under load: a sync running while another put was still creating its directory tried to
        // open that directory and failed the other upload's commit with "object does not exist".
        let dir = tempfile::tempdir().expect("tempdir");
        let store = std::sync::Arc::new(LocalStore::open(dir.path()).expect("open"));
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..400u32 {
                    let key = format!("chunks/{:02x}/{:02x}/c{i}", i % 256, i / 256);
                    store
                        .put_deferred(&key, Bytes::from_static(b"data"))
                        .await
                        .expect("put");
                }
            })
        };
        while !writer.is_finished() {
            store.sync_deferred().await.expect("a sync beside puts");
        }
        writer.await.expect("writer");
        store.sync_deferred().await.expect("final sync");
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[test]
    fn only_stale_temp_files_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path()).expect("open");
        let sub = dir.path().join("chunks/ab");
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join(".abc.1.0.tmp"), b"half").expect("write");
        std::fs::write(sub.join("abc"), b"whole").expect("write");
        // Nothing is older than a moment in the past.
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        assert_eq!(store.sweep_temp_files(past).expect("sweep"), 0);
        let future = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(store.sweep_temp_files(future).expect("sweep"), 1);
        assert!(!sub.join(".abc.1.0.tmp").exists());
        assert!(sub.join("abc").exists(), "a real object was removed");
    }
}
