//! Replication jobs and their runs: SMC's job state machine (`../shared/ref/smc-api.md` §2.6) and the
//! agent-facing steps of a run.
//!
//! A job's `Status`/`BusinessStatus` follow SMC. Each start (or scheduled cycle) creates a *run*, Ferry's
//! record of one full or incremental sync: `Syncing` (the agent uploads) → `Processing` (the image
//! builder works) → `Succeeded`; or `Stopped`/`Failed`, from which a later start resumes the same run.

use ferry_api::ApiError;
use ferry_db::{JobRecord, RunRecord, SnapshotRecord, SourceRecord, now};
use ferry_types::ids::{JobId, RunId, SnapshotId};
use ferry_types::inventory::Inventory;
use ferry_types::protocol::{ReplicateTask, RunFinish, RunProgress};
use serde::Deserialize;

use super::OrInternal;
use crate::AppState;

/// What `CreateReplicationJob` asks for, validated.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub source_id: String,
    pub region_id: String,
    pub name: Option<String>,
    pub description: String,
    pub image_name: Option<String>,
    pub run_once: bool,
    pub frequency: Option<i64>,
    pub max_images: Option<i64>,
    pub replication_parameters: String,
    pub scheduled_start_time: Option<i64>,
    pub valid_time: Option<i64>,
    pub client_token: Option<String>,
}

/// `ReplicationParameters`: SMC's keys plus Ferry's exact-unit `bandwidth_limit_bps`.
#[derive(Debug, Default, Deserialize)]
pub struct ReplicationParameters {
    /// KB/s as in SMC's console; 0 = unlimited.
    #[serde(default)]
    pub bandwidth_limit: Option<u64>,
    /// Bytes per second (Ferry); wins over `bandwidth_limit`.
    #[serde(default)]
    pub bandwidth_limit_bps: Option<u64>,
    /// zstd level, 0 = off; absent = chosen by the agent.
    #[serde(default)]
    pub compress_level: Option<i32>,
    /// Ferry always verifies every chunk; accepted for compatibility.
    #[serde(default)]
    pub checksum: Option<bool>,
}

impl ReplicationParameters {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        if text.len() > 2048 {
            return Err(ApiError::invalid_parameter(
                "ReplicationParameters",
                "is longer than 2048 characters",
            ));
        }
        let p: Self = serde_json::from_str(text).map_err(|e| {
            ApiError::invalid_parameter(
                "ReplicationParameters",
                format!(
                    "is not valid JSON ({e}); expected e.g. {{\"bandwidth_limit\":0,\"compress_level\":1,\"checksum\":true}}"
                ),
            )
        })?;
        if let Some(l) = p.compress_level
            && !(0..=19).contains(&l)
        {
            return Err(ApiError::invalid_parameter(
                "ReplicationParameters.compress_level",
                "must be between 0 (off) and 19",
            ));
        }
        Ok(p)
    }

    pub fn bandwidth_bps(&self) -> Option<u64> {
        match (self.bandwidth_limit_bps, self.bandwidth_limit) {
            (Some(0), _) => None,
            (Some(bps), _) => Some(bps),
            (None, Some(0)) | (None, None) => None,
            (None, Some(kbps)) => Some(kbps.saturating_mul(1024)),
        }
    }
}

fn invalid_status(status: &str, allowed: &str) -> ApiError {
    ApiError::new(
        "ReplicationJob.InvalidStatus",
        400,
        format!(
            "The specified replication job status: {status} is invalid. This operation can only be performed \
             in the following status: {allowed}."
        ),
    )
}

fn source_state_invalid(state: &str, allowed: &str, hint: &str) -> ApiError {
    ApiError::new(
        "SourceServerState.Invalid",
        400,
        format!(
            "The specified source server state: {state} is invalid. This operation can only be performed in \
             the following state: {allowed}. {hint}"
        ),
    )
}

pub fn job_not_found(id: &str) -> ApiError {
    ApiError::new(
        "InvalidJobId.NotFound",
        404,
        format!("replication job {id} does not exist: list jobs with `ferry job list`"),
    )
}

pub fn source_not_found(id: &str) -> ApiError {
    ApiError::new(
        "InvalidSourceId.NotFound",
        404,
        format!("source server {id} does not exist: list sources with `ferry source list`"),
    )
}

pub async fn get_job(st: &AppState, id: &str) -> Result<JobRecord, ApiError> {
    st.db
        .job_get(id)
        .await
        .or_internal()?
        .ok_or_else(|| job_not_found(id))
}

