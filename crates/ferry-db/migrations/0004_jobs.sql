-- Ferry schema v4: what replication jobs need beyond the core columns (docs/replication-jobs.md). Portable SQL
-- (SQLite and PostgreSQL): TEXT and BIGINT only; booleans are 0/1; times are unix seconds.

-- One row per job created since v4 (a job without one has the defaults: no instance, no settings, not cut over).
-- `settings` is JSON with a version marker (`{"version":1,…}`, `ferry_server::app::jobs::JobSettings`): the
-- target and disk layout as given at creation or by ModifyReplicationJobAttribute, echoed by
-- DescribeReplicationJobs. `cutover` is 1 once CutOverReplicationJob(SyncData=true) started the final run, so
-- that run ends the job (Finished) instead of waiting for the next cycle. `expired_at` is when the job became
-- Expired; it is purged 7 days later.
CREATE TABLE job_settings (
    job_id TEXT PRIMARY KEY,
    instance_id TEXT,
    settings TEXT NOT NULL,
    cutover BIGINT NOT NULL,
    expired_at BIGINT
);

-- ClientToken idempotency is exact: two concurrent creates with one token cannot both insert (NULL = no token;
-- NULLs are distinct in both engines).
CREATE UNIQUE INDEX jobs_client_token ON jobs (client_token);
