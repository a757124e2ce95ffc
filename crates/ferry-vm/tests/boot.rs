//! Boot validation and instance networking with real QEMU (TCG) and a real, tiny Linux guest.
//!
//! The guest is Debian's own kernel (`linux-image-amd64`, fetched with `apt-get download` and cached
//! under the target directory) booted directly by QEMU (`-kernel`/`-initrd`) with a busybox initramfs
//! built here from Debian's `busybox-static` (`tests/guest/init.sh` is its `/init`). It does what the
//! real probe does, the busybox way: DHCP from QEMU, reads the checks configuration through fw_cfg, runs
//! the commands, prints `FERRY-BOOT-REPORT/1` on the serial console and sends it to `10.0.2.100:7979`;
//! it also serves HTTP on port 80 and echoes on port 22 for the host-side checks. It is not systemd:
//! `default_target_reached` and the mounts are its own, so those checks prove the plumbing, not a
//! distribution (the lab images prove that).
//!
//! With `ferry.mode=probe` the guest runs Ferry's real probe (`ferry-image/src/adapt/boot-report.sh`)
//! with Debian's `bash-static` instead: the contract test between guest adaptation and the validator.
//!
//! Skipped, with the reason printed, only when `qemu-system-x86_64` is not installed. Missing
//! busybox-static, bash-static, cpio or apt access is a failure with a message saying what to install.

mod common;
use common::{KillOnDrop, qemu_missing};

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_vm::validate::{CommandCheck, HttpCheck, UserChecks, ValidationSpec, validate};
use ferry_vm::{Accel, DirectKernel, Driver, Firmware, NetworkSpec, PortForward, VmError, VmSpec};

/// The kernel modules the guest loads, in dependency order (the Debian kernel builds them as modules).
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "qemu_fw_cfg",
];

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static KIT: Mutex<Option<(PathBuf, PathBuf)>> = Mutex::new(None);

/// The guest's kernel and initramfs, built once per test binary (the kernel is cached across runs).
fn guest_kit() -> (PathBuf, PathBuf) {
    let mut kit = KIT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = kit.as_ref() {
        return k.clone();
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ferry-vm-guest");
    let kernel = cache.join("vmlinuz");
    let modules = cache.join("modules");
    if !cache.join("done").exists() {
        let _ = std::fs::remove_dir_all(&cache);
        std::fs::create_dir_all(&modules).expect("cache dir");
        // linux-image-amd64 is a metapackage: download the kernel package it depends on.
        let deps = run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]));
        let pkg = deps
            .lines()
            .find_map(|l| l.trim().strip_prefix("Depends: "))
            .filter(|p| p.starts_with("linux-image-"))
            .unwrap_or_else(|| {
                panic!("no kernel package in `apt-cache depends linux-image-amd64`: {deps}")
            })
            .to_owned();
        let dl = cache.join("download");
        std::fs::create_dir_all(&dl).expect("download dir");
        run(Command::new("apt-get")
            .args(["download", &pkg])
            .current_dir(&dl));
        let deb = std::fs::read_dir(&dl)
            .expect("download dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .expect("apt-get download wrote a .deb");
        let x = cache.join("x");
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x));
        let boot = std::fs::read_dir(x.join("boot")).expect("boot dir");
        let vmlinuz = boot
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
            .expect("the package has a vmlinuz");
        std::fs::copy(&vmlinuz, &kernel).expect("copy kernel");
        let found = run(Command::new("find")
            .arg(x.join("lib/modules"))
            .args(["-name", "*.ko"]));
        for m in MODULES {
            let path = found
                .lines()
                .find(|l| l.ends_with(&format!("/{m}.ko")))
                .unwrap_or_else(|| panic!("module {m}.ko is not in {pkg}"));
            std::fs::copy(path, modules.join(format!("{m}.ko"))).expect("copy module");
        }
        std::fs::remove_dir_all(&x).expect("cleanup");
        std::fs::remove_dir_all(&dl).expect("cleanup");
        std::fs::write(cache.join("done"), &pkg).expect("marker");
    }

    // The initramfs: busybox (static), the modules, /init.
    let busybox = Path::new("/bin/busybox");
    let bytes = std::fs::read(busybox)
        .unwrap_or_else(|e| panic!("/bin/busybox: {e}: apt-get install busybox-static"));
    assert!(
        !bytes.windows(14).any(|w| w == b"/lib64/ld-linu"),
        "/bin/busybox is dynamically linked: apt-get install busybox-static"
    );
    let root = cache.join(format!("initramfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "lib/modules", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d)).expect("initramfs dir");
    }
    std::fs::write(root.join("bin/busybox"), &bytes).expect("busybox");
    std::fs::write(root.join("init"), include_str!("guest/init.sh")).expect("init");
    for m in MODULES {
        std::fs::copy(
            modules.join(format!("{m}.ko")),
            root.join(format!("lib/modules/{m}.ko")),
        )
        .expect("module");
    }
    run(Command::new("chmod")
        .args(["0755"])
        .arg(root.join("init"))
        .arg(root.join("bin/busybox")));
    // Ferry's real probe (written by guest adaptation) and a bash to run it, when bash-static is there.
    let bash = Path::new("/bin/bash-static");
    if bash.is_file() {
        std::fs::copy(bash, root.join("bin/bash")).expect("bash");
        std::fs::create_dir_all(root.join("usr/lib/ferry")).expect("probe dir");
        std::fs::write(
            root.join("usr/lib/ferry/boot-report"),
            include_str!("../../ferry-image/src/adapt/boot-report.sh"),
        )
        .expect("probe");
    }
    let initrd = cache.join("initrd.gz");
    let tmp = cache.join(format!(".initrd-{}.gz", std::process::id()));
    run(Command::new("sh")
        .arg("-c")
        .arg(format!(
            "find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
            tmp.display()
        ))
        .current_dir(&root));
    std::fs::rename(&tmp, &initrd).expect("rename initrd");
    std::fs::remove_dir_all(&root).expect("cleanup");
    *kit = Some((kernel.clone(), initrd.clone()));
    (kernel, initrd)
}

