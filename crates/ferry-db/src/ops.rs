//! Queries for operations: the aggregate counts `/metrics` serves and the checks `/ready` runs.
//!
//! Every query here is an aggregate over an indexed column or a trivial statement, cheap enough to run on
//! every scrape or probe (a few per second at most). None of them writes.

use crate::{Db, Result};

/// `(value, count)` rows of a `GROUP BY`.
type Counts = Vec<(String, i64)>;

impl Db {
    /// How many replication jobs there are in each `Status` (statuses without jobs are absent).
    pub async fn job_count_by_status(&self) -> Result<Counts> {
        Ok(
            sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// How many source servers there are in each `State` (states without sources are absent).
    pub async fn source_count_by_state(&self) -> Result<Counts> {
        Ok(
            sqlx::query_as("SELECT state, COUNT(*) FROM sources GROUP BY state ORDER BY state")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// `(online, offline)`: source servers whose agent heart-beat at or after unix time `since`, and the
    /// others.
    pub async fn source_count_by_heartbeat(&self, since: i64) -> Result<(i64, i64)> {
        // COUNT of a CASE, not SUM: PostgreSQL's SUM of BIGINT is NUMERIC, which the Any driver cannot decode.
        let (online, all): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(CASE WHEN heartbeat_at >= $1 THEN 1 END), COUNT(*) FROM source_beats",
        )
        .bind(since)
        .fetch_one(&self.read)
        .await?;
        Ok((online, all - online))
    }

    /// A trivial round trip: the database answers.
    pub async fn ping(&self) -> Result<()> {
        let one: i64 = sqlx::query_scalar("SELECT 1").fetch_one(&self.read).await?;
        debug_assert_eq!(one, 1);
        Ok(())
    }

    /// The versions of this binary's migrations that the database has not applied successfully (empty
    /// when the schema is current). The server applies them at start; a non-empty answer later means the
    /// database was replaced or restored underneath it.
    pub async fn migrations_pending(&self) -> Result<Vec<i64>> {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_all(&self.read)
                .await?;
        Ok(sqlx::migrate!("./migrations")
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::now;

    /// SQLite always; PostgreSQL too when `FERRY_TEST_POSTGRES` names a database.
    async fn engines() -> Vec<(tempfile::TempDir, Db)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = Db::open_sqlite(&dir.path().join("t.db"))
            .await
            .expect("open sqlite");
        let mut dbs = vec![(dir, sqlite)];
        if let Ok(url) = std::env::var("FERRY_TEST_POSTGRES") {
            let pg = Db::open(&url).await.expect("open postgres");
            dbs.push((tempfile::tempdir().expect("tempdir"), pg));
        }
        dbs
    }

    /// A source in `state` whose agent last beat at `heartbeat_at`.
    async fn insert_source(db: &Db, id: &str, state: &str, heartbeat_at: i64) {
        let source = crate::SourceRecord {
            id: id.to_owned(),
            name: id.to_owned(),
            description: String::new(),
            state: state.to_owned(),
            error_code: None,
            status_info: None,
            agent_version: "1".into(),
            inventory: "{}".into(),
            prechecks: "[]".into(),
            heartbeat_at,
            created_at: heartbeat_at,
            token_id: "at-1".into(),
            agent_key_id: id.to_owned(),
            agent_secret_hash: "h".into(),
            job_id: None,
        };
        let mut tx = db.pool.begin().await.expect("begin");
        crate::records::source_insert(&mut tx, &source)
            .await
            .expect("insert source");
        tx.commit().await.expect("commit");
    }

    async fn insert_job(db: &Db, id: &str, status: &str) {
        sqlx::query(
            "INSERT INTO jobs (id, name, description, source_id, region_id, status, job_type, target_type, \
             image_name, run_once, replication_parameters, progress, created_at) \
             VALUES ($1, $1, '', 's-x', 'local', $2, 0, 'Image', 'img', 1, '{}', 0.0, 0)",
        )
        .bind(id)
        .bind(status)
        .execute(&db.pool)
        .await
        .expect("insert job");
    }

    fn count(rows: &Counts, key: &str) -> i64 {
        rows.iter().find(|(k, _)| k == key).map_or(0, |r| r.1)
    }

    #[tokio::test]
    async fn counts_follow_the_rows() {
        for (_dir, db) in engines().await {
            // A shared PostgreSQL database may hold other tests' rows: compare differences.
            let t = now();
            let jobs0 = db.job_count_by_status().await.expect("jobs");
            let states0 = db.source_count_by_state().await.expect("states");
            let (on0, off0) = db.source_count_by_heartbeat(t - 90).await.expect("hb");
            let tag = format!("{t}-{}", std::process::id());
            insert_source(&db, &format!("s-a{tag}"), "Available", t).await;
            insert_source(&db, &format!("s-b{tag}"), "InUse", t - 10).await;
            insert_source(&db, &format!("s-c{tag}"), "Unavailable", t - 1000).await;
            insert_job(&db, &format!("j-a{tag}"), "Finished").await;
            insert_job(&db, &format!("j-b{tag}"), "Finished").await;
            insert_job(&db, &format!("j-c{tag}"), "Running").await;

            let (on, off) = db.source_count_by_heartbeat(t - 90).await.expect("hb");
            assert_eq!((on - on0, off - off0), (2, 1));
            let states = db.source_count_by_state().await.expect("states");
            for s in ["Available", "InUse", "Unavailable"] {
                assert_eq!(count(&states, s) - count(&states0, s), 1, "{s}: {states:?}");
            }
            let jobs = db.job_count_by_status().await.expect("jobs");
            assert_eq!(count(&jobs, "Finished") - count(&jobs0, "Finished"), 2);
            assert_eq!(count(&jobs, "Running") - count(&jobs0, "Running"), 1);

            db.ping().await.expect("ping");
            assert_eq!(
                db.migrations_pending().await.expect("pending"),
                Vec::<i64>::new()
            );
        }
    }
}
