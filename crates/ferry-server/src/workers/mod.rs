//! Background workers. Each is a loop over database state whose steps are idempotent, so a server that
//! was killed picks up where it stopped: a run left in `Processing` is built again from its snapshots, an
//! export left `Processing` is written again. The job scheduler (timers, expiry, purge, image retention)
//! is in `scheduler`.
//!
//! Several replicas may run these loops on one database (docs/scale-out.md): each unit of work is taken
//! under a database lease first ([`lease`]): `build:<run_id>` per image build, `task:<task_id>` per export,
//! `qcow2:<image_id>:<disk>` per qcow2 derivation, `validate:<image_id>` per boot validation ([`validate`]),
//! and the singletons `scheduler` and `offline-detector`. A dead replica's lease expires and another replica
//! takes the work over from its durable state. A run's image is built, verified and adapted by the image
//! builder; its validation (and, for a cutover, the production instance) by [`validate::worker`], which
//! then ends the run.

use std::sync::Arc;
use std::time::Duration;

use ferry_db::{ImageDiskRecord, ImageRecord, RunRecord};
use ferry_image::ImageFormat;
use ferry_types::ids::ImageId;
use ferry_types::inventory::Inventory;

use crate::AppState;
use crate::app::jobs;

pub mod lease;
pub mod offline;
pub mod scheduler;
pub mod validate;

use lease::Leased;

pub fn spawn_all(st: Arc<AppState>) {
    tokio::spawn(scheduler::run(st.clone()));
    tokio::spawn(image_builder(st.clone()));
    tokio::spawn(qcow2_deriver(st.clone()));
    tokio::spawn(exporter(st.clone()));
    tokio::spawn(validate::worker(st.clone()));
    tokio::spawn(offline::run(st));
}

async fn idle(st: &AppState, secs: u64) {
    let _ = tokio::time::timeout(Duration::from_secs(secs), st.wake.notified()).await;
}

async fn image_builder(st: Arc<AppState>) {
    loop {
        match st.db.run_list_by_status("Processing").await {
            Ok(runs) => {
                for run in runs {
                    let still_to_do = async {
                        matches!(st.db.run_get(&run.id).await, Ok(Some(r)) if r.status == "Processing")
                    };
                    let name = format!("build:{}", run.id);
                    let result = match lease::run_leased(
                        &st,
                        &name,
                        still_to_do,
                        build_run(&st, &run),
                    )
                    .await
                    {
                        Leased::Done(r) => r,
                        Leased::Busy | Leased::Lost => continue,
                    };
                    if let Err(e) = result {
                        if is_no_space(&e) {
                            // Like a full disk during the upload: pause, say why, and try again once space
                            // is freed (the next loop). Nothing needs to be sent again.
                            tracing::warn!(run = %run.id, error = %e, "image build paused: data directory full");
                            let _ = st
                                .db
                                .job_set_status_info(&run.job_id, Some(&format!("paused: {e}")))
                                .await;
                            continue;
                        }
                        tracing::error!(run = %run.id, error = %e, "image build failed");
                        let msg = format!("building the image failed: {e}");
                        let _ = st
                            .db
                            .run_transition(
                                &run.id,
                                "Processing",
                                "Failed",
                                Some(&msg),
                                Some(st.clock.now()),
                            )
                            .await;
                        let _ = st
                            .db
                            .job_set_error(&run.job_id, "ImageBuild.Failed", &msg)
                            .await;
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "image builder cannot read runs"),
        }
        idle(&st, 2).await;
    }
}

fn is_no_space(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<ferry_image::ImageError>(),
            Some(ferry_image::ImageError::NoSpace { .. })
        ) || matches!(
            c.downcast_ref::<ferry_chunk::StoreError>(),
            Some(ferry_chunk::StoreError::NoSpace { .. })
        ) || c
            .downcast_ref::<std::io::Error>()
            .is_some_and(ferry_chunk::is_no_space)
    })
}

