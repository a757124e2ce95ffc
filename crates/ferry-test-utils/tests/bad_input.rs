//! Whole-stack tests of bad input and failure handling in replication: a real `ferry server` and real
//! `ferry-agent` processes, plus a hand-driven agent that speaks agent protocol v1 through the agent's own
//! client (`ferry_agent::conn::Conn`) so that it can send what a correct agent never would.
//!
//! Every rejection is checked twice: the documented status and code (`docs/agent-protocol.md`,
//! `../shared/ref/smc-api.md`), and that nothing was stored or changed (object files, snapshots, job state,
//! registered sources). Each test has its own server and temp directories, so they run in parallel.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use ferry::client::Client;
use ferry_agent::conn::{CallError, Conn};
use ferry_agent::daemon::AgentStateFile;
use ferry_chunk::{CHUNK_HEADER_LEN, Digest, DiskIndex};
use ferry_test_utils::disk::{random_bytes, run};
use ferry_test_utils::stack::{
    AgentProc, OneSource, ServerProc, activate_only, export, job, metric, p, same_bytes,
    source_count, start_job, wait_job, wait_source,
};
use ferry_test_utils::{is_root, wait_for};
use ferry_types::ids::{JobId, RunId, SourceId};
use ferry_types::protocol::{
    AgentCredentials, AgentState, ChunkStored, HeartbeatRequest, HeartbeatResponse, MissingRequest,
    MissingResponse, ReplicateTask, RunFinish, RunProgress, SnapshotCommitted,
};
use serde_json::Value;

const MIB: usize = 1 << 20;
const REJECTED: &str = r#"ferry_chunk_uploads_total{outcome="rejected"}"#;
const STORED: &str = r#"ferry_chunk_uploads_total{outcome="stored"}"#;
const DUPLICATE: &str = r#"ferry_chunk_uploads_total{outcome="duplicate"}"#;

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("SKIPPED {test}: needs root for mounts");
    true
}

/// A source disk of whole chunks: `layout[i]` is the seed of chunk `i`'s random data, or `None` for an
/// all-zero chunk. Returns the file and each chunk's bytes.
fn write_disk(path: &Path, chunk: usize, layout: &[Option<u64>]) -> anyhow::Result<Vec<Vec<u8>>> {
    let chunks: Vec<Vec<u8>> = layout
        .iter()
        .map(|s| s.map_or_else(|| vec![0u8; chunk], |seed| random_bytes(seed, chunk)))
        .collect();
    std::fs::write(path, chunks.concat())?;
    Ok(chunks)
}

/// Where the server keeps a chunk, by the layout `docs/formats.md` documents (not by asking the code under
/// test): `<data>/objects/chunks/<hex[0..2]>/<hex[2..4]>/<hex>`.
fn chunk_file(data_dir: &Path, d: &Digest) -> PathBuf {
    let hex = d.to_hex();
    data_dir
        .join("objects/chunks")
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(&hex)
}

