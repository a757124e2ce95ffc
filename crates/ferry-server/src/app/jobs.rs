//! Replication jobs and their runs: SMC's job state machine (`../shared/ref/smc-api.md` §2.6,
//! `docs/replication-jobs.md`) and the agent-facing steps of a run.
//!
//! A job's `Status`/`BusinessStatus` follow SMC. Each start (or scheduled cycle) creates a *run*, Ferry's
//! record of one full or incremental sync: `Syncing` (the agent uploads) → `Processing` (the image
//! builder works) → `Succeeded`; or `Stopped`/`Failed`, from which a later start resumes the same run.
//!
//! Invariants: every status change is a guarded transition in the data layer (two callers cannot both take
//! it); `BusinessStatus` is set only while `Running`; a source's `job_id` names its one open job (Ready,
//! Running, Stopped, Waiting, InError, Expired) and is cleared, with `InUse` → `Available`, when that job
//! finishes, starts deleting or is purged. Job times (creation, schedules, expiry) come from
//! [`JobClock`], never from the system clock directly, so that tests can move it.

use std::path::PathBuf;

use ferry_api::ApiError;
use ferry_db::{JobRecord, JobSettingsRecord, RunRecord, SnapshotRecord, SourceRecord, now};
use ferry_types::ids::{JobId, RunId, SnapshotId};
use ferry_types::inventory::Inventory;
use ferry_types::protocol::{ReplicateTask, RunFinish, RunProgress};
use serde::{Deserialize, Serialize};

use super::OrInternal;
use crate::{AppState, agent_api};

/// Seconds in a day and an hour, for the job clock's arithmetic.
pub const DAY: i64 = 86_400;
pub const HOUR: i64 = 3_600;
/// How long an `Expired` job is kept before it is purged (SMC: 7 days).
pub const EXPIRED_KEEP_SECS: i64 = 7 * DAY;
/// Default validity of a job: 30 days from creation (SMC's default).
pub const DEFAULT_VALID_SECS: i64 = 30 * DAY;

/// The clock of job scheduling: creation times, `ScheduledStartTime`, the `Frequency` timer, `ValidTime`
/// and the purge of expired jobs all read it. It is the system clock, unless the server was started with
/// the environment variable `FERRY_TEST_CLOCK_FILE` naming a file that holds a whole number of seconds:
/// then that offset is added (the file is read at every use, so a test moves time forward by rewriting
/// it). Test-only: it does not touch signatures, heartbeats or the agent protocol, which keep real time.
#[derive(Debug, Clone, Default)]
pub struct JobClock {
    offset_file: Option<PathBuf>,
}

impl JobClock {
    pub const ENV: &'static str = "FERRY_TEST_CLOCK_FILE";

    /// The clock the environment asks for (the system clock unless `FERRY_TEST_CLOCK_FILE` is set).
    pub fn from_env() -> Self {
        let offset_file = std::env::var_os(Self::ENV).map(PathBuf::from);
        if let Some(f) = &offset_file {
            tracing::warn!(file = %f.display(), "job clock offset read from a test file: not for production");
        }
        Self { offset_file }
    }

    /// Now, in unix seconds, on the job clock.
    pub fn now(&self) -> i64 {
        now() + self.offset()
    }

    fn offset(&self) -> i64 {
        let Some(f) = &self.offset_file else {
            return 0;
        };
        // A missing or half-written file means no offset: the test that writes it retries its wait.
        std::fs::read_to_string(f)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// `TargetType` (case-insensitive on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetType {
    Image,
    ContainerImage,
    TargetInstance,
}

impl TargetType {
    pub fn parse(v: &str) -> Result<Self, ApiError> {
        [Self::Image, Self::ContainerImage, Self::TargetInstance]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(v))
            .ok_or_else(|| {
                ApiError::invalid_parameter(
                    "TargetType",
                    format!(
                        "{v:?} is not a target type; use Image, ContainerImage or TargetInstance"
                    ),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "Image",
            Self::ContainerImage => "ContainerImage",
            Self::TargetInstance => "TargetInstance",
        }
    }
}

/// A destination partition (`SystemDiskPart.N`, `DataDisk.N.Part.M`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskPart {
    pub device: String,
    pub size_bytes: i64,
    pub block: bool,
}

/// A data disk to migrate (`DataDisk.N`): its index on the source and its destination size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataDisk {
    pub index: i64,
    #[serde(default)]
    pub size: Option<i64>,
    #[serde(default)]
    pub parts: Vec<DiskPart>,
}

