//! ChunkStore over a real LocalStore in a temp directory.
#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::sync::Arc;

use bytes::Bytes;
use ferry_chunk::{
    ChunkError, ChunkStore, ChunkStoreError, Digest, DiskIndex, IndexError, LocalStore,
    ObjectStore, PutOutcome, StoreError, encode, hash,
};

fn store() -> (tempfile::TempDir, Arc<LocalStore>, ChunkStore) {
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(LocalStore::open(dir.path()).unwrap());
    let chunks = ChunkStore::new(local.clone());
    (dir, local, chunks)
}

fn chunk(i: u32) -> Vec<u8> {
    format!("chunk number {i} ").repeat(200).into_bytes()
}

#[test]
fn keys_are_as_documented() {
    let d = hash(b"abc");
    assert_eq!(
        ChunkStore::chunk_key(&d),
        "chunks/64/37/6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
    );
    assert_eq!(
        ChunkStore::index_key("s-123").unwrap(),
        "indexes/s-123.fidx"
    );
    for bad in ["", ".x", "a/b", "../x", "a b"] {
        assert!(matches!(
            ChunkStore::index_key(bad),
            Err(ChunkStoreError::InvalidIndexName { .. })
        ));
    }
}

#[tokio::test]
async fn put_verified_stores_as_received_and_dedups() {
    let (_dir, local, chunks) = store();
    let data = chunk(1);
    let d = hash(&data);
    let blob = encode(&data, 3);
    assert!(!chunks.has(&d).await.unwrap());
    assert_eq!(
        chunks
            .put_verified(&d, Bytes::from(blob.clone()))
            .await
            .unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(
        chunks
            .put_verified(&d, Bytes::from(blob.clone()))
            .await
            .unwrap(),
        PutOutcome::AlreadyPresent
    );
    assert!(chunks.has(&d).await.unwrap());
    // Stored byte for byte as received.
    let stored = local.get(&ChunkStore::chunk_key(&d)).await.unwrap();
    assert_eq!(&stored[..], &blob[..]);
    assert_eq!(chunks.get(&d).await.unwrap(), data);
    assert_eq!(
        std::fs::read(chunks.local_chunk_path(&d).unwrap()).unwrap(),
        blob
    );
}

#[tokio::test]
async fn put_verified_never_stores_a_bad_blob() {
    let (_dir, local, chunks) = store();
    let data = chunk(2);
    let d = hash(&data);
    let good = encode(&data, 1);

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let mut wrong_version = good.clone();
    wrong_version[4] = 2;
    let truncated = good[..good.len() - 3].to_vec();
    let other = encode(&chunk(3), 1);

    for (what, bad) in [
        ("flipped", flipped),
        ("version", wrong_version),
        ("truncated", truncated),
        ("other chunk", other),
    ] {
        let err = chunks.put_verified(&d, Bytes::from(bad)).await.unwrap_err();
        assert!(
            matches!(err, ChunkStoreError::Rejected { digest, .. } if digest == d),
            "{what}: {err:?}"
        );
    }
    assert!(!chunks.has(&d).await.unwrap());
    assert!(local.list("").await.unwrap().is_empty());

    // The specific variant survives as the source.
    let mut v2 = good.clone();
    v2[4] = 2;
    match chunks.put_verified(&d, Bytes::from(v2)).await {
        Err(ChunkStoreError::Rejected {
            source: ChunkError::UnsupportedVersion(2),
            ..
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn get_detects_damage_at_rest() {
    let (_dir, local, chunks) = store();
    let data = chunk(4);
    let d = hash(&data);
    chunks
        .put_verified(&d, Bytes::from(encode(&data, 0)))
        .await
        .unwrap();
    let path = local.local_path(&ChunkStore::chunk_key(&d)).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        chunks.get(&d).await,
        Err(ChunkStoreError::Corrupt {
            source: ChunkError::DigestMismatch { .. },
            ..
        })
    ));
    assert!(matches!(
        chunks.get(&hash(b"never stored")).await,
        Err(ChunkStoreError::Store(StoreError::NotFound { .. }))
    ));
}

#[tokio::test]
async fn missing_reports_indices_in_order() {
    let (_dir, _local, chunks) = store();
    let digests: Vec<Digest> = (0..100).map(|i| hash(&chunk(i))).collect();
    for i in (0..100).step_by(3) {
        let data = chunk(i);
        chunks
            .put_verified(&hash(&data), Bytes::from(encode(&data, 1)))
            .await
            .unwrap();
    }
    let mut query = digests.clone();
    query.push(Digest::ZERO);
    query.push(digests[1]);
    let missing = chunks.missing(&query).await.unwrap();
    let expected: Vec<usize> = (0..100)
        .filter(|i| i % 3 != 0)
        .chain(std::iter::once(101))
        .collect();
    assert_eq!(missing, expected);
    assert!(chunks.missing(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn put_index_refuses_missing_chunks_and_round_trips() {
    let (_dir, local, chunks) = store();
    let a = chunk(10);
    let b = chunk(11);
    let da = hash(&a);
    let db = hash(&b);
    let index = DiskIndex {
        disk_size: 4 * 1000 + 10,
        chunk_size: 1000,
        entries: vec![da, Digest::ZERO, db, da, db],
    };
    chunks
        .put_verified(&da, Bytes::from(encode(&a, 1)))
        .await
        .unwrap();
    match chunks.put_index("s-1", &index).await {
        Err(ChunkStoreError::Index(IndexError::MissingChunks { count: 1, first })) => {
            assert_eq!(first, db)
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(local.list("indexes/").await.unwrap().is_empty());
    assert!(matches!(
        chunks.get_index("s-1").await,
        Err(ChunkStoreError::Store(StoreError::NotFound { .. }))
    ));

    chunks
        .put_verified(&db, Bytes::from(encode(&b, 1)))
        .await
        .unwrap();
    let root = chunks.put_index("s-1", &index).await.unwrap();
    assert_eq!(root, index.root_digest());
    assert_eq!(chunks.get_index("s-1").await.unwrap(), index);
    assert_eq!(local.list("indexes/").await.unwrap(), ["indexes/s-1.fidx"]);

    let bad = DiskIndex {
        entries: vec![da],
        ..index.clone()
    };
    assert!(matches!(
        chunks.put_index("s-2", &bad).await,
        Err(ChunkStoreError::Index(
            IndexError::EntryCountMismatch { .. }
        ))
    ));

    // A damaged stored index is refused on read.
    let path = local.local_path("indexes/s-1.fidx").unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        chunks.get_index("s-1").await,
        Err(ChunkStoreError::Index(IndexError::RootMismatch { .. }))
    ));
}

/// Server handlers and workers run these on a multi-threaded runtime: their futures must be Send.
#[test]
fn futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (_dir, _local, chunks) = store();
    let d = hash(b"x");
    let index = DiskIndex {
        disk_size: 0,
        chunk_size: 1024,
        entries: vec![],
    };
    assert_send(&chunks.put_verified(&d, Bytes::new()));
    assert_send(&chunks.missing(&[d]));
    assert_send(&chunks.has(&d));
    assert_send(&chunks.get(&d));
    assert_send(&chunks.put_index("n", &index));
    assert_send(&chunks.get_index("n"));
}
