//! Parsing, validation, matching, every condition operator and the decision rule.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferry_iam::{AuthRequest, Decision, PolicyDocument, PolicyError, RequestContext, evaluate};

const JOB: &str = "acs:smc:cn-hangzhou:1234:replicationJob/j-1";

fn doc(json: &str) -> PolicyDocument {
    match PolicyDocument::parse(json) {
        Ok(d) => d,
        Err(e) => panic!("{json} should parse: {e}"),
    }
}

fn err(json: &str) -> String {
    match PolicyDocument::parse(json) {
        Ok(_) => panic!("{json} should be rejected"),
        Err(e) => e.to_string(),
    }
}

fn decide(
    policies: &[&PolicyDocument],
    action: &str,
    resource: &str,
    ctx: &RequestContext,
) -> Decision {
    evaluate(
        policies.iter().copied(),
        &AuthRequest {
            action,
            resource,
            context: ctx,
        },
    )
}

/// A one-statement Allow policy on everything with the given Condition object.
fn cond(condition: &str) -> PolicyDocument {
    doc(&format!(
        r#"{{"Version":"1","Statement":[{{"Effect":"Allow","Action":"*","Resource":"*","Condition":{condition}}}]}}"#
    ))
}

/// Does `condition` hold for `ctx`?
fn holds(condition: &str, ctx: &RequestContext) -> bool {
    decide(&[&cond(condition)], "smc:DescribeSourceServers", JOB, ctx) == Decision::Allow
}

fn with(key: &str, values: &[&str]) -> RequestContext {
    let mut extra = BTreeMap::new();
    extra.insert(
        key.to_owned(),
        values.iter().map(|v| v.to_string()).collect(),
    );
    RequestContext {
        extra,
        ..RequestContext::default()
    }
}

#[test]
fn minimal_document_parses_and_round_trips() {
    let text = r#"{ "Version": "1", "Statement": [ { "Effect": "Allow", "Action": ["smc:Describe*", "smc:List*"], "Resource": "*" } ] }"#;
    let d = doc(text);
    assert_eq!(
        d.to_json(),
        r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["smc:Describe*","smc:List*"],"Resource":"*"}]}"#
    );
    assert_eq!(doc(&d.to_json()), d);
}

