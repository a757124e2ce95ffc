//! The agent API, protocol v1 (`/agent/v1/…`, `docs/agent-protocol.md`): activation, heartbeats, and the
//! chunk protocol of a replication run.
//!
//! Every call but `ca.pem` and `activate` is authenticated with the agent's own credentials and may only
//! touch its own source server's runs. Uploads are verified before anything is stored; a bad upload is
//! rejected and never damages what is already stored.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use ferry_api::ApiError;
use ferry_chunk::{ChunkStoreError, Digest, DiskIndex, PutOutcome, StoreError};
use ferry_db::{SourceRecord, now};
use ferry_types::protocol::{
    ActivateRequest, ActivateResponse, AgentApiError, AgentState, ChunkStored, HeartbeatRequest,
    HeartbeatResponse, MissingRequest, MissingResponse, RunFinish, RunProgress, SERVER_TIME_HEADER,
    SnapshotCommitted,
};
use subtle::ConstantTimeEq as _;

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
            now(),
            &req.agent_version,
            inventory.as_deref(),
            prechecks.as_deref(),
        )
        .await
        .or_internal()?;
    if source.state == "Unavailable" {
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
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(u64::from(st.cfg.heartbeat_interval_secs));
    let task = loop {
        // Register interest before looking, so a change between the look and the wait is not missed.
        let changed = st.tasks_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        // The source's job may have been created while this heartbeat waited: look at it afresh.
        if let Some(fresh) = st.db.source_get(&source.id).await.or_internal()? {
            source = fresh;
        }
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
    ok(HeartbeatResponse {
        heartbeat_interval_secs: st.cfg.heartbeat_interval_secs,
        task,
    })
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
