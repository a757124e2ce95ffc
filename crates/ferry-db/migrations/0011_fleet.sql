-- Ferry schema v11: indexes for a large fleet (docs/scale-out.md, "A large fleet"; bench/load.sh). Indexes only:
-- no table or column changes. Portable SQL.

-- The offline detector reads only the sources whose last flushed heartbeat is older than its cut-off.
CREATE INDEX sources_heartbeat ON sources (heartbeat_at);

-- The scheduler's image retention counts each incremental job's available images.
CREATE INDEX images_job_status ON images (job_id, status);

-- The scheduler reads only the jobs whose ValidTime or ScheduledStartTime has come.
CREATE INDEX jobs_valid_time ON jobs (valid_time);
CREATE INDEX jobs_scheduled ON jobs (status, scheduled_start_time);
