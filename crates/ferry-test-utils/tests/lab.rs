//! The lab of real source servers: each variant builds (cached) and boots under QEMU (TCG) to its marker
//! line, and a copy of a lab disk can be changed one file at a time. Needs root (loop devices, mounts);
//! without it each test prints why it skipped.

use std::collections::BTreeMap;
use std::path::Path;

use ferry_test_utils::is_root;
use ferry_test_utils::lab::{self, LabVariant};
use sha2::Digest as _;

async fn builds_and_boots(v: LabVariant) {
    if !is_root() {
        eprintln!("skipped: the lab needs root (loop devices, mounts, chroot)");
        return;
    }
    let server = lab::build(v).await.expect("lab build");
    assert_eq!(server.variant, v);
    assert_eq!(server.facts.hostname, format!("lab-{v}"));
    assert_eq!(server.facts.marker, format!("FERRY-LAB-MARKER {v} lab-{v}"));
    assert_eq!(
        server.facts.boot_mode,
        if v == LabVariant::Uefi {
            "UEFI"
        } else {
            "BIOS"
        }
    );
    let want_disks = if v == LabVariant::DataDisk { 2 } else { 1 };
    assert_eq!(server.disks.len(), want_disks);
    assert_eq!(server.facts.source_devices.len(), want_disks);
    // The recorded checksum is the data file's, read back from the image.
    let data_disk = server.disks.last().expect("a disk");
    let data = lab::read_file(data_disk, v, &server.facts.data_file).expect("read data file");
    assert_eq!(data.len(), 4 << 20);
    assert_eq!(hex(&sha2::Sha256::digest(&data)), server.facts.data_sha256);
    // `build` boot-checked the variant (once per cache: the check is what every later run reuses) and
    // fails unless the exact marker line appeared on the serial console; the console it saw is kept.
    let dir = server.disks[0].parent().expect("a cache directory");
    let console = std::fs::read_to_string(dir.join("boot-console.log")).expect("boot console log");
    assert!(
        console.contains(&server.facts.marker),
        "the boot check's console has no marker:\n{console}"
    );
    assert!(dir.join("boot-ok").exists());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn bios_builds_and_boots() {
    builds_and_boots(LabVariant::Bios).await;
}

#[tokio::test]
async fn uefi_builds_and_boots() {
    builds_and_boots(LabVariant::Uefi).await;
}

#[tokio::test]
async fn lvm_builds_and_boots() {
    builds_and_boots(LabVariant::Lvm).await;
}

#[tokio::test]
async fn datadisk_builds_and_boots() {
    builds_and_boots(LabVariant::DataDisk).await;
}

/// Path → SHA-256 of every regular file (and symlink target) under `root`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("dir entry");
            let p = e.path();
            let rel = p.strip_prefix(root).expect("prefix").display().to_string();
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&p).expect("readlink");
                out.insert(rel, format!("-> {}", t.display()));
            } else if ft.is_file() {
                let bytes = std::fs::read(&p).expect("read");
                out.insert(rel, hex(&sha2::Sha256::digest(&bytes)));
            }
        }
    }
    out
}

/// Changes one file in copies of the lab disks and checks that exactly that file changed.
async fn modify_changes_exactly_one_file(v: LabVariant, guest_path: &str) {
    let server = lab::build(v).await.expect("lab build");
    let dir = tempfile::tempdir().expect("tempdir");
    let copies = lab::copy_disks(&server, dir.path()).expect("copy_disks");
    assert_eq!(copies.len(), server.disks.len());
    let disk_idx = if v == LabVariant::DataDisk && guest_path.starts_with("/srv/lab/") {
        1
    } else {
        0
    };
    let content = format!("changed on the source: {guest_path}\n").into_bytes();
    lab::modify_file(&copies[disk_idx], v, guest_path, &content).expect("modify_file");

    let orig =
        lab::mount_fs(&server.disks[disk_idx], v, guest_path, false).expect("mount original");
    let copy = lab::mount_fs(&copies[disk_idx], v, guest_path, false).expect("mount copy");
    assert_eq!(
        std::fs::read(copy.host_path()).expect("read changed file"),
        content
    );
    let (a, b) = (tree(orig.mount_point()), tree(copy.mount_point()));
    let rel = copy
        .host_path()
        .strip_prefix(copy.mount_point())
        .expect("prefix")
        .display()
        .to_string();
    let differ: Vec<&String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(differ, vec![&rel], "exactly {guest_path} should differ");
    // The other disks of the copy are untouched.
    for (i, (o, c)) in server.disks.iter().zip(&copies).enumerate() {
        if i != disk_idx {
            assert_eq!(
                std::fs::read(o).expect("read"),
                std::fs::read(c).expect("read")
            );
        }
    }
}

#[tokio::test]
async fn copy_and_modify_changes_exactly_that_file() {
    if !is_root() {
        eprintln!("skipped: the lab needs root (loop devices, mounts, chroot)");
        return;
    }
    modify_changes_exactly_one_file(LabVariant::Bios, "/srv/lab/changed.txt").await;
    modify_changes_exactly_one_file(LabVariant::Lvm, "/etc/ferry-lab-change").await;
}
