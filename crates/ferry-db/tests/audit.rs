//! The audit trail's storage: appends build an unbroken chain (also when many tasks and two "processes"
//! append at once), lookups filter, window and page without duplicates or gaps, and the verifier finds
//! every kind of tampering: a changed body, a changed hash, a deleted, inserted or moved record, an
//! edited index column and a truncated tail.
//!
//! Runs on SQLite, and on a fresh PostgreSQL database per test too when FERRY_TEST_POSTGRES names a test
//! cluster (`common`).

mod common;

use ferry_db::*;
use serde_json::{Value, json};
use sqlx::AnyPool;

/// Fresh databases on every configured engine (`common`), each with its URL (for a second, raw
/// connection that plays the attacker).
async fn engines() -> Vec<(String, Db, String, common::Keep)> {
    let mut out = Vec::new();
    for (engine, db, keep) in common::engines().await {
        let url = match &keep {
            common::Keep::Sqlite(dir) => format!("sqlite://{}", dir.path().join("t.db").display()),
            common::Keep::Postgres(pg) => pg.url.clone(),
        };
        out.push((engine, db, url, keep));
    }
    out
}

async fn raw(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(url).await.expect("raw connection")
}

async fn exec(pool: &AnyPool, sql: &str) {
    sqlx::query(sql)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

const T0: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z

fn event(i: i64, name: &str, user: &str, t: i64) -> Value {
    json!({
        "eventId": format!("E-{i:05}"),
        "eventName": name,
        "eventSource": "smc.aliyuncs.com",
        "eventTime": ferry_time(t),
        "eventType": "ApiCall",
        "eventVersion": "1",
        "eventRW": if name.starts_with("Describe") { "Read" } else { "Write" },
        "serviceName": "Smc",
        "requestId": format!("R-{i}"),
        "sourceIpAddress": "127.0.0.1",
        "userIdentity": {"type": "ram-user", "userName": user, "accessKeyId": format!("LTAI-{user}")},
        "requestParameters": {"JobId": format!("j-{i}")},
        "resourceType": "ACS::SMC::ReplicationJob",
        "resourceName": format!("j-{i}"),
    })
}

fn ferry_time(t: i64) -> String {
    let d = time::OffsetDateTime::from_unix_timestamp(t).expect("time");
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

/// Appends `n` events, one second apart, alternating users and names.
async fn fill(db: &Db, n: i64) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    for i in 1..=n {
        let name = if i % 2 == 0 {
            "DescribeReplicationJobs"
        } else {
            "StartReplicationJob"
        };
        let user = if i % 3 == 0 { "bob" } else { "alice" };
        out.push(
            db.audit_append(&event(i, name, user, T0 + i))
                .await
                .expect("append"),
        );
    }
    out
}

fn kinds(r: &AuditReport) -> Vec<(i64, AuditProblemKind)> {
    r.problems.iter().map(|p| (p.seq, p.kind)).collect()
}

#[tokio::test]
async fn appends_chain_and_move_the_head() {
    for (engine, db, _url, _keep) in engines().await {
        eprintln!("engine: {engine}");
        assert_eq!(db.audit_head().await.expect("head"), None);
        let empty = db.audit_verify(&[]).await.expect("verify");
        assert!(empty.is_ok() && empty.count == 0 && empty.head.is_none());

        let recs = fill(&db, 5).await;
        assert_eq!(recs[0].seq, 1);
        assert_eq!(recs[0].prev_hash, AUDIT_GENESIS_HASH);
        for w in recs.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1);
            assert_eq!(w[1].prev_hash, w[0].hash);
        }
        for r in &recs {
            assert_eq!(
                r.hash,
                audit_hash(&r.prev_hash, r.seq, r.index.event_time, &r.body)
            );
            let v: Value = serde_json::from_str(&r.body).expect("JSON body");
            assert_eq!(canonical_json(&v), r.body);
        }
        assert_eq!(recs[2].index.user_name.as_deref(), Some("bob"));
        assert_eq!(recs[2].index.event_time, T0 + 3);
        let head = db.audit_head().await.expect("head").expect("set");
        assert_eq!(head, AuditAnchor::new(5, &recs[4].hash));
        assert_eq!(
            db.audit_scan(2, 2).await.expect("scan"),
            recs[1..3].to_vec()
        );

        let report = db.audit_verify(&[]).await.expect("verify");
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.count, 5);
        assert_eq!(report.head, Some(head));

        // An event the index cannot be built from is refused, and nothing is written.
        let err = db
            .audit_append(&json!({"eventId": "x"}))
            .await
            .expect_err("incomplete event");
        assert!(err.to_string().contains("eventTime"), "{err}");
        assert_eq!(db.audit_scan(1, 100).await.expect("scan").len(), 5);
    }
}

