//! STS 2015-04-01: `AssumeRole`, which turns a role into short-lived credentials (an `STS.` access key, its
//! secret and a security token) that act with the role's policies.
//!
//! Invariants:
//! * The role's trust policy must allow the caller's principal ARN; the caller's own policies must allow
//!   `sts:AssumeRole` on the role (checked by `rpc::authorize` before this runs).
//! * A session lasts 900 s up to the role's `MaxSessionDuration` (default 3600 s) and never longer.
//! * An inline `Policy` can only narrow the role's permissions: authorization requires both to allow.
//! * A session is MFA-present only if the caller that assumed the role was; access keys never are.
//! * The security token is returned once and stored only as its SHA-256. It has the form
//!   `FerrySTS.v1.<96 alphanumerics>`: the prefix is the token format's version marker (the token carries no
//!   data; the server recognises it by its hash), see `docs/ram.md`.

use ferry_api::ApiError;
use ferry_db::{StsSessionRecord, now};
use serde_json::json;

use super::{ActionResult, Call, time_str};
use crate::app::{OrInternal, random_secret, secret_hash};

/// Version marker of the security token format.
pub const TOKEN_PREFIX: &str = "FerrySTS.v1.";

/// Shortest and default session length (seconds).
const MIN_DURATION: i64 = 900;
const DEFAULT_DURATION: i64 = 3600;

/// Longest inline session policy accepted, in bytes of its canonical form (Alibaba's limit).
const MAX_INLINE_POLICY: usize = 2048;

/// Expired sessions are kept this long so that their use is reported as an expired token (and not an
/// unknown key), then purged.
const EXPIRED_RETENTION: i64 = 86_400;

pub async fn dispatch(c: &Call<'_>, action: &str) -> Option<ActionResult> {
    Some(match action {
        "AssumeRole" => assume_role(c).await,
        "GetCallerIdentity" => get_caller_identity(c),
        _ => return None,
    })
}

/// `RoleSessionName`: 2–64 characters from letters, digits and `. @ - _`.
fn check_session_name(v: &str) -> Result<(), ApiError> {
    let len = v.chars().count();
    let ok = (2..=64).contains(&len)
        && v.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ".@-_".contains(ch));
    if !ok {
        return Err(ApiError::new(
            "InvalidParameter.RoleSessionName",
            400,
            format!(
                "RoleSessionName {v:?} is not valid: use 2 to 64 letters, digits and . @ - _ (it names the session in audit records)."
            ),
        ));
    }
    Ok(())
}

async fn assume_role(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let arn = p.required("RoleArn")?;
    let session_name = p.required("RoleSessionName")?;
    check_session_name(session_name)?;
    let role =
        c.st.db
            .role_get_by_arn(&arn.to_lowercase())
            .await
            .or_internal()?
            .ok_or_else(|| {
                ApiError::new(
                    "EntityNotExist.Role",
                    404,
                    format!(
                        "The role {arn:?} does not exist: RoleArn looks like acs:ram::{}:role/<name> (see ListRoles).",
                        c.st.account_id
                    ),
                )
            })?;
    let duration = match p.get_i64("DurationSeconds")? {
        None => DEFAULT_DURATION.min(role.max_session_duration),
        Some(d) if (MIN_DURATION..=role.max_session_duration).contains(&d) => d,
        Some(d) => {
            return Err(ApiError::new(
                "InvalidParameter.DurationSeconds",
                400,
                format!(
                    "DurationSeconds {d} is out of range: use {MIN_DURATION} to {} (the role's MaxSessionDuration).",
                    role.max_session_duration
                ),
            ));
        }
    };
    let inline_policy = match p.get("Policy").filter(|v| !v.is_empty()) {
        None => None,
        Some(doc) => {
            let canonical = ferry_iam::PolicyDocument::parse(doc)
                .map_err(|e| {
                    ApiError::new(
                        "InvalidParameter.PolicyGrammar",
                        400,
                        format!(
                            "The Policy is not a valid policy document: {e}. Fix it and retry."
                        ),
                    )
                })?
                .to_json();
            if canonical.len() > MAX_INLINE_POLICY {
                return Err(ApiError::new(
                    "InvalidParameter.PolicyGrammar",
                    400,
                    format!(
                        "The Policy is {} bytes without whitespace, more than the {MAX_INLINE_POLICY} a session policy may have: attach a policy to the role instead.",
                        canonical.len()
                    ),
                ));
            }
            Some(canonical)
        }
    };

    let at = now();
    let principal = c.caller.principal_arn(&c.st.account_id);
    let trust = ferry_iam::TrustPolicy::parse(&role.trust_policy).map_err(|e| {
        tracing::error!(role = %role.name, error = %e, "stored trust policy no longer parses");
        ApiError::internal()
    })?;
    if !trust.allows(&principal, &c.caller.request_context(at)) {
        return Err(ApiError::new(
            "NoPermission",
            403,
            format!(
                "You are not authorized to do this action: the trust policy of role {:?} does not allow {principal} to assume it. Ask an administrator to add it to the role's AssumeRolePolicyDocument.",
                role.name
            ),
        )
        .with_access_denied_detail(json!({
            "AuthAction": "sts:AssumeRole",
            "AuthPrincipalType": c.caller.auth_principal_type(),
            "AuthPrincipalOwnerId": c.st.account_id,
            "AuthPrincipalDisplayName": c.caller.user_name_for_audit(),
            "NoPermissionType": "ImplicitDeny",
            "PolicyType": "AssumeRolePolicy",
        })));
    }

    c.st.db
        .sts_session_purge(at - EXPIRED_RETENTION)
        .await
        .or_internal()?;
    let token = format!("{TOKEN_PREFIX}{}", random_secret(96));
    let session = StsSessionRecord {
        access_key_id: format!("STS.{}", random_secret(24)),
        secret: random_secret(40),
        token_hash: secret_hash(&token),
        role_name: role.name.clone(),
        session_name: session_name.to_owned(),
        source_principal: principal,
        mfa_present: i64::from(c.caller.mfa_present),
        inline_policy,
        created_at: at,
        expires_at: at + duration,
    };
    c.st.db.sts_session_create(&session).await.or_internal()?;
    Ok(json!({
        "Credentials": {
            "AccessKeyId": session.access_key_id,
            "AccessKeySecret": session.secret,
            "SecurityToken": token,
            "Expiration": time_str(session.expires_at),
        },
        "AssumedRoleUser": {
            "Arn": format!("{}/{session_name}", role.arn),
            "AssumedRoleId": format!("{}:{session_name}", role.id),
        },
    }))
}

/// Who the credentials of this call belong to (STS `GetCallerIdentity`).
fn get_caller_identity(c: &Call<'_>) -> ActionResult {
    Ok(json!({
        "AccountId": c.st.account_id,
        "Arn": c.caller.principal_arn(&c.st.account_id),
        "IdentityType": match c.caller.principal_type() {
            "root-account" => "Account",
            "ram-user" => "RAMUser",
            _ => "AssumedRoleUser",
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_follow_the_rule() {
        assert!(check_session_name("ci-job_1@build.x").is_ok());
        for bad in ["a", "has space", &"x".repeat(65), "slash/x"] {
            let e = check_session_name(bad).expect_err(bad);
            assert_eq!(e.code, "InvalidParameter.RoleSessionName");
        }
    }
}
