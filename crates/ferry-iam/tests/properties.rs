//! Property tests: the parsers never panic, evaluation never panics and composes per statement, Deny
//! always wins, `*` matches every action, and the canonical form round-trips.
//!
//! Each property runs through `proptest`'s `TestRunner` directly so that it can print how many cases ran
//! (`cargo test -p ferry-iam --test properties -- --nocapture`). Case counts keep the suite under 20 s in
//! a debug build on two cores.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use ferry_iam::{AuthRequest, Decision, PolicyDocument, RequestContext, TrustPolicy, evaluate};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// Runs `test` on `cases` generated values, prints how many ran, and fails with the (shrunk) input.
fn run<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let ran = AtomicU32::new(0);
    let result = runner.run(&strategy, |v| {
        ran.fetch_add(1, Ordering::Relaxed);
        test(v)
    });
    println!(
        "property {name}: {} cases run ({cases} required)",
        ran.load(Ordering::Relaxed)
    );
    if let Err(e) = result {
        panic!("property {name} failed: {e}");
    }
}

// ---- vocabularies ---------------------------------------------------------------------------------

const ACTIONS: &[&str] = &[
    "*",
    "smc:*",
    "smc:Describe*",
    "smc:StartReplicationJob",
    "SMC:start?eplicationjob",
    "ecs:*",
    "ecs:Describe*",
    "ram:Get*",
    "sts:AssumeRole",
    "*:*",
    "smc:*Job",
];
const REQ_ACTIONS: &[&str] = &[
    "smc:StartReplicationJob",
    "smc:DescribeSourceServers",
    "smc:CreateReplicationJob",
    "ecs:DescribeImages",
    "ecs:DeleteImage",
    "ram:GetUser",
    "sts:AssumeRole",
    "actiontrail:LookupEvents",
];
const RESOURCES: &[&str] = &[
    "*",
    "acs:smc:*:*:*",
    "acs:smc:*:*:replicationJob/*",
    "acs:smc:cn-hangzhou:1234:replicationJob/j-1",
    "acs:smc:*:1234:sourceServer/s-?",
    "acs:ecs:*:*:image/*",
    "acs:ram:*:*:user/alice",
    "acs:*:*:*:*",
];
const REQ_RESOURCES: &[&str] = &[
    "acs:smc:cn-hangzhou:1234:replicationJob/j-1",
    "acs:smc:cn-hangzhou:1234:replicationJob/j-2",
    "acs:smc:cn-hangzhou:1234:sourceServer/s-1",
    "acs:ecs:cn-hangzhou:1234:image/m-1",
    "acs:ram::1234:user/alice",
    "acs:ram::1234:user/bob",
    "not-an-arn",
];
const OPERATORS: &[&str] = &[
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "NumericEquals",
    "NumericNotEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
    "DateEquals",
    "DateNotEquals",
    "DateLessThan",
    "DateLessThanEquals",
    "DateGreaterThan",
    "DateGreaterThanEquals",
    "Bool",
    "IpAddress",
    "NotIpAddress",
];
const WORDS: &[&str] = &[
    "Version",
    "Statement",
    "Effect",
    "Action",
    "Resource",
    "Condition",
    "Principal",
    "RAM",
    "Service",
    "NotAction",
    "1",
    "Allow",
    "Deny",
    "*",
    "smc:*",
    "acs:smc:*:*:*",
    "acs:ram::1:root",
    "sts:AssumeRole",
    "acs:SourceIp",
    "acs:CurrentTime",
    "10.0.0.0/8",
    "2025-01-01",
    "true",
    "",
    "x",
];

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = &'static str> + Clone {
    proptest::sample::select(list)
}

// ---- generators -----------------------------------------------------------------------------------

