//! Leased background work: how replicas sharing one database run each unit of background work on one
//! replica at a time (docs/scale-out.md), on top of the data layer's leases (`ferry_db::Db::lease_acquire`).
//!
//! - [`run_leased`] runs one unit (an image build, an export, a qcow2 derivation) under its lease: it is
//!   skipped while another replica holds the lease, the lease is renewed every third of its TTL while the work
//!   runs, and the work is cancelled (dropped at its next await) as soon as the lease is lost, so a replica
//!   that stalled past its lease never finishes work another replica has taken over.
//! - [`Singleton`] keeps a long-lived lease across the ticks of a loop that one replica at a time should run
//!   (the scheduler, the offline detector).
//!
//! Invariants: the work under a lease stays idempotent (a taken-over unit starts again from durable state);
//! a holder name is unique to a process (`<replica id>#<random>`), so a restarted replica never mistakes its
//! dead predecessor's lease for its own.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_db::Lease;
use rand::Rng as _;

use crate::{AppState, ServerError};

/// The file holding a data directory's replica ID.
pub const REPLICA_ID_FILE: &str = "replica-id";

/// This data directory's replica ID (`r-` and 12 hex digits), created on first start and kept after.
///
/// # Errors
/// `ServerError::Io` when the file cannot be read or written; `ServerError::Config` when it was edited into
/// something that is not a replica ID.
pub fn replica_id(data_dir: &Path) -> Result<String, ServerError> {
    let path = data_dir.join(REPLICA_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            let valid = id.len() > 2
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                return Err(ServerError::Config(format!(
                    "{} holds {id:?}, not a replica ID: delete the file to get a new one",
                    path.display()
                )));
            }
            Ok(id.to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = format!(
                "r-{:012x}",
                rand::thread_rng().r#gen::<u64>() & 0xffff_ffff_ffff
            );
            ferry_chunk::durable_write(&path, format!("{id}\n").as_bytes())
                .map_err(|e| ServerError::io(&path, e))?;
            Ok(id)
        }
        Err(e) => Err(ServerError::io(&path, e)),
    }
}

/// The lease holder name of this process of `replica_id`.
pub fn holder_name(replica_id: &str) -> String {
    format!("{replica_id}#{:08x}", rand::thread_rng().r#gen::<u32>())
}

/// What became of a unit of leased work.
#[derive(Debug)]
pub enum Leased<T> {
    /// Another replica holds the lease (or the database could not be asked): nothing was run.
    Busy,
    /// The lease was lost while the work ran; the work was stopped and another replica carries on.
    Lost,
    /// The work ran to its end under the lease.
    Done(T),
}

fn ttl(st: &AppState) -> i64 {
    i64::from(st.cfg.lease_ttl_secs)
}

fn renew_every(st: &AppState) -> Duration {
    Duration::from_secs(u64::from(st.cfg.lease_ttl_secs / 3).max(1))
}

/// Takes the lease `name` for this process, logging a takeover. `None` when it is held elsewhere.
pub async fn acquire(st: &AppState, name: &str) -> Option<Lease> {
    match st.db.lease_acquire(name, &st.lease_holder, ttl(st)).await {
        Ok(Some(lease)) => {
            if let Some(prev) = &lease.taken_over_from {
                tracing::warn!(lease = name, from = %prev, fencing = lease.fencing, "took over the expired lease of another process");
            }
            Some(lease)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(lease = name, error = %e, "cannot take a lease; will retry");
            None
        }
    }
}

/// Runs `work` under the lease `name`. `still_to_do` is asked once the lease is held: the previous holder
/// may have finished the work between our look and our acquisition, and then nothing runs.
pub async fn run_leased<T, C, W>(st: &AppState, name: &str, still_to_do: C, work: W) -> Leased<T>
where
    C: Future<Output = bool>,
    W: Future<Output = T>,
{
    let Some(lease) = acquire(st, name).await else {
        return Leased::Busy;
    };
    if !still_to_do.await {
        release(st, &lease).await;
        return Leased::Busy;
    }
    if let Err(e) = st.db.lease_note_work(&lease).await {
        tracing::warn!(lease = name, error = %e, "cannot record the start of leased work");
    }
    let outcome = tokio::select! {
        out = work => Leased::Done(out),
        () = keep(st, &lease) => Leased::Lost,
    };
    match outcome {
        Leased::Lost => {
            tracing::warn!(
                lease = name,
                "lease lost: work stopped; another replica continues it"
            );
        }
        _ => release(st, &lease).await,
    }
    outcome
}

/// Renews `lease` until it is lost, then returns. A renewal that fails for a database error is retried; the
/// lease counts as lost once no renewal has succeeded for a whole TTL (another replica may have it by then).
async fn keep(st: &AppState, lease: &Lease) {
    let mut last_ok = Instant::now();
    let ttl_dur = Duration::from_secs(u64::from(st.cfg.lease_ttl_secs));
    loop {
        tokio::time::sleep(renew_every(st)).await;
        match st.db.lease_renew(lease, ttl(st)).await {
            Ok(true) => last_ok = Instant::now(),
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(lease = %lease.name, error = %e, "cannot renew a lease; retrying");
                if last_ok.elapsed() >= ttl_dur {
                    return;
                }
            }
        }
    }
}

async fn release(st: &AppState, lease: &Lease) {
    if let Err(e) = st.db.lease_release(lease).await {
        // It expires on its own after the TTL.
        tracing::warn!(lease = %lease.name, error = %e, "cannot release a lease");
    }
}

/// A lease kept across the iterations of a loop that one replica at a time runs.
pub struct Singleton {
    name: &'static str,
    lease: Option<(Lease, Instant)>,
}

impl Singleton {
    pub fn new(name: &'static str) -> Self {
        Self { name, lease: None }
    }

    /// `true` when this process holds the lease now (renewing or taking it as needed).
    pub async fn hold(&mut self, st: &AppState) -> bool {
        if let Some((lease, renewed)) = &self.lease {
            if renewed.elapsed() < renew_every(st) {
                return true;
            }
            match st.db.lease_renew(lease, ttl(st)).await {
                Ok(true) => {
                    self.lease = Some((lease.clone(), Instant::now()));
                    return true;
                }
                Ok(false) => {
                    tracing::warn!(lease = self.name, "lease lost to another replica");
                    self.lease = None;
                }
                Err(e) => {
                    tracing::warn!(lease = self.name, error = %e, "cannot renew a lease");
                    // Not renewed for a TTL: another replica may hold it now, so stop acting as holder.
                    if renewed.elapsed() >= Duration::from_secs(u64::from(st.cfg.lease_ttl_secs)) {
                        self.lease = None;
                    }
                    return self.lease.is_some();
                }
            }
        }
        if let Some(lease) = acquire(st, self.name).await {
            tracing::info!(
                lease = self.name,
                fencing = lease.fencing,
                "this replica runs it now"
            );
            self.lease = Some((lease, Instant::now()));
        }
        self.lease.is_some()
    }
}
