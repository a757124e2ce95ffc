-- Ferry schema v6: instances (ECS RunInstances/CreateInstance, docs/instances.md) and ClientToken idempotency for
-- the ECS create actions. Portable SQL (SQLite and PostgreSQL): TEXT and BIGINT only; booleans are 0/1; times
-- are unix seconds.

-- An instance: a VM run by the local QEMU driver (crate ferry-vm) on copy-on-write overlays of an image's disks.
-- `status` is ECS's: Pending (created, disks not prepared yet), Starting, Running, Stopping, Stopped. Pending,
-- Starting and Stopping are steps the instance worker finishes (ferry-server `compute`), so a restarted server
-- completes them. `auto_start` (0/1): a Pending instance goes on to Starting (RunInstances) or stops at Stopped
-- (CreateInstance). `stop_force` (0/1) and `stop_deadline` describe the stop in progress: the guest gets the ACPI
-- power button until the deadline, then QEMU is killed. `dir` is the instance directory (overlays, console log,
-- pidfile). `error` is why the last start failed (NULL once it started). `client_token` is informational: the
-- idempotency check is the `client_tokens` table.
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    host_name TEXT NOT NULL,
    image_id TEXT NOT NULL,
    instance_type TEXT NOT NULL,
    status TEXT NOT NULL,
    cpu BIGINT NOT NULL,
    memory_mib BIGINT NOT NULL,
    system_disk_gib BIGINT,
    auto_start BIGINT NOT NULL,
    stop_force BIGINT NOT NULL,
    stop_deadline BIGINT,
    dir TEXT NOT NULL,
    error TEXT,
    client_token TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT
);
CREATE INDEX instances_image ON instances (image_id);

-- ClientToken idempotency of ECS create actions (CreateImage, RunInstances, CreateInstance): the first request
-- with a token inserts this row in the same transaction as the resources it creates, so a retry, even a
-- concurrent one, returns the same resources. `resource_ids` is a JSON array of IDs.
CREATE TABLE client_tokens (
    action TEXT NOT NULL,
    token TEXT NOT NULL,
    resource_ids TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (action, token)
);
