//! A load simulator that speaks the real agent protocol: thousands of simulated source servers against one
//! or several `ferry server` replicas, used by `ferry-loadgen` (bench/load.sh) and by a smoke test.
//!
//! What it does, and how faithfully:
//! - **Registration** goes through real activation: activation codes (`CreateAccessToken`, at most 1000
//!   uses each, so several) and `POST /agent/v1/activate` with a synthetic inventory (one disk). The
//!   credentials are kept, optionally in a state file so that a later run reuses the same sources.
//! - **Heartbeats** copy `ferry-agent`'s daemon loop (`ferry_agent::daemon::run`): each simulated agent has
//!   its own HTTPS connection (its own `ferry_agent::conn::Conn`, as separate machines would), sends the
//!   inventory on its first heartbeat, long-polls (`wait: true`: the server holds the answer for up to one
//!   heartbeat interval) and beats again when the interval since it asked has passed. First heartbeats are
//!   spread evenly over one interval, so beats stay spread. `long_poll = false` sends `wait: false`
//!   instead, to measure the per-heartbeat cost alone.
//! - **Replication** uses the real agent's code (`ferry_agent::replicate::run_task`: missing, chunk
//!   upload, index commit, progress, finish) on a synthetic raw disk written when the task arrives: half
//!   of its 1 MiB chunks are unique to the run (BLAKE3 keyed stream of the run ID), half are shared by all
//!   runs (deduplicated after the first). `runs` sources each get an incremental job (`RunOnce=false`,
//!   one image kept) that a driver restarts (`StartReplicationJob` from `Waiting`) as soon as the previous
//!   run's image is built (asking again after 0.5, 1, 2, then every 4 s while the image is being built),
//!   so `runs` runs are in flight at all times.
//! - **Describe sampling**: `DescribeSourceServers` and `DescribeReplicationJobs` (PageSize 50, random
//!   pages, one call in four with a State/Status filter), each at `describe_rate` calls per second,
//!   open-loop (a slow answer does not delay the next call, so queueing shows in the latency), signed with
//!   the root key like any SDK, on their own connections and, given `SimConfig::probe`, their own runtime.
//!   Latencies are kept whole and sorted for the percentiles.
//!
//! Only what starts inside the measured window (after `warmup`) is counted. The simulator never kills or
//! configures servers: the caller starts them and passes their endpoints (and PIDs, for CPU and RSS).
//!
//! State file (`SimConfig::state_file`, JSON, mode 0600 because it holds agent secrets):
//! `{"format":"ferry-loadgen-agents","version":1,"agents":[{"source_id","key_id","secret"}…]}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry::client::Client;
use ferry_agent::conn::{CallError, Conn};
use ferry_types::inventory::{
    AddrConfig, BootMode, Disk, DiskSource, Inventory, NetInterface, OsRelease,
};
use ferry_types::protocol::{
    ActivateRequest, ActivateResponse, AgentCredentials, AgentState, HeartbeatRequest,
    HeartbeatResponse, ReplicateTask,
};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::procstat;

/// Activations in flight during registration.
const ACTIVATIONS_IN_FLIGHT: usize = 16;
/// Describe calls in flight at most; a call due while this many are pending is counted as `shed`.
const DESCRIBES_IN_FLIGHT: usize = 256;
/// A driver's first retry of `StartReplicationJob` while the previous run's image is still being built,
/// doubled up to `BUSY_RETRY_MAX`: like an SDK poller, not a tight loop (every call is a signed, audited
/// API call, and 200 drivers at 4 calls/s would be the load instead of the fleet).
const BUSY_RETRY_FIRST: Duration = Duration::from_millis(500);
const BUSY_RETRY_MAX: Duration = Duration::from_secs(4);
/// Uses per activation code (SMC's maximum `Count`).
const CODE_USES: usize = 1000;
/// The state file's format name and version.
const STATE_FORMAT: &str = "ferry-loadgen-agents";
const STATE_VERSION: u32 = 1;
const AGENT_VERSION: &str = concat!("sim-", env!("CARGO_PKG_VERSION"));

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Server URLs (`https://127.0.0.1:PORT`), one per replica; agents and calls are spread round-robin.
    pub endpoints: Vec<String>,
    /// The servers' CA (PEM).
    pub ca_pem: String,
    pub access_key_id: String,
    pub access_key_secret: String,
    /// Simulated source servers.
    pub sources: usize,
    /// Replication runs kept in flight.
    pub runs: usize,
    /// Size of each synthetic disk, MiB.
    pub disk_mib: u64,
    /// Time before the measured window: registration is done before it starts; this covers the spread
    /// of the first heartbeats and the first runs.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Calls per second of each Describe action.
    pub describe_rate: f64,
    /// `wait: true` in heartbeats, as the real agent sends.
    pub long_poll: bool,
    /// Where synthetic disks are written (one file per run in flight).
    pub work_dir: PathBuf,
    /// Credentials of earlier registrations, reused and extended (see the module doc).
    pub state_file: Option<PathBuf>,
    /// Server process IDs whose CPU and memory (with their descendants) are reported.
    pub server_pids: Vec<(String, u32)>,
    /// The runtime the Describe samplers run on, with their own connections; `None` = the caller's.
    /// `ferry-loadgen` always gives them one at the process's priority, so that `--agents-nice` and
    /// `--agents-idle` lower only the simulated agents: an API client on its own machine would not wait
    /// for the agents' CPU.
    pub probe: Option<tokio::runtime::Handle>,
}

