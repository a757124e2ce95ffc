//! ECS instance actions: RunInstances, CreateInstance, DescribeInstances, StartInstance, StopInstance,
//! DeleteInstance, and GetInstanceConsoleOutput. Instances run on this server's QEMU (`docs/instances.md`);
//! start and stop are asynchronous, as in ECS: follow `Status` with DescribeInstances.

use std::collections::HashMap;

use base64::Engine as _;
use ferry_api::{ApiError, wrap_list};
use ferry_db::InstanceRecord;
use serde_json::{Value, json};

use super::{Paging, check_region, filters_on_tags, json_ids, no_tags};
use crate::app::OrInternal;
use crate::compute::instances::{self as app, DEFAULT_INSTANCE_TYPE, LaunchRequest};
use crate::rpc::{ActionResult, Call, time_str};

/// Parameters ECS accepts that need networking, credentials or disks Ferry does not provide yet: refused
/// with a clear message rather than silently ignored.
fn refuse_unsupported(c: &Call<'_>) -> Result<(), ApiError> {
    let p = c.params;
    let given = |n: &str| p.get(n).is_some_and(|v| !v.is_empty());
    if given("SecurityGroupId") || !p.get_list("SecurityGroupIds").is_empty() {
        return Err(ApiError::new(
            "InvalidSecurityGroupId.NotFound",
            404,
            "Ferry has no security groups: instances are isolated (no network). Omit SecurityGroupId",
        ));
    }
    if given("VSwitchId") {
        return Err(ApiError::new(
            "InvalidVSwitchId.NotFound",
            404,
            "Ferry has no vSwitches: instances are isolated (no network). Omit VSwitchId",
        ));
    }
    if p.get_i64("InternetMaxBandwidthOut")?.is_some_and(|b| b > 0) {
        return Err(ApiError::invalid_parameter(
            "InternetMaxBandwidthOut",
            "instances have no network yet, so no public IP: omit it or pass 0",
        ));
    }
    for name in ["Password", "KeyPairName", "UserData"] {
        if given(name) {
            return Err(ApiError::invalid_parameter(
                name,
                "setting guest credentials or user data is not supported yet: the guest keeps the \
                 source server's accounts",
            ));
        }
    }
    if !p.indices("DataDisk").is_empty() {
        return Err(ApiError::invalid_parameter(
            "DataDisk",
            "extra data disks are not supported: an instance gets the image's disks",
        ));
    }
    Ok(())
}

/// Name rule shared by InstanceName (2–128) and HostName (2–64, no spaces).
fn check_name(param: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let len = value.chars().count();
    let ok = (2..=max).contains(&len)
        && value.chars().next().is_some_and(char::is_alphabetic)
        && !value.starts_with("http://")
        && !value.starts_with("https://")
        && value
            .chars()
            .all(|ch| ch.is_alphanumeric() || matches!(ch, '.' | '_' | '-' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_parameter(
            param,
            format!(
                "must be 2 to {max} characters, start with a letter and contain only letters, digits, \
                 '.', '_', '-' and ':'"
            ),
        ))
    }
}

/// The shared parameters of RunInstances and CreateInstance.
fn launch_request(
    c: &Call<'_>,
    action: &'static str,
    amount: u32,
    auto_start: bool,
) -> Result<LaunchRequest, ApiError> {
    check_region(c)?;
    let p = c.params;
    refuse_unsupported(c)?;
    let image_id = p.required("ImageId")?.to_owned();
    let type_name = p
        .get("InstanceType")
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_INSTANCE_TYPE);
    let instance_type = ferry_vm::instance_type(type_name).ok_or_else(|| {
        let names: Vec<&str> = ferry_vm::INSTANCE_TYPES.iter().map(|t| t.name).collect();
        ApiError::new(
            "InvalidInstanceType.ValueNotSupported",
            400,
            format!(
                "instance type {type_name:?} is not offered here; use one of {}",
                names.join(", ")
            ),
        )
    })?;
    let name = p.get("InstanceName").filter(|s| !s.is_empty());
    if let Some(n) = name {
        check_name("InstanceName", n, 128)?;
    }
    let host_name = p.get("HostName").filter(|s| !s.is_empty());
    if let Some(h) = host_name {
        check_name("HostName", h, 64)?;
    }
    let description = p.get("Description").unwrap_or("");
    if description.chars().count() > 256 {
        return Err(ApiError::invalid_parameter(
            "Description",
            "must be at most 256 characters",
        ));
    }
    let token = p.get("ClientToken").filter(|s| !s.is_empty());
    if token.is_some_and(|t| t.len() > 64 || !t.is_ascii()) {
        return Err(ApiError::invalid_parameter(
            "ClientToken",
            "must be at most 64 ASCII characters",
        ));
    }
    Ok(LaunchRequest {
        image_id,
        instance_type,
        name: name.map(str::to_owned),
        unique_suffix: p.get_bool("UniqueSuffix")?.unwrap_or(false),
        host_name: host_name.map(str::to_owned),
        description: description.to_owned(),
        amount,
        system_disk_gib: p.get_int_in("SystemDisk.Size", 1, i64::from(i32::MAX))?,
        client_token: token.map(str::to_owned),
        action,
        auto_start,
        dry_run: p.get_bool("DryRun")?.unwrap_or(false),
        port_forwards: parse_port_forwards(p)?,
    })
}

