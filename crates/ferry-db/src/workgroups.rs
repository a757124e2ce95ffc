//! Workgroups (migration waves, `../shared/ref/smc-api.md` §2.7) and their members.
//!
//! Invariants kept here, in SQL:
//! * a source belongs to at most one workgroup (`workgroup_members.source_id` is the primary key);
//! * a workgroup never holds more members than the limit its caller passes to
//!   [`Db::workgroup_associate`], even under concurrent calls (the group's row is locked first);
//! * a `ClientToken` names at most one workgroup, so a repeated CreateWorkgroup returns the first one;
//! * deleting a workgroup removes its memberships and its tags in the same transaction.
//!
//! A workgroup's Status and Warnings are derived from its members' jobs by the API layer; nothing derived
//! is stored.

use std::collections::HashMap;

use sqlx::FromRow;

use crate::Durable as _;
use crate::tags::{placeholders, tag_insert_tx};
use crate::{Db, Result};

/// The tag resource type under which workgroups' tags are stored (not one of the API's types).
pub const WORKGROUP_TAG_TYPE: &str = "workgroup";

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct WorkgroupRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    pub client_token: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct WorkgroupMemberRecord {
    pub source_id: String,
    pub workgroup_id: String,
    pub added_at: i64,
}

/// What [`Db::workgroup_associate`] did. Anything but `Done` changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssociateOutcome {
    Done,
    NoSuchWorkgroup,
    /// This source server does not exist.
    NoSuchSource(String),
    /// This source already belongs to another workgroup.
    InOtherWorkgroup {
        source_id: String,
        workgroup_id: String,
    },
    /// The workgroup would have `count` members, more than the limit.
    TooMany {
        count: i64,
    },
}

