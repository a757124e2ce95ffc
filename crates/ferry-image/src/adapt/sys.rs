//! Host plumbing for adaptation: running tools, loop devices and mounts behind guards.
//!
//! Invariant: a [`Session`] owns every loop device and mount it made; dropping it (on success or on any
//! error) unmounts in reverse order and detaches, so nothing is left behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::AdaptError;

/// Runs `cmd args…` and returns its stdout; a non-zero exit is [`AdaptError::Tool`].
pub(crate) fn run(cmd: &str, args: &[&str]) -> Result<String, AdaptError> {
    let out = output(cmd, args)?;
    if !out.status.success() {
        return Err(tool_error(cmd, args, &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd args…` and returns its raw output whatever the exit status.
pub(crate) fn output(cmd: &str, args: &[&str]) -> Result<std::process::Output, AdaptError> {
    Command::new(cmd)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                AdaptError::MissingTool {
                    tool: leak_name(cmd),
                    package: package_of(cmd),
                }
            } else {
                AdaptError::io("running", cmd, e)
            }
        })
}

pub(crate) fn tool_error(cmd: &str, args: &[&str], out: &std::process::Output) -> AdaptError {
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    if stderr.len() > 2000 {
        stderr.truncate(2000);
    }
    AdaptError::Tool {
        command: format!("{cmd} {}", args.join(" ")),
        status: out.status.to_string(),
        stderr,
    }
}

fn leak_name(cmd: &str) -> &'static str {
    match cmd {
        "losetup" => "losetup",
        "mount" => "mount",
        "umount" => "umount",
        "blkid" => "blkid",
        "sfdisk" => "sfdisk",
        "chroot" => "chroot",
        _ => "a required tool",
    }
}

fn package_of(cmd: &str) -> &'static str {
    match cmd {
        "losetup" | "mount" | "umount" | "blkid" | "sfdisk" => "util-linux / mount / fdisk",
        "gzip" => "gzip",
        "xz" => "xz-utils",
        "lz4" => "lz4",
        _ => "coreutils",
    }
}

/// A loop device; detached on drop.
#[derive(Debug)]
pub(crate) struct LoopDev {
    pub path: PathBuf,
}

impl LoopDev {
    /// Attaches `file` from `offset` for `size` bytes (0 = to the end).
    pub(crate) fn attach(
        file: &Path,
        offset: u64,
        size: u64,
        read_only: bool,
    ) -> Result<Self, AdaptError> {
        let file_s = file.to_string_lossy().into_owned();
        let off = offset.to_string();
        let sz = size.to_string();
        let mut args = vec!["--find", "--show", "--offset", off.as_str()];
        if size > 0 {
            args.extend(["--sizelimit", sz.as_str()]);
        }
        if read_only {
            args.push("--read-only");
        }
        args.push(file_s.as_str());
        let dev = run("losetup", &args)?;
        Ok(LoopDev {
            path: PathBuf::from(dev.trim()),
        })
    }
}

/// How long a detached loop device may stay bound while another opener (an LVM or blkid scan of
/// every block device, say) still holds it: the kernel then only marks it for auto-clear.
const LOOP_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for LoopDev {
    /// Detaches, then waits (bounded) until the kernel has really let go of the image file, so that
    /// whoever runs next (a second pass, a delete of the image) finds no loop device on it.
    fn drop(&mut self) {
        let p = self.path.to_string_lossy().into_owned();
        let _ = output("losetup", &["--detach", &p]);
        let Some(name) = self.path.file_name() else {
            return;
        };
        let bound = Path::new("/sys/block").join(name).join("loop/backing_file");
        let start = std::time::Instant::now();
        while bound.exists() {
            if start.elapsed() > LOOP_RELEASE_WAIT {
                tracing::warn!(
                    device = %p,
                    "loop device still held by another process {LOOP_RELEASE_WAIT:?} after detaching; \
                     the kernel frees it when that process closes it (see `fuser -v {p}`)"
                );
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// A mount; unmounted on drop (lazily if busy).
#[derive(Debug)]
pub(crate) struct MountGuard {
    pub target: PathBuf,
    active: bool,
}

impl MountGuard {
    pub(crate) fn mount(
        dev: &Path,
        target: &Path,
        fstype: Option<&str>,
        opts: &str,
    ) -> Result<Self, AdaptError> {
        let d = dev.to_string_lossy().into_owned();
        let t = target.to_string_lossy().into_owned();
        let mut args: Vec<&str> = Vec::new();
        if let Some(f) = fstype {
            args.extend(["-t", f]);
        }
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        args.extend([d.as_str(), t.as_str()]);
        run("mount", &args)?;
        Ok(MountGuard {
            target: target.to_path_buf(),
            active: true,
        })
    }

    pub(crate) fn bind(src: &Path, target: &Path) -> Result<Self, AdaptError> {
        let s = src.to_string_lossy().into_owned();
        let t = target.to_string_lossy().into_owned();
        run("mount", &["--bind", &s, &t])?;
        Ok(MountGuard {
            target: target.to_path_buf(),
            active: true,
        })
    }

    /// Unmounts now, reporting failure (so a successful adaptation is known to be flushed).
    pub(crate) fn unmount(mut self) -> Result<(), AdaptError> {
        self.active = false;
        let t = self.target.to_string_lossy().into_owned();
        run("umount", &[&t]).map(|_| ())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.active {
            let t = self.target.to_string_lossy().into_owned();
            let ok = output("umount", &[&t])
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !ok {
                let _ = output("umount", &["--lazy", &t]);
            }
        }
    }
}

/// Owns the loop devices, mounts and temporary directories of one adaptation or detection.
#[derive(Debug, Default)]
pub(crate) struct Session {
    mounts: Vec<MountGuard>,
    loops: Vec<LoopDev>,
    dirs: Vec<tempfile::TempDir>,
}

impl Session {
    pub(crate) fn attach(
        &mut self,
        file: &Path,
        offset: u64,
        size: u64,
        ro: bool,
    ) -> Result<PathBuf, AdaptError> {
        let l = LoopDev::attach(file, offset, size, ro)?;
        let p = l.path.clone();
        self.loops.push(l);
        Ok(p)
    }

    pub(crate) fn tempdir(&mut self) -> Result<PathBuf, AdaptError> {
        let d = tempfile::Builder::new()
            .prefix("ferry-adapt-")
            .tempdir()
            .map_err(|e| {
                AdaptError::io("creating a temporary directory in", std::env::temp_dir(), e)
            })?;
        let p = d.path().to_path_buf();
        self.dirs.push(d);
        Ok(p)
    }

    pub(crate) fn mount(
        &mut self,
        dev: &Path,
        target: &Path,
        fstype: Option<&str>,
        opts: &str,
    ) -> Result<(), AdaptError> {
        let m = MountGuard::mount(dev, target, fstype, opts)?;
        self.mounts.push(m);
        Ok(())
    }

    pub(crate) fn bind(&mut self, src: &Path, target: &Path) -> Result<(), AdaptError> {
        let m = MountGuard::bind(src, target)?;
        self.mounts.push(m);
        Ok(())
    }

    /// Unmounts every mount made after the first `keep`, newest first.
    pub(crate) fn unmount_to(&mut self, keep: usize) -> Result<(), AdaptError> {
        while self.mounts.len() > keep {
            if let Some(m) = self.mounts.pop() {
                m.unmount()?;
            }
        }
        Ok(())
    }

    pub(crate) fn mount_count(&self) -> usize {
        self.mounts.len()
    }

    /// Releases everything, reporting the first unmount failure.
    pub(crate) fn close(mut self) -> Result<(), AdaptError> {
        self.unmount_to(0)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        while let Some(m) = self.mounts.pop() {
            drop(m);
        }
        while let Some(l) = self.loops.pop() {
            drop(l);
        }
        self.dirs.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports failure
mod tests {
    use super::*;

    /// Another process holding the loop device when it is detached (an LVM or blkid scan of every
    /// device) only defers the kernel's release: dropping a LoopDev waits for it, so the image file has
    /// no loop device left once the drop returns.
    #[test]
    fn a_loop_device_held_at_its_detach_is_released_before_the_drop_returns() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("disk.raw");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let dev = LoopDev::attach(&img, 0, 0, true).unwrap();
        let holder = std::fs::File::open(&dev.path).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(holder);
        });
        drop(dev);
        let left = run("losetup", &["-j", &img.to_string_lossy()]).unwrap();
        assert_eq!(left.trim(), "", "a loop device was left attached");
        release.join().unwrap();
    }
}
