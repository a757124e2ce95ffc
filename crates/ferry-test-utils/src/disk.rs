//! Real disk images for tests: a GPT table with an ext4 and an xfs partition, created with sfdisk, formatted
//! and filled through loop devices, and mounted to change files as a running server would.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Runs a command, failing with its output when it fails.
pub fn run(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {cmd} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A partition of a test disk.
#[derive(Debug, Clone)]
pub struct Part {
    pub start: u64,
    pub size: u64,
    pub fs: &'static str,
}

/// A disk image file with a GPT table and filesystems.
pub struct TestDisk {
    pub path: PathBuf,
    pub size: u64,
    pub parts: Vec<Part>,
}

/// A loop device over part of a file; detached on drop.
pub struct Loop {
    pub dev: String,
}

impl Loop {
    pub fn attach(file: &Path, offset: u64, size: u64) -> anyhow::Result<Loop> {
        let f = file.display().to_string();
        let dev = run(
            "losetup",
            &[
                "--find",
                "--show",
                "--offset",
                &offset.to_string(),
                "--sizelimit",
                &size.to_string(),
                &f,
            ],
        )?
        .trim()
        .to_owned();
        Ok(Loop { dev })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A mounted partition; unmounted on drop.
pub struct Mounted {
    pub dir: tempfile::TempDir,
    _loop: Loop,
}

impl Mounted {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

const MIB: u64 = 1 << 20;

impl TestDisk {
    /// Creates a sparse disk of `size_mib` MiB at `path`: GPT, partition 1 ext4 (`ext4_mib`), partition 2 xfs
    /// (the rest, at least 300 MiB for xfs).
    pub fn create(path: &Path, size_mib: u64, ext4_mib: u64) -> anyhow::Result<TestDisk> {
        let size = size_mib * MIB;
        let f = std::fs::File::create(path)?;
        f.set_len(size)?;
        drop(f);
        let script = format!(
            "label: gpt\nstart=2048, size={}, type=L\nstart={}, type=L\n",
            ext4_mib * MIB / 512,
            2048 + ext4_mib * MIB / 512
        );
        let mut child = Command::new("sfdisk")
            .args(["--quiet", &path.display().to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("cannot run sfdisk (install fdisk)")?;
        {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .context("sfdisk stdin")?
                .write_all(script.as_bytes())?;
        }
        if !child.wait()?.success() {
            bail!("sfdisk failed on {}", path.display());
        }
        let parts = Self::read_parts(path)?;
        let fss = ["ext4", "xfs"];
        let parts: Vec<Part> = parts
            .into_iter()
            .zip(fss)
            .map(|((start, size), fs)| Part { start, size, fs })
            .collect();
        for p in &parts {
            let lo = Loop::attach(path, p.start, p.size)?;
            match p.fs {
                "ext4" => run("mkfs.ext4", &["-q", "-F", "-L", "ferry-ext4", &lo.dev])?,
                _ => run("mkfs.xfs", &["-q", "-f", "-L", "ferry-xfs", &lo.dev])?,
            };
        }
        Ok(TestDisk {
            path: path.to_owned(),
            size,
            parts,
        })
    }

    /// (start, size) in bytes of each partition, from `sfdisk -J`.
    fn read_parts(path: &Path) -> anyhow::Result<Vec<(u64, u64)>> {
        let json = run("sfdisk", &["-J", &path.display().to_string()])?;
        let v: serde_json::Value = serde_json::from_str(&json)?;
        let sector = v["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
        let parts = v["partitiontable"]["partitions"]
            .as_array()
            .context("sfdisk -J: no partitions")?
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

    /// Mounts partition `n` (0-based) of the disk.
    pub fn mount(&self, n: usize) -> anyhow::Result<Mounted> {
        let p = self.parts.get(n).context("no such partition")?;
        let lo = Loop::attach(&self.path, p.start, p.size)?;
        let dir = tempfile::tempdir()?;
        run("mount", &[&lo.dev, &dir.path().display().to_string()])?;
        Ok(Mounted { dir, _loop: lo })
    }
}

/// Deterministic pseudo-random bytes (xorshift), so test data is reproducible and incompressible.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text-like compressible bytes.
pub fn text_bytes(seed: u64, len: usize) -> Vec<u8> {
    let words = [
        "ferry",
        "migration",
        "server",
        "disk",
        "chunk",
        "kernel",
        "image",
        "snapshot",
        "the",
        "a",
    ];
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
        out.push(if x.is_multiple_of(11) { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// Fills a directory tree with a mix of files (text, random), `total` bytes in all.
pub fn fill_tree(dir: &Path, seed: u64, total: usize) -> anyhow::Result<()> {
    let mut written = 0;
    let mut i = 0u64;
    while written < total {
        let sub = dir.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&sub)?;
        let len = (64 << 10) + ((seed.wrapping_add(i) * 7919) % (1 << 20)) as usize;
        let len = len.min(total - written);
        let data = if i.is_multiple_of(3) {
            random_bytes(seed + i, len)
        } else {
            text_bytes(seed + i, len)
        };
        std::fs::write(sub.join(format!("f{i}.bin")), data)?;
        written += len;
        i += 1;
    }
    Ok(())
}
