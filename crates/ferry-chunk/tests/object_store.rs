//! The object-store suite: the same checks against every backend (`common::all`: local, and S3 when
//! FERRY_TEST_S3 is set).
#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use bytes::Bytes;
use ferry_chunk::StoreError;

#[tokio::test]
async fn put_get_exists_list_delete() {
    for b in common::all("basic").await {
        let (s, name) = (&b.store, b.name);
        assert!(!s.exists("a/b").await.unwrap(), "{name}");
        assert!(
            matches!(s.get("a/b").await, Err(StoreError::NotFound { .. })),
            "{name}"
        );
        s.put("a/b", Bytes::from_static(b"one")).await.unwrap();
        s.put("a/c", Bytes::from_static(b"two")).await.unwrap();
        s.put("ab", Bytes::from_static(b"three")).await.unwrap();
        s.put_deferred("x/y/z", Bytes::from_static(b"four"))
            .await
            .unwrap();
        s.sync_deferred().await.unwrap();
        assert!(s.exists("a/b").await.unwrap(), "{name}");
        if name == "local" {
            // s3s-fs keeps objects as files, so a prefix is a directory and HEAD on it fails with a 500
            // (real S3 answers 404); Ferry never asks for a key that is another key's prefix.
            assert!(
                !s.exists("a").await.unwrap(),
                "{name}: a prefix is not an object"
            );
        }
        assert_eq!(&s.get("a/b").await.unwrap()[..], b"one", "{name}");
        s.put("a/b", Bytes::from_static(b"uno")).await.unwrap();
        assert_eq!(
            &s.get("a/b").await.unwrap()[..],
            b"uno",
            "{name}: overwrite"
        );
        assert_eq!(&s.get("x/y/z").await.unwrap()[..], b"four", "{name}");

        assert_eq!(
            s.list("").await.unwrap(),
            ["a/b", "a/c", "ab", "x/y/z"],
            "{name}"
        );
        assert_eq!(s.list("a").await.unwrap(), ["a/b", "a/c", "ab"], "{name}");
        assert_eq!(s.list("a/").await.unwrap(), ["a/b", "a/c"], "{name}");
        assert_eq!(s.list("x/y/").await.unwrap(), ["x/y/z"], "{name}");
        assert_eq!(s.list("x/y/z").await.unwrap(), ["x/y/z"], "{name}");
        assert!(s.list("nope/").await.unwrap().is_empty(), "{name}");

        s.delete("a/b").await.unwrap();
        s.delete("a/b").await.unwrap();
        assert!(!s.exists("a/b").await.unwrap(), "{name}");
        assert_eq!(s.list("a/").await.unwrap(), ["a/c"], "{name}");
        for bad in ["../evil", "", "a//b", ".hidden"] {
            assert!(
                matches!(
                    s.put(bad, Bytes::new()).await,
                    Err(StoreError::InvalidKey { .. })
                ),
                "{name}: {bad:?}"
            );
        }
        assert!(s.location("a/c").ends_with("a/c"), "{name}");
    }
}

#[tokio::test]
async fn ranges() {
    for b in common::all("ranges").await {
        let (s, name) = (&b.store, b.name);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        s.put("r/obj", Bytes::from(data.clone())).await.unwrap();
        assert_eq!(
            &s.get_range("r/obj", 0..10).await.unwrap()[..],
            &data[0..10],
            "{name}"
        );
        assert_eq!(
            &s.get_range("r/obj", 4321..9999).await.unwrap()[..],
            &data[4321..9999],
            "{name}"
        );
        assert!(
            s.get_range("r/obj", 9990..10_010).await.is_err(),
            "{name}: a range past the end must fail, not come back short"
        );
        assert!(
            matches!(
                s.get_range("r/none", 0..1).await,
                Err(StoreError::NotFound { .. })
            ),
            "{name}"
        );
    }
}

/// A file larger than one multipart part (16 MiB): on S3 this is a multipart upload.
#[tokio::test]
async fn put_file_streams_large_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.raw");
    let data: Vec<u8> = (0..(40 * 1024 * 1024 + 12_345u32))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let small = dir.path().join("small.raw");
    std::fs::write(&small, b"tiny").unwrap();
    for b in common::all("putfile").await {
        let (s, name) = (&b.store, b.name);
        assert_eq!(
            s.put_file("exports/b/disk0.raw", &path).await.unwrap(),
            data.len() as u64,
            "{name}"
        );
        let back = s.get("exports/b/disk0.raw").await.unwrap();
        assert!(back == data, "{name}: content differs after put_file");
        assert_eq!(
            s.put_file("exports/b/s", &small).await.unwrap(),
            4,
            "{name}"
        );
        assert_eq!(&s.get("exports/b/s").await.unwrap()[..], b"tiny", "{name}");
        let missing = dir.path().join("nope");
        assert!(s.put_file("exports/b/n", &missing).await.is_err(), "{name}");
        assert!(!s.exists("exports/b/n").await.unwrap(), "{name}");
    }
}
