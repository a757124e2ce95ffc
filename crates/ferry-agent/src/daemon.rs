//! The agent's life: activation (once), then a loop of heartbeats that reports the inventory and
//! prechecks, picks up replication runs and abandons runs the server stopped.
//!
//! State lives in one directory (`--state-dir`, default `/var/lib/ferry-agent`): `agent.json` (mode
//! 0600) holds the server URL, its pinned CA, the agent's credentials and its disks.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_types::inventory::{DiskSource, Inventory, Precheck};
use ferry_types::protocol::{
    ActivateRequest, ActivateResponse, AgentCredentials, AgentState, HeartbeatRequest,
    HeartbeatResponse, ReplicateTask,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::conn::{CallError, Conn};
use crate::inventory::{self, DiskSpec, InventoryOptions};
use crate::precheck::{self, PrecheckContext};
use crate::replicate;

pub const STATE_FILE: &str = "agent.json";
/// How often the inventory is collected again.
const INVENTORY_REFRESH: Duration = Duration::from_secs(60);

/// A disk the agent replicates, as given at activation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskConfig {
    pub path: PathBuf,
    /// `true` for a raw image file standing in for a block device.
    pub image_file: bool,
}

/// The agent's persistent state (`<state-dir>/agent.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStateFile {
    /// Format version of this file (`docs/formats.md`); 1 today.
    #[serde(default = "state_format_v1")]
    pub version: u32,
    pub server: String,
    pub ca_pem: String,
    pub credentials: AgentCredentials,
    /// Disks in index order (0 = system disk); empty = discover the machine's disks.
    pub disks: Vec<DiskConfig>,
}

/// What can go wrong in the agent's life.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid agent state file ({source}): remove it and activate again")]
    BadState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path} was written by a newer ferry-agent (format {version}): run that version, or remove the file \
         and activate again"
    )]
    NewerState { path: PathBuf, version: u32 },
    #[error("this agent is not activated yet ({0} is missing): run `ferry-agent activate` first")]
    NotActivated(PathBuf),
    #[error("cannot describe this server: {0}")]
    Inventory(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The agent state file's format version.
pub const STATE_FORMAT: u32 = 1;

fn state_format_v1() -> u32 {
    1
}

impl AgentStateFile {
    pub fn load(dir: &Path) -> Result<Self, AgentError> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AgentError::NotActivated(path));
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let state: Self = serde_json::from_slice(&text).map_err(|source| AgentError::BadState {
            path: path.clone(),
            source,
        })?;
        if state.version > STATE_FORMAT {
            return Err(AgentError::NewerState {
                path,
                version: state.version,
            });
        }
        Ok(state)
    }

    /// Saves with mode 0600 (it holds the agent's secret), atomically.
    pub fn save(&self, dir: &Path) -> Result<(), AgentError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(STATE_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|source| AgentError::BadState {
            path: path.clone(),
            source,
        })?;
        ferry_chunk::durable_write_secret(&path, &json).map_err(io_err(&path))
    }

    fn inventory_options(&self) -> InventoryOptions {
        InventoryOptions {
            disks: specs(&self.disks),
            ..InventoryOptions::default()
        }
    }
}

fn specs(disks: &[DiskConfig]) -> Vec<DiskSpec> {
    disks
        .iter()
        .map(|d| DiskSpec {
            path: d.path.clone(),
            kind: if d.image_file {
                DiskSource::ImageFile
            } else {
                DiskSource::BlockDevice
            },
        })
        .collect()
}

fn collect_inventory(opts: &InventoryOptions) -> Result<Inventory, AgentError> {
    let mut inv = inventory::collect(opts).map_err(|e| AgentError::Inventory(e.to_string()))?;
    inv.agent_version = env!("CARGO_PKG_VERSION").to_owned();
    Ok(inv)
}

