//! Whole-stack tests on an S3-compatible object store: the test bucket that `scripts/s3-test.sh start`
//! serves (s3s-fs on loopback), a fresh prefix per test, and `ferry server --store s3://…` on it.
//!
//! `FERRY_TEST_S3` unset: [`TestS3::from_env`] prints why and returns `None` (the test skips). Set but not
//! answering: it fails, so a broken S3 setup cannot pass as skipped. Dropping a [`TestS3`] deletes what the
//! test stored under its prefix.

use std::path::Path;

use anyhow::Context as _;
use ferry_chunk::{ObjectStore as _, S3Config, S3Store};

use crate::free_port;
use crate::stack::ServerProc;

/// A fresh prefix in the test bucket.
pub struct TestS3 {
    pub cfg: S3Config,
    pub store: S3Store,
}

impl TestS3 {
    /// The test bucket with the prefix `<test>-<random>`, or `None` (after saying why) without
    /// FERRY_TEST_S3.
    ///
    /// # Errors
    /// FERRY_TEST_S3 is set but the store does not answer.
    pub async fn from_env(test: &str) -> anyhow::Result<Option<TestS3>> {
        let Ok(endpoint) = std::env::var("FERRY_TEST_S3") else {
            eprintln!(
                "SKIPPED {test}: FERRY_TEST_S3 is not set (scripts/s3-test.sh start && eval \"$(scripts/s3-test.sh env)\")"
            );
            return Ok(None);
        };
        let bucket =
            std::env::var("FERRY_TEST_S3_BUCKET").unwrap_or_else(|_| "ferry-test".to_owned());
        let prefix = format!("{test}-{:016x}", rand::random::<u64>());
        let mut cfg = S3Config::from_url(&format!("s3://{bucket}/{prefix}"))?;
        cfg.endpoint = Some(endpoint.clone());
        cfg.path_style = Some(true);
        let cfg = cfg.with_env();
        let store = S3Store::open(&cfg)?;
        store.check().await.with_context(|| {
            format!(
                "FERRY_TEST_S3={endpoint} is set but does not answer: start it with scripts/s3-test.sh start, or unset FERRY_TEST_S3 to skip"
            )
        })?;
        Ok(Some(TestS3 { cfg, store }))
    }

    /// `ferry server` arguments that put its objects here.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--store".to_owned(),
            self.cfg.url(),
            "--s3-endpoint".to_owned(),
            self.cfg.endpoint.clone().unwrap_or_default(),
            "--s3-region".to_owned(),
            self.cfg.region.clone(),
            "--s3-path-style".to_owned(),
        ]
    }

    /// The server's environment: the credentials (never on its command line).
    pub fn server_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(id) = &self.cfg.access_key_id {
            env.push(("AWS_ACCESS_KEY_ID".to_owned(), id.clone()));
        }
        if let Some(secret) = &self.cfg.secret_access_key {
            env.push(("AWS_SECRET_ACCESS_KEY".to_owned(), secret.clone()));
        }
        env
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        // A runtime and client of its own: the test's runtime may be the one waiting here, and the test's
        // client has connections whose tasks live on it.
        let cfg = self.cfg.clone();
        let cleanup = std::thread::spawn(move || {
            let (Ok(rt), Ok(store)) = (tokio::runtime::Runtime::new(), S3Store::open(&cfg)) else {
                return;
            };
            rt.block_on(async {
                for k in store.list("").await.unwrap_or_default() {
                    let _ = store.delete(&k).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

impl ServerProc {
    /// Starts a server whose object store is `s3` (`--store s3://…`, credentials in its environment).
    pub async fn start_on_s3(
        data_dir: &Path,
        s3: &TestS3,
        extra_args: &[&str],
    ) -> anyhow::Result<ServerProc> {
        let mut args = s3.server_args();
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let mut s = ServerProc {
            data_dir: data_dir.to_owned(),
            port: free_port(),
            proc: None,
            extra_args: args,
            env: s3.server_env(),
        };
        s.restart().await?;
        Ok(s)
    }
}
