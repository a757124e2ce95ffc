//! Queries shaped for a large fleet (docs/scale-out.md, "A large fleet"): ten thousand agents heart-beating
//! and hundreds of jobs in flight must not make any periodic pass or any page read cost one query per row.
//!
//! - Heartbeats are kept in memory by the server and written here in batches, one transaction per flush
//!   ([`Db::source_heartbeats_flush`]); a flushed time never moves backwards.
//! - The offline detector reads only sources whose flushed heartbeat is older than its cut-off
//!   ([`Db::source_list_silent`], index `sources_heartbeat`, migration 0011) and marks each offline with a
//!   guarded statement ([`Db::source_mark_offline`]), so a beat flushed meanwhile wins.
//! - The scheduler reads only the jobs that have something due ([`Db::job_list_due`]) and those holding more
//!   images than they keep ([`Db::job_list_over_image_limit`]).
//! - A Describe page loads its jobs' runs and settings with one query each ([`Db::run_list_for_jobs`],
//!   [`Db::job_settings_for_jobs`]).

use std::collections::HashMap;

use crate::Durable as _;
use crate::records::SOURCE_SELECT;
use crate::tags::placeholders;
use crate::{Db, JobRecord, JobSettingsRecord, Result, RunRecord, SourceRecord};

/// One agent's last heartbeat, as the server kept it in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatSeen {
    pub source_id: String,
    /// Unix seconds of the beat.
    pub at: i64,
    pub agent_version: String,
}

/// Heartbeats written per statement by [`Db::source_heartbeats_flush`] (3 parameters each, far below
/// SQLite's and PostgreSQL's limits).
pub const HEARTBEATS_PER_STATEMENT: usize = 250;

