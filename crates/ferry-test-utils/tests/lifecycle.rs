//! Whole-stack tests of the replication job state machine (`docs/replication-jobs.md`): incremental cycles
//! on the `Frequency` timer, image retention, cut-over with and without a final sync, scheduled starts,
//! `ValidTime` expiry and the purge after it, deletion rules, and the status guards of every action.
//!
//! Real `ferry server` and `ferry-agent` processes replicate small disk image files (a few MiB, no root
//! needed). Hours and days pass on the server's job clock only (`TestClock`), never by waiting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ferry::client::{Client, ClientError};
use ferry_test_utils::disk::random_bytes;
use ferry_test_utils::stack::{OneSource, TestClock, api_time, job, p, wait_job};
use ferry_test_utils::wait_for;
use serde_json::Value;

const MIB: usize = 1 << 20;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
const WAIT: Duration = Duration::from_secs(120);

/// A 4 MiB disk image file of random (incompressible, non-zero) bytes.
fn small_disk(dir: &Path, seed: u64) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("disk-{seed}.img"));
    std::fs::write(&path, random_bytes(seed, 4 * MIB))?;
    Ok(path)
}

/// Overwrites 1 MiB of a disk file, so the next run has something to copy.
fn change_disk(path: &Path, seed: u64) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all_at(&random_bytes(seed, MIB), MIB as u64)?;
    f.sync_all()?;
    Ok(())
}

/// The API error of a call that must fail: (code, message).
fn api_error(r: Result<Value, ClientError>) -> anyhow::Result<(String, String)> {
    match r {
        Ok(v) => anyhow::bail!("the call succeeded but must fail: {v}"),
        Err(ClientError::Api { code, message, .. }) => Ok((code, message)),
        Err(e) => Err(e.into()),
    }
}

/// SMC's `ReplicationJob.InvalidStatus` message.
fn invalid_status(status: &str, allowed: &str) -> String {
    format!(
        "The specified replication job status: {status} is invalid. This operation can only be performed \
         in the following status: {allowed}."
    )
}

async fn expect_invalid_status(
    client: &Client,
    action: &str,
    params: &[(&str, &str)],
    status: &str,
    allowed: &str,
) -> anyhow::Result<()> {
    let (code, message) = api_error(client.smc(action, &p(params)).await)?;
    anyhow::ensure!(
        code == "ReplicationJob.InvalidStatus" && message == invalid_status(status, allowed),
        "{action} {params:?}: got {code}: {message}"
    );
    Ok(())
}

async fn expect_code(
    client: &Client,
    action: &str,
    params: &[(&str, &str)],
    want: &str,
) -> anyhow::Result<String> {
    let (code, message) = api_error(client.smc(action, &p(params)).await)?;
    anyhow::ensure!(
        code == want,
        "{action} {params:?}: want {want}, got {code}: {message}"
    );
    Ok(message)
}