/// Latency figures of one kind of call, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyStats {
    pub count: usize,
    pub errors: usize,
    /// Calls not sent because `DESCRIBES_IN_FLIGHT` were already pending (overload).
    pub shed: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// First few error messages, to say what went wrong.
    pub sample_errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HeartbeatStats {
    /// Heartbeats answered by the server during the window.
    pub handled: u64,
    pub per_sec: f64,
    /// `sources / interval`: what the sources should send when every heartbeat is answered in time.
    pub expected_per_sec: f64,
    pub errors: u64,
    pub heartbeat_interval_secs: u32,
    /// Heartbeats that came back with a task (a run started).
    pub with_task: u64,
    /// Round-trip latency; only meaningful without long polling (`long_poll: false`).
    pub latency: Option<LatencyStats>,
    pub sample_errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicationStats {
    /// Runs finished (Succeeded) by simulated agents during the window.
    pub runs_succeeded: u64,
    pub runs_failed: u64,
    pub runs_per_min: f64,
    /// From `StartReplicationJob` accepted to the agent's finish call answered, seconds.
    pub run_secs_p50: f64,
    pub run_secs_p99: f64,
    /// From the agent's finish to the next accepted start (image build + scheduling), seconds.
    pub build_secs_p50: f64,
    pub bytes_sent: u64,
    pub sample_errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessStats {
    pub name: String,
    pub pid: u32,
    /// CPU seconds of the process tree during the window.
    pub cpu_secs: f64,
    /// `cpu_secs` / window: 1.0 is one core busy.
    pub cpu_cores: f64,
    /// Largest `VmHWM` of the tree at the end (the process's whole life, registration included), MiB.
    pub peak_rss_mib: f64,
    pub rss_mib_end: f64,
    pub processes: usize,
}

/// What one simulation measured (JSON, versioned: `version` changes when a field changes meaning).
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub version: u32,
    pub endpoints: usize,
    pub sources: usize,
    pub runs_in_flight: usize,
    pub disk_mib: u64,
    pub long_poll: bool,
    pub measured_secs: f64,
    /// Sources registered by this run (0 when all came from the state file) and how long it took.
    pub registered: usize,
    pub registration_secs: f64,
    pub heartbeats: HeartbeatStats,
    pub replication: ReplicationStats,
    pub describe_source_servers: LatencyStats,
    pub describe_replication_jobs: LatencyStats,
    /// `TotalCount` of `DescribeSourceServers State=Unavailable` at the end: sources the server thinks are
    /// offline, i.e. heartbeats it did not keep up with.
    pub unavailable_sources_at_end: i64,
    pub processes: Vec<ProcessStats>,
    /// The load generator's own CPU during the window (it shares the machine), in cores.
    pub loadgen_cpu_cores: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateFile {
    format: String,
    version: u32,
    agents: Vec<AgentCredentials>,
}

/// A latency recorder: whole samples, for exact percentiles.
#[derive(Default)]
struct Recorder {
    ms: std::sync::Mutex<Vec<f64>>,
    errors: AtomicUsize,
    shed: AtomicUsize,
    sample_errors: std::sync::Mutex<Vec<String>>,
}

impl Recorder {
    fn ok(&self, d: Duration) {
        if let Ok(mut v) = self.ms.lock() {
            v.push(d.as_secs_f64() * 1000.0);
        }
    }

    fn err(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        note_error(&self.sample_errors, e);
    }

    fn stats(&self) -> LatencyStats {
        let mut v = self.ms.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort_by(f64::total_cmp);
        LatencyStats {
            count: v.len(),
            errors: self.errors.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
            p50_ms: percentile(&v, 50.0),
            p90_ms: percentile(&v, 90.0),
            p99_ms: percentile(&v, 99.0),
            max_ms: v.last().copied().unwrap_or(0.0),
            sample_errors: self
                .sample_errors
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default(),
        }
    }
}

fn note_error(list: &std::sync::Mutex<Vec<String>>, e: impl std::fmt::Display) {
    if let Ok(mut l) = list.lock()
        && l.len() < 5
    {
        l.push(e.to_string().chars().take(300).collect());
    }
}

/// Nearest-rank percentile of sorted values; 0 when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Counters shared by all tasks. Only events while `measuring` is set count.
#[derive(Default)]
struct Counters {
    measuring: AtomicBool,
    heartbeats: AtomicU64,
    heartbeat_errors: AtomicU64,
    with_task: AtomicU64,
    heartbeat_latency: Recorder,
    heartbeat_error_samples: std::sync::Mutex<Vec<String>>,
    runs_ok: AtomicU64,
    runs_failed: AtomicU64,
    bytes_sent: AtomicU64,
    run_secs: std::sync::Mutex<Vec<f64>>,
    build_secs: std::sync::Mutex<Vec<f64>>,
    run_errors: std::sync::Mutex<Vec<String>>,
    dss: Recorder,
    drj: Recorder,
}

impl Counters {
    fn on(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }
}

/// One simulated agent.
struct SimAgent {
    index: usize,
    creds: AgentCredentials,
    endpoint: String,
    inventory: Inventory,
    /// Set once a heartbeat was answered.
    online: Notify,
    is_online: AtomicBool,
    /// Told when a run of this agent ended (Ok = succeeded).
    run_done: Notify,
}

struct Ctx {
    cfg: SimConfig,
    clients: Vec<Client>,
    /// The Describe samplers' clients: not shared with the drivers, so that their connections are driven
    /// by the samplers' runtime (`SimConfig::probe`).
    probe_clients: Vec<Client>,
    counters: Counters,
    cancel: CancellationToken,
}

impl Ctx {
    fn client(&self, i: usize) -> &Client {
        &self.clients[i % self.clients.len()]
    }

    fn probe_client(&self, i: usize) -> &Client {
        &self.probe_clients[i % self.probe_clients.len()]
    }
}

/// A synthetic inventory: one raw disk of `disk_bytes`, a static IPv4 address.
pub fn synthetic_inventory(index: usize, disk_bytes: u64) -> Inventory {
    Inventory {
        hostname: format!("sim-{index:05}"),
        os: OsRelease {
            id: "debian".into(),
            name: "Debian GNU/Linux".into(),
            version_id: "12".into(),
            pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
        },
        kernel: "6.1.0-sim".into(),
        architecture: "x86_64".into(),
        boot_mode: BootMode::Bios,
        cpus: 2,
        memory_bytes: 4 << 30,
        disks: vec![Disk {
            index: 0,
            path: format!("/sim/{index}/disk0.img"),
            source: DiskSource::ImageFile,
            size_bytes: disk_bytes,
            model: None,
            partition_table: None,
            table_uuid: None,
            partitions: vec![],
            filesystem: None,
        }],
        network: vec![NetInterface {
            name: "eth0".into(),
            mac: Some(format!(
                "52:54:00:{:02x}:{:02x}:{:02x}",
                (index >> 16) & 0xff,
                (index >> 8) & 0xff,
                index & 0xff
            )),
            addresses: vec![format!(
                "10.{}.{}.{}/16",
                (index >> 16) & 0xff,
                (index >> 8) & 0xff,
                index & 0xff
            )],
            mtu: Some(1500),
            config: AddrConfig::Static,
            config_source: None,
        }],
        dns: vec!["10.0.0.2".into()],
        gateway: Some("10.0.0.1".into()),
        agent_version: AGENT_VERSION.into(),
    }
}

/// Writes the synthetic disk of a run: even 1 MiB blocks unique to `run_id`, odd ones shared by all runs.
/// The same run ID always gives the same bytes, so a resumed run finds what it stored before.
pub fn write_synthetic_disk(path: &Path, run_id: &str, mib: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    for b in 0..mib {
        let mut h = blake3::Hasher::new();
        if b % 2 == 0 {
            h.update(b"ferry-sim unique block");
            h.update(run_id.as_bytes());
        } else {
            h.update(b"ferry-sim shared block");
        }
        h.update(&b.to_le_bytes());
        h.finalize_xof().fill(&mut block);
        f.write_all(&block)?;
    }
    f.flush()?;
    f.into_inner().map_err(|e| e.into_error())?.sync_data()
}

fn load_state(path: &Path) -> anyhow::Result<Vec<AgentCredentials>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let s: StateFile = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is not a ferry-loadgen state file: remove it to register new sources",
            path.display()
        )
    })?;
    if s.format != STATE_FORMAT || s.version != STATE_VERSION {
        bail!(
            "{} is a {} v{} file; this simulator reads {STATE_FORMAT} v{STATE_VERSION}: remove it to register new sources",
            path.display(),
            s.format,
            s.version
        );
    }
    Ok(s.agents)
}

