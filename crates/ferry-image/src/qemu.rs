//! Image formats and the `qemu-img` calls that produce and compare them.
//!
//! Format choices (what users of each target platform expect):
//! - qcow2: qemu's default options, no compression (so instances read it at full speed; compress on
//!   export if wanted).
//! - vmdk: `subformat=streamOptimized`, the flavour vSphere/ESXi and OVF/OVA imports take.
//! - vhdx: qemu's default (dynamic), what Hyper-V creates.
//! - vhd: qemu's `vpc` driver with `subformat=fixed,force_size=on`: Azure accepts only fixed VHDs, and
//!   `force_size` keeps the exact disk size instead of rounding it to a CHS geometry (Azure also wants a
//!   whole number of MiB, which disks normally are).

use std::fmt;
use std::path::Path;
use std::process::Output;
use std::str::FromStr;

use crate::error::ImageError;

/// An output disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// Sparse raw image.
    Raw,
    /// QEMU copy-on-write v2.
    Qcow2,
    /// VMware, stream-optimized.
    Vmdk,
    /// Hyper-V, dynamic.
    Vhdx,
    /// Virtual PC / Azure, fixed.
    Vhd,
}

impl ImageFormat {
    /// Every format.
    pub const ALL: [ImageFormat; 5] = [
        ImageFormat::Raw,
        ImageFormat::Qcow2,
        ImageFormat::Vmdk,
        ImageFormat::Vhdx,
        ImageFormat::Vhd,
    ];

    /// The lowercase name, which is also the file extension.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Vmdk => "vmdk",
            ImageFormat::Vhdx => "vhdx",
            ImageFormat::Vhd => "vhd",
        }
    }

    /// qemu-img's name for the format (`vpc` for vhd).
    pub fn qemu_format(self) -> &'static str {
        match self {
            ImageFormat::Vhd => "vpc",
            other => other.name(),
        }
    }

    /// The `-o` options Ferry passes to `qemu-img convert` (see the module doc).
    pub fn qemu_options(self) -> Option<&'static str> {
        match self {
            ImageFormat::Vmdk => Some("subformat=streamOptimized"),
            ImageFormat::Vhd => Some("subformat=fixed,force_size=on"),
            _ => None,
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ImageFormat {
    type Err = ImageError;

    /// Accepts `raw`, `qcow2`, `vmdk`, `vhdx`, `vhd` in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| ImageError::UnknownFormat {
                input: s.chars().take(50).collect(),
            })
    }
}

/// Runs `program` with `args`, started from the bulk pool (`ferry_chunk::bulk`) so that it runs at its
/// lower priority; a missing program is [`ImageError::QemuImgMissing`].
async fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<Output, ImageError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true);
    ferry_chunk::bulk::run(async move { cmd.output().await })
        .await
        .map_err(ImageError::Task)?
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ImageError::QemuImgMissing
            } else {
                ImageError::Io {
                    op: "running",
                    path: program.into(),
                    source: e,
                }
            }
        })
}

fn failure(args: &[&std::ffi::OsStr], out: &Output) -> ImageError {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    ImageError::QemuImg {
        args: args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        status: out.status.to_string(),
        stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
    }
}

/// Converts the raw image `src_raw` to `dst` in `format` with `qemu-img convert` (zero areas stay
/// sparse). On failure `dst` is removed.
///
/// # Errors
/// [`ImageError::QemuImgMissing`] without qemu-img, [`ImageError::QemuImg`] if it fails.
pub async fn convert(src_raw: &Path, dst: &Path, format: ImageFormat) -> Result<(), ImageError> {
    convert_with("qemu-img", src_raw, dst, format).await
}

async fn convert_with(
    program: &str,
    src_raw: &Path,
    dst: &Path,
    format: ImageFormat,
) -> Result<(), ImageError> {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "convert".as_ref(),
        "-f".as_ref(),
        "raw".as_ref(),
        "-O".as_ref(),
        format.qemu_format().as_ref(),
    ];
    if let Some(opts) = format.qemu_options() {
        args.push("-o".as_ref());
        args.push(opts.as_ref());
    }
    args.push(src_raw.as_os_str());
    args.push(dst.as_os_str());
    let result = match run(program, &args).await {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(failure(&args, &out)),
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = tokio::fs::remove_file(dst).await;
    }
    result
}

