//! A client of Ferry's public RPC API, signing like the official Alibaba Cloud SDKs.
//!
//! Every call is `POST /?<query>` with an empty body and every parameter, including the v1
//! (HMAC-SHA1) signature, in the query string: exactly what the v1 SDKs put on the wire
//! (`../shared/ref/smc-api.md` §1.3). The server's certificate is checked against the CA given to
//! [`Client::new`] and nothing else: the built-in web roots are never trusted, because a Ferry server
//! signs its own certificate.
//!
//! Invariants:
//! * The access key secret is only used to compute signatures, and an STS security token is only sent
//!   as the signed `SecurityToken` parameter; neither is ever logged or shown in errors.
//! * No retries: a failed call is reported once, and the script or the operator decides what to do.

use std::time::Duration;

use ferry_api::sign::{Credentials, sign_v1_query};
use serde_json::Value;

/// SMC's API version.
pub const SMC_VERSION: &str = "2019-06-01";
/// ECS's API version.
pub const ECS_VERSION: &str = "2014-05-26";
/// RAM's API version.
pub const RAM_VERSION: &str = "2015-05-01";
/// STS's API version.
pub const STS_VERSION: &str = "2015-04-01";

/// Connecting must not hang a script for long; a call may take longer (large listings).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an API error envelope.
    #[error("{code}: {message} (request {request_id})")]
    Api {
        /// HTTP status of the answer.
        status: u16,
        /// The error code, e.g. `InvalidAccessKeyId.NotFound`.
        code: String,
        /// The server's explanation.
        message: String,
        /// The request ID to quote in a bug report or to find in the server log.
        request_id: String,
        /// For a RAM denial (403), the action that was denied (`AccessDeniedDetail.AuthAction`, e.g.
        /// `smc:CreateReplicationJob`), when the server says.
        auth_action: Option<String>,
        /// Which access key signed the call and where it was configured (never the secret), when the
        /// client was told ([`Client::with_key_source`]): the hint of a refused key names it.
        key: Option<String>,
    },
    /// No answer: connection refused, TLS failure, timeout.
    #[error("{}", transport_message(endpoint, *kind))]
    Transport {
        endpoint: String,
        /// What went wrong, as far as the cause tells.
        kind: TransportKind,
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not the API's JSON.
    #[error(
        "the answer to {action} from {endpoint} (HTTP {status}) is not an RPC API response ({detail}): \
         check that --endpoint points at a Ferry server"
    )]
    Decode {
        endpoint: String,
        action: String,
        status: u16,
        detail: String,
    },
    /// The endpoint is not an http(s) URL.
    #[error(
        "endpoint {endpoint:?} is not a URL like https://host:8443 ({reason}): fix --endpoint or the profile"
    )]
    InvalidEndpoint { endpoint: String, reason: String },
    /// The CA certificate could not be used.
    #[error(
        "the CA certificate is not a usable PEM certificate: pass the server's <data-dir>/tls/ca.pem with --ca-cert"
    )]
    InvalidCa(#[source] reqwest::Error),
    /// The HTTP client could not be built (TLS initialisation).
    #[error("cannot set up the HTTPS client")]
    Setup(#[source] reqwest::Error),
}

impl ClientError {
    /// The API error code, when the server answered with one.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// What the person who saw this error should do next.
    pub fn hint(&self) -> String {
        match self {
            ClientError::Api {
                code,
                message,
                request_id,
                auth_action,
                key,
                ..
            } => api_hint(
                code,
                message,
                request_id,
                auth_action.as_deref(),
                key.as_deref(),
            ),
            ClientError::Transport { kind, .. } => transport_hint(*kind).to_owned(),
            ClientError::Decode { .. } | ClientError::InvalidEndpoint { .. } => {
                "check --endpoint, FERRY_ENDPOINT or the profile's endpoint".to_owned()
            }
            ClientError::InvalidCa(_) | ClientError::Setup(_) => {
                "pass the server's CA with --ca-cert <data-dir>/tls/ca.pem".to_owned()
            }
        }
    }
}

/// Why a request got no answer, read from the causes of a transport error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Nothing listens at the address (the server is not running, or another port).
    Refused,
    /// The TLS handshake failed on the server's certificate: not signed by the CA this client trusts.
    Certificate,
    /// No answer in time (a firewall dropping packets, an overloaded server).
    Timeout,
    /// The host name does not resolve.
    NameResolution,
    /// Anything else (connection reset, protocol error, ...).
    Other,
}

