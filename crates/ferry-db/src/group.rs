//! Group commit for the small durable writes every signed API call makes: its request nonce and its
//! audit event (docs/scale-out.md, "A large fleet"). On PostgreSQL only audit events come here: a nonce
//! is committed on its own there, without waiting for a WAL flush (`Db::nonce_use`).
//!
//! Each process keeps one writer task per [`Db`](crate::Db). Callers queue an operation and wait for its
//! answer; the task takes everything queued (up to [`MAX_BATCH`]) and writes it in one transaction, so a
//! burst of calls costs one commit (on SQLite one turn on the write connection plus a share of a log
//! fsync, [`WalSync`]; one WAL flush on PostgreSQL) and, for the audit trail, one lock of the chain's
//! head row instead of one each. While a batch commits, the next one gathers; on SQLite, while a batch's
//! log is synced, the next one commits. The guarantees of the single writes are kept: a nonce is used once
//! (its check is the commit), an audit record is on disk before the call it records is answered, and the
//! chain never forks (appends from other processes still take turns on the head row). A nonce is
//! answered at its commit, before the log sync: the call it admits is answered only once that call's
//! audit record is durable, and the sync that makes it so covers every commit before it, the nonce's
//! included.
//!
//! A batch that fails with a retryable error (busy database, lost race) is retried whole; any other error
//! is answered to every caller in it, and nothing of it was written.

use std::sync::Arc;

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use crate::audit::{AUDIT_GENESIS_HASH, AUDIT_HEAD_KEY, AuditAnchor, AuditIndex, AuditRecord};
use crate::{DbError, Result, now};

/// Operations written per transaction at most.
const MAX_BATCH: usize = 256;
/// Attempts of one batch before its callers get the error.
const BATCH_ATTEMPTS: u32 = 50;
/// Expired nonces are deleted at most this often (seconds); a stale row does not block a reuse meanwhile.
const NONCE_PURGE_EVERY: i64 = 60;

/// An audit record and the chain's head after the batch that wrote it: the anchor to keep outside the
/// database (one anchor write serves every call of the batch).
#[derive(Debug, Clone)]
pub struct Appended {
    pub record: AuditRecord,
    pub head: AuditAnchor,
}

pub(crate) enum Op {
    Nonce {
        nonce: String,
        expires_at: i64,
        reply: oneshot::Sender<Result<bool>>,
    },
    Audit {
        index: Box<AuditIndex>,
        body: String,
        reply: oneshot::Sender<Result<Appended>>,
    },
}

/// The sending side of a [`Db`](crate::Db)'s writer task.
#[derive(Clone)]
pub(crate) struct GroupWriter {
    queue: mpsc::UnboundedSender<Op>,
}

impl GroupWriter {
    /// Starts the writer task on the current Tokio runtime. It ends when the last sender is dropped.
    /// `wal`: the log sync that makes a commit on `pool` durable (SQLite).
    pub(crate) fn start(pool: AnyPool, wal: Option<Arc<WalSync>>) -> GroupWriter {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, wal, rx));
        GroupWriter { queue }
    }

    pub(crate) async fn nonce_use(&self, nonce: &str, expires_at: i64) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.submit(Op::Nonce {
            nonce: nonce.to_owned(),
            expires_at,
            reply,
        })?;
        answer.await.map_err(|_| stopped())?
    }

    pub(crate) async fn audit_append(&self, index: AuditIndex, body: String) -> Result<Appended> {
        let (reply, answer) = oneshot::channel();
        self.submit(Op::Audit {
            index: Box::new(index),
            body,
            reply,
        })?;
        answer.await.map_err(|_| stopped())?
    }

    fn submit(&self, op: Op) -> Result<()> {
        self.queue.send(op).map_err(|_| stopped())
    }
}

fn stopped() -> DbError {
    DbError::Sql(sqlx::Error::PoolClosed)
}