fn guest_spec(id: &str, append: &str) -> VmSpec {
    let (kernel, initrd) = guest_kit();
    VmSpec {
        direct_kernel: Some(DirectKernel {
            kernel,
            initrd: Some(initrd),
            append: format!("console=ttyS0 panic=-1 {append}"),
        }),
        ..VmSpec::new(id, 1, 256, Vec::new())
    }
}

fn check<'a>(report: &'a ferry_vm::ValidationReport, name: &str) -> &'a ferry_vm::CheckResult {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in {:#?}", report.checks))
}

/// A loopback listener that counts the connections it accepts (the guest must not reach it).
fn bait() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = l.local_addr().expect("addr");
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            if c.is_ok() {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_passes_through_dhcp_fw_cfg_guestfwd_and_hostfwd_on_an_isolated_network() {
    if qemu_missing(
        "validation_passes_through_dhcp_fw_cfg_guestfwd_and_hostfwd_on_an_isolated_network",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let driver = Driver::new(tmp.path().join("i")).with_accel(Accel::Tcg);
    let id = "i-fetestval0000000000001";
    let _guard = KillOnDrop(driver.clone(), id.to_owned());
    // The guest tries to reach a host loopback listener through the gateway: isolation must stop it.
    let (bait_addr, hits) = bait();
    let spec = guest_spec(id, &format!("ferry.probe=10.0.2.2:{}", bait_addr.port()));
    let v = ValidationSpec {
        boot_timeout: Duration::from_secs(120),
        checks: UserChecks::parse(
            r#"{"tcp":[22],"http":[{"port":80,"path":"/index.html","expect_status":200}],
                "commands":[{"name":"fw_cfg","command":"cat /sys/firmware/qemu_fw_cfg/by_name/opt/ferry/boot-checks/raw","expect_exit":0,"expect_output":"10.0.2.100:7979"}]}"#,
        )
        .expect("checks parse"),
        keep_running: false,
    };
    let t = Instant::now();
    let report = validate(&driver, spec, &v).await.expect("validation runs");
    eprintln!("validation took {:?}: {:#?}", t.elapsed(), report.checks);
    assert!(
        report.passed,
        "{:#?}\n{}",
        report.checks, report.console_tail
    );
    assert_eq!(report.version, 1);
    assert_eq!(report.instance_id, id);
    for name in [
        "kernel-booted",
        "default-target-reached",
        "no-failed-units",
        "network-dhcp-lease",
        "report-over-network",
        "filesystems-mounted",
        "tcp:22",
        "http:80/index.html",
        "command:fw_cfg",
    ] {
        assert!(
            check(&report, name).passed,
            "{name}: {:?}",
            check(&report, name)
        );
    }
    let boot = report.boot.as_ref().expect("boot report");
    // DHCP from QEMU's server on the NIC with the instance's MAC.
    assert!(boot.dhcp_lease);
    assert_eq!(boot.interfaces[0].addresses, ["10.0.2.15/24"]);
    assert_eq!(boot.interfaces[0].mac, ferry_vm::net::mac_for(id));
    // fw_cfg carried the checks configuration, token included; the report echoes the token.
    let fw = boot
        .commands
        .iter()
        .find(|c| c.name == "fw_cfg")
        .expect("fw_cfg command");
    let token = boot.token.as_deref().expect("token");
    assert!(fw.output.contains(token), "{fw:?}");
    // Isolation: the guest could not reach the host's listener through the gateway.
    let reach = boot
        .commands
        .iter()
        .find(|c| c.name.starts_with("reach "))
        .expect("isolation probe");
    assert_eq!(
        reach.output, "no",
        "the guest reached {bait_addr}: not isolated"
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(report.console_tail.contains("FERRY-BOOT-REPORT/1 "));
    // Throwaway: stopped, no QEMU left.
    assert!(driver.find(id).is_none());
    // instance.json keeps the caller's network (the validator's forwards were for that boot only).
    let file = driver.instance_file(id).expect("instance.json");
    assert_eq!(file.version, 2);
    assert!(file.network.enabled && file.network.forwards.is_empty());
    assert!(file.network.guest_forwards.is_empty() && file.fw_cfg.is_empty());
    driver.delete(id).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_never_reports_fails_with_the_console_and_leaves_no_qemu() {
    if qemu_missing("a_guest_that_never_reports_fails_with_the_console_and_leaves_no_qemu") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let driver = Driver::new(tmp.path().join("i")).with_accel(Accel::Tcg);
    let id = "i-fetestval0000000000002";
    let _guard = KillOnDrop(driver.clone(), id.to_owned());
    let v = ValidationSpec {
        boot_timeout: Duration::from_secs(45),
        checks: UserChecks {
            tcp: vec![22],
            ..UserChecks::default()
        },
        keep_running: false,
    };
    let report = validate(&driver, guest_spec(id, "ferry.mode=silent"), &v)
        .await
        .expect("a silent guest is a failed report, not an error");
    eprintln!(
        "silent validation took {} ms: {:#?}",
        report.elapsed_ms, report.checks
    );
    assert!(!report.passed);
    assert!(report.boot.is_none());
    // The kernel did boot, and the console says so.
    assert!(check(&report, "kernel-booted").passed);
    let lease = check(&report, "network-dhcp-lease");
    assert!(!lease.passed);
    assert!(
        lease.detail.contains("boot timeout") && lease.detail.contains("mode silent"),
        "the detail names the timeout and the last console line: {}",
        lease.detail
    );
    // Host-side checks were still tried: nothing listens in the silent guest.
    assert!(!check(&report, "tcp:22").passed);
    assert!(report.elapsed_ms >= 45_000);
    assert!(driver.find(id).is_none(), "QEMU leaked");
    driver.delete(id).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread")]
async fn uefi_boots_the_guest_and_failing_user_checks_say_why() {
    if qemu_missing("uefi_boots_the_guest_and_failing_user_checks_say_why") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let driver = Driver::new(tmp.path().join("i")).with_accel(Accel::Tcg);
    let id = "i-fetestval0000000000003";
    let _guard = KillOnDrop(driver.clone(), id.to_owned());
    let spec = VmSpec {
        firmware: Firmware::Uefi,
        ..guest_spec(id, "")
    };
    let v = ValidationSpec {
        boot_timeout: Duration::from_secs(150),
        checks: UserChecks {
            tcp: vec![23],
            http: vec![HttpCheck {
                port: 80,
                path: "/missing".to_owned(),
                expect_status: 200,
            }],
            commands: vec![
                CommandCheck {
                    name: "false".to_owned(),
                    command: "false".to_owned(),
                    expect_exit: 0,
                    expect_output: None,
                },
                CommandCheck {
                    name: "uname".to_owned(),
                    command: "uname -s".to_owned(),
                    expect_exit: 0,
                    expect_output: Some("FreeBSD".to_owned()),
                },
            ],
        },
        keep_running: true,
    };
    let report = validate(&driver, spec, &v).await.expect("validation runs");
    eprintln!(
        "UEFI validation took {} ms: {:#?}",
        report.elapsed_ms, report.checks
    );
    // OVMF ran and started the kernel through its EFI stub (the kernel names the firmware).
    assert!(
        report.console_tail.contains("EFI stub") && report.console_tail.contains("by EDK II"),
        "not a UEFI boot: {}",
        report.console_tail
    );
    assert!(dir_has(&driver, id, "efivars.fd"));
    assert!(check(&report, "kernel-booted").passed);
    assert!(check(&report, "report-over-network").passed);
    assert!(!report.passed);
    let tcp = check(&report, "tcp:23");
    assert!(
        !tcp.passed && tcp.detail.contains("nothing listens"),
        "{tcp:?}"
    );
    let http = check(&report, "http:80/missing");
    assert!(
        !http.passed && http.detail.contains("answered 404"),
        "{http:?}"
    );
    let f = check(&report, "command:false");
    assert!(
        !f.passed && f.detail.contains("exit 1, expected 0"),
        "{f:?}"
    );
    let u = check(&report, "command:uname");
    assert!(
        !u.passed && u.detail.contains("does not contain \"FreeBSD\""),
        "{u:?}"
    );
    // keep_running: the instance is left running for the caller, pass or fail.
    let running = driver.find(id).expect("kept running");
    driver.kill(id).await.expect("kill");
    assert!(driver.find(id).is_none());
    assert!(running.pid > 0);
    driver.delete(id).await.expect("delete");
}

fn dir_has(driver: &Driver, id: &str, file: &str) -> bool {
    driver.dir(id).is_ok_and(|d| d.join(file).is_file())
}

/// A restarted control plane finds a running instance again, and a killed one is reported gone; a
/// restart re-creates the recorded port forwards.
#[tokio::test(flavor = "multi_thread")]
async fn instances_survive_a_driver_restart_and_a_killed_qemu_is_reported_not_running() {
    if qemu_missing("instances_survive_a_driver_restart_and_a_killed_qemu_is_reported_not_running")
    {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("i");
    let id = "i-fetestval0000000000004";
    // A free port for the forward.
    let host = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("free port");
    let base = tmp.path().join("image.raw");
    std::fs::write(&base, vec![0u8; 1 << 20]).expect("image");
    let spec = VmSpec {
        network: NetworkSpec::isolated_with(vec![PortForward {
            host,
            guest_port: 22,
        }]),
        ..VmSpec::new(
            id,
            1,
            64,
            vec![ferry_vm::BaseDisk {
                path: base.clone(),
                format: ferry_vm::DiskFormat::Raw,
            }],
        )
    };
    let pid = {
        let driver = Driver::new(&root).with_accel(Accel::Tcg);
        driver.start(&spec).await.expect("start").pid
    }; // the first driver is gone, QEMU is not
    let driver = Driver::new(&root).with_accel(Accel::Tcg);
    let _guard = KillOnDrop(driver.clone(), id.to_owned());
    assert_eq!(driver.list().expect("list"), [id]);
    assert_eq!(driver.find(id).map(|r| r.pid), Some(pid), "found again");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains(&format!("hostfwd=tcp:127.0.0.1:{}-:22", host.port())),
        "{cmdline}"
    );
    assert!(
        cmdline.contains("restrict=on") && cmdline.contains("addr=0x3"),
        "{cmdline}"
    );

    // kill -9 behind the driver's back: reported not running (the server maps it to Stopped).
    run(Command::new("kill").args(["-9", &pid.to_string()]));
    let deadline = Instant::now() + Duration::from_secs(15);
    while driver.find(id).is_some() {
        assert!(
            Instant::now() < deadline,
            "a killed QEMU is still reported running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        driver.list().expect("list"),
        [id],
        "the instance itself is kept"
    );

    // Started again from instance.json alone: the same forward comes back.
    let r = driver.start_recorded(id, 1, 64).await.expect("restart");
    assert_ne!(r.pid, pid);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", r.pid)).expect("cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains(&format!("hostfwd=tcp:127.0.0.1:{}-:22", host.port())),
        "{cmdline}"
    );
    driver.delete(id).await.expect("delete");
    assert!(driver.find(id).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_specs_are_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let driver = Driver::new(tmp.path().join("i")).with_accel(Accel::Tcg);
    let mut spec = VmSpec::new("i-fetestval0000000000005", 1, 64, Vec::new());
    spec.network.forwards.push(PortForward {
        host: "0.0.0.0:2222".parse().expect("addr"),
        guest_port: 22,
    });
    let err = driver
        .start(&spec)
        .await
        .expect_err("public forward refused");
    assert!(matches!(err, VmError::BadSpec { .. }), "{err}");
    assert!(err.to_string().contains("loopback"), "{err}");
    let err = validate(&driver, spec, &ValidationSpec::default())
        .await
        .expect_err("validate refuses it too");
    assert!(matches!(err, VmError::BadSpec { .. }), "{err}");
    assert!(
        driver.list().expect("list").is_empty(),
        "nothing was created"
    );
}

/// The contract with guest adaptation: Ferry's real probe script (`ferry-image`'s `boot-report.sh`), run by
/// bash in the test guest, reads the checks configuration from fw_cfg, runs the commands and delivers a
/// report the validator accepts over the network. The guest has no systemd, so the systemd checks fail
/// with the probe's `unknown`.
#[tokio::test(flavor = "multi_thread")]
async fn the_real_probe_reports_to_the_validator_over_the_network() {
    if qemu_missing("the_real_probe_reports_to_the_validator_over_the_network") {
        return;
    }
    assert!(
        Path::new("/bin/bash-static").is_file(),
        "the probe needs bash in the test guest: apt-get install bash-static"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let driver = Driver::new(tmp.path().join("i")).with_accel(Accel::Tcg);
    let id = "i-fetestval0000000000006";
    let _guard = KillOnDrop(driver.clone(), id.to_owned());
    let v = ValidationSpec {
        boot_timeout: Duration::from_secs(120),
        checks: UserChecks::parse(
            r#"{"tcp":[22],"commands":[
                {"name":"quotes \"and\" tabs","command":"printf 'a\"b\\tc\\n'; exit 3","expect_exit":3,"expect_output":"a\"b\tc"},
                {"name":"kernel","command":"uname -s","expect_exit":0,"expect_output":"Linux"}]}"#,
        )
        .expect("checks"),
        keep_running: false,
    };
    let report = validate(&driver, guest_spec(id, "ferry.mode=probe"), &v)
        .await
        .expect("validation runs");
    eprintln!(
        "probe validation took {} ms: {:#?}",
        report.elapsed_ms, report.checks
    );
    let boot = report.boot.as_ref().expect("the probe's report");
    assert_eq!(boot.version, 1);
    assert!(
        boot.token.as_deref().is_some_and(|t| t.len() == 32),
        "{boot:?}"
    );
    for name in [
        "kernel-booted",
        "report-over-network",
        "network-dhcp-lease",
        "filesystems-mounted",
        "tcp:22",
        "command:quotes \"and\" tabs",
        "command:kernel",
    ] {
        assert!(
            check(&report, name).passed,
            "{name}: {:?}",
            check(&report, name)
        );
    }
    let target = check(&report, "default-target-reached");
    assert!(
        !target.passed && target.detail.contains("unknown"),
        "{target:?}"
    );
    assert_eq!(boot.interfaces[0].mac, ferry_vm::net::mac_for(id));
    assert!(driver.find(id).is_none(), "QEMU leaked");
    driver.delete(id).await.expect("delete");
}

/// A guest that powers off before reporting ends the wait at once (not at the timeout), and a disk with no
/// operating system fails `kernel-booted` with the firmware's last words.
#[tokio::test(flavor = "multi_thread")]
async fn qemu_exiting_or_no_kernel_fail_fast_with_what_the_console_said() {
    if qemu_missing("qemu_exiting_or_no_kernel_fail_fast_with_what_the_console_said") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let driver = Driver::new(tmp.path().join("i")).with_accel(Accel::Tcg);
    let id = "i-fetestval0000000000007";
    let _guard = KillOnDrop(driver.clone(), id.to_owned());
    let v = ValidationSpec {
        boot_timeout: Duration::from_secs(300),
        ..ValidationSpec::default()
    };
    let report = validate(&driver, guest_spec(id, "ferry.mode=poweroff"), &v)
        .await
        .expect("validation runs");
    eprintln!("poweroff validation took {} ms", report.elapsed_ms);
    assert!(!report.passed);
    assert!(report.elapsed_ms < 200_000, "waited for the timeout");
    let d = &check(&report, "default-target-reached").detail;
    assert!(d.contains("QEMU exited"), "{d}");
    assert!(check(&report, "kernel-booted").passed);
    driver.delete(id).await.expect("delete");

    // No operating system: SeaBIOS finds nothing to boot.
    let id = "i-fetestval0000000000008";
    let _guard2 = KillOnDrop(driver.clone(), id.to_owned());
    let base = tmp.path().join("empty.raw");
    std::fs::write(&base, vec![0u8; 1 << 20]).expect("image");
    let spec = VmSpec::new(
        id,
        1,
        64,
        vec![ferry_vm::BaseDisk {
            path: base,
            format: ferry_vm::DiskFormat::Raw,
        }],
    );
    let v = ValidationSpec {
        boot_timeout: Duration::from_secs(15),
        ..ValidationSpec::default()
    };
    let report = validate(&driver, spec, &v).await.expect("validation runs");
    let k = check(&report, "kernel-booted");
    assert!(
        !k.passed && k.detail.contains("No bootable device"),
        "{k:?}"
    );
    assert!(driver.find(id).is_none(), "QEMU leaked");
    driver.delete(id).await.expect("delete");
}