/// A job's target and layout as given (table `job_settings`, column `settings`). Format version 1: JSON
/// with a `version` field; unknown fields are ignored and absent ones take their defaults, so adding an
/// optional field keeps version 1 (`docs/replication-jobs.md`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobSettings {
    pub version: u32,
    /// 0 Internet, 2 VPC.
    pub net_mode: i64,
    pub vswitch_id: Option<String>,
    pub vpc_id: Option<String>,
    pub instance_type: Option<String>,
    pub instance_ram_role: Option<String>,
    pub license_type: Option<String>,
    pub launch_template_id: Option<String>,
    pub launch_template_version: Option<String>,
    pub system_disk_size: Option<i64>,
    pub system_disk_parts: Vec<DiskPart>,
    /// Data disks to migrate; empty = every disk the agent reported (Ferry's default).
    pub data_disks: Vec<DataDisk>,
    pub container_namespace: Option<String>,
    pub container_repository: Option<String>,
    pub container_tag: Option<String>,
    /// CreateCrossZoneMigrationJob's target.
    pub target_zone_id: Option<String>,
    pub target_instance_type: Option<String>,
    /// Ferry-only (`ValidationEnabled`): boot-validate each image after it is built and adapted. Absent =
    /// on.
    pub validation_enabled: Option<bool>,
    /// Ferry-only (`ValidationChecks`): the user's checks (`ferry_vm::validate::UserChecks` JSON).
    pub validation_checks: Option<serde_json::Value>,
    /// Ferry-only (`ValidationInstanceType`): the throwaway instance's type. Absent = `ecs.t1.small`.
    pub validation_instance_type: Option<String>,
    /// Ferry-only (`NetworkMode`): `Dhcp` (default) or `KeepStatic`, how adaptation treats the guest's
    /// network configuration.
    pub network_mode: Option<String>,
}

/// Format version of [`JobSettings`].
pub const JOB_SETTINGS_VERSION: u32 = 1;

impl JobSettings {
    pub fn decode(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_default()
    }

    pub fn encode(&self) -> Result<String, ApiError> {
        let mut s = self.clone();
        s.version = JOB_SETTINGS_VERSION;
        serde_json::to_string(&s).or_internal()
    }
}

/// What `CreateReplicationJob` asks for, parsed at the edge; [`create`] checks it against the source and
/// the server.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub source_id: String,
    pub region_id: String,
    pub name: Option<String>,
    pub description: String,
    pub image_name: Option<String>,
    pub job_type: i64,
    pub target_type: TargetType,
    pub instance_id: Option<String>,
    pub run_once: bool,
    pub frequency: Option<i64>,
    pub max_images: Option<i64>,
    pub replication_parameters: String,
    pub scheduled_start_time: Option<i64>,
    pub valid_time: Option<i64>,
    pub client_token: Option<String>,
    pub settings: JobSettings,
}

/// What `ModifyReplicationJobAttribute` asks to change (`None` = keep).
#[derive(Debug, Clone, Default)]
pub struct JobChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub target_type: Option<TargetType>,
    pub image_name: Option<String>,
    pub instance_id: Option<String>,
    pub frequency: Option<i64>,
    pub max_images: Option<i64>,
    pub replication_parameters: Option<String>,
    pub scheduled_start_time: Option<i64>,
    pub valid_time: Option<i64>,
    pub system_disk_size: Option<i64>,
    pub system_disk_parts: Option<Vec<DiskPart>>,
    pub data_disks: Option<Vec<DataDisk>>,
    pub net_mode: Option<i64>,
    pub vpc_id: Option<String>,
    pub vswitch_id: Option<String>,
    pub instance_type: Option<String>,
    pub instance_ram_role: Option<String>,
    pub launch_template_id: Option<String>,
    pub launch_template_version: Option<String>,
    pub container_namespace: Option<String>,
    pub container_repository: Option<String>,
    pub container_tag: Option<String>,
    /// Ferry-only pipeline settings; may change in any status but `Deleting` (they apply to the next image
    /// built).
    pub ferry: FerryJobOptions,
}

