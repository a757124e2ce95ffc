//! RAM identities and STS sessions: users, their access keys, custom policies, policy attachments, roles and
//! the temporary credentials AssumeRole issues (schema in `migrations/0002_iam.sql`).
//!
//! Invariants kept here, in SQL, so that two concurrent requests cannot break them:
//! * a user is deleted only while it has no access keys and no attached policies, and a role only while it
//!   has no attached policies (the check and the delete are one statement);
//! * a user has at most `max` access keys (the count and the insert are one statement);
//! * an attachment is only written while its principal (and, for a custom policy, the policy) exists;
//! * renaming a user renames its access keys and attachments in the same transaction.
//!
//! System policies live in the server's code, not here: attachments name them with `policy_type = "System"`
//! and this layer does not check that such a name exists.

use sqlx::FromRow;

use crate::Durable as _;
use crate::{Db, Result};

/// `principal_type` of an attachment to a RAM user.
pub const PRINCIPAL_USER: &str = "User";
/// `principal_type` of an attachment to a RAM role.
pub const PRINCIPAL_ROLE: &str = "Role";
/// `policy_type` of a policy built into the server.
pub const POLICY_SYSTEM: &str = "System";
/// `policy_type` of a policy stored in `ram_policies`.
pub const POLICY_CUSTOM: &str = "Custom";

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

// ---------------------------------------------------------------------------------------------------------
// users

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct UserRecord {
    pub name: String,
    pub id: String,
    pub display_name: String,
    pub email: String,
    pub mobile_phone: String,
    pub comments: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// For console sign-in; `None` until a password is set.
    pub password_hash: Option<String>,
    /// TOTP secret for console MFA; `None` until MFA is bound.
    pub mfa_secret: Option<String>,
}

/// Outcome of [`Db::user_update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserUpdate {
    Updated,
    NotFound,
    /// The new name belongs to another user.
    NameTaken,
}

/// Outcome of [`Db::user_delete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserDelete {
    Deleted,
    NotFound,
    /// The user still has access keys: delete them first.
    HasAccessKeys,
    /// The user still has attached policies: detach them first.
    HasPolicies,
}

impl Db {
    /// Inserts a user; returns `false` (and changes nothing) when the name is taken.
    pub async fn user_create(&self, u: &UserRecord) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO ram_users (name, id, display_name, email, mobile_phone, comments, created_at, \
             updated_at, password_hash, mfa_secret) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&u.name)
        .bind(&u.id)
        .bind(&u.display_name)
        .bind(&u.email)
        .bind(&u.mobile_phone)
        .bind(&u.comments)
        .bind(u.created_at)
        .bind(u.updated_at)
        .bind(&u.password_hash)
        .bind(&u.mfa_secret)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn user_get(&self, name: &str) -> Result<Option<UserRecord>> {
        Ok(sqlx::query_as("SELECT * FROM ram_users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await?)
    }

    /// All users, ordered by creation.
    pub async fn user_list(&self) -> Result<Vec<UserRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM ram_users ORDER BY created_at, name")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Replaces the user `name` with `u` (whose `name` may differ: a rename). A rename moves the user's
    /// access keys and attachments in the same transaction. `id`, `created_at` and the console
    /// credentials are kept from the stored record.
    pub async fn user_update(&self, name: &str, u: &UserRecord) -> Result<UserUpdate> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE ram_users SET name = $2, display_name = $3, email = $4, mobile_phone = $5, \
             comments = $6, updated_at = $7 WHERE name = $1",
        )
        .bind(name)
        .bind(&u.name)
        .bind(&u.display_name)
        .bind(&u.email)
        .bind(&u.mobile_phone)
        .bind(&u.comments)
        .bind(u.updated_at)
        .execute(&mut *tx)
        .await;
        let r = match r {
            Ok(r) => r,
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                return Ok(UserUpdate::NameTaken);
            }
            Err(e) => return Err(e.into()),
        };
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(UserUpdate::NotFound);
        }
        if u.name != name {
            sqlx::query("UPDATE access_keys SET user_name = $2 WHERE user_name = $1")
                .bind(name)
                .bind(&u.name)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE ram_attachments SET principal_name = $2 \
                 WHERE principal_type = 'User' AND principal_name = $1",
            )
            .bind(name)
            .bind(&u.name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().durable(self).await?;
        Ok(UserUpdate::Updated)
    }

    /// Deletes a user that has neither access keys nor attached policies.
    pub async fn user_delete(&self, name: &str) -> Result<UserDelete> {
        let r = sqlx::query(
            "DELETE FROM ram_users WHERE name = $1 \
             AND NOT EXISTS (SELECT 1 FROM access_keys WHERE user_name = $1) \
             AND NOT EXISTS (SELECT 1 FROM ram_attachments WHERE principal_type = 'User' AND principal_name = $1)",
        )
        .bind(name)
        .execute(&self.pool).durable(self)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(UserDelete::Deleted);
        }
        if self.user_get(name).await?.is_none() {
            return Ok(UserDelete::NotFound);
        }
        if !self.access_key_list(Some(name)).await?.is_empty() {
            return Ok(UserDelete::HasAccessKeys);
        }
        Ok(UserDelete::HasPolicies)
    }
}

