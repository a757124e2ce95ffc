//! The engines every storage test runs on: SQLite always, and PostgreSQL when FERRY_TEST_POSTGRES names a
//! test cluster (`scripts/pg-test.sh`; `scripts/test.sh` always sets it). Each call gives fresh, empty
//! databases: a temp SQLite file, and a uniquely named PostgreSQL database dropped after the test. A set but
//! unreachable FERRY_TEST_POSTGRES fails the test instead of skipping PostgreSQL.

use ferry_db::Db;
use ferry_db::testing::PgTestDb;

/// What keeps an engine's database alive until the end of the test.
#[allow(dead_code)]
pub enum Keep {
    Sqlite(tempfile::TempDir),
    Postgres(PgTestDb),
}

/// `(engine name, database, keep-alive)` for every configured engine.
pub async fn engines() -> Vec<(String, Db, Keep)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Db::open_sqlite(&dir.path().join("t.db"))
        .await
        .expect("open sqlite");
    let mut dbs = vec![("sqlite".to_owned(), sqlite, Keep::Sqlite(dir))];
    if let Some(pg) = postgres().await {
        let db = pg.open().await.unwrap_or_else(|e| {
            panic!("FERRY_TEST_POSTGRES is set but its database cannot be opened: {e}")
        });
        dbs.push(("postgres".to_owned(), db, Keep::Postgres(pg)));
    }
    dbs
}

/// A fresh PostgreSQL database when FERRY_TEST_POSTGRES is set.
pub async fn postgres() -> Option<PgTestDb> {
    PgTestDb::create().await.unwrap_or_else(|e| {
        panic!(
            "FERRY_TEST_POSTGRES is set but PostgreSQL is unreachable: {e}. Start the test cluster with \
             scripts/pg-test.sh start, or unset FERRY_TEST_POSTGRES to test SQLite only"
        )
    })
}
