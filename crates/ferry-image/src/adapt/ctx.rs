//! The guest as adaptation sees it: paths resolved inside the mounted root (symlinks followed within
//! it, never out to the host), and every write recorded as a [`Change`] — or only recorded, in a dry run.
//!
//! Invariant: a step writes to the guest only through these methods, so a dry run changes nothing and
//! lists exactly what the real run will change, and unchanged content is never rewritten.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use super::volumes::Volume;
use super::{AdaptError, AdaptOptions, Change};

pub(crate) struct Ctx<'a> {
    pub root: PathBuf,
    pub dry_run: bool,
    pub opts: &'a AdaptOptions,
    pub volumes: &'a [Volume],
    pub changes: Vec<Change>,
    pub warnings: Vec<String>,
}

impl<'a> Ctx<'a> {
    /// The host path of a guest path, following symlinks inside the guest root (the last component too
    /// when `follow_last`).
    pub fn host_path(&self, guest: &str, follow_last: bool) -> PathBuf {
        resolve(&self.root, guest, follow_last)
    }

    pub fn exists(&self, guest: &str) -> bool {
        fs::symlink_metadata(self.host_path(guest, false)).is_ok()
    }

    pub fn is_dir(&self, guest: &str) -> bool {
        self.host_path(guest, true).is_dir()
    }

