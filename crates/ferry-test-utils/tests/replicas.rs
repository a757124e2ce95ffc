//! Scale-out on PostgreSQL (docs/scale-out.md): `ferry server` replicas on one database and one shared
//! directory, agents behind a fail-over TCP proxy (a stand-in for a load balancer), API calls spread over
//! the replicas, and a replica killed with SIGKILL while it builds an image. Every job still finishes with a
//! verified image, and the lease records show that each build ran once, or twice only where a dead
//! replica's lease was taken over. Also a single server on PostgreSQL through a whole replication and the
//! API around it.
//!
//! These tests need FERRY_TEST_POSTGRES (scripts/test.sh always sets it; scripts/pg-test.sh starts a
//! private cluster); without it they print why and pass. Each test gets a fresh database.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry::client::Client;
use ferry_db::Db;
use ferry_test_utils::disk::random_bytes;
use ferry_test_utils::stack::{
    AgentProc, ServerProc, TcpFailover, activate_via, export, job, p, same_bytes, start_job,
    test_postgres, wait_job, wait_source,
};
use ferry_test_utils::wait_for;
use serde_json::Value;

const MIB: usize = 1 << 20;
const WAIT: Duration = Duration::from_secs(300);

fn disk(dir: &Path, seed: u64, mib: usize) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("disk-{seed}.img"));
    std::fs::write(&path, random_bytes(seed, mib * MIB))?;
    Ok(path)
}