async fn run(pool: AnyPool, wal: Option<Arc<WalSync>>, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut purged_at = 0;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let purge = now() >= purged_at + NONCE_PURGE_EVERY;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            match write(&pool, &batch, purge).await {
                Err(DbError::Sql(e))
                    if attempt < BATCH_ATTEMPTS && crate::audit::is_retryable(&e) =>
                {
                    let pause = u64::from(attempt.min(10)) * 2 + u64::from(std::process::id() % 7);
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                other => break other,
            }
        };
        if purge && outcome.is_ok() {
            purged_at = now();
        }
        let ops = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        match (outcome, &wal) {
            (Ok(done), Some(wal)) => {
                // Committed, not yet durable. Nonces are answered now: the call they admit is answered
                // only after its audit record is durable, and syncing the log for that record makes every
                // earlier commit durable too. Audit appends wait for the sync, off this task, so that the
                // next batch commits meanwhile (its sync is then shared, `WalSync`).
                let (nonces, appends): (Vec<_>, Vec<_>) = ops
                    .into_iter()
                    .zip(done.answers)
                    .partition(|(op, _)| matches!(op, Op::Nonce { .. }));
                answer(nonces, Ok(done.head.clone()));
                if !appends.is_empty() {
                    let wal = wal.clone();
                    tokio::spawn(async move {
                        let synced = wal.synced().await.map_err(DbError::from);
                        answer(appends, synced.map(|()| done.head));
                    });
                }
            }
            (Ok(done), None) => {
                // PostgreSQL: the commit itself was durable.
                answer(ops.into_iter().zip(done.answers).collect(), Ok(done.head));
            }
            (Err(e), _) => fail(ops, &e),
        }
    }
}

/// A committed batch: the answers, in the batch's order, and the audit chain's new head if it appended.
struct Committed {
    answers: Vec<Answer>,
    head: Option<AuditAnchor>,
}

/// What a committed batch answers, in the batch's order.
enum Answer {
    Nonce(bool),
    Audit(Box<AuditRecord>),
}

/// Answers committed operations, each paired with its answer; `head` is the chain's head after the
/// batch (`Err` if the batch could not be made durable).
fn answer(done: Vec<(Op, Answer)>, head: Result<Option<AuditAnchor>>) {
    let head = match head {
        Ok(head) => head,
        Err(e) => return fail(done.into_iter().map(|(op, _)| op).collect(), &e),
    };
    for pair in done {
        match pair {
            (Op::Nonce { reply, .. }, Answer::Nonce(fresh)) => {
                let _ = reply.send(Ok(fresh));
            }
            (Op::Audit { reply, .. }, Answer::Audit(record)) => {
                let head = head.clone().expect("a batch that appends has a head");
                let _ = reply.send(Ok(Appended {
                    record: *record,
                    head,
                }));
            }
            _ => unreachable!("answers are made in the order of the operations"),
        }
    }
}

/// Answers every operation of a batch that failed with `e`.
fn fail(ops: Vec<Op>, e: &DbError) {
    // sqlx errors are not Clone: each caller gets the message.
    let message = e.to_string();
    for op in ops {
        let err = || {
            DbError::Sql(sqlx::Error::Protocol(format!(
                "batched write failed: {message}"
            )))
        };
        match op {
            Op::Nonce { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Op::Audit { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
        }
    }
}

/// Writes `ops` in one transaction and commits it; returns their answers and, when the batch appended
/// audit records, the new head. On SQLite the commit is not durable until the log is synced
/// ([`WalSync`]); on PostgreSQL it is.
async fn write(pool: &AnyPool, ops: &[Op], purge_nonces: bool) -> Result<Committed> {
    let t = now();
    let mut tx = pool.begin().await?;
    let appends = ops.iter().any(|op| matches!(op, Op::Audit { .. }));
    // The chain's position, read under the head row's lock when the batch appends. Taking that lock
    // first also makes SQLite take its write lock now, instead of failing a later write on a stale
    // snapshot.
    let mut chain: Option<(i64, String)> = None;
    if appends {
        sqlx::query("UPDATE meta SET value = value WHERE key = $1")
            .bind(AUDIT_HEAD_KEY)
            .execute(&mut *tx)
            .await?;
        let last: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        chain = Some(last.unwrap_or((0, AUDIT_GENESIS_HASH.to_owned())));
    }
    if purge_nonces {
        sqlx::query("DELETE FROM nonces WHERE expires_at < $1")
            .bind(t)
            .execute(&mut *tx)
            .await?;
    }
    let mut answers = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Nonce {
                nonce, expires_at, ..
            } => {
                let fresh = nonce_insert(&mut *tx, nonce, *expires_at, t).await?;
                answers.push(Answer::Nonce(fresh));
            }
            Op::Audit { index, body, .. } => {
                let (last_seq, last_hash) = chain.as_mut().expect("read above");
                let record =
                    crate::audit::insert_record(&mut tx, *last_seq + 1, last_hash, index, body)
                        .await?;
                *last_seq = record.seq;
                last_hash.clone_from(&record.hash);
                answers.push(Answer::Audit(Box::new(record)));
            }
        }
    }
    let head = match chain {
        Some((seq, hash)) if seq > 0 => {
            let anchor = AuditAnchor::new(seq, &hash);
            crate::audit::store_head(&mut tx, &anchor).await?;
            Some(anchor)
        }
        _ => None,
    };
    tx.commit().await?;
    Ok(Committed { answers, head })
}

