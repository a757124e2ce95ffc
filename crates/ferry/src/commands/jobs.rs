//! `ferry job …`: replication jobs, their runs, and a live view of a running job.
//!
//! `watch` polls `DescribeReplicationJobs` (every 500 ms with a progress bar on a terminal, every second
//! with one line per poll otherwise) until the job is Finished or Waiting (success) or InError, Stopped,
//! Expired or Deleting (failure, returned as an error so that the exit code is 1). After a cutover it
//! waits for Finished: a job still Waiting has not taken the cutover yet.
//!
//! `modify` changes only what is asked: new transfer parameters are merged into the job's current
//! `ReplicationParameters`, so that setting a bandwidth limit keeps the compression level.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use super::Session;
use crate::cli::{JobCommand, JobCreateArgs, JobModifyArgs};
use crate::client::SMC_VERSION;
use crate::output::{Table, human_bytes, human_duration, human_rate, key_values};
use crate::view::{JobOutcome, JobView, RunView, list};

const BAR_POLL: Duration = Duration::from_millis(500);
const LINE_POLL: Duration = Duration::from_secs(1);
const BAR_TEMPLATE: &str =
    "{spinner} [{bar:30.cyan/blue}] {bytes}/{total_bytes} ({percent}%)  {msg}";

pub(super) async fn run(s: &mut Session<'_, '_>, cmd: JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Create(args) => create(s, args).await,
        JobCommand::Start { id, watch: follow } => {
            let resp = s
                .client
                .smc("StartReplicationJob", &[("JobId".to_owned(), id.clone())])
                .await?;
            if !follow {
                if s.json_output() {
                    return s.print_json(&resp);
                }
                return s.print(&format!(
                    "Started replication job {id}. Follow it with `ferry job watch {id}`.\n"
                ));
            }
            if !s.json_output() {
                s.print(&format!("Started replication job {id}.\n"))?;
            }
            watch(s, &id).await
        }
        JobCommand::Stop { id } => {
            let resp = s
                .client
                .smc("StopReplicationJob", &[("JobId".to_owned(), id.clone())])
                .await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!(
                "Stopped replication job {id}; what was copied stays stored. Resume with `ferry job start {id}`.\n"
            ))
        }
        JobCommand::List => {
            let Some(items) = s
                .list_items(
                    SMC_VERSION,
                    "DescribeReplicationJobs",
                    &[],
                    ("ReplicationJobs", "ReplicationJob"),
                    50,
                    "No replication jobs. Create one with `ferry job create --source <source ID>`.\n",
                )
                .await?
            else {
                return Ok(());
            };
            let jobs: Vec<JobView> = items.iter().map(JobView::from_json).collect();
            s.print(&jobs_table(&jobs).render())
        }
        JobCommand::Show { id } => {
            let (resp, job) = describe(s, &id).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&render_job(&job))
        }
        JobCommand::Watch { id } => watch(s, &id).await,
        JobCommand::Modify(args) => modify(s, args).await,
        JobCommand::Delete { id } => {
            let resp = s
                .client
                .smc("DeleteReplicationJob", &[("JobId".to_owned(), id.clone())])
                .await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!(
                "Deleting replication job {id}; the images it delivered stay (`ferry image list`).\n"
            ))
        }
        JobCommand::TestInstance {
            id,
            run,
            instance_type,
            port_forwards,
        } => test_instance(s, &id, run, instance_type, port_forwards).await,
        JobCommand::Cutover {
            id,
            sync_data,
            watch: follow,
        } => {
            let resp = s
                .client
                .smc(
                    "CutOverReplicationJob",
                    &[
                        ("JobId".to_owned(), id.clone()),
                        ("SyncData".to_owned(), sync_data.to_string()),
                    ],
                )
                .await?;
            let what = if sync_data {
                "one last sync of the changes, then it finishes"
            } else {
                "it finishes without another sync"
            };
            if !follow {
                if s.json_output() {
                    return s.print_json(&resp);
                }
                return s.print(&format!(
                    "Cutting over replication job {id}: {what}. Follow it with `ferry job watch {id}`.\n"
                ));
            }
            if !s.json_output() {
                s.print(&format!("Cutting over replication job {id}: {what}.\n"))?;
            }
            watch_until(s, &id, true).await
        }
    }
}

