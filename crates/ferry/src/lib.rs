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

/// A next step for the person who saw `err`, based on what kind of failure it is.
pub fn hint_for(err: &anyhow::Error) -> String {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            return match e {
                ClientError::Api {
                    code,
                    request_id,
                    auth_action,
                    ..
                } => match resource_hint(code, auth_action.as_deref()) {
                    Some(hint) => hint,
                    None => api_hint(code, request_id),
                },
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

/// Hints for the codes of RAM, STS and the resource actions: what to run next.
fn resource_hint(code: &str, auth_action: Option<&str>) -> Option<String> {
    let hint = match code {
        "Forbidden.RAM" | "NoPermission" | "Forbidden.Unauthorized" | "Forbidden.SubUser" => {
            match auth_action {
                Some(action) => format!(
                    "ask an administrator to attach a policy allowing {action} to this user or role                      (`ferry ram policy attach NAME --user USER`), or use another access key"
                ),
                None => return None,
            }
        }
        "InvalidSecurityToken.Expired" => {
            "the temporary credentials expired: get new ones with `ferry ram assume-role --role-arn ARN              --session NAME --save-profile PROFILE`"
                .into()
        }
        "InvalidSecurityToken.Malformed" | "InvalidSecurityToken.MismatchWithAccessKey" => {
            "a temporary (STS.) access key needs its own security token: use the profile `ferry ram              assume-role --save-profile` wrote, or pass --security-token"
                .into()
        }
        "InvalidAccessKeyId.Inactive" => {
            "this access key is disabled: enable it with `ferry ram key enable ID --user USER` using              another key, or use another key"
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
        "ReplicationJob.InvalidStatus" | "ReplicationJob.InvalidBusinessStatus" => {
            "`ferry job show ID` shows the job's status; the message says which statuses the action needs"
                .into()
        }
        "SourceServerState.Invalid" => {
            "`ferry source show ID` shows the source's state; its agent must be online and reporting".into()
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
            "`ferry instance show ID` shows its status: start needs Stopped, stop needs Running, delete              needs Stopped or --force"
                .into()
        }
        "InvalidImageId.NotFound" => "list the images with `ferry image list`".into(),
        "InvalidInstanceId.NotFound" => "list the instances with `ferry instance list`".into(),
        "InvalidSnapshotId.NotFound" => "list the snapshots with `ferry snapshot list`".into(),
        "InvalidImageName.Duplicated" => {
            "an image has that name already: choose another --name".into()
        }
        "InvalidInstanceType.ValueNotSupported" => {
            "leave --type out for the server's default, or use a type the server lists in its              documentation (docs/instances.md)"
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
