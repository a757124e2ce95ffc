//! `source_list` and `job_list` on both engines: every filter, the total count and the page boundaries,
//! checked against what the same records say when filtered in Rust. PostgreSQL runs when
//! FERRY_TEST_POSTGRES is set (the test creates and drops its own database there, so that the counts are
//! its own).

use ferry_db::testing::PgTestDb;
use ferry_db::*;

/// The engines under test, each with a fresh, empty database (the PostgreSQL one is dropped with its
/// `PgTestDb`).
async fn engines() -> Vec<(String, Db, Option<PgTestDb>)> {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let mut dbs = vec![(
        "sqlite".to_owned(),
        Db::open_sqlite(&dir.join("t.db"))
            .await
            .expect("open sqlite"),
        None,
    )];
    if let Some(pg) = PgTestDb::create()
        .await
        .expect("create a database on FERRY_TEST_POSTGRES")
    {
        let db = pg.open().await.expect("open postgres");
        dbs.push(("postgres".to_owned(), db, Some(pg)));
    }
    dbs
}

/// What a filter case keeps, applied in Rust.
type Keep<'a, T> = Box<dyn Fn(&T) -> bool + 'a>;

fn source(i: usize) -> SourceRecord {
    SourceRecord {
        id: format!("s-{i:04}"),
        name: format!("host-{}", i % 7),
        description: String::new(),
        state: ["Available", "InUse", "Unavailable"][i % 3].into(),
        error_code: None,
        status_info: None,
        agent_version: "1".into(),
        inventory: "{}".into(),
        prechecks: "[]".into(),
        heartbeat_at: 1,
        // Several sources share a creation second: the ID breaks the tie, so the order is total.
        created_at: 1_700_000_000 + (i as i64) / 3,
        token_id: "at-1".into(),
        agent_key_id: format!("ak-{i}"),
        agent_secret_hash: "h".into(),
        job_id: None,
    }
}

fn job(i: usize, source_id: &str) -> JobRecord {
    JobRecord {
        id: format!("j-{i:04}"),
        name: format!("job-{}", i % 5),
        description: String::new(),
        source_id: source_id.into(),
        region_id: ["local", "other"][i % 2].into(),
        status: "Ready".into(),
        business_status: None,
        error_code: None,
        status_info: None,
        job_type: (i % 4) as i64,
        target_type: "Image".into(),
        image_name: "img".into(),
        image_id: None,
        run_once: 1,
        frequency: None,
        max_images: None,
        replication_parameters: String::new(),
        progress: 0.0,
        created_at: 1_700_000_000 + (i as i64) / 2,
        start_time: None,
        end_time: None,
        scheduled_start_time: None,
        valid_time: None,
        client_token: None,
    }
}

/// Every page of `filter` at `size`, concatenated, with the totals each page reported.
async fn all_pages_sources(db: &Db, filter: &SourceFilter, size: i64) -> (Vec<String>, Vec<i64>) {
    let (mut ids, mut totals, mut offset) = (Vec::new(), Vec::new(), 0);
    loop {
        let (page, total) = db.source_list(filter, offset, size).await.expect("list");
        totals.push(total);
        if page.is_empty() {
            return (ids, totals);
        }
        assert!(page.len() as i64 <= size);
        ids.extend(page.into_iter().map(|s| s.id));
        offset += size;
    }
}

