//! Guest adaptation and boot validation records (migration 0010): the image pipeline's state per image
//! (`image_pipeline`), the digests of adapted disks (`image_disk_digests`), the validations themselves
//! (`validations`), and the Ferry-only port forwards of instances (`instance_port_forwards`).
//!
//! Invariants: a validation leaves `Running` only through the guarded [`Db::validation_finish`], so an
//! interrupted validation that another worker marked abandoned cannot be overwritten by its late result;
//! an image's validation status changes through guarded transitions as well; a host port is forwarded to
//! at most one instance (the primary key).

use sqlx::FromRow;

use crate::Durable as _;
use crate::{Db, Result};

/// An image's adaptation and validation state (table `image_pipeline`).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ImagePipelineRecord {
    pub image_id: String,
    /// `Pending`, `Adapted`, `NotAdapted`, `Failed`.
    pub adapt_status: String,
    /// `ferry_image::adapt::AdaptReport` as JSON.
    pub adapt_report: Option<String>,
    pub adapt_reason: Option<String>,
    /// `Pending`, `Running`, `Passed`, `Failed`, `Skipped`.
    pub validation_status: String,
    pub validation_reason: Option<String>,
    /// The pipeline options as versioned JSON (set by the server).
    pub options: String,
    /// The production instance a cutover validates on, instead of a throwaway instance.
    pub production_instance: Option<String>,
    pub updated_at: i64,
}

/// One boot validation (table `validations`).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ValidationRecord {
    pub id: String,
    pub image_id: String,
    pub job_id: Option<String>,
    pub run_id: Option<String>,
    pub instance_id: String,
    /// `Image` (a throwaway instance) or `Production` (a cutover's instance).
    pub kind: String,
    /// `Running`, `Passed`, `Failed`, `Skipped`.
    pub status: String,
    /// `ferry_vm::validate::ValidationReport` as JSON.
    pub report: Option<String>,
    pub error: Option<String>,
    pub console_path: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
}

/// One forwarded port of an instance.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct PortForwardRecord {
    pub host_port: i64,
    pub instance_id: String,
    pub guest_port: i64,
}

impl Db {
    /// Records (or replaces) an image's pipeline state.
    pub async fn image_pipeline_put(&self, p: &ImagePipelineRecord) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM image_pipeline WHERE image_id = $1")
            .bind(&p.image_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO image_pipeline (image_id, adapt_status, adapt_report, adapt_reason, validation_status, \
             validation_reason, options, production_instance, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&p.image_id)
        .bind(&p.adapt_status)
        .bind(&p.adapt_report)
        .bind(&p.adapt_reason)
        .bind(&p.validation_status)
        .bind(&p.validation_reason)
        .bind(&p.options)
        .bind(&p.production_instance)
        .bind(p.updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().durable(self).await?;
        Ok(())
    }

    /// The pipeline records of `image_ids` in one query, by image ID (images without one are absent).
    pub async fn image_pipeline_list_for(
        &self,
        image_ids: &[String],
    ) -> Result<std::collections::HashMap<String, ImagePipelineRecord>> {
        if image_ids.is_empty() {
            return Ok(Default::default());
        }
        let sql = format!(
            "SELECT * FROM image_pipeline WHERE image_id IN ({})",
            crate::tags::placeholders(1, image_ids.len())
        );
        let mut q = sqlx::query_as::<_, ImagePipelineRecord>(&sql);
        for id in image_ids {
            q = q.bind(id.as_str());
        }
        Ok(q.fetch_all(&self.read)
            .await?
            .into_iter()
            .map(|p| (p.image_id.clone(), p))
            .collect())
    }

    pub async fn image_pipeline_get(&self, image_id: &str) -> Result<Option<ImagePipelineRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM image_pipeline WHERE image_id = $1")
                .bind(image_id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    /// Images whose validation is to be run (`Pending`) or was running when its worker stopped (`Running`:
    /// the worker's lease tells whether someone still runs it), oldest first.
    pub async fn image_pipeline_list_to_validate(&self) -> Result<Vec<ImagePipelineRecord>> {
        Ok(sqlx::query_as(
            "SELECT * FROM image_pipeline WHERE validation_status IN ('Pending', 'Running') \
             ORDER BY updated_at, image_id",
        )
        .fetch_all(&self.read)
        .await?)
    }

    /// Guarded change of an image's validation status; `false` if it was not in one of `from`.
    pub async fn image_pipeline_validation_transition(
        &self,
        image_id: &str,
        from: &[&str],
        to: &str,
        reason: Option<&str>,
        at: i64,
    ) -> Result<bool> {
        for f in from {
            let r = sqlx::query(
                "UPDATE image_pipeline SET validation_status = $3, validation_reason = $4, updated_at = $5 \
                 WHERE image_id = $1 AND validation_status = $2",
            )
            .bind(image_id)
            .bind(*f)
            .bind(to)
            .bind(reason)
            .bind(at)
            .execute(&self.pool).durable(self)
            .await?;
            if r.rows_affected() == 1 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Forgets an image's pipeline state, adapted digests and validations (the image was deleted). The
    /// validations' console copies are the caller's to remove.
    pub async fn image_pipeline_delete(&self, image_id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM image_pipeline WHERE image_id = $1",
            "DELETE FROM image_disk_digests WHERE image_id = $1",
            "DELETE FROM validations WHERE image_id = $1",
        ] {
            sqlx::query(sql).bind(image_id).execute(&mut *tx).await?;
        }
        tx.commit().durable(self).await?;
        Ok(())
    }

    /// Records the digest of an image disk as adaptation left it.
    pub async fn image_disk_digest_put(
        &self,
        image_id: &str,
        disk_index: i64,
        digest: &str,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM image_disk_digests WHERE image_id = $1 AND disk_index = $2")
            .bind(image_id)
            .bind(disk_index)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO image_disk_digests (image_id, disk_index, adapted_digest) VALUES ($1, $2, $3)",
        )
        .bind(image_id)
        .bind(disk_index)
        .bind(digest)
        .execute(&mut *tx)
        .await?;
        tx.commit().durable(self).await?;
        Ok(())
    }

    /// `(disk index, adapted digest)` of an image's adapted disks, by disk index.
    pub async fn image_disk_digest_list(&self, image_id: &str) -> Result<Vec<(i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT disk_index, adapted_digest FROM image_disk_digests WHERE image_id = $1 ORDER BY disk_index",
        )
        .bind(image_id)
        .fetch_all(&self.read)
        .await?)
    }

