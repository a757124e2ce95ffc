//! `ferry server`: Ferry's control plane — the RPC API (Alibaba Cloud–compatible), the agent API
//! (`/agent/v1`), and the background workers that turn uploaded snapshots into verified images.
//!
//! Layout: `rpc` parses, authenticates and dispatches public API calls; `agent_api` serves agents; the
//! application logic they share lives in `app`; `workers` run long work (image builds, exports, offline
//! detection) as idempotent steps driven by database state, so a restarted server picks up where it stopped.
//!
//! Everything the server owns lives under one data directory (`config::ServerConfig::data_dir`).

pub mod agent_api;
pub mod app;
pub mod audit;
pub mod compute;
pub mod config;
pub mod rpc;
pub mod tls;
pub mod workers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_chunk::{ChunkStore, LocalStore};
use ferry_db::Db;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use config::ServerConfig;

/// A failure to start or run the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] ferry_db::DbError),
    #[error(
        "TLS setup failed: {0}. Remove <data>/tls to start over with a new CA (agents must then re-activate)"
    )]
    Tls(String),
    #[error("cannot listen on {addr}: {source}. Choose another address with --listen")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl ServerError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The root account's credentials file (`<data>/root-credentials.json`, mode 0600). The CLI reads it to
/// sign requests when no profile is configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootCredentials {
    /// Format version of this file (`docs/formats.md`); 1 today.
    #[serde(default = "credentials_format_v1")]
    pub version: u32,
    pub account_id: String,
    pub access_key_id: String,
    pub access_key_secret: String,
    /// `https://host:port` at which this server was last started.
    pub endpoint: String,
    pub ca_cert: PathBuf,
    pub ca_fingerprint: String,
}

pub const ROOT_CREDENTIALS_FILE: &str = "root-credentials.json";

fn credentials_format_v1() -> u32 {
    1
}

/// Shared state of one server process.
pub struct AppState {
    pub cfg: ServerConfig,
    pub db: Db,
    pub chunks: ChunkStore,
    pub account_id: String,
    pub ca_fingerprint: String,
    pub ca_pem: String,
    /// Wakes the workers when there is new work (a run to build, an export to write).
    pub wake: Notify,
    /// Wakes long-polling agent heartbeats when a run starts or stops.
    pub tasks_changed: Notify,
    pub metrics: Metrics,
    /// The clock of job scheduling (`app::jobs::JobClock`; the system clock outside tests).
    pub clock: app::jobs::JobClock,
}

/// Counters since this process started, served at `/metrics` (Prometheus text format).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Chunk uploads that stored a new chunk.
    pub chunks_stored: std::sync::atomic::AtomicU64,
    /// Chunk uploads of a chunk that was already stored (a retry, or a race between two sources).
    pub chunks_duplicate: std::sync::atomic::AtomicU64,
    /// Chunk uploads rejected (bad digest, size, format).
    pub chunks_rejected: std::sync::atomic::AtomicU64,
    /// Bytes of chunk uploads received (as sent, compressed).
    pub chunk_bytes_received: std::sync::atomic::AtomicU64,
}

impl Metrics {
    pub fn render(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        format!(
            "# HELP ferry_chunk_uploads_total Chunk uploads by outcome.\n\
             # TYPE ferry_chunk_uploads_total counter\n\
             ferry_chunk_uploads_total{{outcome=\"stored\"}} {}\n\
             ferry_chunk_uploads_total{{outcome=\"duplicate\"}} {}\n\
             ferry_chunk_uploads_total{{outcome=\"rejected\"}} {}\n\
             # HELP ferry_chunk_upload_bytes_total Bytes of chunk uploads received.\n\
             # TYPE ferry_chunk_upload_bytes_total counter\n\
             ferry_chunk_upload_bytes_total {}\n",
            self.chunks_stored.load(Relaxed),
            self.chunks_duplicate.load(Relaxed),
            self.chunks_rejected.load(Relaxed),
            self.chunk_bytes_received.load(Relaxed),
        )
    }
}

impl AppState {
    pub fn images_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("images")
    }

    /// With the local store, an export bucket is a folder here.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.cfg.data_dir.join("buckets").join(bucket)
    }
}

