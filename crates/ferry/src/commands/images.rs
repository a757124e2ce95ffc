//! `ferry image …`: images built by replication jobs (ECS `DescribeImages`), their export
//! (`ExportImage`, followed through `DescribeTaskAttribute`), images built from stored snapshots
//! (`CreateImage` with `DiskDeviceMapping.N.SnapshotId`, the first being the system disk) and
//! `DeleteImage`.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::Session;
use crate::cli::{ExportFormat, ImageCommand};
use crate::client::ECS_VERSION;
use crate::output::{Table, human_bytes, key_values};
use crate::view::{list, number, text, time};

/// Every image status ECS defines: `DescribeImages` lists only Available images unless asked.
pub(super) const ALL_STATUSES: &str =
    "Creating,Waiting,Available,UnAvailable,CreateFailed,Deprecated";
const TASK_POLL: Duration = Duration::from_secs(1);
const SPINNER_TEMPLATE: &str = "{spinner} {msg} ({elapsed})";

/// `DescribeImages` for the one image `id`, whatever its status: the response and the image in it; an
/// error when the image does not exist.
pub(super) async fn describe_image(
    s: &Session<'_, '_>,
    id: &str,
) -> anyhow::Result<(Value, Value)> {
    let params = [
        s.region(),
        ("ImageId".to_owned(), id.to_owned()),
        ("Status".to_owned(), ALL_STATUSES.to_owned()),
    ];
    let resp = s.client.ecs("DescribeImages", &params).await?;
    let Some(image) = list(&resp, "Images", "Image")
        .iter()
        .find(|i| text(i, "ImageId") == id)
        .cloned()
    else {
        anyhow::bail!("image {id} does not exist: list images with `ferry image list`");
    };
    Ok((resp, image))
}

pub(super) async fn run(s: &mut Session<'_, '_>, cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::List => {
            let params = [s.region(), ("Status".to_owned(), ALL_STATUSES.to_owned())];
            let Some(items) = s
                .list_items(
                    ECS_VERSION,
                    "DescribeImages",
                    &params,
                    ("Images", "Image"),
                    100,
                    "No images. Replication jobs build them: see `ferry job list`.\n",
                )
                .await?
            else {
                return Ok(());
            };
            s.print(&images_table(&items).render())
        }
        ImageCommand::Show { id } => {
            let (resp, image) = describe_image(s, &id).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&render_image(&image))
        }
        ImageCommand::Export {
            id,
            format,
            bucket,
            prefix,
            wait,
        } => export(s, &id, format, &bucket, prefix, wait).await,
        ImageCommand::Create {
            snapshots,
            name,
            description,
        } => {
            let mut params = vec![s.region(), ("ImageName".to_owned(), name.clone())];
            params.extend(snapshot_mappings(&snapshots));
            if let Some(d) = description {
                params.push(("Description".to_owned(), d));
            }
            let resp = s.client.ecs("CreateImage", &params).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            let id = text(&resp, "ImageId");
            s.print(&format!(
                "Creating image {id} ({name}) from {} snapshot(s). It can be used when `ferry image show {id}` \
                 says Available.\n",
                snapshots.len()
            ))
        }
        ImageCommand::Validation { id } => validation(s, &id).await,
        ImageCommand::Rebuild {
            id,
            name,
            network_mode,
            checks,
            no_validation,
        } => rebuild(s, &id, name, network_mode, checks, no_validation).await,
        ImageCommand::Delete { id, force } => {
            let resp = s
                .client
                .ecs(
                    "DeleteImage",
                    &[
                        s.region(),
                        ("ImageId".to_owned(), id.clone()),
                        ("Force".to_owned(), force.to_string()),
                    ],
                )
                .await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!(
                "Deleted image {id}. Its snapshots stay: `ferry snapshot list` shows them and \
                 `ferry snapshot delete` frees them.\n"
            ))
        }
    }
}

/// `ferry image validation`: the image's boot validation from DescribeImages' Ferry-only fields.
async fn validation(s: &mut Session<'_, '_>, id: &str) -> anyhow::Result<()> {
    let (_, image) = describe_image(s, id).await?;
    if s.json_output() {
        let v = serde_json::json!({
            "ImageId": id,
            "ValidationStatus": image.get("ValidationStatus"),
            "ValidationStatusInfo": image.get("ValidationStatusInfo"),
            "ValidationReport": image.get("ValidationReport"),
            "AdaptationReport": image.get("AdaptationReport"),
        });
        return s.print_json(&v);
    }
    s.print(&render_validation(id, &image))
}