impl TransportKind {
    /// Classifies `err` by walking its causes. TLS and socket errors arrive wrapped in `io::Error`s
    /// whose `source()` skips the wrapped error, so each `io::Error` is also opened with `get_ref`.
    pub fn of(err: &(dyn std::error::Error + 'static)) -> TransportKind {
        let mut texts = Vec::new();
        let mut cause = Some(err);
        while let Some(e) = cause {
            if let Some(kind) = Self::of_one(e) {
                return kind;
            }
            if let Some(inner) = e
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                && let Some(kind) = Self::of_one(inner)
            {
                return kind;
            }
            if let Some(r) = e.downcast_ref::<reqwest::Error>()
                && r.is_timeout()
            {
                return TransportKind::Timeout;
            }
            texts.push(e.to_string().to_ascii_lowercase());
            cause = e.source();
        }
        // Last resort, for causes whose types are private to a dependency.
        let text = texts.join(": ");
        if text.contains("certificate") {
            TransportKind::Certificate
        } else if text.contains("connection refused") {
            TransportKind::Refused
        } else if text.contains("dns error") || text.contains("failed to lookup address") {
            TransportKind::NameResolution
        } else if text.contains("timed out") {
            TransportKind::Timeout
        } else {
            TransportKind::Other
        }
    }

    fn of_one(e: &(dyn std::error::Error + 'static)) -> Option<TransportKind> {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(match tls {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    TransportKind::Certificate
                }
                _ => TransportKind::Other,
            });
        }
        match e.downcast_ref::<std::io::Error>()?.kind() {
            std::io::ErrorKind::ConnectionRefused => Some(TransportKind::Refused),
            std::io::ErrorKind::TimedOut => Some(TransportKind::Timeout),
            _ => None,
        }
    }
}

fn transport_message(endpoint: &str, kind: TransportKind) -> String {
    match kind {
        TransportKind::Refused => format!(
            "no answer from {endpoint}: connection refused. Is the server running at {endpoint}? check \
             --endpoint (or the profile's endpoint, `ferry configure`)"
        ),
        TransportKind::Certificate => format!(
            "{endpoint} presented a certificate that the CA this CLI trusts did not sign: the server's CA \
             changed (a new data directory?), or --ca-cert/the profile holds another server's CA; check \
             --endpoint and --ca-cert"
        ),
        TransportKind::Timeout => format!(
            "no answer from {endpoint} in time: is the server running and reachable from here? check \
             --endpoint and the firewalls in between"
        ),
        TransportKind::NameResolution => format!(
            "cannot resolve the host name of {endpoint}: check --endpoint (or the profile's endpoint) and DNS"
        ),
        TransportKind::Other => format!(
            "no answer from {endpoint}: is the server running at {endpoint}? check --endpoint \
             (and --ca-cert if the cause is a certificate)"
        ),
    }
}

fn transport_hint(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Refused | TransportKind::Other => {
            "start the server with `ferry server`, or pass --endpoint (and --ca-cert) for a remote one; \
             `ferry doctor` checks the whole connection"
        }
        TransportKind::Certificate => {
            "if the server was reinstalled, save its new CA: `ferry configure --profile NAME --from-data-dir \
             <data-dir>` on the server host, or pass --ca-cert with its current <data-dir>/tls/ca.pem; \
             `ferry doctor` compares the fingerprints"
        }
        TransportKind::Timeout => {
            "check that `ferry server` runs there and that firewalls and proxies let this machine reach it; \
             `ferry doctor` checks the connection step by step"
        }
        TransportKind::NameResolution => {
            "fix the host name in --endpoint or in the profile (`ferry configure`)"
        }
    }
}

