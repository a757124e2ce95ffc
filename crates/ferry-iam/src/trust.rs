//! Role trust policies (`AssumeRolePolicyDocument`): who may assume a role.
//!
//! A trust policy is a policy document whose statements name a `Principal` instead of a `Resource`:
//! `{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole",
//!   "Principal":{"RAM":["acs:ram::<account>:root"],"Service":["ecs.aliyuncs.com"]}}]}`.
//!
//! Principal semantics:
//! * `RAM` entries: `acs:ram::<account>:root` (or the bare account id) trusts every identity of that
//!   account (the account itself, its RAM users and its roles' sessions; each still needs permission to
//!   call `sts:AssumeRole`); `acs:ram::<account>:user/<name>` one RAM user; `acs:ram::<account>:role/<name>`
//!   sessions of one role. Matching is exact (no wildcards); user names are case-sensitive, role names
//!   are not (Alibaba lower-cases them in `assumed-role/…` ARNs).
//! * `Service` entries: a cloud service's name such as `ecs.aliyuncs.com`, compared ignoring ASCII case.
//! * `Federated` (SAML) principals are not supported and rejected.
//!
//! As for permission policies, a matching `Deny` wins over any `Allow`, and conditions apply.

use serde_json::{Map, Value};

use crate::RequestContext;
use crate::condition::Conditions;
use crate::error::{PolicyError, json_type};
use crate::pattern::split_arn;
use crate::policy::{
    Effect, List, check_size, optional_conditions, parse_effect, parse_statements, string_list,
    unknown_field, write_conditions, write_head, write_list, write_statements,
};

/// The one action a trust policy may name.
const ASSUME_ROLE: &str = "sts:AssumeRole";

/// Who a `RAM` principal entry (or a caller) is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RamIdentity {
    /// The whole account (`:root` or a bare account id).
    Account(String),
    User {
        account: String,
        name: String,
    },
    Role {
        account: String,
        name: String,
    },
}

impl RamIdentity {
    fn account(&self) -> &str {
        match self {
            RamIdentity::Account(a)
            | RamIdentity::User { account: a, .. }
            | RamIdentity::Role { account: a, .. } => a,
        }
    }

    /// Parses `acs:ram::<account>:root|user/<n>|role/<n>`; with `sessions`, also
    /// `assumed-role/<role>/<session>` (which is a caller, never a trust entry).
    fn parse_arn(text: &str, sessions: bool) -> Option<RamIdentity> {
        let [acs, service, _region, account, relative] = split_arn(text)?;
        if acs != "acs" || !service.eq_ignore_ascii_case("ram") || !valid_name(account) {
            return None;
        }
        let account = account.to_owned();
        if relative == "root" {
            return Some(RamIdentity::Account(account));
        }
        if let Some(name) = relative.strip_prefix("user/") {
            return valid_name(name).then(|| RamIdentity::User {
                account,
                name: name.to_owned(),
            });
        }
        if let Some(name) = relative.strip_prefix("role/") {
            return valid_name(name).then(|| RamIdentity::Role {
                account,
                name: name.to_owned(),
            });
        }
        if sessions {
            let (role, session) = relative.strip_prefix("assumed-role/")?.split_once('/')?;
            return (valid_name(role) && !session.is_empty()).then(|| RamIdentity::Role {
                account,
                name: role.to_owned(),
            });
        }
        None
    }

