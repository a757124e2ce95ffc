//! The audit trail end to end: a real server on a loopback port with a fresh data directory, called
//! with the CLI's signed client (and, for the agent registration, the agent protocol). Each call leaves
//! exactly one ActionTrail event with the reference's fields and no secret; `LookupEvents` filters,
//! windows and pages; `ferry audit verify` passes on the untouched trail and names the record after its
//! database file is edited with the sqlite3 CLI.

mod support;

use std::path::Path;
use std::process::Command;

use ferry::{Client, ClientError};
use serde_json::{Value, json};
use support::{Harness, own as p};

const ACTIONTRAIL: &str = "2020-07-06";

async fn lookup(c: &Client, params: &[(&str, &str)]) -> Value {
    c.call(ACTIONTRAIL, "LookupEvents", &p(params))
        .await
        .expect("LookupEvents")
}

fn events(resp: &Value) -> Vec<Value> {
    resp["Events"]
        .as_array()
        .cloned()
        .expect("Events is an array")
}

/// The events whose requestId is `request_id` (among the newest 50).
async fn events_of(c: &Client, request_id: &str) -> Vec<Value> {
    events(&lookup(c, &[("MaxResults", "50")]).await)
        .into_iter()
        .filter(|e| e["requestId"] == request_id)
        .collect()
}