/// Every file below `dir` (none if it does not exist).
fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for e in entries {
        let path = e?.path();
        if path.is_dir() {
            out.extend(files_under(&path)?);
        } else {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// BLAKE3 of each file's content, to prove later that stored objects were not touched.
fn fingerprints(files: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, Digest)>> {
    files
        .iter()
        .map(|f| Ok((f.clone(), ferry_chunk::hash(&std::fs::read(f)?))))
        .collect()
}

fn assert_unchanged(before: &[(PathBuf, Digest)]) -> anyhow::Result<()> {
    for (f, d) in before {
        let now = ferry_chunk::hash(
            &std::fs::read(f).with_context(|| format!("{} is gone", f.display()))?,
        );
        ensure!(now == *d, "stored object {} changed", f.display());
    }
    Ok(())
}

/// The status, code and message of a call that must have failed with an agent-API error.
fn api_error<T: std::fmt::Debug>(r: Result<T, CallError>) -> anyhow::Result<(u16, String, String)> {
    match r {
        Ok(v) => bail!("the call succeeded ({v:?}) but had to be refused"),
        Err(CallError::Api {
            status,
            code,
            message,
        }) => Ok((status, code, message)),
        Err(e) => bail!("expected an API error, got {e}"),
    }
}

/// Checks that `r` failed with exactly `status` and `code`; returns the message.
fn expect_error<T: std::fmt::Debug>(
    r: Result<T, CallError>,
    status: u16,
    code: &str,
    what: &str,
) -> anyhow::Result<String> {
    let (s, c, m) = api_error(r).with_context(|| what.to_owned())?;
    ensure!(
        s == status && c == code,
        "{what}: expected {status} {code}, got {s} {c}: {m}"
    );
    Ok(m)
}

/// An agent driven by hand through agent protocol v1, with the credentials `ferry-agent activate` saved.
struct HandAgent {
    conn: Conn,
    state: AgentStateFile,
    source_id: String,
}

impl HandAgent {
    async fn activate(
        server: &ServerProc,
        dir: &Path,
        code: &str,
        disk: &Path,
    ) -> anyhow::Result<HandAgent> {
        let out = activate_only(server, dir, code, &[disk])?;
        ensure!(
            out.status.success(),
            "ferry-agent activate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let state = AgentStateFile::load(dir)?;
        let conn = Conn::new(&state.server, &state.ca_pem, Some(&state.credentials))?;
        let source_id = state.credentials.source_id.to_string();
        Ok(HandAgent {
            conn,
            state,
            source_id,
        })
    }

    /// The same agent with other credentials (to send wrong ones).
    fn with_credentials(&self, creds: Option<&AgentCredentials>) -> anyhow::Result<Conn> {
        Ok(Conn::new(&self.state.server, &self.state.ca_pem, creds)?)
    }

    async fn heartbeat(&self) -> Result<Option<ReplicateTask>, CallError> {
        let req = HeartbeatRequest {
            agent_version: "hand-driven".into(),
            state: AgentState::Idle,
            inventory: None,
            prechecks: None,
            wait: false,
        };
        let r: HeartbeatResponse = self.conn.post("/heartbeat", &req).await?;
        Ok(r.task)
    }

    /// Creates and starts a job for this source; returns the job ID and the run the server hands out.
    async fn start_run(&self, client: &Client) -> anyhow::Result<(String, ReplicateTask)> {
        // A heartbeat right before the start: StartReplicationJob refuses a source that looks offline.
        self.heartbeat().await?;
        let job_id = start_job(client, &self.source_id, &[]).await?;
        let task = self
            .heartbeat()
            .await?
            .context("the heartbeat after the start names no run")?;
        Ok((job_id, task))
    }

    async fn put_chunk(
        &self,
        run: &str,
        digest: &Digest,
        blob: Vec<u8>,
    ) -> Result<ChunkStored, CallError> {
        self.conn
            .put(&format!("/runs/{run}/chunks/{digest}"), Bytes::from(blob))
            .await
    }

    async fn put_index(
        &self,
        run: &str,
        disk: u32,
        index: Vec<u8>,
    ) -> Result<SnapshotCommitted, CallError> {
        self.conn
            .put(
                &format!("/runs/{run}/disks/{disk}/index"),
                Bytes::from(index),
            )
            .await
    }

    async fn finish(&self, run: &str, f: &RunFinish) -> Result<Value, CallError> {
        self.conn.post(&format!("/runs/{run}/finish"), f).await
    }
}

/// A raw HTTPS call to the agent API, for bodies and headers the agent's client cannot produce.
/// Returns the status, and the error code and message of the answer (empty for a success).
async fn raw_call(
    server: &ServerProc,
    method: reqwest::Method,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> anyhow::Result<(u16, String, String)> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(server.credentials()?.ca_cert)?)?;
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()?;
    let mut req = http
        .request(method, format!("{}/agent/v1{path}", server.endpoint()))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let v: Value = serde_json::from_slice(&resp.bytes().await?).unwrap_or(Value::Null);
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    Ok((status, text("code"), text("message")))
}

/// The image a job's run produced.
fn run_image(job: &Value, n: usize) -> anyhow::Result<String> {
    job["ReplicationJobRuns"]["ReplicationJobRun"][n]["ImageId"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("run {n} has no image: {job}"))
}

async fn assert_raw_export_equals(
    client: &Client,
    image: &str,
    source: &Path,
) -> anyhow::Result<()> {
    let raw = export(client, image, "raw").await?;
    ensure!(raw.len() == 1, "one disk expected, got {raw:?}");
    ensure!(
        same_bytes(&raw[0], source)?,
        "raw export of {image} differs from {}",
        source.display()
    );
    Ok(())
}

/// The index of a disk made of `chunks`.
fn index_of(chunks: &[Vec<u8>], chunk_size: u32) -> DiskIndex {
    DiskIndex {
        disk_size: chunks.iter().map(|c| c.len() as u64).sum(),
        chunk_size,
        entries: chunks
            .iter()
            .map(|c| ferry_chunk::chunk_digest(c))
            .collect(),
    }
}

// 1. Chunk uploads that are not the chunk they claim to be.
#[tokio::test(flavor = "multi_thread")]
async fn bad_chunk_uploads_are_rejected_and_nothing_is_stored() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = ServerProc::start(&tmp.path().join("server"), &[]).await?;
    let client = server.client()?;
    let (_, code) = server.activation_code(1).await?;
    let img = tmp.path().join("disk.img");
    let chunks = write_disk(&img, MIB, &[Some(1), Some(2), Some(3)])?;
    let agent = HandAgent::activate(&server, &tmp.path().join("agent"), &code, &img).await?;
    let (_, task) = agent.start_run(&client).await?;
    let run = task.run_id.to_string();
    let data = server.data_dir.clone();

    let good = &chunks[0];
    let good_digest = ferry_chunk::hash(good);
    let other = &chunks[1];
    let other_digest = ferry_chunk::hash(other);

    // (a) The body is another chunk's valid blob.
    let mismatched = ferry_chunk::encode(other, 1);
    // (b) The header names the URL's digest but the payload is other data.
    let tampered = ferry_chunk::encode_with_digest(other, &good_digest, 0);
    // (c) raw_len one byte short of the raw payload: the header's sizes disagree.
    let mut bad_raw_len = ferry_chunk::encode(good, 0);
    bad_raw_len[8..12].copy_from_slice(&(good.len() as u32 - 1).to_le_bytes());
    // (d) stored_len larger than the payload that follows.
    let mut bad_stored_len = ferry_chunk::encode(good, 0);
    bad_stored_len[12..16].copy_from_slice(&(good.len() as u32 + 4096).to_le_bytes());
    // (e) A truncated upload: the first half of a valid blob (header intact).
    let whole = ferry_chunk::encode(good, 0);
    let truncated = whole[..whole.len() / 2].to_vec();
    // (f) Shorter than a header.
    let stub = whole[..CHUNK_HEADER_LEN / 2].to_vec();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a blob of another chunk", mismatched),
        ("a payload that does not hash to the digest", tampered),
        ("a header whose raw length is wrong", bad_raw_len),
        ("a header whose stored length is wrong", bad_stored_len),
        ("a blob cut in half", truncated),
        ("a blob shorter than its header", stub),
    ];
    let chunk_dir = data.join("objects/chunks");
    for (what, blob) in cases {
        let rejected_before = metric(&server, REJECTED).await?;
        let stored_before = metric(&server, STORED).await?;
        let msg = expect_error(
            agent.put_chunk(&run, &good_digest, blob).await,
            400,
            "ChunkRejected",
            what,
        )?;
        ensure!(
            msg.contains(&good_digest.to_hex()),
            "{what}: the message does not name the chunk: {msg}"
        );
        ensure!(
            !chunk_file(&data, &good_digest).exists(),
            "{what}: the rejected chunk was stored"
        );
        ensure!(
            files_under(&chunk_dir)?.is_empty(),
            "{what}: something was stored: {:?}",
            files_under(&chunk_dir)?
        );
        ensure!(
            metric(&server, REJECTED).await? == rejected_before + 1,
            "{what}: the rejected counter did not go up by one"
        );
        ensure!(
            metric(&server, STORED).await? == stored_before,
            "{what}: counted as stored"
        );
    }
    ensure!(
        !chunk_file(&data, &other_digest).exists(),
        "the other chunk was stored under its own name"
    );

    // The same chunk, sent correctly, is stored where the checks above looked: they were not vacuous.
    let stored: ChunkStored = agent
        .put_chunk(&run, &good_digest, ferry_chunk::encode(good, 1))
        .await
        .context("a valid upload after the rejected ones")?;
    ensure!(
        stored.stored,
        "a valid new chunk was reported as already present"
    );
    let path = chunk_file(&data, &good_digest);
    let bytes =
        std::fs::read(&path).with_context(|| format!("{} after a valid upload", path.display()))?;
    ensure!(
        ferry_chunk::decode(&bytes, &good_digest)? == *good,
        "the stored chunk does not decode to its data"
    );
    // A bad upload of a chunk that is already stored is refused too, and does not touch the stored object.
    let before = fingerprints(&[path])?;
    let mut cut = ferry_chunk::encode(good, 0);
    cut.truncate(cut.len() / 2);
    expect_error(
        agent.put_chunk(&run, &good_digest, cut).await,
        400,
        "ChunkRejected",
        "a truncated re-upload",
    )?;
    assert_unchanged(&before)?;
    Ok(())
}

