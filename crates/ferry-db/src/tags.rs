//! Tags: key/value pairs on resources (`../shared/ref/smc-api.md` §2.8), stored in one table for every
//! resource type.
//!
//! Resource types are lower-case strings: `sourceserver` and `replicationjob` (the API's), and `workgroup`
//! (Ferry's, for CreateWorkgroup's `Tag.N`). This layer does not validate keys and values; the API edge
//! does. It does enforce the per-resource limit, atomically with the write that would break it, so that
//! two concurrent TagResources calls cannot together exceed it.
//!
//! Listing order is (`resource_id`, `key`), the order [`Db::tag_list`] pages through with its `after`
//! cursor.

use std::collections::{BTreeMap, HashMap};

use sqlx::FromRow;

use crate::Durable as _;
use crate::{Db, Result};

/// One tag of one resource.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TagRecord {
    pub resource_type: String,
    pub resource_id: String,
    pub key: String,
    pub value: String,
}

/// One condition of a tag filter: the resource has a tag `key`, with exactly `value` when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    pub key: String,
    pub value: Option<String>,
}

/// What [`Db::tag_set`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagSetOutcome {
    /// Every tag was written (new keys added, existing keys' values replaced).
    Done,
    /// Nothing was written: `resource_id` would have had `count` tags, more than the limit.
    TooMany { resource_id: String, count: i64 },
}

/// `$from, $from+1, …` for `n` bound values.
pub(crate) fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Merges conditions on the same key. `None` when they contradict (one key, two different values), so
/// that no resource can match.
fn normalize(filter: &[TagFilter]) -> Option<Vec<TagFilter>> {
    let mut by_key: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for f in filter {
        let slot = by_key.entry(&f.key).or_insert(None);
        match (*slot, f.value.as_deref()) {
            (Some(a), Some(b)) if a != b => return None,
            (None, Some(b)) => *slot = Some(b),
            _ => {}
        }
    }
    Some(
        by_key
            .into_iter()
            .map(|(k, v)| TagFilter {
                key: k.to_owned(),
                value: v.map(str::to_owned),
            })
            .collect(),
    )
}

/// A subquery selecting the IDs of resources of type `$1` that carry every tag of `filter` (normalized),
/// with its values to bind after `$1`, numbered from `next`.
fn match_subquery(filter: &[TagFilter], next: &mut usize) -> (String, Vec<String>) {
    let mut conds = Vec::with_capacity(filter.len());
    let mut binds = Vec::new();
    for f in filter {
        match &f.value {
            Some(v) => {
                conds.push(format!("(key = ${} AND value = ${})", *next, *next + 1));
                *next += 2;
                binds.push(f.key.clone());
                binds.push(v.clone());
            }
            None => {
                conds.push(format!("key = ${}", *next));
                *next += 1;
                binds.push(f.key.clone());
            }
        }
    }
    // Keys are unique per resource (primary key), so a resource matches every condition exactly when it
    // has as many matching rows as there are (distinct-key) conditions.
    let sql = format!(
        "SELECT resource_id FROM tags WHERE resource_type = $1 AND ({}) GROUP BY resource_id HAVING COUNT(*) = {}",
        conds.join(" OR "),
        filter.len()
    );
    (sql, binds)
}

