//! virtio drivers in the initramfs: for each installed kernel, check `modules.builtin` and the initrd's
//! file list (newc cpio archives, concatenated, the last one usually compressed) for the virtio modules,
//! and when `virtio_blk`/`virtio_pci` are missing, add them to the guest's initramfs configuration and
//! regenerate it in a chroot (`update-initramfs` or `dracut`).
//!
//! The initrd is listed here rather than with `lsinitramfs` so the host needs no initramfs-tools; zstd
//! is decoded in-process, gzip/xz/lz4 with the host's tools.

use std::io::Write;
use std::process::{Command, Stdio};

use super::AdaptError;
use super::ctx::Ctx;

/// The modules the target needs before the root filesystem can be found.
pub(crate) const REQUIRED: [&str; 2] = ["virtio_pci", "virtio_blk"];
/// Also reported, added when the initrd is regenerated anyway.
pub(crate) const OPTIONAL: [&str; 2] = ["virtio_scsi", "virtio_net"];
const KIND: &str = "initramfs";

fn hex(b: &[u8]) -> Option<usize> {
    usize::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Lists the file names in an initrd image (all its cpio parts). Errors name what is unreadable.
pub(crate) fn list_initrd(data: &[u8]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    list_into(data, &mut names, 0)?;
    Ok(names)
}

fn list_into(data: &[u8], names: &mut Vec<String>, depth: u32) -> Result<(), String> {
    let mut pos = 0usize;
    loop {
        while pos < data.len() && data[pos] == 0 {
            pos += 1;
        }
        if pos >= data.len() {
            return Ok(());
        }
        let rest = &data[pos..];
        if rest.starts_with(b"07070") {
            pos += parse_cpio(rest, names)?;
            continue;
        }
        if depth > 2 {
            return Err("nested compressed archives".into());
        }
        let decoded = decompress(rest)?;
        return list_into(&decoded, names, depth + 1);
    }
}

/// Parses one newc archive; returns the bytes it used.
fn parse_cpio(data: &[u8], names: &mut Vec<String>) -> Result<usize, String> {
    let mut pos = 0usize;
    loop {
        let h = data.get(pos..pos + 110).ok_or("truncated cpio header")?;
        if !(h.starts_with(b"070701") || h.starts_with(b"070702")) {
            return Err(format!("bad cpio magic at byte {pos}"));
        }
        let filesize = hex(&h[54..62]).ok_or("bad cpio file size")?;
        let namesize = hex(&h[94..102]).ok_or("bad cpio name size")?;
        let name_bytes = data
            .get(pos + 110..pos + 110 + namesize)
            .ok_or("truncated cpio name")?;
        let name = String::from_utf8_lossy(name_bytes.strip_suffix(&[0]).unwrap_or(name_bytes))
            .into_owned();
        pos = align4(pos + 110 + namesize);
        pos = align4(pos + filesize);
        if pos > data.len() {
            return Err("truncated cpio data".into());
        }
        if name == "TRAILER!!!" {
            return Ok(pos);
        }
        names.push(name);
    }
}

fn decompress(data: &[u8]) -> Result<Vec<u8>, String> {
    if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return zstd::stream::decode_all(data).map_err(|e| format!("zstd: {e}"));
    }
    let tool: &[&str] = if data.starts_with(&[0x1f, 0x8b]) {
        &["gzip", "-dc"]
    } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z']) {
        &["xz", "-dc"]
    } else if data.starts_with(&[0x02, 0x21, 0x4c, 0x18])
        || data.starts_with(&[0x04, 0x22, 0x4d, 0x18])
    {
        &["lz4", "-dc"]
    } else if data.starts_with(b"BZh") {
        &["bzip2", "-dc"]
    } else {
        return Err("unknown compression (not cpio, zstd, gzip, xz, lz4 or bzip2)".into());
    };
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e} (install it on the host)", tool[0]))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let _ = writer.join();
    // gzip/xz complain about trailing zero padding; what they decoded is still complete.
    if out.stdout.is_empty() {
        return Err(format!("{} could not decode the initrd", tool[0]));
    }
    Ok(out.stdout)
}

