//! The fleet queries (`ferry_db::fleet`) on every engine: batched heartbeat flushes never move a heartbeat
//! backwards, the offline detector's read and guarded mark, the scheduler's "due" and "over image limit"
//! reads against hand-built jobs of every kind, and the per-page batch reads of a Describe call against the
//! per-job reads they replace.

mod common;

use ferry_db::*;

const T0: i64 = 1_700_000_000;
const HOUR: i64 = 3600;

fn source(i: usize) -> SourceRecord {
    SourceRecord {
        id: format!("s-{i:04}"),
        name: format!("host-{i}"),
        description: String::new(),
        state: "Available".into(),
        error_code: None,
        status_info: None,
        agent_version: "1".into(),
        inventory: "{}".into(),
        prechecks: "[]".into(),
        heartbeat_at: T0,
        created_at: T0 + i as i64,
        token_id: "at-1".into(),
        agent_key_id: format!("ak-{i}"),
        agent_secret_hash: "h".into(),
        job_id: None,
    }
}

fn job(i: usize, status: &str) -> JobRecord {
    JobRecord {
        id: format!("j-{i:04}"),
        name: format!("job-{i}"),
        description: String::new(),
        source_id: format!("s-{i:04}"),
        region_id: "local".into(),
        status: status.into(),
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
        created_at: T0 + i as i64,
        start_time: None,
        end_time: None,
        scheduled_start_time: None,
        valid_time: None,
        client_token: None,
    }
}

fn run(job_id: &str, seq: i64, started_at: i64) -> RunRecord {
    RunRecord {
        id: format!("r-{job_id}-{seq}"),
        job_id: job_id.into(),
        seq,
        kind: "Manual".into(),
        status: "Succeeded".into(),
        disks: "[0]".into(),
        chunk_size: 1 << 20,
        started_at,
        ended_at: Some(started_at + 10),
        image_id: None,
        progress: "{}".into(),
        error: None,
    }
}

fn image(id: &str, job_id: &str, status: &str) -> ImageRecord {
    ImageRecord {
        id: id.into(),
        name: id.into(),
        region_id: "local".into(),
        job_id: Some(job_id.into()),
        run_id: None,
        status: status.into(),
        progress: 100,
        size_gib: 1,
        platform: String::new(),
        os_name: String::new(),
        architecture: String::new(),
        boot_mode: String::new(),
        description: String::new(),
        error: None,
        created_at: T0,
    }
}

async fn register(db: &Db, n: usize) {
    db.activation_code_create(&ActivationCodeRecord {
        id: "at-1".into(),
        name: "n".into(),
        description: String::new(),
        code_hash: "hash".into(),
        max_count: 1000,
        registered_count: 0,
        ttl_days: 30,
        disabled: 0,
        created_at: now(),
    })
    .await
    .expect("code");
    for i in 0..n {
        assert!(
            db.source_register("at-1", &source(i), now())
                .await
                .expect("register")
        );
    }
}

fn seen(id: &str, at: i64, version: &str) -> HeartbeatSeen {
    HeartbeatSeen {
        source_id: id.into(),
        at,
        agent_version: version.into(),
    }
}

#[tokio::test]
async fn heartbeat_flushes_move_forward_only_and_the_detector_marks_only_silent_sources() {
    for (engine, db, _keep) in common::engines().await {
        register(&db, 4).await;
        db.source_heartbeats_flush(&[
            seen("s-0000", T0 + 100, "2"),
            seen("s-0001", T0 + 100, "2"),
            seen("s-gone", T0 + 100, "2"),
        ])
        .await
        .expect("flush");
        // A late flush from another replica carrying an older beat does not move the time back.
        db.source_heartbeats_flush(&[seen("s-0000", T0 + 50, "3")])
            .await
            .expect("flush");
        let s0 = db.source_get("s-0000").await.expect("get").expect("s0");
        assert_eq!(s0.heartbeat_at, T0 + 100, "{engine}");
        assert_eq!(s0.agent_version, "3", "{engine}");
        db.source_set_state("s-0003", "Deleting", None, None)
            .await
            .expect("state");

        let silent: Vec<String> = db
            .source_list_silent(T0 + 60)
            .await
            .expect("silent")
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(
            silent,
            ["s-0002"],
            "{engine}: only the silent, watchable source"
        );

        // The mark is guarded by the same cut-off: a beat flushed after the read wins.
        db.source_heartbeats_flush(&[seen("s-0002", T0 + 70, "2")])
            .await
            .expect("flush");
        assert!(
            !db.source_mark_offline("s-0002", T0 + 60, "SourceServer.Offline", "{}")
                .await
                .expect("mark"),
            "{engine}"
        );
        assert!(
            db.source_mark_offline("s-0002", T0 + 80, "SourceServer.Offline", "{}")
                .await
                .expect("mark"),
            "{engine}"
        );
        let s2 = db.source_get("s-0002").await.expect("get").expect("s2");
        assert_eq!(s2.state, "Unavailable", "{engine}");
        assert_eq!(s2.error_code.as_deref(), Some("SourceServer.Offline"));
        // Already Unavailable: neither listed nor marked again.
        assert!(
            db.source_list_silent(T0 + 1000)
                .await
                .expect("silent")
                .iter()
                .all(|s| s.id != "s-0002" && s.id != "s-0003"),
            "{engine}"
        );
    }
}

