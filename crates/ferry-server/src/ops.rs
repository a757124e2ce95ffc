//! Operating the server: `/metrics` (Prometheus text format 0.0.4), `/health` (liveness), `/ready`
//! (readiness), the request-tracking middleware (in-flight count, agent-API spans and latency), and the
//! graceful shutdown. `docs/operations.md` is the operator's view of all of it.
//!
//! Metrics use the `prometheus` crate (TiKV's client, the most used one for Rust) without its protobuf
//! feature: its text encoder writes correct `# HELP`/`# TYPE` lines and escapes label values, and its
//! process collector reads `/proc/self` for memory, CPU time and open file descriptors. What is counted
//! in-process lives in one [`Metrics`] registry; what lives in the database (jobs by status, sources by
//! state, agents online) is read with one cheap aggregate query per family at scrape time, so every replica
//! reports the same fleet-wide values and nothing is cached that could go stale.
//!
//! Invariants: label cardinality is bounded (an API action is only used as a label once this process has
//! dispatched it to a real handler, anything else is `other`; agent routes are the router's templates, not
//! the raw paths); `/health` and `/ready` need no authentication and reveal no secrets; a shutdown never
//! drops a request whose response was sent, and flushes the chunk store before it returns.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ferry_api::Product;
use prometheus::core::Collector;
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use serde_json::{Value, json};
use tracing::Instrument as _;

use crate::{AppState, RunningServer};

/// How long a shutdown waits for in-flight requests by default (`ferry server --shutdown-grace`).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Version of the `/health` and `/ready` JSON bodies (`docs/operations.md`).
pub const PROBE_FORMAT_VERSION: u32 = 1;

/// Longest time one readiness check or one scrape query may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The object `/ready` writes and reads back to prove the object store works.
const READY_PROBE_KEY: &str = "ops/ready-probe";

/// Job statuses (reference §2.5) and source states (§2.4), always reported (as 0 when none), so that a
/// status that empties still has a series.
const JOB_STATUSES: &[&str] = &[
    "Ready", "Running", "Stopped", "InError", "Finished", "Waiting", "Expired", "Deleting",
];
const SOURCE_STATES: &[&str] = &["Available", "InUse", "Unavailable", "Deleting"];

/// The outcome of one chunk upload, for `ferry_chunk_uploads_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkUpload {
    /// A new chunk was stored.
    Stored,
    /// The chunk was already stored (a retry, or a race between two sources).
    Duplicate,
    /// The upload failed verification and was not stored.
    Rejected,
}

impl ChunkUpload {
    fn label(self) -> &'static str {
        match self {
            ChunkUpload::Stored => "stored",
            ChunkUpload::Duplicate => "duplicate",
            ChunkUpload::Rejected => "rejected",
        }
    }
}

/// The metrics this process counts itself, in one registry. Counters start at 0 with the process.
pub struct Metrics {
    registry: Registry,
    chunk_uploads: IntCounterVec,
    chunk_upload_bytes: IntCounter,
    chunk_stored_bytes: IntCounter,
    chunk_stored_logical_bytes: IntCounter,
    bytes_replicated: IntCounter,
    snapshots_committed: IntCounter,
    api_duration: HistogramVec,
    agent_duration: HistogramVec,
    in_flight: IntGauge,
    connections: IntCounter,
    /// `(product, action)` pairs this process has dispatched to a handler: the only action labels used.
    known_actions: Mutex<HashSet<(Product, String)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The metric definitions are constants of this module: the library refuses one only for an invalid or
/// duplicate name, a bug that every test run shows at once.
fn defined<T>(r: prometheus::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("invalid metric definition in ferry_server::ops: {e}"))
}

/// Registers `c` in `registry` and returns it.
fn registered<C: Collector + Clone + 'static>(registry: &Registry, c: prometheus::Result<C>) -> C {
    let c = defined(c);
    defined(registry.register(Box::new(c.clone())));
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    registered(registry, IntCounter::new(name, help))
}

/// Counts connections as they are accepted ([`Metrics::counting`]). Connection churn is what makes TLS
/// handshakes, the dearest thing an agent's request can cost the server.
#[derive(Clone)]
pub struct CountingAcceptor<A> {
    inner: A,
    accepted: IntCounter,
}