// 2. An index that references a chunk the server does not have.
#[tokio::test(flavor = "multi_thread")]
async fn index_with_missing_chunk_is_refused_and_commits_nothing() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = ServerProc::start(&tmp.path().join("server"), &[]).await?;
    let client = server.client()?;
    let (_, code) = server.activation_code(1).await?;
    let img = tmp.path().join("disk.img");
    let agent_dir = tmp.path().join("agent");
    // Chunk 3 is all zeros: it is never sent and the index marks it as such.
    let layout = [Some(11), Some(12), Some(13), None, Some(14)];
    let chunks = write_disk(&img, MIB, &layout)?;
    let agent = HandAgent::activate(&server, &agent_dir, &code, &img).await?;
    let (job_id, task) = agent.start_run(&client).await?;
    let run = task.run_id.to_string();
    ensure!(
        task.chunk_size as usize == MIB,
        "the run's chunk size is {}",
        task.chunk_size
    );
    let data = server.data_dir.clone();

    // Store chunks 0 and 1 only; 2 and 4 stay missing.
    for c in &chunks[..2] {
        let s: ChunkStored = agent
            .put_chunk(&run, &ferry_chunk::hash(c), ferry_chunk::encode(c, 1))
            .await?;
        ensure!(s.stored, "a new chunk was reported as already present");
    }
    let stored_files = files_under(&data.join("objects/chunks"))?;
    ensure!(
        stored_files.len() == 2,
        "two chunks stored, found {stored_files:?}"
    );
    let before = fingerprints(&stored_files)?;
    let job_before = job(&client, &job_id).await?;

    let index = index_of(&chunks, task.chunk_size);
    let msg = expect_error(
        agent.put_index(&run, 0, index.encode()).await,
        409,
        "IndexRejected",
        "an index with two missing chunks",
    )?;
    ensure!(
        msg.contains("not stored"),
        "the message does not say chunks are missing: {msg}"
    );
    // A corrupt index (cut short) is refused as bad input before anything is looked up.
    let mut cut = index.encode();
    cut.truncate(cut.len() - 7);
    expect_error(
        agent.put_index(&run, 0, cut).await,
        400,
        "IndexRejected",
        "a truncated index",
    )?;

    ensure!(
        files_under(&data.join("objects/indexes"))?.is_empty(),
        "an index object was stored"
    );
    let job_after = job(&client, &job_id).await?;
    ensure!(
        job_after == job_before,
        "the job changed:\nbefore {job_before}\nafter  {job_after}"
    );
    ensure!(
        job_after["ReplicationJobRuns"]["ReplicationJobRun"][0]
            .get("ImageId")
            .is_none(),
        "an image: {job_after}"
    );
    // No snapshot means the run cannot finish.
    let done = RunFinish::Succeeded {
        progress: RunProgress::default(),
    };
    expect_error(
        agent.finish(&run, &done).await,
        409,
        "MissingSnapshots",
        "finishing without a snapshot",
    )?;
    assert_unchanged(&before)?;

    // Upload the missing chunks and commit again: the run completes, built from the chunks stored before
    // the rejection (still intact) and the new ones.
    for c in [&chunks[2], &chunks[4]] {
        agent
            .put_chunk(&run, &ferry_chunk::hash(c), ferry_chunk::encode(c, 1))
            .await?;
    }
    let committed = agent.put_index(&run, 0, index.encode()).await?;
    ensure!(
        committed.root_digest == index.root_digest().to_string(),
        "the server committed another root"
    );
    agent.finish(&run, &done).await?;
    let j = wait_job(&client, &job_id, &["Finished"], Duration::from_secs(180)).await?;
    assert_unchanged(&before)?;
    assert_raw_export_equals(&client, &run_image(&j, 0)?, &img).await
}

