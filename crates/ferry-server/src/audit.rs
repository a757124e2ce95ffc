//! ActionTrail recording: turns every API call (successes, failures, signature failures, RAM denials)
//! and every agent registration into one ActionTrail event (reference §3.3) and appends it to the
//! hash-chained audit trail (`ferry_db::audit`, `docs/audit-trail.md`).
//!
//! Invariants:
//! * Secrets never reach an event: request parameters that carry one (`Signature`, `SecurityToken`,
//!   passwords, access key secrets, `UserData`…) are dropped or replaced by [`REDACTED`]; response
//!   elements are an allow-list of identifiers (`JobId`, `AccessTokenId`, `UserName`…) from which
//!   secret-bearing fields (`AccessTokenCode`, `AccessKeySecret`, `SecurityToken`) are removed even when
//!   they look like identifiers; error messages lose the echoed string to sign and any secret value.
//! * An event that cannot be recorded fails the call with `InternalError` ([`record`]): an audit trail
//!   that silently misses calls is worthless. The call's effect may already have happened; the client
//!   sees a failure and retries (creates are idempotent with `ClientToken`).
//! * After each append the head (seq, hash) is also written durably to `<data-dir>/audit-head.json`
//!   ([`ANCHOR_FILE`]), outside the database, so that `ferry audit verify` can tell a truncated tail.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use ferry_api::{ApiError, Params, Product};
use ferry_db::{AuditAnchor, AuditReport, Db};
use ferry_types::protocol::{ActivateRequest, AgentCredentials};
use serde_json::{Map, Value, json};

use crate::rpc::Caller;
use crate::{AppState, ServerError};

/// The anchor file in the data directory: `{"version":1,"seq":N,"hash":"…"}`.
pub const ANCHOR_FILE: &str = "audit-head.json";
/// What replaces a secret parameter's value in `requestParameters`.
pub const REDACTED: &str = "******";

/// ActionTrail `eventType` of API calls (agent registrations included: the agent calls the server's
/// agent API with its activation code as credential).
pub const EVENT_TYPE_API_CALL: &str = "ApiCall";
/// ActionTrail `eventType` of actions taken in the web console (recorded by the console).
pub const EVENT_TYPE_CONSOLE: &str = "ConsoleOperation";
/// ActionTrail `eventType` of console sign-in attempts, granted or refused (`crate::console`).
pub const EVENT_TYPE_CONSOLE_SIGNIN: &str = "ConsoleSignin";
/// `eventName` of an agent registration.
pub const EVENT_AGENT_REGISTRATION: &str = "RegisterSourceServer";

/// Who made a call, as ActionTrail's `userIdentity` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `root-account`, `ram-user`, `assumed-role`, `activation-code` (an agent registering), or
    /// `unknown` (the request was not authenticated).
    pub kind: String,
    pub principal_id: Option<String>,
    pub account_id: Option<String>,
    pub access_key_id: Option<String>,
    pub user_name: Option<String>,
    /// `acs:ram::<account>:assumed-role/<role>/<session>` for an assumed role.
    pub arn: Option<String>,
}

impl Identity {
    /// The authenticated caller of an RPC request.
    pub fn of_caller(caller: &Caller, account_id: &str) -> Identity {
        let kind = caller.principal_type();
        let user_name = caller.user_name_for_audit();
        Identity {
            kind: kind.into(),
            // ActionTrail shows the account for the root, and the principal's own ID otherwise; a RAM
            // user's name and an STS session's `<role>:<session>` are unique within the account.
            principal_id: Some(if kind == "root-account" {
                account_id.to_owned()
            } else {
                user_name.clone()
            }),
            account_id: Some(account_id.to_owned()),
            access_key_id: Some(caller.access_key_id.clone()),
            user_name: Some(user_name),
            arn: (kind == "assumed-role").then(|| caller.principal_arn(account_id)),
        }
    }

    /// A request whose signature was not verified: only the AccessKeyId it claims is known (and not
    /// proven).
    pub fn unauthenticated(claimed_access_key_id: Option<String>) -> Identity {
        Identity {
            kind: "unknown".into(),
            principal_id: None,
            account_id: None,
            access_key_id: claimed_access_key_id,
            user_name: None,
            arn: None,
        }
    }

