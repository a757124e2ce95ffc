//! Building a variant's disk images from the base tarball: partition, format (LVM metadata without
//! device-mapper: the LV is written through a loop device at its linear offset), unpack the base,
//! configure the server (hostname, static network, serial console, fstab, marker, fake agent, data
//! file), then regenerate the initramfs and install GRUB in a chroot that has its own /dev.
//!
//! Published layout (`docs/lab.md`): `<cache>/<variant>-<key>/{sda.raw,sdb.raw,facts.json}`, where the
//! key hashes [`VARIANT_RECIPE_VERSION`] and the base tarball's name. The directory is built as
//! `.<variant>-<key>.tmp` and renamed when complete.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::sys::{self, BuildLock, LoopDisk, LoopRange, Mounts, TempPath};
use super::{LabFacts, LabServer, LabVariant, base};

/// Bump when anything a variant's image contains changes: the cache key includes it.
pub const VARIANT_RECIPE_VERSION: &str = "variant-v2";
/// Version marker of `facts.json`.
pub const FACTS_FORMAT: &str = "ferry-lab-facts/1";

const MIB: u64 = 1 << 20;
const SYSTEM_DISK: u64 = 2048 * MIB;
const DATA_DISK: u64 = 512 * MIB;
const DATA_LEN: usize = 4 * MIB as usize;
const ESP_MIB: u64 = 128;
const BOOT_MIB: u64 = 256;
/// The NIC name the source hardware (q35, e1000 at PCI slot 3 of the root bus) gives the interface.
pub const NIC_NAME: &str = "enp0s3";
pub const STATIC_ADDRESS: &str = "192.0.2.10/24";
pub const GATEWAY: &str = "192.0.2.1";
pub const DNS: &str = "192.0.2.53";
const LVM_VG: &str = "labvg";
const LVM_LV: &str = "root";

#[derive(Serialize, Deserialize)]
struct FactsFile {
    format: String,
    variant: LabVariant,
    facts: LabFacts,
}

fn variant_dir(cache: &Path, variant: LabVariant, base_tar: &Path) -> PathBuf {
    let base_name = base_tar
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let key = sys::short_hash(&[VARIANT_RECIPE_VERSION, &base_name, variant.as_str()]);
    cache.join(format!("{variant}-{key}"))
}

fn disk_names(variant: LabVariant) -> &'static [&'static str] {
    if variant == LabVariant::DataDisk {
        &["sda.raw", "sdb.raw"]
    } else {
        &["sda.raw"]
    }
}

fn boot_mode(variant: LabVariant) -> &'static str {
    if variant.is_uefi() { "UEFI" } else { "BIOS" }
}

fn load(dir: &Path, variant: LabVariant) -> anyhow::Result<LabServer> {
    let path = dir.join("facts.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let f: FactsFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is damaged: delete {} to rebuild it",
            path.display(),
            dir.display()
        )
    })?;
    if f.format != FACTS_FORMAT || f.variant != variant {
        bail!(
            "{} is not a {FACTS_FORMAT} file for {variant}: delete {} to rebuild it",
            path.display(),
            dir.display()
        );
    }
    let mut facts = f.facts;
    facts.boot_mode = boot_mode(variant);
    Ok(LabServer {
        variant,
        disks: disk_names(variant).iter().map(|n| dir.join(n)).collect(),
        facts,
    })
}

