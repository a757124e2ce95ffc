//! The web console, built into the server: static pages embedded at compile time (`console/` beside this
//! crate's `Cargo.toml`) served under `/console/`, and the small JSON API they use under `/console/api/`
//! (contract and security model: `docs/console.md`).
//!
//! Invariants:
//! * The console has no private back door: every action a signed-in user takes goes through
//!   [`crate::rpc::execute`], the same RAM authorization, action code and audit trail as the signed RPC
//!   API (with `eventType` `ConsoleOperation`). Only sign-in, sign-out, `me` and the live-update stream are
//!   console-specific, and sign-ins are audited too (`ConsoleSignin`).
//! * A session is a 256-bit random cookie (`HttpOnly; Secure; SameSite=Strict; Path=/console`) stored only
//!   as its SHA-256; it ends after [`Settings::idle_secs`] without use or [`Settings::absolute_secs`] after
//!   sign-in, at sign-out, and when the user's password changes or the user is renamed or deleted.
//! * Every state-changing request needs the session's CSRF token in `X-CSRF-Token`, and JSON bodies
//!   (which a cross-site form cannot send).
//! * Every response under `/console` carries the security headers of [`security_headers`].

mod call;
pub(crate) mod password;
pub(crate) mod seal;
mod signin;
pub mod totp;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use ferry_api::{ApiError, Params};
use include_dir::{Dir, include_dir};

use crate::AppState;

/// The console's pages, embedded at compile time (`build.rs` makes Cargo rebuild when they change).
static PAGES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/console");

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "ferry_session";
/// The header that must carry the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Sign-in and session limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Failed sign-ins of one user name within [`Settings::failure_window_secs`] that lock it.
    pub max_failures: usize,
    pub failure_window_secs: i64,
    /// How long a locked user name stays locked after the failure that locked it.
    pub lock_secs: i64,
    /// A session unused this long ends (sliding: each request moves it).
    pub idle_secs: i64,
    /// A session ends this long after sign-in, used or not.
    pub absolute_secs: i64,
}

/// The limits Ferry uses: 5 failures in 15 minutes lock for 15 minutes; sessions last 30 minutes idle
/// and 12 hours at most.
pub const SETTINGS: Settings = Settings {
    max_failures: 5,
    failure_window_secs: 15 * 60,
    lock_secs: 15 * 60,
    idle_secs: 30 * 60,
    absolute_secs: 12 * 3600,
};

/// Clock offsets that tests set per server (keyed by data directory, as one test process runs several
/// servers). Production never sets one: the console's clock is then the system clock.
static TEST_CLOCK_OFFSETS: LazyLock<Mutex<HashMap<PathBuf, i64>>> = LazyLock::new(Default::default);

/// Now, in unix seconds, on the console's clock (sessions, lockouts, TOTP).
pub fn now(st: &AppState) -> i64 {
    let offsets = TEST_CLOCK_OFFSETS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ferry_db::now() + offsets.get(&st.cfg.data_dir).copied().unwrap_or(0)
}

/// Test hook: moves the console's clock of the server `st` forward by `secs` (lockout windows, session
/// expiry and TOTP steps then behave as if that much time had passed). Not for production use.
pub fn test_clock_advance(st: &AppState, secs: i64) {
    let mut offsets = TEST_CLOCK_OFFSETS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *offsets.entry(st.cfg.data_dir.clone()).or_insert(0) += secs;
}

/// The console's routes (merged into the server's router by `crate::router`).
pub fn routes() -> Router<Arc<AppState>> {
    use axum::routing::{any, get, post};
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(|| async { page("") }))
        .route("/console/api/signin", post(signin::signin))
        .route("/console/api/signout", post(signin::signout))
        .route("/console/api/me", get(signin::me))
        .route("/console/api/call", post(call::call))
        .route("/console/api/events", get(call::events))
        .route("/console/api/{*rest}", any(api_not_found))
        .route(
            "/console/{*path}",
            get(
                |axum::extract::Path(path): axum::extract::Path<String>| async move { page(&path) },
            ),
        )
        .layer(axum::middleware::map_response(security_headers))
}

/// Whether a request to `/` is a browser asking for a page rather than an RPC call: a GET that accepts
/// HTML and names no `Action` (SDKs always do). Such requests are sent to the console.
pub fn wants_console(method: &Method, headers: &HeaderMap, params: &Params) -> bool {
    method == Method::GET
        && !params.contains("Action")
        && !headers.contains_key("x-acs-action")
        && headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

/// The redirect of [`wants_console`] requests.
pub fn redirect_to_console() -> Response {
    Redirect::to("/console/").into_response()
}

/// Adds the console's security headers, and `Cache-Control: no-cache` where a handler set none.
pub async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    for (name, value) in [
        ("content-security-policy", "default-src 'self'"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    res
}

/// An embedded page: `path` relative to `console/` (`""` and directories mean their `index.html`).
fn page(path: &str) -> Response {
    let path = path.trim_start_matches('/');
    let file = if path.is_empty() || path.ends_with('/') {
        PAGES.get_file(format!("{path}index.html"))
    } else {
        PAGES
            .get_file(path)
            .or_else(|| PAGES.get_file(format!("{path}/index.html")))
    };
    match file {
        Some(f) => {
            let name = f.path().to_string_lossy();
            ([(header::CONTENT_TYPE, content_type(&name))], f.contents()).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Not found: this page is not part of the Ferry console. Start at /console/.",
        )
            .into_response(),
    }
}

/// The content type of an embedded file, by extension.
fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("txt") => "text/plain; charset=utf-8",
        Some("webmanifest") => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

async fn api_not_found() -> Response {
    error_response(
        &ApiError::new(
            "NotFound",
            404,
            "This console API does not exist: use signin, signout, me, call or events under /console/api/.",
        ),
        &ferry_api::new_request_id(),
    )
}

/// A console API error: the RPC error envelope as JSON, never cached.
pub(crate) fn error_response(e: &ApiError, request_id: &str) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        e.to_json(request_id, None).to_string(),
    )
        .into_response()
}

/// A console API answer: JSON, never cached.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Whether the request's body is declared JSON (`application/json`, any parameters). Requiring it stops
/// cross-site HTML forms, which cannot send it without a CORS preflight this server never grants.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| ct.trim().eq_ignore_ascii_case("application/json"))
}

/// The error for a body that is not JSON.
pub(crate) fn not_json() -> ApiError {
    ApiError::new(
        "UnsupportedMediaType",
        415,
        "Send the request body as JSON with Content-Type: application/json.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_are_sent_to_the_console_and_sdks_are_not() {
        let html = {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_static("text/html,*/*"));
            h
        };
        let empty = Params::from_query("");
        assert!(wants_console(&Method::GET, &html, &empty));
        assert!(!wants_console(&Method::POST, &html, &empty));
        assert!(!wants_console(&Method::GET, &HeaderMap::new(), &empty));
        let rpc = Params::from_query("Action=DescribeSourceServers&Version=2019-06-01");
        assert!(!wants_console(&Method::GET, &html, &rpc));
        let mut v3 = html.clone();
        v3.insert("x-acs-action", HeaderValue::from_static("DescribeRegions"));
        assert!(!wants_console(&Method::GET, &v3, &empty));
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a/b/app.JS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("logo.svg"), "image/svg+xml");
        assert_eq!(content_type("blob"), "application/octet-stream");
    }

    #[test]
    fn the_index_page_is_embedded() {
        let r = page("");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(page("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(page("no-such-page.html").status(), StatusCode::NOT_FOUND);
    }
}