    /// An agent registering with an activation code (`at-…`, when the code was recognised).
    pub fn activation_code(token_id: Option<&str>, account_id: &str) -> Identity {
        Identity {
            kind: "activation-code".into(),
            principal_id: token_id.map(str::to_owned),
            account_id: Some(account_id.to_owned()),
            access_key_id: None,
            user_name: None,
            arn: None,
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), json!(self.kind));
        for (k, v) in [
            ("principalId", &self.principal_id),
            ("accountId", &self.account_id),
            ("accessKeyId", &self.access_key_id),
            ("userName", &self.user_name),
            ("arn", &self.arn),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        Value::Object(m)
    }
}

/// Which service an event belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `serviceName`: `Smc`, `Ecs`, `Ram`, `Sts`, `Actiontrail`.
    pub name: String,
    /// `eventSource`: the product's endpoint host.
    pub host: String,
    /// `apiVersion`.
    pub version: String,
}

impl Service {
    pub fn of(product: Product) -> Service {
        Service {
            name: product.name().into(),
            host: product.host_id().into(),
            version: product.version().into(),
        }
    }

    /// A request whose `Version` named no product (recorded all the same).
    pub fn unknown(version: Option<&str>) -> Service {
        Service {
            name: "Unknown".into(),
            host: ferry_api::error::UNKNOWN_HOST_ID.into(),
            version: version.unwrap_or_default().into(),
        }
    }
}

/// One event to record, already stripped of secrets (the constructors do that).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// [`EVENT_TYPE_API_CALL`] or [`EVENT_TYPE_CONSOLE`].
    pub event_type: &'static str,
    pub service: Service,
    /// `eventName`: the action.
    pub event_name: String,
    pub request_id: String,
    /// `acsRegion`.
    pub region: String,
    pub request_parameters: Map<String, Value>,
    pub response_elements: Option<Value>,
    /// `errorCode` and `errorMessage` of a failed call.
    pub error: Option<(String, String)>,
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub identity: Identity,
    /// (resource type, resource id) the call named or created, first one first.
    pub resources: Vec<(String, String)>,
    pub additional: Option<Value>,
}

/// One answered RPC request, as the gateway sees it.
pub struct ApiCall<'a> {
    /// `None` when the `Version` named no product.
    pub product: Option<Product>,
    /// `None` when the request named no action.
    pub action: Option<&'a str>,
    pub request_id: &'a str,
    pub params: &'a Params,
    pub peer: IpAddr,
    pub user_agent: Option<&'a str>,
    /// The authenticated caller; `None` when authentication failed or was not reached.
    pub caller: Option<&'a Caller>,
    /// The AccessKeyId the request claims (recorded when authentication failed).
    pub claimed_access_key_id: Option<String>,
    /// The action's result object, or the error the client receives.
    pub outcome: Result<&'a Value, &'a ApiError>,
}

impl ApiCall<'_> {
    /// The caller's identity: the authenticated caller's, else the claimed AccessKeyId only.
    pub fn identity(&self, account_id: &str) -> Identity {
        match self.caller {
            Some(caller) => Identity::of_caller(caller, account_id),
            None => Identity::unauthenticated(self.claimed_access_key_id.clone()),
        }
    }
}

impl AuditEvent {
    /// The event of an RPC call made by `identity`. `default_region` is the server's region (for
    /// calls without `RegionId`).
    pub fn api_call(c: &ApiCall<'_>, identity: Identity, default_region: &str) -> AuditEvent {
        let service = match c.product {
            Some(p) => Service::of(p),
            None => Service::unknown(c.params.get("Version")),
        };
        let event_name = c.action.unwrap_or_default().to_owned();
        let (response_elements, error) = match c.outcome {
            Ok(v) => (
                (event_rw(&event_name) == "Write")
                    .then(|| response_elements(v))
                    .flatten(),
                None,
            ),
            Err(e) => (
                None,
                Some((e.code.to_string(), scrub_message(&e.message, c.params))),
            ),
        };
        let mut resources = resources_in_params(c.product, c.params);
        if let Some(r) = &response_elements {
            for found in resources_in_response(c.product, r) {
                if !resources.contains(&found) {
                    resources.push(found);
                }
            }
        }
        AuditEvent {
            event_type: EVENT_TYPE_API_CALL,
            service,
            event_name,
            request_id: c.request_id.to_owned(),
            region: c
                .params
                .get("RegionId")
                .filter(|r| !r.is_empty())
                .unwrap_or(default_region)
                .to_owned(),
            request_parameters: request_parameters(c.params),
            response_elements,
            error,
            source_ip: Some(c.peer),
            user_agent: c.user_agent.map(|u| truncated(u, 512)),
            identity,
            resources,
            additional: None,
        }
    }

