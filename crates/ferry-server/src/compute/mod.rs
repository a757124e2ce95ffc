//! Compute: instances (VMs on the local QEMU, crate `ferry-vm`) and images built from stored snapshots —
//! the application layer behind the ECS actions in `rpc::ecs`, and the two background workers that finish
//! their asynchronous steps.
//!
//! - [`instances`]: RunInstances/CreateInstance/Start/Stop/Delete and the instance worker, which moves
//!   instances through `Pending → Starting → Running` and `Stopping → Stopped` and notices guests that
//!   powered off or QEMUs that died.
//! - [`images`]: CreateImage from snapshots (and its build worker), DeleteImage, DeleteSnapshot.
//!
//! Invariants: every step is idempotent and driven by database state, so a restarted server finishes what
//! a killed one started; operations on one instance are serialised by a per-instance lock within this
//! process ([`lock`]), which suffices because only the replica that runs an instance takes its steps
//! (instances are per replica, docs/scale-out.md). A CreateImage build runs under the lease `task:<id>`, so
//! one replica at a time builds it.

pub mod images;
pub mod instances;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::{Notify, OwnedMutexGuard};

use crate::AppState;

/// Starts the compute workers (instance lifecycle, image builds from snapshots).
pub fn spawn(st: Arc<AppState>) {
    tokio::spawn(instances::worker(st.clone()));
    tokio::spawn(images::worker(st));
}

/// The instance driver for this server's data directory (`<data>/instances`).
pub fn driver(st: &AppState) -> ferry_vm::Driver {
    ferry_vm::Driver::new(st.cfg.data_dir.join("instances"))
}

static WAKE: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Wakes the compute workers (there is a new step to take).
pub fn wake() {
    WAKE.notify_waiters();
}

/// Waits until [`wake`] or `secs` have passed.
async fn idle(secs: u64) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(secs), WAKE.notified()).await;
}

type Locks = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;
static LOCKS: LazyLock<Locks> = LazyLock::new(Default::default);

/// Serialises the operations on one resource (instance) within this process.
pub async fn lock(id: &str) -> OwnedMutexGuard<()> {
    let m = {
        let mut map = LOCKS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(id.to_owned()).or_default().clone()
    };
    m.lock_owned().await
}

/// Forgets the lock of a deleted resource.
fn forget_lock(id: &str) {
    let mut map = LOCKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    map.remove(id);
}

/// Bytes → GiB, rounded up (ECS reports disk sizes in whole GiB).
pub fn gib_ceil(bytes: i64) -> i64 {
    (bytes.max(0) as u64).div_ceil(1 << 30) as i64
}
