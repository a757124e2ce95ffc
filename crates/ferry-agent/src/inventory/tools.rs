//! Running the system tools the inventory relies on (`sfdisk`, `blkid`, `ip`, `uname`).
//!
//! Tools run with `LC_ALL=C` so that their output does not depend on the locale, with no standard input, and
//! their exit status is reported as it is: callers decide whether a failure means "nothing there" (blkid's 2)
//! or a problem worth a log line. A missing tool is its own outcome so that callers can degrade gracefully.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// Why a tool produced no usable output.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ToolError {
    #[error(
        "`{tool}` is not installed or not on PATH: install the package that provides it (util-linux, fdisk, iproute2) for a complete inventory"
    )]
    NotFound { tool: String },
    #[error("`{tool}` could not be started")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{tool}` exited with status {code:?}: {stderr}")]
    Failed {
        tool: String,
        code: Option<i32>,
        stderr: String,
    },
}

impl ToolError {
    /// The exit code of a tool that ran and failed.
    pub(crate) fn exit_code(&self) -> Option<i32> {
        match self {
            ToolError::Failed { code, .. } => *code,
            _ => None,
        }
    }
}

/// Runs `tool args...` and returns its standard output when it exits with status 0.
pub(crate) fn run<I, S>(tool: &str, args: I) -> Result<String, ToolError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = Command::new(tool)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ToolError::NotFound {
                    tool: tool.to_owned(),
                }
            } else {
                ToolError::Spawn {
                    tool: tool.to_owned(),
                    source,
                }
            }
        })?;
    if !output.status.success() {
        return Err(ToolError::Failed {
            tool: tool.to_owned(),
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
