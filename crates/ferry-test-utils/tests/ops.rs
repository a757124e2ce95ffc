//! Whole-stack tests of operating a server (`docs/operations.md`): `/metrics` after real replications,
//! `/health` and `/ready`, JSON logs that carry request and job IDs, and a SIGTERM in the middle of an
//! upload-heavy run that must lose no acknowledged chunk.
//!
//! Disks are image files of random data (no root needed), replicated by real `ferry-agent` processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use ferry_test_utils::disk::random_bytes;
use ferry_test_utils::stack::{
    AgentProc, OneSource, Proc, ServerProc, export, job, metric, same_bytes, start_job, wait_job,
    wait_source,
};
use ferry_test_utils::{bin_path, free_port, wait_for};
use serde_json::Value;

const MIB: usize = 1 << 20;

/// An HTTPS client that trusts the server's CA.
fn http(server: &ServerProc) -> anyhow::Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(server.credentials()?.ca_cert)?)?;
    Ok(reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()?)
}

/// One scrape of `/metrics`, parsed: every sample by its series (`name{labels}` as printed), and the
/// `# TYPE` of every family. Fails on a line that is not valid text format 0.0.4.
struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
    text: String,
}

impl Scrape {
    fn get(&self, series: &str) -> anyhow::Result<f64> {
        self.samples
            .get(series)
            .copied()
            .with_context(|| format!("{series} not in /metrics:\n{}", self.text))
    }
}

async fn scrape(server: &ServerProc) -> anyhow::Result<Scrape> {
    scrape_with(&http(server)?, server).await
}

/// [`scrape`] through `http`, which keeps its connection between scrapes.
async fn scrape_with(http: &reqwest::Client, server: &ServerProc) -> anyhow::Result<Scrape> {
    let resp = http
        .get(format!("{}/metrics", server.endpoint()))
        .send()
        .await?;
    ensure!(resp.status() == 200, "/metrics answered {}", resp.status());
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    ensure!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "content type {ct}"
    );
    let text = resp.text().await?;
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    let mut helped = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            helped.insert(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, ty) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            ensure!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty),
                "bad TYPE line: {line}"
            );
            ensure!(helped.contains(name), "TYPE before HELP for {name}");
            types.insert(name.to_owned(), ty.to_owned());
        } else if !line.is_empty() {
            let (series, value) = line
                .rsplit_once(' ')
                .with_context(|| format!("sample line without a value: {line}"))?;
            let value: f64 = value
                .parse()
                .with_context(|| format!("bad sample value: {line}"))?;
            let name = series.split('{').next().unwrap_or("");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
                .unwrap_or(name);
            ensure!(
                types.contains_key(family),
                "sample of {name} without a TYPE line"
            );
            samples.insert(series.to_owned(), value);
        }
    }
    Ok(Scrape {
        samples,
        types,
        text,
    })
}

