//! The agent protocol, version 1: what `ferry-agent` and `ferry server` say to each other over HTTPS under
//! `/agent/v1/…`. `docs/agent-protocol.md` describes the exchange; this module is its single source of truth
//! for both sides.
//!
//! Invariants:
//! - Every request except `GET ca.pem` and `POST activate` carries the agent's credentials
//!   (`Authorization: Bearer <key_id>.<secret>`), which are scoped to one source server.
//! - Chunk uploads and index commits are idempotent: an agent that retries after a crash or a dropped
//!   connection never damages what is stored.
//! - A new field is optional (`#[serde(default)]`); anything else is a new protocol version.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{AccessTokenId, JobId, RunId, SnapshotId, SourceId};
use crate::inventory::{Inventory, Precheck};

/// The protocol version in every path (`/agent/v1/…`).
pub const VERSION: &str = "v1";
/// Path prefix of the agent API.
pub const PREFIX: &str = "/agent/v1";
/// Header carrying the server's wall clock (unix seconds) on every agent response, for the clock-skew check.
pub const SERVER_TIME_HEADER: &str = "x-ferry-server-time";
/// The longest a server may hold a heartbeat's long poll (`ferry server --long-poll`), in seconds. Agents
/// give every request more time than this before they call it lost, and keep an idle connection longer.
pub const MAX_LONG_POLL_SECS: u32 = 100;

/// `POST /agent/v1/activate`: register a source server with an activation code.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ActivateRequest {
    /// The activation code's ID (`at-…`); optional, the code alone identifies it.
    #[serde(default)]
    pub token_id: Option<AccessTokenId>,
    /// The activation code's secret.
    pub code: String,
    pub inventory: Inventory,
    #[serde(default)]
    pub prechecks: Vec<Precheck>,
}

/// Credentials an activated agent uses for every later call. Scoped to `source_id` only.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
pub struct AgentCredentials {
    pub source_id: SourceId,
    pub key_id: String,
    pub secret: String,
}

impl std::fmt::Debug for AgentCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, even in debug logs.
        f.debug_struct("AgentCredentials")
            .field("source_id", &self.source_id)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl AgentCredentials {
    /// The `Authorization` header value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}.{}", self.key_id, self.secret)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ActivateResponse {
    pub credentials: AgentCredentials,
    pub heartbeat_interval_secs: u32,
}

/// What the agent is doing, as it reports in each heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AgentState {
    Idle,
    Replicating { run_id: RunId },
}

/// `POST /agent/v1/heartbeat`: I am alive; here is what changed; is there work for me?
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HeartbeatRequest {
    pub agent_version: String,
    pub state: AgentState,
    /// Sent when it changed (and on the first heartbeat after a start).
    #[serde(default)]
    pub inventory: Option<Inventory>,
    #[serde(default)]
    pub prechecks: Option<Vec<Precheck>>,
    /// Long poll: the server may hold the answer while it has nothing new to say (no new run, no stop), for
    /// up to one heartbeat interval and never more than its `--long-poll` (100 s at most), so a started job
    /// is picked up at once instead of at the next beat.
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HeartbeatResponse {
    pub heartbeat_interval_secs: u32,
    /// The run this agent should be working on now, if any. A run the agent is working on that is no longer
    /// listed here was stopped: the agent abandons it (everything already stored stays stored).
    #[serde(default)]
    pub task: Option<ReplicateTask>,
}

/// One replication run: copy these disks into new snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReplicateTask {
    pub run_id: RunId,
    pub job_id: JobId,
    /// Disk indexes (as in the inventory) to copy; 0 is the system disk.
    pub disks: Vec<u32>,
    pub chunk_size: u32,
    /// Bytes per second on the wire; `None` = unlimited.
    #[serde(default)]
    pub bandwidth_limit_bps: Option<u64>,
    /// zstd level; `None` = the agent chooses by the link's speed; 0 = no compression.
    #[serde(default)]
    pub compress_level: Option<i32>,
    /// Disks already committed in this run (a resumed run skips them).
    #[serde(default)]
    pub committed_disks: Vec<u32>,
    /// SMC's `checksum` replication parameter: after a disk's chunks are uploaded and before its index is
    /// committed, the agent reads the whole disk a second time and compares every chunk's digest with the
    /// first read. A difference means the source changed while it was read (a live, unquiesced disk), so
    /// the snapshot would not be one point in time: the run fails (`Disk.Unstable`) instead. Absent (older
    /// servers) = `false`.
    #[serde(default)]
    pub checksum: bool,
    /// The figures recorded before this run was interrupted, if it is resumed: bytes sent and uploaded
    /// carry on from them.
    #[serde(default)]
    pub previous: Option<RunProgress>,
    /// This run is a cutover's final sync: before reading any disk, the agent runs the executables its
    /// owner installed in `/etc/ferry-agent/hooks/pre-cutover.d/` (sorted by name, 300 s each); a failing
    /// hook fails the run (`Hook.Failed`) and nothing is copied. The server never sends commands: only hooks
    /// the source's owner installed run. Absent (older servers) = `false`; older agents ignore it.
    #[serde(default)]
    pub pre_cutover_hooks: bool,
}

