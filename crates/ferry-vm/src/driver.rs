//! The QEMU driver: prepares instance directories, starts, finds, stops and deletes QEMU processes.
//!
//! Every operation is idempotent and safe to retry after a crash: `prepare` creates only what is missing
//! (overlays are written under a temporary name and renamed), `start` returns the running QEMU if there
//! is one, `kill` and `delete` succeed on an instance that is already gone. The caller serialises
//! operations on one instance (the driver keeps no in-memory state, so two processes may share a root).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::VmError;
use crate::net::NetworkSpec;
use crate::proc::live_pid;
use crate::qmp::Qmp;

const QEMU: &str = "qemu-system-x86_64";

/// For tests that boot guests: true (after printing that `test` is skipped and how to install QEMU) when
/// `qemu-system-x86_64` is not installed.
pub fn qemu_missing(test: &str) -> bool {
    let found = std::process::Command::new(QEMU)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED {test}: {QEMU} is not installed (apt-get install qemu-system-x86)");
    }
    !found
}
const QEMU_IMG: &str = "qemu-img";
/// `instance.json`'s format name and current version (`docs/instances.md`).
pub const INSTANCE_FILE_FORMAT: &str = "ferry-instance";
/// Version 2 added `firmware`, `ovmf_code`, `network`, `fw_cfg` and `direct_kernel`; a version-1 file reads
/// as BIOS with no NIC (how version-1 instances ran).
pub const INSTANCE_FILE_VERSION: u32 = 2;
/// How long QEMU may take to exit after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(15);
/// Unix socket addresses hold 108 bytes including the terminator; stay clear of the limit.
const MAX_SOCKET_PATH: usize = 100;

/// CPU virtualisation: KVM (hardware) or TCG (emulation, slow but works everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// `FERRY_VM_ACCEL` (`kvm` or `tcg`) if set, else KVM when `/dev/kvm` can be opened read-write and
    /// is hardware virtualisation (the CPU has `vmx` or `svm`, and the module is not `kvm_pvm`).
    ///
    /// Inside some cloud VMs `/dev/kvm` is PVM, a paravirtual KVM that only runs guest kernels built
    /// for it: a stock kernel started there hangs right after the boot loader. Such a `/dev/kvm` opens
    /// fine, so the CPU flags decide.
    pub fn detect() -> Accel {
        match std::env::var("FERRY_VM_ACCEL").ok().as_deref() {
            Some(v) if v.eq_ignore_ascii_case("tcg") => return Accel::Tcg,
            Some(v) if v.eq_ignore_ascii_case("kvm") => return Accel::Kvm,
            _ => {}
        }
        let opens = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let hardware = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
            c.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        });
        let pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
        if opens && hardware && !pvm {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The format of an image file an overlay is backed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// One image disk an instance boots from (disk 0 is the system disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseDisk {
    /// The image file (absolute path).
    pub path: PathBuf,
    pub format: DiskFormat,
}

/// The machine's firmware.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS (QEMU's default).
    #[default]
    Bios,
    /// OVMF from Debian's `ovmf` package, with a variable store of the instance's own.
    Uefi,
}

impl Firmware {
    /// `BIOS` or `UEFI`, as ECS and the adaptation report spell boot modes.
    pub fn from_boot_mode(mode: &str) -> Option<Firmware> {
        if mode.eq_ignore_ascii_case("bios") {
            Some(Firmware::Bios)
        } else if mode.eq_ignore_ascii_case("uefi") {
            Some(Firmware::Uefi)
        } else {
            None
        }
    }
}

/// A kernel QEMU loads itself (`-kernel`/`-initrd`/`-append`) instead of booting from the disks: used by
/// tests that boot a tiny initramfs; the disks are still attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectKernel {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub append: String,
}

