//! `ferry-agent`: activate this server with a Ferry server, then run as a daemon that reports the
//! inventory and replicates disks when asked. `ferry-agent inventory` prints what it would report.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_agent::daemon::{self, DiskConfig};
use ferry_agent::inventory::{self, DiskSpec, InventoryOptions};
use ferry_types::inventory::DiskSource;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "ferry-agent", version, about = "Ferry migration agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct DiskArgs {
    /// Block device to replicate (repeatable), e.g. /dev/sda. Devices come before images; the first disk
    /// named is the system disk. Without --disk or --disk-image the machine's disks are discovered.
    #[arg(long = "disk", value_name = "DEVICE")]
    disks: Vec<PathBuf>,
    /// Raw disk image file standing in for a block device (repeatable; for offline sources and tests).
    #[arg(long = "disk-image", value_name = "PATH")]
    disk_images: Vec<PathBuf>,
}

impl DiskArgs {
    fn configs(&self) -> Vec<DiskConfig> {
        let devices = self.disks.iter().map(|p| DiskConfig {
            path: p.clone(),
            image_file: false,
        });
        let images = self.disk_images.iter().map(|p| DiskConfig {
            path: p.clone(),
            image_file: true,
        });
        devices.chain(images).collect()
    }
}

#[derive(Subcommand)]
enum Command {
    /// Register this server with a Ferry server using an activation code (run once, as root).
    Activate {
        /// The server's URL, e.g. https://ferry.example:8443
        #[arg(long)]
        server: String,
        /// The activation code (from `ferry activation-code create` or the console).
        #[arg(long, env = "FERRY_ACTIVATION_CODE")]
        code: String,
        /// The server CA's fingerprint (sha256:…), printed with the activation code. The agent pins it.
        #[arg(long)]
        ca_fingerprint: String,
        #[arg(long, default_value = "/var/lib/ferry-agent")]
        state_dir: PathBuf,
        #[command(flatten)]
        disks: DiskArgs,
        /// Start the daemon right after activating.
        #[arg(long)]
        run: bool,
    },
    /// Run the agent daemon (heartbeats, replication). Activate first.
    Run {
        #[arg(long, default_value = "/var/lib/ferry-agent")]
        state_dir: PathBuf,
    },
    /// Print the inventory of this server (or of the given disk images) as JSON.
    Inventory {
        #[command(flatten)]
        disks: DiskArgs,
        /// Root of the filesystem tree whose /etc is read (for offline sources).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

async fn run_daemon(state_dir: PathBuf) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        s.cancel();
    });
    daemon::run(&state_dir, shutdown).await?;
    Ok(())
}

#[tokio::main]
async fn main() {
    init_logging();
    let cli = Cli::parse();
    let result: anyhow::Result<()> = async {
        match cli.command {
            Command::Activate {
                server,
                code,
                ca_fingerprint,
                state_dir,
                disks,
                run,
            } => {
                let state =
                    daemon::activate(&state_dir, &server, &code, &ca_fingerprint, disks.configs())
                        .await
                        .context("activation failed")?;
                println!(
                    "Import Source Server [{}] Successfully!",
                    state.credentials.source_id
                );
                if run {
                    run_daemon(state_dir).await?;
                }
            }
            Command::Run { state_dir } => run_daemon(state_dir).await?,
            Command::Inventory { disks, root } => {
                let specs = disks
                    .configs()
                    .into_iter()
                    .map(|d| DiskSpec {
                        path: d.path,
                        kind: if d.image_file {
                            DiskSource::ImageFile
                        } else {
                            DiskSource::BlockDevice
                        },
                    })
                    .collect();
                let opts = InventoryOptions { disks: specs, root };
                let inv = inventory::collect(&opts).context("collecting the inventory failed")?;
                println!("{}", serde_json::to_string_pretty(&inv)?);
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
