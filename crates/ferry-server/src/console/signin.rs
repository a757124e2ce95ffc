//! Console sign-in, sessions, sign-out and `me`.
//!
//! Invariants:
//! * An unknown user, a user without a password and a wrong password get the same answer
//!   (`InvalidCredentials`) after the same work (a decoy hash is checked), so that sign-in does not tell
//!   which user names exist; the lockout counts failures per user name, known or not, for the same reason.
//! * `MFARequired` is only ever answered after the right password (it says MFA is bound, which only the
//!   password's owner may learn); a wrong MFA code counts as a failure, so codes cannot be guessed
//!   faster than passwords; a TOTP step is accepted once.
//! * Every attempt, refused or not, is one `ConsoleSignin` audit event; the password and the code are
//!   never part of it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ferry_api::{ApiError, Product};
use ferry_db::{ConsoleSessionRecord, UserRecord};
use rand::RngCore as _;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;

use super::{
    CSRF_HEADER, SESSION_COOKIE, SETTINGS, Settings, error_response, is_json, json_response,
    not_json,
};
use crate::AppState;
use crate::app::OrInternal;
use crate::audit::{AuditEvent, Identity, Service};

/// Longest user name and password looked at; longer ones are wrong without further work.
const MAX_NAME: usize = 64;
const MAX_PASSWORD: usize = 256;

/// A valid session and its user, as the handlers see it.
pub(crate) struct Session {
    pub record: ConsoleSessionRecord,
    pub user: UserRecord,
}

/// The 401 of a request without a valid session.
fn not_signed_in() -> ApiError {
    ApiError::new(
        "NotSignedIn",
        401,
        "You are not signed in, or your session ended (30 minutes idle, 12 hours at most, sign-out or a password change): sign in again.",
    )
}

/// The 403 of a state-changing request without the session's CSRF token.
fn invalid_csrf() -> ApiError {
    ApiError::new(
        "InvalidCSRFToken",
        403,
        "The X-CSRF-Token header is missing or does not match your session: reload the console (GET /console/api/me returns the token) and try again.",
    )
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        "InvalidCredentials",
        401,
        "The user name or password is wrong. Check them, or ask an administrator to set your password.",
    )
}

/// The value of the session cookie, if the request carries one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The request's session, if it is valid at `now`. `touch` moves its idle clock (every request but the
/// live-update stream, which a forgotten open tab would otherwise keep alive for 12 hours).
///
/// Errors: `NotSignedIn` (401) when there is no session cookie or it names no live session (an ended
/// session is deleted on the way); `InternalError` when the database fails.
pub(crate) async fn session(
    st: &AppState,
    headers: &HeaderMap,
    touch: bool,
) -> Result<Session, ApiError> {
    let cookie = session_cookie(headers).ok_or_else(not_signed_in)?;
    let id_hash = crate::app::secret_hash(&cookie);
    let record = st
        .db
        .console_session_get(&id_hash)
        .await
        .or_internal()?
        .ok_or_else(not_signed_in)?;
    let now = super::now(st);
    let user = st.db.user_get(&record.user_name).await.or_internal()?;
    let user = match user {
        Some(u) if u.id == record.user_id && is_live(&record, now, &SETTINGS) => u,
        // Ended, or the user was renamed or deleted since sign-in.
        _ => {
            st.db.console_session_delete(&id_hash).await.or_internal()?;
            return Err(not_signed_in());
        }
    };
    if touch {
        st.db
            .console_session_touch(&id_hash, now)
            .await
            .or_internal()?;
    }
    Ok(Session { record, user })
}

/// Whether a session is within its idle and absolute limits at `now`.
fn is_live(s: &ConsoleSessionRecord, now: i64, settings: &Settings) -> bool {
    now < s.last_seen_at + settings.idle_secs && now < s.created_at + settings.absolute_secs
}

/// Checks the request's `X-CSRF-Token` against the session's, in constant time.
///
/// Errors: `InvalidCSRFToken` (403).
pub(crate) fn check_csrf(s: &Session, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if given.is_empty() || !bool::from(given.as_bytes().ct_eq(s.record.csrf_token.as_bytes())) {
        return Err(invalid_csrf());
    }
    Ok(())
}