fn system_time(unix: Option<i64>) -> Option<SystemTime> {
    unix.and_then(|s| u64::try_from(s).ok())
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Registers this server with an activation code and saves the credentials. Nothing is saved unless the
/// server accepted the code.
pub async fn activate(
    state_dir: &Path,
    server: &str,
    code: &str,
    fingerprint: &str,
    disks: Vec<DiskConfig>,
) -> Result<AgentStateFile, AgentError> {
    let ca_pem = Conn::fetch_pinned_ca(server, fingerprint).await?;
    let conn = Conn::new(server, &ca_pem, None)?;
    let opts = InventoryOptions {
        disks: specs(&disks),
        ..InventoryOptions::default()
    };
    let inventory = collect_inventory(&opts)?;
    let prechecks = precheck::run(
        &inventory,
        &PrecheckContext {
            server_time: None,
            server_reachable: Ok(()),
        },
    );
    let req = ActivateRequest {
        token_id: None,
        code: code.to_owned(),
        inventory,
        prechecks,
    };
    let resp: ActivateResponse = conn.post("/activate", &req).await?;
    let state = AgentStateFile {
        version: STATE_FORMAT,
        server: server.to_owned(),
        ca_pem,
        credentials: resp.credentials,
        disks,
    };
    state.save(state_dir)?;
    Ok(state)
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(state_dir: &Path, shutdown: CancellationToken) -> Result<(), AgentError> {
    let state = AgentStateFile::load(state_dir)?;
    let conn = Conn::new(&state.server, &state.ca_pem, Some(&state.credentials))?;
    let opts = state.inventory_options();
    let disk_paths: Vec<PathBuf> = state.disks.iter().map(|d| d.path.clone()).collect();
    let mut last_sent: Option<(Inventory, Vec<Precheck>)> = None;
    let mut server_time = None;
    let mut reachable: Result<(), String> = Ok(());
    let mut current: Option<(
        ReplicateTask,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    )> = None;
    let mut backoff = Duration::from_secs(1);
    let mut collected: Option<(Inventory, std::time::Instant)> = None;
    tracing::info!(source = %state.credentials.source_id, server = %state.server, "ferry-agent running");

    loop {
        if let Some((_, _, handle)) = &current {
            if handle.is_finished() {
                current = None;
            }
        }
        // Re-describe the server now and then, not at every heartbeat: it runs sfdisk, blkid and ip.
        if collected
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() > INVENTORY_REFRESH)
        {
            let o = opts.clone();
            let inv = tokio::task::spawn_blocking(move || collect_inventory(&o))
                .await
                .map_err(|e| AgentError::Inventory(e.to_string()))??;
            collected = Some((inv, std::time::Instant::now()));
        }
        let inventory = collected
            .as_ref()
            .map(|(i, _)| i.clone())
            .ok_or_else(|| AgentError::Inventory("no inventory".into()))?;
        let prechecks = precheck::run(
            &inventory,
            &PrecheckContext {
                server_time: system_time(server_time),
                server_reachable: reachable.clone(),
            },
        );
        let changed = last_sent.as_ref() != Some(&(inventory.clone(), prechecks.clone()));
        let req = HeartbeatRequest {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            state: match &current {
                Some((t, _, _)) => AgentState::Replicating {
                    run_id: t.run_id.clone(),
                },
                None => AgentState::Idle,
            },
            inventory: changed.then(|| inventory.clone()),
            prechecks: changed.then(|| prechecks.clone()),
            wait: true,
        };
        let asked = std::time::Instant::now();
        let interval;
        match conn
            .post_timed::<_, HeartbeatResponse>("/heartbeat", &req)
            .await
        {
            Ok((resp, time)) => {
                server_time = time;
                reachable = Ok(());
                backoff = Duration::from_secs(1);
                // The server held the answer while it had nothing new; beat again once an interval has passed.
                interval = Duration::from_secs(u64::from(resp.heartbeat_interval_secs.max(1)))
                    .saturating_sub(asked.elapsed());
                if changed {
                    last_sent = Some((inventory, prechecks));
                }
                current = steer(current, resp.task, &conn, &disk_paths);
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                reachable = Err(e.to_string());
                if let CallError::Api { status: 401, .. } = e {
                    return Err(e.into());
                }
                interval = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => {
                if let Some((_, cancel, handle)) = current.take() {
                    cancel.cancel();
                    let _ = handle.await;
                }
                return Ok(());
            }
        }
    }
}

type Current = Option<(
    ReplicateTask,
    CancellationToken,
    tokio::task::JoinHandle<()>,
)>;

/// Starts the run the server wants, and abandons one it no longer wants.
fn steer(
    current: Current,
    wanted: Option<ReplicateTask>,
    conn: &Conn,
    disks: &[PathBuf],
) -> Current {
    match (current, wanted) {
        (Some(cur), Some(w)) if cur.0.run_id == w.run_id => Some(cur),
        (cur, wanted) => {
            if let Some((task, cancel, _)) = cur {
                tracing::info!(run = %task.run_id, "run stopped by the server");
                cancel.cancel();
            }
            wanted.map(|task| {
                let cancel = CancellationToken::new();
                let (conn, disks, t, c) =
                    (conn.clone(), disks.to_vec(), task.clone(), cancel.clone());
                let handle = tokio::spawn(async move {
                    let run = t.run_id.clone();
                    tracing::info!(%run, disks = ?t.disks, "replication run started");
                    match replicate::run_task(conn, t, disks, c).await {
                        Ok(p) => tracing::info!(
                            %run, scanned = p.bytes_scanned, sent = p.bytes_sent, ms = p.elapsed_ms,
                            "replication run finished"
                        ),
                        Err(replicate::ReplicateError::Stopped) => {
                            tracing::info!(%run, "replication run stopped")
                        }
                        Err(e) => tracing::error!(%run, error = %e, "replication run failed"),
                    }
                });
                (task, cancel, handle)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AgentStateFile {
        AgentStateFile {
            version: STATE_FORMAT,
            server: "https://127.0.0.1:8443".into(),
            ca_pem: "pem".into(),
            credentials: AgentCredentials {
                source_id: ferry_types::ids::SourceId::generate(),
                key_id: "ak-1".into(),
                secret: "s3cret".into(),
            },
            disks: vec![DiskConfig {
                path: "/dev/sda".into(),
                image_file: false,
            }],
        }
    }

    #[test]
    fn state_file_round_trips_with_mode_0600_and_refuses_newer_formats() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        state().save(dir.path()).expect("save");
        let path = dir.path().join(STATE_FILE);
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = AgentStateFile::load(dir.path()).expect("load");
        assert_eq!(back.credentials.secret, "s3cret");

        let mut newer = state();
        newer.version = STATE_FORMAT + 1;
        newer.save(dir.path()).expect("save");
        let err = AgentStateFile::load(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("newer ferry-agent"), "{err}");

        std::fs::remove_file(&path).expect("rm");
        assert!(matches!(
            AgentStateFile::load(dir.path()),
            Err(AgentError::NotActivated(_))
        ));
    }
}
