//! End-to-end image building on real files: a generated 40 MiB disk, its chunks in a LocalStore, and
//! qemu-img (package qemu-utils; tests that need it skip with a message when it is missing).
#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use ferry_chunk::{
    ChunkStore, ChunkStoreError, DEFAULT_CHUNK_SIZE, Digest, DiskIndex, LocalStore, ObjectStore,
    encode,
};
use ferry_image::{
    ImageError, ImageFormat, build_disk_image, build_disk_image_with_progress, index_of_image,
    materialize_raw, qemu_img_compare, verify_raw, verify_raw_against,
};
use rand::{Rng, SeedableRng};

const MIB: usize = 1024 * 1024;

fn have_qemu_img(test: &str) -> bool {
    let ok = std::process::Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED {test}: qemu-img not found (apt-get install qemu-utils)");
    }
    ok
}

/// A disk of `mib` MiB (+ `tail` bytes) mixing random data, zero regions and text, 1 MiB regions.
fn make_disk(path: &Path, mib: usize, tail: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut disk = vec![0u8; mib * MIB + tail];
    for (i, region) in disk.chunks_mut(MIB).enumerate() {
        match i % 5 {
            0 | 3 => rng.fill(region),
            1 => {
                let line = format!("line {i}: the quick brown fox jumps over the lazy dog\n");
                for (b, c) in region.iter_mut().zip(line.bytes().cycle()) {
                    *b = c;
                }
            }
            // A region that is zero except one byte: a data chunk, not a hole.
            4 => region[region.len() / 2] = 0x5a,
            _ => {}
        }
    }
    std::fs::write(path, &disk).unwrap();
    disk
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    disk: Vec<u8>,
    source: PathBuf,
    index: DiskIndex,
    local: Arc<LocalStore>,
    chunks: ChunkStore,
}

