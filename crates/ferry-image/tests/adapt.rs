//! Guest adaptation on real disk images: partition tables made with sfdisk, real ext4/xfs/vfat
//! filesystems, a real LVM2 physical volume (metadata written by the LVM tools with device-mapper
//! disabled), adapted through loop devices, then mounted read-only and checked file by file; a second
//! run must change nothing (BLAKE3 of every image file). The probe script runs on the host against a
//! fake checks file and a loopback listener.
//!
//! Needs root (loop devices, mounts); each test prints why and returns when not root. Every loop
//! device and mount a test makes is released by a guard.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_image::adapt::{BOOT_REPORT_SCRIPT, NetworkMode};
use ferry_image::{AdaptError, AdaptOptions, adapt, detect};

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: guest adaptation tests need root (loop devices and mounts)");
    false
}

fn sh(cmd: &str) -> String {
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// LVM tool options for a test: only `devs` are scanned (an accept-all filter would open every other
/// test's loop devices in passing, and a device held open at its detach stays bound a while), nothing
/// waits for udev, nothing is written under /etc/lvm.
fn lvm_config(devs: &[&str]) -> String {
    let accept: Vec<String> = devs.iter().map(|d| format!("\"a|^{d}$|\"")).collect();
    format!(
        "--config 'devices {{ use_devicesfile=0 filter=[{}, \"r|.*|\"] }} activation {{ udev_sync=0 udev_rules=0 }} backup {{ backup=0 archive=0 }}'",
        accept.join(", ")
    )
}

struct Loop(String);
impl Loop {
    fn new(img: &Path, offset: u64, size: u64, ro: bool) -> Loop {
        let ro = if ro { "-r" } else { "" };
        Loop(sh(&format!(
            "losetup -f --show {ro} -o {offset} --sizelimit {size} {}",
            img.display()
        )))
    }
}
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

struct Mnt(PathBuf);
impl Mnt {
    fn new(dev: &str, dir: &Path, opts: &str) -> Mnt {
        std::fs::create_dir_all(dir).unwrap();
        sh(&format!("mount -o {opts} {dev} {}", dir.display()));
        Mnt(dir.to_path_buf())
    }
}
impl Drop for Mnt {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn hash(p: &Path) -> String {
    blake3::hash(&std::fs::read(p).unwrap())
        .to_hex()
        .to_string()
}

/// (start, size) in bytes of each partition.
fn partitions(img: &Path) -> Vec<(u64, u64)> {
    let j: serde_json::Value =
        serde_json::from_str(&sh(&format!("sfdisk --json {}", img.display()))).unwrap();
    j["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap() * 512,
                p["size"].as_u64().unwrap() * 512,
            )
        })
        .collect()
}

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn blkid(dev: &str, tag: &str) -> String {
    sh(&format!("blkid -p -s {tag} -o value {dev}"))
}

/// newc cpio of empty regular files with these names.
fn newc(names: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut all: Vec<&str> = names.to_vec();
    all.push("TRAILER!!!");
    for (i, n) in all.iter().enumerate() {
        out.extend_from_slice(
            format!(
                "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                i,
                0o100644,
                0,
                0,
                1,
                0,
                0,
                0,
                0,
                0,
                0,
                n.len() + 1,
                0
            )
            .as_bytes(),
        );
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    out
}

const IFACES: &str = "# The primary network interface\nauto lo\niface lo inet loopback\n\nauto ens18\niface ens18 inet static\n    address 192.0.2.10/24\n    gateway 192.0.2.1\n    dns-nameservers 192.0.2.53\n    hwaddress ether 52:54:00:aa:bb:cc\n";
const FSTAB_A: &str = "# /etc/fstab\n/dev/sda1 / ext4 errors=remount-ro 0 1\n/dev/sdb1 /srv/data xfs defaults 0 2\nUUID=0000dead-0000-0000-0000-000000000000 none swap sw 0 0\nproc /proc proc defaults 0 0\n";
const GRUB_CFG: &str = "#\n# DO NOT EDIT THIS FILE\n#\nset default=\"0\"\nterminal_output gfxterm\nmenuentry 'Debian GNU/Linux' {\n\tinsmod ext2\n\tlinux\t/boot/vmlinuz-6.1.0-test root=/dev/sda1 ro quiet\n\tinitrd\t/boot/initrd.img-6.1.0-test\n}\n";

/// A Debian-like root tree (system disk of the MBR/BIOS case).
fn debian_tree(root: &Path) {
    write(
        root,
        "etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n",
    );
    write(root, "etc/fstab", FSTAB_A);
    write(root, "etc/crypttab", "secret /dev/sdc1 none luks\n");
    write(root, "etc/network/interfaces", IFACES);
    write(
        root,
        "etc/udev/rules.d/70-persistent-net.rules",
        "SUBSYSTEM==\"net\", ATTR{address}==\"52:54:00:aa:bb:cc\", NAME=\"ens18\"\n",
    );
    write(root, "sbin/dhclient", "");
    write(root, "usr/local/bin/ferry-agent", "#!/bin/sh\n");
    write(
        root,
        "etc/systemd/system/ferry-agent.service",
        "[Service]\nExecStart=/usr/local/bin/ferry-agent run\n",
    );
    std::fs::create_dir_all(root.join("etc/systemd/system/multi-user.target.wants")).unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/ferry-agent.service",
        root.join("etc/systemd/system/multi-user.target.wants/ferry-agent.service"),
    )
    .unwrap();
    write(root, "var/lib/ferry-agent/state.json", "{\"progress\":1}\n");
    write(
        root,
        "etc/ferry-agent/credentials.json",
        "{\"secret\":\"s3cr3t\"}\n",
    );
    write(
        root,
        "etc/default/grub",
        "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n",
    );
    write(root, "boot/grub/grub.cfg", GRUB_CFG);
    // Kernel 1: virtio in its initrd. Kernel 2: neither built in nor in the initrd, and no tool to fix it.
    write(
        root,
        "lib/modules/6.1.0-test/modules.builtin",
        "kernel/drivers/virtio/virtio.ko\n",
    );
    std::fs::write(
        root.join("boot/initrd.img-6.1.0-test"),
        newc(&[
            "usr/lib/modules/6.1.0-test/kernel/drivers/block/virtio_blk.ko",
            "usr/lib/modules/6.1.0-test/kernel/drivers/virtio/virtio_pci.ko",
        ]),
    )
    .unwrap();
    write(root, "lib/modules/6.1.0-old/modules.builtin", "");
    std::fs::write(root.join("boot/initrd.img-6.1.0-old"), newc(&["init"])).unwrap();
    std::fs::create_dir_all(root.join("srv/data")).unwrap();
    std::fs::create_dir_all(root.join("proc")).unwrap();
}