/// Is the source's agent heart-beating?
pub fn source_online(st: &AppState, s: &SourceRecord, at: i64) -> bool {
    at - s.heartbeat_at <= 3 * i64::from(st.cfg.heartbeat_interval_secs)
}

pub async fn create(st: &AppState, new: NewJob) -> Result<JobId, ApiError> {
    if let Some(token) = &new.client_token
        && let Some(existing) = st.db.job_by_client_token(token).await.or_internal()?
    {
        return existing.id.parse().or_internal();
    }
    if new.region_id != st.cfg.region_id {
        return Err(ApiError::new(
            "InvalidRegionId.NotFound",
            404,
            format!(
                "region {:?} is not served here: this server's region is {:?}",
                new.region_id, st.cfg.region_id
            ),
        ));
    }
    let source = st
        .db
        .source_get(&new.source_id)
        .await
        .or_internal()?
        .ok_or_else(|| source_not_found(&new.source_id))?;
    ReplicationParameters::parse(&new.replication_parameters)?;
    let id = JobId::generate();
    let name = match new.name {
        Some(n) => n,
        None => format!("{}-{}", source.name, &id.as_str()[4..10]),
    };
    if st.db.job_name_taken(&name).await.or_internal()? {
        return Err(ApiError::new(
            "ReplicationJobName.Duplicate",
            400,
            format!("a replication job named {name:?} already exists: choose another name"),
        ));
    }
    let mut image_name = new.image_name.unwrap_or_else(|| format!("{name}-image"));
    if st.db.image_name_taken(&image_name).await.or_internal()? {
        image_name = format!("{image_name}_{id}");
    }
    let created = now();
    let rec = JobRecord {
        id: id.to_string(),
        name,
        description: new.description,
        source_id: source.id.clone(),
        region_id: new.region_id,
        status: "Ready".to_owned(),
        business_status: None,
        error_code: None,
        status_info: None,
        job_type: 0,
        target_type: "Image".to_owned(),
        image_name,
        image_id: None,
        run_once: i64::from(new.run_once),
        frequency: new.frequency,
        max_images: new.max_images,
        replication_parameters: new.replication_parameters,
        progress: 0.0,
        created_at: created,
        start_time: None,
        end_time: None,
        scheduled_start_time: new.scheduled_start_time,
        valid_time: Some(new.valid_time.unwrap_or(created + 30 * 86_400)),
        client_token: new.client_token,
    };
    if !st.db.job_create(&rec).await.or_internal()? {
        return Err(source_state_invalid(
            &source.state,
            "Available",
            "A source can have one open replication job: finish or delete the other job first.",
        ));
    }
    Ok(id)
}

/// StartReplicationJob: from Ready, Stopped or InError (resuming the unfinished run), or from Waiting for
/// an incremental job (a manual extra cycle).
pub async fn start(st: &AppState, job_id: &str, kind: &str) -> Result<(), ApiError> {
    let job = get_job(st, job_id).await?;
    let allowed = matches!(job.status.as_str(), "Ready" | "Stopped" | "InError")
        || (job.status == "Waiting" && job.run_once == 0);
    if !allowed {
        return Err(invalid_status(
            &job.status,
            "Ready, Stopped, InError (or Waiting for incremental jobs)",
        ));
    }
    let source = st
        .db
        .source_get(&job.source_id)
        .await
        .or_internal()?
        .ok_or_else(|| source_not_found(&job.source_id))?;
    let at = now();
    if !source_online(st, &source, at) {
        return Err(source_state_invalid(
            "Unavailable",
            "Available, InUse",
            &format!(
                "The agent of {} has not been heard from for {} s: check that ferry-agent is running there and \
                 can reach this server.",
                source.name,
                at - source.heartbeat_at
            ),
        ));
    }
    let runs = st.db.run_list(job_id).await.or_internal()?;
    let unfinished = runs
        .iter()
        .rev()
        .find(|r| matches!(r.status.as_str(), "Syncing" | "Stopped" | "Failed"));
    match unfinished {
        Some(r) if r.status != "Syncing" => {
            // Resume: chunks already stored are not sent again (the agent asks before it sends).
            st.db
                .run_transition(&r.id, &r.status, "Syncing", None, None)
                .await
                .or_internal()?;
        }
        Some(_) => {}
        None => {
            let inv: Inventory = serde_json::from_str(&source.inventory).or_internal()?;
            let disks: Vec<u32> = inv.disks.iter().map(|d| d.index).collect();
            if disks.is_empty() {
                return Err(source_state_invalid(
                    &source.state,
                    "a source with at least one disk",
                    "The agent reported no disks: start ferry-agent with --disk or check its prechecks.",
                ));
            }
            let run = RunRecord {
                id: RunId::generate().to_string(),
                job_id: job_id.to_owned(),
                seq: runs.last().map_or(1, |r| r.seq + 1),
                kind: kind.to_owned(),
                status: "Syncing".to_owned(),
                disks: serde_json::to_string(&disks).or_internal()?,
                chunk_size: i64::from(ferry_chunk::DEFAULT_CHUNK_SIZE),
                started_at: at,
                ended_at: None,
                image_id: None,
                progress: serde_json::to_string(&RunProgress::default()).or_internal()?,
                error: None,
            };
            st.db.run_create(&run).await.or_internal()?;
        }
    }
    let moved = st
        .db
        .job_transition(
            job_id,
            &["Ready", "Stopped", "InError", "Waiting"],
            "Running",
            Some("Preparing"),
        )
        .await
        .or_internal()?;
    if !moved {
        return Err(invalid_status("Running", "Ready, Stopped, InError"));
    }
    st.db
        .job_set_times(job_id, Some(at), None)
        .await
        .or_internal()?;
    st.db.job_set_progress(job_id, 0.0).await.or_internal()?;
    Ok(())
}

