//! Test utilities for Ferry's whole-stack tests: real `ferry server` and `ferry-agent` processes (so that
//! tests can `kill -9` them), an RPC client signed like any SDK, and real disk images with real
//! filesystems built through loop devices; and a load simulator (`sim`) that stands in for thousands of
//! agents with the real agent protocol.
//!
//! Everything listens on loopback; every test gets its own data directories and ports.

pub mod disk;
pub mod lab;
pub mod procstat;
pub mod s3;
pub mod sim;
pub mod stack;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Path of a workspace binary (`ferry`, `ferry-agent`), built by `cargo test --workspace`.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run the tests with `cargo test --workspace` (or `cargo build --workspace` first)",
        p.display()
    );
    p
}

/// Is this process root? Tests that need loop devices and mounts require it.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what` in the message. This waits
/// for a condition the test observes; it never stands in for one.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "timed out after {timeout:?} waiting for {what}{}",
                last_err
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free TCP port on loopback (for servers that must keep their port across a restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}