fn runs(j: &Value) -> Vec<Value> {
    j["ReplicationJobRuns"]["ReplicationJobRun"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn run_image(j: &Value, n: usize) -> anyhow::Result<String> {
    runs(j)
        .get(n)
        .and_then(|r| r["ImageId"].as_str().map(str::to_owned))
        .with_context(|| format!("run {n} has no image: {j}"))
}

async fn create(client: &Client, params: &[(&str, &str)]) -> anyhow::Result<String> {
    let v = client.smc("CreateReplicationJob", &p(params)).await?;
    Ok(v["JobId"].as_str().context("JobId")?.to_owned())
}

async fn source_state(client: &Client, source_id: &str) -> anyhow::Result<String> {
    let v = client
        .smc("DescribeSourceServers", &p(&[("SourceId.1", source_id)]))
        .await?;
    Ok(v["SourceServers"]["SourceServer"][0]["State"]
        .as_str()
        .unwrap_or("")
        .to_owned())
}

/// Waits until a job has `n` runs and is in `status`.
async fn wait_runs(client: &Client, job_id: &str, n: usize, status: &str) -> anyhow::Result<Value> {
    wait_for(
        WAIT,
        &format!("job {job_id}: {n} runs, {status}"),
        || async {
            let j = job(client, job_id).await?;
            anyhow::ensure!(j["Status"] != "InError", "job failed: {j}");
            Ok((runs(&j).len() == n && j["Status"] == status).then_some(j))
        },
    )
    .await
}

/// Waits until DescribeReplicationJobs no longer lists the job (purged).
async fn wait_purged(client: &Client, job_id: &str) -> anyhow::Result<()> {
    wait_for(WAIT, &format!("job {job_id} to be purged"), || async {
        let v = client
            .smc("DescribeReplicationJobs", &p(&[("JobId.1", job_id)]))
            .await?;
        Ok((v["TotalCount"] == 0).then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_cycles_retention_and_final_sync_cutover() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let clock = TestClock::new(&tmp.path().join("clock"))?;
    let disk = small_disk(tmp.path(), 1)?;
    let s = OneSource::start_with_clock(
        &tmp.path().join("server"),
        &tmp.path().join("agent"),
        &[&disk],
        &clock,
    )
    .await?;
    let c = &s.client;
    let job_id = create(
        c,
        &[
            ("SourceId", &s.agent.source_id),
            ("RegionId", "local"),
            ("ImageName", "web01"),
            ("RunOnce", "false"),
            ("Frequency", "1"),
            ("MaxNumberOfImageToKeep", "2"),
        ],
    )
    .await?;
    assert_eq!(source_state(c, &s.agent.source_id).await?, "InUse");
    c.smc("StartReplicationJob", &p(&[("JobId", &job_id)]))
        .await?;
    let j = wait_runs(c, &job_id, 1, "Waiting").await?;
    assert!(
        j.get("BusinessStatus").is_none(),
        "BusinessStatus outside Running: {j}"
    );
    assert_eq!(runs(&j)[0]["Type"], "Manual");
    let image1 = run_image(&j, 0)?;
    assert_eq!(j["ImageId"], image1.as_str());
    let images = c
        .ecs(
            "DescribeImages",
            &p(&[("RegionId", "local"), ("ImageId", &image1)]),
        )
        .await?;
    assert_eq!(
        images["Images"]["Image"][0]["ImageName"], "web01-CYCLE_1",
        "{images}"
    );

    // The Frequency timer: one hour later on the job clock, a Schedule run copies the change.
    change_disk(&disk, 2)?;
    clock.advance(HOUR + 5)?;
    let j = wait_runs(c, &job_id, 2, "Waiting").await?;
    assert_eq!(runs(&j)[1]["Type"], "Schedule", "{j}");
    let image2 = run_image(&j, 1)?;
    assert_ne!(image1, image2);
    assert!(
        run_image(&j, 0).is_ok(),
        "both images are kept with MaxNumberOfImageToKeep=2: {j}"
    );

    // Retention: lowering MaxNumberOfImageToKeep (allowed while Waiting) retires the oldest image.
    c.smc(
        "ModifyReplicationJobAttribute",
        &p(&[("JobId", &job_id), ("MaxNumberOfImageToKeep", "1")]),
    )
    .await?;
    let image1_dir = s.server.data_dir.join("images").join(&image1);
    wait_for(WAIT, "the oldest image to be retired", || async {
        let j = job(c, &job_id).await?;
        Ok((runs(&j)[0].get("ImageId").is_none() && !image1_dir.exists()).then_some(()))
    })
    .await?;
    assert!(s.server.data_dir.join("images").join(&image2).exists());

    // Cut over with a final sync: one more run, then Finished, and the source is free again.
    change_disk(&disk, 3)?;
    c.smc(
        "CutOverReplicationJob",
        &p(&[("JobId", &job_id), ("SyncData", "true")]),
    )
    .await?;
    let j = wait_job(c, &job_id, &["Finished"], WAIT).await?;
    let all = runs(&j);
    assert_eq!(all.len(), 3, "{j}");
    assert_eq!(all[2]["Type"], "Manual");
    let image3 = run_image(&j, 2)?;
    assert_eq!(j["ImageId"], image3.as_str());
    assert!(j.get("BusinessStatus").is_none());
    assert_eq!(source_state(c, &s.agent.source_id).await?, "Available");
    // The finished job's retention still holds: one image.
    wait_for(WAIT, "retention after the cut-over", || async {
        Ok((!s.server.data_dir.join("images").join(&image2).exists()).then_some(()))
    })
    .await?;
    expect_invalid_status(
        c,
        "StartReplicationJob",
        &[("JobId", &job_id)],
        "Finished",
        "Ready, Stopped, InError (or Waiting for incremental jobs)",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_in_waiting_cutover_without_sync_and_status_guards() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let disk = small_disk(tmp.path(), 10)?;
    let s = OneSource::start(
        &tmp.path().join("server"),
        &tmp.path().join("agent"),
        &[&disk],
    )
    .await?;
    let c = &s.client;
    let job_id = create(
        c,
        &[
            ("SourceId", &s.agent.source_id),
            ("RegionId", "local"),
            ("Name", "inc-job"),
            ("RunOnce", "false"),
            ("Frequency", "24"),
            ("MaxNumberOfImageToKeep", "3"),
            ("ReplicationParameters", r#"{"checksum":true}"#),
        ],
    )
    .await?;
    // Before the first run everything may change; CutOver and Stop may not happen yet.
    c.smc(
        "ModifyReplicationJobAttribute",
        &p(&[
            ("JobId", &job_id),
            ("ImageName", "renamed"),
            ("Frequency", "12"),
        ]),
    )
    .await?;
    let j = job(c, &job_id).await?;
    assert_eq!(
        (j["ImageName"].as_str(), j["Frequency"].as_i64()),
        (Some("renamed"), Some(12))
    );
    expect_invalid_status(
        c,
        "CutOverReplicationJob",
        &[("JobId", &job_id)],
        "Ready",
        "Waiting (incremental jobs, RunOnce=false)",
    )
    .await?;
    expect_invalid_status(
        c,
        "StopReplicationJob",
        &[("JobId", &job_id)],
        "Ready",
        "Running (Preparing, Syncing), Waiting",
    )
    .await?;

    c.smc("StartReplicationJob", &p(&[("JobId", &job_id)]))
        .await?;
    wait_runs(c, &job_id, 1, "Waiting").await?;
    // After the first run only Name/Description, Frequency/MaxNumberOfImageToKeep (Waiting) and ValidTime.
    expect_invalid_status(
        c,
        "ModifyReplicationJobAttribute",
        &[("JobId", &job_id), ("ImageName", "late")],
        "Waiting",
        "Ready",
    )
    .await?;
    c.smc(
        "ModifyReplicationJobAttribute",
        &p(&[
            ("JobId", &job_id),
            ("Name", "inc-job-2"),
            ("Frequency", "6"),
        ]),
    )
    .await?;

    // Stop in Waiting; from Stopped, CutOver and Stop are refused and Start runs the next cycle.
    c.smc("StopReplicationJob", &p(&[("JobId", &job_id)]))
        .await?;
    assert_eq!(job(c, &job_id).await?["Status"], "Stopped");
    expect_invalid_status(
        c,
        "CutOverReplicationJob",
        &[("JobId", &job_id), ("SyncData", "false")],
        "Stopped",
        "Waiting (incremental jobs, RunOnce=false)",
    )
    .await?;
    expect_invalid_status(
        c,
        "StopReplicationJob",
        &[("JobId", &job_id)],
        "Stopped",
        "Running (Preparing, Syncing), Waiting",
    )
    .await?;
    expect_invalid_status(
        c,
        "ModifyReplicationJobAttribute",
        &[("JobId", &job_id), ("Frequency", "3")],
        "Stopped",
        "Ready, Waiting",
    )
    .await?;
    change_disk(&disk, 11)?;
    c.smc("StartReplicationJob", &p(&[("JobId", &job_id)]))
        .await?;
    let j = wait_runs(c, &job_id, 2, "Waiting").await?;
    let image2 = run_image(&j, 1)?;

    // Cut over without a final sync: Finished at once with the last image; no new run.
    c.smc(
        "CutOverReplicationJob",
        &p(&[("JobId", &job_id), ("SyncData", "false")]),
    )
    .await?;
    let j = job(c, &job_id).await?;
    assert_eq!(j["Status"], "Finished", "{j}");
    assert_eq!(runs(&j).len(), 2);
    assert_eq!(j["ImageId"], image2.as_str());
    assert_eq!(source_state(c, &s.agent.source_id).await?, "Available");
    for (action, allowed) in [
        (
            "StartReplicationJob",
            "Ready, Stopped, InError (or Waiting for incremental jobs)",
        ),
        (
            "StopReplicationJob",
            "Running (Preparing, Syncing), Waiting",
        ),
        (
            "CutOverReplicationJob",
            "Waiting (incremental jobs, RunOnce=false)",
        ),
    ] {
        expect_invalid_status(c, action, &[("JobId", &job_id)], "Finished", allowed).await?;
    }
    expect_invalid_status(
        c,
        "ModifyReplicationJobAttribute",
        &[
            ("JobId", &job_id),
            ("ValidTime", &api_time(now() + 10 * DAY)),
        ],
        "Finished",
        "Ready, Running, Stopped, InError, Waiting",
    )
    .await?;
    c.smc(
        "ModifyReplicationJobAttribute",
        &p(&[("JobId", &job_id), ("Description", "done and dusted")]),
    )
    .await?;

    // Deleting a finished job purges it; the images it delivered stay.
    c.smc("DeleteReplicationJob", &p(&[("JobId", &job_id)]))
        .await?;
    wait_purged(c, &job_id).await?;
    let images = c
        .ecs(
            "DescribeImages",
            &p(&[("RegionId", "local"), ("ImageId", &image2)]),
        )
        .await?;
    assert_eq!(
        images["Images"]["Image"][0]["ImageId"],
        image2.as_str(),
        "{images}"
    );
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_start_then_expiry_and_purge() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let clock = TestClock::new(&tmp.path().join("clock"))?;
    let disk = small_disk(tmp.path(), 20)?;
    let s = OneSource::start_with_clock(
        &tmp.path().join("server"),
        &tmp.path().join("agent"),
        &[&disk],
        &clock,
    )
    .await?;
    let c = &s.client;
    let src = s.agent.source_id.as_str();
    let base = [("SourceId", src), ("RegionId", "local")];
    let with = |extra: &[(&'static str, String)]| -> Vec<(String, String)> {
        let mut v = p(&base);
        v.extend(extra.iter().map(|(k, val)| (k.to_string(), val.clone())));
        v
    };
    for (param, value) in [
        ("ScheduledStartTime", api_time(clock.now() - 60)),
        ("ScheduledStartTime", api_time(clock.now() + 31 * DAY)),
        ("ValidTime", api_time(clock.now() + 3 * DAY)),
        ("ValidTime", api_time(clock.now() + 91 * DAY)),
    ] {
        let (code, msg) = api_error(
            c.smc("CreateReplicationJob", &with(&[(param, value)]))
                .await,
        )?;
        assert_eq!(code, "InvalidParameter", "{param}: {msg}");
        assert!(msg.contains(param), "{msg}");
    }

    // ScheduledStartTime: the job waits in Ready until its time comes on the job clock.
    let at = clock.now() + 2 * HOUR;
    let v = c
        .smc(
            "CreateReplicationJob",
            &with(&[("ScheduledStartTime", api_time(at))]),
        )
        .await?;
    let job_id = v["JobId"].as_str().context("JobId")?.to_owned();
    let j = job(c, &job_id).await?;
    assert_eq!(j["Status"], "Ready");
    assert_eq!(j["ScheduledStartTime"], api_time(at).as_str());
    clock.advance(2 * HOUR + 5)?;
    let j = wait_job(c, &job_id, &["Finished"], WAIT).await?;
    assert_eq!(runs(&j)[0]["Type"], "Schedule", "{j}");
    assert_eq!(source_state(c, src).await?, "Available");

    // ValidTime passes while Ready: Expired; the source keeps it as its open job until the purge.
    let valid = clock.now() + 7 * DAY + 60;
    let v = c
        .smc(
            "CreateReplicationJob",
            &with(&[
                ("ValidTime", api_time(valid)),
                ("Name", "short-lived".into()),
            ]),
        )
        .await?;
    let expiring = v["JobId"].as_str().context("JobId")?.to_owned();
    clock.advance(8 * DAY)?;
    wait_job(c, &expiring, &["Expired"], WAIT).await?;
    assert_eq!(source_state(c, src).await?, "InUse");
    expect_invalid_status(
        c,
        "StartReplicationJob",
        &[("JobId", &expiring)],
        "Expired",
        "Ready, Stopped, InError (or Waiting for incremental jobs)",
    )
    .await?;
    expect_code(
        c,
        "CreateReplicationJob",
        &base,
        "SourceServerState.Invalid",
    )
    .await?;
    // Seven days after expiring, the job is purged and the source is free.
    clock.advance(7 * DAY + 60)?;
    wait_purged(c, &expiring).await?;
    assert_eq!(source_state(c, src).await?, "Available");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_idempotency_deletion_and_source_rules() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let disk = small_disk(tmp.path(), 30)?;
    let s = OneSource::start(
        &tmp.path().join("server"),
        &tmp.path().join("agent"),
        &[&disk],
    )
    .await?;
    let c = &s.client;
    let src = s.agent.source_id.as_str();
    let base = [("SourceId", src), ("RegionId", "local")];
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("TargetType", "ContainerImage")], "UnsupportedOperation"),
        (&[("TargetType", "Tape")], "InvalidParameter"),
        (&[("TargetType", "TargetInstance")], "MissingParameter"),
        (&[("JobType", "1")], "UnsupportedOperation"),
        (&[("JobType", "2")], "InvalidParameter"),
        (&[("SystemDiskSize", "10")], "InvalidParameter"),
        (
            &[("DataDisk.1.Index", "3")],
            "ReplicationJobDataDiskIndex.Invalid",
        ),
        (
            &[("DataDisk.1.Index", "17")],
            "ReplicationJobDataDiskIndex.Invalid",
        ),
        (&[("NetMode", "2")], "MissingParameter"),
        (&[("NetMode", "1")], "InvalidParameter"),
        (&[("Frequency", "2")], "InvalidParameter"),
        (
            &[("RunOnce", "false"), ("Frequency", "2")],
            "MissingParameter",
        ),
        (
            &[
                ("RunOnce", "false"),
                ("Frequency", "169"),
                ("MaxNumberOfImageToKeep", "1"),
            ],
            "InvalidParameter",
        ),
        (&[("Name", "1abc")], "InvalidParameter"),
        (
            &[("ReplicationParameters", "{not json")],
            "InvalidParameter",
        ),
    ];
    for (extra, want) in cases {
        let mut params = base.to_vec();
        params.extend_from_slice(extra);
        expect_code(c, "CreateReplicationJob", &params, want).await?;
    }
    expect_code(
        c,
        "CreateReplicationJob",
        &[("SourceId", src), ("RegionId", "elsewhere")],
        "InvalidRegionId.NotFound",
    )
    .await?;
    expect_code(
        c,
        "CreateCrossZoneMigrationJob",
        &[("RegionId", "local"), ("TargetZoneId", "local-b")],
        "MissingParameter",
    )
    .await?;
    let msg = expect_code(
        c,
        "CreateCrossZoneMigrationJob",
        &[
            ("RegionId", "local"),
            ("InstanceId", "i-abc"),
            ("TargetZoneId", "local-b"),
        ],
        "InvalidInstanceId.NotFound",
    )
    .await?;
    assert!(msg.contains("i-abc"), "{msg}");
    expect_code(
        c,
        "CreateReplicationJob",
        &[
            ("SourceId", src),
            ("RegionId", "local"),
            ("TargetType", "targetinstance"),
            ("InstanceId", "i-missing"),
        ],
        "InvalidInstanceId.NotFound",
    )
    .await?;

    // ClientToken: the same token answers the same job, though the source now has an open job.
    let mut params = base.to_vec();
    params.extend_from_slice(&[
        ("Name", "alpha"),
        ("ClientToken", "tok-1"),
        (
            "ReplicationParameters",
            r#"{"bandwidth_limit_bps":262144,"checksum":true}"#,
        ),
    ]);
    let first = create(c, &params).await?;
    let again = create(c, &params).await?;
    assert_eq!(first, again);
    let j = job(c, &first).await?;
    assert_eq!(j["TargetType"], "Image", "{j}");
    let listed = c
        .smc(
            "DescribeReplicationJobs",
            &p(&[("InstanceId.1", "i-target")]),
        )
        .await?;
    assert_eq!(listed["TotalCount"], 0, "{listed}");
    let none = c
        .smc("DescribeReplicationJobs", &p(&[("JobType", "2")]))
        .await?;
    assert_eq!(none["TotalCount"], 0, "{none}");
    expect_code(
        c,
        "DescribeReplicationJobs",
        &[("Status", "Sleeping")],
        "InvalidParameter",
    )
    .await?;
    let mut dup = base.to_vec();
    dup.push(("Name", "alpha"));
    expect_code(
        c,
        "CreateReplicationJob",
        &dup,
        "ReplicationJobName.Duplicate",
    )
    .await?;
    expect_code(
        c,
        "ModifyReplicationJobAttribute",
        &[("JobId", &first), ("Frequency", "2")],
        "InvalidParameter",
    )
    .await?;
    let related = c
        .smc("DescribeSourceServers", &p(&[("RelatedJobType.1", "0")]))
        .await?;
    assert_eq!(related["TotalCount"], 1, "{related}");

    // Running (throttled to 256 KiB/s, so it stays Running for a while): no Delete, no plain source delete.
    c.smc("StartReplicationJob", &p(&[("JobId", &first)]))
        .await?;
    wait_job(c, &first, &["Running"], WAIT).await?;
    expect_invalid_status(
        c,
        "DeleteReplicationJob",
        &[("JobId", &first)],
        "Running",
        "Ready, Stopped, InError, Waiting, Finished, Expired",
    )
    .await?;
    expect_code(
        c,
        "DeleteSourceServer",
        &[("SourceId", src)],
        "SourceServer.WithRunningReplicationJob",
    )
    .await?;
    c.smc("StopReplicationJob", &p(&[("JobId", &first)]))
        .await?;
    expect_code(
        c,
        "DeleteSourceServer",
        &[("SourceId", src)],
        "ReplicationJob.Related",
    )
    .await?;

    // Source attributes.
    c.smc(
        "ModifySourceServerAttribute",
        &p(&[
            ("SourceId", src),
            ("Name", "web-01"),
            ("Description", "the web server"),
        ]),
    )
    .await?;
    let v = c
        .smc("DescribeSourceServers", &p(&[("SourceId.1", src)]))
        .await?;
    let srv = &v["SourceServers"]["SourceServer"][0];
    assert_eq!(
        (srv["Name"].as_str(), srv["Description"].as_str()),
        (Some("web-01"), Some("the web server"))
    );
    expect_code(
        c,
        "ModifySourceServerAttribute",
        &[("SourceId", src), ("Name", "http://x")],
        "InvalidParameter",
    )
    .await?;

    // Delete the stopped job: Deleting, then purged; the source is free at once.
    c.smc("DeleteReplicationJob", &p(&[("JobId", &first)]))
        .await?;
    assert_eq!(source_state(c, src).await?, "Available");
    wait_purged(c, &first).await?;
    let second = create(c, &base).await?;
    assert_ne!(second, first);

    // Force: the source and its open job go; the agent's credentials stop working.
    c.smc(
        "DeleteSourceServer",
        &p(&[("SourceId", src), ("Force", "true")]),
    )
    .await?;
    wait_purged(c, &second).await?;
    let v = c.smc("DescribeSourceServers", &[]).await?;
    assert_eq!(v["TotalCount"], 0, "{v}");
    let agent_dir = s.agent.state_dir.clone();
    wait_for(
        WAIT,
        "the agent to be told its credentials are gone",
        || async {
            let log = std::fs::read_to_string(agent_dir.join("agent.log")).unwrap_or_default();
            Ok(log.contains("Unauthorized").then_some(()))
        },
    )
    .await?;
    Ok(())
}