/// A started server.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub handle: axum_server::Handle,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// `https://<addr>` (loopback when listening on all addresses).
    pub fn endpoint(&self) -> String {
        endpoint_for(self.addr)
    }

    /// Stops accepting connections and lets in-flight requests finish.
    pub async fn shutdown(self) {
        self.handle
            .graceful_shutdown(Some(std::time::Duration::from_secs(10)));
        let _ = self.task.await;
        self.state.db.close().await;
    }
}

fn endpoint_for(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("https://{host}:{}", addr.port())
}

/// Starts the server: prepares the data directory (database, object store, TLS, root credentials), binds
/// the listener, and spawns the HTTP service and the workers.
pub async fn start(cfg: ServerConfig) -> Result<RunningServer, ServerError> {
    cfg.validate()?;
    let data = cfg.data_dir.clone();
    for dir in [
        data.clone(),
        data.join("objects"),
        data.join("images"),
        data.join("buckets"),
    ] {
        std::fs::create_dir_all(&dir).map_err(|e| ServerError::io(&dir, e))?;
    }
    let db = match &cfg.database {
        Some(url) => Db::open(url).await?,
        None => Db::open_sqlite(&data.join("ferry.db")).await?,
    };
    let tls = tls::ensure(&data.join("tls"), &cfg.tls_names())?;
    let store = LocalStore::open(data.join("objects"))
        .map_err(|e| ServerError::Config(format!("object store: {e}")))?;
    {
        // Writes a killed predecessor left half-done: harmless, but they take space.
        let (store, started) = (store.clone(), std::time::SystemTime::now());
        tokio::task::spawn_blocking(move || match store.sweep_temp_files(started) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed temp files of interrupted writes"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep temp files of interrupted writes"),
        });
    }
    let chunks = ChunkStore::new(Arc::new(store));
    let account_id = db.meta_init("account_id", &app::new_account_id()).await?;

    let std_listener =
        std::net::TcpListener::bind(cfg.listen).map_err(|source| ServerError::Listen {
            addr: cfg.listen,
            source,
        })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|source| ServerError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = std_listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: cfg.listen,
            source,
        })?;

    let root = app::ensure_root_key(&db).await?;
    let creds = RootCredentials {
        version: 1,
        account_id: account_id.clone(),
        access_key_id: root.id,
        access_key_secret: root.secret,
        endpoint: cfg.public_url.clone().unwrap_or_else(|| endpoint_for(addr)),
        ca_cert: tls.ca_cert.clone(),
        ca_fingerprint: tls.ca_fingerprint.clone(),
    };
    let creds_json = serde_json::to_vec_pretty(&creds)
        .map_err(|e| ServerError::Config(format!("root credentials: {e}")))?;
    tls::write_secret(&data.join(ROOT_CREDENTIALS_FILE), &creds_json)?;

    let state = Arc::new(AppState {
        cfg,
        db,
        chunks,
        account_id,
        ca_fingerprint: tls.ca_fingerprint.clone(),
        ca_pem: tls.ca_pem.clone(),
        wake: Notify::new(),
        tasks_changed: Notify::new(),
        metrics: Metrics::default(),
        clock: app::jobs::JobClock::from_env(),
    });

    let _ = rustls::crypto::ring::default_provider().install_default();
    let rustls_config =
        axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.server_cert, &tls.server_key)
            .await
            .map_err(|e| ServerError::Tls(format!("loading the server certificate: {e}")))?;
    let app = router(state.clone());
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(std_listener, rustls_config).handle(handle.clone());
    let task = tokio::spawn(async move {
        server
            .serve(app.into_make_service_with_connect_info::<SocketAddr>())
            .await
    });
    workers::spawn_all(state.clone());
    compute::spawn(state.clone());
    tracing::info!(%addr, ca = %tls.ca_fingerprint, "ferry server listening");
    Ok(RunningServer {
        addr,
        state,
        handle,
        task,
    })
}

/// All HTTP routes.
pub fn router(state: Arc<AppState>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/", get(rpc::handle).post(rpc::handle))
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(
                |axum::extract::State(st): axum::extract::State<Arc<AppState>>| async move {
                    st.metrics.render()
                },
            ),
        )
        .nest(ferry_types::protocol::PREFIX, agent_api::routes())
        .with_state(state)
}
