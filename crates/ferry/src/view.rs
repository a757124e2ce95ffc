//! Reading the API's JSON responses: lenient field accessors and typed views of the resources the CLI
//! shows (jobs and their runs).
//!
//! The views never fail: a missing or oddly typed field reads as empty or zero, because a table with a
//! blank cell is more useful than no table when a server adds, renames or drops a field. Numbers are
//! accepted both as JSON numbers and as numeric strings (SDK-declared string fields such as `Count`).

use serde_json::Value;

/// A field as text: strings as they are, numbers and booleans printed, anything else empty.
pub fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// A field as an unsigned number, if it is one (or a string holding one).
pub fn number(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A field as a float (percentages).
pub fn float(v: &Value, key: &str) -> Option<f64> {
    match v.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().trim_end_matches('%').parse().ok(),
        _ => None,
    }
}

/// The items of a wrapped list: `v[outer][inner]` (`"Jobs":{"Job":[…]}`), empty when absent.
pub fn list<'a>(v: &'a Value, outer: &str, inner: &str) -> &'a [Value] {
    v.get(outer)
        .and_then(|o| o.get(inner))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// An API timestamp (`2024-05-01T10:00:00Z`) shown as `2024-05-01 10:00:00`, in UTC.
pub fn time(v: &Value, key: &str) -> String {
    let t = text(v, key);
    t.trim_end_matches('Z').replacen('T', " ", 1)
}

/// Seconds between an API timestamp and `now`, if the timestamp parses.
pub fn age_secs(timestamp: &str, now: time::OffsetDateTime) -> Option<i64> {
    let t = time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some((now - t).whole_seconds())
}

/// One run of a job, with its figures (Ferry's additions to `ReplicationJobRun`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunView {
    pub run_id: String,
    pub kind: String,
    pub status: String,
    pub start: String,
    pub end: String,
    pub image_id: String,
    pub error: String,
    pub bytes_total: u64,
    pub bytes_scanned: u64,
    pub bytes_sent: u64,
    pub bytes_zero: u64,
    pub bytes_unchanged: u64,
    pub bytes_dedup: u64,
    pub throughput_bps: u64,
    pub eta_secs: Option<u64>,
}

impl RunView {
    pub fn from_json(v: &Value) -> RunView {
        RunView {
            run_id: text(v, "RunId"),
            kind: text(v, "Type"),
            status: text(v, "RunStatus"),
            start: time(v, "StartTime"),
            end: time(v, "EndTime"),
            image_id: text(v, "ImageId"),
            error: text(v, "ErrorMessage"),
            bytes_total: number(v, "BytesTotal").unwrap_or(0),
            bytes_scanned: number(v, "BytesScanned").unwrap_or(0),
            bytes_sent: number(v, "BytesSent").unwrap_or(0),
            bytes_zero: number(v, "BytesZero").unwrap_or(0),
            bytes_unchanged: number(v, "BytesUnchanged").unwrap_or(0),
            bytes_dedup: number(v, "BytesDeduplicated").unwrap_or(0),
            throughput_bps: number(v, "Throughput").unwrap_or(0),
            eta_secs: number(v, "Eta"),
        }
    }

    /// Bytes not sent because they were zero, unchanged since the last run, or already stored.
    pub fn bytes_skipped(&self) -> u64 {
        self.bytes_zero
            .saturating_add(self.bytes_unchanged)
            .saturating_add(self.bytes_dedup)
    }
}

/// How a job's watch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Still going (or not started yet).
    Pending,
    /// Finished, or Waiting for its next incremental cycle.
    Done,
    /// InError, Stopped, Expired or being deleted.
    Failed,
}

/// A replication job as `DescribeReplicationJobs` returns it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobView {
    pub id: String,
    pub name: String,
    pub source_id: String,
    pub status: String,
    pub business_status: String,
    pub status_info: String,
    pub error_code: String,
    pub progress: f64,
    pub image_id: String,
    pub image_name: String,
    pub run_once: bool,
    pub frequency: Option<u64>,
    pub max_images: Option<u64>,
    pub replication_parameters: String,
    pub created: String,
    pub valid_until: String,
    pub runs: Vec<RunView>,
}

impl JobView {
    pub fn from_json(v: &Value) -> JobView {
        JobView {
            id: text(v, "JobId"),
            name: text(v, "Name"),
            source_id: text(v, "SourceId"),
            status: text(v, "Status"),
            business_status: text(v, "BusinessStatus"),
            status_info: text(v, "StatusInfo"),
            error_code: text(v, "ErrorCode"),
            progress: float(v, "Progress").unwrap_or(0.0),
            image_id: text(v, "ImageId"),
            image_name: text(v, "ImageName"),
            run_once: v.get("RunOnce").and_then(Value::as_bool).unwrap_or(true),
            frequency: number(v, "Frequency"),
            max_images: number(v, "MaxNumberOfImageToKeep"),
            replication_parameters: text(v, "ReplicationParameters"),
            created: time(v, "CreationTime"),
            valid_until: time(v, "ValidTime"),
            runs: list(v, "ReplicationJobRuns", "ReplicationJobRun")
                .iter()
                .map(RunView::from_json)
                .collect(),
        }
    }

    /// `Running/Syncing`, or just the status outside Running.
    pub fn phase(&self) -> String {
        if self.business_status.is_empty() {
            self.status.clone()
        } else {
            format!("{}/{}", self.status, self.business_status)
        }
    }

    /// The latest run (runs are listed oldest first).
    pub fn current_run(&self) -> Option<&RunView> {
        self.runs.last()
    }

