//! The job scheduler: the time-driven half of SMC's job state machine (`docs/replication-jobs.md`).
//!
//! Every tick it looks at the jobs that have something due on the job clock (`AppState::clock`; one
//! indexed query, `ferry_db::Db::job_list_due`, not a scan of every job) and takes at most one step of each:
//! - `Ready` whose `ScheduledStartTime` has come → `Running` (a `Schedule` run);
//! - `Waiting` incremental job whose last run started `Frequency` hours ago → `Running` (a `Schedule` run);
//! - `Ready`/`Stopped`/`InError`/`Waiting` whose `ValidTime` has passed → `Expired` (a running job is never
//!   expired; it expires at the first tick after its run ends);
//! - `Expired` for 7 days, or `Deleting` → purged (runs, snapshot records and indexes; images stay);
//!
//! and, for incremental jobs holding more available images than `MaxNumberOfImageToKeep` (one query,
//! `ferry_db::Db::job_list_over_image_limit`), deletes the oldest beyond it.
//!
//! One replica at a time ticks (the `scheduler` lease, docs/scale-out.md); purge and image retention are
//! part of the tick.
//!
//! Invariants: each step is a guarded transition in the data layer, so a step taken twice (a replica that
//! lost the lease mid-tick, a restart mid-step) does nothing the second time; a step that cannot be taken now (the agent
//! is offline at a scheduled start) is tried again at the next tick and says why in the job's
//! `StatusInfo`. Expiry is checked before starting, so a job whose start time and expiry have both passed
//! expires rather than runs.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_chunk::ChunkStore;
use ferry_db::JobRecord;

use crate::AppState;
use crate::app::jobs::{self, EXPIRED_KEEP_SECS, HOUR};

/// Seconds between ticks when nothing wakes the scheduler earlier.
const TICK_SECS: u64 = 1;

/// The name of an incremental job's image of run `seq` (1-based): `<ImageName>-CYCLE_<seq>`, SMC's
/// `CYCLE_<n>` convention. A one-shot job's image is named `ImageName` itself.
pub fn cycle_image_name(image_name: &str, seq: i64) -> String {
    format!("{image_name}-CYCLE_{seq}")
}

/// Ticks while this replica holds the `scheduler` lease; one replica at a time schedules, and another takes
/// over within a lease TTL when it dies.
pub async fn run(st: Arc<AppState>) {
    let mut lease = super::lease::Singleton::new("scheduler");
    loop {
        if lease.hold(&st).await {
            tick(&st, st.clock.now()).await;
        }
        super::idle(&st, TICK_SECS).await;
    }
}

