//! Finding the volumes on image files: partitions (sfdisk), filesystems (blkid), LVM logical volumes
//! (the PV's text metadata), each exposed as its own offset loop device.
//!
//! Offset loops rather than `losetup -P`/`partx -a` partition nodes: the same mechanism serves partitions
//! and LVs, and needs neither udev nor device-mapper.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::sys::{Session, output};
use super::{AdaptError, VolumeInfo, lvm};

/// The GPT type of an EFI system partition.
pub(crate) const ESP_GUID: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// The GPT type of a BIOS boot partition (GRUB's core image on GPT+BIOS).
const BIOS_BOOT_GUID: &str = "21686148-6449-6E6F-744E-656564454649";

/// A partition, a whole-disk filesystem, or an LV, attached as a loop device.
#[derive(Debug, Clone)]
pub(crate) struct Volume {
    pub name: String,
    pub disk: usize,
    pub partno: Option<u32>,
    pub file: PathBuf,
    pub offset: u64,
    pub size: u64,
    pub dev: PathBuf,
    pub part_type: Option<String>,
    pub partuuid: Option<String>,
    pub fstype: Option<String>,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// (vg, lv) for an LVM logical volume.
    pub lvm: Option<(String, String)>,
}

impl Volume {
    pub(crate) fn info(&self) -> VolumeInfo {
        VolumeInfo {
            name: self.name.clone(),
            fstype: self.fstype.clone(),
            uuid: self.uuid.clone(),
            label: self.label.clone(),
            size: self.size,
        }
    }

    pub(crate) fn is_esp(&self) -> bool {
        self.fstype.as_deref() == Some("vfat")
            && self
                .part_type
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(ESP_GUID) || t.eq_ignore_ascii_case("ef"))
    }
}

/// What the disks look like.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    pub volumes: Vec<Volume>,
    /// The system disk has BIOS boot code (MBR code or a BIOS boot partition).
    pub bios_boot_code: bool,
}

#[derive(serde::Deserialize)]
struct SfdiskOut {
    partitiontable: SfTable,
}

#[derive(serde::Deserialize)]
struct SfTable {
    #[serde(default)]
    sectorsize: Option<u64>,
    #[serde(default)]
    partitions: Vec<SfPart>,
}

#[derive(serde::Deserialize)]
struct SfPart {
    node: String,
    start: u64,
    size: u64,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    uuid: Option<String>,
}

fn io_err<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> AdaptError + 'a {
    move |e| AdaptError::io(op, p, e)
}

/// Reads `len` bytes at `offset` of `file` (fewer at its end).
pub(crate) fn read_at(file: &Path, offset: u64, len: usize) -> Result<Vec<u8>, AdaptError> {
    let mut f = File::open(file).map_err(io_err("opening", file))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(io_err("reading", file))?;
    let mut buf = Vec::with_capacity(len);
    f.take(len as u64)
        .read_to_end(&mut buf)
        .map_err(io_err("reading", file))?;
    Ok(buf)
}

fn blkid(dev: &Path) -> Result<HashMap<String, String>, AdaptError> {
    let d = dev.to_string_lossy().into_owned();
    let out = output("blkid", &["-p", "-o", "export", &d])?;
    // Exit 2: nothing found. Anything else non-zero is treated the same (an unreadable area).
    let mut map = HashMap::new();
    if out.status.success() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.split_once('=') {
                map.insert(k.to_string(), v.to_string());
            }
        }
    }
    Ok(map)
}

fn probe(session: &mut Session, vol: &mut Volume, ro: bool) -> Result<(), AdaptError> {
    vol.dev = session.attach(&vol.file, vol.offset, vol.size, ro)?;
    let b = blkid(&vol.dev)?;
    vol.fstype = b.get("TYPE").cloned();
    vol.uuid = b.get("UUID").cloned();
    vol.label = b.get("LABEL").cloned();
    Ok(())
}

/// Attaches and probes every volume on `disks`.
pub(crate) fn scan(
    session: &mut Session,
    disks: &[PathBuf],
    ro: bool,
) -> Result<Layout, AdaptError> {
    let mut layout = Layout::default();
    for (i, disk) in disks.iter().enumerate() {
        let meta = std::fs::metadata(disk).map_err(io_err("opening the image", disk))?;
        let disk_s = disk.to_string_lossy().into_owned();
        let sf = output("sfdisk", &["--json", &disk_s])?;
        let table: Option<SfTable> = if sf.status.success() {
            serde_json::from_slice::<SfdiskOut>(&sf.stdout)
                .ok()
                .map(|o| o.partitiontable)
        } else {
            None
        };
        if i == 0 {
            let mbr = read_at(disk, 0, 512)?;
            let has_sig = mbr.len() == 512 && mbr[510] == 0x55 && mbr[511] == 0xAA;
            let has_code = mbr.iter().take(440).any(|&b| b != 0);
            layout.bios_boot_code = has_sig && has_code && table.is_some();
        }
        match table {
            Some(t) if !t.partitions.is_empty() => {
                let ss = t.sectorsize.unwrap_or(512);
                for p in t.partitions {
                    let ty = p.ty.to_ascii_uppercase();
                    if i == 0 && ty == BIOS_BOOT_GUID {
                        layout.bios_boot_code = true;
                    }
                    if matches!(ty.as_str(), "5" | "F" | "85") {
                        continue; // extended partition container
                    }
                    if p.size == 0 || (p.start + p.size) * ss > meta.len() {
                        continue; // outside the image: a damaged table or random bytes that look like one
                    }
                    let partno = p
                        .node
                        .strip_prefix(disk_s.as_str())
                        .and_then(|n| n.parse::<u32>().ok());
                    let mut v = Volume {
                        name: format!("disk{i}p{}", partno.unwrap_or(0)),
                        disk: i,
                        partno,
                        file: disk.clone(),
                        offset: p.start * ss,
                        size: p.size * ss,
                        dev: PathBuf::new(),
                        part_type: Some(ty),
                        partuuid: p.uuid,
                        fstype: None,
                        uuid: None,
                        label: None,
                        lvm: None,
                    };
                    probe(session, &mut v, ro)?;
                    layout.volumes.push(v);
                }
            }
            _ => {
                let mut v = Volume {
                    name: format!("disk{i}"),
                    disk: i,
                    partno: None,
                    file: disk.clone(),
                    offset: 0,
                    size: meta.len(),
                    dev: PathBuf::new(),
                    part_type: None,
                    partuuid: None,
                    fstype: None,
                    uuid: None,
                    label: None,
                    lvm: None,
                };
                probe(session, &mut v, ro)?;
                if v.fstype.is_some() {
                    layout.volumes.push(v);
                }
            }
        }
    }
    scan_lvm(session, &mut layout, ro)?;
    Ok(layout)
}