// ---------------------------------------------------------------------------------------------------------
// access keys of RAM users (the table and `access_key_create`/`access_key_get` are in records.rs)

/// Outcome of [`Db::access_key_create_for_user`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKeyCreate {
    Created,
    UserNotFound,
    /// The user already has the maximum number of keys.
    LimitExceeded,
}

impl Db {
    /// Inserts `key` for the RAM user `key.user_name` if that user exists and has fewer than `max` keys.
    /// A key without a user name (the root account's) is refused as `UserNotFound`: root keys are made by
    /// `access_key_create` at first start.
    pub async fn access_key_create_for_user(
        &self,
        key: &crate::AccessKeyRecord,
        max: i64,
    ) -> Result<AccessKeyCreate> {
        let Some(user) = key.user_name.as_deref() else {
            return Ok(AccessKeyCreate::UserNotFound);
        };
        let r = sqlx::query(
            "INSERT INTO access_keys (id, secret, user_name, status, created_at) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM ram_users WHERE name = $3) \
             AND (SELECT COUNT(*) FROM access_keys WHERE user_name = $3) < $6",
        )
        .bind(&key.id)
        .bind(&key.secret)
        .bind(user)
        .bind(&key.status)
        .bind(key.created_at)
        .bind(max)
        .execute(&self.pool)
        .durable(self)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(AccessKeyCreate::Created);
        }
        if self.user_get(user).await?.is_none() {
            return Ok(AccessKeyCreate::UserNotFound);
        }
        Ok(AccessKeyCreate::LimitExceeded)
    }

    /// The access keys of a RAM user, or of the root account when `user_name` is `None`; oldest first.
    pub async fn access_key_list(
        &self,
        user_name: Option<&str>,
    ) -> Result<Vec<crate::AccessKeyRecord>> {
        let q = match user_name {
            Some(u) => sqlx::query_as(
                "SELECT * FROM access_keys WHERE user_name = $1 ORDER BY created_at, id",
            )
            .bind(u.to_owned()),
            None => sqlx::query_as(
                "SELECT * FROM access_keys WHERE user_name IS NULL ORDER BY created_at, id",
            ),
        };
        Ok(q.fetch_all(&self.read).await?)
    }

    /// Sets the status (`Active`/`Inactive`) of key `id` owned by `user_name` (`None` = root); returns
    /// `false` when there is no such key for that owner.
    pub async fn access_key_set_status(
        &self,
        id: &str,
        user_name: Option<&str>,
        status: &str,
    ) -> Result<bool> {
        let r = match user_name {
            Some(u) => {
                sqlx::query("UPDATE access_keys SET status = $3 WHERE id = $1 AND user_name = $2")
                    .bind(id)
                    .bind(u)
                    .bind(status)
                    .execute(&self.pool)
                    .durable(self)
                    .await?
            }
            None => {
                sqlx::query(
                    "UPDATE access_keys SET status = $2 WHERE id = $1 AND user_name IS NULL",
                )
                .bind(id)
                .bind(status)
                .execute(&self.pool)
                .durable(self)
                .await?
            }
        };
        Ok(r.rows_affected() == 1)
    }

    /// Deletes key `id` owned by `user_name` (`None` = root); returns `false` when there is none.
    pub async fn access_key_delete(&self, id: &str, user_name: Option<&str>) -> Result<bool> {
        let r = match user_name {
            Some(u) => {
                sqlx::query("DELETE FROM access_keys WHERE id = $1 AND user_name = $2")
                    .bind(id)
                    .bind(u)
                    .execute(&self.pool)
                    .durable(self)
                    .await?
            }
            None => {
                sqlx::query("DELETE FROM access_keys WHERE id = $1 AND user_name IS NULL")
                    .bind(id)
                    .execute(&self.pool)
                    .durable(self)
                    .await?
            }
        };
        Ok(r.rows_affected() == 1)
    }
}

