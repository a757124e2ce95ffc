//! SQLite's write-ahead log is checkpointed by a connection of its own, beside the writer.
//!
//! By default SQLite checkpoints inside the commit that grows the log past 1,000 pages: that commit copies
//! the log into the database file and fsyncs it while it holds the only writer connection
//! ([`crate::Db`]), so every write queued behind it (the API's nonces and audit records, heartbeats, run
//! progress) waits for a random-write burst and an fsync on a disk that a wave of uploads keeps busy.
//! Instead every SQLite connection has `wal_autocheckpoint = 0`, and [`run`] makes a `PASSIVE` checkpoint
//! every [`PERIOD`] on a connection of its own. A passive checkpoint takes no lock a writer needs: the
//! writer keeps appending while it copies, and starts the log over at its next commit once everything
//! was copied and no reader still uses the log. Durability is SQLite's own: the checkpoint syncs the log
//! before copying and the database after, before any frame can be overwritten (`group.rs`, `WalSync`).
//!
//! `journal_size_limit` ([`LOG_SIZE_LIMIT`]) truncates the log file back after a burst. The last
//! connection to close still checkpoints everything and deletes the log, as before.

use std::time::Duration;

use sqlx::AnyPool;

/// How often the log is checkpointed. A second of writes under the heaviest load measured (a wave of 200
/// runs beside 10,000 agents) is a few MiB of log.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// The size (bytes) the log file is truncated back to when it is started over.
pub(crate) const LOG_SIZE_LIMIT: u64 = 64 << 20;

/// Log frames left after a checkpoint above which the log is said to be growing (readers keep it from
/// being copied): 256 MiB of 4 KiB pages.
const BACKLOG_WARNING_FRAMES: i64 = 65_536;

/// Checkpoints the log of the database `pool` (one connection) is open on, every [`PERIOD`], until the
/// pool is closed ([`crate::Db::close`]). A failure is logged and tried again next period.
pub(crate) async fn run(pool: AnyPool) {
    let mut warned = false;
    loop {
        tokio::time::sleep(PERIOD).await;
        if pool.is_closed() {
            return;
        }
        let row: Result<(i64, i64, i64), sqlx::Error> =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&pool)
                .await;
        match row {
            Ok((_, log, copied)) => {
                let left = log - copied;
                if left > BACKLOG_WARNING_FRAMES && !warned {
                    tracing::warn!(
                        frames = log,
                        left,
                        "the SQLite write-ahead log cannot be checkpointed: a long-running read keeps \
                         it growing; look for a stuck `ferry` command or database tool holding it open"
                    );
                    warned = true;
                } else if left <= BACKLOG_WARNING_FRAMES {
                    warned = false;
                }
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => tracing::warn!(error = %e, "checkpointing the SQLite write-ahead log failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// Writes `mib` MiB of rows through the writer connection (well past SQLite's default checkpoint
    /// threshold of 1,000 pages), durably.
    async fn write_mib(db: &crate::Db, mib: usize) {
        use crate::Durable as _;
        sqlx::query("CREATE TABLE filler (b BLOB)")
            .execute(&db.pool)
            .await
            .expect("create");
        let row = vec![7u8; 64 << 10];
        for _ in 0..mib * 16 {
            sqlx::query("INSERT INTO filler (b) VALUES (?)")
                .bind(row.clone())
                .execute(&db.pool)
                .durable(db)
                .await
                .expect("insert");
        }
    }

    fn size(p: &Path) -> u64 {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    #[tokio::test]
    async fn a_commit_never_checkpoints_the_log_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.db");
        let db = crate::Db::open_sqlite(&path).await.expect("open");
        db.checkpointer.as_ref().expect("SQLite").close().await;
        let before = size(&path);
        write_mib(&db, 8).await;
        // Everything is in the log; the database file was not written by any of the commits.
        assert_eq!(size(&path), before);
        assert!(size(&dir.path().join("x.db-wal")) > 8 << 20);
        db.close().await;
    }

    #[tokio::test]
    async fn the_background_checkpoint_copies_the_log_into_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.db");
        let db = crate::Db::open_sqlite(&path).await.expect("open");
        write_mib(&db, 8).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while size(&path) < 8 << 20 {
            assert!(
                Instant::now() < deadline,
                "the log was not checkpointed within 30 s"
            );
            tokio::time::sleep(super::PERIOD / 4).await;
        }
        db.close().await;
    }
}
