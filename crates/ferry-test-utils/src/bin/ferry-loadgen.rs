//! `ferry-loadgen`: drives running `ferry server` replicas with simulated agents (registration, long-poll
//! heartbeats, replication runs through the real agent code) and samples the Describe calls; prints the
//! measurements as JSON (`ferry_test_utils::sim::SimReport`). bench/load.sh runs it; see bench/README.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ferry_test_utils::sim::{self, SimConfig};

#[derive(Parser)]
#[command(
    about = "Load a Ferry server with simulated agents and report heartbeats/s and Describe latencies"
)]
struct Args {
    /// Server URL (repeat for several replicas; agents and calls are spread round-robin).
    #[arg(long = "endpoint", required = true)]
    endpoints: Vec<String>,
    /// The server's root credentials file (`<data-dir>/root-credentials.json`): access key and CA.
    #[arg(long)]
    credentials: PathBuf,
    /// Simulated source servers.
    #[arg(long, default_value_t = 10_000)]
    sources: usize,
    /// Replication runs kept in flight.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Size of each synthetic disk, MiB.
    #[arg(long, default_value_t = 4)]
    disk_mib: u64,
    /// Seconds after registration before measuring (first heartbeats spread over one interval).
    #[arg(long, default_value_t = 60)]
    warmup: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 180)]
    duration: u64,
    /// Calls per second of each of DescribeSourceServers and DescribeReplicationJobs.
    #[arg(long, default_value_t = 10.0)]
    describe_rate: f64,
    /// Heartbeats without long polling (`wait: false`); the real agent long-polls.
    #[arg(long)]
    no_long_poll: bool,
    /// Directory for synthetic disks.
    #[arg(long)]
    work_dir: PathBuf,
    /// Keeps the simulated agents' credentials, so a later run reuses the same sources.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// A server process to measure (CPU, peak RSS), as NAME=PID; repeatable.
    #[arg(long = "watch")]
    watch: Vec<String>,
    /// Write the JSON report here as well as to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let creds: ferry_server::RootCredentials = serde_json::from_slice(
        &std::fs::read(&args.credentials)
            .with_context(|| format!("cannot read {}", args.credentials.display()))?,
    )
    .with_context(|| {
        format!(
            "{} is not a root credentials file",
            args.credentials.display()
        )
    })?;
    let ca_pem = std::fs::read_to_string(&creds.ca_cert)
        .with_context(|| format!("cannot read the CA {}", creds.ca_cert.display()))?;
    let server_pids = args
        .watch
        .iter()
        .map(|w| {
            let (name, pid) = w
                .split_once('=')
                .with_context(|| format!("--watch {w}: use NAME=PID"))?;
            Ok((
                name.to_owned(),
                pid.parse()
                    .with_context(|| format!("--watch {w}: PID is not a number"))?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = sim::run(SimConfig {
        endpoints: args.endpoints,
        ca_pem,
        access_key_id: creds.access_key_id,
        access_key_secret: creds.access_key_secret,
        sources: args.sources,
        runs: args.runs,
        disk_mib: args.disk_mib,
        warmup: Duration::from_secs(args.warmup),
        duration: Duration::from_secs(args.duration),
        describe_rate: args.describe_rate,
        long_poll: !args.no_long_poll,
        work_dir: args.work_dir,
        state_file: args.state_file,
        server_pids,
    })
    .await?;
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &text).with_context(|| format!("cannot write {}", out.display()))?;
    }
    println!("{text}");
    Ok(())
}
