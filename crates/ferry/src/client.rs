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
    },
    /// No answer: connection refused, TLS failure, timeout.
    #[error(
        "no answer from {endpoint}: is the server running at {endpoint}? check --endpoint \
         (and --ca-cert if the cause is a certificate)"
    )]
    Transport {
        endpoint: String,
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
}

/// A signed RPC client for one endpoint and one access key.
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    access_key_id: String,
    access_key_secret: String,
    /// The STS token that goes with a temporary access key (`STS.…`), sent as `SecurityToken`.
    security_token: Option<String>,
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
        })
    }

    /// This client, signing with the STS security token that goes with its temporary access key
    /// (`None`: a permanent key). The token travels as the `SecurityToken` query parameter, which the
    /// v1 signature covers, exactly as the v1 SDKs send it.
    pub fn with_security_token(mut self, token: Option<String>) -> Client {
        self.security_token = token.filter(|t| !t.is_empty());
        self
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
        decode_response(&self.endpoint, action, status, &body)
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