#[test]
fn canonical_form_orders_fields_and_keeps_condition_types() {
    let text = r#"{"Statement":[{"Condition":{"Bool":{"acs:SecureTransport":true},"NumericLessThan":{"smc:Count":["5", 7]}},"Resource":["acs:smc:*:*:sourceServer/*"],"Action":"smc:*","Effect":"Deny"}],"Version":"1"}"#;
    let d = doc(text);
    let json = d.to_json();
    assert!(json.starts_with(r#"{"Version":"1","Statement":[{"Effect":"Deny","Action":"smc:*","Resource":["acs:smc:*:*:sourceServer/*"],"Condition":{"#), "{json}");
    assert!(json.contains(r#""acs:SecureTransport":true"#), "{json}");
    assert!(json.contains(r#""smc:Count":["5",7]"#), "{json}");
    assert_eq!(doc(&json), d);
}

#[test]
fn validation_names_statement_and_field() {
    let cases: &[(&str, &str)] = &[
        (r#"{"Version":"1","Statement":[]}"#, "Statement: is empty"),
        (
            r#"{"Version":"2","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
            "Version: must be the string \"1\"",
        ),
        (
            r#"{"Version":1,"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
            "Version: must be the string \"1\"",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
            "Version: is missing",
        ),
        (r#"{"Version":"1"}"#, "Statement: is missing"),
        (
            r#"{"Version":"1","Statement":{}}"#,
            "Statement: must be an array",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}],"Id":"x"}"#,
            "Id: unknown top-level field",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"allow","Action":"*","Resource":"*"}]}"#,
            "Statement[1].Effect: must be \"Allow\" or \"Deny\"",
        ),
        (
            r#"{"Version":"1","Statement":[{"Action":"*","Resource":"*"}]}"#,
            "Statement[0].Effect: is missing",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["smc:Describe*","DescribeSourceServers"],"Resource":"*"}]}"#,
            "Statement[0].Action[1]: action \"DescribeSourceServers\" has no service prefix",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"smc:","Resource":"*"}]}"#,
            "Statement[0].Action: action \"smc:\" is not of the form",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":[],"Resource":"*"}]}"#,
            "Statement[0].Action: is an empty array",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":[5],"Resource":"*"}]}"#,
            "Statement[0].Action[0]: must be a string, got a number",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*"}]}"#,
            "Statement[0].Resource: is missing",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"acs:smc:*"}]}"#,
            "Statement[0].Resource: resource \"acs:smc:*\" is not an ARN",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"arn:smc:*:*:*"}]}"#,
            "is not an ARN",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"acs:smc:*::x"}]}"#,
            "is not an ARN",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":true}]}"#,
            "Statement[0].Resource: must be a string, got a boolean",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","NotAction":"ram:*","Resource":"*"}]}"#,
            "Statement[0].NotAction: is not supported",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","NotResource":"*"}]}"#,
            "Statement[0].NotResource: is not supported",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Principal":{"RAM":"1"}}]}"#,
            "Statement[0].Principal: belongs in a role's trust policy",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Sid":"x"}]}"#,
            "Statement[0].Sid: unknown field",
        ),
        (
            r#"{"Version":"1","Statement":["x"]}"#,
            "Statement[0].(statement): must be an object",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEqual":{"a":"b"}}}]}"#,
            "Statement[0].Condition.StringEqual: unknown condition operator",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"stringequals":{"a":"b"}}}]}"#,
            "unknown condition operator",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"a":5}}}]}"#,
            "Statement[0].Condition.StringEquals.a: StringEquals needs a string, got 5 (a number)",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"a":["x",null]}}}]}"#,
            "Statement[0].Condition.StringEquals.a[1]: StringEquals needs a string, got null",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"a":[]}}}]}"#,
            "Statement[0].Condition.StringEquals.a: has no values",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{}}}]}"#,
            "Statement[0].Condition.StringEquals: names no condition key",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NumericEquals":{"a":"ten"}}}]}"#,
            "NumericEquals needs a number",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NumericEquals":{"a":"NaN"}}}]}"#,
            "NumericEquals needs a number",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateLessThan":{"acs:CurrentTime":"next week"}}}]}"#,
            "DateLessThan needs an ISO-8601 time",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Bool":{"acs:MFAPresent":"yes"}}}]}"#,
            "Bool needs true or false",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"acs:SourceIp":"10.0.0.0/33"}}}]}"#,
            "IpAddress needs an IP address or CIDR block",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"acs:SourceIp":["10.0.0.0/8","localhost"]}}}]}"#,
            "Statement[0].Condition.IpAddress.acs:SourceIp[1]",
        ),
        (
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":[]}]}"#,
            "Statement[0].Condition: must be an object",
        ),
        ("[]", "must be a JSON object"),
        ("{\"Version\":", "not valid JSON"),
    ];
    for (json, want) in cases {
        let got = err(json);
        assert!(
            got.contains(want),
            "for {json}\n  got:  {got}\n  want: …{want}…"
        );
    }
}