#[tokio::test]
async fn the_scheduler_reads_exactly_the_jobs_with_something_due() {
    let now = T0 + 30 * 24 * HOUR;
    let purge_before = now - 7 * 24 * HOUR;
    for (engine, db, _keep) in common::engines().await {
        let mut jobs = Vec::new();
        let mut add = |i: usize, status: &str, f: &dyn Fn(&mut JobRecord)| {
            let mut j = job(i, status);
            f(&mut j);
            jobs.push(j);
        };
        add(0, "Deleting", &|_| {});
        add(1, "Expired", &|j| j.valid_time = Some(purge_before - 1));
        add(2, "Expired", &|j| j.valid_time = Some(purge_before + 1)); // not yet purged
        add(3, "Stopped", &|j| j.valid_time = Some(now)); // expires now
        add(4, "Running", &|j| j.valid_time = Some(now - 1)); // running: never expired
        add(5, "Ready", &|j| j.scheduled_start_time = Some(now - 1));
        add(6, "Ready", &|j| j.scheduled_start_time = Some(now + 1)); // later
        let incremental = |j: &mut JobRecord| {
            j.run_once = 0;
            j.frequency = Some(2);
        };
        add(7, "Waiting", &incremental); // last run 2 h ago: due
        add(8, "Waiting", &incremental); // last run 1 h ago
        add(9, "Waiting", &incremental); // no run yet
        add(10, "Waiting", &|_| {}); // one-shot: nothing to schedule
        add(11, "Expired", &|j| j.valid_time = Some(now)); // expired_at in settings decides
        add(12, "Finished", &|_| {});
        register(&db, jobs.len()).await;
        for j in &jobs {
            assert!(
                db.job_create_with_settings(j, &JobSettingsRecord::empty(&j.id))
                    .await
                    .expect("job"),
                "{engine}"
            );
        }
        let mut s11 = JobSettingsRecord::empty("j-0011");
        s11.expired_at = Some(purge_before - 10);
        db.job_settings_put(&s11).await.expect("settings");
        db.run_create(&run("j-0007", 1, now - 5 * HOUR))
            .await
            .expect("run");
        db.run_create(&run("j-0007", 2, now - 2 * HOUR))
            .await
            .expect("run");
        db.run_create(&run("j-0008", 1, now - 3 * HOUR))
            .await
            .expect("run");
        db.run_create(&run("j-0008", 2, now - HOUR))
            .await
            .expect("run");

        let due: Vec<String> = db
            .job_list_due(now, purge_before)
            .await
            .expect("due")
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(
            due,
            ["j-0000", "j-0001", "j-0003", "j-0005", "j-0007", "j-0011"],
            "{engine}"
        );
    }
}

#[tokio::test]
async fn image_retention_reads_only_jobs_over_their_limit() {
    for (engine, db, _keep) in common::engines().await {
        register(&db, 3).await;
        for (i, max) in [(0, Some(1)), (1, Some(2)), (2, None)] {
            let mut j = job(i, "Waiting");
            j.run_once = 0;
            j.max_images = max;
            assert!(
                db.job_create_with_settings(&j, &JobSettingsRecord::empty(&j.id))
                    .await
                    .expect("job"),
                "{engine}"
            );
            for k in 0..2 {
                db.image_create(&image(&format!("m-{i}-{k}"), &j.id, "Available"))
                    .await
                    .expect("image");
            }
            // Images still being built do not count.
            db.image_create(&image(&format!("m-{i}-c"), &j.id, "Creating"))
                .await
                .expect("image");
        }
        let over: Vec<String> = db
            .job_list_over_image_limit()
            .await
            .expect("over")
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(over, ["j-0000"], "{engine}");
    }
}

#[tokio::test]
async fn page_batch_reads_equal_the_per_job_reads() {
    for (engine, db, _keep) in common::engines().await {
        let ids: Vec<String> = (0..5).map(|i| format!("j-{i:04}")).collect();
        register(&db, ids.len()).await;
        for (i, id) in ids.iter().enumerate() {
            let j = job(i, "Waiting");
            let mut s = JobSettingsRecord::empty(id);
            s.instance_id = Some(format!("i-{i}"));
            if i == 4 {
                // A job without a settings row (job_create writes none) reads as the empty settings.
                assert!(db.job_create(&j).await.expect("job"), "{engine}");
            } else {
                assert!(
                    db.job_create_with_settings(&j, &s).await.expect("job"),
                    "{engine}"
                );
            }
            for seq in 1..=(i as i64) {
                db.run_create(&run(id, seq, T0 + seq)).await.expect("run");
            }
        }
        let runs = db.run_list_for_jobs(&ids).await.expect("runs");
        let settings = db.job_settings_for_jobs(&ids).await.expect("settings");
        for id in &ids {
            let one: Vec<String> = db
                .run_list(id)
                .await
                .expect("run_list")
                .into_iter()
                .map(|r| r.id)
                .collect();
            let batch: Vec<String> = runs
                .get(id)
                .map(|v| v.iter().map(|r| r.id.clone()).collect())
                .unwrap_or_default();
            assert_eq!(batch, one, "{engine} {id}");
            let s = db.job_settings_get(id).await.expect("settings");
            let b = &settings[id];
            assert_eq!(
                (&b.instance_id, &b.settings, b.cutover, b.expired_at),
                (&s.instance_id, &s.settings, s.cutover, s.expired_at),
                "{engine} {id}"
            );
        }
        assert!(db.run_list_for_jobs(&[]).await.expect("empty").is_empty());
    }
}