    /// The event of an agent registration with an activation code, granted or refused. The code
    /// itself is never recorded; `token_id` is the code's `at-…` ID once the server recognised it.
    pub fn agent_registration(
        req: &ActivateRequest,
        outcome: Result<&AgentCredentials, &ApiError>,
        token_id: Option<&str>,
        peer: Option<IpAddr>,
        account_id: &str,
        region: &str,
    ) -> AuditEvent {
        let token_id = token_id.or(req.token_id.as_ref().map(|t| t.as_str()));
        let inv = &req.inventory;
        let mut params = Map::new();
        if let Some(t) = token_id {
            params.insert("AccessTokenId".into(), json!(t));
        }
        params.insert("Hostname".into(), json!(inv.hostname));
        params.insert("AgentVersion".into(), json!(inv.agent_version));
        params.insert("OsName".into(), json!(inv.os.pretty_name));
        params.insert("Architecture".into(), json!(inv.architecture));
        let mut resources = Vec::new();
        let (response_elements, error) = match outcome {
            Ok(creds) => {
                let id = creds.source_id.to_string();
                resources.push(("ACS::SMC::SourceServer".to_owned(), id.clone()));
                (Some(json!({ "SourceId": id })), None)
            }
            Err(e) => (None, Some((e.code.to_string(), e.message.clone()))),
        };
        if let Some(t) = token_id {
            resources.push(("ACS::SMC::AccessToken".to_owned(), t.to_owned()));
        }
        AuditEvent {
            event_type: EVENT_TYPE_API_CALL,
            service: Service {
                name: Product::Smc.name().into(),
                host: Product::Smc.host_id().into(),
                version: ferry_types::protocol::PREFIX.trim_start_matches('/').into(),
            },
            event_name: EVENT_AGENT_REGISTRATION.into(),
            request_id: ferry_api::new_request_id(),
            region: region.to_owned(),
            request_parameters: params,
            response_elements,
            error,
            source_ip: peer,
            user_agent: Some(format!("ferry-agent/{}", inv.agent_version)),
            identity: Identity::activation_code(token_id, account_id),
            resources,
            additional: None,
        }
    }

    /// The event's JSON (ActionTrail's record fields), with its `eventId` and `eventTime`.
    pub fn to_json(&self, event_id: &str, event_time: &str) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        put("eventId", json!(event_id));
        put("eventName", json!(self.event_name));
        put("eventSource", json!(self.service.host));
        put("eventTime", json!(event_time));
        put("eventType", json!(self.event_type));
        put("eventVersion", json!("1"));
        put("eventRW", json!(event_rw(&self.event_name)));
        put("eventCategory", json!("Management"));
        put("acsRegion", json!(self.region));
        put("serviceName", json!(self.service.name));
        put("apiVersion", json!(self.service.version));
        put("requestId", json!(self.request_id));
        put(
            "requestParameters",
            Value::Object(self.request_parameters.clone()),
        );
        if let Some(r) = &self.response_elements {
            put("responseElements", r.clone());
        }
        if let Some((code, message)) = &self.error {
            put("errorCode", json!(code));
            put("errorMessage", json!(message));
        }
        if let Some(ip) = self.source_ip {
            put("sourceIpAddress", json!(ip.to_string()));
        }
        if let Some(ua) = &self.user_agent {
            put("userAgent", json!(ua));
        }
        put("userIdentity", self.identity.to_json());
        if let Some((kind, name)) = self.resources.first() {
            put("resourceType", json!(kind));
            put("resourceName", json!(name));
            let mut referenced: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (kind, name) in &self.resources {
                referenced.entry(kind).or_default().push(name);
            }
            put("referencedResources", json!(referenced));
        }
        if let Some(a) = &self.additional {
            put("additionalEventData", a.clone());
        }
        Value::Object(m)
    }
}

/// `Read` for actions that only look (`Describe*`, `List*`, `Get*`, `Lookup*`), else `Write`.
pub fn event_rw(action: &str) -> &'static str {
    if ["Describe", "List", "Get", "Lookup"]
        .iter()
        .any(|p| action.starts_with(p))
    {
        "Read"
    } else {
        "Write"
    }
}

