//! The RAM/STS part of the storage suite: users, access keys, custom policies, attachments, roles and STS
//! sessions. Runs against SQLite, and also against a fresh PostgreSQL database per test when
//! FERRY_TEST_POSTGRES names a test cluster (`common`).

mod common;

use common::engines;
use ferry_db::*;

/// A name unique to this test run, so that a shared PostgreSQL database can hold several runs.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), now_nanos())
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn user(name: &str) -> UserRecord {
    UserRecord {
        name: name.into(),
        id: format!("id-{name}"),
        display_name: format!("Display {name}"),
        email: String::new(),
        mobile_phone: String::new(),
        comments: String::new(),
        created_at: now(),
        updated_at: now(),
        password_hash: None,
        mfa_secret: None,
    }
}

fn key(id: &str, user: &str) -> AccessKeyRecord {
    AccessKeyRecord {
        id: id.into(),
        secret: format!("secret-{id}"),
        user_name: Some(user.into()),
        status: "Active".into(),
        created_at: now(),
    }
}

fn attachment(ptype: &str, principal: &str, poltype: &str, policy: &str) -> AttachmentRecord {
    AttachmentRecord {
        principal_type: ptype.into(),
        principal_name: principal.into(),
        policy_type: poltype.into(),
        policy_name: policy.into(),
        attached_at: now(),
    }
}

fn policy(name: &str) -> PolicyRecord {
    PolicyRecord {
        name: name.into(),
        document: r#"{"Version":"1","Statement":[]}"#.into(),
        description: "d".into(),
        default_version: "v1".into(),
        created_at: now(),
        updated_at: now(),
    }
}

fn role(name: &str) -> RoleRecord {
    RoleRecord {
        name: name.into(),
        id: format!("id-{name}"),
        arn: format!("acs:ram::1:role/{name}"),
        trust_policy: "{}".into(),
        max_session_duration: 3600,
        description: String::new(),
        created_at: now(),
        updated_at: now(),
    }
}

#[tokio::test]
async fn users_are_created_once_listed_updated_and_renamed_with_their_keys() {
    for (engine, db, _keep) in engines().await {
        let name = unique("alice");
        assert!(
            db.user_create(&user(&name)).await.expect("create"),
            "{engine}"
        );
        assert!(
            !db.user_create(&user(&name)).await.expect("dup"),
            "{engine}: duplicate name"
        );
        let got = db.user_get(&name).await.expect("get").expect("exists");
        assert_eq!(got.display_name, format!("Display {name}"));
        assert!(
            db.user_list()
                .await
                .expect("list")
                .iter()
                .any(|u| u.name == name)
        );

        let kid = unique("LTAIk");
        assert_eq!(
            db.access_key_create_for_user(&key(&kid, &name), 2)
                .await
                .expect("key"),
            AccessKeyCreate::Created
        );
        let other = unique("bob");
        assert!(db.user_create(&user(&other)).await.expect("create bob"));
        let policy_name = unique("p");
        assert!(
            db.policy_create(&policy(&policy_name))
                .await
                .expect("policy")
        );
        assert_eq!(
            db.attachment_create(&attachment(
                PRINCIPAL_USER,
                &name,
                POLICY_CUSTOM,
                &policy_name
            ))
            .await
            .expect("attach"),
            Attach::Attached
        );

        // Renaming onto another user's name is refused and changes nothing.
        let mut renamed = got.clone();
        renamed.name = other.clone();
        assert_eq!(
            db.user_update(&name, &renamed).await.expect("update"),
            UserUpdate::NameTaken
        );
        assert!(db.user_get(&name).await.expect("get").is_some(), "{engine}");

        let new_name = unique("alice2");
        renamed.name = new_name.clone();
        renamed.comments = "moved".into();
        assert_eq!(
            db.user_update(&name, &renamed).await.expect("rename"),
            UserUpdate::Updated
        );
        assert!(db.user_get(&name).await.expect("get").is_none());
        assert_eq!(
            db.user_get(&new_name)
                .await
                .expect("get")
                .expect("renamed")
                .comments,
            "moved"
        );
        let keys = db.access_key_list(Some(&new_name)).await.expect("keys");
        assert_eq!(keys.len(), 1, "{engine}: the key follows the rename");
        assert_eq!(keys[0].id, kid);
        let pols = db
            .attachment_list_for_principal(PRINCIPAL_USER, &new_name)
            .await
            .expect("att");
        assert_eq!(pols.len(), 1, "{engine}: the attachment follows the rename");
        assert_eq!(
            db.user_update(&unique("ghost"), &renamed)
                .await
                .expect("ghost"),
            UserUpdate::NotFound
        );
    }
}