impl Db {
    /// Creates a workgroup with `tags`, in one transaction. With a `client_token` that an earlier
    /// workgroup already used, creates nothing and returns that workgroup (SMC's idempotency).
    pub async fn workgroup_create(
        &self,
        w: &WorkgroupRecord,
        tags: &[(String, String)],
    ) -> Result<WorkgroupRecord> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "INSERT INTO workgroups (id, name, description, client_token, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (client_token) DO NOTHING",
        )
        .bind(&w.id)
        .bind(&w.name)
        .bind(&w.description)
        .bind(&w.client_token)
        .bind(w.created_at)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            let existing: WorkgroupRecord =
                sqlx::query_as("SELECT * FROM workgroups WHERE client_token = $1")
                    .bind(&w.client_token)
                    .fetch_one(&mut *tx)
                    .await?;
            tx.rollback().await?;
            return Ok(existing);
        }
        tag_insert_tx(&mut tx, WORKGROUP_TAG_TYPE, &w.id, tags).await?;
        tx.commit().durable(self).await?;
        Ok(w.clone())
    }

    pub async fn workgroup_get(&self, id: &str) -> Result<Option<WorkgroupRecord>> {
        Ok(sqlx::query_as("SELECT * FROM workgroups WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?)
    }

    /// Workgroups among `ids` (all when empty) named exactly `name` (any when `None`), oldest first.
    pub async fn workgroup_list(
        &self,
        ids: &[String],
        name: Option<&str>,
    ) -> Result<Vec<WorkgroupRecord>> {
        let mut sql = String::from("SELECT * FROM workgroups WHERE 1 = 1");
        let mut next = 1;
        if !ids.is_empty() {
            sql.push_str(&format!(" AND id IN ({})", placeholders(next, ids.len())));
            next += ids.len();
        }
        if name.is_some() {
            sql.push_str(&format!(" AND name = ${next}"));
        }
        sql.push_str(" ORDER BY created_at, id");
        let mut q = sqlx::query_as::<_, WorkgroupRecord>(&sql);
        for id in ids {
            q = q.bind(id);
        }
        if let Some(n) = name {
            q = q.bind(n);
        }
        Ok(q.fetch_all(&self.read).await?)
    }

    /// Renames and/or re-describes a workgroup; `None` keeps the field. Returns `false` when it does not
    /// exist.
    pub async fn workgroup_update(
        &self,
        id: &str,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE workgroups SET name = COALESCE($2, name), description = COALESCE($3, description) \
             WHERE id = $1",
        )
        .bind(id)
        .bind(name)
        .bind(description)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes a workgroup, its memberships (the sources stay) and its tags. Returns `false` when it did
    /// not exist.
    pub async fn workgroup_delete(&self, id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("DELETE FROM workgroups WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM workgroup_members WHERE workgroup_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tags WHERE resource_type = $1 AND resource_id = $2")
            .bind(WORKGROUP_TAG_TYPE)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().durable(self).await?;
        Ok(true)
    }

    /// The members of the workgroups `ids` (one query), by workgroup, then in the order they joined.
    pub async fn workgroup_members(&self, ids: &[String]) -> Result<Vec<WorkgroupMemberRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT * FROM workgroup_members WHERE workgroup_id IN ({}) \
             ORDER BY workgroup_id, added_at, source_id",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query_as::<_, WorkgroupMemberRecord>(&sql);
        for id in ids {
            q = q.bind(id);
        }
        Ok(q.fetch_all(&self.read).await?)
    }

    /// Adds `source_ids` to workgroup `id`, all or none. Sources already in this workgroup are fine (a
    /// retry); a source in another workgroup, an unknown source or going over `max_members` changes
    /// nothing and says why.
    pub async fn workgroup_associate(
        &self,
        id: &str,
        source_ids: &[String],
        max_members: i64,
        at: i64,
    ) -> Result<AssociateOutcome> {
        let mut tx = self.pool.begin().await?;
        // Lock the group first (a row lock in PostgreSQL, the write lock in SQLite): concurrent
        // associations to one group then count members one after the other.
        let r = sqlx::query("UPDATE workgroups SET name = name WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(AssociateOutcome::NoSuchWorkgroup);
        }
        if !source_ids.is_empty() {
            let sql = format!(
                "SELECT id FROM sources WHERE id IN ({})",
                placeholders(1, source_ids.len())
            );
            let mut q = sqlx::query_scalar::<_, String>(&sql);
            for s in source_ids {
                q = q.bind(s);
            }
            let known = q.fetch_all(&mut *tx).await?;
            if let Some(missing) = source_ids.iter().find(|s| !known.contains(s)) {
                tx.rollback().await?;
                return Ok(AssociateOutcome::NoSuchSource(missing.clone()));
            }
        }
        for s in source_ids {
            sqlx::query(
                "INSERT INTO workgroup_members (source_id, workgroup_id, added_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (source_id) DO NOTHING",
            )
            .bind(s)
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            let owner: String = sqlx::query_scalar(
                "SELECT workgroup_id FROM workgroup_members WHERE source_id = $1",
            )
            .bind(s)
            .fetch_one(&mut *tx)
            .await?;
            if owner != id {
                tx.rollback().await?;
                return Ok(AssociateOutcome::InOtherWorkgroup {
                    source_id: s.clone(),
                    workgroup_id: owner,
                });
            }
        }
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM workgroup_members WHERE workgroup_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        if count > max_members {
            tx.rollback().await?;
            return Ok(AssociateOutcome::TooMany { count });
        }
        tx.commit().durable(self).await?;
        Ok(AssociateOutcome::Done)
    }

    /// Removes `source_ids` from workgroup `id`; sources that are not its members are ignored. Returns
    /// how many were removed.
    pub async fn workgroup_disassociate(&self, id: &str, source_ids: &[String]) -> Result<u64> {
        if source_ids.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "DELETE FROM workgroup_members WHERE workgroup_id = $1 AND source_id IN ({})",
            placeholders(2, source_ids.len())
        );
        let mut q = sqlx::query(&sql).bind(id);
        for s in source_ids {
            q = q.bind(s);
        }
        Ok(q.execute(&self.pool).durable(self).await?.rows_affected())
    }

    /// The workgroup of each source of `source_ids` that has one (one query).
    pub async fn workgroup_of_source(
        &self,
        source_ids: &[String],
    ) -> Result<HashMap<String, String>> {
        if source_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "SELECT * FROM workgroup_members WHERE source_id IN ({})",
            placeholders(1, source_ids.len())
        );
        let mut q = sqlx::query_as::<_, WorkgroupMemberRecord>(&sql);
        for s in source_ids {
            q = q.bind(s);
        }
        Ok(q.fetch_all(&self.read)
            .await?
            .into_iter()
            .map(|m| (m.source_id, m.workgroup_id))
            .collect())
    }

    /// Forgets a deleted source's membership. Call it when a source server is deleted.
    pub async fn workgroup_drop_source(&self, source_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM workgroup_members WHERE source_id = $1")
            .bind(source_id)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(())
    }
}