/// A file passed to the guest through QEMU's firmware configuration device (`-fw_cfg name=…,file=…`);
/// the guest reads it at `/sys/firmware/qemu_fw_cfg/by_name/<name>/raw`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwCfgFile {
    /// `opt/…`, at most 55 bytes (QEMU's limit), e.g. `opt/ferry/boot-checks`.
    pub name: String,
    /// The host file (read by QEMU when the instance starts).
    pub file: PathBuf,
}

/// What to run. [`VmSpec::new`] fills in the defaults (BIOS, the isolated NIC, no fw_cfg files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmSpec {
    /// The instance ID (`i-…`), also the directory name.
    pub id: String,
    pub cpu: u32,
    pub memory_mib: u64,
    /// The image's disks, system disk first.
    pub disks: Vec<BaseDisk>,
    /// Virtual size of the system disk's overlay when larger than the image's disk (grows the disk; the
    /// guest's partitions are not touched).
    pub system_disk_bytes: Option<u64>,
    pub firmware: Firmware,
    pub network: NetworkSpec,
    /// Files for the guest's firmware configuration device, as (name, host file).
    pub fw_cfg: Vec<(String, PathBuf)>,
    /// Boot this kernel directly (tests); `None` boots from the disks through the firmware.
    pub direct_kernel: Option<DirectKernel>,
}

impl VmSpec {
    /// A spec with the defaults: BIOS, one NIC on the isolated network, no forwards, no fw_cfg files.
    pub fn new(id: impl Into<String>, cpu: u32, memory_mib: u64, disks: Vec<BaseDisk>) -> VmSpec {
        VmSpec {
            id: id.into(),
            cpu,
            memory_mib,
            disks,
            ..VmSpec::default()
        }
    }

    /// Checks what can be checked without running anything: the ID, the network rules, fw_cfg names.
    pub fn check(&self) -> Result<(), VmError> {
        check_id(&self.id)?;
        let bad = |detail: String| VmError::BadSpec {
            id: self.id.clone(),
            detail,
        };
        self.network.check().map_err(bad)?;
        for (name, _) in &self.fw_cfg {
            if !name.starts_with("opt/") || name.len() > 55 || name.contains(',') {
                return Err(bad(format!(
                    "fw_cfg name {name:?} must start with \"opt/\", have no ',' and be at most 55 bytes"
                )));
            }
        }
        if self.cpu == 0 || self.memory_mib < 16 {
            return Err(bad(format!(
                "{} vCPUs and {} MiB cannot run a machine",
                self.cpu, self.memory_mib
            )));
        }
        Ok(())
    }
}

fn v1_network() -> NetworkSpec {
    NetworkSpec::none()
}

/// `instance.json`: what an instance directory holds. Version 2 (version 1 is read too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceFile {
    /// Always [`INSTANCE_FILE_FORMAT`].
    pub format: String,
    /// [`INSTANCE_FILE_VERSION`]; a newer version is refused.
    pub version: u32,
    pub id: String,
    pub disks: Vec<InstanceFileDisk>,
    /// Absent in version 1: BIOS.
    #[serde(default)]
    pub firmware: Firmware,
    /// The OVMF code file the instance's variable store (`efivars.fd`) was copied for (UEFI only).
    #[serde(default)]
    pub ovmf_code: Option<PathBuf>,
    /// The network of the latest start. Absent in version 1: no NIC.
    #[serde(default = "v1_network")]
    pub network: NetworkSpec,
    /// fw_cfg files of the latest start.
    #[serde(default)]
    pub fw_cfg: Vec<FwCfgFile>,
    #[serde(default)]
    pub direct_kernel: Option<DirectKernel>,
}

/// One overlay in `instance.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceFileDisk {
    /// File name of the overlay in the instance directory (`disk<N>.qcow2`).
    pub overlay: String,
    /// The image file it is backed by; `None` once flattened ([`Driver::flatten`]).
    pub base: Option<PathBuf>,
    pub base_format: Option<DiskFormat>,
}

