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
    /// Nice value (0-19) of the simulated agents' threads. The Describe calls keep their own thread at
    /// the process's priority: on a machine shared with the servers, the agents then take only the CPU
    /// the servers leave, and the API latencies measured are not the generator's own waiting.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    agents_nice: i32,
    /// Run the simulated agents' threads under SCHED_IDLE: they get the CPU only when no other thread
    /// wants it (stronger than any nice value, which still lets them delay the servers' threads). The
    /// closest a shared machine comes to agents on machines of their own; the report's heartbeats/s and
    /// runs/min show whether the agents still carried the load.
    #[arg(long)]
    agents_idle: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The probe's runtime first, from the main thread: its thread keeps the process's priority.
    let probe = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("loadgen-probe")
        .enable_all()
        .build()
        .context("starting the probe's runtime")?;
    let (nice, idle) = (args.agents_nice, args.agents_idle);
    let agents = tokio::runtime::Builder::new_multi_thread()
        .thread_name("loadgen-agents")
        .enable_all()
        .on_thread_start(move || {
            if let Err(e) = ferry_chunk::bulk::lower_thread_priority(nice) {
                eprintln!("ferry-loadgen: cannot set nice {nice} on an agent thread: {e}");
            }
            if idle {
                use thread_priority::{
                    NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
                    set_thread_priority_and_policy, thread_native_id,
                };
                let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
                if let Err(e) =
                    set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, policy)
                {
                    eprintln!("ferry-loadgen: cannot put an agent thread under SCHED_IDLE: {e:?}");
                }
            }
        })
        .build()
        .context("starting the agents' runtime")?;
    let probe_handle = probe.handle().clone();
    agents.block_on(run(args, probe_handle))
}

async fn run(args: Args, probe: tokio::runtime::Handle) -> anyhow::Result<()> {
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
        probe: Some(probe),
    })
    .await?;
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &text).with_context(|| format!("cannot write {}", out.display()))?;
    }
    println!("{text}");
    Ok(())
}