impl<A: axum_server::accept::Accept<I, S>, I, S> axum_server::accept::Accept<I, S>
    for CountingAcceptor<A>
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = A::Future;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        self.accepted.inc();
        self.inner.accept(stream, service)
    }
}

/// Latency buckets: 1 ms … 60 s (a chunk upload of 16 MiB over a slow link takes seconds).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    registered(registry, HistogramVec::new(opts, labels))
}

impl Metrics {
    /// A registry with every in-process metric at 0, and the process collector (Linux `/proc`).
    pub fn new() -> Self {
        let registry = Registry::new();
        let chunk_uploads = registered(
            &registry,
            IntCounterVec::new(
                Opts::new("ferry_chunk_uploads_total", "Chunk uploads by outcome."),
                &["outcome"],
            ),
        );
        // Every outcome has a series from the start, so `rate()` sees the first increment.
        for o in [
            ChunkUpload::Stored,
            ChunkUpload::Duplicate,
            ChunkUpload::Rejected,
        ] {
            chunk_uploads.with_label_values(&[o.label()]);
        }
        let in_flight = registered(
            &registry,
            IntGauge::new(
                "ferry_http_requests_in_flight",
                "HTTP requests being handled now (all routes).",
            ),
        );
        #[cfg(target_os = "linux")]
        if let Err(e) = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::warn!(error = %e, "process metrics unavailable");
        }
        Metrics {
            chunk_upload_bytes: counter(
                &registry,
                "ferry_chunk_upload_bytes_total",
                "Bytes of accepted chunk uploads as received (compressed blobs), duplicates included.",
            ),
            chunk_stored_bytes: counter(
                &registry,
                "ferry_chunk_stored_bytes_total",
                "Bytes of new chunk blobs written to the object store (compressed, as stored).",
            ),
            chunk_stored_logical_bytes: counter(
                &registry,
                "ferry_chunk_stored_logical_bytes_total",
                "Uncompressed size of the new chunks written to the object store.",
            ),
            bytes_replicated: counter(
                &registry,
                "ferry_bytes_replicated_total",
                "Logical bytes of disk data (all-zero chunks excluded) covered by the snapshots this process committed.",
            ),
            connections: counter(
                &registry,
                "ferry_http_connections_accepted_total",
                "TCP connections accepted (each begins with a TLS handshake).",
            ),
            snapshots_committed: counter(
                &registry,
                "ferry_snapshots_committed_total",
                "Disk snapshots committed by this process.",
            ),
            api_duration: histogram(
                &registry,
                "ferry_api_request_duration_seconds",
                "RPC API request latency, by product, action (\"other\" for actions not served) and HTTP status class.",
                &["product", "action", "code_class"],
            ),
            agent_duration: histogram(
                &registry,
                "ferry_agent_request_duration_seconds",
                "Agent API request latency, by route template and HTTP status class.",
                &["route", "code_class"],
            ),
            chunk_uploads,
            in_flight,
            registry,
            known_actions: Mutex::new(HashSet::new()),
        }
    }

    /// Counts one chunk upload: `received` bytes on the wire, `stored`/`logical` bytes written to the
    /// object store (compressed / uncompressed; 0 unless the outcome is [`ChunkUpload::Stored`]).
    pub fn chunk_upload(&self, outcome: ChunkUpload, received: u64, stored: u64, logical: u64) {
        self.chunk_uploads
            .with_label_values(&[outcome.label()])
            .inc();
        if outcome != ChunkUpload::Rejected {
            self.chunk_upload_bytes.inc_by(received);
        }
        if outcome == ChunkUpload::Stored {
            self.chunk_stored_bytes.inc_by(stored);
            self.chunk_stored_logical_bytes.inc_by(logical);
        }
    }

    /// How many chunk uploads had `outcome` since this process started.
    pub fn chunk_uploads(&self, outcome: ChunkUpload) -> u64 {
        self.chunk_uploads
            .with_label_values(&[outcome.label()])
            .get()
    }

    /// Counts a newly committed snapshot covering `logical_bytes` of non-zero disk data.
    pub fn snapshot_committed(&self, logical_bytes: u64) {
        self.snapshots_committed.inc();
        self.bytes_replicated.inc_by(logical_bytes);
    }

    /// An acceptor that counts each accepted connection in `ferry_http_connections_accepted_total`, then
    /// hands it to `inner` (the TLS acceptor).
    pub fn counting<A>(&self, inner: A) -> CountingAcceptor<A> {
        CountingAcceptor {
            inner,
            accepted: self.connections.clone(),
        }
    }

    /// Records that `action` of `product` reached a real handler: from now on it is its own label value.
    pub fn learn_action(&self, product: Product, action: &str) {
        if let Ok(mut known) = self.known_actions.lock()
            && !known.contains(&(product, action.to_owned()))
        {
            known.insert((product, action.to_owned()));
        }
    }

    /// Observes one RPC request. `product`/`action` are what the request named, when it named them.
    pub fn observe_api(
        &self,
        product: Option<Product>,
        action: Option<&str>,
        status: u16,
        elapsed: Duration,
    ) {
        let product_label = product.map_or("other", |p| p.ram_service());
        let action_label = match (product, action) {
            (Some(p), Some(a)) => {
                let known = self
                    .known_actions
                    .lock()
                    .map(|k| k.contains(&(p, a.to_owned())))
                    .unwrap_or(false);
                if known { a } else { "other" }
            }
            _ => "other",
        };
        self.api_duration
            .with_label_values(&[product_label, action_label, code_class(status)])
            .observe(elapsed.as_secs_f64());
    }

    /// The logical/stored ratio of this process's replication (see [`Metrics::render`]).
    fn dedup_ratio(&self) -> f64 {
        let logical = self.bytes_replicated.get() as f64;
        let stored = self.chunk_stored_logical_bytes.get() as f64;
        // 0/0 is NaN (nothing replicated yet); x/0 is +Inf (everything deduplicated): both are valid
        // Prometheus sample values and say exactly that.
        logical / stored
    }

    /// The whole `/metrics` page: this registry, plus gauges read from the database now. A database that
    /// does not answer leaves its gauges out and sets `ferry_metrics_database_up` to 0.
    pub async fn render(&self, st: &AppState) -> String {
        let mut families = self.registry.gather();
        families.extend(fleet_gauges(st).await);
        families.extend(self.ratio_gauge());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "cannot encode /metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn ratio_gauge(&self) -> Vec<prometheus::proto::MetricFamily> {
        let g = defined(prometheus::Gauge::new(
            "ferry_dedup_ratio",
            "ferry_bytes_replicated_total / ferry_chunk_stored_logical_bytes_total: logical bytes of committed snapshots per uncompressed byte of new chunks stored, since this process started (NaN before any, +Inf when nothing new was stored).",
        ));
        g.set(self.dedup_ratio());
        g.collect()
    }
}