/// StopReplicationJob: while syncing (or waiting, for incremental jobs). Stored chunks stay stored.
pub async fn stop(st: &AppState, job_id: &str) -> Result<(), ApiError> {
    let job = get_job(st, job_id).await?;
    let moved = st
        .db
        .job_transition(
            job_id,
            &["Running/Preparing", "Running/Syncing", "Waiting"],
            "Stopped",
            None,
        )
        .await
        .or_internal()?;
    if !moved {
        return Err(invalid_status(
            &format!(
                "{}{}",
                job.status,
                job.business_status
                    .map(|b| format!("/{b}"))
                    .unwrap_or_default()
            ),
            "Running (Preparing, Syncing), Waiting",
        ));
    }
    for r in st.db.run_list(job_id).await.or_internal()? {
        if r.status == "Syncing" {
            st.db
                .run_transition(&r.id, "Syncing", "Stopped", None, None)
                .await
                .or_internal()?;
        }
    }
    st.tasks_changed.notify_waiters();
    Ok(())
}

/// The run a source's agent should work on now, if any; moves the job from Preparing to Syncing.
pub async fn task_for_source(
    st: &AppState,
    source: &SourceRecord,
) -> Result<Option<ReplicateTask>, ApiError> {
    let Some(job_id) = &source.job_id else {
        return Ok(None);
    };
    let Some(job) = st.db.job_get(job_id).await.or_internal()? else {
        return Ok(None);
    };
    if job.status != "Running" {
        return Ok(None);
    }
    let runs = st.db.run_list(job_id).await.or_internal()?;
    let Some(run) = runs.into_iter().rev().find(|r| r.status == "Syncing") else {
        return Ok(None);
    };
    if job.business_status.as_deref() == Some("Preparing") {
        st.db
            .job_transition(job_id, &["Running/Preparing"], "Running", Some("Syncing"))
            .await
            .or_internal()?;
    }
    let params = ReplicationParameters::parse(&job.replication_parameters).unwrap_or_default();
    let committed = st
        .db
        .snapshot_list_by_run(&run.id)
        .await
        .or_internal()?
        .into_iter()
        .map(|s| s.disk_index as u32)
        .collect();
    Ok(Some(ReplicateTask {
        run_id: run.id.parse().or_internal()?,
        job_id: job.id.parse().or_internal()?,
        disks: serde_json::from_str(&run.disks).or_internal()?,
        chunk_size: u32::try_from(run.chunk_size).or_internal()?,
        bandwidth_limit_bps: params.bandwidth_bps(),
        compress_level: params.compress_level,
        committed_disks: committed,
        previous: serde_json::from_str::<RunProgress>(&run.progress)
            .ok()
            .filter(|p| p.bytes_sent > 0 || p.bytes_scanned > 0),
    }))
}

fn run_not_active(run_id: &str, status: &str) -> ApiError {
    ApiError::new(
        "RunNotActive",
        409,
        format!(
            "run {run_id} is {status}, not syncing: the agent stops working on it (start the job again to resume)"
        ),
    )
}

