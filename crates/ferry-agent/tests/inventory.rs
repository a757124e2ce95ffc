//! Inventory and prechecks against real disk images with real partition tables and filesystems.
//!
//! Needs root (loop mounts and loop devices), `sfdisk`, `blkid` and `mkfs.ext4` (`mkfs.vfat` is used for the
//! second partition when present). Each test skips with a printed reason when those are missing, builds its
//! own images in its own temporary directory and undoes its mounts and loop devices even when it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use ferry_agent::inventory::{self, DiskSpec, InventoryError, InventoryOptions};
use ferry_agent::precheck::{self, PrecheckContext};
use ferry_types::inventory::{AddrConfig, DiskSource, Inventory, PartitionTableType};

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
const P1_START: u64 = 2048;
const P1_SECTORS: u64 = 40960;
const P2_START: u64 = P1_START + P1_SECTORS;
const P2_SECTORS: u64 = 81920;
const IMAGE_BYTES: u64 = 64 * MIB;
const ROOT_LABEL: &str = "ferry-root";

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|_| true)
        .unwrap_or(false)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Returns why the test cannot run here, if it cannot.
fn missing_prerequisite(tools: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("not running as root".to_owned());
    }
    tools
        .iter()
        .find(|t| !have(t))
        .map(|t| format!("`{t}` is not installed"))
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh_stdin(cmd: &mut Command, input: &str) {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("cannot feed {cmd:?}: {e}"));
    }
    let status = child.wait().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed");
}

/// `blkid -p` value of `tag` for `path`, probed at `offset` when given.
fn blkid_value(path: &Path, offset: Option<u64>, tag: &str) -> String {
    let mut cmd = Command::new("blkid");
    cmd.args(["-p", "-o", "value", "-s", tag]);
    if let Some(off) = offset {
        cmd.args(["-O", &off.to_string()]);
    }
    sh(cmd.arg(path)).trim().to_owned()
}

/// A 64 MiB sparse GPT image: partition 1 ext4 (labelled), partition 2 vfat (or ext4), both at
/// explicit sectors so that the expected layout does not depend on sfdisk's alignment defaults.
fn build_gpt_image(dir: &Path) -> (PathBuf, &'static str) {
    let img = dir.join("disk.img");
    let file = std::fs::File::create(&img).unwrap_or_else(|e| panic!("create image: {e}"));
    file.set_len(IMAGE_BYTES)
        .unwrap_or_else(|e| panic!("size image: {e}"));
    drop(file);
    sh_stdin(
        Command::new("sfdisk").arg("-q").arg(&img),
        &format!(
            "label: gpt\nstart={P1_START}, size={P1_SECTORS}, type=L, name=root\nstart={P2_START}, size={P2_SECTORS}, type=U\n"
        ),
    );
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", ROOT_LABEL, "-E"])
        .arg(format!("offset={}", P1_START * SECTOR))
        .arg(&img)
        .arg(format!("{}k", P1_SECTORS * SECTOR / 1024)));
    let second = if have("mkfs.vfat") {
        sh(Command::new("mkfs.vfat")
            .args(["-n", "FERRYEFI", "--offset"])
            .arg(P2_START.to_string())
            .arg(&img)
            .arg((P2_SECTORS * SECTOR / 1024).to_string()));
        "vfat"
    } else {
        println!("mkfs.vfat not installed: the second partition is ext4");
        sh(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E"])
            .arg(format!("offset={}", P2_START * SECTOR))
            .arg(&img)
            .arg(format!("{}k", P2_SECTORS * SECTOR / 1024)));
        "ext4"
    };
    (img, second)
}

fn fake_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc/network")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        root.join("etc/os-release"),
        "NAME=\"Ferry Test Linux\"\nID=ferrytest\nVERSION_ID=\"1.2\"\nPRETTY_NAME=\"Ferry Test Linux 1.2\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(root.join("etc/resolv.conf"), "nameserver 192.0.2.53\n")
        .unwrap_or_else(|e| panic!("{e}"));
    root
}

fn collect_image(img: &Path, root: &Path) -> Inventory {
    inventory::collect(&InventoryOptions {
        disks: vec![DiskSpec {
            path: img.to_path_buf(),
            kind: DiskSource::ImageFile,
        }],
        root: root.to_path_buf(),
    })
    .unwrap_or_else(|e| panic!("collect failed: {e}"))
}