/// `POST /agent/v1/runs/{run}/missing`: which of these chunks does the server not have yet?
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MissingRequest {
    /// BLAKE3 digests, lower-case hex.
    pub digests: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MissingResponse {
    /// Positions in the request's `digests` that the server lacks.
    pub missing: Vec<u32>,
}

/// Answer to `PUT /agent/v1/runs/{run}/chunks/{digest}` (body: a chunk blob, `docs/formats.md`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChunkStored {
    /// `false` when the chunk was already stored (an idempotent retry).
    pub stored: bool,
}

/// Answer to `PUT /agent/v1/runs/{run}/disks/{disk}/index` (body: a disk index, `docs/formats.md`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotCommitted {
    pub snapshot_id: SnapshotId,
    /// Root digest of the committed index, lower-case hex.
    pub root_digest: String,
}

/// `POST /agent/v1/runs/{run}/progress`: the run's figures so far (whole run, all disks).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunProgress {
    /// Logical size of all disks of the run.
    pub bytes_total: u64,
    /// Bytes read and hashed so far.
    pub bytes_scanned: u64,
    /// Bytes put on the wire (compressed chunk blobs).
    pub bytes_sent: u64,
    /// Logical bytes of chunks actually uploaded.
    pub bytes_uploaded_logical: u64,
    /// Logical bytes skipped because they were all zeros.
    pub bytes_zero: u64,
    /// Logical bytes skipped because they equal the previous snapshot (incremental runs).
    pub bytes_unchanged: u64,
    /// Logical bytes skipped because the server already had the chunk (deduplication).
    pub bytes_dedup: u64,
    /// Bytes scanned per second, smoothed.
    pub throughput_bps: u64,
    pub eta_secs: Option<u64>,
    pub elapsed_ms: u64,
    /// Why the run is paused, if it is (for example: the server is out of space).
    #[serde(default)]
    pub paused_reason: Option<String>,
}

/// `POST /agent/v1/runs/{run}/finish`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RunFinish {
    /// Every disk of the task was committed.
    Succeeded { progress: RunProgress },
    /// The agent cannot complete the run (for example an unreadable disk); the job goes to InError.
    Failed { code: String, message: String },
}

/// The body of every agent-API error response.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AgentApiError {
    /// Stable, machine-readable: `Unauthorized`, `RunNotActive`, `ChunkRejected`, `MissingChunks`, `NoSpace`,
    /// `ActivationCode.Invalid`, `ActivationCode.Expired`, …
    pub code: String,
    /// What happened and what to do next.
    pub message: String,
}

/// The CA fingerprint agents pin: `sha256:<hex>` of the DER encoding of the first certificate in `pem`.
/// `None` if `pem` holds no certificate.
pub fn ca_fingerprint(pem: &str) -> Option<String> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        return None;
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    Some(format!("sha256:{}", hex_lower(&sha2::Sha256::digest(der))))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

mod openapi;
pub use openapi::openapi;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_needs_a_certificate() {
        assert_eq!(ca_fingerprint("no pem here"), None);
        // "hello" as the DER body: the digest is of the decoded bytes, not of the text.
        let pem = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        assert_eq!(
            ca_fingerprint(pem).as_deref(),
            Some("sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
    }
}
