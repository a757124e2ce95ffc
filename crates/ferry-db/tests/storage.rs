//! The storage test suite: every test runs against SQLite and, when FERRY_TEST_POSTGRES names a test
//! cluster (`scripts/pg-test.sh`), against a fresh PostgreSQL database too (`common`), through the
//! data-access layer only.

mod common;

use common::engines;
use ferry_db::*;

fn code(id: &str, max: i64, created_at: i64) -> ActivationCodeRecord {
    ActivationCodeRecord {
        id: id.into(),
        name: "n".into(),
        description: String::new(),
        code_hash: format!("hash-{id}"),
        max_count: max,
        registered_count: 0,
        ttl_days: 30,
        disabled: 0,
        created_at,
    }
}

fn source(id: &str) -> SourceRecord {
    SourceRecord {
        id: id.into(),
        name: format!("host-{id}"),
        description: String::new(),
        state: "Available".into(),
        error_code: None,
        status_info: None,
        agent_version: "1".into(),
        inventory: "{}".into(),
        prechecks: "[]".into(),
        heartbeat_at: now(),
        created_at: now(),
        token_id: "at-1".into(),
        agent_key_id: format!("ak-{id}"),
        agent_secret_hash: "h".into(),
        job_id: None,
    }
}

fn job(id: &str, source_id: &str) -> JobRecord {
    JobRecord {
        id: id.into(),
        name: format!("job-{id}"),
        description: String::new(),
        source_id: source_id.into(),
        region_id: "local".into(),
        status: "Ready".into(),
        business_status: None,
        error_code: None,
        status_info: None,
        job_type: 0,
        target_type: "Image".into(),
        image_name: "img".into(),
        image_id: None,
        run_once: 1,
        frequency: None,
        max_images: None,
        replication_parameters: String::new(),
        progress: 0.0,
        created_at: now(),
        start_time: None,
        end_time: None,
        scheduled_start_time: None,
        valid_time: None,
        client_token: None,
    }
}

#[tokio::test]
async fn activation_code_uses_are_counted_and_bounded() {
    for (engine, db, _keep) in engines().await {
        db.activation_code_create(&code("at-a", 1, now()))
            .await
            .expect("create");
        assert!(
            db.source_register("at-a", &source("s-1"), now())
                .await
                .expect("register"),
            "{engine}"
        );
        // Exhausted: the second registration changes nothing.
        assert!(
            !db.source_register("at-a", &source("s-2"), now())
                .await
                .expect("register"),
            "{engine}"
        );
        assert!(
            db.source_get("s-2").await.expect("get").is_none(),
            "{engine}"
        );
        let c = db
            .activation_code_by_hash("hash-at-a")
            .await
            .expect("get")
            .expect("code");
        assert_eq!(c.registered_count, 1, "{engine}");

        // Expired and disabled codes register nothing either.
        db.activation_code_create(&code("at-old", 5, now() - 31 * 86_400))
            .await
            .expect("create");
        assert!(
            !db.source_register("at-old", &source("s-3"), now())
                .await
                .expect("register"),
            "{engine}"
        );
        db.activation_code_create(&code("at-off", 5, now()))
            .await
            .expect("create");
        assert!(db.activation_code_disable("at-off").await.expect("disable"));
        assert!(
            !db.source_register("at-off", &source("s-4"), now())
                .await
                .expect("register"),
            "{engine}"
        );
        let (all, total) = db
            .source_list(&SourceFilter::default(), 0, 100)
            .await
            .expect("list");
        assert_eq!((all.len(), total), (1, 1), "{engine}");
    }
}