// 3. Malformed bodies and missing or wrong credentials.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_is_400_and_bad_credentials_are_401() -> anyhow::Result<()> {
    use reqwest::Method;
    let tmp = tempfile::tempdir()?;
    let server = ServerProc::start(&tmp.path().join("server"), &[]).await?;
    let client = server.client()?;
    let (_, code) = server.activation_code(1).await?;
    let img = tmp.path().join("disk.img");
    let chunks = write_disk(&img, MIB, &[Some(21)])?;
    let agent = HandAgent::activate(&server, &tmp.path().join("agent"), &code, &img).await?;
    let (job_id, task) = agent.start_run(&client).await?;
    let run = task.run_id.to_string();
    let bearer = agent.state.credentials.bearer();
    let sources = source_count(&client).await?;
    let job_before = job(&client, &job_id).await?;

    let malformed: [(String, &[u8]); 4] = [
        ("/heartbeat".into(), b"{\"agent_version\": "),
        ("/activate".into(), b"{not json"),
        (format!("/runs/{run}/progress"), b"[1, 2"),
        (format!("/runs/{run}/finish"), br#"{"result":"exploded"}"#),
    ];
    for (path, body) in &malformed {
        let (status, code, message) =
            raw_call(&server, Method::POST, path, Some(&bearer), body).await?;
        ensure!(
            status == 400 && code == "MalformedRequest" && message.contains("JSON"),
            "POST {path}: {status} {code} {message}"
        );
    }
    // The run's figures and state, and the registered sources, are what they were.
    let job_after = job(&client, &job_id).await?;
    ensure!(
        job_after == job_before,
        "the job changed:\nbefore {job_before}\nafter  {job_after}"
    );
    ensure!(
        source_count(&client).await? == sources,
        "a malformed activation registered a source"
    );

    // Credentials: none, another scheme, no key/secret separator, an unknown key, a wrong secret.
    let creds = &agent.state.credentials;
    let wrong_secret = AgentCredentials {
        secret: format!("{}x", creds.secret),
        ..creds.clone()
    };
    let unknown_key = AgentCredentials {
        key_id: "ak-doesnotexist".into(),
        ..creds.clone()
    };
    for (what, auth) in [
        ("no credentials", None),
        ("Basic credentials", Some(format!("Basic {}", creds.secret))),
        (
            "a token without a secret",
            Some(format!("Bearer {}", creds.key_id)),
        ),
        ("an unknown key", Some(unknown_key.bearer())),
        ("a wrong secret", Some(wrong_secret.bearer())),
    ] {
        let (status, code, message) =
            raw_call(&server, Method::POST, "/heartbeat", auth.as_deref(), b"{}").await?;
        ensure!(
            status == 401 && code == "Unauthorized" && message.contains("ferry-agent activate"),
            "heartbeat with {what}: {status} {code} {message}"
        );
    }
    // An upload with wrong credentials stores nothing; its message says what to do.
    let digest = ferry_chunk::hash(&chunks[0]);
    for (what, creds) in [
        ("no credentials", None),
        ("a wrong secret", Some(&wrong_secret)),
    ] {
        let conn = agent.with_credentials(creds)?;
        let r: Result<ChunkStored, _> = conn
            .put(
                &format!("/runs/{run}/chunks/{digest}"),
                Bytes::from(ferry_chunk::encode(&chunks[0], 1)),
            )
            .await;
        let msg = expect_error(r, 401, "Unauthorized", what)?;
        ensure!(
            msg.contains("ferry-agent activate"),
            "the 401 does not say how to recover: {msg}"
        );
    }
    ensure!(
        !chunk_file(&server.data_dir, &digest).exists(),
        "an unauthenticated upload was stored"
    );
    ensure!(
        metric(&server, STORED).await? == 0,
        "an unauthenticated upload was counted as stored"
    );
    // The right credentials still work: the refusals above were about the credentials.
    let s: ChunkStored = agent
        .put_chunk(&run, &digest, ferry_chunk::encode(&chunks[0], 1))
        .await?;
    ensure!(
        s.stored && chunk_file(&server.data_dir, &digest).exists(),
        "a valid upload was not stored"
    );
    Ok(())
}

