//! Whole-stack tests of the image pipeline after verification (docs/replication-jobs.md, "Adaptation and
//! validation"; docs/cutover.md): disks with no operating system replicate and their image says why it was
//! not validated; the Ferry-only parameters are checked; the source's pre-cutover hooks run before its disks
//! are read (a failing hook fails the final run with its output and copies nothing; a succeeding one's
//! change is in the final image); a finished job's test instances are deleted.
//!
//! Real `ferry server` and `ferry-agent` processes on loopback, replicating small disk image files (random
//! bytes, or a real ext4 filesystem written with debugfs). Guest adaptation needs root: run as root
//! (`scripts/test.sh` does). Booting real guests is the lab's end-to-end suite.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use ferry::client::{Client, ClientError};
use ferry_test_utils::disk::random_bytes;
use ferry_test_utils::stack::{OneSource, export, job, p, start_job, wait_job};
use ferry_test_utils::wait_for;
use serde_json::Value;

const MIB: usize = 1 << 20;
const WAIT: Duration = Duration::from_secs(120);

async fn ecs(client: &Client, action: &str, params: &[(&str, &str)]) -> anyhow::Result<Value> {
    let mut all = p(&[("RegionId", "local")]);
    all.extend(p(params));
    Ok(client.ecs(action, &all).await?)
}

/// The API error (code, message) a call must fail with.
async fn api_err(
    client: &Client,
    product: &str,
    action: &str,
    params: &[(&str, &str)],
) -> anyhow::Result<(String, String)> {
    let mut all = p(params);
    if product == "ecs" {
        all.extend(p(&[("RegionId", "local")]));
    }
    let r = if product == "ecs" {
        client.ecs(action, &all).await
    } else {
        client.smc(action, &all).await
    };
    match r {
        Ok(v) => anyhow::bail!("{action} {params:?} should have failed: {v}"),
        Err(ClientError::Api { code, message, .. }) => Ok((code, message)),
        Err(e) => Err(e.into()),
    }
}

async fn image(client: &Client, id: &str) -> anyhow::Result<Value> {
    let v = ecs(
        client,
        "DescribeImages",
        &[("ImageId", id), ("Status", "ALL")],
    )
    .await?;
    v["Images"]["Image"]
        .get(0)
        .cloned()
        .with_context(|| format!("image {id} not listed: {v}"))
}

/// Waits until an image's validation has ended (Passed, Failed or Skipped).
async fn wait_validation_ended(client: &Client, id: &str) -> anyhow::Result<Value> {
    wait_for(WAIT, &format!("image {id}'s validation to end"), || async {
        let i = image(client, id).await?;
        Ok(matches!(
            i["ValidationStatus"].as_str(),
            Some("Passed" | "Failed" | "Skipped")
        )
        .then_some(i))
    })
    .await
}

fn random_disk(dir: &Path, seed: u64, mib: usize) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("disk-{seed}.img"));
    std::fs::write(&path, random_bytes(seed, mib * MIB))?;
    Ok(path)
}

