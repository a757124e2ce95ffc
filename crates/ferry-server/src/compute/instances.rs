//! Instances: what RunInstances, CreateInstance, StartInstance, StopInstance and DeleteInstance do, and the
//! worker that carries out their asynchronous steps (`docs/instances.md`).
//!
//! The API records intent with a guarded status change and wakes the worker; the worker takes the step
//! (prepare the overlays, start QEMU, press the power button, kill) and records the outcome. So an API call
//! never waits for a VM, and a server killed half-way finishes the step after its restart: a `Starting`
//! instance is started (or found running), a `Stopping` one is stopped, a `Running` one whose QEMU is gone
//! becomes `Stopped`.
//!
//! Instances are per replica (docs/scale-out.md): an instance's QEMU, overlays and console log live with
//! the replica that launched it (`InstanceRecord::replica`), and only that replica's worker takes its steps.
//! Any replica's API records intent (start, stop, delete) in the database, and the owner carries it out.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};

use ferry_api::ApiError;
use ferry_db::{InstanceRecord, now};
use ferry_types::ids::InstanceId;
use ferry_vm::{BaseDisk, DiskFormat, Driver, InstanceType, VmSpec};

use super::{driver, forget_lock, idle, lock, wake};
use crate::AppState;
use crate::app::OrInternal;

/// How long a graceful stop (ACPI power button) may take before QEMU is killed.
pub const STOP_TIMEOUT_SECS: i64 = 60;
/// Largest system disk accepted (GiB), like ECS's.
pub const MAX_SYSTEM_DISK_GIB: i64 = 2048;
/// The instance type used when a request names none.
pub const DEFAULT_INSTANCE_TYPE: &str = "ecs.t1.small";

/// A launch: RunInstances (`auto_start`) or CreateInstance.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub image_id: String,
    pub instance_type: &'static InstanceType,
    /// `InstanceName`; the instance ID when absent.
    pub name: Option<String>,
    /// Append `001`, `002`, … to the name and host name (RunInstances `UniqueSuffix`).
    pub unique_suffix: bool,
    pub host_name: Option<String>,
    pub description: String,
    pub amount: u32,
    pub system_disk_gib: Option<i64>,
    pub client_token: Option<String>,
    /// The ECS action, for ClientToken scoping.
    pub action: &'static str,
    pub auto_start: bool,
    pub dry_run: bool,
    /// Ferry-only `PortForward.N` rules: (loopback host port, guest port).
    pub port_forwards: Vec<(u16, u16)>,
}

pub fn not_found(id: &str) -> ApiError {
    ApiError::new(
        "InvalidInstanceId.NotFound",
        404,
        format!("instance {id} does not exist: list instances with DescribeInstances"),
    )
}

fn incorrect_status(id: &str, status: &str, wanted: &str) -> ApiError {
    ApiError::new(
        "IncorrectInstanceStatus",
        403,
        format!("instance {id} is {status}; this operation needs it {wanted}"),
    )
}

pub async fn get(st: &AppState, id: &str) -> Result<InstanceRecord, ApiError> {
    st.db
        .instance_get(id)
        .await
        .or_internal()?
        .ok_or_else(|| not_found(id))
}

