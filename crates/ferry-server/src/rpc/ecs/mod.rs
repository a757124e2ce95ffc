//! ECS 2014-05-26 actions a migration touches (`../shared/ref/smc-api.md` §3.1), one file per resource:
//! images (`images`), snapshots (`snapshots`), instances (`instances`); regions, ExportImage and the task
//! actions are here. Handlers parse and check parameters, then call the application layer
//! (`crate::compute`, `crate::workers`).

mod images;
mod instances;
mod snapshots;

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
        "DescribeImages" => images::describe_images(c).await,
        "CreateImage" => images::create_image(c).await,
        "DeleteImage" => images::delete_image(c).await,
        "DescribeSnapshots" => snapshots::describe_snapshots(c).await,
        "DeleteSnapshot" => snapshots::delete_snapshot(c).await,
        "RunInstances" => instances::run_instances(c).await,
        "CreateInstance" => instances::create_instance(c).await,
        "DescribeInstances" => instances::describe_instances(c).await,
        "StartInstance" => instances::start_instance(c).await,
        "StopInstance" => instances::stop_instance(c).await,
        "DeleteInstance" => instances::delete_instance(c).await,
        "GetInstanceConsoleOutput" => instances::get_instance_console_output(c).await,
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

/// Paging of the actions that take either `PageNumber`/`PageSize` or `NextToken`/`MaxResults`.
pub(super) struct Paging {
    pub offset: usize,
    pub size: usize,
    /// `NextToken`/`MaxResults` were used: answer with `NextToken` instead of `PageNumber`/`PageSize`.
    pub token: bool,
    pub number: i64,
}

impl Paging {
    /// `NextToken`/`MaxResults` (1–100, default 10) when either is given, else `PageNumber`/`PageSize`
    /// (1–100, default 10). A `NextToken` is the offset of the next item, as this server issued it.
    pub fn from_params(p: &ferry_api::Params) -> Result<Paging, ApiError> {
        let next = p.get("NextToken").filter(|t| !t.is_empty());
        if next.is_some() || p.get("MaxResults").is_some_and(|m| !m.is_empty()) {
            let size = p.get_int_in("MaxResults", 1, 100)?.unwrap_or(10);
            let offset = match next {
                None => 0,
                Some(t) => t.parse::<usize>().map_err(|_| {
                    ApiError::invalid_parameter(
                        "NextToken",
                        "is not a token this server issued: pass the NextToken of the previous page",
                    )
                })?,
            };
            return Ok(Paging {
                offset,
                size: size as usize,
                token: true,
                number: 1,
            });
        }
        let (number, size, offset) = paging(p, 100)?;
        Ok(Paging {
            offset: offset as usize,
            size: size as usize,
            token: false,
            number,
        })
    }

    /// Adds the paging fields of the answer for `total` items.
    pub fn answer(&self, total: usize, out: &mut Value) {
        let Some(o) = out.as_object_mut() else {
            return;
        };
        o.insert("TotalCount".into(), json!(total));
        if self.token {
            let end = self.offset + self.size;
            let next = if end < total {
                end.to_string()
            } else {
                String::new()
            };
            o.insert("NextToken".into(), json!(next));
        } else {
            o.insert("PageNumber".into(), json!(self.number));
            o.insert("PageSize".into(), json!(self.size));
        }
    }
}

/// A parameter holding a JSON array of IDs (ECS's `InstanceIds`, `SnapshotIds`), at most 100.
pub(super) fn json_ids(p: &ferry_api::Params, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    let Some(text) = p.get(name).filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    let ids: Vec<String> = serde_json::from_str(text).map_err(|_| {
        ApiError::invalid_parameter(name, r#"must be a JSON array of IDs, e.g. ["i-1","i-2"]"#)
    })?;
    if ids.len() > 100 {
        return Err(ApiError::invalid_parameter(name, "lists more than 100 IDs"));
    }
    Ok(Some(ids))
}

/// ECS's empty tag list (Ferry keeps no tags on ECS resources yet).
pub(super) fn no_tags() -> Value {
    wrap_list("Tag", vec![])
}

/// True when the request filters on tags (`Tag.N.Key`): Ferry's ECS resources have none, so nothing
/// matches.
pub(super) fn filters_on_tags(p: &ferry_api::Params) -> bool {
    !p.indices("Tag").is_empty()
}
