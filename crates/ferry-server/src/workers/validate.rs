//! The image pipeline after verification: guest adaptation of a built image, boot validation, a cutover's
//! production instance, and the finalization of a finished job (docs/replication-jobs.md, "Adaptation and
//! validation"; docs/boot-validation.md, "The server"; docs/cutover.md).
//!
//! - [`adapt_image`] runs `ferry_image::adapt` in place on an image's raw disks (copies: the snapshots never
//!   change), records the report (table `image_pipeline`), the image's boot mode and the digest of every
//!   adapted disk, and decides whether the image is to be validated. Disks without a Linux system are "not
//!   adapted" and their validation `Skipped`, never an error.
//! - [`worker`] validates every image whose validation is `Pending` (or `Running` when its worker died),
//!   one replica at a time per image (lease `validate:<image>`): a throwaway instance under
//!   `<data>/validation-instances` (never listed by DescribeInstances), or, for a cutover's final image of a
//!   TargetInstance job, the production instance, which stays running. The report and a copy of the console
//!   log (`<data>/validations/<id>/console.log`) are kept with the image and the run.
//! - [`complete_run`] ends a run whose image is done (built, adapted, validated or skipped): the run
//!   `Succeeded`, the job `Waiting` or `Finished` (SMC's state machine: validation is part of the run's
//!   `Processing` step); a failed validation sets the job's `ErrorCode`/`StatusInfo`.
//! - [`finalize`] deletes a finished job's test instances.
//!
//! Invariants: every step is idempotent and restartable: an interrupted validation (server killed) is marked
//! failed-as-interrupted and run again by whichever replica takes the lease; a validator error never leaves a
//! run in `Processing` (the validation is recorded `Failed` with the error and the run completes); the
//! throwaway instance's files are removed whatever the outcome.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferry_api::ApiError;
use ferry_db::{ImagePipelineRecord, ImageRecord, ValidationRecord, now};
use ferry_types::ids::InstanceId;
use ferry_types::inventory::{DiskSource, Inventory};
use ferry_vm::validate::{UserChecks, ValidationReport, ValidationSpec};
use ferry_vm::{BaseDisk, DiskFormat, Driver, Firmware, VmSpec};
use serde::{Deserialize, Serialize};

use super::lease::{self, Leased};
use crate::AppState;
use crate::app::jobs::{self, JobSettings};
use crate::compute;

/// Format version of [`PipelineOptions`] (column `image_pipeline.options`).
pub const PIPELINE_OPTIONS_VERSION: u32 = 1;
/// The throwaway instance's type when the job names none.
pub const DEFAULT_VALIDATION_INSTANCE_TYPE: &str = "ecs.t1.small";
/// How long a guest may take to boot and report (TCG is slow).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a production instance gets to power off before it is killed (its overlays are replaced).
const PRODUCTION_STOP_GRACE: Duration = Duration::from_secs(15);
/// Longest `ValidationChecks` JSON accepted.
const MAX_CHECKS_LEN: usize = 16 << 10;

/// How an image goes through the pipeline: the job's Ferry-only settings (or CreateImage's), stored with
/// the image so that a rebuild or a restart runs with the same options. Version 1; unknown fields are
/// ignored and absent ones take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineOptions {
    pub version: u32,
    /// `Dhcp` or `KeepStatic`.
    pub network_mode: String,
    pub validation_enabled: bool,
    /// `ferry_vm::validate::UserChecks` as JSON.
    pub checks: Option<serde_json::Value>,
    pub instance_type: String,
    /// The source's device name of each image disk (`/dev/sda`…), empty = adaptation guesses by order.
    pub source_devices: Vec<String>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            version: PIPELINE_OPTIONS_VERSION,
            network_mode: "Dhcp".into(),
            validation_enabled: true,
            checks: None,
            instance_type: DEFAULT_VALIDATION_INSTANCE_TYPE.into(),
            source_devices: Vec::new(),
        }
    }
}

impl PipelineOptions {
    /// The options of a job (its Ferry-only settings).
    pub fn from_job(settings: &JobSettings) -> Self {
        let d = Self::default();
        Self {
            network_mode: settings.network_mode.clone().unwrap_or(d.network_mode),
            validation_enabled: settings.validation_enabled.unwrap_or(true),
            checks: settings.validation_checks.clone(),
            instance_type: settings
                .validation_instance_type
                .clone()
                .unwrap_or(d.instance_type),
            ..d
        }
    }

    pub fn decode(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_default()
    }

    pub fn encode(&self) -> String {
        let mut o = self.clone();
        o.version = PIPELINE_OPTIONS_VERSION;
        serde_json::to_string(&o).unwrap_or_else(|_| "{}".into())
    }