    /// Reads a guest file; `None` when it does not exist.
    pub fn read(&self, guest: &str) -> Result<Option<Vec<u8>>, AdaptError> {
        let p = self.host_path(guest, true);
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => Ok(None),
            Err(e) => Err(AdaptError::io("reading", p, e)),
        }
    }

    pub fn read_string(&self, guest: &str) -> Result<Option<String>, AdaptError> {
        Ok(self
            .read(guest)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Names of the entries in a guest directory, sorted (empty when it does not exist).
    pub fn list(&self, guest: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.host_path(guest, true))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn record(&mut self, kind: &str, path: &str, detail: impl Into<String>) {
        self.changes.push(Change {
            kind: kind.to_string(),
            path: path.to_string(),
            detail: detail.into(),
        });
    }

    pub fn warn(&mut self, w: impl Into<String>) {
        let w = w.into();
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    fn mkdirs(&self, guest: &str) -> Result<(), AdaptError> {
        if let Some(parent) = Path::new(guest).parent() {
            let p = self.host_path(&parent.to_string_lossy(), true);
            fs::create_dir_all(&p).map_err(|e| AdaptError::io("creating the directory", p, e))?;
        }
        Ok(())
    }

    /// Writes `content` to a guest file when it differs. `orig`: keep the previous content at this guest
    /// path first (only if that does not exist yet, so the true original survives re-runs). Keeps the
    /// file's mode; new files get `mode`. Returns whether it changed.
    pub fn write(
        &mut self,
        kind: &str,
        guest: &str,
        content: &[u8],
        mode: u32,
        orig: Option<&str>,
        detail: impl Into<String>,
    ) -> Result<bool, AdaptError> {
        let old = self.read(guest)?;
        if old.as_deref() == Some(content) {
            return Ok(false);
        }
        self.record(kind, guest, detail);
        if self.dry_run {
            return Ok(true);
        }
        self.mkdirs(guest)?;
        let p = self.host_path(guest, true);
        if let (Some(o), Some(_)) = (orig, &old)
            && !self.exists(o)
        {
            let op = self.host_path(o, false);
            self.mkdirs(o)?;
            fs::copy(&p, &op).map_err(|e| AdaptError::io("keeping the original as", op, e))?;
        }
        // An existing file keeps its mode (truncating does not change it); a new one is created with
        // `mode` (no chmod afterwards: vfat refuses it).
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&p)
            .map_err(|e| AdaptError::io("writing", &p, e))?;
        f.write_all(content)
            .and_then(|()| f.sync_all())
            .map_err(|e| AdaptError::io("writing", &p, e))?;
        Ok(true)
    }

    /// Renames a guest file (no-op when `from` is missing; refuses to overwrite `to`).
    pub fn rename(
        &mut self,
        kind: &str,
        from: &str,
        to: &str,
        detail: impl Into<String>,
    ) -> Result<bool, AdaptError> {
        if !self.exists(from) {
            return Ok(false);
        }
        if self.exists(to) {
            // An earlier run kept an original already: the current file is ours or a re-creation.
            return self.remove(kind, from, detail);
        }
        self.record(kind, from, detail);
        if self.dry_run {
            return Ok(true);
        }
        self.mkdirs(to)?;
        let a = self.host_path(from, false);
        let b = self.host_path(to, false);
        fs::rename(&a, &b).map_err(|e| AdaptError::io("renaming", a, e))?;
        Ok(true)
    }

    /// Removes a guest file, symlink or directory tree (no-op when missing).
    pub fn remove(
        &mut self,
        kind: &str,
        guest: &str,
        detail: impl Into<String>,
    ) -> Result<bool, AdaptError> {
        let p = self.host_path(guest, false);
        let Ok(meta) = fs::symlink_metadata(&p) else {
            return Ok(false);
        };
        self.record(kind, guest, detail);
        if self.dry_run {
            return Ok(true);
        }
        let r = if meta.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        r.map_err(|e| AdaptError::io("removing", p, e))?;
        Ok(true)
    }

    /// Makes `guest` a symlink to `target` (replacing a different link).
    pub fn symlink(
        &mut self,
        kind: &str,
        guest: &str,
        target: &str,
        detail: impl Into<String>,
    ) -> Result<bool, AdaptError> {
        let p = self.host_path(guest, false);
        if fs::read_link(&p).is_ok_and(|t| t == Path::new(target)) {
            return Ok(false);
        }
        self.record(kind, guest, detail);
        if self.dry_run {
            return Ok(true);
        }
        self.mkdirs(guest)?;
        if fs::symlink_metadata(&p).is_ok() {
            fs::remove_file(&p).map_err(|e| AdaptError::io("replacing", &p, e))?;
        }
        std::os::unix::fs::symlink(target, &p).map_err(|e| AdaptError::io("linking", p, e))?;
        Ok(true)
    }

    /// Records a change made by a tool (the caller runs it when not a dry run).
    pub fn record_tool(&mut self, kind: &str, guest: &str, detail: impl Into<String>) {
        self.record(kind, guest, detail);
    }
}

/// Resolves `guest` under `root`, following symlinks as the guest would see them.
pub(crate) fn resolve(root: &Path, guest: &str, follow_last: bool) -> PathBuf {
    let mut parts: VecDeque<String> = guest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut cur = PathBuf::new();
    let mut hops = 0;
    while let Some(c) = parts.pop_front() {
        if c == "." {
            continue;
        }
        if c == ".." {
            cur.pop();
            continue;
        }
        let cand = root.join(&cur).join(&c);
        let is_last = parts.is_empty();
        match fs::read_link(&cand) {
            Ok(t) if (!is_last || follow_last) && hops < 40 => {
                hops += 1;
                if t.is_absolute() {
                    cur = PathBuf::new();
                }
                let mut new: VecDeque<String> = t
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                new.extend(parts.drain(..));
                parts = new;
            }
            _ => cur.push(&c),
        }
    }
    root.join(cur)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports failure
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("usr/lib")).unwrap();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::write(r.join("usr/lib/os-release"), "ID=x\n").unwrap();
        std::os::unix::fs::symlink("../usr/lib/os-release", r.join("etc/os-release")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("etc/abs")).unwrap();
        std::os::unix::fs::symlink("usr/lib", r.join("lib")).unwrap();
        assert_eq!(
            resolve(r, "/etc/os-release", true),
            r.join("usr/lib/os-release")
        );
        assert_eq!(
            resolve(r, "/etc/os-release", false),
            r.join("etc/os-release")
        );
        assert_eq!(resolve(r, "/etc/abs", true), r.join("etc/passwd"));
        assert_eq!(
            resolve(r, "/lib/os-release", true),
            r.join("usr/lib/os-release")
        );
        assert_eq!(resolve(r, "/../../etc/x", true), r.join("etc/x"));
    }
}
