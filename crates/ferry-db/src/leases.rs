//! Leases (table `leases`, migration 0007): how several `ferry server` replicas on one database share
//! background work so that each unit runs on one replica at a time (docs/scale-out.md).
//!
//! A lease is a named row with a holder and an expiry. [`Db::lease_acquire`] takes a lease that is free,
//! released or expired in one statement (`INSERT … ON CONFLICT DO UPDATE … WHERE expires_at <= now`, atomic
//! on SQLite ≥ 3.24 and PostgreSQL), so two replicas can never both acquire it. Every acquisition bumps the
//! lease's fencing number and appends a `lease_events` row; renewal and release name the fencing number, so
//! a holder that lost its lease (it stalled past the expiry and another replica took over) can neither
//! extend nor free the new holder's lease.
//!
//! Invariants: `expires_at` is the database host's idea of unix seconds as passed in by the replicas, so
//! replicas need clocks within a small fraction of the lease TTL of each other; a released lease has
//! `expires_at = 0` and keeps its row, so fencing numbers never repeat for a name.

use sqlx::{FromRow, Row};

use crate::Durable as _;
use crate::{Db, Result, now};

/// A lease this process holds: renew and release it with the same value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// Grows by one at each acquisition of `name`.
    pub fencing: i64,
    /// The holder of an unreleased, expired lease this acquisition took over; `None` when the lease was
    /// free or released.
    pub taken_over_from: Option<String>,
}

/// One acquisition of a lease (`lease_events`).
#[derive(Debug, Clone, FromRow)]
pub struct LeaseEventRecord {
    pub name: String,
    pub fencing: i64,
    pub holder: String,
    pub previous_holder: Option<String>,
    pub acquired_at: i64,
    /// 1 when the holder started the work (see [`Db::lease_note_work`]).
    pub worked: i64,
}

impl Db {
    /// Takes the lease `name` for `holder` for `ttl_secs` seconds if nobody holds it (never taken,
    /// released, or expired). Returns `None` while another holder's lease is live, and also while
    /// `holder` itself holds it (acquiring twice is a caller bug, not a renewal).
    pub async fn lease_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl_secs: i64,
    ) -> Result<Option<Lease>> {
        let at = now();
        let mut tx = self.pool.begin().await?;
        // The write comes first in the transaction: SQLite then takes its write lock at once (waiting on
        // busy_timeout) instead of failing to upgrade a read lock.
        let row = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at, fencing, previous_holder, acquired_at) \
             VALUES ($1, $2, $3, 1, NULL, $4) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at, \
             fencing = leases.fencing + 1, acquired_at = excluded.acquired_at, \
             previous_holder = CASE WHEN leases.expires_at > 0 THEN leases.holder ELSE NULL END \
             WHERE leases.expires_at <= $4 \
             RETURNING fencing, previous_holder",
        )
        .bind(name)
        .bind(holder)
        .bind(at + ttl_secs)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let fencing: i64 = row.try_get("fencing")?;
        let previous: Option<String> = row.try_get("previous_holder")?;
        sqlx::query(
            "INSERT INTO lease_events (name, fencing, holder, previous_holder, acquired_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name)
        .bind(fencing)
        .bind(holder)
        .bind(&previous)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().durable(self).await?;
        Ok(Some(Lease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            fencing,
            taken_over_from: previous,
        }))
    }

    /// Extends a held lease to `ttl_secs` from now. `false` when the lease was lost (released, or taken
    /// over by another holder after it expired): the caller must stop the work it guards.
    pub async fn lease_renew(&self, lease: &Lease, ttl_secs: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE leases SET expires_at = $1 \
             WHERE name = $2 AND holder = $3 AND fencing = $4 AND expires_at > 0",
        )
        .bind(now() + ttl_secs)
        .bind(&lease.name)
        .bind(&lease.holder)
        .bind(lease.fencing)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Releases a held lease so another replica can take it at once. `false` when it was no longer held.
    pub async fn lease_release(&self, lease: &Lease) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE leases SET expires_at = 0 \
             WHERE name = $1 AND holder = $2 AND fencing = $3 AND expires_at > 0",
        )
        .bind(&lease.name)
        .bind(&lease.holder)
        .bind(lease.fencing)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Releases every lease whose holder starts with `holder_prefix` (a replica's id and `#`): what a
    /// restarted replica does with the leases its killed predecessor left behind, instead of waiting for
    /// them to expire. Returns how many were released.
    pub async fn lease_release_all_of(&self, holder_prefix: &str) -> Result<u64> {
        let pattern = like_prefix(holder_prefix);
        let r = sqlx::query(
            "UPDATE leases SET expires_at = 0 WHERE holder LIKE $1 ESCAPE '\\' AND expires_at > 0",
        )
        .bind(pattern)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(r.rows_affected())
    }

    /// Records that the holder of `lease` found its work still to do and started it.
    pub async fn lease_note_work(&self, lease: &Lease) -> Result<()> {
        sqlx::query("UPDATE lease_events SET worked = 1 WHERE name = $1 AND fencing = $2")
            .bind(&lease.name)
            .bind(lease.fencing)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(())
    }

    /// The current holder of `name` and its fencing number, if the lease is live.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>> {
        let row =
            sqlx::query("SELECT holder, fencing FROM leases WHERE name = $1 AND expires_at > $2")
                .bind(name)
                .bind(now())
                .fetch_optional(&self.read)
                .await?;
        row.map(|r| Ok((r.try_get("holder")?, r.try_get("fencing")?)))
            .transpose()
    }

    /// Live leases whose name starts with `prefix`: `(name, holder, fencing)`, by name.
    pub async fn lease_list_live(&self, prefix: &str) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT name, holder, fencing FROM leases \
             WHERE name LIKE $1 ESCAPE '\\' AND expires_at > $2 ORDER BY name",
        )
        .bind(like_prefix(prefix))
        .bind(now())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("name")?,
                    r.try_get("holder")?,
                    r.try_get("fencing")?,
                ))
            })
            .collect()
    }

    /// Every acquisition of leases whose name starts with `prefix`, oldest first (by name, then fencing).
    pub async fn lease_event_list(&self, prefix: &str) -> Result<Vec<LeaseEventRecord>> {
        let pattern = like_prefix(prefix);
        Ok(sqlx::query_as::<_, LeaseEventRecord>(
            "SELECT name, fencing, holder, previous_holder, acquired_at, worked FROM lease_events \
             WHERE name LIKE $1 ESCAPE '\\' ORDER BY name, fencing",
        )
        .bind(pattern)
        .fetch_all(&self.read)
        .await?)
    }
}

/// A LIKE pattern matching strings that start with `prefix` literally (`\\` escapes).
fn like_prefix(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}
