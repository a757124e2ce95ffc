//! `POST /console/api/call` (one RPC action, through `rpc::execute`) and `GET /console/api/events` (live
//! updates as server-sent events).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ferry_api::{ApiError, Format, Params, Product};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::signin::{check_csrf, session};
use super::{error_response, is_json, not_json};
use crate::AppState;
use crate::app::OrInternal;
use crate::rpc::{Caller, Channel, Invocation, Principal};

/// Parameters that belong to the signing protocol, not to an action: a console call cannot set them
/// (`Action` and `Version` come from `product` and `action`).
const PROTOCOL_PARAMS: &[&str] = &[
    "Action",
    "Version",
    "Format",
    "AccessKeyId",
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "SignatureType",
    "SecurityToken",
    "Timestamp",
];

#[derive(Deserialize)]
struct CallBody {
    product: String,
    action: String,
    #[serde(default)]
    params: Map<String, Value>,
}

/// The product a console call names (`smc`, `ecs`, `ram`, `sts`, `actiontrail`, any case).
fn product(name: &str) -> Result<Product, ApiError> {
    match name.to_ascii_lowercase().as_str() {
        "smc" => Ok(Product::Smc),
        "ecs" => Ok(Product::Ecs),
        "ram" => Ok(Product::Ram),
        "sts" => Ok(Product::Sts),
        "actiontrail" => Ok(Product::ActionTrail),
        _ => Err(ApiError::new(
            "InvalidParameter.Product",
            400,
            format!("The product {name:?} is not one of smc, ecs, ram, sts, actiontrail."),
        )),
    }
}

/// The RPC parameters of a console call: the flat key/values of `params` (strings, numbers and booleans
/// as their text; `null` left out) plus `Action`, `Version` and `Format=JSON`.
///
/// Errors: `InvalidParameter` (400) for a nested value or a signing-protocol parameter.
pub(crate) fn params_of(
    p: Product,
    action: &str,
    params: &Map<String, Value>,
) -> Result<Params, ApiError> {
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(params.len() + 3);
    for (k, v) in params {
        if PROTOCOL_PARAMS.contains(&k.as_str()) {
            return Err(ApiError::invalid_parameter(
                k,
                "is part of request signing and cannot be set in a console call",
            ));
        }
        let text = match v {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(ApiError::invalid_parameter(
                    k,
                    "must be a string, number or boolean: lists are flattened as in the RPC API (\"SourceId.1\": \"s-…\")",
                ));
            }
        };
        pairs.push((k.clone(), text));
    }
    pairs.push(("Action".into(), action.to_owned()));
    pairs.push(("Version".into(), p.version().to_owned()));
    pairs.push(("Format".into(), "JSON".into()));
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect();
    Ok(Params::from_parts("", Some(body.join("&").as_bytes())))
}