// 4. Unknown jobs and sources in the public API.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_job_and_source_ids_give_the_documented_errors() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = ServerProc::start(&tmp.path().join("server"), &[]).await?;
    let client = server.client()?;
    let (_, code) = server.activation_code(1).await?;
    let img = tmp.path().join("disk.img");
    write_disk(&img, MIB, &[Some(31)])?;
    let agent = HandAgent::activate(&server, &tmp.path().join("agent"), &code, &img).await?;
    agent.heartbeat().await?;
    // One real job, so that "unchanged" and "empty" mean something.
    let real = client
        .smc(
            "CreateReplicationJob",
            &p(&[("SourceId", &agent.source_id), ("RegionId", "local")]),
        )
        .await?;
    let real_id = real["JobId"].as_str().context("JobId")?.to_owned();
    let all_before = client.smc("DescribeReplicationJobs", &[]).await?;
    ensure!(
        all_before["TotalCount"] == 1,
        "one job expected: {all_before}"
    );

    // Well-formed IDs that were never issued.
    let bogus = JobId::generate().to_string();
    let bogus = bogus.as_str();
    let e = client
        .smc("StartReplicationJob", &p(&[("JobId", bogus)]))
        .await
        .err()
        .context("StartReplicationJob of an unknown job succeeded")?;
    match &e {
        ferry::client::ClientError::Api {
            status,
            code,
            message,
            ..
        } => {
            ensure!(
                *status == 404 && code == "InvalidJobId.NotFound",
                "Start: {e}"
            );
            ensure!(
                message.contains(bogus),
                "the message does not name the job: {message}"
            );
        }
        _ => bail!("Start: not an API error: {e}"),
    }
    let listed = client
        .smc("DescribeReplicationJobs", &p(&[("JobId.1", bogus)]))
        .await?;
    ensure!(
        listed["TotalCount"] == 0,
        "Describe of an unknown job: {listed}"
    );
    let items = listed["ReplicationJobs"]["ReplicationJob"]
        .as_array()
        .context("ReplicationJob list")?;
    ensure!(
        items.is_empty(),
        "Describe of an unknown job listed {items:?}"
    );

    let e = client
        .smc(
            "CreateReplicationJob",
            &p(&[
                ("SourceId", SourceId::generate().as_str()),
                ("RegionId", "local"),
            ]),
        )
        .await
        .err()
        .context("CreateReplicationJob for an unknown source succeeded")?;
    match &e {
        ferry::client::ClientError::Api { status, code, .. } => {
            ensure!(
                *status == 404 && code == "InvalidSourceId.NotFound",
                "Create: {e}"
            );
        }
        _ => bail!("Create: not an API error: {e}"),
    }
    // Nothing was created or started by the refused calls.
    let all_after = client.smc("DescribeReplicationJobs", &[]).await?;
    ensure!(
        all_after["TotalCount"] == 1
            && all_after["ReplicationJobs"] == all_before["ReplicationJobs"],
        "the jobs changed:\nbefore {all_before}\nafter  {all_after}"
    );
    ensure!(
        job(&client, &real_id).await?["Status"] == "Ready",
        "the real job left Ready"
    );
    Ok(())
}

