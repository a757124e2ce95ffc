-- Ferry schema v10: guest adaptation and boot validation of images (docs/boot-validation.md, server section;
-- docs/replication-jobs.md, "Adaptation and validation"). Portable SQL (SQLite and PostgreSQL): TEXT and BIGINT
-- only; times are unix seconds.

-- What the image pipeline did to an image after its raw disks were verified, and where its boot validation
-- stands. One row per image that went through the pipeline (images built before v10 have none).
-- `adapt_status`: Pending (not adapted yet), Adapted, NotAdapted (no operating system found: random data, a
-- data-only disk set; never an error), Failed. `adapt_report` is `ferry_image::adapt::AdaptReport` as JSON (it
-- carries its own `version`); `adapt_reason` says why an image was not adapted. `validation_status`: Pending,
-- Running, Passed, Failed, Skipped (`validation_reason` says why: turned off, no OS). `options` is the JSON of
-- the options the pipeline ran with (`ferry_server::workers::validate::PipelineOptions`, with a `version`).
-- `production_instance` is set for a cutover's final image of a TargetInstance job: its validation runs on that
-- instance (kept running) instead of a throwaway one.
CREATE TABLE image_pipeline (
    image_id TEXT PRIMARY KEY,
    adapt_status TEXT NOT NULL,
    adapt_report TEXT,
    adapt_reason TEXT,
    validation_status TEXT NOT NULL,
    validation_reason TEXT,
    options TEXT NOT NULL,
    production_instance TEXT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX image_pipeline_validation ON image_pipeline (validation_status);

-- The digest of each image disk as adaptation left it (BLAKE3 root over the raw file, the same tree as a
-- snapshot's root digest). Before adaptation a disk's file equals its snapshot (`image_disks.root_digest`);
-- after, anything that re-verifies the file uses this digest.
CREATE TABLE image_disk_digests (
    image_id TEXT NOT NULL,
    disk_index BIGINT NOT NULL,
    adapted_digest TEXT NOT NULL,
    PRIMARY KEY (image_id, disk_index)
);

-- One boot validation: a throwaway instance (`kind` Image) or a cutover's production instance (`kind`
-- Production) booted from an image and checked. `status`: Running, Passed, Failed, Skipped. `report` is
-- `ferry_vm::validate::ValidationReport` as JSON (it carries its own `version`); `error` says why a validation
-- could not run at all (or was interrupted). `console_path` is the copy of the instance's serial console
-- kept in the data directory after the throwaway instance is deleted.
CREATE TABLE validations (
    id TEXT PRIMARY KEY,
    image_id TEXT NOT NULL,
    job_id TEXT,
    run_id TEXT,
    instance_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    report TEXT,
    error TEXT,
    console_path TEXT,
    started_at BIGINT NOT NULL,
    ended_at BIGINT
);
CREATE INDEX validations_image ON validations (image_id);
CREATE INDEX validations_instance ON validations (instance_id);

-- Ferry-only security-group-like rules of an instance (`PortForward.N=<hostPort>:<guestPort>` on RunInstances /
-- CreateInstance): a TCP port on the server's loopback address forwarded to a port of the guest. A host port
-- belongs to one instance at a time (the primary key).
CREATE TABLE instance_port_forwards (
    host_port BIGINT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    guest_port BIGINT NOT NULL
);
CREATE INDEX instance_port_forwards_instance ON instance_port_forwards (instance_id);
