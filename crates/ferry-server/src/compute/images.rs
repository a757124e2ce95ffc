//! Images and snapshots beyond replication: CreateImage from stored snapshots (built by [`worker`] with
//! the same builder and verification as a replication run's image), DeleteImage and DeleteSnapshot.
//!
//! Invariants: an image built here becomes `Available` only after every disk's raw image re-reads to its
//! snapshot's root digest (`ferry_image::build_disk_image`); an image's files are removed only after every
//! instance still reading them has been flattened; a snapshot is never deleted while an image is being
//! built from it. Deleting a snapshot removes its index object but not its chunks, which other snapshots
//! may share. TODO-correctness: chunk garbage collection (a later issue) reclaims unreferenced chunks.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use ferry_api::ApiError;
use ferry_chunk::ChunkStore;
use ferry_db::{ImageDiskRecord, ImageRecord, SnapshotRecord, TaskRecord, now};
use ferry_types::ids::{ImageId, TaskId};
use serde::{Deserialize, Serialize};

use super::{driver, idle, instances, lock};
use crate::AppState;
use crate::app::OrInternal;
use crate::app::jobs::index_key;
use crate::workers::validate::{self, PipelineOptions};

/// The task action of an image build from snapshots.
pub const CREATE_IMAGE: &str = "CreateImage";

/// What a CreateImage task carries (`tasks.request`). Version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateImageTask {
    pub version: u32,
    pub image_id: String,
    /// Snapshot of each disk, system disk first (disk N of the image is entry N).
    pub snapshots: Vec<String>,
    /// Ferry-only: the adaptation and validation options (absent in tasks written before them: then the
    /// options of the image the system snapshot was replicated into, else the defaults).
    #[serde(default)]
    pub pipeline: Option<PipelineOptions>,
}

/// CreateImage's parameters, checked at the edge.
#[derive(Debug, Clone)]
pub struct CreateImageRequest {
    /// Snapshot of each disk, system disk first.
    pub snapshots: Vec<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    pub boot_mode: Option<String>,
    pub client_token: Option<String>,
    /// Ferry-only `NetworkMode` (checked: `Dhcp`/`KeepStatic`).
    pub network_mode: Option<String>,
    /// Ferry-only `ValidationChecks` (checked JSON).
    pub validation_checks: Option<serde_json::Value>,
    /// Ferry-only `ValidationEnabled`.
    pub validation_enabled: Option<bool>,
    /// Ferry-only `ValidationInstanceType` (checked).
    pub validation_instance_type: Option<String>,
}

pub fn image_not_found(id: &str) -> ApiError {
    ApiError::new(
        "InvalidImageId.NotFound",
        404,
        format!("image {id} does not exist: list images with DescribeImages"),
    )
}

pub fn snapshot_not_found(id: &str) -> ApiError {
    ApiError::new(
        "InvalidSnapshotId.NotFound",
        404,
        format!("snapshot {id} does not exist: list snapshots with DescribeSnapshots"),
    )
}