/// What to do after an API error `code`: authentication and clock problems name the key and where it
/// came from; RAM, STS and resource errors name the command to run next.
fn api_hint(
    code: &str,
    message: &str,
    request_id: &str,
    auth_action: Option<&str>,
    key: Option<&str>,
) -> String {
    let key = key.unwrap_or("the access key");
    if code == "InvalidAccessKeyId.Inactive" {
        return format!(
            "check the access key: {key} is disabled. Enable it with `ferry ram key enable ID --user USER` \
             using another key, or use another key"
        );
    }
    if code.starts_with("InvalidAccessKeyId") {
        return format!(
            "check the access key: the server does not know {key}. Fix --access-key-id/--access-key-secret, \
             FERRY_ACCESS_KEY_ID/FERRY_ACCESS_KEY_SECRET, the profile (`ferry configure --profile NAME ...`), \
             or <data-dir>/root-credentials.json; a key from another server does not work here"
        );
    }
    if code == "SignatureDoesNotMatch" || code == "IncompleteSignature" {
        return format!(
            "check the access key secret: the server knows {key}, but the secret does not match it. Pass the \
             right one with --access-key-secret or FERRY_ACCESS_KEY_SECRET, or fix the profile with `ferry \
             configure`"
        );
    }
    if code.starts_with("InvalidTimeStamp") || code == "SignatureNonceUsed" {
        return "check this machine's clock: signed requests must be within 15 minutes of the server's \
                (enable NTP: chrony or systemd-timesyncd); `ferry doctor` shows the skew"
            .to_owned();
    }
    if code == "ReplicationJob.InvalidStatus" {
        return match status_in_message(message) {
            Some(status) => format!(
                "the job is {status}: {}",
                crate::view::job_next_step(status, "ID")
            ),
            None => {
                "`ferry job show ID` shows the job's status; the message says which statuses the \
                     action needs"
                    .to_owned()
            }
        };
    }
    if let Some(hint) = resource_hint(code, auth_action) {
        return hint;
    }
    if code.starts_with("Forbidden") || code == "NoPermission" {
        format!(
            "the RAM policies of {key} do not allow the action: use another key or ask an administrator"
        )
    } else if code == "InternalError" || code == "ServiceUnavailable" {
        format!("the server's log has the details under request {request_id}")
    } else {
        format!(
            "`ferry call <Action> Key=Value...` shows the API's raw answer; the server log has request {request_id}"
        )
    }
}

/// The current status in SMC's `ReplicationJob.InvalidStatus` message ("The specified replication job
/// status: Running is invalid. ...").
fn status_in_message(message: &str) -> Option<&str> {
    let rest = message.split_once("status: ")?.1;
    let status = rest.split_whitespace().next()?;
    (!status.is_empty() && status.chars().all(|c| c.is_ascii_alphabetic())).then_some(status)
}

