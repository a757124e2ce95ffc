//! Ferry's data-access layer: every SQL statement the control plane runs lives here, behind resource-first
//! method names (`job_create`, `job_list`, `source_update_heartbeat`, …) so that `grep job_` finds every
//! operation on jobs.
//!
//! One layer serves both engines through sqlx's `Any` driver: SQLite (the embedded default) and PostgreSQL
//! (scale-out). The SQL is kept portable: `$n` placeholders, TEXT/BIGINT/DOUBLE PRECISION columns, booleans
//! as 0/1, times as unix seconds. Migrations live in `migrations/` and run on open.
//!
//! Invariants: state changes that must happen together (a snapshot commit, an activation) happen in one
//! transaction; status transitions are guarded in SQL (`WHERE status = …`) so that two workers cannot both
//! take the same step.

mod audit;
mod checkpoint;
mod console;
mod fleet;
mod group;
mod iam;
mod instances;
mod leases;
mod notify;
mod ops;
mod records;
mod tags;
pub mod testing;
mod validation;
mod workgroups;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

pub use audit::*;
pub use console::*;
pub use fleet::*;
pub use group::Appended;
pub use iam::*;
pub use instances::*;
pub use leases::*;
pub use notify::*;
pub use records::*;
pub use tags::*;
pub use validation::*;
pub use workgroups::*;

/// A data-access error.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "cannot open the database {url}: {source}. Check the --database option and that the path is writable"
    )]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "cannot upgrade the database schema: {0}. Restore the database from a backup or report a bug"
    )]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("stored record is corrupt ({what}): {detail}")]
    Corrupt { what: &'static str, detail: String },
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// Current time in unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The state store.
///
/// It holds three pools (docs/scale-out.md, "A large fleet"): `pool` for the writes that must be durable
/// (decision 4: durable before they return), `read` for every read that is not part of a write's
/// transaction, and `relaxed` for the writes whose loss on power failure is harmless because they are
/// sent again within seconds (heartbeat times, run progress).
///
/// On SQLite `pool` is one connection in `synchronous = NORMAL` and `relaxed` is the same pool: SQLite
/// has one write lock, so writes queue for the connection first come first served instead of polling
/// for the lock, and each holds it for microseconds. A durable write ends with `.durable(db)`
/// ([`Durable`]), which waits for a group fsync of the write-ahead log ([`group::WalSync`]); a relaxed
/// one does not. `read` has connections of its own, which never wait behind a writer in WAL mode. A
/// function holding a transaction on `pool` must never wait for another `pool` connection.
///
/// On PostgreSQL `read` is `pool`, its commits are durable when they return, and `relaxed` has
/// connections of its own with `synchronous_commit = off`.
#[derive(Clone)]
pub struct Db {
    pub(crate) pool: AnyPool,
    /// Reads (SQLite: connections of their own).
    pub(crate) read: AnyPool,
    /// SQLite: the connection that checkpoints the write-ahead log in the background
    /// ([`checkpoint::run`]). `None` on PostgreSQL.
    pub(crate) checkpointer: Option<AnyPool>,
    /// Writes that may be lost on power failure (SQLite: `pool`, without the log sync).
    pub(crate) relaxed: AnyPool,
    /// Group commit of nonces and audit events (`group.rs`), on `pool`.
    pub(crate) writer: group::GroupWriter,
    /// SQLite: the group fsync of the write-ahead log that makes `pool`'s commits durable
    /// ([`group::WalSync`]). `None` on PostgreSQL, whose commits are durable when they return.
    pub(crate) wal: Option<std::sync::Arc<group::WalSync>>,
    /// PostgreSQL: the URL, for the listening connection of [`Db::listen_source_changes`]. `None` on
    /// SQLite (one server: nothing to tell other replicas).
    pub(crate) postgres_url: Option<String>,
}

/// `.durable(db)` on a write to `pool`: the write's result once it is durable (see [`group::WalSync`];
/// on PostgreSQL at once). Every write and commit on `pool` ends with it; writes on `relaxed` do not.
pub(crate) trait Durable<T>:
    std::future::Future<Output = Result<T, sqlx::Error>> + Sized
{
    async fn durable(self, db: &Db) -> Result<T, sqlx::Error> {
        let out = self.await?;
        if let Some(wal) = &db.wal {
            wal.synced().await?;
        }
        Ok(out)
    }
}

impl<T, F: std::future::Future<Output = Result<T, sqlx::Error>>> Durable<T> for F {}

/// Connections of the SQLite pools: (writes, reads). See [`Db`].
const SQLITE_POOLS: (u32, u32) = (1, 6);

/// The database file of a `sqlite:` URL (`sqlite://path?opts`, `sqlite:path`); `None` for an in-memory
/// database.
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.contains(":memory:")).then(|| path.into())
}

