//! ECS image actions: DescribeImages, CreateImage (from snapshots), DeleteImage.

use std::collections::HashSet;

use ferry_api::{ApiError, wrap_list};
use ferry_db::{ImageDiskRecord, ImageRecord};
use serde_json::{Value, json};

use super::{check_region, filters_on_tags, no_tags};
use crate::app::OrInternal;
use crate::compute::images::{CreateImageRequest, create_from_snapshots};
use crate::rpc::{ActionResult, Call, paging, time_str};
use crate::workers::validate;

/// `windows` when the image's platform or OS name says so, else `linux`.
fn os_type(i: &ImageRecord) -> &'static str {
    let windows = |s: &str| s.to_ascii_lowercase().contains("windows");
    if windows(&i.platform) || windows(&i.os_name) {
        "windows"
    } else {
        "linux"
    }
}

fn mapping(d: &ImageDiskRecord) -> Value {
    json!({
        "Device": format!("/dev/xvd{}", (b'a' + (d.disk_index.clamp(0, 25) as u8)) as char),
        "Size": crate::compute::gib_ceil(d.size_bytes).to_string(),
        "SnapshotId": d.snapshot_id,
        "Type": if d.disk_index == 0 { "system" } else { "data" },
        // qcow2 once derived from the verified raw image (shortly after the image is available).
        "Format": if d.qcow2_path.is_some() { "qcow2" } else { "raw" },
        "Progress": "100%",
        "ImportOSSBucket": "",
        "ImportOSSObject": "",
        "RemainTime": 0,
        // Ferry's additions.
        "SizeBytes": d.size_bytes,
        "RootDigest": d.root_digest,
    })
}

/// DescribeImages with ECS's filters: `ImageId` (comma list), `ImageName` (substring), `Status` (comma
/// list, `ALL`; default Available), `SnapshotId`, `OSType`, `Architecture`, `ImageOwnerAlias` (Ferry's
/// images are `self`), `IsPublic` (they are private), `Usage` (`instance` when an instance uses it),
/// `Filter.N` CreationStartTime/CreationEndTime, `Tag.N` (Ferry's images have no tags), paging ≤ 100.
pub async fn describe_images(c: &Call<'_>) -> ActionResult {
    check_region(c)?;
    let p = c.params;
    let (number, size, offset) = paging(p, 100)?;
    let ids: Option<Vec<&str>> = p
        .get("ImageId")
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(str::trim).collect());
    let name = p.get("ImageName").filter(|s| !s.is_empty());
    let statuses: Vec<&str> = p
        .get("Status")
        .filter(|s| !s.is_empty())
        .unwrap_or("Available")
        .split(',')
        .map(str::trim)
        .collect();
    let all = statuses.iter().any(|s| s.eq_ignore_ascii_case("ALL"));
    let snapshot = p.get("SnapshotId").filter(|s| !s.is_empty());
    let os = p.get("OSType").filter(|s| !s.is_empty());
    let arch = p.get("Architecture").filter(|s| !s.is_empty());
    let owner = p.get("ImageOwnerAlias").filter(|s| !s.is_empty());
    if let Some(o) = owner
        && !["system", "self", "others", "marketplace"].contains(&o)
    {
        return Err(ApiError::invalid_parameter(
            "ImageOwnerAlias",
            "must be one of system, self, others, marketplace",
        ));
    }
    let usage = p.get("Usage").filter(|s| !s.is_empty());
    if let Some(u) = usage
        && u != "instance"
        && u != "none"
    {
        return Err(ApiError::invalid_parameter(
            "Usage",
            "must be instance or none",
        ));
    }
    let public = p.get_bool("IsPublic")?;
    let mut from = None;
    let mut to = None;
    for f in p.get_struct_list("Filter", &["Key", "Value"]) {
        let (Some(k), Some(v)) = (f.get("Key"), f.get("Value")) else {
            continue;
        };
        let t = ferry_api::response::parse_time_lenient(v)
            .ok_or_else(|| {
                ApiError::invalid_parameter("Filter.N.Value", format!("{v:?} is not a UTC time"))
            })?
            .unix_timestamp();
        match k.as_str() {
            "CreationStartTime" => from = Some(t),
            "CreationEndTime" => to = Some(t),
            _ => {}
        }
    }
    let used: HashSet<String> =
        c.st.db
            .instance_list()
            .await
            .or_internal()?
            .into_iter()
            .map(|i| i.image_id)
            .collect();
    let mut disks_of = std::collections::HashMap::<String, Vec<ImageDiskRecord>>::new();
    for d in c.st.db.image_disk_list_all().await.or_internal()? {
        disks_of.entry(d.image_id.clone()).or_default().push(d);
    }
    // Ferry's own images are the account's (`self`), private, and carry no tags.
    let mine = owner.is_none_or(|o| o == "self") && public != Some(true) && !filters_on_tags(p);
    let images: Vec<ImageRecord> =
        c.st.db
            .image_list()
            .await
            .or_internal()?
            .into_iter()
            .filter(|_| mine)
            .filter(|i| ids.as_ref().is_none_or(|ids| ids.contains(&i.id.as_str())))
            .filter(|i| name.is_none_or(|n| i.name.contains(n)))
            .filter(|i| all || statuses.iter().any(|s| *s == i.status))
            .filter(|i| {
                snapshot.is_none_or(|s| {
                    disks_of
                        .get(&i.id)
                        .is_some_and(|ds| ds.iter().any(|d| d.snapshot_id == s))
                })
            })
            .filter(|i| os.is_none_or(|o| o.eq_ignore_ascii_case(os_type(i))))
            .filter(|i| arch.is_none_or(|a| a == i.architecture))
            .filter(|i| usage.is_none_or(|u| (u == "instance") == used.contains(&i.id)))
            .filter(|i| from.is_none_or(|f| i.created_at >= f))
            .filter(|i| to.is_none_or(|t| i.created_at <= t))
            .collect();
    let total = images.len();
    let mut items: Vec<Value> = images
        .iter()
        .skip(offset as usize)
        .take(size as usize)
        .map(|i| {
            let mappings = disks_of
                .get(&i.id)
                .map(|ds| ds.iter().map(mapping).collect())
                .unwrap_or_default();
            let mut v = json!({
                "ImageId": i.id,
                "ImageName": i.name,
                "ImageVersion": "",
                "ImageFamily": "",
                "Status": i.status,
                "Progress": format!("{}%", i.progress),
                "ImageOwnerAlias": "self",
                "IsPublic": false,
                "IsSupportIoOptimized": true,
                "IsSupportCloudinit": false,
                "OSType": os_type(i),
                "OSName": i.os_name,
                "OSNameEn": i.os_name,
                "Platform": i.platform,
                "Architecture": i.architecture,
                "BootMode": i.boot_mode,
                "Size": i.size_gib,
                "CreationTime": time_str(i.created_at),
                "Description": i.description,
                "Usage": if used.contains(&i.id) { "instance" } else { "none" },
                "IsCopied": false,
                "IsSelfShared": "",
                "IsSubscribed": false,
                "LicenseType": "Auto",
                "DiskDeviceMappings": wrap_list("DiskDeviceMapping", mappings),
                "Tags": no_tags(),
            });
            if let Some(o) = v.as_object_mut() {
                if let Some(job) = &i.job_id {
                    o.insert("JobId".into(), json!(job));
                }
                if let Some(e) = &i.error {
                    o.insert("ErrorMessage".into(), json!(e));
                }
            }
            v
        })
        .collect();
    // Ferry's additions: ValidationStatus, ValidationReport, AdaptationReport (docs/boot-validation.md).
    for item in &mut items {
        let Some(id) = item
            .get("ImageId")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            continue;
        };
        let extra = validate::image_fields(c.st, &id, ids.is_some())
            .await
            .or_internal()?;
        if let (Some(o), Some(e)) = (item.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
    }
    Ok(json!({
        "RegionId": c.st.cfg.region_id,
        "PageNumber": number,
        "PageSize": size,
        "TotalCount": total,
        "Images": wrap_list("Image", items),
    }))
}

