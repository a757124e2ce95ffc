//! The public RPC API: Alibaba Cloud's RPC style on `/` (`../shared/ref/smc-api.md`). This module is the
//! edge: it merges parameters, authenticates the signature (v1 or v3), rejects replayed nonces, authorizes,
//! dispatches to the product's action, and renders the result or the error envelope.

mod actiontrail;
mod ecs;
mod ram;
mod smc;
mod sts;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ferry_api::{ApiError, Format, Params, Product, Secret};
use ferry_db::{AccessKeyRecord, POLICY_CUSTOM, PRINCIPAL_ROLE, PRINCIPAL_USER, StsSessionRecord};
use ferry_iam::{AuthRequest, Decision, PolicyDocument, RequestContext};
use serde_json::{Value, json};

use crate::AppState;
use crate::app::OrInternal;

/// Who is calling, once authenticated: the principal behind the access key and what is known about the
/// request for policy conditions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub access_key_id: String,
    pub principal: Principal,
    /// `None` for the root account, else [`Caller::user_name_for_audit`]. Kept for code written before
    /// `principal` existed; new code should match on `principal`.
    pub user_name: Option<String>,
    /// `acs:MFAPresent`. Always false for access keys (they prove one factor); an STS session carries
    /// the flag of whoever assumed the role, so MFA can only be passed on, never gained, through STS.
    pub mfa_present: bool,
    /// `acs:SourceIp`: the peer address of the connection (a reverse proxy in front hides the client's).
    pub source_ip: Option<IpAddr>,
    /// `acs:SecureTransport`: the request came over TLS.
    pub secure_transport: bool,
}

/// The identity an access key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The account itself: may do everything, no policy is evaluated.
    Root,
    /// A RAM user, allowed what its attached policies allow.
    User { name: String },
    /// An STS session of a role, allowed what the role's policies allow (narrowed by the session's inline
    /// policy, when AssumeRole was given one).
    AssumedRole {
        role_name: String,
        session_name: String,
        inline_policy: Option<String>,
    },
}

impl Caller {
    /// `root-account`, `ram-user` or `assumed-role` (audit records, logs).
    pub fn principal_type(&self) -> &'static str {
        match self.principal {
            Principal::Root => "root-account",
            Principal::User { .. } => "ram-user",
            Principal::AssumedRole { .. } => "assumed-role",
        }
    }

    /// The name audit records show: `root`, the RAM user's name, or `<role>:<session>`.
    pub fn user_name_for_audit(&self) -> String {
        match &self.principal {
            Principal::Root => "root".to_owned(),
            Principal::User { name } => name.clone(),
            Principal::AssumedRole {
                role_name,
                session_name,
                ..
            } => format!("{role_name}:{session_name}"),
        }
    }

    /// The principal's ARN, as trust policies name it: `acs:ram::<account>:root`,
    /// `acs:ram::<account>:user/<name>` or `acs:ram::<account>:assumed-role/<role>/<session>`.
    pub fn principal_arn(&self, account: &str) -> String {
        match &self.principal {
            Principal::Root => format!("acs:ram::{account}:root"),
            Principal::User { name } => format!("acs:ram::{account}:user/{name}"),
            Principal::AssumedRole {
                role_name,
                session_name,
                ..
            } => format!(
                "acs:ram::{account}:assumed-role/{}/{session_name}",
                role_name.to_lowercase()
            ),
        }
    }

    /// `AuthPrincipalType` of `AccessDeniedDetail`.
    pub fn auth_principal_type(&self) -> &'static str {
        match self.principal {
            Principal::Root => "RootAccount",
            Principal::User { .. } => "SubUser",
            Principal::AssumedRole { .. } => "AssumedRoleUser",
        }
    }

    /// The condition keys of this request at unix time `now`.
    pub fn request_context(&self, now: i64) -> RequestContext {
        RequestContext {
            current_time: now,
            secure_transport: self.secure_transport,
            source_ip: self.source_ip,
            mfa_present: self.mfa_present,
            extra: Default::default(),
        }
    }
}