/// Parameters that are part of the signing protocol, not of the call: left out of `requestParameters`
/// (`AccessKeyId` is in `userIdentity`; `Action`/`Version` are `eventName`/`apiVersion`).
const PROTOCOL_PARAMS: &[&str] = &[
    "Signature",
    "SignatureNonce",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureType",
    "SecurityToken",
    "AccessKeyId",
    "Timestamp",
    "Format",
    "Action",
    "Version",
];

/// Whether a parameter or response field named `name` (the last `.`-separated segment decides) holds
/// a secret.
pub fn is_secret_name(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
    ["password", "secret", "privatekey", "passphrase"]
        .iter()
        .any(|s| last.contains(s))
        // MFA codes: `AuthenticationCode1` and `AuthenticationCode2` of BindMFADevice.
        || last.starts_with("authenticationcode")
        || matches!(
            last.as_str(),
            "signature"
                | "securitytoken"
                | "accesstokencode"
                | "userdata"
                | "authorization"
                | "bearertoken"
                | "authenticationcode"
                | "mfacode"
        )
}

/// Longest parameter value recorded whole (a RAM policy document fits); longer ones are cut.
const MAX_PARAM_VALUE: usize = 8 << 10;
/// Most parameters recorded per event. Unauthenticated requests are recorded too: without these
/// bounds one request could add a megabyte to the trail.
const MAX_PARAMS: usize = 200;

/// `requestParameters`: the effective parameters (the ones the signature covers and the action read)
/// without the signing protocol's, with secret values replaced by [`REDACTED`], values longer than
/// 8 KiB cut (saying how much was cut) and at most 200 parameters.
pub fn request_parameters(params: &Params) -> Map<String, Value> {
    params
        .iter()
        .filter(|(k, _)| !PROTOCOL_PARAMS.contains(k))
        .take(MAX_PARAMS)
        .map(|(k, v)| {
            let v = if is_secret_name(k) { REDACTED } else { v };
            (truncated(k, 256), json!(truncated(v, MAX_PARAM_VALUE)))
        })
        .collect()
}

/// `s` cut to at most `max` bytes (at a character boundary), with a note of what was cut.
fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} more bytes not recorded]", &s[..end], s.len() - end)
}

/// Identifier-like response fields worth recording besides `…Id`/`…Ids`/`…IdSet`.
const RESPONSE_NAMES: &[&str] = &["UserName", "RoleName", "PolicyName", "Arn", "GroupName"];

fn is_identifier_name(k: &str) -> bool {
    (k.ends_with("Id") || k.ends_with("Ids") || k.ends_with("IdSet") || RESPONSE_NAMES.contains(&k))
        && k != "RequestId"
}

/// `responseElements` of a write: only identifiers (what the call created or named), never secrets,
/// keeping the response's nesting (`{"User":{"UserName":"ops"}}`). `None` when nothing remains.
pub fn response_elements(v: &Value) -> Option<Value> {
    fn project(v: &Value) -> Option<Value> {
        match v {
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, item) in map {
                    if is_secret_name(k) {
                        continue;
                    }
                    let kept = match item {
                        Value::String(_) | Value::Number(_) if is_identifier_name(k) => {
                            Some(item.clone())
                        }
                        Value::Array(xs)
                            if is_identifier_name(k) && xs.iter().all(Value::is_string) =>
                        {
                            Some(item.clone())
                        }
                        Value::Object(_) | Value::Array(_) => project(item),
                        _ => None,
                    };
                    if let Some(kept) = kept {
                        out.insert(k.clone(), kept);
                    }
                }
                (!out.is_empty()).then_some(Value::Object(out))
            }
            Value::Array(items) => {
                let kept: Vec<Value> = items.iter().filter_map(project).collect();
                (!kept.is_empty()).then_some(Value::Array(kept))
            }
            _ => None,
        }
    }
    project(v)
}

/// An error message as recorded: without the string to sign `SignatureDoesNotMatch` echoes (it holds
/// every parameter, `SecurityToken` included) and without any secret parameter's value.
pub fn scrub_message(message: &str, params: &Params) -> String {
    let mut out = match message.find("server string to sign is:") {
        Some(i) => format!("{}server string to sign is: (not recorded)", &message[..i]),
        None => message.to_owned(),
    };
    for (k, v) in params.iter() {
        if v.len() >= 4 && (is_secret_name(k) || k == "Signature") {
            out = out.replace(v, REDACTED);
        }
    }
    out
}

