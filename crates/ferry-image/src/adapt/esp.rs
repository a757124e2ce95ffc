//! The EFI system partition, through mtools rather than a mount: hosts like Ferry's test machines have
//! no vfat driver in their kernel, and mtools reads and writes FAT from user space on any host.
//!
//! Invariant: the ESP is only written when the removable-media loader (`\EFI\BOOT\BOOTX64.EFI`) is
//! missing; names are compared case-insensitively, as FAT does.

use std::path::Path;

use super::AdaptError;
use super::ctx::Ctx;
use super::sys::tool_error;

fn mtools(cmd: &str, args: &[&str]) -> Result<std::process::Output, AdaptError> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                AdaptError::MissingTool {
                    tool: "mtools (mdir, mcopy, mmd)",
                    package: "mtools",
                }
            } else {
                AdaptError::io("running", cmd, e)
            }
        })?;
    if !out.status.success() {
        return Err(tool_error(cmd, args, &out));
    }
    Ok(out)
}

/// Every file under `::/EFI` of the FAT filesystem on `dev`, as `/EFI/dir/name` (original case).
pub(crate) fn list_efi(dev: &Path) -> Vec<String> {
    let d = dev.to_string_lossy().into_owned();
    let Ok(out) = mtools("mdir", &["-i", &d, "-/", "-b", "::/EFI"]) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("::").map(String::from))
        .collect()
}

/// An ESP holds a UEFI loader (`/EFI/<dir>/<name>.efi`).
pub(crate) fn has_loader(dev: &Path) -> bool {
    list_efi(dev).iter().any(|p| {
        let l = p.to_ascii_lowercase();
        l.matches('/').count() == 3 && l.ends_with(".efi")
    })
}

/// Copies the distribution's loader to `\EFI\BOOT\BOOTX64.EFI` when missing (shimx64.efi with
/// grubx64.efi beside it if shim is there, else grubx64.efi; grub.cfg too when the distro has one).
pub(crate) fn fallback_loader(ctx: &mut Ctx, dev: &Path) -> Result<(), AdaptError> {
    let files = list_efi(dev);
    let lower: Vec<String> = files.iter().map(|f| f.to_ascii_lowercase()).collect();
    if lower.iter().any(|f| f == "/efi/boot/bootx64.efi") {
        return Ok(());
    }
    let find = |dir_l: &str, name: &str| {
        lower
            .iter()
            .position(|f| *f == format!("{dir_l}/{name}"))
            .map(|i| files[i].clone())
    };
    let mut dirs: Vec<String> = lower
        .iter()
        .filter(|f| f.matches('/').count() == 3 && !f.starts_with("/efi/boot/"))
        .filter_map(|f| f.rsplit_once('/').map(|(d, _)| d.to_string()))
        .collect();
    dirs.dedup();
    let shim_dir = dirs
        .iter()
        .find(|d| find(d, "shimx64.efi").is_some())
        .cloned();
    let grub_dir = dirs
        .iter()
        .find(|d| find(d, "grubx64.efi").is_some())
        .cloned();
    let (dir, shim) = match (shim_dir, grub_dir) {
        (Some(d), _) => (d, true),
        (None, Some(d)) => (d, false),
        (None, None) => return Ok(()),
    };
    let mut copies: Vec<(String, &str)> = Vec::new();
    if shim {
        if let Some(p) = find(&dir, "shimx64.efi") {
            copies.push((p, "BOOTX64.EFI"));
        }
        if let Some(p) = find(&dir, "grubx64.efi") {
            copies.push((p, "grubx64.efi"));
        }
    } else if let Some(p) = find(&dir, "grubx64.efi") {
        copies.push((p, "BOOTX64.EFI"));
    }
    if let Some(p) = find(&dir, "grub.cfg") {
        copies.push((p, "grub.cfg"));
    }
    let d = dev.to_string_lossy().into_owned();
    let mut made_dir = lower.iter().any(|f| f.starts_with("/efi/boot/"));
    for (from, name) in copies {
        let to = format!("/EFI/BOOT/{name}");
        ctx.record_tool(
            "efi-fallback",
            &format!("ESP:{to}"),
            format!(
                "copied from {from} so firmware with a fresh NVRAM boots the removable-media path"
            ),
        );
        if ctx.dry_run {
            continue;
        }
        if !made_dir {
            mtools("mmd", &["-i", &d, "::/EFI/BOOT"])?;
            made_dir = true;
        }
        let tmp = tempfile::NamedTempFile::new()
            .map_err(|e| AdaptError::io("creating a temporary file in", std::env::temp_dir(), e))?;
        let tmp_s = tmp.path().to_string_lossy().into_owned();
        mtools("mcopy", &["-o", "-i", &d, &format!("::{from}"), &tmp_s])?;
        mtools("mcopy", &["-o", "-i", &d, &tmp_s, &format!("::{to}")])?;
    }
    Ok(())
}
