//! The catalogue (resources per action), ActionTrail's EventRW, the System policies and trust policies.

use std::net::IpAddr;

use ferry_iam::{
    AuthRequest, Decision, PolicyDocument, RequestContext, TrustPolicy, catalogue, evaluate, system,
};

/// Parameters as `name=value` pairs; a name may repeat (a RepeatList such as `SourceId.N`).
fn resources(service: &str, action: &str, params: &[(&str, &str)]) -> Vec<String> {
    let param = |name: &str| -> Vec<String> {
        params
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .collect()
    };
    catalogue::resources(service, action, "cn-hangzhou", "1234", &param)
}

#[test]
fn catalogue_table() {
    let smc = |rel: &str| format!("acs:smc:cn-hangzhou:1234:{rel}");
    let ecs = |rel: &str| format!("acs:ecs:cn-hangzhou:1234:{rel}");
    let ram = |rel: &str| format!("acs:ram::1234:{rel}");
    #[allow(clippy::type_complexity)]
    let table: Vec<(&str, &str, Vec<(&str, &str)>, Vec<String>)> = vec![
        // SMC (reference §2.1).
        (
            "smc",
            "CreateAccessToken",
            vec![("Name", "x")],
            vec![smc("*")],
        ),
        ("smc", "ListAccessTokens", vec![], vec![smc("*")]),
        (
            "smc",
            "DeleteAccessToken",
            vec![("AccessTokenId", "at-1")],
            vec![smc("*")],
        ),
        (
            "smc",
            "DisableAccessToken",
            vec![("AccessTokenId", "at-1")],
            vec![smc("*")],
        ),
        (
            "smc",
            "DescribeSourceServers",
            vec![],
            vec![smc("sourceServer/*")],
        ),
        (
            "smc",
            "DescribeSourceServers",
            vec![
                ("SourceId", "s-1"),
                ("SourceId", "s-2"),
                ("SourceId", "s-1"),
            ],
            vec![smc("sourceServer/s-1"), smc("sourceServer/s-2")],
        ),
        (
            "smc",
            "ModifySourceServerAttribute",
            vec![("SourceId", "s-1")],
            vec![smc("sourceServer/s-1")],
        ),
        (
            "smc",
            "DeleteSourceServer",
            vec![("SourceId", "s-9")],
            vec![smc("sourceServer/s-9")],
        ),
        (
            "smc",
            "DeleteSourceServer",
            vec![],
            vec![smc("sourceServer/*")],
        ),
        (
            "smc",
            "CreateReplicationJob",
            vec![("SourceId", "s-1"), ("Name", "j")],
            vec![smc("sourceServer/s-1"), smc("replicationJob/*")],
        ),
        (
            "smc",
            "DescribeReplicationJobs",
            vec![],
            vec![smc("replicationJob/*")],
        ),
        (
            "smc",
            "DescribeReplicationJobs",
            vec![("JobId", "j-1")],
            vec![smc("replicationJob/j-1")],
        ),
        (
            "smc",
            "StartReplicationJob",
            vec![("JobId", "j-1")],
            vec![smc("replicationJob/j-1")],
        ),
        (
            "smc",
            "StopReplicationJob",
            vec![("JobId", "j-2")],
            vec![smc("replicationJob/j-2")],
        ),
        (
            "smc",
            "DeleteReplicationJob",
            vec![("JobId", "j-3")],
            vec![smc("replicationJob/j-3")],
        ),
        (
            "smc",
            "ModifyReplicationJobAttribute",
            vec![("JobId", "j-4")],
            vec![smc("replicationJob/j-4")],
        ),
        (
            "smc",
            "CutOverReplicationJob",
            vec![("JobId", "j-5")],
            vec![smc("replicationJob/j-5")],
        ),
        ("smc", "CreateCrossZoneMigrationJob", vec![], vec![smc("*")]),
        ("smc", "CreateWorkgroup", vec![], vec![smc("*")]),
        (
            "smc",
            "AssociateSourceServers",
            vec![("SourceIds", "s-1")],
            vec![smc("*")],
        ),
        (
            "smc",
            "TagResources",
            vec![("ResourceId", "s-1")],
            vec![smc("*")],
        ),
        ("smc", "ListTagResources", vec![], vec![smc("*")]),
        (
            "smc",
            "SomethingNew",
            vec![("JobId", "j-1")],
            vec![smc("*")],
        ),
        (
            "SMC",
            "StartReplicationJob",
            vec![("JobId", "j-1")],
            vec![smc("replicationJob/j-1")],
        ),
        // ECS (reference §3.1).
        ("ecs", "DescribeRegions", vec![], vec![ecs("*")]),
        (
            "ecs",
            "StartInstance",
            vec![("InstanceId", "i-1")],
            vec![ecs("instance/i-1")],
        ),
        (
            "ecs",
            "StopInstance",
            vec![("InstanceId", "i-1")],
            vec![ecs("instance/i-1")],
        ),
        ("ecs", "DeleteInstance", vec![], vec![ecs("instance/*")]),
        ("ecs", "DescribeInstances", vec![], vec![ecs("*")]),
        (
            "ecs",
            "DescribeInstances",
            vec![("InstanceIds", r#"["i-1","i-2"]"#)],
            vec![ecs("instance/i-1"), ecs("instance/i-2")],
        ),
        (
            "ecs",
            "DescribeInstances",
            vec![("InstanceIds", "i-1")],
            vec![ecs("*")],
        ),
        (
            "ecs",
            "RunInstances",
            vec![("ImageId", "m-1")],
            vec![ecs("instance/*"), ecs("image/m-1")],
        ),
        ("ecs", "CreateInstance", vec![], vec![ecs("instance/*")]),
        ("ecs", "DescribeImages", vec![], vec![ecs("*")]),
        (
            "ecs",
            "DescribeImages",
            vec![("ImageId", "m-1, m-2")],
            vec![ecs("image/m-1"), ecs("image/m-2")],
        ),
        (
            "ecs",
            "DeleteImage",
            vec![("ImageId", "m-1")],
            vec![ecs("image/m-1")],
        ),
        (
            "ecs",
            "ExportImage",
            vec![("ImageId", "m-1")],
            vec![ecs("image/m-1")],
        ),
        (
            "ecs",
            "CreateImage",
            vec![("SnapshotId", "s-7")],
            vec![ecs("image/*"), ecs("snapshot/s-7")],
        ),
        (
            "ecs",
            "CreateImage",
            vec![("InstanceId", "i-7")],
            vec![ecs("image/*"), ecs("instance/i-7")],
        ),
        ("ecs", "ImportImage", vec![], vec![ecs("image/*")]),
        (
            "ecs",
            "DeleteSnapshot",
            vec![("SnapshotId", "s-7")],
            vec![ecs("snapshot/s-7")],
        ),
        (
            "ecs",
            "DescribeSnapshots",
            vec![("SnapshotIds", r#"["s-7"]"#)],
            vec![ecs("snapshot/s-7")],
        ),
        ("ecs", "DescribeSnapshots", vec![], vec![ecs("*")]),
        ("ecs", "DescribeTasks", vec![], vec![ecs("*")]),
        (
            "ecs",
            "DescribeTaskAttribute",
            vec![("TaskId", "t-1")],
            vec![ecs("*")],
        ),
        // RAM (reference §3.2): account-level, empty region.
        (
            "ram",
            "CreateUser",
            vec![("UserName", "alice")],
            vec![ram("user/alice")],
        ),
        (
            "ram",
            "CreateAccessKey",
            vec![("UserName", "alice")],
            vec![ram("user/alice")],
        ),
        ("ram", "CreateAccessKey", vec![], vec![ram("*")]),
        (
            "ram",
            "CreatePolicy",
            vec![("PolicyName", "p1"), ("PolicyDocument", "{}")],
            vec![ram("policy/p1")],
        ),
        (
            "ram",
            "AttachPolicyToUser",
            vec![
                ("PolicyType", "Custom"),
                ("PolicyName", "p1"),
                ("UserName", "alice"),
            ],
            vec![ram("user/alice"), ram("policy/p1")],
        ),
        (
            "ram",
            "CreateRole",
            vec![("RoleName", "r1")],
            vec![ram("role/r1")],
        ),
        (
            "ram",
            "AttachPolicyToRole",
            vec![("PolicyName", "p1"), ("RoleName", "r1")],
            vec![ram("role/r1"), ram("policy/p1")],
        ),
        ("ram", "ListUsers", vec![], vec![ram("*")]),
        // STS: the role being assumed.
        (
            "sts",
            "AssumeRole",
            vec![
                ("RoleArn", "acs:ram::5678:role/migrator"),
                ("RoleSessionName", "s"),
            ],
            vec!["acs:ram::5678:role/migrator".into()],
        ),
        (
            "sts",
            "AssumeRole",
            vec![("RoleArn", "acs:ram:cn-hangzhou:5678:role/migrator")],
            vec!["acs:ram::5678:role/migrator".into()],
        ),
        (
            "sts",
            "AssumeRole",
            vec![("RoleArn", "bogus")],
            vec![ram("role/*")],
        ),
        ("sts", "AssumeRole", vec![], vec![ram("role/*")]),
        (
            "sts",
            "GetCallerIdentity",
            vec![],
            vec!["acs:sts:cn-hangzhou:1234:*".into()],
        ),
        // ActionTrail and unknown services: service-wide.
        (
            "actiontrail",
            "LookupEvents",
            vec![],
            vec!["acs:actiontrail:cn-hangzhou:1234:*".into()],
        ),
        (
            "oss",
            "GetObject",
            vec![],
            vec!["acs:oss:cn-hangzhou:1234:*".into()],
        ),
    ];
    for (service, action, params, want) in &table {
        assert_eq!(
            &resources(service, action, params),
            want,
            "{service}:{action} {params:?}"
        );
    }
}

#[test]
fn catalogue_cannot_be_steered_by_region_or_account() {
    let none = |_: &str| Vec::new();
    let got = catalogue::resources("smc", "ListAccessTokens", "cn:9999:x", "1234", &none);
    assert_eq!(got, vec!["acs:smc:cn_9999_x:1234:*".to_string()]);
}

#[test]
fn catalogue_arns_are_evaluated_as_documented() {
    // A user allowed to start only j-1 may start j-1 and nothing else; CreateReplicationJob needs both
    // the source and replicationJob/*.
    let p = PolicyDocument::parse(
        r#"{"Version":"1","Statement":[
            {"Effect":"Allow","Action":"smc:StartReplicationJob","Resource":"acs:smc:*:*:replicationJob/j-1"},
            {"Effect":"Allow","Action":"smc:CreateReplicationJob","Resource":"acs:smc:*:*:sourceServer/s-1"}]}"#,
    )
    .expect("valid");
    let ctx = RequestContext::default();
    let allowed = |action: &str, params: &[(&str, &str)]| {
        resources("smc", action, params).iter().all(|r| {
            evaluate(
                [&p],
                &AuthRequest {
                    action: &format!("smc:{action}"),
                    resource: r,
                    context: &ctx,
                },
            ) == Decision::Allow
        })
    };
    assert!(allowed("StartReplicationJob", &[("JobId", "j-1")]));
    assert!(!allowed("StartReplicationJob", &[("JobId", "j-2")]));
    assert!(
        !allowed("CreateReplicationJob", &[("SourceId", "s-1")]),
        "replicationJob/* not granted"
    );
}

#[test]
fn event_rw() {
    for read in [
        "DescribeSourceServers",
        "ListAccessTokens",
        "GetPolicy",
        "LookupEvents",
        "smc:DescribeReplicationJobs",
    ] {
        assert_eq!(catalogue::event_rw(read), "Read", "{read}");
    }
    for write in [
        "CreateReplicationJob",
        "StartReplicationJob",
        "DeleteImage",
        "AttachPolicyToUser",
        "AssumeRole",
        "ram:CreateUser",
        "TagResources",
    ] {
        assert_eq!(catalogue::event_rw(write), "Write", "{write}");
    }
}

#[test]
fn system_policies_parse_are_canonical_and_grant_what_they_say() {
    let names: Vec<&str> = system::all().iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "AdministratorAccess",
            "AliyunSMCFullAccess",
            "AliyunSMCReadOnlyAccess",
            "AliyunECSFullAccess",
            "AliyunECSReadOnlyAccess",
            "AliyunRAMFullAccess",
            "AliyunRAMReadOnlyAccess",
            "AliyunActionTrailFullAccess",
            "AliyunActionTrailReadOnlyAccess",
            "AliyunSTSAssumeRoleAccess",
        ]
    );
    for p in system::all() {
        let d = PolicyDocument::parse(p.document).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        assert_eq!(d.to_json(), p.document, "{} is not canonical", p.name);
        assert!(!p.description.is_empty());
        assert!(std::ptr::eq(system::get(p.name).expect("listed"), p));
    }
    assert!(system::get("NoSuchPolicy").is_none());
    assert!(
        system::get("administratoraccess").is_none(),
        "names are exact"
    );

    let ctx = RequestContext::default();
    let can = |policy: &str, action: &str| {
        let d =
            PolicyDocument::parse(system::get(policy).expect("exists").document).expect("valid");
        evaluate(
            [&d],
            &AuthRequest {
                action,
                resource: "acs:smc:cn-hangzhou:1:replicationJob/j-1",
                context: &ctx,
            },
        ) == Decision::Allow
    };
    assert!(can("AdministratorAccess", "anything:AtAll"));
    assert!(can("AliyunSMCFullAccess", "smc:CutOverReplicationJob"));
    assert!(can("AliyunSMCFullAccess", "ecs:DescribeImages"));
    assert!(can("AliyunSMCFullAccess", "ecs:CreateImage"));
    assert!(can("AliyunSMCFullAccess", "ecs:ExportImage"));
    assert!(can("AliyunSMCFullAccess", "ecs:DescribeTaskAttribute"));
    assert!(can("AliyunSMCFullAccess", "ram:GetRole"));
    assert!(
        !can("AliyunSMCFullAccess", "ram:PassRole"),
        "PassRole needs acs:Service"
    );
    assert!(!can("AliyunSMCFullAccess", "ram:CreateUser"));
    assert!(can(
        "AliyunSMCReadOnlyAccess",
        "smc:DescribeReplicationJobs"
    ));
    assert!(can("AliyunSMCReadOnlyAccess", "smc:ListAccessTokens"));
    assert!(!can("AliyunSMCReadOnlyAccess", "smc:StartReplicationJob"));
    assert!(can("AliyunECSFullAccess", "ecs:DeleteInstance"));
    assert!(can("AliyunECSReadOnlyAccess", "ecs:DescribeInstances"));
    assert!(!can("AliyunECSReadOnlyAccess", "ecs:StartInstance"));
    assert!(can("AliyunRAMFullAccess", "ram:CreateUser"));
    assert!(can("AliyunRAMReadOnlyAccess", "ram:ListUsers"));
    assert!(can("AliyunRAMReadOnlyAccess", "ram:GetPolicy"));
    assert!(!can("AliyunRAMReadOnlyAccess", "ram:CreateUser"));
    assert!(can(
        "AliyunActionTrailFullAccess",
        "actiontrail:CreateTrail"
    ));
    assert!(can(
        "AliyunActionTrailReadOnlyAccess",
        "actiontrail:LookupEvents"
    ));
    assert!(!can(
        "AliyunActionTrailReadOnlyAccess",
        "actiontrail:DeleteTrail"
    ));
    assert!(can("AliyunSTSAssumeRoleAccess", "sts:AssumeRole"));
    assert!(!can("AliyunSTSAssumeRoleAccess", "sts:GetFederationToken"));
}