    pub async fn validation_create(&self, v: &ValidationRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO validations (id, image_id, job_id, run_id, instance_id, kind, status, report, error, \
             console_path, started_at, ended_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&v.id)
        .bind(&v.image_id)
        .bind(&v.job_id)
        .bind(&v.run_id)
        .bind(&v.instance_id)
        .bind(&v.kind)
        .bind(&v.status)
        .bind(&v.report)
        .bind(&v.error)
        .bind(&v.console_path)
        .bind(v.started_at)
        .bind(v.ended_at)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(())
    }

    /// `Running` → `status` with the outcome; `false` if the validation was no longer running (another
    /// worker declared it abandoned).
    pub async fn validation_finish(
        &self,
        id: &str,
        status: &str,
        report: Option<&str>,
        error: Option<&str>,
        console_path: Option<&str>,
        at: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE validations SET status = $2, report = $3, error = $4, console_path = $5, ended_at = $6 \
             WHERE id = $1 AND status = 'Running'",
        )
        .bind(id)
        .bind(status)
        .bind(report)
        .bind(error)
        .bind(console_path)
        .bind(at)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn validation_get(&self, id: &str) -> Result<Option<ValidationRecord>> {
        Ok(sqlx::query_as("SELECT * FROM validations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?)
    }

    /// An image's validations, oldest first.
    pub async fn validation_list_by_image(&self, image_id: &str) -> Result<Vec<ValidationRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM validations WHERE image_id = $1 ORDER BY started_at, id")
                .bind(image_id)
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// The newest validation run on an instance (a cutover's production instance), if any.
    pub async fn validation_latest_by_instance(
        &self,
        instance_id: &str,
    ) -> Result<Option<ValidationRecord>> {
        Ok(sqlx::query_as(
            "SELECT * FROM validations WHERE instance_id = $1 ORDER BY started_at DESC, id DESC LIMIT 1",
        )
        .bind(instance_id)
        .fetch_optional(&self.read)
        .await?)
    }

    /// Sets a job's `ErrorCode`/`StatusInfo` without changing its status (a failed boot validation of an
    /// image whose copy succeeded: the job carries on, and says what failed).
    pub async fn job_set_notice(&self, id: &str, code: &str, info: &str) -> Result<()> {
        sqlx::query("UPDATE jobs SET error_code = $2, status_info = $3 WHERE id = $1")
            .bind(id)
            .bind(code)
            .bind(info)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(())
    }

    /// Points an instance at another image (a cutover's production instance gets the final image's disks).
    pub async fn instance_set_image(&self, id: &str, image_id: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE instances SET image_id = $2 WHERE id = $1")
            .bind(id)
            .bind(image_id)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// `from` → `Running` at `at` (a production instance the validator left running).
    pub async fn instance_set_running_from(&self, id: &str, from: &str, at: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE instances SET status = 'Running', started_at = $3, error = NULL \
             WHERE id = $1 AND status = $2",
        )
        .bind(id)
        .bind(from)
        .bind(at)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Claims `(host port, guest port)` forwards for an instance; `Err(port)` names the first host port
    /// another instance holds (nothing is claimed then).
    pub async fn port_forward_claim(
        &self,
        instance_id: &str,
        forwards: &[(u16, u16)],
    ) -> Result<std::result::Result<(), u16>> {
        let mut tx = self.pool.begin().await?;
        for (host, guest) in forwards {
            let r = sqlx::query(
                "INSERT INTO instance_port_forwards (host_port, instance_id, guest_port) VALUES ($1, $2, $3) \
                 ON CONFLICT (host_port) DO NOTHING",
            )
            .bind(i64::from(*host))
            .bind(instance_id)
            .bind(i64::from(*guest))
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(Err(*host));
            }
        }
        tx.commit().durable(self).await?;
        Ok(Ok(()))
    }

    /// An instance's forwards, by host port.
    pub async fn port_forward_list(&self, instance_id: &str) -> Result<Vec<PortForwardRecord>> {
        Ok(sqlx::query_as(
            "SELECT * FROM instance_port_forwards WHERE instance_id = $1 ORDER BY host_port",
        )
        .bind(instance_id)
        .fetch_all(&self.read)
        .await?)
    }

    /// Releases an instance's forwards (the instance was deleted).
    pub async fn port_forward_release(&self, instance_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM instance_port_forwards WHERE instance_id = $1")
            .bind(instance_id)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(())
    }
}

impl Db {
    /// Sets an image's `BootMode` (`BIOS` or `UEFI`) from what adaptation found in the guest.
    pub async fn image_set_boot_mode(&self, image_id: &str, boot_mode: &str) -> Result<()> {
        sqlx::query("UPDATE images SET boot_mode = $2 WHERE id = $1")
            .bind(image_id)
            .bind(boot_mode)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(())
    }
}