#[tokio::test]
async fn a_user_has_at_most_the_key_limit_and_keys_are_scoped_to_their_owner() {
    for (engine, db, _keep) in engines().await {
        let name = unique("carol");
        let (k1, k2, k3) = (unique("k1"), unique("k2"), unique("k3"));
        assert_eq!(
            db.access_key_create_for_user(&key(&k1, &name), 2)
                .await
                .expect("k1"),
            AccessKeyCreate::UserNotFound,
            "{engine}"
        );
        db.user_create(&user(&name)).await.expect("user");
        for k in [&k1, &k2] {
            assert_eq!(
                db.access_key_create_for_user(&key(k, &name), 2)
                    .await
                    .expect("key"),
                AccessKeyCreate::Created
            );
        }
        assert_eq!(
            db.access_key_create_for_user(&key(&k3, &name), 2)
                .await
                .expect("k3"),
            AccessKeyCreate::LimitExceeded,
            "{engine}"
        );
        assert!(db.access_key_get(&k3).await.expect("get").is_none());
        let mut rootless = key(&k3, &name);
        rootless.user_name = None;
        assert_eq!(
            db.access_key_create_for_user(&rootless, 2)
                .await
                .expect("root"),
            AccessKeyCreate::UserNotFound
        );

        // Another owner cannot touch the key.
        assert!(
            !db.access_key_set_status(&k1, None, "Inactive")
                .await
                .expect("st")
        );
        assert!(
            !db.access_key_set_status(&k1, Some("nobody"), "Inactive")
                .await
                .expect("st")
        );
        assert!(
            db.access_key_set_status(&k1, Some(&name), "Inactive")
                .await
                .expect("st")
        );
        assert_eq!(
            db.access_key_get(&k1)
                .await
                .expect("get")
                .expect("k1")
                .status,
            "Inactive"
        );
        assert!(!db.access_key_delete(&k1, None).await.expect("del"));
        assert!(db.access_key_delete(&k1, Some(&name)).await.expect("del"));
        assert!(
            !db.access_key_delete(&k1, Some(&name))
                .await
                .expect("del twice")
        );
        assert_eq!(
            db.access_key_list(Some(&name)).await.expect("list").len(),
            1
        );
    }
}