/// Hints for the codes of RAM, STS and the resource actions: what to run next.
fn resource_hint(code: &str, auth_action: Option<&str>) -> Option<String> {
    let hint = match code {
        "Forbidden.RAM" | "NoPermission" | "Forbidden.Unauthorized" | "Forbidden.SubUser" => {
            match auth_action {
                Some(action) => format!(
                    "ask an administrator to attach a policy allowing {action} to this user or role \
                     (`ferry ram policy attach NAME --user USER`), or use another access key"
                ),
                None => return None,
            }
        }
        "InvalidSecurityToken.Expired" => {
            "the temporary credentials expired: get new ones with `ferry ram assume-role --role-arn ARN \
             --session NAME --save-profile PROFILE`"
                .into()
        }
        "InvalidSecurityToken.Malformed" | "InvalidSecurityToken.MismatchWithAccessKey" => {
            "a temporary (STS.) access key needs its own security token: use the profile `ferry ram \
             assume-role --save-profile` wrote, or pass --security-token"
                .into()
        }
        "EntityNotExist.User" => "list the RAM users with `ferry ram user list`".into(),
        "EntityNotExist.Role" => "list the roles with `ferry ram role list`".into(),
        "EntityNotExist.Policy" => {
            "list the policies with `ferry ram policy list`; a system policy needs --type System".into()
        }
        "EntityNotExist.User.AccessKey" | "EntityNotExist.AccessKey" => {
            "list the keys with `ferry ram key list --user USER`".into()
        }
        "LimitExceeded.User.AccessKey" => {
            "a user has at most 2 access keys: delete an unused one with `ferry ram key delete ID --user USER`"
                .into()
        }
        "DeleteConflict.User.AccessKey" => {
            "delete the user's access keys first: `ferry ram key list --user USER`".into()
        }
        "DeleteConflict.User.Policy" | "DeleteConflict.Role.Policy" => {
            "detach its policies first: `ferry ram policy detach POLICY --user USER` (or --role ROLE)".into()
        }
        "MalformedPolicyDocument" | "MalformedPolicyDocument.Action" => {
            "fix the document: {\"Version\":\"1\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\
             [\"smc:Describe*\"],\"Resource\":\"*\"}]}"
                .into()
        }
        "ReplicationJob.InvalidBusinessStatus" => {
            "`ferry job show ID` shows the job's status; a cutover needs an incremental job that is Waiting, \
             not syncing: wait with `ferry job watch ID`"
                .into()
        }
        "InvalidJobId.NotFound" => "list the replication jobs with `ferry job list`".into(),
        "InvalidSourceId.NotFound" | "InvalidSourceServerId.NotFound" => {
            "list the source servers with `ferry source list`".into()
        }
        "SourceServerState.Invalid" => {
            "`ferry source show ID` shows the source's state; its agent must be online and reporting (run \
             `ferry doctor --source` on that server to see why it is not)"
                .into()
        }
        "SourceServer.WithRunningReplicationJob" | "ReplicationJob.Related" => {
            "stop or delete the source's replication job first (`ferry job list`), or pass --force".into()
        }
        "ImageUsingByInstance" => {
            "delete the instances using the image first (`ferry instance list`), or pass --force".into()
        }
        "SnapshotCreatedImage" | "SnapshotCreatedDisk" => {
            "delete the images built from the snapshot first (`ferry image list`), or pass --force".into()
        }
        "IncorrectInstanceStatus" => {
            "`ferry instance show ID` shows its status: start needs Stopped, stop needs Running, delete \
             needs Stopped or --force"
                .into()
        }
        "InvalidImageId.NotFound" => "list the images with `ferry image list`".into(),
        "InvalidInstanceId.NotFound" => "list the instances with `ferry instance list`".into(),
        "InvalidSnapshotId.NotFound" => "list the snapshots with `ferry snapshot list`".into(),
        "InvalidImageName.Duplicated" => {
            "an image has that name already: choose another --name".into()
        }
        "InvalidInstanceType.ValueNotSupported" => {
            "leave --type out for the server's default, or use a type the server lists in its \
             documentation (docs/instances.md)"
                .into()
        }
        "InvalidAction.NotFound" | "InvalidApi.NotFound" => {
            "this server does not have that action: it may be older than this CLI".into()
        }
        c if c.starts_with("EntityAlreadyExists") => {
            "that name is taken: choose another, or use the existing one".into()
        }
        _ => return None,
    };
    Some(hint)
}

/// Where the access key of `conn` comes from, for error hints: `access key LTAI… from profile "lab" of
/// /root/.ferry/config.json`. Follows the precedence of [`crate::config::resolve`] for the key ID; never
/// mentions the secret. Unreadable files just make the description vaguer.
pub fn key_source(
    conn: &crate::config::ConnectionArgs,
    home: Option<&std::path::Path>,
    key_id: &str,
) -> String {
    let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    let from = if given(&conn.access_key_id) {
        "--access-key-id/FERRY_ACCESS_KEY_ID".to_owned()
    } else {
        let profile = home.and_then(|h| {
            let file = crate::config::load_profiles(h).ok().flatten()?;
            let name = conn.profile.clone().unwrap_or_else(|| file.current.clone());
            let p = file.get(&name)?;
            (!p.access_key_id.trim().is_empty()).then(|| {
                format!(
                    "profile {name:?} of {}",
                    crate::config::profile_path(h).display()
                )
            })
        });
        profile.unwrap_or_else(|| {
            conn.data_dir()
                .join(ferry_server::ROOT_CREDENTIALS_FILE)
                .display()
                .to_string()
        })
    };
    // The secret can come from elsewhere than the key ID: say so, since a wrong secret is the usual cause.
    let secret = if given(&conn.access_key_secret) && !given(&conn.access_key_id) {
        " (secret from --access-key-secret/FERRY_ACCESS_KEY_SECRET)"
    } else {
        ""
    };
    format!("access key {key_id} from {from}{secret}")
}

