//! Replication jobs: `../shared/ref/smc-api.md` §2.5–2.6.

use ferry_api::{ApiError, wrap_list};
use ferry_db::{JobFilter, JobRecord};
use ferry_types::protocol::RunProgress;
use serde_json::{Value, json};

use super::check_name;
use crate::app::{OrInternal, jobs};
use crate::rpc::{ActionResult, Call, paging, time_str};

pub(super) async fn create_replication_job(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let source_id = p.required("SourceId")?.to_owned();
    let region_id = p.required("RegionId")?.to_owned();
    let name = p.get("Name").map(str::to_owned);
    if let Some(n) = &name {
        check_name("Name", n)?;
    }
    let target = p.get("TargetType").unwrap_or("Image");
    if !target.eq_ignore_ascii_case("Image") {
        return Err(ApiError::new(
            "UnsupportedOperation",
            400,
            format!("TargetType {target:?} is not supported yet: use Image"),
        ));
    }
    let run_once = p.get_bool("RunOnce")?.unwrap_or(true);
    let frequency = p.get_int_in("Frequency", 1, 168)?;
    let max_images = p.get_int_in("MaxNumberOfImageToKeep", 1, 10)?;
    if !run_once && (frequency.is_none() || max_images.is_none()) {
        return Err(ApiError::missing_parameter(if frequency.is_none() {
            "Frequency"
        } else {
            "MaxNumberOfImageToKeep"
        }));
    }
    let scheduled = p
        .get_time("ScheduledStartTime")?
        .map(|t| t.unix_timestamp());
    let valid = p.get_time("ValidTime")?.map(|t| t.unix_timestamp());
    let params = p.get("ReplicationParameters").unwrap_or("").to_owned();
    let id = jobs::create(
        c.st,
        jobs::NewJob {
            source_id,
            region_id,
            name,
            description: p.get("Description").unwrap_or("").to_owned(),
            image_name: p.get("ImageName").map(str::to_owned),
            run_once,
            frequency,
            max_images,
            replication_parameters: params,
            scheduled_start_time: scheduled,
            valid_time: valid,
            client_token: p.get("ClientToken").map(str::to_owned),
        },
    )
    .await?;
    Ok(json!({ "JobId": id.to_string() }))
}

pub(super) async fn start_replication_job(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("JobId")?;
    jobs::start(c.st, id, "Manual").await?;
    Ok(json!({}))
}

pub(super) async fn stop_replication_job(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("JobId")?;
    jobs::stop(c.st, id).await?;
    Ok(json!({}))
}

async fn job_json(c: &Call<'_>, j: &JobRecord) -> Result<Value, ApiError> {
    let runs = c.st.db.run_list(&j.id).await.or_internal()?;
    let runs: Vec<Value> = runs
        .iter()
        .map(|r| {
            let p: RunProgress = serde_json::from_str(&r.progress).unwrap_or_default();
            let mut v = json!({
                "StartTime": time_str(r.started_at),
                "Type": r.kind,
                // Ferry's additions: the run's own status and figures.
                "RunId": r.id,
                "RunStatus": r.status,
                "BytesTotal": p.bytes_total,
                "BytesScanned": p.bytes_scanned,
                "BytesSent": p.bytes_sent,
                "BytesUploaded": p.bytes_uploaded_logical,
                "BytesZero": p.bytes_zero,
                "BytesUnchanged": p.bytes_unchanged,
                "BytesDeduplicated": p.bytes_dedup,
                "Throughput": p.throughput_bps,
                "ElapsedMs": p.elapsed_ms,
            });
            if let Some(o) = v.as_object_mut() {
                if let Some(e) = r.ended_at {
                    o.insert("EndTime".into(), json!(time_str(e)));
                }
                if let Some(i) = &r.image_id {
                    o.insert("ImageId".into(), json!(i));
                }
                if let Some(eta) = p.eta_secs {
                    o.insert("Eta".into(), json!(eta));
                }
                if let Some(e) = &r.error {
                    o.insert("ErrorMessage".into(), json!(e));
                }
            }
            v
        })
        .collect();
    let mut v = json!({
        "JobId": j.id,
        "Name": j.name,
        "Description": j.description,
        "SourceId": j.source_id,
        "RegionId": j.region_id,
        "Status": j.status,
        "Progress": j.progress,
        "JobType": j.job_type,
        "NetMode": 0,
        "TargetType": j.target_type,
        "ImageName": j.image_name,
        "RunOnce": j.run_once != 0,
        "ReplicationParameters": j.replication_parameters,
        "CreationTime": time_str(j.created_at),
        "ReplicationJobRuns": wrap_list("ReplicationJobRun", runs),
        "Tags": wrap_list("Tag", vec![]),
        "SystemDiskParts": wrap_list("SystemDiskPart", vec![]),
        "DataDisks": wrap_list("DataDisk", vec![]),
    });
    if let Some(o) = v.as_object_mut() {
        let opt_str = [
            ("BusinessStatus", j.business_status.clone()),
            ("ErrorCode", j.error_code.clone()),
            ("StatusInfo", j.status_info.clone()),
            ("ImageId", j.image_id.clone()),
            ("StartTime", j.start_time.map(time_str)),
            ("EndTime", j.end_time.map(time_str)),
            ("ScheduledStartTime", j.scheduled_start_time.map(time_str)),
            ("ValidTime", j.valid_time.map(time_str)),
        ];
        for (k, val) in opt_str {
            if let Some(val) = val {
                o.insert(k.into(), json!(val));
            }
        }
        if let Some(f) = j.frequency {
            o.insert("Frequency".into(), json!(f));
        }
        if let Some(m) = j.max_images {
            o.insert("MaxNumberOfImageToKeep".into(), json!(m));
        }
    }
    Ok(v)
}

pub(super) async fn describe_replication_jobs(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let (number, size, offset) = paging(p, 50)?;
    let filter = JobFilter {
        ids: p.get_list("JobId"),
        source_ids: p.get_list("SourceId"),
        name: p.get("Name").map(str::to_owned),
        status: p.get("Status").map(str::to_owned),
        business_status: p.get("BusinessStatus").map(str::to_owned),
    };
    let (jobs, total) =
        c.st.db
            .job_list(&filter, offset, size)
            .await
            .or_internal()?;
    let mut items = Vec::with_capacity(jobs.len());
    for j in &jobs {
        items.push(job_json(c, j).await?);
    }
    Ok(json!({
        "PageNumber": number,
        "PageSize": size,
        "TotalCount": total,
        "ReplicationJobs": wrap_list("ReplicationJob", items),
    }))
}