/// One pass at time `now` (job clock) over the jobs that have something due (`Db::job_list_due`: an
/// indexed read, not every job) and over the incremental jobs holding more images than they keep. Failures
/// of one job are logged and do not stop the others.
pub async fn tick(st: &AppState, now: i64) {
    match st.db.job_list_due(now, now - EXPIRED_KEEP_SECS).await {
        Ok(due) => {
            for job in due {
                if let Err(e) = step(st, &job, now).await {
                    tracing::warn!(job = %job.id, error = %e, "scheduler step failed; retrying at the next tick");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "scheduler cannot read the jobs due"),
    }
    match st.db.job_list_over_image_limit().await {
        Ok(over) => {
            for job in over {
                if let Err(e) = retain_images(st, &job).await {
                    tracing::warn!(job = %job.id, error = %e, "image retention failed; retrying at the next tick");
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "scheduler cannot read the jobs over their image limit")
        }
    }
}

/// Takes at most one step of `job` at `now`. The step is decided here again from the record, so a job the
/// query selected that is no longer due does nothing.
async fn step(st: &AppState, job: &JobRecord, now: i64) -> anyhow::Result<()> {
    let expirable = matches!(
        job.status.as_str(),
        "Ready" | "Stopped" | "InError" | "Waiting"
    );
    match job.status.as_str() {
        "Deleting" => return purge(st, &job.id).await,
        "Expired" => {
            let settings = st.db.job_settings_get(&job.id).await?;
            let since = settings.expired_at.or(job.valid_time).unwrap_or(now);
            if now >= since + EXPIRED_KEEP_SECS {
                tracing::info!(job = %job.id, "expired 7 days ago: purging");
                return purge(st, &job.id).await;
            }
        }
        _ if expirable && job.valid_time.is_some_and(|v| now >= v) => {
            if st.db.job_expire(&job.id, &job.status, now).await? {
                tracing::info!(job = %job.id, from = %job.status, "ValidTime passed: job expired");
            }
            return Ok(());
        }
        "Ready" if job.scheduled_start_time.is_some_and(|t| now >= t) => {
            start_scheduled(st, job).await?;
        }
        "Waiting" if job.run_once == 0 => {
            if let Some(due) = next_cycle_at(st, job).await?
                && now >= due
            {
                start_scheduled(st, job).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// When a `Waiting` incremental job's next cycle is due: `Frequency` hours after its last run started.
async fn next_cycle_at(st: &AppState, job: &JobRecord) -> anyhow::Result<Option<i64>> {
    let Some(freq) = job.frequency else {
        return Ok(None);
    };
    let runs = st.db.run_list(&job.id).await?;
    Ok(runs.last().map(|r| r.started_at + freq * HOUR))
}

async fn start_scheduled(st: &AppState, job: &JobRecord) -> anyhow::Result<()> {
    match jobs::start(st, &job.id, "Schedule").await {
        Ok(()) => {
            tracing::info!(job = %job.id, "scheduled run started");
            Ok(())
        }
        Err(e) => {
            // Not an error of the scheduler: the run starts at a later tick once the cause is gone.
            let info = format!("scheduled run not started yet: {}", e.message);
            if job.status_info.as_deref() != Some(info.as_str()) {
                tracing::info!(job = %job.id, reason = %e.message, "scheduled run waits");
                st.db.job_set_status_info(&job.id, Some(&info)).await?;
            }
            Ok(())
        }
    }
}

/// Removes a job's records and the indexes of its snapshots. Chunks stay: other snapshots may share them.
/// TODO-perf: collect chunks no index references any more (chunk garbage collection).
async fn purge(st: &AppState, job_id: &str) -> anyhow::Result<()> {
    let snaps = st.db.job_purge(job_id).await?;
    st.db.tags_drop_resource("replicationjob", job_id).await?;
    for s in snaps {
        let disk = u32::try_from(s.disk_index)?;
        let key = ChunkStore::index_key(&jobs::index_key(&s.run_id, disk))?;
        if let Err(e) = st.chunks.object_store().delete(&key).await {
            tracing::warn!(job = %job_id, key, error = %e, "cannot delete a purged snapshot's index");
        }
    }
    tracing::info!(job = %job_id, "job purged");
    Ok(())
}

/// Keeps an incremental job's newest `MaxNumberOfImageToKeep` available images and deletes the older
/// ones, except an image an export is still reading or an instance was launched from (instances are
/// copy-on-write overlays of their image).
async fn retain_images(st: &AppState, job: &JobRecord) -> anyhow::Result<()> {
    let Some(keep) = job.max_images.and_then(|m| usize::try_from(m).ok()) else {
        return Ok(());
    };
    let mut images: Vec<_> = st
        .db
        .image_list_by_job(&job.id)
        .await?
        .into_iter()
        .filter(|i| i.status == "Available")
        .collect();
    if images.len() <= keep {
        return Ok(());
    }
    let seq: HashMap<String, i64> = st
        .db
        .run_list(&job.id)
        .await?
        .into_iter()
        .map(|r| (r.id, r.seq))
        .collect();
    images.sort_by_key(|i| {
        (
            i.run_id.as_ref().and_then(|r| seq.get(r)).copied(),
            i.created_at,
        )
    });
    let in_use: Vec<String> = st
        .db
        .task_list()
        .await?
        .into_iter()
        .filter(|t| t.status == "Processing")
        .map(|t| t.resource_id)
        .chain(st.db.instance_list().await?.into_iter().map(|i| i.image_id))
        .collect();
    let excess = images.len() - keep;
    for image in images.into_iter().take(excess) {
        if in_use.contains(&image.id) || job.image_id.as_deref() == Some(image.id.as_str()) {
            continue;
        }
        st.db.image_delete(&image.id).await?;
        let dir = st.images_dir().join(&image.id);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(image = %image.id, error = %e, "cannot remove a retired image's files");
        }
        tracing::info!(job = %job.id, image = %image.id, name = %image.name, keep, "image retired (MaxNumberOfImageToKeep)");
    }
    Ok(())
}
