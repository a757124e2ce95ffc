//! The resource commands of the CLI against a real server: sources, jobs, images, snapshots,
//! instances, RAM and STS. Each test gets its own in-process `ferry_server` (fresh data directory,
//! loopback port 0) and drives the CLI through `ferry::run`, the binary's own code path. Where a
//! source must really replicate, the prebuilt `ferry-agent` binary runs against a raw disk image file
//! (build it first: `cargo build -p ferry -p ferry-agent`).
//!
//! Instance tests need `qemu-system-x86_64`; without it they print why and skip that part.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Harness, WAIT, code_from, items};

const MIB: usize = 1 << 20;

/// A source server registered by a real `ferry-agent` for a disk image of `size` random bytes.
async fn source(h: &Harness, seed: u8, size: usize) -> AgentProc {
    let code = code_from(&h.ok(&["activation-code", "create", "--count", "1"]).await);
    let dir = h.tmp.path().join(format!("agent-{seed}"));
    std::fs::create_dir_all(&dir).expect("agent dir");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, pseudo_random(seed, size)).expect("disk image");
    let state = dir.join("state");
    let fp = ferry_server::tls::fingerprint_of_pem(&h.server.state.ca_pem).expect("CA");
    let out = Command::new(agent_bin())
        .arg("activate")
        .arg("--state-dir")
        .arg(&state)
        .args(["--server", &h.server.endpoint(), "--code", &code])
        .args(["--ca-fingerprint", &fp])
        .arg("--disk-image")
        .arg(&disk)
        .output()
        .expect("run ferry-agent activate");
    assert!(
        out.status.success(),
        "ferry-agent activate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let saved: Value =
        serde_json::from_slice(&std::fs::read(state.join("agent.json")).expect("agent.json"))
            .expect("agent.json is JSON");
    let source_id = saved["credentials"]["source_id"]
        .as_str()
        .expect("source_id in agent.json")
        .to_owned();
    let log = std::fs::File::create(dir.join("agent.log")).expect("log");
    let child = Command::new(agent_bin())
        .arg("run")
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start ferry-agent");
    let agent = AgentProc { child, source_id };
    let id = agent.source_id.clone();
    h.wait_json(&["source", "list"], "the source to be Available", |v| {
        items(v, "SourceServers", "SourceServer")
            .iter()
            .any(|s| s["SourceId"] == id.as_str() && s["State"] == "Available")
            .then_some(())
    })
    .await;
    agent
}

/// A `ferry-agent run` this test started; killed when dropped.
struct AgentProc {
    child: Child,
    source_id: String,
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = dir.join("ferry-agent");
    assert!(
        bin.exists(),
        "{} is not built: run `cargo build -p ferry -p ferry-agent` first",
        bin.display()
    );
    bin
}

