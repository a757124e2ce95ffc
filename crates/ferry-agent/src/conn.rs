//! The agent's connection to its server: HTTPS with the server's CA pinned by fingerprint, agent protocol
//! v1 (`ferry_types::protocol`). Outbound only; `HTTPS_PROXY` is honoured.

use std::time::Duration;

use bytes::Bytes;
use ferry_types::protocol::{self, AgentApiError, AgentCredentials};
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A failed call to the server.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(
        "cannot reach the Ferry server at {server}: {source}. Check the URL, the network path and any HTTPS_PROXY"
    )]
    Transport {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the server answered {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error(
        "the server's answer could not be read: {0}. Are agent and server versions compatible?"
    )]
    Decode(String),
    #[error(
        "the server's CA fingerprint is {actual}, not the expected {expected}: you may be talking to another \
         server (or a man in the middle). Copy the activation command again from the server"
    )]
    FingerprintMismatch { expected: String, actual: String },
}

impl CallError {
    /// Worth retrying later: the network, a restarting server, a full disk on the server.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Api { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A connection to one server.
#[derive(Clone)]
pub struct Conn {
    http: reqwest::Client,
    server: String,
    bearer: Option<String>,
}

/// How long a request may take before it counts as lost: longer than any long poll.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the connection is kept between requests. Counted from a request's start, not its end, on an
/// HTTP/2 connection (the client pool's clock): it must outlast a long poll plus the sleep to the next
/// beat, or every heartbeat at the default 30 s cadence opens a new TCP + TLS connection (measured: one
/// TLS handshake per beat with the 30 s this used to be).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const _: () = assert!(
    REQUEST_TIMEOUT.as_secs() > protocol::MAX_LONG_POLL_SECS as u64
        && POOL_IDLE_TIMEOUT.as_secs() > REQUEST_TIMEOUT.as_secs()
);

fn builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .user_agent(concat!("ferry-agent/", env!("CARGO_PKG_VERSION")))
}

impl Conn {
    /// Fetches the server's CA certificate and checks it against the fingerprint the operator gave
    /// (`sha256:<hex>`); returns the PEM to pin. The first connection cannot verify the server yet, so the
    /// fingerprint is what makes it safe.
    pub async fn fetch_pinned_ca(server: &str, fingerprint: &str) -> Result<String, CallError> {
        let http = builder()
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| CallError::Decode(e.to_string()))?;
        let url = format!(
            "{}{}/ca.pem",
            server.trim_end_matches('/'),
            protocol::PREFIX
        );
        let resp = http
            .get(&url)
            .send()
            .await
            .map_err(|source| CallError::Transport {
                server: server.to_owned(),
                source,
            })?;
        let pem = resp.text().await.map_err(|source| CallError::Transport {
            server: server.to_owned(),
            source,
        })?;
        let actual =
            protocol::ca_fingerprint(&pem).unwrap_or_else(|| "none (no certificate)".to_owned());
        let expected = fingerprint.trim().to_lowercase();
        let expected = if expected.starts_with("sha256:") {
            expected
        } else {
            format!("sha256:{}", expected.replace(':', ""))
        };
        if actual != expected {
            return Err(CallError::FingerprintMismatch { expected, actual });
        }
        Ok(pem)
    }

    /// A connection that trusts only `ca_pem`.
    pub fn new(
        server: &str,
        ca_pem: &str,
        creds: Option<&AgentCredentials>,
    ) -> Result<Self, CallError> {
        let cert = reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(|e| {
            CallError::Decode(format!("the pinned CA certificate is unreadable: {e}"))
        })?;
        let http = builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .build()
            .map_err(|e| CallError::Decode(e.to_string()))?;
        Ok(Self {
            http,
            server: server.trim_end_matches('/').to_owned(),
            bearer: creds.map(AgentCredentials::bearer),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}{}", self.server, protocol::PREFIX, path)
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.bearer {
            Some(b) => req.header(reqwest::header::AUTHORIZATION, b),
            None => req,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CallError> {
        let resp = self
            .auth(req)
            .send()
            .await
            .map_err(|source| CallError::Transport {
                server: self.server.clone(),
                source,
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        Err(match serde_json::from_slice::<AgentApiError>(&body) {
            Ok(e) => CallError::Api {
                status,
                code: e.code,
                message: e.message,
            },
            Err(_) => CallError::Api {
                status,
                code: "Unknown".to_owned(),
                message: String::from_utf8_lossy(&body).chars().take(300).collect(),
            },
        })
    }

    async fn decode<R: DeserializeOwned>(resp: reqwest::Response) -> Result<R, CallError> {
        let body = resp
            .bytes()
            .await
            .map_err(|e| CallError::Decode(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| CallError::Decode(e.to_string()))
    }

    /// POST a JSON body, read a JSON answer.
    pub async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, CallError> {
        let resp = self.send(self.http.post(self.url(path)).json(body)).await?;
        Self::decode(resp).await
    }

    /// POST a JSON body, also returning the server's clock from the answer (for the clock-skew check).
    pub async fn post_timed<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(R, Option<i64>), CallError> {
        let resp = self.send(self.http.post(self.url(path)).json(body)).await?;
        let time = resp
            .headers()
            .get(protocol::SERVER_TIME_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok((Self::decode(resp).await?, time))
    }

    /// PUT raw bytes, read a JSON answer.
    pub async fn put<R: DeserializeOwned>(&self, path: &str, body: Bytes) -> Result<R, CallError> {
        let resp = self
            .send(
                self.http
                    .put(self.url(path))
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(body),
            )
            .await?;
        Self::decode(resp).await
    }

    /// GET raw bytes; `None` on 404.
    pub async fn get_bytes(&self, path: &str) -> Result<Option<Bytes>, CallError> {
        match self.send(self.http.get(self.url(path))).await {
            Ok(resp) => resp
                .bytes()
                .await
                .map(Some)
                .map_err(|e| CallError::Decode(e.to_string())),
            Err(CallError::Api { status, .. }) if status == StatusCode::NOT_FOUND.as_u16() => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
