//! System plumbing for the lab: running tools with their output kept for the error, loop devices (whole
//! disks with their partitions added by `partx`, since the kernel does not scan them here), mounts, and
//! the build lock. Every resource here is released by `Drop`, in reverse order, also on error.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// Runs `cmd args`, returning its stdout; on failure the error holds the command, its status and output.
pub fn run(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("cannot run {cmd}: is it installed? (scripts/test.sh installs it)")
        })?;
    if !out.status.success() {
        bail!(
            "`{cmd} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd args` with `input` on stdin.
pub fn run_input(cmd: &str, args: &[&str], input: &str) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd}: is it installed?"))?;
    child
        .stdin
        .take()
        .context("no stdin pipe")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`{cmd} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd args` inside the chroot at `root` (a minimal, non-interactive environment).
pub fn chroot(root: &Path, script: &str) -> anyhow::Result<String> {
    let out = Command::new("chroot")
        .arg(root)
        .args(["/bin/sh", "-ec", script])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .output()
        .context("cannot run chroot")?;
    if !out.status.success() {
        bail!(
            "in the chroot {}: `{script}` failed ({}): {}{}",
            root.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A loop device over a whole disk image, with its partitions added (`partx -a`); removed on drop.
pub struct LoopDisk {
    pub dev: String,
}

impl LoopDisk {
    pub fn attach(file: &Path) -> anyhow::Result<LoopDisk> {
        let dev = run(
            "losetup",
            &["--find", "--show", &file.display().to_string()],
        )?
        .trim()
        .to_owned();
        let disk = LoopDisk { dev };
        // No partitions is not an error for partx -a on an empty table; we always have some.
        run("partx", &["-a", &disk.dev])?;
        Ok(disk)
    }

    /// The device node of partition `n` (1-based).
    pub fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.dev)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("partx").args(["-d", &self.dev]).output();
        let _ = Command::new("losetup").args(["-d", &self.dev]).output();
    }
}

/// A loop device over `size` bytes of a file at `offset`; detached on drop.
pub struct LoopRange {
    pub dev: String,
}

impl LoopRange {
    pub fn attach(file: &Path, offset: u64, size: u64) -> anyhow::Result<LoopRange> {
        Self::attach_with(file, offset, size, false)
    }

    /// A read-only loop device: the file cannot be written through it.
    pub fn attach_ro(file: &Path, offset: u64, size: u64) -> anyhow::Result<LoopRange> {
        Self::attach_with(file, offset, size, true)
    }

    fn attach_with(file: &Path, offset: u64, size: u64, ro: bool) -> anyhow::Result<LoopRange> {
        let (off, len, f) = (
            offset.to_string(),
            size.to_string(),
            file.display().to_string(),
        );
        let mut args = vec!["--find", "--show", "--offset", &off, "--sizelimit", &len];
        if ro {
            args.push("--read-only");
        }
        args.push(&f);
        let dev = run("losetup", &args)?.trim().to_owned();
        Ok(LoopRange { dev })
    }
}

impl Drop for LoopRange {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).output();
    }
}

/// Mount points, unmounted in reverse order on drop (lazily if busy, so a failed build never leaves a
/// mount behind).
#[derive(Default)]
pub struct Mounts {
    points: Vec<PathBuf>,
}

impl Mounts {
    /// `mount [args...] src dir`, creating `dir`.
    pub fn mount(&mut self, args: &[&str], src: &str, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let d = dir.display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.push(src);
        all.push(&d);
        run("mount", &all)?;
        self.points.push(dir.to_owned());
        Ok(())
    }

    /// Unmounts everything now, reporting the first failure.
    pub fn unmount_all(&mut self) -> anyhow::Result<()> {
        while let Some(p) = self.points.pop() {
            if let Err(e) = run("umount", &[&p.display().to_string()]) {
                let _ = Command::new("umount").arg("-l").arg(&p).output();
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        while let Some(p) = self.points.pop() {
            let ok = Command::new("umount")
                .arg(&p)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&p).output();
            }
        }
    }
}

/// An exclusive lock on `<path>` (a lock file, flock), held until dropped.
pub struct BuildLock {
    _file: File,
}

impl BuildLock {
    pub fn acquire(path: &Path) -> anyhow::Result<BuildLock> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the lab cache {}", dir.display()))?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(BuildLock { _file: file })
    }
}

/// A directory removed on drop unless [`TempPath::keep`] was called: a half-built artifact's home.
pub struct TempPath {
    pub path: PathBuf,
    keep: bool,
}

impl TempPath {
    pub fn new(path: PathBuf) -> TempPath {
        TempPath { path, keep: false }
    }
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        // Never delete through a mount point that is still there (a chroot's /proc, a partition).
        if !self.keep && !self.path.as_os_str().is_empty() && !has_mounts_under(&self.path) {
            if self.path.is_dir() {
                let _ = std::fs::remove_dir_all(&self.path);
            } else {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Is anything mounted at or below `path`?
pub fn has_mounts_under(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    let p = path.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == p || m.starts_with(&format!("{p}/")))
}

/// A short hex digest of `parts`, for cache keys.
pub fn short_hash(parts: &[&str]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize()[..6])
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