/// A signed RPC client for one endpoint and one access key.
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    access_key_id: String,
    access_key_secret: String,
    /// The STS token that goes with a temporary access key (`STS.…`), sent as `SecurityToken`.
    security_token: Option<String>,
    /// [`key_source`]'s description of the key, copied into API errors for their hints.
    key_source: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `endpoint` (`https://host:port`), trusting only `ca_pem` (the server's
    /// CA, PEM). Without a CA only `http://` endpoints can work, as no root is trusted.
    ///
    /// Errors: [`ClientError::InvalidEndpoint`], [`ClientError::InvalidCa`], [`ClientError::Setup`].
    pub fn new(
        endpoint: &str,
        access_key_id: &str,
        access_key_secret: &str,
        ca_pem: Option<&str>,
    ) -> Result<Client, ClientError> {
        let endpoint = normalize_endpoint(endpoint)?;
        // reqwest's rustls needs a process-wide crypto provider; another part of the process (the
        // in-process server of the tests) may have installed it already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!("ferry-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            let cert =
                reqwest::Certificate::from_pem(pem.as_bytes()).map_err(ClientError::InvalidCa)?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(ClientError::Setup)?;
        Ok(Client {
            http,
            endpoint,
            access_key_id: access_key_id.to_owned(),
            access_key_secret: access_key_secret.to_owned(),
            security_token: None,
            key_source: None,
        })
    }

    /// This client, signing with the STS security token that goes with its temporary access key
    /// (`None`: a permanent key). The token travels as the `SecurityToken` query parameter, which the
    /// v1 signature covers, exactly as the v1 SDKs send it.
    pub fn with_security_token(mut self, token: Option<String>) -> Client {
        self.security_token = token.filter(|t| !t.is_empty());
        self
    }

    /// This client, describing its key as `source` in API errors (see [`key_source`]), so that the hint
    /// of a refused key says which key and which profile or file it came from.
    pub fn with_key_source(mut self, source: String) -> Client {
        self.key_source = Some(source);
        self
    }

    /// The access key ID this client signs with.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The endpoint this client calls, without a trailing `/`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Calls `action` of API `version` with `params` and returns the response object (with its
    /// `RequestId`).
    ///
    /// Errors: [`ClientError::Api`] for an error envelope, [`ClientError::Transport`] when the server
    /// cannot be reached, [`ClientError::Decode`] when the answer is not the API's JSON.
    pub async fn call(
        &self,
        version: &str,
        action: &str,
        params: &[(String, String)],
    ) -> Result<Value, ClientError> {
        let mut all: Vec<(&str, &str)> = vec![("Action", action), ("Version", version)];
        all.extend(
            params
                .iter()
                .filter(|(k, _)| k != "Action" && k != "Version")
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let credentials = Credentials {
            access_key_id: &self.access_key_id,
            access_key_secret: &self.access_key_secret,
            security_token: self.security_token.as_deref(),
        };
        let query = sign_v1_query("POST", &all, &credentials);
        let url = format!("{}/?{query}", self.endpoint);
        tracing::debug!(endpoint = %self.endpoint, %action, %version, "rpc call");
        // The URL carries the whole signed query: noise in an error message, so it is left out.
        let transport = |source: reqwest::Error| ClientError::Transport {
            endpoint: self.endpoint.clone(),
            kind: TransportKind::of(&source),
            source: source.without_url(),
        };
        let response = self
            .http
            .post(url)
            .header("x-acs-action", action)
            .header("x-acs-version", version)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?;
        decode_response(&self.endpoint, action, status, &body).map_err(|e| match e {
            ClientError::Api {
                status,
                code,
                message,
                request_id,
                auth_action,
                key: None,
            } => ClientError::Api {
                status,
                code,
                message,
                request_id,
                auth_action,
                key: Some(
                    self.key_source
                        .clone()
                        .unwrap_or_else(|| format!("access key {}", self.access_key_id)),
                ),
            },
            other => other,
        })
    }

    /// Calls an SMC (`2019-06-01`) action.
    pub async fn smc(
        &self,
        action: &str,
        params: &[(String, String)],
    ) -> Result<Value, ClientError> {
        self.call(SMC_VERSION, action, params).await
    }

    /// Calls an ECS (`2014-05-26`) action.
    pub async fn ecs(
        &self,
        action: &str,
        params: &[(String, String)],
    ) -> Result<Value, ClientError> {
        self.call(ECS_VERSION, action, params).await
    }

    /// Calls a RAM (`2015-05-01`) action.
    pub async fn ram(
        &self,
        action: &str,
        params: &[(String, String)],
    ) -> Result<Value, ClientError> {
        self.call(RAM_VERSION, action, params).await
    }

    /// Calls an STS (`2015-04-01`) action.
    pub async fn sts(
        &self,
        action: &str,
        params: &[(String, String)],
    ) -> Result<Value, ClientError> {
        self.call(STS_VERSION, action, params).await
    }
}

fn normalize_endpoint(endpoint: &str) -> Result<String, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = endpoint.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed).map_err(|e| invalid(&e.to_string()))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(invalid("the scheme must be https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or fragment"));
    }
    Ok(trimmed.to_owned())
}

