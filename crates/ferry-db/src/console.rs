//! The web console's records (schema in `migrations/0009_console.sql`, design in `docs/console.md`): RAM
//! login profiles (the password hash itself is `ram_users.password_hash`), virtual MFA devices, console
//! sessions, failed sign-ins, and the counts the console's live-update stream summarises.
//!
//! Invariants kept here, in SQL, so that concurrent requests cannot break them:
//! * a login profile exists exactly when `ram_users.password_hash` is set; creating one only succeeds while
//!   none exists, and changing or deleting it deletes the user's console sessions in the same transaction;
//! * a user has at most one bound MFA device and a device is bound to at most one user (a guarded update);
//! * a TOTP time step is accepted at most once per device ([`Db::mfa_device_use_step`] only moves forward).
//!
//! Secrets never reach this layer in clear: sessions are stored as the SHA-256 of the cookie, passwords as
//! Argon2 hashes and MFA seeds sealed by the server; this module never logs any of them.

use sqlx::FromRow;

use crate::Durable as _;
use crate::{Db, Result};

// ---------------------------------------------------------------------------------------------------------
// login profiles

/// A RAM user's login profile: the password hash and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginProfileRecord {
    pub user_name: String,
    pub user_id: String,
    /// PHC string of the password's Argon2 hash.
    pub password_hash: String,
    pub password_reset_required: bool,
    pub mfa_bind_required: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(FromRow)]
struct LoginProfileRow {
    name: String,
    id: String,
    password_hash: Option<String>,
    password_reset_required: Option<i64>,
    mfa_bind_required: Option<i64>,
    created_at: Option<i64>,
    updated_at: Option<i64>,
    user_updated_at: i64,
}

/// Outcome of a login-profile write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginProfileWrite {
    Done,
    UserNotFound,
    /// Create: the user already has a login profile.
    AlreadyExists,
    /// Update or delete: the user has no login profile.
    NotFound,
}

/// The changes of [`Db::login_profile_update`]; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct LoginProfileChange {
    pub password_hash: Option<String>,
    pub password_reset_required: Option<bool>,
    pub mfa_bind_required: Option<bool>,
}