/// Which of `mods` appear in a file list (`…/virtio_blk.ko`, `.ko.zst`, `.ko.xz`, `.ko.gz`).
pub(crate) fn present<'a>(names: &[String], mods: &[&'a str]) -> Vec<&'a str> {
    mods.iter()
        .copied()
        .filter(|m| {
            names.iter().any(|n| {
                let base = n.rsplit('/').next().unwrap_or(n);
                let stem = base.split(".ko").next().unwrap_or("");
                base.contains(".ko") && (stem == *m || stem.replace('-', "_") == *m)
            })
        })
        .collect()
}

/// Checks every kernel's initrd; regenerates where required modules are missing, adding the root
/// filesystem's module too when it is neither built in nor in the initrd (an initrd built with
/// `MODULES=list` has only what is listed). `chroot` runs a command inside the guest (with /proc, /sys,
/// /dev bound).
pub(crate) fn ensure_virtio(
    ctx: &mut Ctx,
    root_fstype: Option<&str>,
    chroot: &mut dyn FnMut(&[&str]) -> Result<(), AdaptError>,
) -> Result<(), AdaptError> {
    let mods_dir = if ctx.is_dir("/lib/modules") {
        "/lib/modules"
    } else {
        "/usr/lib/modules"
    };
    for ver in ctx.list(mods_dir) {
        let builtin_text = ctx
            .read_string(&format!("{mods_dir}/{ver}/modules.builtin"))?
            .unwrap_or_default();
        let builtin_names: Vec<String> = builtin_text.lines().map(String::from).collect();
        let root_module = match root_fstype {
            Some("ext2" | "ext3" | "ext4") => Some("ext4"),
            Some("xfs") => Some("xfs"),
            Some("btrfs") => Some("btrfs"),
            _ => None,
        };
        let all: Vec<&str> = REQUIRED
            .iter()
            .chain(OPTIONAL.iter())
            .copied()
            .chain(root_module)
            .collect();
        let builtin = present(&builtin_names, &all);
        let initrd = [
            format!("/boot/initrd.img-{ver}"),
            format!("/boot/initramfs-{ver}.img"),
        ]
        .into_iter()
        .find(|p| ctx.exists(p));
        let Some(initrd) = initrd else {
            if REQUIRED.iter().any(|m| !builtin.contains(m)) {
                ctx.warn(format!(
                    "kernel {ver} has no initrd in /boot and virtio_blk/virtio_pci are not built in: it will not find its disks on the target"
                ));
            }
            continue;
        };
        let data = ctx.read(&initrd)?.unwrap_or_default();
        let listed = match list_initrd(&data) {
            Ok(l) => l,
            Err(e) => {
                ctx.warn(format!(
                    "{initrd} could not be listed ({e}): its virtio drivers were not checked"
                ));
                continue;
            }
        };
        let in_initrd = present(&listed, &all);
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|m| !builtin.contains(m) && !in_initrd.contains(m))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let add: Vec<&str> = all
            .iter()
            .copied()
            .filter(|m| !builtin.contains(m) && !in_initrd.contains(m))
            .collect();
        let detail = format!(
            "added {} for kernel {ver} (built in: {}; in the initrd before: {})",
            add.join(", "),
            if builtin.is_empty() {
                "none".into()
            } else {
                builtin.join(", ")
            },
            if in_initrd.is_empty() {
                "none".into()
            } else {
                in_initrd.join(", ")
            },
        );
        let update_initramfs = ["/usr/sbin/update-initramfs", "/sbin/update-initramfs"]
            .iter()
            .any(|p| ctx.exists(p));
        let dracut = ["/usr/bin/dracut", "/usr/sbin/dracut", "/sbin/dracut"]
            .iter()
            .any(|p| ctx.exists(p));
        if update_initramfs {
            let conf = "/etc/initramfs-tools/modules";
            let mut text = ctx.read_string(conf)?.unwrap_or_default();
            let have: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
            for m in &add {
                if !have.iter().any(|h| h == m) {
                    if !text.is_empty() && !text.ends_with('\n') {
                        text.push('\n');
                    }
                    text.push_str(m);
                    text.push('\n');
                }
            }
            ctx.write(
                KIND,
                conf,
                text.as_bytes(),
                0o644,
                None,
                format!(
                    "virtio modules listed for the initramfs ({})",
                    add.join(", ")
                ),
            )?;
            ctx.record_tool(
                KIND,
                &initrd,
                format!("regenerated with update-initramfs: {detail}"),
            );
            if !ctx.dry_run {
                chroot(&["update-initramfs", "-u", "-k", &ver]).map_err(|e| {
                    AdaptError::Initramfs {
                        kernel: ver.clone(),
                        detail: e.to_string(),
                    }
                })?;
            }
        } else if dracut {
            let conf = "/etc/dracut.conf.d/90-ferry-virtio.conf";
            let text = format!(
                "# Ferry: virtio drivers for the KVM/QEMU target\nadd_drivers+=\" {} \"\n",
                all.join(" ")
            );
            ctx.write(
                KIND,
                conf,
                text.as_bytes(),
                0o644,
                None,
                "virtio drivers added to dracut's configuration",
            )?;
            ctx.record_tool(KIND, &initrd, format!("regenerated with dracut: {detail}"));
            if !ctx.dry_run {
                chroot(&["dracut", "-f", &initrd, &ver]).map_err(|e| AdaptError::Initramfs {
                    kernel: ver.clone(),
                    detail: e.to_string(),
                })?;
            }
        } else {
            ctx.warn(format!(
                "{initrd} lacks {} and the guest has neither update-initramfs nor dracut to regenerate it: it may not find its disks on the target",
                missing.join(", ")
            ));
            continue;
        }
        if !ctx.dry_run {
            let data = ctx.read(&initrd)?.unwrap_or_default();
            let after = list_initrd(&data).unwrap_or_default();
            let still: Vec<&str> = missing
                .iter()
                .copied()
                .filter(|m| !present(&after, &[m]).contains(m))
                .collect();
            if !still.is_empty() {
                return Err(AdaptError::Initramfs {
                    kernel: ver,
                    detail: format!("the regenerated {initrd} still lacks {}", still.join(", ")),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports failure
pub(crate) mod tests {
    use super::*;

    /// A newc archive of (name, content) regular files.
    pub(crate) fn newc(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut entries: Vec<(&str, &[u8])> = files.to_vec();
        entries.push(("TRAILER!!!", b""));
        for (i, (name, data)) in entries.iter().enumerate() {
            let h = format!(
                "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                i,
                0o100644,
                0,
                0,
                1,
                0,
                data.len(),
                0,
                0,
                0,
                0,
                name.len() + 1,
                0
            );
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(data);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        }
        while out.len() % 512 != 0 {
            out.push(0);
        }
        out
    }

    #[test]
    fn lists_early_cpio_plus_zstd_main_archive() {
        let early = newc(&[("kernel/x86/microcode/GenuineIntel.bin", b"ucode")]);
        let main = newc(&[
            (
                "usr/lib/modules/6.1.0/kernel/drivers/block/virtio_blk.ko.xz",
                b"x",
            ),
            (
                "usr/lib/modules/6.1.0/kernel/drivers/virtio/virtio_pci.ko",
                b"y",
            ),
            ("init", b"#!/bin/sh"),
        ]);
        let mut img = early.clone();
        img.extend(zstd::stream::encode_all(&main[..], 3).unwrap());
        let names = list_initrd(&img).unwrap();
        assert_eq!(names.len(), 4);
        assert_eq!(present(&names, &REQUIRED), vec!["virtio_pci", "virtio_blk"]);
        assert!(present(&names, &OPTIONAL).is_empty());
        assert!(list_initrd(b"garbage!").is_err());
        let mut cut = main.clone();
        cut.truncate(200);
        assert!(list_initrd(&cut).is_err());
    }
}