/// ECS's image name rule: 2–128 characters, starting with a letter, not with `http(s)://`, `aliyun` or
/// `acs:`; letters, digits, `.` `_` `-` `:` and spaces.
fn check_image_name(name: &str) -> Result<(), ApiError> {
    let len = name.chars().count();
    let ok = (2..=128).contains(&len)
        && name.chars().next().is_some_and(char::is_alphabetic)
        && !["http://", "https://", "aliyun", "acs:"]
            .iter()
            .any(|p| name.starts_with(p))
        && name
            .chars()
            .all(|ch| ch.is_alphanumeric() || matches!(ch, '.' | '_' | '-' | ':' | ' '));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_parameter(
            "ImageName",
            "must be 2 to 128 characters, start with a letter (not http://, https://, aliyun or acs:) \
             and contain only letters, digits, '.', '_', '-', ':' and spaces",
        ))
    }
}

/// CreateImage from `SnapshotId` (a one-disk image) or `DiskDeviceMapping.N.SnapshotId` (N = 1 is the
/// system disk unless `DiskType` says otherwise). Asynchronous: the image is `Creating` until every disk
/// is built and verified against its snapshot's root digest.
pub async fn create_image(c: &Call<'_>) -> ActionResult {
    check_region(c)?;
    let p = c.params;
    if p.get("InstanceId").is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid_parameter(
            "InstanceId",
            "creating an image from an instance is not supported yet: create it from snapshots \
             (SnapshotId or DiskDeviceMapping.N.SnapshotId)",
        ));
    }
    let mappings = p.get_struct_list(
        "DiskDeviceMapping",
        &["SnapshotId", "Size", "DiskType", "Device"],
    );
    let mut system = Vec::new();
    let mut data = Vec::new();
    for (n, m) in mappings.iter().enumerate() {
        let Some(snap) = m.get("SnapshotId").filter(|s| !s.is_empty()) else {
            return Err(ApiError::missing_parameter(&format!(
                "DiskDeviceMapping.{}.SnapshotId",
                n + 1
            )));
        };
        let is_system = match m.get("DiskType").map(String::as_str) {
            None | Some("") => n == 0,
            Some("system") => true,
            Some("data") => false,
            Some(_) => {
                return Err(ApiError::invalid_parameter(
                    "DiskDeviceMapping.N.DiskType",
                    "must be system or data",
                ));
            }
        };
        if let Some(size) = m.get("Size").filter(|s| !s.is_empty()) {
            let size: i64 = size.parse().map_err(|_| {
                ApiError::invalid_parameter(
                    "DiskDeviceMapping.N.Size",
                    "must be a whole number of GiB",
                )
            })?;
            let snapshot =
                c.st.db
                    .snapshot_get(snap)
                    .await
                    .or_internal()?
                    .ok_or_else(|| crate::compute::images::snapshot_not_found(snap))?;
            let gib = crate::compute::gib_ceil(snapshot.disk_size);
            if size != gib {
                return Err(ApiError::invalid_parameter(
                    "DiskDeviceMapping.N.Size",
                    format!(
                        "Ferry builds each disk at its snapshot's size ({gib} GiB for {snap}): omit Size \
                         or pass {gib}"
                    ),
                ));
            }
        }
        if is_system {
            system.push(snap.clone());
        } else {
            data.push(snap.clone());
        }
    }
    if system.len() > 1 {
        return Err(ApiError::invalid_parameter(
            "DiskDeviceMapping.N.DiskType",
            "only one disk can be the system disk",
        ));
    }
    let mut snapshots = system;
    if let Some(s) = p.get("SnapshotId").filter(|s| !s.is_empty()) {
        if !snapshots.is_empty() {
            return Err(ApiError::invalid_parameter(
                "SnapshotId",
                "names the system disk, which DiskDeviceMapping also names: pass one of them",
            ));
        }
        snapshots.push(s.to_owned());
    }
    if snapshots.is_empty() {
        if data.is_empty() {
            return Err(ApiError::missing_parameter("SnapshotId"));
        }
        return Err(ApiError::invalid_parameter(
            "DiskDeviceMapping",
            "an image needs a system disk: give one mapping DiskType=system (or put it first)",
        ));
    }
    snapshots.extend(data);
    if snapshots.len() > 17 {
        return Err(ApiError::invalid_parameter(
            "DiskDeviceMapping",
            "an image has at most 17 disks (1 system, 16 data)",
        ));
    }
    let name = p.get("ImageName").filter(|s| !s.is_empty());
    if let Some(n) = name {
        check_image_name(n)?;
    }
    let description = p.get("Description").filter(|s| !s.is_empty());
    if description.is_some_and(|d| d.chars().count() > 256) {
        return Err(ApiError::invalid_parameter(
            "Description",
            "must be at most 256 characters",
        ));
    }
    let architecture = p.get("Architecture").filter(|s| !s.is_empty());
    if let Some(a) = architecture
        && !["i386", "x86_64", "arm64"].contains(&a)
    {
        return Err(ApiError::invalid_parameter(
            "Architecture",
            "must be i386, x86_64 or arm64",
        ));
    }
    let boot_mode = p.get("BootMode").filter(|s| !s.is_empty());
    if let Some(b) = boot_mode
        && !["BIOS", "UEFI"].contains(&b)
    {
        return Err(ApiError::invalid_parameter(
            "BootMode",
            "must be BIOS or UEFI",
        ));
    }
    let token = p.get("ClientToken").filter(|s| !s.is_empty());
    if token.is_some_and(|t| t.len() > 64 || !t.is_ascii()) {
        return Err(ApiError::invalid_parameter(
            "ClientToken",
            "must be at most 64 ASCII characters",
        ));
    }
    let req = CreateImageRequest {
        snapshots,
        name: name.map(str::to_owned),
        description: description.map(str::to_owned),
        platform: p
            .get("Platform")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        architecture: architecture.map(str::to_owned),
        boot_mode: boot_mode.map(str::to_owned),
        client_token: token.map(str::to_owned),
        network_mode: p
            .get("NetworkMode")
            .filter(|s| !s.is_empty())
            .map(validate::parse_network_mode)
            .transpose()?,
        validation_checks: p
            .get("ValidationChecks")
            .filter(|s| !s.is_empty())
            .map(validate::parse_checks)
            .transpose()?,
        validation_enabled: p.get_bool("ValidationEnabled")?,
        validation_instance_type: p
            .get("ValidationInstanceType")
            .filter(|s| !s.is_empty())
            .map(validate::parse_instance_type)
            .transpose()?,
    };
    let id = create_from_snapshots(c.st, &req).await?;
    Ok(json!({ "ImageId": id, "RegionId": c.st.cfg.region_id }))
}

/// DeleteImage: `ImageUsingByInstance` (403) while instances use it unless `Force`.
pub async fn delete_image(c: &Call<'_>) -> ActionResult {
    check_region(c)?;
    let id = c.params.required("ImageId")?;
    let force = c.params.get_bool("Force")?.unwrap_or(false);
    crate::compute::images::delete_image(c.st, id, force).await?;
    Ok(json!({}))
}
