//! Activation codes (SMC "access tokens") and agent registration.

use ferry_api::ApiError;
use ferry_db::{ActivationCodeRecord, SourceRecord, now};
use ferry_types::ids::{AccessTokenId, SourceId};
use ferry_types::protocol::{ActivateRequest, AgentCredentials};

use super::{OrInternal, random_secret, secret_hash};
use crate::AppState;

/// A new activation code; the secret `code` is shown once.
pub struct NewActivationCode {
    pub id: AccessTokenId,
    pub code: String,
}

pub async fn create(
    st: &AppState,
    name: &str,
    description: &str,
    count: i64,
    ttl_days: i64,
) -> Result<NewActivationCode, ApiError> {
    let id = AccessTokenId::generate();
    let code = random_secret(32);
    let rec = ActivationCodeRecord {
        id: id.to_string(),
        name: name.to_owned(),
        description: description.to_owned(),
        code_hash: secret_hash(&code),
        max_count: count,
        registered_count: 0,
        ttl_days,
        disabled: 0,
        created_at: now(),
    };
    st.db.activation_code_create(&rec).await.or_internal()?;
    Ok(NewActivationCode { id, code })
}

/// SMC's status of an activation code: `unactivated` (valid, never used), `activated` (used, still valid),
/// `expired` (TTL passed, uses exhausted, or disabled).
pub fn status(c: &ActivationCodeRecord, at: i64) -> &'static str {
    if c.disabled != 0 || c.expires_at() <= at || c.registered_count >= c.max_count {
        "expired"
    } else if c.registered_count > 0 {
        "activated"
    } else {
        "unactivated"
    }
}

/// Registers a new source server with an activation code (nothing is registered unless the code is
/// valid) and records the attempt, granted or refused, in the audit trail.
pub async fn activate(st: &AppState, req: &ActivateRequest) -> Result<AgentCredentials, ApiError> {
    activate_from(st, req, None).await
}

/// [`activate`], with the agent's address for the audit event (`None` when the caller does not know it).
///
/// Errors: the refusal, or `InternalError` when the audit event cannot be recorded; in that case a
/// granted registration stays registered but the agent gets no credentials and must activate again.
pub async fn activate_from(
    st: &AppState,
    req: &ActivateRequest,
    peer: Option<std::net::IpAddr>,
) -> Result<AgentCredentials, ApiError> {
    let mut token_id = None;
    let out = register(st, req, &mut token_id).await;
    let event = crate::audit::AuditEvent::agent_registration(
        req,
        out.as_ref(),
        token_id.as_deref(),
        peer,
        &st.account_id,
        &st.cfg.region_id,
    );
    crate::audit::record(st, event).await?;
    out
}

/// Registers the source; sets `token_id` as soon as the activation code is recognised.
async fn register(
    st: &AppState,
    req: &ActivateRequest,
    token_id: &mut Option<String>,
) -> Result<AgentCredentials, ApiError> {
    let at = now();
    let code = st
        .db
        .activation_code_by_hash(&secret_hash(req.code.trim()))
        .await
        .or_internal()?
        .filter(|c| req.token_id.as_ref().is_none_or(|t| t.as_str() == c.id))
        .ok_or_else(|| {
            ApiError::new(
                "ActivationCode.Invalid",
                403,
                "the activation code is not valid: copy it again from `ferry activation-code create` or the \
                 console (codes are shown once), or create a new one",
            )
        })?;
    *token_id = Some(code.id.clone());
    let why_unusable = if code.disabled != 0 {
        Some("was disabled by an operator")
    } else if code.expires_at() <= at {
        Some("has expired")
    } else if code.registered_count >= code.max_count {
        Some("has been used as many times as it allows")
    } else {
        None
    };
    if let Some(why) = why_unusable {
        return Err(ApiError::new(
            "ActivationCode.Expired",
            403,
            format!(
                "activation code {} {why}: create a new one with `ferry activation-code create`",
                code.id
            ),
        ));
    }

    let inv = &req.inventory;
    let source_id = SourceId::generate();
    let key_id = format!("ak-{}", random_secret(16).to_lowercase());
    let secret = random_secret(40);
    let ips: Vec<String> = inv
        .network
        .iter()
        .flat_map(|n| n.addresses.iter())
        .filter(|a| !a.starts_with("127.") && !a.starts_with("::1"))
        .cloned()
        .collect();
    let rec = SourceRecord {
        id: source_id.to_string(),
        name: inv.hostname.clone(),
        description: format!(
            "Server Source Imported By Ferry. Hostname: {} IP Address: {}",
            inv.hostname,
            ips.first().map(String::as_str).unwrap_or("-")
        ),
        state: "Available".to_owned(),
        error_code: None,
        status_info: None,
        agent_version: inv.agent_version.clone(),
        inventory: serde_json::to_string(inv).or_internal()?,
        prechecks: serde_json::to_string(&req.prechecks).or_internal()?,
        heartbeat_at: at,
        created_at: at,
        token_id: code.id.clone(),
        agent_key_id: key_id.clone(),
        agent_secret_hash: secret_hash(&secret),
        job_id: None,
    };
    if !st
        .db
        .source_register(&code.id, &rec, at)
        .await
        .or_internal()?
    {
        // Another agent took the last use between our check and the update.
        return Err(ApiError::new(
            "ActivationCode.Expired",
            403,
            format!(
                "activation code {} has no uses left: create a new one",
                code.id
            ),
        ));
    }
    tracing::info!(source = %source_id, code = %code.id, host = %inv.hostname, "source server registered");
    Ok(AgentCredentials {
        source_id,
        key_id,
        secret,
    })
}