    fn adapt_options(&self) -> ferry_image::AdaptOptions {
        ferry_image::AdaptOptions {
            network: if self.network_mode == "KeepStatic" {
                ferry_image::NetworkMode::KeepStatic
            } else {
                ferry_image::NetworkMode::Dhcp
            },
            target_nic: ferry_vm::TARGET_NIC_NAME.to_owned(),
            source_devices: self.source_devices.clone(),
            install_probe: true,
        }
    }

    fn user_checks(&self) -> UserChecks {
        self.checks
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }
}

/// `NetworkMode` (Ferry-only): `Dhcp` or `KeepStatic`, case-insensitive; returns the canonical spelling.
pub fn parse_network_mode(v: &str) -> Result<String, ApiError> {
    ["Dhcp", "KeepStatic"]
        .into_iter()
        .find(|m| m.eq_ignore_ascii_case(v))
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::invalid_parameter(
                "NetworkMode",
                format!(
                    "{v:?} is not a network mode: use Dhcp (the target gets its address by DHCP; the source's \
                     static settings stay on record) or KeepStatic (re-apply the source's static addresses)"
                ),
            )
        })
}

/// `ValidationChecks` (Ferry-only): the user's checks as JSON (docs/boot-validation.md).
pub fn parse_checks(text: &str) -> Result<serde_json::Value, ApiError> {
    if text.len() > MAX_CHECKS_LEN {
        return Err(ApiError::invalid_parameter(
            "ValidationChecks",
            format!("is longer than {MAX_CHECKS_LEN} bytes"),
        ));
    }
    let checks = UserChecks::parse(text).map_err(|e| {
        ApiError::invalid_parameter(
            "ValidationChecks",
            format!(
                "{e}; expected e.g. {{\"tcp\":[22],\"http\":[{{\"port\":80,\"path\":\"/\",\"expect_status\":200}}],\
                 \"commands\":[{{\"name\":\"app\",\"command\":\"test -f /etc/app.conf\",\"expect_exit\":0}}]}}"
            ),
        )
    })?;
    serde_json::to_value(&checks).map_err(crate::app::internal)
}

