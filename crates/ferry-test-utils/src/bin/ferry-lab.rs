//! `ferry-lab`: builds the lab of real source servers (small Debian systems, see docs/lab.md), checks
//! that they boot under QEMU (TCG), and prints where the cached disk images are. Needs root.

use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ferry_test_utils::lab::{self, LabVariant};

#[derive(Parser)]
#[command(
    about = "Build and check Ferry's lab of source servers (cached in $FERRY_LAB_CACHE or target/lab-cache)"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a variant (bios, uefi, lvm, datadisk) or `all`, with the cached boot check.
    Build {
        #[arg(default_value = "all")]
        variant: String,
    },
    /// Boot a (built) variant on a throwaway overlay and wait for its marker; not cached.
    Check {
        variant: String,
        /// Write the serial console's output (up to the marker) to this file.
        #[arg(long)]
        console: Option<std::path::PathBuf>,
    },
    /// Print the cached disk image paths of a variant (building it if needed).
    Path { variant: String },
}

fn variants(s: &str) -> anyhow::Result<Vec<LabVariant>> {
    if s == "all" {
        Ok(LabVariant::ALL.to_vec())
    } else {
        Ok(vec![s.parse()?])
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match args.cmd {
        Cmd::Build { variant } => {
            let all = Instant::now();
            for v in variants(&variant)? {
                let t0 = Instant::now();
                let server = rt.block_on(lab::build(v))?;
                println!(
                    "{v}: ready in {:.1}s ({} disk(s), {}, data {} sha256 {})",
                    t0.elapsed().as_secs_f64(),
                    server.disks.len(),
                    server.facts.boot_mode,
                    server.facts.data_file,
                    server.facts.data_sha256
                );
            }
            println!("total: {:.1}s", all.elapsed().as_secs_f64());
        }
        Cmd::Check { variant, console } => {
            let v: LabVariant = variant.parse()?;
            let server = rt.block_on(lab::build(v))?;
            let (took, log) = rt.block_on(lab::boot_check_console(&server))?;
            if let Some(path) = console {
                std::fs::write(&path, log)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            println!(
                "{v}: marker {:?} after {:.1}s",
                server.facts.marker,
                took.as_secs_f64()
            );
        }
        Cmd::Path { variant } => {
            let v: LabVariant = variant.parse()?;
            let server = rt.block_on(lab::build(v))?;
            for d in &server.disks {
                println!("{}", d.display());
            }
        }
    }
    Ok(())
}