#[tokio::test]
async fn a_source_has_at_most_one_open_job() {
    for (engine, db, _keep) in engines().await {
        db.activation_code_create(&code("at-a", 5, now()))
            .await
            .expect("create");
        db.source_register("at-a", &source("s-1"), now())
            .await
            .expect("register");
        assert!(
            db.job_create(&job("j-1", "s-1")).await.expect("create"),
            "{engine}"
        );
        assert!(
            !db.job_create(&job("j-2", "s-1")).await.expect("create"),
            "{engine}"
        );
        assert!(db.job_get("j-2").await.expect("get").is_none(), "{engine}");
        let s = db.source_get("s-1").await.expect("get").expect("source");
        assert_eq!(
            (s.state.as_str(), s.job_id.as_deref()),
            ("InUse", Some("j-1")),
            "{engine}"
        );

        // Guarded transitions: only from the stated status, once.
        assert!(
            db.job_transition("j-1", &["Ready"], "Running", Some("Preparing"))
                .await
                .expect("t")
        );
        assert!(
            !db.job_transition("j-1", &["Ready"], "Running", Some("Preparing"))
                .await
                .expect("t")
        );
        assert!(
            !db.job_transition("j-1", &["Running/Syncing"], "Stopped", None)
                .await
                .expect("t")
        );
        assert!(
            db.job_transition("j-1", &["Running/Preparing"], "Stopped", None)
                .await
                .expect("t")
        );

        // Finishing a one-shot job frees its source.
        db.job_complete("j-1", "m-1", "Finished", now())
            .await
            .expect("complete");
        let s = db.source_get("s-1").await.expect("get").expect("source");
        assert_eq!(
            (s.state.as_str(), s.job_id),
            ("Available", None),
            "{engine}"
        );
    }
}

#[tokio::test]
async fn snapshot_commit_is_idempotent_per_run_and_disk() {
    for (engine, db, _keep) in engines().await {
        let snap = |id: &str, root: &str| SnapshotRecord {
            id: id.into(),
            run_id: "r-1".into(),
            job_id: "j-1".into(),
            source_id: "s-1".into(),
            disk_index: 0,
            disk_size: 1 << 30,
            chunk_size: 1 << 20,
            root_digest: root.into(),
            created_at: now(),
        };
        let first = db
            .snapshot_commit(&snap("sp-1", "aa"))
            .await
            .expect("commit");
        let retry = db
            .snapshot_commit(&snap("sp-2", "bb"))
            .await
            .expect("commit");
        assert_eq!(
            (first.id.as_str(), retry.id.as_str()),
            ("sp-1", "sp-1"),
            "{engine}"
        );
        assert_eq!(
            retry.root_digest, "aa",
            "{engine}: a retried commit must not overwrite the first"
        );
    }
}

#[tokio::test]
async fn a_nonce_is_accepted_once() {
    for (engine, db, _keep) in engines().await {
        assert!(
            db.nonce_use("k:n1", now() + 1800).await.expect("nonce"),
            "{engine}"
        );
        assert!(
            !db.nonce_use("k:n1", now() + 1800).await.expect("nonce"),
            "{engine}"
        );
        assert!(
            db.nonce_use("k:n2", now() + 1800).await.expect("nonce"),
            "{engine}"
        );
    }
}

#[tokio::test]
async fn a_nonce_used_at_once_by_many_callers_is_granted_to_one() {
    for (engine, db, _keep) in engines().await {
        // Twenty callers at the same moment land in one or two group-committed batches: a reuse inside a
        // batch must be refused as surely as one across batches.
        let mut tasks = Vec::new();
        for i in 0..20 {
            let db = db.clone();
            let nonce = if i % 2 == 0 { "k:same" } else { "k:other" }.to_owned();
            tasks.push(tokio::spawn(async move {
                db.nonce_use(&nonce, now() + 1800).await.expect("nonce")
            }));
        }
        let mut granted = 0;
        for t in tasks {
            granted += usize::from(t.await.expect("task"));
        }
        assert_eq!(granted, 2, "{engine}: each nonce is granted exactly once");
    }
}

#[tokio::test]
async fn an_expired_nonce_may_be_used_again() {
    for (engine, db, _keep) in engines().await {
        // Expired rows are purged only now and then; one still stored must not refuse a new use.
        assert!(
            db.nonce_use("k:old", now() - 5).await.expect("nonce"),
            "{engine}"
        );
        assert!(
            db.nonce_use("k:old", now() + 1800).await.expect("nonce"),
            "{engine}: an expired nonce is free again"
        );
        assert!(
            !db.nonce_use("k:old", now() + 1800).await.expect("nonce"),
            "{engine}: and then used"
        );
    }
}
