//! Test support: a fresh PostgreSQL database per test, for the storage suite (`tests/`) and the whole-stack
//! tests (crate ferry-test-utils). Not used by the server itself.
//!
//! `FERRY_TEST_POSTGRES` holds the URL of a database on a test cluster (`scripts/pg-test.sh url`). Each
//! [`PgTestDb`] creates a database with a unique name on that cluster and drops it (`WITH (FORCE)`, so
//! connections a test leaves open do not keep it alive) when dropped, so tests run in parallel and leave
//! nothing behind. When the variable is set but the cluster cannot be reached, [`PgTestDb::create`] fails:
//! a test run that was asked to cover PostgreSQL must not quietly skip it.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::any::install_default_drivers;
use sqlx::{AnyPool, Executor};

use crate::{Db, DbError, Result};

/// The environment variable naming the test cluster's database URL.
pub const ENV: &str = "FERRY_TEST_POSTGRES";

/// A database created for one test; dropped with it.
pub struct PgTestDb {
    /// URL of the new database (same cluster and credentials as `FERRY_TEST_POSTGRES`).
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgTestDb {
    /// A fresh, empty database when `FERRY_TEST_POSTGRES` is set; `Ok(None)` when it is not.
    ///
    /// # Errors
    /// `DbError::Open` when the variable is set and the cluster cannot be reached or refuses to create the
    /// database.
    pub async fn create() -> Result<Option<Self>> {
        let Ok(admin_url) = std::env::var(ENV) else {
            return Ok(None);
        };
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Lower-case letters, digits and `_` only: a valid unquoted identifier on every PostgreSQL.
        let name = format!(
            "ferry_t_{}_{}_{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let url = with_database(&admin_url, &name).ok_or_else(|| DbError::Open {
            url: crate::redact(&admin_url),
            source: sqlx::Error::Configuration(
                format!("{ENV} must be a postgres:// URL naming a database").into(),
            ),
        })?;
        let admin = admin_pool(&admin_url).await?;
        let created = admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await;
        admin.close().await;
        created.map_err(|source| DbError::Open {
            url: crate::redact(&admin_url),
            source,
        })?;
        Ok(Some(Self {
            url,
            admin_url,
            name,
        }))
    }

    /// Opens the database (applying the migrations).
    pub async fn open(&self) -> Result<Db> {
        Db::open(&self.url).await
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        // Drop runs outside any async context we could await in, possibly inside a runtime that must not
        // block: a thread of its own with a small runtime does the cleanup.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let admin = admin_pool(&admin_url)
                    .await
                    .map_err(std::io::Error::other)?;
                let r = admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
                admin.close().await;
                r.map(|_| ()).map_err(std::io::Error::other)
            })
        })
        .join();
        if let Ok(Err(e)) = done {
            eprintln!("cannot drop test database {}: {e}", self.name);
        }
    }
}

async fn admin_pool(url: &str) -> Result<AnyPool> {
    install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(|source| DbError::Open {
            url: crate::redact(url),
            source,
        })
}

/// `url` with its database name replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> Option<String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    let authority_start = url.find("://")? + 3;
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let path_start = base[authority_start..]
        .find('/')
        .map(|i| authority_start + i)
        .unwrap_or(base.len());
    Some(format!("{}/{name}{query}", &base[..path_start]))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5/ferry_test", "x").as_deref(),
            Some("postgres://u:p@127.0.0.1:5/x")
        );
        assert_eq!(
            with_database("postgresql://h/db?sslmode=disable", "x").as_deref(),
            Some("postgresql://h/x?sslmode=disable")
        );
        assert_eq!(
            with_database("postgres://h:5", "x").as_deref(),
            Some("postgres://h:5/x")
        );
        assert_eq!(with_database("sqlite://x.db", "x"), None);
    }
}
