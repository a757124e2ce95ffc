//! Ferry's RAM policy language: Alibaba Cloud RAM permission policies and role trust policies, parsed,
//! validated and evaluated. A pure library: no I/O, no clock, no global state; the caller supplies what
//! it knows about a request in a [`RequestContext`]. `docs/ram-policies.md` is the user-facing description.
//!
//! * [`PolicyDocument`] — a permission policy (`Version` "1", statements with `Effect`, `Action`,
//!   `Resource`, `Condition`). Only validated documents exist, so [`evaluate`] cannot fail.
//! * [`evaluate`] — the decision rule: any applicable `Deny` ⇒ [`Decision::ExplicitDeny`]; else any
//!   applicable `Allow` ⇒ [`Decision::Allow`]; else [`Decision::ImplicitDeny`]. A statement applies when one
//!   of its actions matches, one of its resources matches and all its conditions hold.
//! * [`TrustPolicy`] — who may assume a role (`Principal` instead of `Resource`).
//! * [`system`] — the built-in System policies; [`catalogue`] — which resource ARNs each served action
//!   touches, and its ActionTrail read/write class.
//!
//! Matching choices (documented because the reference leaves them open):
//! * Actions `<service>:<Api>` match **case-insensitively in both parts**: Alibaba documents the
//!   `Action` element as not case-sensitive, so `smc:describe*` covers `smc:DescribeSourceServers`.
//! * Resource ARNs `acs:<service>:<region>:<account>:<relative-id>` match segment by segment with `*`/`?`
//!   wildcards; the service segment ignores case, region, account and relative id do not. A bare `*`
//!   matches every resource. RAM ARNs have an empty region (`acs:ram::<account>:user/<name>`), which a `*`
//!   region segment matches.
//! * Condition keys are case-insensitive; a key absent from the request makes positive operators false and
//!   negated ones (`StringNotEquals`, `NotIpAddress`, …) true (see the `condition` module).
//!
//! Never: evaluate an unvalidated document, panic on any input, or consult anything but its arguments.

mod condition;
mod error;
mod pattern;
mod policy;
mod trust;

pub mod catalogue;
pub mod system;

use std::collections::BTreeMap;
use std::net::IpAddr;

pub use error::PolicyError;
pub use policy::PolicyDocument;
pub use trust::TrustPolicy;

use policy::Effect;

/// Alibaba's limit on a policy document, in bytes of its canonical (whitespace-free) form.
pub const MAX_POLICY_BYTES: usize = 6144;

/// What is known about the request when it is authorized: the values of condition keys.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Unix seconds of the request: `acs:CurrentTime` (seen by `String*` operators as
    /// `YYYY-MM-DDThh:mm:ssZ`).
    pub current_time: i64,
    /// The request came over HTTPS: `acs:SecureTransport`.
    pub secure_transport: bool,
    /// The client's address: `acs:SourceIp`; `None` makes the key absent.
    pub source_ip: Option<IpAddr>,
    /// The caller signed in with MFA: `acs:MFAPresent`.
    pub mfa_present: bool,
    /// Any other key, e.g. `acs:ResourceTag/env`, `acs:Service`, `smc:…`, with its values. Names are
    /// matched ignoring case; an empty value list counts as absent. The four keys above cannot be
    /// overridden from here.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// One authorization question: may `action` be done on `resource` in `context`?
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// `<service>:<Api>`, e.g. `smc:StartReplicationJob`.
    pub action: &'a str,
    /// The resource ARN, e.g. `acs:smc:cn-hangzhou:1234:replicationJob/j-1` (see [`catalogue::resources`]).
    pub resource: &'a str,
    /// Condition key values.
    pub context: &'a RequestContext,
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Some statement allows the request and none denies it.
    Allow,
    /// A `Deny` statement applies: nothing else can allow the request.
    ExplicitDeny,
    /// No statement applies: denied by default.
    ImplicitDeny,
}

/// Evaluates every statement of `policies` against `req`: an applicable `Deny` anywhere wins, then an
/// applicable `Allow`, else [`Decision::ImplicitDeny`]. A call touching several resources is allowed only
/// if every one of them evaluates to [`Decision::Allow`].
pub fn evaluate<'a>(
    policies: impl IntoIterator<Item = &'a PolicyDocument>,
    req: &AuthRequest<'_>,
) -> Decision {
    let mut allowed = false;
    for policy in policies {
        for st in &policy.statements {
            if st.applies(req) {
                match st.effect {
                    Effect::Deny => return Decision::ExplicitDeny,
                    Effect::Allow => allowed = true,
                }
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}