impl ImageFormat {
    /// The format a file name's extension names (`.raw`, `.qcow2`, `.vmdk`, `.vhdx`, `.vhd`, any case).
    pub fn from_path(path: &Path) -> Option<ImageFormat> {
        path.extension()?.to_str()?.parse().ok()
    }
}

/// Whether two images hold the same guest-visible data, by `qemu-img compare`. The format of each file
/// is taken from its extension when it is one of [`ImageFormat`]'s, and probed by qemu-img otherwise.
/// Naming it matters: a fixed VHD probes as raw (its footer is at the end), and probing a raw guest
/// disk is unsafe (a guest can write a qcow2 header into it).
///
/// # Errors
/// [`ImageError::QemuImgMissing`], or [`ImageError::QemuImg`] when qemu-img cannot compare them (for
/// example a file is missing).
pub async fn qemu_img_compare(a: &Path, b: &Path) -> Result<bool, ImageError> {
    qemu_img_compare_as(a, ImageFormat::from_path(a), b, ImageFormat::from_path(b)).await
}

/// [`qemu_img_compare`] with explicit formats (`None`: let qemu-img probe).
///
/// # Errors
/// As [`qemu_img_compare`].
pub async fn qemu_img_compare_as(
    a: &Path,
    a_format: Option<ImageFormat>,
    b: &Path,
    b_format: Option<ImageFormat>,
) -> Result<bool, ImageError> {
    let mut args: Vec<&std::ffi::OsStr> = vec!["compare".as_ref()];
    if let Some(f) = a_format {
        args.push("-f".as_ref());
        args.push(f.qemu_format().as_ref());
    }
    if let Some(f) = b_format {
        args.push("-F".as_ref());
        args.push(f.qemu_format().as_ref());
    }
    args.push(a.as_os_str());
    args.push(b.as_os_str());
    let out = run("qemu-img", &args).await?;
    // Documented exit codes: 0 identical, 1 different, anything else an error.
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(failure(&args, &out)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports failure
mod tests {
    use super::*;

    #[test]
    fn parse_formats() {
        for (s, f) in [
            ("raw", ImageFormat::Raw),
            ("QCOW2", ImageFormat::Qcow2),
            ("Vmdk", ImageFormat::Vmdk),
            ("vhdx", ImageFormat::Vhdx),
            ("VHD", ImageFormat::Vhd),
        ] {
            assert_eq!(s.parse::<ImageFormat>().unwrap(), f);
            assert_eq!(f.to_string().parse::<ImageFormat>().unwrap(), f);
        }
        for bad in ["", "qcow", "vpc", "raw ", "img"] {
            let err = bad.parse::<ImageFormat>().unwrap_err();
            assert!(matches!(err, ImageError::UnknownFormat { .. }), "{bad:?}");
            assert!(
                err.to_string()
                    .contains("use raw, qcow2, vmdk, vhdx or vhd")
            );
        }
        assert_eq!(ImageFormat::Vhd.qemu_format(), "vpc");
        assert_eq!(
            ImageFormat::from_path(Path::new("/x/disk.VHD")),
            Some(ImageFormat::Vhd)
        );
        assert_eq!(ImageFormat::from_path(Path::new("/x/disk.img")), None);
        assert_eq!(ImageFormat::from_path(Path::new("/x/raw")), None);
    }

    #[tokio::test]
    async fn missing_qemu_img_says_what_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("out.qcow2");
        let err = convert_with(
            "ferry-no-such-qemu-img",
            &dir.path().join("in.raw"),
            &dst,
            ImageFormat::Qcow2,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ImageError::QemuImgMissing));
        assert!(err.to_string().contains("install qemu-utils"));
        assert!(!dst.exists());
    }
}