const TRUST: &str = r#"{"Version":"1","Statement":[
    {"Effect":"Allow","Action":"sts:AssumeRole","Principal":{"RAM":["acs:ram::1111:root","acs:ram::2222:user/alice","3333"]}},
    {"Effect":"Allow","Action":"sts:AssumeRole","Principal":{"Service":"ecs.aliyuncs.com"}},
    {"Effect":"Deny","Action":"sts:AssumeRole","Principal":{"RAM":"acs:ram::1111:user/mallory"}}]}"#;

#[test]
fn trust_policy_principals() {
    let t = TrustPolicy::parse(TRUST).expect("valid");
    let ctx = RequestContext::default();
    // Account root trusts everyone in that account.
    assert!(t.allows("acs:ram::1111:root", &ctx));
    assert!(t.allows("acs:ram::1111:user/bob", &ctx));
    assert!(t.allows("acs:ram::1111:assumed-role/ops/session-1", &ctx));
    // ...except a user an explicit Deny names.
    assert!(!t.allows("acs:ram::1111:user/mallory", &ctx));
    // A user entry trusts only that user.
    assert!(t.allows("acs:ram::2222:user/alice", &ctx));
    assert!(!t.allows("acs:ram::2222:user/bob", &ctx));
    assert!(!t.allows("acs:ram::2222:root", &ctx));
    // A bare account id is the account's root.
    assert!(t.allows("acs:ram::3333:user/carol", &ctx));
    assert!(!t.allows("acs:ram::4444:root", &ctx));
    // Services.
    assert!(t.allows("ecs.aliyuncs.com", &ctx));
    assert!(t.allows("ECS.aliyuncs.com", &ctx));
    assert!(!t.allows("smc.aliyuncs.com", &ctx));
    assert!(!t.allows("acs:ram::1111", &ctx), "malformed caller ARN");
    assert!(!t.allows("", &ctx));

    let round = TrustPolicy::parse(&t.to_json()).expect("canonical parses");
    assert_eq!(round, t);
    assert_eq!(round.to_json(), t.to_json());
}