    pub fn outcome(&self) -> JobOutcome {
        match self.status.as_str() {
            "Finished" | "Waiting" => JobOutcome::Done,
            "InError" | "Stopped" | "Expired" | "Deleting" => JobOutcome::Failed,
            _ => JobOutcome::Pending,
        }
    }

    /// Why the job is not going on, for an error message: code, status info, the last run's error.
    pub fn failure_reason(&self) -> String {
        let mut parts = Vec::new();
        if !self.error_code.is_empty() {
            parts.push(self.error_code.clone());
        }
        if !self.status_info.is_empty() {
            parts.push(self.status_info.clone());
        }
        if let Some(run) = self
            .current_run()
            .filter(|r| !r.error.is_empty() && !parts.contains(&r.error))
        {
            parts.push(run.error.clone());
        }
        parts.join(": ")
    }
}

/// What moves a job on from `status`, as a command line for job `id`: shown by `ferry job show` and in
/// the hint of `ReplicationJob.InvalidStatus` (statuses as in the reference's state machine, §2.5).
pub fn job_next_step(status: &str, id: &str) -> String {
    match status {
        "Ready" => format!("start it with `ferry job start {id} --watch`"),
        "Running" => format!(
            "wait for it with `ferry job watch {id}`, or stop it with `ferry job stop {id}` (start resumes)"
        ),
        "Stopped" => format!("resume it with `ferry job start {id} --watch`"),
        "InError" => format!(
            "see why with `ferry job show {id}`, fix the cause, then resume with `ferry job start {id} --watch`"
        ),
        "Waiting" => format!(
            "cut it over with `ferry job cutover {id} --sync-data --watch`, run an extra sync with `ferry job \
             start {id}`, or stop it with `ferry job stop {id}`"
        ),
        "Finished" => format!(
            "it is done: launch its image with `ferry instance run --image IMAGE`; to migrate again, delete it \
             (`ferry job delete {id}`) and create a new job"
        ),
        "Expired" => format!(
            "it can no longer run: delete it (`ferry job delete {id}`) and create a new job with `ferry job create`"
        ),
        "Deleting" => "it is being deleted: create a new job with `ferry job create`".to_owned(),
        _ => format!("`ferry job show {id}` shows its status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_read_leniently() {
        let v = json!({"A": "7", "B": 8, "C": 1.5, "D": true, "E": null, "P": "12.5%"});
        assert_eq!(number(&v, "A"), Some(7));
        assert_eq!(number(&v, "B"), Some(8));
        assert_eq!(number(&v, "C"), Some(1));
        assert_eq!(number(&v, "E"), None);
        assert_eq!(text(&v, "B"), "8");
        assert_eq!(text(&v, "D"), "true");
        assert_eq!(text(&v, "missing"), "");
        assert_eq!(float(&v, "P"), Some(12.5));
        assert!(list(&v, "X", "Y").is_empty());
    }

    #[test]
    fn jobs_read_their_runs_and_outcome() {
        let v = json!({
            "JobId": "j-1", "Status": "InError", "ErrorCode": "ImageBuild.Failed",
            "ReplicationJobRuns": {"ReplicationJobRun": [
                {"RunId": "r-1", "RunStatus": "Succeeded", "BytesTotal": 100},
                {"RunId": "r-2", "RunStatus": "Failed", "BytesZero": 5, "BytesUnchanged": 6,
                 "BytesDeduplicated": 7, "ErrorMessage": "disk 0 unreadable", "Eta": 9}
            ]}
        });
        let job = JobView::from_json(&v);
        assert_eq!(job.outcome(), JobOutcome::Failed);
        let run = job.current_run().expect("two runs");
        assert_eq!(run.run_id, "r-2");
        assert_eq!(run.bytes_skipped(), 18);
        assert_eq!(run.eta_secs, Some(9));
        assert_eq!(job.failure_reason(), "ImageBuild.Failed: disk 0 unreadable");
        assert_eq!(job.phase(), "InError");

        let running =
            JobView::from_json(&json!({"Status": "Running", "BusinessStatus": "Syncing"}));
        assert_eq!(running.phase(), "Running/Syncing");
        assert_eq!(running.outcome(), JobOutcome::Pending);
        for done in ["Finished", "Waiting"] {
            assert_eq!(
                JobView::from_json(&json!({ "Status": done })).outcome(),
                JobOutcome::Done
            );
        }
    }

    #[test]
    fn every_job_status_has_a_next_step_naming_a_command() {
        for (status, command) in [
            ("Ready", "ferry job start j-1"),
            ("Running", "ferry job stop j-1"),
            ("Stopped", "ferry job start j-1"),
            ("InError", "ferry job start j-1"),
            ("Waiting", "ferry job cutover j-1"),
            ("Finished", "ferry instance run"),
            ("Expired", "ferry job delete j-1"),
            ("Deleting", "ferry job create"),
        ] {
            let step = job_next_step(status, "j-1");
            assert!(step.contains(command), "{status}: {step}");
        }
    }

    #[test]
    fn timestamps_show_without_t_and_z() {
        let v = json!({"T": "2024-05-01T10:00:00Z"});
        assert_eq!(time(&v, "T"), "2024-05-01 10:00:00");
        let now = time::macros::datetime!(2024-05-01 10:01:05 UTC);
        assert_eq!(age_secs("2024-05-01T10:00:00Z", now), Some(65));
        assert_eq!(age_secs("yesterday", now), None);
    }
}