#[tokio::test]
async fn concurrent_appenders_in_two_pools_never_fork_the_chain() {
    for (engine, db, url, _keep) in engines().await {
        eprintln!("engine: {engine}");
        // A second pool on the same file stands in for a second server process.
        let other = Db::open(&url).await.expect("second pool");
        let mut tasks = Vec::new();
        for t in 0..8i64 {
            let db = if t % 2 == 0 {
                db.clone()
            } else {
                other.clone()
            };
            tasks.push(tokio::spawn(async move {
                for i in 0..15i64 {
                    let n = t * 100 + i;
                    db.audit_append(&event(n, "StartReplicationJob", "alice", T0 + n))
                        .await
                        .expect("concurrent append");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let report = db.audit_verify(&[]).await.expect("verify");
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.count, 120);
        assert_eq!(report.head.map(|h| h.seq), Some(120));
    }
}

async fn lookup_all(db: &Db, q: &AuditQuery, page: i64, dir: AuditDirection) -> Vec<i64> {
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let p = db.audit_lookup(q, page, after, dir).await.expect("lookup");
        assert!(p.records.len() as i64 <= page);
        seen.extend(p.records.iter().map(|r| r.seq));
        match p.next_seq {
            Some(s) => after = Some(s),
            None => break,
        }
    }
    seen
}

#[tokio::test]
async fn lookups_filter_window_and_page() {
    for (engine, db, _url, _keep) in engines().await {
        eprintln!("engine: {engine}");
        fill(&db, 30).await;
        let all = AuditQuery {
            attributes: vec![],
            start: T0,
            end: T0 + 1000,
        };
        let forward = lookup_all(&db, &all, 7, AuditDirection::Forward).await;
        assert_eq!(forward, (1..=30).collect::<Vec<_>>());
        let backward = lookup_all(&db, &all, 4, AuditDirection::Backward).await;
        assert_eq!(backward, (1..=30).rev().collect::<Vec<_>>());
        // Exactly one page: no cursor.
        let p = db
            .audit_lookup(&all, 30, None, AuditDirection::Backward)
            .await
            .expect("lookup");
        assert_eq!((p.records.len(), p.next_seq), (30, None));

        // Window bounds are inclusive.
        let window = AuditQuery {
            attributes: vec![],
            start: T0 + 10,
            end: T0 + 12,
        };
        assert_eq!(
            lookup_all(&db, &window, 50, AuditDirection::Forward).await,
            [10, 11, 12]
        );

        // Two attributes: both must match; exact and case-sensitive.
        let q = AuditQuery {
            attributes: vec![
                (AuditKey::User, "bob".into()),
                (AuditKey::EventName, "StartReplicationJob".into()),
            ],
            start: T0,
            end: T0 + 1000,
        };
        assert_eq!(
            lookup_all(&db, &q, 2, AuditDirection::Forward).await,
            [3, 9, 15, 21, 27]
        );
        let q = AuditQuery {
            attributes: vec![(AuditKey::User, "Bob".into())],
            start: T0,
            end: T0 + 1000,
        };
        assert!(
            lookup_all(&db, &q, 10, AuditDirection::Forward)
                .await
                .is_empty()
        );
        for (key, value, want) in [
            (AuditKey::EventId, "E-00004", vec![4]),
            (AuditKey::ResourceName, "j-7", vec![7]),
            (
                AuditKey::EventAccessKeyId,
                "LTAI-bob",
                vec![3, 6, 9, 12, 15, 18, 21, 24, 27, 30],
            ),
            (AuditKey::EventRw, "Read", (1..=15).map(|i| i * 2).collect()),
        ] {
            let q = AuditQuery {
                attributes: vec![(key, value.into())],
                start: T0,
                end: T0 + 1000,
            };
            assert_eq!(
                lookup_all(&db, &q, 3, AuditDirection::Forward).await,
                want,
                "{key:?}={value}"
            );
        }
        for key in AuditKey::ALL {
            assert_eq!(AuditKey::parse(key.name()), Some(key));
        }
        assert_eq!(AuditKey::parse("eventname"), None);
    }
}

/// A verified chain of 10 records and a raw connection to damage it.
///
/// Runs on every engine and insists that they all find the same problems; returns the first engine's result.
async fn damaged(sql: &[&str]) -> (AuditReport, Vec<AuditRecord>) {
    let mut results: Vec<(String, AuditReport, Vec<AuditRecord>)> = Vec::new();
    for (engine, db, url, _keep) in engines().await {
        let recs = fill(&db, 10).await;
        assert!(
            db.audit_verify(&[]).await.expect("verify").is_ok(),
            "{engine}"
        );
        let pool = raw(&url).await;
        for s in sql {
            exec(&pool, s).await;
        }
        pool.close().await;
        let report = db.audit_verify(&[]).await.expect("verify");
        results.push((engine, report, recs));
    }
    for (engine, report, _) in &results[1..] {
        assert_eq!(
            kinds(report),
            kinds(&results[0].1),
            "{engine} and {} disagree",
            results[0].0
        );
    }
    let (_, report, recs) = results.swap_remove(0);
    (report, recs)
}

#[tokio::test]
async fn a_changed_body_is_found() {
    let (r, _) = damaged(&[
        "UPDATE audit_events SET body = replace(body, '\"j-4\"', '\"j-9\"') WHERE seq = 4",
    ])
    .await;
    assert!(
        kinds(&r).contains(&(4, AuditProblemKind::HashMismatch)),
        "{:?}",
        r.problems
    );
    assert!(kinds(&r).iter().all(|(s, _)| *s == 4), "{:?}", r.problems);
}

#[tokio::test]
async fn a_changed_body_with_a_recomputed_hash_breaks_the_next_link() {
    // The attacker fixes record 4's own hash (it is unkeyed) but not record 5's prev_hash.
    for (engine, db, url, _keep) in engines().await {
        eprintln!("engine: {engine}");
        let recs = fill(&db, 10).await;
        let r4 = &recs[3];
        // A field that is not an index column, so that only the chain can tell.
        let body = r4
            .body
            .replace("\"eventVersion\":\"1\"", "\"eventVersion\":\"9\"");
        assert_ne!(body, r4.body);
        let hash = audit_hash(&r4.prev_hash, 4, r4.index.event_time, &body);
        let pool = raw(&url).await;
        sqlx::query("UPDATE audit_events SET body = $1, hash = $2 WHERE seq = 4")
            .bind(&body)
            .bind(&hash)
            .execute(&pool)
            .await
            .expect("tamper");
        let r = db.audit_verify(&[]).await.expect("verify");
        assert_eq!(
            kinds(&r),
            [(5, AuditProblemKind::PrevHashMismatch)],
            "{:?}",
            r.problems
        );
    }
}

#[tokio::test]
async fn a_changed_hash_is_found() {
    let (r, _) =
        damaged(&["UPDATE audit_events SET hash = 'ff' || substr(hash, 3) WHERE seq = 6"]).await;
    let k = kinds(&r);
    assert!(k.contains(&(6, AuditProblemKind::HashMismatch)), "{k:?}");
    assert!(
        k.contains(&(7, AuditProblemKind::PrevHashMismatch)),
        "{k:?}"
    );
}

#[tokio::test]
async fn a_deleted_middle_record_is_found() {
    let (r, _) = damaged(&["DELETE FROM audit_events WHERE seq = 5"]).await;
    let k = kinds(&r);
    assert!(k.contains(&(6, AuditProblemKind::Gap)), "{k:?}");
    assert!(
        k.contains(&(6, AuditProblemKind::PrevHashMismatch)),
        "{k:?}"
    );
    let gap = r.problems.iter().find(|p| p.kind == AuditProblemKind::Gap);
    assert!(
        gap.is_some_and(|p| p.detail.contains("5..=5")),
        "{:?}",
        r.problems
    );
}

#[tokio::test]
async fn an_inserted_record_is_found() {
    // Make room after record 3 by renumbering 4..=10 (highest first, so the key stays unique), then
    // insert a forged record 4 that links correctly to record 3.
    for (engine, db, url, _keep) in engines().await {
        eprintln!("engine: {engine}");
        let recs = fill(&db, 10).await;
        let pool = raw(&url).await;
        for seq in (4..=10).rev() {
            exec(
                &pool,
                &format!("UPDATE audit_events SET seq = seq + 1 WHERE seq = {seq}"),
            )
            .await;
        }
        let forged = canonical_json(&event(99, "DeleteReplicationJob", "mallory", T0 + 3));
        let hash = audit_hash(&recs[2].hash, 4, T0 + 3, &forged);
        sqlx::query(
        "INSERT INTO audit_events (seq, chain_version, event_id, event_time, event_name, service_name, \
         event_type, event_rw, access_key_id, user_name, role_name, source_ip, error_code, resource_type, \
         resource_name, request_id, body, prev_hash, hash) VALUES (4, 1, 'E-00099', $1, \
         'DeleteReplicationJob', 'Smc', 'ApiCall', 'Write', 'LTAI-mallory', 'mallory', NULL, '127.0.0.1', \
         NULL, 'ACS::SMC::ReplicationJob', 'j-99', 'R-99', $2, $3, $4)",
    )
    .bind(T0 + 3)
    .bind(&forged)
    .bind(&recs[2].hash)
    .bind(&hash)
    .execute(&pool)
    .await
    .expect("insert forged record");
        let r = db.audit_verify(&[]).await.expect("verify");
        let k = kinds(&r);
        // The forged record itself is consistent; the record after it is not (its seq is in its hash, and
        // its prev_hash names record 3), and the head anchor now names a record whose hash differs.
        assert!(!k.iter().any(|(s, _)| *s == 4), "{k:?}");
        assert!(k.contains(&(5, AuditProblemKind::HashMismatch)), "{k:?}");
        assert!(
            k.contains(&(5, AuditProblemKind::PrevHashMismatch)),
            "{k:?}"
        );
        assert!(k.contains(&(10, AuditProblemKind::AnchorMismatch)), "{k:?}");
    }
}

#[tokio::test]
async fn reordered_records_are_found() {
    let (r, _) = damaged(&[
        "UPDATE audit_events SET seq = 1000 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 4",
        "UPDATE audit_events SET seq = 4 WHERE seq = 1000",
    ])
    .await;
    let k = kinds(&r);
    assert!(k.contains(&(3, AuditProblemKind::HashMismatch)), "{k:?}");
    assert!(
        k.contains(&(3, AuditProblemKind::PrevHashMismatch)),
        "{k:?}"
    );
    assert!(k.contains(&(4, AuditProblemKind::HashMismatch)), "{k:?}");
}

#[tokio::test]
async fn an_edited_index_column_is_found() {
    let (r, _) = damaged(&["UPDATE audit_events SET user_name = 'alice' WHERE seq = 3"]).await;
    assert_eq!(
        kinds(&r),
        [(3, AuditProblemKind::ColumnMismatch)],
        "{:?}",
        r.problems
    );
}

#[tokio::test]
async fn a_truncated_tail_is_found_by_the_head_anchor() {
    let (r, _) = damaged(&["DELETE FROM audit_events WHERE seq > 7"]).await;
    assert_eq!(
        kinds(&r),
        [(10, AuditProblemKind::Truncated)],
        "{:?}",
        r.problems
    );
    assert!(r.problems[0].detail.contains("8..=10"), "{}", r.problems[0]);
    assert_eq!(r.count, 7);
}

#[tokio::test]
async fn a_truncated_tail_with_a_forged_head_is_found_by_an_outside_anchor() {
    for (engine, db, url, _keep) in engines().await {
        eprintln!("engine: {engine}");
        let recs = fill(&db, 10).await;
        let outside = AuditAnchor::new(10, &recs[9].hash);
        let pool = raw(&url).await;
        exec(&pool, "DELETE FROM audit_events WHERE seq > 7").await;
        let forged = serde_json::to_string(&AuditAnchor::new(7, &recs[6].hash)).expect("json");
        sqlx::query("UPDATE meta SET value = $1 WHERE key = 'audit_head'")
            .bind(forged)
            .execute(&pool)
            .await
            .expect("forge head");
        assert!(
            db.audit_verify(&[]).await.expect("verify").is_ok(),
            "the chain alone cannot tell"
        );
        let r = db
            .audit_verify(&[("audit-head.json".to_owned(), outside.clone())])
            .await
            .expect("verify");
        assert_eq!(
            kinds(&r),
            [(10, AuditProblemKind::Truncated)],
            "{:?}",
            r.problems
        );
        assert!(r.problems[0].detail.contains("audit-head.json"));

        // An outside anchor that lags the head (the server crashed before rewriting it) is fine.
        let lagging = AuditAnchor::new(5, &recs[4].hash);
        let r = db
            .audit_verify(&[("lagging".to_owned(), lagging)])
            .await
            .expect("verify");
        assert!(r.is_ok(), "{:?}", r.problems);
        // A rewritten chain does not match the outside anchor's hash.
        let wrong = AuditAnchor::new(5, &recs[3].hash);
        let r = db
            .audit_verify(&[("copy".to_owned(), wrong)])
            .await
            .expect("verify");
        assert_eq!(kinds(&r), [(5, AuditProblemKind::AnchorMismatch)]);
    }
}

#[tokio::test]
async fn a_deleted_head_anchor_is_found() {
    let (r, _) = damaged(&["DELETE FROM meta WHERE key = 'audit_head'"]).await;
    assert_eq!(
        kinds(&r),
        [(0, AuditProblemKind::BadAnchor)],
        "{:?}",
        r.problems
    );
}

#[tokio::test]
async fn postgres_chain_when_configured() {
    let Some(pg) = common::postgres().await else {
        eprintln!(
            "FERRY_TEST_POSTGRES is not set: the PostgreSQL-only concurrency test is skipped"
        );
        return;
    };
    let url = pg.url.clone();
    let db = Db::open(&url).await.expect("open postgres");
    let before = db.audit_verify(&[]).await.expect("verify").count;
    let other = Db::open(&url).await.expect("second pool");
    let mut tasks = Vec::new();
    for t in 0..6i64 {
        let db = if t % 2 == 0 {
            db.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            for i in 0..10i64 {
                let n = 1_000_000 + std::process::id() as i64 * 1000 + t * 100 + i;
                db.audit_append(&event(n, "StartReplicationJob", "pg", T0 + i))
                    .await
                    .expect("append on postgres");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let r = db.audit_verify(&[]).await.expect("verify");
    assert!(r.is_ok(), "{:?}", r.problems);
    assert_eq!(r.count, before + 60);
    let q = AuditQuery {
        attributes: vec![(AuditKey::User, "pg".into())],
        start: T0,
        end: T0 + 100,
    };
    assert!(lookup_all(&db, &q, 7, AuditDirection::Backward).await.len() >= 60);
}
