-- Ferry schema v3: the ActionTrail audit trail (docs/audit-trail.md). Portable SQL (SQLite and PostgreSQL):
-- TEXT and BIGINT only; times are unix seconds.
--
-- Append-only and hash-chained: row `seq` carries the hash of row `seq - 1` (`prev_hash`) and its own
-- `hash` over (format marker, prev_hash, seq, event_time, body). `body` is the event's canonical JSON and
-- is the record; every other column is an index derived from it (checked by `ferry audit verify`).
-- The application never updates or deletes a row.

CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    -- Version of the chain's hash format (1 = "ferry-audit-v1").
    chain_version BIGINT NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    event_time BIGINT NOT NULL,
    event_name TEXT NOT NULL,
    service_name TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_rw TEXT NOT NULL,
    access_key_id TEXT,
    user_name TEXT,
    role_name TEXT,
    source_ip TEXT,
    error_code TEXT,
    resource_type TEXT,
    resource_name TEXT,
    request_id TEXT NOT NULL,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

-- LookupEvents filters one or two attributes inside a time window, newest or oldest first.
CREATE INDEX audit_events_time ON audit_events (event_time, seq);
CREATE INDEX audit_events_name ON audit_events (event_name, event_time);
CREATE INDEX audit_events_service ON audit_events (service_name, event_time);
CREATE INDEX audit_events_user ON audit_events (user_name, event_time);
CREATE INDEX audit_events_role ON audit_events (role_name, event_time);
CREATE INDEX audit_events_key ON audit_events (access_key_id, event_time);
CREATE INDEX audit_events_resource_type ON audit_events (resource_type, event_time);
CREATE INDEX audit_events_resource_name ON audit_events (resource_name, event_time);
CREATE INDEX audit_events_ip ON audit_events (source_ip, event_time);
CREATE INDEX audit_events_type ON audit_events (event_type, event_time);
CREATE INDEX audit_events_rw ON audit_events (event_rw, event_time);

-- The chain's head (`{"version":1,"seq":N,"hash":"…"}`, empty while the chain is empty), updated in the
-- same transaction as each append. Appenders lock this row first, so they take turns on both engines.
INSERT INTO meta (key, value) VALUES ('audit_head', '');