/// Parameters naming a resource, and the resource's ActionTrail type. `None` as product = any.
const RESOURCE_PARAMS: &[(&str, &str, Option<Product>)] = &[
    ("JobId", "ACS::SMC::ReplicationJob", None),
    ("SourceId", "ACS::SMC::SourceServer", None),
    ("AccessTokenId", "ACS::SMC::AccessToken", None),
    ("WorkgroupId", "ACS::SMC::Workgroup", None),
    ("InstanceId", "ACS::ECS::Instance", None),
    ("ImageId", "ACS::ECS::Image", None),
    ("SnapshotId", "ACS::ECS::Snapshot", None),
    ("DiskId", "ACS::ECS::Disk", None),
    ("UserName", "ACS::RAM::User", Some(Product::Ram)),
    ("PolicyName", "ACS::RAM::Policy", Some(Product::Ram)),
    ("RoleName", "ACS::RAM::Role", Some(Product::Ram)),
    ("RoleArn", "ACS::RAM::Role", Some(Product::Sts)),
];

fn resource_type_of(product: Option<Product>, key: &str) -> Option<&'static str> {
    RESOURCE_PARAMS
        .iter()
        .find(|(k, _, only)| *k == key && only.is_none_or(|p| Some(p) == product))
        .map(|(_, t, _)| *t)
}

/// Resources a request names: `JobId`, `SourceId.N`, `InstanceId`… in the table's order.
fn resources_in_params(product: Option<Product>, params: &Params) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (key, kind, _) in RESOURCE_PARAMS {
        if resource_type_of(product, key).is_none() {
            continue;
        }
        let mut values: Vec<String> = params
            .get(key)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .into_iter()
            .collect();
        values.extend(params.get_list(key).into_iter().filter(|v| !v.is_empty()));
        for v in values {
            let r = ((*kind).to_owned(), v);
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
}

/// Resources a write's (projected) response names: what it created.
fn resources_in_response(product: Option<Product>, v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(product: Option<Product>, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                for (k, item) in map {
                    match (resource_type_of(product, k), item) {
                        (Some(kind), Value::String(s)) => out.push((kind.to_owned(), s.clone())),
                        _ => walk(product, item, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(product, i, out)),
            _ => {}
        }
    }
    walk(product, v, &mut out);
    out
}

/// Records `ev` with a fresh `eventId` and the current time, then moves the anchor file.
///
/// Errors: `InternalError` when the event could not be stored (logged at error level with the cause):
/// the caller must fail the request rather than answer a call that left no trace.
pub async fn record(st: &AppState, ev: AuditEvent) -> Result<(), ApiError> {
    let now = time::OffsetDateTime::now_utc();
    let event_id = ferry_api::new_request_id();
    let body = ev.to_json(&event_id, &ferry_api::fmt_time(now));
    let appended = match st.db.audit_append_anchored(&body).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(
                error = %e, event = %ev.event_name, request_id = %ev.request_id,
                "AUDIT TRAIL: cannot record the event; the call is answered with InternalError"
            );
            return Err(ApiError::internal());
        }
    };
    // Every call of a group-committed batch names the batch's head: the first to get here writes it,
    // the others find it written.
    if let Err(e) = write_anchor(&st.cfg.data_dir, &appended.head).await {
        tracing::error!(
            error = %e, seq = appended.record.seq, path = %st.cfg.data_dir.join(ANCHOR_FILE).display(),
            "AUDIT TRAIL: the event is recorded but the head anchor file cannot be written; \
             the call is answered with InternalError"
        );
        return Err(ApiError::internal());
    }
    Ok(())
}

/// Records an answered RPC call (see [`ApiCall`]).
///
/// Errors: as [`record`].
pub async fn record_api_call(st: &AppState, call: &ApiCall<'_>) -> Result<(), ApiError> {
    let identity = call.identity(&st.account_id);
    record(st, AuditEvent::api_call(call, identity, &st.cfg.region_id)).await
}

/// The newest anchor seq written per anchor file by this process. Appends finish out of order; this
/// keeps a slower writer from moving the file back to an older head. Keyed by path because one process
/// may run several servers (the tests do).
static ANCHOR_WRITERS: LazyLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<i64>>>>> =
    LazyLock::new(Default::default);

