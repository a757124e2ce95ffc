//! The object-store backends every store test runs against: a local directory always, and an
//! S3-compatible server when `FERRY_TEST_S3` names one (`scripts/s3-test.sh start` runs s3s-fs and
//! prints the variables). Unset: the S3 half is skipped with a printed reason. Set but unreachable: the
//! test fails, so a broken S3 setup in CI cannot pass as "skipped".
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // a panic is how a test reports failure

use std::sync::Arc;

use ferry_chunk::{LocalStore, ObjectStore, S3Config, S3Store};

/// One backend for one test: a fresh local directory, or a fresh prefix in the test bucket. Removes
/// what the test stored when dropped (S3: on a helper thread with its own runtime and its own client: the
/// test's client has connections whose tasks live on the test's runtime, which waits for the cleanup).
pub struct Backend {
    pub name: &'static str,
    pub store: Arc<dyn ObjectStore>,
    _dir: Option<tempfile::TempDir>,
    s3: Option<S3Config>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(cfg) = self.s3.take() {
            let cleanup = std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().expect("runtime");
                let Ok(s3) = S3Store::open(&cfg) else { return };
                rt.block_on(async {
                    for k in s3.list("").await.unwrap_or_default() {
                        let _ = s3.delete(&k).await;
                    }
                });
            });
            let _ = cleanup.join();
        }
    }
}

/// The S3 test settings from the environment, or `None` (after printing why) when unset.
pub fn s3_config(test: &str) -> Option<S3Config> {
    let Ok(endpoint) = std::env::var("FERRY_TEST_S3") else {
        eprintln!(
            "SKIPPED the S3 half of {test}: FERRY_TEST_S3 is not set (run `eval \"$(scripts/s3-test.sh start)\"` first)"
        );
        return None;
    };
    let bucket = std::env::var("FERRY_TEST_S3_BUCKET").unwrap_or_else(|_| "ferry-test".into());
    let prefix = format!("{test}-{:016x}", rand::random::<u64>());
    let mut cfg = S3Config::from_url(&format!("s3://{bucket}/{prefix}")).expect("test URL");
    cfg.endpoint = Some(endpoint);
    cfg.path_style = Some(true);
    Some(cfg.with_env())
}

/// A fresh local backend.
pub fn local() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::open(dir.path()).unwrap());
    Backend {
        name: "local",
        store,
        _dir: Some(dir),
        s3: None,
    }
}

/// A fresh S3 backend, `None` if FERRY_TEST_S3 is unset. Panics if it is set but does not answer.
pub async fn s3(test: &str) -> Option<Backend> {
    let cfg = s3_config(test)?;
    let store = S3Store::open(&cfg).unwrap_or_else(|e| panic!("FERRY_TEST_S3 is set, but: {e}"));
    if let Err(e) = store.check().await {
        let mut msg = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            msg.push_str(&format!(": {c}"));
            cause = c.source();
        }
        panic!(
            "FERRY_TEST_S3={} is set but the store does not answer ({msg}); start it with scripts/s3-test.sh start, or unset FERRY_TEST_S3 to skip the S3 tests",
            cfg.endpoint.as_deref().unwrap_or("")
        );
    }
    Some(Backend {
        name: "s3",
        store: Arc::new(store),
        _dir: None,
        s3: Some(cfg),
    })
}

/// Every available backend for `test`.
pub async fn all(test: &str) -> Vec<Backend> {
    let mut v = vec![local()];
    v.extend(s3(test).await);
    v
}
