//! Ferry's instance driver: runs instances as local QEMU virtual machines (DESIGN.md §4 step 8).
//!
//! An instance is a directory `<root>/<instance id>/` (format documented in `docs/instances.md`):
//!
//! - `instance.json`: version marker and what the overlays are built on ([`InstanceFile`]);
//! - `disk<N>.qcow2`: one qcow2 copy-on-write overlay per image disk, backed by the image's raw or qcow2
//!   file, so that an instance never writes to its image and starts without copying it;
//! - `console.log`: the serial console of the latest boot; `qmp.sock`: the QMP control socket;
//!   `qemu.pid`: the pidfile of the running QEMU; `efivars.fd`: a UEFI instance's variable store;
//!   `boot-checks.json`: a validated instance's checks configuration (passed through fw_cfg).
//!
//! QEMU runs daemonized (`-daemonize`, its own session): instances keep running when the control plane
//! stops, and a restarted control plane finds them again through the pidfile and `/proc`
//! ([`Driver::find`]), checking the process's command line so that a reused PID is never mistaken for an
//! instance. Acceleration is KVM when `/dev/kvm` is usable and TCG otherwise; `FERRY_VM_ACCEL=kvm|tcg`
//! overrides the choice. Each instance has one virtio NIC on QEMU's isolated user-mode network with loopback
//! port forwards as its only openings ([`net`]); firmware is SeaBIOS or OVMF ([`Firmware`]). [`validate`]
//! runs a throwaway instance and judges its boot (`docs/boot-validation.md`).
//!
//! Invariants: the driver never modifies an image file (only overlays in the instance directory); every
//! path it derives from an instance ID stays inside `<root>` (IDs are checked); it never signals a process
//! it has not identified as this instance's QEMU.
//!
//! Instance types are a static table ([`INSTANCE_TYPES`], named like ECS's).

mod driver;
mod error;
pub mod net;
mod proc;
mod qmp;
mod types;
pub mod validate;

pub use driver::{
    Accel, BaseDisk, Console, DirectKernel, DiskFormat, Driver, Firmware, FwCfgFile, InstanceFile,
    InstanceFileDisk, Running, StopOutcome, VmSpec, check_id, qemu_missing,
};
pub use error::VmError;
pub use net::{GuestForward, NetworkSpec, PortForward, TARGET_NIC_NAME};
pub use types::{INSTANCE_TYPES, InstanceType, instance_type};
pub use validate::{
    BootReport, CheckResult, UserChecks, ValidationReport, ValidationSpec, parse_console_report,
};
