//! RAM and STS against a real server: an in-process `ferry_server` on a loopback port with a fresh data
//! directory per test, called over HTTPS with requests signed exactly like the v1 SDKs sign them (and the
//! v3 signature where the STS token travels in a header). The root account creates users, keys, policies
//! and roles; the tests then act as those users and sessions and check what they may and may not do.

mod support;

use ferry_api::sign::{Credentials, V3Request, sign_v1_query, sign_v3_request};
use serde_json::{Value, json};
use support::Harness;

const SMC: &str = "2019-06-01";
const ECS: &str = "2014-05-26";
const RAM: &str = "2015-05-01";
const STS: &str = "2015-04-01";

struct Stack {
    h: Harness,
    http: reqwest::Client,
    root: Key,
    account: String,
}

/// Credentials to sign with: an access key, and the STS token when it is a temporary key.
#[derive(Clone)]
struct Key {
    id: String,
    secret: String,
    token: Option<String>,
}

/// An answer: HTTP status and JSON body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["Code"].as_str().unwrap_or("")
    }

    #[track_caller]
    fn ok(self) -> Value {
        assert_eq!(self.status, 200, "expected success: {:#}", self.body);
        self.body
    }

    #[track_caller]
    fn err(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "unexpected answer: {:#}",
            self.body
        );
    }

    /// The most common denial: no policy allows a RAM user `action` (`Forbidden.RAM`).
    #[track_caller]
    fn user_may_not(&self, action: &str) {
        self.denied("Forbidden.RAM", action, "SubUser", "ImplicitDeny");
    }

    /// A 403 RAM denial of `action`, with the AccessDeniedDetail that says so.
    #[track_caller]
    fn denied(&self, code: &str, action: &str, principal_type: &str, kind: &str) {
        self.err(403, code);
        let d = &self.body["AccessDeniedDetail"];
        assert_eq!(d["AuthAction"], action, "{:#}", self.body);
        assert_eq!(d["AuthPrincipalType"], principal_type, "{:#}", self.body);
        assert_eq!(d["NoPermissionType"], kind, "{:#}", self.body);
        assert_eq!(d["PolicyType"], "AccountLevelIdentityBasedPolicy");
        assert!(
            d["AuthPrincipalOwnerId"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );
        assert!(
            d["AuthPrincipalDisplayName"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );
    }
}

impl Stack {
    async fn start() -> Stack {
        let h = Harness::start().await;
        let http = h
            .https_builder()
            // HTTP/1.1 like the SDKs: the v3 signature covers the `host` header, which HTTP/2 replaces
            // with the `:authority` pseudo-header.
            .http1_only()
            .build()
            .expect("client");
        let root = Key {
            id: h.root.access_key_id.clone(),
            secret: h.root.access_key_secret.clone(),
            token: None,
        };
        let account = h.root.account_id.clone();
        Stack {
            h,
            http,
            root,
            account,
        }
    }

    /// A v1-signed call (everything in the query, like the v1 SDKs).
    async fn call(
        &self,
        key: &Key,
        version: &str,
        action: &str,
        params: &[(&str, &str)],
    ) -> Answer {
        let mut all = vec![("Action", action), ("Version", version)];
        all.extend_from_slice(params);
        let creds = Credentials {
            access_key_id: &key.id,
            access_key_secret: &key.secret,
            security_token: key.token.as_deref(),
        };
        let query = sign_v1_query("POST", &all, &creds);
        let url = format!("{}/?{query}", self.h.endpoint());
        let resp = self.http.post(url).send().await.expect("server answers");
        let status = resp.status().as_u16();
        let body = resp.json().await.expect("JSON answer");
        Answer { status, body }
    }

    /// A v3-signed call (`ACS3-HMAC-SHA256`, token in the `x-acs-security-token` header).
    async fn call_v3(
        &self,
        key: &Key,
        version: &str,
        action: &str,
        query: &[(&str, &str)],
    ) -> Answer {
        let host = self.h.endpoint().trim_start_matches("https://").to_owned();
        let creds = Credentials {
            access_key_id: &key.id,
            access_key_secret: &key.secret,
            security_token: key.token.as_deref(),
        };
        let signed = sign_v3_request(
            &V3Request {
                method: "POST",
                host: &host,
                action,
                version,
                query,
                body: b"",
                content_type: None,
            },
            &creds,
        );
        let mut req = self
            .http
            .post(format!("{}/?{}", self.h.endpoint(), signed.query));
        for (k, v) in &signed.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await.expect("server answers");
        let status = resp.status().as_u16();
        let body = resp.json().await.expect("JSON answer");
        Answer { status, body }
    }

    async fn root(&self, version: &str, action: &str, params: &[(&str, &str)]) -> Value {
        self.call(&self.root, version, action, params).await.ok()
    }

    /// Creates a RAM user with one access key.
    async fn user_with_key(&self, name: &str) -> Key {
        self.root(RAM, "CreateUser", &[("UserName", name)]).await;
        let k = self
            .root(RAM, "CreateAccessKey", &[("UserName", name)])
            .await;
        Key {
            id: k["AccessKey"]["AccessKeyId"]
                .as_str()
                .expect("id")
                .to_owned(),
            secret: k["AccessKey"]["AccessKeySecret"]
                .as_str()
                .expect("secret")
                .to_owned(),
            token: None,
        }
    }

    async fn custom_policy(&self, name: &str, doc: Value) {
        self.root(
            RAM,
            "CreatePolicy",
            &[("PolicyName", name), ("PolicyDocument", &doc.to_string())],
        )
        .await;
    }

    async fn attach(&self, user: &str, kind: &str, policy: &str) {
        self.root(
            RAM,
            "AttachPolicyToUser",
            &[
                ("UserName", user),
                ("PolicyType", kind),
                ("PolicyName", policy),
            ],
        )
        .await;
    }

    async fn detach(&self, user: &str, kind: &str, policy: &str) {
        self.root(
            RAM,
            "DetachPolicyFromUser",
            &[
                ("UserName", user),
                ("PolicyType", kind),
                ("PolicyName", policy),
            ],
        )
        .await;
    }

    async fn stop(self) {
        self.h.stop().await;
    }
}

fn allow(action: &str, resource: &str) -> Value {
    json!({"Version": "1", "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_may_do_nothing_until_a_policy_allows_it() {
    let s = Stack::start().await;
    let alice = s.user_with_key("alice").await;

    // Root may do everything.
    s.root(SMC, "DescribeSourceServers", &[]).await;

    let a = s.call(&alice, SMC, "DescribeSourceServers", &[]).await;
    a.user_may_not("smc:DescribeSourceServers");
    assert_eq!(
        a.body["AccessDeniedDetail"]["AuthPrincipalOwnerId"],
        s.account.as_str()
    );
    s.call(&alice, ECS, "DescribeRegions", &[])
        .await
        .user_may_not("ecs:DescribeRegions");
    // Not even about itself: RAM and STS deny with NoPermission.
    s.call(&alice, RAM, "GetUser", &[("UserName", "alice")])
        .await
        .denied("NoPermission", "ram:GetUser", "SubUser", "ImplicitDeny");
    s.call(&alice, RAM, "CreateAccessKey", &[]).await.denied(
        "NoPermission",
        "ram:CreateAccessKey",
        "SubUser",
        "ImplicitDeny",
    );

    // Read-only SMC: Describe works, Create does not.
    s.attach("alice", "System", "AliyunSMCReadOnlyAccess").await;
    let listed = s.call(&alice, SMC, "DescribeSourceServers", &[]).await.ok();
    assert!(
        listed["SourceServers"]["SourceServer"].is_array(),
        "{listed:#}"
    );
    s.call(&alice, SMC, "CreateAccessToken", &[])
        .await
        .user_may_not("smc:CreateAccessToken");
    s.call(&alice, ECS, "DescribeRegions", &[])
        .await
        .user_may_not("ecs:DescribeRegions");

    // Full access: Create works too.
    s.attach("alice", "System", "AliyunSMCFullAccess").await;
    let created = s.call(&alice, SMC, "CreateAccessToken", &[]).await.ok();
    assert!(
        created["AccessTokenId"]
            .as_str()
            .is_some_and(|id| id.starts_with("at-"))
    );

    // Detaching takes effect on the very next call.
    s.detach("alice", "System", "AliyunSMCFullAccess").await;
    s.call(&alice, SMC, "CreateAccessToken", &[])
        .await
        .user_may_not("smc:CreateAccessToken");
    s.detach("alice", "System", "AliyunSMCReadOnlyAccess").await;
    s.call(&alice, SMC, "DescribeSourceServers", &[])
        .await
        .user_may_not("smc:DescribeSourceServers");

    // An inactive key does not authenticate at all.
    s.root(
        RAM,
        "UpdateAccessKey",
        &[
            ("UserName", "alice"),
            ("UserAccessKeyId", &alice.id),
            ("Status", "Inactive"),
        ],
    )
    .await;
    s.call(&alice, SMC, "DescribeSourceServers", &[])
        .await
        .err(400, "InvalidAccessKeyId.Inactive");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_deny_beats_any_allow() {
    let s = Stack::start().await;
    let bob = s.user_with_key("bob").await;
    s.attach("bob", "System", "AdministratorAccess").await;
    s.call(&bob, SMC, "DescribeSourceServers", &[]).await.ok();
    s.custom_policy(
        "no-describe",
        json!({"Version": "1", "Statement": [
            {"Effect": "Deny", "Action": "smc:Describe*", "Resource": "*"}
        ]}),
    )
    .await;
    s.attach("bob", "Custom", "no-describe").await;
    s.call(&bob, SMC, "DescribeSourceServers", &[])
        .await
        .denied(
            "Forbidden.RAM",
            "smc:DescribeSourceServers",
            "SubUser",
            "ExplicitDeny",
        );
    // Everything else AdministratorAccess grants still works.
    let users = s.call(&bob, RAM, "ListUsers", &[]).await.ok();
    assert_eq!(users["Users"]["User"][0]["UserName"], "bob");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_can_be_allowed_to_manage_only_their_own_keys() {
    let s = Stack::start().await;
    let gina = s.user_with_key("gina").await;
    s.user_with_key("hank").await;
    let own = format!("acs:ram::{}:user/gina", s.account);
    s.custom_policy("own-keys", allow("ram:*AccessKey*", &own))
        .await;
    s.attach("gina", "Custom", "own-keys").await;
    // Without UserName the key actions address the caller, and are authorized as such.
    let mine = s.call(&gina, RAM, "ListAccessKeys", &[]).await.ok();
    assert_eq!(
        mine["AccessKeys"]["AccessKey"][0]["AccessKeyId"],
        gina.id.as_str()
    );
    let second = s.call(&gina, RAM, "CreateAccessKey", &[]).await.ok();
    assert!(second["AccessKey"]["AccessKeySecret"].is_string());
    s.call(&gina, RAM, "ListAccessKeys", &[("UserName", "hank")])
        .await
        .denied(
            "NoPermission",
            "ram:ListAccessKeys",
            "SubUser",
            "ImplicitDeny",
        );
    s.call(&gina, RAM, "CreateAccessKey", &[("UserName", "hank")])
        .await
        .denied(
            "NoPermission",
            "ram:CreateAccessKey",
            "SubUser",
            "ImplicitDeny",
        );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_can_be_limited_to_one_source_server() {
    let s = Stack::start().await;
    let carol = s.user_with_key("carol").await;
    let arn = format!("acs:smc:*:{}:sourceServer/s-allowed", s.account);
    s.custom_policy("one-source", allow("smc:DescribeSourceServers", &arn))
        .await;
    s.attach("carol", "Custom", "one-source").await;
    s.call(
        &carol,
        SMC,
        "DescribeSourceServers",
        &[("SourceId.1", "s-allowed")],
    )
    .await
    .ok();
    s.call(
        &carol,
        SMC,
        "DescribeSourceServers",
        &[("SourceId.1", "s-other")],
    )
    .await
    .user_may_not("smc:DescribeSourceServers");
    // Every resource a call touches must be allowed.
    s.call(
        &carol,
        SMC,
        "DescribeSourceServers",
        &[("SourceId.1", "s-allowed"), ("SourceId.2", "s-other")],
    )
    .await
    .user_may_not("smc:DescribeSourceServers");
    // Listing all sources is a different resource (`sourceServer/*`).
    s.call(&carol, SMC, "DescribeSourceServers", &[])
        .await
        .user_may_not("smc:DescribeSourceServers");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_and_mfa_conditions_are_evaluated() {
    let s = Stack::start().await;
    let dave = s.user_with_key("dave").await;
    let with_condition = |condition: Value| {
        json!({"Version": "1", "Statement": [{
            "Effect": "Allow", "Action": "smc:DescribeSourceServers", "Resource": "*",
            "Condition": condition,
        }]})
    };
    // The test talks over loopback: 10.0.0.0/8 never matches, 127.0.0.0/8 always does.
    s.custom_policy(
        "from-10",
        with_condition(json!({"IpAddress": {"acs:SourceIp": "10.0.0.0/8"}})),
    )
    .await;
    s.attach("dave", "Custom", "from-10").await;
    s.call(&dave, SMC, "DescribeSourceServers", &[])
        .await
        .user_may_not("smc:DescribeSourceServers");
    s.custom_policy(
        "from-loopback",
        with_condition(json!({"IpAddress": {"acs:SourceIp": ["10.0.0.0/8", "127.0.0.0/8"]}})),
    )
    .await;
    s.attach("dave", "Custom", "from-loopback").await;
    s.call(&dave, SMC, "DescribeSourceServers", &[]).await.ok();
    s.detach("dave", "Custom", "from-loopback").await;

    // Access keys never carry MFA.
    s.custom_policy(
        "with-mfa",
        with_condition(json!({"Bool": {"acs:MFAPresent": "true"}})),
    )
    .await;
    s.attach("dave", "Custom", "with-mfa").await;
    s.call(&dave, SMC, "DescribeSourceServers", &[])
        .await
        .user_may_not("smc:DescribeSourceServers");
    s.custom_policy(
        "without-mfa",
        with_condition(json!({"Bool": {"acs:MFAPresent": "false"}})),
    )
    .await;
    s.attach("dave", "Custom", "without-mfa").await;
    s.call(&dave, SMC, "DescribeSourceServers", &[]).await.ok();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_keys_and_policies_obey_rams_rules() {
    let s = Stack::start().await;
    let u = s
        .root(
            RAM,
            "CreateUser",
            &[
                ("UserName", "erin"),
                ("DisplayName", "Erin.Ops@example"),
                ("Email", "erin@example.com"),
            ],
        )
        .await;
    assert_eq!(u["User"]["UserName"], "erin");
    assert_eq!(u["User"]["DisplayName"], "Erin.Ops@example");
    assert!(
        u["User"]["UserId"]
            .as_str()
            .is_some_and(|id| id.len() == 16)
    );
    s.call(&s.root, RAM, "CreateUser", &[("UserName", "erin")])
        .await
        .err(409, "EntityAlreadyExists.User");
    s.call(&s.root, RAM, "CreateUser", &[("UserName", "bad name")])
        .await
        .err(400, "InvalidParameter.UserName.InvalidChars");
    s.call(&s.root, RAM, "CreateUser", &[("UserName", &"x".repeat(65))])
        .await
        .err(400, "InvalidParameter.UserName.Length");
    s.call(&s.root, RAM, "GetUser", &[("UserName", "nobody")])
        .await
        .err(404, "EntityNotExist.User");

    // At most two keys; the secret is only ever in CreateAccessKey's answer.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let k = s
            .root(RAM, "CreateAccessKey", &[("UserName", "erin")])
            .await;
        assert_eq!(k["AccessKey"]["Status"], "Active");
        assert!(
            k["AccessKey"]["AccessKeySecret"]
                .as_str()
                .is_some_and(|x| x.len() >= 30)
        );
        ids.push(
            k["AccessKey"]["AccessKeyId"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    s.call(&s.root, RAM, "CreateAccessKey", &[("UserName", "erin")])
        .await
        .err(409, "LimitExceeded.User.AccessKey");
    let keys = s.root(RAM, "ListAccessKeys", &[("UserName", "erin")]).await;
    let listed = keys["AccessKeys"]["AccessKey"].as_array().expect("keys");
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|k| k.get("AccessKeySecret").is_none()),
        "{keys:#}"
    );

    // Custom policies: a malformed document is refused; a good one attaches once.
    s.call(
        &s.root,
        RAM,
        "CreatePolicy",
        &[
            ("PolicyName", "broken"),
            ("PolicyDocument", "{\"Statement\": ["),
        ],
    )
    .await
    .err(400, "MalformedPolicyDocument");
    s.custom_policy("jobs-read", allow("smc:DescribeReplicationJobs", "*"))
        .await;
    s.attach("erin", "Custom", "jobs-read").await;
    s.call(
        &s.root,
        RAM,
        "AttachPolicyToUser",
        &[
            ("UserName", "erin"),
            ("PolicyType", "Custom"),
            ("PolicyName", "jobs-read"),
        ],
    )
    .await
    .err(409, "EntityAlreadyExists.User.Policy");
    s.call(
        &s.root,
        RAM,
        "AttachPolicyToUser",
        &[
            ("UserName", "erin"),
            ("PolicyType", "Custom"),
            ("PolicyName", "nope"),
        ],
    )
    .await
    .err(404, "EntityNotExist.Policy");
    let for_user = s
        .root(RAM, "ListPoliciesForUser", &[("UserName", "erin")])
        .await;
    assert_eq!(for_user["Policies"]["Policy"][0]["PolicyName"], "jobs-read");
    let entities = s
        .root(
            RAM,
            "ListEntitiesForPolicy",
            &[("PolicyType", "Custom"), ("PolicyName", "jobs-read")],
        )
        .await;
    assert_eq!(entities["Users"]["User"][0]["UserName"], "erin");
    let system = s
        .root(RAM, "ListPolicies", &[("PolicyType", "System")])
        .await;
    let names: Vec<&str> = system["Policies"]["Policy"]
        .as_array()
        .expect("policies")
        .iter()
        .filter_map(|p| p["PolicyName"].as_str())
        .collect();
    for want in [
        "AdministratorAccess",
        "AliyunSMCFullAccess",
        "AliyunSMCReadOnlyAccess",
        "AliyunECSFullAccess",
        "AliyunECSReadOnlyAccess",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(
        !names.contains(&"jobs-read"),
        "PolicyType=System lists no custom policy"
    );
    let got = s
        .root(
            RAM,
            "GetPolicy",
            &[("PolicyType", "Custom"), ("PolicyName", "jobs-read")],
        )
        .await;
    assert_eq!(got["Policy"]["AttachmentCount"], 1);
    assert!(
        got["DefaultPolicyVersion"]["PolicyDocument"]
            .as_str()
            .is_some_and(|d| d.contains("smc:DescribeReplicationJobs"))
    );

    // A new version replaces the document and becomes the default.
    let v2 = s
        .root(
            RAM,
            "CreatePolicyVersion",
            &[
                ("PolicyName", "jobs-read"),
                ("PolicyDocument", &allow("smc:Describe*", "*").to_string()),
                ("SetAsDefault", "true"),
            ],
        )
        .await;
    assert_eq!(v2["PolicyVersion"]["VersionId"], "v2");
    let got = s
        .root(
            RAM,
            "GetPolicy",
            &[("PolicyType", "Custom"), ("PolicyName", "jobs-read")],
        )
        .await;
    assert_eq!(got["Policy"]["DefaultVersion"], "v2");

    // Deletion conflicts, in the order RAM reports them.
    s.call(&s.root, RAM, "DeletePolicy", &[("PolicyName", "jobs-read")])
        .await
        .err(409, "DeleteConflict.Policy.User");
    s.call(&s.root, RAM, "DeleteUser", &[("UserName", "erin")])
        .await
        .err(409, "DeleteConflict.User.AccessKey");
    for id in &ids {
        s.root(
            RAM,
            "DeleteAccessKey",
            &[("UserName", "erin"), ("UserAccessKeyId", id)],
        )
        .await;
    }
    s.call(&s.root, RAM, "DeleteUser", &[("UserName", "erin")])
        .await
        .err(409, "DeleteConflict.User.Policy");
    s.detach("erin", "Custom", "jobs-read").await;
    s.root(RAM, "DeleteUser", &[("UserName", "erin")]).await;
    s.root(RAM, "DeletePolicy", &[("PolicyName", "jobs-read")])
        .await;
    s.call(&s.root, RAM, "GetUser", &[("UserName", "erin")])
        .await
        .err(404, "EntityNotExist.User");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assumed_roles_give_short_lived_credentials_limited_to_the_role() {
    let s = Stack::start().await;
    let trust = json!({"Version": "1", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        "Principal": {"RAM": [format!("acs:ram::{}:root", s.account)]},
    }]});
    let role = s
        .root(
            RAM,
            "CreateRole",
            &[
                ("RoleName", "Auditor"),
                ("AssumeRolePolicyDocument", &trust.to_string()),
            ],
        )
        .await;
    let arn = role["Role"]["Arn"].as_str().expect("arn").to_owned();
    assert_eq!(arn, format!("acs:ram::{}:role/auditor", s.account));
    s.root(
        RAM,
        "AttachPolicyToRole",
        &[
            ("RoleName", "Auditor"),
            ("PolicyType", "System"),
            ("PolicyName", "AliyunSMCReadOnlyAccess"),
        ],
    )
    .await;

    // Durations outside 900..=MaxSessionDuration (3600 by default) are refused.
    for bad in ["899", "3601"] {
        s.call(
            &s.root,
            STS,
            "AssumeRole",
            &[
                ("RoleArn", &arn),
                ("RoleSessionName", "audit"),
                ("DurationSeconds", bad),
            ],
        )
        .await
        .err(400, "InvalidParameter.DurationSeconds");
    }
    let assumed = s
        .root(
            STS,
            "AssumeRole",
            &[
                ("RoleArn", &arn),
                ("RoleSessionName", "audit"),
                ("DurationSeconds", "900"),
            ],
        )
        .await;
    let c = &assumed["Credentials"];
    let session = Key {
        id: c["AccessKeyId"].as_str().expect("id").to_owned(),
        secret: c["AccessKeySecret"].as_str().expect("secret").to_owned(),
        token: Some(c["SecurityToken"].as_str().expect("token").to_owned()),
    };
    assert!(session.id.starts_with("STS."), "{}", session.id);
    let expiration = ferry_api::parse_time(c["Expiration"].as_str().expect("expiration"))
        .expect("Expiration is a timestamp");
    let left = (expiration - time::OffsetDateTime::now_utc()).whole_seconds();
    assert!(
        (800..=900).contains(&left),
        "the session lasts 900 s, {left} s left"
    );
    assert_eq!(
        assumed["AssumedRoleUser"]["Arn"],
        format!("acs:ram::{}:role/auditor/audit", s.account)
    );
    assert!(
        assumed["AssumedRoleUser"]["AssumedRoleId"]
            .as_str()
            .is_some_and(|id| id.ends_with(":audit"))
    );

    // The temporary credentials work with their token (v1 query and v3 header) and do what the role may.
    s.call(&session, SMC, "DescribeSourceServers", &[])
        .await
        .ok();
    s.call_v3(&session, SMC, "DescribeSourceServers", &[])
        .await
        .ok();
    s.call(&session, SMC, "CreateAccessToken", &[])
        .await
        .denied(
            "Forbidden.RAM",
            "smc:CreateAccessToken",
            "AssumedRoleUser",
            "ImplicitDeny",
        );
    // Even asking who one is needs a policy (Ferry exempts nothing); root may.
    s.call(&session, STS, "GetCallerIdentity", &[])
        .await
        .denied(
            "NoPermission",
            "sts:GetCallerIdentity",
            "AssumedRoleUser",
            "ImplicitDeny",
        );
    let who = s.root(STS, "GetCallerIdentity", &[]).await;
    assert_eq!(who["IdentityType"], "Account");
    assert_eq!(who["Arn"], format!("acs:ram::{}:root", s.account));

    // Without the token, or with another session's token, they do not.
    let mut tokenless = session.clone();
    tokenless.token = None;
    s.call(&tokenless, SMC, "DescribeSourceServers", &[])
        .await
        .err(400, "InvalidSecurityToken.Malformed");
    let mut forged = session.clone();
    forged.token = Some(format!("{}x", session.token.as_deref().unwrap_or_default()));
    s.call(&forged, SMC, "DescribeSourceServers", &[])
        .await
        .err(400, "InvalidSecurityToken.Malformed");

    // An inline Policy narrows the session below the role's policies.
    let narrowed = s
        .root(
            STS,
            "AssumeRole",
            &[
                ("RoleArn", &arn),
                ("RoleSessionName", "jobs-only"),
                (
                    "Policy",
                    &allow("smc:DescribeReplicationJobs", "*").to_string(),
                ),
            ],
        )
        .await;
    let c = &narrowed["Credentials"];
    let jobs_only = Key {
        id: c["AccessKeyId"].as_str().expect("id").to_owned(),
        secret: c["AccessKeySecret"].as_str().expect("secret").to_owned(),
        token: Some(c["SecurityToken"].as_str().expect("token").to_owned()),
    };
    s.call(&jobs_only, SMC, "DescribeReplicationJobs", &[])
        .await
        .ok();
    s.call(&jobs_only, SMC, "DescribeSourceServers", &[])
        .await
        .denied(
            "Forbidden.RAM",
            "smc:DescribeSourceServers",
            "AssumedRoleUser",
            "ImplicitDeny",
        );

    // A RAM user needs both its own policy (sts:AssumeRole) and the role's trust. `acs:ram::<acct>:root`
    // in a trust policy admits the account's RAM users; a trust policy naming another user does not.
    let frank = s.user_with_key("frank").await;
    s.call(
        &frank,
        STS,
        "AssumeRole",
        &[("RoleArn", &arn), ("RoleSessionName", "x1")],
    )
    .await
    .denied("NoPermission", "sts:AssumeRole", "SubUser", "ImplicitDeny");
    s.custom_policy("assume", allow("sts:AssumeRole", "*"))
        .await;
    s.attach("frank", "Custom", "assume").await;
    s.call(
        &frank,
        STS,
        "AssumeRole",
        &[("RoleArn", &arn), ("RoleSessionName", "x1")],
    )
    .await
    .ok();
    let only_grace = json!({"Version": "1", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        "Principal": {"RAM": [format!("acs:ram::{}:user/grace", s.account)]},
    }]});
    let deployer = s
        .root(
            RAM,
            "CreateRole",
            &[
                ("RoleName", "Deployer"),
                ("AssumeRolePolicyDocument", &only_grace.to_string()),
            ],
        )
        .await;
    let deployer_arn = deployer["Role"]["Arn"].as_str().expect("arn").to_owned();
    s.call(
        &frank,
        STS,
        "AssumeRole",
        &[("RoleArn", &deployer_arn), ("RoleSessionName", "x1")],
    )
    .await
    .err(403, "NoPermission");
    s.call(
        &s.root,
        STS,
        "AssumeRole",
        &[
            ("RoleArn", "acs:ram::1:role/nope"),
            ("RoleSessionName", "x1"),
        ],
    )
    .await
    .err(404, "EntityNotExist.Role");

    // A role with policies cannot be deleted; deleting it ends its sessions.
    s.call(&s.root, RAM, "DeleteRole", &[("RoleName", "Auditor")])
        .await
        .err(409, "DeleteConflict.Role.Policy");
    s.root(
        RAM,
        "DetachPolicyFromRole",
        &[
            ("RoleName", "Auditor"),
            ("PolicyType", "System"),
            ("PolicyName", "AliyunSMCReadOnlyAccess"),
        ],
    )
    .await;
    s.call(&session, SMC, "DescribeSourceServers", &[])
        .await
        .denied(
            "Forbidden.RAM",
            "smc:DescribeSourceServers",
            "AssumedRoleUser",
            "ImplicitDeny",
        );
    s.root(RAM, "DeleteRole", &[("RoleName", "Auditor")]).await;
    s.call(&session, SMC, "DescribeSourceServers", &[])
        .await
        .err(404, "InvalidAccessKeyId.NotFound");
    s.stop().await;
}
