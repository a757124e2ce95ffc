//! A whole replication with `ferry server --store s3://…` on the S3-compatible test server
//! (`scripts/s3-test.sh`): the image is built from chunks stored in packs, the object count per stored GiB
//! stays bounded, and an export reaches the bucket by a multipart upload. Skips (saying why) without
//! FERRY_TEST_S3.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use ferry_chunk::ObjectStore as _;
use ferry_chunk::pack::PackIndex;
use ferry_test_utils::disk::random_bytes;
use ferry_test_utils::s3::TestS3;
use ferry_test_utils::stack::{
    AgentProc, ServerProc, p, same_bytes, start_job, wait_job, wait_source,
};
use ferry_test_utils::wait_for;

const MIB: usize = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;

#[tokio::test(flavor = "multi_thread")]
async fn replication_onto_s3_packs_chunks_and_exports_multipart() -> anyhow::Result<()> {
    let Some(s3) = TestS3::from_env("wholestack").await? else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    // 48 MiB: random data, a zero run (never stored), more random data, and a repeat (deduplicated).
    let mut disk = random_bytes(1, 16 * MIB);
    disk.extend(std::iter::repeat_n(0u8, 8 * MIB));
    disk.extend(random_bytes(2, 16 * MIB));
    disk.extend_from_within(0..8 * MIB);
    let source = tmp.path().join("source.img");
    std::fs::write(&source, &disk)?;

    let server = ServerProc::start_on_s3(&tmp.path().join("server"), &s3, &[]).await?;
    let client = server.client()?;
    let (_, code) = server.activation_code(1).await?;
    let agent = AgentProc::activate(&server, &tmp.path().join("agent"), &code, &[&source]).await?;
    wait_source(&client, &agent.source_id).await?;
    let job_id = start_job(&client, &agent.source_id, &[("RunOnce", "true")]).await?;
    let j = wait_job(&client, &job_id, &["Finished"], Duration::from_secs(240)).await?;
    let image = j["ReplicationJobRuns"]["ReplicationJobRun"][0]["ImageId"]
        .as_str()
        .with_context(|| format!("no image: {j}"))?
        .to_owned();

    // The built raw image (local to this replica) is the source, byte for byte.
    let raw = server
        .data_dir
        .join("images")
        .join(&image)
        .join("disk0.raw");
    anyhow::ensure!(
        same_bytes(&raw, &source)?,
        "the built image differs from the source"
    );

    // Objects in the bucket: packs with their indexes and the disk index; no loose chunk.
    let keys = s3.store.list("").await?;
    anyhow::ensure!(
        !keys.iter().any(|k| k.starts_with("chunks/")),
        "loose chunk objects on S3: {keys:?}"
    );
    let packs: Vec<&String> = keys.iter().filter(|k| k.ends_with(".pack")).collect();
    let pidx: Vec<&String> = keys.iter().filter(|k| k.ends_with(".pidx")).collect();
    anyhow::ensure!(!packs.is_empty() && packs.len() == pidx.len(), "{keys:?}");
    let (mut bytes, mut chunks) = (0u64, 0usize);
    for k in &pidx {
        let idx = PackIndex::decode(&s3.store.get(k).await?)?;
        bytes += idx.pack_size;
        chunks += idx.entries.len();
    }
    // 40 MiB of non-zero data in 1 MiB chunks, 8 of them repeats: 32 distinct chunks.
    anyhow::ensure!(chunks == 32, "{chunks} chunks stored, 32 expected");
    let pack_objects = (packs.len() + pidx.len()) as f64;
    eprintln!(
        "S3 store: {} objects ({} packs + {} pack indexes + {} other) for {:.1} MiB of chunks: \
         {:.0} chunk objects per GiB (one object per chunk would be {:.0})",
        keys.len(),
        packs.len(),
        pidx.len(),
        keys.len() - packs.len() - pidx.len(),
        bytes as f64 / MIB as f64,
        pack_objects * GIB / bytes as f64,
        chunks as f64 * GIB / bytes as f64,
    );
    // One pack per 64 MiB, plus the one the index commit flushes early.
    let bound = 2 * (bytes.div_ceil(64 * MIB as u64) + 1);
    anyhow::ensure!(
        packs.len() as u64 + pidx.len() as u64 <= bound,
        "{} pack objects for {bytes} bytes (at most {bound} expected)",
        packs.len() + pidx.len()
    );

    // An export lands in the bucket (48 MiB: a multipart upload of 16 MiB parts) and is the source.
    let v = client
        .ecs(
            "ExportImage",
            &p(&[
                ("RegionId", "local"),
                ("ImageId", &image),
                ("OSSBucket", "exports"),
                ("OSSPrefix", "raw/"),
                ("ImageFormat", "raw"),
            ]),
        )
        .await?;
    let task = v["TaskId"].as_str().context("TaskId")?.to_owned();
    let done = wait_for(Duration::from_secs(120), "the export", || async {
        let t = client
            .ecs(
                "DescribeTaskAttribute",
                &p(&[("RegionId", "local"), ("TaskId", &task)]),
            )
            .await?;
        match t["TaskStatus"].as_str() {
            Some("Finished") => Ok(Some(t)),
            Some("Failed") => anyhow::bail!("export failed: {}", t["ErrorMessage"]),
            _ => Ok(None),
        }
    })
    .await?;
    let result: serde_json::Value =
        serde_json::from_str(done["Result"].as_str().context("Result")?)?;
    let file = result["Files"][0].as_str().context("Files")?;
    let key = file
        .strip_prefix(&format!("{}/", s3.cfg.url()))
        .with_context(|| format!("export {file} is not in {}", s3.cfg.url()))?;
    anyhow::ensure!(
        key == format!("buckets/exports/raw/{image}_disk0.raw"),
        "export key {key}"
    );
    let exported: Bytes = s3.store.get(key).await?;
    anyhow::ensure!(
        exported == disk,
        "the exported image differs from the source"
    );
    drop(agent);
    drop(server);
    Ok(())
}