/// A `sqlite:` URL that creates its database file when missing (`mode=rwc`) unless it names a mode of its
/// own: `--database sqlite:///var/lib/ferry/ferry.db` must work on a new volume as the default does.
fn sqlite_creating(url: &str) -> String {
    let has_mode = url
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("mode=")));
    if has_mode || url.contains(":memory:") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

async fn connect(url: &str, connections: u32, synchronous: &'static str) -> Result<AnyPool> {
    let sqlite = url.starts_with("sqlite:");
    AnyPoolOptions::new()
        .max_connections(connections)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if sqlite {
                    // WAL lets readers run beside the single writer; `synchronous` says when a commit is
                    // durable; busy_timeout turns writer contention into a short wait instead of an error.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute(format!("PRAGMA synchronous = {synchronous}").as_str())
                        .await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    // Checkpoints run beside the writer, never inside one of its commits
                    // (`checkpoint::run`); the log is truncated back to this size after each reset.
                    conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
                    conn.execute(
                        format!("PRAGMA journal_size_limit = {}", checkpoint::LOG_SIZE_LIMIT)
                            .as_str(),
                    )
                    .await?;
                } else if synchronous == "NORMAL" {
                    // PostgreSQL's counterpart of SQLite's NORMAL: the commit returns before its WAL is
                    // flushed; a crash may lose the last fraction of a second of these commits, never
                    // corrupts, and any later synchronous commit flushes them too.
                    conn.execute("SET synchronous_commit = off").await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .map_err(|source| DbError::Open {
            url: redact(url),
            source,
        })
}

impl Db {
    /// Opens (creating if needed) the SQLite database at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        Self::open(&format!("sqlite://{}", path.display())).await
    }

    /// Opens a database by URL (`sqlite://…` or `postgres://…`) and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self> {
        install_default_drivers();
        if !url.starts_with("sqlite:") {
            let pool = connect(url, 16, "FULL").await?;
            sqlx::migrate!("./migrations").run(&pool).await?;
            return Ok(Self {
                read: pool.clone(),
                checkpointer: None,
                relaxed: connect(url, 4, "NORMAL").await?,
                writer: group::GroupWriter::start(pool.clone(), None),
                wal: None,
                postgres_url: Some(url.to_owned()),
                pool,
            });
        }
        let url = &sqlite_creating(url);
        let (n, r) = SQLITE_POOLS;
        let pool = connect(url, n, "NORMAL").await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let wal = sqlite_path(url).map(|p| std::sync::Arc::new(group::WalSync::new(&p)));
        if let Some(w) = &wal
            && !w.log_exists()
        {
            // Open connections in WAL mode always have their log: a missing one means the sync would
            // go to the wrong file and commits would not be durable. Refuse rather than run so.
            return Err(DbError::Open {
                url: redact(url),
                source: sqlx::Error::Configuration(
                    format!(
                        "the write-ahead log {} is not where Ferry syncs it; use a plain \
                         sqlite://PATH URL or report this as a bug",
                        w.log_path().display()
                    )
                    .into(),
                ),
            });
        }
        let checkpointer = connect(url, 1, "NORMAL").await?;
        tokio::spawn(checkpoint::run(checkpointer.clone()));
        Ok(Self {
            read: connect(url, r, "NORMAL").await?,
            checkpointer: Some(checkpointer),
            relaxed: pool.clone(),
            writer: group::GroupWriter::start(pool.clone(), wal.clone()),
            wal,
            postgres_url: None,
            pool,
        })
    }

    pub async fn close(&self) {
        if let Some(c) = &self.checkpointer {
            c.close().await;
        }
        self.relaxed.close().await;
        self.read.close().await;
        self.pool.close().await;
    }
}

/// Hides a password in a database URL before it is shown to anyone.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sqlite_url_to_a_new_file_creates_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ferry.db");
        let db = Db::open(&format!("sqlite://{}", path.display()))
            .await
            .expect("--database sqlite://PATH opens a database that does not exist yet");
        assert!(path.is_file());
        db.close().await;
        // A mode of the URL's own is kept: read-only refuses to create.
        let ro = dir.path().join("other.db");
        assert!(
            Db::open(&format!("sqlite://{}?mode=ro", ro.display()))
                .await
                .is_err()
        );
        assert!(!ro.exists());
        assert_eq!(
            sqlite_creating("sqlite://a.db?cache=shared"),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
        assert_eq!(sqlite_creating("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn the_database_file_is_found_in_sqlite_urls() {
        use std::path::PathBuf;
        assert_eq!(
            sqlite_path("sqlite:///srv/ferry/ferry.db?mode=rwc"),
            Some(PathBuf::from("/srv/ferry/ferry.db"))
        );
        assert_eq!(
            sqlite_path("sqlite://ferry-data/ferry.db"),
            Some(PathBuf::from("ferry-data/ferry.db"))
        );
        assert_eq!(sqlite_path("sqlite:x.db"), Some(PathBuf::from("x.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://ferry:s3cret@db:5432/ferry"),
            "postgres://ferry:***@db:5432/ferry"
        );
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
