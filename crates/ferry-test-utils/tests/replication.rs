//! Whole-stack replication tests on real disk images: a real `ferry server`, real `ferry-agent`
//! processes, real partition tables and filesystems built through loop devices (root required; the
//! test command runs as root).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use ferry_test_utils::disk::{TestDisk, fill_tree, random_bytes, run};
use ferry_test_utils::stack::{
    AgentProc, OneSource, ServerProc, export, job, metric, p, same_bytes, start_job, wait_job,
    wait_source,
};
use ferry_test_utils::{is_root, wait_for};

const MIB: usize = 1 << 20;

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("SKIPPED {test}: needs root for loop devices and mounts");
    true
}

/// The image a job run produced.
fn run_image(job: &serde_json::Value, n: usize) -> anyhow::Result<String> {
    job["ReplicationJobRuns"]["ReplicationJobRun"][n]["ImageId"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("run {n} has no image: {job}"))
}

fn run_figure(job: &serde_json::Value, n: usize, field: &str) -> u64 {
    job["ReplicationJobRuns"]["ReplicationJobRun"][n][field]
        .as_u64()
        .unwrap_or(u64::MAX)
}

async fn assert_image_equals(
    client: &ferry::client::Client,
    image: &str,
    source: &Path,
) -> anyhow::Result<()> {
    let raw = export(client, image, "raw").await?;
    anyhow::ensure!(raw.len() == 1, "one disk expected, got {raw:?}");
    anyhow::ensure!(
        same_bytes(&raw[0], source)?,
        "raw export of {image} differs from {}",
        source.display()
    );
    let qcow2 = export(client, image, "qcow2").await?;
    let out = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(source)
        .arg(&qcow2[0])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "qcow2 export of {image} differs: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn full_then_incremental_then_deduplicated() -> anyhow::Result<()> {
    if skip_unless_root("full_then_incremental_then_deduplicated") {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let a = TestDisk::create(&tmp.path().join("a.img"), 512, 160)?;
    {
        let ext4 = a.mount(0)?;
        fill_tree(ext4.path(), 1, 24 * MIB)?;
        let xfs = a.mount(1)?;
        fill_tree(xfs.path(), 2, 24 * MIB)?;
    }
    let server = ServerProc::start(&tmp.path().join("server"), &[]).await?;
    let client = server.client()?;
    let (_, code) = server.activation_code(5).await?;
    let agent_a =
        AgentProc::activate(&server, &tmp.path().join("agent-a"), &code, &[&a.path]).await?;
    wait_source(&client, &agent_a.source_id).await?;

    // Full run of an incremental job.
    let job_id = start_job(
        &client,
        &agent_a.source_id,
        &[
            ("RunOnce", "false"),
            ("Frequency", "24"),
            ("MaxNumberOfImageToKeep", "3"),
        ],
    )
    .await?;
    let j = wait_job(&client, &job_id, &["Waiting"], Duration::from_secs(240)).await?;
    let image1 = run_image(&j, 0)?;
    assert_image_equals(&client, &image1, &a.path).await?;
    // The image's own qcow2 is derived from the verified raw image shortly after it became available.
    wait_for(Duration::from_secs(180), "the image's qcow2", || async {
        let v = client
            .ecs(
                "DescribeImages",
                &p(&[("RegionId", "local"), ("ImageId", &image1)]),
            )
            .await?;
        Ok(
            (v["Images"]["Image"][0]["DiskDeviceMappings"]["DiskDeviceMapping"][0]["Format"]
                == "qcow2")
                .then_some(()),
        )
    })
    .await?;
    let qcow2 = server
        .data_dir
        .join("images")
        .join(&image1)
        .join("disk0.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&a.path)
        .arg(&qcow2)
        .output()?;
    assert!(
        out.status.success(),
        "the image's qcow2 differs from the source: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let first_sent = run_figure(&j, 0, "BytesUploaded");
    assert!(
        first_sent >= 48 * MIB as u64,
        "the full run uploaded only {first_sent} bytes"
    );
    assert!(
        run_figure(&j, 0, "BytesZero") > 200 * MIB as u64,
        "zero chunks were not skipped: {j}"
    );

    // Change files through the mounted filesystems, keep the old disk to compare the old image with.
    let old = tmp.path().join("a-v1.img");
    run(
        "cp",
        &[
            "--sparse=always",
            &a.path.display().to_string(),
            &old.display().to_string(),
        ],
    )?;
    {
        let ext4 = a.mount(0)?;
        std::fs::write(
            ext4.path().join("d1/changed.bin"),
            random_bytes(77, 3 * MIB),
        )?;
        let xfs = a.mount(1)?;
        std::fs::write(xfs.path().join("new.bin"), random_bytes(78, 2 * MIB))?;
    }
    client
        .smc("StartReplicationJob", &p(&[("JobId", &job_id)]))
        .await?;
    let j = wait_for(Duration::from_secs(240), "the incremental run", || async {
        let j = job(&client, &job_id).await?;
        let runs = j["ReplicationJobRuns"]["ReplicationJobRun"]
            .as_array()
            .map_or(0, Vec::len);
        Ok((j["Status"] == "Waiting" && runs == 2).then_some(j))
    })
    .await?;
    let image2 = run_image(&j, 1)?;
    let sent = run_figure(&j, 1, "BytesUploaded");
    // 5 MiB of new random data must be sent; little else may be (metadata, 1 MiB chunk granularity).
    assert!(
        sent >= 5 * MIB as u64,
        "the incremental run uploaded only {sent} bytes"
    );
    assert!(
        sent <= 16 * MIB as u64,
        "the incremental run uploaded {sent} bytes for 5 MiB of changes"
    );
    assert!(
        run_figure(&j, 1, "BytesUnchanged") >= 40 * MIB as u64,
        "unchanged chunks were not skipped: {j}"
    );
    assert_image_equals(&client, &image2, &a.path).await?;
    assert_image_equals(&client, &image1, &old).await?;

    // A second server with an identical disk sends (almost) nothing: its chunks are already stored.
    let b = tmp.path().join("b.img");
    run(
        "cp",
        &[
            "--sparse=always",
            &a.path.display().to_string(),
            &b.display().to_string(),
        ],
    )?;
    let agent_b = AgentProc::activate(&server, &tmp.path().join("agent-b"), &code, &[&b]).await?;
    wait_source(&client, &agent_b.source_id).await?;
    let job_b = start_job(&client, &agent_b.source_id, &[]).await?;
    let jb = wait_job(&client, &job_b, &["Finished"], Duration::from_secs(240)).await?;
    assert_eq!(
        run_figure(&jb, 0, "BytesUploaded"),
        0,
        "identical disk re-sent data: {jb}"
    );
    assert!(
        run_figure(&jb, 0, "BytesDeduplicated") >= 48 * MIB as u64,
        "{jb}"
    );
    assert_image_equals(&client, &run_image(&jb, 0)?, &b).await?;
    Ok(())
}

/// Chunks of a file that are not all zeros.
fn data_chunks(path: &Path, chunk: usize) -> anyhow::Result<usize> {
    let data = std::fs::read(path)?;
    let mut distinct = std::collections::HashSet::new();
    for c in data.chunks(chunk) {
        if !ferry_chunk::is_zero(c) {
            distinct.insert(ferry_chunk::hash(c));
        }
    }
    Ok(distinct.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_agent_and_server_mid_run_resumes_without_resending() -> anyhow::Result<()> {
    if skip_unless_root("kill_9") {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    // 160 MiB of random data in a 256 MiB disk, behind a partition table and ext4.
    let d = TestDisk::create(&tmp.path().join("k.img"), 512, 200)?;
    {
        let m = d.mount(0)?;
        for i in 0..10 {
            std::fs::write(
                m.path().join(format!("r{i}.bin")),
                random_bytes(100 + i, 16 * MIB),
            )?;
        }
    }
    let server_dir = tmp.path().join("server");
    let OneSource {
        mut server,
        client,
        mut agent,
    } = OneSource::start(&server_dir, &tmp.path().join("agent"), &[&d.path]).await?;
    // 24 MiB/s: the run takes ~7 s, long enough to be interrupted twice.
    let job_id = start_job(
        &client,
        &agent.source_id,
        &[(
            "ReplicationParameters",
            r#"{"bandwidth_limit_bps":25165824}"#,
        )],
    )
    .await?;

    let stored = |n: u64| {
        let server = &server;
        async move {
            wait_for(Duration::from_secs(180), "uploads to progress", || async {
                let s = metric(server, r#"ferry_chunk_uploads_total{outcome="stored"}"#).await?;
                Ok((s >= n).then_some(s))
            })
            .await
        }
    };
    stored(40).await?;
    agent.kill9();
    let before = metric(&server, r#"ferry_chunk_uploads_total{outcome="stored"}"#).await?;
    agent.start()?;
    stored(before + 30).await?;
    let dup_after_agent_kill =
        metric(&server, r#"ferry_chunk_uploads_total{outcome="duplicate"}"#).await?;
    assert!(
        dup_after_agent_kill <= 6,
        "after the agent restarted, {dup_after_agent_kill} chunks already stored were sent again"
    );

    server.kill9();
    server.restart().await?;
    let client = server.client()?;
    let j = wait_job(&client, &job_id, &["Finished"], Duration::from_secs(240)).await?;
    let dup_after_server_kill =
        metric(&server, r#"ferry_chunk_uploads_total{outcome="duplicate"}"#).await?;
    assert!(
        dup_after_server_kill <= 6,
        "after the server restarted, {dup_after_server_kill} chunks already stored were sent again"
    );
    // Every distinct data chunk is stored exactly once, and the restarted server removed the temp files
    // of the writes the kill interrupted.
    let is_temp = |p: &std::path::PathBuf| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    };
    let chunks_dir = server_dir.join("objects/chunks");
    wait_for(
        Duration::from_secs(30),
        "temp files to be swept",
        || async { Ok(walk(&chunks_dir)?.iter().all(|p| !is_temp(p)).then_some(())) },
    )
    .await?;
    let objects = walk(&chunks_dir)?.len();
    assert_eq!(objects, data_chunks(&d.path, 1 << 20)?);
    assert_image_equals(&client, &run_image(&j, 0)?, &d.path).await?;
    Ok(())
}

fn walk(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn bandwidth_limit_is_honoured_within_ten_percent() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let img = tmp.path().join("bw.img");
    std::fs::write(&img, random_bytes(9, 48 * MIB))?;
    // The server must outlive the test body: bind it, unused.
    let OneSource {
        server: _server,
        client,
        agent,
    } = OneSource::start(
        &tmp.path().join("server"),
        &tmp.path().join("agent"),
        &[&img],
    )
    .await?;
    let limit: u64 = 8 << 20;
    let job_id = start_job(
        &client,
        &agent.source_id,
        &[(
            "ReplicationParameters",
            &format!(r#"{{"bandwidth_limit_bps":{limit},"compress_level":1}}"#),
        )],
    )
    .await?;
    let j = wait_job(&client, &job_id, &["Finished"], Duration::from_secs(120)).await?;
    let sent = run_figure(&j, 0, "BytesSent") as f64;
    let secs = run_figure(&j, 0, "ElapsedMs") as f64 / 1000.0;
    let rate = sent / secs;
    assert!(
        sent >= 48.0 * MIB as f64,
        "random data must be sent in full: {sent}"
    );
    assert!(
        (rate - limit as f64).abs() / (limit as f64) <= 0.10,
        "limit {limit} B/s, measured {rate:.0} B/s ({sent} bytes in {secs:.2} s)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_block_device_replicates_like_an_image_file() -> anyhow::Result<()> {
    if skip_unless_root("a_real_block_device_replicates_like_an_image_file") {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let img = tmp.path().join("backing.img");
    let mut data = random_bytes(31, 24 * MIB);
    data.resize(64 * MIB, 0);
    std::fs::write(&img, &data)?;
    // A loop device is a real block device: the agent opens /dev/loopN, not the file.
    let lo = ferry_test_utils::disk::Loop::attach(&img, 0, 64 * MIB as u64)?;
    let server = ServerProc::start(&tmp.path().join("server"), &[]).await?;
    let client = server.client()?;
    let (_, code) = server.activation_code(1).await?;
    let agent = AgentProc::activate(
        &server,
        &tmp.path().join("agent"),
        &code,
        &[Path::new(&lo.dev)],
    )
    .await?;
    let source = wait_source(&client, &agent.source_id).await?;
    let inventory: serde_json::Value =
        serde_json::from_str(source["Inventory"].as_str().context("Inventory")?)?;
    assert_eq!(
        inventory["disks"][0]["source"], "block_device",
        "{inventory}"
    );
    assert_eq!(
        inventory["disks"][0]["size_bytes"],
        64 * MIB as u64,
        "{inventory}"
    );
    let job_id = start_job(&client, &agent.source_id, &[]).await?;
    let j = wait_job(&client, &job_id, &["Finished"], Duration::from_secs(120)).await?;
    assert_image_equals(&client, &run_image(&j, 0)?, &img).await
}