#[test]
fn size_limit_is_6144_bytes_of_canonical_form() {
    // Each action entry "ecs:DescribeXXXXX" plus quotes and comma.
    let actions = |n: usize| -> String {
        (0..n)
            .map(|i| format!("\"ecs:Describe{i:05}\""))
            .collect::<Vec<_>>()
            .join(",")
    };
    let build = |n: usize| {
        format!(
            r#"{{"Version":"1","Statement":[{{"Effect":"Allow","Action":[{}],"Resource":"*"}}]}}"#,
            actions(n)
        )
    };
    let mut n = 1;
    while build(n + 1).len() <= ferry_iam::MAX_POLICY_BYTES {
        n += 1;
    }
    assert!(
        PolicyDocument::parse(&build(n)).is_ok(),
        "{} bytes should fit",
        build(n).len()
    );
    match PolicyDocument::parse(&build(n + 1)) {
        Err(PolicyError::TooLarge { size, limit }) => {
            assert_eq!(limit, 6144);
            assert_eq!(size, build(n + 1).len());
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Whitespace does not count: the same fitting document, pretty-printed, still parses.
    let pretty = build(n).replace(',', ",\n    ");
    assert!(pretty.len() > ferry_iam::MAX_POLICY_BYTES);
    assert!(PolicyDocument::parse(&pretty).is_ok());
}

#[test]
fn action_matching_is_case_insensitive_with_wildcards() {
    let ctx = RequestContext::default();
    let p = doc(
        r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["smc:describe*","ECS:?escribeImages","ram:Get*User"],"Resource":"*"}]}"#,
    );
    let allow = |a: &str| decide(&[&p], a, JOB, &ctx) == Decision::Allow;
    assert!(allow("smc:DescribeSourceServers"));
    assert!(allow("SMC:DESCRIBEREPLICATIONJOBS"));
    assert!(allow("ecs:DescribeImages"));
    assert!(allow("ram:GetUser"));
    assert!(allow("ram:GetLoginUser"));
    assert!(!allow("ram:GetUserPolicy"));
    assert!(!allow("smc:StartReplicationJob"));
    assert!(!allow("ecs:DescribeImagesX"));
    assert!(!allow("smcx:DescribeSourceServers"));
    // A wildcard in the service part does not swallow the ':'.
    assert!(
        err(r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"s*","Resource":"*"}]}"#)
            .contains("has no service prefix")
    );
    let r =
        doc(r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"s*:*","Resource":"*"}]}"#);
    assert_eq!(
        decide(&[&r], "smc:DescribeSourceServers", JOB, &ctx),
        Decision::Allow
    );
    assert_eq!(
        decide(&[&r], "ecs:DescribeImages", JOB, &ctx),
        Decision::ImplicitDeny
    );
}

#[test]
fn resource_matching_by_segment() {
    let ctx = RequestContext::default();
    let p = doc(
        r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":["acs:smc:*:1234:replicationJob/j-?","acs:SMC:cn-*:*:sourceServer/s-1*","acs:ram:*:1234:user/alice"]}]}"#,
    );
    let allow = |r: &str| decide(&[&p], "smc:StartReplicationJob", r, &ctx) == Decision::Allow;
    assert!(allow("acs:smc:cn-hangzhou:1234:replicationJob/j-1"));
    assert!(allow("acs:smc::1234:replicationJob/j-2"));
    assert!(!allow("acs:smc:cn-hangzhou:1234:replicationJob/j-10"));
    assert!(!allow("acs:smc:cn-hangzhou:9999:replicationJob/j-1"));
    assert!(
        !allow("acs:smc:cn-hangzhou:1234:replicationjob/j-1"),
        "relative ids are case-sensitive"
    );
    assert!(allow("acs:smc:cn-beijing:5:sourceServer/s-1abc"));
    assert!(!allow("acs:smc:us-east-1:5:sourceServer/s-1abc"));
    assert!(allow("acs:ram::1234:user/alice"));
    assert!(!allow("acs:ram::1234:user/alice2"));
    assert!(!allow("not-an-arn"));
    // A '*' in the region cannot cross into the account segment.
    let q = doc(
        r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"acs:smc:*:1234:*"}]}"#,
    );
    assert_eq!(
        decide(&[&q], "smc:X", "acs:smc:a:b:1234:x", &ctx),
        Decision::ImplicitDeny
    );
    let star =
        doc(r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#);
    assert_eq!(
        decide(&[&star], "smc:X", "not-an-arn", &ctx),
        Decision::Allow
    );
}