    /// Does this trust entry admit `caller`?
    fn admits(&self, caller: &RamIdentity) -> bool {
        match (self, caller) {
            (RamIdentity::Account(a), caller) => caller.account() == a,
            // Alibaba writes role names lower-case in ARNs (`assumed-role/<role>/…`) whatever their
            // display case, so role names compare ignoring case.
            (
                RamIdentity::Role { account, name },
                RamIdentity::Role {
                    account: caller_account,
                    name: caller_name,
                },
            ) => account == caller_account && name.to_lowercase() == caller_name.to_lowercase(),
            (entry, caller) => entry == caller,
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c == ':' || c == '/' || c == '*' || c == '?')
}

/// A parsed `RAM` principal entry, with its text as written.
#[derive(Debug, Clone, PartialEq)]
struct RamEntry {
    text: String,
    identity: RamIdentity,
}

#[derive(Debug, Clone, PartialEq)]
struct TrustStatement {
    effect: Effect,
    actions: List<String>,
    ram: Option<List<RamEntry>>,
    service: Option<List<String>>,
    conditions: Conditions,
}

/// A role's trust policy (`AssumeRolePolicyDocument`). Build one with [`TrustPolicy::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrustPolicy {
    statements: Vec<TrustStatement>,
}

impl TrustPolicy {
    /// Parses and validates a trust policy: `Version` "1", statements with `Effect`, `Action`
    /// (`sts:AssumeRole` only), `Principal` (`RAM` and/or `Service`) and an optional `Condition`.
    ///
    /// Errors: a [`PolicyError`] naming the statement and field, used as the `MalformedPolicyDocument`
    /// message.
    pub fn parse(json: &str) -> Result<TrustPolicy, PolicyError> {
        let statements = parse_statements(json, |index, obj| {
            for key in obj.keys() {
                match key.as_str() {
                    "Effect" | "Action" | "Principal" | "Condition" => {}
                    "Resource" => {
                        return Err(PolicyError::statement(
                            index,
                            key,
                            "has no meaning in a trust policy (the resource is the role itself); remove it",
                        ));
                    }
                    other => {
                        return Err(unknown_field(
                            index,
                            other,
                            "Effect, Action, Principal, Condition",
                        ));
                    }
                }
            }
            let effect = parse_effect(obj, index)?;
            let actions = string_list(obj, index, "Action", |a| {
                if a.eq_ignore_ascii_case(ASSUME_ROLE) {
                    Ok(a.to_owned())
                } else {
                    Err(format!(
                        "a trust policy only grants \"{ASSUME_ROLE}\", got {a:?}"
                    ))
                }
            })?;
            let (ram, service) = parse_principal(obj, index)?;
            Ok(TrustStatement {
                effect,
                actions,
                ram,
                service,
                conditions: optional_conditions(obj, index)?,
            })
        })?;
        let policy = TrustPolicy { statements };
        check_size(&policy.to_json())?;
        Ok(policy)
    }

    /// The trust policy re-serialized canonically (no whitespace; fields in the order Version, Statement
    /// and Effect, Action, Principal {RAM, Service}, Condition; shapes kept as written).
    pub fn to_json(&self) -> String {
        write_statements(&self.statements, |out, st| {
            write_head(out, st.effect, &st.actions, |a| a);
            out.push_str(",\"Principal\":{");
            if let Some(ram) = &st.ram {
                out.push_str("\"RAM\":");
                write_list(out, ram, |e| &e.text);
            }
            if let Some(service) = &st.service {
                if st.ram.is_some() {
                    out.push(',');
                }
                out.push_str("\"Service\":");
                write_list(out, service, |s| s);
            }
            out.push('}');
            write_conditions(out, &st.conditions);
        })
    }

