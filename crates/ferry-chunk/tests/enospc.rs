//! A full data directory: needs root to mount a 4 MiB tmpfs; skips with a message otherwise.
#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use ferry_chunk::{LocalStore, ObjectStore, StoreError};

/// Unmounts on drop, so the tmpfs goes away whether the test passes or panics.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // A lazy unmount still detaches it if something holds a file open.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn mount_tmpfs(dir: &Path) -> Option<Mount> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(dir)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(Mount(dir.to_path_buf())),
        Ok(o) => {
            eprintln!(
                "SKIPPED full_disk_is_no_space: cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("SKIPPED full_disk_is_no_space: cannot run mount: {e}");
            None
        }
    }
}

#[tokio::test]
async fn full_disk_is_no_space_and_keeps_previous_objects() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = mount_tmpfs(dir.path()) else {
        return;
    };
    let store = LocalStore::open(&mount.0).unwrap();
    let object = |i: usize| Bytes::from(vec![(i % 251) as u8 + 1; 512 * 1024]);

    let mut stored = Vec::new();
    let mut failure = None;
    // 4 MiB cannot hold 20 objects of 512 KiB: the loop must hit the limit.
    for i in 0..20 {
        let key = format!("chunks/{i:02}");
        match store.put(&key, object(i)).await {
            Ok(()) => stored.push((key, i)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let err = failure.expect("a 4 MiB tmpfs accepted 10 MiB");
    assert!(matches!(err, StoreError::NoSpace { .. }), "got {err:?}");
    assert!(
        err.to_string()
            .contains("no space left in the server's data directory")
            && err.to_string().contains("free space or grow the volume")
    );
    assert!(!stored.is_empty(), "nothing fit at all");

    // Everything stored before the failure is intact, and the failed put left no trace.
    let keys: Vec<String> = stored.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(store.list("").await.unwrap(), keys);
    for (key, i) in &stored {
        assert_eq!(store.get(key).await.unwrap(), object(*i));
    }
    let temp_files = std::fs::read_dir(mount.0.join("chunks"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with('.'))
        })
        .count();
    assert_eq!(temp_files, 0);

    // Freeing space lets the run resume.
    store.delete(&stored[0].0).await.unwrap();
    store.put("chunks/after", object(99)).await.unwrap();
    drop(store);
    drop(mount);
}

/// With a reserve, puts stop before the volume is full: the space below the watermark stays free for
/// the database and the logs, and what was stored before is intact.
#[tokio::test]
async fn reserve_stops_puts_before_the_volume_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = mount_tmpfs(dir.path()) else {
        return;
    };
    let reserve = 1536 * 1024;
    let store = LocalStore::open(&mount.0).unwrap().with_reserve(reserve);
    let object = |i: usize| Bytes::from(vec![(i % 251) as u8 + 1; 256 * 1024]);
    let mut stored = 0;
    let err = loop {
        match store
            .put(&format!("chunks/{stored:02}"), object(stored))
            .await
        {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(
            stored < 16,
            "a 4 MiB tmpfs with a 1.5 MiB reserve took 4 MiB"
        );
    };
    assert!(matches!(err, StoreError::NoSpace { .. }), "got {err:?}");
    assert!(stored > 0, "nothing fit above the reserve");
    let free = ferry_chunk::free_space(&mount.0).unwrap();
    assert!(
        free >= reserve,
        "only {free} bytes left free, reserve {reserve}"
    );
    // The reserve is still writable for everything that is not bulk data.
    std::fs::write(mount.0.join("database"), vec![7u8; 1024 * 1024]).unwrap();
    for i in 0..stored {
        assert_eq!(
            store.get(&format!("chunks/{i:02}")).await.unwrap(),
            object(i)
        );
    }
    drop(store);
    drop(mount);
}