/// One authenticated call, as the actions see it.
pub struct Call<'a> {
    pub st: &'a AppState,
    pub params: &'a Params,
    pub caller: &'a Caller,
}

/// Largest accepted request body (form parameters).
const MAX_BODY: usize = 1 << 20;

/// The RPC endpoint. Every line logged while a request is handled carries its `request_id` (and, once
/// known, `action` and `access_key_id`) through the `api_request` span; its latency goes to
/// `ferry_api_request_duration_seconds` (`crate::ops`).
pub async fn handle(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use tracing::Instrument as _;
    let request_id = ferry_api::new_request_id();
    let span = tracing::info_span!(
        "api_request",
        request_id = %request_id,
        action = tracing::field::Empty,
        access_key_id = tracing::field::Empty,
    );
    handle_request(st, peer, method, uri, headers, body, request_id)
        .instrument(span)
        .await
}

async fn handle_request(
    st: Arc<AppState>,
    peer: SocketAddr,
    method: Method,
    uri: Uri,
    mut headers: HeaderMap,
    body: Bytes,
    request_id: String,
) -> Response {
    let started = std::time::Instant::now();
    // HTTP/2 carries the host in the `:authority` pseudo-header, not in `Host`; v3 signatures sign `host`.
    if !headers.contains_key(axum::http::header::HOST)
        && let Some(authority) = uri.authority()
        && let Ok(value) = authority.as_str().parse()
    {
        headers.insert(axum::http::header::HOST, value);
    }
    let form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let params = Params::from_parts(uri.query().unwrap_or(""), form.then_some(&body[..]));
    if crate::console::wants_console(&method, &headers, &params) {
        // A browser opening the server's address: the API has nothing to show it, the console does.
        return crate::console::redirect_to_console();
    }
    let format = Format::from_params(&params);
    let mut product = None;
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    // Everything up to authentication; `execute` takes over (and records the audit event) after it.
    let authenticated = async {
        if method != Method::GET && method != Method::POST {
            return Err(ApiError::unsupported_method(method.as_str()));
        }
        if body.len() > MAX_BODY {
            return Err(ApiError::invalid_parameter("body", "is larger than 1 MiB"));
        }
        let av = params.action_version(&headers)?;
        tracing::Span::current().record("action", av.action.as_str());
        let p = Product::from_version(&av.version)?;
        product = Some(p);
        let caller = authenticate(&st, &method, &params, &headers, &body, peer).await?;
        tracing::Span::current().record("access_key_id", caller.access_key_id.as_str());
        Ok((p, av.action, caller))
    }
    .await;
    let result = match authenticated {
        Ok((p, action, caller)) => {
            let invocation = Invocation {
                product: p,
                action: &action,
                params: &params,
                request_id: &request_id,
                user_agent,
                channel: Channel::Api,
            };
            execute(&st, &caller, &invocation)
                .await
                .map(|v| (action.clone(), v))
        }
        Err(e) => {
            // ActionTrail: a request refused before authentication is recorded too, with the AccessKeyId
            // it claims (see crate::audit).
            let action = params.action_version(&headers).ok().map(|av| av.action);
            let recorded = crate::audit::record_api_call(
                &st,
                &crate::audit::ApiCall {
                    product,
                    action: action.as_deref(),
                    request_id: &request_id,
                    params: &params,
                    peer: peer.ip(),
                    user_agent,
                    caller: None,
                    claimed_access_key_id: claimed_key_id(&params, &headers),
                    outcome: Err(&e),
                },
            )
            .await;
            recorded.and(Err(e))
        }
    };
    let response = match result {
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
    };
    let action = params.action_version(&headers).ok().map(|av| av.action);
    st.metrics.observe_api(
        product,
        action.as_deref(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Through which door an authenticated call came: the signed RPC API or the web console's `/call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Api,
    Console,
}

impl Channel {
    /// The ActionTrail `eventType` of calls through this channel.
    pub fn event_type(self) -> &'static str {
        match self {
            Channel::Api => crate::audit::EVENT_TYPE_API_CALL,
            Channel::Console => crate::audit::EVENT_TYPE_CONSOLE,
        }
    }
}

/// One authenticated call to run: which action, with which parameters, for the audit trail's sake which
/// request and client.
pub struct Invocation<'a> {
    pub product: Product,
    pub action: &'a str,
    pub params: &'a Params,
    pub request_id: &'a str,
    pub user_agent: Option<&'a str>,
    pub channel: Channel,
}

