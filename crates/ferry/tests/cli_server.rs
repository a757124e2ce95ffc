//! The CLI against a real server: an in-process `ferry_server` on a loopback port with a fresh data
//! directory per test, driven through `ferry::run` (the same code path as the binary) and, where the
//! exit code and the process boundary matter, through the built `ferry` binary itself.
//!
//! Where a test needs a source server, it plays the agent's part over the real agent protocol
//! (activate, heartbeat, progress, finish); no disk is copied.

mod support;

use std::io::{BufRead as _, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;
use ferry::{Cli, ClientError, Io};
use ferry_types::inventory::{
    AddrConfig, Disk, DiskSource, Filesystem, Inventory, NetInterface, Partition,
    PartitionTableType, Precheck,
};
use ferry_types::protocol::{RunFinish, RunProgress};
use serde_json::Value;
use support::{Agent, Harness, code_from, printed_id};

/// web-01 with one partitioned 2 GiB disk and one DHCP interface.
fn inventory() -> Inventory {
    Inventory {
        disks: vec![Disk {
            index: 0,
            path: "/dev/vda".into(),
            source: DiskSource::BlockDevice,
            size_bytes: 2 << 30,
            model: Some("QEMU HARDDISK".into()),
            partition_table: Some(PartitionTableType::Mbr),
            table_uuid: Some("1234abcd".into()),
            partitions: vec![Partition {
                number: 1,
                start_bytes: 1 << 20,
                size_bytes: (2 << 30) - (1 << 20),
                type_id: "83".into(),
                bootable: true,
                part_uuid: Some("1234abcd-01".into()),
                filesystem: Some(Filesystem {
                    fs_type: "ext4".into(),
                    uuid: Some("5f1c0a3e-0000-4000-8000-000000000001".into()),
                    label: None,
                    mount_point: Some("/".into()),
                }),
            }],
            filesystem: None,
        }],
        network: vec![NetInterface {
            name: "ens3".into(),
            mac: Some("52:54:00:aa:bb:cc".into()),
            addresses: vec!["192.0.2.10/24".into()],
            mtu: Some(1500),
            config: AddrConfig::Dhcp,
            config_source: Some("/etc/network/interfaces".into()),
        }],
        dns: vec!["192.0.2.1".into()],
        gateway: Some("192.0.2.1".into()),
        ..support::inventory("web-01")
    }
}

/// Activates a played agent for web-01, reporting one passed and one failed precheck.
async fn activate(h: &Harness, code: &str) -> Agent {
    let prechecks = vec![
        Precheck {
            name: "root-filesystem".into(),
            passed: true,
            reason: "ext4 on /".into(),
        },
        Precheck {
            name: "free-space".into(),
            passed: false,
            reason: "/ has 2% free: free at least 1 GiB".into(),
        },
    ];
    Agent::activate(h, h.https(), code, inventory(), prechecks).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_codes_are_created_listed_disabled_and_deleted() {
    let h = Harness::start().await;
    let out = h
        .ok(&[
            "activation-code",
            "create",
            "--name",
            "wave-1",
            "--count",
            "3",
        ])
        .await;
    let code = code_from(&out);
    assert_eq!(code.len(), 32, "{out}");
    let want = format!(
        "ferry-agent activate --server {} --code {code} --ca-fingerprint {}",
        h.endpoint(),
        h.server.state.ca_fingerprint
    );
    assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("Activation code ID:"))
        .map(|s| s.trim().to_owned())
        .expect("ID line");
    assert!(id.starts_with("at-"), "{id}");

    let table = h.ok(&["activation-code", "list"]).await;
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{table}"));
    assert!(
        row.contains("wave-1") && row.contains("unactivated") && row.contains("0/3"),
        "{row}"
    );
    assert!(table.starts_with("ID "), "{table}");

    let listed = h.json(&["activation-code", "list"]).await;
    let tokens = listed["AccessTokens"]["AccessToken"]
        .as_array()
        .expect("a list");
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["Name"], "wave-1");
    assert_eq!(tokens[0]["Count"], "3");

    h.ok(&["activation-code", "disable", &id]).await;
    let listed = h.json(&["activation-code", "list"]).await;
    assert_eq!(
        listed["AccessTokens"]["AccessToken"][0]["Status"],
        "expired"
    );

    h.ok(&["activation-code", "delete", &id]).await;
    let out = h.ok(&["activation-code", "list"]).await;
    assert!(out.starts_with("No activation codes"), "{out}");
    let (result, _) = h.cli(&["activation-code", "delete", &id]).await;
    let err = result.expect_err("deleting twice fails");
    let client_err = err.downcast_ref::<ClientError>().expect("an API error");
    assert_eq!(client_err.api_code(), Some("InvalidAccessTokenId.NotFound"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_server_lists_nothing() {
    let h = Harness::start().await;
    let out = h.ok(&["job", "list"]).await;
    assert!(out.starts_with("No replication jobs."), "{out}");
    let jobs = h.json(&["job", "list"]).await;
    assert_eq!(jobs["TotalCount"], 0);
    assert!(jobs["RequestId"].is_string(), "{jobs}");
    assert_eq!(
        jobs["ReplicationJobs"]["ReplicationJob"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let out = h.ok(&["source", "list"]).await;
    assert!(out.starts_with("No source servers."), "{out}");
    let out = h.ok(&["image", "list"]).await;
    assert!(out.starts_with("No images."), "{out}");

    let (result, _) = h.cli(&["job", "show", "j-fe000000000000000000"]).await;
    let msg = format!("{:#}", result.expect_err("no such job"));
    assert!(
        msg.contains("does not exist") && msg.contains("ferry job list"),
        "{msg}"
    );

    // The generic call adds the region, so ECS actions work as they are.
    let out = h
        .ok(&["call", "DescribeRegions", "--api-version", "2014-05-26"])
        .await;
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["Regions"]["Region"][0]["RegionId"], "local");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_access_keys_are_reported_clearly() {
    let h = Harness::start().await;
    let (result, out) = h
        .cli(&["--access-key-id", "LTAInosuchkey", "job", "list"])
        .await;
    assert!(out.is_empty(), "{out}");
    let err = result.expect_err("an unknown key is refused");
    assert_eq!(
        err.downcast_ref::<ClientError>()
            .and_then(ClientError::api_code),
        Some("InvalidAccessKeyId.NotFound")
    );
    let msg = err.to_string();
    assert!(
        msg.contains("LTAInosuchkey") && msg.contains("(request "),
        "{msg}"
    );
    assert!(ferry::hint_for(&err).contains("--access-key-id"));

    let (result, _) = h
        .cli(&["--access-key-secret", "not-the-secret", "job", "list"])
        .await;
    let err = result.expect_err("a wrong secret is refused");
    assert_eq!(
        err.downcast_ref::<ClientError>()
            .and_then(ClientError::api_code),
        Some("SignatureDoesNotMatch")
    );

    // The binary: exit code 1, `error:` and a hint on standard error, nothing on standard output.
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["--data-dir"])
        .arg(&h.data)
        .args(["--access-key-id", "LTAInosuchkey", "job", "list"])
        .env("HOME", &h.home)
        .env_clear_ferry()
        .output()
        .expect("run ferry");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty());
    assert!(
        stderr.starts_with("error: InvalidAccessKeyId.NotFound: "),
        "{stderr}"
    );
    assert!(stderr.contains("\nhint: check the access key"), "{stderr}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_says_where_it_looked() {
    let h = Harness::start().await;
    let addr = h.server.addr;
    // Keep the data directory (and its credentials file) while the server is gone.
    let Harness {
        tmp: keep,
        data,
        server,
        ..
    } = h;
    server.shutdown().await;
    let cli = Cli::try_parse_from([
        "ferry",
        "--data-dir",
        &data.display().to_string(),
        "job",
        "list",
    ])
    .expect("parses");
    let mut out = Vec::new();
    let mut io = Io {
        out: &mut out,
        interactive: false,
        home: None,
    };
    let err = ferry::run(cli, &mut io)
        .await
        .expect_err("the server is gone");
    let msg = err.to_string();
    assert!(
        matches!(
            err.downcast_ref::<ClientError>(),
            Some(ClientError::Transport { .. })
        ),
        "{err:#}"
    );
    assert!(
        msg.contains(&format!("https://127.0.0.1:{}", addr.port())),
        "{msg}"
    );
    assert!(msg.contains("check --endpoint"), "{msg}");
    assert!(ferry::hint_for(&err).contains("ferry server"));
    drop(keep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_saved_from_the_data_dir_is_used_from_elsewhere() {
    let h = Harness::start().await;
    let out = h
        .ok(&[
            "configure",
            "--profile",
            "lab",
            "--from-data-dir",
            &h.data.display().to_string(),
        ])
        .await;
    assert!(out.contains("Saved profile \"lab\""), "{out}");
    // With the data directory pointing nowhere, only the profile can supply the connection.
    let cli = Cli::try_parse_from([
        "ferry",
        "--data-dir",
        "/nonexistent",
        "activation-code",
        "list",
    ])
    .expect("parses");
    let mut buf = Vec::new();
    let mut io = Io {
        out: &mut buf,
        interactive: false,
        home: Some(h.home.clone()),
    };
    ferry::run(cli, &mut io)
        .await
        .expect("the current profile connects");
    assert!(String::from_utf8_lossy(&buf).starts_with("No activation codes"));
    h.stop().await;
}

/// A writer the test can read while a command is still writing to it.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_created_started_watched_and_fails_with_the_agents_reason() {
    let h = Harness::start().await;
    let code = code_from(&h.ok(&["activation-code", "create"]).await);
    let agent = activate(&h, &code).await;
    let sid = agent.source_id.clone();

    let out = h.ok(&["source", "list"]).await;
    let row = out
        .lines()
        .find(|l| l.starts_with(&sid))
        .expect("source listed");
    assert!(
        row.contains("web-01")
            && row.contains("Debian GNU/Linux 12 (bookworm)")
            && row.contains("1 (2.0 GiB)"),
        "{row}"
    );
    let out = h.ok(&["source", "show", &sid]).await;
    for want in [
        "Kernel:",
        "6.1.0-18-amd64",
        "Boot mode:",
        "BIOS",
        "Disk 0 (system): /dev/vda, 2.0 GiB, MBR, QEMU HARDDISK",
        "DHCP (/etc/network/interfaces)",
        "FAIL    free-space",
        "1 passed, 1 failed",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }

    let out = h
        .ok(&[
            "job",
            "create",
            "--source",
            &sid,
            "--name",
            "web-migration",
            "--bandwidth-limit",
            "10M",
            "--compress-level",
            "3",
        ])
        .await;
    let job_id = printed_id(&out, "j-");
    let out = h.ok(&["job", "show", &job_id]).await;
    assert!(out.contains("Ready"), "{out}");
    assert!(out.contains("bandwidth 10.0 MiB/s, zstd level 3"), "{out}");

    h.ok(&["job", "start", &job_id]).await;
    // The parameters reach the agent with exact units.
    let task = agent.heartbeat().await.task.expect("a task for the agent");
    assert_eq!(task.bandwidth_limit_bps, Some(10 << 20));
    assert_eq!(task.compress_level, Some(3));
    let run_id = task.run_id.to_string();
    let progress = RunProgress {
        bytes_total: 2 << 30,
        bytes_scanned: 1 << 30,
        bytes_sent: 100 << 20,
        bytes_uploaded_logical: 300 << 20,
        bytes_zero: 500 << 20,
        bytes_unchanged: 0,
        bytes_dedup: 200 << 20,
        throughput_bps: 50 << 20,
        eta_secs: Some(20),
        elapsed_ms: 20_000,
        paused_reason: None,
    };
    agent
        .post(&format!("/runs/{run_id}/progress"), &progress)
        .await;

    let jobs = h.ok(&["job", "list"]).await;
    let row = jobs
        .lines()
        .find(|l| l.starts_with(&job_id))
        .expect("listed");
    assert!(row.contains("Running/Syncing"), "{row}");

    // Watch while the agent gives up: the watch prints progress lines, then fails with the reason.
    let buf = SharedBuf::default();
    let cli = Cli::try_parse_from(h.argv(&["job", "watch", &job_id])).expect("parses");
    let mut writer = buf.clone();
    let watch = async {
        let mut io = Io {
            out: &mut writer,
            interactive: false,
            home: Some(h.home.clone()),
        };
        ferry::run(cli, &mut io).await
    };
    let agent_fails = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !buf.text().contains("scanned") {
            assert!(
                Instant::now() < deadline,
                "no progress line:\n{}",
                buf.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        agent
            .post(
                &format!("/runs/{run_id}/finish"),
                &RunFinish::Failed {
                    code: "DiskRead.Failed".into(),
                    message: "cannot read /dev/vda at offset 4096: I/O error".into(),
                },
            )
            .await;
    };
    let (watched, ()) = tokio::join!(watch, agent_fails);
    let err = watched.expect_err("a failed job ends the watch with an error");
    let msg = err.to_string();
    assert!(
        msg.contains("failed") && msg.contains("DiskRead.Failed") && msg.contains("I/O error"),
        "{msg}"
    );
    assert!(msg.contains(&format!("ferry job start {job_id}")), "{msg}");
    let printed = buf.text();
    let line = printed
        .lines()
        .find(|l| l.contains("scanned"))
        .expect("a progress line");
    assert!(
        line.contains("scanned 1.0 GiB / 2.0 GiB (50.0%)")
            && line.contains("sent 100.0 MiB")
            && line.contains("skipped 700.0 MiB")
            && line.contains("50.0 MiB/s")
            && line.contains("ETA 20s"),
        "{line}"
    );

    // The run's figures stay on record.
    let out = h.ok(&["job", "show", &job_id]).await;
    assert!(out.contains("InError"), "{out}");
    let run_row = out.lines().find(|l| l.contains(&run_id)).expect("run row");
    assert!(
        run_row.contains("1.0 GiB / 2.0 GiB") && run_row.contains("Failed"),
        "{run_row}"
    );

    // A job that is started again and stopped ends a watch with exit code 1 too.
    h.ok(&["job", "start", &job_id]).await;
    h.ok(&["job", "stop", &job_id]).await;
    let (result, _) = h.cli(&["job", "watch", &job_id]).await;
    let msg = result.expect_err("stopped").to_string();
    assert!(msg.contains("was stopped"), "{msg}");
    h.stop().await;
}

trait ClearFerryEnv {
    fn env_clear_ferry(&mut self) -> &mut Self;
}

impl ClearFerryEnv for Command {
    /// Keeps the test's own environment from choosing another server or key.
    fn env_clear_ferry(&mut self) -> &mut Self {
        for var in [
            "FERRY_ENDPOINT",
            "FERRY_ACCESS_KEY_ID",
            "FERRY_ACCESS_KEY_SECRET",
            "FERRY_CA_CERT",
            "FERRY_PROFILE",
            "FERRY_REGION",
        ] {
            self.env_remove(var);
        }
        self
    }
}

fn ferry_bin(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.env("HOME", home).env_clear_ferry();
    c
}

#[test]
fn server_refuses_a_data_dir_that_is_a_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("file");
    let output = ferry_bin(tmp.path())
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&file)
        .output()
        .expect("run ferry server");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains("is a file, not a directory"), "{stderr}");
    assert!(stderr.contains("error: "), "{stderr}");
}

/// Starts `ferry server` with `option` and checks that it stops at once with `message`.
fn assert_server_refuses(option: &str, message: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let output = ferry_bin(tmp.path())
        .args(["server", "--listen", "127.0.0.1:0", option])
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .output()
        .expect("run ferry server");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(message), "{stderr}");
}

#[test]
fn server_refuses_a_long_poll_outside_what_agents_wait_for() {
    for secs in ["0", "101"] {
        assert_server_refuses(
            &format!("--long-poll={secs}"),
            &format!("--long-poll {secs} is out of range: use 1 to 100 seconds"),
        );
    }
}

#[test]
fn server_refuses_a_bulk_nice_outside_what_the_kernel_takes() {
    for nice in ["-1", "20"] {
        assert_server_refuses(
            &format!("--bulk-nice={nice}"),
            &format!("--bulk-nice {nice} is out of range: use 0 (the server's own priority) to 19"),
        );
    }
}

#[test]
fn the_server_binary_serves_the_cli_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let mut server = ferry_bin(tmp.path())
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ferry server");
    let stdout = server.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = Vec::new();
    let ready = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let done = line.starts_with("Press Ctrl-C");
                banner.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    if !ready {
        let _ = server.kill();
        let _ = server.wait();
        panic!("the server did not print its banner: {banner:?}");
    }
    let endpoint = banner
        .iter()
        .find_map(|l| l.strip_prefix("Ferry server listening on "))
        .expect("endpoint line")
        .to_owned();
    assert!(
        banner
            .iter()
            .any(|l| l.starts_with("CA fingerprint:    sha256:")),
        "{banner:?}"
    );
    assert!(
        banner.iter().any(|l| l.contains("root-credentials.json")),
        "{banner:?}"
    );

    // From a shell on the server's host: no options but the data directory.
    let created = ferry_bin(tmp.path())
        .arg("--data-dir")
        .arg(&data)
        .args(["activation-code", "create"])
        .output()
        .expect("run ferry activation-code create");
    let out = String::from_utf8_lossy(&created.stdout);
    let ok = created.status.success()
        && out.contains(&format!("ferry-agent activate --server {endpoint} --code "));

    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("run kill");
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = server.kill();
            let _ = server.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest: Vec<String> = rx.iter().collect();
    let _ = reader.join();
    assert!(
        ok,
        "activation-code create failed: {}\n{out}",
        String::from_utf8_lossy(&created.stderr)
    );
    let status = status.expect("the server stops within 30 s of SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        rest.iter().any(|l| l == "Ferry server stopped (SIGTERM)."),
        "{rest:?}"
    );
}