/// Ferry-only `PortForward.N=<hostPort>:<guestPort>`: security-group-like rules forwarding a TCP port of
/// the server's loopback address (127.0.0.1) to a port of the guest. At most 16; host ports 1024–65535.
fn parse_port_forwards(p: &ferry_api::Params) -> Result<Vec<(u16, u16)>, ApiError> {
    let items = p.get_list("PortForward");
    if items.len() > 16 {
        return Err(ApiError::invalid_parameter(
            "PortForward.N",
            format!("lists {} rules; at most 16 are allowed", items.len()),
        ));
    }
    let mut out: Vec<(u16, u16)> = Vec::new();
    for item in items {
        let bad = || {
            ApiError::invalid_parameter(
                "PortForward.N",
                format!(
                    "{item:?} is not <hostPort>:<guestPort> (e.g. 8022:22; the host port listens on 127.0.0.1 only                      and must be 1024-65535, the guest port 1-65535)"
                ),
            )
        };
        let (h, g) = item.split_once(':').ok_or_else(bad)?;
        let host: u16 = h.trim().parse().map_err(|_| bad())?;
        let guest: u16 = g.trim().parse().map_err(|_| bad())?;
        if host < 1024 || guest == 0 {
            return Err(bad());
        }
        if out.iter().any(|(x, _)| *x == host) {
            return Err(ApiError::invalid_parameter(
                "PortForward.N",
                format!(
                    "host port {host} is given twice: each host port forwards to one guest port"
                ),
            ));
        }
        out.push((host, guest));
    }
    Ok(out)
}

/// RunInstances: `Amount` (1–100, default 1) instances that start by themselves.
pub async fn run_instances(c: &Call<'_>) -> ActionResult {
    let amount = c.params.get_int_in("Amount", 1, 100)?.unwrap_or(1);
    if let Some(min) = c.params.get_int_in("MinAmount", 1, 100)?
        && min > amount
    {
        return Err(ApiError::invalid_parameter(
            "MinAmount",
            format!("{min} is larger than Amount ({amount})"),
        ));
    }
    let req = launch_request(c, "RunInstances", amount as u32, true)?;
    let ids = app::launch(c.st, &req).await?;
    Ok(json!({
        "InstanceIdSets": wrap_list("InstanceIdSet", ids.into_iter().map(Value::from).collect()),
    }))
}

/// CreateInstance: one instance that stays `Stopped` until StartInstance.
pub async fn create_instance(c: &Call<'_>) -> ActionResult {
    let req = launch_request(c, "CreateInstance", 1, false)?;
    let ids = app::launch(c.st, &req).await?;
    let id = ids.into_iter().next().ok_or_else(ApiError::internal)?;
    Ok(json!({ "InstanceId": id }))
}