/// The Ferry-only job parameters (`ValidationEnabled`, `ValidationChecks`, `ValidationInstanceType`,
/// `NetworkMode`), checked at the edge (`None` = not given).
#[derive(Debug, Clone, Default)]
pub struct FerryJobOptions {
    pub validation_enabled: Option<bool>,
    pub validation_checks: Option<serde_json::Value>,
    pub validation_instance_type: Option<String>,
    pub network_mode: Option<String>,
}

impl FerryJobOptions {
    /// Writes the given options into `settings`.
    pub fn apply(self, settings: &mut JobSettings) {
        if let Some(v) = self.validation_enabled {
            settings.validation_enabled = Some(v);
        }
        if let Some(v) = self.validation_checks {
            settings.validation_checks = Some(v);
        }
        if let Some(v) = self.validation_instance_type {
            settings.validation_instance_type = Some(v);
        }
        if let Some(v) = self.network_mode {
            settings.network_mode = Some(v);
        }
    }
}

impl JobChanges {
    /// Changes allowed only before the job has first run (SMC: "everything else").
    fn touches_layout(&self) -> bool {
        self.target_type.is_some()
            || self.image_name.is_some()
            || self.instance_id.is_some()
            || self.replication_parameters.is_some()
            || self.scheduled_start_time.is_some()
            || self.system_disk_size.is_some()
            || self.system_disk_parts.is_some()
            || self.data_disks.is_some()
            || self.net_mode.is_some()
            || self.vpc_id.is_some()
            || self.vswitch_id.is_some()
            || self.instance_type.is_some()
            || self.instance_ram_role.is_some()
            || self.launch_template_id.is_some()
            || self.launch_template_version.is_some()
            || self.container_namespace.is_some()
            || self.container_repository.is_some()
            || self.container_tag.is_some()
    }
}