/// Merges new transfer settings into a job's `ReplicationParameters` JSON text, keeping the other keys.
/// A new bandwidth limit replaces both spellings (`bandwidth_limit_bps` and SMC's KB/s
/// `bandwidth_limit`), so that the job is left with one unambiguous limit.
pub fn merge_replication_parameters(
    current: &str,
    bandwidth_limit_bps: Option<u64>,
    compress_level: Option<i32>,
) -> String {
    let mut p = match serde_json::from_str::<Value>(current) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    if let Some(bps) = bandwidth_limit_bps {
        p.remove("bandwidth_limit");
        p.insert("bandwidth_limit_bps".into(), json!(bps));
    }
    if let Some(level) = compress_level {
        p.insert("compress_level".into(), json!(level));
    }
    Value::Object(p).to_string()
}

async fn modify(s: &mut Session<'_, '_>, args: JobModifyArgs) -> anyhow::Result<()> {
    let id = args.id.clone();
    let mut params = vec![("JobId".to_owned(), id.clone())];
    let mut changed = Vec::new();
    let mut push = |key: &str, label: &str, value: Option<String>| {
        if let Some(v) = value {
            params.push((key.to_owned(), v));
            changed.push(label.to_owned());
        }
    };
    push("Name", "name", args.name);
    push("Description", "description", args.description);
    push(
        "Frequency",
        "frequency",
        args.frequency.map(|f| f.to_string()),
    );
    push(
        "MaxNumberOfImageToKeep",
        "images to keep",
        args.keep.map(|k| k.to_string()),
    );
    push("ValidTime", "validity", args.valid_until);
    if args.bandwidth_limit.is_some() || args.compress_level.is_some() {
        let (_, job) = describe(s, &id).await?;
        let merged = merge_replication_parameters(
            &job.replication_parameters,
            args.bandwidth_limit,
            args.compress_level,
        );
        params.push(("ReplicationParameters".to_owned(), merged));
        changed.push("transfer parameters".to_owned());
    }
    if changed.is_empty() {
        anyhow::bail!(
            "nothing to change for job {id}: pass --name, --description, --frequency, --keep, \
             --valid-until, --bandwidth-limit or --compress-level"
        );
    }
    let resp = s
        .client
        .smc("ModifyReplicationJobAttribute", &params)
        .await?;
    if s.json_output() {
        return s.print_json(&resp);
    }
    s.print(&format!(
        "Changed the {} of replication job {id}.\n",
        changed.join(", ")
    ))
}

/// `CreateReplicationJob`'s `ReplicationParameters` JSON text, `None` when nothing is set.
pub fn replication_parameters(
    bandwidth_limit_bps: Option<u64>,
    compress_level: Option<i32>,
) -> Option<String> {
    let mut p = serde_json::Map::new();
    if let Some(bps) = bandwidth_limit_bps {
        p.insert("bandwidth_limit_bps".into(), json!(bps));
    }
    if let Some(level) = compress_level {
        p.insert("compress_level".into(), json!(level));
    }
    (!p.is_empty()).then(|| Value::Object(p).to_string())
}