fn instance_json(
    c: &Call<'_>,
    i: &InstanceRecord,
    images: &HashMap<String, ferry_db::ImageRecord>,
) -> Value {
    let image = images.get(&i.image_id);
    let os_name = image.map(|m| m.os_name.as_str()).unwrap_or("");
    let os_type = if os_name.to_ascii_lowercase().contains("windows") {
        "windows"
    } else {
        "linux"
    };
    let family = i
        .instance_type
        .rsplit_once('.')
        .map(|(f, _)| f)
        .unwrap_or("");
    let mut v = json!({
        "InstanceId": i.id,
        "InstanceName": i.name,
        "Description": i.description,
        "HostName": i.host_name,
        // A cutover's production instance being validated is, in ECS's words, starting.
        "Status": ecs_status(&i.status),
        "InstanceType": i.instance_type,
        "InstanceTypeFamily": family,
        "ImageId": i.image_id,
        "RegionId": c.st.cfg.region_id,
        "ZoneId": format!("{}-a", c.st.cfg.region_id),
        "Cpu": i.cpu,
        "Memory": i.memory_mib,
        "OSType": os_type,
        "OSName": os_name,
        "OSNameEn": os_name,
        "CreationTime": time_str(i.created_at),
        "StartTime": i.started_at.map(time_str).unwrap_or_default(),
        "ExpiredTime": "2099-12-31T15:59Z",
        "InstanceChargeType": "PostPaid",
        "InternetChargeType": "PayByTraffic",
        "InternetMaxBandwidthIn": 0,
        "InternetMaxBandwidthOut": 0,
        "InstanceNetworkType": "vpc",
        "IoOptimized": true,
        "DeletionProtection": false,
        "StoppedMode": if i.status == "Stopped" { "StopCharging" } else { "Not-applicable" },
        "SerialNumber": "",
        "PublicIpAddress": wrap_list("IpAddress", vec![]),
        "InnerIpAddress": wrap_list("IpAddress", vec![]),
        "EipAddress": { "AllocationId": "", "IpAddress": "", "InternetChargeType": "" },
        "VpcAttributes": {
            "VpcId": "",
            "VSwitchId": "",
            "NatIpAddress": "",
            "PrivateIpAddress": wrap_list("IpAddress", vec![]),
        },
        "SecurityGroupIds": wrap_list("SecurityGroupId", vec![]),
        "OperationLocks": wrap_list("LockReason", vec![]),
        "Tags": no_tags(),
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), &i.error) {
        // Ferry's addition: why the last start failed.
        o.insert("ErrorMessage".into(), json!(e));
    }
    v
}

/// The ECS status of a recorded status (`Validating`, Ferry's own, reads as `Starting`).
fn ecs_status(s: &str) -> &str {
    if s == "Validating" { "Starting" } else { s }
}

/// DescribeInstances: `InstanceIds` (JSON array), `InstanceName` (`*` wildcards), `Status`, `ImageId`,
/// `InstanceType`, `Tag.N` (Ferry's instances have none); paging by `PageNumber`/`PageSize` or
/// `NextToken`/`MaxResults`.
pub async fn describe_instances(c: &Call<'_>) -> ActionResult {
    check_region(c)?;
    let p = c.params;
    let paging = Paging::from_params(p)?;
    let ids = json_ids(p, "InstanceIds")?;
    let opt = |n: &str| p.get(n).filter(|s| !s.is_empty());
    let name = opt("InstanceName");
    let status = opt("Status");
    if let Some(s) = status
        && !["Pending", "Starting", "Running", "Stopping", "Stopped"].contains(&s)
    {
        return Err(ApiError::invalid_parameter(
            "Status",
            "must be Pending, Starting, Running, Stopping or Stopped",
        ));
    }
    let image = opt("ImageId");
    let itype = opt("InstanceType");
    // Ferry's instances have no VPC, vSwitch, security group or tags: filtering on one matches nothing.
    let none_can_match = ["VpcId", "VSwitchId", "SecurityGroupId"]
        .iter()
        .any(|n| opt(n).is_some())
        || filters_on_tags(p);
    let all = c.st.db.instance_list().await.or_internal()?;
    let matched: Vec<&InstanceRecord> = all
        .iter()
        .filter(|_| !none_can_match)
        .filter(|i| ids.as_ref().is_none_or(|ids| ids.contains(&i.id)))
        .filter(|i| name.is_none_or(|n| wildcard(n, &i.name)))
        .filter(|i| status.is_none_or(|s| s == ecs_status(&i.status)))
        .filter(|i| image.is_none_or(|m| m == i.image_id))
        .filter(|i| itype.is_none_or(|t| t == i.instance_type))
        .collect();
    let total = matched.len();
    let page: Vec<&InstanceRecord> = matched
        .into_iter()
        .skip(paging.offset)
        .take(paging.size)
        .collect();
    let mut images = HashMap::new();
    for i in &page {
        if !images.contains_key(&i.image_id)
            && let Some(m) = c.st.db.image_get(&i.image_id).await.or_internal()?
        {
            images.insert(i.image_id.clone(), m);
        }
    }
    let mut items: Vec<Value> = page.iter().map(|i| instance_json(c, i, &images)).collect();
    // Ferry's additions: PortForwards, and ValidationChecks for a validated (production) instance.
    for (item, i) in items.iter_mut().zip(&page) {
        let forwards: Vec<Value> = c
            .st
            .db
            .port_forward_list(&i.id)
            .await
            .or_internal()?
            .into_iter()
            .map(|f| json!({ "HostAddress": "127.0.0.1", "HostPort": f.host_port, "GuestPort": f.guest_port }))
            .collect();
        let checks = crate::workers::validate::instance_checks(c.st, &i.id)
            .await
            .or_internal()?;
        if let Some(o) = item.as_object_mut() {
            o.insert("PortForwards".into(), Value::Array(forwards));
            if let Some(checks) = checks {
                o.insert("ValidationChecks".into(), checks);
            }
        }
    }
    let mut out = json!({
        "RegionId": c.st.cfg.region_id,
        "Instances": wrap_list("Instance", items),
    });
    paging.answer(total, &mut out);
    Ok(out)
}

