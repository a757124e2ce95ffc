//! `ferry`: Ferry's one binary. `ferry server` runs the control plane in-process; every other
//! subcommand is an operator client of the server's public, Alibaba-Cloud-compatible RPC API (SMC
//! 2019-06-01, ECS 2014-05-26, RAM 2015-05-01, STS 2015-04-01), signing requests exactly like the
//! official SDKs do.
//!
//! Layout: [`cli`] defines the command line; [`config`] finds the endpoint and credentials (options,
//! `~/.ferry/config.json`, the server's `root-credentials.json`); [`client`] signs and sends calls;
//! [`commands`] runs each subcommand; [`view`] and [`output`] read responses and render them;
//! [`server`] launches the control plane.
//!
//! Invariants:
//! * The CLI uses only the public API (no back doors into the server's database or files), so anything
//!   it does an SDK can do too.
//! * Secrets (access key secrets, STS tokens) are never logged, and printed only where the API hands
//!   them out once (a new access key, AssumeRole's credentials, a new activation code), because the
//!   operator must copy them.
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

/// A next step for the person who saw `err`, based on what kind of failure it is (the hints themselves
/// live next to the errors: [`ClientError::hint`], [`commands::doctor::DoctorFailed`]).
pub fn hint_for(err: &anyhow::Error) -> String {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            return e.hint();
        }
        if cause.downcast_ref::<ConfigError>().is_some() {
            return "`ferry configure --help` shows how to save a connection profile; `ferry doctor` checks \
                    the connection"
                .to_owned();
        }
        if let Some(e) = cause.downcast_ref::<commands::doctor::DoctorFailed>() {
            return e.hint();
        }
    }
    "run the command with --help to see its options".to_owned()
}