/// Checks the request, records the instances (`Pending`) and wakes the worker. Returns their IDs (the
/// first request's, for a repeated ClientToken).
///
/// # Errors
/// `InvalidImageId.NotFound` (404), `IncorrectImageStatus` (403) for an image that is not Available,
/// `InvalidSystemDiskSize.LessThanImageSize` / `InvalidSystemDiskSize.ValueNotSupported` (400),
/// `DryRunOperation` (400) when everything checked out under DryRun.
pub async fn launch(st: &AppState, req: &LaunchRequest) -> Result<Vec<String>, ApiError> {
    if let Some(t) = &req.client_token
        && let Some(ids) = st.db.client_token_get(req.action, t).await.or_internal()?
    {
        return Ok(ids);
    }
    let image = st
        .db
        .image_get(&req.image_id)
        .await
        .or_internal()?
        .ok_or_else(|| {
            ApiError::new(
                "InvalidImageId.NotFound",
                404,
                format!(
                    "image {} does not exist: list images with DescribeImages",
                    req.image_id
                ),
            )
        })?;
    let disks = st.db.image_disk_list(&image.id).await.or_internal()?;
    if image.status != "Available" || disks.is_empty() {
        return Err(ApiError::new(
            "IncorrectImageStatus",
            403,
            format!(
                "image {} is {}, not Available: wait until it is built",
                image.id, image.status
            ),
        ));
    }
    let image_gib = super::gib_ceil(disks[0].size_bytes);
    if let Some(gib) = req.system_disk_gib {
        if gib < image_gib {
            return Err(ApiError::new(
                "InvalidSystemDiskSize.LessThanImageSize",
                400,
                format!(
                    "SystemDisk.Size {gib} GiB is smaller than the image's system disk ({image_gib} GiB): \
                     use at least {image_gib}"
                ),
            ));
        }
        if gib > MAX_SYSTEM_DISK_GIB {
            return Err(ApiError::new(
                "InvalidSystemDiskSize.ValueNotSupported",
                400,
                format!("SystemDisk.Size {gib} GiB is larger than {MAX_SYSTEM_DISK_GIB} GiB"),
            ));
        }
    }
    if !req.port_forwards.is_empty() && req.amount > 1 {
        return Err(ApiError::invalid_parameter(
            "PortForward.N",
            "a host port forwards to one instance: launch one instance (Amount=1) per set of PortForward rules",
        ));
    }
    if req.dry_run {
        return Err(ApiError::new(
            "DryRunOperation",
            400,
            "Request validation has been passed with DryRun flag set.",
        ));
    }
    let root = driver(st).root().to_owned();
    let at = now();
    let records: Vec<InstanceRecord> = (1..=req.amount)
        .map(|n| {
            let id = InstanceId::generate().to_string();
            let suffix = if req.unique_suffix {
                format!("{n:03}")
            } else {
                String::new()
            };
            let name = req
                .name
                .as_ref()
                .map(|base| format!("{base}{suffix}"))
                .unwrap_or_else(|| id.clone());
            let host_name = req
                .host_name
                .as_ref()
                .map(|base| format!("{base}{suffix}"))
                .unwrap_or_else(|| id.clone());
            InstanceRecord {
                dir: root.join(&id).display().to_string(),
                id,
                name,
                description: req.description.clone(),
                host_name,
                image_id: image.id.clone(),
                instance_type: req.instance_type.name.to_owned(),
                status: "Pending".to_owned(),
                cpu: i64::from(req.instance_type.cpu),
                memory_mib: req.instance_type.memory_mib as i64,
                system_disk_gib: req.system_disk_gib.filter(|g| *g > image_gib),
                auto_start: i64::from(req.auto_start),
                stop_force: 0,
                stop_deadline: None,
                error: None,
                client_token: req.client_token.clone(),
                created_at: at,
                started_at: None,
                replica: Some(st.replica_id.clone()),
            }
        })
        .collect();
    if let Some(first) = records.first()
        && !req.port_forwards.is_empty()
        && let Err(port) = st
            .db
            .port_forward_claim(&first.id, &req.port_forwards)
            .await
            .or_internal()?
    {
        return Err(ApiError::new(
            "InvalidPortForward.Conflict",
            400,
            format!(
                "host port {port} is already forwarded to another instance: choose another host port"
            ),
        ));
    }
    let token = req.client_token.as_deref().map(|t| (req.action, t));
    let created = st.db.instance_create_many(&records, token).await;
    if !matches!(created, Ok(None))
        && let Some(first) = records.first()
    {
        // Not created (a repeated ClientToken, or an error): the ports claimed for it go back.
        st.db.port_forward_release(&first.id).await.or_internal()?;
    }
    if let Some(existing) = created.or_internal()? {
        return Ok(existing);
    }
    wake();
    Ok(records.into_iter().map(|r| r.id).collect())
}

/// StartInstance: `Stopped` → `Starting`; the worker starts QEMU.
pub async fn start(st: &AppState, id: &str) -> Result<(), ApiError> {
    let rec = get(st, id).await?;
    if !st
        .db
        .instance_transition(id, "Stopped", "Starting")
        .await
        .or_internal()?
    {
        return Err(incorrect_status(id, &rec.status, "Stopped"));
    }
    wake();
    Ok(())
}

/// StopInstance: `Running` → `Stopping`; the worker kills QEMU (`force`) or presses the power button and
/// kills it after [`STOP_TIMEOUT_SECS`].
pub async fn stop(st: &AppState, id: &str, force: bool) -> Result<(), ApiError> {
    let rec = get(st, id).await?;
    if !st
        .db
        .instance_request_stop(id, force, now() + STOP_TIMEOUT_SECS)
        .await
        .or_internal()?
    {
        return Err(incorrect_status(id, &rec.status, "Running"));
    }
    wake();
    Ok(())
}

