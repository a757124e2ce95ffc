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
pub mod console;
pub mod ops;
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
pub use ops::Metrics;

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
    /// Wakes watchers of every job (the console's event stream) when a run starts or stops.
    pub tasks_changed: Notify,
    /// Per-source wake-ups of long-polling heartbeats, and heartbeats not yet flushed (`agent_api::AgentHub`).
    pub agents: agent_api::AgentHub,
    pub metrics: Metrics,
    /// Draining or serving (`ops`): a shutdown turns `/ready` to 503 and releases long polls.
    pub lifecycle: ops::Lifecycle,
    /// The clock of job scheduling (`app::jobs::JobClock`; the system clock outside tests).
    pub clock: app::jobs::JobClock,
    /// This replica's ID (`<data>/replica-id`, kept across restarts): the replica whose QEMU runs the
    /// instances it launched (docs/scale-out.md).
    pub replica_id: String,
    /// `<replica_id>#<random>`, new in every process: the holder name of the leases this process takes.
    pub lease_holder: String,
}

impl AppState {
    pub fn images_dir(&self) -> PathBuf {
        self.cfg.shared_root().join("images")
    }

    /// With the local store, an export bucket is a folder here.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.cfg.shared_root().join("buckets").join(bucket)
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

    /// Stops accepting connections and lets in-flight requests finish (for up to
    /// [`ops::DEFAULT_SHUTDOWN_GRACE`]; see [`RunningServer::shutdown_within`]).
    pub async fn shutdown(self) {
        self.shutdown_within(ops::DEFAULT_SHUTDOWN_GRACE).await;
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
    if !ferry_chunk::bulk::set_nice(cfg.bulk_nice) && ferry_chunk::bulk::nice() != cfg.bulk_nice {
        // Only when several servers share one process (tests): the first one's value holds.
        tracing::warn!(
            requested = cfg.bulk_nice,
            running = ferry_chunk::bulk::nice(),
            "the bulk pool is already running at another nice value"
        );
    }
    let data = cfg.data_dir.clone();
    let shared = cfg.shared_root().to_owned();
    for dir in [
        data.clone(),
        shared.join("objects"),
        shared.join("images"),
        shared.join("buckets"),
    ] {
        std::fs::create_dir_all(&dir).map_err(|e| ServerError::io(&dir, e))?;
    }
    let db = match &cfg.database {
        Some(url) => Db::open(url).await?,
        None => Db::open_sqlite(&data.join("ferry.db")).await?,
    };
    if cfg.shared_dir.is_some() {
        adopt_shared_ca(
            &db,
            &shared.join("tls"),
            &data.join("tls"),
            &cfg.tls_names(),
        )
        .await?;
    }
    let tls = tls::ensure(&data.join("tls"), &cfg.tls_names())?;
    let chunks = open_chunk_store(&cfg, &shared).await?;
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

    // Replicas started together on a new database race to create the root key: the loser's insert fails,
    // and a second look finds the winner's key.
    let root = match app::ensure_root_key(&db).await {
        Ok(key) => key,
        Err(_) => app::ensure_root_key(&db).await?,
    };
    let replica_id = workers::lease::replica_id(&data)?;
    // One data directory is one replica, so leases an earlier process of it still holds belong to a process
    // that is gone: free them now rather than wait for them to expire.
    let freed = db.lease_release_all_of(&format!("{replica_id}#")).await?;
    if freed > 0 {
        tracing::info!(
            freed,
            "released the leases of this replica's previous process"
        );
    }
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
        agents: agent_api::AgentHub::default(),
        metrics: Metrics::default(),
        lifecycle: ops::Lifecycle::default(),
        clock: app::jobs::JobClock::from_env(),
        lease_holder: workers::lease::holder_name(&replica_id),
        replica_id,
    });

    let _ = rustls::crypto::ring::default_provider().install_default();
    let rustls_config =
        axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.server_cert, &tls.server_key)
            .await
            .map_err(|e| ServerError::Tls(format!("loading the server certificate: {e}")))?;
    let app = router(state.clone());
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(std_listener, rustls_config)
        .map(|tls| state.metrics.counting(tls))
        .handle(handle.clone());
    let task = tokio::spawn(async move {
        server
            .serve(app.into_make_service_with_connect_info::<SocketAddr>())
            .await
    });
    workers::spawn_all(state.clone());
    tokio::spawn(agent_api::listen_to_other_replicas(state.clone()));
    compute::spawn(state.clone());
    tracing::info!(%addr, ca = %tls.ca_fingerprint, "ferry server listening");
    Ok(RunningServer {
        addr,
        state,
        handle,
        task,
    })
}

