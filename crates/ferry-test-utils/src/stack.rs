//! Whole-stack harness: a real `ferry server` process and real `ferry-agent` processes on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use ferry::client::Client;
use ferry_server::RootCredentials;
use serde_json::Value;

use crate::{bin_path, free_port, wait_for};

/// Kills a child process (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// `kill -9`, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .with_context(|| format!("cannot open the log of {name}"))
}

/// A `ferry server` process with its own data directory and a fixed loopback port (kept across restarts).
pub struct ServerProc {
    pub data_dir: PathBuf,
    pub port: u16,
    pub proc: Option<Proc>,
    pub extra_args: Vec<String>,
    /// Extra environment variables of the server process (e.g. [`TestClock`]'s).
    pub env: Vec<(String, String)>,
}

impl ServerProc {
    /// Starts a server in `data_dir` and waits until it answers.
    pub async fn start(data_dir: &Path, extra_args: &[&str]) -> anyhow::Result<ServerProc> {
        let mut s = ServerProc {
            data_dir: data_dir.to_owned(),
            port: free_port(),
            proc: None,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
        };
        s.restart().await?;
        Ok(s)
    }

    /// Starts a server whose job clock a [`TestClock`] moves (scheduled starts, `Frequency`, expiry).
    pub async fn start_with_clock(
        data_dir: &Path,
        extra_args: &[&str],
        clock: &TestClock,
    ) -> anyhow::Result<ServerProc> {
        let mut s = ServerProc {
            data_dir: data_dir.to_owned(),
            port: free_port(),
            proc: None,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            env: vec![(
                "FERRY_TEST_CLOCK_FILE".to_owned(),
                clock.path.display().to_string(),
            )],
        };
        s.restart().await?;
        Ok(s)
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Tests beat every second unless they choose their own interval.
    fn default_interval(&self) -> &'static [&'static str] {
        if self.extra_args.iter().any(|a| a == "--heartbeat-interval") {
            &[]
        } else {
            &["--heartbeat-interval", "1"]
        }
    }

    /// (Re)starts the process on the same port and data directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)?;
        let child = Command::new(bin_path("ferry"))
            .arg("server")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(self.default_interval())
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log_file(&self.data_dir, "server")?))
            .stderr(Stdio::from(log_file(&self.data_dir, "server")?))
            .spawn()
            .context("cannot start ferry server")?;
        self.proc = Some(Proc {
            child,
            name: "ferry server".into(),
        });
        let creds_path = self.data_dir.join(ferry_server::ROOT_CREDENTIALS_FILE);
        let endpoint = self.endpoint();
        let proc = &mut self.proc;
        wait_for(Duration::from_secs(60), "the server to answer", || {
            let running = proc.as_mut().is_some_and(|p| p.is_running());
            let creds_path = creds_path.clone();
            let endpoint = endpoint.clone();
            async move {
                if !running {
                    bail!("ferry server exited; see its log");
                }
                if !creds_path.exists() {
                    return Ok(None);
                }
                let c = client_from(&creds_path, &endpoint)?;
                Ok(c.smc("DescribeSourceServers", &[]).await.ok().map(|_| ()))
            }
        })
        .await
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    pub fn credentials(&self) -> anyhow::Result<RootCredentials> {
        let text = std::fs::read(self.data_dir.join(ferry_server::ROOT_CREDENTIALS_FILE))?;
        Ok(serde_json::from_slice(&text)?)
    }

    /// An RPC client with the root account's key.
    pub fn client(&self) -> anyhow::Result<Client> {
        client_from(
            &self.data_dir.join(ferry_server::ROOT_CREDENTIALS_FILE),
            &self.endpoint(),
        )
    }

    /// Runs the `ferry` CLI against this server; returns stdout, fails with stderr.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(bin_path("ferry"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--endpoint")
            .arg(self.endpoint())
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "ferry {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates an activation code; returns (id, code).
    pub async fn activation_code(&self, count: u32) -> anyhow::Result<(String, String)> {
        let v = self
            .client()?
            .smc("CreateAccessToken", &[("Count".into(), count.to_string())])
            .await?;
        Ok((
            v["AccessTokenId"]
                .as_str()
                .context("AccessTokenId")?
                .to_owned(),
            v["AccessTokenCode"]
                .as_str()
                .context("AccessTokenCode")?
                .to_owned(),
        ))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}", self.log());
        }
    }
}

