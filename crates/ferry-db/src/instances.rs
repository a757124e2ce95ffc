//! Instances (table `instances`, migration 0006), ClientToken idempotency of the ECS create actions
//! (table `client_tokens`), and the image and snapshot operations the ECS actions need beyond `records`.
//!
//! Invariants: an instance's status changes only through guarded transitions (`WHERE status = …`), so the
//! API and the instance worker never both take the same step; a create with a ClientToken inserts the
//! token in the same transaction as its resources, so a retried request cannot create them twice.

use sqlx::FromRow;

use crate::Durable as _;
use crate::{Db, ImageDiskRecord, ImageRecord, Result, SnapshotRecord, TaskRecord};

/// One instance.
#[derive(Debug, Clone, FromRow)]
pub struct InstanceRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    pub host_name: String,
    pub image_id: String,
    pub instance_type: String,
    /// `Pending`, `Starting`, `Running`, `Stopping` or `Stopped` (ECS's statuses).
    pub status: String,
    pub cpu: i64,
    pub memory_mib: i64,
    /// System disk size asked for (GiB), when larger than the image's.
    pub system_disk_gib: Option<i64>,
    /// 1: a Pending instance is started once prepared (RunInstances); 0: it stays Stopped.
    pub auto_start: i64,
    /// 1 when the stop in progress kills QEMU at once.
    pub stop_force: i64,
    /// When a graceful stop in progress turns into a kill (unix seconds).
    pub stop_deadline: Option<i64>,
    /// The instance directory (ferry-vm).
    pub dir: String,
    /// Why the last start failed.
    pub error: Option<String>,
    pub client_token: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    /// The replica whose QEMU runs the instance (its `<data>/replica-id`); only that replica manages it
    /// (docs/scale-out.md). `None` for instances recorded before replicas existed.
    pub replica: Option<String>,
}