/// Incompressible bytes (xorshift), so that the disk really travels.
fn pseudo_random(seed: u8, len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn has_qemu() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_renamed_and_jobs_modified_cut_over_and_deleted() {
    let h = Harness::start().await;
    let agent = source(&h, 1, 4 * MIB).await;
    let sid = agent.source_id.as_str();

    let out = h
        .ok(&[
            "source",
            "rename",
            sid,
            "--name",
            "web-renamed",
            "--description",
            "wave 1",
        ])
        .await;
    assert!(out.contains("web-renamed"), "{out}");
    let v = h.json(&["source", "show", sid]).await;
    let src = &items(&v, "SourceServers", "SourceServer")[0];
    assert_eq!(
        (src["Name"].as_str(), src["Description"].as_str()),
        (Some("web-renamed"), Some("wave 1"))
    );

    let v = h
        .json(&[
            "job",
            "create",
            "--source",
            sid,
            "--name",
            "web-job",
            "--compress-level",
            "3",
            "--tag",
            "env=test",
            "--valid-until",
            "+30d",
        ])
        .await;
    let job = v["JobId"].as_str().expect("JobId").to_owned();
    let v = h.json(&["job", "show", &job]).await;
    let j = &items(&v, "ReplicationJobs", "ReplicationJob")[0];
    assert!(
        items(j, "Tags", "Tag")
            .iter()
            .any(|t| t["Key"] == "env" && t["Value"] == "test"),
        "the tag is missing: {j:#}"
    );
    assert!(
        j["ValidTime"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{j:#}"
    );

    let out = h
        .ok(&[
            "job",
            "modify",
            &job,
            "--name",
            "web-job-2",
            "--bandwidth-limit",
            "64M",
            "--description",
            "second try",
        ])
        .await;
    assert!(
        out.contains("name") && out.contains("transfer parameters"),
        "{out}"
    );
    let v = h.json(&["job", "show", &job]).await;
    let j = &items(&v, "ReplicationJobs", "ReplicationJob")[0];
    assert_eq!(j["Name"], "web-job-2");
    assert_eq!(j["Description"], "second try");
    let params: Value =
        serde_json::from_str(j["ReplicationParameters"].as_str().expect("parameters"))
            .expect("parameters are JSON");
    // The new limit is set and the compression level given at creation is kept.
    assert_eq!(params["bandwidth_limit_bps"], 64 << 20, "{params}");
    assert_eq!(params["compress_level"], 3, "{params}");

    let f = h.fails(&["job", "modify", &job]).await;
    assert!(
        format!("{:#}", f.err).contains("nothing to change"),
        "{:#}",
        f.err
    );

    // A one-off job in Ready cannot be cut over.
    let f = h
        .fails_with(&["job", "cutover", &job], "ReplicationJob.InvalidStatus")
        .await;
    // The hint names the job's status and the command that moves it on (Ready: start it).
    assert!(
        f.hint().contains("Ready") && f.hint().contains("ferry job start"),
        "{}",
        f.hint()
    );

    // The source has an open job: a plain delete is refused.
    let f = h.fails(&["source", "delete", sid]).await;
    let code = f.code().unwrap_or_default();
    assert!(
        [
            "SourceServer.WithRunningReplicationJob",
            "ReplicationJob.Related",
            "SourceServerState.Invalid"
        ]
        .contains(&code.as_str()),
        "{:#}",
        f.err
    );
    assert!(
        f.hint().contains("--force") || f.hint().contains("ferry source show"),
        "{}",
        f.hint()
    );

    let out = h.ok(&["job", "delete", &job]).await;
    assert!(out.contains(&job), "{out}");
    h.wait_json(&["job", "list"], "the job to be gone", |v| {
        (!items(v, "ReplicationJobs", "ReplicationJob")
            .iter()
            .any(|j| j["JobId"] == job.as_str() && j["Status"] != "Deleting"))
        .then_some(())
    })
    .await;

    h.ok(&["source", "delete", sid]).await;
    h.wait_json(&["source", "list"], "the source to be gone", |v| {
        (!items(v, "SourceServers", "SourceServer")
            .iter()
            .any(|s| s["SourceId"] == sid && s["State"] != "Deleting"))
        .then_some(())
    })
    .await;
    drop(agent);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_snapshots_and_instances_from_a_real_replication() {
    let h = Harness::start().await;
    let agent = source(&h, 2, 8 * MIB).await;
    let v = h
        .json(&["job", "create", "--source", &agent.source_id])
        .await;
    let job = v["JobId"].as_str().expect("JobId").to_owned();
    let out = h.ok(&["job", "start", &job, "--watch"]).await;
    assert!(out.contains("is Finished"), "{out}");
    let v = h.json(&["job", "show", &job]).await;
    let image = items(&v, "ReplicationJobs", "ReplicationJob")[0]["ImageId"]
        .as_str()
        .expect("the finished job names its image")
        .to_owned();

    // Snapshots: all, by image, by job.
    let all = h.json(&["snapshot", "list"]).await;
    let by_image = h.json(&["snapshot", "list", "--image", &image]).await;
    let by_job = h.json(&["snapshot", "list", "--job", &job]).await;
    let ids = |v: &Value| -> Vec<String> {
        items(v, "Snapshots", "Snapshot")
            .iter()
            .filter_map(|s| s["SnapshotId"].as_str().map(str::to_owned))
            .collect()
    };
    let snaps = ids(&by_image);
    assert_eq!(snaps.len(), 1, "one disk, one snapshot: {by_image:#}");
    assert_eq!(ids(&by_job), snaps);
    assert!(ids(&all).contains(&snaps[0]), "{all:#}");
    let table = h.ok(&["snapshot", "list", "--image", &image]).await;
    assert!(
        table.starts_with("ID ") && table.contains(&snaps[0]),
        "{table}"
    );
    // A missing image is an error, not an empty list.
    let f = h
        .fails(&["snapshot", "list", "--image", "m-doesnotexist"])
        .await;
    assert!(
        format!("{:#}", f.err).contains("does not exist"),
        "{:#}",
        f.err
    );

    // A new image from the snapshot.
    let v = h
        .json(&[
            "image",
            "create",
            "--snapshot",
            &snaps[0],
            "--name",
            "web-copy",
        ])
        .await;
    let copy = v["ImageId"].as_str().expect("ImageId").to_owned();
    h.wait_json(
        &["image", "show", &copy],
        "the new image to be Available",
        |v| {
            let i = &items(v, "Images", "Image")[0];
            assert_ne!(i["Status"], "CreateFailed", "{i:#}");
            (i["Status"] == "Available").then_some(())
        },
    )
    .await;
    let f = h
        .fails_with(
            &[
                "image",
                "create",
                "--snapshot",
                "sp-doesnotexist",
                "--name",
                "nope",
            ],
            "InvalidSnapshotId.NotFound",
        )
        .await;
    assert!(f.hint().contains("ferry snapshot list"), "{}", f.hint());

    // A snapshot an image uses is kept unless forced.
    let f = h
        .fails_with(&["snapshot", "delete", &snaps[0]], "SnapshotCreatedImage")
        .await;
    assert!(f.hint().contains("--force"), "{}", f.hint());

    if has_qemu() {
        let v = h
            .json(&["instance", "run", "--image", &copy, "--name", "web-test"])
            .await;
        let inst = items(&v, "InstanceIdSets", "InstanceIdSet")[0]
            .as_str()
            .expect("an instance ID")
            .to_owned();
        h.wait_json(&["instance", "show", &inst], "the instance to run", |v| {
            (items(v, "Instances", "Instance")[0]["Status"] == "Running").then_some(())
        })
        .await;
        // A disk of random bytes boots nothing, but the firmware says so on the serial console.
        let deadline = Instant::now() + WAIT;
        loop {
            let out = h.ok(&["instance", "console", &inst]).await;
            if out.contains("Boot") || out.contains("boot") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no boot text on the console:\n{out}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        h.fails_with(&["image", "delete", &copy], "ImageUsingByInstance")
            .await;
        h.fails_with(&["instance", "start", &inst], "IncorrectInstanceStatus")
            .await;
        h.ok(&["instance", "stop", &inst, "--force"]).await;
        h.wait_json(&["instance", "show", &inst], "the instance to stop", |v| {
            (items(v, "Instances", "Instance")[0]["Status"] == "Stopped").then_some(())
        })
        .await;
        let list = h.ok(&["instance", "list"]).await;
        assert!(list.contains(&inst) && list.contains("Stopped"), "{list}");
        h.ok(&["instance", "delete", &inst]).await;
        let list = h.ok(&["instance", "list"]).await;
        assert!(list.starts_with("No instances"), "{list}");
        let v = h.json(&["instance", "create", "--image", &copy]).await;
        let created = v["InstanceId"].as_str().expect("InstanceId").to_owned();
        let v = h.json(&["instance", "show", &created]).await;
        assert_eq!(items(&v, "Instances", "Instance")[0]["Status"], "Stopped");
        h.ok(&["instance", "delete", &created]).await;
    } else {
        eprintln!("qemu-system-x86_64 is not installed: skipping the instance commands");
    }
    h.fails_with(
        &["instance", "console", "i-doesnotexist"],
        "InvalidInstanceId.NotFound",
    )
    .await;

    h.ok(&["image", "delete", &copy]).await;
    let f = h.fails(&["image", "show", &copy]).await;
    assert!(
        format!("{:#}", f.err).contains("does not exist"),
        "{:#}",
        f.err
    );
    h.ok(&["snapshot", "delete", &snaps[0], "--force"]).await;
    let v = h.json(&["snapshot", "list", "--job", &job]).await;
    assert!(!ids(&v).contains(&snaps[0]), "{v:#}");
    drop(agent);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_job_is_cut_over_and_watched_until_finished() {
    let h = Harness::start().await;
    let agent = source(&h, 3, 4 * MIB).await;
    let v = h
        .json(&[
            "job",
            "create",
            "--source",
            &agent.source_id,
            "--incremental",
            "--frequency",
            "24",
            "--keep",
            "2",
        ])
        .await;
    let job = v["JobId"].as_str().expect("JobId").to_owned();
    let out = h.ok(&["job", "start", &job, "--watch"]).await;
    assert!(out.contains("is Waiting"), "{out}");
    // Only the schedule may change while Waiting; the new value is shown.
    h.ok(&["job", "modify", &job, "--frequency", "12"]).await;
    let v = h.json(&["job", "show", &job]).await;
    assert_eq!(
        items(&v, "ReplicationJobs", "ReplicationJob")[0]["Frequency"],
        12
    );
    // A cutover watched to its end: a last sync, then Finished (not the Waiting it started from).
    let out = h
        .ok(&["job", "cutover", &job, "--sync-data", "--watch"])
        .await;
    assert!(
        out.contains("one last sync") && out.contains("is Finished"),
        "{out}"
    );
    h.fails_with(&["job", "cutover", &job], "ReplicationJob.InvalidStatus")
        .await;
    drop(agent);
    h.stop().await;
}

/// `args` signed with another access key than the root's.
fn signed_by<'a>(key: &'a str, secret: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--access-key-id", key, "--access-key-secret", secret];
    all.extend_from_slice(args);
    all
}

const READ_SOURCES: &str = r#"{"Version":"1","Statement":[
  {"Effect":"Allow","Action":"smc:DescribeSourceServers","Resource":"*"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ram_users_keys_and_policies_grant_exactly_what_they_say() {
    let h = Harness::start().await;
    let dir = h.tmp.path();
    h.ok(&["ram", "user", "create", "alice", "--display-name", "Alice"])
        .await;
    let v = h.json(&["ram", "user", "list"]).await;
    assert!(
        items(&v, "Users", "User")
            .iter()
            .any(|u| u["UserName"] == "alice"),
        "{v:#}"
    );

    let out = h.ok(&["ram", "key", "create", "--user", "alice"]).await;
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in:\n{out}"))
    };
    let (key, secret) = (field("AccessKeyId:"), field("AccessKeySecret:"));
    assert!(out.contains("shown only now"), "{out}");
    // A new user may do nothing.
    let args = signed_by(&key, &secret, &["source", "list"]);
    let f = h.fails_with(&args, "Forbidden.RAM").await;
    assert!(
        f.hint().contains("smc:DescribeSourceServers"),
        "{}",
        f.hint()
    );

    // A broken document never reaches the server.
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"Version\": \"1\",\n \"Statement\": [}").expect("write");
    let f = h
        .fails(&[
            "ram",
            "policy",
            "create",
            "--name",
            "Broken",
            "--document",
            bad.to_str().expect("path"),
        ])
        .await;
    assert!(f.code().is_none(), "{:#}", f.err);
    assert!(format!("{:#}", f.err).contains("line 2"), "{:#}", f.err);

    let good = dir.join("read-sources.json");
    std::fs::write(&good, READ_SOURCES).expect("write");
    h.ok(&[
        "ram",
        "policy",
        "create",
        "--name",
        "ReadSources",
        "--document",
        good.to_str().expect("path"),
    ])
    .await;
    let out = h.ok(&["ram", "policy", "show", "ReadSources"]).await;
    assert!(
        out.contains("Custom") && out.contains("smc:DescribeSourceServers"),
        "{out}"
    );
    let v = h.json(&["ram", "policy", "list", "--type", "Custom"]).await;
    assert!(
        items(&v, "Policies", "Policy")
            .iter()
            .all(|p| p["PolicyType"] == "Custom"),
        "{v:#}"
    );
    assert!(
        items(&v, "Policies", "Policy")
            .iter()
            .any(|p| p["PolicyName"] == "ReadSources"),
        "{v:#}"
    );
    // The type is found by itself: Custom for ours, System for a system policy.
    let out = h
        .ok(&["ram", "policy", "attach", "ReadSources", "--user", "alice"])
        .await;
    assert!(out.contains("Custom policy ReadSources"), "{out}");
    let out = h
        .ok(&["ram", "policy", "show", "AliyunSMCReadOnlyAccess"])
        .await;
    assert!(out.contains("System"), "{out}");

    let out = h.ok(&args).await;
    assert!(out.starts_with("No source servers"), "{out}");
    h.fails_with(
        &signed_by(&key, &secret, &["activation-code", "create"]),
        "Forbidden.RAM",
    )
    .await;

    let out = h.ok(&["ram", "user", "show", "alice"]).await;
    assert!(out.contains(&key) && out.contains("ReadSources"), "{out}");

    // A disabled key is refused until enabled again.
    h.ok(&["ram", "key", "disable", &key, "--user", "alice"])
        .await;
    h.fails_with(&args, "InvalidAccessKeyId.Inactive").await;
    h.ok(&["ram", "key", "enable", &key, "--user", "alice"])
        .await;
    h.ok(&args).await;

    // Deleting a user with keys and policies is refused; detached, it is denied again at once.
    let f = h.fails(&["ram", "user", "delete", "alice"]).await;
    assert!(
        f.code()
            .is_some_and(|c| c.starts_with("DeleteConflict.User")),
        "{:#}",
        f.err
    );
    h.ok(&["ram", "policy", "detach", "ReadSources", "--user", "alice"])
        .await;
    h.fails_with(&args, "Forbidden.RAM").await;
    h.ok(&["ram", "key", "delete", &key, "--user", "alice"])
        .await;
    let v = h.json(&["ram", "key", "list", "--user", "alice"]).await;
    assert!(items(&v, "AccessKeys", "AccessKey").is_empty(), "{v:#}");
    h.ok(&["ram", "user", "delete", "alice"]).await;
    h.ok(&["ram", "policy", "delete", "ReadSources"]).await;
    let f = h
        .fails_with(&["ram", "user", "show", "alice"], "EntityNotExist.User")
        .await;
    assert!(f.hint().contains("ferry ram user list"), "{}", f.hint());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assumed_role_credentials_are_saved_as_a_profile_and_need_their_token() {
    let h = Harness::start().await;
    let account = h.server.state.account_id.clone();
    let trust = h.tmp.path().join("trust.json");
    std::fs::write(
        &trust,
        format!(
            r#"{{"Version":"1","Statement":[{{"Effect":"Allow","Action":"sts:AssumeRole",
               "Principal":{{"RAM":["acs:ram::{account}:root"]}}}}]}}"#
        ),
    )
    .expect("write");
    let trust = trust.to_str().expect("path");
    let out = h
        .ok(&[
            "ram",
            "role",
            "create",
            "--name",
            "auditor",
            "--trust",
            trust,
            "--max-session",
            "3600",
        ])
        .await;
    assert!(out.contains("auditor"), "{out}");
    h.ok(&[
        "ram",
        "policy",
        "attach",
        "AliyunSMCReadOnlyAccess",
        "--role",
        "auditor",
        "--type",
        "system",
    ])
    .await;
    let v = h.json(&["ram", "role", "list"]).await;
    let arn = items(&v, "Roles", "Role")
        .iter()
        .find(|r| r["RoleName"] == "auditor")
        .and_then(|r| r["Arn"].as_str())
        .unwrap_or_else(|| panic!("no auditor role in {v:#}"))
        .to_owned();

    let out = h
        .ok(&[
            "ram",
            "assume-role",
            "--role-arn",
            &arn,
            "--session",
            "nightly",
            "--duration",
            "900",
            "--save-profile",
            "audit",
        ])
        .await;
    assert!(out.contains("profile \"audit\""), "{out}");
    assert!(
        !out.contains("SecurityToken:"),
        "a saved token is not printed: {out}"
    );
    let file: Value = serde_json::from_slice(
        &std::fs::read(h.home.join(".ferry/config.json")).expect("profile file"),
    )
    .expect("JSON");
    assert_eq!(file["version"], 1);
    let prof = file["profiles"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "audit"))
        .unwrap_or_else(|| panic!("no audit profile: {file:#}"))
        .clone();
    let key = prof["access_key_id"].as_str().expect("key").to_owned();
    let secret = prof["access_key_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert!(
        prof["security_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{prof:#}"
    );

    // The role reads, and may not write.
    let out = h.ok(&["--profile", "audit", "source", "list"]).await;
    assert!(out.starts_with("No source servers"), "{out}");
    h.fails_with(
        &["--profile", "audit", "activation-code", "create"],
        "Forbidden.RAM",
    )
    .await;

    // The temporary key without its token is refused.
    let f = h
        .fails(&[
            "--access-key-id",
            &key,
            "--access-key-secret",
            &secret,
            "source",
            "list",
        ])
        .await;
    assert!(
        f.code()
            .is_some_and(|c| c.starts_with("InvalidSecurityToken")),
        "{:#}",
        f.err
    );
    assert!(f.hint().contains("security token"), "{}", f.hint());
    // ... and accepted with it from the command line.
    let token = prof["security_token"].as_str().expect("token").to_owned();
    h.ok(&[
        "--access-key-id",
        &key,
        "--access-key-secret",
        &secret,
        "--security-token",
        &token,
        "source",
        "list",
    ])
    .await;

    // Printed credentials carry all three parts.
    let out = h
        .ok(&["ram", "assume-role", "--role-arn", &arn, "--session", "s2"])
        .await;
    for want in [
        "AccessKeyId:",
        "AccessKeySecret:",
        "SecurityToken:",
        "Expiration:",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    h.ok(&[
        "ram",
        "policy",
        "detach",
        "AliyunSMCReadOnlyAccess",
        "--role",
        "auditor",
        "--type",
        "system",
    ])
    .await;
    h.ok(&["ram", "role", "delete", "auditor"]).await;
    let v = h.json(&["ram", "role", "list"]).await;
    assert!(
        !items(&v, "Roles", "Role")
            .iter()
            .any(|r| r["RoleName"] == "auditor"),
        "{v:#}"
    );
    h.stop().await;
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete"),
        ("zsh", "#compdef ferry"),
        ("fish", "complete -c ferry"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["completions", shell])
            .env_remove("FERRY_ENDPOINT")
            .output()
            .expect("run ferry completions");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(marker), "{shell}: no {marker:?}");
        // Every resource command is completed.
        for cmd in ["instance", "snapshot", "ram", "assume-role"] {
            assert!(text.contains(cmd), "{shell}: no {cmd}");
        }
    }
}