fn api_request_id(e: ClientError) -> (String, String) {
    match e {
        ClientError::Api {
            code, request_id, ..
        } => (code, request_id),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_leaves_one_event_and_verify_finds_tampering() {
    let h = Harness::start().await;
    let c = &h.api;

    // A successful write.
    let ok = c
        .smc(
            "CreateAccessToken",
            &p(&[("Name", "wave-1"), ("Count", "3")]),
        )
        .await
        .expect("CreateAccessToken");
    let code = ok["AccessTokenCode"].as_str().expect("code").to_owned();
    let token_id = ok["AccessTokenId"].as_str().expect("id").to_owned();
    let ok_rid = ok["RequestId"].as_str().expect("RequestId").to_owned();
    let evs = events_of(c, &ok_rid).await;
    assert_eq!(evs.len(), 1, "{evs:?}");
    let e = &evs[0];
    assert_eq!(e["eventName"], "CreateAccessToken");
    assert_eq!(e["eventSource"], "smc.aliyuncs.com");
    assert_eq!(e["serviceName"], "Smc");
    assert_eq!(e["apiVersion"], "2019-06-01");
    assert_eq!(e["eventType"], "ApiCall");
    assert_eq!(e["eventVersion"], "1");
    assert_eq!(e["eventRW"], "Write");
    assert_eq!(e["eventCategory"], "Management");
    assert_eq!(e["sourceIpAddress"], "127.0.0.1");
    assert!(
        e["userAgent"]
            .as_str()
            .is_some_and(|u| u.starts_with("ferry-cli/"))
    );
    assert_eq!(e["userIdentity"]["type"], "root-account");
    assert_eq!(
        e["userIdentity"]["accessKeyId"],
        h.root.access_key_id.as_str()
    );
    assert_eq!(e["userIdentity"]["accountId"], h.root.account_id.as_str());
    assert_eq!(e["requestParameters"]["Name"], "wave-1");
    assert_eq!(e["responseElements"], json!({ "AccessTokenId": token_id }));
    assert_eq!(e["resourceType"], "ACS::SMC::AccessToken");
    assert_eq!(e["resourceName"], token_id.as_str());
    assert!(e.get("errorCode").is_none());
    let time = e["eventTime"].as_str().expect("eventTime");
    assert!(ferry_api::parse_time(time).is_some(), "{time}");
    assert!(uuid_like(e["eventId"].as_str().expect("eventId")));
    let text = e.to_string();
    assert!(!text.contains(&code), "the activation code leaked: {text}");
    assert!(!text.contains(&h.root.access_key_secret));
    assert!(!text.contains("Signature"), "{text}");

    // A failing call (bad parameter).
    let err = c
        .smc("CreateAccessToken", &p(&[("Count", "0")]))
        .await
        .expect_err("Count=0 is refused");
    let (code_bad, bad_rid) = api_request_id(err);
    assert_eq!(code_bad, "InvalidParameter");
    let evs = events_of(c, &bad_rid).await;
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0]["errorCode"], "InvalidParameter");
    assert!(
        evs[0]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("Count"))
    );
    assert!(evs[0].get("responseElements").is_none());

    // A bad signature: recorded with the claimed key, never with the signature.
    let err = h
        .client_with_secret("not-the-secret")
        .smc("DescribeSourceServers", &[])
        .await
        .expect_err("wrong secret");
    let (code_sig, sig_rid) = api_request_id(err);
    assert_eq!(code_sig, "SignatureDoesNotMatch");
    let evs = events_of(c, &sig_rid).await;
    assert_eq!(evs.len(), 1, "{evs:?}");
    let e = &evs[0];
    assert_eq!(e["errorCode"], "SignatureDoesNotMatch");
    assert_eq!(e["userIdentity"]["type"], "unknown");
    assert_eq!(
        e["userIdentity"]["accessKeyId"],
        h.root.access_key_id.as_str()
    );
    assert_eq!(e["eventRW"], "Read");
    let params = e["requestParameters"].as_object().expect("object");
    assert!(!params.contains_key("Signature") && !params.contains_key("SignatureNonce"));
    assert!(
        !e["errorMessage"].as_str().unwrap_or("").contains("POST&"),
        "{e}"
    );

    // An agent registration, refused (bad code) and granted; the code is never recorded.
    let agent = h.https();
    let web01 = || support::inventory("web-01");
    let refused = h.activate_raw(&agent, "not-a-code", web01(), vec![]).await;
    assert_eq!(refused.status().as_u16(), 403);
    let granted = h.activate_raw(&agent, &code, web01(), vec![]).await;
    assert!(granted.status().is_success(), "{}", granted.status());
    let granted: Value = granted.json().await.expect("credentials");
    let source_id = granted["credentials"]["source_id"]
        .as_str()
        .expect("source id")
        .to_owned();
    let regs = events(
        &lookup(
            c,
            &[
                ("LookupAttribute.1.Key", "EventName"),
                ("LookupAttribute.1.Value", "RegisterSourceServer"),
            ],
        )
        .await,
    );
    assert_eq!(regs.len(), 2, "{regs:?}");
    // Newest first: the grant, then the refusal.
    assert_eq!(regs[0]["resourceName"], source_id.as_str());
    assert_eq!(regs[0]["userIdentity"]["type"], "activation-code");
    assert_eq!(regs[0]["userIdentity"]["principalId"], token_id.as_str());
    assert_eq!(regs[0]["requestParameters"]["Hostname"], "web-01");
    assert_eq!(regs[1]["errorCode"], "ActivationCode.Invalid");
    for r in &regs {
        assert!(!r.to_string().contains(&code));
        assert!(!r.to_string().contains("not-a-code"));
    }

    // Filters: two attributes; exact; EventRW; EventAccessKeyId.
    let both = events(
        &lookup(
            c,
            &[
                ("LookupAttribute.1.Key", "EventName"),
                ("LookupAttribute.1.Value", "CreateAccessToken"),
                ("LookupAttribute.2.Key", "User"),
                ("LookupAttribute.2.Value", "root"),
            ],
        )
        .await,
    );
    let rids: Vec<&str> = both
        .iter()
        .filter_map(|e| e["requestId"].as_str())
        .collect();
    assert_eq!(rids, [bad_rid.as_str(), ok_rid.as_str()]);
    let errors = events(
        &lookup(
            c,
            &[
                ("LookupAttribute.1.Key", "EventName"),
                ("LookupAttribute.1.Value", "createaccesstoken"),
            ],
        )
        .await,
    );
    assert!(errors.is_empty(), "lookups are case-sensitive: {errors:?}");
    let by_key = events(
        &lookup(
            c,
            &[
                ("LookupAttribute.1.Key", "EventAccessKeyId"),
                ("LookupAttribute.1.Value", &h.root.access_key_id),
                ("LookupAttribute.2.Key", "EventRW"),
                ("LookupAttribute.2.Value", "Write"),
            ],
        )
        .await,
    );
    assert_eq!(by_key.len(), 2, "{by_key:?}");

    // Window: a window in the future is empty; bad windows and keys are InvalidParameter.
    let later = lookup(
        c,
        &[
            ("StartTime", "2099-01-01T00:00:00Z"),
            ("EndTime", "2099-01-02T00:00:00Z"),
        ],
    )
    .await;
    assert!(events(&later).is_empty());
    assert_eq!(later["StartTime"], "2099-01-01T00:00:00Z");
    for bad in [
        vec![
            ("StartTime", "2024-01-01T00:00:00Z"),
            ("EndTime", "2024-03-01T00:00:00Z"),
        ],
        vec![
            ("StartTime", "2024-01-02T00:00:00Z"),
            ("EndTime", "2024-01-01T00:00:00Z"),
        ],
        vec![
            ("LookupAttribute.1.Key", "Colour"),
            ("LookupAttribute.1.Value", "x"),
        ],
        vec![("MaxResults", "51")],
        vec![("Direction", "SIDEWAYS")],
        vec![("NextToken", "garbage")],
    ] {
        let err = c
            .call(ACTIONTRAIL, "LookupEvents", &p(&bad))
            .await
            .expect_err("refused");
        assert_eq!(err.api_code(), Some("InvalidParameter"), "{bad:?}: {err}");
    }

    // Paging: 23 reads, pages of 5, newest first and oldest first, without duplicates or gaps.
    let mut reads = Vec::new();
    for _ in 0..23 {
        let r = c.smc("DescribeSourceServers", &[]).await.expect("describe");
        reads.push(r["RequestId"].as_str().expect("rid").to_owned());
    }
    for (direction, expected) in [
        ("BACKWARD", reads.iter().rev().cloned().collect::<Vec<_>>()),
        ("FORWARD", reads.clone()),
    ] {
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut params = vec![
                ("LookupAttribute.1.Key", "EventName"),
                ("LookupAttribute.1.Value", "DescribeSourceServers"),
                ("LookupAttribute.2.Key", "EventRW"),
                ("LookupAttribute.2.Value", "Read"),
                ("MaxResults", "5"),
                ("Direction", direction),
            ];
            if let Some(t) = &token {
                params.push(("NextToken", t));
            }
            let resp = lookup(c, &params).await;
            pages += 1;
            let page = events(&resp);
            assert!(page.len() <= 5);
            seen.extend(
                page.iter()
                    .filter_map(|e| e["requestId"].as_str().map(str::to_owned)),
            );
            match resp["NextToken"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => break,
            }
            // Events appended meanwhile (this lookup's own) must not disturb the listing.
            c.smc("DescribeSourceServers", &[]).await.expect("describe");
        }
        // The signature failure above was a DescribeSourceServers too; it is not ours.
        seen.retain(|r| r != &sig_rid);
        let expected: Vec<String> = if direction == "BACKWARD" {
            expected
        } else {
            // FORWARD keeps going into events appended while paging: compare the prefix.
            seen.truncate(expected.len());
            expected
        };
        assert_eq!(seen, expected, "{direction}");
        assert!(pages >= 5, "{direction}: {pages} pages");
    }

    // The CLI lists events through the API.
    let (result, out) = h
        .cli(&[
            "audit",
            "lookup",
            "--event-name",
            "CreateAccessToken",
            "--start",
            "-1h",
        ])
        .await;
    result.expect("audit lookup");
    assert!(
        out.contains("CreateAccessToken") && out.contains("InvalidParameter"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 3, "{out}");

    // Verify: intact while the server runs (in-process), then after tampering (the binary).
    let (result, out) = h.cli(&["audit", "verify"]).await;
    result.expect("verify passes");
    assert!(out.starts_with("OK: "), "{out}");
    assert!(h.data.join("audit-head.json").is_file());
    let data = h.data.clone();
    let home = h.home.clone();
    h.server.shutdown().await;
    let db = data.join("ferry.db");
    let seq = sqlite(
        &db,
        &format!("SELECT seq FROM audit_events WHERE request_id = '{ok_rid}'"),
    );
    let ok = ferry_bin(&home, &data).output().expect("run ferry");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    sqlite(
        &db,
        &format!(
            "UPDATE audit_events SET body = replace(body, 'wave-1', 'wave-2') WHERE seq = {seq}"
        ),
    );
    let out = ferry_bin(&home, &data).output().expect("run ferry");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("DAMAGED record {seq}: HashMismatch")),
        "{stdout}"
    );
    assert!(stderr.contains("the audit trail is damaged"), "{stderr}");
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

fn ferry_bin(home: &Path, data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.arg("--data-dir").arg(data).args(["audit", "verify"]);
    cmd.env("HOME", home);
    for var in [
        "FERRY_ENDPOINT",
        "FERRY_ACCESS_KEY_ID",
        "FERRY_ACCESS_KEY_SECRET",
        "FERRY_PROFILE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs one statement with the sqlite3 CLI (the server is stopped); returns its output, trimmed.
fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("the sqlite3 CLI is installed (apt-get install sqlite3)");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
