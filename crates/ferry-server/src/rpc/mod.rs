//! The public RPC API: Alibaba Cloud's RPC style on `/` (`../shared/ref/smc-api.md`). This module is the
//! edge: it merges parameters, authenticates the signature (v1 or v3), rejects replayed nonces, authorizes,
//! dispatches to the product's action, and renders the result or the error envelope.

mod ecs;
mod smc;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ferry_api::{ApiError, Format, Params, Product, Secret};
use serde_json::Value;

use crate::AppState;
use crate::app::OrInternal;

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub struct Caller {
    pub access_key_id: String,
    /// `None` for the root account.
    pub user_name: Option<String>,
}

/// One authenticated call, as the actions see it.
pub struct Call<'a> {
    pub st: &'a AppState,
    pub params: &'a Params,
    pub caller: &'a Caller,
}

/// Largest accepted request body (form parameters).
const MAX_BODY: usize = 1 << 20;

pub async fn handle(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = ferry_api::new_request_id();
    let form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let params = Params::from_parts(uri.query().unwrap_or(""), form.then_some(&body[..]));
    let format = Format::from_params(&params);
    let mut product = None;
    let result = async {
        if method != Method::GET && method != Method::POST {
            return Err(ApiError::unsupported_method(method.as_str()));
        }
        if body.len() > MAX_BODY {
            return Err(ApiError::invalid_parameter("body", "is larger than 1 MiB"));
        }
        let av = params.action_version(&headers)?;
        let p = Product::from_version(&av.version)?;
        product = Some(p);
        let caller = authenticate(&st, &method, &params, &headers, &body).await?;
        authorize(&caller, p, &av.action)?;
        let call = Call {
            st: &st,
            params: &params,
            caller: &caller,
        };
        let out = match p {
            Product::Smc => smc::dispatch(&call, &av.action).await,
            Product::Ecs => ecs::dispatch(&call, &av.action).await,
            _ => None,
        };
        let out = out.unwrap_or_else(|| Err(ApiError::invalid_action(&av.action, &av.version)));
        tracing::info!(
            %peer, action = %av.action, key = %caller.access_key_id, ok = out.is_ok(), request_id = %request_id,
            "api call"
        );
        out.map(|v| (av.action, v))
    }
    .await;
    match result {
        Ok((action, value)) => {
            let (ct, body) = ferry_api::render_ok(&action, &request_id, value, format);
            ([(axum::http::header::CONTENT_TYPE, ct)], body).into_response()
        }
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(code = %e.code, request_id = %request_id, "api call failed");
            }
            let (ct, body) = e.render(&request_id, product, format);
            let status =
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, [(axum::http::header::CONTENT_TYPE, ct)], body).into_response()
        }
    }
}

async fn authenticate(
    st: &AppState,
    method: &Method,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Caller, ApiError> {
    // The signature check is synchronous; fetch the claimed key first.
    let claimed = claimed_key_id(params, headers);
    let key = match &claimed {
        Some(id) => st.db.access_key_get(id).await.or_internal()?,
        None => None,
    };
    let now = time::OffsetDateTime::now_utc();
    let verified = ferry_api::verify(
        method,
        params,
        headers,
        body,
        |id| {
            key.as_ref()
                .filter(|k| k.id == id)
                .map(|k| Secret::new(k.secret.clone()))
        },
        now,
    )?;
    let key = key.ok_or_else(|| ApiError::access_key_not_found(&verified.access_key_id))?;
    if key.status != "Active" {
        return Err(ApiError::access_key_inactive(&key.id));
    }
    let expires = now.unix_timestamp() + ferry_api::sign::MAX_CLOCK_SKEW.whole_seconds() * 2;
    let nonce_key = format!("{}:{}", key.id, verified.nonce);
    if !st.db.nonce_use(&nonce_key, expires).await.or_internal()? {
        return Err(ApiError::signature_nonce_used(&verified.nonce));
    }
    Ok(Caller {
        access_key_id: key.id,
        user_name: key.user_name,
    })
}

/// The AccessKeyId a request claims (v1 parameter or v3 `Credential=`), before verification.
fn claimed_key_id(params: &Params, headers: &HeaderMap) -> Option<String> {
    if let Some(id) = params.get("AccessKeyId") {
        return Some(id.to_owned());
    }
    let auth = headers.get("authorization")?.to_str().ok()?;
    ferry_api::sign::Authorization::parse(auth)
        .ok()
        .map(|a| a.access_key_id)
}

/// RAM authorization. Today only the root account exists and may do everything.
/// TODO-correctness: evaluate RAM policies here (the API issue).
fn authorize(caller: &Caller, product: Product, action: &str) -> Result<(), ApiError> {
    match caller.user_name {
        None => Ok(()),
        Some(_) => Err(ApiError::forbidden_ram(&product.ram_action(action), "*")),
    }
}

/// Page-number paging: (`PageNumber`, `PageSize`, offset).
pub fn paging(params: &Params, max_size: i64) -> Result<(i64, i64, i64), ApiError> {
    let number = params
        .get_int_in("PageNumber", 1, i64::from(i32::MAX))?
        .unwrap_or(1);
    let size = params.get_int_in("PageSize", 1, max_size)?.unwrap_or(10);
    Ok((number, size, (number - 1) * size))
}

/// Result of an action: the response's fields as a JSON object.
pub type ActionResult = Result<Value, ApiError>;

/// Unix seconds → `YYYY-MM-DDThh:mm:ssZ`.
pub fn time_str(secs: i64) -> String {
    ferry_api::response::fmt_unix(secs).unwrap_or_default()
}