/// `ValidationInstanceType` (Ferry-only): one of Ferry's instance types.
pub fn parse_instance_type(v: &str) -> Result<String, ApiError> {
    match ferry_vm::instance_type(v) {
        Some(t) => Ok(t.name.to_owned()),
        None => Err(ApiError::invalid_parameter(
            "ValidationInstanceType",
            format!(
                "{v:?} is not an instance type: use one of {}",
                ferry_vm::INSTANCE_TYPES
                    .iter()
                    .map(|t| t.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The source's device name of each disk of a run's image, in image-disk order, when every disk is a block
/// device (an image-file disk has no device name: adaptation then guesses by order).
pub fn source_devices(inv: Option<&Inventory>, disk_indexes: &[i64]) -> Vec<String> {
    inv.map_or_else(Vec::new, |inv| devices_of(&inv.disks, disk_indexes))
}

fn devices_of(disks: &[ferry_types::inventory::Disk], disk_indexes: &[i64]) -> Vec<String> {
    let mut out = Vec::new();
    for i in disk_indexes {
        match disks.iter().find(|d| i64::from(d.index) == *i) {
            Some(d) if d.source == DiskSource::BlockDevice => out.push(d.path.clone()),
            _ => return Vec::new(),
        }
    }
    out
}

/// Adapts an image's built raw disks in place and records the outcome, its boot mode and the adapted
/// digests; sets its validation `Pending` or `Skipped` (with the reason). Idempotent: adapting an adapted
/// image changes nothing.
///
/// # Errors
/// Only for failures to record the outcome (database, reading the disks for their digests): an adaptation
/// that fails is recorded (`adapt_status` Failed, validation Skipped with the reason) and the image stays
/// usable unadapted.
pub async fn adapt_image(
    st: &AppState,
    image: &ImageRecord,
    opts: &PipelineOptions,
    production_instance: Option<&str>,
) -> anyhow::Result<ImagePipelineRecord> {
    let disks = st.db.image_disk_list(&image.id).await?;
    let paths: Vec<PathBuf> = disks.iter().map(|d| PathBuf::from(&d.raw_path)).collect();
    let started = std::time::Instant::now();
    let outcome = ferry_image::adapt(&paths, &opts.adapt_options()).await;
    let mut rec = ImagePipelineRecord {
        image_id: image.id.clone(),
        adapt_status: String::new(),
        adapt_report: None,
        adapt_reason: None,
        validation_status: "Pending".into(),
        validation_reason: None,
        options: opts.encode(),
        production_instance: production_instance.map(str::to_owned),
        updated_at: now(),
    };
    match outcome {
        Ok(report) => {
            tracing::info!(image = %image.id, changes = report.changes.len(), boot_mode = %report.boot_mode,
                ms = started.elapsed().as_millis() as u64, "image adapted");
            rec.adapt_status = "Adapted".into();
            rec.adapt_report = Some(serde_json::to_string(&report)?);
            let boot_mode = match report.boot_mode.as_str() {
                "UEFI" => "UEFI",
                _ => "BIOS",
            };
            st.db.image_set_boot_mode(&image.id, boot_mode).await?;
            for d in &disks {
                let path = PathBuf::from(&d.raw_path);
                let chunk = st
                    .db
                    .snapshot_get(&d.snapshot_id)
                    .await?
                    .map_or(ferry_chunk::DEFAULT_CHUNK_SIZE, |s| {
                        u32::try_from(s.chunk_size).unwrap_or(ferry_chunk::DEFAULT_CHUNK_SIZE)
                    });
                let index =
                    ferry_chunk::bulk::blocking(move || ferry_image::index_of_image(&path, chunk))
                        .await??;
                st.db
                    .image_disk_digest_put(
                        &image.id,
                        d.disk_index,
                        &index.root_digest().to_string(),
                    )
                    .await?;
            }
            if !opts.validation_enabled && production_instance.is_none() {
                rec.validation_status = "Skipped".into();
                rec.validation_reason =
                    Some("validation turned off for this job (ValidationEnabled=false)".into());
            }
        }
        Err(ferry_image::AdaptError::NoOperatingSystem { .. }) => {
            tracing::info!(image = %image.id, "not adapted: no operating system found");
            rec.adapt_status = "NotAdapted".into();
            rec.adapt_reason = Some("not adapted: no operating system found".into());
            rec.validation_status = "Skipped".into();
            rec.validation_reason = Some(
                "not adapted: no operating system found on the image's disks, so there is nothing to boot"
                    .into(),
            );
        }
        Err(e) => {
            tracing::warn!(image = %image.id, error = %e, "adaptation failed; the image stays unadapted");
            rec.adapt_status = "Failed".into();
            rec.adapt_reason = Some(format!("adaptation failed: {e}"));
            rec.validation_status = "Skipped".into();
            rec.validation_reason = Some(format!(
                "not validated: adaptation failed ({e}). Fix the cause, then rebuild with `ferry image rebuild {}`",
                image.id
            ));
        }
    }
    st.db.image_pipeline_put(&rec).await?;
    Ok(rec)
}

/// The validation worker: validates every image whose validation is pending (or was running on a process
/// that died), one replica at a time per image (lease `validate:<image>`).
pub async fn worker(st: Arc<AppState>) {
    loop {
        match st.db.image_pipeline_list_to_validate().await {
            Ok(list) => {
                for p in list {
                    let still_to_do = async {
                        matches!(st.db.image_pipeline_get(&p.image_id).await,
                            Ok(Some(r)) if r.validation_status == "Pending" || r.validation_status == "Running")
                    };
                    let name = format!("validate:{}", p.image_id);
                    let outcome =
                        match lease::run_leased(&st, &name, still_to_do, validate_image(&st, &p))
                            .await
                        {
                            Leased::Done(r) => r,
                            Leased::Busy | Leased::Lost => continue,
                        };
                    if let Err(e) = outcome {
                        // The validator could not run at all: record it so that the run never stays stuck.
                        tracing::error!(image = %p.image_id, error = %e, "validation could not run");
                        let msg = format!("validation could not run: {e:#}");
                        let _ = st
                            .db
                            .image_pipeline_validation_transition(
                                &p.image_id,
                                &["Pending", "Running"],
                                "Failed",
                                Some(&msg),
                                now(),
                            )
                            .await;
                        if let Some(instance) = &p.production_instance {
                            release_production(&st, instance, &msg).await;
                        }
                        if let Err(e) = complete_run(&st, &p.image_id).await {
                            tracing::error!(image = %p.image_id, error = %e, "cannot complete the run");
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "validation worker cannot read images"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), st.wake.notified()).await;
    }
}

/// A production instance whose validation could not run leaves `Validating`: `Running` if its QEMU runs,
/// else `Stopped` with the reason, so that the instance worker manages it again.
async fn release_production(st: &AppState, instance: &str, why: &str) {
    let _guard = compute::lock(instance).await;
    let running = compute::driver(st).find(instance).is_some();
    let moved = if running {
        st.db
            .instance_set_running_from(instance, "Validating", now())
            .await
    } else {
        st.db
            .instance_set_stopped(instance, "Validating", Some(why))
            .await
    };
    if let Err(e) = moved {
        tracing::error!(instance, error = %e, "cannot release the production instance");
    }
}

/// The driver of throwaway validation instances (a root of its own: the instance worker never sees them).
pub fn validation_driver(st: &AppState) -> Driver {
    Driver::new(st.cfg.data_dir.join("validation-instances"))
}

fn validation_dir(st: &AppState, id: &str) -> PathBuf {
    st.cfg.data_dir.join("validations").join(id)
}

fn firmware(boot_mode: &str) -> Firmware {
    if boot_mode.eq_ignore_ascii_case("UEFI") {
        Firmware::Uefi
    } else {
        Firmware::Bios
    }
}

/// The base disks of an image, qcow2 when derived, else raw.
pub async fn base_disks(st: &AppState, image_id: &str) -> anyhow::Result<Vec<BaseDisk>> {
    Ok(st
        .db
        .image_disk_list(image_id)
        .await?
        .into_iter()
        .map(|d| match d.qcow2_path {
            Some(q) => BaseDisk {
                path: q.into(),
                format: DiskFormat::Qcow2,
            },
            None => BaseDisk {
                path: d.raw_path.into(),
                format: DiskFormat::Raw,
            },
        })
        .collect())
}

/// Runs (or re-runs) one image's validation and completes its run.
async fn validate_image(st: &AppState, p: &ImagePipelineRecord) -> anyhow::Result<()> {
    let Some(image) = st.db.image_get(&p.image_id).await? else {
        // Deleted meanwhile: nothing to validate.
        st.db.image_pipeline_delete(&p.image_id).await?;
        return Ok(());
    };
    if image.status == "CreateFailed" {
        st.db
            .image_pipeline_validation_transition(
                &image.id,
                &["Pending", "Running"],
                "Skipped",
                Some("not validated: the image's build failed"),
                now(),
            )
            .await?;
        return Ok(());
    }
    if image.status != "Available" {
        // Still being built (a CreateImage build adapts before the image is available).
        return Ok(());
    }
    // A validation left Running by a process that died: say so, and clean its throwaway instance up.
    for v in st.db.validation_list_by_image(&image.id).await? {
        if v.status == "Running" {
            st.db
                .validation_finish(
                    &v.id,
                    "Failed",
                    None,
                    Some(
                        "interrupted: the server stopped during this validation; it was run again",
                    ),
                    None,
                    now(),
                )
                .await?;
            if v.kind == "Image" {
                let d = validation_driver(st);
                let _ = d.kill(&v.instance_id).await;
                let _ = d.delete(&v.instance_id).await;
            }
        }
    }
    st.db
        .image_pipeline_validation_transition(
            &image.id,
            &["Pending", "Running"],
            "Running",
            None,
            now(),
        )
        .await?;
    let opts = PipelineOptions::decode(&p.options);
    let (status, reason) = match &p.production_instance {
        Some(instance) => validate_production(st, &image, &opts, instance).await?,
        None => validate_throwaway(st, &image, &opts).await?,
    };
    st.db
        .image_pipeline_validation_transition(
            &image.id,
            &["Running"],
            &status,
            reason.as_deref(),
            now(),
        )
        .await?;
    complete_run(st, &image.id).await
}

fn instance_type_of(opts: &PipelineOptions) -> &'static ferry_vm::InstanceType {
    ferry_vm::instance_type(&opts.instance_type)
        .or_else(|| ferry_vm::instance_type(DEFAULT_VALIDATION_INSTANCE_TYPE))
        .unwrap_or(&ferry_vm::INSTANCE_TYPES[0])
}

/// The names of a report's failed checks, for messages.
fn failed_checks(r: &ValidationReport) -> String {
    r.checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{} ({})", c.name, c.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Copies an instance's console log next to the validation's record; returns its path.
async fn keep_console(st: &AppState, driver: &Driver, instance: &str, vid: &str) -> Option<String> {
    let from = driver.console_path(instance).ok()?;
    let dir = validation_dir(st, vid);
    tokio::fs::create_dir_all(&dir).await.ok()?;
    let to = dir.join("console.log");
    match tokio::fs::copy(&from, &to).await {
        Ok(_) => Some(to.display().to_string()),
        Err(e) => {
            tracing::warn!(instance, error = %e, "cannot keep the validation's console log");
            None
        }
    }
}

/// Records a validation's outcome; returns the image's validation status and reason.
async fn record(
    st: &AppState,
    vid: &str,
    image_id: &str,
    result: Result<ValidationReport, ferry_vm::VmError>,
    console: Option<String>,
) -> anyhow::Result<(String, Option<String>)> {
    let (status, report, error, reason) = match result {
        Ok(r) => {
            let json = serde_json::to_string(&r)?;
            if r.passed {
                ("Passed", Some(json), None, None)
            } else {
                let msg = format!(
                    "boot validation {vid} failed: {}. Read the console log with `ferry image validation {image_id}`",
                    failed_checks(&r)
                );
                ("Failed", Some(json), None, Some(msg))
            }
        }
        Err(e) => {
            let msg = format!(
                "boot validation {vid} could not run the instance: {e}. Read the console log with `ferry image \
                 validation {image_id}`"
            );
            ("Failed", None, Some(e.to_string()), Some(msg))
        }
    };
    st.db
        .validation_finish(
            vid,
            status,
            report.as_deref(),
            error.as_deref(),
            console.as_deref(),
            now(),
        )
        .await?;
    Ok((status.to_owned(), reason))
}

fn new_validation(image: &ImageRecord, instance: &str, kind: &str) -> ValidationRecord {
    ValidationRecord {
        id: format!("v-{:016x}", rand::random::<u64>()),
        image_id: image.id.clone(),
        job_id: image.job_id.clone(),
        run_id: image.run_id.clone(),
        instance_id: instance.to_owned(),
        kind: kind.to_owned(),
        status: "Running".to_owned(),
        report: None,
        error: None,
        console_path: None,
        started_at: now(),
        ended_at: None,
    }
}

/// Boots a throwaway instance of the image and checks it; its files are removed afterwards.
async fn validate_throwaway(
    st: &AppState,
    image: &ImageRecord,
    opts: &PipelineOptions,
) -> anyhow::Result<(String, Option<String>)> {
    let driver = validation_driver(st);
    let instance = InstanceId::generate().to_string();
    let v = new_validation(image, &instance, "Image");
    st.db.validation_create(&v).await?;
    let t = instance_type_of(opts);
    let mut spec = VmSpec::new(
        instance.clone(),
        t.cpu,
        t.memory_mib,
        base_disks(st, &image.id).await?,
    );
    spec.firmware = firmware(&image.boot_mode);
    let vspec = ValidationSpec {
        boot_timeout: BOOT_TIMEOUT,
        checks: opts.user_checks(),
        keep_running: false,
    };
    tracing::info!(image = %image.id, instance, validation = %v.id, "boot validation started");
    let result = ferry_vm::validate::validate(&driver, spec, &vspec).await;
    let console = keep_console(st, &driver, &instance, &v.id).await;
    if let Err(e) = driver.kill(&instance).await {
        tracing::warn!(instance, error = %e, "cannot stop the throwaway instance");
    }
    if let Err(e) = driver.delete(&instance).await {
        tracing::warn!(instance, error = %e, "cannot remove the throwaway instance's files");
    }
    let out = record(st, &v.id, &image.id, result, console).await?;
    tracing::info!(image = %image.id, validation = %v.id, status = %out.0, "boot validation ended");
    Ok(out)
}

/// A cutover's production instance: stopped, its disks replaced by overlays of the final image, started
/// and validated (kept running, pass or fail).
async fn validate_production(
    st: &AppState,
    image: &ImageRecord,
    opts: &PipelineOptions,
    instance: &str,
) -> anyhow::Result<(String, Option<String>)> {
    let driver = compute::driver(st);
    let v = new_validation(image, instance, "Production");
    let Some(rec) = st.db.instance_get(instance).await? else {
        st.db.validation_create(&v).await?;
        let msg = format!(
            "production instance {instance} no longer exists: launch one from image {} with RunInstances",
            image.id
        );
        st.db
            .validation_finish(&v.id, "Failed", None, Some(&msg), None, now())
            .await?;
        return Ok(("Failed".into(), Some(msg)));
    };
    {
        let _guard = compute::lock(instance).await;
        // Mark it first (the instance worker leaves a `Validating` instance alone, and holds this lock for
        // its steps), then stop it and replace its disks. Its old overlays are discarded, so a short grace
        // for the ACPI power button is enough.
        let current = st
            .db
            .instance_get(instance)
            .await?
            .map_or(rec.status.clone(), |r| r.status);
        if current != "Validating"
            && !st
                .db
                .instance_transition(instance, &current, "Validating")
                .await?
        {
            anyhow::bail!("instance {instance} changed status during the cutover: try again");
        }
        let _ = driver.stop(instance, false, PRODUCTION_STOP_GRACE).await;
        let _ = driver.kill(instance).await;
        driver
            .delete(instance)
            .await
            .with_context(|| format!("removing the old disks of instance {instance}"))?;
        st.db.instance_set_image(instance, &image.id).await?;
    }
    st.db.validation_create(&v).await?;
    let rec = st
        .db
        .instance_get(instance)
        .await?
        .with_context(|| format!("instance {instance} was deleted during the cutover"))?;
    let spec = compute::instances::spec(st, &rec).await?;
    tracing::info!(image = %image.id, instance, validation = %v.id, "production instance: disks replaced, booting");
    let (result, console) = if opts.validation_enabled {
        let vspec = ValidationSpec {
            boot_timeout: BOOT_TIMEOUT,
            checks: opts.user_checks(),
            keep_running: true,
        };
        let r = ferry_vm::validate::validate(&driver, spec, &vspec).await;
        let console = keep_console(st, &driver, instance, &v.id).await;
        (Some(r), console)
    } else {
        driver.prepare(&spec).await?;
        if let Err(e) = driver.start(&spec).await {
            (Some(Err(e)), None)
        } else {
            (None, None)
        }
    };
    let _guard = compute::lock(instance).await;
    let running = driver.find(instance).is_some();
    let start_error = match &result {
        Some(Err(e)) => Some(format!("{e}")),
        _ => None,
    };
    if running {
        st.db
            .instance_set_running_from(instance, "Validating", now())
            .await?;
    } else {
        st.db
            .instance_set_stopped(instance, "Validating", start_error.as_deref())
            .await?;
    }
    match result {
        Some(r) => record(st, &v.id, &image.id, r, console).await,
        None => {
            let msg = "validation turned off for this job (ValidationEnabled=false): the instance was started \
                       unchecked";
            st.db
                .validation_finish(&v.id, "Skipped", None, Some(msg), None, now())
                .await?;
            Ok(("Skipped".into(), Some(msg.into())))
        }
    }
}

/// Ends the run whose image `image_id` is, once its image is done (built and adapted, its validation
/// ended or skipped): run `Succeeded`; job `Waiting` (incremental) or `Finished` (one-shot, cutover), or
/// `InError` when a cutover's production instance failed its validation. Does nothing for an image without
/// a run (CreateImage) or a run that is no longer `Processing`.
pub async fn complete_run(st: &AppState, image_id: &str) -> anyhow::Result<()> {
    let Some(image) = st.db.image_get(image_id).await? else {
        return Ok(());
    };
    let Some(run_id) = &image.run_id else {
        return Ok(());
    };
    let Some(run) = st.db.run_get(run_id).await? else {
        return Ok(());
    };
    if run.status != "Processing" {
        return Ok(());
    }
    let job = jobs::get_job(st, &run.job_id)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let pipeline = st.db.image_pipeline_get(image_id).await?;
    let at = st.clock.now();
    if !st
        .db
        .run_transition(&run.id, "Processing", "Succeeded", None, Some(at))
        .await?
    {
        return Ok(());
    }
    let failed = pipeline
        .as_ref()
        .filter(|p| p.validation_status == "Failed");
    if let Some(p) = failed
        && p.production_instance.is_some()
    {
        let msg = format!(
            "cutover: production instance {} failed its boot validation and was left running: {}. Fix the \
             cause on the source (or the job's NetworkMode/ValidationChecks), then StartReplicationJob runs \
             the final sync and the launch again",
            p.production_instance.as_deref().unwrap_or_default(),
            p.validation_reason
                .as_deref()
                .unwrap_or("see the validation report")
        );
        st.db
            .job_set_error(&job.id, "CutOver.ValidationFailed", &msg)
            .await?;
        st.wake.notify_waiters();
        return Ok(());
    }
    let cutover = st.db.job_settings_get(&job.id).await?.cutover != 0;
    let next = if job.run_once != 0 || cutover {
        st.db
            .job_transition(
                &job.id,
                &["Running/Processing"],
                "Running",
                Some("Cleaning"),
            )
            .await?;
        "Finished"
    } else {
        "Waiting"
    };
    st.db.job_complete(&job.id, &image.id, next, at).await?;
    if let Some(p) = failed {
        let msg = format!(
            "image {} failed boot validation: {}",
            image.id,
            p.validation_reason.as_deref().unwrap_or("see its report")
        );
        st.db
            .job_set_notice(&job.id, "Validation.Failed", &msg)
            .await?;
    }
    if next == "Finished"
        && let Err(e) = finalize(st, &job.id).await
    {
        tracing::warn!(job = %job.id, error = %e, "finalizing the job failed; its test instances remain");
    }
    st.wake.notify_waiters();
    tracing::info!(job = %job.id, run = %run.id, image = %image.id, status = next, "run completed");
    Ok(())
}

/// A finished job's cleanup: its test instances (instances launched from its images, other than the
/// production instance) are deleted. Images beyond `MaxNumberOfImageToKeep` are retired by the
/// scheduler's retention (never the final image, never one in use), which these deletions unblock.
pub async fn finalize(st: &AppState, job_id: &str) -> anyhow::Result<()> {
    let production = st.db.job_settings_get(job_id).await?.instance_id;
    let images: Vec<String> = st
        .db
        .image_list_by_job(job_id)
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect();
    for inst in st.db.instance_list().await? {
        if images.contains(&inst.image_id) && production.as_deref() != Some(inst.id.as_str()) {
            match compute::instances::delete(st, &inst.id, true).await {
                Ok(()) => {
                    tracing::info!(job = job_id, instance = %inst.id, "test instance deleted (job finished)")
                }
                Err(e) => {
                    tracing::warn!(job = job_id, instance = %inst.id, error = %e.message, "cannot delete a test instance")
                }
            }
        }
    }
    Ok(())
}

/// Whether an image's validation is still to come or running (its files must stay).
pub async fn validation_in_progress(st: &AppState, image_id: &str) -> anyhow::Result<bool> {
    Ok(st
        .db
        .image_pipeline_get(image_id)
        .await?
        .is_some_and(|p| p.validation_status == "Pending" || p.validation_status == "Running"))
}

/// Ferry-only fields of an image for DescribeImages: `ValidationStatus`, `ValidationReport`,
/// `AdaptationReport` (docs/boot-validation.md, "The server").
///
/// The report's `console_tail` (up to 64 KiB) is kept only `with_console` (DescribeImages naming images by
/// `ImageId`), so that listing many images stays small.
pub async fn image_fields(
    st: &AppState,
    image_id: &str,
    with_console: bool,
) -> anyhow::Result<serde_json::Value> {
    use serde_json::json;
    let Some(p) = st.db.image_pipeline_get(image_id).await? else {
        return Ok(json!({}));
    };
    let mut out = serde_json::Map::new();
    out.insert("ValidationStatus".into(), json!(p.validation_status));
    if let Some(r) = &p.validation_reason {
        out.insert("ValidationStatusInfo".into(), json!(r));
    }
    let adaptation = json!({
        "Status": p.adapt_status,
        "Reason": p.adapt_reason,
        "Report": p.adapt_report.as_deref().and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok()),
        "Options": serde_json::from_str::<serde_json::Value>(&p.options).ok(),
        "AdaptedDigests": st.db.image_disk_digest_list(image_id).await?.into_iter()
            .map(|(i, d)| json!({"DiskIndex": i, "Digest": d})).collect::<Vec<_>>(),
    });
    out.insert("AdaptationReport".into(), adaptation);
    if let Some(v) = st.db.validation_list_by_image(image_id).await?.pop() {
        let mut report = validation_json(&v);
        if !with_console && let Some(r) = report.get_mut("Report").and_then(|r| r.as_object_mut()) {
            r.remove("console_tail");
        }
        out.insert("ValidationReport".into(), report);
    }
    Ok(serde_json::Value::Object(out))
}

/// One validation as the API shows it.
pub fn validation_json(v: &ValidationRecord) -> serde_json::Value {
    use serde_json::json;
    let report: Option<serde_json::Value> = v
        .report
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok());
    json!({
        "ValidationId": v.id,
        "Kind": v.kind,
        "Status": v.status,
        "InstanceId": v.instance_id,
        "JobId": v.job_id,
        "RunId": v.run_id,
        "Error": v.error,
        "ConsoleLogPath": v.console_path,
        "StartTime": crate::rpc::time_str(v.started_at),
        "EndTime": v.ended_at.map(crate::rpc::time_str),
        "Passed": report.as_ref().and_then(|r| r.get("passed")).cloned(),
        "Checks": report.as_ref().and_then(|r| r.get("checks")).map(|cs| {
            cs.as_array().map(|a| a.iter().map(|c| json!({
                "Name": c.get("name"), "Passed": c.get("passed"), "Detail": c.get("detail"),
            })).collect::<Vec<_>>()).unwrap_or_default()
        }),
        "Report": report,
    })
}

/// `ValidationChecks` [{Name, Passed, Detail}] of an instance that was validated (a cutover's production
/// instance); `None` for instances never validated.
pub async fn instance_checks(
    st: &AppState,
    instance_id: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    let Some(v) = st.db.validation_latest_by_instance(instance_id).await? else {
        return Ok(None);
    };
    Ok(validation_json(&v).get("Checks").cloned())
}

/// Ferry-only fields of DescribeReplicationJobs, set into the job's JSON `v` (one call in `job_json`):
/// the job's validation options and each run's `ValidationStatus` (of its image). `pipelines` holds the
/// pipeline records of the page's images, read once for the page.
pub fn add_job_fields(
    settings: &JobSettings,
    pipelines: &HashMap<String, ImagePipelineRecord>,
    v: &mut serde_json::Value,
) {
    let opts = PipelineOptions::from_job(settings);
    let Some(o) = v.as_object_mut() else {
        return;
    };
    o.insert("ValidationEnabled".into(), opts.validation_enabled.into());
    o.insert("ValidationInstanceType".into(), opts.instance_type.into());
    o.insert("NetworkMode".into(), opts.network_mode.into());
    if let Some(c) = &opts.checks {
        o.insert("ValidationChecks".into(), c.to_string().into());
    }
    let Some(list) = o
        .get_mut("ReplicationJobRuns")
        .and_then(|r| r.get_mut("ReplicationJobRun"))
        .and_then(|r| r.as_array_mut())
    else {
        return;
    };
    for item in list {
        let Some(p) = item
            .get("ImageId")
            .and_then(|i| i.as_str())
            .and_then(|i| pipelines.get(i))
        else {
            continue;
        };
        if let Some(io) = item.as_object_mut() {
            io.insert(
                "ValidationStatus".into(),
                p.validation_status.clone().into(),
            );
            if let Some(r) = &p.validation_reason {
                io.insert("ValidationStatusInfo".into(), r.clone().into());
            }
        }
    }
}

/// Removes the console copies of an image's validations (the image is being deleted).
pub async fn remove_validation_files(st: &AppState, image_id: &str) {
    if let Ok(list) = st.db.validation_list_by_image(image_id).await {
        for v in list {
            let dir = validation_dir(st, &v.id);
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(validation = %v.id, error = %e, "cannot remove a validation's console copy");
            }
        }
    }
}

/// Reads a validation's kept console log (at most the last `max` bytes).
pub fn read_console(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_modes_are_canonical_and_bad_ones_say_what_to_pass() {
        assert_eq!(parse_network_mode("dhcp").ok().as_deref(), Some("Dhcp"));
        assert_eq!(
            parse_network_mode("KEEPSTATIC").ok().as_deref(),
            Some("KeepStatic")
        );
        let e = parse_network_mode("static").err().map(|e| e.message);
        assert!(e.is_some_and(|m| m.contains("KeepStatic")));
    }

    #[test]
    fn checks_and_instance_types_are_checked() {
        let v = parse_checks(r#"{"tcp":[22]}"#).ok();
        assert_eq!(v.as_ref().and_then(|v| v["tcp"][0].as_u64()), Some(22));
        assert!(parse_checks("{not json").is_err());
        assert!(parse_checks(&format!("{{\"tcp\":[{}]}}", "1,".repeat(9000) + "1")).is_err());
        assert_eq!(
            parse_instance_type("ecs.t1.small").ok().as_deref(),
            Some("ecs.t1.small")
        );
        let e = parse_instance_type("ecs.huge").err().map(|e| e.message);
        assert!(e.is_some_and(|m| m.contains("ecs.t1.small")));
    }

    #[test]
    fn pipeline_options_default_and_read_older_records() {
        let o = PipelineOptions::decode("{}");
        assert_eq!(o, PipelineOptions::default());
        assert!(o.validation_enabled);
        assert_eq!(o.instance_type, DEFAULT_VALIDATION_INSTANCE_TYPE);
        let back = PipelineOptions::decode(&PipelineOptions::default().encode());
        assert_eq!(back.version, PIPELINE_OPTIONS_VERSION);
        let job = JobSettings {
            validation_enabled: Some(false),
            network_mode: Some("KeepStatic".into()),
            ..Default::default()
        };
        let o = PipelineOptions::from_job(&job);
        assert!(!o.validation_enabled);
        assert_eq!(
            o.adapt_options().network,
            ferry_image::NetworkMode::KeepStatic
        );
        assert_eq!(o.adapt_options().target_nic, ferry_vm::TARGET_NIC_NAME);
    }

    #[test]
    fn source_devices_only_for_block_devices() {
        let disk = |index: u32, path: &str, source: DiskSource| ferry_types::inventory::Disk {
            index,
            path: path.into(),
            source,
            size_bytes: 1 << 30,
            model: None,
            partition_table: None,
            table_uuid: None,
            partitions: Vec::new(),
            filesystem: None,
        };
        let block = [
            disk(0, "/dev/sda", DiskSource::BlockDevice),
            disk(1, "/dev/sdb", DiskSource::BlockDevice),
        ];
        assert_eq!(devices_of(&block, &[0, 1]), ["/dev/sda", "/dev/sdb"]);
        assert_eq!(devices_of(&block, &[1]), ["/dev/sdb"]);
        assert!(devices_of(&block, &[0, 2]).is_empty());
        let files = [disk(0, "/srv/disk.img", DiskSource::ImageFile)];
        assert!(
            devices_of(&files, &[0]).is_empty(),
            "image files have no device name"
        );
        assert!(source_devices(None, &[0]).is_empty());
    }
}
