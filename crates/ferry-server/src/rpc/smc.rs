//! SMC 2019-06-01 actions (`../shared/ref/smc-api.md` §2).

use ferry_api::{ApiError, wrap_list};
use ferry_db::{JobFilter, JobRecord, SourceFilter, SourceRecord, now};
use ferry_types::inventory::Inventory;
use ferry_types::protocol::RunProgress;
use serde_json::{Value, json};

use super::{ActionResult, Call, paging, time_str};
use crate::app::{OrInternal, activation, jobs};

pub async fn dispatch(c: &Call<'_>, action: &str) -> Option<ActionResult> {
    Some(match action {
        "CreateAccessToken" => create_access_token(c).await,
        "ListAccessTokens" => list_access_tokens(c).await,
        "DisableAccessToken" => disable_access_token(c).await,
        "DeleteAccessToken" => delete_access_token(c).await,
        "DescribeSourceServers" => describe_source_servers(c).await,
        "CreateReplicationJob" => create_replication_job(c).await,
        "StartReplicationJob" => start_replication_job(c).await,
        "StopReplicationJob" => stop_replication_job(c).await,
        "DescribeReplicationJobs" => describe_replication_jobs(c).await,
        _ => return None,
    })
}

/// SMC's name rule: 2–128 characters, starts with a letter, no `http(s)://` prefix.
fn check_name(param: &str, value: &str) -> Result<(), ApiError> {
    let len = value.chars().count();
    let starts_ok = value.chars().next().is_some_and(|ch| ch.is_alphabetic());
    if !(2..=128).contains(&len)
        || !starts_ok
        || value.starts_with("http://")
        || value.starts_with("https://")
    {
        return Err(ApiError::invalid_parameter(
            param,
            "must be 2 to 128 characters long and start with a letter (not http:// or https://)",
        ));
    }
    Ok(())
}

async fn create_access_token(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let name = p.get("Name").unwrap_or("");
    if !name.is_empty() {
        check_name("Name", name)?;
    }
    let count = p.get_int_in("Count", 1, 1000)?.unwrap_or(100);
    let ttl = p.get_int_in("TimeToLiveInDays", 1, 90)?.unwrap_or(30);
    let name = if name.is_empty() {
        "activation-code"
    } else {
        name
    };
    let new =
        activation::create(c.st, name, p.get("Description").unwrap_or(""), count, ttl).await?;
    Ok(json!({ "AccessTokenId": new.id.to_string(), "AccessTokenCode": new.code }))
}

async fn list_access_tokens(c: &Call<'_>) -> ActionResult {
    let ids = c.params.get_list("AccessTokenId");
    let name = c.params.get("Name");
    let status = c.params.get("Status");
    let at = now();
    let items: Vec<Value> =
        c.st.db
            .activation_code_list()
            .await
            .or_internal()?
            .into_iter()
            .filter(|t| ids.is_empty() || ids.contains(&t.id))
            .filter(|t| name.is_none_or(|n| n == t.name))
            .filter(|t| status.is_none_or(|s| s == activation::status(t, at)))
            .map(|t| {
                json!({
                    "AccessTokenId": t.id,
                    "Name": t.name,
                    "Description": t.description,
                    "Count": t.max_count.to_string(),
                    "RegisteredCount": t.registered_count.to_string(),
                    "TimeToLiveInDays": t.ttl_days.to_string(),
                    "CreationTime": time_str(t.created_at),
                    "Status": activation::status(&t, at),
                })
            })
            .collect();
    // SMC swaps PageNumber and PageSize in this action's response (smc-api.md §2.3); so do we.
    Ok(json!({
        "TotalCount": items.len(),
        "PageNumber": items.len().max(1),
        "PageSize": 1,
        "AccessTokens": wrap_list("AccessToken", items),
    }))
}

fn token_not_found(id: &str) -> ApiError {
    ApiError::new(
        "InvalidAccessTokenId.NotFound",
        404,
        format!("activation code {id} does not exist: list them with `ferry activation-code list`"),
    )
}

async fn disable_access_token(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("AccessTokenId")?;
    if !c.st.db.activation_code_disable(id).await.or_internal()? {
        return Err(token_not_found(id));
    }
    Ok(json!({}))
}

async fn delete_access_token(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("AccessTokenId")?;
    if !c.st.db.activation_code_delete(id).await.or_internal()? {
        return Err(token_not_found(id));
    }
    Ok(json!({}))
}

