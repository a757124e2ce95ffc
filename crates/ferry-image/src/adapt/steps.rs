//! The adaptation run: find the guest, plan on read-only mounts (a dry run), and only when the plan has
//! changes, mount read-write and apply them. Also the smaller steps: serial console, fstab, leftovers,
//! the agent's removal, the EFI removable-media loader and the probe.

use std::path::{Path, PathBuf};

use super::ctx::{Ctx, resolve};
use super::sys::{Session, run};
use super::volumes::{self, Layout, Volume};
use super::{
    ADAPT_REPORT_VERSION, AdaptError, AdaptOptions, AdaptReport, BOOT_REPORT_SCRIPT, Change,
    GuestInfo, StaticInterface, check_root, disks_list, esp, fstab, grub, initramfs, network,
};

const LINUX_FS: [&str; 5] = ["ext4", "ext3", "ext2", "xfs", "btrfs"];

/// The unit that runs the probe (docs/boot-validation.md). `Type=simple`, not `oneshot`: the probe
/// waits for `systemctl is-system-running --wait`, which a oneshot start job in the boot transaction
/// would itself hold at `starting` until the wait timed out.
pub(crate) const PROBE_UNIT: &str =
    "# Installed by Ferry guest adaptation (docs/boot-validation.md).
[Unit]
Description=Ferry boot report (prints the boot validation report on ttyS0)
After=multi-user.target

[Service]
Type=simple
ExecStart=/usr/lib/ferry/boot-report
StandardOutput=journal
StandardError=journal

[Install]
WantedBy=multi-user.target
";

fn ro_opts(fstype: &str) -> &'static str {
    match fstype {
        "ext3" | "ext4" => "ro,noload",
        "xfs" => "ro,norecovery",
        _ => "ro",
    }
}

struct Guest {
    root: usize,
    os: Option<String>,
    os_id: Option<String>,
    fstab_text: String,
}

fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix(&format!("{key}="))
            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

/// Mounts each Linux filesystem read-only until one holds /etc/os-release and /etc/fstab.
fn find_root(s: &mut Session, layout: &Layout, disks: &[PathBuf]) -> Result<Guest, AdaptError> {
    for (i, v) in layout.volumes.iter().enumerate() {
        let Some(fs) = v.fstype.as_deref().filter(|f| LINUX_FS.contains(f)) else {
            continue;
        };
        let dir = s.tempdir()?;
        let base = s.mount_count();
        if s.mount(&v.dev, &dir, Some(fs), ro_opts(fs)).is_err() {
            continue;
        }
        let osr = std::fs::read_to_string(resolve(&dir, "/etc/os-release", true)).ok();
        let fstab_text = std::fs::read_to_string(resolve(&dir, "/etc/fstab", true)).ok();
        s.unmount_to(base)?;
        if let (Some(osr), Some(fstab_text)) = (osr, fstab_text) {
            return Ok(Guest {
                root: i,
                os: os_release_field(&osr, "PRETTY_NAME"),
                os_id: os_release_field(&osr, "ID"),
                fstab_text,
            });
        }
    }
    Err(AdaptError::NoOperatingSystem {
        disks: disks_list(disks),
    })
}

/// UEFI when an ESP holds EFI loaders and the system disk has no BIOS boot code.
fn boot_mode(layout: &Layout) -> String {
    let esp_loader = layout
        .volumes
        .iter()
        .filter(|v| v.is_esp())
        .any(|v| esp::has_loader(&v.dev));
    if esp_loader && !layout.bios_boot_code {
        "UEFI"
    } else {
        "BIOS"
    }
    .to_string()
}

/// Read-only detection (see [`super::detect`]).
pub(crate) fn detect_blocking(disks: &[PathBuf]) -> Result<GuestInfo, AdaptError> {
    check_root()?;
    let mut s = Session::default();
    let layout = volumes::scan(&mut s, disks, true)?;
    let guest = find_root(&mut s, &layout, disks)?;
    let boot_mode = boot_mode(&layout);
    let info = GuestInfo {
        os: guest.os,
        os_id: guest.os_id,
        boot_mode,
        root: layout.volumes[guest.root].name.clone(),
        fstab: fstab::parse(&guest.fstab_text),
        volumes: layout.volumes.iter().map(Volume::info).collect(),
    };
    s.close()?;
    Ok(info)
}

struct PassResult {
    changes: Vec<Change>,
    warnings: Vec<String>,
    source_network: Vec<StaticInterface>,
}