fn all_pass_context() -> PrecheckContext {
    PrecheckContext {
        server_time: Some(SystemTime::now()),
        server_reachable: Ok(()),
    }
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Detaches a loop device on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn gpt_image_inventory_matches_blkid_and_prechecks_pass() {
    if let Some(why) = missing_prerequisite(&["sfdisk", "blkid", "mkfs.ext4"]) {
        println!("SKIPPED gpt_image_inventory_matches_blkid_and_prechecks_pass: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (img, second_fs) = build_gpt_image(dir.path());
    let root = fake_root(dir.path());
    let inv = collect_image(&img, &root);

    assert_eq!(inv.os.id, "ferrytest");
    assert_eq!(inv.os.version_id, "1.2");
    assert_eq!(inv.dns, ["192.0.2.53"]);
    assert!(inv.cpus > 0 && inv.memory_bytes > 0 && !inv.kernel.is_empty());

    assert_eq!(inv.disks.len(), 1);
    let disk = &inv.disks[0];
    assert_eq!(disk.index, 0);
    assert_eq!(disk.source, DiskSource::ImageFile);
    assert_eq!(disk.size_bytes, IMAGE_BYTES);
    assert_eq!(disk.partition_table, Some(PartitionTableType::Gpt));
    assert_eq!(
        disk.table_uuid.as_deref(),
        Some(blkid_value(&img, None, "PTUUID").as_str())
    );
    assert_eq!(disk.filesystem, None);
    assert_eq!(disk.partitions.len(), 2);

    let (p1, p2) = (&disk.partitions[0], &disk.partitions[1]);
    assert_eq!((p1.number, p2.number), (1, 2));
    assert_eq!(p1.start_bytes, P1_START * SECTOR);
    assert_eq!(p1.size_bytes, P1_SECTORS * SECTOR);
    assert_eq!(p2.start_bytes, P2_START * SECTOR);
    assert_eq!(p2.size_bytes, P2_SECTORS * SECTOR);
    assert_eq!(p1.type_id, "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    assert_eq!(p2.type_id, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    let sfdisk_uuid = sh(Command::new("sfdisk").arg("--part-uuid").arg(&img).arg("1"));
    assert_eq!(
        p1.part_uuid.as_deref(),
        Some(sfdisk_uuid.trim().to_ascii_lowercase().as_str())
    );

    let fs1 = p1
        .filesystem
        .as_ref()
        .unwrap_or_else(|| panic!("no filesystem on partition 1"));
    assert_eq!(fs1.fs_type, "ext4");
    assert_eq!(fs1.label.as_deref(), Some(ROOT_LABEL));
    assert_eq!(
        fs1.uuid.as_deref(),
        Some(blkid_value(&img, Some(P1_START * SECTOR), "UUID").as_str())
    );
    assert_eq!(fs1.mount_point, None);
    let fs2 = p2
        .filesystem
        .as_ref()
        .unwrap_or_else(|| panic!("no filesystem on partition 2"));
    assert_eq!(fs2.fs_type, second_fs);
    assert_eq!(
        fs2.uuid.as_deref(),
        Some(blkid_value(&img, Some(P2_START * SECTOR), "UUID").as_str())
    );
    assert_ne!(fs1.uuid, fs2.uuid);

    // The inventory is a wire type: it must survive JSON unchanged.
    let json = serde_json::to_string(&inv).unwrap_or_else(|e| panic!("{e}"));
    let back: Inventory = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, inv);
    assert!(
        json.contains("\"partition_table\":\"gpt\"") && json.contains("\"source\":\"image_file\"")
    );

    let checks = precheck::run(&inv, &all_pass_context());
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "clock_skew",
            "connectivity",
            "disks_readable",
            "supported_layout",
            "boot_mode_supported"
        ]
    );
    for c in &checks {
        assert!(!c.reason.is_empty());
        if c.name == "boot_mode_supported"
            && !matches!(inv.architecture.as_str(), "x86_64" | "aarch64")
        {
            continue;
        }
        assert!(c.passed, "{} failed: {}", c.name, c.reason);
    }

    let mut gone = inv.clone();
    let missing = dir.path().join("missing.img");
    gone.disks[0].path = missing.to_string_lossy().into_owned();
    let readable = precheck::disks_readable(&gone.disks);
    assert!(!readable.passed);
    assert!(
        readable.reason.contains(&gone.disks[0].path),
        "{}",
        readable.reason
    );
    assert!(
        readable.reason.contains("No such file"),
        "{}",
        readable.reason
    );
    let all = precheck::run(&gone, &all_pass_context());
    assert!(all.iter().any(|c| c.name == "disks_readable" && !c.passed));
}

#[test]
fn mounted_partition_of_an_image_is_found_by_uuid() {
    if let Some(why) = missing_prerequisite(&["sfdisk", "blkid", "mkfs.ext4", "mount"]) {
        println!("SKIPPED mounted_partition_of_an_image_is_found_by_uuid: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (img, _) = build_gpt_image(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap_or_else(|e| panic!("{e}"));
    sh(Command::new("mount")
        .arg("-o")
        .arg(format!(
            "loop,ro,offset={},sizelimit={}",
            P1_START * SECTOR,
            P1_SECTORS * SECTOR
        ))
        .arg(&img)
        .arg(&mnt));
    let _mount = Mount(mnt.clone());
    let inv = collect_image(&img, &fake_root(dir.path()));
    let fs1 = inv.disks[0].partitions[0]
        .filesystem
        .as_ref()
        .unwrap_or_else(|| panic!("no filesystem on partition 1"));
    assert_eq!(
        fs1.mount_point.as_deref(),
        Some(mnt.to_string_lossy().as_ref())
    );
    let fs2 = inv.disks[0].partitions[1].filesystem.as_ref();
    assert_eq!(fs2.and_then(|f| f.mount_point.clone()), None);
}

#[test]
fn loop_device_reads_like_the_image() {
    if let Some(why) = missing_prerequisite(&["sfdisk", "blkid", "mkfs.ext4", "losetup"]) {
        println!("SKIPPED loop_device_reads_like_the_image: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (img, _) = build_gpt_image(dir.path());
    let root = fake_root(dir.path());
    let from_image = collect_image(&img, &root);
    let dev = sh(Command::new("losetup")
        .args(["-f", "--show", "-r"])
        .arg(&img))
    .trim()
    .to_owned();
    let _loop = Loop(dev.clone());
    let inv = inventory::collect(&InventoryOptions {
        disks: vec![DiskSpec {
            path: PathBuf::from(&dev),
            kind: DiskSource::BlockDevice,
        }],
        root,
    })
    .unwrap_or_else(|e| panic!("collect failed: {e}"));
    let (d, i) = (&inv.disks[0], &from_image.disks[0]);
    assert_eq!(d.path, dev);
    assert_eq!(d.source, DiskSource::BlockDevice);
    assert_eq!(d.size_bytes, IMAGE_BYTES);
    assert_eq!(d.table_uuid, i.table_uuid);
    assert_eq!(d.partitions, i.partitions);
    assert!(precheck::disks_readable(&inv.disks).passed);

    // Naming a device as an image (and the reverse) is refused with a hint.
    let wrong = inventory::collect(&InventoryOptions {
        disks: vec![DiskSpec {
            path: PathBuf::from(&dev),
            kind: DiskSource::ImageFile,
        }],
        ..InventoryOptions::default()
    });
    assert!(
        matches!(wrong, Err(InventoryError::NotAnImageFile { .. })),
        "{wrong:?}"
    );
}

#[test]
fn whole_disk_filesystem_without_partition_table() {
    if let Some(why) = missing_prerequisite(&["blkid", "mkfs.ext4"]) {
        println!("SKIPPED whole_disk_filesystem_without_partition_table: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let img = dir.path().join("data.img");
    let file = std::fs::File::create(&img).unwrap_or_else(|e| panic!("{e}"));
    file.set_len(32 * MIB).unwrap_or_else(|e| panic!("{e}"));
    drop(file);
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "data"])
        .arg(&img));
    let root = fake_root(dir.path());
    let inv = collect_image(&img, &root);
    let disk = &inv.disks[0];
    assert_eq!(disk.partition_table, None);
    assert!(disk.partitions.is_empty());
    let fs = disk
        .filesystem
        .as_ref()
        .unwrap_or_else(|| panic!("no whole-disk filesystem"));
    assert_eq!(fs.fs_type, "ext4");
    assert_eq!(fs.label.as_deref(), Some("data"));
    assert_eq!(
        fs.uuid.as_deref(),
        Some(blkid_value(&img, None, "UUID").as_str())
    );
    assert!(precheck::supported_layout(&inv.disks).passed);

    // A blank disk has neither a table nor a filesystem: the layout check must say so.
    let blank = dir.path().join("blank.img");
    std::fs::File::create(&blank)
        .and_then(|f| f.set_len(MIB))
        .unwrap_or_else(|e| panic!("{e}"));
    let inv = collect_image(&blank, &root);
    let layout = precheck::supported_layout(&inv.disks);
    assert!(!layout.passed);
    assert!(layout.reason.contains("neither"), "{}", layout.reason);
}

#[test]
fn missing_image_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.path().join("nope.img");
    let err = inventory::collect(&InventoryOptions {
        disks: vec![DiskSpec {
            path: missing.clone(),
            kind: DiskSource::ImageFile,
        }],
        ..InventoryOptions::default()
    });
    match err {
        Err(e @ InventoryError::DiskAccess { .. }) => {
            assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}")
        }
        other => panic!("expected DiskAccess, got {other:?}"),
    }
}

#[test]
fn network_config_from_the_root_tree_is_applied_to_live_interfaces() {
    // Whatever interfaces this machine has, a networkd file matching every name must decide all of them.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path();
    std::fs::create_dir_all(root.join("etc/systemd/network")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        root.join("etc/systemd/network/99-all.network"),
        "[Match]\nName=*\n[Network]\nAddress=192.0.2.77/24\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let blank = root.join("blank.img");
    std::fs::File::create(&blank)
        .and_then(|f| f.set_len(MIB))
        .unwrap_or_else(|e| panic!("{e}"));
    let inv = collect_image(&blank, root);
    let non_loopback = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name() != "lo")
                .count()
        })
        .unwrap_or(0);
    if non_loopback == 0 {
        println!("this machine has no network interface besides lo: nothing to match");
    } else {
        assert!(
            !inv.network.is_empty(),
            "interfaces exist but none was reported"
        );
    }
    for iface in &inv.network {
        assert_eq!(iface.config, AddrConfig::Static, "{iface:?}");
        assert_eq!(
            iface.config_source.as_deref(),
            Some("/etc/systemd/network/99-all.network")
        );
    }
}
