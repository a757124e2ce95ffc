//! `ferry`: Ferry's one binary. `ferry server` runs the control plane in-process; every other
//! subcommand is an operator client of the server's public, Alibaba-Cloud-compatible RPC API (SMC
//! 2019-06-01, ECS 2014-05-26), signing requests exactly like the official SDKs do.
//!
//! Layout: [`cli`] defines the command line; [`config`] finds the endpoint and credentials (options,
//! `~/.ferry/config.json`, the server's `root-credentials.json`); [`client`] signs and sends calls;
//! [`commands`] runs each subcommand; [`view`] and [`output`] read responses and render them;
//! [`server`] launches the control plane.
//!
//! Invariants:
//! * The CLI uses only the public API (no back doors into the server's database or files), so anything
//!   it does an SDK can do too.
//! * Secrets (access key secrets) are never printed or logged; activation codes are printed once, on
//!   creation, because the operator must copy them.
//! * Errors are returned up to `main`, which prints `error: …` and a hint once and exits with code 1.

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod output;
pub mod server;
pub mod view;

pub use cli::Cli;
pub use client::{Client, ClientError};
pub use commands::{Io, run};
pub use config::{ConfigError, Resolved};

/// A next step for the person who saw `err`, based on what kind of failure it is.
pub fn hint_for(err: &anyhow::Error) -> String {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            return match e {
                ClientError::Api {
                    code, request_id, ..
                } => api_hint(code, request_id),
                ClientError::Transport { .. } => {
                    "start the server with `ferry server`, or pass --endpoint (and --ca-cert) for a remote one"
                        .to_owned()
                }
                ClientError::Decode { .. } | ClientError::InvalidEndpoint { .. } => {
                    "check --endpoint, FERRY_ENDPOINT or the profile's endpoint".to_owned()
                }
                ClientError::InvalidCa(_) | ClientError::Setup(_) => {
                    "pass the server's CA with --ca-cert <data-dir>/tls/ca.pem".to_owned()
                }
            };
        }
        if cause.downcast_ref::<ConfigError>().is_some() {
            return "`ferry configure --help` shows how to save a connection profile".to_owned();
        }
    }
    "run the command with --help to see its options".to_owned()
}

fn api_hint(code: &str, request_id: &str) -> String {
    if code.starts_with("InvalidAccessKeyId")
        || code == "SignatureDoesNotMatch"
        || code == "IncompleteSignature"
    {
        "check the access key: --access-key-id/--access-key-secret, FERRY_ACCESS_KEY_ID/\
         FERRY_ACCESS_KEY_SECRET, the profile in ~/.ferry/config.json, or <data-dir>/root-credentials.json"
            .to_owned()
    } else if code.starts_with("InvalidTimeStamp") {
        "check this machine's clock: requests must be within 15 minutes of the server's".to_owned()
    } else if code.starts_with("Forbidden") || code == "NoPermission" {
        "this access key's RAM policies do not allow the action: use another key or ask an administrator"
            .to_owned()
    } else if code == "InternalError" || code == "ServiceUnavailable" {
        format!("the server's log has the details under request {request_id}")
    } else {
        format!(
            "`ferry call <Action> Key=Value...` shows the API's raw answer; the server log has request {request_id}"
        )
    }
}
