//! Leases (migration 0007) on every engine (`common`): one holder at a time, also when many tasks on two
//! pools race for one lease; takeover of an expired lease only, recorded with the previous holder; renewal
//! and release only by the current holder and fencing number.

mod common;

use common::engines;
use ferry_db::*;

#[tokio::test]
async fn one_holder_at_a_time_and_takeover_only_after_expiry() {
    for (engine, db, _keep) in engines().await {
        let a = db
            .lease_acquire("build:r-1", "ra#1", 60)
            .await
            .expect("acquire")
            .expect("free lease is taken");
        assert_eq!(
            (a.fencing, a.taken_over_from.as_deref()),
            (1, None),
            "{engine}"
        );
        assert_eq!(
            db.lease_acquire("build:r-1", "rb#1", 60)
                .await
                .expect("acquire"),
            None,
            "{engine}: a live lease is not taken"
        );
        assert_eq!(
            db.lease_acquire("build:r-1", "ra#1", 60)
                .await
                .expect("acquire"),
            None,
            "{engine}: acquiring twice is not a renewal"
        );
        assert!(db.lease_renew(&a, 60).await.expect("renew"), "{engine}");
        assert_eq!(
            db.lease_holder("build:r-1").await.expect("holder"),
            Some(("ra#1".to_owned(), 1)),
            "{engine}"
        );

        // Released: the next holder takes it at once, and it is not a takeover.
        assert!(db.lease_release(&a).await.expect("release"), "{engine}");
        assert!(!db.lease_release(&a).await.expect("release"), "{engine}");
        assert!(!db.lease_renew(&a, 60).await.expect("renew"), "{engine}");
        let b = db
            .lease_acquire("build:r-1", "rb#1", 0)
            .await
            .expect("acquire")
            .expect("released lease is taken");
        assert_eq!(
            (b.fencing, b.taken_over_from.as_deref()),
            (2, None),
            "{engine}"
        );

        // Expired (TTL 0) and not released: a takeover, recorded with the previous holder.
        let c = db
            .lease_acquire("build:r-1", "rc#1", 60)
            .await
            .expect("acquire")
            .expect("expired lease is taken over");
        assert_eq!(
            (c.fencing, c.taken_over_from.as_deref()),
            (3, Some("rb#1")),
            "{engine}"
        );
        // The old holder can neither renew nor release the new holder's lease.
        assert!(!db.lease_renew(&b, 60).await.expect("renew"), "{engine}");
        assert!(!db.lease_release(&b).await.expect("release"), "{engine}");
        assert_eq!(
            db.lease_holder("build:r-1").await.expect("holder"),
            Some(("rc#1".to_owned(), 3)),
            "{engine}"
        );
        db.lease_note_work(&c).await.expect("note");

        let events = db.lease_event_list("build:").await.expect("events");
        let seen: Vec<(i64, &str, Option<&str>, i64)> = events
            .iter()
            .map(|e| {
                (
                    e.fencing,
                    e.holder.as_str(),
                    e.previous_holder.as_deref(),
                    e.worked,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (1, "ra#1", None, 0),
                (2, "rb#1", None, 0),
                (3, "rc#1", Some("rb#1"), 1)
            ],
            "{engine}"
        );
        // Prefixes are literal: `_` and `%` match only themselves.
        assert!(
            db.lease_event_list("build_")
                .await
                .expect("events")
                .is_empty(),
            "{engine}"
        );
        assert!(
            db.lease_event_list("%").await.expect("events").is_empty(),
            "{engine}"
        );
    }
}

#[tokio::test]
async fn a_restarted_replica_frees_only_its_own_leases() {
    for (engine, db, _keep) in engines().await {
        let mine = db
            .lease_acquire("task:t-1", "r-aa#1", 60)
            .await
            .expect("acquire")
            .expect("taken");
        db.lease_acquire("task:t-2", "r-aa#1", 60)
            .await
            .expect("acquire")
            .expect("taken");
        db.lease_acquire("task:t-3", "r-aab#1", 60)
            .await
            .expect("acquire")
            .expect("taken");
        assert_eq!(
            db.lease_release_all_of("r-aa#").await.expect("release"),
            2,
            "{engine}"
        );
        assert!(!db.lease_renew(&mine, 60).await.expect("renew"), "{engine}");
        assert_eq!(
            db.lease_holder("task:t-1").await.expect("holder"),
            None,
            "{engine}"
        );
        assert_eq!(
            db.lease_holder("task:t-3").await.expect("holder"),
            Some(("r-aab#1".to_owned(), 1)),
            "{engine}"
        );
    }
}

#[tokio::test]
async fn racing_acquirers_on_two_pools_get_one_lease() {
    for (engine, db, keep) in engines().await {
        // A second pool on the same database stands in for a second replica.
        let other = match &keep {
            common::Keep::Sqlite(dir) => Db::open_sqlite(&dir.path().join("t.db")).await,
            common::Keep::Postgres(pg) => pg.open().await,
        }
        .expect("second pool");
        for round in 0..5 {
            let name = format!("race:{round}");
            let mut tasks = Vec::new();
            for t in 0..12 {
                let db = if t % 2 == 0 {
                    db.clone()
                } else {
                    other.clone()
                };
                let name = name.clone();
                tasks.push(tokio::spawn(async move {
                    db.lease_acquire(&name, &format!("r-{t}#1"), 60)
                        .await
                        .expect("acquire")
                }));
            }
            let mut winners = 0;
            for t in tasks {
                winners += usize::from(t.await.expect("task").is_some());
            }
            assert_eq!(winners, 1, "{engine}: round {round}");
            assert_eq!(
                db.lease_event_list(&name).await.expect("events").len(),
                1,
                "{engine}: round {round}"
            );
        }
        other.close().await;
    }
}

/// An announced source reaches every listener, another replica's included (two `Db`s on one database),
/// and only once per announcement; on SQLite there is nothing to listen to and announcing is a no-op.
#[tokio::test]
async fn source_changes_reach_every_listening_replica() {
    for (engine, db, keep) in engines().await {
        let common::Keep::Postgres(pg) = &keep else {
            assert!(
                db.listen_source_changes().await.expect("listen").is_none(),
                "{engine}"
            );
            db.announce_source_changed("s-1").await.expect("announce");
            continue;
        };
        let other = pg.open().await.expect("second replica");
        let mut here = db
            .listen_source_changes()
            .await
            .expect("listen")
            .expect("pg");
        let mut there = other
            .listen_source_changes()
            .await
            .expect("listen")
            .expect("pg");
        db.announce_source_changed("s-1").await.expect("announce");
        other
            .announce_source_changed("s-2")
            .await
            .expect("announce");
        for listener in [&mut here, &mut there] {
            for want in ["s-1", "s-2"] {
                let got = tokio::time::timeout(std::time::Duration::from_secs(10), listener.next())
                    .await
                    .expect("announced within 10 s")
                    .expect("listen");
                assert_eq!(got, SourceChange::Source(want.to_owned()), "{engine}");
            }
        }
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(300), here.next())
                .await
                .is_err(),
            "{engine}: one notification per announcement"
        );
    }
}