/// Inserts the token row; `false` if the token was used before (nothing inserted).
async fn client_token_claim(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    action: &str,
    token: &str,
    ids: &[&str],
) -> Result<bool> {
    let ids = serde_json::to_string(ids).map_err(|e| crate::DbError::Corrupt {
        what: "client_tokens",
        detail: e.to_string(),
    })?;
    let r = sqlx::query(
        "INSERT INTO client_tokens (action, token, resource_ids, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (action, token) DO NOTHING",
    )
    .bind(action)
    .bind(token)
    .bind(ids)
    .bind(crate::now())
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

impl Db {
    /// The resources a create action made with `token`, if that token was used.
    pub async fn client_token_get(&self, action: &str, token: &str) -> Result<Option<Vec<String>>> {
        let ids: Option<String> = sqlx::query_scalar(
            "SELECT resource_ids FROM client_tokens WHERE action = $1 AND token = $2",
        )
        .bind(action)
        .bind(token)
        .fetch_optional(&self.read)
        .await?;
        ids.map(|s| {
            serde_json::from_str(&s).map_err(|e| crate::DbError::Corrupt {
                what: "client_tokens",
                detail: e.to_string(),
            })
        })
        .transpose()
    }

    /// Creates instances in one transaction. With `token` (`(action, ClientToken)`), a token used before
    /// creates nothing and returns the IDs it created then.
    pub async fn instance_create_many(
        &self,
        items: &[InstanceRecord],
        token: Option<(&str, &str)>,
    ) -> Result<Option<Vec<String>>> {
        let mut tx = self.pool.begin().await?;
        if let Some((action, t)) = token {
            let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
            if !client_token_claim(&mut tx, action, t, &ids).await? {
                tx.rollback().await?;
                return self.client_token_get(action, t).await;
            }
        }
        for i in items {
            sqlx::query(
                "INSERT INTO instances (id, name, description, host_name, image_id, instance_type, status, cpu, \
                 memory_mib, system_disk_gib, auto_start, stop_force, stop_deadline, dir, error, client_token, \
                 created_at, started_at, replica) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
            )
            .bind(&i.id)
            .bind(&i.name)
            .bind(&i.description)
            .bind(&i.host_name)
            .bind(&i.image_id)
            .bind(&i.instance_type)
            .bind(&i.status)
            .bind(i.cpu)
            .bind(i.memory_mib)
            .bind(i.system_disk_gib)
            .bind(i.auto_start)
            .bind(i.stop_force)
            .bind(i.stop_deadline)
            .bind(&i.dir)
            .bind(&i.error)
            .bind(&i.client_token)
            .bind(i.created_at)
            .bind(i.started_at)
            .bind(&i.replica)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().durable(self).await?;
        Ok(None)
    }

    pub async fn instance_get(&self, id: &str) -> Result<Option<InstanceRecord>> {
        Ok(sqlx::query_as("SELECT * FROM instances WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?)
    }

    /// Every instance, oldest first.
    pub async fn instance_list(&self) -> Result<Vec<InstanceRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM instances ORDER BY created_at, id")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Instances launched from `image_id` (whatever their status): they read the image's files.
    pub async fn instances_using_image(&self, image_id: &str) -> Result<Vec<InstanceRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM instances WHERE image_id = $1 ORDER BY created_at, id")
                .bind(image_id)
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Guarded status change; `false` if the instance was not in `from`.
    pub async fn instance_transition(&self, id: &str, from: &str, to: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE instances SET status = $3 WHERE id = $1 AND status = $2")
            .bind(id)
            .bind(from)
            .bind(to)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// `Starting` → `Running` at `at`, clearing the last start error.
    pub async fn instance_set_running(&self, id: &str, at: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE instances SET status = 'Running', started_at = $2, error = NULL \
             WHERE id = $1 AND status = 'Starting'",
        )
        .bind(id)
        .bind(at)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// `from` → `Stopped`, recording `error` (why a start failed) or clearing it.
    pub async fn instance_set_stopped(
        &self,
        id: &str,
        from: &str,
        error: Option<&str>,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE instances SET status = 'Stopped', error = $3, stop_force = 0, stop_deadline = NULL \
             WHERE id = $1 AND status = $2",
        )
        .bind(id)
        .bind(from)
        .bind(error)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// `Running` → `Stopping`: kill at once (`force`) or power down until `deadline`.
    pub async fn instance_request_stop(
        &self,
        id: &str,
        force: bool,
        deadline: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE instances SET status = 'Stopping', stop_force = $2, stop_deadline = $3 \
             WHERE id = $1 AND status = 'Running'",
        )
        .bind(id)
        .bind(i64::from(force))
        .bind(deadline)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Makes `replica` the manager of an instance recorded without one (before migration 0007); `false`
    /// when it has one already.
    pub async fn instance_adopt(&self, id: &str, replica: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE instances SET replica = $2 WHERE id = $1 AND replica IS NULL")
            .bind(id)
            .bind(replica)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Removes an instance's row; `false` if it did not exist.
    pub async fn instance_delete(&self, id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}

// ---------------------------------------------------------------------------------------------------------
// images and snapshots, for the ECS actions (CreateImage, DescribeSnapshots, DeleteSnapshot)

impl Db {
    /// CreateImage from snapshots: inserts the image (status `Creating`) and the task that builds it in
    /// one transaction. With `token`, a token used before creates nothing and returns the image it made.
    pub async fn image_create_with_task(
        &self,
        i: &ImageRecord,
        task: &TaskRecord,
        token: Option<&str>,
    ) -> Result<Option<String>> {
        let mut tx = self.pool.begin().await?;
        if let Some(t) = token
            && !client_token_claim(&mut tx, "CreateImage", t, &[i.id.as_str()]).await?
        {
            tx.rollback().await?;
            return Ok(self
                .client_token_get("CreateImage", t)
                .await?
                .and_then(|ids| ids.into_iter().next()));
        }
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
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO tasks (id, action, status, progress, resource_id, request, result, error, created_at, \
             finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&task.id)
        .bind(&task.action)
        .bind(&task.status)
        .bind(task.progress)
        .bind(&task.resource_id)
        .bind(&task.request)
        .bind(&task.result)
        .bind(&task.error)
        .bind(task.created_at)
        .bind(task.finished_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().durable(self).await?;
        Ok(None)
    }

    /// Every disk of every image (to tell which snapshots images use).
    pub async fn image_disk_list_all(&self) -> Result<Vec<ImageDiskRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM image_disks ORDER BY image_id, disk_index")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Every snapshot, oldest first.
    pub async fn snapshot_list(&self) -> Result<Vec<SnapshotRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM snapshots ORDER BY created_at, run_id, disk_index")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Removes a snapshot's row; `false` if it did not exist. The caller removes its index object.
    pub async fn snapshot_delete(&self, id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM snapshots WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}
