-- Ferry schema v12: a source's last heartbeat and agent version move out of `sources` into a narrow table
-- of their own (docs/scale-out.md, "A large fleet": why). Portable SQL.
--
-- Every heartbeat flush rewrote the whole `sources` row (inventory and prechecks included) of every
-- agent, so on PostgreSQL each row was a dead version and every page of the table left the visibility
-- map every few seconds: DescribeSourceServers' count and page, which read only `sources`, then visited
-- the heap for every row they passed (10,000 sources: 16 ms for the count, 26 ms for page 100) and the
-- table and its seven indexes grew by a version per beat. The flush now rewrites a row of three short
-- columns; `sources` changes only when a source does.
--
-- Invariant: every `sources` row has exactly one `source_beats` row (written in the same transaction at
-- registration, deleted in the same transaction with the source).

CREATE TABLE source_beats (
    source_id TEXT PRIMARY KEY,
    heartbeat_at BIGINT NOT NULL,
    agent_version TEXT NOT NULL
);

INSERT INTO source_beats (source_id, heartbeat_at, agent_version)
    SELECT id, heartbeat_at, agent_version FROM sources;

-- The offline detector reads only the sources whose last flushed heartbeat is older than its cut-off.
CREATE INDEX source_beats_heartbeat ON source_beats (heartbeat_at);

DROP INDEX sources_heartbeat;
ALTER TABLE sources DROP COLUMN heartbeat_at;
ALTER TABLE sources DROP COLUMN agent_version;