// 5. Another source's credentials against a run.
#[tokio::test(flavor = "multi_thread")]
async fn another_sources_credentials_cannot_touch_a_run() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = ServerProc::start(&tmp.path().join("server"), &[]).await?;
    let client = server.client()?;
    let (_, code) = server.activation_code(2).await?;
    let img_a = tmp.path().join("a.img");
    std::fs::write(&img_a, random_bytes(41, 48 * MIB))?;
    let img_b = tmp.path().join("b.img");
    let chunks_b = write_disk(&img_b, MIB, &[Some(42)])?;
    let agent_a =
        AgentProc::activate(&server, &tmp.path().join("agent-a"), &code, &[&img_a]).await?;
    wait_source(&client, &agent_a.source_id).await?;
    let b = HandAgent::activate(&server, &tmp.path().join("agent-b"), &code, &img_b).await?;
    // 8 MiB/s: A's run lasts about 6 s, long enough for B's attempts to hit it while it syncs.
    let job_a = start_job(
        &client,
        &agent_a.source_id,
        &[(
            "ReplicationParameters",
            r#"{"bandwidth_limit_bps":8388608}"#,
        )],
    )
    .await?;
    let j = job(&client, &job_a).await?;
    let run_a = j["ReplicationJobRuns"]["ReplicationJobRun"][0]["RunId"]
        .as_str()
        .context("A's run ID")?
        .to_owned();

    // B's credentials are valid: its own heartbeat works.
    b.heartbeat().await.context("B's own heartbeat")?;
    let digest_b = ferry_chunk::hash(&chunks_b[0]);
    let zeros = DiskIndex {
        disk_size: 48 * MIB as u64,
        chunk_size: MIB as u32,
        entries: vec![Digest::ZERO; 48],
    };
    let failed = RunFinish::Failed {
        code: "Hijack".into(),
        message: "B says A failed".into(),
    };
    let progress = RunProgress {
        bytes_total: 1,
        bytes_scanned: 1,
        ..RunProgress::default()
    };
    let not_found = |r: &str| format!("run {r} does not exist");
    let unknown = RunId::generate().to_string();
    for (target, expect_msg) in [
        (run_a.clone(), not_found(&run_a)),
        (unknown.clone(), not_found(&unknown)),
    ] {
        let r = &target;
        let answers: Vec<(&str, Answer)> = vec![
            (
                "missing",
                flatten(
                    b.conn
                        .post::<_, MissingResponse>(
                            &format!("/runs/{r}/missing"),
                            &MissingRequest {
                                digests: vec![digest_b.to_string()],
                            },
                        )
                        .await,
                ),
            ),
            (
                "chunks",
                flatten(
                    b.put_chunk(r, &digest_b, ferry_chunk::encode(&chunks_b[0], 1))
                        .await,
                ),
            ),
            ("index", flatten(b.put_index(r, 0, zeros.encode()).await)),
            // A raw call: the agent's client turns every 404 of `base` into "no base", hiding the code.
            (
                "base",
                match raw_call(
                    &server,
                    reqwest::Method::GET,
                    &format!("/runs/{r}/disks/0/base"),
                    Some(&b.state.credentials.bearer()),
                    b"",
                )
                .await?
                {
                    (200, _, _) => Ok(()),
                    (status, code, message) => Err((status, code, message)),
                },
            ),
            (
                "progress",
                flatten(
                    b.conn
                        .post::<_, Value>(&format!("/runs/{r}/progress"), &progress)
                        .await,
                ),
            ),
            ("finish", flatten(b.finish(r, &failed).await)),
        ];
        for (call, answer) in answers {
            match answer {
                Err((404, code, msg)) if code == "InvalidRunId.NotFound" => {
                    // Exactly the answer for a run that does not exist: nothing tells B that A's run exists.
                    ensure!(msg == expect_msg, "{call} on {r}: {msg}");
                }
                other => bail!(
                    "{call} with B's credentials on run {r}: expected 404 InvalidRunId.NotFound, got {other:?}"
                ),
            }
        }
    }
    ensure!(
        !chunk_file(&server.data_dir, &digest_b).exists(),
        "B's chunk was stored through A's run"
    );
    let j = job(&client, &job_a).await?;
    ensure!(
        j["Status"] == "Running"
            && j["ReplicationJobRuns"]["ReplicationJobRun"][0]["RunStatus"] == "Syncing",
        "A's run was not syncing while B tried it (the test must hit a live run): {j}"
    );
    // A's run carries on and produces A's disk, not B's all-zero index.
    let j = wait_job(&client, &job_a, &["Finished"], Duration::from_secs(180)).await?;
    assert_raw_export_equals(&client, &run_image(&j, 0)?, &img_a).await
}

/// `Ok(())` for a success, the error's status, code and message otherwise.
type Answer = Result<(), (u16, String, String)>;

/// The [`Answer`] of a call through the agent's client (transport errors become status 0).
fn flatten<T>(r: Result<T, CallError>) -> Answer {
    match r {
        Ok(_) => Ok(()),
        Err(CallError::Api {
            status,
            code,
            message,
        }) => Err((status, code, message)),
        Err(e) => Err((0, "transport".into(), e.to_string())),
    }
}

