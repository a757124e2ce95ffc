//! The web console's server side end to end (`docs/console.md`): an in-process `ferry_server` per test on a
//! loopback port, spoken to over HTTPS like a browser does (cookies and headers set by hand, so that every
//! attribute is checked), with the root account preparing RAM users through the signed API. Covers the
//! static pages and their headers, sign-in (passwords, MFA with real TOTP codes, lockout and its end),
//! sessions and CSRF, `/call` answering exactly like the signed API (RAM allow and deny), the audit
//! trail's `ConsoleSignin`/`ConsoleOperation` events, sign-out and the live-update stream.

mod support;

use std::time::{Duration, Instant};

use ferry::{Client, ClientError};
use ferry_types::inventory::{Disk, DiskSource};
use serde_json::{Value, json};
use support::{Agent, Harness, items, own as p};

const ACTIONTRAIL: &str = "2020-07-06";
const PASSWORD: &str = "correct-horse-42";

/// A browser's view of the server: an HTTPS client that trusts the server's CA and does not follow
/// redirects (they are checked).
fn browser(h: &Harness) -> reqwest::Client {
    h.https_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTPS client")
}

/// A status and a JSON body (`Null` when the body is empty or not JSON).
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    async fn of(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    fn code(&self) -> &str {
        self.body["Code"].as_str().unwrap_or("")
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

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A signed-in console session: its cookie value and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

async fn signin_raw(h: &Harness, body: Value) -> Answer {
    Answer::of(
        browser(h)
            .post(format!("{}/console/api/signin", h.endpoint()))
            .json(&body)
            .send()
            .await
            .expect("signin request"),
    )
    .await
}

async fn signin(h: &Harness, user: &str, password: &str, mfa: Option<&str>) -> Answer {
    let mut body = json!({ "userName": user, "password": password });
    if let Some(code) = mfa {
        body["mfaCode"] = json!(code);
    }
    signin_raw(h, body).await
}

/// Signs in, failing the test unless it works; checks the cookie's attributes on the way.
async fn session(h: &Harness, user: &str, mfa: Option<&str>) -> Session {
    let a = signin(h, user, PASSWORD, mfa).await;
    assert_eq!(a.status, 200, "signin: {:#}", a.body);
    let set_cookie = a.header("set-cookie").to_owned();
    let (pair, attrs) = set_cookie.split_once(';').expect("cookie attributes");
    let value = pair
        .strip_prefix("ferry_session=")
        .unwrap_or_else(|| panic!("not the session cookie: {set_cookie}"));
    // 256 random bits, URL-safe base64 without padding.
    assert_eq!(value.len(), 43, "{set_cookie}");
    let attrs: Vec<&str> = attrs.split(';').map(str::trim).collect();
    for want in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/console"] {
        assert!(attrs.contains(&want), "{want} missing from {set_cookie}");
    }
    let csrf = a.body["csrfToken"].as_str().expect("csrfToken").to_owned();
    assert_eq!(a.body["userName"], user);
    Session {
        cookie: format!("ferry_session={value}"),
        csrf,
    }
}

async fn me(h: &Harness, s: &Session) -> Answer {
    Answer::of(
        browser(h)
            .get(format!("{}/console/api/me", h.endpoint()))
            .header("cookie", &s.cookie)
            .send()
            .await
            .expect("me"),
    )
    .await
}

/// `POST /console/api/call` with the session's cookie and `csrf` as the CSRF token.
async fn call_with(h: &Harness, s: &Session, csrf: Option<&str>, body: Value) -> Answer {
    let mut req = browser(h)
        .post(format!("{}/console/api/call", h.endpoint()))
        .header("cookie", &s.cookie)
        .json(&body);
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    Answer::of(req.send().await.expect("call")).await
}

async fn call(h: &Harness, s: &Session, product: &str, action: &str, params: Value) -> Answer {
    call_with(
        h,
        s,
        Some(&s.csrf),
        json!({ "product": product, "action": action, "params": params }),
    )
    .await
}

/// Root creates the RAM user `name` with `policies` attached and a console password.
async fn user_with_password(h: &Harness, name: &str, policies: &[&str]) {
    h.api
        .ram("CreateUser", &p(&[("UserName", name)]))
        .await
        .expect("CreateUser");
    for policy in policies {
        h.api
            .ram(
                "AttachPolicyToUser",
                &p(&[
                    ("UserName", name),
                    ("PolicyType", "System"),
                    ("PolicyName", policy),
                ]),
            )
            .await
            .expect("AttachPolicyToUser");
    }
    let created = h
        .api
        .ram(
            "CreateLoginProfile",
            &p(&[("UserName", name), ("Password", PASSWORD)]),
        )
        .await
        .expect("CreateLoginProfile");
    assert_eq!(created["LoginProfile"]["UserName"], name);
    assert_eq!(created["LoginProfile"]["PasswordResetRequired"], false);
}

/// The newest audit events (up to 50), newest first.
async fn audit_events(h: &Harness) -> Vec<Value> {
    let v = h
        .api
        .call(ACTIONTRAIL, "LookupEvents", &p(&[("MaxResults", "50")]))
        .await
        .expect("LookupEvents");
    v["Events"].as_array().cloned().expect("Events")
}

fn api_error(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, code, .. } => (status, code),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_embedded_and_served_with_security_headers() {
    let h = Harness::start().await;
    let b = browser(&h);
    let index = b
        .get(format!("{}/console/", h.endpoint()))
        .send()
        .await
        .expect("index");
    assert_eq!(index.status().as_u16(), 200);
    let headers = index.headers().clone();
    let get = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(get("content-type"), "text/html; charset=utf-8");
    assert_eq!(get("cache-control"), "no-cache");
    assert_eq!(get("content-security-policy"), "default-src 'self'");
    assert_eq!(get("x-frame-options"), "DENY");
    assert_eq!(get("referrer-policy"), "no-referrer");
    assert_eq!(get("x-content-type-options"), "nosniff");
    let html = index.text().await.expect("html");
    assert!(html.to_lowercase().contains("<html"), "{html}");

    // Unknown pages and API paths are 404s, with the same headers.
    let missing = Answer::of(
        b.get(format!("{}/console/no-such-page.js", h.endpoint()))
            .send()
            .await
            .expect("missing"),
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("x-frame-options"), "DENY");
    let api = Answer::of(
        b.get(format!("{}/console/api/nothing", h.endpoint()))
            .send()
            .await
            .expect("api 404"),
    )
    .await;
    api.err(404, "NotFound");

    // A browser opening the server's address is sent to the console; SDK-style requests are not.
    for path in ["/", "/console"] {
        let r = b
            .get(format!("{}{path}", h.endpoint()))
            .header("accept", "text/html,application/xhtml+xml")
            .send()
            .await
            .expect("root");
        assert!(r.status().is_redirection(), "{path}: {}", r.status());
        assert_eq!(
            r.headers().get("location").and_then(|v| v.to_str().ok()),
            Some("/console/")
        );
    }
    let rpc = Answer::of(
        b.get(format!("{}/", h.endpoint()))
            .send()
            .await
            .expect("rpc"),
    )
    .await;
    rpc.err(400, "MissingParameter");
    // The signed API still answers on `/`.
    h.smc("DescribeSourceServers", &[]).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sessions_csrf_and_sign_out() {
    let h = Harness::start().await;
    user_with_password(&h, "alice", &["AliyunSMCReadOnlyAccess"]).await;
    h.api
        .ram("CreateUser", &p(&[("UserName", "nopass")]))
        .await
        .expect("CreateUser");

    // Wrong password, unknown user and a user without a password: one answer, no user enumeration.
    let wrong = signin(&h, "alice", "wrong-password-1", None).await;
    wrong.err(401, "InvalidCredentials");
    for user in ["mallory", "nopass"] {
        let other = signin(&h, user, PASSWORD, None).await;
        other.err(401, "InvalidCredentials");
        assert_eq!(other.body["Message"], wrong.body["Message"]);
    }
    assert!(wrong.header("set-cookie").is_empty());
    // Not JSON: refused before anything is checked (cross-site forms cannot send JSON).
    let form = Answer::of(
        browser(&h)
            .post(format!("{}/console/api/signin", h.endpoint()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("userName=alice&password=correct-horse-42")
            .send()
            .await
            .expect("form"),
    )
    .await;
    form.err(415, "UnsupportedMediaType");

    let s = session(&h, "alice", None).await;
    let m = me(&h, &s).await;
    assert_eq!(m.status, 200, "{:#}", m.body);
    assert_eq!(m.body["userName"], "alice");
    assert_eq!(m.body["displayName"], "alice");
    assert_eq!(m.body["mfa"], false);
    assert_eq!(m.body["csrfToken"], s.csrf.as_str());
    assert_eq!(m.header("cache-control"), "no-store");
    assert_eq!(m.header("content-security-policy"), "default-src 'self'");

    // No cookie, or a made-up one: 401.
    let none = Answer::of(
        browser(&h)
            .get(format!("{}/console/api/me", h.endpoint()))
            .send()
            .await
            .expect("me"),
    )
    .await;
    none.err(401, "NotSignedIn");
    let forged = Session {
        cookie: "ferry_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        csrf: s.csrf.clone(),
    };
    me(&h, &forged).await.err(401, "NotSignedIn");

    // CSRF: a missing or wrong token is refused, for calls and for sign-out.
    let body = json!({ "product": "smc", "action": "DescribeSourceServers", "params": {} });
    call_with(&h, &s, None, body.clone())
        .await
        .err(403, "InvalidCSRFToken");
    call_with(&h, &s, Some("not-the-token"), body.clone())
        .await
        .err(403, "InvalidCSRFToken");
    let signout_no_csrf = Answer::of(
        browser(&h)
            .post(format!("{}/console/api/signout", h.endpoint()))
            .header("cookie", &s.cookie)
            .send()
            .await
            .expect("signout"),
    )
    .await;
    signout_no_csrf.err(403, "InvalidCSRFToken");
    assert_eq!(
        me(&h, &s).await.status,
        200,
        "a refused sign-out ends nothing"
    );

    // Idle expiry: 31 minutes without a request end the session.
    let idle = session(&h, "alice", None).await;
    ferry_server::console::test_clock_advance(&h.server.state, 31 * 60);
    me(&h, &idle).await.err(401, "NotSignedIn");
    // (`s` was idle as long: it ended too.)
    me(&h, &s).await.err(401, "NotSignedIn");

    let s = session(&h, "alice", None).await;
    let out = browser(&h)
        .post(format!("{}/console/api/signout", h.endpoint()))
        .header("cookie", &s.cookie)
        .header("x-csrf-token", &s.csrf)
        .send()
        .await
        .expect("signout");
    assert_eq!(out.status().as_u16(), 204);
    let cleared = out
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        cleared.starts_with("ferry_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    me(&h, &s).await.err(401, "NotSignedIn");

    // A new password ends the user's sessions.
    let s = session(&h, "alice", None).await;
    h.api
        .ram(
            "UpdateLoginProfile",
            &p(&[("UserName", "alice"), ("Password", "another-horse-43")]),
        )
        .await
        .expect("UpdateLoginProfile");
    me(&h, &s).await.err(401, "NotSignedIn");
    signin(&h, "alice", PASSWORD, None)
        .await
        .err(401, "InvalidCredentials");
    assert_eq!(
        signin(&h, "alice", "another-horse-43", None).await.status,
        200
    );

    // Every attempt is a ConsoleSignin event, without the password.
    let events = audit_events(&h).await;
    let signins: Vec<&Value> = events
        .iter()
        .filter(|e| e["eventType"] == "ConsoleSignin")
        .collect();
    assert!(
        signins
            .iter()
            .any(|e| e["userIdentity"]["userName"] == "alice" && e.get("errorCode").is_none()),
        "{signins:#?}"
    );
    assert!(
        signins
            .iter()
            .any(|e| e["userIdentity"]["userName"] == "mallory"
                && e["errorCode"] == "InvalidCredentials"),
        "{signins:#?}"
    );
    let all = serde_json::to_string(&events).expect("json");
    assert!(!all.contains(PASSWORD) && !all.contains("another-horse-43"));
    assert!(
        events
            .iter()
            .any(|e| e["eventName"] == "ConsoleSignout" && e["userIdentity"]["userName"] == "alice")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failures_lock_the_user_until_the_window_passes() {
    let h = Harness::start().await;
    user_with_password(&h, "bob", &[]).await;
    for i in 0..5 {
        signin(&h, "bob", &format!("wrong-{i}-password"), None)
            .await
            .err(401, "InvalidCredentials");
    }
    // Locked: even the right password is refused, and the message says until when.
    let locked = signin(&h, "bob", PASSWORD, None).await;
    locked.err(429, "LoginLocked");
    let msg = locked.body["Message"].as_str().unwrap_or("");
    assert!(
        msg.contains("locked until") && msg.contains("15 minutes"),
        "{msg}"
    );
    // Unknown user names lock the same way (no enumeration through the lockout).
    for _ in 0..5 {
        signin(&h, "ghost", "whatever-1", None)
            .await
            .err(401, "InvalidCredentials");
    }
    signin(&h, "ghost", "whatever-1", None)
        .await
        .err(429, "LoginLocked");
    // Another user is not affected.
    user_with_password(&h, "carol", &[]).await;
    assert_eq!(signin(&h, "carol", PASSWORD, None).await.status, 200);

    // 14 minutes later: still locked. After 15: the right password works again.
    ferry_server::console::test_clock_advance(&h.server.state, 14 * 60);
    signin(&h, "bob", PASSWORD, None)
        .await
        .err(429, "LoginLocked");
    ferry_server::console::test_clock_advance(&h.server.state, 61);
    assert_eq!(signin(&h, "bob", PASSWORD, None).await.status, 200);
    // Success cleared the failures: one new failure does not lock.
    signin(&h, "bob", "wrong-again-1", None)
        .await
        .err(401, "InvalidCredentials");
    assert_eq!(signin(&h, "bob", PASSWORD, None).await.status, 200);

    let events = audit_events(&h).await;
    assert!(
        events
            .iter()
            .any(|e| e["eventType"] == "ConsoleSignin" && e["errorCode"] == "LoginLocked"),
        "a refused sign-in of a locked user is audited"
    );
    h.stop().await;
}

/// The console clock's now (the test may have moved it).
fn console_now(h: &Harness) -> i64 {
    ferry_server::console::now(&h.server.state)
}

fn totp(seed: &[u8], step: i64) -> String {
    ferry_server::console::totp::code_at_step(seed, step)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_is_required_once_bound_and_satisfies_mfa_conditions() {
    let h = Harness::start().await;
    user_with_password(&h, "dave", &["AliyunSMCReadOnlyAccess"]).await;
    // A custom policy that only allows creating activation codes with MFA.
    let doc = json!({
        "Version": "1",
        "Statement": [{
            "Effect": "Allow",
            "Action": "smc:CreateAccessToken",
            "Resource": "*",
            "Condition": { "Bool": { "acs:MFAPresent": "true" } }
        }]
    });
    h.api
        .ram(
            "CreatePolicy",
            &p(&[
                ("PolicyName", "codes-with-mfa"),
                ("PolicyDocument", &doc.to_string()),
            ]),
        )
        .await
        .expect("CreatePolicy");
    h.api
        .ram(
            "AttachPolicyToUser",
            &p(&[
                ("UserName", "dave"),
                ("PolicyType", "Custom"),
                ("PolicyName", "codes-with-mfa"),
            ]),
        )
        .await
        .expect("attach");

    // Without MFA: signed in, but the MFA-conditioned action is denied.
    let plain = session(&h, "dave", None).await;
    call(&h, &plain, "smc", "CreateAccessToken", json!({}))
        .await
        .err(403, "Forbidden.RAM");

    let dev = h
        .api
        .ram(
            "CreateVirtualMFADevice",
            &p(&[("VirtualMFADeviceName", "dave-phone")]),
        )
        .await
        .expect("CreateVirtualMFADevice");
    let serial = dev["VirtualMFADevice"]["SerialNumber"]
        .as_str()
        .expect("SerialNumber")
        .to_owned();
    assert!(serial.ends_with(":mfa/dave-phone"), "{serial}");
    let seed = ferry_server::console::totp::base32_decode(
        dev["VirtualMFADevice"]["Base32StringSeed"]
            .as_str()
            .expect("seed"),
    )
    .expect("base32 seed");
    let step = ferry_server::console::totp::step_of(console_now(&h));
    // Two codes that are not consecutive are refused.
    let bad = h
        .api
        .ram(
            "BindMFADevice",
            &p(&[
                ("SerialNumber", &serial),
                ("UserName", "dave"),
                ("AuthenticationCode1", &totp(&seed, step)),
                ("AuthenticationCode2", &totp(&seed, step - 5)),
            ]),
        )
        .await
        .expect_err("wrong codes");
    assert_eq!(
        api_error(bad),
        (400, "InvalidParameter.AuthenticationCode".into())
    );
    h.api
        .ram(
            "BindMFADevice",
            &p(&[
                ("SerialNumber", &serial),
                ("UserName", "dave"),
                ("AuthenticationCode1", &totp(&seed, step - 1)),
                ("AuthenticationCode2", &totp(&seed, step)),
            ]),
        )
        .await
        .expect("BindMFADevice");
    let info = h
        .api
        .ram("GetUserMFAInfo", &p(&[("UserName", "dave")]))
        .await
        .expect("GetUserMFAInfo");
    assert_eq!(info["MFADevice"]["SerialNumber"], serial.as_str());
    let listed = h
        .api
        .ram("ListVirtualMFADevices", &[])
        .await
        .expect("ListVirtualMFADevices");
    let devices = items(&listed, "VirtualMFADevices", "VirtualMFADevice");
    assert_eq!(devices.len(), 1, "{listed}");
    assert_eq!(devices[0]["User"]["UserName"], "dave");
    assert!(
        devices[0].get("Base32StringSeed").is_none(),
        "listing never shows the seed"
    );

    // Bound: the password alone is not enough; a wrong code fails; the right code works once.
    signin(&h, "dave", PASSWORD, None)
        .await
        .err(401, "MFARequired");
    signin(&h, "dave", "wrong-password-1", None)
        .await
        .err(401, "InvalidCredentials");
    // The codes used for binding are spent; the next step's code is fresh.
    let code = totp(&seed, step + 1);
    let wrong = if code == "000000" { "000001" } else { "000000" };
    signin(&h, "dave", PASSWORD, Some(wrong))
        .await
        .err(401, "InvalidMFACode");
    signin(&h, "dave", PASSWORD, Some(&totp(&seed, step)))
        .await
        .err(401, "InvalidMFACode");
    let s = session(&h, "dave", Some(&code)).await;
    assert_eq!(me(&h, &s).await.body["mfa"], true);
    signin(&h, "dave", PASSWORD, Some(&code))
        .await
        .err(401, "InvalidMFACode");
    // With MFA, the condition holds.
    let created = call(&h, &s, "smc", "CreateAccessToken", json!({})).await;
    assert_eq!(created.status, 200, "{:#}", created.body);
    assert!(created.body["AccessTokenId"].is_string());

    // The seed and codes never reach the audit trail.
    let events = audit_events(&h).await;
    let all = serde_json::to_string(&events).expect("json");
    let seed_b32 = dev["VirtualMFADevice"]["Base32StringSeed"]
        .as_str()
        .unwrap_or("");
    assert!(!all.contains(seed_b32));
    assert!(
        !all.contains(&code),
        "an MFA code leaked into the audit trail"
    );

    // Unbound: the password alone works again.
    h.api
        .ram("UnbindMFADevice", &p(&[("UserName", "dave")]))
        .await
        .expect("UnbindMFADevice");
    assert_eq!(signin(&h, "dave", PASSWORD, None).await.status, 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_calls_are_authorized_and_audited_like_the_signed_api() {
    let h = Harness::start().await;
    user_with_password(&h, "erin", &["AliyunSMCReadOnlyAccess"]).await;
    let key = h
        .api
        .ram("CreateAccessKey", &p(&[("UserName", "erin")]))
        .await
        .expect("CreateAccessKey");
    let erin = Client::new(
        &h.endpoint(),
        key["AccessKey"]["AccessKeyId"].as_str().expect("id"),
        key["AccessKey"]["AccessKeySecret"]
            .as_str()
            .expect("secret"),
        Some(&h.server.state.ca_pem),
    )
    .expect("client");
    let s = session(&h, "erin", None).await;

    // Allowed: the same answer as the signed API (apart from the RequestId).
    let console = call(
        &h,
        &s,
        "smc",
        "DescribeSourceServers",
        json!({ "PageSize": 5 }),
    )
    .await;
    assert_eq!(console.status, 200, "{:#}", console.body);
    let mut api = erin
        .smc("DescribeSourceServers", &p(&[("PageSize", "5")]))
        .await
        .expect("API");
    let mut body = console.body.clone();
    for v in [&mut body, &mut api] {
        v.as_object_mut().map(|m| m.remove("RequestId"));
    }
    assert_eq!(body, api);

    // Denied: the same status, code and detail as the signed API.
    let denied = call(&h, &s, "smc", "CreateAccessToken", json!({})).await;
    let api_denied = api_error(
        erin.smc("CreateAccessToken", &[])
            .await
            .expect_err("denied"),
    );
    assert_eq!(api_denied, (403, "Forbidden.RAM".into()));
    denied.err(api_denied.0, &api_denied.1);
    assert_eq!(
        denied.body["AccessDeniedDetail"]["AuthAction"],
        "smc:CreateAccessToken"
    );
    assert_eq!(
        denied.body["AccessDeniedDetail"]["AuthPrincipalDisplayName"],
        "erin"
    );
    // RAM's own code for RAM actions.
    let ram_denied = call(&h, &s, "ram", "ListUsers", json!({})).await;
    ram_denied.err(403, "NoPermission");
    // Validation errors come back as the API's envelope too.
    let invalid = call(
        &h,
        &s,
        "smc",
        "DescribeSourceServers",
        json!({ "PageSize": 0 }),
    )
    .await;
    let api_invalid = api_error(
        erin.smc("DescribeSourceServers", &p(&[("PageSize", "0")]))
            .await
            .expect_err("invalid"),
    );
    invalid.err(api_invalid.0, &api_invalid.1);
    let unknown = call(&h, &s, "smc", "NoSuchAction", json!({})).await;
    let api_unknown = api_error(erin.smc("NoSuchAction", &[]).await.expect_err("unknown"));
    unknown.err(api_unknown.0, &api_unknown.1);
    let bad_product = call(&h, &s, "oss", "ListBuckets", json!({})).await;
    bad_product.err(400, "InvalidParameter.Product");

    // Audited as console operations by erin, with the console's request IDs.
    let events = audit_events(&h).await;
    let of = |rid: &Value| {
        events
            .iter()
            .filter(|e| &e["requestId"] == rid)
            .cloned()
            .collect::<Vec<_>>()
    };
    let allowed = of(&console.body["RequestId"]);
    assert_eq!(allowed.len(), 1, "{events:#?}");
    assert_eq!(allowed[0]["eventType"], "ConsoleOperation");
    assert_eq!(allowed[0]["eventName"], "DescribeSourceServers");
    assert_eq!(allowed[0]["userIdentity"]["userName"], "erin");
    assert_eq!(allowed[0]["userIdentity"]["type"], "ram-user");
    assert!(allowed[0]["userIdentity"].get("accessKeyId").is_none());
    let refused = of(&denied.body["RequestId"]);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["eventType"], "ConsoleOperation");
    assert_eq!(refused[0]["errorCode"], "Forbidden.RAM");
    // The signed API's calls stay ApiCall events.
    assert!(events.iter().any(|e| e["eventType"] == "ApiCall"
        && e["eventName"] == "CreateAccessToken"
        && e["userIdentity"]["userName"] == "erin"));
    h.stop().await;
}

/// Reads server-sent events from `resp` until one named `changed` arrives (or the deadline); returns
/// its data.
async fn next_changed(resp: &mut reqwest::Response, buf: &mut String, deadline: Instant) -> Value {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut name = None;
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if name.as_deref() == Some("changed") {
                return serde_json::from_str(&data).expect("event data is JSON");
            }
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no `changed` event in time; got so far: {buf:?}"
        );
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => buf.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Ok(None)) => panic!("the event stream ended"),
            Ok(Err(e)) => panic!("event stream: {e}"),
            Err(_) => panic!("no `changed` event in time; got so far: {buf:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_reports_changes() {
    let h = Harness::start().await;
    user_with_password(&h, "frank", &["AliyunSMCReadOnlyAccess"]).await;
    let s = session(&h, "frank", None).await;
    // Without a session: 401, no stream.
    let anon = Answer::of(
        browser(&h)
            .get(format!("{}/console/api/events", h.endpoint()))
            .send()
            .await
            .expect("events"),
    )
    .await;
    anon.err(401, "NotSignedIn");

    let mut resp = browser(&h)
        .get(format!("{}/console/api/events", h.endpoint()))
        .header("cookie", &s.cookie)
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = String::new();
    let first = next_changed(&mut resp, &mut buf, deadline).await;
    assert_eq!(first["jobs"], json!({}), "{first}");
    assert!(first["time"].is_string(), "{first}");

    // A source server registers, then a job is created for it: each shows in the stream.
    let code = h.smc("CreateAccessToken", &[]).await["AccessTokenCode"]
        .as_str()
        .expect("code")
        .to_owned();
    let mut inv = support::inventory("web-01");
    inv.disks = vec![Disk {
        index: 0,
        path: "/dev/vda".into(),
        source: DiskSource::BlockDevice,
        size_bytes: 2 << 30,
        model: None,
        partition_table: None,
        table_uuid: None,
        partitions: vec![],
        filesystem: None,
    }];
    let agent = Agent::activate(&h, h.https(), &code, inv, vec![]).await;
    let mut seen = next_changed(&mut resp, &mut buf, deadline).await;
    while seen["sources"].as_object().is_none_or(|m| m.is_empty()) {
        seen = next_changed(&mut resp, &mut buf, deadline).await;
    }
    h.smc(
        "CreateReplicationJob",
        &[("SourceId", &agent.source_id), ("RegionId", "local")],
    )
    .await;
    loop {
        let ev = next_changed(&mut resp, &mut buf, deadline).await;
        let jobs: i64 = ev["jobs"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_i64).sum())
            .unwrap_or(0);
        if jobs == 1 {
            break;
        }
    }
    drop(resp);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_passwords_and_enables_and_disables_mfa() {
    let h = Harness::start().await;
    h.ok(&["ram", "user", "create", "gina"]).await;
    // A generated password, shown once, that signs in.
    let set = h
        .json(&["ram", "user", "set-password", "gina", "--require-mfa"])
        .await;
    let password = set["Password"]
        .as_str()
        .expect("generated password")
        .to_owned();
    assert_eq!(set["LoginProfile"]["MFABindRequired"], true, "{set}");
    let first = signin(&h, "gina", &password, None).await;
    assert_eq!(first.status, 200, "{:#}", first.body);
    assert_eq!(first.body["mfaBindRequired"], true);
    // Running it again replaces the password (UpdateLoginProfile).
    let again = h.json(&["ram", "user", "set-password", "gina"]).await;
    let new_password = again["Password"].as_str().expect("password").to_owned();
    assert_ne!(new_password, password);
    signin(&h, "gina", &password, None)
        .await
        .err(401, "InvalidCredentials");

    // Codes before a device exists: refused with what to do.
    let early = h
        .fails(&[
            "ram",
            "user",
            "mfa",
            "enable",
            "gina",
            "--codes",
            "123456,654321",
        ])
        .await;
    assert!(format!("{:#}", early.err).contains("without --codes first"));
    // Step one prints the URI; step two binds with two consecutive codes from it.
    let created = h.json(&["ram", "user", "mfa", "enable", "gina"]).await;
    assert_eq!(created["Bound"], false);
    let uri = created["OtpauthUri"].as_str().expect("uri").to_owned();
    assert!(
        uri.starts_with("otpauth://totp/Ferry:gina?secret="),
        "{uri}"
    );
    let secret = uri
        .split("secret=")
        .nth(1)
        .and_then(|r| r.split('&').next())
        .expect("secret");
    let seed = ferry_server::console::totp::base32_decode(secret).expect("base32");
    let step = ferry_server::console::totp::step_of(console_now(&h));
    let codes = format!("{},{}", totp(&seed, step - 1), totp(&seed, step));
    let bound = h
        .json(&["ram", "user", "mfa", "enable", "gina", "--codes", &codes])
        .await;
    assert_eq!(bound["Bound"], true, "{bound}");
    signin(&h, "gina", &new_password, None)
        .await
        .err(401, "MFARequired");
    let with_code = signin(&h, "gina", &new_password, Some(&totp(&seed, step + 1))).await;
    assert_eq!(with_code.status, 200, "{:#}", with_code.body);
    assert_eq!(with_code.body["mfa"], true);

    h.ok(&["ram", "user", "mfa", "disable", "gina"]).await;
    assert_eq!(signin(&h, "gina", &new_password, None).await.status, 200);
    let devices = h.api.ram("ListVirtualMFADevices", &[]).await.expect("list");
    assert!(
        items(&devices, "VirtualMFADevices", "VirtualMFADevice").is_empty(),
        "disable deletes the device: {devices}"
    );

    // Deleting the user ends its console state: its session, and its MFA binding (the device can then
    // be deleted).
    let again = h.json(&["ram", "user", "mfa", "enable", "gina"]).await;
    let uri = again["OtpauthUri"].as_str().expect("uri").to_owned();
    let secret = uri
        .split("secret=")
        .nth(1)
        .and_then(|r| r.split('&').next())
        .expect("secret");
    let seed = ferry_server::console::totp::base32_decode(secret).expect("base32");
    let step = ferry_server::console::totp::step_of(console_now(&h));
    let codes = format!("{},{}", totp(&seed, step - 1), totp(&seed, step));
    h.ok(&["ram", "user", "mfa", "enable", "gina", "--codes", &codes])
        .await;
    let signed_in = signin(&h, "gina", &new_password, Some(&totp(&seed, step + 1))).await;
    assert_eq!(signed_in.status, 200, "{:#}", signed_in.body);
    let cookie = signed_in
        .header("set-cookie")
        .split(';')
        .next()
        .unwrap_or("")
        .to_owned();
    let s = Session {
        cookie,
        csrf: String::new(),
    };
    assert_eq!(me(&h, &s).await.status, 200);
    h.api
        .ram("DeleteUser", &p(&[("UserName", "gina")]))
        .await
        .expect("DeleteUser");
    me(&h, &s).await.err(401, "NotSignedIn");
    let devices = h.api.ram("ListVirtualMFADevices", &[]).await.expect("list");
    let listed = items(&devices, "VirtualMFADevices", "VirtualMFADevice");
    assert_eq!(listed.len(), 1, "{devices}");
    assert!(listed[0].get("User").is_none(), "{devices}");
    let serial = listed[0]["SerialNumber"]
        .as_str()
        .expect("serial")
        .to_owned();
    h.api
        .ram("DeleteVirtualMFADevice", &p(&[("SerialNumber", &serial)]))
        .await
        .expect("DeleteVirtualMFADevice");
    h.stop().await;
}