/// Runs one call of an authenticated `caller`: RAM authorization, the action, and its audit event. The
/// signed RPC API and the web console both come here, so that the console has no way around RAM or the
/// audit trail.
///
/// Errors: the authorization errors of [`authorize`] (403 `Forbidden.RAM` / `NoPermission`),
/// `InvalidAction.NotFound` for an action the product does not have, the action's own errors, and
/// `InternalError` when the audit event cannot be recorded (the call's effect may have happened).
pub async fn execute(
    st: &AppState,
    caller: &Caller,
    inv: &Invocation<'_>,
) -> Result<Value, ApiError> {
    let result = async {
        authorize(st, caller, inv.product, inv.action, inv.params).await?;
        let call = Call {
            st,
            params: inv.params,
            caller,
        };
        let out = match inv.product {
            Product::Smc => smc::dispatch(&call, inv.action).await,
            Product::Ecs => ecs::dispatch(&call, inv.action).await,
            Product::Ram => ram::dispatch(&call, inv.action).await,
            Product::Sts => sts::dispatch(&call, inv.action).await,
            Product::ActionTrail => actiontrail::dispatch(&call, inv.action).await,
        };
        if out.is_some() {
            st.metrics.learn_action(inv.product, inv.action);
        }
        out.unwrap_or_else(|| Err(ApiError::invalid_action(inv.action, inv.product.version())))
    }
    .await;
    tracing::info!(
        peer = ?caller.source_ip, action = %inv.action, principal = %caller.user_name_for_audit(),
        channel = ?inv.channel, ok = result.is_ok(), request_id = %inv.request_id,
        "api call"
    );
    // ActionTrail: every answered call leaves one event, or the call fails (see crate::audit).
    let api_call = crate::audit::ApiCall {
        product: Some(inv.product),
        action: Some(inv.action),
        request_id: inv.request_id,
        params: inv.params,
        peer: caller
            .source_ip
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        user_agent: inv.user_agent,
        caller: Some(caller),
        claimed_access_key_id: None,
        outcome: result.as_ref(),
    };
    let mut event = crate::audit::AuditEvent::api_call(
        &api_call,
        api_call.identity(&st.account_id),
        &st.cfg.region_id,
    );
    event.event_type = inv.channel.event_type();
    if inv.channel == Channel::Console {
        // A console session is not an access key: the trail names the user only.
        event.identity.access_key_id = None;
    }
    crate::audit::record(st, event).await?;
    result
}

/// The credential an AccessKeyId names: a permanent key (root or RAM user) or an STS session.
enum KeyKind {
    Permanent(AccessKeyRecord),
    Session(StsSessionRecord),
}

impl KeyKind {
    fn id(&self) -> &str {
        match self {
            KeyKind::Permanent(k) => &k.id,
            KeyKind::Session(s) => &s.access_key_id,
        }
    }

    fn secret(&self) -> &str {
        match self {
            KeyKind::Permanent(k) => &k.secret,
            KeyKind::Session(s) => &s.secret,
        }
    }
}