/// The readable boot validation of an image.
pub fn render_validation(id: &str, image: &Value) -> String {
    let status = text(image, "ValidationStatus");
    let mut out = format!(
        "Image {id}: validation {}\n",
        if status.is_empty() {
            "not recorded (image built before validation existed)"
        } else {
            &status
        }
    );
    let info = text(image, "ValidationStatusInfo");
    if !info.is_empty() {
        out.push_str(&format!("  {info}\n"));
    }
    if let Some(a) = image.get("AdaptationReport") {
        out.push_str(&format!("Adaptation: {}", text(a, "Status")));
        let reason = text(a, "Reason");
        if !reason.is_empty() {
            out.push_str(&format!(" ({reason})"));
        }
        let changes = a
            .get("Report")
            .and_then(|r| r.get("changes"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        out.push_str(&format!(", {changes} change(s)\n"));
    }
    let Some(v) = image.get("ValidationReport") else {
        return out;
    };
    out.push_str(&format!(
        "Validation {} on instance {} ({}): {}\n",
        text(v, "ValidationId"),
        text(v, "InstanceId"),
        text(v, "Kind"),
        text(v, "Status")
    ));
    let err = text(v, "Error");
    if !err.is_empty() {
        out.push_str(&format!("  error: {err}\n"));
    }
    let checks = v
        .get("Checks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !checks.is_empty() {
        let mut t = Table::new(&["CHECK", "RESULT", "DETAIL"]);
        for c in &checks {
            let passed = c.get("Passed").and_then(Value::as_bool).unwrap_or(false);
            t.row(vec![
                text(c, "Name"),
                if passed { "passed" } else { "FAILED" }.to_owned(),
                text(c, "Detail"),
            ]);
        }
        out.push_str(&t.render());
    }
    let tail = v
        .get("Report")
        .and_then(|r| r.get("console_tail"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !tail.is_empty() {
        out.push_str("\nConsole log (end):\n");
        let lines: Vec<&str> = tail.lines().collect();
        for l in &lines[lines.len().saturating_sub(40)..] {
            out.push_str("  ");
            out.push_str(l);
            out.push('\n');
        }
    }
    let path = text(v, "ConsoleLogPath");
    if !path.is_empty() {
        out.push_str(&format!("Whole console log (on the server): {path}\n"));
    }
    out
}

/// `ferry image rebuild`: CreateImage from the image's snapshots, with changed options.
async fn rebuild(
    s: &mut Session<'_, '_>,
    id: &str,
    name: Option<String>,
    network_mode: Option<String>,
    checks: Option<String>,
    no_validation: bool,
) -> anyhow::Result<()> {
    let (_, image) = describe_image(s, id).await?;
    let disks = list(&image, "DiskDeviceMappings", "DiskDeviceMapping");
    let mut snapshots: Vec<(bool, String)> = disks
        .iter()
        .map(|d| (text(d, "Type") != "system", text(d, "SnapshotId")))
        .collect();
    snapshots.sort_by_key(|(data, _)| *data);
    let snapshots: Vec<String> = snapshots.into_iter().map(|(_, s)| s).collect();
    if snapshots.is_empty() || snapshots.iter().any(String::is_empty) {
        anyhow::bail!(
            "image {id} has no recorded snapshots to rebuild from (its snapshots were deleted): replicate again"
        );
    }
    let name = name.unwrap_or_else(|| {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let base: String = text(&image, "ImageName").chars().take(100).collect();
        format!("{base}-rebuild-{at}")
    });
    let mut params = vec![s.region(), ("ImageName".to_owned(), name.clone())];
    params.extend(snapshot_mappings(&snapshots));
    if let Some(m) = network_mode {
        let m = match m.to_ascii_lowercase().replace('_', "-").as_str() {
            "dhcp" => "Dhcp",
            "keep-static" | "keepstatic" => "KeepStatic",
            _ => anyhow::bail!("--network-mode {m:?}: use dhcp or keep-static"),
        };
        params.push(("NetworkMode".to_owned(), m.to_owned()));
    }
    if let Some(c) = checks {
        params.push(("ValidationChecks".to_owned(), c));
    }
    if no_validation {
        params.push(("ValidationEnabled".to_owned(), "false".to_owned()));
    }
    let resp = s.client.ecs("CreateImage", &params).await?;
    if s.json_output() {
        return s.print_json(&resp);
    }
    let new_id = text(&resp, "ImageId");
    s.print(&format!(
        "Rebuilding image {id} from its snapshots as {new_id} ({name}): built, adapted and validated again, \
         nothing copied again. Follow it with `ferry image validation {new_id}`.\n"
    ))
}

/// `DiskDeviceMapping.N.SnapshotId` parameters, N from 1 (the system disk) in the order given.
pub fn snapshot_mappings(snapshots: &[String]) -> Vec<(String, String)> {
    snapshots
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                format!("DiskDeviceMapping.{}.SnapshotId", i + 1),
                id.clone(),
            )
        })
        .collect()
}

fn disks_size(image: &Value) -> String {
    let disks = list(image, "DiskDeviceMappings", "DiskDeviceMapping");
    let exact: Option<u64> = disks.iter().map(|d| number(d, "SizeBytes")).sum();
    match exact {
        Some(bytes) if !disks.is_empty() => human_bytes(bytes),
        _ => match number(image, "Size") {
            Some(gib) => format!("{gib} GiB"),
            None => String::new(),
        },
    }
}

fn images_table(items: &[Value]) -> Table {
    let mut t = Table::new(&[
        "ID", "NAME", "STATUS", "PROGRESS", "OS", "ARCH", "BOOT", "SIZE", "JOB", "CREATED",
    ]);
    for i in items {
        t.row(vec![
            text(i, "ImageId"),
            text(i, "ImageName"),
            text(i, "Status"),
            text(i, "Progress"),
            text(i, "OSName"),
            text(i, "Architecture"),
            text(i, "BootMode"),
            disks_size(i),
            text(i, "JobId"),
            time(i, "CreationTime"),
        ]);
    }
    t
}

/// What can be done with an image in its status.
fn image_next_step(i: &Value) -> String {
    let id = text(i, "ImageId");
    match text(i, "Status").as_str() {
        "Available" => format!(
            "launch it with `ferry instance run --image {id}`, or export it with `ferry image export {id} \
             --format qcow2 --bucket BUCKET`"
        ),
        "Creating" | "Waiting" => {
            format!("it is being built: check again with `ferry image show {id}`")
        }
        "CreateFailed" => match text(i, "JobId") {
            job if !job.is_empty() => format!(
                "the build failed: `ferry job show {job}` has the reason; start the job again to rebuild"
            ),
            _ => "the build failed: the server's log has the reason; create it again".to_owned(),
        },
        _ => String::new(),
    }
}

/// The readable description of one image and its disks.
pub fn render_image(i: &Value) -> String {
    let mut out = format!("Image {} ({})\n", text(i, "ImageId"), text(i, "ImageName"));
    out.push_str(&key_values(
        &[
            (
                "Status",
                format!("{} ({})", text(i, "Status"), text(i, "Progress")),
            ),
            ("OS", text(i, "OSName")),
            ("Platform", text(i, "Platform")),
            ("Architecture", text(i, "Architecture")),
            ("Boot mode", text(i, "BootMode")),
            ("Size", disks_size(i)),
            ("Job", text(i, "JobId")),
            ("Created", time(i, "CreationTime")),
            ("Description", text(i, "Description")),
            ("Next", image_next_step(i)),
        ],
        2,
    ));
    let disks = list(i, "DiskDeviceMappings", "DiskDeviceMapping");
    out.push_str("\nDisks:\n");
    if disks.is_empty() {
        out.push_str("  none\n");
        return out;
    }
    let mut t = Table::new(&["DEVICE", "TYPE", "SIZE", "SNAPSHOT", "ROOT DIGEST"]);
    for d in disks {
        let size = match number(d, "SizeBytes") {
            Some(b) => human_bytes(b),
            None => format!("{} GiB", text(d, "Size")),
        };
        t.row(vec![
            text(d, "Device"),
            text(d, "Type"),
            size,
            text(d, "SnapshotId"),
            text(d, "RootDigest"),
        ]);
    }
    for line in t.render().lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The files of a finished export: its `Result` is JSON text `{"Files":[paths]}`.
pub fn export_files(task: &Value) -> Vec<String> {
    let raw = text(task, "Result");
    serde_json::from_str::<Value>(&raw)
        .ok()
        .and_then(|v| {
            v.get("Files").and_then(Value::as_array).map(|files| {
                files
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
        })
        .unwrap_or_default()
}

async fn export(
    s: &mut Session<'_, '_>,
    id: &str,
    format: ExportFormat,
    bucket: &str,
    prefix: Option<String>,
    wait: bool,
) -> anyhow::Result<()> {
    let mut params = vec![
        s.region(),
        ("ImageId".to_owned(), id.to_owned()),
        ("ImageFormat".to_owned(), format.as_api().to_owned()),
        ("OSSBucket".to_owned(), bucket.to_owned()),
    ];
    if let Some(p) = prefix {
        params.push(("OSSPrefix".to_owned(), p));
    }
    let resp = s.client.ecs("ExportImage", &params).await?;
    let task_id = text(&resp, "TaskId");
    if !wait {
        if s.json_output() {
            return s.print_json(&resp);
        }
        return s.print(&format!(
            "Exporting image {id} as {} to bucket {bucket}: task {task_id}. Add --wait to wait for the files.\n",
            format.as_api()
        ));
    }
    if !s.json_output() {
        s.print(&format!(
            "Exporting image {id} as {} to bucket {bucket} (task {task_id})…\n",
            format.as_api()
        ))?;
    }
    let spinner = (s.io.interactive && !s.json_output()).then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
        if let Ok(style) = ProgressStyle::with_template(SPINNER_TEMPLATE) {
            bar.set_style(style);
        }
        bar
    });
    let mut last_progress = String::new();
    let mut ticker = tokio::time::interval(TASK_POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let task = loop {
        ticker.tick().await;
        let polled = s
            .client
            .ecs(
                "DescribeTaskAttribute",
                &[s.region(), ("TaskId".to_owned(), task_id.clone())],
            )
            .await;
        let task = match polled {
            Ok(t) => t,
            Err(e) => {
                if let Some(bar) = &spinner {
                    bar.finish_and_clear();
                }
                return Err(e.into());
            }
        };
        let status = text(&task, "TaskStatus");
        let progress = text(&task, "TaskProcess");
        match &spinner {
            Some(bar) => {
                bar.set_message(format!("{status} {progress}"));
                bar.tick();
            }
            None if !s.json_output() && progress != last_progress => {
                s.print(&format!("{task_id}: {status} {progress}\n"))?;
            }
            None => {}
        }
        last_progress = progress;
        if status == "Finished" || status == "Failed" {
            break task;
        }
    };
    if let Some(bar) = &spinner {
        bar.finish_and_clear();
    }
    if s.json_output() {
        s.print_json(&task)?;
    }
    if text(&task, "TaskStatus") == "Failed" {
        let why = text(&task, "ErrorMessage");
        anyhow::bail!(
            "export task {task_id} of image {id} failed: {}: check the server log and the free space of \
             its data directory, then export again",
            if why.is_empty() {
                "no reason given"
            } else {
                &why
            }
        );
    }
    if !s.json_output() {
        let files = export_files(&task);
        let mut out = format!("Exported image {id} ({} files):\n", files.len());
        for f in files {
            out.push_str("  ");
            out.push_str(&f);
            out.push('\n');
        }
        s.print(&out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image() -> Value {
        json!({
            "ImageId": "m-1", "ImageName": "web-image", "Status": "Available", "Progress": "100%",
            "OSName": "Debian 12", "Architecture": "x86_64", "BootMode": "UEFI", "Size": 20,
            "CreationTime": "2024-05-01T10:00:00Z", "JobId": "j-1",
            "DiskDeviceMappings": {"DiskDeviceMapping": [
                {"Device": "/dev/xvda", "Type": "system", "Size": "20", "SizeBytes": 21474836480u64,
                 "SnapshotId": "s-snap", "RootDigest": "abc"},
                {"Device": "/dev/xvdb", "Type": "data", "Size": "1", "SizeBytes": 536870912}
            ]}
        })
    }

    #[test]
    fn the_spinner_template_is_valid() {
        assert!(ProgressStyle::with_template(SPINNER_TEMPLATE).is_ok());
    }

    #[test]
    fn image_sizes_add_up_the_disks() {
        assert_eq!(disks_size(&image()), "20.5 GiB");
        assert_eq!(disks_size(&json!({"Size": 7})), "7 GiB");
        let text = images_table(&[image()]).render();
        let row = text.lines().nth(1).expect("row");
        assert!(
            row.starts_with(
                "m-1  web-image  Available  100%      Debian 12  x86_64  UEFI  20.5 GiB  j-1"
            ),
            "{row}"
        );
    }

    #[test]
    fn an_image_renders_its_disks() {
        let out = render_image(&image());
        assert!(out.contains("Status:       Available (100%)"), "{out}");
        assert!(out.contains("/dev/xvdb  data    512.0 MiB"), "{out}");
        assert!(out.contains("ferry instance run --image m-1"), "{out}");
        let mut failed = image();
        failed["Status"] = json!("CreateFailed");
        assert!(render_image(&failed).contains("ferry job show j-1"));
    }

    #[test]
    fn export_results_list_the_files() {
        let task = json!({"Result": "{\"Files\":[\"b/m-1_disk0.qcow2\",\"b/m-1_disk1.qcow2\"]}"});
        assert_eq!(
            export_files(&task),
            ["b/m-1_disk0.qcow2", "b/m-1_disk1.qcow2"]
        );
        assert!(export_files(&json!({})).is_empty());
    }
}