/// A flush of more beats than one statement takes writes every one of them, on both engines.
#[tokio::test]
async fn a_flush_larger_than_one_statement_writes_every_beat() {
    let n = 2 * HEARTBEATS_PER_STATEMENT + 3;
    for (engine, db, _keep) in common::engines().await {
        register(&db, n).await;
        let beats: Vec<HeartbeatSeen> = (0..n)
            .map(|i| seen(&format!("s-{i:04}"), T0 + 1000 + i as i64, "7"))
            .collect();
        db.source_heartbeats_flush(&beats).await.expect("flush");
        for (i, b) in beats.iter().enumerate() {
            let s = db
                .source_get(&b.source_id)
                .await
                .expect("get")
                .expect("source");
            assert_eq!(
                (s.heartbeat_at, s.agent_version.as_str()),
                (T0 + 1000 + i as i64, "7"),
                "{engine}: {}",
                b.source_id
            );
        }
    }
}

/// Migration 0012 moves `heartbeat_at` and `agent_version` out of `sources`: a database written by the
/// schema before it keeps every source with its last beat, and the moved rows then behave as new ones
/// (flushed forward, deleted with their source).
#[tokio::test]
async fn sources_of_a_schema_11_database_keep_their_heartbeat_through_migration_12() {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = common::postgres().await;
    let mut urls = vec![format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("v11.db").display()
    )];
    urls.extend(pg.as_ref().map(|p| p.url.clone()));

    // The migrations up to and including 0011, as a binary of that schema applied them.
    let old = dir.path().join("migrations-v11");
    std::fs::create_dir(&old).expect("mkdir");
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for entry in std::fs::read_dir(&all).expect("read migrations") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name.as_str() < "0012" {
            std::fs::copy(&path, old.join(&name)).expect("copy migration");
        }
    }
    let v11 = sqlx::migrate::Migrator::new(old.as_path())
        .await
        .expect("migrations up to 0011");

    for url in urls {
        let pool = sqlx::AnyPool::connect(&url).await.expect("connect");
        v11.run(&pool).await.expect("schema 11");
        for (id, at, version) in [("s-old1", T0, "0.9.0"), ("s-old2", T0 + 5, "0.9.1")] {
            sqlx::query(
                "INSERT INTO sources (id, name, description, state, agent_version, inventory, prechecks, \
                 heartbeat_at, created_at, token_id, agent_key_id, agent_secret_hash) \
                 VALUES ($1, $1, '', 'Available', $3, '{}', '[]', $2, $2, 'at-1', $1, 'h')",
            )
            .bind(id)
            .bind(at)
            .bind(version)
            .execute(&pool)
            .await
            .expect("insert a schema-11 source");
        }
        pool.close().await;

        let db = Db::open(&url).await.expect("open and migrate to 12");
        let s1 = db.source_get("s-old1").await.expect("get").expect("kept");
        assert_eq!(
            (s1.heartbeat_at, s1.agent_version.as_str()),
            (T0, "0.9.0"),
            "{url}"
        );
        let (page, total) = db
            .source_list(&SourceFilter::default(), 0, 50)
            .await
            .expect("list");
        assert_eq!(total, 2, "{url}");
        let listed: Vec<(&str, i64, &str)> = page
            .iter()
            .map(|s| (s.id.as_str(), s.heartbeat_at, s.agent_version.as_str()))
            .collect();
        assert_eq!(
            listed,
            [("s-old1", T0, "0.9.0"), ("s-old2", T0 + 5, "0.9.1")],
            "{url}"
        );

        db.source_heartbeats_flush(&[seen("s-old2", T0 + 60, "1.0.0")])
            .await
            .expect("flush");
        let s2 = db.source_get("s-old2").await.expect("get").expect("kept");
        assert_eq!(
            (s2.heartbeat_at, s2.agent_version.as_str()),
            (T0 + 60, "1.0.0"),
            "{url}"
        );
        assert!(db.source_delete("s-old1").await.expect("delete"), "{url}");
        assert_eq!(
            db.source_count_by_heartbeat(T0 + 30).await.expect("count"),
            (1, 0),
            "the deleted source's beat went with it ({url})"
        );
        db.close().await;
    }
}
