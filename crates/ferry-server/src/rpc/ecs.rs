//! ECS 2014-05-26 actions a migration touches (`../shared/ref/smc-api.md` §3.1).

use ferry_api::{ApiError, wrap_list};
use ferry_db::{TaskRecord, now};
use ferry_types::ids::TaskId;
use serde_json::{Value, json};

use super::{ActionResult, Call, paging, time_str};
use crate::app::OrInternal;
use crate::workers::ExportRequest;

pub async fn dispatch(c: &Call<'_>, action: &str) -> Option<ActionResult> {
    Some(match action {
        "DescribeRegions" => describe_regions(c),
        "DescribeImages" => describe_images(c).await,
        "ExportImage" => export_image(c).await,
        "DescribeTasks" => describe_tasks(c).await,
        "DescribeTaskAttribute" => describe_task_attribute(c).await,
        _ => return None,
    })
}

fn check_region(c: &Call<'_>) -> Result<(), ApiError> {
    let r = c.params.required("RegionId")?;
    if r != c.st.cfg.region_id {
        return Err(ApiError::new(
            "InvalidRegionId.NotFound",
            404,
            format!(
                "region {r:?} is not served here: this server's region is {:?}",
                c.st.cfg.region_id
            ),
        ));
    }
    Ok(())
}

fn describe_regions(c: &Call<'_>) -> ActionResult {
    let endpoint =
        c.st.cfg
            .public_url
            .clone()
            .unwrap_or_else(|| "ferry".to_owned());
    Ok(json!({
        "Regions": wrap_list("Region", vec![json!({
            "RegionId": c.st.cfg.region_id,
            "LocalName": "Ferry local target",
            "RegionEndpoint": endpoint,
            "Status": "available",
        })]),
    }))
}

async fn describe_images(c: &Call<'_>) -> ActionResult {
    check_region(c)?;
    let p = c.params;
    let (number, size, offset) = paging(p, 100)?;
    let id = p.get("ImageId");
    let name = p.get("ImageName");
    let statuses: Vec<String> = p
        .get("Status")
        .unwrap_or("Available")
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let all = statuses.iter().any(|s| s.eq_ignore_ascii_case("ALL"));
    let images: Vec<_> =
        c.st.db
            .image_list()
            .await
            .or_internal()?
            .into_iter()
            .filter(|i| id.is_none_or(|want| want.split(',').any(|w| w.trim() == i.id)))
            .filter(|i| name.is_none_or(|n| i.name.contains(n)))
            .filter(|i| all || statuses.iter().any(|s| s == &i.status))
            .collect();
    let total = images.len();
    let mut items = Vec::new();
    for i in images.into_iter().skip(offset as usize).take(size as usize) {
        let disks = c.st.db.image_disk_list(&i.id).await.or_internal()?;
        let mappings: Vec<Value> = disks
            .iter()
            .map(|d| {
                json!({
                    "Device": format!("/dev/xvd{}", (b'a' + d.disk_index as u8) as char),
                    "Size": (d.size_bytes as u64).div_ceil(1 << 30).to_string(),
                    "SnapshotId": d.snapshot_id,
                    "Type": if d.disk_index == 0 { "system" } else { "data" },
                    // qcow2 once derived from the verified raw image (shortly after the image is available).
                    "Format": if d.qcow2_path.is_some() { "qcow2" } else { "raw" },
                    "Progress": "100%",
                    // Ferry's additions.
                    "SizeBytes": d.size_bytes,
                    "RootDigest": d.root_digest,
                })
            })
            .collect();
        let mut v = json!({
            "ImageId": i.id,
            "ImageName": i.name,
            "Status": i.status,
            "Progress": format!("{}%", i.progress),
            "ImageOwnerAlias": "self",
            "OSType": "linux",
            "OSName": i.os_name,
            "Platform": i.platform,
            "Architecture": i.architecture,
            "BootMode": i.boot_mode,
            "Size": i.size_gib,
            "CreationTime": time_str(i.created_at),
            "Description": i.description,
            "Usage": "none",
            "IsCopied": false,
            "IsSelfShared": "",
            "DiskDeviceMappings": wrap_list("DiskDeviceMapping", mappings),
            "Tags": wrap_list("Tag", vec![]),
        });
        if let (Some(o), Some(job)) = (v.as_object_mut(), &i.job_id) {
            o.insert("JobId".into(), json!(job));
        }
        items.push(v);
    }
    Ok(json!({
        "RegionId": c.st.cfg.region_id,
        "PageNumber": number,
        "PageSize": size,
        "TotalCount": total,
        "Images": wrap_list("Image", items),
    }))
}