/// Verifies the signature and the credential behind it; returns who is calling.
///
/// Errors: the signature errors of `ferry_api::verify`, `InvalidAccessKeyId.NotFound` / `.Inactive`,
/// `InvalidSecurityToken.Malformed` / `.Expired` for STS keys, `SignatureNonceUsed`.
async fn authenticate(
    st: &AppState,
    method: &Method,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
    peer: SocketAddr,
) -> Result<Caller, ApiError> {
    // The signature check is synchronous; fetch the claimed key first.
    let claimed = claimed_key_id(params, headers);
    let key = match &claimed {
        // `STS.` is the prefix AssumeRole gives temporary keys; permanent keys never have it.
        Some(id) if id.starts_with("STS.") => st
            .db
            .sts_session_get(id)
            .await
            .or_internal()?
            .map(KeyKind::Session),
        Some(id) => st
            .db
            .access_key_get(id)
            .await
            .or_internal()?
            .map(KeyKind::Permanent),
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
                .filter(|k| k.id() == id)
                .map(|k| Secret::new(k.secret().to_owned()))
        },
        now,
    )?;
    let key = key.ok_or_else(|| ApiError::access_key_not_found(&verified.access_key_id))?;
    let (access_key_id, principal, mfa_present) = match key {
        KeyKind::Permanent(k) => {
            if k.status != "Active" {
                return Err(ApiError::access_key_inactive(&k.id));
            }
            let principal = match k.user_name {
                None => Principal::Root,
                Some(name) => Principal::User { name },
            };
            (k.id, principal, false)
        }
        KeyKind::Session(s) => {
            check_session_token(&s, verified.security_token.as_deref(), now.unix_timestamp())?;
            let principal = Principal::AssumedRole {
                role_name: s.role_name,
                session_name: s.session_name,
                inline_policy: s.inline_policy,
            };
            (s.access_key_id, principal, s.mfa_present != 0)
        }
    };
    let expires = now.unix_timestamp() + ferry_api::sign::MAX_CLOCK_SKEW.whole_seconds() * 2;
    let nonce_key = format!("{access_key_id}:{}", verified.nonce);
    if !st.db.nonce_use(&nonce_key, expires).await.or_internal()? {
        return Err(ApiError::signature_nonce_used(&verified.nonce));
    }
    let mut caller = Caller {
        access_key_id,
        principal,
        user_name: None,
        mfa_present,
        source_ip: Some(peer.ip().to_canonical()),
        // The RPC API is only served on the TLS listener (`crate::start`).
        secure_transport: true,
    };
    if caller.principal != Principal::Root {
        caller.user_name = Some(caller.user_name_for_audit());
    }
    Ok(caller)
}

/// Checks the security token presented with an STS key at unix time `now`: it must be the session's own
/// token (`InvalidSecurityToken.Malformed` when missing or different) and the session must not have
/// expired (`InvalidSecurityToken.Expired`).
fn check_session_token(
    session: &StsSessionRecord,
    token: Option<&str>,
    now: i64,
) -> Result<(), ApiError> {
    use subtle::ConstantTimeEq as _;
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(ApiError::security_token_malformed());
    };
    let presented = crate::app::secret_hash(token);
    if !bool::from(presented.as_bytes().ct_eq(session.token_hash.as_bytes())) {
        return Err(ApiError::security_token_malformed());
    }
    if now >= session.expires_at {
        return Err(ApiError::security_token_expired());
    }
    Ok(())
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