/// When the user name with these failed sign-ins (newest first) is locked until, if it is: the newest
/// [`Settings::max_failures`] failures fell within [`Settings::failure_window_secs`], and the lock lasts
/// [`Settings::lock_secs`] from the newest. The caller compares the result with now.
pub(crate) fn locked_until(failures_newest_first: &[i64], settings: &Settings) -> Option<i64> {
    let n = settings.max_failures.max(1);
    if failures_newest_first.len() < n {
        return None;
    }
    let newest = failures_newest_first[0];
    let nth = failures_newest_first[n - 1];
    (newest - nth < settings.failure_window_secs).then_some(newest + settings.lock_secs)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigninBody {
    user_name: String,
    password: String,
    #[serde(default)]
    mfa_code: Option<String>,
}

/// `POST /console/api/signin`.
pub(crate) async fn signin(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = ferry_api::new_request_id();
    if !is_json(&headers) {
        return error_response(&not_json(), &request_id);
    }
    let req: SigninBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let e = ApiError::new(
                "InvalidParameter",
                400,
                format!(
                    "The body must be JSON {{\"userName\":…,\"password\":…,\"mfaCode\":… (optional)}}: {e}."
                ),
            );
            return error_response(&e, &request_id);
        }
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let attempt = Attempt {
        st: &st,
        user_name: &req.user_name,
        peer,
        user_agent,
        request_id: &request_id,
    };
    let outcome = attempt.run(&req).await;
    let audited = attempt.audit(&outcome).await;
    match audited.and(outcome.map_err(|(e, _)| e)) {
        Ok(ok) => {
            let cookie = format!(
                "{SESSION_COOKIE}={}; HttpOnly; Secure; SameSite=Strict; Path=/console",
                ok.cookie
            );
            let mut res = json_response(StatusCode::OK, &ok.body);
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            res
        }
        Err(e) => error_response(&e, &request_id),
    }
}

struct SignedIn {
    cookie: String,
    body: Value,
    mfa: bool,
    user_known: bool,
}

struct Attempt<'a> {
    st: &'a AppState,
    user_name: &'a str,
    peer: SocketAddr,
    user_agent: Option<&'a str>,
    request_id: &'a str,
}

/// A refused attempt: the error, and whether the user name exists (for the audit event only).
type Refused = (ApiError, bool);