impl Db {
    /// Writes a batch of heartbeats, [`HEARTBEATS_PER_STATEMENT`] per statement, each statement a commit of
    /// its own. A source's stored time only moves forward (another replica may have flushed a later beat
    /// of the same agent); sources deleted meanwhile are skipped.
    ///
    /// One statement per chunk rather than one per beat in one transaction: on SQLite every write takes
    /// turns on the one writer connection, and one single-row statement per beat (1,700 for 5 s of
    /// 10,000 agents' beats) held it for the whole transaction while each API call's nonce and audit
    /// record waited behind it (990 beats: 81-95 ms in a debug build beside a busy build; chunked, 10-22 ms
    /// per statement, the queued writes going in between). Beats are independent, so nothing needs the
    /// whole flush to be atomic: a failure keeps the beats for the next flush, and re-writing a chunk
    /// already written changes nothing.
    pub async fn source_heartbeats_flush(&self, beats: &[HeartbeatSeen]) -> Result<()> {
        for chunk in beats.chunks(HEARTBEATS_PER_STATEMENT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                .collect();
            // VALUES names its columns column1, column2, column3 on both engines.
            let sql = format!(
                "UPDATE source_beats SET \
                 heartbeat_at = CASE WHEN source_beats.heartbeat_at < v.column2 THEN v.column2 \
                 ELSE source_beats.heartbeat_at END, \
                 agent_version = v.column3 \
                 FROM (VALUES {}) AS v WHERE source_beats.source_id = v.column1",
                rows.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for b in chunk {
                q = q.bind(&b.source_id).bind(b.at).bind(&b.agent_version);
            }
            q.execute(&self.relaxed).await?;
        }
        Ok(())
    }

    /// Sources not `Unavailable` or `Deleting` whose stored heartbeat is older than `cutoff` (unix seconds).
    pub async fn source_list_silent(&self, cutoff: i64) -> Result<Vec<SourceRecord>> {
        Ok(sqlx::query_as(&format!(
            "{SOURCE_SELECT} WHERE sources.id IN (SELECT source_id FROM source_beats WHERE heartbeat_at < $1) \
             AND state <> 'Unavailable' AND state <> 'Deleting' ORDER BY heartbeat_at"
        ))
        .bind(cutoff)
        .fetch_all(&self.read)
        .await?)
    }

    /// Marks a source `Unavailable` with `error_code`/`status_info`, only if its stored heartbeat is still
    /// older than `cutoff` and it is not `Unavailable` or `Deleting`. Returns whether it was marked.
    pub async fn source_mark_offline(
        &self,
        id: &str,
        cutoff: i64,
        error_code: &str,
        status_info: &str,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE sources SET state = 'Unavailable', error_code = $3, status_info = $4 \
             WHERE id = $1 AND state <> 'Unavailable' AND state <> 'Deleting' \
             AND EXISTS (SELECT 1 FROM source_beats WHERE source_id = $1 AND heartbeat_at < $2)",
        )
        .bind(id)
        .bind(cutoff)
        .bind(error_code)
        .bind(status_info)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The jobs the scheduler may have to step at `now` (job clock), oldest first: `Deleting`; `Expired`
    /// since before `purge_before` (its `expired_at`, else its `ValidTime`); `Ready`/`Stopped`/`InError`/
    /// `Waiting` past their `ValidTime`; `Ready` past their `ScheduledStartTime`; `Waiting` incremental jobs
    /// whose last run started `Frequency` hours before `now` or earlier. Each part reads an index.
    pub async fn job_list_due(&self, now: i64, purge_before: i64) -> Result<Vec<JobRecord>> {
        Ok(sqlx::query_as(
            "SELECT * FROM jobs WHERE id IN ( \
               SELECT id FROM jobs WHERE status = 'Deleting' \
               UNION SELECT j.id FROM jobs j LEFT JOIN job_settings s ON s.job_id = j.id \
                 WHERE j.status = 'Expired' AND COALESCE(s.expired_at, j.valid_time, $1) <= $2 \
               UNION SELECT id FROM jobs WHERE valid_time <= $1 \
                 AND status IN ('Ready', 'Stopped', 'InError', 'Waiting') \
               UNION SELECT id FROM jobs WHERE status = 'Ready' AND scheduled_start_time <= $1 \
               UNION SELECT j.id FROM jobs j WHERE j.status = 'Waiting' AND j.run_once = 0 \
                 AND j.frequency IS NOT NULL \
                 AND (SELECT r.started_at FROM runs r WHERE r.job_id = j.id ORDER BY r.seq DESC LIMIT 1) \
                     + j.frequency * 3600 <= $1 \
             ) ORDER BY created_at, id",
        )
        .bind(now)
        .bind(purge_before)
        .fetch_all(&self.read)
        .await?)
    }

    /// Incremental jobs (`run_once = 0`) with a `MaxNumberOfImageToKeep` that hold more `Available` images
    /// than it, oldest first.
    pub async fn job_list_over_image_limit(&self) -> Result<Vec<JobRecord>> {
        Ok(sqlx::query_as(
            "SELECT * FROM jobs j WHERE j.run_once = 0 AND j.max_images IS NOT NULL \
             AND j.status <> 'Deleting' \
             AND (SELECT COUNT(*) FROM images i WHERE i.job_id = j.id AND i.status = 'Available') > j.max_images \
             ORDER BY j.created_at, j.id",
        )
        .fetch_all(&self.read)
        .await?)
    }

    /// The runs of each of `job_ids`, oldest first, in one query (a job without runs is absent).
    pub async fn run_list_for_jobs(
        &self,
        job_ids: &[String],
    ) -> Result<HashMap<String, Vec<RunRecord>>> {
        let mut out: HashMap<String, Vec<RunRecord>> = HashMap::new();
        if job_ids.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT * FROM runs WHERE job_id IN ({}) ORDER BY job_id, seq",
            placeholders(1, job_ids.len())
        );
        let mut q = sqlx::query_as::<_, RunRecord>(&sql);
        for id in job_ids {
            q = q.bind(id.as_str());
        }
        for r in q.fetch_all(&self.read).await? {
            out.entry(r.job_id.clone()).or_default().push(r);
        }
        Ok(out)
    }

    /// The settings of each of `job_ids` in one query; a job without a row reads as
    /// [`JobSettingsRecord::empty`].
    pub async fn job_settings_for_jobs(
        &self,
        job_ids: &[String],
    ) -> Result<HashMap<String, JobSettingsRecord>> {
        let mut out: HashMap<String, JobSettingsRecord> = HashMap::new();
        if !job_ids.is_empty() {
            let sql = format!(
                "SELECT * FROM job_settings WHERE job_id IN ({})",
                placeholders(1, job_ids.len())
            );
            let mut q = sqlx::query_as::<_, JobSettingsRecord>(&sql);
            for id in job_ids {
                q = q.bind(id.as_str());
            }
            for s in q.fetch_all(&self.read).await? {
                out.insert(s.job_id.clone(), s);
            }
        }
        for id in job_ids {
            out.entry(id.clone())
                .or_insert_with(|| JobSettingsRecord::empty(id));
        }
        Ok(out)
    }
}