#[test]
fn trust_policy_conditions_and_roles() {
    let t = TrustPolicy::parse(
        r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["sts:AssumeRole"],
            "Principal":{"RAM":"acs:ram::1111:role/ci","Service":["smc.aliyuncs.com"]},
            "Condition":{"Bool":{"acs:MFAPresent":"true"},"IpAddress":{"acs:SourceIp":"10.0.0.0/8"}}}]}"#,
    )
    .expect("valid");
    let good = RequestContext {
        mfa_present: true,
        source_ip: Some("10.1.1.1".parse::<IpAddr>().expect("ip")),
        ..RequestContext::default()
    };
    let no_mfa = RequestContext {
        mfa_present: false,
        ..good.clone()
    };
    assert!(t.allows("acs:ram::1111:assumed-role/ci/build-7", &good));
    assert!(!t.allows("acs:ram::1111:assumed-role/ci/build-7", &no_mfa));
    assert!(!t.allows("acs:ram::1111:assumed-role/cd/build-7", &good));
    let upper = TrustPolicy::parse(
        r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Principal":{"RAM":"acs:ram::1111:role/CI-Deploy"}}]}"#,
    )
    .expect("valid");
    assert!(
        upper.allows("acs:ram::1111:assumed-role/ci-deploy/s", &good),
        "role names ignore case"
    );
    assert!(!upper.allows("acs:ram::2222:assumed-role/ci-deploy/s", &good));
    assert!(
        !t.allows("acs:ram::1111:root", &good),
        "a role entry does not trust the account"
    );
    assert!(t.allows("smc.aliyuncs.com", &good));
}