/// Source disk → index (computed from the file) → every data chunk stored through put_verified.
async fn fixture(mib: usize, tail: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let source = root.join("source.raw");
    let disk = make_disk(&source, mib, tail, 7);
    let index = index_of_image(&source, DEFAULT_CHUNK_SIZE).unwrap();
    let local = Arc::new(LocalStore::open(root.join("objects")).unwrap());
    let chunks = ChunkStore::new(local.clone());
    for (i, digest) in index.data_chunks() {
        let (off, len) = index.chunk_extent(i);
        let data = &disk[off as usize..off as usize + len];
        chunks
            .put_verified(digest, Bytes::from(encode(data, 1)))
            .await
            .unwrap();
    }
    chunks.put_index("disk0", &index).await.unwrap();
    Fixture {
        _dir: dir,
        root,
        disk,
        source,
        index,
        local,
        chunks,
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn index_of_image_matches_the_reader_and_sees_zero_chunks() {
    let f = fixture(40, 0).await;
    let serial =
        DiskIndex::from_reader(&f.disk[..], f.disk.len() as u64, DEFAULT_CHUNK_SIZE).unwrap();
    assert_eq!(f.index, serial);
    assert_eq!(f.index.entries.len(), 40);
    let zeros = f
        .index
        .entries
        .iter()
        .filter(|d| **d == Digest::ZERO)
        .count();
    assert_eq!(zeros, 8, "regions 2, 7, 12, ... are all-zero");
}

#[tokio::test]
async fn materialize_is_byte_identical_and_sparse() {
    let f = fixture(40, 0).await;
    let out = f.root.join("out.raw");
    let last = AtomicU64::new(0);
    let calls = AtomicU64::new(0);
    materialize_raw(&f.index, &f.chunks, &out, |done| {
        assert!(
            done >= last.load(Ordering::Relaxed),
            "progress went backwards"
        );
        last.store(done, Ordering::Relaxed);
        calls.fetch_add(1, Ordering::Relaxed);
    })
    .await
    .unwrap();
    assert_eq!(last.load(Ordering::Relaxed), f.disk.len() as u64);
    assert!(calls.load(Ordering::Relaxed) > 1);

    let built = std::fs::read(&out).unwrap();
    assert_eq!(built.len(), f.disk.len());
    if let Some(pos) = built.iter().zip(&f.disk).position(|(a, b)| a != b) {
        panic!("materialized image differs from the source at byte {pos}");
    }
    let meta = std::fs::metadata(&out).unwrap();
    let allocated = meta.blocks() * 512;
    assert!(
        allocated < meta.len(),
        "not sparse: {allocated} bytes allocated for {}",
        meta.len()
    );
    // The 8 zero MiB are holes: at most the 32 data MiB are allocated (plus a little slack).
    assert!(allocated <= 33 * MIB as u64, "{allocated} bytes allocated");
    verify_raw(&out, &f.index.root_digest(), DEFAULT_CHUNK_SIZE).unwrap();
}

#[tokio::test]
async fn odd_sized_disk_with_a_short_last_chunk() {
    let f = fixture(5, 12_345).await;
    assert_eq!(f.index.entries.len(), 6);
    let out = f.root.join("odd.raw");
    materialize_raw(&f.index, &f.chunks, &out, |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), f.disk);
    verify_raw_against(&out, &f.index).unwrap();
}

#[tokio::test]
async fn build_qcow2_is_identical_per_qemu_img() {
    if !have_qemu_img("build_qcow2_is_identical_per_qemu_img") {
        return;
    }
    let f = fixture(40, 0).await;
    let out_dir = f.root.join("images");
    let index = f.chunks.get_index("disk0").await.unwrap();
    let built = build_disk_image(&index, &f.chunks, &out_dir, "d0", &[ImageFormat::Qcow2])
        .await
        .unwrap();
    assert_eq!(built.raw, out_dir.join("d0.raw"));
    assert_eq!(
        built.qcow2.as_deref(),
        Some(out_dir.join("d0.qcow2").as_path())
    );
    assert_eq!(built.root, f.index.root_digest());
    assert_eq!(built.size_bytes, 40 * MIB as u64);
    assert_eq!(std::fs::read(&built.raw).unwrap(), f.disk);

    let qcow2 = built.qcow2.clone().unwrap();
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::open(&qcow2).unwrap(), &mut magic).unwrap();
    assert_eq!(&magic, b"QFI\xfb", "not a qcow2 file");
    assert!(qemu_img_compare(&f.source, &qcow2).await.unwrap());
    assert!(qemu_img_compare(&built.raw, &qcow2).await.unwrap());

    // The comparison can fail: a different disk is reported as different.
    let other = f.root.join("other.raw");
    let mut changed = f.disk.clone();
    changed[20 * MIB + 3] ^= 1;
    std::fs::write(&other, &changed).unwrap();
    assert!(!qemu_img_compare(&other, &qcow2).await.unwrap());
    assert!(matches!(
        qemu_img_compare(&f.root.join("missing.raw"), &qcow2).await,
        Err(ImageError::QemuImg { .. })
    ));
}

#[tokio::test]
async fn every_export_format_matches_the_source() {
    if !have_qemu_img("every_export_format_matches_the_source") {
        return;
    }
    let f = fixture(8, 0).await;
    let out_dir = f.root.join("export");
    let formats = [
        ImageFormat::Vmdk,
        ImageFormat::Vhdx,
        ImageFormat::Vhd,
        ImageFormat::Qcow2,
        ImageFormat::Vmdk,
    ];
    let built = build_disk_image(&f.index, &f.chunks, &out_dir, "e", &formats)
        .await
        .unwrap();
    let names: Vec<ImageFormat> = built.images.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        names,
        [
            ImageFormat::Raw,
            ImageFormat::Vmdk,
            ImageFormat::Vhdx,
            ImageFormat::Vhd,
            ImageFormat::Qcow2
        ]
    );
    for (format, path) in &built.images {
        assert_eq!(path, &out_dir.join(format!("e.{format}")));
        assert!(
            qemu_img_compare(&f.source, path).await.unwrap(),
            "{format} differs from the source"
        );
    }
    assert_eq!(
        built.image(ImageFormat::Vhd),
        Some(out_dir.join("e.vhd").as_path())
    );
    // The vhd is fixed (Azure): its file holds the whole disk plus a 512-byte footer.
    let vhd_len = std::fs::metadata(out_dir.join("e.vhd")).unwrap().len();
    assert_eq!(vhd_len, 8 * MIB as u64 + 512);
}