    /// May `principal_arn` assume the role under `ctx`?
    ///
    /// `principal_arn` is a RAM identity (`acs:ram::<account>:root`, `acs:ram::<account>:user/<name>`,
    /// `acs:ram::<account>:assumed-role/<role>/<session>`) or, for a cloud service acting on its own, the
    /// service name (`ecs.aliyuncs.com`). Anything else is admitted by no statement. A matching `Deny`
    /// statement wins; otherwise one matching `Allow` suffices.
    pub fn allows(&self, principal_arn: &str, ctx: &RequestContext) -> bool {
        let caller = if principal_arn.starts_with("acs:") {
            match RamIdentity::parse_arn(principal_arn, true) {
                Some(id) => Caller::Ram(id),
                None => return false,
            }
        } else {
            Caller::Service(principal_arn)
        };
        let applies = |st: &TrustStatement| {
            let named = match &caller {
                Caller::Ram(id) => st
                    .ram
                    .as_ref()
                    .is_some_and(|l| l.items.iter().any(|e| e.identity.admits(id))),
                Caller::Service(name) => st
                    .service
                    .as_ref()
                    .is_some_and(|l| l.items.iter().any(|s| s.eq_ignore_ascii_case(name))),
            };
            named && st.conditions.hold(ctx)
        };
        let mut allowed = false;
        for st in self.statements.iter().filter(|st| applies(st)) {
            match st.effect {
                Effect::Deny => return false,
                Effect::Allow => allowed = true,
            }
        }
        allowed
    }
}

enum Caller<'a> {
    Ram(RamIdentity),
    Service(&'a str),
}

type Principals = (Option<List<RamEntry>>, Option<List<String>>);

fn parse_principal(obj: &Map<String, Value>, index: usize) -> Result<Principals, PolicyError> {
    let principal = match obj.get("Principal") {
        Some(Value::Object(p)) => p,
        Some(v) => {
            return Err(PolicyError::statement(
                index,
                "Principal",
                format!(
                    "must be an object {{\"RAM\": [...], \"Service\": [...]}}, got {}",
                    json_type(v)
                ),
            ));
        }
        None => {
            return Err(PolicyError::statement(
                index,
                "Principal",
                "is missing; name who may assume the role, e.g. {\"RAM\": [\"acs:ram::<account-id>:root\"]}",
            ));
        }
    };
    for key in principal.keys() {
        match key.as_str() {
            "RAM" | "Service" => {}
            "Federated" => {
                return Err(PolicyError::statement(
                    index,
                    "Principal.Federated",
                    "SAML/OIDC federation is not supported; trust RAM identities or services instead",
                ));
            }
            other => {
                return Err(PolicyError::statement(
                    index,
                    format!("Principal.{other}"),
                    "unknown principal type; use \"RAM\" or \"Service\" (case-sensitive)",
                ));
            }
        }
    }
    if principal.is_empty() {
        return Err(PolicyError::statement(
            index,
            "Principal",
            "names nobody; add \"RAM\" and/or \"Service\" entries",
        ));
    }
    let ram = if principal.contains_key("RAM") {
        Some(string_list(principal, index, "RAM", |s| {
            let identity = if s.starts_with("acs:") {
                RamIdentity::parse_arn(s, false)
            } else if valid_name(s) {
                Some(RamIdentity::Account(s.to_owned()))
            } else {
                None
            };
            identity
                .map(|identity| RamEntry {
                    text: s.to_owned(),
                    identity,
                })
                .ok_or_else(|| {
                    format!(
                        "RAM principal {s:?} is not acs:ram::<account-id>:root, acs:ram::<account-id>:user/<name>, \
                         acs:ram::<account-id>:role/<name> or an account id"
                    )
                })
        })
        .map_err(|e| prefix_principal(e, index))?)
    } else {
        None
    };
    let service = if principal.contains_key("Service") {
        Some(
            string_list(principal, index, "Service", |s| {
                if valid_name(s) {
                    Ok(s.to_owned())
                } else {
                    Err(format!(
                        "service principal {s:?} is not a service name such as \"ecs.aliyuncs.com\""
                    ))
                }
            })
            .map_err(|e| prefix_principal(e, index))?,
        )
    } else {
        None
    };
    Ok((ram, service))
}

/// `string_list` reports `RAM[0]`; inside a principal the path is `Principal.RAM[0]`.
fn prefix_principal(e: PolicyError, index: usize) -> PolicyError {
    match e {
        PolicyError::Statement { field, problem, .. } => {
            PolicyError::statement(index, format!("Principal.{field}"), problem)
        }
        other => other,
    }
}