/// A disk image of `data_mib` MiB of random data followed by `zero_mib` MiB of zeros: every data chunk
/// (1 MiB) is distinct, and the zero chunks are never sent.
fn random_disk(path: &Path, seed: u64, data_mib: usize, zero_mib: usize) -> anyhow::Result<()> {
    let mut data = random_bytes(seed, data_mib * MIB);
    data.resize((data_mib + zero_mib) * MIB, 0);
    std::fs::write(path, data)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_replications_and_probes_answer() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let disk = tmp.path().join("a.img");
    random_disk(&disk, 41, 12, 4)?;
    let OneSource {
        server,
        client,
        agent,
    } = OneSource::start(
        &tmp.path().join("server"),
        &tmp.path().join("agent"),
        &[&disk],
    )
    .await?;

    let before = scrape(&server).await?;
    for (family, ty) in [
        ("ferry_jobs", "gauge"),
        ("ferry_sources", "gauge"),
        ("ferry_agents", "gauge"),
        ("ferry_bytes_replicated_total", "counter"),
        ("ferry_dedup_ratio", "gauge"),
        ("ferry_chunk_uploads_total", "counter"),
        ("ferry_api_request_duration_seconds", "histogram"),
        ("ferry_http_requests_in_flight", "gauge"),
        ("ferry_http_connections_accepted_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_open_fds", "gauge"),
    ] {
        assert_eq!(
            before.types.get(family).map(String::as_str),
            Some(ty),
            "{family}"
        );
    }
    assert_eq!(before.get(r#"ferry_jobs{status="Finished"}"#)?, 0.0);
    assert_eq!(before.get(r#"ferry_sources{state="Available"}"#)?, 1.0);
    assert_eq!(before.get(r#"ferry_agents{state="online"}"#)?, 1.0);
    assert_eq!(before.get(r#"ferry_agents{state="offline"}"#)?, 0.0);
    assert_eq!(before.get("ferry_bytes_replicated_total")?, 0.0);
    assert!(before.get("ferry_dedup_ratio")?.is_nan());
    assert!(before.get("process_resident_memory_bytes")? > 1e6);
    assert!(before.get("process_open_fds")? >= 3.0);
    assert_eq!(before.get("ferry_metrics_database_up")?, 1.0);

    let job_a = start_job(&client, &agent.source_id, &[]).await?;
    wait_job(&client, &job_a, &["Finished"], Duration::from_secs(120)).await?;
    let after = scrape(&server).await?;
    let data = (12 * MIB) as f64;
    assert_eq!(after.get(r#"ferry_jobs{status="Finished"}"#)?, 1.0);
    assert_eq!(after.get("ferry_bytes_replicated_total")?, data);
    assert_eq!(after.get("ferry_chunk_stored_logical_bytes_total")?, data);
    assert_eq!(
        after.get(r#"ferry_chunk_uploads_total{outcome="stored"}"#)?,
        12.0
    );
    assert_eq!(after.get("ferry_snapshots_committed_total")?, 1.0);
    assert_eq!(after.get("ferry_dedup_ratio")?, 1.0);
    // The harness's and this test's own calls went through the histogram under their action's name.
    let calls = r#"ferry_api_request_duration_seconds_count{action="DescribeReplicationJobs",code_class="2xx",product="smc"}"#;
    assert!(after.get(calls)? >= 1.0);
    assert!(
        after.get(r#"ferry_agent_request_duration_seconds_count{code_class="2xx",route="/agent/v1/runs/{run}/chunks/{digest}"}"#)?
            >= 12.0
    );

    // A second source with the same disk: its snapshot covers the same bytes, and nothing new is stored.
    let (_, code) = server.activation_code(1).await?;
    let copy = tmp.path().join("b.img");
    std::fs::copy(&disk, &copy)?;
    let agent_b =
        AgentProc::activate(&server, &tmp.path().join("agent-b"), &code, &[&copy]).await?;
    wait_source(&client, &agent_b.source_id).await?;
    let job_b = start_job(&client, &agent_b.source_id, &[]).await?;
    wait_job(&client, &job_b, &["Finished"], Duration::from_secs(120)).await?;
    let deduped = scrape(&server).await?;
    assert_eq!(deduped.get(r#"ferry_jobs{status="Finished"}"#)?, 2.0);
    assert_eq!(deduped.get(r#"ferry_agents{state="online"}"#)?, 2.0);
    assert_eq!(deduped.get("ferry_bytes_replicated_total")?, 2.0 * data);
    assert_eq!(deduped.get("ferry_chunk_stored_logical_bytes_total")?, data);
    assert_eq!(deduped.get("ferry_dedup_ratio")?, 2.0);

    // An unknown action is counted under "other", never under its own name.
    let err = client.smc("NoSuchAction", &[]).await;
    assert!(err.is_err(), "NoSuchAction succeeded");
    let unknown = scrape(&server).await?;
    assert!(!unknown.text.contains("NoSuchAction"));
    assert!(
        unknown.get(r#"ferry_api_request_duration_seconds_count{action="other",code_class="4xx",product="smc"}"#)?
            >= 1.0
    );

    // Liveness and readiness need no signature.
    let h = http(&server)?;
    let health = h
        .get(format!("{}/health", server.endpoint()))
        .send()
        .await?;
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await?["status"], "ok");
    let ready = h.get(format!("{}/ready", server.endpoint())).send().await?;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await?;
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["version"], 1);
    for check in ["database", "migrations", "object_store", "accepting"] {
        assert_eq!(body["checks"][check]["ok"], true, "{body}");
    }

    // An object store that cannot take the probe's write makes the server unready, and says which check.
    let ops_dir = server.data_dir.join("objects/ops");
    std::fs::remove_dir_all(&ops_dir)?;
    std::fs::write(&ops_dir, b"not a directory")?;
    let ready = h.get(format!("{}/ready", server.endpoint())).send().await?;
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await?;
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(
        body["failed"],
        serde_json::json!(["object_store"]),
        "{body}"
    );
    assert_eq!(body["checks"]["database"]["ok"], true, "{body}");
    assert!(
        body["checks"]["object_store"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    std::fs::remove_file(&ops_dir)?;
    let ready = h.get(format!("{}/ready", server.endpoint())).send().await?;
    assert_eq!(ready.status(), 200);
    Ok(())
}

/// An idle agent keeps one connection across its heartbeats (no TLS handshake per beat), and the server
/// holds a heartbeat no longer than `--long-poll` even when the interval is longer (2 s, so every beat is
/// answered within 5 s, a margin for a loaded machine). Interval 31 s: the
/// agent's HTTP/2 pool used to drop a connection 30 s after its last request started, so every beat
/// came on a new connection, and the long poll was held the whole interval.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_agent_keeps_its_connection_and_long_polls_end_at_the_cap() -> anyhow::Result<()> {
    const BEAT: &str = r#"ferry_agent_request_duration_seconds_count{code_class="2xx",route="/agent/v1/heartbeat"}"#;
    const WITHIN_CAP: &str = r#"ferry_agent_request_duration_seconds_bucket{code_class="2xx",route="/agent/v1/heartbeat",le="5"}"#;
    const ACCEPTED: &str = "ferry_http_connections_accepted_total";
    let tmp = tempfile::tempdir()?;
    let disk = tmp.path().join("a.img");
    random_disk(&disk, 7, 1, 1)?;
    let server = ServerProc::start(
        &tmp.path().join("server"),
        &["--heartbeat-interval", "31", "--long-poll", "2"],
    )
    .await?;
    let (_, code) = server.activation_code(1).await?;
    let _agent = AgentProc::activate(&server, &tmp.path().join("agent"), &code, &[&disk]).await?;
    let http = http(&server)?;
    // After the agent's first heartbeat its connection is open; the scrapes use one of their own.
    let first = wait_for(
        Duration::from_secs(30),
        "the agent's first heartbeat",
        || async {
            let s = scrape_with(&http, &server).await?;
            Ok((s.get(BEAT).unwrap_or(0.0) >= 1.0).then_some(s))
        },
    )
    .await?;
    let next = wait_for(
        Duration::from_secs(60),
        "the agent's next heartbeat",
        || async {
            let s = scrape_with(&http, &server).await?;
            Ok((s.get(BEAT)? > first.get(BEAT)?).then_some(s))
        },
    )
    .await?;
    assert_eq!(
        next.get(ACCEPTED)?,
        first.get(ACCEPTED)?,
        "the agent's heartbeat 31 s later came on a new connection"
    );
    assert_eq!(
        next.get(WITHIN_CAP)?,
        next.get(BEAT)?,
        "a heartbeat was held longer than --long-poll 2:\n{}",
        next.text
    );
    Ok(())
}

/// Starts `ferry server` with JSON logs, its standard error (the log) and standard output (the banner) in
/// separate files, and waits until it answers.
async fn json_logging_server(dir: &Path) -> anyhow::Result<(ServerProc, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let port = free_port();
    let log = dir.join("stderr.log");
    let child = Command::new(bin_path("ferry"))
        .arg("server")
        .arg("--data-dir")
        .arg(dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--heartbeat-interval", "1", "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(std::fs::File::create(dir.join("stdout.log"))?))
        .stderr(Stdio::from(std::fs::File::create(&log)?))
        .spawn()
        .context("cannot start ferry server")?;
    let server = ServerProc {
        data_dir: dir.to_owned(),
        port,
        proc: Some(Proc {
            child,
            name: "ferry server".into(),
        }),
        extra_args: Vec::new(),
        env: Vec::new(),
    };
    wait_for(Duration::from_secs(60), "the server to answer", || async {
        if !dir.join(ferry_server::ROOT_CREDENTIALS_FILE).exists() {
            return Ok(None);
        }
        Ok(server
            .client()?
            .smc("DescribeSourceServers", &[])
            .await
            .ok()
            .map(|_| ()))
    })
    .await?;
    Ok((server, log))
}

/// The image of a job's first run.
fn run_image(job: &Value) -> anyhow::Result<String> {
    job["ReplicationJobRuns"]["ReplicationJobRun"][0]["ImageId"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the run has no image: {job}"))
}

fn log_lines(log: &Path) -> anyhow::Result<Vec<Value>> {
    std::fs::read_to_string(log)?
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("log line is not JSON: {l}")))
        .collect()
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_request_job_and_run_ids() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let disk = tmp.path().join("j.img");
    random_disk(&disk, 43, 4, 0)?;
    let (mut server, log) = json_logging_server(&tmp.path().join("server")).await?;
    let client = server.client()?;
    let (_, code) = server.activation_code(1).await?;
    let agent = AgentProc::activate(&server, &tmp.path().join("agent"), &code, &[&disk]).await?;
    wait_source(&client, &agent.source_id).await?;

    let answer = client.smc("DescribeSourceServers", &[]).await?;
    let request_id = answer["RequestId"]
        .as_str()
        .context("RequestId")?
        .to_owned();
    let job_id = start_job(&client, &agent.source_id, &[]).await?;
    let j = wait_job(&client, &job_id, &["Finished"], Duration::from_secs(120)).await?;
    let image = run_image(&j)?;
    // The image builder logs after the job is Finished: wait for its line before stopping.
    wait_for(
        Duration::from_secs(60),
        "the image builder's log line",
        || async {
            Ok(log_lines(&log)?
                .iter()
                .any(|l| message(l) == "image built and verified")
                .then_some(()))
        },
    )
    .await?;
    server.stop().await?;

    let lines = log_lines(&log)?;
    assert!(lines.len() > 5, "too few log lines: {lines:?}");
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
    }
    // The API call's line carries its request ID (the one the client received), action and access key.
    let call = lines
        .iter()
        .find(|l| message(l) == "api call" && l["span"]["request_id"] == request_id.as_str())
        .with_context(|| format!("no api call line with request_id {request_id}"))?;
    assert_eq!(call["span"]["name"], "api_request", "{call}");
    assert_eq!(call["span"]["action"], "DescribeSourceServers", "{call}");
    assert_eq!(
        call["span"]["access_key_id"],
        server.credentials()?.access_key_id.as_str(),
        "{call}"
    );
    // Agent-API lines of the run carry the job and run IDs.
    let committed = lines
        .iter()
        .find(|l| message(l) == "snapshot committed")
        .context("no snapshot committed line")?;
    assert_eq!(committed["span"]["name"], "agent_request", "{committed}");
    assert_eq!(committed["span"]["job_id"], job_id.as_str(), "{committed}");
    assert_eq!(
        committed["span"]["source_id"],
        agent.source_id.as_str(),
        "{committed}"
    );
    let run_id = committed["span"]["run_id"]
        .as_str()
        .filter(|r| !r.is_empty())
        .with_context(|| format!("no run_id: {committed}"))?;
    assert!(committed["span"]["request_id"].is_string(), "{committed}");
    let finished = lines
        .iter()
        .find(|l| message(l) == "agent finished the run")
        .context("no run finished line")?;
    assert_eq!(finished["span"]["run_id"], run_id, "{finished}");
    assert_eq!(finished["span"]["job_id"], job_id.as_str(), "{finished}");
    // The image builder's line names the job and run as fields.
    let built = lines
        .iter()
        .find(|l| message(l) == "image built and verified")
        .context("no image built line")?;
    assert_eq!(built["fields"]["job"], job_id.as_str(), "{built}");
    assert_eq!(built["fields"]["run"], run_id, "{built}");
    assert_eq!(built["fields"]["image"], image.as_str(), "{built}");
    Ok(())
}

/// The non-temp files under `dir`, recursively.
fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if path.is_dir() {
            out.extend(files(&path)?);
        } else if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            out.push(path);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_upload_exits_0_and_keeps_every_acknowledged_chunk() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let disk = tmp.path().join("s.img");
    random_disk(&disk, 47, 96, 8)?;
    let server_dir = tmp.path().join("server");
    let grace = 10;
    let mut server = ServerProc::start(
        &server_dir,
        &[
            "--log-format",
            "json",
            "--shutdown-grace",
            &grace.to_string(),
        ],
    )
    .await?;
    let client = server.client()?;
    let (_, code) = server.activation_code(1).await?;
    let agent = AgentProc::activate(&server, &tmp.path().join("agent"), &code, &[&disk]).await?;
    wait_source(&client, &agent.source_id).await?;
    // 24 MiB/s: the 96 MiB of data take about four seconds, with several uploads always in flight.
    let job_id = start_job(
        &client,
        &agent.source_id,
        &[(
            "ReplicationParameters",
            r#"{"bandwidth_limit_bps":25165824}"#,
        )],
    )
    .await?;
    wait_for(Duration::from_secs(120), "uploads to progress", || async {
        let s = metric(&server, r#"ferry_chunk_uploads_total{outcome="stored"}"#).await?;
        Ok((s >= 24).then_some(()))
    })
    .await?;
    assert_eq!(job(&client, &job_id).await?["Status"], "Running");

    let mut proc = server.proc.take().context("server not running")?;
    let pid = proc.child.id().to_string();
    let signalled = Instant::now();
    ensure!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()?
            .success()
    );
    let status = wait_for(
        Duration::from_secs(grace + 10),
        "the server to exit after SIGTERM",
        || {
            let r = proc.child.try_wait();
            async move { Ok(r?) }
        },
    )
    .await?;
    let took = signalled.elapsed();
    assert!(status.success(), "the server exited with {status}");
    assert!(
        took < Duration::from_secs(grace),
        "shutdown took {took:?}, more than the {grace} s grace"
    );

    // The last log line counts the chunks this process acknowledged as newly stored; every one of them
    // is a complete, valid object (the data directory was fresh, so the counts must match exactly).
    let log = server.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let stopped = lines
        .iter()
        .find(|l| message(l).starts_with("server stopped"))
        .with_context(|| format!("no 'server stopped' line in the log:\n{log}"))?;
    assert!(
        lines
            .iter()
            .any(|l| message(l) == "in-flight requests finished"),
        "the grace period ran out: {log}"
    );
    let acknowledged = stopped["fields"]["chunks_stored"]
        .as_u64()
        .context("chunks_stored")?;
    assert!(acknowledged >= 24, "{stopped}");
    let chunks = files(&server_dir.join("objects/chunks"))?;
    assert_eq!(
        chunks.len() as u64,
        acknowledged,
        "chunk objects on disk vs chunks acknowledged"
    );
    for path in &chunks {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let digest: ferry_chunk::Digest = name.parse().context("chunk file name")?;
        let blob = std::fs::read(path)?;
        ferry_chunk::blob::decode(&blob, &digest)
            .with_context(|| format!("stored chunk {name} is damaged"))?;
    }

    // After a restart the run resumes and completes, without re-sending what was acknowledged.
    drop(proc);
    server.restart().await?;
    let client = server.client()?;
    let j = wait_job(&client, &job_id, &["Finished"], Duration::from_secs(240)).await?;
    let resent = metric(&server, r#"ferry_chunk_uploads_total{outcome="duplicate"}"#).await?;
    assert!(resent <= 8, "{resent} acknowledged chunks were sent again");
    let image = run_image(&j)?;
    let raw = export(&client, &image, "raw").await?;
    ensure!(raw.len() == 1, "one disk expected: {raw:?}");
    if !same_bytes(&raw[0], &disk)? {
        bail!("the image differs from the source disk");
    }
    Ok(())
}