fn client_from(creds_path: &Path, endpoint: &str) -> anyhow::Result<Client> {
    let creds: RootCredentials = serde_json::from_slice(&std::fs::read(creds_path)?)?;
    let ca = std::fs::read_to_string(&creds.ca_cert)?;
    Ok(Client::new(
        endpoint,
        &creds.access_key_id,
        &creds.access_key_secret,
        Some(&ca),
    )?)
}

/// A `ferry-agent` process with its own state directory.
pub struct AgentProc {
    pub state_dir: PathBuf,
    pub disks: Vec<PathBuf>,
    pub proc: Option<Proc>,
    pub source_id: String,
}

impl AgentProc {
    /// Activates an agent for `disks` (image files) and starts its daemon.
    pub async fn activate(
        server: &ServerProc,
        state_dir: &Path,
        code: &str,
        disks: &[&Path],
    ) -> anyhow::Result<AgentProc> {
        activate_via(server, &server.endpoint(), state_dir, code, disks).await
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        self.start_with_env(&[])
    }

    /// [`AgentProc::start`] with extra environment variables (e.g. `FERRY_AGENT_HOOKS_DIR`, so that a
    /// test's pre-cutover hooks, and no other test's, run).
    pub fn start_with_env(&mut self, env: &[(&str, &std::ffi::OsStr)]) -> anyhow::Result<()> {
        let child = Command::new(bin_path("ferry-agent"))
            .arg("run")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log_file(&self.state_dir, "agent")?))
            .stderr(Stdio::from(log_file(&self.state_dir, "agent")?))
            .spawn()
            .context("cannot start ferry-agent")?;
        self.proc = Some(Proc {
            child,
            name: "ferry-agent".into(),
        });
        Ok(())
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("agent.log")).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.log());
        }
    }
}

/// One job as DescribeReplicationJobs returns it.
pub async fn job(client: &Client, job_id: &str) -> anyhow::Result<Value> {
    let v = client
        .smc(
            "DescribeReplicationJobs",
            &[("JobId.1".into(), job_id.into())],
        )
        .await?;
    v["ReplicationJobs"]["ReplicationJob"]
        .get(0)
        .cloned()
        .with_context(|| format!("job {job_id} not listed"))
}

/// Waits until a job reaches one of `statuses`; fails early if it goes InError (with its message).
pub async fn wait_job(
    client: &Client,
    job_id: &str,
    statuses: &[&str],
    timeout: Duration,
) -> anyhow::Result<Value> {
    wait_for(
        timeout,
        &format!("job {job_id} to reach {statuses:?}"),
        || async {
            let j = job(client, job_id).await?;
            let st = j["Status"].as_str().unwrap_or("");
            if statuses.contains(&st) {
                return Ok(Some(j));
            }
            if st == "InError" && !statuses.contains(&"InError") {
                bail!(
                    "job {job_id} failed: {} {}",
                    j["ErrorCode"],
                    j["StatusInfo"]
                );
            }
            Ok(None)
        },
    )
    .await
}

/// A counter from the server's `/metrics`, e.g. `ferry_chunk_uploads_total{outcome="duplicate"}`.
pub async fn metric(server: &ServerProc, name: &str) -> anyhow::Result<u64> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(server.credentials()?.ca_cert)?)?;
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()?;
    let text = http
        .get(format!("{}/metrics", server.endpoint()))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .with_context(|| format!("metric {name} not found in /metrics: {text}"))
}

