//! ECS snapshot actions: DescribeSnapshots, DeleteSnapshot.
//!
//! A Ferry snapshot is one disk of one replication run (table `snapshots`): a committed chunk index and its
//! root digest. It exists only once committed, so its status is always `accomplished`. Its name is derived:
//! `<job name>-run<seq>-disk<N>`; its source disk ID is `<source id>-disk<N>`.

use std::collections::HashMap;

use ferry_api::{ApiError, wrap_list};
use ferry_db::SnapshotRecord;
use serde_json::{Value, json};

use super::{Paging, check_region, filters_on_tags, json_ids, no_tags};
use crate::app::OrInternal;
use crate::compute::images::snapshots_in_use;
use crate::rpc::{ActionResult, Call, time_str};

fn source_disk_id(s: &SnapshotRecord) -> String {
    format!("{}-disk{}", s.source_id, s.disk_index)
}

/// DescribeSnapshots: `SnapshotIds` (JSON array), `SnapshotName`, `Status`
/// (progressing|accomplished|failed|all), `SnapshotType` (auto|user|all: Ferry's are `user`),
/// `SourceDiskType` (system|data), `Usage` (image|disk|image_disk|none), `DiskId`, `InstanceId` (no Ferry
/// snapshot belongs to an instance), `Tag.N`; paging by `PageNumber`/`PageSize` or `NextToken`/`MaxResults`.
pub async fn describe_snapshots(c: &Call<'_>) -> ActionResult {
    check_region(c)?;
    let p = c.params;
    let paging = Paging::from_params(p)?;
    let ids = json_ids(p, "SnapshotIds")?;
    let opt = |n: &str| p.get(n).filter(|s| !s.is_empty());
    let name = opt("SnapshotName");
    let status = opt("Status").unwrap_or("all");
    if !["progressing", "accomplished", "failed", "all"].contains(&status) {
        return Err(ApiError::invalid_parameter(
            "Status",
            "must be progressing, accomplished, failed or all",
        ));
    }
    let kind = opt("SnapshotType").unwrap_or("all");
    if !["auto", "user", "all"].contains(&kind) {
        return Err(ApiError::invalid_parameter(
            "SnapshotType",
            "must be auto, user or all",
        ));
    }
    let disk_type = opt("SourceDiskType").map(str::to_ascii_lowercase);
    if disk_type
        .as_deref()
        .is_some_and(|t| t != "system" && t != "data")
    {
        return Err(ApiError::invalid_parameter(
            "SourceDiskType",
            "must be system or data",
        ));
    }
    let usage = opt("Usage");
    if usage.is_some_and(|u| !["image", "disk", "image_disk", "none"].contains(&u)) {
        return Err(ApiError::invalid_parameter(
            "Usage",
            "must be image, disk, image_disk or none",
        ));
    }
    let disk_id = opt("DiskId");
    let none_can_match = opt("InstanceId").is_some() || filters_on_tags(p);

    let (built, building) = snapshots_in_use(c.st).await?;
    let used = |id: &str| built.contains(id) || building.contains(id);
    let snaps = c.st.db.snapshot_list().await.or_internal()?;
    let mut names: HashMap<String, String> = HashMap::new();
    let mut seqs: HashMap<String, i64> = HashMap::new();
    for s in &snaps {
        if !names.contains_key(&s.job_id) {
            let n =
                c.st.db
                    .job_get(&s.job_id)
                    .await
                    .or_internal()?
                    .map(|j| j.name)
                    .unwrap_or_else(|| s.job_id.clone());
            names.insert(s.job_id.clone(), n);
        }
        if !seqs.contains_key(&s.run_id) {
            let seq =
                c.st.db
                    .run_get(&s.run_id)
                    .await
                    .or_internal()?
                    .map(|r| r.seq)
                    .unwrap_or(0);
            seqs.insert(s.run_id.clone(), seq);
        }
    }
    let snap_name = |s: &SnapshotRecord| {
        format!(
            "{}-run{}-disk{}",
            names.get(&s.job_id).map(String::as_str).unwrap_or(""),
            seqs.get(&s.run_id).copied().unwrap_or(0),
            s.disk_index
        )
    };
    let matched: Vec<&SnapshotRecord> = snaps
        .iter()
        .filter(|_| !none_can_match)
        .filter(|_| status == "all" || status == "accomplished")
        .filter(|_| kind != "auto")
        .filter(|s| ids.as_ref().is_none_or(|ids| ids.contains(&s.id)))
        .filter(|s| name.is_none_or(|n| snap_name(s) == n))
        .filter(|s| {
            disk_type
                .as_deref()
                .is_none_or(|t| (t == "system") == (s.disk_index == 0))
        })
        .filter(|s| {
            usage.is_none_or(|u| match u {
                "image" => used(&s.id),
                "none" => !used(&s.id),
                // Ferry has no cloud disks: no snapshot is used by one.
                _ => false,
            })
        })
        .filter(|s| disk_id.is_none_or(|d| d == source_disk_id(s)))
        .collect();
    let total = matched.len();
    let items: Vec<Value> = matched
        .iter()
        .skip(paging.offset)
        .take(paging.size)
        .map(|s| {
            json!({
                "SnapshotId": s.id,
                "SnapshotName": snap_name(s),
                "Description": "",
                "Status": "accomplished",
                "Progress": "100%",
                "SnapshotType": "user",
                "Category": "standard",
                "InstantAccess": false,
                "Encrypted": false,
                "SourceDiskId": source_disk_id(s),
                // ECS declares SourceDiskSize a string (GiB).
                "SourceDiskSize": crate::compute::gib_ceil(s.disk_size).to_string(),
                "SourceDiskType": if s.disk_index == 0 { "system" } else { "data" },
                "SourceStorageType": "disk",
                "Usage": if used(&s.id) { "image" } else { "none" },
                "CreationTime": time_str(s.created_at),
                "LastModifiedTime": time_str(s.created_at),
                "Tags": no_tags(),
                // Ferry's additions.
                "JobId": s.job_id,
                "SourceId": s.source_id,
                "DiskIndex": s.disk_index,
                "SizeBytes": s.disk_size,
                "ChunkSize": s.chunk_size,
                "RootDigest": s.root_digest,
            })
        })
        .collect();
    let mut out = json!({
        "RegionId": c.st.cfg.region_id,
        "Snapshots": wrap_list("Snapshot", items),
    });
    paging.answer(total, &mut out);
    Ok(out)
}

/// DeleteSnapshot: `SnapshotCreatedImage` (403) while an image was built from it unless `Force`.
pub async fn delete_snapshot(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("SnapshotId")?;
    let force = c.params.get_bool("Force")?.unwrap_or(false);
    crate::compute::images::delete_snapshot(c.st, id, force).await?;
    Ok(json!({}))
}