/// Any JSON value, biased towards the policy grammar's words so that deep paths are reached.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        pick(WORDS).prop_map(|s| json!(s)),
        pick(OPERATORS).prop_map(|s| json!(s)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        let key = prop_oneof![pick(WORDS), pick(OPERATORS)].prop_map(str::to_owned);
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key, inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A well-typed condition entry `(operator, key, values)`.
fn condition() -> impl Strategy<Value = (String, String, Value)> {
    let string_op = pick(&OPERATORS[0..6]);
    let numeric_op = pick(&OPERATORS[6..12]);
    let date_op = pick(&OPERATORS[12..18]);
    let ip_op = pick(&OPERATORS[19..21]);
    let one_or_many = |v: Vec<Value>, many: bool| {
        if many || v.len() != 1 {
            Value::Array(v)
        } else {
            v.into_iter().next().unwrap_or(Value::Null)
        }
    };
    prop_oneof![
        (
            string_op,
            pick(&[
                "acs:ResourceTag/env",
                "smc:tag",
                "x:absent",
                "ACS:resourcetag/ENV"
            ]),
            proptest::collection::vec(pick(&["prod", "Prod", "dev", "P*", "*", "?ev", ""]), 1..3),
            any::<bool>()
        )
            .prop_map(move |(op, k, v, many)| {
                (
                    op.to_owned(),
                    k.to_owned(),
                    one_or_many(v.iter().map(|s| json!(s)).collect(), many),
                )
            }),
        (
            numeric_op,
            pick(&["smc:Count", "x:absent"]),
            proptest::collection::vec(
                prop_oneof![
                    (-5i64..20).prop_map(|n| json!(n)),
                    (-5i64..20).prop_map(|n| json!(n.to_string())),
                    (-50i64..200).prop_map(|n| json!(n as f64 / 10.0)),
                ],
                1..3
            ),
            any::<bool>()
        )
            .prop_map(move |(op, k, v, many)| (
                op.to_owned(),
                k.to_owned(),
                one_or_many(v, many)
            )),
        (
            date_op,
            pick(&["acs:CurrentTime", "x:absent"]),
            proptest::collection::vec(
                prop_oneof![
                    (1_700_000_000i64..1_800_000_000).prop_map(|n| json!(n)),
                    pick(&[
                        "2025-01-31",
                        "2025-01-31T12:00:00Z",
                        "2026-06-01T08:00:00+08:00",
                        "2024-02-29T23:59:59"
                    ])
                    .prop_map(|s| json!(s)),
                ],
                1..3
            ),
            any::<bool>()
        )
            .prop_map(move |(op, k, v, many)| (
                op.to_owned(),
                k.to_owned(),
                one_or_many(v, many)
            )),
        (
            pick(&["acs:SecureTransport", "acs:MFAPresent", "x:absent"]),
            prop_oneof![
                any::<bool>().prop_map(|b| json!(b)),
                pick(&["true", "false", "TRUE"]).prop_map(|s| json!(s))
            ]
        )
            .prop_map(|(k, v)| ("Bool".to_owned(), k.to_owned(), v)),
        (
            ip_op,
            proptest::collection::vec(
                pick(&[
                    "10.0.0.0/8",
                    "192.168.1.1",
                    "::/0",
                    "2001:db8::/32",
                    "0.0.0.0/0"
                ]),
                1..3
            ),
            any::<bool>()
        )
            .prop_map(move |(op, v, many)| {
                (
                    op.to_owned(),
                    "acs:SourceIp".to_owned(),
                    one_or_many(v.iter().map(|s| json!(s)).collect(), many),
                )
            }),
    ]
}

fn list(values: Vec<&str>, many: bool) -> Value {
    if many || values.len() != 1 {
        json!(values)
    } else {
        json!(values[0])
    }
}

/// A valid statement as JSON.
fn statement() -> impl Strategy<Value = Value> {
    (
        any::<bool>(),
        proptest::collection::vec(pick(ACTIONS), 1..3),
        any::<bool>(),
        proptest::collection::vec(pick(RESOURCES), 1..3),
        any::<bool>(),
        proptest::collection::vec(condition(), 0..3),
    )
        .prop_map(|(deny, actions, am, resources, rm, conds)| {
            let mut st = serde_json::Map::new();
            st.insert("Effect".into(), json!(if deny { "Deny" } else { "Allow" }));
            st.insert("Action".into(), list(actions, am));
            st.insert("Resource".into(), list(resources, rm));
            if !conds.is_empty() {
                let mut c = serde_json::Map::new();
                for (op, key, values) in conds {
                    let entry = c.entry(op).or_insert_with(|| json!({}));
                    if let Value::Object(m) = entry {
                        m.insert(key, values);
                    }
                }
                st.insert("Condition".into(), Value::Object(c));
            }
            Value::Object(st)
        })
}

fn document_of(statements: &[Value]) -> String {
    json!({"Version": "1", "Statement": statements}).to_string()
}

fn parse(statements: &[Value]) -> Result<PolicyDocument, TestCaseError> {
    let text = document_of(statements);
    PolicyDocument::parse(&text)
        .map_err(|e| TestCaseError::fail(format!("generated {text} rejected: {e}")))
}

fn context() -> impl Strategy<Value = RequestContext> {
    (
        1_700_000_000i64..1_800_000_000,
        any::<bool>(),
        proptest::option::of(pick(&[
            "10.1.2.3",
            "192.168.1.1",
            "8.8.8.8",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ])),
        any::<bool>(),
        proptest::collection::btree_map(
            pick(&[
                "acs:ResourceTag/env",
                "smc:Tag",
                "smc:Count",
                "ACS:CURRENTTIME",
            ]),
            proptest::collection::vec(pick(&["prod", "dev", "7", "x", "2025-01-31"]), 0..3),
            0..3,
        ),
    )
        .prop_map(|(t, secure, ip, mfa, extra)| RequestContext {
            current_time: t,
            secure_transport: secure,
            source_ip: ip.and_then(|s| s.parse::<IpAddr>().ok()),
            mfa_present: mfa,
            extra: extra
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
                .collect::<BTreeMap<_, _>>(),
        })
}

fn decide(docs: &[PolicyDocument], action: &str, resource: &str, ctx: &RequestContext) -> Decision {
    evaluate(
        docs,
        &AuthRequest {
            action,
            resource,
            context: ctx,
        },
    )
}

// ---- properties -----------------------------------------------------------------------------------

#[test]
fn parsers_never_panic_on_arbitrary_strings() {
    let strings = prop_oneof![any::<String>(), "[\\[\\]{}\":, 1a*?\\\\]{0,64}"];
    run("parse-arbitrary-strings", 3000, strings, |s| {
        let _ = PolicyDocument::parse(&s);
        let _ = TrustPolicy::parse(&s);
        Ok(())
    });
}

#[test]
fn parsers_never_panic_on_arbitrary_json_and_accepted_documents_round_trip() {
    let values = prop_oneof![
        any_json(),
        // Wrapped in a plausible envelope so that statement-level validation is reached often.
        proptest::collection::vec(any_json(), 1..4)
            .prop_map(|s| json!({"Version": "1", "Statement": s})),
        // Valid statements with one field replaced by arbitrary JSON or removed.
        (
            proptest::collection::vec(statement(), 1..3),
            any::<prop::sample::Index>(),
            pick(&[
                "Effect",
                "Action",
                "Resource",
                "Condition",
                "Principal",
                "NotAction"
            ]),
            any_json(),
            any::<bool>(),
        )
            .prop_map(|(mut statements, which, field, value, remove)| {
                let i = which.index(statements.len());
                if let Value::Object(st) = &mut statements[i] {
                    if remove {
                        st.remove(field);
                    } else {
                        st.insert(field.to_owned(), value);
                    }
                }
                json!({"Version": "1", "Statement": statements})
            }),
    ];
    let accepted = AtomicU32::new(0);
    run("parse-arbitrary-json", 3000, values, |v| {
        let text = v.to_string();
        if let Ok(d) = PolicyDocument::parse(&text) {
            accepted.fetch_add(1, Ordering::Relaxed);
            let again = PolicyDocument::parse(&d.to_json()).map_err(|e| {
                TestCaseError::fail(format!("canonical form of {text} rejected: {e}"))
            })?;
            prop_assert_eq!(&again, &d);
        }
        if let Ok(t) = TrustPolicy::parse(&text) {
            let again = TrustPolicy::parse(&t.to_json()).map_err(|e| {
                TestCaseError::fail(format!("canonical trust form of {text} rejected: {e}"))
            })?;
            prop_assert_eq!(&again, &t);
        }
        Ok(())
    });
    println!(
        "property parse-arbitrary-json: {} inputs were valid documents",
        accepted.load(Ordering::Relaxed)
    );
}

#[test]
fn canonical_form_round_trips() {
    run(
        "round-trip",
        1500,
        proptest::collection::vec(statement(), 1..5),
        |statements| {
            let d = parse(&statements)?;
            let json = d.to_json();
            let again = PolicyDocument::parse(&json)
                .map_err(|e| TestCaseError::fail(format!("canonical {json} rejected: {e}")))?;
            prop_assert_eq!(&again, &d);
            prop_assert_eq!(again.to_json(), json);
            Ok(())
        },
    );
}

#[test]
fn evaluate_never_panics_and_is_the_fold_of_its_statements() {
    let input = (
        proptest::collection::vec(proptest::collection::vec(statement(), 1..4), 0..4),
        pick(REQ_ACTIONS),
        pick(REQ_RESOURCES),
        context(),
    );
    run(
        "evaluate-composes",
        1500,
        input,
        |(policies, action, resource, ctx)| {
            let docs: Vec<PolicyDocument> = policies
                .iter()
                .map(|p| parse(p))
                .collect::<Result<_, _>>()?;
            let whole = decide(&docs, action, resource, &ctx);
            // The same statements one per document, evaluated one at a time.
            let mut any_deny = false;
            let mut any_allow = false;
            for st in policies.iter().flatten() {
                match decide(&[parse(std::slice::from_ref(st))?], action, resource, &ctx) {
                    Decision::ExplicitDeny => any_deny = true,
                    Decision::Allow => any_allow = true,
                    Decision::ImplicitDeny => {}
                }
            }
            let expected = if any_deny {
                Decision::ExplicitDeny
            } else if any_allow {
                Decision::Allow
            } else {
                Decision::ImplicitDeny
            };
            prop_assert_eq!(whole, expected);
            Ok(())
        },
    );
}

#[test]
fn a_matching_deny_always_wins() {
    let input = (
        proptest::collection::vec(proptest::collection::vec(statement(), 1..4), 1..4),
        pick(REQ_ACTIONS),
        pick(REQ_RESOURCES),
        context(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        0usize..4,
    );
    run(
        "deny-wins",
        1500,
        input,
        |(mut policies, action, resource, ctx, which, at, form)| {
            // A Deny that applies to this request, written in one of several ways.
            let deny = match form {
                0 => json!({"Effect": "Deny", "Action": "*", "Resource": "*"}),
                // A request resource that is not an ARN cannot be named, only covered by "*".
                1 if resource.starts_with("acs:") => {
                    json!({"Effect": "Deny", "Action": [action], "Resource": [resource]})
                }
                1 => json!({"Effect": "Deny", "Action": [action], "Resource": "*"}),
                2 => json!({"Effect": "Deny", "Action": action.to_uppercase(), "Resource": "*",
                        "Condition": {"NotIpAddress": {"x:absent": "10.0.0.0/8"}}}),
                _ => {
                    let service = action.split(':').next().unwrap_or("*");
                    json!({"Effect": "Deny", "Action": format!("{service}:*"), "Resource": "*",
                       "Condition": {"DateGreaterThan": {"acs:CurrentTime": "2000-01-01"}}})
                }
            };
            let p = which.index(policies.len());
            let i = at.index(policies[p].len() + 1);
            policies[p].insert(i, deny);
            let docs: Vec<PolicyDocument> = policies
                .iter()
                .map(|p| parse(p))
                .collect::<Result<_, _>>()?;
            prop_assert_eq!(
                decide(&docs, action, resource, &ctx),
                Decision::ExplicitDeny
            );
            // Without any Deny statement nothing can be explicitly denied.
            let allows: Vec<Vec<Value>> = policies
                .iter()
                .map(|p| {
                    p.iter()
                        .filter(|s| s["Effect"] == "Allow")
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .filter(|p| !p.is_empty())
                .collect();
            let docs: Vec<PolicyDocument> =
                allows.iter().map(|p| parse(p)).collect::<Result<_, _>>()?;
            prop_assert_ne!(
                decide(&docs, action, resource, &ctx),
                Decision::ExplicitDeny
            );
            Ok(())
        },
    );
}

#[test]
fn star_matches_every_action() {
    let allow_all = PolicyDocument::parse(
        r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    )
    .expect("valid");
    let service_star = PolicyDocument::parse(
        r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*:*","Resource":"*"}]}"#,
    )
    .expect("valid");
    let input = (
        prop_oneof![any::<String>(), "[a-z]{1,12}:[A-Za-z?*]{1,30}"],
        prop_oneof![any::<String>(), pick(REQ_RESOURCES).prop_map(str::to_owned)],
        context(),
    );
    run(
        "star-matches-all",
        2000,
        input,
        |(action, resource, ctx)| {
            prop_assert_eq!(
                decide(std::slice::from_ref(&allow_all), &action, &resource, &ctx),
                Decision::Allow
            );
            if action.contains(':') {
                prop_assert_eq!(
                    decide(
                        std::slice::from_ref(&service_star),
                        &action,
                        &resource,
                        &ctx
                    ),
                    Decision::Allow
                );
            }
            Ok(())
        },
    );
}