async fn create(s: &mut Session<'_, '_>, args: JobCreateArgs) -> anyhow::Result<()> {
    let mut params = vec![
        ("SourceId".to_owned(), args.source.clone()),
        s.region(),
        ("TargetType".to_owned(), "Image".to_owned()),
        ("RunOnce".to_owned(), (!args.incremental).to_string()),
    ];
    if let Some(n) = args.name {
        params.push(("Name".to_owned(), n));
    }
    if let Some(n) = args.image_name {
        params.push(("ImageName".to_owned(), n));
    }
    if let Some(f) = args.frequency {
        params.push(("Frequency".to_owned(), f.to_string()));
    }
    if let Some(k) = args.keep {
        params.push(("MaxNumberOfImageToKeep".to_owned(), k.to_string()));
    }
    if let Some(p) = replication_parameters(args.bandwidth_limit, args.compress_level) {
        params.push(("ReplicationParameters".to_owned(), p));
    }
    if let Some(t) = args.scheduled_start.clone() {
        params.push(("ScheduledStartTime".to_owned(), t));
    }
    if let Some(t) = args.valid_until {
        params.push(("ValidTime".to_owned(), t));
    }
    if args.tags.len() > 20 {
        anyhow::bail!(
            "{} tags given: a job takes at most 20 --tag options",
            args.tags.len()
        );
    }
    for (i, (k, v)) in args.tags.into_iter().enumerate() {
        params.push((format!("Tag.{}.Key", i + 1), k));
        params.push((format!("Tag.{}.Value", i + 1), v));
    }
    let resp = s.client.smc("CreateReplicationJob", &params).await?;
    if s.json_output() {
        return s.print_json(&resp);
    }
    let id = crate::view::text(&resp, "JobId");
    let next = match &args.scheduled_start {
        Some(t) => {
            format!("It starts by itself at {t}; follow it then with `ferry job watch {id}`.")
        }
        None => format!("Start it with `ferry job start {id} --watch`."),
    };
    s.print(&format!(
        "Created replication job {id} for source server {}. {next}\n",
        args.source
    ))
}

/// `ferry job test-instance`: RunInstances from the image of one of the job's completed runs.
async fn test_instance(
    s: &mut Session<'_, '_>,
    id: &str,
    run: Option<u32>,
    instance_type: Option<String>,
    port_forwards: Vec<String>,
) -> anyhow::Result<()> {
    let (_, job) = describe(s, id).await?;
    let picked = match run {
        Some(n) => job.runs.get(n as usize - 1).ok_or_else(|| {
            anyhow::anyhow!("job {id} has {} run(s); there is no run {n}", job.runs.len())
        })?,
        None => job
            .runs
            .iter()
            .rev()
            .find(|r| !r.image_id.is_empty() && r.status == "Succeeded")
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "job {id} has no completed run with an image yet: wait until a run ends (`ferry job watch {id}`)"
                )
            })?,
    };
    if picked.image_id.is_empty() {
        anyhow::bail!(
            "run {} of job {id} has no image yet ({}): wait until it ends",
            picked.run_id,
            picked.status
        );
    }
    let mut params = vec![
        s.region(),
        ("ImageId".to_owned(), picked.image_id.clone()),
        ("InstanceName".to_owned(), format!("{}-test", job.name)),
        (
            "Description".to_owned(),
            format!("Test instance of job {id}"),
        ),
    ];
    if let Some(t) = instance_type {
        params.push(("InstanceType".to_owned(), t));
    }
    for (i, f) in port_forwards.iter().enumerate() {
        params.push((format!("PortForward.{}", i + 1), f.clone()));
    }
    let resp = s.client.ecs("RunInstances", &params).await?;
    if s.json_output() {
        return s.print_json(&resp);
    }
    let ids: Vec<String> = list(&resp, "InstanceIdSets", "InstanceIdSet")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    s.print(&format!(
        "Launched test instance {} from image {} (run {}). The job goes on; the instance is deleted when the \
         job finishes. Its console: `ferry instance console {}`.\n",
        ids.join(", "),
        picked.image_id,
        picked.run_id,
        ids.first().map_or("", String::as_str)
    ))
}