// ---------------------------------------------------------------------------------------------------------
// custom policies

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct PolicyRecord {
    pub name: String,
    /// The policy document as the client sent it (JSON text, already validated by the server).
    pub document: String,
    pub description: String,
    /// `v1`, `v2`, …
    pub default_version: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Outcome of [`Db::policy_delete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDelete {
    Deleted,
    NotFound,
    /// Still attached to a user or a role (see `attachment_list_for_policy` for which).
    Attached,
}

impl Db {
    /// Inserts a custom policy; returns `false` when the name is taken.
    pub async fn policy_create(&self, p: &PolicyRecord) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO ram_policies (name, document, description, default_version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&p.name)
        .bind(&p.document)
        .bind(&p.description)
        .bind(&p.default_version)
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn policy_get(&self, name: &str) -> Result<Option<PolicyRecord>> {
        Ok(sqlx::query_as("SELECT * FROM ram_policies WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await?)
    }

    /// All custom policies, ordered by creation.
    pub async fn policy_list(&self) -> Result<Vec<PolicyRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM ram_policies ORDER BY created_at, name")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Replaces a custom policy's document and default version (a new policy version); returns `false`
    /// when there is no such policy.
    pub async fn policy_set_document(
        &self,
        name: &str,
        document: &str,
        version: &str,
        at: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE ram_policies SET document = $2, default_version = $3, updated_at = $4 WHERE name = $1",
        )
        .bind(name)
        .bind(document)
        .bind(version)
        .bind(at)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes a custom policy that is attached to nobody.
    pub async fn policy_delete(&self, name: &str) -> Result<PolicyDelete> {
        let r = sqlx::query(
            "DELETE FROM ram_policies WHERE name = $1 AND NOT EXISTS \
             (SELECT 1 FROM ram_attachments WHERE policy_type = 'Custom' AND policy_name = $1)",
        )
        .bind(name)
        .execute(&self.pool)
        .durable(self)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(PolicyDelete::Deleted);
        }
        Ok(match self.policy_get(name).await? {
            None => PolicyDelete::NotFound,
            Some(_) => PolicyDelete::Attached,
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// attachments

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AttachmentRecord {
    /// [`PRINCIPAL_USER`] or [`PRINCIPAL_ROLE`].
    pub principal_type: String,
    pub principal_name: String,
    /// [`POLICY_SYSTEM`] or [`POLICY_CUSTOM`].
    pub policy_type: String,
    pub policy_name: String,
    pub attached_at: i64,
}

/// Outcome of [`Db::attachment_create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    Attached,
    AlreadyAttached,
    PrincipalNotFound,
    /// A custom policy that does not exist.
    PolicyNotFound,
}

impl Db {
    /// Attaches a policy to a principal, if the principal (and a custom policy) exists.
    pub async fn attachment_create(&self, a: &AttachmentRecord) -> Result<Attach> {
        let principal_table = if a.principal_type == PRINCIPAL_ROLE {
            "ram_roles"
        } else {
            "ram_users"
        };
        let sql = format!(
            "INSERT INTO ram_attachments (principal_type, principal_name, policy_type, policy_name, attached_at) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM {principal_table} WHERE name = $2) \
             AND ($3 <> 'Custom' OR EXISTS (SELECT 1 FROM ram_policies WHERE name = $4)) \
             ON CONFLICT (principal_type, principal_name, policy_type, policy_name) DO NOTHING"
        );
        let r = sqlx::query(&sql)
            .bind(&a.principal_type)
            .bind(&a.principal_name)
            .bind(&a.policy_type)
            .bind(&a.policy_name)
            .bind(a.attached_at)
            .execute(&self.pool)
            .durable(self)
            .await?;
        if r.rows_affected() == 1 {
            return Ok(Attach::Attached);
        }
        let principal_exists = if a.principal_type == PRINCIPAL_ROLE {
            self.role_get(&a.principal_name).await?.is_some()
        } else {
            self.user_get(&a.principal_name).await?.is_some()
        };
        if !principal_exists {
            return Ok(Attach::PrincipalNotFound);
        }
        if a.policy_type == POLICY_CUSTOM && self.policy_get(&a.policy_name).await?.is_none() {
            return Ok(Attach::PolicyNotFound);
        }
        Ok(Attach::AlreadyAttached)
    }

    /// Detaches a policy; returns `false` when it was not attached.
    pub async fn attachment_delete(
        &self,
        principal_type: &str,
        principal_name: &str,
        policy_type: &str,
        policy_name: &str,
    ) -> Result<bool> {
        let r = sqlx::query(
            "DELETE FROM ram_attachments WHERE principal_type = $1 AND principal_name = $2 \
             AND policy_type = $3 AND policy_name = $4",
        )
        .bind(principal_type)
        .bind(principal_name)
        .bind(policy_type)
        .bind(policy_name)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The policies attached to one principal, in attachment order.
    pub async fn attachment_list_for_principal(
        &self,
        principal_type: &str,
        principal_name: &str,
    ) -> Result<Vec<AttachmentRecord>> {
        Ok(sqlx::query_as(
            "SELECT * FROM ram_attachments WHERE principal_type = $1 AND principal_name = $2 \
             ORDER BY attached_at, policy_type, policy_name",
        )
        .bind(principal_type)
        .bind(principal_name)
        .fetch_all(&self.read)
        .await?)
    }

    /// The principals one policy is attached to, in attachment order.
    pub async fn attachment_list_for_policy(
        &self,
        policy_type: &str,
        policy_name: &str,
    ) -> Result<Vec<AttachmentRecord>> {
        Ok(sqlx::query_as(
            "SELECT * FROM ram_attachments WHERE policy_type = $1 AND policy_name = $2 \
             ORDER BY attached_at, principal_type, principal_name",
        )
        .bind(policy_type)
        .bind(policy_name)
        .fetch_all(&self.read)
        .await?)
    }
}

// ---------------------------------------------------------------------------------------------------------
// roles

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct RoleRecord {
    pub name: String,
    pub id: String,
    /// `acs:ram::<account>:role/<name>`.
    pub arn: String,
    /// The trust policy (`AssumeRolePolicyDocument`) as JSON text.
    pub trust_policy: String,
    /// Longest STS session AssumeRole may issue for this role, in seconds.
    pub max_session_duration: i64,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Outcome of [`Db::role_delete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleDelete {
    Deleted,
    NotFound,
    /// The role still has attached policies: detach them first.
    HasPolicies,
}

impl Db {
    /// Inserts a role; returns `false` when the name or the ARN (the lower-cased name) is taken.
    pub async fn role_create(&self, r: &RoleRecord) -> Result<bool> {
        let res = sqlx::query(
            "INSERT INTO ram_roles (name, id, arn, trust_policy, max_session_duration, description, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&r.name)
        .bind(&r.id)
        .bind(&r.arn)
        .bind(&r.trust_policy)
        .bind(r.max_session_duration)
        .bind(&r.description)
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(&self.pool).durable(self)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn role_get(&self, name: &str) -> Result<Option<RoleRecord>> {
        Ok(sqlx::query_as("SELECT * FROM ram_roles WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await?)
    }

    /// The role with this ARN (`acs:ram::<account>:role/<lower-case name>`).
    pub async fn role_get_by_arn(&self, arn: &str) -> Result<Option<RoleRecord>> {
        Ok(sqlx::query_as("SELECT * FROM ram_roles WHERE arn = $1")
            .bind(arn)
            .fetch_optional(&self.read)
            .await?)
    }

    /// All roles, ordered by creation.
    pub async fn role_list(&self) -> Result<Vec<RoleRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM ram_roles ORDER BY created_at, name")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Deletes a role without attached policies, and every STS session issued for it (so that a new role
    /// of the same name does not inherit them).
    pub async fn role_delete(&self, name: &str) -> Result<RoleDelete> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "DELETE FROM ram_roles WHERE name = $1 AND NOT EXISTS \
             (SELECT 1 FROM ram_attachments WHERE principal_type = 'Role' AND principal_name = $1)",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(match self.role_get(name).await? {
                None => RoleDelete::NotFound,
                Some(_) => RoleDelete::HasPolicies,
            });
        }
        sqlx::query("DELETE FROM sts_sessions WHERE role_name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().durable(self).await?;
        Ok(RoleDelete::Deleted)
    }
}

// ---------------------------------------------------------------------------------------------------------
// STS sessions

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct StsSessionRecord {
    /// `STS.…`
    pub access_key_id: String,
    pub secret: String,
    /// Hex SHA-256 of the security token; the token itself is never stored.
    pub token_hash: String,
    pub role_name: String,
    pub session_name: String,
    /// ARN of the principal that called AssumeRole.
    pub source_principal: String,
    /// 1 when the session was issued to a caller that had authenticated with MFA.
    pub mfa_present: i64,
    /// The inline policy given to AssumeRole (JSON text), if any.
    pub inline_policy: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

impl Db {
    pub async fn sts_session_create(&self, s: &StsSessionRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO sts_sessions (access_key_id, secret, token_hash, role_name, session_name, \
             source_principal, mfa_present, inline_policy, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&s.access_key_id)
        .bind(&s.secret)
        .bind(&s.token_hash)
        .bind(&s.role_name)
        .bind(&s.session_name)
        .bind(&s.source_principal)
        .bind(s.mfa_present)
        .bind(&s.inline_policy)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&self.pool)
        .durable(self)
        .await?;
        Ok(())
    }

    pub async fn sts_session_get(&self, access_key_id: &str) -> Result<Option<StsSessionRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM sts_sessions WHERE access_key_id = $1")
                .bind(access_key_id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    /// Removes sessions that expired before `before`; returns how many. Expired sessions are kept for a
    /// while so that their use is reported as an expired token rather than an unknown key.
    pub async fn sts_session_purge(&self, before: i64) -> Result<u64> {
        let r = sqlx::query("DELETE FROM sts_sessions WHERE expires_at < $1")
            .bind(before)
            .execute(&self.pool)
            .durable(self)
            .await?;
        Ok(r.rows_affected())
    }
}