#[tokio::test]
async fn users_and_policies_are_only_deleted_when_nothing_refers_to_them() {
    for (engine, db, _keep) in engines().await {
        let name = unique("dave");
        let kid = unique("kd");
        let pol = unique("pol");
        assert_eq!(
            db.user_delete(&name).await.expect("del"),
            UserDelete::NotFound
        );
        db.user_create(&user(&name)).await.expect("user");
        db.access_key_create_for_user(&key(&kid, &name), 2)
            .await
            .expect("key");
        db.policy_create(&policy(&pol)).await.expect("policy");
        let att = attachment(PRINCIPAL_USER, &name, POLICY_CUSTOM, &pol);
        assert_eq!(
            db.attachment_create(&att).await.expect("att"),
            Attach::Attached
        );
        assert_eq!(
            db.attachment_create(&att).await.expect("att"),
            Attach::AlreadyAttached
        );
        let sys = attachment(
            PRINCIPAL_USER,
            &name,
            POLICY_SYSTEM,
            "AliyunSMCReadOnlyAccess",
        );
        assert_eq!(
            db.attachment_create(&sys).await.expect("sys"),
            Attach::Attached
        );

        assert_eq!(
            db.user_delete(&name).await.expect("del"),
            UserDelete::HasAccessKeys,
            "{engine}"
        );
        assert!(
            db.access_key_delete(&kid, Some(&name))
                .await
                .expect("del key")
        );
        assert_eq!(
            db.user_delete(&name).await.expect("del"),
            UserDelete::HasPolicies,
            "{engine}"
        );
        assert_eq!(
            db.policy_delete(&pol).await.expect("pdel"),
            PolicyDelete::Attached
        );
        let holders = db
            .attachment_list_for_policy(POLICY_CUSTOM, &pol)
            .await
            .expect("holders");
        assert_eq!(holders.len(), 1);
        assert_eq!(holders[0].principal_name, name);

        assert!(
            db.attachment_delete(PRINCIPAL_USER, &name, POLICY_CUSTOM, &pol)
                .await
                .expect("d")
        );
        assert!(
            !db.attachment_delete(PRINCIPAL_USER, &name, POLICY_CUSTOM, &pol)
                .await
                .expect("d")
        );
        assert_eq!(
            db.policy_delete(&pol).await.expect("pdel"),
            PolicyDelete::Deleted
        );
        assert_eq!(
            db.policy_delete(&pol).await.expect("pdel"),
            PolicyDelete::NotFound
        );
        assert_eq!(
            db.user_delete(&name).await.expect("del"),
            UserDelete::HasPolicies
        );
        assert!(
            db.attachment_delete(
                PRINCIPAL_USER,
                &name,
                POLICY_SYSTEM,
                "AliyunSMCReadOnlyAccess"
            )
            .await
            .expect("d")
        );
        assert_eq!(
            db.user_delete(&name).await.expect("del"),
            UserDelete::Deleted,
            "{engine}"
        );
    }
}

#[tokio::test]
async fn attachments_need_an_existing_principal_and_custom_policy() {
    for (engine, db, _keep) in engines().await {
        let ghost = unique("ghost");
        let pol = unique("pol");
        let att = attachment(PRINCIPAL_USER, &ghost, POLICY_SYSTEM, "AdministratorAccess");
        assert_eq!(
            db.attachment_create(&att).await.expect("a"),
            Attach::PrincipalNotFound
        );
        let r = unique("role");
        db.role_create(&role(&r)).await.expect("role");
        let missing = attachment(PRINCIPAL_ROLE, &r, POLICY_CUSTOM, &pol);
        assert_eq!(
            db.attachment_create(&missing).await.expect("a"),
            Attach::PolicyNotFound
        );
        db.policy_create(&policy(&pol)).await.expect("policy");
        assert_eq!(
            db.attachment_create(&missing).await.expect("a"),
            Attach::Attached,
            "{engine}"
        );
        // A user of the role's name does not exist: the principal type matters.
        let as_user = attachment(PRINCIPAL_USER, &r, POLICY_CUSTOM, &pol);
        assert_eq!(
            db.attachment_create(&as_user).await.expect("a"),
            Attach::PrincipalNotFound
        );
        let list = db
            .attachment_list_for_principal(PRINCIPAL_ROLE, &r)
            .await
            .expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].policy_name, pol);
    }
}

#[tokio::test]
async fn policy_documents_can_be_replaced() {
    for (engine, db, _keep) in engines().await {
        let pol = unique("pol");
        assert!(db.policy_create(&policy(&pol)).await.expect("create"));
        assert!(
            !db.policy_create(&policy(&pol)).await.expect("dup"),
            "{engine}"
        );
        assert!(
            db.policy_set_document(&pol, "{\"x\":1}", "v2", now())
                .await
                .expect("set")
        );
        let got = db.policy_get(&pol).await.expect("get").expect("exists");
        assert_eq!(
            (got.document.as_str(), got.default_version.as_str()),
            ("{\"x\":1}", "v2")
        );
        assert!(
            !db.policy_set_document(&unique("nope"), "{}", "v2", now())
                .await
                .expect("set")
        );
        assert!(
            db.policy_list()
                .await
                .expect("list")
                .iter()
                .any(|p| p.name == pol)
        );
    }
}

