//! `ferry server`: starts the control plane in this process, says how to reach it, and runs until
//! Ctrl-C or SIGTERM, then stops gracefully: no new connections, in-flight requests finish within
//! `--shutdown-grace` seconds, the chunk store is flushed, the database is closed, exit 0
//! (`docs/operations.md`).

use std::future::Future;
use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use ferry_server::ServerConfig;

use crate::cli::{LogFormat, ServerArgs};
use crate::config::{ConnectionArgs, DEFAULT_REGION};

/// The server configuration these options describe.
pub fn server_config(conn: &ConnectionArgs, args: &ServerArgs) -> ServerConfig {
    ServerConfig {
        data_dir: conn.data_dir(),
        listen: args.listen,
        tls_san: args.tls_san.clone(),
        public_url: args.public_url.clone(),
        database: args.database.clone(),
        region_id: conn
            .region
            .clone()
            .unwrap_or_else(|| DEFAULT_REGION.to_owned()),
        heartbeat_interval_secs: args.heartbeat_interval,
        long_poll_secs: args.long_poll,
        bulk_nice: args.bulk_nice,
        shared_dir: args.shared_dir.clone(),
        lease_ttl_secs: args.lease_ttl,
        reserve_mib: args.reserve_mib,
        object_store: args.store.as_deref().cloned().map(|store| {
            ferry_chunk::S3Config {
                endpoint: args.s3_endpoint.clone(),
                region: args.s3_region.clone(),
                access_key_id: args.s3_access_key_id.clone(),
                secret_access_key: args.s3_secret_access_key.clone(),
                path_style: args.s3_path_style,
                allow_http: args.s3_allow_http,
                ..store
            }
            .with_env()
        }),
    }
}

/// Installs the log subscriber: level from `RUST_LOG` (default `default_level`), to standard error.
/// A second call (tests) keeps the first subscriber.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn run(
    conn: &ConnectionArgs,
    args: ServerArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "Ctrl-C",
            _ = sigterm.recv() => "SIGTERM",
        }
    };
    let grace = std::time::Duration::from_secs(args.shutdown_grace);
    run_until(server_config(conn, &args), out, stop, grace).await
}

/// Runs the server until `stop` completes (its output names the reason, for the log), then shuts it down
/// gracefully, giving in-flight requests up to `grace`.
///
/// Errors: the server cannot start; the HTTP service ends by itself; the chunk store cannot be flushed at
/// shutdown (acknowledged chunks might not be durable).
pub async fn run_until(
    cfg: ServerConfig,
    out: &mut dyn Write,
    stop: impl Future<Output = &'static str>,
    grace: std::time::Duration,
) -> anyhow::Result<()> {
    let data_dir = cfg.data_dir.clone();
    let mut running = ferry_server::start(cfg).await.with_context(|| {
        format!(
            "cannot start the server with data directory {}",
            data_dir.display()
        )
    })?;
    let endpoint = running
        .state
        .cfg
        .public_url
        .clone()
        .unwrap_or_else(|| running.endpoint());
    let creds = std::path::absolute(data_dir.join(ferry_server::ROOT_CREDENTIALS_FILE))
        .unwrap_or_else(|_| data_dir.join(ferry_server::ROOT_CREDENTIALS_FILE));
    let data_abs = std::path::absolute(&data_dir).unwrap_or_else(|_| data_dir.clone());
    out.write_all(banner(&endpoint, &running.state.ca_fingerprint, &creds, &data_abs).as_bytes())?;
    out.flush()?;

    let ended = tokio::select! {
        why = stop => Ended::Stop(why),
        served = &mut running.task => Ended::Served(served),
    };
    match ended {
        Ended::Stop(why) => {
            tracing::info!(reason = why, "shutting down");
            let report = running.shutdown_within(grace).await;
            if let Some(e) = report.sync_error {
                anyhow::bail!(
                    "stopped ({why}), but the chunk store could not be flushed: {e}. Check the object \
                     store (disk or S3); chunks acknowledged just before the stop may have to be re-sent"
                );
            }
            writeln!(out, "Ferry server stopped ({why}).")?;
            Ok(())
        }
        Ended::Served(served) => {
            // The HTTP service ended by itself: say why, and still close the database cleanly.
            running.state.db.close().await;
            match served {
                Ok(Ok(())) => {
                    anyhow::bail!("the HTTP service stopped unexpectedly; see the log above")
                }
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("the HTTP service failed")),
                Err(e) => Err(anyhow::Error::new(e).context("the HTTP service crashed")),
            }
        }
    }
}

enum Ended {
    Stop(&'static str),
    Served(Result<std::io::Result<()>, tokio::task::JoinError>),
}

/// What `ferry server` prints once it listens.
fn banner(endpoint: &str, fingerprint: &str, creds: &Path, data_dir: &Path) -> String {
    format!(
        "Ferry server listening on {endpoint}\n\
         CA fingerprint:    {fingerprint}\n\
         Root credentials:  {} (mode 0600; `ferry` commands run with --data-dir {} use it)\n\
         Next: `ferry activation-code create` prints the command that registers a source server.\n\
         Press Ctrl-C to stop.\n",
        creds.display(),
        data_dir.display()
    )
}