/// `2xx`, `4xx`, `5xx`, … of an HTTP status.
fn code_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// Gauges of what the database holds: jobs by status, sources by state, agents by heartbeat recency.
async fn fleet_gauges(st: &AppState) -> Vec<prometheus::proto::MetricFamily> {
    let scrape = Registry::new();
    let up = registered(
        &scrape,
        IntGauge::new(
            "ferry_metrics_database_up",
            "1 if the database answered this scrape's queries, else 0.",
        ),
    );
    let jobs = gauge_vec(
        &scrape,
        "ferry_jobs",
        "Replication jobs by Status.",
        &["status"],
    );
    let sources = gauge_vec(
        &scrape,
        "ferry_sources",
        "Source servers by State.",
        &["state"],
    );
    let agents = gauge_vec(
        &scrape,
        "ferry_agents",
        "Source servers by agent state: online if the agent heart-beat within three heartbeat intervals, else offline.",
        &["state"],
    );
    // An agent silent for three intervals is offline (ServerConfig::heartbeat_interval_secs).
    let since = ferry_db::now() - 3 * i64::from(st.cfg.heartbeat_interval_secs);
    let queries = async {
        let j = st.db.job_count_by_status().await?;
        let s = st.db.source_count_by_state().await?;
        let a = st.db.source_count_by_heartbeat(since).await?;
        Ok::<_, ferry_db::DbError>((j, s, a))
    };
    match tokio::time::timeout(CHECK_TIMEOUT, queries).await {
        Ok(Ok((j, s, (online, offline)))) => {
            fill(&jobs, JOB_STATUSES, &j);
            fill(&sources, SOURCE_STATES, &s);
            agents.with_label_values(&["online"]).set(online);
            agents.with_label_values(&["offline"]).set(offline);
            up.set(1);
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "/metrics: database query failed");
            up.set(0);
        }
        Err(_) => {
            tracing::warn!(timeout = ?CHECK_TIMEOUT, "/metrics: database queries timed out");
            up.set(0);
        }
    }
    scrape.gather()
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

