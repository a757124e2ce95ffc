//! `ferry snapshot …`: the disk snapshots replication runs store and images are built from (ECS
//! `DescribeSnapshots`, `DeleteSnapshot`).
//!
//! ECS cannot filter snapshots by image or job, so `--image` and `--job` are answered through the
//! public API like any SDK would: the images' `DiskDeviceMappings` name their snapshots, which are
//! then asked for by ID (`SnapshotIds`, a JSON array of at most 100 IDs per call).

use std::collections::BTreeSet;

use serde_json::Value;

use super::Session;
use super::images::{ALL_STATUSES, describe_image};
use crate::cli::SnapshotCommand;
use crate::client::ECS_VERSION;
use crate::output::Table;
use crate::view::{list, text, time};

/// `SnapshotIds` takes at most 100 IDs.
const IDS_PER_CALL: usize = 100;

pub(super) async fn run(s: &mut Session<'_, '_>, cmd: SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::List { image, job, status } => {
            let mut base = vec![s.region()];
            if let Some(st) = status {
                base.push(("Status".to_owned(), st));
            }
            let wanted = match (&image, &job) {
                (Some(image), _) => Some(image_snapshots(s, image).await?),
                (None, Some(job)) => Some(job_snapshots(s, job).await?),
                (None, None) => None,
            };
            let (doc, items) = match wanted {
                None => {
                    s.fetch_all(
                        ECS_VERSION,
                        "DescribeSnapshots",
                        &base,
                        ("Snapshots", "Snapshot"),
                        100,
                    )
                    .await?
                }
                Some(ids) => by_ids(s, &base, &ids).await?,
            };
            if s.json_output() {
                return s.print_json(&doc);
            }
            if items.is_empty() {
                let hint = match (&image, &job) {
                    (Some(i), _) => format!("No snapshots for image {i}.\n"),
                    (None, Some(j)) => format!("No snapshots for replication job {j}.\n"),
                    (None, None) => {
                        "No snapshots. Each replication run stores one per disk: see `ferry job list`.\n"
                            .to_owned()
                    }
                };
                return s.print(&hint);
            }
            s.print(&snapshots_table(&items).render())
        }
        SnapshotCommand::Delete { id, force } => {
            let resp = s
                .client
                .ecs(
                    "DeleteSnapshot",
                    &[
                        s.region(),
                        ("SnapshotId".to_owned(), id.clone()),
                        ("Force".to_owned(), force.to_string()),
                    ],
                )
                .await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!(
                "Deleted snapshot {id}. Chunks it shares with other snapshots stay stored.\n"
            ))
        }
    }
}

/// The snapshot IDs of one image's disks; an error when the image does not exist.
async fn image_snapshots(s: &Session<'_, '_>, image: &str) -> anyhow::Result<Vec<String>> {
    let (_, found) = describe_image(s, image).await?;
    Ok(mapped_snapshots(std::slice::from_ref(&found)))
}

/// The snapshot IDs of every image a job built.
async fn job_snapshots(s: &Session<'_, '_>, job: &str) -> anyhow::Result<Vec<String>> {
    let params = [
        s.region(),
        // Every image status, so that snapshots of images still building or failed are found too.
        ("Status".to_owned(), ALL_STATUSES.to_owned()),
    ];
    let (_, images) = s
        .fetch_all(
            ECS_VERSION,
            "DescribeImages",
            &params,
            ("Images", "Image"),
            100,
        )
        .await?;
    let of_job: Vec<Value> = images
        .into_iter()
        .filter(|i| text(i, "JobId") == job)
        .collect();
    Ok(mapped_snapshots(&of_job))
}

/// The distinct snapshot IDs in the images' `DiskDeviceMappings`, in order of first appearance.
pub fn mapped_snapshots(images: &[Value]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut ids = Vec::new();
    for image in images {
        for d in list(image, "DiskDeviceMappings", "DiskDeviceMapping") {
            let id = text(d, "SnapshotId");
            if !id.is_empty() && seen.insert(id.clone()) {
                ids.push(id);
            }
        }
    }
    ids
}

/// The snapshots with these IDs, asked for 100 at a time; one document with all of them.
async fn by_ids(
    s: &Session<'_, '_>,
    base: &[(String, String)],
    ids: &[String],
) -> anyhow::Result<(Value, Vec<Value>)> {
    let mut items = Vec::new();
    let mut doc: Option<Value> = None;
    for chunk in ids.chunks(IDS_PER_CALL) {
        let mut params = base.to_vec();
        params.push((
            "SnapshotIds".to_owned(),
            serde_json::to_string(chunk).unwrap_or_default(),
        ));
        params.push(("PageSize".to_owned(), IDS_PER_CALL.to_string()));
        let resp = s.client.ecs("DescribeSnapshots", &params).await?;
        items.extend(list(&resp, "Snapshots", "Snapshot").iter().cloned());
        doc.get_or_insert(resp);
    }
    let mut doc = doc.unwrap_or_else(|| serde_json::json!({}));
    if let Some(o) = doc.as_object_mut() {
        o.insert(
            "Snapshots".into(),
            serde_json::json!({ "Snapshot": items.clone() }),
        );
        o.insert("TotalCount".into(), Value::from(items.len()));
        o.remove("NextToken");
    }
    Ok((doc, items))
}

fn snapshots_table(items: &[Value]) -> Table {
    let mut t = Table::new(&[
        "ID", "NAME", "STATUS", "PROGRESS", "DISK", "SIZE", "USAGE", "CREATED",
    ]);
    for v in items {
        let size = text(v, "SourceDiskSize");
        t.row(vec![
            text(v, "SnapshotId"),
            text(v, "SnapshotName"),
            text(v, "Status"),
            text(v, "Progress"),
            text(v, "SourceDiskType"),
            if size.is_empty() {
                size
            } else {
                format!("{size} GiB")
            },
            text(v, "Usage"),
            time(v, "CreationTime"),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snapshots_of_images_are_listed_once_in_order() {
        let images = [
            json!({"ImageId": "m-1", "DiskDeviceMappings": {"DiskDeviceMapping": [
                {"SnapshotId": "sp-a"}, {"SnapshotId": "sp-b"}, {"Device": "/dev/xvdc"}
            ]}}),
            json!({"ImageId": "m-2", "DiskDeviceMappings": {"DiskDeviceMapping": [
                {"SnapshotId": "sp-b"}, {"SnapshotId": "sp-c"}
            ]}}),
            json!({"ImageId": "m-3"}),
        ];
        assert_eq!(mapped_snapshots(&images), ["sp-a", "sp-b", "sp-c"]);
    }

    #[test]
    fn the_table_shows_sizes_in_gib() {
        let text = snapshots_table(&[json!({
            "SnapshotId": "sp-1", "SnapshotName": "j-1-disk0", "Status": "accomplished",
            "Progress": "100%", "SourceDiskType": "system", "SourceDiskSize": 20, "Usage": "image",
            "CreationTime": "2024-05-01T10:00:00Z"
        })])
        .render();
        let row = text.lines().nth(1).expect("a row");
        assert_eq!(
            row,
            "sp-1  j-1-disk0  accomplished  100%      system  20 GiB  image  2024-05-01 10:00:00"
        );
    }
}
