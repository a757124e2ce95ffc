//! Replication jobs: `../shared/ref/smc-api.md` §2.5–2.6.

use ferry_api::{ApiError, Params, wrap_list};
use std::collections::HashMap;

use ferry_db::{ImagePipelineRecord, JobFilter, JobRecord, JobSettingsRecord, RunRecord};
use ferry_types::protocol::RunProgress;
use serde_json::{Value, json};

use super::check_name;
use super::tags::{ResourceType, decorate, parse_tags, restrict_ids, set_tags};
use crate::app::{OrInternal, jobs};
use crate::rpc::{ActionResult, Call, paging, time_str};

/// `SystemDiskPart.N.*` / `DataDisk.N.Part.M.*`: Device and SizeBytes both or neither; Block default true.
fn parse_parts(p: &Params, prefix: &str) -> Result<Vec<jobs::DiskPart>, ApiError> {
    let mut out = Vec::new();
    for n in p.indices(prefix) {
        let item = p.scoped(&format!("{prefix}.{n}"));
        let name = |f: &str| format!("{prefix}.{n}.{f}");
        let device = item.get("Device").filter(|d| !d.is_empty());
        let size = item.get_i64("SizeBytes").map_err(|_| {
            ApiError::invalid_parameter(&name("SizeBytes"), "is not an integer (bytes)")
        })?;
        let (device, size_bytes) = match (device, size) {
            (Some(d), Some(s)) if s > 0 => (d.to_owned(), s),
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_parameter(
                    &name("SizeBytes"),
                    "must be positive",
                ));
            }
            (None, None) => continue,
            (None, Some(_)) => return Err(ApiError::missing_parameter(&name("Device"))),
            (Some(_), None) => return Err(ApiError::missing_parameter(&name("SizeBytes"))),
        };
        let block = item
            .get_bool("Block")
            .map_err(|_| ApiError::invalid_parameter(&name("Block"), "use true or false"))?
            .unwrap_or(true);
        out.push(jobs::DiskPart {
            device,
            size_bytes,
            block,
        });
    }
    Ok(out)
}

/// `DataDisk.N.{Index,Size,Part.M.*}`: Index 1–16 (required per disk), Size 20–32768 GiB.
fn parse_data_disks(p: &Params) -> Result<Option<Vec<jobs::DataDisk>>, ApiError> {
    let ns = p.indices("DataDisk");
    if ns.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for n in ns {
        let item = p.scoped(&format!("DataDisk.{n}"));
        let name = |f: &str| format!("DataDisk.{n}.{f}");
        let index = item
            .get_i64("Index")
            .map_err(|_| ApiError::invalid_parameter(&name("Index"), "is not an integer"))?
            .ok_or_else(|| ApiError::missing_parameter(&name("Index")))?;
        if !(1..=16).contains(&index) {
            return Err(ApiError::new(
                "ReplicationJobDataDiskIndex.Invalid",
                400,
                format!(
                    "{} is {index}: a data disk index is 1 to 16 (0 is the system disk)",
                    name("Index")
                ),
            ));
        }
        let size = item
            .get_i64("Size")
            .map_err(|_| ApiError::invalid_parameter(&name("Size"), "is not an integer (GiB)"))?;
        if let Some(s) = size
            && !(20..=32768).contains(&s)
        {
            return Err(ApiError::invalid_parameter(
                &name("Size"),
                format!("{s} is out of range; use 20 to 32768 (GiB)"),
            ));
        }
        out.push(jobs::DataDisk {
            index,
            size,
            parts: parse_parts(&item, "Part")?,
        });
    }
    Ok(Some(out))
}