/// The job `id`, or an error saying it does not exist.
async fn describe(s: &Session<'_, '_>, id: &str) -> anyhow::Result<(Value, JobView)> {
    let resp = s
        .client
        .smc(
            "DescribeReplicationJobs",
            &[("JobId.1".to_owned(), id.to_owned())],
        )
        .await?;
    let job = list(&resp, "ReplicationJobs", "ReplicationJob")
        .iter()
        .map(JobView::from_json)
        .find(|j| j.id == id);
    match job {
        Some(job) => Ok((resp, job)),
        None => {
            anyhow::bail!("replication job {id} does not exist: list jobs with `ferry job list`")
        }
    }
}

fn jobs_table(jobs: &[JobView]) -> Table {
    let mut t = Table::new(&[
        "ID", "NAME", "SOURCE", "STATUS", "PROGRESS", "TYPE", "IMAGE", "CREATED",
    ]);
    for j in jobs {
        t.row(vec![
            j.id.clone(),
            j.name.clone(),
            j.source_id.clone(),
            j.phase(),
            format!("{:.1}%", j.progress),
            job_type(j),
            j.image_id.clone(),
            j.created.clone(),
        ]);
    }
    t
}

fn job_type(j: &JobView) -> String {
    if j.run_once {
        "one-off".to_owned()
    } else {
        match j.frequency {
            Some(h) => format!("every {h} h"),
            None => "incremental".to_owned(),
        }
    }
}

fn parameters_text(raw: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(raw) else {
        return raw.to_owned();
    };
    let mut parts = Vec::new();
    let bps = crate::view::number(&v, "bandwidth_limit_bps")
        .or_else(|| crate::view::number(&v, "bandwidth_limit").map(|k| k.saturating_mul(1024)));
    match bps {
        Some(0) | None => parts.push("bandwidth unlimited".to_owned()),
        Some(b) => parts.push(format!("bandwidth {}", human_rate(b))),
    }
    match v.get("compress_level").and_then(Value::as_i64) {
        Some(0) => parts.push("compression off".to_owned()),
        Some(l) => parts.push(format!("zstd level {l}")),
        None => parts.push("compression chosen by the agent".to_owned()),
    }
    parts.join(", ")
}