/// Params helper: `[("Key", "Value")]` → owned pairs.
pub fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Exports an image's disks in `format` and returns the written files, waiting for the export task.
pub async fn export(client: &Client, image_id: &str, format: &str) -> anyhow::Result<Vec<PathBuf>> {
    let v = client
        .ecs(
            "ExportImage",
            &p(&[
                ("RegionId", "local"),
                ("ImageId", image_id),
                ("OSSBucket", "exports"),
                ("OSSPrefix", &format!("{format}/")),
                ("ImageFormat", format),
            ]),
        )
        .await?;
    let task = v["TaskId"].as_str().context("TaskId")?.to_owned();
    let done = wait_for(Duration::from_secs(120), "the export", || async {
        let t = client
            .ecs(
                "DescribeTaskAttribute",
                &p(&[("RegionId", "local"), ("TaskId", &task)]),
            )
            .await?;
        match t["TaskStatus"].as_str() {
            Some("Finished") => Ok(Some(t)),
            Some("Failed") => bail!("export failed: {}", t["ErrorMessage"]),
            _ => Ok(None),
        }
    })
    .await?;
    let result: Value = serde_json::from_str(done["Result"].as_str().context("Result")?)?;
    Ok(result["Files"]
        .as_array()
        .context("Files")?
        .iter()
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .collect())
}

/// Creates and starts a job for `source_id`; returns its ID.
pub async fn start_job(
    client: &Client,
    source_id: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<String> {
    let mut params = p(&[("SourceId", source_id), ("RegionId", "local")]);
    params.extend(p(extra));
    let v = client.smc("CreateReplicationJob", &params).await?;
    let job_id = v["JobId"].as_str().context("JobId")?.to_owned();
    client
        .smc("StartReplicationJob", &p(&[("JobId", &job_id)]))
        .await?;
    Ok(job_id)
}

/// Waits until the agent's source is registered and heart-beating.
pub async fn wait_source(client: &Client, source_id: &str) -> anyhow::Result<Value> {
    wait_for(
        Duration::from_secs(30),
        "the source to be available",
        || async {
            let v = client
                .smc("DescribeSourceServers", &p(&[("SourceId.1", source_id)]))
                .await?;
            let s = v["SourceServers"]["SourceServer"].get(0).cloned();
            Ok(s.filter(|s| s["State"] == "Available"))
        },
    )
    .await
}

/// Byte-compares two files.
pub fn same_bytes(a: &Path, b: &Path) -> anyhow::Result<bool> {
    use std::io::Read as _;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Runs `ferry-agent activate` for `disks` without starting the daemon and returns its output, whether it
/// succeeded or not: tests of bad activation codes look at the exit status and the message, and tests that
/// drive the agent protocol by hand read the credentials it saved (`<state_dir>/agent.json`).
pub fn activate_only(
    server: &ServerProc,
    state_dir: &Path,
    code: &str,
    disks: &[&Path],
) -> anyhow::Result<std::process::Output> {
    activate_only_via(server, &server.endpoint(), state_dir, code, disks)
}

/// [`activate_only`] with the agent talking to `endpoint` instead of `server`'s own address.
fn activate_only_via(
    server: &ServerProc,
    endpoint: &str,
    state_dir: &Path,
    code: &str,
    disks: &[&Path],
) -> anyhow::Result<std::process::Output> {
    let fp = server.credentials()?.ca_fingerprint;
    let mut cmd = Command::new(bin_path("ferry-agent"));
    cmd.arg("activate")
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--server")
        .arg(endpoint)
        .arg("--code")
        .arg(code)
        .arg("--ca-fingerprint")
        .arg(&fp);
    for d in disks {
        // Block devices (loop devices in tests) go through --disk, image files through --disk-image.
        let flag = if d.starts_with("/dev") {
            "--disk"
        } else {
            "--disk-image"
        };
        cmd.arg(flag).arg(d);
    }
    cmd.output().context("cannot run ferry-agent activate")
}

impl ServerProc {
    /// Stops the server the way an operator does (SIGTERM, graceful shutdown) and waits until it has
    /// exited, so that the port refuses connections afterwards. `restart` brings it back on the same port.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut p) = self.proc.take() else {
            return Ok(());
        };
        let pid = p.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        // Graceful shutdown lets in-flight requests finish for up to 10 s.
        let exited = wait_for(
            Duration::from_secs(20),
            "the server to exit after SIGTERM",
            || {
                let r = p.child.try_wait();
                async move { Ok(r?.map(|_| ())) }
            },
        )
        .await;
        if exited.is_err() {
            p.kill9();
        }
        exited
    }
}

/// `TotalCount` of DescribeSourceServers: how many source servers are registered.
pub async fn source_count(client: &Client) -> anyhow::Result<u64> {
    let v = client.smc("DescribeSourceServers", &[]).await?;
    v["TotalCount"]
        .as_u64()
        .context("TotalCount in DescribeSourceServers")
}

