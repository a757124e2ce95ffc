-- Ferry schema v8: indexes for the list queries (`source_list`, `job_list`, `run_list_by_status`), so that
-- a page of 50 out of 10,000 sources or jobs is read from an index instead of a full scan and sort on both
-- engines (measured by bench/load.sh). Indexes only: no table or column changes. Portable SQL.

-- DescribeSourceServers: the page order (creation time, then ID) with and without a State filter; Name and
-- JobId filters; the RelatedJobType filter joins through sources.job_id.
CREATE INDEX sources_created ON sources (created_at, id);
CREATE INDEX sources_state_created ON sources (state, created_at, id);
CREATE INDEX sources_name ON sources (name);
CREATE INDEX sources_job ON sources (job_id);

-- DescribeReplicationJobs: the page order with and without a Status filter; the Name filter; the
-- InstanceId filter goes through job_settings.instance_id.
CREATE INDEX jobs_created ON jobs (created_at, id);
CREATE INDEX jobs_status_created ON jobs (status, created_at, id);
CREATE INDEX jobs_name ON jobs (name);
CREATE INDEX job_settings_instance ON job_settings (instance_id);

-- The image builder looks for runs in `Processing` every few seconds.
CREATE INDEX runs_status ON runs (status, started_at);