/// RAM authorization of one call, before the action runs.
///
/// The root account may do everything. Anyone else is allowed an action only if, for every resource the
/// call touches (`ferry_iam::catalogue::resources`), their policies allow it and no policy denies it:
/// a RAM user's attached policies; for an STS session, the role's attached policies and, when AssumeRole
/// was given one, the session's inline policy too. Policies are read from the database on every call
/// (nothing is cached), so detaching a policy takes effect on the next request.
///
/// Errors: 403 `Forbidden.RAM` (SMC, ECS, ActionTrail) or `NoPermission` (RAM, STS) with an
/// `AccessDeniedDetail`; `InternalError` when a stored policy no longer parses (fails closed).
async fn authorize(
    st: &AppState,
    caller: &Caller,
    product: Product,
    action: &str,
    params: &Params,
) -> Result<(), ApiError> {
    let (principal_type, principal_name, inline) = match &caller.principal {
        Principal::Root => return Ok(()),
        Principal::User { name } => (PRINCIPAL_USER, name.as_str(), None),
        Principal::AssumedRole {
            role_name,
            inline_policy,
            ..
        } => (PRINCIPAL_ROLE, role_name.as_str(), inline_policy.as_deref()),
    };
    let identity = attached_policies(st, principal_type, principal_name).await?;
    let session = inline
        .map(|doc| {
            PolicyDocument::parse(doc).map_err(|e| {
                tracing::error!(key = %caller.access_key_id, error = %e, "stored session policy no longer parses");
                ApiError::internal()
            })
        })
        .transpose()?;

    let context = caller.request_context(ferry_db::now());
    let auth_action = product.ram_action(action);
    let param = |name: &str| -> Vec<String> {
        let mut values: Vec<String> = params
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| vec![v.to_owned()])
            .unwrap_or_default();
        values.extend(params.get_list(name));
        // RAM's access-key actions default `UserName` to the calling user: authorize them against the
        // user they will act on, so that a policy on `user/<self>` lets users manage their own keys.
        const KEY_ACTIONS: [&str; 4] = [
            "CreateAccessKey",
            "ListAccessKeys",
            "UpdateAccessKey",
            "DeleteAccessKey",
        ];
        if values.is_empty()
            && name == "UserName"
            && product == Product::Ram
            && KEY_ACTIONS.contains(&action)
            && let Principal::User { name: me } = &caller.principal
        {
            values.push(me.clone());
        }
        values
    };
    let mut resources = ferry_iam::catalogue::resources(
        product.ram_service(),
        action,
        &st.cfg.region_id,
        &st.account_id,
        &param,
    );
    if resources.is_empty() {
        // "Allowed on every resource" must never follow from "touches no resource".
        resources.push("*".to_owned());
    }
    for resource in &resources {
        let request = AuthRequest {
            action: &auth_action,
            resource,
            context: &context,
        };
        let decision = decide(&identity, session.as_ref(), &request);
        if decision != Decision::Allow {
            return Err(denied(
                st,
                caller,
                product,
                &auth_action,
                resource,
                decision,
            ));
        }
    }
    Ok(())
}

/// The decision for one request: identity policies, narrowed by a session policy when there is one (both
/// must allow; an explicit deny in either wins).
fn decide(
    identity: &[PolicyDocument],
    session: Option<&PolicyDocument>,
    request: &AuthRequest<'_>,
) -> Decision {
    let by_identity = ferry_iam::evaluate(identity, request);
    let Some(session) = session else {
        return by_identity;
    };
    let by_session = ferry_iam::evaluate([session], request);
    match (by_identity, by_session) {
        (Decision::ExplicitDeny, _) | (_, Decision::ExplicitDeny) => Decision::ExplicitDeny,
        (Decision::Allow, Decision::Allow) => Decision::Allow,
        _ => Decision::ImplicitDeny,
    }
}

/// The policy documents attached to a user or role, read now.
async fn attached_policies(
    st: &AppState,
    principal_type: &str,
    principal_name: &str,
) -> Result<Vec<PolicyDocument>, ApiError> {
    let mut docs = Vec::new();
    let attachments = st
        .db
        .attachment_list_for_principal(principal_type, principal_name)
        .await
        .or_internal()?;
    for a in attachments {
        let text = if a.policy_type == POLICY_CUSTOM {
            match st.db.policy_get(&a.policy_name).await.or_internal()? {
                Some(p) => p.document,
                // Deleting an attached policy is refused; one deleted anyway grants nothing.
                None => continue,
            }
        } else {
            match ferry_iam::system::get(&a.policy_name) {
                Some(p) => p.document.to_owned(),
                None => {
                    tracing::warn!(policy = %a.policy_name, "attached system policy is unknown to this version; it grants nothing");
                    continue;
                }
            }
        };
        // A stored policy was valid when written; if a newer parser rejects it, fail closed rather than
        // drop it, because it may hold the Deny that protects something.
        let doc = PolicyDocument::parse(&text).map_err(|e| {
            tracing::error!(policy = %a.policy_name, error = %e, "stored policy no longer parses");
            ApiError::internal()
        })?;
        docs.push(doc);
    }
    Ok(docs)
}