/// `application/x-www-form-urlencoded` encoding of one key or value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `POST /console/api/call`: what the RPC API answers for the action, through the same code path.
pub(crate) async fn call(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = ferry_api::new_request_id();
    let prepared = async {
        let s = session(&st, &headers, true).await?;
        check_csrf(&s, &headers)?;
        if !is_json(&headers) {
            return Err(not_json());
        }
        let req: CallBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                "InvalidParameter",
                400,
                format!(
                    "The body must be JSON {{\"product\":\"smc\",\"action\":\"DescribeSourceServers\",\"params\":{{…}}}}: {e}."
                ),
            )
        })?;
        let p = product(&req.product)?;
        let params = params_of(p, &req.action, &req.params)?;
        Ok((s, p, req.action, params))
    }
    .await;
    let (s, p, action, params) = match prepared {
        Ok(x) => x,
        Err(e) => return error_response(&e, &request_id),
    };
    let caller = Caller {
        access_key_id: "console".to_owned(),
        principal: Principal::User {
            name: s.user.name.clone(),
        },
        user_name: Some(s.user.name.clone()),
        mfa_present: s.record.mfa != 0,
        source_ip: Some(peer.ip().to_canonical()),
        // The console is only served on the TLS listener, and its cookie is `Secure`.
        secure_transport: true,
    };
    let invocation = Invocation {
        product: p,
        action: &action,
        params: &params,
        request_id: &request_id,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
        channel: Channel::Console,
    };
    let (status, ct, body) = match crate::rpc::execute(&st, &caller, &invocation).await {
        Ok(v) => {
            let (ct, body) = ferry_api::render_ok(&action, &request_id, v, Format::Json);
            (StatusCode::OK, ct, body)
        }
        Err(e) => {
            let (ct, body) = e.render(&request_id, Some(p), Format::Json);
            let status =
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, ct, body)
        }
    };
    (
        status,
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// How often the stream re-reads the summary when no notification came (changes that wake no one, such
/// as a source server going offline, still show within this time).
const POLL: Duration = Duration::from_secs(2);
/// How often the stream sends a comment line, so proxies and browsers keep the connection.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How often the stream checks that its session is still valid (it ends when not).
const SESSION_CHECK: Duration = Duration::from_secs(15);

/// The live-update summary: counts per status, and the time.
async fn summary(st: &AppState) -> Result<Value, ApiError> {
    let s = st.db.console_summary().await.or_internal()?;
    let counts = |rows: Vec<(String, i64)>| -> Value {
        Value::Object(rows.into_iter().map(|(k, n)| (k, json!(n))).collect())
    };
    Ok(json!({
        "jobs": counts(s.jobs),
        "runs": counts(s.runs),
        "sources": counts(s.sources),
        "instances": counts(s.instances),
        "time": crate::rpc::time_str(super::now(st)),
    }))
}

struct Stream {
    st: Arc<AppState>,
    headers: HeaderMap,
    /// The last summary sent (without its time).
    last: Option<Value>,
    last_session_check: tokio::time::Instant,
}

/// `GET /console/api/events`: `event: changed` with the summary as data, at once and then whenever jobs,
/// runs, source servers or instances change; a `: heartbeat` comment every 15 s. The stream ends when the
/// session does.
pub(crate) async fn events(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = session(&st, &headers, false).await {
        return error_response(&e, &ferry_api::new_request_id());
    }
    let start = Stream {
        st,
        headers,
        last: None,
        last_session_check: tokio::time::Instant::now(),
    };
    let stream = futures::stream::unfold(start, |mut s| async move {
        loop {
            let st = s.st.clone();
            // Registered before the summary is read, so that a change made meanwhile is not missed.
            let tasks = st.tasks_changed.notified();
            let wake = st.wake.notified();
            tokio::pin!(tasks, wake);
            tasks.as_mut().enable();
            wake.as_mut().enable();
            if s.last_session_check.elapsed() >= SESSION_CHECK {
                if session(&st, &s.headers, false).await.is_err() {
                    return None;
                }
                s.last_session_check = tokio::time::Instant::now();
            }
            let mut current = match summary(&st).await {
                Ok(v) => v,
                // A database hiccup: try again at the next poll rather than end the stream.
                Err(_) => {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            };
            let time = current
                .as_object_mut()
                .and_then(|m| m.remove("time"))
                .unwrap_or(Value::Null);
            if s.last.as_ref() != Some(&current) {
                s.last = Some(current.clone());
                if let Some(m) = current.as_object_mut() {
                    m.insert("time".into(), time);
                }
                let event = Event::default().event("changed").data(current.to_string());
                return Some((Ok::<_, Infallible>(event), s));
            }
            let notified = tokio::select! {
                _ = &mut tasks => true,
                _ = &mut wake => true,
                _ = tokio::time::sleep(POLL) => false,
            };
            if notified {
                // Something changed that the counts may not show (a run's progress): tell the page.
                s.last = None;
            }
        }
    });
    let mut res = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_params_are_the_rpc_params() {
        let mut m = Map::new();
        m.insert("SourceId.1".into(), json!("s-1"));
        m.insert("PageSize".into(), json!(50));
        m.insert("DryRun".into(), json!(true));
        m.insert("Name".into(), json!("a b&c=d+é"));
        m.insert("Gone".into(), Value::Null);
        let p = params_of(Product::Smc, "DescribeSourceServers", &m).expect("params");
        assert_eq!(p.get_list("SourceId"), vec!["s-1".to_owned()]);
        assert_eq!(p.get("PageSize"), Some("50"));
        assert_eq!(p.get("DryRun"), Some("true"));
        assert_eq!(p.get("Name"), Some("a b&c=d+é"));
        assert_eq!(p.get("Gone"), None);
        assert_eq!(p.get("Action"), Some("DescribeSourceServers"));
        assert_eq!(p.get("Version"), Some("2019-06-01"));

        for bad in ["Action", "Signature", "AccessKeyId"] {
            let mut m = Map::new();
            m.insert(bad.into(), json!("x"));
            let e = params_of(Product::Smc, "X", &m).expect_err(bad);
            assert_eq!(e.status, 400);
        }
        let mut nested = Map::new();
        nested.insert("Tag".into(), json!([{"Key": "a"}]));
        assert!(params_of(Product::Smc, "X", &nested).is_err());
    }

    #[test]
    fn products_are_named_in_any_case() {
        assert_eq!(product("SMC").ok(), Some(Product::Smc));
        assert_eq!(product("actiontrail").ok(), Some(Product::ActionTrail));
        assert_eq!(product("oss").expect_err("unknown").status, 400);
    }
}