/// Writes `anchor` to `<data_dir>/audit-head.json` durably (temp file, fsync, rename, fsync dir)
/// unless this process already wrote a newer one. One durable write per committed batch of appends
/// (not per append) keeps the anchor from ever lagging the database by more than the calls in flight;
/// anchoring every N events or seconds would be cheaper but would let a truncation of the last
/// unanchored events go unnoticed.
async fn write_anchor(data_dir: &Path, anchor: &AuditAnchor) -> std::io::Result<()> {
    let path = data_dir.join(ANCHOR_FILE);
    let slot = {
        let mut map = ANCHOR_WRITERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(path.clone()).or_default().clone()
    };
    let mut written = slot.lock().await;
    if *written >= anchor.seq {
        return Ok(());
    }
    let mut bytes = serde_json::to_vec(anchor).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    tokio::task::spawn_blocking(move || ferry_chunk::store::durable_write(&path, &bytes))
        .await
        .map_err(std::io::Error::other)??;
    *written = anchor.seq;
    Ok(())
}

/// Reads an anchor file. `Ok(None)` when it does not exist.
///
/// Errors: a message saying why the file cannot be used (unreadable, not JSON, unknown version).
pub fn read_anchor_file(path: &Path) -> Result<Option<AuditAnchor>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let anchor: AuditAnchor = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not an audit anchor: {e}", path.display()))?;
    if anchor.version != 1 {
        return Err(format!(
            "{} has anchor format version {}, this build reads version 1: upgrade ferry",
            path.display(),
            anchor.version
        ));
    }
    Ok(Some(anchor))
}