#[test]
fn trust_policy_validation() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:GetCallerIdentity","Principal":{"RAM":"1"}}]}"#,
            "Statement[0].Action: a trust policy only grants \"sts:AssumeRole\"",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole"}]}"#,
            "Statement[0].Principal: is missing",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Principal":{}}]}"#,
            "Statement[0].Principal: names nobody",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Principal":{"Federated":"x"}}]}"#,
            "Statement[0].Principal.Federated: SAML/OIDC federation is not supported",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Principal":{"Ram":"1"}}]}"#,
            "Statement[0].Principal.Ram: unknown principal type",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Principal":{"RAM":["acs:ram::1:root","acs:ecs::1:root"]}}]}"#,
            "Statement[0].Principal.RAM[1]: RAM principal \"acs:ecs::1:root\" is not",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Principal":{"RAM":"acs:ram::*:root"}}]}"#,
            "Statement[0].Principal.RAM",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Principal":{"Service":5}}]}"#,
            "Statement[0].Principal.Service: must be a string",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Principal":{"RAM":"1"},"Resource":"*"}]}"#,
            "Statement[0].Resource: has no meaning in a trust policy",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Principal":{"RAM":"1"},"Condition":{"Bogus":{}}}]}"#,
            "Statement[0].Condition.Bogus: unknown condition operator",
        ),
        (r#"{"Version":"1","Statement":[]}"#, "Statement: is empty"),
    ];
    for (json, want) in cases {
        let got = match TrustPolicy::parse(json) {
            Ok(_) => panic!("{json} should be rejected"),
            Err(e) => e.to_string(),
        };
        assert!(
            got.contains(want),
            "for {json}\n  got:  {got}\n  want: …{want}…"
        );
    }
}
