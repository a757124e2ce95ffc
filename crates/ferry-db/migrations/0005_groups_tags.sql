-- Ferry schema v5: workgroups (migration waves) and tags (smc-api.md §2.7, §2.8). Portable SQL (SQLite and
-- PostgreSQL): TEXT and BIGINT only; times are unix seconds.

-- A workgroup: a named set of source servers migrated together. Its Status and Warnings are derived from its
-- members' jobs when read, never stored. `client_token` makes CreateWorkgroup idempotent (NULL = none given).
CREATE TABLE workgroups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    client_token TEXT UNIQUE,
    created_at BIGINT NOT NULL
);

-- Membership. `source_id` is the primary key: a source belongs to at most one workgroup (SMC's rule).
CREATE TABLE workgroup_members (
    source_id TEXT PRIMARY KEY,
    workgroup_id TEXT NOT NULL,
    added_at BIGINT NOT NULL
);
CREATE INDEX workgroup_members_group ON workgroup_members (workgroup_id, source_id);

-- Tags of any resource. `resource_type` is lower case: `sourceserver` and `replicationjob` (the API's types)
-- and `workgroup` (internal: CreateWorkgroup's Tag.N, not taggable through TagResources).
CREATE TABLE tags (
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (resource_type, resource_id, key)
);
CREATE INDEX tags_by_key ON tags (resource_type, key, value);