/// The variant's images from the cache, built first (under a lock) when missing.
pub fn build_cached(variant: LabVariant) -> anyhow::Result<LabServer> {
    if !crate::is_root() {
        bail!("building the lab needs root (loop devices, mounts, chroot): run as root");
    }
    let cache = super::cache_dir();
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("cannot create the lab cache {}", cache.display()))?;
    let base_tar = base::base_tarball(&cache)?;
    let dir = variant_dir(&cache, variant, &base_tar);
    if dir.join("facts.json").exists() {
        return load(&dir, variant);
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _lock = BuildLock::acquire(&cache.join(format!(".{name}.lock")))?;
    if dir.join("facts.json").exists() {
        return load(&dir, variant);
    }
    let t0 = Instant::now();
    let tmp = TempPath::new(cache.join(format!(".{name}.tmp")));
    if tmp.path.exists() && !sys::has_mounts_under(&tmp.path) {
        std::fs::remove_dir_all(&tmp.path).ok();
    }
    std::fs::create_dir_all(&tmp.path)?;
    let facts = build_variant(variant, &base_tar, &tmp.path)
        .with_context(|| format!("building the lab variant {variant} failed"))?;
    let file = FactsFile {
        format: FACTS_FORMAT.into(),
        variant,
        facts,
    };
    std::fs::write(
        tmp.path.join("facts.json"),
        serde_json::to_vec_pretty(&file)?,
    )?;
    std::fs::rename(&tmp.path, &dir)
        .with_context(|| format!("cannot publish {}", dir.display()))?;
    let _ = tmp.keep();
    eprintln!("lab: {variant} built in {:.0?}", t0.elapsed());
    load(&dir, variant)
}

/// Partition starts and sizes (bytes) of an image, from `sfdisk -J`.
pub fn partitions(image: &Path) -> anyhow::Result<Vec<(u64, u64)>> {
    let json = sys::run("sfdisk", &["-J", &image.display().to_string()])?;
    let v: serde_json::Value =
        serde_json::from_str(&json).context("sfdisk -J printed something that is not JSON")?;
    let sector = v["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
    let parts = v["partitiontable"]["partitions"]
        .as_array()
        .with_context(|| format!("{} has no partition table", image.display()))?
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap_or(0) * sector,
                p["size"].as_u64().unwrap_or(0) * sector,
            )
        })
        .collect();
    Ok(parts)
}

fn create_image(path: &Path, size: u64, table: &str) -> anyhow::Result<()> {
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.set_len(size)?;
    drop(f);
    sys::run_input("sfdisk", &["--quiet", &path.display().to_string()], table)?;
    Ok(())
}

fn uuid_of(dev: &str) -> anyhow::Result<String> {
    let u = sys::run("blkid", &["-p", "-s", "UUID", "-o", "value", dev])
        .or_else(|_| sys::run("blkid", &["-s", "UUID", "-o", "value", dev]))?;
    let u = u.trim().to_owned();
    if u.is_empty() {
        bail!("blkid found no filesystem UUID on {dev}");
    }
    Ok(u)
}

/// The `lvm` configuration for the host: no udev, no device-mapper, only `dev`, no backups in /etc/lvm.
fn lvm_config(dev: &str) -> String {
    format!(
        "devices {{ obtain_device_list_from_udev=0 use_devicesfile=0 filter=[\"a|^{dev}$|\",\"r|.*|\"] }} \
         activation {{ udev_sync=0 udev_rules=0 }} backup {{ backup=0 archive=0 }}"
    )
}

/// Byte offset and size of the LV `labvg/root` inside the PV on `pv_dev` (a single linear segment).
fn lv_extent(pv_dev: &str) -> anyhow::Result<(u64, u64)> {
    let cfg = lvm_config(pv_dev);
    let pe_start = sys::run(
        "pvs",
        &[
            "--config",
            &cfg,
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "pe_start",
            pv_dev,
        ],
    )?;
    let pe_start: u64 = pe_start
        .trim()
        .parse()
        .with_context(|| format!("pvs printed no pe_start for {pv_dev}: {pe_start:?}"))?;
    let lv = format!("{LVM_VG}/{LVM_LV}");
    let out = sys::run(
        "lvs",
        &[
            "--config",
            &cfg,
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "--segments",
            "-o",
            "seg_pe_ranges,vg_extent_size",
            &lv,
        ],
    )?;
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    let [line] = lines.as_slice() else {
        bail!(
            "{lv} has {} segments; the lab writes only single-segment linear LVs",
            lines.len()
        );
    };
    let mut w = line.split_whitespace();
    let (Some(ranges), Some(ext)) = (w.next(), w.next()) else {
        bail!("unexpected lvs output for {lv}: {line:?}");
    };
    let ext: u64 = ext
        .parse()
        .with_context(|| format!("bad extent size {ext:?}"))?;
    let range = ranges
        .rsplit_once(':')
        .map(|(_, r)| r)
        .with_context(|| format!("unexpected PE range {ranges:?}"))?;
    let (a, b) = range
        .split_once('-')
        .with_context(|| format!("unexpected PE range {range:?}"))?;
    let (a, b): (u64, u64) = (a.parse()?, b.parse()?);
    Ok((pe_start + a * ext, (b - a + 1) * ext))
}