/// `*` matches any run of characters; everything else matches itself.
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn dry_run(c: &Call<'_>) -> Result<(), ApiError> {
    if c.params.get_bool("DryRun")?.unwrap_or(false) {
        return Err(ApiError::new(
            "DryRunOperation",
            400,
            "Request validation has been passed with DryRun flag set.",
        ));
    }
    Ok(())
}

/// StartInstance: `IncorrectInstanceStatus` (403) unless Stopped.
pub async fn start_instance(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("InstanceId")?;
    app::get(c.st, id).await?;
    dry_run(c)?;
    app::start(c.st, id).await?;
    Ok(json!({}))
}

/// StopInstance: `ForceStop` kills at once; otherwise the ACPI power button, then a kill after
/// `compute::instances::STOP_TIMEOUT_SECS`. `IncorrectInstanceStatus` (403) unless Running.
pub async fn stop_instance(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("InstanceId")?;
    let force = c.params.get_bool("ForceStop")?.unwrap_or(false);
    if let Some(mode) = c.params.get("StoppedMode").filter(|s| !s.is_empty())
        && mode != "StopCharging"
        && mode != "KeepCharging"
    {
        return Err(ApiError::invalid_parameter(
            "StoppedMode",
            "must be StopCharging or KeepCharging",
        ));
    }
    app::get(c.st, id).await?;
    dry_run(c)?;
    app::stop(c.st, id, force).await?;
    Ok(json!({}))
}

/// DeleteInstance: `Force` releases an instance that is not Stopped (QEMU is killed); removes its disks.
pub async fn delete_instance(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("InstanceId")?;
    let force = c.params.get_bool("Force")?.unwrap_or(false)
        || c.params.get_bool("ForceStop")?.unwrap_or(false);
    app::get(c.st, id).await?;
    dry_run(c)?;
    app::delete(c.st, id, force).await?;
    Ok(json!({}))
}

/// GetInstanceConsoleOutput: the last 64 KiB of the serial console of the latest boot, base64-encoded;
/// `RemoveSymbols` strips terminal escape sequences and other control characters.
pub async fn get_instance_console_output(c: &Call<'_>) -> ActionResult {
    check_region(c)?;
    let id = c.params.required("InstanceId")?;
    let remove_symbols = c.params.get_bool("RemoveSymbols")?.unwrap_or(false);
    app::get(c.st, id).await?;
    let console = app::console(c.st, id)?;
    let (bytes, updated) = match console {
        Some(con) => {
            let secs = con
                .modified
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            (con.bytes, Some(secs))
        }
        None => (Vec::new(), None),
    };
    let bytes = if remove_symbols {
        strip_symbols(&bytes)
    } else {
        bytes
    };
    Ok(json!({
        "InstanceId": id,
        "ConsoleOutput": base64::engine::general_purpose::STANDARD.encode(bytes),
        "LastUpdateTime": updated.map(time_str).unwrap_or_default(),
    }))
}

/// Removes ANSI escape sequences (`ESC [ … letter`, `ESC c`, …) and control characters other than
/// newline and tab; carriage returns go too, so lines end in `\n` only.
fn strip_symbols(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == 0x1b {
            i += 1;
            if bytes.get(i) == Some(&b'[') {
                i += 1;
                while i < bytes.len() && !(0x40..=0x7e).contains(&bytes[i]) {
                    i += 1;
                }
            }
            i += 1;
            continue;
        }
        if b == b'\n' || b == b'\t' || b >= 0x20 && b != 0x7f {
            out.push(b);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_ecs() {
        assert!(wildcard("web*", "web-01"));
        assert!(wildcard("*01", "web-01"));
        assert!(wildcard("w*-*1", "web-01"));
        assert!(wildcard("web-01", "web-01"));
        assert!(!wildcard("web", "web-01"));
        assert!(!wildcard("db*", "web-01"));
        assert!(!wildcard("web*01*x", "web-01"));
        assert!(wildcard("*", ""));
    }

    #[test]
    fn symbols_are_stripped() {
        let raw = b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\r\nNo bootable device.\r\n";
        assert_eq!(
            strip_symbols(raw),
            b"SeaBIOS\nNo bootable device.\n".to_vec()
        );
    }
}