/// A running instance's QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub pid: u32,
    /// The QMP socket.
    pub qmp: PathBuf,
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The instance was not running.
    NotRunning,
    /// The guest shut down after the ACPI power button.
    PoweredOff,
    /// QEMU was killed (forced, or the guest did not shut down in time).
    Killed,
}

/// The tail of an instance's serial console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Console {
    pub bytes: Vec<u8>,
    /// When the console log was last written.
    pub modified: SystemTime,
}

/// Instance IDs name directories: 1–64 characters of `[a-z0-9-]`, not starting with `-`.
pub fn check_id(id: &str) -> Result<(), VmError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(VmError::InvalidId {
            id: id.chars().take(64).collect(),
        })
    }
}

/// The driver for instances under one root directory.
#[derive(Debug, Clone)]
pub struct Driver {
    root: PathBuf,
    accel: Accel,
}

impl Driver {
    /// A driver for instances under `root` (created on first use), with [`Accel::detect`].
    pub fn new(root: impl Into<PathBuf>) -> Driver {
        Driver {
            root: root.into(),
            accel: Accel::detect(),
        }
    }

    /// Uses `accel` instead of the detected one.
    pub fn with_accel(mut self, accel: Accel) -> Driver {
        self.accel = accel;
        self
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The instance's directory.
    pub fn dir(&self, id: &str) -> Result<PathBuf, VmError> {
        check_id(id)?;
        Ok(self.root.join(id))
    }

    fn pidfile(&self, id: &str) -> Result<PathBuf, VmError> {
        Ok(self.dir(id)?.join("qemu.pid"))
    }

    /// The console log's path.
    pub fn console_path(&self, id: &str) -> Result<PathBuf, VmError> {
        Ok(self.dir(id)?.join("console.log"))
    }

    /// IDs of every instance directory under the root.
    pub fn list(&self) -> Result<Vec<String>, VmError> {
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(VmError::io("listing", &self.root, e)),
        };
        let mut ids = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| VmError::io("listing", &self.root, e))?;
            if let Some(name) = entry.file_name().to_str()
                && check_id(name).is_ok()
                && entry.path().is_dir()
            {
                ids.push(name.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The instance's QEMU if it is running (see the crate doc for how a PID is trusted).
    pub fn find(&self, id: &str) -> Option<Running> {
        let pidfile = self.pidfile(id).ok()?;
        let pid = live_pid(&pidfile)?;
        Some(Running {
            pid,
            qmp: pidfile.with_file_name("qmp.sock"),
        })
    }

    /// Reads `instance.json`.
    pub fn instance_file(&self, id: &str) -> Result<InstanceFile, VmError> {
        let path = self.dir(id)?.join("instance.json");
        let bytes = std::fs::read(&path).map_err(|e| VmError::io("reading", &path, e))?;
        let f: InstanceFile =
            serde_json::from_slice(&bytes).map_err(|e| VmError::InstanceFile {
                path: path.clone(),
                detail: format!("not valid JSON: {e}"),
            })?;
        if f.format != INSTANCE_FILE_FORMAT || f.version > INSTANCE_FILE_VERSION {
            return Err(VmError::InstanceFile {
                path,
                detail: format!(
                    "format {} version {} is not one this Ferry reads (version {INSTANCE_FILE_VERSION}): upgrade Ferry",
                    f.format, f.version
                ),
            });
        }
        Ok(f)
    }

    fn write_instance_file(&self, f: &InstanceFile) -> Result<(), VmError> {
        let path = self.dir(&f.id)?.join("instance.json");
        let bytes = serde_json::to_vec_pretty(f).map_err(|e| VmError::InstanceFile {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        ferry_chunk::durable_write(&path, &bytes).map_err(|e| VmError::io("writing", &path, e))
    }

    /// Creates the instance directory, `instance.json` and one overlay per disk, keeping whatever
    /// already exists (an instance keeps its disks, and with UEFI its variable store, across stops and
    /// restarts). The spec's firmware, network, fw_cfg files and direct kernel are recorded in
    /// `instance.json` (they are what the next start runs with; [`Driver::start_recorded`] repeats them).
    ///
    /// # Errors
    /// `InvalidId`, `BadSpec`, `FirmwareMissing`, `QemuMissing`, `QemuFailed` (e.g. the image file is
    /// missing), `Io`.
    pub async fn prepare(&self, spec: &VmSpec) -> Result<(), VmError> {
        spec.check()?;
        let dir = self.dir(&spec.id)?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| VmError::io("creating", &dir, e))?;
        let mut file = match self.instance_file(&spec.id) {
            Ok(f) => f,
            Err(VmError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                InstanceFile {
                    format: INSTANCE_FILE_FORMAT.to_owned(),
                    version: INSTANCE_FILE_VERSION,
                    id: spec.id.clone(),
                    disks: spec
                        .disks
                        .iter()
                        .enumerate()
                        .map(|(i, d)| InstanceFileDisk {
                            overlay: format!("disk{i}.qcow2"),
                            base: Some(d.path.clone()),
                            base_format: Some(d.format),
                        })
                        .collect(),
                    firmware: Firmware::Bios,
                    ovmf_code: None,
                    network: NetworkSpec::none(),
                    fw_cfg: Vec::new(),
                    direct_kernel: None,
                }
            }
            Err(e) => return Err(e),
        };
        let before = file.clone();
        file.version = INSTANCE_FILE_VERSION;
        file.firmware = spec.firmware;
        file.network = spec.network.clone();
        file.fw_cfg = spec
            .fw_cfg
            .iter()
            .map(|(name, path)| FwCfgFile {
                name: name.clone(),
                file: path.clone(),
            })
            .collect();
        file.direct_kernel = spec.direct_kernel.clone();
        if spec.firmware == Firmware::Uefi {
            let vars = dir.join(EFI_VARS);
            let code = match &file.ovmf_code {
                Some(code) if vars.exists() => code.clone(),
                _ => {
                    let (code, template) = find_ovmf()?;
                    let tmp = dir.join(format!(".{EFI_VARS}.tmp"));
                    tokio::fs::copy(&template, &tmp)
                        .await
                        .map_err(|e| VmError::io("copying", &template, e))?;
                    tokio::fs::rename(&tmp, &vars)
                        .await
                        .map_err(|e| VmError::io("renaming", &tmp, e))?;
                    code
                }
            };
            file.ovmf_code = Some(code);
        }
        if file != before {
            self.write_instance_file(&file)?;
        }
        for (i, d) in file.disks.iter().enumerate() {
            let overlay = dir.join(&d.overlay);
            if overlay.exists() {
                continue;
            }
            let Some(base) = &d.base else {
                return Err(VmError::InstanceFile {
                    path: dir.join("instance.json"),
                    detail: format!(
                        "{} was flattened but is missing: the instance's disk is lost; delete the instance",
                        d.overlay
                    ),
                });
            };
            let fmt = d.base_format.unwrap_or(DiskFormat::Raw);
            let tmp = dir.join(format!(".{}.tmp", d.overlay));
            let mut args: Vec<std::ffi::OsString> = vec![
                "create".into(),
                "-q".into(),
                "-f".into(),
                "qcow2".into(),
                "-b".into(),
                base.into(),
                "-F".into(),
                fmt.name().into(),
                tmp.clone().into(),
            ];
            if let (0, Some(size)) = (i, spec.system_disk_bytes) {
                args.push(size.to_string().into());
            }
            run(
                QEMU_IMG,
                &args,
                &format!("creating the overlay of {}", d.overlay),
            )
            .await?;
            tokio::fs::rename(&tmp, &overlay)
                .await
                .map_err(|e| VmError::io("renaming", &tmp, e))?;
        }
        Ok(())
    }

    /// Prepares and starts the instance with the spec's firmware, network and fw_cfg files (recorded in
    /// `instance.json`) and returns its QEMU; if it is already running, returns that one unchanged (a
    /// changed network takes effect at the next start). The console log is started afresh.
    ///
    /// # Errors
    /// Those of `prepare`; `SocketPathTooLong`; `QemuFailed` when QEMU refuses to start (its message
    /// says why); `Io`.
    pub async fn start(&self, spec: &VmSpec) -> Result<Running, VmError> {
        if let Some(r) = self.find(&spec.id) {
            return Ok(r);
        }
        self.prepare(spec).await?;
        self.launch(&spec.id, spec.cpu, spec.memory_mib).await
    }

    /// Starts a prepared instance exactly as `instance.json` records it (firmware, network rules, fw_cfg
    /// files), with `cpu` and `memory_mib` (not recorded: they come from the instance type). Returns the
    /// running QEMU if there is one.
    ///
    /// # Errors
    /// `InstanceFile` if the instance was never prepared; those of [`Driver::start`].
    pub async fn start_recorded(
        &self,
        id: &str,
        cpu: u32,
        memory_mib: u64,
    ) -> Result<Running, VmError> {
        if let Some(r) = self.find(id) {
            return Ok(r);
        }
        self.launch(id, cpu, memory_mib).await
    }

    async fn launch(&self, id: &str, cpu: u32, memory_mib: u64) -> Result<Running, VmError> {
        let spec = VmSpec {
            id: id.to_owned(),
            cpu,
            memory_mib,
            ..VmSpec::default()
        };
        let dir = self.dir(&spec.id)?;
        let qmp = dir.join("qmp.sock");
        if qmp.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(VmError::SocketPathTooLong { path: qmp });
        }
        let pidfile = dir.join("qemu.pid");
        for stale in [&qmp, &pidfile] {
            match std::fs::remove_file(stale) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(VmError::io("removing", stale, e)),
            }
        }
        let file = self.instance_file(&spec.id)?;
        let mut args: Vec<std::ffi::OsString> = vec![
            "-name".into(),
            format!("ferry-{}", spec.id).into(),
            "-accel".into(),
            self.accel.name().into(),
        ];
        if self.accel == Accel::Kvm {
            args.extend(["-cpu".into(), "host".into()]);
        }
        args.extend([
            // `graphics=off` makes SeaBIOS (and boot loaders that ask the firmware) use the serial console.
            "-machine".into(),
            "q35,graphics=off".into(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-m".into(),
            spec.memory_mib.to_string().into(),
            "-smp".into(),
            spec.cpu.to_string().into(),
            "-display".into(),
            "none".into(),
            "-serial".into(),
            path_arg("file:", &dir.join("console.log")),
        ]);
        if file.firmware == Firmware::Uefi {
            let Some(code) = &file.ovmf_code else {
                return Err(VmError::InstanceFile {
                    path: dir.join("instance.json"),
                    detail: "UEFI instance without an OVMF code file: prepare it again".to_owned(),
                });
            };
            if !code.exists() {
                return Err(VmError::FirmwareMissing { path: code.clone() });
            }
            let c = path_arg("if=pflash,format=raw,unit=0,readonly=on,file=", code);
            let v = path_arg("if=pflash,format=raw,unit=1,file=", &dir.join(EFI_VARS));
            args.extend(["-drive".into(), c, "-drive".into(), v]);
        }
        // The NIC comes before the disks so that it gets its fixed slot before QEMU numbers the others.
        args.extend(file.network.qemu_args(&spec.id).into_iter().map(Into::into));
        for f in &file.fw_cfg {
            let mut a = std::ffi::OsString::from(format!("name={},file=", f.name));
            a.push(escape_commas(&f.file));
            args.extend(["-fw_cfg".into(), a]);
        }
        if let Some(k) = &file.direct_kernel {
            args.extend(["-kernel".into(), k.kernel.clone().into()]);
            if let Some(initrd) = &k.initrd {
                args.extend(["-initrd".into(), initrd.clone().into()]);
            }
            args.extend(["-append".into(), k.append.clone().into()]);
        }
        for (i, d) in file.disks.iter().enumerate() {
            let mut drive = std::ffi::OsString::from("file=");
            drive.push(escape_commas(&dir.join(&d.overlay)));
            drive.push(format!(",format=qcow2,if=none,id=disk{i}"));
            // The system disk boots first (OVMF would otherwise try the NIC before it).
            let mut device = format!("virtio-blk-pci,drive=disk{i},id=vdisk{i}");
            if i == 0 {
                device.push_str(",bootindex=0");
            }
            args.extend(["-drive".into(), drive, "-device".into(), device.into()]);
        }
        args.extend([
            "-qmp".into(),
            {
                let mut a = path_arg("unix:", &qmp);
                a.push(",server=on,wait=off");
                a
            },
            "-pidfile".into(),
            pidfile.clone().into(),
            "-daemonize".into(),
        ]);
        // With -daemonize, QEMU exits only once the machine is set up (or failed to be): its exit status
        // is the start's outcome, and the daemon carries on in its own session.
        run_in(QEMU, &args, &format!("starting instance {}", spec.id), &dir).await?;
        self.find(&spec.id).ok_or_else(|| VmError::QemuFailed {
            program: QEMU.to_owned(),
            what: format!("starting instance {}", spec.id),
            status: "exit status 0".to_owned(),
            stderr: "QEMU reported success but is not running (see console.log)".to_owned(),
        })
    }

    /// Presses the ACPI power button. Returns `false` if the instance was not running.
    pub async fn powerdown(&self, id: &str) -> Result<bool, VmError> {
        let Some(r) = self.find(id) else {
            return Ok(false);
        };
        let mut q = Qmp::connect(id, &r.qmp).await?;
        q.execute("system_powerdown", None).await?;
        Ok(true)
    }

    /// Kills the instance's QEMU (SIGKILL) and waits until it is gone. Succeeds if it was not running.
    pub async fn kill(&self, id: &str) -> Result<(), VmError> {
        let Some(r) = self.find(id) else {
            return Ok(());
        };
        let pid = nix::unistd::Pid::from_raw(r.pid as i32);
        match nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
            Ok(()) | Err(nix::Error::ESRCH) => {}
            Err(source) => {
                return Err(VmError::Signal {
                    id: id.to_owned(),
                    pid: r.pid,
                    source,
                });
            }
        }
        let deadline = Instant::now() + KILL_WAIT;
        while self.find(id).is_some() {
            if Instant::now() > deadline {
                return Err(VmError::KillTimeout {
                    id: id.to_owned(),
                    pid: r.pid,
                    secs: KILL_WAIT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stops the instance: with `force`, kills it at once; otherwise presses the power button and kills
    /// it if the guest has not shut down after `timeout`.
    pub async fn stop(
        &self,
        id: &str,
        force: bool,
        timeout: Duration,
    ) -> Result<StopOutcome, VmError> {
        if self.find(id).is_none() {
            return Ok(StopOutcome::NotRunning);
        }
        if !force {
            // A guest that is still in its firmware or has no ACPI support ignores the button: the
            // timeout then ends in a kill, as with a forced stop.
            if let Err(e) = self.powerdown(id).await {
                tracing::warn!(instance = id, error = %e, "power button failed; killing instead");
            } else {
                let deadline = Instant::now() + timeout;
                while Instant::now() < deadline {
                    if self.find(id).is_none() {
                        return Ok(StopOutcome::PoweredOff);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        self.kill(id).await?;
        Ok(StopOutcome::Killed)
    }

    /// Kills the instance if it runs and removes its directory (overlays, console log). Succeeds if the
    /// instance does not exist.
    pub async fn delete(&self, id: &str) -> Result<(), VmError> {
        self.kill(id).await?;
        let dir = self.dir(id)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VmError::io("removing", &dir, e)),
        }
    }

    /// The last `max_bytes` of the serial console, or `None` if the instance never booted.
    pub fn console(&self, id: &str, max_bytes: u64) -> Result<Option<Console>, VmError> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.console_path(id)?;
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(VmError::io("opening", &path, e)),
        };
        let meta = f.metadata().map_err(|e| VmError::io("reading", &path, e))?;
        let len = meta.len();
        f.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))
            .map_err(|e| VmError::io("reading", &path, e))?;
        let mut bytes = Vec::new();
        f.take(max_bytes)
            .read_to_end(&mut bytes)
            .map_err(|e| VmError::io("reading", &path, e))?;
        Ok(Some(Console {
            bytes,
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        }))
    }

    /// Copies into each overlay the image data it still reads from its base, so that the image files
    /// can be deleted while the instance lives on. A running instance is flattened live (QMP
    /// `block-stream`), a stopped one with `qemu-img rebase`. Afterwards `instance.json` records no base.
    ///
    /// # Errors
    /// `InstanceFile` if the instance was never prepared; `Qmp`, `QemuFailed`, `Io`.
    pub async fn flatten(&self, id: &str) -> Result<(), VmError> {
        let mut file = self.instance_file(id)?;
        let dir = self.dir(id)?;
        for i in 0..file.disks.len() {
            if file.disks[i].base.is_none() {
                continue;
            }
            let overlay = dir.join(&file.disks[i].overlay);
            match self.find(id) {
                Some(r) => {
                    let mut q = Qmp::connect(id, &r.qmp).await?;
                    let job = format!("ferry-flatten-disk{i}");
                    q.execute(
                        "block-stream",
                        Some(json!({ "job-id": job, "device": format!("disk{i}") })),
                    )
                    .await?;
                    // Streaming copies the whole used part of the image: allow for large disks.
                    let done = q
                        .wait_event("BLOCK_JOB_COMPLETED", Duration::from_secs(6 * 3600), |d| {
                            d["device"] == job.as_str()
                        })
                        .await?;
                    if let Some(err) = done["data"].get("error") {
                        return Err(VmError::Qmp {
                            id: id.to_owned(),
                            detail: format!("flattening disk{i} failed: {err}"),
                        });
                    }
                }
                None => {
                    if overlay.exists() {
                        let args: Vec<std::ffi::OsString> = vec![
                            "rebase".into(),
                            "-q".into(),
                            "-f".into(),
                            "qcow2".into(),
                            "-b".into(),
                            "".into(),
                            overlay.clone().into(),
                        ];
                        run(
                            QEMU_IMG,
                            &args,
                            &format!("flattening {}", overlay.display()),
                        )
                        .await?;
                    }
                }
            }
            file.disks[i].base = None;
            file.disks[i].base_format = None;
            self.write_instance_file(&file)?;
        }
        Ok(())
    }
}

/// The per-instance UEFI variable store's file name.
const EFI_VARS: &str = "efivars.fd";

/// OVMF's code file and variable-store template from Debian's `ovmf` package: the 4 MiB build, else the
/// older 2 MiB one (a pair always comes from the same build).
fn find_ovmf() -> Result<(PathBuf, PathBuf), VmError> {
    let dir = std::env::var_os("FERRY_OVMF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/OVMF"));
    find_ovmf_in(&dir)
}

fn find_ovmf_in(dir: &Path) -> Result<(PathBuf, PathBuf), VmError> {
    for (code, vars) in [
        ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
        ("OVMF_CODE.fd", "OVMF_VARS.fd"),
    ] {
        let (code, vars) = (dir.join(code), dir.join(vars));
        if code.is_file() && vars.is_file() {
            return Ok((code, vars));
        }
    }
    Err(VmError::FirmwareMissing {
        path: dir.join("OVMF_CODE_4M.fd"),
    })
}

/// `prefix` + `path` with QEMU's option escaping (a ',' in a value is written ',,').
fn path_arg(prefix: &str, path: &Path) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from(prefix);
    s.push(escape_commas(path));
    s
}

fn escape_commas(path: &Path) -> std::ffi::OsString {
    let text = path.as_os_str().to_string_lossy();
    std::ffi::OsString::from(text.replace(',', ",,"))
}

async fn run(program: &str, args: &[std::ffi::OsString], what: &str) -> Result<(), VmError> {
    run_in(program, args, what, Path::new("/")).await
}

async fn run_in(
    program: &str,
    args: &[std::ffi::OsString],
    what: &str,
    cwd: &Path,
) -> Result<(), VmError> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                VmError::QemuMissing {
                    program: program.to_owned(),
                }
            } else {
                VmError::io("running", program, e)
            }
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    tail.reverse();
    Err(VmError::QemuFailed {
        program: program.to_owned(),
        what: what.to_owned(),
        status: out.status.to_string(),
        stderr: tail.join(" | "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape_the_root() {
        for bad in ["", "..", "a/b", "../x", "-x", "I-UPPER", &"a".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_id("i-fe0123456789abcdefgh").is_ok());
        let d = Driver::new("/tmp/root");
        assert!(d.dir("../etc").is_err());
        assert!(d.find("../etc").is_none());
    }

    #[test]
    fn version_1_instance_files_read_as_bios_without_a_nic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = Driver::new(dir.path());
        std::fs::create_dir_all(dir.path().join("i-old")).expect("mkdir");
        std::fs::write(
            dir.path().join("i-old/instance.json"),
            r#"{"format":"ferry-instance","version":1,"id":"i-old","disks":[{"overlay":"disk0.qcow2","base":"/x.raw","base_format":"raw"}]}"#,
        )
        .expect("write");
        let f = d.instance_file("i-old").expect("v1 reads");
        assert_eq!(f.firmware, Firmware::Bios);
        assert_eq!(f.network, NetworkSpec::none());
        assert!(f.fw_cfg.is_empty() && f.direct_kernel.is_none());
        std::fs::write(
            dir.path().join("i-old/instance.json"),
            r#"{"format":"ferry-instance","version":3,"id":"i-old","disks":[]}"#,
        )
        .expect("write");
        let e = d.instance_file("i-old").expect_err("v3 refused");
        assert!(e.to_string().contains("upgrade Ferry"), "{e}");
    }

    #[test]
    fn ovmf_prefers_the_4m_pair_and_names_the_package_when_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = find_ovmf_in(dir.path()).expect_err("empty dir");
        assert!(e.to_string().contains("apt-get install ovmf"), "{e}");
        for f in ["OVMF_CODE.fd", "OVMF_VARS.fd"] {
            std::fs::write(dir.path().join(f), b"x").expect("write");
        }
        let (code, vars) = find_ovmf_in(dir.path()).expect("2M pair");
        assert!(code.ends_with("OVMF_CODE.fd") && vars.ends_with("OVMF_VARS.fd"));
        // A 4M code file without its variable store is not a pair.
        std::fs::write(dir.path().join("OVMF_CODE_4M.fd"), b"x").expect("write");
        assert!(
            find_ovmf_in(dir.path())
                .expect("pair")
                .0
                .ends_with("OVMF_CODE.fd")
        );
        std::fs::write(dir.path().join("OVMF_VARS_4M.fd"), b"x").expect("write");
        assert!(
            find_ovmf_in(dir.path())
                .expect("pair")
                .0
                .ends_with("OVMF_CODE_4M.fd")
        );
    }

    #[test]
    fn commas_are_escaped_for_qemu() {
        assert_eq!(
            path_arg("file:", Path::new("/a,b/c.log")),
            std::ffi::OsString::from("file:/a,,b/c.log")
        );
    }
}
