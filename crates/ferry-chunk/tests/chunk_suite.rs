//! ChunkStore over every backend (`common::all`) and both layouts (one object per chunk, packed): the
//! same API must behave the same. Plus what only packs do: durability only after the pack is stored,
//! a bounded object count, and packs written by another process (a replica, a restart).
#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_chunk::{
    ChunkStore, ChunkStoreError, Digest, DiskIndex, IndexError, ObjectStore, PackConfig,
    PutOutcome, StoreError, encode, hash,
};

fn chunk(i: u32) -> Vec<u8> {
    format!("chunk number {i} ").repeat(200).into_bytes()
}

/// A chunk zstd cannot shrink, so packs fill at the raw size.
fn random_chunk(len: usize) -> Vec<u8> {
    use rand::RngCore as _;
    let mut v = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Small packs, so a test fills several; the age threshold out of the way unless a test wants it.
fn small_packs() -> PackConfig {
    PackConfig {
        target_size: 256 * 1024,
        max_age: Duration::from_secs(3600),
        max_sealed: 2,
    }
}

async fn layouts(store: &Arc<dyn ObjectStore>) -> Vec<(&'static str, ChunkStore)> {
    vec![
        ("loose", ChunkStore::new(store.clone())),
        (
            "packed",
            ChunkStore::open_packed(store.clone(), small_packs())
                .await
                .unwrap(),
        ),
    ]
}

#[tokio::test]
async fn put_get_missing_index_on_every_store() {
    for b in common::all("chunkapi").await {
        for (layout, chunks) in layouts(&b.store).await {
            let what = format!("{}/{layout}", b.name);
            // Both layouts share the store: each gets its own chunks.
            let salt = if layout == "loose" { 0 } else { 1000 };
            let data: Vec<Vec<u8>> = (0..40).map(|i| chunk(i + salt)).collect();
            let digests: Vec<Digest> = data.iter().map(|d| hash(d)).collect();
            for (i, d) in data.iter().enumerate().step_by(2) {
                let out = chunks
                    .put_verified(&digests[i], Bytes::from(encode(d, 1)))
                    .await
                    .unwrap();
                assert_eq!(out, PutOutcome::Stored, "{what}");
                let again = chunks
                    .put_verified(&digests[i], Bytes::from(encode(d, 3)))
                    .await
                    .unwrap();
                assert_eq!(again, PutOutcome::AlreadyPresent, "{what}");
            }
            chunks.flush().await.unwrap();
            let mut query = digests.clone();
            query.push(Digest::ZERO);
            let missing = chunks.missing(&query).await.unwrap();
            let expected: Vec<usize> = (1..40).step_by(2).collect();
            assert_eq!(missing, expected, "{what}");
            for i in (0..40).step_by(2) {
                assert_eq!(chunks.get(&digests[i]).await.unwrap(), data[i], "{what}");
            }
            assert!(
                matches!(
                    chunks.get(&digests[1]).await,
                    Err(ChunkStoreError::Store(StoreError::NotFound { .. }))
                ),
                "{what}"
            );
            // A bad blob is never stored.
            let err = chunks
                .put_verified(&digests[1], Bytes::from(encode(&data[3], 1)))
                .await
                .unwrap_err();
            assert!(matches!(err, ChunkStoreError::Rejected { .. }), "{what}");

            let index = DiskIndex {
                disk_size: 3 * 1000,
                chunk_size: 1000,
                entries: vec![digests[0], Digest::ZERO, digests[1]],
            };
            let name = format!("s-{layout}");
            assert!(
                matches!(
                    chunks.put_index(&name, &index).await,
                    Err(ChunkStoreError::Index(IndexError::MissingChunks {
                        count: 1,
                        ..
                    }))
                ),
                "{what}"
            );
            chunks
                .put_verified(&digests[1], Bytes::from(encode(&data[1], 1)))
                .await
                .unwrap();
            // put_index flushes the buffered chunk itself.
            let root = chunks.put_index(&name, &index).await.unwrap();
            assert_eq!(root, index.root_digest(), "{what}");
            assert_eq!(chunks.get_index(&name).await.unwrap(), index, "{what}");
        }
    }
}

#[tokio::test]
async fn a_buffered_chunk_is_missing_until_its_pack_is_stored() {
    for b in common::all("buffered").await {
        let chunks = ChunkStore::open_packed(b.store.clone(), small_packs())
            .await
            .unwrap();
        let data = chunk(7);
        let d = hash(&data);
        chunks
            .put_verified(&d, Bytes::from(encode(&data, 1)))
            .await
            .unwrap();
        assert_eq!(chunks.missing(&[d]).await.unwrap(), [0], "{}", b.name);
        // Readable while buffered, and not buffered twice.
        assert_eq!(chunks.get(&d).await.unwrap(), data, "{}", b.name);
        assert_eq!(
            chunks
                .put_verified(&d, Bytes::from(encode(&data, 1)))
                .await
                .unwrap(),
            PutOutcome::AlreadyPresent
        );
        assert!(
            b.store.list("packs/").await.unwrap().is_empty(),
            "{}",
            b.name
        );
        chunks.flush().await.unwrap();
        assert!(chunks.missing(&[d]).await.unwrap().is_empty(), "{}", b.name);
        let keys = b.store.list("packs/").await.unwrap();
        assert_eq!(
            keys.len(),
            2,
            "{}: one pack and its index: {keys:?}",
            b.name
        );
    }
}

#[tokio::test]
async fn the_age_threshold_flushes_by_itself() {
    for b in common::all("aged").await {
        let cfg = PackConfig {
            max_age: Duration::from_millis(200),
            ..small_packs()
        };
        let chunks = ChunkStore::open_packed(b.store.clone(), cfg).await.unwrap();
        let data = chunk(8);
        let d = hash(&data);
        chunks
            .put_verified(&d, Bytes::from(encode(&data, 1)))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !chunks.missing(&[d]).await.unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: the pack was not stored within 30 s of a 200 ms age limit",
                b.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// 1024 chunks of 64 KiB = 64 MiB with 256 KiB packs: loose = 1024 objects, packed = 2 per 256 KiB.
#[tokio::test]
async fn packs_bound_the_object_count() {
    for b in common::all("count").await {
        let chunks = ChunkStore::open_packed(b.store.clone(), small_packs())
            .await
            .unwrap();
        let mut stored = 0u64;
        let mut digests = Vec::new();
        for _ in 0..256 {
            let data = random_chunk(64 * 1024);
            let d = hash(&data);
            let blob = encode(&data, 1);
            stored += blob.len() as u64;
            chunks.put_verified(&d, Bytes::from(blob)).await.unwrap();
            digests.push(d);
        }
        chunks.flush().await.unwrap();
        let objects = b.store.list("").await.unwrap().len() as u64;
        let per_target = stored.div_ceil(small_packs().target_size);
        assert!(
            objects <= 2 * (per_target + 1),
            "{}: {objects} objects for {stored} bytes in {} KiB packs",
            b.name,
            small_packs().target_size / 1024
        );
        assert!(chunks.missing(&digests).await.unwrap().is_empty());
        // A restart (or another replica) finds every chunk from the pack indexes alone.
        let reopened = ChunkStore::open_packed(b.store.clone(), small_packs())
            .await
            .unwrap();
        assert!(
            reopened.missing(&digests).await.unwrap().is_empty(),
            "{}",
            b.name
        );
        let (packs, n) = reopened.pack_counts().unwrap();
        assert_eq!(n, 256, "{}", b.name);
        assert_eq!(packs as u64 * 2, objects, "{}", b.name);
        for d in digests.iter().step_by(37) {
            assert_eq!(hash(&reopened.get(d).await.unwrap()), *d, "{}", b.name);
        }
    }
}

/// Replica A stores chunks; replica B (its own ChunkStore on the same store, loaded before) commits an
/// index that references them, and reads them.
#[tokio::test]
async fn another_replica_sees_stored_packs() {
    for b in common::all("replicas").await {
        let a = ChunkStore::open_packed(b.store.clone(), small_packs())
            .await
            .unwrap();
        let r = ChunkStore::open_packed(b.store.clone(), small_packs())
            .await
            .unwrap();
        let data = chunk(9);
        let d = hash(&data);
        a.put_verified(&d, Bytes::from(encode(&data, 1)))
            .await
            .unwrap();
        a.flush().await.unwrap();
        let index = DiskIndex {
            disk_size: data.len() as u64,
            chunk_size: 1024 * 1024,
            entries: vec![d],
        };
        r.put_index("s-r", &index).await.unwrap();
        assert_eq!(r.get(&d).await.unwrap(), data, "{}", b.name);
    }
}

#[tokio::test]
async fn damage_in_a_pack_is_detected() {
    for b in common::all("damage").await {
        let chunks = ChunkStore::open_packed(b.store.clone(), small_packs())
            .await
            .unwrap();
        let data = chunk(10);
        let d = hash(&data);
        chunks
            .put_verified(&d, Bytes::from(encode(&data, 0)))
            .await
            .unwrap();
        chunks.flush().await.unwrap();
        let pack = b
            .store
            .list("packs/")
            .await
            .unwrap()
            .into_iter()
            .find(|k| k.ends_with(".pack"))
            .unwrap();
        let mut bytes = b.store.get(&pack).await.unwrap().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        b.store.put(&pack, Bytes::from(bytes)).await.unwrap();
        assert!(
            matches!(
                chunks.get(&d).await,
                Err(ChunkStoreError::Corrupt { digest, .. }) if digest == d
            ),
            "{}",
            b.name
        );
        // A damaged pack index is ignored: its chunks count as missing, so they are uploaded again.
        let pidx = pack.replace(".pack", ".pidx");
        let mut idx = b.store.get(&pidx).await.unwrap().to_vec();
        idx[30] ^= 1;
        b.store.put(&pidx, Bytes::from(idx)).await.unwrap();
        let reopened = ChunkStore::open_packed(b.store.clone(), small_packs())
            .await
            .unwrap();
        assert_eq!(reopened.missing(&[d]).await.unwrap(), [0], "{}", b.name);
    }
}