/// The readable description of a job and its runs.
pub fn render_job(j: &JobView) -> String {
    let mut out = format!("Replication job {} ({})\n", j.id, j.name);
    let keep = match (j.run_once, j.max_images) {
        (false, Some(k)) => format!(", keeping {k} images"),
        _ => String::new(),
    };
    out.push_str(&key_values(
        &[
            ("Source", j.source_id.clone()),
            ("Status", format!("{} ({:.1}%)", j.phase(), j.progress)),
            ("Status info", j.status_info.clone()),
            ("Error", j.error_code.clone()),
            ("Type", format!("{}{keep}", job_type(j))),
            ("Parameters", parameters_text(&j.replication_parameters)),
            ("Image name", j.image_name.clone()),
            ("Image", j.image_id.clone()),
            ("Created", j.created.clone()),
            ("Valid until", j.valid_until.clone()),
            ("Next", crate::view::job_next_step(&j.status, &j.id)),
        ],
        2,
    ));
    out.push_str("\nRuns:\n");
    if j.runs.is_empty() {
        out.push_str(&format!(
            "  none yet: start the job with `ferry job start {}`\n",
            j.id
        ));
        return out;
    }
    let mut t = Table::new(&[
        "RUN",
        "TYPE",
        "STATUS",
        "STARTED",
        "ENDED",
        "SCANNED",
        "SENT",
        "SKIPPED",
        "THROUGHPUT",
        "IMAGE",
        "ERROR",
    ]);
    for r in &j.runs {
        t.row(vec![
            r.run_id.clone(),
            r.kind.clone(),
            r.status.clone(),
            r.start.clone(),
            r.end.clone(),
            format!(
                "{} / {}",
                human_bytes(r.bytes_scanned),
                human_bytes(r.bytes_total)
            ),
            human_bytes(r.bytes_sent),
            human_bytes(r.bytes_skipped()),
            human_rate(r.throughput_bps),
            r.image_id.clone(),
            r.error.clone(),
        ]);
    }
    for line in t.render().lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The figures after the bar: sent, skipped, throughput, ETA, phase and status info.
fn progress_message(j: &JobView, run: Option<&RunView>) -> String {
    let mut parts = Vec::new();
    if let Some(r) = run {
        parts.push(format!("sent {}", human_bytes(r.bytes_sent)));
        parts.push(format!("skipped {}", human_bytes(r.bytes_skipped())));
        parts.push(human_rate(r.throughput_bps));
        if let Some(eta) = r.eta_secs {
            parts.push(format!("ETA {}", human_duration(eta)));
        }
    }
    parts.push(j.phase());
    if !j.status_info.is_empty() {
        parts.push(j.status_info.clone());
    }
    parts.join("  ")
}

/// One progress line for a non-terminal output.
pub fn progress_line(j: &JobView) -> String {
    let run = j.current_run();
    let scanned = match run {
        Some(r) => format!(
            "scanned {} / {} ({:.1}%)  ",
            human_bytes(r.bytes_scanned),
            human_bytes(r.bytes_total),
            if r.bytes_total == 0 {
                0.0
            } else {
                r.bytes_scanned as f64 * 100.0 / r.bytes_total as f64
            }
        ),
        None => String::new(),
    };
    format!("{}: {scanned}{}", j.id, progress_message(j, run))
}

/// The error a failed watch ends with.
fn failure(j: &JobView) -> anyhow::Error {
    let reason = j.failure_reason();
    let reason = if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    };
    match j.status.as_str() {
        "Stopped" => anyhow::anyhow!(
            "replication job {} was stopped{reason}: resume it with `ferry job start {}`",
            j.id,
            j.id
        ),
        "InError" => anyhow::anyhow!(
            "replication job {} failed{reason}: see `ferry job show {}`, fix the cause, then resume with \
             `ferry job start {}`",
            j.id,
            j.id,
            j.id
        ),
        other => anyhow::anyhow!(
            "replication job {} is {other}{reason}: create a new job to migrate this source again",
            j.id
        ),
    }
}