/// Sets every `known` label to its count (0 when absent) and any other value the database holds.
fn fill(g: &IntGaugeVec, known: &[&str], counts: &[(String, i64)]) {
    for k in known {
        g.with_label_values(&[k]).set(0);
    }
    for (k, n) in counts {
        g.with_label_values(&[k.as_str()]).set(*n);
    }
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let body = st.metrics.render(&st).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// `GET /health`: liveness. The process is up and serving HTTP; nothing else is checked, so that an
/// orchestrator never restarts a server only because its database is slow.
pub async fn health() -> Response {
    axum::Json(json!({"version": PROBE_FORMAT_VERSION, "status": "ok"})).into_response()
}

/// Whether the server is serving or draining (shutting down).
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
}

impl Lifecycle {
    /// True once a shutdown began: `/ready` answers 503 and long-polling heartbeats return at once.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// One readiness check's result.
struct Check {
    name: &'static str,
    result: Result<(), String>,
}

async fn timed<F>(name: &'static str, f: F) -> Check
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let result = match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    };
    Check { name, result }
}

/// `GET /ready`: readiness. 200 when the database answers, its schema has every migration of this
/// binary, the object store takes a write and gives it back, and the server is not shutting down; else
/// 503 naming the failing checks. The body is documented in `docs/operations.md`.
pub async fn ready(State(st): State<Arc<AppState>>) -> Response {
    let (database, migrations, object_store) = tokio::join!(
        timed("database", async {
            st.db
                .ping()
                .await
                .map_err(|e| format!("{e}: check that the database server is up and reachable"))
        }),
        timed("migrations", async {
            match st.db.migrations_pending().await {
                Ok(p) if p.is_empty() => Ok(()),
                Ok(p) => Err(format!(
                    "the database lacks migrations {p:?} of this binary: restart the server to apply them"
                )),
                Err(e) => Err(e.to_string()),
            }
        }),
        timed("object_store", probe_object_store(&st)),
    );
    let draining = Check {
        name: "accepting",
        result: if st.lifecycle.is_draining() {
            Err("the server is shutting down".to_owned())
        } else {
            Ok(())
        },
    };
    let checks = [database, migrations, object_store, draining];
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.result.is_err())
        .map(|c| c.name)
        .collect();
    let detail: serde_json::Map<String, Value> = checks
        .iter()
        .map(|c| {
            let v = match &c.result {
                Ok(()) => json!({"ok": true}),
                Err(e) => json!({"ok": false, "error": e}),
            };
            (c.name.to_owned(), v)
        })
        .collect();
    let ok = failed.is_empty();
    let body = json!({
        "version": PROBE_FORMAT_VERSION,
        "status": if ok { "ready" } else { "not_ready" },
        "failed": failed,
        "checks": detail,
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Writes a small object and reads it back.
async fn probe_object_store(st: &AppState) -> Result<(), String> {
    let store = st.chunks.object_store();
    let token = Bytes::from(ferry_api::new_request_id());
    store
        .put(READY_PROBE_KEY, token.clone())
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let back = store
        .get(READY_PROBE_KEY)
        .await
        .map_err(|e| format!("read-back failed: {e}"))?;
    // Another replica may have written its own token in between: that also proves the store works, so
    // only an empty or truncated object is a failure.
    if back.len() != token.len() {
        return Err(format!(
            "read back {} bytes after writing {}: the store returns damaged objects",
            back.len(),
            token.len()
        ));
    }
    Ok(())
}

/// Decrements the in-flight gauge when a request ends, however it ends.
struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Middleware on every route: counts the request as in flight while it runs; for agent-API routes, runs
/// the handler in an `agent_request` span (`request_id`, `route`, `run_id`; the handlers add `job_id` and
/// `source_id` once they know them) and observes its latency.
pub async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    st.metrics.in_flight.inc();
    let _in_flight = InFlight(st.metrics.in_flight.clone());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let Some(route) = route.filter(|r| r.starts_with(ferry_types::protocol::PREFIX)) else {
        return next.run(req).await;
    };
    let run_id = run_id_of(req.uri().path());
    let span = tracing::info_span!(
        "agent_request",
        request_id = %ferry_api::new_request_id(),
        route = %route,
        run_id = tracing::field::Empty,
        job_id = tracing::field::Empty,
        source_id = tracing::field::Empty,
    );
    if let Some(run) = run_id {
        span.record("run_id", run);
    }
    let started = Instant::now();
    let response = next.run(req).instrument(span).await;
    st.metrics
        .agent_duration
        .with_label_values(&[&route, code_class(response.status().as_u16())])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The `{run}` segment of `/agent/v1/runs/{run}/…`.
fn run_id_of(path: &str) -> Option<&str> {
    let mut parts = path.split('/');
    parts.find(|p| *p == "runs")?;
    parts.next().filter(|r| !r.is_empty())
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Requests in flight when the shutdown began.
    pub in_flight_at_start: i64,
    /// The grace period ran out and the connections still open were closed with requests unfinished
    /// (none of those had been answered, so no acknowledged write was lost).
    pub grace_expired: bool,
    /// Flushing the chunk store (buffered packs, deferred names) failed: acknowledged chunks may not
    /// survive a power loss, or, with packs, a restart.
    pub sync_error: Option<String>,
}

impl RunningServer {
    /// Stops gracefully: marks the server as draining (`/ready` → 503, waiting heartbeats return), stops
    /// accepting connections, lets in-flight requests finish for up to `grace` (a chunk upload's write
    /// completes before its response is sent), then flushes the chunk store (buffered packs, deferred
    /// names) and closes the database pool. Background workers are not waited for: their steps are idempotent and
    /// resume at the next start.
    pub async fn shutdown_within(self, grace: Duration) -> ShutdownReport {
        let st = &self.state;
        st.lifecycle.draining.store(true, Ordering::SeqCst);
        st.tasks_changed.notify_waiters();
        st.agents.wake_all();
        let in_flight_at_start = st.metrics.in_flight.get();
        tracing::info!(
            in_flight = in_flight_at_start,
            connections = self.handle.connection_count(),
            grace_secs = grace.as_secs_f64(),
            "shutting down: no new connections; waiting for in-flight requests"
        );
        let started = Instant::now();
        self.handle.graceful_shutdown(Some(grace));
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the HTTP service ended with an error"),
            Err(e) => tracing::warn!(error = %e, "the HTTP service task failed"),
        }
        // axum-server closes the remaining connections exactly when the grace period ends.
        let grace_expired = started.elapsed() >= grace;
        if grace_expired {
            tracing::warn!(
                grace_secs = grace.as_secs_f64(),
                "grace period over: closed connections with unfinished requests (none was acknowledged)"
            );
        } else {
            tracing::info!(
                waited_ms = started.elapsed().as_millis() as u64,
                "in-flight requests finished"
            );
        }
        // Buffered chunk packs are uploaded and deferred names synced (`ChunkStore::flush`).
        let sync_error = match st.chunks.flush().await {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot flush the chunk store: acknowledged chunks may not be durable");
                Some(e.to_string())
            }
        };
        st.db.close().await;
        tracing::info!(
            chunks_stored = st.metrics.chunk_uploads(ChunkUpload::Stored),
            chunks_duplicate = st.metrics.chunk_uploads(ChunkUpload::Duplicate),
            chunks_rejected = st.metrics.chunk_uploads(ChunkUpload::Rejected),
            "server stopped: object store synced, database closed"
        );
        ShutdownReport {
            in_flight_at_start,
            grace_expired,
            sync_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_come_from_run_routes_only() {
        assert_eq!(run_id_of("/agent/v1/runs/r-1/chunks/ab"), Some("r-1"));
        assert_eq!(run_id_of("/runs/r-2/finish"), Some("r-2"));
        assert_eq!(run_id_of("/agent/v1/heartbeat"), None);
        assert_eq!(run_id_of("/agent/v1/runs/"), None);
    }

    #[test]
    fn code_classes() {
        assert_eq!(code_class(200), "2xx");
        assert_eq!(code_class(404), "4xx");
        assert_eq!(code_class(503), "5xx");
        assert_eq!(code_class(999), "5xx");
    }

    fn sample<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix).map(str::trim))
    }

    #[test]
    fn unknown_actions_share_one_label_and_known_ones_get_their_own() {
        let m = Metrics::new();
        m.observe_api(
            Some(Product::Smc),
            Some("NoSuchAction"),
            400,
            Duration::from_millis(3),
        );
        m.observe_api(None, Some("X"), 400, Duration::from_millis(3));
        m.learn_action(Product::Smc, "DescribeSourceServers");
        m.observe_api(
            Some(Product::Smc),
            Some("DescribeSourceServers"),
            200,
            Duration::from_millis(20),
        );
        let text = String::from_utf8(
            {
                let mut buf = Vec::new();
                TextEncoder::new()
                    .encode(&m.registry.gather(), &mut buf)
                    .map(|_| buf)
            }
            .unwrap_or_default(),
        )
        .unwrap_or_default();
        assert_eq!(
            sample(
                &text,
                r#"ferry_api_request_duration_seconds_count{action="other",code_class="4xx",product="smc"}"#
            ),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"ferry_api_request_duration_seconds_count{action="other",code_class="4xx",product="other"}"#
            ),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"ferry_api_request_duration_seconds_bucket{action="DescribeSourceServers",code_class="2xx",product="smc",le="0.01"}"#
            ),
            Some("0"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"ferry_api_request_duration_seconds_bucket{action="DescribeSourceServers",code_class="2xx",product="smc",le="0.025"}"#
            ),
            Some("1"),
            "{text}"
        );
        assert!(!text.contains("NoSuchAction"), "{text}");
        assert!(
            text.contains("# TYPE ferry_api_request_duration_seconds histogram"),
            "{text}"
        );
    }

    #[test]
    fn label_values_from_the_database_are_escaped() {
        let registry = Registry::new();
        let g = gauge_vec(&registry, "ferry_jobs", "Jobs.", &["status"]);
        fill(&g, &["Ready"], &[("Odd\"\\\nStatus".to_owned(), 2)]);
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .expect("encode");
        let text = String::from_utf8(buf).expect("utf-8");
        assert!(
            text.contains("# HELP ferry_jobs Jobs.\n# TYPE ferry_jobs gauge\n"),
            "{text}"
        );
        assert!(text.contains("ferry_jobs{status=\"Ready\"} 0\n"), "{text}");
        assert!(
            text.contains(r#"ferry_jobs{status="Odd\"\\\nStatus"} 2"#),
            "{text}"
        );
    }

    #[test]
    fn the_dedup_ratio_divides_logical_by_stored() {
        let m = Metrics::new();
        assert!(m.dedup_ratio().is_nan());
        m.chunk_upload(ChunkUpload::Stored, 500, 500, 1000);
        m.chunk_upload(ChunkUpload::Duplicate, 500, 0, 0);
        m.chunk_upload(ChunkUpload::Rejected, 7, 0, 0);
        m.snapshot_committed(3000);
        assert_eq!(m.dedup_ratio(), 3.0);
        assert_eq!(m.chunk_uploads(ChunkUpload::Stored), 1);
        assert_eq!(m.chunk_upload_bytes.get(), 1000);
        assert_eq!(m.chunk_stored_bytes.get(), 500);
    }
}