/// DeleteInstance: a `Stopped` instance, or any with `force` (QEMU is killed). Removes its directory
/// (overlays, console log) and its record.
pub async fn delete(st: &AppState, id: &str, force: bool) -> Result<(), ApiError> {
    let _guard = lock(id).await;
    let rec = get(st, id).await?;
    if rec.status != "Stopped" && !force {
        return Err(incorrect_status(
            id,
            &rec.status,
            "Stopped (or pass Force=true)",
        ));
    }
    st.db.port_forward_release(id).await.or_internal()?;
    if !owned_by(st, &rec) {
        // Its QEMU runs on another replica, which finds the record gone and removes the instance's process
        // and directory at its next pass (an orphan directory, below in `reconcile`).
        st.db.instance_delete(id).await.or_internal()?;
        forget_lock(id);
        return Ok(());
    }
    let driver = driver(st);
    driver.kill(id).await.or_internal()?;
    // The record goes first: a crash before the directory is removed leaves an orphan directory, which
    // the worker removes; the other order could leave a record whose disks are gone.
    st.db.instance_delete(id).await.or_internal()?;
    driver.delete(id).await.or_internal()?;
    forget_lock(id);
    Ok(())
}

/// The tail of an instance's serial console and when it was last written; `None` before the first boot.
pub fn console(st: &AppState, id: &str) -> Result<Option<ferry_vm::Console>, ApiError> {
    driver(st).console(id, 64 << 10).or_internal()
}

