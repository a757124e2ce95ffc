-- Ferry schema v1: the replication core. Portable SQL (SQLite and PostgreSQL): TEXT, BIGINT, DOUBLE PRECISION
-- only; booleans are BIGINT 0/1; times are unix seconds (BIGINT).

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE access_keys (
    id TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    user_name TEXT,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE nonces (
    nonce TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

CREATE TABLE activation_codes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    code_hash TEXT NOT NULL UNIQUE,
    max_count BIGINT NOT NULL,
    registered_count BIGINT NOT NULL,
    ttl_days BIGINT NOT NULL,
    disabled BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE sources (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    state TEXT NOT NULL,
    error_code TEXT,
    status_info TEXT,
    agent_version TEXT NOT NULL,
    inventory TEXT NOT NULL,
    prechecks TEXT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    token_id TEXT NOT NULL,
    agent_key_id TEXT NOT NULL UNIQUE,
    agent_secret_hash TEXT NOT NULL,
    job_id TEXT
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    source_id TEXT NOT NULL,
    region_id TEXT NOT NULL,
    status TEXT NOT NULL,
    business_status TEXT,
    error_code TEXT,
    status_info TEXT,
    job_type BIGINT NOT NULL,
    target_type TEXT NOT NULL,
    image_name TEXT NOT NULL,
    image_id TEXT,
    run_once BIGINT NOT NULL,
    frequency BIGINT,
    max_images BIGINT,
    replication_parameters TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL,
    created_at BIGINT NOT NULL,
    start_time BIGINT,
    end_time BIGINT,
    scheduled_start_time BIGINT,
    valid_time BIGINT,
    client_token TEXT
);
CREATE INDEX jobs_source ON jobs (source_id);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    disks TEXT NOT NULL,
    chunk_size BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    image_id TEXT,
    progress TEXT NOT NULL,
    error TEXT,
    UNIQUE (job_id, seq)
);

CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    disk_index BIGINT NOT NULL,
    disk_size BIGINT NOT NULL,
    chunk_size BIGINT NOT NULL,
    root_digest TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (run_id, disk_index)
);

CREATE TABLE images (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    region_id TEXT NOT NULL,
    job_id TEXT,
    run_id TEXT,
    status TEXT NOT NULL,
    progress BIGINT NOT NULL,
    size_gib BIGINT NOT NULL,
    platform TEXT NOT NULL,
    os_name TEXT NOT NULL,
    architecture TEXT NOT NULL,
    boot_mode TEXT NOT NULL,
    description TEXT NOT NULL,
    error TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE image_disks (
    image_id TEXT NOT NULL,
    disk_index BIGINT NOT NULL,
    snapshot_id TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    root_digest TEXT NOT NULL,
    raw_path TEXT NOT NULL,
    qcow2_path TEXT,
    PRIMARY KEY (image_id, disk_index)
);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    progress BIGINT NOT NULL,
    resource_id TEXT NOT NULL,
    request TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