/// Replicas share one CA (agents pin its fingerprint, and may reach any replica): the first replica creates
/// it in `<shared>/tls` while holding a lease, so two starting at once cannot both create one; every replica
/// copies it into its own `<data>/tls`, where its own server certificate is issued. A data directory that
/// already has a different CA is refused rather than silently re-keyed (its agents pinned the old one).
async fn adopt_shared_ca(
    db: &Db,
    shared_tls: &Path,
    own_tls: &Path,
    names: &[String],
) -> Result<(), ServerError> {
    let holder = format!("starting-{}", std::process::id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let lease = loop {
        if let Some(l) = db.lease_acquire("init:tls-ca", &holder, 60).await? {
            break l;
        }
        if std::time::Instant::now() > deadline {
            return Err(ServerError::Tls(format!(
                "another replica has been creating the shared CA in {} for a minute: check its log",
                shared_tls.display()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let shared = tls::ensure(shared_tls, names);
    let _ = db.lease_release(&lease).await;
    let shared = shared?;
    std::fs::create_dir_all(own_tls).map_err(|e| ServerError::io(own_tls, e))?;
    let own_ca = own_tls.join("ca.pem");
    match std::fs::read_to_string(&own_ca) {
        Ok(pem) if pem == shared.ca_pem => return Ok(()),
        Ok(_) => {
            return Err(ServerError::Tls(format!(
                "{} holds a CA other than the shared one in {}: this data directory belonged to a separate \
                 server. Use a fresh --data-dir for the replica (its agents must re-activate otherwise)",
                own_ca.display(),
                shared_tls.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ServerError::io(&own_ca, e)),
    }
    let key_path = shared_tls.join("ca.key");
    let key = std::fs::read(&key_path).map_err(|e| ServerError::io(&key_path, e))?;
    // The key first: a crash between the two leaves no CA certificate, so the next start copies both again.
    tls::write_secret(&own_tls.join("ca.key"), &key)?;
    ferry_chunk::durable_write(&own_ca, shared.ca_pem.as_bytes())
        .map_err(|e| ServerError::io(&own_ca, e))?;
    Ok(())
}

/// The chunk store: `objects/` under the shared root, one file per chunk; or, with `--store s3://…`, the
/// S3 bucket with chunks in packs (`docs/decisions.md`, "Chunk packs on S3"). With S3 it checks that the
/// bucket answers, so a wrong endpoint or credentials stop the start with a message rather than the first
/// upload.
async fn open_chunk_store(cfg: &ServerConfig, shared: &Path) -> Result<ChunkStore, ServerError> {
    if let Some(s3) = &cfg.object_store {
        let store = ferry_chunk::S3Store::open(s3)
            .map_err(|e| ServerError::Config(format!("--store {}: {e}", s3.url())))?;
        store.check().await.map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            ServerError::Config(format!("--store {}: {e}{cause}", s3.url()))
        })?;
        tracing::info!(store = %s3.url(), "object store: S3, chunks in packs");
        return ChunkStore::open_packed(Arc::new(store), ferry_chunk::PackConfig::default())
            .await
            .map_err(|e| ServerError::Config(format!("--store {}: {e}", s3.url())));
    }
    let store = LocalStore::open(shared.join("objects"))
        .map_err(|e| ServerError::Config(format!("object store: {e}")))?
        .with_reserve(cfg.reserve_bytes());
    {
        // Writes a killed predecessor left half-done: harmless, but they take space. In a directory shared
        // by replicas, a live replica's write in progress is younger than an hour: only older ones go.
        let mut started = std::time::SystemTime::now();
        if cfg.shared_dir.is_some() {
            started -= std::time::Duration::from_secs(3600);
        }
        let store = store.clone();
        tokio::task::spawn_blocking(move || match store.sweep_temp_files(started) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed temp files of interrupted writes"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep temp files of interrupted writes"),
        });
    }
    Ok(ChunkStore::new(Arc::new(store)))
}

/// All HTTP routes.
pub fn router(state: Arc<AppState>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/", get(rpc::handle).post(rpc::handle))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .nest(ferry_types::protocol::PREFIX, agent_api::routes())
        .merge(console::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::track,
        ))
        .with_state(state)
}