/// Builds (or rebuilds) the image of a run from its snapshots, verifies every disk against its snapshot's
/// root digest, and only then marks it available.
async fn build_run(st: &AppState, run: &RunRecord) -> anyhow::Result<()> {
    let job = jobs::get_job(st, &run.job_id)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let source = st.db.source_get(&job.source_id).await?;
    let inv: Option<Inventory> = source
        .as_ref()
        .and_then(|s| serde_json::from_str(&s.inventory).ok());
    let image = match st.db.image_by_run(&run.id).await? {
        Some(i) => i,
        None => {
            let name = if job.run_once != 0 {
                job.image_name.clone()
            } else {
                scheduler::cycle_image_name(&job.image_name, run.seq)
            };
            let snaps = st.db.snapshot_list_by_run(&run.id).await?;
            let total: i64 = snaps.iter().map(|s| s.disk_size).sum();
            let rec = ImageRecord {
                id: ImageId::generate().to_string(),
                name,
                region_id: job.region_id.clone(),
                job_id: Some(job.id.clone()),
                run_id: Some(run.id.clone()),
                status: "Creating".to_owned(),
                progress: 0,
                size_gib: (total + (1 << 30) - 1) >> 30,
                platform: inv.as_ref().map(|i| i.os.name.clone()).unwrap_or_default(),
                os_name: inv
                    .as_ref()
                    .map(|i| i.os.pretty_name.clone())
                    .unwrap_or_default(),
                architecture: inv
                    .as_ref()
                    .map(|i| i.architecture.clone())
                    .unwrap_or_else(|| "x86_64".into()),
                boot_mode: inv
                    .as_ref()
                    .map(|i| format!("{:?}", i.boot_mode))
                    .unwrap_or_else(|| "Bios".into())
                    .replace("Uefi", "UEFI")
                    .replace("Bios", "BIOS"),
                description: format!("Replicated by job {} run {}", job.id, run.seq),
                error: None,
                created_at: st.clock.now(),
            };
            st.db.image_create(&rec).await?;
            st.db.run_set_image(&run.id, &rec.id).await?;
            rec
        }
    };
    if image.status == "Available"
        && let Some(p) = st.db.image_pipeline_get(&image.id).await?
    {
        // Built and adapted already (a restart, or the run waits for its validation): never rebuilt, so
        // the adapted disks and their digests stay as recorded.
        if p.validation_status != "Pending" && p.validation_status != "Running" {
            validate::complete_run(st, &image.id).await?;
        }
        return Ok(());
    }
    let dir = st.images_dir().join(&image.id);
    let snaps = st.db.snapshot_list_by_run(&run.id).await?;
    let n = snaps.len().max(1) as i64;
    for (i, snap) in snaps.iter().enumerate() {
        let disk = u32::try_from(snap.disk_index)?;
        let index = st.chunks.get_index(&jobs::index_key(&run.id, disk)).await?;
        anyhow::ensure!(
            index.root_digest().to_string() == snap.root_digest,
            "the stored index of snapshot {} does not match its recorded root digest",
            snap.id
        );
        // Stop at the volume's reserve before writing (the database and the audit trail live there too).
        let allocated: u64 = index
            .data_chunks()
            .map(|(i, _)| index.chunk_extent(i).1 as u64)
            .sum();
        ferry_chunk::check_reserve(st.cfg.shared_root(), allocated, st.cfg.reserve_bytes())?;
        let built = ferry_image::build_disk_image(
            &index,
            &st.chunks,
            &dir,
            &format!("disk{disk}"),
            // Only the raw image gates availability; qcow2 is derived from it afterwards (`derive_qcow2`).
            &[],
        )
        .await?;
        st.db
            .image_disk_put(&ImageDiskRecord {
                image_id: image.id.clone(),
                disk_index: snap.disk_index,
                snapshot_id: snap.id.clone(),
                size_bytes: snap.disk_size,
                root_digest: built.root.to_string(),
                raw_path: built.raw.display().to_string(),
                qcow2_path: built.qcow2.map(|p| p.display().to_string()),
            })
            .await?;
        st.db
            .image_set_status(&image.id, "Creating", (i as i64 + 1) * 100 / n, None)
            .await?;
        st.db
            .job_set_progress(&job.id, 90.0 + (i as f64 + 1.0) * 10.0 / n as f64)
            .await?;
    }
    // Adapt the built copies in place (the snapshots never change), then the image is available; its
    // boot validation (validate::worker) ends the run, or the run ends now when there is none.
    let settings = st.db.job_settings_get(&job.id).await?;
    let mut opts =
        validate::PipelineOptions::from_job(&jobs::JobSettings::decode(&settings.settings));
    let indexes: Vec<i64> = snaps.iter().map(|s| s.disk_index).collect();
    opts.source_devices = validate::source_devices(inv.as_ref(), &indexes);
    // The final image of a TargetInstance job boots on the job's instance (docs/cutover.md).
    let last = job.run_once != 0 || settings.cutover != 0;
    let production = settings
        .instance_id
        .as_deref()
        .filter(|_| last && job.target_type == jobs::TargetType::TargetInstance.as_str());
    let pipeline = validate::adapt_image(st, &image, &opts, production).await?;
    st.db
        .image_set_status(&image.id, "Available", 100, None)
        .await?;
    tracing::info!(job = %job.id, run = %run.id, image = %image.id, adaptation = %pipeline.adapt_status,
        validation = %pipeline.validation_status, "image built and verified");
    if pipeline.validation_status == "Skipped" {
        validate::complete_run(st, &image.id).await?;
    }
    st.wake.notify_waiters();
    Ok(())
}