impl Attempt<'_> {
    async fn run(&self, req: &SigninBody) -> Result<SignedIn, Refused> {
        let st = self.st;
        let name = self.user_name;
        if name.is_empty() || name.chars().count() > MAX_NAME || req.password.len() > MAX_PASSWORD {
            return Err((invalid_credentials(), false));
        }
        let now = super::now(st);
        let settings = SETTINGS;
        // Housekeeping: nothing older than this can matter to a lockout.
        let horizon = now - settings.failure_window_secs - settings.lock_secs;
        let internal = |e: ApiError| (e, false);
        st.db
            .console_signin_failure_purge(horizon)
            .await
            .or_internal()
            .map_err(internal)?;
        st.db
            .console_session_purge(now - settings.idle_secs, now - settings.absolute_secs)
            .await
            .or_internal()
            .map_err(internal)?;
        let failures = st
            .db
            .console_signin_failure_list(name, horizon)
            .await
            .or_internal()
            .map_err(internal)?;
        let user = st.db.user_get(name).await.or_internal().map_err(internal)?;
        let known = user.is_some();
        if let Some(until) = locked_until(&failures, &settings).filter(|u| *u > now) {
            let minutes = (until - now + 59) / 60;
            return Err((
                ApiError::new(
                    "LoginLocked",
                    429,
                    format!(
                        "Too many failed sign-ins for this user: sign-in is locked until {} (in {minutes} minute{}). Try again then, or ask an administrator to check the account.",
                        crate::rpc::time_str(until),
                        if minutes == 1 { "" } else { "s" }
                    ),
                ),
                known,
            ));
        }
        let fail = |e: ApiError| async move {
            st.db
                .console_signin_failure_add(name, now)
                .await
                .or_internal()
                .map_err(|e| (e, known))?;
            Err::<SignedIn, Refused>((e, known))
        };
        let password_ok = super::password::verify(
            &req.password,
            user.as_ref().and_then(|u| u.password_hash.as_deref()),
        )
        .await;
        let Some(user) = user.filter(|_| password_ok) else {
            return fail(invalid_credentials()).await;
        };
        let device = st
            .db
            .mfa_device_for_user(&user.id)
            .await
            .or_internal()
            .map_err(|e| (e, true))?;
        let mfa = device.is_some();
        if let Some(device) = device {
            let Some(code) = req.mfa_code.as_deref().filter(|c| !c.trim().is_empty()) else {
                return Err((
                    ApiError::new(
                        "MFARequired",
                        401,
                        "This user signs in with MFA: send the 6-digit code of your authenticator app as mfaCode.",
                    ),
                    true,
                ));
            };
            let seed = super::seal::open(st, &device.serial_number, &device.seed)
                .map_err(|e| (e, true))?;
            let step = super::totp::verify(&seed, code, now);
            let fresh = match step {
                Some(step) => st
                    .db
                    .mfa_device_use_step(&device.serial_number, step)
                    .await
                    .or_internal()
                    .map_err(|e| (e, true))?,
                None => false,
            };
            if !fresh {
                return fail(ApiError::new(
                    "InvalidMFACode",
                    401,
                    "The MFA code is wrong or was already used: wait for the next code of your authenticator app (check that this device's clock is right) and try again.",
                ))
                .await;
            }
        }
        st.db
            .console_signin_failure_clear(name)
            .await
            .or_internal()
            .map_err(|e| (e, true))?;
        let cookie = random_token();
        let csrf = random_token();
        let record = ConsoleSessionRecord {
            id_hash: crate::app::secret_hash(&cookie),
            user_id: user.id.clone(),
            user_name: user.name.clone(),
            csrf_token: csrf,
            mfa: i64::from(mfa),
            source_ip: self.peer.ip().to_canonical().to_string(),
            created_at: now,
            last_seen_at: now,
        };
        st.db
            .console_session_create(&record)
            .await
            .or_internal()
            .map_err(|e| (e, true))?;
        let profile = st
            .db
            .login_profile_get(&user.name)
            .await
            .or_internal()
            .map_err(|e| (e, true))?;
        Ok(SignedIn {
            cookie,
            body: me_json(st, &user, &record, profile.as_ref()),
            mfa,
            user_known: true,
        })
    }

    /// Records the attempt as a `ConsoleSignin` event.
    async fn audit(&self, outcome: &Result<SignedIn, Refused>) -> Result<(), ApiError> {
        let st = self.st;
        let (known, mfa, error) = match outcome {
            Ok(ok) => (ok.user_known, ok.mfa, None),
            Err((e, known)) => (*known, false, Some((e.code.to_string(), e.message.clone()))),
        };
        let mut params = serde_json::Map::new();
        params.insert("UserName".into(), json!(self.user_name));
        let identity = Identity {
            kind: if known { "ram-user" } else { "unknown" }.into(),
            principal_id: known.then(|| self.user_name.to_owned()),
            account_id: Some(st.account_id.clone()),
            access_key_id: None,
            user_name: Some(self.user_name.to_owned()),
            arn: None,
        };
        let event = AuditEvent {
            event_type: crate::audit::EVENT_TYPE_CONSOLE_SIGNIN,
            service: Service::of(Product::Ram),
            event_name: "ConsoleSignin".into(),
            request_id: self.request_id.to_owned(),
            region: st.cfg.region_id.clone(),
            request_parameters: params,
            response_elements: None,
            error,
            source_ip: Some(self.peer.ip().to_canonical()),
            user_agent: self.user_agent.map(|u| u.chars().take(512).collect()),
            identity,
            resources: vec![("ACS::RAM::User".into(), self.user_name.to_owned())],
            additional: Some(json!({
                "loginAccount": format!("{}@{}", self.user_name, st.account_id),
                "MFAUsed": if mfa { "true" } else { "false" },
            })),
        };
        crate::audit::record(st, event).await
    }
}

/// 256 random bits, URL-safe base64 without padding (43 characters).
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The signed-in user as `signin` and `me` answer it.
fn me_json(
    st: &AppState,
    user: &UserRecord,
    session: &ConsoleSessionRecord,
    profile: Option<&ferry_db::LoginProfileRecord>,
) -> Value {
    json!({
        "userName": user.name,
        "displayName": user.display_name,
        "csrfToken": session.csrf_token,
        "mfa": session.mfa != 0,
        "accountId": st.account_id,
        "passwordResetRequired": profile.is_some_and(|p| p.password_reset_required),
        "mfaBindRequired": profile.is_some_and(|p| p.mfa_bind_required),
    })
}