#[tokio::test]
async fn source_and_job_lists_filter_count_and_page_in_sql() {
    const N: usize = 120;
    for (engine, db, pg) in engines().await {
        let code = ActivationCodeRecord {
            id: "at-1".into(),
            name: "n".into(),
            description: String::new(),
            code_hash: "hash".into(),
            max_count: 1000,
            registered_count: 0,
            ttl_days: 30,
            disabled: 0,
            created_at: now(),
        };
        db.activation_code_create(&code).await.expect("code");
        let sources: Vec<SourceRecord> = (0..N).map(source).collect();
        for s in &sources {
            assert!(
                db.source_register("at-1", s, now())
                    .await
                    .expect("register")
            );
        }
        // Jobs on every other Available source (job_create needs Available); their sources become InUse.
        let mut jobs = Vec::new();
        for (i, s) in sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == "Available")
        {
            let j = job(i, &s.id);
            assert!(db.job_create(&j).await.expect("job"), "{engine}");
            let mut settings = JobSettingsRecord::empty(&j.id);
            settings.instance_id = Some(format!("i-{}", i % 6));
            db.job_settings_put(&settings).await.expect("settings");
            jobs.push((j, settings.instance_id));
        }
        let sources: Vec<SourceRecord> = {
            let mut v = Vec::new();
            for s in &sources {
                v.push(db.source_get(&s.id).await.expect("get").expect("source"));
            }
            v
        };
        let order = |a: &SourceRecord| (a.created_at, a.id.clone());
        let mut expected_all: Vec<&SourceRecord> = sources.iter().collect();
        expected_all.sort_by_key(|s| order(s));

        // No filter: pages of 50 cover everything once, in creation order, each reporting the total.
        let (ids, totals) = all_pages_sources(&db, &SourceFilter::default(), 50).await;
        let want: Vec<String> = expected_all.iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids, want, "{engine}");
        assert!(
            totals.iter().all(|t| *t == N as i64),
            "{engine}: {totals:?}"
        );

        // Each filter alone and combined, against the same filter applied in Rust.
        let job_type_of = |job_id: &Option<String>| {
            jobs.iter()
                .find(|(j, _)| Some(&j.id) == job_id.as_ref())
                .map(|(j, _)| j.job_type)
        };
        let cases: Vec<(SourceFilter, Keep<'_, SourceRecord>)> = vec![
            (
                SourceFilter {
                    state: Some("InUse".into()),
                    ..Default::default()
                },
                Box::new(|s| s.state == "InUse"),
            ),
            (
                SourceFilter {
                    name: Some("host-3".into()),
                    ..Default::default()
                },
                Box::new(|s| s.name == "host-3"),
            ),
            (
                SourceFilter {
                    ids: vec![
                        "s-0001".into(),
                        "s-0007".into(),
                        "s-0100".into(),
                        "s-9999".into(),
                    ],
                    state: Some("Unavailable".into()),
                    ..Default::default()
                },
                Box::new(|s| {
                    ["s-0001", "s-0007", "s-0100"].contains(&s.id.as_str())
                        && s.state == "Unavailable"
                }),
            ),
            (
                SourceFilter {
                    job_id: Some("j-0003".into()),
                    ..Default::default()
                },
                Box::new(|s| s.job_id.as_deref() == Some("j-0003")),
            ),
            (
                SourceFilter {
                    related_job_types: vec![1, 3],
                    name: Some("host-2".into()),
                    ..Default::default()
                },
                Box::new(move |s| {
                    s.name == "host-2" && job_type_of(&s.job_id).is_some_and(|t| t == 1 || t == 3)
                }),
            ),
        ];
        for (n, (filter, keep)) in cases.iter().enumerate() {
            let want: Vec<String> = expected_all
                .iter()
                .filter(|s| keep(s))
                .map(|s| s.id.clone())
                .collect();
            assert!(
                !want.is_empty() || n == 2,
                "{engine}: case {n} matches nothing"
            );
            let (ids, totals) = all_pages_sources(&db, filter, 7).await;
            assert_eq!(ids, want, "{engine}: case {n}");
            assert!(
                totals.iter().all(|t| *t == want.len() as i64),
                "{engine}: case {n}"
            );
        }

        // Jobs: a middle page, and every filter against Rust.
        let mut all_jobs: Vec<&JobRecord> = jobs.iter().map(|(j, _)| j).collect();
        all_jobs.sort_by_key(|j| (j.created_at, j.id.clone()));
        let (page, total) = db
            .job_list(&JobFilter::default(), 10, 10)
            .await
            .expect("jobs");
        assert_eq!(total, all_jobs.len() as i64, "{engine}");
        let want: Vec<&str> = all_jobs[10..20].iter().map(|j| j.id.as_str()).collect();
        let got: Vec<&str> = page.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(got, want, "{engine}");
        let instance_of = |id: &str| {
            jobs.iter()
                .find(|(j, _)| j.id == id)
                .and_then(|(_, i)| i.clone())
        };
        let job_cases: Vec<(JobFilter, Keep<'_, JobRecord>)> = vec![
            (
                JobFilter {
                    region_id: Some("other".into()),
                    job_type: Some(1),
                    ..Default::default()
                },
                Box::new(|j| j.region_id == "other" && j.job_type == 1),
            ),
            (
                JobFilter {
                    name: Some("job-2".into()),
                    status: Some("Ready".into()),
                    ..Default::default()
                },
                Box::new(|j| j.name == "job-2"),
            ),
            (
                JobFilter {
                    source_ids: vec![all_jobs[0].source_id.clone(), all_jobs[5].source_id.clone()],
                    ..Default::default()
                },
                Box::new(|j| {
                    j.source_id == all_jobs[0].source_id || j.source_id == all_jobs[5].source_id
                }),
            ),
            (
                JobFilter {
                    instance_ids: vec!["i-0".into(), "i-3".into()],
                    ..Default::default()
                },
                Box::new(move |j| instance_of(&j.id).is_some_and(|i| i == "i-0" || i == "i-3")),
            ),
            (
                JobFilter {
                    business_status: Some("Syncing".into()),
                    ..Default::default()
                },
                Box::new(|_| false),
            ),
        ];
        for (n, (filter, keep)) in job_cases.iter().enumerate() {
            let want: Vec<&str> = all_jobs
                .iter()
                .filter(|j| keep(j))
                .map(|j| j.id.as_str())
                .collect();
            let (page, total) = db.job_list(filter, 0, i64::MAX).await.expect("jobs");
            let got: Vec<&str> = page.iter().map(|j| j.id.as_str()).collect();
            assert_eq!(got, want, "{engine}: job case {n}");
            assert_eq!(total, want.len() as i64, "{engine}: job case {n}");
        }
        db.close().await;
        drop(pg);
    }
}
