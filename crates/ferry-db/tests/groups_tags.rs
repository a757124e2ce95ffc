//! Storage tests of workgroups and tags. They run against SQLite, and against a fresh PostgreSQL database
//! per test too when FERRY_TEST_POSTGRES names a test cluster (`common`). IDs still carry a per-run suffix,
//! which keeps the tests correct on a shared database as well.

use std::time::{SystemTime, UNIX_EPOCH};

mod common;

use common::engines;
use ferry_db::*;

/// A suffix unique to this process and call, for IDs in a possibly shared database.
fn uniq() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}{nanos}", std::process::id())
}

async fn add_source(db: &Db, id: &str) {
    let code = format!("at-{id}");
    db.activation_code_create(&ActivationCodeRecord {
        id: code.clone(),
        name: "n".into(),
        description: String::new(),
        code_hash: format!("hash-{id}"),
        max_count: 1,
        registered_count: 0,
        ttl_days: 30,
        disabled: 0,
        created_at: now(),
    })
    .await
    .expect("code");
    let s = SourceRecord {
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
        token_id: code.clone(),
        agent_key_id: format!("ak-{id}"),
        agent_secret_hash: "h".into(),
        job_id: None,
    };
    assert!(
        db.source_register(&code, &s, now())
            .await
            .expect("register")
    );
}

