//! The lab's base: one `debootstrap --variant=minbase` of the host's Debian release with everything a
//! server needs to boot and be adapted, cached as a tarball (`base-<codename>-<key>.tar`) from which every
//! variant is derived. The release comes from /etc/os-release and the mirror from the machine's apt
//! configuration, both read at run time: no host name is ever written into the repository.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};

use super::sys::{self, BuildLock, TempPath};

/// Bump when the base recipe (packages, post-install steps) changes: the cache key includes it.
pub const BASE_RECIPE_VERSION: &str = "base-v1";

/// The packages installed on top of minbase.
pub const PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "kmod",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "grub-pc",
    "grub-efi-amd64-bin",
    "lvm2",
    "xfsprogs",
    "e2fsprogs",
    "dosfstools",
];

/// The host's release and the mirror to take it from.
#[derive(Debug, Clone)]
pub struct Release {
    pub codename: String,
    pub mirror: String,
}

impl Release {
    /// Reads the codename from /etc/os-release and the mirror from the apt configuration.
    pub fn from_host() -> anyhow::Result<Release> {
        let os = std::fs::read_to_string("/etc/os-release")
            .context("cannot read /etc/os-release: the lab builds the host's Debian release")?;
        let codename = os
            .lines()
            .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
            .map(|v| v.trim_matches('"').to_owned())
            .filter(|v| !v.is_empty())
            .context("/etc/os-release has no VERSION_CODENAME: the lab needs a Debian host")?;
        let mirror = find_mirror(&codename)?;
        Ok(Release { codename, mirror })
    }
}

/// The first enabled `deb` source for `codename` with the `main` component, from /etc/apt/sources.list
/// and /etc/apt/sources.list.d/*.list|*.sources.
fn find_mirror(codename: &str) -> anyhow::Result<String> {
    let mut files: Vec<PathBuf> = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let found = match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => mirror_in_deb822(&text, codename),
            _ if f.file_name().is_some_and(|n| n == "sources.list")
                || f.extension().is_some_and(|e| e == "list") =>
            {
                mirror_in_one_line(&text, codename)
            }
            _ => None,
        };
        if let Some(m) = found {
            return Ok(m);
        }
    }
    bail!(
        "no apt source for {codename} main in /etc/apt/sources.list or /etc/apt/sources.list.d: \
         configure a Debian mirror for apt first"
    )
}

fn mirror_in_one_line(text: &str, codename: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        if suite == codename && words.any(|c| c == "main") {
            return Some(uri.to_owned());
        }
    }
    None
}

fn mirror_in_deb822(text: &str, codename: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| -> Option<String> {
            stanza
                .lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_owned())
                })
        };
        if field("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        let types = field("Types").unwrap_or_default();
        let suites = field("Suites").unwrap_or_default();
        let comps = field("Components").unwrap_or_default();
        if types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == codename)
            && comps.split_whitespace().any(|c| c == "main")
            && let Some(uri) =
                field("URIs").and_then(|u| u.split_whitespace().next().map(String::from))
        {
            return Some(uri);
        }
    }
    None
}

/// The base tarball for this host's release, built once (under a lock) if it is not cached.
pub fn base_tarball(cache: &Path) -> anyhow::Result<PathBuf> {
    let rel = Release::from_host()?;
    let key = sys::short_hash(&[
        BASE_RECIPE_VERSION,
        &rel.codename,
        &rel.mirror,
        &PACKAGES.join(","),
    ]);
    let path = cache.join(format!("base-{}-{key}.tar", rel.codename));
    if path.exists() {
        return Ok(path);
    }
    let _lock = BuildLock::acquire(&cache.join(format!(".base-{key}.lock")))?;
    if path.exists() {
        return Ok(path);
    }
    let t0 = Instant::now();
    let tmp_root = TempPath::new(cache.join(format!(".base-{key}.root.tmp")));
    if tmp_root.path.exists() {
        // A previous build died half-way; it never became the published tarball.
        std::fs::remove_dir_all(&tmp_root.path).ok();
    }
    let root = tmp_root.path.display().to_string();
    eprintln!(
        "lab: debootstrap {} from {} (one time; cached as {})",
        rel.codename,
        rel.mirror,
        path.display()
    );
    sys::run(
        "debootstrap",
        &[
            "--variant=minbase",
            &format!("--include={}", PACKAGES.join(",")),
            &rel.codename,
            &root,
            &rel.mirror,
        ],
    )
    .context("debootstrap failed: check the mirror in the apt configuration and the network")?;
    // Downloaded .debs are not part of a server.
    sys::chroot(&tmp_root.path, "apt-get clean; rm -rf /var/lib/apt/lists/*")?;
    let tmp_tar = TempPath::new(cache.join(format!(".base-{key}.tar.tmp")));
    sys::run(
        "tar",
        &[
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "-cf",
            &tmp_tar.path.display().to_string(),
            "-C",
            &root,
            ".",
        ],
    )?;
    std::fs::rename(&tmp_tar.path, &path)
        .with_context(|| format!("cannot publish {}", path.display()))?;
    let _ = tmp_tar.keep();
    eprintln!("lab: base built in {:.0?}", t0.elapsed());
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_both_formats() {
        let deb822 = "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\n\nTypes: deb\nURIs: http://s.example/debian-security\n\
                      Suites: bookworm-security\nComponents: main\n";
        assert_eq!(
            mirror_in_deb822(deb822, "bookworm").as_deref(),
            Some("http://m.example/debian")
        );
        let list = "# x\ndeb [arch=amd64] http://a.example/debian bookworm main contrib\n";
        assert_eq!(
            mirror_in_one_line(list, "bookworm").as_deref(),
            Some("http://a.example/debian")
        );
        assert_eq!(mirror_in_one_line(list, "trixie"), None);
    }
}