/// A server with one activated, heart-beating agent for `disks`: how most whole-stack tests begin.
pub struct OneSource {
    pub server: ServerProc,
    pub client: Client,
    pub agent: AgentProc,
}

impl OneSource {
    pub async fn start(
        server_dir: &Path,
        agent_dir: &Path,
        disks: &[&Path],
    ) -> anyhow::Result<Self> {
        Self::start_with_args(server_dir, agent_dir, disks, &[]).await
    }

    /// Restarts the source's agent so that it runs the pre-cutover hooks under `hooks`
    /// (`FERRY_AGENT_HOOKS_DIR`: this test's hooks, and no other test's).
    pub fn restart_agent_with_hooks(&mut self, hooks: &Path) -> anyhow::Result<()> {
        self.agent.kill9();
        self.agent
            .start_with_env(&[("FERRY_AGENT_HOOKS_DIR", hooks.as_os_str())])
    }

    /// [`OneSource::start`] with extra `ferry server` arguments.
    pub async fn start_with_args(
        server_dir: &Path,
        agent_dir: &Path,
        disks: &[&Path],
        server_args: &[&str],
    ) -> anyhow::Result<Self> {
        let server = ServerProc::start(server_dir, server_args).await?;
        let client = server.client()?;
        let (_, code) = server.activation_code(1).await?;
        let agent = AgentProc::activate(&server, agent_dir, &code, disks).await?;
        wait_source(&client, &agent.source_id).await?;
        Ok(Self {
            server,
            client,
            agent,
        })
    }
}

/// Moves a server's job clock (`FERRY_TEST_CLOCK_FILE`, docs/replication-jobs.md): the server adds the
/// offset in this file to the system clock for everything job scheduling decides. Signatures, heartbeats
/// and the agent protocol keep real time.
pub struct TestClock {
    pub path: PathBuf,
    offset: std::sync::atomic::AtomicI64,
}

impl TestClock {
    /// A clock at offset 0, stored in `path`.
    pub fn new(path: &Path) -> anyhow::Result<Self> {
        let c = Self {
            path: path.to_owned(),
            offset: std::sync::atomic::AtomicI64::new(0),
        };
        c.write(0)?;
        Ok(c)
    }

    fn write(&self, offset: i64) -> anyhow::Result<()> {
        // Written whole then renamed, so the server never reads half a number.
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, offset.to_string())?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }

    /// Moves the clock forward by `secs` seconds.
    pub fn advance(&self, secs: i64) -> anyhow::Result<()> {
        let new = self
            .offset
            .fetch_add(secs, std::sync::atomic::Ordering::SeqCst)
            + secs;
        self.write(new)
    }

    /// The server's job clock now (unix seconds).
    pub fn now(&self) -> i64 {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        real + self.offset.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl OneSource {
    /// Like [`OneSource::start`], with a server whose job clock `clock` moves.
    pub async fn start_with_clock(
        server_dir: &Path,
        agent_dir: &Path,
        disks: &[&Path],
        clock: &TestClock,
    ) -> anyhow::Result<Self> {
        let server = ServerProc::start_with_clock(server_dir, &[], clock).await?;
        let client = server.client()?;
        let (_, code) = server.activation_code(1).await?;
        let agent = AgentProc::activate(&server, agent_dir, &code, disks).await?;
        wait_source(&client, &agent.source_id).await?;
        Ok(Self {
            server,
            client,
            agent,
        })
    }
}

/// Unix seconds → `YYYY-MM-DDThh:mm:ssZ`, the API's time format.
pub fn api_time(secs: i64) -> String {
    ferry_server::rpc::time_str(secs)
}

/// A fresh PostgreSQL database for one whole-stack test, on the cluster FERRY_TEST_POSTGRES names
/// (`scripts/pg-test.sh`); dropped when the returned value is. `Ok(None)` (and a printed reason) when the
/// variable is unset; an error when it is set but the cluster is unreachable, so that a run asked to cover
/// PostgreSQL never skips it quietly.
pub async fn test_postgres(test: &str) -> anyhow::Result<Option<ferry_db::testing::PgTestDb>> {
    match ferry_db::testing::PgTestDb::create().await {
        Ok(Some(db)) => Ok(Some(db)),
        Ok(None) => {
            eprintln!(
                "SKIPPED {test}: FERRY_TEST_POSTGRES is not set (scripts/test.sh sets it; or run \
                 scripts/pg-test.sh start and export FERRY_TEST_POSTGRES=$(scripts/pg-test.sh url))"
            );
            Ok(None)
        }
        Err(e) => Err(anyhow::anyhow!(
            "FERRY_TEST_POSTGRES is set but PostgreSQL is unreachable: {e}. Start the test cluster with \
             scripts/pg-test.sh start"
        )),
    }
}

impl ServerProc {
    /// Starts a server on the database at `database_url` (`--database`) instead of SQLite in its data
    /// directory.
    pub async fn start_on_database(
        data_dir: &Path,
        database_url: &str,
        extra_args: &[&str],
    ) -> anyhow::Result<ServerProc> {
        let mut args = vec!["--database", database_url];
        args.extend_from_slice(extra_args);
        ServerProc::start(data_dir, &args).await
    }

    /// Starts one replica of a deployment: the shared database (`--database`), the shared directory
    /// (`--shared-dir`: objects, images, buckets, CA) and a private data directory of its own.
    pub async fn start_replica(
        data_dir: &Path,
        database_url: &str,
        shared_dir: &Path,
        extra_args: &[&str],
    ) -> anyhow::Result<ServerProc> {
        let shared = shared_dir.display().to_string();
        let mut args = vec!["--database", database_url, "--shared-dir", shared.as_str()];
        args.extend_from_slice(extra_args);
        ServerProc::start(data_dir, &args).await
    }

    /// This server's replica ID (`<data>/replica-id`): the prefix of the lease holders it writes.
    pub fn replica_id(&self) -> anyhow::Result<String> {
        let path = self.data_dir.join("replica-id");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_owned())
    }
}