/// The 403 of a denied call, with `AccessDeniedDetail` (§1.9).
fn denied(
    st: &AppState,
    caller: &Caller,
    product: Product,
    auth_action: &str,
    resource: &str,
    decision: Decision,
) -> ApiError {
    let base = match product {
        Product::Ram | Product::Sts => ApiError::no_permission_for(auth_action, resource),
        _ => ApiError::forbidden_ram(auth_action, resource),
    };
    let no_permission_type = if decision == Decision::ExplicitDeny {
        "ExplicitDeny"
    } else {
        "ImplicitDeny"
    };
    base.with_access_denied_detail(json!({
        "AuthAction": auth_action,
        "AuthPrincipalType": caller.auth_principal_type(),
        "AuthPrincipalOwnerId": st.account_id,
        "AuthPrincipalDisplayName": caller.user_name_for_audit(),
        "NoPermissionType": no_permission_type,
        "PolicyType": "AccountLevelIdentityBasedPolicy",
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn session(expires_at: i64) -> StsSessionRecord {
        StsSessionRecord {
            access_key_id: "STS.k".into(),
            secret: "s".into(),
            token_hash: crate::app::secret_hash("FerrySTS.v1.token"),
            role_name: "ops".into(),
            session_name: "ci".into(),
            source_principal: "acs:ram::1:root".into(),
            mfa_present: 0,
            inline_policy: None,
            created_at: expires_at - 900,
            expires_at,
        }
    }

    #[test]
    fn session_tokens_must_match_and_be_unexpired() {
        let s = session(1_000);
        assert_eq!(
            check_session_token(&s, Some("FerrySTS.v1.token"), 999),
            Ok(())
        );
        for token in [None, Some(""), Some("FerrySTS.v1.other")] {
            let e = check_session_token(&s, token, 999).expect_err("wrong token");
            assert_eq!(e.code, "InvalidSecurityToken.Malformed");
            assert_eq!(e.status, 400);
        }
        for at in [1_000, 1_001, 50_000] {
            let e = check_session_token(&s, Some("FerrySTS.v1.token"), at).expect_err("expired");
            assert_eq!(e.code, "InvalidSecurityToken.Expired", "at {at}");
            assert_eq!(e.status, 400);
        }
        // A wrong token is reported as malformed even after expiry: it says nothing about the session.
        let e = check_session_token(&s, Some("x"), 5_000).expect_err("wrong and expired");
        assert_eq!(e.code, "InvalidSecurityToken.Malformed");
    }

    fn caller(principal: Principal) -> Caller {
        Caller {
            access_key_id: "k".into(),
            user_name: None,
            principal,
            mfa_present: false,
            source_ip: None,
            secure_transport: true,
        }
    }

    #[test]
    fn principals_name_themselves_for_audit_and_trust_policies() {
        let root = caller(Principal::Root);
        assert_eq!(root.principal_type(), "root-account");
        assert_eq!(root.user_name_for_audit(), "root");
        assert_eq!(root.principal_arn("42"), "acs:ram::42:root");
        let user = caller(Principal::User {
            name: "alice".into(),
        });
        assert_eq!(user.principal_type(), "ram-user");
        assert_eq!(user.user_name_for_audit(), "alice");
        assert_eq!(user.principal_arn("42"), "acs:ram::42:user/alice");
        assert_eq!(user.auth_principal_type(), "SubUser");
        let role = caller(Principal::AssumedRole {
            role_name: "Ops".into(),
            session_name: "ci".into(),
            inline_policy: None,
        });
        assert_eq!(role.principal_type(), "assumed-role");
        assert_eq!(role.user_name_for_audit(), "Ops:ci");
        assert_eq!(role.principal_arn("42"), "acs:ram::42:assumed-role/ops/ci");
        assert_eq!(role.auth_principal_type(), "AssumedRoleUser");
    }
}