/// Adaptation (see [`super::adapt`]).
pub(crate) fn adapt_blocking(
    disks: &[PathBuf],
    opts: &AdaptOptions,
) -> Result<AdaptReport, AdaptError> {
    check_root()?;
    for d in disks {
        std::fs::metadata(d).map_err(|e| AdaptError::io("opening the image", d, e))?;
    }
    let mut s = Session::default();
    let layout = volumes::scan(&mut s, disks, false)?;
    let guest = find_root(&mut s, &layout, disks)?;
    let boot_mode = boot_mode(&layout);
    let plan = pass(&mut s, &layout, &guest, opts, true)?;
    let result = if plan.changes.is_empty() {
        plan
    } else {
        pass(&mut s, &layout, &guest, opts, false)?
    };
    s.close()?;
    Ok(AdaptReport {
        version: ADAPT_REPORT_VERSION,
        os: guest.os,
        boot_mode,
        root: layout.volumes[guest.root].name.clone(),
        changes: result.changes,
        source_network: result.source_network,
        warnings: result.warnings,
    })
}

fn pass(
    s: &mut Session,
    layout: &Layout,
    guest: &Guest,
    opts: &AdaptOptions,
    dry_run: bool,
) -> Result<PassResult, AdaptError> {
    let base = s.mount_count();
    let root_dir = s.tempdir()?;
    let root_vol = &layout.volumes[guest.root];
    let fs = root_vol.fstype.as_deref().unwrap_or("auto");
    s.mount(
        &root_vol.dev,
        &root_dir,
        Some(fs),
        if dry_run { ro_opts(fs) } else { "" },
    )?;
    let mut warnings = Vec::new();

    // What fstab mounts under the root that adaptation touches. The ESP is not mounted (hosts may have
    // no vfat driver): it is handled with mtools.
    let entries = fstab::parse(&guest.fstab_text);
    let mut esp_vol: Option<&Volume> = None;
    for mp in ["/boot", "/boot/efi"] {
        let Some(e) = entries.iter().find(|e| e.mountpoint == mp) else {
            continue;
        };
        let vol = volumes::find_by_spec(&layout.volumes, &e.spec)
            .or_else(|| fstab::volume_for_device(&layout.volumes, &e.spec, &opts.source_devices));
        let target = resolve(&root_dir, mp, true);
        match (vol, target.is_dir()) {
            (Some(v), _) if v.fstype.as_deref() == Some("vfat") => esp_vol = Some(v),
            (Some(v), true) => {
                let vfs = v.fstype.as_deref().unwrap_or("auto");
                s.mount(&v.dev, &target, Some(vfs), if dry_run { ro_opts(vfs) } else { "" })?;
            }
            _ => warnings.push(format!(
                "fstab mounts {} on {mp} but it was not found on the image disks: files there were not adapted",
                e.spec
            )),
        }
    }
    let esp_vol = esp_vol.or_else(|| layout.volumes.iter().find(|v| v.is_esp()));

    let mut ctx = Ctx {
        root: root_dir.clone(),
        dry_run,
        opts,
        volumes: &layout.volumes,
        changes: Vec::new(),
        warnings,
    };
    let source_network = network::adapt_network(&mut ctx)?;
    adapt_fstab(&mut ctx)?;
    serial_console(&mut ctx)?;
    leftovers(&mut ctx)?;
    remove_agent(&mut ctx)?;
    if let Some(v) = esp_vol {
        esp::fallback_loader(&mut ctx, &v.dev)?;
    }
    {
        let chroot_base = s.mount_count();
        let mut bound = false;
        let root_for_chroot = root_dir.clone();
        let mut chroot = |args: &[&str]| -> Result<(), AdaptError> {
            if !bound {
                for d in ["/proc", "/sys", "/dev"] {
                    s.bind(Path::new(d), &resolve(&root_for_chroot, d, true))?;
                }
                bound = true;
            }
            let r = root_for_chroot.to_string_lossy().into_owned();
            let mut a = vec![r.as_str()];
            a.extend_from_slice(args);
            run("chroot", &a).map(|_| ())
        };
        initramfs::ensure_virtio(&mut ctx, root_vol.fstype.as_deref(), &mut chroot)?;
        s.unmount_to(chroot_base)?;
    }
    if opts.install_probe {
        install_probe(&mut ctx)?;
    }
    let result = PassResult {
        changes: ctx.changes,
        warnings: ctx.warnings,
        source_network,
    };
    s.unmount_to(base)?;
    Ok(result)
}

fn adapt_fstab(ctx: &mut Ctx) -> Result<(), AdaptError> {
    if ctx.exists("/etc/crypttab") {
        let t = ctx.read_string("/etc/crypttab")?.unwrap_or_default();
        if t.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        {
            ctx.warn("/etc/crypttab lists encrypted volumes: they were left as they are and need their keys on the target");
        }
    }
    let Some(text) = ctx.read_string("/etc/fstab")? else {
        return Ok(());
    };
    let (new, changed, warnings) = fstab::rewrite(&text, ctx.volumes, &ctx.opts.source_devices);
    for w in warnings {
        ctx.warn(w);
    }
    if !changed.is_empty() {
        let detail = changed
            .iter()
            .map(|(a, b)| format!("{a} -> {b}"))
            .collect::<Vec<_>>()
            .join(", ");
        ctx.write(
            "fstab",
            "/etc/fstab",
            new.as_bytes(),
            0o644,
            Some("/etc/fstab.ferry-orig"),
            format!("{detail}; original kept as /etc/fstab.ferry-orig"),
        )?;
    }
    Ok(())
}