fn save_state(path: &Path, agents: &[AgentCredentials]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let s = StateFile {
        format: STATE_FORMAT.into(),
        version: STATE_VERSION,
        agents: agents.to_vec(),
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec(&s)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Registers `count` sources through activation codes; indexes start at `first`.
async fn register(
    ctx: &Arc<Ctx>,
    first: usize,
    count: usize,
) -> anyhow::Result<Vec<AgentCredentials>> {
    let mut codes = Vec::new();
    let mut left = count;
    while left > 0 {
        let n = left.min(CODE_USES);
        let v = ctx
            .client(0)
            .smc(
                "CreateAccessToken",
                &[
                    ("Count".into(), n.to_string()),
                    ("Name".into(), format!("loadgen{}", codes.len())),
                ],
            )
            .await
            .context("CreateAccessToken")?;
        let code = v["AccessTokenCode"]
            .as_str()
            .context("AccessTokenCode in CreateAccessToken's answer")?
            .to_owned();
        codes.push((code, n));
        left -= n;
    }
    let sem = Arc::new(Semaphore::new(ACTIVATIONS_IN_FLIGHT));
    let mut tasks = Vec::with_capacity(count);
    let mut i = first;
    for (code, n) in codes {
        for _ in 0..n {
            let (ctx, sem, code, index) = (ctx.clone(), sem.clone(), code.clone(), i);
            i += 1;
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await?;
                let endpoint = &ctx.cfg.endpoints[index % ctx.cfg.endpoints.len()];
                let conn = Conn::new(endpoint, &ctx.cfg.ca_pem, None)?;
                let req = ActivateRequest {
                    token_id: None,
                    code,
                    inventory: synthetic_inventory(index, ctx.cfg.disk_mib << 20),
                    prechecks: vec![],
                };
                let resp: ActivateResponse = conn
                    .post("/activate", &req)
                    .await
                    .with_context(|| format!("activating simulated source {index}"))?;
                anyhow::Ok(resp.credentials)
            }));
        }
    }
    let mut out = Vec::with_capacity(count);
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Runs the simulation: registration, warm-up, the measured window; returns what was measured.
pub async fn run(cfg: SimConfig) -> anyhow::Result<SimReport> {
    if cfg.endpoints.is_empty() {
        bail!("no server endpoint given");
    }
    if cfg.runs > cfg.sources {
        bail!(
            "{} replication runs need at least as many sources (got {})",
            cfg.runs,
            cfg.sources
        );
    }
    std::fs::create_dir_all(&cfg.work_dir)
        .with_context(|| format!("cannot create {}", cfg.work_dir.display()))?;
    let clients = || {
        cfg.endpoints
            .iter()
            .map(|e| {
                Client::new(
                    e,
                    &cfg.access_key_id,
                    &cfg.access_key_secret,
                    Some(&cfg.ca_pem),
                )
                .map_err(anyhow::Error::from)
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        clients: clients()?,
        probe_clients: clients()?,
        counters: Counters::default(),
        cancel: CancellationToken::new(),
    });

    // Registration (not measured).
    let started = Instant::now();
    let mut creds = match &cfg.state_file {
        Some(p) => load_state(p)?,
        None => Vec::new(),
    };
    creds.truncate(cfg.sources);
    let registered = cfg.sources - creds.len();
    if registered > 0 {
        let more = register(&ctx, creds.len(), registered).await?;
        creds.extend(more);
        if let Some(p) = &cfg.state_file {
            save_state(p, &creds)?;
        }
    }
    let registration_secs = started.elapsed().as_secs_f64();

    let agents: Vec<Arc<SimAgent>> = creds
        .into_iter()
        .enumerate()
        .map(|(index, creds)| {
            Arc::new(SimAgent {
                index,
                creds,
                endpoint: cfg.endpoints[index % cfg.endpoints.len()].clone(),
                inventory: synthetic_inventory(index, cfg.disk_mib << 20),
                online: Notify::new(),
                is_online: AtomicBool::new(false),
                run_done: Notify::new(),
            })
        })
        .collect();

    // The heartbeat interval the servers ask for, from the first activation or heartbeat answer.
    let interval = Arc::new(AtomicU64::new(30));
    if let Some(a) = agents.first() {
        let conn = Conn::new(&a.endpoint, &cfg.ca_pem, Some(&a.creds))?;
        let hb = HeartbeatRequest {
            agent_version: AGENT_VERSION.into(),
            state: AgentState::Idle,
            inventory: None,
            prechecks: None,
            wait: false,
        };
        let (resp, _) = conn
            .post_timed::<_, HeartbeatResponse>("/heartbeat", &hb)
            .await
            .context("first heartbeat")?;
        interval.store(
            u64::from(resp.heartbeat_interval_secs.max(1)),
            Ordering::Relaxed,
        );
    }
    let spread = Duration::from_secs(interval.load(Ordering::Relaxed));

    let mut tasks = Vec::new();
    let n = agents.len().max(1);
    for a in &agents {
        let offset = spread.mul_f64(a.index as f64 / n as f64);
        tasks.push(tokio::spawn(agent_loop(ctx.clone(), a.clone(), offset)));
    }
    for a in agents.iter().take(cfg.runs) {
        tasks.push(tokio::spawn(run_driver(ctx.clone(), a.clone())));
    }
    let probe = cfg
        .probe
        .clone()
        .unwrap_or_else(tokio::runtime::Handle::current);
    tasks.push(probe.spawn(describe_sampler(ctx.clone(), true)));
    tasks.push(probe.spawn(describe_sampler(ctx.clone(), false)));

    tokio::time::sleep(cfg.warmup).await;
    let ticks = procstat::clock_ticks();
    let sample_all = || {
        cfg.server_pids
            .iter()
            .map(|(name, pid)| (name.clone(), *pid, procstat::sample_tree(*pid, ticks)))
            .collect::<Vec<_>>()
    };
    let before = sample_all();
    let me_before = procstat::sample_tree(std::process::id(), ticks);
    let window = Instant::now();
    ctx.counters.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(cfg.duration).await;
    ctx.counters.measuring.store(false, Ordering::Relaxed);
    let measured = window.elapsed().as_secs_f64();
    let after = sample_all();
    let me_after = procstat::sample_tree(std::process::id(), ticks);

    let unavailable = ctx
        .client(0)
        .smc(
            "DescribeSourceServers",
            &[
                ("State".into(), "Unavailable".into()),
                ("PageSize".into(), "1".into()),
            ],
        )
        .await
        .ok()
        .and_then(|v| v["TotalCount"].as_i64())
        .unwrap_or(-1);

    ctx.cancel.cancel();
    for t in tasks {
        // Tasks end at cancellation; one that panicked is reported, not ignored.
        if let Err(e) = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap_or(Ok(()))
            && e.is_panic()
        {
            bail!("a simulator task panicked: {e}");
        }
    }

    let processes = before
        .into_iter()
        .zip(after)
        .filter_map(|((name, pid, b), (_, _, a))| {
            let (b, a) = (b?, a?);
            let cpu = (a.cpu_secs - b.cpu_secs).max(0.0);
            Some(ProcessStats {
                name,
                pid,
                cpu_secs: cpu,
                cpu_cores: cpu / measured,
                peak_rss_mib: a.peak_rss_bytes as f64 / (1 << 20) as f64,
                rss_mib_end: a.rss_bytes as f64 / (1 << 20) as f64,
                processes: a.processes,
            })
        })
        .collect();
    let c = &ctx.counters;
    let hb_interval = interval.load(Ordering::Relaxed);
    let sorted = |m: &std::sync::Mutex<Vec<f64>>| {
        let mut v = m.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort_by(f64::total_cmp);
        v
    };
    let run_secs = sorted(&c.run_secs);
    let build_secs = sorted(&c.build_secs);
    let runs_ok = c.runs_ok.load(Ordering::Relaxed);
    let handled = c.heartbeats.load(Ordering::Relaxed);
    Ok(SimReport {
        version: 1,
        endpoints: cfg.endpoints.len(),
        sources: cfg.sources,
        runs_in_flight: cfg.runs,
        disk_mib: cfg.disk_mib,
        long_poll: cfg.long_poll,
        measured_secs: measured,
        registered,
        registration_secs,
        heartbeats: HeartbeatStats {
            handled,
            per_sec: handled as f64 / measured,
            expected_per_sec: cfg.sources as f64 / hb_interval as f64,
            errors: c.heartbeat_errors.load(Ordering::Relaxed),
            heartbeat_interval_secs: u32::try_from(hb_interval).unwrap_or(u32::MAX),
            with_task: c.with_task.load(Ordering::Relaxed),
            latency: (!cfg.long_poll).then(|| c.heartbeat_latency.stats()),
            sample_errors: c
                .heartbeat_error_samples
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default(),
        },
        replication: ReplicationStats {
            runs_succeeded: runs_ok,
            runs_failed: c.runs_failed.load(Ordering::Relaxed),
            runs_per_min: runs_ok as f64 * 60.0 / measured,
            run_secs_p50: percentile(&run_secs, 50.0),
            run_secs_p99: percentile(&run_secs, 99.0),
            build_secs_p50: percentile(&build_secs, 50.0),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            sample_errors: c.run_errors.lock().map(|e| e.clone()).unwrap_or_default(),
        },
        describe_source_servers: c.dss.stats(),
        describe_replication_jobs: c.drj.stats(),
        unavailable_sources_at_end: unavailable,
        processes,
        loadgen_cpu_cores: match (me_before, me_after) {
            (Some(b), Some(a)) => (a.cpu_secs - b.cpu_secs) / measured,
            _ => 0.0,
        },
    })
}

/// The run this agent is working on: its ID, cancel token and task.
type Current = Option<(String, CancellationToken, tokio::task::JoinHandle<()>)>;

/// `ferry-agent`'s daemon loop (`ferry_agent::daemon::run`), with a synthetic inventory and disk.
async fn agent_loop(ctx: Arc<Ctx>, a: Arc<SimAgent>, offset: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(offset) => {}
        _ = ctx.cancel.cancelled() => return,
    }
    let conn = match Conn::new(&a.endpoint, &ctx.cfg.ca_pem, Some(&a.creds)) {
        Ok(c) => c,
        Err(e) => {
            ctx.counters
                .heartbeat_errors
                .fetch_add(1, Ordering::Relaxed);
            note_error(&ctx.counters.heartbeat_error_samples, e);
            return;
        }
    };
    let mut current: Current = None;
    let mut inventory_sent = false;
    let mut backoff = Duration::from_secs(1);
    loop {
        if current.as_ref().is_some_and(|(_, _, h)| h.is_finished()) {
            current = None;
        }
        let req = HeartbeatRequest {
            agent_version: AGENT_VERSION.into(),
            state: match &current {
                Some((run, _, _)) => match run.parse() {
                    Ok(run_id) => AgentState::Replicating { run_id },
                    Err(_) => AgentState::Idle,
                },
                None => AgentState::Idle,
            },
            inventory: (!inventory_sent).then(|| a.inventory.clone()),
            prechecks: (!inventory_sent).then(Vec::new),
            wait: ctx.cfg.long_poll,
        };
        let asked = Instant::now();
        let counting = ctx.counters.on();
        let answer = tokio::select! {
            r = conn.post_timed::<_, HeartbeatResponse>("/heartbeat", &req) => r,
            _ = ctx.cancel.cancelled() => break,
        };
        let interval = match answer {
            Ok((resp, _)) => {
                // Counted when answered inside the window (README: answers received in the window): a
                // long poll asked before the window and answered in it counts, one still held at its end
                // does not, so N sources at interval I give N / I however long the window.
                if ctx.counters.on() {
                    ctx.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                if counting {
                    if !ctx.cfg.long_poll {
                        ctx.counters.heartbeat_latency.ok(asked.elapsed());
                    }
                    if resp.task.is_some() {
                        ctx.counters.with_task.fetch_add(1, Ordering::Relaxed);
                    }
                }
                inventory_sent = true;
                backoff = Duration::from_secs(1);
                if !a.is_online.swap(true, Ordering::Relaxed) {
                    a.online.notify_waiters();
                }
                current = steer(&ctx, &a, current, resp.task, &conn);
                Duration::from_secs(u64::from(resp.heartbeat_interval_secs.max(1)))
                    .saturating_sub(asked.elapsed())
            }
            Err(e) => {
                if counting {
                    ctx.counters
                        .heartbeat_errors
                        .fetch_add(1, Ordering::Relaxed);
                    note_error(&ctx.counters.heartbeat_error_samples, &e);
                }
                if let CallError::Api { status: 401, .. } = e {
                    break;
                }
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = ctx.cancel.cancelled() => break,
        }
    }
    if let Some((_, cancel, handle)) = current.take() {
        cancel.cancel();
        let _ = handle.await;
    }
}

/// Starts the run the server wants and abandons one it no longer wants, like the agent's `steer`.
fn steer(
    ctx: &Arc<Ctx>,
    a: &Arc<SimAgent>,
    current: Current,
    wanted: Option<ReplicateTask>,
    conn: &Conn,
) -> Current {
    match (current, wanted) {
        (Some(cur), Some(w)) if cur.0 == w.run_id.to_string() => Some(cur),
        (cur, wanted) => {
            if let Some((_, cancel, _)) = cur {
                cancel.cancel();
            }
            wanted.map(|task| {
                let cancel = CancellationToken::new();
                let run_id = task.run_id.to_string();
                let handle = tokio::spawn(replicate(
                    ctx.clone(),
                    a.clone(),
                    conn.clone(),
                    task,
                    cancel.clone(),
                ));
                (run_id, cancel, handle)
            })
        }
    }
}

/// One run through the real agent's replication code, on a synthetic disk written for it.
async fn replicate(
    ctx: Arc<Ctx>,
    a: Arc<SimAgent>,
    conn: Conn,
    task: ReplicateTask,
    cancel: CancellationToken,
) {
    let run_id = task.run_id.to_string();
    let path = ctx.cfg.work_dir.join(format!("{run_id}.img"));
    let (p, id, mib) = (path.clone(), run_id.clone(), ctx.cfg.disk_mib);
    let written = tokio::task::spawn_blocking(move || write_synthetic_disk(&p, &id, mib)).await;
    let c = &ctx.counters;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            c.runs_failed.fetch_add(1, Ordering::Relaxed);
            note_error(
                &c.run_errors,
                format!("cannot write {}: {e}", path.display()),
            );
            return;
        }
        Err(e) => {
            note_error(&c.run_errors, e);
            return;
        }
    }
    let result = ferry_agent::replicate::run_task(conn, task, vec![path.clone()], cancel).await;
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(p) => {
            if c.on() {
                c.runs_ok.fetch_add(1, Ordering::Relaxed);
                c.bytes_sent.fetch_add(p.bytes_sent, Ordering::Relaxed);
            }
        }
        Err(ferry_agent::replicate::ReplicateError::Stopped) => {}
        Err(e) => {
            if c.on() {
                c.runs_failed.fetch_add(1, Ordering::Relaxed);
            }
            note_error(&c.run_errors, format!("run {run_id}: {e}"));
        }
    }
    a.run_done.notify_one();
}

