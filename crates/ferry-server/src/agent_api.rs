//! The agent API, protocol v1 (`/agent/v1/…`, `docs/agent-protocol.md`): activation, heartbeats, and the
//! chunk protocol of a replication run.
//!
//! Every call but `ca.pem` and `activate` is authenticated with the agent's own credentials and may only
//! touch its own source server's runs. Uploads are verified before anything is stored; a bad upload is
//! rejected and never damages what is already stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use ferry_api::ApiError;
use ferry_chunk::{ChunkStoreError, Digest, DiskIndex, PutOutcome, StoreError};
use ferry_db::{HeartbeatSeen, SourceRecord, now};
use ferry_types::protocol::{
    ActivateRequest, ActivateResponse, AgentApiError, AgentState, ChunkStored, HeartbeatRequest,
    HeartbeatResponse, MissingRequest, MissingResponse, RunFinish, RunProgress, SERVER_TIME_HEADER,
    SnapshotCommitted,
};
use subtle::ConstantTimeEq as _;
use tokio::sync::Notify;

use crate::AppState;
use crate::app::{OrInternal, activation, internal, jobs, secret_hash};
use crate::ops::ChunkUpload;

/// Largest chunk blob accepted (header + at most 16 MiB of payload).
const MAX_CHUNK_BODY: usize = ferry_chunk::MAX_CHUNK_SIZE + 4096;
/// Largest index accepted: 256 MiB is 8 Mi chunks, i.e. an 8 TiB disk at 1 MiB chunks.
const MAX_INDEX_BODY: usize = 256 << 20;
/// Digests per "which are missing" request.
pub const MAX_MISSING_BATCH: usize = 4096;

type St = State<Arc<AppState>>;

pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/ca.pem", get(ca_pem))
        .route("/activate", post(activate))
        .route("/heartbeat", post(heartbeat))
        .route("/runs/{run}/missing", post(missing))
        .route(
            "/runs/{run}/chunks/{digest}",
            put(put_chunk).layer(DefaultBodyLimit::max(MAX_CHUNK_BODY)),
        )
        .route(
            "/runs/{run}/disks/{disk}/index",
            put(put_index).layer(DefaultBodyLimit::max(MAX_INDEX_BODY)),
        )
        .route("/runs/{run}/disks/{disk}/base", get(get_base))
        .route("/runs/{run}/progress", post(progress))
        .route("/runs/{run}/finish", post(finish))
}

/// An agent-API error: rendered as `AgentApiError` JSON with the status of the underlying `ApiError`.
pub struct AgentError(pub ApiError);

impl From<ApiError> for AgentError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = AgentApiError {
            code: self.0.code.to_string(),
            message: self.0.message.clone(),
        };
        with_time((status, Json(body)).into_response())
    }
}

/// Every agent response carries the server's clock, for the agent's clock-skew precheck.
fn with_time(mut r: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&now().to_string()) {
        r.headers_mut().insert(SERVER_TIME_HEADER, v);
    }
    r
}

fn ok<T: serde::Serialize>(v: T) -> Result<Response, AgentError> {
    Ok(with_time(Json(v).into_response()))
}

/// Maps object-store failures: a full disk is the operator's to fix (507, the agent pauses and retries).
pub fn store_error(e: ChunkStoreError) -> ApiError {
    match e {
        ChunkStoreError::Store(StoreError::NoSpace { .. }) => {
            ApiError::new("NoSpace", 507, e.to_string())
        }
        ChunkStoreError::Rejected { digest, source } => ApiError::new(
            "ChunkRejected",
            400,
            format!("chunk {digest} rejected: {source}"),
        ),
        ChunkStoreError::Index(i) => {
            ApiError::new("IndexRejected", 409, format!("index rejected: {i}"))
        }
        other => internal(other),
    }
}

fn unauthorized(why: &str) -> AgentError {
    AgentError(ApiError::new(
        "Unauthorized",
        401,
        format!(
            "{why}: re-activate this agent with a new activation code (`ferry-agent activate`)"
        ),
    ))
}

