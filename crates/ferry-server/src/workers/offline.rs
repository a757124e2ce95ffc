//! Agent liveness: flushing this replica's heartbeats to the database, and detecting agents gone silent.
//!
//! Heartbeats are noted in memory by the agent API (`agent_api::AgentHub`) and written here in one
//! transaction every [`flush_period`] (at most 5 s, and never longer than half a heartbeat interval), so ten
//! thousand agents cost a few transactions per minute instead of one synchronous commit per beat. Every
//! replica flushes the beats it received; the stored `heartbeat_at` therefore lags a beat by at most one
//! flush period, which keeps it well inside the three intervals after which a source counts as offline.
//! A heartbeat that carries an inventory or prechecks, or that brings an `Unavailable` source back, is
//! written at once by the agent API. A crash loses at most one flush period of beats: the agents beat again
//! within an interval.
//!
//! The offline detector (lease `offline-detector`, one replica at a time) marks a source `Unavailable`
//! (`SourceServer.Offline`) when its agent was silent for three heartbeat intervals. It reads only the
//! sources whose stored heartbeat is older than that cut-off (an indexed query, migration 0011), skips those
//! with a newer beat still in this replica's memory, and marks each with a statement guarded by the same
//! cut-off, so a beat flushed meanwhile by another replica wins. The next heartbeat brings a source back.
//! Flush and detection run one after the other in one task, so this replica's own unflushed beats are never
//! overlooked.

use std::sync::Arc;
use std::time::Duration;

use ferry_db::now;

use super::lease;
use crate::AppState;

/// The longest time a heartbeat stays in memory before it is written.
const MAX_FLUSH_SECS: u64 = 5;

/// How often this replica writes the heartbeats it received: every [`MAX_FLUSH_SECS`], or every half
/// heartbeat interval when that is shorter, so that the stored time stays well inside the three intervals
/// after which a source is offline (and a job start refuses it) even with 1 s intervals.
pub fn flush_period(heartbeat_interval_secs: u32) -> Duration {
    Duration::from_millis(u64::from(heartbeat_interval_secs) * 500).clamp(
        Duration::from_millis(250),
        Duration::from_secs(MAX_FLUSH_SECS),
    )
}

/// Runs for the life of the server: flushes heartbeats every flush period and, while this replica holds
/// the `offline-detector` lease, looks for silent agents every `min(interval, 10 s)`.
pub async fn run(st: Arc<AppState>) {
    let interval = st.cfg.heartbeat_interval_secs;
    let detect_every = Duration::from_secs(u64::from(interval).clamp(1, 10));
    let mut ticker = tokio::time::interval(flush_period(interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease = lease::Singleton::new("offline-detector");
    let mut last_detect: Option<tokio::time::Instant> = None;
    loop {
        ticker.tick().await;
        flush(&st).await;
        // Held (renewed) at every tick, so that a short heartbeat interval never lets the lease lapse.
        if lease.hold(&st).await && last_detect.is_none_or(|t| t.elapsed() >= detect_every) {
            last_detect = Some(tokio::time::Instant::now());
            detect(&st).await;
        }
    }
}

/// Writes the heartbeats noted since the last flush; on failure they are kept for the next one.
pub async fn flush(st: &AppState) {
    let beats = st.agents.take_beats();
    if beats.is_empty() {
        return;
    }
    if let Err(e) = st.db.source_heartbeats_flush(&beats).await {
        tracing::warn!(error = %e, beats = beats.len(), "cannot write heartbeats; retrying at the next flush");
        st.agents.restore_beats(beats);
    }
}

/// Marks the sources whose agent has been silent for three heartbeat intervals `Unavailable`.
pub async fn detect(st: &AppState) {
    let interval = i64::from(st.cfg.heartbeat_interval_secs);
    let at = now();
    let cutoff = at - 3 * interval;
    let silent = match st.db.source_list_silent(cutoff).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "offline detector cannot read sources");
            return;
        }
    };
    for s in silent {
        if st.agents.pending_beat(&s.id).is_some_and(|b| b >= cutoff) {
            continue;
        }
        let info = serde_json::json!({
            "error_code": "SourceServer.Offline",
            "error_msg": format!(
                "no heartbeat for {} s: check that ferry-agent is running on {} and can reach this server",
                at - s.heartbeat_at, s.name
            ),
        })
        .to_string();
        match st
            .db
            .source_mark_offline(&s.id, cutoff, "SourceServer.Offline", &info)
            .await
        {
            Ok(true) => {
                tracing::info!(source = %s.id, silent_secs = at - s.heartbeat_at, "agent offline")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(source = %s.id, error = %e, "cannot mark a source offline"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_flushed_within_half_an_interval_and_at_most_every_5_s() {
        assert_eq!(flush_period(1), Duration::from_millis(500));
        assert_eq!(flush_period(2), Duration::from_secs(1));
        assert_eq!(flush_period(30), Duration::from_secs(5));
        assert_eq!(flush_period(3600), Duration::from_secs(5));
    }
}