/// Keeps one replication run of agent `a`'s source in flight: an incremental job (created once, or found
/// from an earlier simulation), started again as soon as it is `Waiting` after the previous run.
async fn run_driver(ctx: Arc<Ctx>, a: Arc<SimAgent>) {
    let client = ctx.client(a.index);
    let source = a.creds.source_id.to_string();
    // Jobs can only be created for an online (Available) source.
    while !a.is_online.load(Ordering::Relaxed) {
        tokio::select! {
            _ = a.online.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = ctx.cancel.cancelled() => return,
        }
    }
    let c = &ctx.counters;
    let job_id = loop {
        match ensure_job(client, &source).await {
            Ok(j) => break j,
            Err(e) => {
                note_error(&c.run_errors, format!("job for {source}: {e:#}"));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = ctx.cancel.cancelled() => return,
                }
            }
        }
    };
    let mut finished_at: Option<Instant> = None;
    let mut busy_wait = BUSY_RETRY_FIRST;
    loop {
        if ctx.cancel.is_cancelled() {
            return;
        }
        let started = Instant::now();
        match client
            .smc("StartReplicationJob", &[("JobId".into(), job_id.clone())])
            .await
        {
            Ok(_) => {
                busy_wait = BUSY_RETRY_FIRST;
                if let Some(f) = finished_at.take()
                    && c.on()
                    && let Ok(mut v) = c.build_secs.lock()
                {
                    v.push(f.elapsed().as_secs_f64());
                }
                // Wait for the agent's run to end (the heartbeat picks the task up).
                tokio::select! {
                    _ = a.run_done.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(600)) => {
                        note_error(&c.run_errors, format!("job {job_id}: no run ended within 600 s of its start"));
                    }
                    _ = ctx.cancel.cancelled() => return,
                }
                if c.on()
                    && let Ok(mut v) = c.run_secs.lock()
                {
                    v.push(started.elapsed().as_secs_f64());
                }
                finished_at = Some(Instant::now());
            }
            Err(e) => {
                // Still building the previous run's image (Running/Processing): try again shortly.
                let busy = e.api_code() == Some("ReplicationJob.InvalidStatus");
                if !busy {
                    note_error(&c.run_errors, format!("start {job_id}: {e}"));
                }
                let wait = if busy {
                    let w = busy_wait;
                    busy_wait = (busy_wait * 2).min(BUSY_RETRY_MAX);
                    w
                } else {
                    Duration::from_secs(2)
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = ctx.cancel.cancelled() => return,
                }
            }
        }
    }
}