fn scan_lvm(session: &mut Session, layout: &mut Layout, ro: bool) -> Result<(), AdaptError> {
    let pvs: Vec<Volume> = layout
        .volumes
        .iter()
        .filter(|v| v.fstype.as_deref() == Some("LVM2_member"))
        .cloned()
        .collect();
    let mut by_uuid = HashMap::new();
    let mut metas = Vec::new();
    for pv in &pvs {
        let lvm_err = |detail: String| AdaptError::Lvm {
            volume: pv.name.clone(),
            detail,
        };
        let head = read_at(&pv.file, pv.offset, 2048)?;
        let h = lvm::parse_pv_header(&head).map_err(lvm_err)?;
        by_uuid.insert(h.uuid.clone(), pv.clone());
        let Some(&(mda_off, mda_size)) = h.metadata_areas.first() else {
            continue; // a PV without metadata area: another PV of the VG carries it
        };
        if mda_size > 256 << 20 {
            return Err(lvm_err(format!(
                "metadata area of {mda_size} bytes is implausibly large"
            )));
        }
        let area = read_at(&pv.file, pv.offset + mda_off, mda_size as usize)?;
        let text = lvm::metadata_text(&area).map_err(lvm_err)?;
        let meta = lvm::parse_metadata(&text).map_err(lvm_err)?;
        metas.push((pv.name.clone(), meta));
    }
    let mut seen = std::collections::HashSet::new();
    for (pv_name, meta) in metas {
        let lvs = lvm::logical_volumes(&meta).map_err(|detail| AdaptError::Lvm {
            volume: pv_name.clone(),
            detail,
        })?;
        for lv in lvs {
            let lv = lv.map_err(|what| AdaptError::Unsupported {
                what: format!(
                    "{what} (only linear, single-segment logical volumes can be read without device-mapper)"
                ),
            })?;
            if !seen.insert((lv.vg.clone(), lv.lv.clone())) {
                continue; // the same VG's metadata on a second PV
            }
            let Some(pv) = by_uuid.get(&lv.pv_uuid) else {
                return Err(AdaptError::Unsupported {
                    what: format!(
                        "LV {}/{} lies on a physical volume that is not among the image's disks",
                        lv.vg, lv.lv
                    ),
                });
            };
            let mut v = Volume {
                name: format!("lvm:{}/{}", lv.vg, lv.lv),
                disk: pv.disk,
                partno: None,
                file: pv.file.clone(),
                offset: pv.offset + lv.offset,
                size: lv.size,
                dev: PathBuf::new(),
                part_type: None,
                partuuid: None,
                fstype: None,
                uuid: None,
                label: None,
                lvm: Some((lv.vg.clone(), lv.lv.clone())),
            };
            probe(session, &mut v, ro)?;
            layout.volumes.push(v);
        }
    }
    Ok(())
}

/// Finds the volume an fstab/crypttab/kernel-command-line spec names (`UUID=`, `LABEL=`, `PARTUUID=`,
/// `/dev/mapper/vg-lv`, `/dev/vg/lv`, `/dev/disk/by-uuid/…`), not device names like `/dev/sda1`.
pub(crate) fn find_by_spec<'a>(vols: &'a [Volume], spec: &str) -> Option<&'a Volume> {
    let spec = spec.trim_matches('"');
    let eq = |a: &Option<String>, b: &str| a.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(b));
    if let Some(u) = spec
        .strip_prefix("UUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-uuid/"))
    {
        return vols.iter().find(|v| eq(&v.uuid, u));
    }
    if let Some(l) = spec
        .strip_prefix("LABEL=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-label/"))
    {
        return vols.iter().find(|v| v.label.as_deref() == Some(l));
    }
    if let Some(u) = spec
        .strip_prefix("PARTUUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-partuuid/"))
    {
        return vols.iter().find(|v| eq(&v.partuuid, u));
    }
    if let Some(m) = spec.strip_prefix("/dev/mapper/") {
        return vols.iter().find(|v| {
            v.lvm.as_ref().is_some_and(|(vg, lv)| {
                format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--")) == m
            })
        });
    }
    if let Some(rest) = spec.strip_prefix("/dev/")
        && let Some((vg, lv)) = rest.split_once('/')
    {
        {
            return vols
                .iter()
                .find(|v| v.lvm.as_ref().is_some_and(|(a, b)| a == vg && b == lv));
        }
    }
    None
}