/// Inserts a request nonce; `false` when a use of it that has not expired at `t` is already recorded. A
/// row left by an expired use (not purged yet) is taken over.
pub(crate) async fn nonce_insert<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    nonce: &str,
    expires_at: i64,
    t: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO nonces (nonce, expires_at) VALUES ($1, $2) \
         ON CONFLICT (nonce) DO UPDATE SET expires_at = excluded.expires_at \
         WHERE nonces.expires_at < $3",
    )
    .bind(nonce)
    .bind(expires_at)
    .bind(t)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Group commit for every durable write on SQLite (docs/scale-out.md, "A large fleet").
///
/// SQLite's writes take turns on one connection with `synchronous = NORMAL`: a commit appends its
/// frames to the write-ahead log and returns without an fsync, so the write lock is held for
/// microseconds instead of one fsync each. A durable write then waits in [`WalSync::synced`] until the
/// log file has been fsynced after its commit: the first waiter runs one `fdatasync` of the log for
/// everyone who committed before it started, the others wait for it and usually find their commit
/// covered. This is what `synchronous = FULL` does after each commit, done once for a group of commits.
/// It is safe because recovery replays every log frame up to the last valid commit frame, and SQLite
/// itself (in `NORMAL`) syncs the log before each checkpoint and the database after it, before the log
/// is reused.
///
/// The log is found by path and reopened whenever its inode changes (SQLite deletes it when the last
/// connection closes, after a checkpoint that synced everything).
pub(crate) struct WalSync {
    path: std::path::PathBuf,
    /// Commits noted so far (a ticket each).
    committed: std::sync::atomic::AtomicU64,
    /// Highest ticket known durable.
    synced: std::sync::atomic::AtomicU64,
    /// Held by the waiter running the fsync; the open log file.
    file: tokio::sync::Mutex<Option<std::fs::File>>,
    /// fsyncs run (for tests and measurements).
    syncs: std::sync::atomic::AtomicU64,
}

impl WalSync {
    /// For the database at `db_path` (its log is `<db_path>-wal`).
    pub(crate) fn new(db_path: &std::path::Path) -> WalSync {
        let mut wal = db_path.as_os_str().to_owned();
        wal.push("-wal");
        WalSync {
            path: wal.into(),
            committed: 0.into(),
            synced: 0.into(),
            file: tokio::sync::Mutex::new(None),
            syncs: 0.into(),
        }
    }

    /// The log file this syncs.
    pub(crate) fn log_path(&self) -> &std::path::Path {
        &self.path
    }

    /// Whether the log exists (it does while a connection in WAL mode is open).
    pub(crate) fn log_exists(&self) -> bool {
        self.path.exists()
    }

    /// Returns once every commit that returned before this call is durable.
    pub(crate) async fn synced(&self) -> Result<(), sqlx::Error> {
        use std::sync::atomic::Ordering::SeqCst;
        let ticket = self.committed.fetch_add(1, SeqCst) + 1;
        if self.synced.load(SeqCst) >= ticket {
            return Ok(());
        }
        let mut file = self.file.lock().await;
        if self.synced.load(SeqCst) >= ticket {
            // The waiter before us synced past our commit.
            return Ok(());
        }
        // Every ticket up to here was taken after its commit returned: this sync covers them all.
        let upto = self.committed.load(SeqCst);
        let path = self.path.clone();
        let handle = file.take();
        let (handle, result) = tokio::task::spawn_blocking(move || sync_log(&path, handle))
            .await
            .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?;
        *file = handle;
        self.syncs.fetch_add(1, SeqCst);
        result?;
        self.synced.fetch_max(upto, SeqCst);
        Ok(())
    }
}

