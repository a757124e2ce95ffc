//! Source servers: `../shared/ref/smc-api.md` §2.4.

use ferry_api::wrap_list;
use ferry_db::{SourceFilter, SourceRecord};
use ferry_types::inventory::Inventory;
use serde_json::{Value, json};

use crate::app::OrInternal;
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

pub(super) async fn describe_source_servers(c: &Call<'_>) -> ActionResult {
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