/// `GET /console/api/me`: the signed-in user, or 401.
pub(crate) async fn me(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let request_id = ferry_api::new_request_id();
    let result = async {
        let s = session(&st, &headers, true).await?;
        let profile = st.db.login_profile_get(&s.user.name).await.or_internal()?;
        Ok::<_, ApiError>(me_json(&st, &s.user, &s.record, profile.as_ref()))
    }
    .await;
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(e) => error_response(&e, &request_id),
    }
}

/// `POST /console/api/signout` (CSRF-checked): ends the session; 204 and a cookie that expires at once.
pub(crate) async fn signout(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let request_id = ferry_api::new_request_id();
    let result = async {
        let s = session(&st, &headers, false).await?;
        check_csrf(&s, &headers)?;
        st.db
            .console_session_delete(&s.record.id_hash)
            .await
            .or_internal()?;
        let event = AuditEvent {
            event_type: crate::audit::EVENT_TYPE_CONSOLE,
            service: Service::of(Product::Ram),
            event_name: "ConsoleSignout".into(),
            request_id: request_id.clone(),
            region: st.cfg.region_id.clone(),
            request_parameters: serde_json::Map::new(),
            response_elements: None,
            error: None,
            source_ip: Some(peer.ip().to_canonical()),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|u| u.chars().take(512).collect()),
            identity: Identity {
                kind: "ram-user".into(),
                principal_id: Some(s.user.name.clone()),
                account_id: Some(st.account_id.clone()),
                access_key_id: None,
                user_name: Some(s.user.name.clone()),
                arn: None,
            },
            resources: vec![("ACS::RAM::User".into(), s.user.name.clone())],
            additional: None,
        };
        crate::audit::record(&st, event).await
    }
    .await;
    match result {
        Ok(()) => (
            StatusCode::NO_CONTENT,
            [
                (
                    header::SET_COOKIE,
                    format!(
                        "{SESSION_COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/console; Max-Age=0"
                    ),
                ),
                (header::CACHE_CONTROL, "no-store".to_owned()),
            ],
        )
            .into_response(),
        Err(e) => error_response(&e, &request_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_within_the_window_lock_for_the_lock_time() {
        let s = SETTINGS;
        assert_eq!(locked_until(&[], &s), None);
        assert_eq!(locked_until(&[100, 90, 80, 70], &s), None);
        // Five within 15 minutes: locked for 15 minutes from the newest.
        assert_eq!(
            locked_until(&[1000, 900, 800, 700, 600], &s),
            Some(1000 + 900)
        );
        // Five, but spread over more than the window: not locked.
        assert_eq!(locked_until(&[2000, 1900, 1800, 1700, 1000], &s), None);
        // After a lock ran out, one more failure does not lock again at once.
        let after = 1000 + 900 + 1;
        assert_eq!(locked_until(&[after, 1000, 900, 800, 700, 600], &s), None);
    }

    fn record(created: i64, seen: i64) -> ConsoleSessionRecord {
        ConsoleSessionRecord {
            id_hash: "h".into(),
            user_id: "1".into(),
            user_name: "u".into(),
            csrf_token: "t".into(),
            mfa: 0,
            source_ip: "127.0.0.1".into(),
            created_at: created,
            last_seen_at: seen,
        }
    }

    #[test]
    fn sessions_end_when_idle_or_old() {
        let s = SETTINGS;
        assert!(is_live(&record(0, 0), 1799, &s));
        assert!(!is_live(&record(0, 0), 1800, &s));
        // Used recently, but signed in 12 hours ago.
        assert!(is_live(&record(0, 43_000), 43_199, &s));
        assert!(!is_live(&record(0, 43_000), 43_200, &s));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; ferry_session=abc; b=2"),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        h.insert(header::COOKIE, HeaderValue::from_static("ferry_session="));
        assert_eq!(session_cookie(&h), None);
        assert_eq!(random_token().len(), 43);
        assert_ne!(random_token(), random_token());
    }
}