fn opt(p: &Params, name: &str) -> Option<String> {
    p.get(name).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// The creation/modification parameters Create and Modify share, validated for shape and range.
struct Common {
    target_type: Option<jobs::TargetType>,
    image_name: Option<String>,
    instance_id: Option<String>,
    frequency: Option<i64>,
    max_images: Option<i64>,
    replication_parameters: Option<String>,
    scheduled_start_time: Option<i64>,
    valid_time: Option<i64>,
    system_disk_size: Option<i64>,
    system_disk_parts: Option<Vec<jobs::DiskPart>>,
    data_disks: Option<Vec<jobs::DataDisk>>,
    net_mode: Option<i64>,
}

fn parse_common(p: &Params) -> Result<Common, ApiError> {
    let target_type = p
        .get("TargetType")
        .filter(|v| !v.is_empty())
        .map(jobs::TargetType::parse)
        .transpose()?;
    let image_name = opt(p, "ImageName");
    if let Some(n) = &image_name {
        check_name("ImageName", n)?;
    }
    let net_mode = p.get_i64("NetMode")?;
    if let Some(m) = net_mode
        && m != 0
        && m != 2
    {
        return Err(ApiError::invalid_parameter(
            "NetMode",
            format!("{m} is not a network mode; use 0 (Internet) or 2 (VPC, with VSwitchId)"),
        ));
    }
    if let Some(r) = p.get("ReplicationParameters")
        && r.chars().count() > 2048
    {
        return Err(ApiError::invalid_parameter(
            "ReplicationParameters",
            "is longer than 2048 characters",
        ));
    }
    let parts = parse_parts(p, "SystemDiskPart")?;
    Ok(Common {
        target_type,
        image_name,
        instance_id: opt(p, "InstanceId"),
        frequency: p.get_int_in("Frequency", 1, 168)?,
        max_images: p.get_int_in("MaxNumberOfImageToKeep", 1, 10)?,
        replication_parameters: p.get("ReplicationParameters").map(str::to_owned),
        scheduled_start_time: p
            .get_time("ScheduledStartTime")?
            .map(|t| t.unix_timestamp()),
        valid_time: p.get_time("ValidTime")?.map(|t| t.unix_timestamp()),
        system_disk_size: p.get_int_in("SystemDiskSize", 20, 2048)?,
        system_disk_parts: (!parts.is_empty()).then_some(parts),
        data_disks: parse_data_disks(p)?,
        net_mode,
    })
}

/// Ferry-only job parameters (docs/replication-jobs.md, "Ferry-only parameters"): `ValidationEnabled`,
/// `ValidationChecks` (JSON), `ValidationInstanceType`, `NetworkMode` (`Dhcp`/`KeepStatic`).
fn parse_ferry(p: &Params) -> Result<jobs::FerryJobOptions, ApiError> {
    use crate::workers::validate;
    Ok(jobs::FerryJobOptions {
        validation_enabled: p.get_bool("ValidationEnabled")?,
        validation_checks: opt(p, "ValidationChecks")
            .map(|v| validate::parse_checks(&v))
            .transpose()?,
        validation_instance_type: opt(p, "ValidationInstanceType")
            .map(|v| validate::parse_instance_type(&v))
            .transpose()?,
        network_mode: opt(p, "NetworkMode")
            .map(|v| validate::parse_network_mode(&v))
            .transpose()?,
    })
}

/// Job descriptions: 2–128 characters (SMC).
fn check_job_description(d: &str) -> Result<(), ApiError> {
    let len = d.chars().count();
    if !(2..=128).contains(&len) || d.starts_with("http://") || d.starts_with("https://") {
        return Err(ApiError::invalid_parameter(
            "Description",
            "must be 2 to 128 characters long and not start with http:// or https://",
        ));
    }
    Ok(())
}

fn check_client_token(p: &Params) -> Result<Option<String>, ApiError> {
    let token = opt(p, "ClientToken");
    if let Some(t) = &token
        && (t.len() > 64 || !t.is_ascii())
    {
        return Err(ApiError::invalid_parameter(
            "ClientToken",
            "must be at most 64 ASCII characters",
        ));
    }
    Ok(token)
}

pub(super) async fn create_replication_job(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    // Tags are checked before anything is created, so a bad tag creates nothing.
    let tags = parse_tags(p)?;
    let source_id = p.required("SourceId")?.to_owned();
    let region_id = p.required("RegionId")?.to_owned();
    let name = opt(p, "Name");
    if let Some(n) = &name {
        check_name("Name", n)?;
    }
    let description = p.get("Description").unwrap_or("").to_owned();
    if !description.is_empty() {
        check_job_description(&description)?;
    }
    let job_type = p.get_i64("JobType")?.unwrap_or(0);
    let common = parse_common(p)?;
    let run_once = p.get_bool("RunOnce")?.unwrap_or(true);
    if run_once {
        for (param, given) in [
            ("Frequency", common.frequency.is_some()),
            ("MaxNumberOfImageToKeep", common.max_images.is_some()),
        ] {
            if given {
                return Err(ApiError::invalid_parameter(
                    param,
                    "applies only to incremental jobs: set RunOnce=false",
                ));
            }
        }
    } else if common.frequency.is_none() || common.max_images.is_none() {
        return Err(ApiError::missing_parameter(if common.frequency.is_none() {
            "Frequency"
        } else {
            "MaxNumberOfImageToKeep"
        }));
    }
    let net_mode = common.net_mode.unwrap_or(0);
    let vswitch_id = opt(p, "VSwitchId");
    if net_mode == 2 && vswitch_id.is_none() {
        return Err(ApiError::missing_parameter("VSwitchId"));
    }
    let license_type = opt(p, "LicenseType");
    if let Some(l) = &license_type
        && l != "BYOL"
    {
        return Err(ApiError::invalid_parameter(
            "LicenseType",
            format!("{l:?} is not a license type; use BYOL or leave it empty"),
        ));
    }
    let ferry = parse_ferry(p)?;
    let mut settings = jobs::JobSettings {
        net_mode,
        vswitch_id,
        vpc_id: opt(p, "VpcId"),
        instance_type: opt(p, "InstanceType"),
        instance_ram_role: opt(p, "InstanceRamRole"),
        license_type,
        launch_template_id: opt(p, "LaunchTemplateId"),
        launch_template_version: opt(p, "LaunchTemplateVersion"),
        system_disk_size: common.system_disk_size,
        system_disk_parts: common.system_disk_parts.unwrap_or_default(),
        data_disks: common.data_disks.unwrap_or_default(),
        container_namespace: opt(p, "ContainerNamespace"),
        container_repository: opt(p, "ContainerRepository"),
        container_tag: opt(p, "ContainerTag"),
        ..Default::default()
    };
    ferry.apply(&mut settings);
    let id = jobs::create(
        c.st,
        jobs::NewJob {
            source_id,
            region_id,
            name,
            description,
            image_name: common.image_name,
            job_type,
            target_type: common.target_type.unwrap_or(jobs::TargetType::Image),
            instance_id: common.instance_id,
            run_once,
            frequency: common.frequency,
            max_images: common.max_images,
            replication_parameters: common.replication_parameters.unwrap_or_default(),
            scheduled_start_time: common.scheduled_start_time,
            valid_time: common.valid_time,
            client_token: check_client_token(p)?,
            settings,
        },
    )
    .await?;
    set_tags(
        c,
        ResourceType::ReplicationJob.as_str(),
        &[id.to_string()],
        &tags,
    )
    .await?;
    Ok(json!({ "JobId": id.to_string() }))
}

pub(super) async fn modify_replication_job_attribute(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let id = p.required("JobId")?;
    let name = opt(p, "Name");
    if let Some(n) = &name {
        check_name("Name", n)?;
    }
    let description = opt(p, "Description");
    if let Some(d) = &description {
        check_job_description(d)?;
    }
    let common = parse_common(p)?;
    let ferry = parse_ferry(p)?;
    jobs::modify(
        c.st,
        id,
        jobs::JobChanges {
            name,
            description,
            target_type: common.target_type,
            image_name: common.image_name,
            instance_id: common.instance_id,
            frequency: common.frequency,
            max_images: common.max_images,
            replication_parameters: common.replication_parameters,
            scheduled_start_time: common.scheduled_start_time,
            valid_time: common.valid_time,
            system_disk_size: common.system_disk_size,
            system_disk_parts: common.system_disk_parts,
            data_disks: common.data_disks,
            net_mode: common.net_mode,
            vpc_id: opt(p, "VpcId"),
            vswitch_id: opt(p, "VSwitchId"),
            instance_type: opt(p, "InstanceType"),
            instance_ram_role: opt(p, "InstanceRamRole"),
            launch_template_id: opt(p, "LaunchTemplateId"),
            launch_template_version: opt(p, "LaunchTemplateVersion"),
            container_namespace: opt(p, "ContainerNamespace"),
            container_repository: opt(p, "ContainerRepository"),
            container_tag: opt(p, "ContainerTag"),
            ferry,
        },
    )
    .await?;
    Ok(json!({}))
}

pub(super) async fn delete_replication_job(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("JobId")?;
    jobs::delete(c.st, id).await?;
    Ok(json!({}))
}

pub(super) async fn cut_over_replication_job(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("JobId")?;
    let sync_data = c.params.get_bool("SyncData")?.unwrap_or(false);
    jobs::cut_over(c.st, id, sync_data).await?;
    Ok(json!({}))
}

pub(super) async fn create_cross_zone_migration_job(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let region_id = p.required("RegionId")?.to_owned();
    let instance_id = p.required("InstanceId")?.to_owned();
    let target_zone_id = p.required("TargetZoneId")?.to_owned();
    p.get_bool("AutoPay")?;
    for n in p.indices("Disk") {
        let d = p.scoped(&format!("Disk.{n}"));
        if let Some(pl) = d.get("PerformanceLevel").filter(|v| !v.is_empty())
            && !matches!(pl, "PL0" | "PL1" | "PL2" | "PL3")
        {
            return Err(ApiError::invalid_parameter(
                &format!("Disk.{n}.PerformanceLevel"),
                format!("{pl:?} is not a performance level; use PL0, PL1, PL2 or PL3"),
            ));
        }
        if d.get("Category").is_some_and(|v| !v.is_empty())
            && d.get("DiskId").is_none_or(str::is_empty)
        {
            return Err(ApiError::missing_parameter(&format!("Disk.{n}.DiskId")));
        }
    }
    let id = jobs::create_cross_zone(
        c.st,
        jobs::NewCrossZoneJob {
            region_id,
            instance_id,
            target_zone_id,
            target_instance_type: opt(p, "TargetInstanceType"),
            client_token: check_client_token(p)?,
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

fn part_json(p: &jobs::DiskPart) -> Value {
    json!({ "Device": p.device, "SizeBytes": p.size_bytes, "Block": p.block })
}

/// What `job_json` reads besides the job record, loaded for a whole page with one query per table (not
/// per job).
struct JobPage {
    runs: HashMap<String, Vec<RunRecord>>,
    settings: HashMap<String, JobSettingsRecord>,
    /// Pipeline records (validation status) of the runs' images.
    pipelines: HashMap<String, ImagePipelineRecord>,
}

impl JobPage {
    async fn load(c: &Call<'_>, jobs: &[JobRecord]) -> Result<Self, ApiError> {
        let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
        let runs = c.st.db.run_list_for_jobs(&ids).await.or_internal()?;
        let images: Vec<String> = runs
            .values()
            .flatten()
            .filter_map(|r| r.image_id.clone())
            .collect();
        Ok(Self {
            pipelines: c
                .st
                .db
                .image_pipeline_list_for(&images)
                .await
                .or_internal()?,
            settings: c.st.db.job_settings_for_jobs(&ids).await.or_internal()?,
            runs,
        })
    }
}

fn job_json(j: &JobRecord, page: &JobPage) -> Value {
    let runs: &[RunRecord] = page.runs.get(&j.id).map_or(&[], Vec::as_slice);
    let empty;
    let srec = match page.settings.get(&j.id) {
        Some(s) => s,
        None => {
            empty = JobSettingsRecord::empty(&j.id);
            &empty
        }
    };
    let settings = jobs::JobSettings::decode(&srec.settings);
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
        "NetMode": settings.net_mode,
        "TargetType": j.target_type,
        "ImageName": j.image_name,
        "RunOnce": j.run_once != 0,
        "ReplicationParameters": j.replication_parameters,
        "CreationTime": time_str(j.created_at),
        "ReplicationJobRuns": wrap_list("ReplicationJobRun", runs),
        "Tags": wrap_list("Tag", vec![]),
        "SystemDiskParts": wrap_list("SystemDiskPart", settings.system_disk_parts.iter().map(part_json).collect()),
        "DataDisks": wrap_list("DataDisk", settings.data_disks.iter().map(|d| {
            let mut v = json!({
                "Index": d.index,
                "Parts": wrap_list("Part", d.parts.iter().map(part_json).collect()),
            });
            if let (Some(o), Some(size)) = (v.as_object_mut(), d.size) {
                o.insert("Size".into(), json!(size));
            }
            v
        }).collect()),
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
            ("InstanceId", srec.instance_id.clone()),
            ("VpcId", settings.vpc_id.clone()),
            ("VSwitchId", settings.vswitch_id.clone()),
            ("InstanceType", settings.instance_type.clone()),
            ("InstanceRamRole", settings.instance_ram_role.clone()),
            ("LicenseType", settings.license_type.clone()),
            ("LaunchTemplateId", settings.launch_template_id.clone()),
            (
                "LaunchTemplateVersion",
                settings.launch_template_version.clone(),
            ),
            ("ContainerNamespace", settings.container_namespace.clone()),
            ("ContainerRepository", settings.container_repository.clone()),
            ("ContainerTag", settings.container_tag.clone()),
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
        if let Some(size) = settings.system_disk_size {
            o.insert("SystemDiskSize".into(), json!(size));
        }
    }
    crate::workers::validate::add_job_fields(&settings, &page.pipelines, &mut v);
    v
}

/// `ReplicationJob.Status` values (smc-api.md §2.9).
const JOB_STATUSES: &[&str] = &[
    "Ready", "Running", "Stopped", "InError", "Finished", "Waiting", "Expired", "Deleting",
];
/// `ReplicationJob.BusinessStatus` values: phases of `Running`.
const BUSINESS_STATUSES: &[&str] = &["Preparing", "Syncing", "Processing", "Cleaning"];

/// A `Name.N` list filter of at most 50 entries.
fn list_of(p: &Params, name: &str) -> Result<Vec<String>, ApiError> {
    let items = p.get_list(name);
    if items.len() > 50 {
        return Err(ApiError::invalid_parameter(
            &format!("{name}.N"),
            format!("lists {} values; at most 50 are allowed", items.len()),
        ));
    }
    Ok(items)
}

pub(super) async fn describe_replication_jobs(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let (number, size, offset) = paging(p, 50)?;
    let status = opt(p, "Status");
    if let Some(v) = &status
        && !JOB_STATUSES.contains(&v.as_str())
    {
        return Err(ApiError::invalid_parameter(
            "Status",
            format!(
                "{v:?} is not a job status; use one of {}",
                JOB_STATUSES.join(", ")
            ),
        ));
    }
    let business_status = opt(p, "BusinessStatus");
    if let Some(v) = &business_status
        && !BUSINESS_STATUSES.contains(&v.as_str())
    {
        return Err(ApiError::invalid_parameter(
            "BusinessStatus",
            format!(
                "{v:?} is not a business status; use one of {}",
                BUSINESS_STATUSES.join(", ")
            ),
        ));
    }
    let Some(ids) =
        restrict_ids(c, ResourceType::ReplicationJob, list_of(p, "JobId")?, None).await?
    else {
        return Ok(json!({
            "PageNumber": number,
            "PageSize": size,
            "TotalCount": 0,
            "ReplicationJobs": wrap_list("ReplicationJob", vec![]),
        }));
    };
    let filter = JobFilter {
        ids,
        source_ids: list_of(p, "SourceId")?,
        instance_ids: list_of(p, "InstanceId")?,
        name: opt(p, "Name"),
        region_id: opt(p, "RegionId"),
        job_type: p.get_int_in("JobType", 0, 3)?,
        status,
        business_status,
    };
    let (jobs, total) =
        c.st.db
            .job_list(&filter, offset, size)
            .await
            .or_internal()?;
    let page = JobPage::load(c, &jobs).await?;
    let mut items: Vec<Value> = jobs.iter().map(|j| job_json(j, &page)).collect();
    decorate(
        c,
        ResourceType::ReplicationJob,
        &mut items,
        "JobId",
        "SourceId",
    )
    .await?;
    Ok(json!({
        "PageNumber": number,
        "PageSize": size,
        "TotalCount": total,
        "ReplicationJobs": wrap_list("ReplicationJob", items),
    }))
}
