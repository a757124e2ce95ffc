//! Source servers: `../shared/ref/smc-api.md` §2.4 (Describe, Modify, Delete).

use ferry_api::{ApiError, wrap_list};
use ferry_db::{SourceFilter, SourceRecord};
use ferry_types::inventory::Inventory;
use serde_json::{Value, json};

use super::check_name;
use super::tags::{ResourceType, decorate, restrict_ids};
use crate::app::{OrInternal, jobs};
use crate::rpc::{ActionResult, Call, paging, time_str};

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

/// `SourceServer.State` values (smc-api.md §2.9).
const SOURCE_STATES: &[&str] = &["Available", "InUse", "Unavailable", "Deleting"];

pub(super) async fn describe_source_servers(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let (number, size, offset) = paging(p, 50)?;
    let ids = p.get_list("SourceId");
    if ids.len() > 50 {
        return Err(ApiError::invalid_parameter(
            "SourceId.N",
            format!("lists {} values; at most 50 are allowed", ids.len()),
        ));
    }
    let state = p.get("State").filter(|v| !v.is_empty()).map(str::to_owned);
    if let Some(v) = &state
        && !SOURCE_STATES.contains(&v.as_str())
    {
        return Err(ApiError::invalid_parameter(
            "State",
            format!(
                "{v:?} is not a source server state; use one of {}",
                SOURCE_STATES.join(", ")
            ),
        ));
    }
    let related_job_types = p
        .get_list("RelatedJobType")
        .iter()
        .map(|t| match t.parse::<i64>() {
            Ok(n) if (0..=3).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid_parameter(
                "RelatedJobType.N",
                format!("{t:?} is not a job type; use 0, 1, 2 or 3"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Tag.N and WorkgroupId narrow the IDs; when nothing can match, the page is empty.
    let workgroup = p.get("WorkgroupId").filter(|v| !v.is_empty());
    let Some(ids) = restrict_ids(c, ResourceType::SourceServer, ids, workgroup).await? else {
        return Ok(json!({
            "PageNumber": number,
            "PageSize": size,
            "TotalCount": 0,
            "SourceServers": wrap_list("SourceServer", vec![]),
        }));
    };
    let filter = SourceFilter {
        ids,
        name: p.get("Name").filter(|v| !v.is_empty()).map(str::to_owned),
        state,
        job_id: p.get("JobId").filter(|v| !v.is_empty()).map(str::to_owned),
        related_job_types,
    };
    let (items, total) =
        c.st.db
            .source_list(&filter, offset, size)
            .await
            .or_internal()?;
    let mut items: Vec<Value> = items.iter().map(|s| source_json(c, s)).collect();
    decorate(
        c,
        ResourceType::SourceServer,
        &mut items,
        "SourceId",
        "SourceId",
    )
    .await?;
    Ok(json!({
        "PageNumber": number,
        "PageSize": size,
        "TotalCount": total,
        "SourceServers": wrap_list("SourceServer", items),
    }))
}

pub(super) async fn modify_source_server_attribute(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let id = p.required("SourceId")?;
    let name = p.get("Name").filter(|v| !v.is_empty());
    if let Some(n) = name {
        check_name("Name", n)?;
    }
    let description = p.get("Description").filter(|v| !v.is_empty());
    if let Some(d) = description
        && (d.chars().count() > 256 || d.starts_with("http://") || d.starts_with("https://"))
    {
        return Err(ApiError::invalid_parameter(
            "Description",
            "must be at most 256 characters and not start with http:// or https://",
        ));
    }
    jobs::modify_source(c.st, id, name, description).await?;
    Ok(json!({}))
}

pub(super) async fn delete_source_server(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("SourceId")?;
    let force = c.params.get_bool("Force")?.unwrap_or(false);
    jobs::delete_source(c.st, id, force).await?;
    Ok(json!({}))
}