/// A TCP pass-through in front of several servers, standing in for a load balancer: each connection goes
/// to the first backend, starting at `preferred`, that accepts it. TLS passes through untouched (every
/// replica's certificate is valid for 127.0.0.1 and signed by the shared CA), so a client behind it
/// notices a dead backend only as a dropped connection, and its next connection reaches a live one.
pub struct TcpFailover {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl TcpFailover {
    pub async fn start(backends: Vec<u16>, preferred: usize) -> anyhow::Result<TcpFailover> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let backends = backends.clone();
                tokio::spawn(async move {
                    for i in 0..backends.len() {
                        let port = backends[(preferred + i) % backends.len()];
                        if let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(TcpFailover { port, task })
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for TcpFailover {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Like [`AgentProc::activate`], with the agent talking to `endpoint` (a [`TcpFailover`] in front of
/// `server`, say) instead of `server`'s own address.
pub async fn activate_via(
    server: &ServerProc,
    endpoint: &str,
    state_dir: &Path,
    code: &str,
    disks: &[&Path],
) -> anyhow::Result<AgentProc> {
    let out = activate_only_via(server, endpoint, state_dir, code, disks)?;
    if !out.status.success() {
        bail!(
            "ferry-agent activate failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let state: Value = serde_json::from_slice(&std::fs::read(state_dir.join("agent.json"))?)?;
    let source_id = state["credentials"]["source_id"]
        .as_str()
        .context("source_id in agent.json")?
        .to_owned();
    let mut a = AgentProc {
        state_dir: state_dir.to_owned(),
        disks: disks.iter().map(|d| d.to_path_buf()).collect(),
        proc: None,
        source_id,
    };
    a.start()?;
    Ok(a)
}

/// Kills, when dropped, every QEMU that a server data directory's instances and validation instances run:
/// instances outlive their server on purpose, so a test that fails half-way would leave them running.
pub struct KillQemus(pub PathBuf);

impl Drop for KillQemus {
    fn drop(&mut self) {
        for root in ["instances", "validation-instances"] {
            let driver = ferry_vm::Driver::new(self.0.join(root));
            for id in driver.list().unwrap_or_default() {
                if let Some(r) = driver.find(&id) {
                    let _ = Command::new("kill")
                        .args(["-9", &r.pid.to_string()])
                        .status();
                }
            }
        }
    }
}