fn changes_of(r: &ferry_image::AdaptReport, kind: &str) -> Vec<String> {
    r.changes
        .iter()
        .filter(|c| c.kind == kind)
        .map(|c| c.path.clone())
        .collect()
}

#[tokio::test]
async fn mbr_bios_ext4_root_and_xfs_data_disk() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d0 = t.path().join("disk0.raw");
    let d1 = t.path().join("disk1.raw");
    sh(&format!(
        "truncate -s 160M {0} && printf 'label: dos\\n,,L,*\\n' | sfdisk -q {0}",
        d0.display()
    ));
    sh(&format!(
        "truncate -s 320M {0} && printf 'label: dos\\n,,L\\n' | sfdisk -q {0}",
        d1.display()
    ));
    // Boot code in the MBR, as grub-install leaves it (sfdisk keeps bytes 0..440).
    sh(&format!(
        "printf '\\xebc\\x90GRUB ' | dd of={} conv=notrunc status=none",
        d0.display()
    ));
    let tree = t.path().join("tree");
    debian_tree(&tree);
    let (s0, z0) = partitions(&d0)[0];
    let (s1, z1) = partitions(&d1)[0];
    let (root_uuid, data_uuid) = {
        let l0 = Loop::new(&d0, s0, z0, false);
        sh(&format!("mkfs.ext4 -q -F -d {} {}", tree.display(), l0.0));
        let l1 = Loop::new(&d1, s1, z1, false);
        sh(&format!("mkfs.xfs -q -f {}", l1.0));
        (blkid(&l0.0, "UUID"), blkid(&l1.0, "UUID"))
    };
    let disks = vec![d0.clone(), d1.clone()];

    let info = detect(&disks).await.unwrap();
    assert_eq!(info.boot_mode, "BIOS");
    assert_eq!(info.root, "disk0p1");
    assert_eq!(info.os.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    assert_eq!(info.fstab.len(), 4);

    let before = (hash(&d0), hash(&d1));
    let started = Instant::now();
    let r = adapt(&disks, &AdaptOptions::default()).await.unwrap();
    eprintln!(
        "first adaptation: {:?}, {} changes",
        started.elapsed(),
        r.changes.len()
    );
    assert_ne!(before.0, hash(&d0));
    assert_eq!(r.version, 1);
    assert_eq!(r.boot_mode, "BIOS");
    assert_eq!(r.root, "disk0p1");
    assert_eq!(r.source_network.len(), 1);
    assert_eq!(r.source_network[0].name, "ens18");
    assert_eq!(r.source_network[0].addresses, vec!["192.0.2.10/24"]);
    assert_eq!(
        r.source_network[0].mac.as_deref(),
        Some("52:54:00:aa:bb:cc")
    );
    for kind in [
        "network",
        "fstab",
        "serial-console",
        "udev-net",
        "agent",
        "probe",
    ] {
        assert!(
            !changes_of(&r, kind).is_empty(),
            "no {kind} change in {:#?}",
            r.changes
        );
    }
    assert!(changes_of(&r, "efi-fallback").is_empty());
    assert!(
        changes_of(&r, "initramfs").is_empty(),
        "nothing can regenerate here: {:#?}",
        r.changes
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("crypttab")),
        "{:?}",
        r.warnings
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("6.1.0-old") && w.contains("virtio_pci")),
        "{:?}",
        r.warnings
    );
    assert!(
        !r.warnings.iter().any(|w| w.contains("6.1.0-test")),
        "{:?}",
        r.warnings
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["version"], 1);

    // Look at the result read-only.
    {
        let l0 = Loop::new(&d0, s0, z0, true);
        let m = t.path().join("m");
        let _mnt = Mnt::new(&l0.0, &m, "ro,noload");
        let rd = |p: &str| std::fs::read_to_string(m.join(p)).unwrap_or_default();
        let fstab = rd("etc/fstab");
        assert!(
            fstab.contains(&format!("UUID={root_uuid} / ext4 errors=remount-ro 0 1")),
            "{fstab}"
        );
        assert!(
            fstab.contains(&format!("UUID={data_uuid} /srv/data xfs")),
            "{fstab}"
        );
        assert!(fstab.contains("UUID=0000dead-0000-0000-0000-000000000000 none swap"));
        assert!(!fstab.lines().any(|l| l.starts_with("/dev/sd")), "{fstab}");
        assert_eq!(rd("etc/fstab.ferry-orig"), FSTAB_A);
        let ifaces = rd("etc/network/interfaces");
        assert!(ifaces.contains("iface enp0s3 inet dhcp"), "{ifaces}");
        assert!(
            !ifaces.contains("192.0.2.10") && !ifaces.contains("52:54:00"),
            "{ifaces}"
        );
        assert_eq!(rd("etc/network/interfaces.ferry-orig"), IFACES);
        let rec: serde_json::Value =
            serde_json::from_str(&rd("etc/ferry/source-network.json")).unwrap();
        assert_eq!(rec["version"], 1);
        assert_eq!(rec["interfaces"][0]["addresses"][0], "192.0.2.10/24");
        assert!(!m.join("etc/udev/rules.d/70-persistent-net.rules").exists());
        assert!(
            m.join("etc/udev/rules.d/70-persistent-net.rules.ferry-orig")
                .exists()
        );
        for gone in [
            "usr/local/bin/ferry-agent",
            "etc/systemd/system/ferry-agent.service",
            "etc/systemd/system/multi-user.target.wants/ferry-agent.service",
            "var/lib/ferry-agent",
            "etc/ferry-agent",
        ] {
            assert!(
                std::fs::symlink_metadata(m.join(gone)).is_err(),
                "{gone} still there"
            );
        }
        let cfg = rd("boot/grub/grub.cfg");
        assert!(
            cfg.contains(&format!(
                "root=UUID={root_uuid} ro console=tty0 console=ttyS0,115200n8"
            )),
            "{cfg}"
        );
        assert!(
            cfg.contains("terminal_output console serial") && !cfg.contains("gfxterm"),
            "{cfg}"
        );
        let dg = rd("etc/default/grub");
        assert!(
            dg.contains("GRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200n8\""),
            "{dg}"
        );
        assert!(dg.contains("GRUB_TERMINAL=\"console serial\""), "{dg}");
        assert_eq!(rd("usr/lib/ferry/boot-report"), BOOT_REPORT_SCRIPT);
        let mode = std::fs::metadata(m.join("usr/lib/ferry/boot-report"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(
            rd("etc/systemd/system/ferry-boot-report.service")
                .contains("WantedBy=multi-user.target")
        );
        assert_eq!(
            std::fs::read_link(
                m.join("etc/systemd/system/multi-user.target.wants/ferry-boot-report.service")
            )
            .unwrap(),
            Path::new("/etc/systemd/system/ferry-boot-report.service")
        );
    }

    // Idempotence: nothing to do, not a byte changed (not even an ext4 superblock's mount time).
    let after = (hash(&d0), hash(&d1));
    let r2 = adapt(&disks, &AdaptOptions::default()).await.unwrap();
    assert!(
        r2.changes.is_empty(),
        "second run changed: {:#?}",
        r2.changes
    );
    assert_eq!(r2.source_network, r.source_network);
    assert_eq!(after, (hash(&d0), hash(&d1)));
    for d in &disks {
        assert_eq!(
            sh(&format!("losetup -j {}", d.display())),
            "",
            "a loop device was left attached"
        );
    }
}

const NETPLAN: &str = "network:\n  version: 2\n  ethernets:\n    lan0:\n      match:\n        macaddress: \"52:54:00:12:34:56\"\n      set-name: ens3\n      addresses: [192.0.2.20/24]\n      routes:\n        - to: default\n          via: 192.0.2.1\n      nameservers:\n        addresses: [192.0.2.53]\n";
const NM: &str = "[connection]\nid=Wired\ntype=ethernet\ninterface-name=ens3\n\n[ethernet]\nmac-address=52:54:00:12:34:56\n\n[ipv4]\nmethod=manual\naddress1=192.0.2.20/24,192.0.2.1\n";

/// GPT + ESP (UEFI, no BIOS boot code) and the root filesystem on an LVM logical volume that does not
/// start at the first extent; network by netplan and NetworkManager.
#[tokio::test]
async fn gpt_uefi_lvm_root_netplan() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d0 = t.path().join("disk0.raw");
    sh(&format!(
        "truncate -s 200M {0} && printf 'label: gpt\\n,32M,U\\n,,L\\n' | sfdisk -q {0}",
        d0.display()
    ));
    let parts = partitions(&d0);
    let (es, ez) = parts[0];
    let (ps, pz) = parts[1];
    // A VG name of our own per run: the LVM tools must not meet another test's VG.
    let vg = format!("ferrytest{}", std::process::id());
    let tree = t.path().join("tree");
    write(
        &tree,
        "etc/os-release",
        "PRETTY_NAME=\"Test Linux (LVM)\"\nID=debian\n",
    );
    let fstab = format!(
        "/dev/mapper/{vg}-root / ext4 defaults 0 1\n/dev/sda1 /boot/efi vfat umask=0077 0 1\n/dev/{vg}/swap none swap sw 0 0\n"
    );
    write(&tree, "etc/fstab", &fstab);
    write(&tree, "etc/netplan/50-cloud-init.yaml", NETPLAN);
    write(
        &tree,
        "etc/NetworkManager/system-connections/Wired.nmconnection",
        NM,
    );
    write(&tree, "boot/grub/grub.cfg", GRUB_CFG);
    std::fs::create_dir_all(tree.join("boot/efi")).unwrap();
    let esp_uuid;
    let root_lv_offset;
    {
        let pv = Loop::new(&d0, ps, pz, false);
        let lvm_cfg = lvm_config(&[&pv.0]);
        sh(&format!("pvcreate -q -y {lvm_cfg} {}", pv.0));
        sh(&format!("vgcreate -q {lvm_cfg} {vg} {}", pv.0));
        sh(&format!(
            "lvcreate -q --driverloaded n -an -Zn -y {lvm_cfg} -L 8M -n swap {vg}"
        ));
        sh(&format!(
            "lvcreate -q --driverloaded n -an -Zn -y {lvm_cfg} -l 100%FREE -n root {vg}"
        ));
        // Where the LVM tools say root lies: pe_start + first extent * extent size.
        let pe_start: u64 = sh(&format!(
            "pvs --noheadings --units b --nosuffix -o pe_start {lvm_cfg} {}",
            pv.0
        ))
        .parse()
        .unwrap();
        let ext: u64 = sh(&format!(
            "vgs --noheadings --units b --nosuffix -o vg_extent_size {lvm_cfg} {vg}"
        ))
        .parse()
        .unwrap();
        let seg = sh(&format!(
            "lvs --noheadings -o seg_pe_ranges {lvm_cfg} {vg}/root"
        ));
        let first: u64 = seg
            .rsplit(':')
            .next()
            .unwrap()
            .split('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let size: u64 = sh(&format!(
            "lvs --noheadings --units b --nosuffix -o lv_size {lvm_cfg} {vg}/root"
        ))
        .parse()
        .unwrap();
        assert!(first > 0, "root should not start at extent 0: {seg}");
        root_lv_offset = ps + pe_start + first * ext;
        let lv = Loop::new(&d0, root_lv_offset, size, false);
        sh(&format!("mkfs.ext4 -q -F -d {} {}", tree.display(), lv.0));
        let esp = Loop::new(&d0, es, ez, false);
        sh(&format!("mkfs.vfat {} >/dev/null", esp.0));
        esp_uuid = blkid(&esp.0, "UUID");
        // This host's kernel has no vfat driver: populate the ESP with mtools, as adaptation reads it.
        write(&tree, "../esp/grubx64.efi", "MZ fake grub loader");
        write(
            &tree,
            "../esp/grub.cfg",
            "search.fs_uuid X root\nconfigfile ($root)/boot/grub/grub.cfg\n",
        );
        let e = t.path().join("esp");
        sh(&format!(
            "export MTOOLS_SKIP_CHECK=1; mmd -i {0} ::/EFI ::/EFI/debian && mcopy -i {0} {1}/grubx64.efi {1}/grub.cfg ::/EFI/debian/",
            esp.0,
            e.display()
        ));
    }
    let disks = vec![d0.clone()];
    let info = detect(&disks).await.unwrap();
    assert_eq!(info.boot_mode, "UEFI");
    assert_eq!(info.root, format!("lvm:{vg}/root"));

    let r = adapt(&disks, &AdaptOptions::default()).await.unwrap();
    assert_eq!(
        (r.boot_mode.as_str(), r.root.as_str()),
        ("UEFI", format!("lvm:{vg}/root").as_str())
    );
    assert!(
        changes_of(&r, "efi-fallback")
            .iter()
            .any(|p| p.ends_with("/BOOT/BOOTX64.EFI")),
        "{:#?}",
        r.changes
    );
    assert!(changes_of(&r, "fstab").contains(&"/etc/fstab".to_string()));
    assert_eq!(r.source_network.len(), 2, "{:?}", r.source_network);
    assert!(
        r.source_network
            .iter()
            .all(|s| s.addresses == vec!["192.0.2.20/24"])
    );
    let check = |expect_static: bool| {
        let pv_root = Loop::new(&d0, root_lv_offset, pz - (root_lv_offset - ps), true);
        let m = t.path().join("check");
        let _mnt = Mnt::new(&pv_root.0, &m, "ro,noload");
        let rd = |p: &str| std::fs::read_to_string(m.join(p)).unwrap_or_default();
        let f = rd("etc/fstab");
        assert!(f.contains(&format!("/dev/mapper/{vg}-root / ext4")), "{f}");
        assert!(
            f.contains(&format!("UUID={esp_uuid} /boot/efi vfat")),
            "{f}"
        );
        assert!(f.contains(&format!("/dev/{vg}/swap none swap")), "{f}");
        assert_eq!(rd("etc/netplan/50-cloud-init.yaml.ferry-orig"), NETPLAN);
        assert!(!m.join("etc/netplan/50-cloud-init.yaml").exists());
        let np = rd("etc/netplan/90-ferry.yaml");
        assert!(!np.contains("macaddress") && np.contains("enp0s3"), "{np}");
        assert_eq!(np.contains("192.0.2.20/24"), expect_static, "{np}");
        assert_eq!(np.contains("dhcp4: true"), !expect_static, "{np}");
        assert_eq!(
            rd("etc/ferry/orig/etc/NetworkManager/system-connections/Wired.nmconnection"),
            NM
        );
        let nm = rd("etc/NetworkManager/system-connections/ferry-enp0s3.nmconnection");
        assert!(
            !nm.contains("mac-address") && nm.contains("interface-name=enp0s3"),
            "{nm}"
        );
        assert_eq!(nm.contains("method=manual"), expect_static, "{nm}");
        assert!(rd("boot/grub/grub.cfg").contains("console=ttyS0,115200n8"));
    };
    check(false);
    {
        let esp = Loop::new(&d0, es, ez, true);
        let mtype = |p: &str| sh(&format!("MTOOLS_SKIP_CHECK=1 mtype -i {} ::{p}", esp.0));
        assert_eq!(mtype("/EFI/BOOT/BOOTX64.EFI"), "MZ fake grub loader");
        assert!(mtype("/EFI/BOOT/grub.cfg").contains("configfile"));
    }
    let h = hash(&d0);
    let r2 = adapt(&disks, &AdaptOptions::default()).await.unwrap();
    assert!(
        r2.changes.is_empty(),
        "second run changed: {:#?}",
        r2.changes
    );
    assert_eq!(h, hash(&d0));

    // The static settings stay on record and can be re-applied on the target NIC.
    let keep = AdaptOptions {
        network: NetworkMode::KeepStatic,
        ..AdaptOptions::default()
    };
    let r3 = adapt(&disks, &keep).await.unwrap();
    assert!(!changes_of(&r3, "network").is_empty());
    assert!(
        r3.changes.iter().all(|c| c.kind == "network"),
        "{:#?}",
        r3.changes
    );
    check(true);
    assert_eq!(
        sh(&format!("losetup -j {}", d0.display())),
        "",
        "a loop device was left attached"
    );
}