/// Authenticates an agent by its bearer credentials and returns its source server.
async fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<SourceRecord, AgentError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("missing agent credentials"))?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| unauthorized("malformed agent credentials"))?;
    let (key_id, secret) = token
        .split_once('.')
        .ok_or_else(|| unauthorized("malformed agent credentials"))?;
    let source = st
        .db
        .source_by_agent_key(key_id)
        .await
        .or_internal()?
        .ok_or_else(|| {
            unauthorized("unknown agent credentials (was the source server deleted?)")
        })?;
    let ok: bool = secret_hash(secret)
        .as_bytes()
        .ct_eq(source.agent_secret_hash.as_bytes())
        .into();
    if !ok {
        return Err(unauthorized("wrong agent credentials"));
    }
    tracing::Span::current().record("source_id", source.id.as_str());
    Ok(source)
}

/// The guard of every call on a run: the agent's credentials, and the run being its own and syncing.
async fn run_call(
    st: &AppState,
    headers: &HeaderMap,
    run_id: &str,
) -> Result<(ferry_db::JobRecord, ferry_db::RunRecord), AgentError> {
    let source = authenticate(st, headers).await?;
    let (job, run) = jobs::active_run(st, &source, run_id).await?;
    tracing::Span::current().record("job_id", job.id.as_str());
    Ok((job, run))
}