/// Converts every verified raw disk image that has no qcow2 yet. The image is usable (and exportable)
/// as soon as its raw disks are verified; the qcow2 is recorded only once it is completely written, so
/// a crash mid-conversion just converts again.
async fn qcow2_deriver(st: Arc<AppState>) {
    loop {
        match st.db.image_disk_list_without_qcow2().await {
            Ok(disks) => {
                for d in disks {
                    let raw = std::path::PathBuf::from(&d.raw_path);
                    let qcow2 = raw.with_extension("qcow2");
                    let still_to_do = async {
                        st.db.image_disk_list(&d.image_id).await.is_ok_and(|ds| {
                            ds.iter()
                                .any(|x| x.disk_index == d.disk_index && x.qcow2_path.is_none())
                        })
                    };
                    let name = format!("qcow2:{}:{}", d.image_id, d.disk_index);
                    let convert = ferry_image::convert(&raw, &qcow2, ImageFormat::Qcow2);
                    let converted = match lease::run_leased(&st, &name, still_to_do, convert).await
                    {
                        Leased::Done(r) => r,
                        Leased::Busy | Leased::Lost => continue,
                    };
                    match converted {
                        Ok(()) => {
                            let path = qcow2.display().to_string();
                            if let Err(e) = st
                                .db
                                .image_disk_set_qcow2(&d.image_id, d.disk_index, &path)
                                .await
                            {
                                tracing::error!(image = %d.image_id, error = %e, "cannot record the qcow2 image");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(image = %d.image_id, disk = d.disk_index, error = %e, "qcow2 conversion failed; will retry");
                            let _ = tokio::fs::remove_file(&qcow2).await;
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "qcow2 worker cannot read images"),
        }
        idle(&st, 2).await;
    }
}

/// The request an export task carries (see `rpc::ecs::export_image`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ExportRequest {
    pub image_id: String,
    pub bucket: String,
    pub prefix: String,
    pub format: String,
}

async fn exporter(st: Arc<AppState>) {
    loop {
        match st.db.task_list().await {
            Ok(tasks) => {
                for t in tasks
                    .into_iter()
                    .filter(|t| t.status == "Processing" && t.action == "ExportImage")
                {
                    let still_to_do = async {
                        matches!(st.db.task_get(&t.id).await, Ok(Some(t)) if t.status == "Processing")
                    };
                    let name = format!("task:{}", t.id);
                    let work = async {
                        let result = export(&st, &t.request).await;
                        record_export(&st, &t.id, &result).await;
                    };
                    let _ = lease::run_leased(&st, &name, still_to_do, work).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "exporter cannot read tasks"),
        }
        idle(&st, 2).await;
    }
}

/// Records an export's outcome on its task (under the task's lease).
async fn record_export(st: &AppState, task_id: &str, result: &anyhow::Result<Vec<String>>) {
    let outcome = match result {
        Ok(files) => {
            let json = serde_json::json!({ "Files": files }).to_string();
            st.db
                .task_finish(task_id, "Finished", Some(&json), None)
                .await
        }
        Err(e) => {
            tracing::error!(task = task_id, error = %e, "export failed");
            st.db
                .task_finish(task_id, "Failed", None, Some(&e.to_string()))
                .await
        }
    };
    if let Err(e) = outcome {
        tracing::error!(task = task_id, error = %e, "cannot record the export's result");
    }
}

async fn export(st: &AppState, request: &str) -> anyhow::Result<Vec<String>> {
    let req: ExportRequest = serde_json::from_str(request)?;
    let format: ImageFormat = req.format.parse()?;
    let disks = st.db.image_disk_list(&req.image_id).await?;
    anyhow::ensure!(
        !disks.is_empty(),
        "image {} has no built disks",
        req.image_id
    );
    let dir = st.bucket_dir(&req.bucket);
    tokio::fs::create_dir_all(&dir).await?;
    let mut files = Vec::new();
    for d in disks {
        let name = format!(
            "{}{}_disk{}.{}",
            req.prefix,
            req.image_id,
            d.disk_index,
            format.name()
        );
        let store = st.chunks.object_store();
        if store.local_path("buckets").is_none() {
            // A remote (S3) store: the bucket is the prefix `buckets/<bucket>/` in the store's bucket
            // (docs/decisions.md). Convert next to the raw image, then upload in parts.
            let key = format!("buckets/{}/{name}", req.bucket);
            let tmp = std::path::Path::new(&d.raw_path).with_extension(format!(
                "export-{:016x}.{}",
                rand::random::<u64>(),
                format.name()
            ));
            let converted = ferry_image::convert(std::path::Path::new(&d.raw_path), &tmp, format)
                .await
                .map_err(anyhow::Error::from);
            let uploaded = match converted {
                Ok(()) => store
                    .put_file(&key, &tmp)
                    .await
                    .map_err(anyhow::Error::from),
                Err(e) => Err(e),
            };
            let _ = tokio::fs::remove_file(&tmp).await;
            uploaded?;
            files.push(store.location(&key));
            continue;
        }
        let out = dir.join(&name);
        if let Some(parent) = out.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        ferry_image::convert(std::path::Path::new(&d.raw_path), &out, format).await?;
        files.push(out.display().to_string());
    }
    Ok(files)
}