/// Disks with no Linux system: a distinguishable error, fast, and the files untouched.
#[tokio::test]
async fn no_linux_system_is_reported_quickly_and_changes_nothing() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let random = t.path().join("random.raw");
    let mut bytes = vec![0u8; 16 << 20];
    rand::Rng::fill(&mut rand::thread_rng(), &mut bytes[..]);
    // Random data that even looks like an MBR with a partition far beyond the end of the file.
    bytes[510] = 0x55;
    bytes[511] = 0xAA;
    std::fs::write(&random, &bytes).unwrap();
    let data_only = t.path().join("data.raw");
    let tree = t.path().join("tree");
    write(&tree, "srv/readme.txt", "just data\n");
    write(&tree, "etc/fstab", "# an fstab but no os-release\n");
    sh(&format!(
        "truncate -s 32M {0} && mkfs.ext4 -q -F -d {1} {0}",
        data_only.display(),
        tree.display()
    ));
    let garbage = t.path().join("garbage.raw");
    std::fs::write(&garbage, b"not a disk").unwrap();
    for disk in [&random, &data_only, &garbage] {
        let before = hash(disk);
        let started = Instant::now();
        let err = adapt(std::slice::from_ref(disk), &AdaptOptions::default())
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(err, AdaptError::NoOperatingSystem { .. }),
            "{}: {err}",
            disk.display()
        );
        assert!(err.to_string().contains("not adapted"), "{err}");
        assert!(
            took < Duration::from_secs(1),
            "{}: took {took:?}",
            disk.display()
        );
        assert!(matches!(
            detect(std::slice::from_ref(disk)).await.unwrap_err(),
            AdaptError::NoOperatingSystem { .. }
        ));
        assert_eq!(before, hash(disk), "{} changed", disk.display());
        assert_eq!(sh(&format!("losetup -j {}", disk.display())), "");
    }
    let missing = adapt(&[t.path().join("nope.raw")], &AdaptOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(missing, AdaptError::Io { .. }), "{missing}");
}

