//! Real QEMU boots under TCG: a disk with no operating system boots into SeaBIOS, which reports on the
//! serial console that it found nothing to boot. Skipped (with the reason printed) only when
//! `qemu-system-x86_64` is not installed.

mod common;
use common::{KillOnDrop, qemu_missing};

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_vm::{Accel, BaseDisk, DiskFormat, Driver, StopOutcome, VmSpec};

fn spec(id: &str, base: &Path) -> VmSpec {
    VmSpec {
        id: id.to_owned(),
        cpu: 1,
        memory_mib: 64,
        disks: vec![BaseDisk {
            path: base.to_owned(),
            format: DiskFormat::Raw,
        }],
        system_disk_bytes: Some(32 << 20),
        ..VmSpec::default()
    }
}

async fn wait_console(driver: &Driver, id: &str, text: &str) -> anyhow_free::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let console = driver
            .console(id, 64 << 10)
            .map_err(|e| e.to_string())?
            .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
            .unwrap_or_default();
        if console.contains(text) {
            return Ok(console);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{text:?} not on the console after 90 s: {console:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A tiny stand-in for anyhow so that this crate needs no extra dependency.
mod anyhow_free {
    pub type Result<T> = std::result::Result<T, String>;
}

fn qemu_img_info(path: &Path) -> serde_json::Value {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(path)
        .output()
        .expect("qemu-img runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("qemu-img info prints JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn boots_to_firmware_console_stops_restarts_flattens_and_deletes() {
    if qemu_missing("boots_to_firmware_console_stops_restarts_flattens_and_deletes") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("image.raw");
    // Non-zero data in the first sector (but no boot signature) so that flattening has something to copy.
    let mut data = vec![0u8; 16 << 20];
    data[..512].fill(0x5a);
    std::fs::write(&base, &data).expect("write base");
    let root = tmp.path().join("instances");
    let driver = Driver::new(&root).with_accel(Accel::Tcg);
    let id = "i-fetest0000000000000001";
    let _guard = KillOnDrop(driver.clone(), id.to_owned());
    let spec = spec(id, &base);

    assert!(driver.find(id).is_none());
    let running = driver.start(&spec).await.expect("QEMU starts");
    assert!(running.pid > 0);
    // Starting again is idempotent: the same QEMU.
    assert_eq!(driver.start(&spec).await.expect("start again"), running);

    let console = wait_console(&driver, id, "No bootable device")
        .await
        .expect("SeaBIOS output reaches the console log");
    assert!(console.contains("Booting from Hard Disk"), "{console}");

    // The overlay is copy-on-write over the image, grown to the requested system disk size.
    let overlay = root.join(id).join("disk0.qcow2");
    let info = qemu_img_info(&overlay);
    assert_eq!(info["virtual-size"], 32u64 << 20, "{info}");
    assert!(
        info["backing-filename"]
            .as_str()
            .is_some_and(|b| b.ends_with("image.raw")),
        "{info}"
    );

    // A fresh driver (a restarted control plane) finds the running instance through pidfile + /proc.
    let again = Driver::new(&root).with_accel(Accel::Tcg);
    assert_eq!(again.find(id), Some(running.clone()));
    assert_eq!(again.list().expect("list"), vec![id.to_owned()]);
    // A pidfile naming a live process that is not this instance's QEMU is not trusted.
    let pidfile = root.join(id).join("qemu.pid");
    let real = std::fs::read_to_string(&pidfile).expect("pidfile");
    std::fs::write(&pidfile, std::process::id().to_string()).expect("write pidfile");
    assert!(again.find(id).is_none());
    std::fs::write(&pidfile, real).expect("restore pidfile");
    assert!(again.find(id).is_some());

    // Flatten while running (QMP block-stream): the overlay stops depending on the image.
    driver.flatten(id).await.expect("live flatten");
    let info = qemu_img_info(&overlay);
    assert!(info.get("backing-filename").is_none(), "{info}");
    assert_eq!(
        driver.instance_file(id).expect("instance.json").disks[0].base,
        None
    );

    // Graceful stop: firmware ignores the ACPI button, so the timeout ends in a kill.
    let outcome = driver
        .stop(id, false, Duration::from_secs(2))
        .await
        .expect("stop");
    assert_eq!(outcome, StopOutcome::Killed);
    assert!(driver.find(id).is_none());
    assert_eq!(
        driver
            .stop(id, true, Duration::ZERO)
            .await
            .expect("stop again"),
        StopOutcome::NotRunning
    );

    // The image may go away now: the flattened overlay boots on its own.
    std::fs::remove_file(&base).expect("remove base");
    let restarted = driver
        .start(&spec)
        .await
        .expect("restart without the image");
    assert_ne!(restarted.pid, running.pid);
    wait_console(&driver, id, "No bootable device")
        .await
        .expect("second boot reaches the console");
    assert_eq!(
        driver
            .stop(id, true, Duration::ZERO)
            .await
            .expect("force stop"),
        StopOutcome::Killed
    );

    driver.delete(id).await.expect("delete");
    assert!(!root.join(id).exists());
    driver.delete(id).await.expect("delete is idempotent");
}

#[tokio::test(flavor = "multi_thread")]
async fn start_fails_clearly_when_the_image_is_missing() {
    if qemu_missing("start_fails_clearly_when_the_image_is_missing") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let driver = Driver::new(tmp.path().join("instances")).with_accel(Accel::Tcg);
    let id = "i-fetest0000000000000002";
    let _guard = KillOnDrop(driver.clone(), id.to_owned());
    let err = driver
        .start(&spec(id, &tmp.path().join("missing.raw")))
        .await
        .expect_err("no image, no start");
    let msg = err.to_string();
    assert!(
        msg.contains("qemu-img") && msg.contains("missing.raw"),
        "{msg}"
    );
    assert!(driver.find(id).is_none());
    driver.delete(id).await.expect("cleanup");
}