/// Records the image (`Creating`) and its build task, and wakes the worker. Returns the image ID (the
/// first request's, for a repeated ClientToken).
///
/// # Errors
/// `InvalidSnapshotId.NotFound` (404), `InvalidImageName.Duplicated` (400).
pub async fn create_from_snapshots(
    st: &AppState,
    req: &CreateImageRequest,
) -> Result<String, ApiError> {
    if let Some(t) = &req.client_token
        && let Some(ids) = st
            .db
            .client_token_get(CREATE_IMAGE, t)
            .await
            .or_internal()?
        && let Some(id) = ids.into_iter().next()
    {
        return Ok(id);
    }
    let mut snaps: Vec<SnapshotRecord> = Vec::new();
    for id in &req.snapshots {
        snaps.push(
            st.db
                .snapshot_get(id)
                .await
                .or_internal()?
                .ok_or_else(|| snapshot_not_found(id))?,
        );
    }
    if let Some(name) = &req.name
        && st.db.image_name_taken(name).await.or_internal()?
    {
        return Err(ApiError::new(
            "InvalidImageName.Duplicated",
            400,
            format!("an image named {name:?} exists already: choose another ImageName"),
        ));
    }
    // The system snapshot's own image (from its replication run), if still there, knows the guest's OS.
    let template = st.db.image_by_run(&snaps[0].run_id).await.or_internal()?;
    let id = ImageId::generate().to_string();
    let total: i64 = snaps.iter().map(|s| s.disk_size).sum();
    let from_template = |f: fn(&ImageRecord) -> &String, default: &str| {
        template
            .as_ref()
            .map(|t| f(t).clone())
            .unwrap_or_else(|| default.to_owned())
    };
    let image = ImageRecord {
        id: id.clone(),
        name: req.name.clone().unwrap_or_else(|| id.clone()),
        region_id: st.cfg.region_id.clone(),
        job_id: None,
        run_id: None,
        status: "Creating".to_owned(),
        progress: 0,
        size_gib: super::gib_ceil(total),
        platform: req
            .platform
            .clone()
            .unwrap_or_else(|| from_template(|t| &t.platform, "")),
        os_name: from_template(|t| &t.os_name, ""),
        architecture: req
            .architecture
            .clone()
            .unwrap_or_else(|| from_template(|t| &t.architecture, "x86_64")),
        boot_mode: req
            .boot_mode
            .clone()
            .unwrap_or_else(|| from_template(|t| &t.boot_mode, "BIOS")),
        description: req
            .description
            .clone()
            .unwrap_or_else(|| format!("Created from snapshots {}", req.snapshots.join(", "))),
        error: None,
        created_at: now(),
    };
    // A rebuild re-adapts with the options of the image it rebuilds (the system snapshot's), changed by
    // what the request gives.
    let mut pipeline = match &template {
        Some(t) => st
            .db
            .image_pipeline_get(&t.id)
            .await
            .or_internal()?
            .map(|p| PipelineOptions::decode(&p.options))
            .unwrap_or_default(),
        None => PipelineOptions::default(),
    };
    if let Some(m) = &req.network_mode {
        pipeline.network_mode = m.clone();
    }
    if let Some(c) = &req.validation_checks {
        pipeline.checks = Some(c.clone());
    }
    if let Some(e) = req.validation_enabled {
        pipeline.validation_enabled = e;
    }
    if let Some(t) = &req.validation_instance_type {
        pipeline.instance_type = t.clone();
    }
    let request = CreateImageTask {
        version: 1,
        image_id: id.clone(),
        snapshots: req.snapshots.clone(),
        pipeline: Some(pipeline),
    };
    let task = TaskRecord {
        id: TaskId::generate().to_string(),
        action: CREATE_IMAGE.to_owned(),
        status: "Processing".to_owned(),
        progress: 0,
        resource_id: id.clone(),
        request: serde_json::to_string(&request).or_internal()?,
        result: None,
        error: None,
        created_at: now(),
        finished_at: None,
    };
    if let Some(existing) = st
        .db
        .image_create_with_task(&image, &task, req.client_token.as_deref())
        .await
        .or_internal()?
    {
        return Ok(existing);
    }
    super::wake();
    Ok(id)
}

/// Builds the image of one CreateImage task, verifying each disk against its snapshot.
async fn build(st: &AppState, req: &CreateImageTask, task_id: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        req.version == 1,
        "task format version {} is newer than this server's (1): upgrade Ferry",
        req.version
    );
    let dir = st.images_dir().join(&req.image_id);
    let n = req.snapshots.len().max(1) as i64;
    for (disk, snap_id) in req.snapshots.iter().enumerate() {
        let snap =
            st.db.snapshot_get(snap_id).await?.ok_or_else(|| {
                anyhow::anyhow!("snapshot {snap_id} was deleted during the build")
            })?;
        let index = st
            .chunks
            .get_index(&index_key(&snap.run_id, u32::try_from(snap.disk_index)?))
            .await?;
        anyhow::ensure!(
            index.root_digest().to_string() == snap.root_digest,
            "the stored index of snapshot {} does not match its recorded root digest",
            snap.id
        );
        let built =
            ferry_image::build_disk_image(&index, &st.chunks, &dir, &format!("disk{disk}"), &[])
                .await?;
        st.db
            .image_disk_put(&ImageDiskRecord {
                image_id: req.image_id.clone(),
                disk_index: disk as i64,
                snapshot_id: snap.id.clone(),
                size_bytes: snap.disk_size,
                root_digest: built.root.to_string(),
                raw_path: built.raw.display().to_string(),
                qcow2_path: None,
            })
            .await?;
        let pct = (disk as i64 + 1) * 100 / n;
        st.db
            .image_set_status(&req.image_id, "Creating", pct, None)
            .await?;
    }
    // Re-adapt the fresh copies (possibly with changed options) and validate again: a failed validation
    // never costs a re-copy.
    let image =
        st.db.image_get(&req.image_id).await?.ok_or_else(|| {
            anyhow::anyhow!("image {} was deleted during its build", req.image_id)
        })?;
    let mut opts = req.pipeline.clone().unwrap_or_default();
    if opts.source_devices.is_empty() {
        opts.source_devices = source_devices_of(st, &req.snapshots).await;
    }
    validate::adapt_image(st, &image, &opts, None).await?;
    st.db
        .image_set_status(&req.image_id, "Available", 100, None)
        .await?;
    let result = serde_json::json!({ "ImageId": req.image_id }).to_string();
    st.db
        .task_finish(task_id, "Finished", Some(&result), None)
        .await?;
    // The qcow2 deriver converts the new raw disks like any available image's.
    st.wake.notify_waiters();
    Ok(())
}