/// A partition in SMC's shape: `Device` is `<disk>_<partition>`, both from 0.
fn part_json(disk: u32, p: &ferry_types::inventory::Partition, need: bool) -> Value {
    json!({
        "Device": format!("{disk}_{}", p.number.saturating_sub(1)),
        "Path": p.filesystem.as_ref().and_then(|f| f.mount_point.clone()).unwrap_or_default(),
        "SizeBytes": p.size_bytes,
        "CanBlock": true,
        "Need": need,
    })
}

fn source_json(c: &Call<'_>, s: &SourceRecord) -> Value {
    let inv: Option<Inventory> = serde_json::from_str(&s.inventory).ok();
    let mut v = json!({
        "SourceId": s.id,
        "Name": s.name,
        "Description": s.description,
        "State": s.state,
        "CreationTime": time_str(s.created_at),
        "AgentVersion": s.agent_version,
        "HeartbeatRate": c.st.cfg.heartbeat_interval_secs,
        "ReplicationDriver": "SMT",
        "Tags": wrap_list("Tag", vec![]),
        // Ferry's additions, JSON text like SMC's SystemInfo.
        "Inventory": s.inventory,
        "Prechecks": s.prechecks,
        "HeartbeatTime": time_str(s.heartbeat_at),
    });
    let obj = v.as_object_mut();
    if let Some(obj) = obj {
        if let Some(e) = &s.error_code {
            obj.insert("ErrorCode".into(), json!(e));
        }
        if let Some(i) = &s.status_info {
            obj.insert("StatusInfo".into(), json!(i));
        }
        if let Some(j) = &s.job_id {
            obj.insert("JobId".into(), json!(j));
        }
        if let Some(inv) = inv {
            obj.insert("Platform".into(), json!(inv.os.name));
            obj.insert("Architecture".into(), json!(inv.architecture));
            let ipv4: Vec<&str> = inv
                .network
                .iter()
                .flat_map(|n| n.addresses.iter())
                .filter(|a| a.contains('.') && !a.starts_with("127."))
                .map(String::as_str)
                .collect();
            let system_info = json!({
                "agent_mode": "daemon",
                "agent_type": "ferry",
                "hostname": inv.hostname,
                "ipv4": ipv4.join(","),
                "cores": inv.cpus.to_string(),
                "memory": (inv.memory_bytes >> 30).to_string(),
            });
            obj.insert("SystemInfo".into(), json!(system_info.to_string()));
            let gib = |b: u64| b.div_ceil(1 << 30);
            if let Some(sys) = inv.disks.iter().find(|d| d.index == 0) {
                obj.insert("SystemDiskSize".into(), json!(gib(sys.size_bytes)));
                let parts: Vec<Value> = sys
                    .partitions
                    .iter()
                    .map(|p| part_json(0, p, true))
                    .collect();
                obj.insert("SystemDiskParts".into(), json!({ "SystemDiskPart": parts }));
            }
            let data: Vec<Value> = inv
                .disks
                .iter()
                .filter(|d| d.index != 0)
                .map(|d| {
                    let parts: Vec<Value> = d.partitions.iter().map(|p| part_json(d.index, p, false)).collect();
                    json!({ "Index": d.index, "Path": d.path, "Size": gib(d.size_bytes), "Parts": wrap_list("Part", parts) })
                })
                .collect();
            obj.insert("DataDisks".into(), wrap_list("DataDisk", data));
        }
    }
    v
}

async fn describe_source_servers(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let (number, size, offset) = paging(p, 50)?;
    let filter = SourceFilter {
        ids: p.get_list("SourceId"),
        name: p.get("Name").map(str::to_owned),
        state: p.get("State").map(str::to_owned),
        job_id: p.get("JobId").map(str::to_owned),
    };
    let (items, total) =
        c.st.db
            .source_list(&filter, offset, size)
            .await
            .or_internal()?;
    let items: Vec<Value> = items.iter().map(|s| source_json(c, s)).collect();
    Ok(json!({
        "PageNumber": number,
        "PageSize": size,
        "TotalCount": total,
        "SourceServers": wrap_list("SourceServer", items),
    }))
}

async fn create_replication_job(c: &Call<'_>) -> ActionResult {
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

async fn start_replication_job(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("JobId")?;
    jobs::start(c.st, id, "Manual").await?;
    Ok(json!({}))
}

async fn stop_replication_job(c: &Call<'_>) -> ActionResult {
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

async fn describe_replication_jobs(c: &Call<'_>) -> ActionResult {
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
