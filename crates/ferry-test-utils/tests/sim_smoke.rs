//! Smoke test of the load simulator (`ferry_test_utils::sim`), so that bench/load.sh cannot rot: 100
//! simulated sources registered through real activation, heart-beating (long poll, 1 s interval), 5
//! replication runs in flight through the real agent code, and both Describe calls sampled, for 10 s
//! against a real `ferry server` process.

use std::time::Duration;

use ferry_test_utils::sim::{self, SimConfig};
use ferry_test_utils::stack::{ServerProc, source_count};

#[tokio::test]
async fn the_simulator_registers_heartbeats_replicates_and_measures() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProc::start(&dir.path().join("server"), &[]).await?;
    let creds = server.credentials()?;
    let pid = server
        .proc
        .as_ref()
        .map(|p| p.child.id())
        .ok_or_else(|| anyhow::anyhow!("the server process is not running"))?;
    let state_file = dir.path().join("agents.json");
    let cfg = SimConfig {
        endpoints: vec![server.endpoint()],
        ca_pem: std::fs::read_to_string(&creds.ca_cert)?,
        access_key_id: creds.access_key_id.clone(),
        access_key_secret: creds.access_key_secret.clone(),
        sources: 100,
        runs: 5,
        disk_mib: 2,
        warmup: Duration::from_secs(3),
        duration: Duration::from_secs(10),
        describe_rate: 5.0,
        long_poll: true,
        work_dir: dir.path().join("disks"),
        state_file: Some(state_file.clone()),
        server_pids: vec![("server".into(), pid)],
        probe: None,
    };
    let r = sim::run(cfg.clone()).await?;
    let show = serde_json::to_string_pretty(&r)?;
    eprintln!("{show}");

    // Registration went through real activation, once per source.
    assert_eq!(r.registered, 100, "{show}");
    assert_eq!(source_count(&server.client()?).await?, 100, "{show}");

    // Heart-beating: 1 s interval, 100 sources, long poll: about 100 answered per second. Well under that
    // would mean the simulator (or the server) does not keep the agents' pace.
    assert_eq!(r.heartbeats.heartbeat_interval_secs, 1, "{show}");
    assert_eq!(r.heartbeats.errors, 0, "{show}");
    assert!(
        r.heartbeats.per_sec > 0.5 * r.heartbeats.expected_per_sec,
        "{show}"
    );
    assert_eq!(r.unavailable_sources_at_end, 0, "{show}");

    // Replication through the real agent code: every one of the 5 drivers saw a run through.
    assert!(r.replication.runs_succeeded >= 5, "{show}");
    assert_eq!(r.replication.runs_failed, 0, "{show}");
    assert!(r.replication.bytes_sent > 0, "{show}");

    // Both Describe calls were sampled, without errors, with latencies.
    for d in [&r.describe_source_servers, &r.describe_replication_jobs] {
        assert!(d.count >= 10, "{show}");
        assert_eq!(d.errors, 0, "{show}");
        assert!(d.p50_ms > 0.0 && d.p99_ms >= d.p50_ms, "{show}");
    }

    // The server's CPU and memory were read from /proc.
    let p = r
        .processes
        .first()
        .ok_or_else(|| anyhow::anyhow!("no process stats: {show}"))?;
    assert!(p.cpu_secs > 0.0 && p.peak_rss_mib > 1.0, "{show}");

    // A second simulation reuses the registered sources (and their jobs) from the state file.
    let again = sim::run(SimConfig {
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(3),
        ..cfg
    })
    .await?;
    assert_eq!(again.registered, 0);
    assert_eq!(source_count(&server.client()?).await?, 100);
    Ok(())
}