/// The run `run_id` if it belongs to `source` and is syncing: the guard of every upload.
pub async fn active_run(
    st: &AppState,
    source: &SourceRecord,
    run_id: &str,
) -> Result<(JobRecord, RunRecord), ApiError> {
    let unknown = || {
        ApiError::new(
            "InvalidRunId.NotFound",
            404,
            format!("run {run_id} does not exist"),
        )
    };
    let run = st
        .db
        .run_get(run_id)
        .await
        .or_internal()?
        .ok_or_else(unknown)?;
    let job = st
        .db
        .job_get(&run.job_id)
        .await
        .or_internal()?
        .ok_or_else(unknown)?;
    if job.source_id != source.id {
        // Same answer as for an unknown run: another source's runs are not this agent's business.
        return Err(unknown());
    }
    if run.status != "Syncing" || job.status != "Running" {
        return Err(run_not_active(run_id, &run.status));
    }
    Ok((job, run))
}

pub async fn record_progress(
    st: &AppState,
    job: &JobRecord,
    run: &RunRecord,
    p: &RunProgress,
) -> Result<(), ApiError> {
    st.db
        .run_set_progress(&run.id, &serde_json::to_string(p).or_internal()?)
        .await
        .or_internal()?;
    // Syncing is 0–90 % of the job; building the image is the rest.
    let pct = if p.bytes_total == 0 {
        0.0
    } else {
        (p.bytes_scanned as f64 / p.bytes_total as f64 * 90.0 * 100.0).round() / 100.0
    };
    st.db.job_set_progress(&job.id, pct).await.or_internal()?;
    st.db
        .job_set_status_info(&job.id, p.paused_reason.as_deref())
        .await
        .or_internal()?;
    Ok(())
}

/// Commits one disk's snapshot from its index (already checked for missing chunks by the store).
pub async fn commit_snapshot(
    st: &AppState,
    job: &JobRecord,
    run: &RunRecord,
    disk: u32,
    index: &ferry_chunk::DiskIndex,
) -> Result<SnapshotRecord, ApiError> {
    let disks: Vec<u32> = serde_json::from_str(&run.disks).or_internal()?;
    if !disks.contains(&disk) {
        return Err(ApiError::invalid_parameter(
            "disk",
            format!("disk {disk} is not part of run {}", run.id),
        ));
    }
    if i64::from(index.chunk_size) != run.chunk_size {
        return Err(ApiError::invalid_parameter(
            "index",
            format!(
                "chunk size {} differs from the run's {}",
                index.chunk_size, run.chunk_size
            ),
        ));
    }
    let key = index_key(&run.id, disk);
    st.chunks
        .put_index(&key, index)
        .await
        .map_err(crate::agent_api::store_error)?;
    let rec = SnapshotRecord {
        id: SnapshotId::generate().to_string(),
        run_id: run.id.clone(),
        job_id: job.id.clone(),
        source_id: job.source_id.clone(),
        disk_index: i64::from(disk),
        disk_size: i64::try_from(index.disk_size).or_internal()?,
        chunk_size: i64::from(index.chunk_size),
        root_digest: index.root_digest().to_string(),
        created_at: now(),
    };
    st.db.snapshot_commit(&rec).await.or_internal()
}

/// Object-store name of a run's disk index.
pub fn index_key(run_id: &str, disk: u32) -> String {
    format!("{run_id}-disk{disk}")
}

/// The agent says it is done with a run.
pub async fn finish(
    st: &AppState,
    job: &JobRecord,
    run: &RunRecord,
    f: &RunFinish,
) -> Result<(), ApiError> {
    match f {
        RunFinish::Succeeded { progress } => {
            let disks: Vec<u32> = serde_json::from_str(&run.disks).or_internal()?;
            let committed = st.db.snapshot_list_by_run(&run.id).await.or_internal()?;
            let missing: Vec<u32> = disks
                .iter()
                .copied()
                .filter(|d| !committed.iter().any(|s| s.disk_index == i64::from(*d)))
                .collect();
            if !missing.is_empty() {
                return Err(ApiError::new(
                    "MissingSnapshots",
                    409,
                    format!(
                        "run {} cannot finish: disks {missing:?} have no committed index yet",
                        run.id
                    ),
                ));
            }
            record_progress(st, job, run, progress).await?;
            st.db
                .run_transition(&run.id, "Syncing", "Processing", None, None)
                .await
                .or_internal()?;
            st.db
                .job_transition(
                    &job.id,
                    &["Running/Syncing", "Running/Preparing"],
                    "Running",
                    Some("Processing"),
                )
                .await
                .or_internal()?;
            st.wake.notify_waiters();
        }
        RunFinish::Failed { code, message } => {
            st.db
                .run_transition(&run.id, "Syncing", "Failed", Some(message), Some(now()))
                .await
                .or_internal()?;
            st.db
                .job_set_error(&job.id, code, message)
                .await
                .or_internal()?;
        }
    }
    Ok(())
}
