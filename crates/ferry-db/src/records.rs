//! Records and their operations, grouped by resource.

use sqlx::FromRow;

use crate::Durable as _;
use crate::{Db, DbError, Result, now};

/// A value bound to a `$n` placeholder of a list query built at run time.
enum Arg {
    Text(String),
    Int(i64),
}

/// The `WHERE` clause of a list query, built from the filters that are set, with its bound values. Every
/// value goes through a placeholder, never into the SQL text.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

impl Where {
    fn placeholder(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    /// `expr = value`, when `value` is set.
    fn eq(&mut self, expr: &str, value: Option<Arg>) {
        if let Some(v) = value {
            let ph = self.placeholder(v);
            self.clauses.push(format!("{expr} = {ph}"));
        }
    }

    /// `expr IN (values)` (`template` with `{}` standing for the list), when `values` is not empty.
    fn any_of(&mut self, template: &str, values: Vec<Arg>) {
        if values.is_empty() {
            return;
        }
        let list: Vec<String> = values.into_iter().map(|v| self.placeholder(v)).collect();
        self.clauses.push(template.replace("{}", &list.join(", ")));
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// One page of `select` (a `SELECT … FROM <table> …` without `WHERE`) and the total count of matching
    /// rows of `table`, ordered by `order` (columns of `table`, unambiguous in `select`).
    ///
    /// The count and the page's keys are read from `table` alone, the keys in a subquery that can be an
    /// index-only scan where the table's pages are all-visible; only the page's own rows are read whole
    /// (with whatever `select` adds). `LIMIT … OFFSET` over whole rows reads every skipped row from the
    /// table: page 100 of 10,000 sources visits 5,050 rows for 50.
    async fn page<T>(
        &self,
        pool: &sqlx::AnyPool,
        select: &str,
        table: &str,
        order: &str,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<T>, i64)>
    where
        T: for<'r> FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        let w = self.sql();
        let count_sql = format!("SELECT COUNT(*) FROM {table}{w}");
        let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
        for a in &self.args {
            count = match a {
                Arg::Text(t) => count.bind(t.as_str()),
                Arg::Int(i) => count.bind(*i),
            };
        }
        let total = count.fetch_one(pool).await?;
        let n = self.args.len();
        let page_sql = format!(
            "{select} WHERE {table}.id IN (SELECT id FROM {table}{w} ORDER BY {order} LIMIT ${} OFFSET ${}) \
             ORDER BY {order}",
            n + 1,
            n + 2,
        );
        let mut q = sqlx::query_as::<_, T>(&page_sql);
        for a in &self.args {
            q = match a {
                Arg::Text(t) => q.bind(t.as_str()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        let items = q
            .bind(limit.max(0))
            .bind(offset.max(0))
            .fetch_all(pool)
            .await?;
        Ok((items, total))
    }
}

fn texts(v: &[String]) -> Vec<Arg> {
    v.iter().map(|s| Arg::Text(s.clone())).collect()
}

fn text(v: &Option<String>) -> Option<Arg> {
    v.as_ref().map(|s| Arg::Text(s.clone()))
}

// ---------------------------------------------------------------------------------------------------------
// meta and credentials

impl Db {
    pub async fn meta_get(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.read)
            .await?)
    }

    /// Sets `key` only if it is not set yet; returns the value that is stored afterwards.
    pub async fn meta_init(&self, key: &str, value: &str) -> Result<String> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .durable(self)
            .await?;
        self.meta_get(key).await?.ok_or(DbError::Corrupt {
            what: "meta",
            detail: format!("key {key} vanished after insert"),
        })
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct AccessKeyRecord {
    pub id: String,
    pub secret: String,
    pub user_name: Option<String>,
    pub status: String,
    pub created_at: i64,
}

impl Db {
    pub async fn access_key_create(&self, key: &AccessKeyRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO access_keys (id, secret, user_name, status, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.id)
        .bind(&key.secret)
        .bind(&key.user_name)
        .bind(&key.status)
        .bind(key.created_at)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(())
    }

    pub async fn access_key_get(&self, id: &str) -> Result<Option<AccessKeyRecord>> {
        Ok(sqlx::query_as("SELECT * FROM access_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?)
    }

    /// Records a request nonce; returns `false` when it was already used and has not expired yet.
    ///
    /// The use is committed when this returns, not yet durable: the call the nonce admits is answered
    /// only once its audit record is durable, and the log flush that makes it so covers every commit
    /// before it, the nonce's included (`group.rs`). On SQLite the nonce is committed with the other
    /// nonces and audit events queued at the same moment (one turn on the one writer connection). On
    /// PostgreSQL it is committed on its own with `synchronous_commit = off` (`relaxed`): in a batch
    /// with audit records it would wait for the audit chain's head row, which every replica's appends
    /// take in turn, and for that batch's WAL flush (under the load benchmark, setup (b): 2.6 ms on
    /// average and up to 294 ms for the head row alone).
    pub async fn nonce_use(&self, nonce: &str, expires_at: i64) -> Result<bool> {
        if self.postgres_url.is_some() {
            return crate::group::nonce_insert(&self.relaxed, nonce, expires_at, now()).await;
        }
        self.writer.nonce_use(nonce, expires_at).await
    }
}

// ---------------------------------------------------------------------------------------------------------
// activation codes

#[derive(Debug, Clone, FromRow)]
pub struct ActivationCodeRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    pub code_hash: String,
    pub max_count: i64,
    pub registered_count: i64,
    pub ttl_days: i64,
    pub disabled: i64,
    pub created_at: i64,
}

impl ActivationCodeRecord {
    pub fn expires_at(&self) -> i64 {
        self.created_at + self.ttl_days * 86_400
    }
}

impl Db {
    pub async fn activation_code_create(&self, c: &ActivationCodeRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO activation_codes (id, name, description, code_hash, max_count, registered_count, \
             ttl_days, disabled, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&c.id)
        .bind(&c.name)
        .bind(&c.description)
        .bind(&c.code_hash)
        .bind(c.max_count)
        .bind(c.registered_count)
        .bind(c.ttl_days)
        .bind(c.disabled)
        .bind(c.created_at)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(())
    }

    pub async fn activation_code_by_hash(
        &self,
        code_hash: &str,
    ) -> Result<Option<ActivationCodeRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM activation_codes WHERE code_hash = $1")
                .bind(code_hash)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    pub async fn activation_code_list(&self) -> Result<Vec<ActivationCodeRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM activation_codes ORDER BY created_at, id")
                .fetch_all(&self.read)
                .await?,
        )
    }

    pub async fn activation_code_disable(&self, id: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE activation_codes SET disabled = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn activation_code_delete(&self, id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM activation_codes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Registers a source with an activation code in one transaction: the code's use count goes up only if
    /// it is still usable at `at` (not disabled, not expired, uses left), and the source is inserted with it.
    /// Returns `false` (and changes nothing) when the code was not usable.
    pub async fn source_register(
        &self,
        code_id: &str,
        source: &SourceRecord,
        at: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE activation_codes SET registered_count = registered_count + 1 \
             WHERE id = $1 AND disabled = 0 AND registered_count < max_count \
             AND created_at + ttl_days * 86400 > $2",
        )
        .bind(code_id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        source_insert(&mut tx, source).await?;
        tx.commit().durable(self).await?;
        Ok(true)
    }
}

// ---------------------------------------------------------------------------------------------------------
// sources

#[derive(Debug, Clone, FromRow)]
pub struct SourceRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    pub state: String,
    pub error_code: Option<String>,
    pub status_info: Option<String>,
    pub agent_version: String,
    /// JSON of `ferry_types::inventory::Inventory`.
    pub inventory: String,
    /// JSON of `Vec<ferry_types::inventory::Precheck>`.
    pub prechecks: String,
    pub heartbeat_at: i64,
    pub created_at: i64,
    pub token_id: String,
    pub agent_key_id: String,
    pub agent_secret_hash: String,
    pub job_id: Option<String>,
}

/// A source's row and its heartbeat row (migration 0012: every source has exactly one).
pub(crate) async fn source_insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    s: &SourceRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sources (id, name, description, state, error_code, status_info, inventory, \
         prechecks, created_at, token_id, agent_key_id, agent_secret_hash, job_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&s.id)
    .bind(&s.name)
    .bind(&s.description)
    .bind(&s.state)
    .bind(&s.error_code)
    .bind(&s.status_info)
    .bind(&s.inventory)
    .bind(&s.prechecks)
    .bind(s.created_at)
    .bind(&s.token_id)
    .bind(&s.agent_key_id)
    .bind(&s.agent_secret_hash)
    .bind(&s.job_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO source_beats (source_id, heartbeat_at, agent_version) VALUES ($1, $2, $3)",
    )
    .bind(&s.id)
    .bind(s.heartbeat_at)
    .bind(&s.agent_version)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `SELECT` of whole [`SourceRecord`]s: a source's row with the two columns of its heartbeat row
/// (migration 0012). Callers append `WHERE`/`ORDER BY` on `sources`' columns (`heartbeat_at` names the
/// beat's). Looked up per row rather than joined, so that a page of 50 sources costs 50 index probes
/// whatever the planner thinks of the subquery that chose them (PostgreSQL hashed all 10,000 beats).
pub(crate) const SOURCE_SELECT: &str = "SELECT sources.*, \
     (SELECT b.heartbeat_at FROM source_beats b WHERE b.source_id = sources.id) AS heartbeat_at, \
     (SELECT b.agent_version FROM source_beats b WHERE b.source_id = sources.id) AS agent_version \
     FROM sources";

/// Filters for `source_list`; empty fields are not applied.
#[derive(Debug, Clone, Default)]
pub struct SourceFilter {
    pub ids: Vec<String>,
    pub name: Option<String>,
    pub state: Option<String>,
    pub job_id: Option<String>,
    /// `RelatedJobType.N`: sources whose current job has one of these `JobType`s.
    pub related_job_types: Vec<i64>,
}

impl Db {
    pub async fn source_get(&self, id: &str) -> Result<Option<SourceRecord>> {
        Ok(
            sqlx::query_as(&format!("{SOURCE_SELECT} WHERE sources.id = $1"))
                .bind(id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    pub async fn source_by_agent_key(&self, key_id: &str) -> Result<Option<SourceRecord>> {
        Ok(
            sqlx::query_as(&format!("{SOURCE_SELECT} WHERE agent_key_id = $1"))
                .bind(key_id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    /// Lists sources matching `filter`, ordered by creation; returns one page and the total count. The
    /// filters, the count and the page are all computed in SQL (indexes: migration 0008).
    pub async fn source_list(
        &self,
        filter: &SourceFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<SourceRecord>, i64)> {
        let mut w = Where::default();
        w.any_of("id IN ({})", texts(&filter.ids));
        w.eq("name", text(&filter.name));
        w.eq("state", text(&filter.state));
        w.eq("job_id", text(&filter.job_id));
        w.any_of(
            "job_id IN (SELECT id FROM jobs WHERE job_type IN ({}))",
            filter
                .related_job_types
                .iter()
                .map(|t| Arg::Int(*t))
                .collect(),
        );
        w.page(
            &self.read,
            SOURCE_SELECT,
            "sources",
            "created_at, id",
            offset,
            limit,
        )
        .await
    }

    /// Records a heartbeat with its inventory/prechecks when given. A relaxed write (`Db::relaxed`): a
    /// power failure may lose it; the agent's next heartbeat sets the time again.
    pub async fn source_update_heartbeat(
        &self,
        id: &str,
        at: i64,
        agent_version: &str,
        inventory: Option<&str>,
        prechecks: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.relaxed.begin().await?;
        sqlx::query(
            "UPDATE source_beats SET heartbeat_at = $2, agent_version = $3 WHERE source_id = $1",
        )
        .bind(id)
        .bind(at)
        .bind(agent_version)
        .execute(&mut *tx)
        .await?;
        if inventory.is_some() || prechecks.is_some() {
            sqlx::query(
                "UPDATE sources SET inventory = COALESCE($2, inventory), \
                 prechecks = COALESCE($3, prechecks) WHERE id = $1",
            )
            .bind(id)
            .bind(inventory)
            .bind(prechecks)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn source_set_state(
        &self,
        id: &str,
        state: &str,
        error_code: Option<&str>,
        status_info: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE sources SET state = $2, error_code = $3, status_info = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(error_code)
        .bind(status_info)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(())
    }

    /// Is `name` used by a source server other than `except_id`?
    pub async fn source_name_taken(&self, name: &str, except_id: &str) -> Result<bool> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sources WHERE name = $1 AND id <> $2")
                .bind(name)
                .bind(except_id)
                .fetch_one(&self.read)
                .await?;
        Ok(n > 0)
    }

    /// ModifySourceServerAttribute: sets what is given; returns `false` if the source does not exist.
    pub async fn source_update_attributes(
        &self,
        id: &str,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE sources SET name = COALESCE($2, name), description = COALESCE($3, description) \
             WHERE id = $1 AND state <> 'Deleting'",
        )
        .bind(id)
        .bind(name)
        .bind(description)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes a source server's row, which revokes its agent's credentials (they are looked up by it).
    /// The caller has dealt with the source's jobs first. Returns `false` if it did not exist.
    pub async fn source_delete(&self, id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM source_beats WHERE source_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query("DELETE FROM sources WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().durable(self).await?;
        Ok(r.rows_affected() == 1)
    }
}

/// Detaches a job from its source: the source has no open job any more, so `InUse` becomes `Available`
/// (an `Unavailable` or `Deleting` source keeps its state; the next heartbeat decides).
async fn source_release_job(tx: &mut sqlx::Transaction<'_, sqlx::Any>, job_id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE sources SET job_id = NULL, \
         state = CASE WHEN state = 'InUse' THEN 'Available' ELSE state END WHERE job_id = $1",
    )
    .bind(job_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// replication jobs

#[derive(Debug, Clone, FromRow)]
pub struct JobRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    pub source_id: String,
    pub region_id: String,
    pub status: String,
    pub business_status: Option<String>,
    pub error_code: Option<String>,
    pub status_info: Option<String>,
    pub job_type: i64,
    pub target_type: String,
    pub image_name: String,
    pub image_id: Option<String>,
    pub run_once: i64,
    pub frequency: Option<i64>,
    pub max_images: Option<i64>,
    pub replication_parameters: String,
    pub progress: f64,
    pub created_at: i64,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub scheduled_start_time: Option<i64>,
    pub valid_time: Option<i64>,
    pub client_token: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub ids: Vec<String>,
    pub source_ids: Vec<String>,
    pub name: Option<String>,
    pub status: Option<String>,
    pub business_status: Option<String>,
    pub region_id: Option<String>,
    pub job_type: Option<i64>,
    /// `InstanceId.N`: jobs whose target (or cross-zone) instance is one of these.
    pub instance_ids: Vec<String>,
}

/// What a job needs beyond `JobRecord` (table `job_settings`, migration 0004). A job without a row reads as
/// `JobSettingsRecord::empty`.
#[derive(Debug, Clone, FromRow)]
pub struct JobSettingsRecord {
    pub job_id: String,
    pub instance_id: Option<String>,
    /// Versioned JSON of the job's target and disk layout (`ferry_server::app::jobs::JobSettings`).
    pub settings: String,
    /// 1 once CutOverReplicationJob(SyncData=true) started the final run.
    pub cutover: i64,
    pub expired_at: Option<i64>,
}

impl JobSettingsRecord {
    pub fn empty(job_id: &str) -> Self {
        Self {
            job_id: job_id.to_owned(),
            instance_id: None,
            settings: "{}".to_owned(),
            cutover: 0,
            expired_at: None,
        }
    }
}

/// Job statuses in which a source counts as having an open job (SMC: one open job per source).
pub const OPEN_JOB_STATUSES: &[&str] = &[
    "Ready", "Running", "Stopped", "Waiting", "InError", "Expired",
];

impl Db {
    /// Creates a job and marks its source `InUse` in one transaction, if the source is `Available` and has
    /// no open job. Returns `false` (nothing changed) otherwise.
    pub async fn job_create(&self, j: &JobRecord) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE sources SET state = 'InUse', job_id = $2 WHERE id = $1 AND state = 'Available'",
        )
        .bind(&j.source_id)
        .bind(&j.id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        job_insert(&mut tx, j).await?;
        tx.commit().durable(self).await?;
        Ok(true)
    }

    pub async fn job_get(&self, id: &str) -> Result<Option<JobRecord>> {
        Ok(sqlx::query_as("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?)
    }

    pub async fn job_by_client_token(&self, token: &str) -> Result<Option<JobRecord>> {
        Ok(sqlx::query_as("SELECT * FROM jobs WHERE client_token = $1")
            .bind(token)
            .fetch_optional(&self.read)
            .await?)
    }

    pub async fn job_name_taken(&self, name: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE name = $1")
            .bind(name)
            .fetch_one(&self.read)
            .await?;
        Ok(n > 0)
    }

    /// Lists jobs matching `f`, ordered by creation; returns one page and the total count. The filters, the
    /// count and the page are all computed in SQL (indexes: migration 0008).
    pub async fn job_list(
        &self,
        f: &JobFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<JobRecord>, i64)> {
        let mut w = Where::default();
        w.any_of("id IN ({})", texts(&f.ids));
        w.any_of("source_id IN ({})", texts(&f.source_ids));
        w.eq("name", text(&f.name));
        w.eq("status", text(&f.status));
        w.eq("business_status", text(&f.business_status));
        w.eq("region_id", text(&f.region_id));
        w.eq("job_type", f.job_type.map(Arg::Int));
        w.any_of(
            "id IN (SELECT job_id FROM job_settings WHERE instance_id IN ({}))",
            texts(&f.instance_ids),
        );
        w.page(
            &self.read,
            "SELECT * FROM jobs",
            "jobs",
            "created_at, id",
            offset,
            limit,
        )
        .await
    }

    /// Moves a job from one of `from` to `status`/`business_status`; returns `false` when the job was not in
    /// one of `from` (someone else moved it first).
    pub async fn job_transition(
        &self,
        id: &str,
        from: &[&str],
        status: &str,
        business_status: Option<&str>,
    ) -> Result<bool> {
        let job = match self.job_get(id).await? {
            Some(j) => j,
            None => return Ok(false),
        };
        let from_ok = from.iter().any(|f| {
            let (s, b) = f.split_once('/').unwrap_or((f, ""));
            job.status == s && (b.is_empty() || job.business_status.as_deref() == Some(b))
        });
        if !from_ok {
            return Ok(false);
        }
        let r = sqlx::query(
            "UPDATE jobs SET status = $2, business_status = $3, \
             error_code = CASE WHEN $2 = 'InError' THEN error_code ELSE NULL END, \
             status_info = CASE WHEN $2 = 'InError' THEN status_info ELSE NULL END \
             WHERE id = $1 AND status = $4 AND COALESCE(business_status, '') = $5",
        )
        .bind(id)
        .bind(status)
        .bind(business_status)
        .bind(&job.status)
        .bind(job.business_status.as_deref().unwrap_or(""))
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn job_set_error(&self, id: &str, code: &str, info: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'InError', business_status = NULL, error_code = $2, status_info = $3 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(code)
        .bind(info)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(())
    }

    /// Sets or clears the job's informational message without changing its status (e.g. "paused: server
    /// out of space"). A relaxed write (`Db::relaxed`): the message is set again while its cause lasts.
    pub async fn job_set_status_info(&self, id: &str, info: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE jobs SET status_info = $2 WHERE id = $1")
            .bind(id)
            .bind(info)
            .execute(&self.relaxed)
            .await?;
        Ok(())
    }

    /// A relaxed write (`Db::relaxed`): a power failure may lose the last progress; the next one replaces it.
    pub async fn job_set_progress(&self, id: &str, progress: f64) -> Result<()> {
        sqlx::query("UPDATE jobs SET progress = $2 WHERE id = $1")
            .bind(id)
            .bind(progress)
            .execute(&self.relaxed)
            .await?;
        Ok(())
    }

    pub async fn job_set_times(
        &self,
        id: &str,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET start_time = COALESCE($2, start_time), end_time = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(start)
        .bind(end)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(())
    }

    /// Finishes a run's image step: the job records the image and moves to `status`; for a finished
    /// job the source becomes available again. A job being deleted (`Deleting`) is left alone.
    pub async fn job_complete(
        &self,
        id: &str,
        image_id: &str,
        status: &str,
        at: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE jobs SET status = $2, business_status = NULL, image_id = $3, end_time = $4, progress = 100, \
             error_code = NULL, status_info = NULL WHERE id = $1 AND status <> 'Deleting'",
        )
        .bind(id)
        .bind(status)
        .bind(image_id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 1 && status == "Finished" {
            source_release_job(&mut tx, id).await?;
        }
        tx.commit().durable(self).await?;
        Ok(())
    }
}

impl Db {
    /// Creates a job with its settings and marks its source `InUse`, all in one transaction, if the source
    /// is `Available` and has no open job. Returns `false` (nothing changed) otherwise. Fails with a SQL
    /// error when the job's `client_token` is already used (a concurrent create with the same token): the
    /// caller then answers with that job.
    pub async fn job_create_with_settings(
        &self,
        j: &JobRecord,
        settings: &JobSettingsRecord,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE sources SET state = 'InUse', job_id = $2 WHERE id = $1 AND state = 'Available'",
        )
        .bind(&j.source_id)
        .bind(&j.id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        job_insert(&mut tx, j).await?;
        job_settings_upsert(&mut tx, settings).await?;
        tx.commit().durable(self).await?;
        Ok(true)
    }

    pub async fn job_settings_get(&self, job_id: &str) -> Result<JobSettingsRecord> {
        let found: Option<JobSettingsRecord> =
            sqlx::query_as("SELECT * FROM job_settings WHERE job_id = $1")
                .bind(job_id)
                .fetch_optional(&self.read)
                .await?;
        Ok(found.unwrap_or_else(|| JobSettingsRecord::empty(job_id)))
    }

    pub async fn job_settings_put(&self, s: &JobSettingsRecord) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        job_settings_upsert(&mut tx, s).await?;
        tx.commit().durable(self).await?;
        Ok(())
    }

    /// Every job, oldest first (for the scheduler, which looks at each job's clock).
    pub async fn job_list_all(&self) -> Result<Vec<JobRecord>> {
        Ok(sqlx::query_as("SELECT * FROM jobs ORDER BY created_at, id")
            .fetch_all(&self.read)
            .await?)
    }

    /// ModifyReplicationJobAttribute: writes the job's modifiable columns from `j`, only if the job is still
    /// in `j.status` (a concurrent transition wins). Returns `false` otherwise.
    pub async fn job_update_attributes(&self, j: &JobRecord) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET name = $2, description = $3, target_type = $4, image_name = $5, frequency = $6, \
             max_images = $7, replication_parameters = $8, scheduled_start_time = $9, valid_time = $10 \
             WHERE id = $1 AND status = $11",
        )
        .bind(&j.id)
        .bind(&j.name)
        .bind(&j.description)
        .bind(&j.target_type)
        .bind(&j.image_name)
        .bind(j.frequency)
        .bind(j.max_images)
        .bind(&j.replication_parameters)
        .bind(j.scheduled_start_time)
        .bind(j.valid_time)
        .bind(&j.status)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A job whose `ValidTime` passed while it was in one of `from` becomes `Expired` (its source keeps it as
    /// its open job until the purge). Returns `false` if the job was no longer in one of `from`.
    pub async fn job_expire(&self, id: &str, from: &str, at: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE jobs SET status = 'Expired', business_status = NULL WHERE id = $1 AND status = $2",
        )
        .bind(id)
        .bind(from)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let mut settings: JobSettingsRecord =
            sqlx::query_as("SELECT * FROM job_settings WHERE job_id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or_else(|| JobSettingsRecord::empty(id));
        settings.expired_at = Some(at);
        job_settings_upsert(&mut tx, &settings).await?;
        tx.commit().durable(self).await?;
        Ok(true)
    }

    /// Ends a job without a further run (CutOverReplicationJob with SyncData=false): `Waiting` →
    /// `Finished`, keeping its last image, and releases its source. Returns `false` if it was not `Waiting`.
    pub async fn job_finish_waiting(&self, id: &str, at: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE jobs SET status = 'Finished', business_status = NULL, end_time = $2, progress = 100, \
             error_code = NULL, status_info = NULL WHERE id = $1 AND status = 'Waiting'",
        )
        .bind(id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        source_release_job(&mut tx, id).await?;
        tx.commit().durable(self).await?;
        Ok(true)
    }

    /// DeleteReplicationJob's first step: a job that is neither `Running` nor already `Deleting` becomes
    /// `Deleting` and its source is released at once. Returns the status it was in, or `None` if it was
    /// `Running`/`Deleting` (or does not exist).
    pub async fn job_delete_begin(&self, id: &str) -> Result<Option<String>> {
        let mut tx = self.pool.begin().await?;
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(status) = status.filter(|s| s != "Running" && s != "Deleting") else {
            tx.rollback().await?;
            return Ok(None);
        };
        let r = sqlx::query(
            "UPDATE jobs SET status = 'Deleting', business_status = NULL WHERE id = $1 AND status = $2",
        )
        .bind(id)
        .bind(&status)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        source_release_job(&mut tx, id).await?;
        tx.commit().durable(self).await?;
        Ok(Some(status))
    }

    /// DeleteSourceServer with `Force`: the source's open job becomes `Deleting` whatever its status, a run
    /// being uploaded is stopped (its agent abandons it), and the source is released. Returns `false` if the
    /// job was already `Deleting` (or does not exist).
    pub async fn job_delete_force(&self, id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE jobs SET status = 'Deleting', business_status = NULL WHERE id = $1 AND status <> 'Deleting'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("UPDATE runs SET status = 'Stopped' WHERE job_id = $1 AND status = 'Syncing'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        source_release_job(&mut tx, id).await?;
        tx.commit().durable(self).await?;
        Ok(true)
    }

    /// Removes a job and everything Ferry kept only for it (runs, snapshot records, settings) in one
    /// transaction, and releases its source if it still held it. Images are not touched: a delivered image
    /// is the user's. Returns the removed snapshots, whose index objects the caller may delete.
    pub async fn job_purge(&self, id: &str) -> Result<Vec<SnapshotRecord>> {
        let mut tx = self.pool.begin().await?;
        let snaps: Vec<SnapshotRecord> =
            sqlx::query_as("SELECT * FROM snapshots WHERE job_id = $1")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        for sql in [
            "DELETE FROM snapshots WHERE job_id = $1",
            "DELETE FROM runs WHERE job_id = $1",
            "DELETE FROM job_settings WHERE job_id = $1",
            "DELETE FROM jobs WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        source_release_job(&mut tx, id).await?;
        tx.commit().durable(self).await?;
        Ok(snaps)
    }
}

async fn job_insert(tx: &mut sqlx::Transaction<'_, sqlx::Any>, j: &JobRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO jobs (id, name, description, source_id, region_id, status, business_status, error_code, \
         status_info, job_type, target_type, image_name, image_id, run_once, frequency, max_images, \
         replication_parameters, progress, created_at, start_time, end_time, scheduled_start_time, valid_time, \
         client_token) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19, $20, $21, $22, $23, $24)",
    )
    .bind(&j.id)
    .bind(&j.name)
    .bind(&j.description)
    .bind(&j.source_id)
    .bind(&j.region_id)
    .bind(&j.status)
    .bind(&j.business_status)
    .bind(&j.error_code)
    .bind(&j.status_info)
    .bind(j.job_type)
    .bind(&j.target_type)
    .bind(&j.image_name)
    .bind(&j.image_id)
    .bind(j.run_once)
    .bind(j.frequency)
    .bind(j.max_images)
    .bind(&j.replication_parameters)
    .bind(j.progress)
    .bind(j.created_at)
    .bind(j.start_time)
    .bind(j.end_time)
    .bind(j.scheduled_start_time)
    .bind(j.valid_time)
    .bind(&j.client_token)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn job_settings_upsert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    s: &JobSettingsRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO job_settings (job_id, instance_id, settings, cutover, expired_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (job_id) DO UPDATE SET instance_id = $2, settings = $3, cutover = $4, expired_at = $5",
    )
    .bind(&s.job_id)
    .bind(&s.instance_id)
    .bind(&s.settings)
    .bind(s.cutover)
    .bind(s.expired_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// runs

#[derive(Debug, Clone, FromRow)]
pub struct RunRecord {
    pub id: String,
    pub job_id: String,
    pub seq: i64,
    /// `Manual` or `Schedule` (SMC's ReplicationJobRun.Type).
    pub kind: String,
    /// `Syncing`, `Processing`, `Succeeded`, `Failed`, `Stopped`.
    pub status: String,
    /// JSON list of disk indexes.
    pub disks: String,
    pub chunk_size: i64,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub image_id: Option<String>,
    /// JSON of `ferry_types::protocol::RunProgress`.
    pub progress: String,
    pub error: Option<String>,
}

impl Db {
    pub async fn run_create(&self, r: &RunRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO runs (id, job_id, seq, kind, status, disks, chunk_size, started_at, ended_at, image_id, \
             progress, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&r.id)
        .bind(&r.job_id)
        .bind(r.seq)
        .bind(&r.kind)
        .bind(&r.status)
        .bind(&r.disks)
        .bind(r.chunk_size)
        .bind(r.started_at)
        .bind(r.ended_at)
        .bind(&r.image_id)
        .bind(&r.progress)
        .bind(&r.error)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(())
    }

    pub async fn run_get(&self, id: &str) -> Result<Option<RunRecord>> {
        Ok(sqlx::query_as("SELECT * FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?)
    }

    /// All runs of a job, oldest first.
    pub async fn run_list(&self, job_id: &str) -> Result<Vec<RunRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM runs WHERE job_id = $1 ORDER BY seq")
                .bind(job_id)
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Runs in a given status across all jobs (for the workers).
    pub async fn run_list_by_status(&self, status: &str) -> Result<Vec<RunRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM runs WHERE status = $1 ORDER BY started_at, id")
                .bind(status)
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// A relaxed write (`Db::relaxed`): a power failure may lose the last progress; the next one replaces it.
    pub async fn run_set_progress(&self, id: &str, progress: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET progress = $2 WHERE id = $1")
            .bind(id)
            .bind(progress)
            .execute(&self.relaxed)
            .await?;
        Ok(())
    }

    /// Guarded status change; returns `false` if the run was not in `from`.
    pub async fn run_transition(
        &self,
        id: &str,
        from: &str,
        to: &str,
        error: Option<&str>,
        ended_at: Option<i64>,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE runs SET status = $3, error = $4, ended_at = COALESCE($5, ended_at) \
             WHERE id = $1 AND status = $2",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(error)
        .bind(ended_at)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn run_set_image(&self, id: &str, image_id: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET image_id = $2 WHERE id = $1")
            .bind(id)
            .bind(image_id)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------
// snapshots

#[derive(Debug, Clone, FromRow)]
pub struct SnapshotRecord {
    pub id: String,
    pub run_id: String,
    pub job_id: String,
    pub source_id: String,
    pub disk_index: i64,
    pub disk_size: i64,
    pub chunk_size: i64,
    pub root_digest: String,
    pub created_at: i64,
}

impl Db {
    /// Commits a snapshot; if this run already committed this disk (a retried commit), returns the
    /// existing record instead.
    pub async fn snapshot_commit(&self, s: &SnapshotRecord) -> Result<SnapshotRecord> {
        sqlx::query(
            "INSERT INTO snapshots (id, run_id, job_id, source_id, disk_index, disk_size, chunk_size, root_digest, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (run_id, disk_index) DO NOTHING",
        )
        .bind(&s.id)
        .bind(&s.run_id)
        .bind(&s.job_id)
        .bind(&s.source_id)
        .bind(s.disk_index)
        .bind(s.disk_size)
        .bind(s.chunk_size)
        .bind(&s.root_digest)
        .bind(s.created_at)
        .execute(&self.pool).durable(self)
        .await?;
        sqlx::query_as("SELECT * FROM snapshots WHERE run_id = $1 AND disk_index = $2")
            .bind(&s.run_id)
            .bind(s.disk_index)
            .fetch_one(&self.read)
            .await
            .map_err(DbError::from)
    }

    pub async fn snapshot_get(&self, id: &str) -> Result<Option<SnapshotRecord>> {
        Ok(sqlx::query_as("SELECT * FROM snapshots WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?)
    }

    pub async fn snapshot_list_by_run(&self, run_id: &str) -> Result<Vec<SnapshotRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM snapshots WHERE run_id = $1 ORDER BY disk_index")
                .bind(run_id)
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// The newest snapshot of a job's disk from a run other than `except_run`: the base of an incremental run.
    pub async fn snapshot_latest_for_disk(
        &self,
        job_id: &str,
        disk_index: i64,
        except_run: &str,
    ) -> Result<Option<SnapshotRecord>> {
        Ok(sqlx::query_as(
            "SELECT s.* FROM snapshots s JOIN runs r ON r.id = s.run_id \
             WHERE s.job_id = $1 AND s.disk_index = $2 AND s.run_id <> $3 \
             ORDER BY r.seq DESC LIMIT 1",
        )
        .bind(job_id)
        .bind(disk_index)
        .bind(except_run)
        .fetch_optional(&self.read)
        .await?)
    }
}

// ---------------------------------------------------------------------------------------------------------
// images

#[derive(Debug, Clone, FromRow)]
pub struct ImageRecord {
    pub id: String,
    pub name: String,
    pub region_id: String,
    pub job_id: Option<String>,
    pub run_id: Option<String>,
    /// ECS image status: `Creating`, `Available`, `CreateFailed`, …
    pub status: String,
    pub progress: i64,
    pub size_gib: i64,
    pub platform: String,
    pub os_name: String,
    pub architecture: String,
    pub boot_mode: String,
    pub description: String,
    pub error: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct ImageDiskRecord {
    pub image_id: String,
    pub disk_index: i64,
    pub snapshot_id: String,
    pub size_bytes: i64,
    pub root_digest: String,
    pub raw_path: String,
    pub qcow2_path: Option<String>,
}

impl Db {
    pub async fn image_create(&self, i: &ImageRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO images (id, name, region_id, job_id, run_id, status, progress, size_gib, platform, os_name, \
             architecture, boot_mode, description, error, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&i.id)
        .bind(&i.name)
        .bind(&i.region_id)
        .bind(&i.job_id)
        .bind(&i.run_id)
        .bind(&i.status)
        .bind(i.progress)
        .bind(i.size_gib)
        .bind(&i.platform)
        .bind(&i.os_name)
        .bind(&i.architecture)
        .bind(&i.boot_mode)
        .bind(&i.description)
        .bind(&i.error)
        .bind(i.created_at)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(())
    }

    pub async fn image_get(&self, id: &str) -> Result<Option<ImageRecord>> {
        Ok(sqlx::query_as("SELECT * FROM images WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?)
    }

    pub async fn image_by_run(&self, run_id: &str) -> Result<Option<ImageRecord>> {
        Ok(sqlx::query_as("SELECT * FROM images WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(&self.read)
            .await?)
    }

    pub async fn image_list(&self) -> Result<Vec<ImageRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM images ORDER BY created_at, id")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// A job's images, oldest run first.
    pub async fn image_list_by_job(&self, job_id: &str) -> Result<Vec<ImageRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM images WHERE job_id = $1 ORDER BY created_at, id")
                .bind(job_id)
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Removes an image's records (the caller removes its files). Runs that produced it forget it.
    pub async fn image_delete(&self, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM image_disks WHERE image_id = $1",
            "DELETE FROM images WHERE id = $1",
            "UPDATE runs SET image_id = NULL WHERE image_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().durable(self).await?;
        Ok(())
    }

    pub async fn image_name_taken(&self, name: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM images WHERE name = $1")
            .bind(name)
            .fetch_one(&self.read)
            .await?;
        Ok(n > 0)
    }

    pub async fn image_set_status(
        &self,
        id: &str,
        status: &str,
        progress: i64,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE images SET status = $2, progress = $3, error = $4 WHERE id = $1")
            .bind(id)
            .bind(status)
            .bind(progress)
            .bind(error)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(())
    }

    /// Records a built disk (replacing an earlier attempt's record).
    pub async fn image_disk_put(&self, d: &ImageDiskRecord) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM image_disks WHERE image_id = $1 AND disk_index = $2")
            .bind(&d.image_id)
            .bind(d.disk_index)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO image_disks (image_id, disk_index, snapshot_id, size_bytes, root_digest, raw_path, \
             qcow2_path) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&d.image_id)
        .bind(d.disk_index)
        .bind(&d.snapshot_id)
        .bind(d.size_bytes)
        .bind(&d.root_digest)
        .bind(&d.raw_path)
        .bind(&d.qcow2_path)
        .execute(&mut *tx)
        .await?;
        tx.commit().durable(self).await?;
        Ok(())
    }

    /// Disks of available images whose qcow2 has not been derived yet.
    pub async fn image_disk_list_without_qcow2(&self) -> Result<Vec<ImageDiskRecord>> {
        Ok(sqlx::query_as(
            "SELECT d.* FROM image_disks d JOIN images i ON i.id = d.image_id \
             WHERE d.qcow2_path IS NULL AND i.status = 'Available' ORDER BY i.created_at, d.disk_index",
        )
        .fetch_all(&self.read)
        .await?)
    }

    pub async fn image_disk_set_qcow2(
        &self,
        image_id: &str,
        disk_index: i64,
        path: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE image_disks SET qcow2_path = $3 WHERE image_id = $1 AND disk_index = $2",
        )
        .bind(image_id)
        .bind(disk_index)
        .bind(path)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(())
    }

    pub async fn image_disk_list(&self, image_id: &str) -> Result<Vec<ImageDiskRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM image_disks WHERE image_id = $1 ORDER BY disk_index")
                .bind(image_id)
                .fetch_all(&self.read)
                .await?,
        )
    }
}

// ---------------------------------------------------------------------------------------------------------
// tasks (asynchronous ECS operations such as ExportImage)

#[derive(Debug, Clone, FromRow)]
pub struct TaskRecord {
    pub id: String,
    pub action: String,
    /// `Processing`, `Finished`, `Failed`.
    pub status: String,
    pub progress: i64,
    pub resource_id: String,
    /// JSON of the request's parameters the worker needs.
    pub request: String,
    /// JSON of the result (for exports: the written files).
    pub result: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

impl Db {
    pub async fn task_create(&self, t: &TaskRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO tasks (id, action, status, progress, resource_id, request, result, error, created_at, \
             finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&t.id)
        .bind(&t.action)
        .bind(&t.status)
        .bind(t.progress)
        .bind(&t.resource_id)
        .bind(&t.request)
        .bind(&t.result)
        .bind(&t.error)
        .bind(t.created_at)
        .bind(t.finished_at)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(())
    }

    pub async fn task_get(&self, id: &str) -> Result<Option<TaskRecord>> {
        Ok(sqlx::query_as("SELECT * FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?)
    }

    pub async fn task_list(&self) -> Result<Vec<TaskRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM tasks ORDER BY created_at, id")
                .fetch_all(&self.read)
                .await?,
        )
    }

    pub async fn task_finish(
        &self,
        id: &str,
        status: &str,
        result: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE tasks SET status = $2, progress = CASE WHEN $2 = 'Finished' THEN 100 ELSE progress END, \
             result = $3, error = $4, finished_at = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(result)
        .bind(error)
        .bind(now())
        .execute(&self.pool).durable(self)
        .await?;
        Ok(())
    }
}