/// Turns an HTTP answer into the response object or the API error it carries.
fn decode_response(
    endpoint: &str,
    action: &str,
    status: u16,
    body: &[u8],
) -> Result<Value, ClientError> {
    let decode = |detail: String| ClientError::Decode {
        endpoint: endpoint.to_owned(),
        action: action.to_owned(),
        status,
        detail,
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        decode(format!("{e}; it starts with {text:?}"))
    })?;
    // SDKs accept both spellings of the envelope's fields (smc-api.md §1.9).
    let field = |upper: &str, lower: &str| {
        value
            .get(upper)
            .or_else(|| value.get(lower))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if status >= 400 {
        let code = field("Code", "code")
            .ok_or_else(|| decode("an error answer without a Code".to_owned()))?;
        return Err(ClientError::Api {
            status,
            code,
            message: field("Message", "message").unwrap_or_default(),
            request_id: field("RequestId", "requestId").unwrap_or_else(|| "unknown".to_owned()),
            auth_action: value
                .get("AccessDeniedDetail")
                .and_then(|d| d.get("AuthAction"))
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
                .map(str::to_owned),
            key: None,
        });
    }
    if !value.is_object() {
        return Err(decode("the answer is not a JSON object".to_owned()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_envelopes_become_api_errors() {
        let body = br#"{"RequestId":"R-1","HostId":"smc","Code":"InvalidJobId.NotFound","Message":"no such job"}"#;
        let err = decode_response("https://h:1", "DescribeReplicationJobs", 404, body)
            .expect_err("a 404 envelope is an error");
        assert_eq!(err.api_code(), Some("InvalidJobId.NotFound"));
        assert_eq!(
            err.to_string(),
            "InvalidJobId.NotFound: no such job (request R-1)"
        );
    }

    #[test]
    fn ram_denials_carry_the_denied_action() {
        let body = br#"{"RequestId":"R-2","Code":"Forbidden.RAM","Message":"denied",
            "AccessDeniedDetail":{"AuthAction":"smc:CreateReplicationJob","NoPermissionType":"ImplicitDeny"}}"#;
        let err = decode_response("https://h:1", "CreateReplicationJob", 403, body)
            .expect_err("a 403 envelope is an error");
        assert!(
            matches!(&err, ClientError::Api { auth_action: Some(a), .. } if a == "smc:CreateReplicationJob"),
            "{err:?}"
        );
        let plain =
            decode_response("e", "A", 403, br#"{"Code":"NoPermission"}"#).expect_err("an error");
        assert!(matches!(
            plain,
            ClientError::Api {
                auth_action: None,
                ..
            }
        ));
    }

    #[test]
    fn non_json_answers_are_decode_errors_naming_the_endpoint() {
        let err = decode_response("https://h:1", "ListAccessTokens", 200, b"<html>hi</html>")
            .expect_err("HTML is not an RPC answer");
        let text = err.to_string();
        assert!(matches!(err, ClientError::Decode { status: 200, .. }));
        assert!(
            text.contains("https://h:1") && text.contains("<html>"),
            "{text}"
        );
    }

    #[test]
    fn success_objects_pass_through() {
        let v = decode_response("e", "A", 200, br#"{"RequestId":"x","JobId":"j-1"}"#)
            .expect("a JSON object is a success");
        assert_eq!(v["JobId"], "j-1");
    }

    fn api_error(code: &str, message: &str, key: Option<&str>) -> ClientError {
        ClientError::Api {
            status: 400,
            code: code.to_owned(),
            message: message.to_owned(),
            request_id: "R-9".to_owned(),
            auth_action: None,
            key: key.map(str::to_owned),
        }
    }

    #[test]
    fn authentication_hints_name_the_key_and_where_it_came_from() {
        let key = Some("access key LTAI1 from profile \"lab\" of /h/.ferry/config.json");
        let hint = api_error("InvalidAccessKeyId.NotFound", "", key).hint();
        assert!(
            hint.starts_with("check the access key")
                && hint.contains("LTAI1")
                && hint.contains("profile \"lab\"")
                && hint.contains("--access-key-id"),
            "{hint}"
        );
        let hint = api_error("SignatureDoesNotMatch", "", key).hint();
        assert!(hint.contains("secret") && hint.contains("LTAI1"), "{hint}");
        let hint = api_error("InvalidTimeStamp.Expired", "", key).hint();
        assert!(
            hint.contains("clock") && hint.contains("ferry doctor"),
            "{hint}"
        );
        let hint = api_error("Forbidden.RAM", "", key).hint();
        assert!(hint.contains("RAM policies of access key LTAI1"), "{hint}");
    }

    #[test]
    fn invalid_status_hints_name_the_command_that_moves_the_job_on() {
        let msg = |status: &str| {
            format!(
                "The specified replication job status: {status} is invalid. This operation can only be \
                 performed in the following status: Ready, Stopped, InError."
            )
        };
        assert_eq!(status_in_message(&msg("Running")), Some("Running"));
        assert_eq!(status_in_message("no status here"), None);
        let hint = api_error("ReplicationJob.InvalidStatus", &msg("Running"), None).hint();
        assert!(
            hint.starts_with("the job is Running") && hint.contains("ferry job stop ID"),
            "{hint}"
        );
        let hint = api_error("ReplicationJob.InvalidStatus", &msg("Waiting"), None).hint();
        assert!(hint.contains("ferry job cutover ID"), "{hint}");
        let hint = api_error("ReplicationJob.InvalidStatus", "odd", None).hint();
        assert!(hint.contains("ferry job show ID"), "{hint}");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_refused_connection() {
        // Bind and drop a listener: nothing listens on that port afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = Client::new(&endpoint, "k", "s", None).expect("client");
        let err = client
            .smc("DescribeSourceServers", &[])
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(
                err,
                ClientError::Transport {
                    kind: TransportKind::Refused,
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("connection refused") && text.contains("check --endpoint"),
            "{text}"
        );
        assert!(err.hint().contains("ferry server"), "{}", err.hint());
    }

    #[test]
    fn endpoints_are_checked_and_trimmed() {
        assert_eq!(
            normalize_endpoint("https://127.0.0.1:8443/").expect("valid"),
            "https://127.0.0.1:8443"
        );
        assert!(normalize_endpoint("ftp://x").is_err());
        assert!(normalize_endpoint("127.0.0.1:8443").is_err());
        assert!(normalize_endpoint("https://h/?a=b").is_err());
    }
}