/// ExportImage: writes each disk of an image, converted, to `<OSSPrefix><ImageId>_disk<N>.<ext>` in the
/// bucket (with the local store, a folder under `<data>/buckets/`). Asynchronous: follow the `TaskId`.
async fn export_image(c: &Call<'_>) -> ActionResult {
    check_region(c)?;
    let p = c.params;
    let image_id = p.required("ImageId")?;
    let bucket = p.required("OSSBucket")?;
    let prefix = p.get("OSSPrefix").unwrap_or("");
    let format = p.get("ImageFormat").unwrap_or("raw");
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !bucket.starts_with('-');
    if !valid_bucket {
        return Err(ApiError::new(
            "InvalidOSSBucket.Malformed",
            400,
            "OSSBucket must be 3-63 lower-case letters, digits or '-'",
        ));
    }
    if prefix.contains("..") || prefix.starts_with('/') || prefix.contains('\\') {
        return Err(ApiError::invalid_parameter(
            "OSSPrefix",
            "must be a relative object prefix without '..'",
        ));
    }
    let parsed: Result<ferry_image::ImageFormat, _> = format.parse();
    let parsed = parsed.map_err(|_| {
        ApiError::invalid_parameter("ImageFormat", "must be one of raw, qcow2, vmdk, vhd, vhdx")
    })?;
    let image =
        c.st.db
            .image_get(image_id)
            .await
            .or_internal()?
            .ok_or_else(|| {
                ApiError::new(
                    "InvalidImageId.NotFound",
                    404,
                    format!("image {image_id} does not exist: list images with `ferry image list`"),
                )
            })?;
    if image.status != "Available" {
        return Err(ApiError::new(
            "IncorrectImageStatus",
            403,
            format!(
                "image {image_id} is {}, not Available: wait until it is built",
                image.status
            ),
        ));
    }
    let req = ExportRequest {
        image_id: image.id.clone(),
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        format: parsed.name().to_owned(),
    };
    let task = TaskRecord {
        id: TaskId::generate().to_string(),
        action: "ExportImage".to_owned(),
        status: "Processing".to_owned(),
        progress: 0,
        resource_id: image.id,
        request: serde_json::to_string(&req).or_internal()?,
        result: None,
        error: None,
        created_at: now(),
        finished_at: None,
    };
    c.st.db.task_create(&task).await.or_internal()?;
    c.st.wake.notify_waiters();
    Ok(json!({ "TaskId": task.id, "RegionId": c.st.cfg.region_id }))
}

fn task_json(t: &TaskRecord) -> Value {
    let mut v = json!({
        "TaskId": t.id,
        "TaskAction": t.action,
        "TaskStatus": t.status,
        "TaskProcess": format!("{}%", t.progress),
        "CreationTime": time_str(t.created_at),
        "ResourceId": t.resource_id,
    });
    if let Some(o) = v.as_object_mut() {
        if let Some(f) = t.finished_at {
            o.insert("FinishedTime".into(), json!(time_str(f)));
        }
        if let Some(r) = &t.result {
            // Ferry's addition: what the task produced (for exports, the files written).
            o.insert("Result".into(), json!(r));
        }
        if let Some(e) = &t.error {
            o.insert("ErrorMessage".into(), json!(e));
        }
    }
    v
}

async fn describe_task_attribute(c: &Call<'_>) -> ActionResult {
    check_region(c)?;
    let id = c.params.required("TaskId")?;
    let t = c.st.db.task_get(id).await.or_internal()?.ok_or_else(|| {
        ApiError::new(
            "InvalidTaskId.NotFound",
            404,
            format!("task {id} does not exist"),
        )
    })?;
    Ok(task_json(&t))
}

async fn describe_tasks(c: &Call<'_>) -> ActionResult {
    check_region(c)?;
    let p = c.params;
    let (number, size, offset) = paging(p, 100)?;
    let ids: Vec<String> = p
        .get("TaskIds")
        .map(|s| s.split(',').map(|x| x.trim().to_owned()).collect())
        .unwrap_or_default();
    let action = p.get("TaskAction");
    let status = p.get("TaskStatus");
    let tasks: Vec<TaskRecord> =
        c.st.db
            .task_list()
            .await
            .or_internal()?
            .into_iter()
            .filter(|t| ids.is_empty() || ids.contains(&t.id))
            .filter(|t| action.is_none_or(|a| a == t.action))
            .filter(|t| status.is_none_or(|s| s == t.status))
            .collect();
    let total = tasks.len();
    let items: Vec<Value> = tasks
        .iter()
        .skip(offset as usize)
        .take(size as usize)
        .map(task_json)
        .collect();
    Ok(json!({
        "RegionId": c.st.cfg.region_id,
        "PageNumber": number,
        "PageSize": size,
        "TotalCount": total,
        "TaskSet": wrap_list("Task", items),
    }))
}