#[test]
fn decision_rule() {
    let ctx = RequestContext::default();
    let allow_all =
        doc(r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#);
    let deny_job = doc(
        r#"{"Version":"1","Statement":[{"Effect":"Deny","Action":"smc:*ReplicationJob","Resource":"acs:smc:*:*:replicationJob/j-1"}]}"#,
    );
    let read_only = doc(
        r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"smc:Describe*","Resource":"*"}]}"#,
    );
    let deny_other =
        doc(r#"{"Version":"1","Statement":[{"Effect":"Deny","Action":"ecs:*","Resource":"*"}]}"#);
    // No policies: implicit deny.
    assert_eq!(
        decide(&[], "smc:StartReplicationJob", JOB, &ctx),
        Decision::ImplicitDeny
    );
    assert_eq!(
        decide(&[&allow_all], "smc:StartReplicationJob", JOB, &ctx),
        Decision::Allow
    );
    // Deny wins in either order and across policies.
    assert_eq!(
        decide(
            &[&allow_all, &deny_job],
            "smc:StartReplicationJob",
            JOB,
            &ctx
        ),
        Decision::ExplicitDeny
    );
    assert_eq!(
        decide(
            &[&deny_job, &allow_all],
            "smc:StartReplicationJob",
            JOB,
            &ctx
        ),
        Decision::ExplicitDeny
    );
    // A Deny that does not apply does not deny.
    assert_eq!(
        decide(
            &[&allow_all, &deny_job],
            "smc:StartReplicationJob",
            "acs:smc:cn-hangzhou:1234:replicationJob/j-2",
            &ctx
        ),
        Decision::Allow
    );
    assert_eq!(
        decide(
            &[&deny_other, &read_only],
            "smc:DescribeReplicationJobs",
            JOB,
            &ctx
        ),
        Decision::Allow
    );
    // A non-applicable Deny alone is still an implicit deny, not an explicit one.
    assert_eq!(
        decide(&[&deny_other], "smc:DescribeReplicationJobs", JOB, &ctx),
        Decision::ImplicitDeny
    );
    assert_eq!(
        decide(&[&read_only], "smc:StartReplicationJob", JOB, &ctx),
        Decision::ImplicitDeny
    );
    // Deny and Allow in one document.
    let mixed = doc(
        r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"smc:*","Resource":"*"},{"Effect":"Deny","Action":"smc:Delete*","Resource":"*"}]}"#,
    );
    assert_eq!(
        decide(&[&mixed], "smc:DeleteReplicationJob", JOB, &ctx),
        Decision::ExplicitDeny
    );
    assert_eq!(
        decide(&[&mixed], "smc:StopReplicationJob", JOB, &ctx),
        Decision::Allow
    );
    // A Deny whose condition does not hold does not apply.
    let deny_http = doc(
        r#"{"Version":"1","Statement":[{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"Bool":{"acs:SecureTransport":"false"}}}]}"#,
    );
    let https = RequestContext {
        secure_transport: true,
        ..RequestContext::default()
    };
    assert_eq!(
        decide(&[&allow_all, &deny_http], "smc:X", JOB, &https),
        Decision::Allow
    );
    assert_eq!(
        decide(&[&allow_all, &deny_http], "smc:X", JOB, &ctx),
        Decision::ExplicitDeny
    );
}