/// What `CreateCrossZoneMigrationJob` asks for, parsed at the edge.
#[derive(Debug, Clone)]
pub struct NewCrossZoneJob {
    pub region_id: String,
    pub instance_id: String,
    pub target_zone_id: String,
    pub target_instance_type: Option<String>,
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
    /// Re-read every disk after its upload and fail the run if any chunk changed in between
    /// (`ReplicateTask::checksum`). Every uploaded chunk is verified by the server whatever this says.
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

/// `ReplicationJob.InvalidStatus` with SMC's message template.
pub fn invalid_status(status: &str, allowed: &str) -> ApiError {
    ApiError::new(
        "ReplicationJob.InvalidStatus",
        400,
        format!(
            "The specified replication job status: {status} is invalid. This operation can only be performed \
             in the following status: {allowed}."
        ),
    )
}

/// `SourceServerState.Invalid` with SMC's message template and what to do.
pub fn source_state_invalid(state: &str, allowed: &str, hint: &str) -> ApiError {
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

pub async fn get_source(st: &AppState, id: &str) -> Result<SourceRecord, ApiError> {
    st.db
        .source_get(id)
        .await
        .or_internal()?
        .ok_or_else(|| source_not_found(id))
}

/// Refuses to act on a source that is being deleted; `why` is the message's last sentence.
fn refuse_deleting(source: &SourceRecord, why: &str) -> Result<(), ApiError> {
    if source.state == "Deleting" {
        return Err(source_state_invalid(
            &source.state,
            "Available, InUse, Unavailable",
            why,
        ));
    }
    Ok(())
}

/// Is the source's agent heart-beating?
pub fn source_online(st: &AppState, s: &SourceRecord, at: i64) -> bool {
    at - s.heartbeat_at <= 3 * i64::from(st.cfg.heartbeat_interval_secs)
}

fn region_not_found(st: &AppState, region_id: &str) -> ApiError {
    ApiError::new(
        "InvalidRegionId.NotFound",
        404,
        format!(
            "region {region_id:?} is not served here: this server's region is {:?}",
            st.cfg.region_id
        ),
    )
}

fn unsupported(message: String) -> ApiError {
    ApiError::new("UnsupportedOperation", 400, message)
}

fn name_duplicate(name: &str) -> ApiError {
    ApiError::new(
        "ReplicationJobName.Duplicate",
        400,
        format!("a replication job named {name:?} already exists: choose another name"),
    )
}

/// The job a client token already created, if any (ClientToken idempotency).
async fn job_for_token(st: &AppState, token: Option<&str>) -> Result<Option<JobId>, ApiError> {
    let Some(token) = token else {
        return Ok(None);
    };
    match st.db.job_by_client_token(token).await.or_internal()? {
        Some(j) => Ok(Some(j.id.parse().or_internal()?)),
        None => Ok(None),
    }
}

/// Checks `JobType` and `TargetType` (+ `InstanceId`), which Create and Modify share.
fn check_target(
    job_type: i64,
    target: TargetType,
    instance_id: Option<&str>,
) -> Result<(), ApiError> {
    match job_type {
        0 => {}
        1 => {
            return Err(unsupported(
                "JobType 1 (OS migration) is not supported by Ferry: use JobType 0 (server migration)".into(),
            ));
        }
        2 => {
            return Err(ApiError::invalid_parameter(
                "JobType",
                "2 (cross-zone migration) is created with CreateCrossZoneMigrationJob, not CreateReplicationJob",
            ));
        }
        3 => {
            return Err(unsupported(
                "JobType 3 (agentless VMware migration) is not supported by Ferry: install ferry-agent on the \
                 source and use JobType 0"
                    .into(),
            ));
        }
        other => {
            return Err(ApiError::invalid_parameter(
                "JobType",
                format!("{other} is not a job type; use 0 (server migration)"),
            ));
        }
    }
    match target {
        TargetType::Image => Ok(()),
        TargetType::ContainerImage => Err(unsupported(
            "TargetType ContainerImage is not supported by Ferry yet (it needs an OCI image builder): use \
             TargetType Image and export the image instead"
                .into(),
        )),
        TargetType::TargetInstance => match instance_id {
            Some(_) => Ok(()),
            None => Err(ApiError::missing_parameter("InstanceId")),
        },
    }
}

fn instance_not_found(id: &str) -> ApiError {
    ApiError::new(
        "InvalidInstanceId.NotFound",
        404,
        format!("instance {id} does not exist: list instances with DescribeInstances"),
    )
}

/// The instance a TargetInstance or cross-zone job names must exist.
async fn check_instance(st: &AppState, instance_id: Option<&str>) -> Result<(), ApiError> {
    if let Some(id) = instance_id
        && st.db.instance_get(id).await.or_internal()?.is_none()
    {
        return Err(instance_not_found(id));
    }
    Ok(())
}

/// Checks the data disks against the source's inventory: indexes must exist there and not repeat.
fn check_data_disks(source: &SourceRecord, disks: &[DataDisk]) -> Result<(), ApiError> {
    let inv: Option<Inventory> = serde_json::from_str(&source.inventory).ok();
    let present: Vec<i64> = inv
        .map(|i| i.disks.iter().map(|d| i64::from(d.index)).collect())
        .unwrap_or_default();
    let mut seen = Vec::new();
    for d in disks {
        if seen.contains(&d.index) {
            return Err(ApiError::new(
                "DataDisk.DuplicateIndex",
                400,
                format!(
                    "data disk index {} is given twice: list each data disk once",
                    d.index
                ),
            ));
        }
        seen.push(d.index);
        if d.index == 0 || !present.contains(&d.index) {
            return Err(ApiError::new(
                "ReplicationJobDataDiskIndex.Invalid",
                400,
                format!(
                    "source server {} has no data disk with index {}: its data disks are {:?} (see \
                     DescribeSourceServers DataDisks)",
                    source.id,
                    d.index,
                    present.iter().filter(|i| **i != 0).collect::<Vec<_>>()
                ),
            ));
        }
    }
    Ok(())
}

/// `ScheduledStartTime`: in the future and within 30 days of `at`.
fn check_scheduled(t: i64, at: i64) -> Result<(), ApiError> {
    if t <= at || t > at + 30 * DAY {
        return Err(ApiError::invalid_parameter(
            "ScheduledStartTime",
            "must be in the future and at most 30 days from now (UTC, e.g. 2024-01-01T00:00:00Z)",
        ));
    }
    Ok(())
}

/// `ValidTime`: 7 to 90 days after the job's creation.
fn check_valid_time(t: i64, created: i64) -> Result<(), ApiError> {
    if t < created + 7 * DAY || t > created + 90 * DAY {
        return Err(ApiError::invalid_parameter(
            "ValidTime",
            "must be 7 to 90 days after the job's creation time",
        ));
    }
    Ok(())
}

/// CreateReplicationJob. A repeated call with the same `ClientToken` answers the job the first created.
pub async fn create(st: &AppState, new: NewJob) -> Result<JobId, ApiError> {
    if let Some(id) = job_for_token(st, new.client_token.as_deref()).await? {
        return Ok(id);
    }
    if new.region_id != st.cfg.region_id {
        return Err(region_not_found(st, &new.region_id));
    }
    check_target(new.job_type, new.target_type, new.instance_id.as_deref())?;
    if new.target_type == TargetType::TargetInstance {
        check_instance(st, new.instance_id.as_deref()).await?;
    }
    let source = get_source(st, &new.source_id).await?;
    check_data_disks(&source, &new.settings.data_disks)?;
    ReplicationParameters::parse(&new.replication_parameters)?;
    let created = st.clock.now();
    if let Some(t) = new.scheduled_start_time {
        check_scheduled(t, created)?;
    }
    if let Some(t) = new.valid_time {
        check_valid_time(t, created)?;
    }
    let id = JobId::generate();
    let name = match new.name {
        Some(n) => n,
        None => format!("{}-{}", source.name, &id.as_str()[4..10]),
    };
    if st.db.job_name_taken(&name).await.or_internal()? {
        return Err(name_duplicate(&name));
    }
    let mut image_name = new.image_name.unwrap_or_else(|| format!("{name}-image"));
    if st.db.image_name_taken(&image_name).await.or_internal()? {
        // SMC's rule: a clashing image name gets the job ID appended.
        image_name = format!("{image_name}_{id}");
    }
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
        job_type: new.job_type,
        target_type: new.target_type.as_str().to_owned(),
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
        valid_time: Some(new.valid_time.unwrap_or(created + DEFAULT_VALID_SECS)),
        client_token: new.client_token.clone(),
    };
    let settings = JobSettingsRecord {
        job_id: rec.id.clone(),
        instance_id: new.instance_id,
        settings: new.settings.encode()?,
        cutover: 0,
        expired_at: None,
    };
    let created_id = insert_job(st, &rec, &settings, &source)
        .await?
        .unwrap_or(id);
    st.wake.notify_waiters();
    Ok(created_id)
}

/// Inserts a job. A concurrent create with the same client token (the unique index refuses the second
/// insert) answers `Some` of the first one's job.
async fn insert_job(
    st: &AppState,
    rec: &JobRecord,
    settings: &JobSettingsRecord,
    source: &SourceRecord,
) -> Result<Option<JobId>, ApiError> {
    match st.db.job_create_with_settings(rec, settings).await {
        Ok(true) => Ok(None),
        Ok(false) => {
            if let Some(first) = job_for_token(st, rec.client_token.as_deref()).await? {
                return Ok(Some(first));
            }
            let current = st
                .db
                .source_get(&source.id)
                .await
                .or_internal()?
                .map_or_else(|| source.state.clone(), |s| s.state);
            Err(source_state_invalid(
                &current,
                "Available",
                "A source can have one open replication job (Ready, Running, Stopped, Waiting, InError or \
                 Expired): finish or delete that job first, or wait until the agent is back online.",
            ))
        }
        Err(e) => {
            if let Some(first) = job_for_token(st, rec.client_token.as_deref()).await? {
                return Ok(Some(first));
            }
            Err(super::internal(e))
        }
    }
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
    let source = get_source(st, &job.source_id).await?;
    let at = now();
    let job_at = st.clock.now();
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
            let settings =
                JobSettings::decode(&st.db.job_settings_get(job_id).await.or_internal()?.settings);
            // The system disk and the data disks the job names; every reported disk when it names none.
            let disks: Vec<u32> = inv
                .disks
                .iter()
                .map(|d| d.index)
                .filter(|i| {
                    settings.data_disks.is_empty()
                        || *i == 0
                        || settings.data_disks.iter().any(|d| d.index == i64::from(*i))
                })
                .collect();
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
                started_at: job_at,
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
        .job_set_times(job_id, Some(job_at), None)
        .await
        .or_internal()?;
    st.db.job_set_progress(job_id, 0.0).await.or_internal()?;
    st.tasks_changed.notify_waiters();
    agent_api::source_changed(st, &job.source_id).await;
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
    agent_api::source_changed(st, &job.source_id).await;
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
        checksum: params.checksum.unwrap_or(false),
        committed_disks: committed,
        previous: serde_json::from_str::<RunProgress>(&run.progress)
            .ok()
            .filter(|p| p.bytes_sent > 0 || p.bytes_scanned > 0),
        // A cutover's final sync: the source's own pre-cutover hooks run before its disks are read.
        pre_cutover_hooks: st.db.job_settings_get(job_id).await.or_internal()?.cutover != 0,
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
    if job.status_info.as_deref() != p.paused_reason.as_deref() {
        st.db
            .job_set_status_info(&job.id, p.paused_reason.as_deref())
            .await
            .or_internal()?;
    }
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
                .run_transition(
                    &run.id,
                    "Syncing",
                    "Failed",
                    Some(message),
                    Some(st.clock.now()),
                )
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

/// ModifyReplicationJobAttribute. What may change depends on the status (SMC, §2.5): `Name` and
/// `Description` always (but not while `Deleting`); `Frequency`/`MaxNumberOfImageToKeep` before the first
/// run or while `Waiting`; `ValidTime` in Ready, Running, Stopped, InError, Waiting; everything else only
/// before the first run (`Ready`). A violation is `ReplicationJob.InvalidStatus`.
pub async fn modify(st: &AppState, job_id: &str, ch: JobChanges) -> Result<(), ApiError> {
    let mut job = get_job(st, job_id).await?;
    let status = job.status.clone();
    let never_ran = status == "Ready";
    if status == "Deleting" {
        return Err(invalid_status(
            &status,
            "Ready, Running, Stopped, InError, Waiting, Finished, Expired",
        ));
    }
    if (ch.frequency.is_some() || ch.max_images.is_some()) && !(never_ran || status == "Waiting") {
        return Err(invalid_status(&status, "Ready, Waiting"));
    }
    if ch.valid_time.is_some()
        && !matches!(
            status.as_str(),
            "Ready" | "Running" | "Stopped" | "InError" | "Waiting"
        )
    {
        return Err(invalid_status(
            &status,
            "Ready, Running, Stopped, InError, Waiting",
        ));
    }
    if ch.touches_layout() && !never_ran {
        return Err(invalid_status(&status, "Ready"));
    }
    if (ch.frequency.is_some() || ch.max_images.is_some()) && job.run_once != 0 {
        return Err(ApiError::invalid_parameter(
            if ch.frequency.is_some() {
                "Frequency"
            } else {
                "MaxNumberOfImageToKeep"
            },
            "applies only to incremental jobs (RunOnce=false); RunOnce is fixed at creation",
        ));
    }
    let mut srec = st.db.job_settings_get(job_id).await.or_internal()?;
    let mut settings = JobSettings::decode(&srec.settings);
    if let Some(n) = ch.name
        && n != job.name
    {
        if st.db.job_name_taken(&n).await.or_internal()? {
            return Err(name_duplicate(&n));
        }
        job.name = n;
    }
    if let Some(d) = ch.description {
        job.description = d;
    }
    if let Some(t) = ch.valid_time {
        check_valid_time(t, job.created_at)?;
        job.valid_time = Some(t);
    }
    if let Some(f) = ch.frequency {
        job.frequency = Some(f);
    }
    if let Some(m) = ch.max_images {
        job.max_images = Some(m);
    }
    if let Some(t) = ch.scheduled_start_time {
        check_scheduled(t, st.clock.now())?;
        job.scheduled_start_time = Some(t);
    }
    if let Some(p) = ch.replication_parameters {
        ReplicationParameters::parse(&p)?;
        job.replication_parameters = p;
    }
    if let Some(i) = ch.instance_id {
        srec.instance_id = Some(i);
    }
    if let Some(t) = ch.target_type {
        job.target_type = t.as_str().to_owned();
    }
    let target = TargetType::parse(&job.target_type)?;
    check_target(job.job_type, target, srec.instance_id.as_deref())?;
    if target == TargetType::TargetInstance {
        check_instance(st, srec.instance_id.as_deref()).await?;
    }
    if let Some(n) = ch.image_name
        && n != job.image_name
    {
        job.image_name = if st.db.image_name_taken(&n).await.or_internal()? {
            format!("{n}-{}", job.id)
        } else {
            n
        };
    }
    if let Some(disks) = ch.data_disks {
        let source = get_source(st, &job.source_id).await?;
        check_data_disks(&source, &disks)?;
        settings.data_disks = disks;
    }
    let set = |slot: &mut Option<String>, v: Option<String>| {
        if v.is_some() {
            *slot = v;
        }
    };
    set(&mut settings.vpc_id, ch.vpc_id);
    set(&mut settings.vswitch_id, ch.vswitch_id);
    set(&mut settings.instance_type, ch.instance_type);
    set(&mut settings.instance_ram_role, ch.instance_ram_role);
    set(&mut settings.launch_template_id, ch.launch_template_id);
    set(
        &mut settings.launch_template_version,
        ch.launch_template_version,
    );
    set(&mut settings.container_namespace, ch.container_namespace);
    set(&mut settings.container_repository, ch.container_repository);
    set(&mut settings.container_tag, ch.container_tag);
    if let Some(n) = ch.net_mode {
        settings.net_mode = n;
    }
    if settings.net_mode == 2 && settings.vswitch_id.is_none() {
        return Err(ApiError::missing_parameter("VSwitchId"));
    }
    if let Some(s) = ch.system_disk_size {
        settings.system_disk_size = Some(s);
    }
    if let Some(p) = ch.system_disk_parts {
        settings.system_disk_parts = p;
    }
    ch.ferry.apply(&mut settings);
    srec.settings = settings.encode()?;
    if !st.db.job_update_attributes(&job).await.or_internal()? {
        let now_status = get_job(st, job_id).await?.status;
        return Err(invalid_status(&now_status, &status));
    }
    st.db.job_settings_put(&srec).await.or_internal()?;
    st.wake.notify_waiters();
    Ok(())
}

/// DeleteReplicationJob: any status but `Running` (and `Deleting`). The job becomes `Deleting` at once and
/// its source is released; the scheduler then purges it (runs, snapshot records and indexes). Images it
/// delivered are the user's and stay.
pub async fn delete(st: &AppState, job_id: &str) -> Result<(), ApiError> {
    let job = get_job(st, job_id).await?;
    if st
        .db
        .job_delete_begin(job_id)
        .await
        .or_internal()?
        .is_none()
    {
        let now_status = get_job(st, job_id).await.map_or(job.status, |j| j.status);
        return Err(invalid_status(
            &now_status,
            "Ready, Stopped, InError, Waiting, Finished, Expired",
        ));
    }
    st.tasks_changed.notify_waiters();
    agent_api::source_changed(st, &job.source_id).await;
    st.wake.notify_waiters();
    Ok(())
}

/// CutOverReplicationJob: only an incremental job that is `Waiting`. With `sync_data` one last run copies
/// the latest changes and its image ends the job (`Finished`); without, the job ends now with the image
/// it has.
pub async fn cut_over(st: &AppState, job_id: &str, sync_data: bool) -> Result<(), ApiError> {
    let job = get_job(st, job_id).await?;
    if job.status != "Waiting" || job.run_once != 0 {
        return Err(invalid_status(
            &job.status,
            "Waiting (incremental jobs, RunOnce=false)",
        ));
    }
    if !sync_data {
        if !st
            .db
            .job_finish_waiting(job_id, st.clock.now())
            .await
            .or_internal()?
        {
            return Err(invalid_status(
                &get_job(st, job_id).await?.status,
                "Waiting",
            ));
        }
        // Finalize: the job's test instances go (its images follow the retention rule).
        if let Err(e) = crate::workers::validate::finalize(st, job_id).await {
            tracing::warn!(job = job_id, error = %e, "finalizing the job failed; its test instances remain");
        }
        st.wake.notify_waiters();
        return Ok(());
    }
    let mut settings = st.db.job_settings_get(job_id).await.or_internal()?;
    settings.cutover = 1;
    st.db.job_settings_put(&settings).await.or_internal()?;
    if let Err(e) = start(st, job_id, "Manual").await {
        // The final run did not start (for example the agent is offline): the job stays an ordinary
        // Waiting incremental job, and the cut-over can be asked again.
        settings.cutover = 0;
        st.db.job_settings_put(&settings).await.or_internal()?;
        return Err(e);
    }
    Ok(())
}

/// CreateCrossZoneMigrationJob: validated here (the instance must exist: `InvalidInstanceId.NotFound`).
/// A Ferry region has a single zone, so there is nowhere to move an instance to: an existing instance is
/// answered `UnsupportedOperation`.
pub async fn create_cross_zone(st: &AppState, new: NewCrossZoneJob) -> Result<JobId, ApiError> {
    if let Some(id) = job_for_token(st, new.client_token.as_deref()).await? {
        return Ok(id);
    }
    if new.region_id != st.cfg.region_id {
        return Err(region_not_found(st, &new.region_id));
    }
    check_instance(st, Some(&new.instance_id)).await?;
    Err(unsupported(format!(
        "cross-zone migration of instance {} to zone {} is not supported: a Ferry region has a single \
         zone. To move the server elsewhere, create an image from it and launch a new instance",
        new.instance_id, new.target_zone_id
    )))
}

/// ModifySourceServerAttribute.
pub async fn modify_source(
    st: &AppState,
    source_id: &str,
    name: Option<&str>,
    description: Option<&str>,
) -> Result<(), ApiError> {
    let source = get_source(st, source_id).await?;
    refuse_deleting(&source, "The source server is being deleted.")?;
    if let Some(n) = name
        && st.db.source_name_taken(n, source_id).await.or_internal()?
    {
        return Err(ApiError::new(
            "SourceServerName.Duplicate",
            400,
            format!("a source server named {n:?} already exists: choose another name"),
        ));
    }
    if !st
        .db
        .source_update_attributes(source_id, name, description)
        .await
        .or_internal()?
    {
        return Err(source_not_found(source_id));
    }
    Ok(())
}

/// DeleteSourceServer. Without `force` the source must have no open job (`SourceServer.WithRunningReplicationJob`
/// when it runs, `ReplicationJob.Related` otherwise); with `force` its open job is deleted too, even a running
/// one (its run is abandoned). Deleting the source revokes its agent's credentials: the agent's next call is
/// refused with `Unauthorized` and a message saying the source may have been deleted.
pub async fn delete_source(st: &AppState, source_id: &str, force: bool) -> Result<(), ApiError> {
    let source = get_source(st, source_id).await?;
    refuse_deleting(&source, "The source server is already being deleted.")?;
    let open_job = match &source.job_id {
        Some(j) => st.db.job_get(j).await.or_internal()?,
        None => None,
    };
    if let Some(job) = &open_job {
        if !force {
            return Err(if job.status == "Running" {
                ApiError::new(
                    "SourceServer.WithRunningReplicationJob",
                    400,
                    format!(
                        "source server {source_id} has a running replication job ({}): stop it first, or \
                         delete with Force=true",
                        job.id
                    ),
                )
            } else {
                ApiError::new(
                    "ReplicationJob.Related",
                    400,
                    format!(
                        "source server {source_id} has an open replication job ({}, {}): delete the job \
                         first, or delete with Force=true",
                        job.id, job.status
                    ),
                )
            });
        }
        if !st.db.job_delete_force(&job.id).await.or_internal()? {
            return Err(invalid_status(&job.status, "any status but Deleting"));
        }
    }
    st.db
        .source_set_state(source_id, "Deleting", None, None)
        .await
        .or_internal()?;
    // Tags and workgroup membership belong to the source: they go with it.
    st.db
        .tags_drop_resource("sourceserver", source_id)
        .await
        .or_internal()?;
    st.db.workgroup_drop_source(source_id).await.or_internal()?;
    st.db.source_delete(source_id).await.or_internal()?;
    st.tasks_changed.notify_waiters();
    agent_api::source_changed(st, source_id).await;
    st.wake.notify_waiters();
    Ok(())
}