// 6. Activation codes that must not register anything.
#[tokio::test(flavor = "multi_thread")]
async fn unusable_activation_codes_register_nothing() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = ServerProc::start(&tmp.path().join("server"), &[]).await?;
    let client = server.client()?;
    let img = tmp.path().join("disk.img");
    write_disk(&img, MIB, &[Some(51)])?;

    // Exhausted: Count=1, used once successfully.
    let (once_id, once) = server.activation_code(1).await?;
    let ok = activate_only(&server, &tmp.path().join("first"), &once, &[&img])?;
    ensure!(
        ok.status.success(),
        "the first use failed: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    ensure!(
        source_count(&client).await? == 1,
        "the first use registered no source"
    );

    // Disabled.
    let (disabled_id, disabled) = server.activation_code(5).await?;
    client
        .smc("DisableAccessToken", &p(&[("AccessTokenId", &disabled_id)]))
        .await?;

    // Expired: the server has no clock to move, so the code's creation time is moved back 31 days (past the
    // default 30-day TimeToLiveInDays) directly in the server's SQLite database.
    let (expired_id, expired) = server.activation_code(5).await?;
    let db_url = format!("sqlite://{}", server.data_dir.join("ferry.db").display());
    let pool = sqlx::SqlitePool::connect(&db_url).await?;
    let moved = sqlx::query("UPDATE activation_codes SET created_at = created_at - ? WHERE id = ?")
        .bind(31i64 * 86_400)
        .bind(&expired_id)
        .execute(&pool)
        .await?
        .rows_affected();
    pool.close().await;
    ensure!(
        moved == 1,
        "the expired code's row was not found ({moved} rows)"
    );
    let listed = client
        .smc("ListAccessTokens", &p(&[("AccessTokenId.1", &expired_id)]))
        .await?;
    ensure!(
        listed["AccessTokens"]["AccessToken"][0]["Status"] == "expired",
        "the server does not see the code as expired: {listed}"
    );

    let wrong = format!("{once}x");
    let cases = [
        (
            "a wrong code",
            wrong.as_str(),
            "ActivationCode.Invalid",
            "not valid",
        ),
        (
            "an exhausted code",
            once.as_str(),
            "ActivationCode.Expired",
            "used as many times",
        ),
        (
            "a disabled code",
            disabled.as_str(),
            "ActivationCode.Expired",
            "was disabled",
        ),
        (
            "an expired code",
            expired.as_str(),
            "ActivationCode.Expired",
            "has expired",
        ),
    ];
    for (i, (what, code, api_code, words)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("refused-{i}"));
        let out = activate_only(&server, &dir, code, &[&img])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "activation with {what} succeeded");
        ensure!(
            stderr.contains(api_code) && stderr.contains(words),
            "activation with {what}: the message does not name the problem ({api_code}, {words:?}): {stderr}"
        );
        ensure!(
            !dir.join("agent.json").exists(),
            "activation with {what} wrote agent.json"
        );
        ensure!(
            source_count(&client).await? == 1,
            "activation with {what} registered a source"
        );
    }
    let listed = client
        .smc("ListAccessTokens", &p(&[("AccessTokenId.1", &once_id)]))
        .await?;
    ensure!(
        listed["AccessTokens"]["AccessToken"][0]["RegisteredCount"] == "1",
        "the exhausted code's use count moved: {listed}"
    );
    Ok(())
}

/// A tmpfs mounted for one test; unmounted when dropped, also when the test panics.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        let d = dir.display().to_string();
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &d],
        )?;
        Ok(Tmpfs {
            dir: dir.to_owned(),
        })
    }

    fn resize(&self, size: &str) -> anyhow::Result<()> {
        run(
            "mount",
            &[
                "-o",
                &format!("remount,size={size}"),
                &self.dir.display().to_string(),
            ],
        )?;
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let d = self.dir.display().to_string();
        // A process still holding a file would make a plain unmount fail; detach it then.
        if run("umount", &[&d]).is_err() {
            let _ = run("umount", &["-l", &d]);
        }
    }
}

/// The space the full-disk tests keep free for the server's database, audit trail and log (the
/// default, 256 MiB, is larger than their tmpfs). Uploads and builds stop there, so the API keeps
/// answering while the run is paused: every call's audit record must still be written.
const RESERVE: &[&str] = &["--reserve-mib", "8"];