#[test]
fn string_operators() {
    let c = with("acs:ResourceTag/env", &["Prod"]);
    assert!(holds(
        r#"{"StringEquals":{"acs:ResourceTag/env":"Prod"}}"#,
        &c
    ));
    assert!(!holds(
        r#"{"StringEquals":{"acs:ResourceTag/env":"prod"}}"#,
        &c
    ));
    assert!(
        holds(
            r#"{"StringEquals":{"acs:ResourceTag/env":["dev","Prod"]}}"#,
            &c
        ),
        "values OR"
    );
    assert!(holds(
        r#"{"StringNotEquals":{"acs:ResourceTag/env":["dev","test"]}}"#,
        &c
    ));
    assert!(!holds(
        r#"{"StringNotEquals":{"acs:ResourceTag/env":["dev","Prod"]}}"#,
        &c
    ));
    assert!(holds(
        r#"{"StringEqualsIgnoreCase":{"acs:ResourceTag/env":"PROD"}}"#,
        &c
    ));
    assert!(!holds(
        r#"{"StringEqualsIgnoreCase":{"acs:ResourceTag/env":"prd"}}"#,
        &c
    ));
    assert!(holds(
        r#"{"StringNotEqualsIgnoreCase":{"acs:ResourceTag/env":"dev"}}"#,
        &c
    ));
    assert!(!holds(
        r#"{"StringNotEqualsIgnoreCase":{"acs:ResourceTag/env":"pROD"}}"#,
        &c
    ));
    assert!(holds(
        r#"{"StringLike":{"acs:ResourceTag/env":"P?o*"}}"#,
        &c
    ));
    assert!(
        !holds(r#"{"StringLike":{"acs:ResourceTag/env":"p*"}}"#, &c),
        "StringLike is case-sensitive"
    );
    assert!(holds(
        r#"{"StringNotLike":{"acs:ResourceTag/env":"D*"}}"#,
        &c
    ));
    assert!(!holds(
        r#"{"StringNotLike":{"acs:ResourceTag/env":"*o*"}}"#,
        &c
    ));
    // Keys are case-insensitive.
    assert!(holds(
        r#"{"StringEquals":{"ACS:RESOURCETAG/ENV":"Prod"}}"#,
        &c
    ));
    // Several request values: any may match.
    let multi = with("smc:Tag", &["a", "b"]);
    assert!(holds(r#"{"StringEquals":{"smc:Tag":"b"}}"#, &multi));
    assert!(!holds(r#"{"StringNotEquals":{"smc:Tag":"b"}}"#, &multi));
}

#[test]
fn numeric_operators() {
    let c = with("smc:Count", &["10"]);
    assert!(holds(r#"{"NumericEquals":{"smc:Count":10}}"#, &c));
    assert!(holds(r#"{"NumericEquals":{"smc:Count":"10.0"}}"#, &c));
    assert!(!holds(r#"{"NumericEquals":{"smc:Count":11}}"#, &c));
    assert!(holds(r#"{"NumericNotEquals":{"smc:Count":[1,2]}}"#, &c));
    assert!(!holds(r#"{"NumericNotEquals":{"smc:Count":[1,10]}}"#, &c));
    assert!(holds(r#"{"NumericLessThan":{"smc:Count":11}}"#, &c));
    assert!(!holds(r#"{"NumericLessThan":{"smc:Count":10}}"#, &c));
    assert!(holds(r#"{"NumericLessThanEquals":{"smc:Count":10}}"#, &c));
    assert!(!holds(r#"{"NumericLessThanEquals":{"smc:Count":9.5}}"#, &c));
    assert!(holds(r#"{"NumericGreaterThan":{"smc:Count":-3}}"#, &c));
    assert!(!holds(r#"{"NumericGreaterThan":{"smc:Count":10}}"#, &c));
    assert!(holds(
        r#"{"NumericGreaterThanEquals":{"smc:Count":10}}"#,
        &c
    ));
    assert!(!holds(
        r#"{"NumericGreaterThanEquals":{"smc:Count":"10.5"}}"#,
        &c
    ));
    // A request value that is not a number matches nothing.
    let bad = with("smc:Count", &["ten"]);
    assert!(!holds(r#"{"NumericGreaterThan":{"smc:Count":0}}"#, &bad));
    assert!(holds(r#"{"NumericNotEquals":{"smc:Count":0}}"#, &bad));
    // Large integers compare exactly.
    let big = with("smc:N", &["9007199254740993"]);
    assert!(holds(
        r#"{"NumericGreaterThan":{"smc:N":9007199254740992}}"#,
        &big
    ));
}

#[test]
fn date_operators() {
    // 2025-01-31T12:00:00Z
    let t = 1_738_324_800;
    let c = RequestContext {
        current_time: t,
        ..RequestContext::default()
    };
    assert!(holds(
        r#"{"DateEquals":{"acs:CurrentTime":"2025-01-31T12:00:00Z"}}"#,
        &c
    ));
    assert!(holds(
        r#"{"DateEquals":{"acs:CurrentTime":"2025-01-31T20:00:00+08:00"}}"#,
        &c
    ));
    assert!(holds(
        r#"{"DateEquals":{"acs:CurrentTime":1738324800}}"#,
        &c
    ));
    assert!(holds(
        r#"{"DateEquals":{"acs:CurrentTime":"1738324800"}}"#,
        &c
    ));
    assert!(!holds(
        r#"{"DateEquals":{"acs:CurrentTime":"2025-01-31T12:00:01Z"}}"#,
        &c
    ));
    assert!(holds(
        r#"{"DateNotEquals":{"acs:CurrentTime":"2025-01-31"}}"#,
        &c
    ));
    assert!(!holds(
        r#"{"DateNotEquals":{"acs:CurrentTime":["2025-01-31","2025-01-31T12:00:00Z"]}}"#,
        &c
    ));
    assert!(holds(
        r#"{"DateLessThan":{"acs:CurrentTime":"2025-02-01"}}"#,
        &c
    ));
    assert!(!holds(
        r#"{"DateLessThan":{"acs:CurrentTime":"2025-01-31T12:00:00Z"}}"#,
        &c
    ));
    assert!(holds(
        r#"{"DateLessThanEquals":{"acs:CurrentTime":"2025-01-31T12:00:00Z"}}"#,
        &c
    ));
    assert!(!holds(
        r#"{"DateLessThanEquals":{"acs:CurrentTime":"2025-01-31T11:59:59"}}"#,
        &c
    ));
    assert!(holds(
        r#"{"DateGreaterThan":{"acs:CurrentTime":"2025-01-31"}}"#,
        &c
    ));
    assert!(!holds(
        r#"{"DateGreaterThan":{"acs:CurrentTime":"2025-01-31T12:00:00.000Z"}}"#,
        &c
    ));
    assert!(holds(
        r#"{"DateGreaterThanEquals":{"acs:CurrentTime":"2025-01-31T12:00:00.000Z"}}"#,
        &c
    ));
    assert!(!holds(
        r#"{"DateGreaterThanEquals":{"acs:CurrentTime":"2025-01-31T12:00:00.5Z"}}"#,
        &c
    ));
    // Other date keys come from `extra`, as ISO-8601 or unix seconds.
    let e = with("smc:Expiry", &["2030-01-01T00:00:00Z"]);
    assert!(holds(
        r#"{"DateGreaterThan":{"smc:Expiry":"2029-12-31"}}"#,
        &e
    ));
    // The time is also visible to string operators as YYYY-MM-DDThh:mm:ssZ.
    assert!(holds(
        r#"{"StringLike":{"acs:CurrentTime":"2025-01-*"}}"#,
        &c
    ));
}

#[test]
fn bool_operator() {
    let on = RequestContext {
        secure_transport: true,
        mfa_present: true,
        ..RequestContext::default()
    };
    let off = RequestContext::default();
    assert!(holds(r#"{"Bool":{"acs:SecureTransport":"true"}}"#, &on));
    assert!(holds(r#"{"Bool":{"acs:SecureTransport":true}}"#, &on));
    assert!(!holds(r#"{"Bool":{"acs:SecureTransport":"true"}}"#, &off));
    assert!(holds(r#"{"Bool":{"acs:MFAPresent":"FALSE"}}"#, &off));
    assert!(holds(r#"{"Bool":{"acs:mfapresent":true}}"#, &on));
    let custom = with("smc:Flag", &["True"]);
    assert!(holds(r#"{"Bool":{"smc:Flag":true}}"#, &custom));
    // Absent key: false.
    assert!(!holds(r#"{"Bool":{"smc:Other":true}}"#, &custom));
    assert!(!holds(r#"{"Bool":{"smc:Other":false}}"#, &custom));
}

#[test]
fn ip_operators() {
    let at = |ip: &str| RequestContext {
        source_ip: Some(ip.parse::<IpAddr>().expect("test ip")),
        ..RequestContext::default()
    };
    let c = r#"{"IpAddress":{"acs:SourceIp":["192.168.0.0/16","203.0.113.7","2001:db8::/32"]}}"#;
    assert!(holds(c, &at("192.168.44.1")));
    assert!(holds(c, &at("203.0.113.7")));
    assert!(!holds(c, &at("203.0.113.8")));
    assert!(holds(c, &at("2001:db8:ffff::1")));
    assert!(!holds(c, &at("2001:db9::1")));
    assert!(
        holds(c, &at("::ffff:192.168.1.1")),
        "v4-mapped v6 compares as v4"
    );
    assert!(!holds(c, &RequestContext::default()), "absent source IP");
    let n = r#"{"NotIpAddress":{"acs:SourceIp":"10.0.0.0/8"}}"#;
    assert!(holds(n, &at("11.0.0.1")));
    assert!(!holds(n, &at("10.1.2.3")));
    assert!(
        holds(n, &RequestContext::default()),
        "absent key makes a Not* operator true"
    );
    assert!(holds(
        r#"{"IpAddress":{"acs:SourceIp":"0.0.0.0/0"}}"#,
        &at("8.8.8.8")
    ));
    assert!(holds(
        r#"{"IpAddress":{"acs:SourceIp":"::/0"}}"#,
        &at("::1")
    ));
}

#[test]
fn absent_keys_and_combination_rules() {
    let none = RequestContext::default();
    for positive in ["StringEquals", "StringEqualsIgnoreCase", "StringLike"] {
        assert!(
            !holds(&format!(r#"{{"{positive}":{{"x:absent":"*"}}}}"#), &none),
            "{positive}"
        );
    }
    for negated in [
        "StringNotEquals",
        "StringNotEqualsIgnoreCase",
        "StringNotLike",
    ] {
        assert!(
            holds(&format!(r#"{{"{negated}":{{"x:absent":"*"}}}}"#), &none),
            "{negated}"
        );
    }
    assert!(!holds(r#"{"NumericLessThan":{"x:absent":1}}"#, &none));
    assert!(holds(r#"{"NumericNotEquals":{"x:absent":1}}"#, &none));
    assert!(!holds(
        r#"{"DateLessThan":{"x:absent":"2100-01-01"}}"#,
        &none
    ));
    assert!(holds(
        r#"{"DateNotEquals":{"x:absent":"2100-01-01"}}"#,
        &none
    ));
    // An empty value list in the context counts as absent.
    let empty = with("x:k", &[]);
    assert!(!holds(r#"{"StringLike":{"x:k":"*"}}"#, &empty));

    let mut ctx = with("acs:ResourceTag/env", &["prod"]);
    ctx.extra
        .insert("acs:ResourceTag/team".into(), vec!["db".into()]);
    ctx.secure_transport = true;
    // Keys under one operator: AND.
    assert!(holds(
        r#"{"StringEquals":{"acs:ResourceTag/env":"prod","acs:ResourceTag/team":"db"}}"#,
        &ctx
    ));
    assert!(!holds(
        r#"{"StringEquals":{"acs:ResourceTag/env":"prod","acs:ResourceTag/team":"web"}}"#,
        &ctx
    ));
    // Operators in a block: AND.
    assert!(holds(
        r#"{"StringEquals":{"acs:ResourceTag/env":"prod"},"Bool":{"acs:SecureTransport":"true"}}"#,
        &ctx
    ));
    assert!(!holds(
        r#"{"StringEquals":{"acs:ResourceTag/env":"prod"},"Bool":{"acs:SecureTransport":"false"}}"#,
        &ctx
    ));
    // The typed fields win over an `extra` entry of the same name.
    let mut spoof = RequestContext::default();
    spoof
        .extra
        .insert("acs:SecureTransport".into(), vec!["true".into()]);
    assert!(!holds(r#"{"Bool":{"acs:SecureTransport":"true"}}"#, &spoof));
}
