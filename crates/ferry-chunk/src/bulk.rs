//! The bulk pool: threads at a lower CPU priority for the work that moves a migration's data — checking
//! and writing uploaded chunks, reading them back, writing and verifying images, and the `qemu-img`
//! processes that convert them.
//!
//! Why: in a migration wave, hundreds of agents upload at once and a finished run's image is built right
//! after. That work can take every core for seconds at a time, and on one shared Tokio runtime an API
//! call (a `DescribeSourceServers` from the console or an SDK poller) then waits behind it. Bulk work
//! loses nothing by yielding the CPU for a few milliseconds; an API caller waiting seconds does. The
//! kernel's scheduler does the prioritising: bulk threads run at a higher nice value ([`DEFAULT_NICE`],
//! `ferry server --bulk-nice`), so they take all the CPU that is free and step aside when a request
//! needs it. Child processes started from a bulk thread inherit its nice value.
//!
//! Rule: only self-contained work runs here — closures over files and memory, and child processes. No
//! database or network I/O: a connection opened on this pool's runtime would be driven by its low-priority
//! threads afterwards, wherever it is used from (a priority inversion).
//!
//! If the pool cannot be started (threads refused), work runs on the caller's runtime, as before the pool
//! existed, with a warning.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::runtime::Runtime;
use tokio::task::JoinError;

/// The nice value bulk threads run at unless configured: the scheduler weighs a nice-0 thread about nine
/// times a nice-10 one (1024 against 110). A weight, not a guarantee: on a saturated machine a thread that
/// sleeps and wakes often can still wait behind lower-priority ones (decisions.md §15).
pub const DEFAULT_NICE: i32 = 10;

/// Blocking threads of the pool at most (Tokio's default is 512): its work is CPU- and disk-bound, so
/// more threads than this only add switching.
const MAX_THREADS: usize = 64;

static NICE: AtomicI32 = AtomicI32::new(DEFAULT_NICE);
static POOL: OnceLock<Option<Runtime>> = OnceLock::new();

/// Sets the nice value of the pool's threads (clamped to 0..=19; 0 = the priority of the thread that
/// starts them, normally the process's own). Takes effect if called before the pool's first use, which
/// starts it; returns whether it did.
pub fn set_nice(nice: i32) -> bool {
    if POOL.get().is_some() {
        return false;
    }
    NICE.store(nice.clamp(0, 19), Ordering::Relaxed);
    true
}

/// The nice value the pool's threads run (or will run) at.
pub fn nice() -> i32 {
    NICE.load(Ordering::Relaxed)
}

/// Lowers the calling thread's priority to nice value `nice` (Linux keeps one per thread); a thread
/// already at that value or above is left as it is, so this never raises a priority.
///
/// # Errors
/// What `setpriority(2)` says (for example when a seccomp profile forbids it).
pub fn lower_thread_priority(nice: i32) -> std::io::Result<()> {
    let me = Some(rustix::thread::gettid());
    if rustix::process::getpriority_process(me)? < nice {
        rustix::process::setpriority_process(me, nice.min(19))?;
    }
    Ok(())
}

fn pool() -> Option<&'static Runtime> {
    POOL.get_or_init(|| {
        let nice = nice();
        let built = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(MAX_THREADS)
            .thread_name("ferry-bulk")
            .enable_all()
            .on_thread_start(move || {
                if let Err(e) = lower_thread_priority(nice) {
                    tracing::warn!(error = %e, nice, "bulk thread keeps the normal CPU priority");
                }
            })
            .build();
        match built {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the bulk pool: bulk work shares the API's threads");
                None
            }
        }
    })
    .as_ref()
}

/// Runs the blocking `f` on a bulk thread (like `tokio::task::spawn_blocking`).
///
/// # Errors
/// The `JoinError` if `f` panicked.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JoinError> {
    match pool() {
        Some(rt) => rt.spawn_blocking(f).await,
        None => tokio::task::spawn_blocking(f).await,
    }
}

/// Runs the future `fut` on the pool (for child processes: started from a bulk thread, they inherit its
/// priority). Dropping the returned future aborts `fut`, so a `kill_on_drop` child is still killed.
///
/// # Errors
/// The `JoinError` if `fut` panicked.
pub async fn run<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, JoinError> {
    let handle = match pool() {
        Some(rt) => rt.spawn(fut),
        None => tokio::spawn(fut),
    };
    tokio_util::task::AbortOnDropHandle::new(handle).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(-100)
    }

    #[tokio::test]
    async fn bulk_work_runs_at_a_lower_priority_than_its_caller() {
        let caller = own_nice();
        let in_pool = blocking(own_nice).await.expect("blocking task");
        let in_task = run(async { own_nice() }).await.expect("async task");
        let expected = caller.max(nice());
        assert_eq!(in_pool, expected, "blocking closure on a bulk thread");
        assert_eq!(in_task, expected, "future on a bulk worker");
        assert_eq!(own_nice(), caller, "the caller's thread is untouched");
    }

    #[tokio::test]
    async fn a_child_started_on_the_pool_inherits_its_priority() {
        let caller = own_nice();
        let out = run(async {
            tokio::process::Command::new("sh")
                .args(["-c", "nice"])
                .output()
                .await
        })
        .await
        .expect("task")
        .expect("sh runs");
        let child: i32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("nice prints a number");
        assert_eq!(child, caller.max(nice()));
    }
}