/// `fdatasync` of the log at `path` through `handle`, reopened when the path names another file now.
/// Returns the handle to keep. A log that does not exist has nothing to sync (it is created by the
/// first write after the last connection closed, which checkpointed and synced everything before it).
fn sync_log(
    path: &std::path::Path,
    handle: Option<std::fs::File>,
) -> (Option<std::fs::File>, std::io::Result<()>) {
    use std::os::unix::fs::MetadataExt as _;
    let on_disk = match std::fs::metadata(path) {
        Ok(m) => (m.dev(), m.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (None, Ok(())),
        Err(e) => return (handle, Err(e)),
    };
    let same = handle
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .is_some_and(|m| (m.dev(), m.ino()) == on_disk);
    let file = if same {
        handle.expect("checked above")
    } else {
        match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (None, Ok(())),
            Err(e) => return (None, Err(e)),
        }
    };
    let result = file.sync_data();
    (Some(file), result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::SeqCst;

    #[tokio::test]
    async fn each_commit_is_synced_once_and_waiters_share_a_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("x.db");
        std::fs::write(dir.path().join("x.db-wal"), b"frames").expect("log");
        let wal = Arc::new(WalSync::new(&db));
        // One after the other: a sync each (a commit after a sync is not covered by it).
        wal.synced().await.expect("sync");
        wal.synced().await.expect("sync");
        assert_eq!(wal.syncs.load(SeqCst), 2);
        // Many at once: they wait for one another's sync instead of running one each.
        let waiters: Vec<_> = (0..64)
            .map(|_| {
                let wal = wal.clone();
                tokio::spawn(async move { wal.synced().await })
            })
            .collect();
        for w in waiters {
            w.await.expect("task").expect("sync");
        }
        let ran = wal.syncs.load(SeqCst) - 2;
        assert!(
            (1..64).contains(&ran),
            "64 concurrent waiters ran {ran} syncs"
        );
    }

    #[tokio::test]
    async fn a_nonce_is_answered_at_its_commit_and_an_audit_record_once_the_log_is_synced() {
        use std::time::Duration;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::Db::open_sqlite(&dir.path().join("x.db"))
            .await
            .expect("open");
        let wal = db.wal.clone().expect("SQLite syncs its log");
        // A log sync that does not finish (as on a disk busy with a wave's uploads).
        let stalled = wal.file.lock().await;
        let far = now() + 3600;
        let fresh = tokio::time::timeout(Duration::from_secs(10), db.nonce_use("n-1", far))
            .await
            .expect("the nonce is answered while the log sync is stalled")
            .expect("nonce");
        assert!(fresh);
        let event = serde_json::json!({
            "eventId": "E-1", "eventName": "DescribeSourceServers", "eventSource": "smc.aliyuncs.com",
            "eventTime": "2026-11-27T10:00:00Z", "eventType": "ApiCall", "eventVersion": "1",
            "eventRW": "Read", "serviceName": "Smc", "requestId": "R-1",
            "userIdentity": {"type": "root-account"},
        });
        let db2 = db.clone();
        let append = tokio::spawn(async move { db2.audit_append(&event).await });
        // The append is committed (readers see it) but not answered.
        let committed = async {
            loop {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
                    .fetch_one(&db.read)
                    .await
                    .expect("count");
                if n == 1 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), committed)
            .await
            .expect("the append commits while the log sync is stalled");
        // A later batch is not held up by the earlier one's sync.
        let reuse = tokio::time::timeout(Duration::from_secs(10), db.nonce_use("n-1", far))
            .await
            .expect("a later batch commits while an earlier one waits for its sync")
            .expect("nonce");
        assert!(!reuse, "a used nonce is refused");
        assert!(
            !append.is_finished(),
            "an audit record is answered before the log is synced"
        );
        let synced_before = wal.syncs.load(SeqCst);
        drop(stalled);
        let record = tokio::time::timeout(Duration::from_secs(10), append)
            .await
            .expect("answered once the log is synced")
            .expect("task")
            .expect("append");
        assert_eq!(record.seq, 1);
        assert!(wal.syncs.load(SeqCst) > synced_before);
    }

    #[test]
    fn a_replaced_log_is_reopened_and_a_missing_one_needs_nothing() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.db-wal");
        assert!(matches!(sync_log(&path, None), (None, Ok(()))));
        std::fs::write(&path, b"one").expect("log");
        let (handle, r) = sync_log(&path, None);
        r.expect("sync");
        let first = handle.expect("opened");
        // SQLite deleted the log (last connection closed) and a later write made a new one.
        std::fs::remove_file(&path).expect("rm");
        std::fs::write(&path, b"two").expect("log");
        let (handle, r) = sync_log(&path, Some(first));
        r.expect("sync");
        let ino = handle.expect("reopened").metadata().expect("stat").ino();
        assert_eq!(ino, std::fs::metadata(&path).expect("stat").ino());
    }
}
