//! The lab's boot check: boot a variant's cached disks under `qemu-system-x86_64 -accel tcg` on the
//! SOURCE hardware (q35, disks on SATA/AHCI so they are /dev/sda and /dev/sdb, an e1000 NIC at a fixed
//! PCI slot on an isolated user-mode network, the serial console captured) over qcow2 overlays, and wait
//! for the marker line. The cached images are never written: QEMU writes to the overlays only, and the
//! UEFI variant's firmware finds its loader on a separate read-only helper disk (the image itself has no
//! removable-media fallback path, as a real server booting from its NVRAM entry).
//!
//! A successful check is recorded as `boot-ok` next to the images, so later runs boot only once. Boots
//! are serialized through `<cache>/.boot-slot.lock` (TCG needs a whole core; the machine has two).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::sys::{self, BuildLock};
use super::{LabServer, LabVariant};

/// How long a boot may take to print the marker under TCG, unless `FERRY_LAB_BOOT_TIMEOUT` (seconds)
/// says otherwise. A boot takes 80-170 s on 2 idle cores; a loaded machine boots slower (263 s was seen
/// with a load average of 9), and the test suite runs other work beside it.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

/// The boot timeout in force: `FERRY_LAB_BOOT_TIMEOUT` seconds, or [`BOOT_TIMEOUT`].
pub fn boot_timeout() -> Duration {
    std::env::var("FERRY_LAB_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(BOOT_TIMEOUT)
}
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Kills and reaps QEMU on drop.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn variant_dir(server: &LabServer) -> anyhow::Result<PathBuf> {
    server
        .disks
        .first()
        .and_then(|d| d.parent())
        .map(Path::to_path_buf)
        .context("the lab server has no disks")
}

/// Boot-checks the server once; the result is cached as `boot-ok` next to its images.
pub fn check_cached(server: &LabServer) -> anyhow::Result<()> {
    let dir = variant_dir(server)?;
    let stamp = dir.join("boot-ok");
    if stamp.exists() {
        return Ok(());
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cache = dir
        .parent()
        .context("the lab image has no cache directory")?;
    let _lock = BuildLock::acquire(&cache.join(format!(".{name}.boot.lock")))?;
    if stamp.exists() {
        return Ok(());
    }
    let (took, console) = boot(server)?;
    // The source's own console, for comparison with a migrated server's.
    std::fs::write(dir.join("boot-console.log"), console)?;
    eprintln!(
        "lab: {} booted to its marker in {took:.1?} (TCG)",
        server.variant
    );
    let tmp = dir.join(".boot-ok.tmp");
    std::fs::write(
        &tmp,
        format!(
            "ferry-lab-boot-ok/1\nmarker_after_secs {:.1}\n",
            took.as_secs_f64()
        ),
    )?;
    std::fs::rename(&tmp, &stamp)?;
    Ok(())
}

/// Copies the UEFI loader out of the image's ESP (read with mtools: this host's kernel has no vfat)
/// into `dir/EFI/BOOT/BOOTX64.EFI`.
fn uefi_helper(sda: &Path, dir: &Path) -> anyhow::Result<()> {
    let parts = super::image::partitions(sda)?;
    let (start, _) = parts
        .first()
        .copied()
        .context("the UEFI image has no ESP")?;
    let boot = dir.join("EFI/BOOT");
    std::fs::create_dir_all(&boot)?;
    sys::run(
        "mcopy",
        &[
            "-n",
            "-i",
            &format!("{}@@{start}", sda.display()),
            "::/EFI/debian/grubx64.efi",
            &boot.join("BOOTX64.EFI").display().to_string(),
        ],
    )
    .context("cannot read EFI/debian/grubx64.efi from the UEFI image's ESP (install mtools)")?;
    Ok(())
}

/// Boots the server on overlays and waits for its marker line; returns the time to the marker.
pub fn boot_check(server: &LabServer) -> anyhow::Result<Duration> {
    boot(server).map(|(took, _)| took)
}

/// Boots a lab server may take when its kernel named the SATA disks out of port order.
const NAMING_ATTEMPTS: u32 = 3;

/// [`boot_check`], also returning the console output up to the marker.
///
/// The guest kernel probes SATA disks asynchronously, so now and then the disk on port 1 is named `sda`
/// before the one on port 0 (seen in CI: the data disk became sda and `/dev/sdb1 /srv/lab` named the
/// root partition, so the boot stopped in emergency mode). The variant's fstab mounts its data disk by
/// device name on purpose, as old servers do; on this virtual hardware that is a coin toss the image
/// cannot win. Such a boot is recognised on the console (a disk on port N not named `sd` + the Nth
/// letter) and booted again, at most [`NAMING_ATTEMPTS`] times in all; every other failure fails at once.
pub fn boot(server: &LabServer) -> anyhow::Result<(Duration, String)> {
    let mut attempt = 1;
    loop {
        match boot_once(server) {
            Err(e) if attempt < NAMING_ATTEMPTS && e.is::<DisksNamedOutOfOrder>() => {
                eprintln!(
                    "lab: {} boot {attempt} of {NAMING_ATTEMPTS}: {e}; booting again",
                    server.variant
                );
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The guest named a SATA disk out of port order (see [`boot`]).
#[derive(Debug)]
struct DisksNamedOutOfOrder {
    port: u32,
    name: String,
    expected: char,
    detail: String,
}

impl std::fmt::Display for DisksNamedOutOfOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the guest kernel named the disk on SATA port {} {} (not sd{}): {}",
            self.port, self.name, self.expected, self.detail
        )
    }
}

impl std::error::Error for DisksNamedOutOfOrder {}

/// The first disk the console shows named out of port order: kernel lines `sd P:0:0:0: [sdX] …`.
fn disks_named_out_of_order(console: &str) -> Option<(u32, String, char)> {
    console.lines().find_map(|line| {
        let rest = &line[line.find("] sd ")? + 5..];
        let (port, rest) = rest.split_once(":0:0:0: [")?;
        let (name, _) = rest.split_once(']')?;
        let port: u32 = port.parse().ok()?;
        let expected = char::from_u32(u32::from('a') + port)?;
        (name != format!("sd{expected}")).then(|| (port, name.to_owned(), expected))
    })
}

/// One boot (see [`boot`]).
fn boot_once(server: &LabServer) -> anyhow::Result<(Duration, String)> {
    let dir = variant_dir(server)?;
    let cache = dir.parent().context("no cache directory")?;
    let work = tempfile::Builder::new()
        .prefix(&format!(".boot-{}-", server.variant))
        .tempdir_in(cache)?;
    let mut args: Vec<String> = [
        "-accel",
        "tcg",
        "-machine",
        "q35",
        "-m",
        "1024",
        "-smp",
        "1",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (i, disk) in server.disks.iter().enumerate() {
        let ov = work.path().join(format!("disk{i}.qcow2"));
        let backing = std::fs::canonicalize(disk)
            .with_context(|| format!("the lab disk {} is missing", disk.display()))?;
        sys::run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                "-b",
                &backing.display().to_string(),
                &ov.display().to_string(),
            ],
        )?;
        args.push("-drive".into());
        args.push(format!(
            "if=none,id=d{i},file={},format=qcow2",
            ov.display()
        ));
        args.push("-device".into());
        // AHCI port i: /dev/sda, /dev/sdb in the guest.
        let boot = if server.variant.is_uefi() { i + 1 } else { i };
        args.push(format!("ide-hd,drive=d{i},bus=ide.{i},bootindex={boot}"));
    }
    if server.variant == LabVariant::Uefi {
        let vars = work.path().join("OVMF_VARS.fd");
        std::fs::copy(OVMF_VARS, &vars)
            .with_context(|| format!("cannot copy {OVMF_VARS}: install the ovmf package"))?;
        let helper = work.path().join("esp");
        uefi_helper(&server.disks[0], &helper)?;
        args.extend([
            "-drive".to_string(),
            format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
            "-drive".to_string(),
            format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
            "-drive".to_string(),
            format!(
                "if=none,id=esp,format=raw,readonly=on,file=fat:{}",
                helper.display()
            ),
            "-device".to_string(),
            "virtio-blk-pci,drive=esp,bootindex=0".to_string(),
        ]);
    }
    // e1000 at slot 3 of the root bus: the guest names it enp0s3. No option ROM: no PXE detour.
    args.extend(
        [
            "-netdev",
            "user,id=n0,restrict=on",
            "-device",
            "e1000,netdev=n0,bus=pcie.0,addr=0x3,romfile=",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    // One lab boot at a time on this machine: TCG takes a whole core, and parallel tests booting four
    // guests at once on two cores would run into the timeout. The timeout starts when QEMU does.
    let _slot = BuildLock::acquire(&cache.join(".boot-slot.lock"))?;
    let t0 = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run qemu-system-x86_64: install qemu-system-x86")?;
    let stdout = child.stdout.take().context("no QEMU stdout")?;
    let stderr = child.stderr.take().context("no QEMU stderr")?;
    let qemu = Qemu(child);
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let mut console = String::new();
    let timeout = boot_timeout();
    let deadline = t0 + timeout;
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let clean = line.trim_end_matches('\r');
                console.push_str(clean);
                console.push('\n');
                if clean.trim() == server.facts.marker {
                    break Some(t0.elapsed());
                }
                // systemd gave up on the boot: no marker will come, so do not wait for the timeout.
                if clean.contains("You are in emergency mode") {
                    break None;
                }
            }
            // Timeout, or QEMU exited and closed its stdout.
            Err(_) => break None,
        }
    };
    drop(qemu);
    let qemu_err = err_thread.join().unwrap_or_default();
    if let Some(took) = found {
        return Ok((took, console));
    }
    let log = cache.join(format!("{}-boot-failed.log", server.variant));
    let _ = std::fs::write(&log, &console);
    if let Some((port, name, expected)) = disks_named_out_of_order(&console) {
        return Err(DisksNamedOutOfOrder {
            port,
            name,
            expected,
            detail: format!("console in {}", log.display()),
        }
        .into());
    }
    let tail: Vec<&str> = console.lines().rev().take(25).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    bail!(
        "the {} lab server did not print {:?} within {:?} (TCG); QEMU said: {}\n\
         whole console in {}; its last lines:\n{}",
        server.variant,
        server.facts.marker,
        timeout.min(t0.elapsed()),
        qemu_err.trim(),
        log.display(),
        tail.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::disks_named_out_of_order;

    #[test]
    fn disks_named_out_of_port_order_are_recognised_on_the_console() {
        // From the CI run where the data disk (port 1) became sda.
        let swapped = "[   12.150830] sd 1:0:0:0: [sda] 1048576 512-byte logical blocks: (537 MB/512 MiB)\n\
                       [   12.155326] sd 0:0:0:0: [sdb] 4194304 512-byte logical blocks: (2.15 GB/2.00 GiB)\n";
        assert_eq!(
            disks_named_out_of_order(swapped),
            Some((1, "sda".to_owned(), 'b'))
        );
        let in_order = "[   12.1] sd 0:0:0:0: [sda] Attached SCSI disk\n[   12.2] sd 1:0:0:0: [sdb] Attached SCSI disk\n\
                        [   13.0] EXT4-fs (sda1): mounted filesystem\n";
        assert_eq!(disks_named_out_of_order(in_order), None);
        assert_eq!(disks_named_out_of_order("no kernel lines at all"), None);
    }
}