fn run(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {cmd}"))?;
    ensure!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write_hook(dir: &Path, name: &str, script: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn runs(j: &Value) -> Vec<Value> {
    j["ReplicationJobRuns"]["ReplicationJobRun"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn disks_without_an_os_replicate_and_their_validation_is_skipped() -> anyhow::Result<()> {
    if !ferry_test_utils::is_root() {
        eprintln!("skipped: guest adaptation needs root (loop devices and mounts)");
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let disk = random_disk(tmp.path(), 41, 4)?;
    let s = OneSource::start(
        &tmp.path().join("server"),
        &tmp.path().join("agent"),
        &[&disk],
    )
    .await?;
    let c = &s.client;
    let job_id = start_job(c, &s.agent.source_id, &[]).await?;
    let j = wait_job(c, &job_id, &["Finished"], WAIT).await?;
    let image_id = j["ImageId"].as_str().context("ImageId")?.to_owned();
    let img = image(c, &image_id).await?;
    assert_eq!(img["Status"], "Available", "{img}");
    assert_eq!(img["ValidationStatus"], "Skipped", "{img}");
    let why = img["ValidationStatusInfo"].as_str().unwrap_or_default();
    assert!(why.contains("no operating system found"), "{img}");
    assert_eq!(img["AdaptationReport"]["Status"], "NotAdapted", "{img}");
    assert!(
        img.get("ValidationReport").is_none(),
        "nothing was booted: {img}"
    );
    // The copy is untouched: no adapted digests, and the built disk still matches its snapshot.
    assert_eq!(
        img["AdaptationReport"]["AdaptedDigests"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "{img}"
    );
    let run = &runs(&j)[0];
    assert_eq!(run["ValidationStatus"], "Skipped", "{j}");
    assert_eq!(run["RunStatus"], "Succeeded", "{j}");
    assert_eq!(j["ValidationEnabled"], true, "{j}");
    assert_eq!(j["NetworkMode"], "Dhcp", "{j}");
    assert!(j.get("ErrorCode").is_none(), "{j}");
    let files = export(c, &image_id, "raw").await?;
    ensure!(
        std::fs::read(&files[0])? == std::fs::read(&disk)?,
        "the exported image is the source disk, byte for byte"
    );
    // The CLI's view of it.
    let out = s.server.cli(&["image", "validation", &image_id])?;
    assert!(out.contains("validation Skipped"), "{out}");
    assert!(out.contains("no operating system found"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ferry_only_parameters_are_checked() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let disk = random_disk(tmp.path(), 42, 2)?;
    let s = OneSource::start(
        &tmp.path().join("server"),
        &tmp.path().join("agent"),
        &[&disk],
    )
    .await?;
    let c = &s.client;
    let src = s.agent.source_id.as_str();
    let base = [("SourceId", src), ("RegionId", "local")];
    for (param, value, code, mentions) in [
        ("NetworkMode", "Static", "InvalidParameter", "KeepStatic"),
        (
            "ValidationChecks",
            "{not json",
            "InvalidParameter",
            "ValidationChecks",
        ),
        (
            "ValidationChecks",
            r#"{"tcp":"22"}"#,
            "InvalidParameter",
            "ValidationChecks",
        ),
        (
            "ValidationInstanceType",
            "ecs.huge",
            "InvalidParameter",
            "ecs.t1.small",
        ),
        (
            "ValidationEnabled",
            "maybe",
            "InvalidParameter",
            "ValidationEnabled",
        ),
    ] {
        let mut params = base.to_vec();
        params.push((param, value));
        let (got, message) = api_err(c, "smc", "CreateReplicationJob", &params).await?;
        assert!(
            got.starts_with(code) && message.contains(mentions),
            "{param}={value}: {got} {message}"
        );
    }
    // Good values are kept, and shown by DescribeReplicationJobs.
    let checks = r#"{"tcp":[22],"http":[{"port":80,"path":"/","expect_status":200}]}"#;
    let v = c
        .smc(
            "CreateReplicationJob",
            &p(&[
                ("SourceId", src),
                ("RegionId", "local"),
                ("NetworkMode", "keepstatic"),
                ("ValidationChecks", checks),
                ("ValidationInstanceType", "ecs.t1.xsmall"),
                ("ValidationEnabled", "false"),
            ]),
        )
        .await?;
    let job_id = v["JobId"].as_str().context("JobId")?.to_owned();
    let j = job(c, &job_id).await?;
    assert_eq!(j["NetworkMode"], "KeepStatic", "{j}");
    assert_eq!(j["ValidationEnabled"], false, "{j}");
    assert_eq!(j["ValidationInstanceType"], "ecs.t1.xsmall", "{j}");
    let kept: Value = serde_json::from_str(j["ValidationChecks"].as_str().context("checks")?)?;
    assert_eq!(kept["tcp"][0], 22, "{j}");
    let (code, _) = api_err(
        c,
        "smc",
        "ModifyReplicationJobAttribute",
        &[("JobId", &job_id), ("NetworkMode", "none")],
    )
    .await?;
    assert_eq!(code, "InvalidParameter");
    c.smc(
        "ModifyReplicationJobAttribute",
        &p(&[
            ("JobId", &job_id),
            ("NetworkMode", "DHCP"),
            ("ValidationEnabled", "true"),
        ]),
    )
    .await?;
    let j = job(c, &job_id).await?;
    assert_eq!(
        (j["NetworkMode"].as_str(), j["ValidationEnabled"].as_bool()),
        (Some("Dhcp"), Some(true)),
        "{j}"
    );
    c.smc("StartReplicationJob", &p(&[("JobId", &job_id)]))
        .await?;
    let j = wait_job(c, &job_id, &["Finished"], WAIT).await?;
    let image_id = j["ImageId"].as_str().context("ImageId")?.to_owned();
    let img = wait_validation_ended(c, &image_id).await?;
    assert_eq!(img["ValidationStatus"], "Skipped", "{img}");

    // CreateImage (a rebuild from the snapshots) checks the same parameters.
    let snap = img["DiskDeviceMappings"]["DiskDeviceMapping"][0]["SnapshotId"]
        .as_str()
        .context("snapshot")?
        .to_owned();
    for (param, value) in [
        ("NetworkMode", "Static"),
        ("ValidationChecks", "[1,2]"),
        ("ValidationInstanceType", "t1"),
    ] {
        let (code, message) = api_err(
            c,
            "ecs",
            "CreateImage",
            &[("SnapshotId", &snap), (param, value)],
        )
        .await?;
        assert!(
            code == "InvalidParameter" && message.contains(param),
            "{param}={value}: {code} {message}"
        );
    }
    // `ferry image rebuild`: a new image from the same snapshots, re-adapted with the new options.
    let out = s.server.cli(&[
        "image",
        "rebuild",
        &image_id,
        "--network-mode",
        "keep-static",
    ])?;
    let rebuilt = out
        .split_whitespace()
        .find(|w| w.starts_with("m-") && *w != image_id)
        .context("the rebuilt image's ID")?
        .to_owned();
    let r = wait_validation_ended(c, &rebuilt).await?;
    assert_eq!(r["Status"], "Available", "{r}");
    assert_eq!(
        r["AdaptationReport"]["Options"]["network_mode"], "KeepStatic",
        "{r}"
    );
    assert_eq!(
        r["DiskDeviceMappings"]["DiskDeviceMapping"][0]["SnapshotId"], snap,
        "rebuilt from the same snapshot: {r}"
    );

    // PortForward.N on CreateInstance: checked, shown, and one instance per host port.
    for bad in ["80:22", "x:22", "8022", "8022:0", "70000:22"] {
        let (code, message) = api_err(
            c,
            "ecs",
            "CreateInstance",
            &[("ImageId", &image_id), ("PortForward.1", bad)],
        )
        .await?;
        assert!(
            code == "InvalidParameter" && message.contains("PortForward"),
            "{bad}: {code} {message}"
        );
    }
    let host_port = ferry_test_utils::free_port().to_string();
    let rule = format!("{host_port}:22");
    let first = ecs(
        c,
        "CreateInstance",
        &[("ImageId", &image_id), ("PortForward.1", &rule)],
    )
    .await?;
    let first = first["InstanceId"]
        .as_str()
        .context("InstanceId")?
        .to_owned();
    let ids = format!(r#"["{first}"]"#);
    let v = ecs(c, "DescribeInstances", &[("InstanceIds", &ids)]).await?;
    let fwd = &v["Instances"]["Instance"][0]["PortForwards"][0];
    assert_eq!(
        (fwd["HostPort"].as_u64(), fwd["GuestPort"].as_u64()),
        (host_port.parse().ok(), Some(22)),
        "{v}"
    );
    let (code, message) = api_err(
        c,
        "ecs",
        "CreateInstance",
        &[("ImageId", &image_id), ("PortForward.1", &rule)],
    )
    .await?;
    assert!(
        code == "InvalidPortForward.Conflict" && message.contains(&host_port),
        "{code} {message}"
    );
    ecs(c, "DeleteInstance", &[("InstanceId", &first)]).await?;
    let second = ecs(
        c,
        "CreateInstance",
        &[("ImageId", &image_id), ("PortForward.1", &rule)],
    )
    .await?;
    let second = second["InstanceId"]
        .as_str()
        .context("InstanceId")?
        .to_owned();
    ecs(c, "DeleteInstance", &[("InstanceId", &second)]).await?;
    Ok(())
}

/// Reads a file from an ext4 filesystem image (whole disk) with debugfs.
fn ext4_cat(image: &Path, file: &str) -> anyhow::Result<String> {
    let path = image.to_str().context("path")?;
    run("debugfs", &["-R", &format!("cat {file}"), path])
}

#[tokio::test(flavor = "multi_thread")]
async fn pre_cutover_hooks_run_before_the_final_sync_reads_the_disks() -> anyhow::Result<()> {
    if !ferry_test_utils::is_root() {
        eprintln!("skipped: guest adaptation needs root (loop devices and mounts)");
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    // A real ext4 filesystem as the source's disk (no OS on it: nothing to boot).
    let disk = tmp.path().join("source.img");
    std::fs::write(&disk, vec![0u8; 16 * MIB])?;
    let disk_str = disk.to_str().context("path")?.to_owned();
    run("mkfs.ext4", &["-q", "-F", &disk_str])?;
    let hooks = tmp.path().join("hooks");
    let hook_dir = hooks.join("pre-cutover.d");
    let mut s = OneSource::start(
        &tmp.path().join("server"),
        &tmp.path().join("agent"),
        &[&disk],
    )
    .await?;
    s.restart_agent_with_hooks(&hooks)?;
    let c = &s.client;
    let job_id = start_job(
        c,
        &s.agent.source_id,
        &[
            ("RunOnce", "false"),
            ("Frequency", "24"),
            ("MaxNumberOfImageToKeep", "3"),
        ],
    )
    .await?;
    let j = wait_job(c, &job_id, &["Waiting"], WAIT).await?;
    let first_image = j["ImageId"].as_str().context("ImageId")?.to_owned();
    // A test instance from the first run while the job goes on (kept Stopped: nothing to boot here).
    let test_instance = ecs(c, "CreateInstance", &[("ImageId", &first_image)]).await?;
    let test_instance = test_instance["InstanceId"]
        .as_str()
        .context("InstanceId")?
        .to_owned();
    // `ferry job test-instance` names the runs it can launch from.
    let err = s
        .server
        .cli(&["job", "test-instance", &job_id, "--run", "9"])
        .err()
        .context("there is no run 9")?;
    assert!(format!("{err:#}").contains("there is no run 9"), "{err:#}");
    // No hook ran for an ordinary run.
    assert!(
        !s.agent.log().contains("pre-cutover hook"),
        "{}",
        s.agent.log()
    );

    let snapshots = |v: Value| v["TotalCount"].as_u64().unwrap_or(0);
    let before = snapshots(ecs(c, "DescribeSnapshots", &[]).await?);
    write_hook(
        &hook_dir,
        "10-stop-app",
        "#!/bin/sh\necho 'stopping app.service'\necho 'app.service: permission denied' >&2\nexit 3\n",
    )?;
    c.smc(
        "CutOverReplicationJob",
        &p(&[("JobId", &job_id), ("SyncData", "true")]),
    )
    .await?;
    let j = wait_for(WAIT, "the cutover's run to fail on its hook", || async {
        let j = job(c, &job_id).await?;
        Ok((j["Status"] == "InError").then_some(j))
    })
    .await?;
    assert_eq!(j["ErrorCode"], "Hook.Failed", "{j}");
    let info = j["StatusInfo"].as_str().unwrap_or_default();
    for want in [
        "10-stop-app",
        "exit code 3",
        "permission denied",
        "nothing was copied",
    ] {
        assert!(info.contains(want), "{want:?} not in {info:?}");
    }
    let all = runs(&j);
    assert_eq!(
        all.last().map(|r| r["RunStatus"].clone()),
        Some("Failed".into()),
        "{j}"
    );
    assert_eq!(
        snapshots(ecs(c, "DescribeSnapshots", &[]).await?),
        before,
        "a failed hook copies nothing"
    );

    // A hook that succeeds: it writes a file into the source's filesystem before the disks are read.
    std::fs::remove_file(hook_dir.join("10-stop-app"))?;
    let marker = tmp.path().join("marker.txt");
    std::fs::write(&marker, "written by the pre-cutover hook\n")?;
    write_hook(
        &hook_dir,
        "20-flush",
        &format!(
            "#!/bin/sh\nset -e\ndebugfs -w -R 'write {} /marker.txt' {disk_str}\necho flushed\n",
            marker.display()
        ),
    )?;
    c.smc("StartReplicationJob", &p(&[("JobId", &job_id)]))
        .await?;
    let j = wait_job(c, &job_id, &["Finished"], WAIT).await?;
    let final_image = j["ImageId"].as_str().context("ImageId")?.to_owned();
    ensure!(
        final_image != first_image,
        "the final sync built a new image"
    );
    let files = export(c, &final_image, "raw").await?;
    assert_eq!(
        ext4_cat(&files[0], "/marker.txt")?,
        "written by the pre-cutover hook\n",
        "the hook ran before the disk was read"
    );
    let first_files = export(c, &first_image, "raw").await?;
    assert_eq!(
        ext4_cat(&first_files[0], "/marker.txt")?.trim(),
        "",
        "the earlier image has no marker"
    );
    let img = image(c, &final_image).await?;
    assert_eq!(img["ValidationStatus"], "Skipped", "{img}");
    // Finalize: the job's test instance is gone.
    let ids = format!(r#"["{test_instance}"]"#);
    wait_for(WAIT, "the test instance to be deleted", || async {
        let v = ecs(c, "DescribeInstances", &[("InstanceIds", &ids)]).await?;
        Ok((v["TotalCount"] == 0).then_some(()))
    })
    .await?;
    Ok(())
}