impl Db {
    /// The login profile of the user `name`; `None` when the user does not exist or has no password.
    pub async fn login_profile_get(&self, name: &str) -> Result<Option<LoginProfileRecord>> {
        let row: Option<LoginProfileRow> = sqlx::query_as(
            "SELECT u.name, u.id, u.password_hash, p.password_reset_required, p.mfa_bind_required, \
             p.created_at, p.updated_at, u.updated_at AS user_updated_at \
             FROM ram_users u LEFT JOIN ram_login_profiles p ON p.user_id = u.id WHERE u.name = $1",
        )
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.and_then(|r| {
            let hash = r.password_hash?;
            Some(LoginProfileRecord {
                user_name: r.name,
                user_id: r.id,
                password_hash: hash,
                password_reset_required: r.password_reset_required.unwrap_or(0) != 0,
                mfa_bind_required: r.mfa_bind_required.unwrap_or(0) != 0,
                created_at: r.created_at.unwrap_or(r.user_updated_at),
                updated_at: r.updated_at.unwrap_or(r.user_updated_at),
            })
        }))
    }

    /// Gives the user `name` a password (an Argon2 PHC string) and the profile's settings, unless the
    /// user already has one.
    pub async fn login_profile_create(
        &self,
        name: &str,
        password_hash: &str,
        password_reset_required: bool,
        mfa_bind_required: bool,
        now: i64,
    ) -> Result<LoginProfileWrite> {
        let mut tx = self.pool.begin().await?;
        let user: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT id, password_hash FROM ram_users WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((user_id, existing)) = user else {
            tx.rollback().await?;
            return Ok(LoginProfileWrite::UserNotFound);
        };
        if existing.is_some() {
            tx.rollback().await?;
            return Ok(LoginProfileWrite::AlreadyExists);
        }
        let r = sqlx::query(
            "UPDATE ram_users SET password_hash = $2 WHERE id = $1 AND password_hash IS NULL",
        )
        .bind(&user_id)
        .bind(password_hash)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(LoginProfileWrite::AlreadyExists);
        }
        sqlx::query(
            "INSERT INTO ram_login_profiles (user_id, password_reset_required, mfa_bind_required, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (user_id) DO UPDATE SET password_reset_required = $2, mfa_bind_required = $3, \
             created_at = $4, updated_at = $4",
        )
        .bind(&user_id)
        .bind(i64::from(password_reset_required))
        .bind(i64::from(mfa_bind_required))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().durable(self).await?;
        Ok(LoginProfileWrite::Done)
    }

    /// Changes the login profile of the user `name`. A new password ends the user's console sessions.
    pub async fn login_profile_update(
        &self,
        name: &str,
        change: &LoginProfileChange,
        now: i64,
    ) -> Result<LoginProfileWrite> {
        let Some(current) = self.login_profile_get(name).await? else {
            return Ok(if self.user_id_of(name).await?.is_some() {
                LoginProfileWrite::NotFound
            } else {
                LoginProfileWrite::UserNotFound
            });
        };
        let mut tx = self.pool.begin().await?;
        if let Some(hash) = &change.password_hash {
            let r = sqlx::query(
                "UPDATE ram_users SET password_hash = $2 WHERE id = $1 AND password_hash IS NOT NULL",
            )
            .bind(&current.user_id)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(LoginProfileWrite::NotFound);
            }
            sqlx::query("DELETE FROM console_sessions WHERE user_id = $1")
                .bind(&current.user_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO ram_login_profiles (user_id, password_reset_required, mfa_bind_required, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id) DO UPDATE SET password_reset_required = $2, mfa_bind_required = $3, \
             updated_at = $5",
        )
        .bind(&current.user_id)
        .bind(i64::from(
            change
                .password_reset_required
                .unwrap_or(current.password_reset_required),
        ))
        .bind(i64::from(
            change.mfa_bind_required.unwrap_or(current.mfa_bind_required),
        ))
        .bind(current.created_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().durable(self).await?;
        Ok(LoginProfileWrite::Done)
    }

    /// Removes the password of the user `name` and ends the user's console sessions.
    pub async fn login_profile_delete(&self, name: &str) -> Result<LoginProfileWrite> {
        let Some(user_id) = self.user_id_of(name).await? else {
            return Ok(LoginProfileWrite::UserNotFound);
        };
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE ram_users SET password_hash = NULL WHERE id = $1 AND password_hash IS NOT NULL",
        )
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(LoginProfileWrite::NotFound);
        }
        for sql in [
            "DELETE FROM ram_login_profiles WHERE user_id = $1",
            "DELETE FROM console_sessions WHERE user_id = $1",
        ] {
            sqlx::query(sql).bind(&user_id).execute(&mut *tx).await?;
        }
        tx.commit().durable(self).await?;
        Ok(LoginProfileWrite::Done)
    }

    /// Forgets the console state of a deleted user (ID `user_id`): its login profile settings and
    /// sessions, and unbinds its MFA device (which then can be deleted or bound to someone else).
    pub async fn console_user_forget(&self, user_id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM ram_login_profiles WHERE user_id = $1",
            "DELETE FROM console_sessions WHERE user_id = $1",
            "UPDATE ram_mfa_devices SET user_id = NULL, activated_at = NULL WHERE user_id = $1",
        ] {
            sqlx::query(sql).bind(user_id).execute(&mut *tx).await?;
        }
        tx.commit().durable(self).await?;
        Ok(())
    }

    /// The immutable ID of the user `name`.
    pub async fn user_id_of(&self, name: &str) -> Result<Option<String>> {
        let id: Option<(String,)> = sqlx::query_as("SELECT id FROM ram_users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        Ok(id.map(|(id,)| id))
    }
}