fn serial_console(ctx: &mut Ctx) -> Result<(), AdaptError> {
    const KIND: &str = "serial-console";
    if let Some(t) = ctx.read_string("/etc/default/grub")? {
        let new = grub::default_grub(&t);
        ctx.write(
            KIND,
            "/etc/default/grub",
            new.as_bytes(),
            0o644,
            None,
            format!(
                "GRUB_CMDLINE_LINUX += {}, GRUB_TERMINAL=\"console serial\"",
                grub::CONSOLE_ARGS
            ),
        )?;
    }
    let cfgs = ["/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"];
    let mut any = false;
    for p in cfgs {
        let Some(t) = ctx.read_string(p)? else {
            continue;
        };
        any = true;
        let new = grub::grub_cfg(&t, ctx.volumes, &ctx.opts.source_devices);
        ctx.write(
            KIND,
            p,
            new.as_bytes(),
            0o644,
            None,
            format!(
                "kernel lines += {} (quiet dropped), serial terminal, root= by UUID",
                grub::CONSOLE_ARGS
            ),
        )?;
    }
    for e in ctx.list("/boot/loader/entries") {
        if !e.ends_with(".conf") {
            continue;
        }
        let p = format!("/boot/loader/entries/{e}");
        let Some(t) = ctx.read_string(&p)? else {
            continue;
        };
        any = true;
        if t.contains("$kernelopts") {
            ctx.warn(format!("{p} takes its options from $kernelopts in grubenv, which was not edited: add console=ttyS0 there for a serial console"));
        }
        let new = grub::bls_entry(&t, ctx.volumes, &ctx.opts.source_devices);
        ctx.write(
            KIND,
            &p,
            new.as_bytes(),
            0o644,
            None,
            format!("options += {}", grub::CONSOLE_ARGS),
        )?;
    }
    if !any {
        ctx.warn("no GRUB configuration was found (/boot/grub/grub.cfg, /boot/grub2/grub.cfg, /boot/loader/entries): the serial console was not enabled for the boot loader");
    }
    Ok(())
}

fn leftovers(ctx: &mut Ctx) -> Result<(), AdaptError> {
    for name in ctx.list("/etc/udev/rules.d") {
        if name.contains("persistent-net") && name.ends_with(".rules") {
            let p = format!("/etc/udev/rules.d/{name}");
            ctx.rename(
                "udev-net",
                &p,
                &format!("{p}.ferry-orig"),
                format!(
                    "disabled (it pins NIC names to the source's MACs), kept as {p}.ferry-orig"
                ),
            )?;
        }
    }
    Ok(())
}

fn remove_agent(ctx: &mut Ctx) -> Result<(), AdaptError> {
    const KIND: &str = "agent";
    let mut paths: Vec<String> = [
        "/usr/local/bin/ferry-agent",
        "/usr/bin/ferry-agent",
        "/etc/systemd/system/ferry-agent.service",
        "/lib/systemd/system/ferry-agent.service",
        "/usr/lib/systemd/system/ferry-agent.service",
        "/var/lib/ferry-agent",
        "/etc/ferry-agent",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for d in ctx.list("/etc/systemd/system") {
        if d.ends_with(".wants") {
            paths.push(format!("/etc/systemd/system/{d}/ferry-agent.service"));
        }
    }
    for p in paths {
        ctx.remove(
            KIND,
            &p,
            "the Ferry agent, its credentials and state do not belong on the target",
        )?;
    }
    Ok(())
}

fn install_probe(ctx: &mut Ctx) -> Result<(), AdaptError> {
    ctx.write(
        "probe",
        "/usr/lib/ferry/boot-report",
        BOOT_REPORT_SCRIPT.as_bytes(),
        0o755,
        None,
        "the boot validation probe (docs/boot-validation.md)",
    )?;
    ctx.write(
        "probe",
        "/etc/systemd/system/ferry-boot-report.service",
        PROBE_UNIT.as_bytes(),
        0o644,
        None,
        "runs the probe once the system is up",
    )?;
    ctx.symlink(
        "probe",
        "/etc/systemd/system/multi-user.target.wants/ferry-boot-report.service",
        "/etc/systemd/system/ferry-boot-report.service",
        "enabled ferry-boot-report.service",
    )?;
    Ok(())
}