/// What to run for `rec`: its image's disks (qcow2 when derived, else raw), its type's size, the image's
/// boot mode as firmware, and its Ferry-only port forwards (loopback only).
pub(crate) async fn spec(st: &AppState, rec: &InstanceRecord) -> anyhow::Result<VmSpec> {
    let mut spec = base_spec(st, rec).await?;
    if let Some(image) = st.db.image_get(&rec.image_id).await?
        && image.boot_mode.eq_ignore_ascii_case("UEFI")
    {
        spec.firmware = ferry_vm::Firmware::Uefi;
    }
    let forwards: Vec<ferry_vm::PortForward> = st
        .db
        .port_forward_list(&rec.id)
        .await?
        .into_iter()
        .map(|f| {
            Ok(ferry_vm::PortForward {
                host: std::net::SocketAddr::from(([127, 0, 0, 1], u16::try_from(f.host_port)?)),
                guest_port: u16::try_from(f.guest_port)?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    spec.network.forwards = forwards;
    Ok(spec)
}

async fn base_spec(st: &AppState, rec: &InstanceRecord) -> anyhow::Result<VmSpec> {
    let disks = st.db.image_disk_list(&rec.image_id).await?;
    Ok(VmSpec {
        id: rec.id.clone(),
        cpu: u32::try_from(rec.cpu)?,
        memory_mib: u64::try_from(rec.memory_mib)?,
        disks: disks
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
            .collect(),
        system_disk_bytes: rec
            .system_disk_gib
            .map(|g| u64::try_from(g).map(|g| g << 30))
            .transpose()?,
        ..VmSpec::default()
    })
}

/// Prepares the instance's overlays (idempotent). Fails clearly when the image is gone and the overlays
/// were never made.
pub(super) async fn prepare(
    st: &AppState,
    driver: &Driver,
    rec: &InstanceRecord,
) -> anyhow::Result<VmSpec> {
    let spec = spec(st, rec).await?;
    if spec.disks.is_empty() && driver.instance_file(&rec.id).is_err() {
        anyhow::bail!(
            "image {} no longer exists and the instance's disks were never created: delete the instance",
            rec.image_id
        );
    }
    driver.prepare(&spec).await?;
    Ok(spec)
}

/// Instances the power button was pressed for, in this process (pressing it again after a restart is
/// harmless).
static POWERED_DOWN: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);

fn powered_down(id: &str, insert: bool) -> bool {
    let mut set = POWERED_DOWN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if insert {
        !set.insert(id.to_owned())
    } else {
        set.remove(id)
    }
}

/// Takes the next step of one instance, under its lock.
async fn step(st: &AppState, driver: &Driver, id: &str) -> anyhow::Result<()> {
    let _guard = lock(id).await;
    let Some(rec) = st.db.instance_get(id).await? else {
        return Ok(());
    };
    match rec.status.as_str() {
        "Pending" => match prepare(st, driver, &rec).await {
            Ok(_) => {
                let next = if rec.auto_start != 0 {
                    "Starting"
                } else {
                    "Stopped"
                };
                st.db.instance_transition(id, "Pending", next).await?;
                if next == "Starting" {
                    start_now(st, driver, &rec).await?;
                }
            }
            Err(e) => {
                tracing::error!(instance = id, error = %e, "preparing the instance failed");
                st.db
                    .instance_set_stopped(id, "Pending", Some(&format!("{e:#}")))
                    .await?;
            }
        },
        "Starting" => start_now(st, driver, &rec).await?,
        // A cutover's production instance being re-disked and validated: the validation worker owns it
        // (workers::validate) and records the outcome.
        "Validating" => {}
        "Running" => {
            if driver.find(id).is_none() {
                tracing::info!(instance = id, "QEMU is gone (guest powered off or crashed)");
                st.db.instance_set_stopped(id, "Running", None).await?;
            }
        }
        "Stopping" => {
            if driver.find(id).is_none() {
                st.db.instance_set_stopped(id, "Stopping", None).await?;
                powered_down(id, false);
            } else if rec.stop_force != 0 || rec.stop_deadline.is_none_or(|d| now() >= d) {
                driver.kill(id).await?;
                st.db.instance_set_stopped(id, "Stopping", None).await?;
                powered_down(id, false);
            } else if !powered_down(id, true)
                && let Err(e) = driver.powerdown(id).await
            {
                tracing::warn!(instance = id, error = %e, "power button failed; the stop deadline will kill it");
            }
        }
        "Stopped" => {
            // A QEMU for a Stopped instance: a start whose outcome was not recorded (crash between the
            // two). The record follows the truth.
            if driver.find(id).is_some()
                && st.db.instance_transition(id, "Stopped", "Running").await?
            {
                tracing::warn!(instance = id, "found running although recorded Stopped");
            }
        }
        other => tracing::warn!(instance = id, status = other, "unknown instance status"),
    }
    Ok(())
}

async fn start_now(st: &AppState, driver: &Driver, rec: &InstanceRecord) -> anyhow::Result<()> {
    let result = match prepare(st, driver, rec).await {
        Ok(spec) => driver.start(&spec).await.map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => {
            tracing::info!(instance = %rec.id, pid = r.pid, accel = driver.accel().name(), "instance started");
            st.db.instance_set_running(&rec.id, now()).await?;
        }
        Err(e) => {
            tracing::error!(instance = %rec.id, error = %e, "starting the instance failed");
            st.db
                .instance_set_stopped(&rec.id, "Starting", Some(&format!("{e:#}")))
                .await?;
        }
    }
    Ok(())
}

/// One pass over every instance, then the orphan directories (a deletion interrupted after its record
/// was removed).
async fn reconcile(st: &AppState) -> anyhow::Result<()> {
    let driver = driver(st);
    // Directories are listed before the records: a directory is only made after its record exists, so
    // one missing from the records read afterwards is a true orphan.
    let dirs = driver.list()?;
    let records = st.db.instance_list().await?;
    for rec in &records {
        if rec.replica.is_none() && st.db.instance_adopt(&rec.id, &st.replica_id).await? {
            tracing::info!(instance = %rec.id, "adopted an instance recorded before replicas");
        } else if !owned_by(st, rec) {
            continue;
        }
        if let Err(e) = step(st, &driver, &rec.id).await {
            tracing::error!(instance = %rec.id, error = %e, "instance step failed; will retry");
        }
    }
    let known: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    for id in dirs.iter().filter(|d| !known.contains(d.as_str())) {
        let _guard = lock(id).await;
        if st.db.instance_get(id).await?.is_none() {
            tracing::info!(instance = %id, "removing the directory of a deleted instance");
            driver.delete(id).await?;
        }
    }
    Ok(())
}

/// Whether this replica runs the instance's QEMU (docs/scale-out.md: instances are per replica).
fn owned_by(st: &AppState, rec: &InstanceRecord) -> bool {
    rec.replica.as_deref().is_none_or(|r| r == st.replica_id)
}

/// The instance worker: a reconcile pass every second, or at once when woken.
pub async fn worker(st: Arc<AppState>) {
    loop {
        if let Err(e) = reconcile(&st).await {
            tracing::error!(error = %e, "instance worker pass failed");
        }
        idle(1).await;
    }
}