// ---------------------------------------------------------------------------------------------------------
// virtual MFA devices

/// A virtual MFA device.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct MfaDeviceRecord {
    /// `acs:ram::<account>:mfa/<name>`.
    pub serial_number: String,
    pub name: String,
    /// The TOTP seed, sealed by the server (never the clear seed).
    pub seed: String,
    /// The user it is bound to (`ram_users.id`); `None` while unbound.
    pub user_id: Option<String>,
    pub activated_at: Option<i64>,
    /// The last TOTP time step accepted.
    pub last_step: i64,
    pub created_at: i64,
}

/// Outcome of [`Db::mfa_device_bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaBind {
    Bound,
    DeviceNotFound,
    /// The device is already bound (to this user or another).
    DeviceInUse,
    /// The user already has a bound device.
    UserHasDevice,
}

/// Outcome of [`Db::mfa_device_delete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaDelete {
    Deleted,
    NotFound,
    /// The device is bound to a user: unbind it first.
    Bound,
}

impl Db {
    /// Inserts a device; `false` (nothing changed) when the serial number is taken.
    pub async fn mfa_device_create(&self, d: &MfaDeviceRecord) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO ram_mfa_devices (serial_number, name, seed, user_id, activated_at, last_step, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (serial_number) DO NOTHING",
        )
        .bind(&d.serial_number)
        .bind(&d.name)
        .bind(&d.seed)
        .bind(&d.user_id)
        .bind(d.activated_at)
        .bind(d.last_step)
        .bind(d.created_at)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn mfa_device_get(&self, serial_number: &str) -> Result<Option<MfaDeviceRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM ram_mfa_devices WHERE serial_number = $1")
                .bind(serial_number)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    /// The device bound to the user with ID `user_id`.
    pub async fn mfa_device_for_user(&self, user_id: &str) -> Result<Option<MfaDeviceRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM ram_mfa_devices WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    /// All devices, oldest first.
    pub async fn mfa_device_list(&self) -> Result<Vec<MfaDeviceRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM ram_mfa_devices ORDER BY created_at, serial_number")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Binds an unbound device to a user that has none, remembering `step` as the last TOTP step used.
    pub async fn mfa_device_bind(
        &self,
        serial_number: &str,
        user_id: &str,
        step: i64,
        now: i64,
    ) -> Result<MfaBind> {
        let r = sqlx::query(
            "UPDATE ram_mfa_devices SET user_id = $2, activated_at = $3, last_step = $4 \
             WHERE serial_number = $1 AND user_id IS NULL \
             AND NOT EXISTS (SELECT 1 FROM ram_mfa_devices WHERE user_id = $2)",
        )
        .bind(serial_number)
        .bind(user_id)
        .bind(now)
        .bind(step)
        .execute(&self.pool)
        .durable(self)
        .await;
        match r {
            Ok(r) if r.rows_affected() == 1 => return Ok(MfaBind::Bound),
            Ok(_) => {}
            // Two binds of two devices to one user racing: the UNIQUE (user_id) stops the second.
            Err(e)
                if e.as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                return Ok(MfaBind::UserHasDevice);
            }
            Err(e) => return Err(e.into()),
        }
        Ok(match self.mfa_device_get(serial_number).await? {
            None => MfaBind::DeviceNotFound,
            Some(d) if d.user_id.is_some() => MfaBind::DeviceInUse,
            Some(_) => MfaBind::UserHasDevice,
        })
    }

    /// Unbinds the device of the user with ID `user_id`; returns its serial number (`None`: no device).
    pub async fn mfa_device_unbind(&self, user_id: &str) -> Result<Option<String>> {
        let Some(d) = self.mfa_device_for_user(user_id).await? else {
            return Ok(None);
        };
        let r = sqlx::query(
            "UPDATE ram_mfa_devices SET user_id = NULL, activated_at = NULL \
             WHERE serial_number = $1 AND user_id = $2",
        )
        .bind(&d.serial_number)
        .bind(user_id)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok((r.rows_affected() == 1).then_some(d.serial_number))
    }

    /// Records that the TOTP time step `step` was used with the device; `false` when that step (or a later
    /// one) was already used: the code is a replay.
    pub async fn mfa_device_use_step(&self, serial_number: &str, step: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE ram_mfa_devices SET last_step = $2 WHERE serial_number = $1 AND last_step < $2",
        )
        .bind(serial_number)
        .bind(step)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes an unbound device (a device whose user no longer exists counts as unbound).
    pub async fn mfa_device_delete(&self, serial_number: &str) -> Result<MfaDelete> {
        let r = sqlx::query(
            "DELETE FROM ram_mfa_devices WHERE serial_number = $1 AND (user_id IS NULL \
             OR NOT EXISTS (SELECT 1 FROM ram_users u WHERE u.id = ram_mfa_devices.user_id))",
        )
        .bind(serial_number)
        .execute(&self.pool)
        .durable(self)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(MfaDelete::Deleted);
        }
        Ok(match self.mfa_device_get(serial_number).await? {
            None => MfaDelete::NotFound,
            Some(_) => MfaDelete::Bound,
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// console sessions and failed sign-ins

/// A console session.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ConsoleSessionRecord {
    /// Hex SHA-256 of the session cookie's value.
    pub id_hash: String,
    pub user_id: String,
    pub user_name: String,
    pub csrf_token: String,
    /// 1 when the user proved a second factor at sign-in (`acs:MFAPresent`).
    pub mfa: i64,
    pub source_ip: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

impl Db {
    pub async fn console_session_create(&self, s: &ConsoleSessionRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, user_id, user_name, csrf_token, mfa, source_ip, \
             created_at, last_seen_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&s.id_hash)
        .bind(&s.user_id)
        .bind(&s.user_name)
        .bind(&s.csrf_token)
        .bind(s.mfa)
        .bind(&s.source_ip)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(())
    }

    pub async fn console_session_get(&self, id_hash: &str) -> Result<Option<ConsoleSessionRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM console_sessions WHERE id_hash = $1")
                .bind(id_hash)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    /// Moves the session's idle clock to `now` (never backwards).
    pub async fn console_session_touch(&self, id_hash: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE console_sessions SET last_seen_at = $2 WHERE id_hash = $1 AND last_seen_at < $2",
        )
        .bind(id_hash)
        .bind(now)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(())
    }

    /// Deletes one session; `false` when it did not exist.
    pub async fn console_session_delete(&self, id_hash: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes the sessions idle since before `idle_before` or created before `created_before`.
    pub async fn console_session_purge(
        &self,
        idle_before: i64,
        created_before: i64,
    ) -> Result<u64> {
        let r =
            sqlx::query("DELETE FROM console_sessions WHERE last_seen_at < $1 OR created_at < $2")
                .bind(idle_before)
                .bind(created_before)
                .execute(&self.pool)
                .durable(self)
                .await?;
        Ok(r.rows_affected())
    }

    pub async fn console_signin_failure_add(&self, user_name: &str, at: i64) -> Result<()> {
        sqlx::query("INSERT INTO console_signin_failures (user_name, failed_at) VALUES ($1, $2)")
            .bind(user_name)
            .bind(at)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(())
    }

    /// The times of the failed sign-ins of `user_name` at or after `since`, newest first.
    pub async fn console_signin_failure_list(
        &self,
        user_name: &str,
        since: i64,
    ) -> Result<Vec<i64>> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT failed_at FROM console_signin_failures WHERE user_name = $1 AND failed_at >= $2 \
             ORDER BY failed_at DESC",
        )
        .bind(user_name)
        .bind(since)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(|(t,)| t).collect())
    }

    /// Forgets the failed sign-ins of `user_name` (after a successful one).
    pub async fn console_signin_failure_clear(&self, user_name: &str) -> Result<()> {
        sqlx::query("DELETE FROM console_signin_failures WHERE user_name = $1")
            .bind(user_name)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(())
    }

    /// Forgets failed sign-ins older than `before`.
    pub async fn console_signin_failure_purge(&self, before: i64) -> Result<u64> {
        let r = sqlx::query("DELETE FROM console_signin_failures WHERE failed_at < $1")
            .bind(before)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(r.rows_affected())
    }
}