/// The probe on this host: a checks file through the env override, the console to a file, the report
/// over TCP to a loopback listener; both must be the documented JSON.
#[test]
fn probe_prints_and_sends_the_documented_report() {
    let t = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line
    });
    let checks = serde_json::json!({
        "version": 1, "token": "9f1c \"quoted\" \\ é\n", "report_to": format!("127.0.0.1:{port}"),
        "commands": [
            {"name": "says hello", "command": "printf 'hello \"x\"\\\\\\n\\t\\001'; exit 3", "expect_exit": 3, "expect_output": "hello"},
            {"name": "fails", "command": "false", "expect_exit": 0},
            {"name": "long output", "command": "head -c 10000 /dev/zero | tr '\\0' y"}
        ]
    });
    let checks_path = t.path().join("checks.json");
    std::fs::write(&checks_path, checks.to_string()).unwrap();
    let fstab = t.path().join("fstab");
    std::fs::write(
        &fstab,
        "# c\nUUID=x / ext4 defaults 0 1\n/dev/nope /does/not\\040exist xfs defaults 0 2\n/dev/sw none swap sw 0 0\n/dev/n /mnt/x ext4 noauto 0 0\nproc /proc proc defaults 0 0\n",
    )
    .unwrap();
    let console = t.path().join("console");
    let script = t.path().join("boot-report");
    std::fs::write(&script, BOOT_REPORT_SCRIPT).unwrap();
    let out = Command::new("bash")
        .arg(&script)
        .env("FERRY_BOOT_CHECKS", &checks_path)
        .env("FERRY_CONSOLE", &console)
        .env("FERRY_WAIT_SECS", "0")
        .env("FERRY_FSTAB", &fstab)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = std::fs::read_to_string(&console).unwrap();
    assert_eq!(line.lines().count(), 1, "{line}");
    let json = line
        .strip_prefix("FERRY-BOOT-REPORT/1 ")
        .expect("the console line has the marker");
    let r: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
    let sent: serde_json::Value =
        serde_json::from_str(receiver.join().unwrap().trim_end()).unwrap();
    assert_eq!(sent, r, "the TCP report is the console report");

    let fields: Vec<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let mut expected = vec![
        "version",
        "token",
        "kernel",
        "hostname",
        "system_state",
        "default_target",
        "default_target_reached",
        "failed_units",
        "interfaces",
        "dhcp_lease",
        "mounts",
        "commands",
        "uptime_secs",
    ];
    expected.sort();
    let mut got = fields.clone();
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(r["version"], 1);
    assert_eq!(r["token"], "9f1c \"quoted\" \\ é\n");
    assert!(r["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(r["default_target_reached"].is_boolean() && r["dhcp_lease"].is_boolean());
    assert!(r["failed_units"].is_array());
    assert!(r["uptime_secs"].as_f64().is_some_and(|u| u > 0.0));
    for i in r["interfaces"].as_array().unwrap() {
        assert!(
            i["name"].is_string()
                && i["mac"].is_string()
                && i["addresses"].is_array()
                && i["dhcp"].is_boolean()
        );
        assert_ne!(i["name"], "lo");
    }
    let mounts: HashMap<String, serde_json::Value> = r["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["mountpoint"].as_str().unwrap().to_string(), m.clone()))
        .collect();
    assert_eq!(
        mounts.len(),
        2,
        "swap, noauto and proc are not listed: {mounts:?}"
    );
    assert_eq!(mounts["/"]["mounted"], true);
    assert!(
        mounts["/"]["source"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(mounts["/does/not exist"]["mounted"], false);
    assert_eq!(mounts["/does/not exist"]["spec"], "/dev/nope");
    let c = r["commands"].as_array().unwrap();
    assert_eq!(c.len(), 3);
    assert_eq!(c[0]["name"], "says hello");
    assert_eq!(c[0]["exit_code"], 3);
    assert_eq!(c[0]["output"], "hello \"x\"\\\n\t\u{1}");
    assert_eq!(c[0]["passed"], true);
    assert_eq!(
        (c[1]["exit_code"].as_i64(), c[1]["passed"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(c[2]["output"].as_str().unwrap().len(), 4096);
    assert_eq!(c[2]["passed"], true);
    let _ = std::io::stdout().flush();
}

/// Kernel `6.1.0-r`'s initrd lacks virtio_blk and virtio_pci: adaptation lists them in
/// /etc/initramfs-tools/modules and runs update-initramfs in a chroot with /proc, /sys and /dev bound.
/// The guest here is not a full Debian (no kernel packages on this host to build one in a unit test), so
/// its `update-initramfs` is a stand-in script, run by a real bash copied in with its libraries; it
/// checks the configuration and the bind mounts, then installs an initrd with the modules. Real
/// initramfs-tools run in the lab images' end-to-end tests. The filesystem is on the whole disk (no
/// partition table).
#[tokio::test]
async fn regenerates_an_initramfs_missing_virtio_in_a_chroot() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    write(
        &tree,
        "etc/os-release",
        "PRETTY_NAME=\"Chroot Linux\"\nID=debian\n",
    );
    write(&tree, "etc/fstab", "LABEL=root / ext4 defaults 0 1\n");
    write(&tree, "etc/initramfs-tools/modules", "# List of modules\n");
    // Static ifupdown and no DHCP client, but systemd-networkd: DHCP moves to networkd.
    write(&tree, "etc/network/interfaces", IFACES);
    write(&tree, "lib/systemd/systemd-networkd", "");
    write(
        &tree,
        "lib/systemd/system/systemd-networkd.service",
        "[Unit]\n",
    );
    write(
        &tree,
        "lib/modules/6.1.0-r/modules.builtin",
        "kernel/drivers/virtio/virtio.ko\n",
    );
    std::fs::create_dir_all(tree.join("boot")).unwrap();
    std::fs::write(
        tree.join("boot/initrd.img-6.1.0-r"),
        newc(&["init", "usr/lib/modules/6.1.0-r/kernel/fs/ext4/ext4.ko"]),
    )
    .unwrap();
    std::fs::create_dir_all(tree.join("usr/share/fake")).unwrap();
    std::fs::write(
        tree.join("usr/share/fake/initrd-virtio"),
        newc(&[
            "init",
            "usr/lib/modules/6.1.0-r/kernel/drivers/block/virtio_blk.ko",
            "usr/lib/modules/6.1.0-r/kernel/drivers/virtio/virtio_pci.ko",
        ]),
    )
    .unwrap();
    for d in ["proc", "sys", "dev"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    let ldd = sh("ldd /bin/bash /bin/cp");
    let mut libs: Vec<&str> = ldd
        .split_whitespace()
        .filter(|w| w.starts_with('/') && !w.ends_with(':'))
        .collect();
    libs.sort();
    libs.dedup();
    for f in libs.into_iter().chain(["/bin/bash", "/bin/cp"]) {
        let dst = tree.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(std::fs::canonicalize(f).unwrap(), &dst).unwrap();
    }
    write(
        &tree,
        "usr/sbin/update-initramfs",
        "#!/bin/bash\nset -e\n[[ $1 == -u && $2 == -k ]]\nok=0\nwhile read -r l; do [[ $l == virtio_blk ]] && ok=1; done </etc/initramfs-tools/modules\n[[ $ok == 1 ]] || { echo 'virtio_blk is not configured' >&2; exit 1; }\n[[ -r /proc/self/mounts && -c /dev/null && -d /sys/class ]] || { echo 'no /proc, /sys or /dev' >&2; exit 1; }\ncp /usr/share/fake/initrd-virtio \"/boot/initrd.img-$3\"\n",
    );
    std::fs::set_permissions(
        tree.join("usr/sbin/update-initramfs"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let disk = t.path().join("whole.raw");
    sh(&format!(
        "truncate -s 64M {0} && mkfs.ext4 -q -F -L root -d {1} {0}",
        disk.display(),
        tree.display()
    ));
    let disks = vec![disk.clone()];
    let r = adapt(&disks, &AdaptOptions::default()).await.unwrap();
    assert_eq!(r.root, "disk0");
    let init = changes_of(&r, "initramfs");
    assert_eq!(
        init,
        vec!["/etc/initramfs-tools/modules", "/boot/initrd.img-6.1.0-r"],
        "{:#?}",
        r.changes
    );
    let detail = &r
        .changes
        .iter()
        .find(|c| c.path == "/boot/initrd.img-6.1.0-r")
        .unwrap()
        .detail;
    assert!(detail.contains("virtio_pci, virtio_blk"), "{detail}");
    {
        let l = Loop::new(&disk, 0, 64 << 20, true);
        let m = t.path().join("m");
        let _mnt = Mnt::new(&l.0, &m, "ro,noload");
        let mods = std::fs::read_to_string(m.join("etc/initramfs-tools/modules")).unwrap();
        assert!(
            mods.contains("\nvirtio_pci\nvirtio_blk\nvirtio_scsi\nvirtio_net\n"),
            "{mods}"
        );
        assert_eq!(
            std::fs::read(m.join("boot/initrd.img-6.1.0-r")).unwrap(),
            std::fs::read(tree.join("usr/share/fake/initrd-virtio")).unwrap()
        );
        assert!(
            !m.join("proc/self").exists(),
            "/proc is still bound in the guest"
        );
        let ifaces = std::fs::read_to_string(m.join("etc/network/interfaces")).unwrap();
        assert!(
            ifaces.contains("iface lo inet loopback")
                && !ifaces.contains("ens18")
                && !ifaces.contains("enp0s3"),
            "{ifaces}"
        );
        let nd = std::fs::read_to_string(m.join("etc/systemd/network/90-ferry.network")).unwrap();
        assert!(
            nd.contains("Name=enp0s3 eth0 ens3") && nd.contains("DHCP=yes"),
            "{nd}"
        );
        assert_eq!(
            std::fs::read_link(
                m.join("etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
            )
            .unwrap(),
            Path::new("/lib/systemd/system/systemd-networkd.service")
        );
    }
    let h = hash(&disk);
    let r2 = adapt(&disks, &AdaptOptions::default()).await.unwrap();
    assert!(r2.changes.is_empty(), "{:#?}", r2.changes);
    assert_eq!(h, hash(&disk));
    assert_eq!(sh(&format!("losetup -j {}", disk.display())), "");
}

/// Adapts real images given in `FERRY_ADAPT_IMAGES` (comma-separated raw files, system disk first; they
/// are changed in place: pass copies), prints the report, and checks a second run changes nothing. Used
/// by hand on the lab's Debian images; skipped when the variable is unset.
#[tokio::test]
async fn adapts_images_from_the_environment() {
    let Ok(list) = std::env::var("FERRY_ADAPT_IMAGES") else {
        eprintln!("skipped: set FERRY_ADAPT_IMAGES=copy0.raw[,copy1.raw] to adapt real images");
        return;
    };
    if !is_root() {
        return;
    }
    let disks: Vec<PathBuf> = list.split(',').map(PathBuf::from).collect();
    let info = detect(&disks).await.unwrap();
    eprintln!("detect: {}", serde_json::to_string_pretty(&info).unwrap());
    let started = Instant::now();
    let r = adapt(&disks, &AdaptOptions::default()).await.unwrap();
    eprintln!(
        "adapt ({:?}): {}",
        started.elapsed(),
        serde_json::to_string_pretty(&r).unwrap()
    );
    let hashes: Vec<String> = disks.iter().map(|d| hash(d)).collect();
    let started = Instant::now();
    let r2 = adapt(&disks, &AdaptOptions::default()).await.unwrap();
    eprintln!("second adapt: {:?}", started.elapsed());
    assert!(r2.changes.is_empty(), "{:#?}", r2.changes);
    assert_eq!(hashes, disks.iter().map(|d| hash(d)).collect::<Vec<_>>());
}

/// An LV striped over two PVs cannot be read as one offset range: a clear Unsupported error, and the
/// image file unchanged.
#[tokio::test]
async fn striped_lv_is_unsupported() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d0 = t.path().join("disk0.raw");
    sh(&format!(
        "truncate -s 64M {0} && printf 'label: gpt\\n,28M,L\\n,28M,L\\n' | sfdisk -q {0}",
        d0.display()
    ));
    let vg = format!("ferrystripe{}", std::process::id());
    {
        let parts = partitions(&d0);
        let a = Loop::new(&d0, parts[0].0, parts[0].1, false);
        let b = Loop::new(&d0, parts[1].0, parts[1].1, false);
        let cfg = lvm_config(&[&a.0, &b.0]);
        sh(&format!("pvcreate -q -y {cfg} {} {}", a.0, b.0));
        sh(&format!("vgcreate -q {cfg} {vg} {} {}", a.0, b.0));
        sh(&format!(
            "lvcreate -q --driverloaded n -an -Zn -y {cfg} -i 2 -L 16M -n data {vg}"
        ));
    }
    let before = hash(&d0);
    let err = adapt(std::slice::from_ref(&d0), &AdaptOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, AdaptError::Unsupported { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{vg}/data")) && msg.contains("2 stripe"),
        "{msg}"
    );
    assert_eq!(before, hash(&d0));
    assert_eq!(sh(&format!("losetup -j {}", d0.display())), "");
}