#[tokio::test]
async fn a_corrupted_stored_chunk_fails_the_build_and_leaves_nothing() {
    let f = fixture(10, 0).await;
    // Damage the payload of one stored chunk (chunk 3, random data stored raw).
    let victim = f.index.entries[3];
    let path = f.local.local_path(&ChunkStore::chunk_key(&victim)).unwrap();
    let mut blob = std::fs::read(&path).unwrap();
    let at = blob.len() - 100;
    blob[at] ^= 0x01;
    std::fs::write(&path, &blob).unwrap();

    let out_dir = f.root.join("bad");
    let formats = if have_qemu_img("corrupted chunk (qcow2 part)") {
        vec![ImageFormat::Qcow2]
    } else {
        vec![]
    };
    let err = build_disk_image_with_progress(&f.index, &f.chunks, &out_dir, "d", &formats, |_| {})
        .await
        .unwrap_err();
    match &err {
        ImageError::Chunk {
            chunk: 3,
            offset,
            source,
        } => {
            assert_eq!(*offset, 3 * MIB as u64);
            assert!(
                matches!(**source, ChunkStoreError::Corrupt { digest, .. } if digest == victim)
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(
        files_in(&out_dir).is_empty(),
        "left {:?}",
        files_in(&out_dir)
    );

    // A missing chunk fails the same way.
    f.local
        .delete(&ChunkStore::chunk_key(&f.index.entries[0]))
        .await
        .unwrap();
    let out = f.root.join("missing.raw");
    let err = materialize_raw(&f.index, &f.chunks, &out, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Chunk { .. }), "{err:?}");
    assert!(!out.exists());
}

#[tokio::test]
async fn verify_names_the_chunk_with_a_flipped_byte() {
    let f = fixture(12, 0).await;
    let image = f.root.join("v.raw");
    materialize_raw(&f.index, &f.chunks, &image, |_| {})
        .await
        .unwrap();
    verify_raw_against(&image, &f.index).unwrap();

    // A flipped byte in a data chunk, then one in a hole (chunk 7 is all-zero).
    for (chunk, within) in [(5usize, 4242usize), (7, 100)] {
        assert_eq!(f.index.entries[7], Digest::ZERO);
        let mut bytes = f.disk.clone();
        bytes[chunk * MIB + within] ^= 0x80;
        std::fs::write(&image, &bytes).unwrap();
        match verify_raw_against(&image, &f.index) {
            Err(ImageError::VerifyFailed {
                first_bad: Some((c, off)),
                expected,
                actual,
                ..
            }) => {
                assert_eq!((c, off), (chunk, (chunk * MIB) as u64));
                assert_eq!(expected, f.index.root_digest());
                assert_ne!(actual, expected);
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = verify_raw(&image, &f.index.root_digest(), DEFAULT_CHUNK_SIZE).unwrap_err();
        assert!(matches!(
            err,
            ImageError::VerifyFailed {
                first_bad: None,
                ..
            }
        ));
        assert!(err.to_string().contains("rebuild it"));
    }

    // A truncated image is a size mismatch.
    std::fs::write(&image, &f.disk[..f.disk.len() - 1]).unwrap();
    assert!(matches!(
        verify_raw_against(&image, &f.index),
        Err(ImageError::SizeMismatch { .. })
    ));
}

#[tokio::test]
async fn invalid_names_and_indexes_are_refused() {
    let f = fixture(2, 0).await;
    for bad in ["", "../x", "a/b", ".hidden"] {
        assert!(matches!(
            build_disk_image(&f.index, &f.chunks, &f.root, bad, &[]).await,
            Err(ImageError::InvalidName { .. })
        ));
    }
    let broken = DiskIndex {
        entries: vec![],
        ..f.index.clone()
    };
    assert!(matches!(
        materialize_raw(&broken, &f.chunks, &f.root.join("x.raw"), |_| {}).await,
        Err(ImageError::Index(_))
    ));
}

/// The server runs builds with `tokio::spawn`, which needs `Send` futures.
#[test]
fn build_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let chunks = ChunkStore::new(Arc::new(LocalStore::open(dir.path()).unwrap()));
    let index = DiskIndex {
        disk_size: 0,
        chunk_size: DEFAULT_CHUNK_SIZE,
        entries: vec![],
    };
    let build = build_disk_image(&index, &chunks, dir.path(), "x", &[]);
    assert_send(&build);
    let raw = materialize_raw(&index, &chunks, dir.path(), |_| {});
    assert_send(&raw);
}