/// The image of a finished one-shot job, which had exactly one run.
fn only_image(j: &Value) -> anyhow::Result<String> {
    let runs = j["ReplicationJobRuns"]["ReplicationJobRun"]
        .as_array()
        .context("ReplicationJobRuns")?;
    anyhow::ensure!(runs.len() == 1, "one run expected: {j}");
    j["ImageId"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the run has no image: {j}"))
}

async fn image(client: &Client, id: &str) -> anyhow::Result<Value> {
    let v = client
        .ecs(
            "DescribeImages",
            &p(&[("RegionId", "local"), ("ImageId", id)]),
        )
        .await?;
    v["Images"]["Image"]
        .get(0)
        .cloned()
        .with_context(|| format!("image {id} not listed"))
}

/// Round-robin over the replicas that are alive.
struct Clients {
    all: Vec<Client>,
    dead: Vec<usize>,
    next: std::sync::atomic::AtomicUsize,
}

impl Clients {
    fn next(&self) -> &Client {
        loop {
            let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.all.len();
            if !self.dead.contains(&i) {
                return &self.all[i];
            }
        }
    }
}

/// An agent long-polls one replica; its job is started through another. The other replica announces the
/// change (PostgreSQL NOTIFY), so the agent starts uploading at once (within 15 s on a loaded machine;
/// measured 2.8 s) instead of when its 25 s poll ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_started_through_another_replica_reaches_the_polling_agent_at_once()
-> anyhow::Result<()> {
    const UPLOADS: &str = r#"ferry_agent_request_duration_seconds_count{code_class="2xx",route="/agent/v1/runs/{run}/chunks/{digest}"}"#;
    let Some(pg) =
        test_postgres("a_run_started_through_another_replica_reaches_the_polling_agent_at_once")
            .await?
    else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let shared = tmp.path().join("shared");
    // The default long poll (25 s) inside a 30 s interval, as in production.
    let args = ["--heartbeat-interval", "30"];
    let polled = ServerProc::start_replica(&tmp.path().join("r0"), &pg.url, &shared, &args).await?;
    let other = ServerProc::start_replica(&tmp.path().join("r1"), &pg.url, &shared, &args).await?;
    let (_, code) = polled.activation_code(1).await?;
    let d = disk(tmp.path(), 5, 2)?;
    let agent = AgentProc::activate(&polled, &tmp.path().join("agent"), &code, &[&d]).await?;
    let client = other.client()?;
    // Available once its first heartbeat arrived, which the replica then holds for 25 s.
    wait_source(&client, &agent.source_id).await?;
    let started = Instant::now();
    start_job(&client, &agent.source_id, &[]).await?;
    wait_for(
        Duration::from_secs(60),
        "the agent's first chunk upload",
        || async {
            Ok(ferry_test_utils::stack::metric(&polled, UPLOADS)
                .await
                .ok()
                .filter(|n| *n > 0))
        },
    )
    .await?;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the agent began uploading {took:?} after the start through the other replica: it was not woken"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_share_the_work_and_survive_a_kill9() -> anyhow::Result<()> {
    let Some(pg) = test_postgres("three_replicas_share_the_work_and_survive_a_kill9").await? else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let shared = tmp.path().join("shared");
    // A short lease TTL, so the dead replica's build is taken over within seconds.
    let args = ["--lease-ttl", "10"];
    // Started together: the first to start creates the shared CA, the others must adopt it, not race it.
    let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("r{i}"))).collect();
    let (r0, r1, r2) = tokio::join!(
        ServerProc::start_replica(&dirs[0], &pg.url, &shared, &args),
        ServerProc::start_replica(&dirs[1], &pg.url, &shared, &args),
        ServerProc::start_replica(&dirs[2], &pg.url, &shared, &args),
    );
    let mut replicas = vec![r0?, r1?, r2?];
    let fingerprints: Vec<String> = replicas
        .iter()
        .map(|r| Ok(r.credentials()?.ca_fingerprint))
        .collect::<anyhow::Result<_>>()?;
    assert!(
        fingerprints.iter().all(|f| *f == fingerprints[0]),
        "replicas present different CAs: {fingerprints:?}"
    );
    let ids: Vec<String> = replicas
        .iter()
        .map(|r| r.replica_id())
        .collect::<anyhow::Result<_>>()?;
    let mut clients = Clients {
        all: replicas
            .iter()
            .map(|r| r.client())
            .collect::<anyhow::Result<_>>()?,
        dead: Vec::new(),
        next: Default::default(),
    };
    let db = Db::open(&pg.url).await?;

    // Agent i reaches replica i through a fail-over proxy, as through a load balancer.
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let (_, code) = replicas[0].activation_code(3).await?;
    let mut proxies = Vec::new();
    let mut agents: Vec<AgentProc> = Vec::new();
    let mut disks = Vec::new();
    for (i, replica) in replicas.iter().enumerate() {
        let proxy = TcpFailover::start(ports.clone(), i).await?;
        // Sizes differ so that the builds do not all happen at the same moment.
        let d = disk(tmp.path(), 10 + i as u64, 96 + 32 * i)?;
        let agent = activate_via(
            replica,
            &proxy.endpoint(),
            &tmp.path().join(format!("agent-{i}")),
            &code,
            &[&d],
        )
        .await?;
        wait_source(clients.next(), &agent.source_id).await?;
        proxies.push(proxy);
        agents.push(agent);
        disks.push(d);
    }

    let mut jobs = Vec::new();
    for a in &agents {
        jobs.push(start_job(clients.next(), &a.source_id, &[]).await?);
    }

    // Kill -9 the first replica seen building an image: holding the build's lease, and past the point where
    // it recorded that the build started (`worked`).
    let deadline = Instant::now() + WAIT;
    let (victim, lease_name, victim_holder) = loop {
        let mut building = None;
        for (name, holder, fencing) in db.lease_list_live("build:").await? {
            let started = db
                .lease_event_list(&name)
                .await?
                .iter()
                .any(|e| e.fencing == fencing && e.worked == 1);
            if started {
                building = Some((name, holder));
                break;
            }
        }
        if let Some((name, holder)) = &building {
            let k = ids
                .iter()
                .position(|id| holder.starts_with(&format!("{id}#")))
                .with_context(|| {
                    format!("lease holder {holder} is none of the replicas {ids:?}")
                })?;
            replicas[k].kill9();
            break (k, name.clone(), holder.clone());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no image build was seen in progress: the builds may be too quick to catch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed_at = ferry_db::now();
    clients.dead.push(victim);
    let run_id = lease_name.trim_start_matches("build:").to_owned();
    let killed_mid_build = db
        .run_get(&run_id)
        .await?
        .is_some_and(|r| r.status == "Processing");
    eprintln!(
        "killed replica {victim} ({}) holding {lease_name}; the build was {}",
        ids[victim],
        if killed_mid_build {
            "still in progress"
        } else {
            "already done"
        }
    );

    // Every job finishes, each with one run, one Available image, bit-identical to its source disk.
    for (i, job_id) in jobs.iter().enumerate() {
        let j = wait_job(clients.next(), job_id, &["Finished"], WAIT).await?;
        let image_id = only_image(&j)?;
        let img = wait_for(WAIT, "the image to be Available", || async {
            let img = image(clients.next(), &image_id).await?;
            Ok((img["Status"] == "Available").then_some(img))
        })
        .await?;
        assert_eq!(img["Progress"], "100%", "{img}");
        let raw = shared.join("images").join(&image_id).join("disk0.raw");
        assert!(
            same_bytes(&raw, &disks[i])?,
            "image {image_id} differs from the source disk {}",
            disks[i].display()
        );
        let images_of_job = db.image_list_by_job(job_id).await?;
        assert_eq!(
            images_of_job.len(),
            1,
            "job {job_id} must have exactly one image: {images_of_job:?}"
        );
        let runs = db.run_list(job_id).await?;
        assert_eq!(runs.len(), 1, "job {job_id}: one run expected");

        // The build's lease history: the build started once, or, for the victim's run killed mid-build,
        // once by the victim and once more by a replica that took the expired lease over.
        let events = db
            .lease_event_list(&format!("build:{}", runs[0].id))
            .await?;
        let worked: Vec<_> = events.iter().filter(|e| e.worked == 1).collect();
        if runs[0].id == run_id && killed_mid_build {
            assert_eq!(worked.len(), 2, "{events:?}");
            assert_eq!(worked[0].holder, victim_holder, "{events:?}");
            assert_eq!(
                worked[1].previous_holder.as_deref(),
                Some(victim_holder.as_str()),
                "the second build must be a takeover of the dead replica's lease: {events:?}"
            );
            assert!(
                !worked[1].holder.starts_with(&format!("{}#", ids[victim])),
                "{events:?}"
            );
        } else {
            assert_eq!(worked.len(), 1, "the build ran more than once: {events:?}");
        }
    }

    // No live replica ever lost a lease on a unit of work to another: every takeover of a build, task or
    // qcow2 derivation is of the dead replica's. (The `scheduler` and `offline-detector` singletons may
    // move between live replicas that stall past the TTL under load: their steps are guarded, so that
    // costs nothing.)
    for e in db.lease_event_list("").await? {
        if e.name == "scheduler" || e.name == "offline-detector" {
            continue;
        }
        if let Some(prev) = &e.previous_holder {
            assert!(
                prev.starts_with(&format!("{}#", ids[victim])),
                "lease {} was taken over from a live replica's holder {prev}: {e:?}",
                e.name
            );
        }
    }

    // The agent of the dead replica goes on through its proxy: its heartbeats reach a live replica after
    // the kill, and its source is Available there.
    let victim_source = agents[victim].source_id.clone();
    wait_for(
        WAIT,
        "a heartbeat from the dead replica's agent",
        || async {
            let s = db.source_get(&victim_source).await?.context("source")?;
            Ok((s.heartbeat_at > killed_at + 2).then_some(()))
        },
    )
    .await?;
    let source = wait_source(clients.next(), &victim_source).await?;
    assert_eq!(source["State"], "Available");
    let v = clients.next().smc("DescribeSourceServers", &[]).await?;
    assert_eq!(v["TotalCount"], 3, "{v}");
    for a in &mut agents {
        a.kill9();
    }
    for r in &mut replicas {
        r.kill9();
    }
    db.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_on_postgres_replicates_and_serves_the_api() -> anyhow::Result<()> {
    let Some(pg) = test_postgres("a_server_on_postgres_replicates_and_serves_the_api").await?
    else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let server = ServerProc::start_on_database(&tmp.path().join("server"), &pg.url, &[]).await?;
    let client = server.client()?;
    let (_, code) = server.activation_code(1).await?;
    let d = disk(tmp.path(), 1, 8)?;
    let agent = AgentProc::activate(&server, &tmp.path().join("agent"), &code, &[&d]).await?;
    wait_source(&client, &agent.source_id).await?;

    let job_id = start_job(&client, &agent.source_id, &[("Name", "pg-job")]).await?;
    let j = wait_job(&client, &job_id, &["Finished"], WAIT).await?;
    let image_id = only_image(&j)?;
    let raw = export(&client, &image_id, "raw").await?;
    assert_eq!(raw.len(), 1);
    assert!(
        same_bytes(&raw[0], &d)?,
        "the raw export differs from the disk"
    );

    // The API on PostgreSQL: lists with filters, tags, and a deleted job purged by the scheduler.
    let v = client
        .smc(
            "DescribeReplicationJobs",
            &p(&[("Name", "pg-job"), ("Status", "Finished")]),
        )
        .await?;
    assert_eq!(v["TotalCount"], 1, "{v}");
    client
        .smc(
            "TagResources",
            &p(&[
                ("ResourceType", "replicationjob"),
                ("ResourceId.1", &job_id),
                ("Tag.1.Key", "wave"),
                ("Tag.1.Value", "1"),
            ]),
        )
        .await?;
    let v = client
        .smc(
            "ListTagResources",
            &p(&[
                ("ResourceType", "replicationjob"),
                ("ResourceId.1", &job_id),
            ]),
        )
        .await?;
    assert_eq!(v["TagResources"]["TagResource"][0]["TagValue"], "1", "{v}");
    client
        .smc("DeleteReplicationJob", &p(&[("JobId", &job_id)]))
        .await?;
    wait_for(WAIT, "the deleted job to be purged", || async {
        Ok(job(&client, &job_id).await.is_err().then_some(()))
    })
    .await?;
    let img = image(&client, &image_id).await?;
    assert_eq!(
        img["Status"], "Available",
        "images outlive their job: {img}"
    );
    Ok(())
}
