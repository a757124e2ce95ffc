-- Ferry schema v2: RAM identities (users, custom policies, attachments, roles) and STS sessions.
-- Portable SQL (SQLite and PostgreSQL): TEXT, BIGINT only; booleans are BIGINT 0/1; times are unix seconds.
-- Access keys stay in `access_keys` (0001): `user_name` names a row of `ram_users`, NULL is the root account.

CREATE TABLE ram_users (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    email TEXT NOT NULL,
    mobile_phone TEXT NOT NULL,
    comments TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    -- Console sign-in (a later issue): a password hash and a TOTP secret; NULL until set.
    password_hash TEXT,
    mfa_secret TEXT
);

-- Custom policies. System policies are built into the server and never stored.
CREATE TABLE ram_policies (
    name TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    description TEXT NOT NULL,
    default_version TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Which policy is attached to which principal. principal_type: User | Role; policy_type: System | Custom.
CREATE TABLE ram_attachments (
    principal_type TEXT NOT NULL,
    principal_name TEXT NOT NULL,
    policy_type TEXT NOT NULL,
    policy_name TEXT NOT NULL,
    attached_at BIGINT NOT NULL,
    PRIMARY KEY (principal_type, principal_name, policy_type, policy_name)
);
CREATE INDEX ram_attachments_policy ON ram_attachments (policy_type, policy_name);

CREATE TABLE ram_roles (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    arn TEXT NOT NULL UNIQUE,
    trust_policy TEXT NOT NULL,
    max_session_duration BIGINT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- STS sessions issued by AssumeRole. The secret is kept in clear because request signatures are
-- verified with it (like `access_keys.secret`); the security token is only kept as its SHA-256.
CREATE TABLE sts_sessions (
    access_key_id TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    role_name TEXT NOT NULL,
    session_name TEXT NOT NULL,
    -- The ARN of the principal that called AssumeRole (root account, RAM user or another session).
    source_principal TEXT NOT NULL,
    mfa_present BIGINT NOT NULL,
    -- The inline `Policy` given to AssumeRole, which further restricts the role's policies; NULL if none.
    inline_policy TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sts_sessions_role ON sts_sessions (role_name);
CREATE INDEX sts_sessions_expires ON sts_sessions (expires_at);