/// The simulator's job for `source`: an open one from an earlier simulation, or a new incremental job.
async fn ensure_job(client: &Client, source: &str) -> anyhow::Result<String> {
    let v = client
        .smc(
            "DescribeReplicationJobs",
            &[("SourceId.1".into(), source.to_owned())],
        )
        .await?;
    let open = v["ReplicationJobs"]["ReplicationJob"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|j| {
            !matches!(
                j["Status"].as_str(),
                Some("Finished" | "Deleting" | "Expired")
            )
        })
        .and_then(|j| j["JobId"].as_str().map(str::to_owned));
    if let Some(j) = open {
        return Ok(j);
    }
    let v = client
        .smc(
            "CreateReplicationJob",
            &[
                ("SourceId".into(), source.to_owned()),
                ("RegionId".into(), "local".into()),
                ("RunOnce".into(), "false".into()),
                ("Frequency".into(), "168".into()),
                ("MaxNumberOfImageToKeep".into(), "1".into()),
            ],
        )
        .await?;
    Ok(v["JobId"]
        .as_str()
        .context("JobId in CreateReplicationJob's answer")?
        .to_owned())
}

fn recorder(c: &Counters, sources: bool) -> &Recorder {
    if sources { &c.dss } else { &c.drj }
}

/// Calls one Describe action at `describe_rate` per second, open-loop, and records the latencies.
async fn describe_sampler(ctx: Arc<Ctx>, sources: bool) {
    if ctx.cfg.describe_rate <= 0.0 {
        return;
    }
    let period = Duration::from_secs_f64(1.0 / ctx.cfg.describe_rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let in_flight = Arc::new(Semaphore::new(DESCRIBES_IN_FLIGHT));
    // Pages to pick from: the last total seen.
    let total = Arc::new(AtomicU64::new(if sources {
        ctx.cfg.sources as u64
    } else {
        ctx.cfg.runs as u64
    }));
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = ctx.cancel.cancelled() => return,
        }
        n += 1;
        let counting = ctx.counters.on();
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            if counting {
                recorder(&ctx.counters, sources)
                    .shed
                    .fetch_add(1, Ordering::Relaxed);
            }
            continue;
        };
        let mut params: Vec<(String, String)> = vec![("PageSize".into(), "50".into())];
        let (filter, page) = {
            let mut rng = rand::thread_rng();
            let filtered = rng.gen_range(0..4) == 0;
            let pages = total.load(Ordering::Relaxed).div_ceil(50).max(1);
            (filtered, rng.gen_range(1..=pages))
        };
        if filter {
            let (k, v) = if sources {
                ("State", ["Available", "InUse"][n % 2])
            } else {
                ("Status", ["Running", "Waiting"][n % 2])
            };
            params.push((k.into(), v.into()));
            params.push(("PageNumber".into(), "1".into()));
        } else {
            params.push(("PageNumber".into(), page.to_string()));
        }
        let (ctx, total) = (ctx.clone(), total.clone());
        let endpoint = n;
        tokio::spawn(async move {
            let _permit = permit;
            let action = if sources {
                "DescribeSourceServers"
            } else {
                "DescribeReplicationJobs"
            };
            let t = Instant::now();
            let r = ctx.probe_client(endpoint).smc(action, &params).await;
            let d = t.elapsed();
            match r {
                Ok(v) => {
                    let list = if sources {
                        &v["SourceServers"]["SourceServer"]
                    } else {
                        &v["ReplicationJobs"]["ReplicationJob"]
                    };
                    if !list.is_array() {
                        if counting {
                            recorder(&ctx.counters, sources)
                                .err(format!("{action}: no list in {v}"));
                        }
                        return;
                    }
                    if !filter && let Some(t) = v["TotalCount"].as_u64() {
                        total.store(t, Ordering::Relaxed);
                    }
                    if counting {
                        recorder(&ctx.counters, sources).ok(d);
                    }
                }
                Err(e) => {
                    if counting {
                        recorder(&ctx.counters, sources).err(format!("{action}: {e}"));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn synthetic_disks_are_unique_per_run_and_share_odd_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b, a2) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("a2"),
        );
        write_synthetic_disk(&a, "r-1", 4).expect("a");
        write_synthetic_disk(&b, "r-2", 4).expect("b");
        write_synthetic_disk(&a2, "r-1", 4).expect("a2");
        let (a, b, a2) = (
            std::fs::read(a).expect("a"),
            std::fs::read(b).expect("b"),
            std::fs::read(a2).expect("a2"),
        );
        assert_eq!(a.len(), 4 << 20);
        assert_eq!(a, a2, "the same run ID gives the same disk");
        let block = |d: &[u8], i: usize| d[i << 20..(i + 1) << 20].to_vec();
        assert_ne!(block(&a, 0), block(&b, 0));
        assert_ne!(block(&a, 2), block(&b, 2));
        assert_eq!(block(&a, 1), block(&b, 1));
        assert_ne!(block(&a, 1), block(&a, 3));
    }

    #[test]
    fn the_state_file_round_trips_privately_and_refuses_other_formats() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agents.json");
        assert!(load_state(&path).expect("missing is empty").is_empty());
        let creds = AgentCredentials {
            source_id: ferry_types::ids::SourceId::generate(),
            key_id: "k".into(),
            secret: "s".into(),
        };
        save_state(&path, std::slice::from_ref(&creds)).expect("save");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = load_state(&path).expect("load");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].secret, "s");
        std::fs::write(&path, r#"{"format":"other","version":1,"agents":[]}"#).expect("write");
        assert!(load_state(&path).is_err());
    }
}