fn new_bar() -> ProgressBar {
    // No length until the agent reports the run's size, so the bar does not claim 100% of nothing.
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
    // The template is a constant: if indicatif ever rejected it, a bar without a template still works.
    if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Follows job `id` until it ends; an error (exit 1) when it fails or is stopped.
async fn watch(s: &mut Session<'_, '_>, id: &str) -> anyhow::Result<()> {
    watch_until(s, id, false).await
}

/// [`watch`]; with `finished_only`, a Waiting job is still going (it has not taken a cutover yet).
async fn watch_until(s: &mut Session<'_, '_>, id: &str, finished_only: bool) -> anyhow::Result<()> {
    let use_bar = s.io.interactive && !s.json_output();
    let bar = use_bar.then(new_bar);
    let mut ticker = tokio::time::interval(if use_bar { BAR_POLL } else { LINE_POLL });
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (resp, job) = loop {
        ticker.tick().await;
        let (resp, job) = match describe(s, id).await {
            Ok(found) => found,
            Err(e) => {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                return Err(e);
            }
        };
        let run = job.current_run();
        match &bar {
            Some(bar) => {
                if let Some(r) = run.filter(|r| r.bytes_total > 0) {
                    bar.set_length(r.bytes_total);
                    bar.set_position(r.bytes_scanned.min(r.bytes_total));
                }
                bar.set_message(progress_message(&job, run));
                bar.tick();
            }
            None if !s.json_output() => s.print(&format!("{}\n", progress_line(&job)))?,
            None => {}
        }
        let waiting = finished_only && job.status == "Waiting";
        if job.outcome() != JobOutcome::Pending && !waiting {
            break (resp, job);
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if s.json_output() {
        s.print_json(&resp)?;
    }
    match job.outcome() {
        JobOutcome::Done => {
            if !s.json_output() {
                let image = if job.image_id.is_empty() {
                    String::new()
                } else {
                    format!(": image {}", job.image_id)
                };
                let next = if job.status == "Waiting" {
                    " (waiting for the next incremental run)"
                } else {
                    ""
                };
                s.print(&format!("Job {id} is {}{image}{next}.\n", job.status))?;
            }
            Ok(())
        }
        _ => Err(failure(&job)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobView {
        JobView::from_json(&json!({
            "JobId": "j-1", "Name": "web", "SourceId": "s-1", "Status": "Running",
            "BusinessStatus": "Syncing", "Progress": 45.0, "RunOnce": true,
            "StatusInfo": "paused: server is out of space",
            "ReplicationParameters": "{\"bandwidth_limit_bps\":10485760,\"compress_level\":3}",
            "ReplicationJobRuns": {"ReplicationJobRun": [{
                "RunId": "r-1", "Type": "Manual", "RunStatus": "Syncing",
                "StartTime": "2024-05-01T10:00:00Z", "BytesTotal": 2147483648u64,
                "BytesScanned": 1073741824u64, "BytesSent": 104857600, "BytesZero": 524288000,
                "BytesUnchanged": 0, "BytesDeduplicated": 0, "Throughput": 52428800, "Eta": 200
            }]}
        }))
    }

    #[test]
    fn the_progress_bar_template_is_valid() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }

    #[test]
    fn parameters_are_json_with_exact_units() {
        assert_eq!(replication_parameters(None, None), None);
        let p = replication_parameters(Some(10 << 20), Some(3)).expect("set");
        let v: Value = serde_json::from_str(&p).expect("JSON");
        assert_eq!(
            v,
            json!({"bandwidth_limit_bps": 10485760, "compress_level": 3})
        );
        assert_eq!(parameters_text(&p), "bandwidth 10.0 MiB/s, zstd level 3");
        assert_eq!(parameters_text(""), "");
    }

    #[test]
    fn a_progress_line_has_every_figure() {
        let line = progress_line(&job());
        assert_eq!(
            line,
            "j-1: scanned 1.0 GiB / 2.0 GiB (50.0%)  sent 100.0 MiB  skipped 500.0 MiB  50.0 MiB/s  \
             ETA 3m 20s  Running/Syncing  paused: server is out of space"
        );
    }

    #[test]
    fn a_job_renders_with_its_runs() {
        let out = render_job(&job());
        assert!(
            out.contains("Status:      Running/Syncing (45.0%)"),
            "{out}"
        );
        assert!(out.contains("bandwidth 10.0 MiB/s, zstd level 3"), "{out}");
        let next = out
            .lines()
            .find(|l| l.trim_start().starts_with("Next:"))
            .expect("a next step");
        assert!(next.contains("ferry job stop j-1"), "{next}");
        let run = out.lines().find(|l| l.contains("r-1")).expect("run row");
        assert!(
            run.contains("1.0 GiB / 2.0 GiB")
                && run.contains("500.0 MiB")
                && run.contains("50.0 MiB/s"),
            "{run}"
        );
    }

    #[test]
    fn failures_say_how_to_resume() {
        let mut j = job();
        j.status = "Stopped".into();
        j.business_status.clear();
        j.status_info.clear();
        let msg = failure(&j).to_string();
        assert!(
            msg.contains("was stopped") && msg.contains("ferry job start j-1"),
            "{msg}"
        );
        j.status = "InError".into();
        j.error_code = "ImageBuild.Failed".into();
        let msg = failure(&j).to_string();
        assert!(msg.contains("failed: ImageBuild.Failed"), "{msg}");
    }

    #[test]
    fn the_job_list_shows_phase_and_type() {
        let mut incremental = job();
        incremental.id = "j-2".into();
        incremental.run_once = false;
        incremental.frequency = Some(6);
        let text = jobs_table(&[job(), incremental]).render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("Running/Syncing  45.0%     one-off"),
            "{text}"
        );
        assert!(lines[2].contains("every 6 h"), "{text}");
    }
}