pub(crate) async fn tag_insert_tx(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    resource_type: &str,
    resource_id: &str,
    tags: &[(String, String)],
) -> Result<()> {
    for (k, v) in tags {
        sqlx::query(
            "INSERT INTO tags (resource_type, resource_id, key, value) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (resource_type, resource_id, key) DO UPDATE SET value = excluded.value",
        )
        .bind(resource_type)
        .bind(resource_id)
        .bind(k)
        .bind(v)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Db {
    /// Adds `tags` to every resource of `ids` (replacing the values of keys they already have), unless a
    /// resource would end up with more than `max_per_resource` tags: then nothing is written.
    pub async fn tag_set(
        &self,
        resource_type: &str,
        ids: &[String],
        tags: &[(String, String)],
        max_per_resource: i64,
    ) -> Result<TagSetOutcome> {
        let mut tx = self.pool.begin().await?;
        // Write first: in SQLite this takes the write lock at once (a read-then-write transaction could
        // fail to upgrade), and in PostgreSQL the rows written are locked until commit.
        for id in ids {
            tag_insert_tx(&mut tx, resource_type, id, tags).await?;
        }
        for id in ids {
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM tags WHERE resource_type = $1 AND resource_id = $2",
            )
            .bind(resource_type)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            if count > max_per_resource {
                tx.rollback().await?;
                return Ok(TagSetOutcome::TooMany {
                    resource_id: id.clone(),
                    count,
                });
            }
        }
        tx.commit().durable(self).await?;
        Ok(TagSetOutcome::Done)
    }

    /// Removes the tags `keys` from every resource of `ids`; returns how many tags were removed. Keys a
    /// resource does not have are ignored.
    pub async fn tag_remove(
        &self,
        resource_type: &str,
        ids: &[String],
        keys: &[String],
    ) -> Result<u64> {
        if ids.is_empty() || keys.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "DELETE FROM tags WHERE resource_type = $1 AND resource_id IN ({}) AND key IN ({})",
            placeholders(2, ids.len()),
            placeholders(2 + ids.len(), keys.len())
        );
        let mut q = sqlx::query(&sql).bind(resource_type);
        for v in ids.iter().chain(keys) {
            q = q.bind(v);
        }
        Ok(q.execute(&self.pool).durable(self).await?.rows_affected())
    }

    /// Removes every tag of every resource of `ids`; returns how many tags were removed.
    pub async fn tag_remove_all(&self, resource_type: &str, ids: &[String]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "DELETE FROM tags WHERE resource_type = $1 AND resource_id IN ({})",
            placeholders(2, ids.len())
        );
        let mut q = sqlx::query(&sql).bind(resource_type);
        for v in ids {
            q = q.bind(v);
        }
        Ok(q.execute(&self.pool).durable(self).await?.rows_affected())
    }

    /// Forgets a deleted resource's tags. Call it when a source server or job is deleted.
    pub async fn tags_drop_resource(&self, resource_type: &str, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM tags WHERE resource_type = $1 AND resource_id = $2")
            .bind(resource_type)
            .bind(id)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(())
    }

    /// One page of tags of `resource_type`, ordered by (`resource_id`, `key`): of the resources `ids`
    /// (all when empty) that carry every tag of `filter` (all when empty), strictly after the
    /// (`resource_id`, `key`) cursor `after`, at most `limit` rows.
    pub async fn tag_list(
        &self,
        resource_type: &str,
        ids: &[String],
        filter: &[TagFilter],
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<TagRecord>> {
        let Some(filter) = normalize(filter) else {
            return Ok(Vec::new());
        };
        let mut sql = String::from("SELECT * FROM tags WHERE resource_type = $1");
        let mut binds: Vec<String> = vec![resource_type.to_owned()];
        let mut next = 2;
        if !ids.is_empty() {
            sql.push_str(&format!(
                " AND resource_id IN ({})",
                placeholders(next, ids.len())
            ));
            next += ids.len();
            binds.extend(ids.iter().cloned());
        }
        if !filter.is_empty() {
            let (sub, sub_binds) = match_subquery(&filter, &mut next);
            sql.push_str(&format!(" AND resource_id IN ({sub})"));
            binds.extend(sub_binds);
        }
        if let Some((rid, key)) = after {
            sql.push_str(&format!(
                " AND (resource_id > ${n} OR (resource_id = ${n} AND key > ${m}))",
                n = next,
                m = next + 1
            ));
            next += 2;
            binds.push(rid.to_owned());
            binds.push(key.to_owned());
        }
        sql.push_str(&format!(" ORDER BY resource_id, key LIMIT ${next}"));
        let mut q = sqlx::query_as::<_, TagRecord>(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        Ok(q.bind(limit).fetch_all(&self.read).await?)
    }

    /// The IDs of resources of `resource_type` that carry every tag of `filter` (exact values where
    /// given), in ID order. An empty filter matches nothing: callers apply no tag filter then.
    pub async fn tag_match(
        &self,
        resource_type: &str,
        filter: &[TagFilter],
    ) -> Result<Vec<String>> {
        let Some(filter) = normalize(filter).filter(|f| !f.is_empty()) else {
            return Ok(Vec::new());
        };
        let mut next = 2;
        let (sub, binds) = match_subquery(&filter, &mut next);
        let sql = format!("{sub} ORDER BY resource_id");
        let mut q = sqlx::query_scalar::<_, String>(&sql).bind(resource_type);
        for b in &binds {
            q = q.bind(b);
        }
        Ok(q.fetch_all(&self.read).await?)
    }

    /// The tags of each resource of `ids` (one query), keys in order. Resources without tags are absent.
    pub async fn tags_of(
        &self,
        resource_type: &str,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<(String, String)>>> {
        let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT * FROM tags WHERE resource_type = $1 AND resource_id IN ({}) ORDER BY resource_id, key",
            placeholders(2, ids.len())
        );
        let mut q = sqlx::query_as::<_, TagRecord>(&sql).bind(resource_type);
        for id in ids {
            q = q.bind(id);
        }
        for t in q.fetch_all(&self.read).await? {
            out.entry(t.resource_id).or_default().push((t.key, t.value));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(key: &str, value: Option<&str>) -> TagFilter {
        TagFilter {
            key: key.into(),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn filters_on_one_key_merge_or_contradict() {
        assert_eq!(
            normalize(&[f("a", None), f("a", Some("1")), f("b", None)]),
            Some(vec![f("a", Some("1")), f("b", None)])
        );
        assert_eq!(normalize(&[f("a", Some("1")), f("a", Some("2"))]), None);
        assert_eq!(placeholders(3, 2), "$3, $4");
    }
}