/// What `ferry audit verify` checks, offline: opens the database (`database`, else
/// `<data_dir>/ferry.db`), walks the chain and compares it with the head anchor in the database and
/// the anchor file in `data_dir`. Problems are in the report; a missing or unreadable anchor file while
/// the chain has records is a problem too (deleting it would hide a truncation).
///
/// Errors: the database cannot be opened (or does not exist), or a query fails.
pub async fn verify(data_dir: &Path, database: Option<&str>) -> Result<AuditReport, ServerError> {
    let db = match database {
        Some(url) => Db::open(url).await?,
        None => {
            let path = data_dir.join("ferry.db");
            if !path.is_file() {
                return Err(ServerError::Config(format!(
                    "there is no database at {}: pass the server's --data-dir, or --database for PostgreSQL",
                    path.display()
                )));
            }
            Db::open_sqlite(&path).await?
        }
    };
    let path = data_dir.join(ANCHOR_FILE);
    let name = path.display().to_string();
    let file = read_anchor_file(&path);
    let anchors: Vec<(String, AuditAnchor)> = match &file {
        Ok(Some(a)) => vec![(name.clone(), a.clone())],
        _ => Vec::new(),
    };
    let mut report = db.audit_verify(&anchors).await;
    db.close().await;
    if let Ok(r) = &mut report
        && r.count > 0
    {
        let problem = match file {
            Ok(Some(_)) => None,
            Ok(None) => Some(format!(
                "the anchor file {name} is missing although the chain has records: it was deleted, or \
                 this is not the server's data directory"
            )),
            Err(e) => Some(e),
        };
        if let Some(detail) = problem {
            r.problems.push(ferry_db::AuditProblem {
                seq: 0,
                kind: ferry_db::AuditProblemKind::BadAnchor,
                detail,
            });
        }
    }
    Ok(report?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(
        product: Product,
        action: &'a str,
        params: &'a Params,
        outcome: Result<&'a Value, &'a ApiError>,
    ) -> ApiCall<'a> {
        ApiCall {
            product: Some(product),
            action: Some(action),
            request_id: "R-1",
            params,
            peer: "127.0.0.1".parse().expect("ip"),
            user_agent: Some("test"),
            caller: None,
            claimed_access_key_id: params.get("AccessKeyId").map(str::to_owned),
            outcome,
        }
    }

    const SECRETS: &[&str] = &[
        "SIGNATURE-VALUE-xyz=",
        "STS-TOKEN-VALUE-abc",
        "AK-SECRET-VALUE-123",
        "ACTIVATION-CODE-VALUE",
        "PASSWORD-VALUE-!",
        "ROLE-SECRET-VALUE",
        "ROLE-TOKEN-VALUE",
        "NONCE-VALUE-42",
        "USERDATA-VALUE",
    ];

    fn root() -> Identity {
        Identity {
            kind: "root-account".into(),
            principal_id: Some("1234".into()),
            account_id: Some("1234".into()),
            access_key_id: Some("LTAIroot".into()),
            user_name: Some("root".into()),
            arn: None,
        }
    }

    /// The events of four calls that carry secrets, each stored in a real database and read back.
    async fn stored_bodies() -> Vec<String> {
        let base = "Signature=SIGNATURE-VALUE-xyz%3D&SecurityToken=STS-TOKEN-VALUE-abc\
                    &SignatureNonce=NONCE-VALUE-42&AccessKeyId=LTAIroot&Timestamp=2024-01-01T00%3A00%3A00Z";
        let mut events = Vec::new();

        let p = Params::from_query(&format!("{base}&Name=wave-1&Count=10"));
        let resp = json!({"AccessTokenId": "at-1", "AccessTokenCode": "ACTIVATION-CODE-VALUE"});
        events.push(AuditEvent::api_call(
            &call(Product::Smc, "CreateAccessToken", &p, Ok(&resp)),
            root(),
            "local",
        ));

        let p = Params::from_query(&format!("{base}&UserName=ops"));
        let resp = json!({"AccessKey": {"AccessKeyId": "LTAIops", "AccessKeySecret": "AK-SECRET-VALUE-123",
                                         "Status": "Active", "CreateDate": "2024-01-01T00:00:00Z"}});
        events.push(AuditEvent::api_call(
            &call(Product::Ram, "CreateAccessKey", &p, Ok(&resp)),
            root(),
            "local",
        ));

        let p = Params::from_query(&format!(
            "{base}&RoleArn=acs:ram::1234:role/migrator&RoleSessionName=s1"
        ));
        let resp = json!({
            "Credentials": {"AccessKeyId": "STS.abc", "AccessKeySecret": "ROLE-SECRET-VALUE",
                            "SecurityToken": "ROLE-TOKEN-VALUE", "Expiration": "2024-01-01T01:00:00Z"},
            "AssumedRoleUser": {"Arn": "acs:ram::1234:role/migrator/s1", "AssumedRoleId": "300:s1"}
        });
        events.push(AuditEvent::api_call(
            &call(Product::Sts, "AssumeRole", &p, Ok(&resp)),
            root(),
            "local",
        ));

        let p = Params::from_query(&format!(
            "{base}&UserName=ops&Password=PASSWORD-VALUE-!&UserData=USERDATA-VALUE&NewPassword=PASSWORD-VALUE-!"
        ));
        let err = ApiError::signature_does_not_match(
            "POST&%2F&SecurityToken%3DSTS-TOKEN-VALUE-abc%26Password%3DPASSWORD-VALUE-!",
        );
        events.push(AuditEvent::api_call(
            &call(Product::Ram, "CreateLoginProfile", &p, Err(&err)),
            Identity::unauthenticated(Some("LTAIroot".into())),
            "local",
        ));

        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open_sqlite(&dir.path().join("t.db")).await.expect("db");
        for (i, ev) in events.iter().enumerate() {
            db.audit_append(&ev.to_json(&format!("E-{i}"), "2024-01-01T00:00:00Z"))
                .await
                .expect("append");
        }
        let bodies = db
            .audit_scan(1, 100)
            .await
            .expect("scan")
            .into_iter()
            .map(|r| r.body)
            .collect();
        db.close().await;
        bodies
    }

    #[tokio::test]
    async fn secrets_never_reach_the_stored_body() {
        let bodies = stored_bodies().await;
        assert_eq!(bodies.len(), 4);
        for body in &bodies {
            for secret in SECRETS {
                assert!(!body.contains(secret), "{secret} leaked into {body}");
            }
        }
        let ev: Vec<Value> = bodies
            .iter()
            .map(|b| serde_json::from_str(b).expect("JSON"))
            .collect();
        // What is recorded instead: the ids, the fact that a password was given, the claimed key.
        assert_eq!(ev[0]["responseElements"], json!({"AccessTokenId": "at-1"}));
        assert_eq!(ev[0]["resourceName"], "at-1");
        assert_eq!(ev[0]["requestParameters"]["Name"], "wave-1");
        assert_eq!(
            ev[1]["responseElements"],
            json!({"AccessKey": {"AccessKeyId": "LTAIops"}})
        );
        assert_eq!(ev[1]["resourceType"], "ACS::RAM::User");
        assert_eq!(
            ev[2]["responseElements"],
            json!({"Credentials": {"AccessKeyId": "STS.abc"},
                   "AssumedRoleUser": {"Arn": "acs:ram::1234:role/migrator/s1", "AssumedRoleId": "300:s1"}})
        );
        assert_eq!(ev[3]["requestParameters"]["Password"], REDACTED);
        assert_eq!(ev[3]["requestParameters"]["UserData"], REDACTED);
        assert_eq!(ev[3]["errorCode"], "SignatureDoesNotMatch");
        assert_eq!(ev[3]["userIdentity"]["type"], "unknown");
        assert_eq!(ev[3]["userIdentity"]["accessKeyId"], "LTAIroot");
        for e in &ev {
            let params = e["requestParameters"].as_object().expect("object");
            for gone in [
                "Signature",
                "SecurityToken",
                "SignatureNonce",
                "AccessKeyId",
            ] {
                assert!(!params.contains_key(gone), "{gone} in {e}");
            }
        }
    }

    #[test]
    fn events_carry_the_reference_fields() {
        let p = Params::from_query("JobId=j-1&RegionId=cn-hangzhou");
        let resp = json!({"RequestId": "R-1"});
        let ops = Identity {
            kind: "ram-user".into(),
            principal_id: Some("ops".into()),
            account_id: Some("1234".into()),
            access_key_id: Some("LTAIops".into()),
            user_name: Some("ops".into()),
            arn: None,
        };
        let ev = AuditEvent::api_call(
            &call(Product::Smc, "StartReplicationJob", &p, Ok(&resp)),
            ops,
            "local",
        )
        .to_json("E-1", "2024-01-01T00:00:00Z");
        assert_eq!(ev["eventSource"], "smc.aliyuncs.com");
        assert_eq!(ev["serviceName"], "Smc");
        assert_eq!(ev["apiVersion"], "2019-06-01");
        assert_eq!(ev["eventRW"], "Write");
        assert_eq!(ev["eventVersion"], "1");
        assert_eq!(ev["eventCategory"], "Management");
        assert_eq!(ev["acsRegion"], "cn-hangzhou");
        assert_eq!(ev["resourceType"], "ACS::SMC::ReplicationJob");
        assert_eq!(ev["resourceName"], "j-1");
        assert_eq!(ev["userIdentity"]["type"], "ram-user");
        assert_eq!(ev["userIdentity"]["userName"], "ops");
        assert_eq!(ev["sourceIpAddress"], "127.0.0.1");
        assert!(ev.get("responseElements").is_none(), "{ev}");
        assert!(ev.get("errorCode").is_none());
        ferry_db::AuditIndex::of(&ev).expect("indexable");

        assert_eq!(event_rw("DescribeSourceServers"), "Read");
        assert_eq!(event_rw("LookupEvents"), "Read");
        assert_eq!(event_rw("DeleteAccessToken"), "Write");
    }

    #[test]
    fn huge_requests_are_recorded_bounded() {
        let big = "é".repeat(10_000);
        let mut q = format!("PolicyDocument={big}");
        for i in 0..300 {
            q.push_str(&format!("&Z{i:03}=v"));
        }
        let params = request_parameters(&Params::from_query(&q));
        assert_eq!(params.len(), MAX_PARAMS);
        let doc = params["PolicyDocument"].as_str().expect("kept");
        assert!(doc.len() < MAX_PARAM_VALUE + 64, "{}", doc.len());
        assert!(doc.ends_with("more bytes not recorded]"), "{doc}");
        assert_eq!(truncated("abc", 3), "abc");
    }

    #[test]
    fn list_parameters_name_every_resource() {
        let p = Params::from_query("SourceId.1=s-1&SourceId.2=s-2&UserName=not-ram");
        let ev = AuditEvent::api_call(
            &call(Product::Smc, "DescribeSourceServers", &p, Ok(&json!({}))),
            Identity::unauthenticated(None),
            "local",
        );
        assert_eq!(
            ev.resources,
            [
                ("ACS::SMC::SourceServer".to_owned(), "s-1".to_owned()),
                ("ACS::SMC::SourceServer".to_owned(), "s-2".to_owned())
            ]
        );
    }
}