#[tokio::test]
async fn roles_and_their_sessions_are_deleted_together() {
    for (engine, db, _keep) in engines().await {
        let r = unique("ops");
        assert!(db.role_create(&role(&r)).await.expect("create"));
        assert!(!db.role_create(&role(&r)).await.expect("dup"), "{engine}");
        assert!(
            db.role_list()
                .await
                .expect("list")
                .iter()
                .any(|x| x.name == r)
        );
        let by_arn = db
            .role_get_by_arn(&format!("acs:ram::1:role/{r}"))
            .await
            .expect("arn");
        assert_eq!(by_arn.map(|x| x.name), Some(r.clone()));
        // Another name with the same ARN (ARNs carry the lower-cased name) is refused too.
        let mut twin = role(&r.to_uppercase());
        twin.arn = format!("acs:ram::1:role/{r}");
        assert!(!db.role_create(&twin).await.expect("twin"), "{engine}");
        let t = now();
        let sid = unique("STS.k");
        let session = StsSessionRecord {
            access_key_id: sid.clone(),
            secret: "s".into(),
            token_hash: "h".into(),
            role_name: r.clone(),
            session_name: "sess".into(),
            source_principal: "acs:ram::1:root".into(),
            mfa_present: 1,
            inline_policy: Some("{}".into()),
            created_at: t,
            expires_at: t + 900,
        };
        db.sts_session_create(&session).await.expect("session");
        assert_eq!(
            db.sts_session_get(&sid).await.expect("get"),
            Some(session.clone())
        );

        let pol = unique("pol");
        db.policy_create(&policy(&pol)).await.expect("policy");
        db.attachment_create(&attachment(PRINCIPAL_ROLE, &r, POLICY_CUSTOM, &pol))
            .await
            .expect("attach");
        assert_eq!(
            db.role_delete(&r).await.expect("del"),
            RoleDelete::HasPolicies
        );
        assert!(
            db.sts_session_get(&sid).await.expect("get").is_some(),
            "{engine}"
        );
        db.attachment_delete(PRINCIPAL_ROLE, &r, POLICY_CUSTOM, &pol)
            .await
            .expect("detach");
        assert_eq!(db.role_delete(&r).await.expect("del"), RoleDelete::Deleted);
        assert_eq!(db.role_delete(&r).await.expect("del"), RoleDelete::NotFound);
        assert!(
            db.sts_session_get(&sid).await.expect("get").is_none(),
            "{engine}"
        );
    }
}

#[tokio::test]
async fn expired_sts_sessions_are_purged() {
    for (engine, db, _keep) in engines().await {
        let t = now();
        let mk = |id: &str, expires_at: i64| StsSessionRecord {
            access_key_id: id.into(),
            secret: "s".into(),
            token_hash: "h".into(),
            role_name: "r".into(),
            session_name: "s".into(),
            source_principal: "p".into(),
            mfa_present: 0,
            inline_policy: None,
            created_at: t - 5000,
            expires_at,
        };
        let (old, fresh) = (unique("STS.old"), unique("STS.new"));
        db.sts_session_create(&mk(&old, t - 4000))
            .await
            .expect("old");
        db.sts_session_create(&mk(&fresh, t + 100))
            .await
            .expect("new");
        assert!(
            db.sts_session_purge(t - 3600).await.expect("purge") >= 1,
            "{engine}"
        );
        assert!(db.sts_session_get(&old).await.expect("get").is_none());
        assert!(db.sts_session_get(&fresh).await.expect("get").is_some());
    }
}