// ---------------------------------------------------------------------------------------------------------
// the live-update summary

/// How many jobs, runs, source servers and instances are in each status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleSummary {
    pub jobs: Vec<(String, i64)>,
    pub runs: Vec<(String, i64)>,
    pub sources: Vec<(String, i64)>,
    pub instances: Vec<(String, i64)>,
}

impl Db {
    /// Counts per status, each list ordered by status.
    pub async fn console_summary(&self) -> Result<ConsoleSummary> {
        // Fixed statements (no table name comes from outside).
        const QUERIES: [&str; 4] = [
            "SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status",
            "SELECT status, COUNT(*) FROM runs GROUP BY status ORDER BY status",
            "SELECT state, COUNT(*) FROM sources GROUP BY state ORDER BY state",
            "SELECT status, COUNT(*) FROM instances GROUP BY status ORDER BY status",
        ];
        let mut out = Vec::with_capacity(QUERIES.len());
        for q in QUERIES {
            let rows: Vec<(String, i64)> = sqlx::query_as(q).fetch_all(&self.read).await?;
            out.push(rows);
        }
        let instances = out.pop().unwrap_or_default();
        let sources = out.pop().unwrap_or_default();
        let runs = out.pop().unwrap_or_default();
        let jobs = out.pop().unwrap_or_default();
        Ok(ConsoleSummary {
            jobs,
            runs,
            sources,
            instances,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserRecord;

    /// SQLite always, and PostgreSQL when `FERRY_TEST_POSTGRES` names a test cluster (`crate::testing`).
    async fn engines() -> Vec<(&'static str, Db, Box<dyn std::any::Any>)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = Db::open_sqlite(&dir.path().join("t.db"))
            .await
            .expect("sqlite");
        let mut out: Vec<(&'static str, Db, Box<dyn std::any::Any>)> =
            vec![("sqlite", sqlite, Box::new(dir))];
        if let Some(pg) = crate::testing::PgTestDb::create()
            .await
            .expect("FERRY_TEST_POSTGRES is set but PostgreSQL is unreachable")
        {
            let db = pg.open().await.expect("postgres");
            out.push(("postgres", db, Box::new(pg)));
        }
        out
    }

    fn user(name: &str, id: &str) -> UserRecord {
        UserRecord {
            name: name.into(),
            id: id.into(),
            display_name: name.into(),
            email: String::new(),
            mobile_phone: String::new(),
            comments: String::new(),
            created_at: 10,
            updated_at: 10,
            password_hash: None,
            mfa_secret: None,
        }
    }

    fn session(id_hash: &str, user_id: &str, name: &str, at: i64) -> ConsoleSessionRecord {
        ConsoleSessionRecord {
            id_hash: id_hash.into(),
            user_id: user_id.into(),
            user_name: name.into(),
            csrf_token: format!("csrf-{id_hash}"),
            mfa: 0,
            source_ip: "127.0.0.1".into(),
            created_at: at,
            last_seen_at: at,
        }
    }

    #[tokio::test]
    async fn login_profiles_are_created_once_and_end_sessions_when_changed() {
        for (engine, db, _keep) in engines().await {
            assert!(db.user_create(&user("alice", "1")).await.expect("user"));
            assert_eq!(db.login_profile_get("alice").await.expect("get"), None);
            assert_eq!(
                db.login_profile_create("nobody", "h", false, false, 1)
                    .await
                    .expect("create"),
                LoginProfileWrite::UserNotFound,
                "{engine}"
            );
            assert_eq!(
                db.login_profile_create("alice", "hash-1", true, false, 100)
                    .await
                    .expect("create"),
                LoginProfileWrite::Done
            );
            assert_eq!(
                db.login_profile_create("alice", "hash-2", false, false, 101)
                    .await
                    .expect("create again"),
                LoginProfileWrite::AlreadyExists
            );
            let p = db
                .login_profile_get("alice")
                .await
                .expect("get")
                .expect("profile");
            assert_eq!(
                (
                    p.password_hash.as_str(),
                    p.password_reset_required,
                    p.mfa_bind_required
                ),
                ("hash-1", true, false),
                "{engine}"
            );
            assert_eq!(p.created_at, 100);

            // Settings only: sessions stay. A new password: they end.
            db.console_session_create(&session("s1", "1", "alice", 100))
                .await
                .expect("session");
            let flags = LoginProfileChange {
                mfa_bind_required: Some(true),
                ..Default::default()
            };
            db.login_profile_update("alice", &flags, 150)
                .await
                .expect("update");
            assert!(db.console_session_get("s1").await.expect("get").is_some());
            let p = db
                .login_profile_get("alice")
                .await
                .expect("get")
                .expect("profile");
            assert!(p.mfa_bind_required && p.password_reset_required, "{engine}");
            assert_eq!((p.created_at, p.updated_at), (100, 150));
            let pw = LoginProfileChange {
                password_hash: Some("hash-3".into()),
                ..Default::default()
            };
            db.login_profile_update("alice", &pw, 160)
                .await
                .expect("update");
            assert!(db.console_session_get("s1").await.expect("get").is_none());
            assert_eq!(
                db.login_profile_get("alice")
                    .await
                    .expect("get")
                    .map(|p| p.password_hash),
                Some("hash-3".into())
            );

            db.console_session_create(&session("s2", "1", "alice", 170))
                .await
                .expect("session");
            assert_eq!(
                db.login_profile_delete("alice").await.expect("delete"),
                LoginProfileWrite::Done
            );
            assert!(db.console_session_get("s2").await.expect("get").is_none());
            assert_eq!(
                db.login_profile_delete("alice").await.expect("delete"),
                LoginProfileWrite::NotFound
            );
            assert_eq!(
                db.login_profile_update("alice", &pw, 1)
                    .await
                    .expect("update"),
                LoginProfileWrite::NotFound
            );
        }
    }

    fn device(serial: &str) -> MfaDeviceRecord {
        MfaDeviceRecord {
            serial_number: serial.into(),
            name: serial.into(),
            seed: "v1:sealed".into(),
            user_id: None,
            activated_at: None,
            last_step: 0,
            created_at: 5,
        }
    }

    #[tokio::test]
    async fn mfa_devices_bind_once_and_accept_each_step_once() {
        for (engine, db, _keep) in engines().await {
            db.user_create(&user("bob", "2")).await.expect("user");
            db.user_create(&user("carl", "3")).await.expect("user");
            assert!(db.mfa_device_create(&device("d1")).await.expect("create"));
            assert!(!db.mfa_device_create(&device("d1")).await.expect("again"));
            assert!(db.mfa_device_create(&device("d2")).await.expect("create"));
            assert_eq!(
                db.mfa_device_bind("d1", "2", 7, 50).await.expect("bind"),
                MfaBind::Bound,
                "{engine}"
            );
            assert_eq!(
                db.mfa_device_bind("d1", "3", 7, 50).await.expect("bind"),
                MfaBind::DeviceInUse
            );
            assert_eq!(
                db.mfa_device_bind("d2", "2", 7, 50).await.expect("bind"),
                MfaBind::UserHasDevice
            );
            assert_eq!(
                db.mfa_device_bind("nope", "3", 7, 50).await.expect("bind"),
                MfaBind::DeviceNotFound
            );
            let d = db
                .mfa_device_for_user("2")
                .await
                .expect("get")
                .expect("bound");
            assert_eq!(
                (d.serial_number.as_str(), d.last_step, d.activated_at),
                ("d1", 7, Some(50))
            );

            // Steps only move forward: a replay (same or older step) is refused.
            assert!(!db.mfa_device_use_step("d1", 7).await.expect("step"));
            assert!(db.mfa_device_use_step("d1", 8).await.expect("step"));
            assert!(!db.mfa_device_use_step("d1", 8).await.expect("step"));
            assert!(!db.mfa_device_use_step("d1", 6).await.expect("step"));

            assert_eq!(
                db.mfa_device_delete("d1").await.expect("delete"),
                MfaDelete::Bound
            );
            assert_eq!(
                db.mfa_device_unbind("2").await.expect("unbind"),
                Some("d1".to_owned())
            );
            assert_eq!(db.mfa_device_unbind("2").await.expect("unbind"), None);
            assert_eq!(
                db.mfa_device_delete("d1").await.expect("delete"),
                MfaDelete::Deleted
            );
            assert_eq!(
                db.mfa_device_delete("d1").await.expect("delete"),
                MfaDelete::NotFound
            );

            // A deleted user's device counts as unbound; forgetting the user unbinds it.
            db.mfa_device_bind("d2", "3", 1, 60).await.expect("bind");
            assert_eq!(
                db.user_delete("carl").await.expect("delete"),
                crate::UserDelete::Deleted
            );
            db.console_user_forget("3").await.expect("forget");
            let d2 = db.mfa_device_get("d2").await.expect("get").expect("d2");
            assert_eq!(d2.user_id, None, "{engine}");
            assert_eq!(db.mfa_device_list().await.expect("list").len(), 1);
        }
    }

    #[tokio::test]
    async fn sessions_failures_and_the_summary() {
        for (engine, db, _keep) in engines().await {
            db.console_session_create(&session("a", "1", "u", 100))
                .await
                .expect("a");
            db.console_session_create(&session("b", "1", "u", 1000))
                .await
                .expect("b");
            db.console_session_touch("a", 200).await.expect("touch");
            db.console_session_touch("a", 150)
                .await
                .expect("never backwards");
            assert_eq!(
                db.console_session_get("a")
                    .await
                    .expect("get")
                    .map(|s| s.last_seen_at),
                Some(200)
            );
            // Idle since before 500: `a` goes, `b` stays.
            assert_eq!(
                db.console_session_purge(500, 0).await.expect("purge"),
                1,
                "{engine}"
            );
            assert!(db.console_session_get("b").await.expect("get").is_some());
            assert!(db.console_session_delete("b").await.expect("delete"));
            assert!(!db.console_session_delete("b").await.expect("delete"));

            for t in [10, 20, 30] {
                db.console_signin_failure_add("u", t).await.expect("add");
            }
            db.console_signin_failure_add("v", 25).await.expect("add");
            assert_eq!(
                db.console_signin_failure_list("u", 15).await.expect("list"),
                vec![30, 20]
            );
            db.console_signin_failure_purge(25).await.expect("purge");
            assert_eq!(
                db.console_signin_failure_list("u", 0).await.expect("list"),
                vec![30]
            );
            db.console_signin_failure_clear("u").await.expect("clear");
            assert!(
                db.console_signin_failure_list("u", 0)
                    .await
                    .expect("list")
                    .is_empty()
            );
            assert_eq!(
                db.console_signin_failure_list("v", 0).await.expect("list"),
                vec![25]
            );

            let empty = db.console_summary().await.expect("summary");
            assert_eq!(empty, ConsoleSummary::default(), "{engine}");
        }
    }
}
