//! `ferry doctor` against real servers: every check passing, a wrong CA, a stopped server, a skewed clock,
//! and `--source` on real GPT disk images (one that passes the layout check, one that fails it).
//!
//! The skewed clock is the one thing that cannot be real here: moving this machine's clock would break
//! every other test running on it. A minimal HTTP server that answers with a `Date` an hour in the past
//! stands in for the Ferry server in that test, and says so.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use clap::Parser as _;
use ferry::{Cli, ClientError, Io};
use serde_json::Value;
use support::Harness;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The line of check `name` in a text report.
fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no line for check {name:?} in:\n{out}"))
}

/// The check `name` of a JSON report.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["Checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["Name"] == name))
        .unwrap_or_else(|| panic!("no check {name:?} in:\n{report:#}"))
}

/// Runs `ferry <args>` in-process with `home` as HOME; returns the result and what it printed.
async fn run(home: &Path, args: &[&str]) -> (anyhow::Result<()>, String) {
    let mut argv = vec!["ferry"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("valid command line");
    let mut out = Vec::new();
    let result = {
        let mut io = Io {
            out: &mut out,
            interactive: false,
            home: Some(home.to_owned()),
        };
        ferry::run(cli, &mut io).await
    };
    (result, String::from_utf8(out).expect("UTF-8 output"))
}

fn doctor_failed(result: &anyhow::Result<()>) -> bool {
    matches!(result, Err(e) if e.downcast_ref::<ferry::commands::doctor::DoctorFailed>().is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_check_passes_against_a_running_server() {
    let h = Harness::start().await;
    let out = h.ok(&["doctor"]).await;
    for name in [
        "config",
        "endpoint",
        "tls",
        "clock",
        "credentials",
        "ready",
        "database",
        "object_store",
        "credentials_file",
    ] {
        let l = line(&out, name);
        assert!(l.starts_with('✔'), "{name} did not pass:\n{out}");
    }
    assert!(!out.contains('✖'), "{out}");
    assert!(line(&out, "credentials").contains(&h.root.access_key_id));
    assert!(line(&out, "tls").contains(&h.root.ca_fingerprint), "{out}");
    // The data directory is on this machine's disk: whatever its free space, it is reported in bytes.
    assert!(line(&out, "data_dir_space").contains("free for"), "{out}");

    let report = h.json(&["doctor"]).await;
    assert_eq!(report["Version"], 1);
    assert_eq!(report["Mode"], "server");
    assert_ne!(report["Result"], "fail", "{report:#}");
    assert_eq!(check(&report, "database")["Status"], "pass");
    assert_eq!(check(&report, "credentials")["Fix"], "");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_from_another_server_fails_the_tls_check_and_commands_say_to_reconfigure() {
    let h = Harness::start().await;
    let other = ferry_server::tls::ensure(&h.tmp.path().join("other-tls"), &[])
        .expect("another server's CA");
    let ca = other.ca_cert.display().to_string();

    let (result, out) = h.cli(&["--ca-cert", &ca, "doctor"]).await;
    assert!(doctor_failed(&result), "{result:?}\n{out}");
    let tls = line(&out, "tls");
    assert!(tls.starts_with('✖'), "{out}");
    assert!(
        tls.contains(&other.ca_fingerprint) && tls.contains("ferry configure"),
        "{tls}"
    );
    assert!(line(&out, "endpoint").starts_with('✔'), "{out}");
    for skipped in ["clock", "credentials", "ready"] {
        assert!(line(&out, skipped).starts_with('-'), "{out}");
    }
    let err = result.expect_err("a failed check fails the command");
    assert!(ferry::hint_for(&err).contains("ferry doctor"));

    // An ordinary command with that CA says what happened and how to fix it.
    let failed = h.fails(&["--ca-cert", &ca, "job", "list"]).await;
    let transport = failed
        .err
        .downcast_ref::<ClientError>()
        .expect("a client error");
    assert!(
        matches!(
            transport,
            ClientError::Transport {
                kind: ferry::client::TransportKind::Certificate,
                ..
            }
        ),
        "{transport:?}"
    );
    assert!(
        failed.hint().contains("ferry configure"),
        "{}",
        failed.hint()
    );

    // The handshake passes with the right CA, but --data-dir names a data directory whose CA differs
    // (another server's): the doctor names both fingerprints.
    let other_data = h.tmp.path().join("other-data");
    let other_ca = ferry_server::tls::ensure(&other_data.join("tls"), &[]).expect("another CA");
    let right_ca = h.data.join("tls").join("ca.pem").display().to_string();
    let other_data = other_data.display().to_string();
    let (result, out) = run(
        &h.home,
        &[
            "--data-dir",
            &other_data,
            "--ca-cert",
            &right_ca,
            "--endpoint",
            &h.endpoint(),
            "--access-key-id",
            &h.root.access_key_id,
            "--access-key-secret",
            &h.root.access_key_secret,
            "doctor",
        ],
    )
    .await;
    assert!(doctor_failed(&result), "{out}");
    let tls = line(&out, "tls");
    assert!(
        tls.starts_with('✖')
            && tls.contains(&other_ca.ca_fingerprint)
            && tls.contains(&h.root.ca_fingerprint),
        "{out}"
    );
    assert!(line(&out, "credentials").starts_with('✔'), "{out}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_fails_the_endpoint_check() {
    let h = Harness::start().await;
    let Harness {
        tmp,
        data,
        home,
        server,
        ..
    } = h;
    server.shutdown().await;
    let data = data.display().to_string();
    let (result, out) = run(&home, &["--data-dir", &data, "doctor"]).await;
    assert!(doctor_failed(&result), "{out}");
    let endpoint = line(&out, "endpoint");
    assert!(
        endpoint.starts_with('✖') && endpoint.contains("ferry server"),
        "{out}"
    );
    for skipped in ["tls", "clock", "credentials", "ready"] {
        assert!(line(&out, skipped).starts_with('-'), "{out}");
    }
    // The local checks of the data directory still run.
    assert!(line(&out, "credentials_file").starts_with('✔'), "{out}");

    let (_, json) = run(&home, &["--data-dir", &data, "--output", "json", "doctor"]).await;
    let report: Value = serde_json::from_str(&json).expect("JSON report");
    assert_eq!(report["Result"], "fail");
    assert_eq!(check(&report, "endpoint")["Status"], "fail");
    assert_eq!(check(&report, "ready")["Status"], "skip");
    drop(tmp);
}

/// A stand-in server whose clock is an hour behind: every answer is `200 ok` with that `Date`.
async fn skewed_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                // The doctor's requests have no body: the request ends with its headers.
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let date = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3600));
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nDate: {date}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_an_hour_off_fails_the_clock_check() {
    let endpoint = skewed_server().await;
    let home = tempfile::tempdir().expect("home");
    let args = [
        "--endpoint",
        &endpoint,
        "--access-key-id",
        "LTAIdoctor",
        "--access-key-secret",
        "secret",
        "doctor",
    ];
    let (result, out) = run(home.path(), &args).await;
    assert!(doctor_failed(&result), "{out}");
    let clock = line(&out, "clock");
    assert!(clock.starts_with('✖'), "{out}");
    // Measured, not assumed: an hour, give or take the request's own second.
    assert!(
        clock.contains("1h 00m ahead of") || clock.contains("59m 59s ahead of"),
        "{clock}"
    );
    assert!(clock.contains("NTP"), "{clock}");
    assert!(line(&out, "endpoint").starts_with('✔'), "{out}");
    assert!(
        line(&out, "tls").starts_with('!'),
        "plain HTTP warns:\n{out}"
    );

    let mut json_args = args.to_vec();
    json_args.extend(["--output", "json"]);
    let (_, json) = run(home.path(), &json_args).await;
    let report: Value = serde_json::from_str(&json).expect("JSON report");
    assert_eq!(check(&report, "clock")["Status"], "fail");
    assert!(
        check(&report, "clock")["Fix"]
            .as_str()
            .is_some_and(|f| f.contains("NTP"))
    );
}

fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (install it: fdisk, e2fsprogs): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 32 MiB GPT disk image with one 20 MiB Linux partition, formatted ext4 when `ext4`.
fn gpt_image(path: &Path, ext4: bool) {
    let f = std::fs::File::create(path).expect("image");
    f.set_len(32 << 20).expect("size");
    drop(f);
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet", &path.display().to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("cannot run sfdisk (install fdisk)");
    {
        use std::io::Write as _;
        sfdisk
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"label: gpt\nstart=2048, size=40960, type=L\n")
            .expect("sfdisk script");
    }
    assert!(sfdisk.wait().expect("sfdisk").success(), "sfdisk failed");
    if ext4 {
        // Formatted in place at the partition's offset: no loop device needed.
        sh(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-L",
                "doctor",
                "-E",
                "offset=1048576",
                &path.display().to_string(),
                "20M",
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_source_judges_real_gpt_images() {
    let h = Harness::start().await;
    let good: PathBuf = h.tmp.path().join("good.img");
    let bad: PathBuf = h.tmp.path().join("blank-partition.img");
    gpt_image(&good, true);
    gpt_image(&bad, false);
    let state = h.tmp.path().join("agent-state").display().to_string();
    let good = good.display().to_string();
    let bad = bad.display().to_string();

    // Before activation, the way an operator would run it: the server and CA fingerprint of the
    // activation command.
    let endpoint = h.endpoint();
    let pinned = [
        "--endpoint",
        endpoint.as_str(),
        "doctor",
        "--source",
        "--ca-fingerprint",
        h.root.ca_fingerprint.as_str(),
        "--state-dir",
        state.as_str(),
    ];
    let mut args = pinned.to_vec();
    args.extend(["--disk-image", good.as_str()]);
    let out = h.ok(&args).await;
    for name in [
        "connectivity",
        "clock_skew",
        "inventory",
        "disks_readable",
        "supported_layout",
        "boot_mode_supported",
        "state_dir_space",
    ] {
        assert!(
            line(&out, name).starts_with('✔'),
            "{name} did not pass:\n{out}"
        );
    }
    assert!(
        line(&out, "supported_layout").contains("GPT, 1 partitions"),
        "{out}"
    );
    assert!(
        line(&out, "state_dir_space").contains("does not exist yet"),
        "{out}"
    );

    // The partition without a filesystem fails the layout check, and only that one.
    let (result, out) = h
        .cli(&[
            "doctor",
            "--source",
            "--state-dir",
            &state,
            "--disk-image",
            &bad,
        ])
        .await;
    assert!(doctor_failed(&result), "{out}");
    let layout = line(&out, "supported_layout");
    assert!(
        layout.starts_with('✖')
            && layout.contains("partition 1")
            && layout.contains("no recognisable filesystem"),
        "{out}"
    );
    assert!(line(&out, "disks_readable").starts_with('✔'), "{out}");
    assert!(line(&out, "connectivity").starts_with('✔'), "{out}");

    let (_, json) = h
        .cli(&[
            "doctor",
            "--source",
            "--state-dir",
            &state,
            "--disk-image",
            &bad,
            "--output",
            "json",
        ])
        .await;
    let report: Value = serde_json::from_str(&json).expect("JSON report");
    assert_eq!(report["Mode"], "source");
    assert_eq!(report["Result"], "fail");
    assert_eq!(check(&report, "supported_layout")["Status"], "fail");
    assert_eq!(report["Inventory"]["disks"][0]["partition_table"], "gpt");

    // A wrong CA fingerprint is refused before anything is trusted.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let mut args = pinned.to_vec();
    args[5] = wrong.as_str();
    args.extend(["--disk-image", good.as_str()]);
    let (result, out) = h.cli(&args).await;
    assert!(doctor_failed(&result), "{out}");
    let conn = line(&out, "connectivity");
    assert!(
        conn.starts_with('✖') && conn.contains("fingerprint"),
        "{out}"
    );
    h.stop().await;
}