fn group(id: &str, token: Option<&str>) -> WorkgroupRecord {
    WorkgroupRecord {
        id: id.into(),
        name: format!("wave-{id}"),
        description: String::new(),
        client_token: token.map(Into::into),
        created_at: now(),
    }
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

#[tokio::test]
async fn a_client_token_creates_one_workgroup() {
    for (engine, db, _keep) in engines().await {
        let u = uniq();
        let token = format!("tok-{u}");
        let first = db
            .workgroup_create(
                &group(&format!("w-a{u}"), Some(&token)),
                &kv(&[("env", "prod")]),
            )
            .await
            .expect("create");
        let again = db
            .workgroup_create(&group(&format!("w-b{u}"), Some(&token)), &[])
            .await
            .expect("create again");
        assert_eq!(again, first, "{engine}");
        assert!(
            db.workgroup_get(&format!("w-b{u}"))
                .await
                .expect("get")
                .is_none(),
            "{engine}: the repeat created a second workgroup"
        );
        // Without a token, every call creates one.
        for id in [format!("w-c{u}"), format!("w-d{u}")] {
            db.workgroup_create(&group(&id, None), &[])
                .await
                .expect("create");
        }
        let listed = db
            .workgroup_list(
                &[format!("w-c{u}"), format!("w-d{u}"), first.id.clone()],
                None,
            )
            .await
            .expect("list");
        assert_eq!(listed.len(), 3, "{engine}");
        let tags = db
            .tags_of(WORKGROUP_TAG_TYPE, std::slice::from_ref(&first.id))
            .await
            .expect("tags");
        assert_eq!(tags[&first.id], kv(&[("env", "prod")]), "{engine}");

        assert!(
            db.workgroup_update(&first.id, Some("renamed"), None)
                .await
                .expect("update")
        );
        let got = db
            .workgroup_get(&first.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(got.name, "renamed", "{engine}");
        let by_name = db
            .workgroup_list(std::slice::from_ref(&first.id), Some("renamed"))
            .await
            .expect("list");
        assert_eq!(by_name.len(), 1, "{engine}");
        assert!(
            !db.workgroup_update("w-nosuch", Some("x"), None)
                .await
                .expect("update")
        );

        assert!(db.workgroup_delete(&first.id).await.expect("delete"));
        assert!(!db.workgroup_delete(&first.id).await.expect("delete twice"));
        let tags = db
            .tags_of(WORKGROUP_TAG_TYPE, std::slice::from_ref(&first.id))
            .await
            .expect("tags");
        assert!(
            tags.is_empty(),
            "{engine}: a deleted workgroup keeps its tags"
        );
    }
}

#[tokio::test]
async fn a_source_belongs_to_one_workgroup_and_groups_are_bounded() {
    for (engine, db, _keep) in engines().await {
        let u = uniq();
        let (wa, wb) = (format!("w-a{u}"), format!("w-b{u}"));
        for w in [&wa, &wb] {
            db.workgroup_create(&group(w, None), &[])
                .await
                .expect("create");
        }
        let sources: Vec<String> = (0..4).map(|i| format!("s-{i}x{u}")).collect();
        for s in &sources {
            add_source(&db, s).await;
        }
        let at = now();
        assert_eq!(
            db.workgroup_associate(&wa, &sources[..2], 3, at)
                .await
                .expect("associate"),
            AssociateOutcome::Done,
            "{engine}"
        );
        // A retry is fine.
        assert_eq!(
            db.workgroup_associate(&wa, &sources[..2], 3, at)
                .await
                .expect("associate"),
            AssociateOutcome::Done,
            "{engine}"
        );
        assert_eq!(
            db.workgroup_associate(&wb, &sources[1..3], 3, at)
                .await
                .expect("associate"),
            AssociateOutcome::InOtherWorkgroup {
                source_id: sources[1].clone(),
                workgroup_id: wa.clone()
            },
            "{engine}"
        );
        // All or nothing: sources[2] was not added to wb.
        let of = db.workgroup_of_source(&sources).await.expect("of source");
        assert_eq!(of.len(), 2, "{engine}: {of:?}");
        assert_eq!(of.get(&sources[0]), Some(&wa));
        assert_eq!(
            db.workgroup_associate(&wa, &sources[2..4], 3, at)
                .await
                .expect("associate"),
            AssociateOutcome::TooMany { count: 4 },
            "{engine}"
        );
        assert_eq!(
            db.workgroup_associate(&wa, &[format!("s-nosuch{u}")], 3, at)
                .await
                .expect("associate"),
            AssociateOutcome::NoSuchSource(format!("s-nosuch{u}")),
            "{engine}"
        );
        assert_eq!(
            db.workgroup_associate(&format!("w-nosuch{u}"), &sources[..1], 3, at)
                .await
                .expect("associate"),
            AssociateOutcome::NoSuchWorkgroup,
            "{engine}"
        );
        let members = db
            .workgroup_members(&[wa.clone(), wb.clone()])
            .await
            .expect("members");
        let ids: Vec<&str> = members.iter().map(|m| m.source_id.as_str()).collect();
        assert_eq!(ids, [sources[0].as_str(), sources[1].as_str()], "{engine}");

        assert_eq!(
            db.workgroup_disassociate(&wb, &sources[..1])
                .await
                .expect("not a member"),
            0,
            "{engine}"
        );
        assert_eq!(
            db.workgroup_disassociate(&wa, &sources[..1])
                .await
                .expect("disassociate"),
            1,
            "{engine}"
        );
        db.workgroup_drop_source(&sources[1]).await.expect("drop");
        assert!(
            db.workgroup_members(std::slice::from_ref(&wa))
                .await
                .expect("members")
                .is_empty()
        );
        // Deleting a group frees its members for another group.
        db.workgroup_associate(&wa, &sources[2..3], 3, at)
            .await
            .expect("associate");
        assert!(db.workgroup_delete(&wa).await.expect("delete"));
        assert_eq!(
            db.workgroup_associate(&wb, &sources[2..3], 3, at)
                .await
                .expect("associate"),
            AssociateOutcome::Done,
            "{engine}"
        );
    }
}

#[tokio::test]
async fn tags_are_set_bounded_filtered_paged_and_removed() {
    for (engine, db, _keep) in engines().await {
        let u = uniq();
        let t = format!("type{u}");
        let ids: Vec<String> = (0..3).map(|i| format!("s-{i}t{u}")).collect();
        assert_eq!(
            db.tag_set(&t, &ids, &kv(&[("env", "prod"), ("team", "web")]), 20)
                .await
                .expect("set"),
            TagSetOutcome::Done
        );
        // An existing key's value is replaced, not duplicated.
        db.tag_set(&t, &ids[2..], &kv(&[("env", "test")]), 20)
            .await
            .expect("set");
        let of = db.tags_of(&t, &ids).await.expect("tags of");
        assert_eq!(
            of[&ids[2]],
            kv(&[("env", "test"), ("team", "web")]),
            "{engine}"
        );

        // The limit is checked over old and new tags together, and a refusal writes nothing.
        let many: Vec<(String, String)> = (0..19)
            .map(|i| (format!("k{i:02}"), "v".to_owned()))
            .collect();
        assert_eq!(
            db.tag_set(&t, &ids[..1], &many, 20).await.expect("set"),
            TagSetOutcome::TooMany {
                resource_id: ids[0].clone(),
                count: 21
            },
            "{engine}"
        );
        assert_eq!(
            db.tags_of(&t, &ids[..1]).await.expect("tags")[&ids[0]].len(),
            2
        );

        let filter = |k: &str, v: Option<&str>| TagFilter {
            key: k.into(),
            value: v.map(Into::into),
        };
        let matched = db
            .tag_match(&t, &[filter("env", Some("prod")), filter("team", None)])
            .await
            .expect("match");
        assert_eq!(matched, ids[..2].to_vec(), "{engine}");
        assert!(
            db.tag_match(
                &t,
                &[filter("env", Some("prod")), filter("env", Some("test"))]
            )
            .await
            .expect("match")
            .is_empty()
        );
        assert!(db.tag_match(&t, &[]).await.expect("match").is_empty());

        // Paging with the (resource, key) cursor visits every row once, in order.
        let mut seen = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let page = db
                .tag_list(
                    &t,
                    &[],
                    &[],
                    after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                    4,
                )
                .await
                .expect("list");
            if page.is_empty() {
                break;
            }
            let last = page.last().map(|r| (r.resource_id.clone(), r.key.clone()));
            seen.extend(page);
            after = last;
        }
        assert_eq!(seen.len(), 6, "{engine}: {seen:?}");
        let mut sorted = seen.clone();
        sorted.sort_by(|a, b| (&a.resource_id, &a.key).cmp(&(&b.resource_id, &b.key)));
        assert_eq!(seen, sorted);

        let filtered = db
            .tag_list(&t, &ids[1..], &[filter("env", Some("prod"))], None, 50)
            .await
            .expect("list");
        let rows: Vec<(&str, &str)> = filtered
            .iter()
            .map(|r| (r.resource_id.as_str(), r.key.as_str()))
            .collect();
        assert_eq!(
            rows,
            [(ids[1].as_str(), "env"), (ids[1].as_str(), "team")],
            "{engine}"
        );

        assert_eq!(
            db.tag_remove(&t, &ids[..2], &["env".to_owned(), "nosuch".to_owned()])
                .await
                .expect("remove"),
            2
        );
        assert_eq!(
            db.tag_remove_all(&t, &ids[1..2]).await.expect("remove all"),
            1
        );
        db.tags_drop_resource(&t, &ids[2]).await.expect("drop");
        let of = db.tags_of(&t, &ids).await.expect("tags of");
        assert_eq!(of.len(), 1, "{engine}: {of:?}");
        assert_eq!(of[&ids[0]], kv(&[("team", "web")]));
    }
}