async fn ca_pem(State(st): St) -> Response {
    with_time(
        (
            [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
            st.ca_pem.clone(),
        )
            .into_response(),
    )
}

async fn activate(State(st): St, body: Bytes) -> Result<Response, AgentError> {
    let req: ActivateRequest = parse_json(&body)?;
    let credentials = activation::activate(&st, &req).await?;
    ok(ActivateResponse {
        credentials,
        heartbeat_interval_secs: st.cfg.heartbeat_interval_secs,
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AgentError> {
    serde_json::from_slice(body).map_err(|e| {
        AgentError(ApiError::new(
            "MalformedRequest",
            400,
            format!("the request body is not valid agent protocol v1 JSON: {e}. Is the agent's version compatible?"),
        ))
    })
}

async fn heartbeat(State(st): St, headers: HeaderMap, body: Bytes) -> Result<Response, AgentError> {
    let mut source = authenticate(&st, &headers).await?;
    let req: HeartbeatRequest = parse_json(&body)?;
    let at = now();
    let back = source.state == "Unavailable";
    if req.inventory.is_some() || req.prechecks.is_some() || back {
        // Written at once (without waiting for the disk: `Db::relaxed`): the inventory and prechecks are read
        // by Describe calls and job starts, and a source coming back must not look silent to another
        // replica's offline detector until the next flush.
        let inventory = req
            .inventory
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .or_internal()?;
        let prechecks = req
            .prechecks
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .or_internal()?;
        st.db
            .source_update_heartbeat(
                &source.id,
                at,
                &req.agent_version,
                inventory.as_deref(),
                prechecks.as_deref(),
            )
            .await
            .or_internal()?;
    } else {
        // The common case: kept in memory and flushed in batches (workers::offline).
        st.agents.beat(&source.id, at, &req.agent_version);
    }
    if back {
        let back = if source.job_id.is_some() {
            "InUse"
        } else {
            "Available"
        };
        st.db
            .source_set_state(&source.id, back, None, None)
            .await
            .or_internal()?;
        source.state = back.to_owned();
    }
    let current = match &req.state {
        AgentState::Replicating { run_id } => Some(run_id.clone()),
        AgentState::Idle => None,
    };
    let hold = st.cfg.heartbeat_interval_secs.min(st.cfg.long_poll_secs);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(hold));
    // Woken only by changes to this source's runs (and by a shutdown); removed when the poll ends.
    let waiter = st.agents.waiter(&source.id);
    let mut fresh = true;
    let task = loop {
        // Register interest before looking, so a change between the look and the wait is not missed.
        let changed = waiter.notify.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if !fresh {
            // Something changed for this source (a job created, started, stopped or deleted): look afresh.
            match st.db.source_get(&source.id).await.or_internal()? {
                Some(s) => source = s,
                None => break None,
            }
        }
        fresh = false;
        let task = jobs::task_for_source(&st, &source).await?;
        let news = task.as_ref().map(|t| &t.run_id) != current.as_ref();
        // A draining server answers at once, so that the shutdown does not wait for long polls.
        if !req.wait
            || news
            || tokio::time::Instant::now() >= deadline
            || st.lifecycle.is_draining()
        {
            break task;
        }
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    };
    drop(waiter);
    ok(HeartbeatResponse {
        heartbeat_interval_secs: st.cfg.heartbeat_interval_secs,
        task,
    })
}

/// The runs of `source_id` changed (a job started, stopped or deleted, the source deleted): wakes its
/// polls on this replica and announces it to the other replicas, whose polls then look afresh
/// ([`listen_to_other_replicas`]). A failed announcement only delays those agents until their poll ends.
pub async fn source_changed(st: &AppState, source_id: &str) {
    st.agents.wake(source_id);
    if let Err(e) = st.db.announce_source_changed(source_id).await {
        tracing::warn!(source_id, error = %e, "cannot tell the other replicas that a source's runs changed: its agent, if it polls another replica, learns of it when its long poll ends");
    }
}

/// Wakes this replica's polls of every source another replica announces ([`source_changed`]), and all of
/// them when announcements may have been lost. Returns at once on SQLite (one server).
pub async fn listen_to_other_replicas(st: Arc<AppState>) {
    const RETRY: Duration = Duration::from_secs(5);
    let mut changes = loop {
        match st.db.listen_source_changes().await {
            Ok(Some(c)) => break c,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other replicas' run changes; retrying in 5 s");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    loop {
        match changes.next().await {
            Ok(ferry_db::SourceChange::Source(id)) => st.agents.wake(&id),
            Ok(ferry_db::SourceChange::Missed) => st.agents.wake_all(),
            Err(e) => {
                tracing::warn!(error = %e, "lost the connection that hears other replicas' run changes; reconnecting in 5 s");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// The agents this replica talks to: per-source wake-ups of long-polling heartbeats, and the heartbeats
/// received but not yet written to the database.
///
/// Invariants: a waiter entry exists exactly while at least one heartbeat of that source is polling (the
/// [`SourceWaiter`] guard removes it), so the map stays as large as the open polls; a change to a source's
/// runs wakes only that source's polls ([`AgentHub::wake`]), which then re-read their own source; nothing
/// else reads the database while a poll waits. Heartbeats are flushed in one transaction every few seconds
/// (`workers::offline`), so the stored `heartbeat_at` lags by at most the flush period, well inside the
/// three intervals after which a source counts as offline.
#[derive(Default)]
pub struct AgentHub {
    waiters: Mutex<HashMap<String, Waiting>>,
    beats: Mutex<HashMap<String, HeartbeatSeen>>,
}

struct Waiting {
    notify: Arc<Notify>,
    polls: usize,
}

/// One heartbeat's registration for wake-ups of its source; dropping it unregisters.
pub struct SourceWaiter<'a> {
    hub: &'a AgentHub,
    source_id: String,
    pub notify: Arc<Notify>,
}

impl Drop for SourceWaiter<'_> {
    fn drop(&mut self) {
        let mut map = lock(&self.hub.waiters);
        if let Some(w) = map.get_mut(&self.source_id) {
            w.polls = w.polls.saturating_sub(1);
            if w.polls == 0 {
                map.remove(&self.source_id);
            }
        }
    }
}

/// Locks a mutex; a panic while holding it leaves plain data behind, still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AgentHub {
    /// Registers a heartbeat of `source_id` for wake-ups until the returned guard is dropped.
    pub fn waiter(&self, source_id: &str) -> SourceWaiter<'_> {
        let mut map = lock(&self.waiters);
        let w = map.entry(source_id.to_owned()).or_insert_with(|| Waiting {
            notify: Arc::new(Notify::new()),
            polls: 0,
        });
        w.polls += 1;
        SourceWaiter {
            hub: self,
            source_id: source_id.to_owned(),
            notify: w.notify.clone(),
        }
    }

    /// Wakes the heartbeats of `source_id` polling on this replica: its runs changed.
    pub fn wake(&self, source_id: &str) {
        if let Some(w) = lock(&self.waiters).get(source_id) {
            w.notify.notify_waiters();
        }
    }

    /// Wakes every polling heartbeat (a shutdown: they answer at once).
    pub fn wake_all(&self) {
        for w in lock(&self.waiters).values() {
            w.notify.notify_waiters();
        }
    }

    /// Heartbeats polling on this replica now.
    pub fn polling(&self) -> usize {
        lock(&self.waiters).values().map(|w| w.polls).sum()
    }

    /// Notes a heartbeat of `source_id` at `at` (unix seconds), to be flushed.
    pub fn beat(&self, source_id: &str, at: i64, agent_version: &str) {
        let mut beats = lock(&self.beats);
        match beats.get_mut(source_id) {
            Some(b) => {
                b.at = b.at.max(at);
                if b.agent_version != agent_version {
                    agent_version.clone_into(&mut b.agent_version);
                }
            }
            None => {
                beats.insert(
                    source_id.to_owned(),
                    HeartbeatSeen {
                        source_id: source_id.to_owned(),
                        at,
                        agent_version: agent_version.to_owned(),
                    },
                );
            }
        }
    }

    /// The heartbeats noted since the last call, to be written.
    pub fn take_beats(&self) -> Vec<HeartbeatSeen> {
        lock(&self.beats).drain().map(|(_, b)| b).collect()
    }

    /// Puts back beats whose flush failed (a later beat of the same source wins).
    pub fn restore_beats(&self, failed: Vec<HeartbeatSeen>) {
        for b in failed {
            self.beat(&b.source_id, b.at, &b.agent_version);
        }
    }

    /// The unflushed heartbeat time of `source_id`, if any.
    pub fn pending_beat(&self, source_id: &str) -> Option<i64> {
        lock(&self.beats).get(source_id).map(|b| b.at)
    }
}

/// A path parameter, or a clear error naming it.
fn parse_path<T: std::str::FromStr>(name: &str, value: &str, what: &str) -> Result<T, AgentError> {
    value.parse().map_err(|_| {
        AgentError(ApiError::invalid_parameter(
            name,
            format!("{value:?} is not {what}"),
        ))
    })
}

fn parse_digest(hex: &str) -> Result<Digest, AgentError> {
    parse_path("digest", hex, "a BLAKE3 digest in hex")
}

async fn missing(
    State(st): St,
    Path(run_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AgentError> {
    run_call(&st, &headers, &run_id).await?;
    let req: MissingRequest = parse_json(&body)?;
    if req.digests.len() > MAX_MISSING_BATCH {
        return Err(AgentError(ApiError::invalid_parameter(
            "digests",
            format!("at most {MAX_MISSING_BATCH} digests per request"),
        )));
    }
    let digests = req
        .digests
        .iter()
        .map(|d| parse_digest(d))
        .collect::<Result<Vec<_>, _>>()?;
    let missing = st.chunks.missing(&digests).await.map_err(store_error)?;
    ok(MissingResponse {
        missing: missing.into_iter().map(|i| i as u32).collect(),
    })
}

async fn put_chunk(
    State(st): St,
    Path((run_id, digest)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AgentError> {
    let (job, _run) = run_call(&st, &headers, &run_id).await?;
    let digest = parse_digest(&digest)?;
    let received = body.len() as u64;
    // Only read once the blob verified, when the header is known to be sound.
    let logical = |b: &Bytes| ferry_chunk::blob::peek_header(b).map_or(0, |h| u64::from(h.raw_len));
    let m = &st.metrics;
    match st.chunks.put_verified(&digest, body.clone()).await {
        Ok(outcome) => {
            match outcome {
                PutOutcome::Stored => {
                    m.chunk_upload(ChunkUpload::Stored, received, received, logical(&body))
                }
                PutOutcome::AlreadyPresent => {
                    m.chunk_upload(ChunkUpload::Duplicate, received, 0, 0)
                }
            }
            if job.status_info.is_some() {
                // A pause (e.g. a full disk) is over.
                st.db
                    .job_set_status_info(&job.id, None)
                    .await
                    .or_internal()?;
            }
            ok(ChunkStored {
                stored: matches!(outcome, PutOutcome::Stored),
            })
        }
        Err(e) => {
            if matches!(e, ChunkStoreError::Rejected { .. }) {
                m.chunk_upload(ChunkUpload::Rejected, received, 0, 0);
            }
            let err = store_error(e);
            if err.status == 507 {
                tracing::warn!(job = %job.id, "data directory full: run paused until space is freed");
                st.db
                    .job_set_status_info(&job.id, Some(&format!("paused: {}", err.message)))
                    .await
                    .or_internal()?;
            }
            Err(AgentError(err))
        }
    }
}

fn parse_disk(disk: &str) -> Result<u32, AgentError> {
    parse_path("disk", disk, "a disk index")
}

async fn put_index(
    State(st): St,
    Path((run_id, disk)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AgentError> {
    let (job, run) = run_call(&st, &headers, &run_id).await?;
    let disk = parse_disk(&disk)?;
    let index = DiskIndex::decode(&body).map_err(|e| {
        AgentError(ApiError::new(
            "IndexRejected",
            400,
            format!("index rejected: {e}"),
        ))
    })?;
    // A retried commit returns the snapshot committed before: count each snapshot once.
    let already = st
        .db
        .snapshot_list_by_run(&run.id)
        .await
        .or_internal()?
        .iter()
        .any(|s| s.disk_index == i64::from(disk));
    let snap = jobs::commit_snapshot(&st, &job, &run, disk, &index).await?;
    if !already {
        let logical: u64 = index
            .data_chunks()
            .map(|(i, _)| index.chunk_extent(i).1 as u64)
            .sum();
        st.metrics.snapshot_committed(logical);
        tracing::info!(disk, snapshot_id = %snap.id, root_digest = %snap.root_digest, logical_bytes = logical, "snapshot committed");
    }
    ok(SnapshotCommitted {
        snapshot_id: snap.id.parse().or_internal()?,
        root_digest: snap.root_digest,
    })
}

async fn get_base(
    State(st): St,
    Path((run_id, disk)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AgentError> {
    let (job, run) = run_call(&st, &headers, &run_id).await?;
    let disk = parse_disk(&disk)?;
    let Some(base) = st
        .db
        .snapshot_latest_for_disk(&job.id, i64::from(disk), &run.id)
        .await
        .or_internal()?
    else {
        return Err(AgentError(ApiError::new(
            "NoBaseSnapshot",
            404,
            format!(
                "job {} has no earlier snapshot of disk {disk}: this run is a full sync",
                job.id
            ),
        )));
    };
    let index = st
        .chunks
        .get_index(&jobs::index_key(&base.run_id, disk))
        .await
        .map_err(store_error)?;
    Ok(with_time(
        (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            index.encode(),
        )
            .into_response(),
    ))
}

async fn progress(
    State(st): St,
    Path(run_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AgentError> {
    let (job, run) = run_call(&st, &headers, &run_id).await?;
    let p: RunProgress = parse_json(&body)?;
    jobs::record_progress(&st, &job, &run, &p).await?;
    ok(serde_json::json!({}))
}

async fn finish(
    State(st): St,
    Path(run_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AgentError> {
    let (job, run) = run_call(&st, &headers, &run_id).await?;
    let f: RunFinish = parse_json(&body)?;
    jobs::finish(&st, &job, &run, &f).await?;
    match &f {
        RunFinish::Succeeded { progress } => {
            tracing::info!(
                bytes_sent = progress.bytes_sent,
                elapsed_ms = progress.elapsed_ms,
                "agent finished the run"
            )
        }
        RunFinish::Failed { code, message } => {
            tracing::warn!(%code, %message, "agent reports the run failed")
        }
    }
    ok(serde_json::json!({}))
}
