-- Ferry schema v9: the web console's sign-in (docs/console.md). Portable SQL (SQLite and PostgreSQL): TEXT and
-- BIGINT only; booleans are BIGINT 0/1; times are unix seconds.
--
-- A RAM user's password hash stays in `ram_users.password_hash` (0002); the rest of the login profile and the
-- MFA devices are keyed by the user's immutable `ram_users.id`, so that renaming a user keeps them and a new
-- user that reuses a deleted user's name inherits nothing. `ram_users.mfa_secret` (0002) is not used: seeds
-- live, sealed, in `ram_mfa_devices`.

-- The settings of a login profile besides the password (which is `ram_users.password_hash`).
CREATE TABLE ram_login_profiles (
    user_id TEXT PRIMARY KEY,
    password_reset_required BIGINT NOT NULL,
    mfa_bind_required BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Virtual MFA devices (CreateVirtualMFADevice). `seed` is the TOTP secret sealed with the server's seal key
-- (`v1:` + base64 of nonce ‖ ciphertext ‖ tag, docs/console.md), never the clear secret. `user_id` is NULL
-- until the device is bound; a user has at most one bound device. `last_step` is the last TOTP time step
-- accepted, so that a code cannot be used twice.
CREATE TABLE ram_mfa_devices (
    serial_number TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    seed TEXT NOT NULL,
    user_id TEXT UNIQUE,
    activated_at BIGINT,
    last_step BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Console sessions. `id_hash` is the hex SHA-256 of the cookie value (the cookie itself is never stored);
-- `csrf_token` must come back in `X-CSRF-Token` with every state-changing request. A session ends at
-- `last_seen_at + idle` or `created_at + absolute` (the server's settings), whichever is first.
CREATE TABLE console_sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    mfa BIGINT NOT NULL,
    source_ip TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions (user_id);
CREATE INDEX console_sessions_seen ON console_sessions (last_seen_at);

-- Failed console sign-ins per user name (known or not: the lockout must not tell them apart).
CREATE TABLE console_signin_failures (
    user_name TEXT NOT NULL,
    failed_at BIGINT NOT NULL
);
CREATE INDEX console_signin_failures_user ON console_signin_failures (user_name, failed_at);
