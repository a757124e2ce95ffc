//! `ferry-agent` binary (placeholder): prints the source server's inventory as JSON.
//!
//! Registration, heart-beats and replication come later; for now the only subcommand is
//! `ferry-agent inventory [--disk-image PATH]...`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_agent::inventory::{self, DiskSpec, InventoryOptions};
use ferry_types::inventory::DiskSource;

#[derive(Parser)]
#[command(name = "ferry-agent", version, about = "Ferry migration agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the inventory of this server (or of the given disk images) as JSON.
    Inventory {
        /// Describe this raw disk image instead of discovering block devices (repeatable).
        #[arg(long = "disk-image", value_name = "PATH")]
        disk_images: Vec<PathBuf>,
        /// Block device to describe instead of discovering them (repeatable), e.g. /dev/sda. Devices come
        /// before images; the first disk named is the system disk.
        #[arg(long = "disk", value_name = "DEVICE")]
        disks: Vec<PathBuf>,
        /// Root of the filesystem tree whose /etc is read (for offline sources).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Inventory {
            disk_images,
            disks,
            root,
        } => {
            let mut specs: Vec<DiskSpec> = disks
                .into_iter()
                .map(|path| DiskSpec {
                    path,
                    kind: DiskSource::BlockDevice,
                })
                .collect();
            specs.extend(disk_images.into_iter().map(|path| DiskSpec {
                path,
                kind: DiskSource::ImageFile,
            }));
            let opts = InventoryOptions { disks: specs, root };
            let inv = inventory::collect(&opts).context("collecting the inventory failed")?;
            println!("{}", serde_json::to_string_pretty(&inv)?);
        }
    }
    Ok(())
}