/// The source's device names of the snapshots' disks, when their source is still known.
async fn source_devices_of(st: &AppState, snapshots: &[String]) -> Vec<String> {
    let mut indexes = Vec::new();
    let mut source = None;
    for id in snapshots {
        match st.db.snapshot_get(id).await {
            Ok(Some(s)) => {
                indexes.push(s.disk_index);
                source.get_or_insert(s.source_id);
            }
            _ => return Vec::new(),
        }
    }
    let Some(source) = source else {
        return Vec::new();
    };
    let inv: Option<ferry_types::inventory::Inventory> = match st.db.source_get(&source).await {
        Ok(Some(s)) => serde_json::from_str(&s.inventory).ok(),
        _ => None,
    };
    validate::source_devices(inv.as_ref(), &indexes)
}

/// The CreateImage build worker: builds every `Processing` CreateImage task (again, after a restart or a
/// takeover from a dead replica: building is idempotent), one replica at a time per task (lease `task:<id>`).
pub async fn worker(st: Arc<AppState>) {
    loop {
        match st.db.task_list().await {
            Ok(tasks) => {
                for t in tasks
                    .into_iter()
                    .filter(|t| t.status == "Processing" && t.action == CREATE_IMAGE)
                {
                    let req: CreateImageTask = match serde_json::from_str(&t.request) {
                        Ok(r) => r,
                        Err(e) => {
                            let msg = format!("unreadable task request: {e}");
                            let _ = st.db.task_finish(&t.id, "Failed", None, Some(&msg)).await;
                            continue;
                        }
                    };
                    let still_to_do = async {
                        matches!(st.db.task_get(&t.id).await, Ok(Some(t)) if t.status == "Processing")
                    };
                    let name = format!("task:{}", t.id);
                    let built = match crate::workers::lease::run_leased(
                        &st,
                        &name,
                        still_to_do,
                        build(&st, &req, &t.id),
                    )
                    .await
                    {
                        crate::workers::lease::Leased::Done(r) => r,
                        _ => continue,
                    };
                    if let Err(e) = built {
                        tracing::error!(image = %req.image_id, error = %e, "building an image from snapshots failed");
                        let msg = format!("building the image failed: {e:#}");
                        let _ = st
                            .db
                            .image_set_status(&req.image_id, "CreateFailed", 0, Some(&msg))
                            .await;
                        let _ = st.db.task_finish(&t.id, "Failed", None, Some(&msg)).await;
                        let _ = remove_dir(&st.images_dir().join(&req.image_id)).await;
                    } else {
                        tracing::info!(image = %req.image_id, "image built from snapshots and verified");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "image worker cannot read tasks"),
        }
        idle(2).await;
    }
}

/// Pending work that reads an image's or a snapshot's data: `Processing` tasks naming it.
async fn busy_tasks(st: &AppState) -> Result<Vec<TaskRecord>, ApiError> {
    Ok(st
        .db
        .task_list()
        .await
        .or_internal()?
        .into_iter()
        .filter(|t| t.status == "Processing")
        .collect())
}

/// DeleteImage. Refused while the image is being built or exported, and (`ImageUsingByInstance`) while
/// instances use it unless `force`: then each instance's overlays are flattened first, so the instances
/// keep working without the image. Removes the image's records and files; its snapshots stay.
pub async fn delete_image(st: &AppState, id: &str, force: bool) -> Result<(), ApiError> {
    let image = st
        .db
        .image_get(id)
        .await
        .or_internal()?
        .ok_or_else(|| image_not_found(id))?;
    if image.status == "Creating" {
        return Err(ApiError::new(
            "IncorrectImageStatus",
            403,
            format!(
                "image {id} is still being created: wait until it is Available or CreateFailed"
            ),
        ));
    }
    if let Some(t) = busy_tasks(st).await?.iter().find(|t| t.resource_id == id) {
        return Err(ApiError::new(
            "IncorrectImageStatus",
            403,
            format!(
                "image {id} is in use by task {} ({}): wait until it finishes",
                t.id, t.action
            ),
        ));
    }
    if validate::validation_in_progress(st, id)
        .await
        .or_internal()?
    {
        return Err(ApiError::new(
            "IncorrectImageStatus",
            403,
            format!(
                "image {id} is being boot-validated: wait until its ValidationStatus is Passed or Failed"
            ),
        ));
    }
    let users = st.db.instances_using_image(id).await.or_internal()?;
    if !users.is_empty() && !force {
        let ids: Vec<&str> = users.iter().map(|i| i.id.as_str()).collect();
        return Err(ApiError::new(
            "ImageUsingByInstance",
            403,
            format!(
                "image {id} is used by instances {}: delete them first, or pass Force=true (their disks are \
                 then made independent of the image)",
                ids.join(", ")
            ),
        ));
    }
    let driver = driver(st);
    for user in &users {
        let _guard = lock(&user.id).await;
        let Some(rec) = st.db.instance_get(&user.id).await.or_internal()? else {
            continue;
        };
        instances::prepare(st, &driver, &rec).await.or_internal()?;
        driver.flatten(&rec.id).await.or_internal()?;
        tracing::info!(instance = %rec.id, image = id, "instance disks made independent of the image");
    }
    validate::remove_validation_files(st, id).await;
    st.db.image_delete(id).await.or_internal()?;
    st.db.image_pipeline_delete(id).await.or_internal()?;
    remove_dir(&st.images_dir().join(id)).await.or_internal()?;
    tracing::info!(image = id, forced = force, "image deleted");
    Ok(())
}

/// Removes a directory tree; a missing one is fine. Retried once: a qcow2 conversion that was writing
/// into it when the records went away may create a file between the listing and the final rmdir.
async fn remove_dir(dir: &Path) -> std::io::Result<()> {
    for attempt in 0..2 {
        match tokio::fs::remove_dir_all(dir).await {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if attempt == 1 => return Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
    Ok(())
}

/// Snapshots that images use (`Usage` image): those image disks were built from, and those a pending
/// CreateImage task is building from.
pub async fn snapshots_in_use(
    st: &AppState,
) -> Result<(HashSet<String>, HashSet<String>), ApiError> {
    let built: HashSet<String> = st
        .db
        .image_disk_list_all()
        .await
        .or_internal()?
        .into_iter()
        .map(|d| d.snapshot_id)
        .collect();
    let mut building = HashSet::new();
    for t in busy_tasks(st).await? {
        if t.action == CREATE_IMAGE
            && let Ok(req) = serde_json::from_str::<CreateImageTask>(&t.request)
        {
            building.extend(req.snapshots);
        }
    }
    Ok((built, building))
}

/// DeleteSnapshot. Refused while its replication run is still in progress or an image is being built
/// from it; refused (`SnapshotCreatedImage`) while an image was built from it unless `force` (the
/// image's files are independent of the snapshot). Removes the snapshot's record and index object.
pub async fn delete_snapshot(st: &AppState, id: &str, force: bool) -> Result<(), ApiError> {
    let snap = st
        .db
        .snapshot_get(id)
        .await
        .or_internal()?
        .ok_or_else(|| snapshot_not_found(id))?;
    if let Some(run) = st.db.run_get(&snap.run_id).await.or_internal()?
        && (run.status == "Syncing" || run.status == "Processing")
    {
        return Err(ApiError::new(
            "IncorrectSnapshotStatus",
            403,
            format!(
                "snapshot {id} belongs to replication run {} which is still {}: wait until it ends",
                run.id, run.status
            ),
        ));
    }
    let (built, building) = snapshots_in_use(st).await?;
    if building.contains(id) {
        return Err(ApiError::new(
            "IncorrectSnapshotStatus",
            403,
            format!("an image is being built from snapshot {id}: wait until CreateImage finishes"),
        ));
    }
    if built.contains(id) && !force {
        return Err(ApiError::new(
            "SnapshotCreatedImage",
            403,
            format!(
                "images were built from snapshot {id}: delete them first, or pass Force=true (the images \
                 keep working; they no longer name a live snapshot)"
            ),
        ));
    }
    st.db.snapshot_delete(id).await.or_internal()?;
    let key = ChunkStore::index_key(&index_key(
        &snap.run_id,
        u32::try_from(snap.disk_index).or_internal()?,
    ))
    .or_internal()?;
    st.chunks.object_store().delete(&key).await.or_internal()?;
    tracing::info!(
        snapshot = id,
        forced = force,
        "snapshot deleted (its chunks stay until garbage collection)"
    );
    Ok(())
}