// 7. The server's data directory fills up mid-run.
#[tokio::test(flavor = "multi_thread")]
async fn full_server_disk_pauses_the_run_until_space_is_freed() -> anyhow::Result<()> {
    if skip_unless_root("full_server_disk") {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    // Declared before the server so that it is dropped (unmounted) after the server process is killed.
    let fs = Tmpfs::mount(&tmp.path().join("data"), "48m")?;
    let img = tmp.path().join("disk.img");
    std::fs::write(&img, random_bytes(71, 96 * MIB))?;
    let OneSource {
        server,
        client,
        agent,
    } = OneSource::start_with_args(
        &fs.dir.join("server"),
        &tmp.path().join("agent"),
        &[&img],
        RESERVE,
    )
    .await?;
    let job_id = start_job(&client, &agent.source_id, &[]).await?;

    let paused = wait_for(
        Duration::from_secs(180),
        "the job to show that it is paused",
        || async {
            let j = job(&client, &job_id).await?;
            let info = j["StatusInfo"].as_str().unwrap_or_default().to_owned();
            if j["Status"] != "Running" {
                bail!("the job left Running while the disk is full: {j}");
            }
            Ok((info.contains("full") || info.contains("paused")).then_some(j))
        },
    )
    .await?;
    let chunk_dir = server.data_dir.join("objects/chunks");
    let before = files_under(&chunk_dir)?;
    ensure!(
        !before.is_empty() && before.len() < 96,
        "{} chunks stored at the pause",
        before.len()
    );
    // Everything stored before the pause is a whole, valid chunk under its own name.
    for f in &before {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let digest: Digest = name
            .parse()
            .with_context(|| format!("{} is not a chunk name", f.display()))?;
        ferry_chunk::decode(&std::fs::read(f)?, &digest)
            .with_context(|| format!("{} was damaged by the full disk", f.display()))?;
    }
    let before = fingerprints(&before)?;
    ensure!(
        paused["Status"] == "Running",
        "a full disk must pause the run, not fail it: {paused}"
    );

    fs.resize("1g")?;
    let j = wait_job(&client, &job_id, &["Finished"], Duration::from_secs(90)).await?;
    ensure!(
        j.get("StatusInfo").is_none(),
        "the pause reason outlived the pause: {}",
        j["StatusInfo"]
    );
    assert_unchanged(&before)?;
    let temp_left: Vec<PathBuf> = files_under(&chunk_dir)?
        .into_iter()
        .filter(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    ensure!(
        temp_left.is_empty(),
        "half-written temp files left behind: {temp_left:?}"
    );
    assert_raw_export_equals(&client, &run_image(&j, 0)?, &img).await
}

// 8. The server is unreachable for a while mid-run.
#[tokio::test(flavor = "multi_thread")]
async fn agent_rides_out_a_server_outage_and_completes_identically() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let img = tmp.path().join("disk.img");
    std::fs::write(&img, random_bytes(81, 64 * MIB))?;
    let OneSource {
        mut server,
        client,
        agent,
    } = OneSource::start(
        &tmp.path().join("server"),
        &tmp.path().join("agent"),
        &[&img],
    )
    .await?;
    // 16 MiB/s: about 4 s of uploads, interrupted in the middle.
    let job_id = start_job(
        &client,
        &agent.source_id,
        &[(
            "ReplicationParameters",
            r#"{"bandwidth_limit_bps":16777216}"#,
        )],
    )
    .await?;
    wait_for(Duration::from_secs(180), "uploads to progress", || async {
        let s = metric(&server, STORED).await?;
        Ok((s >= 16).then_some(s))
    })
    .await?;
    let failures = |log: &str| {
        log.lines()
            .filter(|l| l.contains("retrying") || l.contains("heartbeat failed"))
            .count()
    };
    let failures_before = failures(&agent.log());
    server.stop().await?;
    let stored_before_stop = files_under(&server.data_dir.join("objects/chunks"))?.len();
    ensure!(
        stored_before_stop < 64,
        "the run was over before the outage ({stored_before_stop} chunks stored)"
    );
    // The outage itself: the port refuses connections while the agent keeps trying.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart().await?;
    let client = server.client()?;
    let j = wait_job(&client, &job_id, &["Finished"], Duration::from_secs(180)).await?;
    ensure!(
        failures(&agent.log()) > failures_before,
        "the agent never noticed the outage, so the test did not test it:\n{}",
        agent.log()
    );
    // Chunks stored before the outage were not sent again (a few in flight at the stop may be).
    let dup = metric(&server, DUPLICATE).await?;
    ensure!(
        dup <= 6,
        "{dup} chunks already stored were sent again after the restart"
    );
    assert_raw_export_equals(&client, &run_image(&j, 0)?, &img).await
}

// 7b. The data directory has room for the chunks but not for the image built from them.
#[tokio::test(flavor = "multi_thread")]
async fn full_server_disk_during_the_image_build_pauses_until_space_is_freed() -> anyhow::Result<()>
{
    if skip_unless_root("full_server_disk_during_the_image_build") {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    // 96 MiB of chunks fit in 160 MiB; the 96 MiB raw image built next to them does not.
    let fs = Tmpfs::mount(&tmp.path().join("data"), "160m")?;
    let img = tmp.path().join("disk.img");
    std::fs::write(&img, random_bytes(91, 96 * MIB))?;
    let OneSource {
        server,
        client,
        agent,
    } = OneSource::start_with_args(
        &fs.dir.join("server"),
        &tmp.path().join("agent"),
        &[&img],
        RESERVE,
    )
    .await?;
    let job_id = start_job(&client, &agent.source_id, &[]).await?;

    // Like a full disk during the upload, the build pauses: the job stays Running/Processing and says why.
    let j = wait_for(Duration::from_secs(180), "the build to pause", || async {
        let j = job(&client, &job_id).await?;
        let info = j["StatusInfo"].as_str().unwrap_or_default().to_owned();
        Ok((j["Status"] == "Running" && info.starts_with("paused:")).then_some(j))
    })
    .await?;
    let info = j["StatusInfo"].as_str().unwrap_or_default();
    ensure!(
        j["BusinessStatus"] == "Processing"
            && info.contains("no space")
            && info.contains("free space"),
        "the paused build does not say the disk is full and what to do: {j}"
    );
    let images = server.data_dir.join("images");
    let partial = files_under(&images)?;
    ensure!(
        partial.is_empty(),
        "the failed build left partial files: {partial:?}"
    );
    let chunks = fingerprints(&files_under(&server.data_dir.join("objects/chunks"))?)?;
    ensure!(chunks.len() == 96, "{} of 96 chunks stored", chunks.len());

    fs.resize("1g")?;
    let stored = metric(&server, STORED).await?;
    let duplicate = metric(&server, DUPLICATE).await?;
    // Once space is freed the build resumes by itself.
    let j = wait_job(&client, &job_id, &["Finished"], Duration::from_secs(180)).await?;
    ensure!(
        metric(&server, STORED).await? == stored && metric(&server, DUPLICATE).await? == duplicate,
        "the resumed run sent chunks that were already stored"
    );
    assert_unchanged(&chunks)?;
    assert_raw_export_equals(&client, &run_image(&j, 0)?, &img).await
}