/// A file to write into the image.
fn write(root: &Path, guest: &str, content: &str, mode: u32) -> anyhow::Result<()> {
    let p = root.join(guest.trim_start_matches('/'));
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&p, content).with_context(|| format!("cannot write {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Copies the host's device nodes `devs` into the chroot's private /dev, with `/dev/disk/by-uuid` links.
fn populate_dev(root: &Path, devs: &[&str], uuids: &[(String, String)]) -> anyhow::Result<()> {
    let dev = root.join("dev");
    for d in [
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "console",
        "loop-control",
    ]
    .iter()
    .map(|n| format!("/dev/{n}"))
    .chain(devs.iter().map(|d| d.to_string()))
    {
        sys::run("cp", &["-a", &d, &dev.display().to_string()])?;
    }
    std::fs::create_dir_all(dev.join("pts"))?;
    std::fs::create_dir_all(dev.join("shm"))?;
    let by_uuid = dev.join("disk/by-uuid");
    std::fs::create_dir_all(&by_uuid)?;
    for (uuid, node) in uuids {
        let name = node.trim_start_matches("/dev/");
        std::os::unix::fs::symlink(format!("../../{name}"), by_uuid.join(uuid))?;
    }
    Ok(())
}

fn build_variant(variant: LabVariant, base_tar: &Path, out: &Path) -> anyhow::Result<LabFacts> {
    let sda = out.join("sda.raw");
    let table = match variant {
        LabVariant::Bios | LabVariant::DataDisk => {
            "label: dos\nstart=2048, type=83, bootable\n".to_owned()
        }
        LabVariant::Uefi => format!(
            "label: gpt\nstart=2048, size={}, type=U, name=\"EFI system partition\"\ntype=L, name=root\n",
            ESP_MIB * MIB / 512
        ),
        LabVariant::Lvm => format!(
            "label: dos\nstart=2048, size={}, type=83, bootable\ntype=8e\n",
            BOOT_MIB * MIB / 512
        ),
    };
    create_image(&sda, SYSTEM_DISK, &table)?;
    let parts = partitions(&sda)?;
    let disk = LoopDisk::attach(&sda)?;
    let mut chroot_devs: Vec<String> = vec![disk.dev.clone()];
    let mut uuids: Vec<(String, String)> = Vec::new();
    // (root device, /boot device, /boot/efi device)
    let mut lv_loop: Option<LoopRange> = None;
    let (root_dev, boot_dev, esp_dev) = match variant {
        LabVariant::Bios | LabVariant::DataDisk => (disk.part(1), None, None),
        LabVariant::Uefi => (disk.part(2), None, Some(disk.part(1))),
        LabVariant::Lvm => {
            let pv = disk.part(2);
            let cfg = lvm_config(&pv);
            sys::run("pvcreate", &["--config", &cfg, "-ff", "-y", &pv])?;
            sys::run("vgcreate", &["--config", &cfg, LVM_VG, &pv])?;
            sys::run(
                "lvcreate",
                &[
                    "--config",
                    &cfg,
                    "--driverloaded",
                    "n",
                    "-an",
                    "-Zn",
                    "-Wn",
                    "-y",
                    "-l",
                    "100%FREE",
                    "-n",
                    LVM_LV,
                    LVM_VG,
                ],
            )?;
            let (off, size) = lv_extent(&pv)?;
            let (p2_start, _) = parts.get(1).copied().context("no partition 2")?;
            let lo = LoopRange::attach(&sda, p2_start + off, size)?;
            let dev = lo.dev.clone();
            lv_loop = Some(lo);
            (dev, Some(disk.part(1)), None)
        }
    };
    sys::run("mkfs.ext4", &["-q", "-F", "-L", "lab-root", &root_dev])?;
    chroot_devs.push(root_dev.clone());
    uuids.push((uuid_of(&root_dev)?, root_dev.clone()));
    if let Some(b) = &boot_dev {
        sys::run("mkfs.ext4", &["-q", "-F", "-L", "lab-boot", b])?;
        chroot_devs.push(b.clone());
        uuids.push((uuid_of(b)?, b.clone()));
    }
    if let Some(e) = &esp_dev {
        sys::run("mkfs.vfat", &["-F", "32", "-n", "LAB-ESP", e])?;
        chroot_devs.push(e.clone());
        uuids.push((uuid_of(e)?, e.clone()));
    }
    // The data disk of variant d.
    let mut data_disk: Option<(LoopDisk, String)> = None;
    if variant == LabVariant::DataDisk {
        let sdb = out.join("sdb.raw");
        create_image(&sdb, DATA_DISK, "label: dos\nstart=2048, type=83\n")?;
        let d = LoopDisk::attach(&sdb)?;
        let p = d.part(1);
        sys::run("mkfs.xfs", &["-q", "-f", "-L", "lab-data", &p])?;
        data_disk = Some((d, p));
    }

    let mnt = out.join("mnt");
    let root = mnt.as_path();
    let mut mounts = Mounts::default();
    mounts.mount(&[], &root_dev, root)?;
    if let Some(b) = &boot_dev {
        mounts.mount(&[], b, &root.join("boot"))?;
    }
    // The ESP is not mounted: this host's kernel has no vfat. Its files are written with mtools below.
    if let Some((_, p)) = &data_disk {
        mounts.mount(&[], p, &root.join("srv/lab"))?;
    }
    sys::run(
        "tar",
        &[
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "-xpf",
            &base_tar.display().to_string(),
            "-C",
            &root.display().to_string(),
        ],
    )?;

    if esp_dev.is_some() {
        std::fs::create_dir_all(root.join("boot/efi"))?;
    }
    let facts = configure(variant, root, &uuids, &root_dev, &boot_dev, &esp_dev)?;

    // The chroot: proc, sys, and its own /dev with the nodes and by-uuid links grub needs.
    mounts.mount(&["-t", "proc"], "proc", &root.join("proc"))?;
    mounts.mount(&["-t", "sysfs"], "sysfs", &root.join("sys"))?;
    mounts.mount(
        &["-t", "tmpfs", "-o", "mode=0755"],
        "labdev",
        &root.join("dev"),
    )?;
    let devs: Vec<&str> = chroot_devs.iter().map(String::as_str).collect();
    populate_dev(root, &devs, &uuids)?;
    if variant == LabVariant::Lvm {
        // The initramfs hook looks for the root device; give it the name the guest will use.
        std::fs::create_dir_all(root.join("dev/mapper"))?;
        std::os::unix::fs::symlink(
            format!("../{}", root_dev.trim_start_matches("/dev/")),
            root.join("dev/mapper/labvg-root"),
        )?;
    }
    sys::chroot(root, "update-initramfs -u -k all")?;
    match (variant, &esp_dev) {
        (LabVariant::Uefi, Some(esp)) => install_grub_efi(root, esp, &uuid_of(&root_dev)?)?,
        _ => {
            sys::chroot(root, &format!("grub-install --target=i386-pc {}", disk.dev))?;
        }
    };
    if variant == LabVariant::Lvm {
        // On the host the root is a plain loop device (no device-mapper), for which grub-mkconfig's
        // 10_linux writes no entry at all. Write the entry a Debian install on LVM gets: /boot by UUID,
        // root=/dev/mapper/labvg-root. A later update-grub inside the guest regenerates the same.
        sys::chroot(root, "update-grub")?;
        let boot_uuid = uuid_of(
            boot_dev
                .as_deref()
                .context("the lvm variant has no /boot")?,
        )?;
        let cfg_path = root.join("boot/grub/grub.cfg");
        let cfg = std::fs::read_to_string(&cfg_path)?;
        let entries = lvm_menu_entries(root, &boot_uuid)?;
        let anchor = "### BEGIN /etc/grub.d/10_linux ###\n";
        let Some(at) = cfg.find(anchor) else {
            bail!("grub.cfg has no 10_linux section to put the LVM entry in");
        };
        let at = at + anchor.len();
        let fixed = format!("{}{entries}{}", &cfg[..at], &cfg[at..]);
        std::fs::write(&cfg_path, fixed)?;
    } else {
        sys::chroot(root, "update-grub")?;
        let cfg = std::fs::read_to_string(root.join("boot/grub/grub.cfg"))?;
        if cfg.contains("root=/dev/loop") {
            bail!("grub.cfg names a host loop device as root: the by-uuid links were not seen");
        }
    }
    mounts.unmount_all()?;
    drop(lv_loop);
    drop(data_disk);
    drop(disk);
    std::fs::remove_dir(&mnt).ok();
    Ok(facts)
}

/// GRUB menu entries for the kernels in `<root>/boot`, newest first, for the LVM variant.
fn lvm_menu_entries(root: &Path, boot_uuid: &str) -> anyhow::Result<String> {
    let mut versions: Vec<String> = std::fs::read_dir(root.join("boot"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("vmlinuz-").map(String::from)
        })
        .collect();
    versions.sort();
    versions.reverse();
    if versions.is_empty() {
        bail!("no kernel in /boot: the base tarball lacks linux-image-amd64");
    }
    let mut out = String::new();
    for v in versions {
        out += &format!(
            "menuentry 'Debian GNU/Linux, with Linux {v}' --class debian --class gnu-linux --class os {{\n\
             \tinsmod gzio\n\tinsmod part_msdos\n\tinsmod ext2\n\
             \tsearch --no-floppy --fs-uuid --set=root {boot_uuid}\n\
             \techo 'Loading Linux {v} ...'\n\
             \tlinux /vmlinuz-{v} root=/dev/mapper/{LVM_VG}-{LVM_LV} ro console=tty0 console=ttyS0,115200\n\
             \techo 'Loading initial ramdisk ...'\n\tinitrd /initrd.img-{v}\n}}\n"
        );
    }
    Ok(out)
}

/// What `grub-install --target=x86_64-efi --efi-directory=/boot/efi --bootloader-id=debian --no-nvram`
/// does, done by hand because grub-install insists on a mounted FAT ESP and this host's kernel has no
/// vfat: the modules go to /boot/grub/x86_64-efi, the core image (which finds /boot/grub by the root
/// filesystem's UUID) is made with grub-mkimage and written to `\EFI\debian\grubx64.efi` with mtools.
/// Like a real server's, the ESP has no removable-media fallback (`\EFI\BOOT\BOOTX64.EFI`).
fn install_grub_efi(root: &Path, esp: &str, root_uuid: &str) -> anyhow::Result<()> {
    sys::chroot(
        root,
        &format!(
            "mkdir -p /boot/grub/x86_64-efi
             cp /usr/lib/grub/x86_64-efi/*.mod /usr/lib/grub/x86_64-efi/*.lst /boot/grub/x86_64-efi/
             printf 'search.fs_uuid {root_uuid} root\nset prefix=($root)/boot/grub\n' > /tmp/load.cfg
             grub-mkimage -O x86_64-efi -o /tmp/grubx64.efi -p /boot/grub -c /tmp/load.cfg              part_gpt part_msdos fat ext2 search search_fs_uuid normal configfile
             rm /tmp/load.cfg"
        ),
    )?;
    let efi = root.join("tmp/grubx64.efi");
    let efi_s = efi.display().to_string();
    sys::run("mmd", &["-i", esp, "::/EFI", "::/EFI/debian"])?;
    sys::run("mcopy", &["-i", esp, &efi_s, "::/EFI/debian/grubx64.efi"])?;
    std::fs::remove_file(&efi)?;
    Ok(())
}

/// Writes the server's configuration into the unpacked tree; returns the facts.
fn configure(
    variant: LabVariant,
    root: &Path,
    uuids: &[(String, String)],
    root_dev: &str,
    boot_dev: &Option<String>,
    esp_dev: &Option<String>,
) -> anyhow::Result<LabFacts> {
    let uuid = |dev: &str| -> anyhow::Result<String> {
        uuids
            .iter()
            .find(|(_, d)| d == dev)
            .map(|(u, _)| u.clone())
            .with_context(|| format!("no UUID recorded for {dev}"))
    };
    let hostname = format!("lab-{variant}");
    write(root, "/etc/hostname", &format!("{hostname}\n"), 0o644)?;
    write(
        root,
        "/etc/hosts",
        &format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        ),
        0o644,
    )?;
    write(
        root,
        "/etc/network/interfaces",
        &format!(
            "# Static configuration, as on the on-premises server (written by the Ferry lab).\n\
             source /etc/network/interfaces.d/*\n\n\
             auto lo\niface lo inet loopback\n\n\
             auto {NIC_NAME}\niface {NIC_NAME} inet static\n    address {STATIC_ADDRESS}\n    \
             gateway {GATEWAY}\n    dns-nameservers {DNS}\n"
        ),
        0o644,
    )?;
    write(
        root,
        "/etc/resolv.conf",
        &format!("nameserver {DNS}\n"),
        0o644,
    )?;
    let mut fstab = String::from("# <file system> <mount point> <type> <options> <dump> <pass>\n");
    match variant {
        LabVariant::Lvm => {
            fstab += &format!("/dev/mapper/{LVM_VG}-{LVM_LV} / ext4 errors=remount-ro 0 1\n");
        }
        _ => fstab += &format!("UUID={} / ext4 errors=remount-ro 0 1\n", uuid(root_dev)?),
    }
    if let Some(b) = boot_dev {
        fstab += &format!("UUID={} /boot ext4 defaults 0 2\n", uuid(b)?);
    }
    if let Some(e) = esp_dev {
        fstab += &format!("UUID={} /boot/efi vfat umask=0077 0 1\n", uuid(e)?);
    }
    if variant == LabVariant::DataDisk {
        // By device name, as many old servers have it: breaks on virtio (vda) unless adapted.
        fstab += "/dev/sdb1 /srv/lab xfs defaults 0 2\n";
    }
    write(root, "/etc/fstab", &fstab, 0o644)?;
    write(
        root,
        "/etc/default/grub",
        "GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\n\
         GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n\
         GRUB_CMDLINE_LINUX_DEFAULT=\"\"\n\
         GRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200\"\n\
         GRUB_TERMINAL=\"serial console\"\n\
         GRUB_SERIAL_COMMAND=\"serial --unit=0 --speed=115200\"\n",
        0o644,
    )?;

    // sd's probing is asynchronous: when sd_mod loads after both SATA disks exist, sda and sdb can swap
    // from boot to boot (seen here: the 512 MiB data disk became sda). Registering the driver before
    // the controller's disks appear names them in port order far more often, as the fstab of variant d
    // needs; not always (each disk's probe is still asynchronous), so the boot check recognises a swap
    // and boots again (`boot.rs`, `boot`).
    write(
        root,
        "/etc/initramfs-tools/scripts/init-top/0ferry-lab-sd",
        "#!/bin/sh\nPREREQ=\"\"\nprereqs() { echo \"$PREREQ\"; }\n\
         case $1 in prereqs) prereqs; exit 0;; esac\n\
         # Ferry lab: load sd_mod before udev finds the disks, so they are named in SATA port order.\n\
         modprobe -q sd_mod || true\n",
        0o755,
    )?;
    write(
        root,
        "/etc/initramfs-tools/modules",
        "# Ferry lab: see scripts/init-top/0ferry-lab-sd.\nsd_mod\n",
        0o644,
    )?;

    // The marker service.
    let marker = format!("FERRY-LAB-MARKER {variant} {hostname}");
    write(
        root,
        "/usr/local/sbin/ferry-lab-marker",
        &format!(
            "#!/bin/sh\n# Prints the lab's boot marker on the serial console and in the journal.\n\
             line=\"FERRY-LAB-MARKER {variant} $(hostname)\"\n\
             echo \"$line\" > /dev/ttyS0 || true\necho \"$line\"\n"
        ),
        0o755,
    )?;
    write(
        root,
        "/etc/systemd/system/ferry-lab-marker.service",
        "[Unit]\nDescription=Ferry lab boot marker\nAfter=multi-user.target\n\n\
         [Service]\nType=oneshot\nExecStart=/usr/local/sbin/ferry-lab-marker\n\
         StandardOutput=journal\n\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    )?;
    // The fake Ferry agent, which adaptation must remove.
    write(
        root,
        "/usr/local/bin/ferry-agent",
        "#!/bin/sh\n# A FAKE Ferry agent installed by the Ferry lab: guest adaptation must remove it.\n\
         echo \"ferry-agent (lab fake) $*: state in /var/lib/ferry-agent\"\nexec sleep infinity\n",
        0o755,
    )?;
    write(
        root,
        "/etc/systemd/system/ferry-agent.service",
        "[Unit]\nDescription=Ferry agent (lab fake)\nAfter=network.target\n\n\
         [Service]\nExecStart=/usr/local/bin/ferry-agent run --state-dir /var/lib/ferry-agent\n\
         Restart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    )?;
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants)?;
    for unit in ["ferry-lab-marker.service", "ferry-agent.service"] {
        std::os::unix::fs::symlink(format!("/etc/systemd/system/{unit}"), wants.join(unit))?;
    }
    write(
        root,
        "/var/lib/ferry-agent/credentials.json",
        &format!(
            "{{\"format\":\"ferry-lab-fake/1\",\"source_id\":\"s-lab{variant}\",\
             \"access_key\":\"FAKE-LAB-KEY\",\"server\":\"https://{GATEWAY}:8443\"}}\n"
        ),
        0o600,
    )?;
    write(
        root,
        "/var/lib/ferry-agent/state.json",
        "{\"format\":\"ferry-lab-fake/1\",\"last_run\":null}\n",
        0o644,
    )?;
    std::fs::set_permissions(
        root.join("var/lib/ferry-agent"),
        std::fs::Permissions::from_mode(0o700),
    )?;

    // The data file: deterministic, different per variant.
    let seed = 0x1ab0_0000
        + LabVariant::ALL
            .iter()
            .position(|v| *v == variant)
            .unwrap_or(0) as u64;
    let data = crate::disk::random_bytes(seed, DATA_LEN);
    let data_file = "/srv/lab/data.bin";
    let p = root.join(data_file.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().context("data file has no parent")?)?;
    std::fs::write(&p, &data)?;
    let data_sha256 = sys::hex(&sha2::Sha256::digest(&data));

    let mut source_devices = vec!["/dev/sda".to_owned()];
    if variant == LabVariant::DataDisk {
        source_devices.push("/dev/sdb".to_owned());
    }
    Ok(LabFacts {
        hostname,
        marker,
        nic_name: NIC_NAME.into(),
        static_address: STATIC_ADDRESS.into(),
        gateway: GATEWAY.into(),
        data_file: data_file.into(),
        data_sha256,
        boot_mode: boot_mode(variant),
        source_devices,
    })
}

/// The filesystem of a lab disk that holds `guest_path`: (byte offset, size, path inside that filesystem).
fn locate(
    disk: &Path,
    variant: LabVariant,
    guest_path: &str,
) -> anyhow::Result<(u64, u64, String)> {
    if !guest_path.starts_with('/') || guest_path.split('/').any(|c| c == "..") {
        bail!("guest path {guest_path:?} must be absolute and without `..`");
    }
    let parts = partitions(disk)?;
    if variant == LabVariant::DataDisk
        && (guest_path == "/srv/lab" || guest_path.starts_with("/srv/lab/"))
    {
        if parts.len() != 1 {
            bail!(
                "{guest_path} is on the data disk, but {} is not it: pass the data disk (the second one)",
                disk.display()
            );
        }
        let (start, size) = parts[0];
        return Ok((start, size, guest_path["/srv/lab".len()..].to_owned()));
    }
    let wrong = || {
        anyhow::anyhow!(
            "{} does not have the {variant} variant's system disk layout (pass the system disk)",
            disk.display()
        )
    };
    let (start, size) = match variant {
        LabVariant::Bios | LabVariant::DataDisk => parts.first().copied().ok_or_else(wrong)?,
        LabVariant::Uefi => {
            if guest_path == "/boot/efi" || guest_path.starts_with("/boot/efi/") {
                let (s, z) = parts.first().copied().ok_or_else(wrong)?;
                return Ok((s, z, guest_path["/boot/efi".len()..].to_owned()));
            }
            parts.get(1).copied().ok_or_else(wrong)?
        }
        LabVariant::Lvm => {
            if guest_path == "/boot" || guest_path.starts_with("/boot/") {
                let (s, z) = parts.first().copied().ok_or_else(wrong)?;
                return Ok((s, z, guest_path["/boot".len()..].to_owned()));
            }
            let (p2, p2_size) = parts.get(1).copied().ok_or_else(wrong)?;
            let pv = LoopRange::attach_ro(disk, p2, p2_size)?;
            let (off, size) = lv_extent(&pv.dev)?;
            (p2 + off, size)
        }
    };
    Ok((start, size, guest_path.to_owned()))
}

/// A lab filesystem mounted from a disk image through a loop device; unmounted and detached on drop.
pub struct MountedFs {
    mounts: Mounts,
    dir: tempfile::TempDir,
    rel: String,
    _loop: LoopRange,
}

impl MountedFs {
    /// The host path of the guest path the filesystem was mounted for.
    pub fn host_path(&self) -> PathBuf {
        self.dir.path().join(self.rel.trim_start_matches('/'))
    }
    /// The mount point (the root of the filesystem that holds the guest path).
    pub fn mount_point(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for MountedFs {
    fn drop(&mut self) {
        let _ = self.mounts.unmount_all();
    }
}

/// Mounts the filesystem of `disk` that holds `guest_path` (read-only: a read-only loop device and no
/// journal replay, so the image is not written).
pub fn mount(
    disk: &Path,
    variant: LabVariant,
    guest_path: &str,
    writable: bool,
) -> anyhow::Result<MountedFs> {
    let (start, size, rel) = locate(disk, variant, guest_path)?;
    let lo = if writable {
        LoopRange::attach(disk, start, size)?
    } else {
        LoopRange::attach_ro(disk, start, size)?
    };
    let dir = tempfile::tempdir()?;
    let mut mounts = Mounts::default();
    let fstype =
        sys::run("blkid", &["-p", "-s", "TYPE", "-o", "value", &lo.dev]).unwrap_or_default();
    let opts = match (writable, fstype.trim()) {
        (true, _) => vec![],
        (false, "ext4") => vec!["-o", "ro,noload"],
        (false, "xfs") => vec!["-o", "ro,norecovery"],
        (false, _) => vec!["-o", "ro"],
    };
    mounts.mount(&opts, &lo.dev, dir.path())?;
    Ok(MountedFs {
        mounts,
        dir,
        rel,
        _loop: lo,
    })
}

/// See [`super::modify_file`].
pub fn modify_file(
    disk: &Path,
    variant: LabVariant,
    guest_path: &str,
    bytes: &[u8],
) -> anyhow::Result<()> {
    let mut m = mount(disk, variant, guest_path, true)?;
    let p = m.host_path();
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&p, bytes)
        .with_context(|| format!("cannot write {guest_path} in {}", disk.display()))?;
    // Unmount now so that a failure to flush is reported, not lost in Drop.
    m.mounts.unmount_all()?;
    Ok(())
}
