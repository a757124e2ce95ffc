//! `ferry workgroup …`: migration waves (SMC workgroups): create them, put source servers in them, and
//! follow their derived status and warnings (`docs/workgroups-and-tags.md`).

use clap::Subcommand;
use serde_json::Value;

use super::Session;
use crate::client::SMC_VERSION;
use crate::output::{Table, key_values};
use crate::view::{list, text, time};

/// `ferry workgroup …`.
#[derive(Debug, Subcommand)]
pub enum WorkgroupCommand {
    /// Create a workgroup (a migration wave).
    Create {
        /// Name: 2-64 characters, starting with a letter; letters, digits, `:`, `_`, `-`, `.`.
        #[arg(long)]
        name: String,
        /// Description (up to 256 characters).
        #[arg(long)]
        description: Option<String>,
        /// A tag KEY=VALUE (repeatable, up to 20).
        #[arg(long = "tag", value_parser = parse_tag, value_name = "KEY=VALUE")]
        tags: Vec<(String, String)>,
        /// Idempotency token: repeating the command with it returns the same workgroup.
        #[arg(long, value_name = "TOKEN")]
        client_token: Option<String>,
    },
    /// List workgroups with their status and warnings.
    List {
        /// Only workgroups in this status.
        #[arg(long, value_parser = ["NotStarted", "InProgress", "Cutover", "Completed"])]
        status: Option<String>,
        /// Only workgroups with this tag: KEY or KEY=VALUE (repeatable; all must match).
        #[arg(long = "tag", value_parser = parse_tag_filter, value_name = "KEY[=VALUE]")]
        tags: Vec<(String, Option<String>)>,
    },
    /// Show a workgroup, its warnings and its source servers.
    Show { id: String },
    /// Rename a workgroup or change its description.
    Rename {
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a workgroup (its source servers stay, in no workgroup).
    Delete { id: String },
    /// Add source servers to a workgroup (a source belongs to one workgroup; at most 50 per workgroup).
    Add {
        id: String,
        /// Source server IDs.
        #[arg(required = true, value_name = "SOURCE")]
        sources: Vec<String>,
    },
    /// Remove source servers from a workgroup.
    Remove {
        id: String,
        /// Source server IDs.
        #[arg(required = true, value_name = "SOURCE")]
        sources: Vec<String>,
    },
}

/// `KEY=VALUE`.
pub(crate) fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE: write e.g. --tag env=prod")),
    }
}

/// `KEY` or `KEY=VALUE`.
pub(crate) fn parse_tag_filter(s: &str) -> Result<(String, Option<String>), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), Some(v.to_owned()))),
        None if !s.trim().is_empty() => Ok((s.trim().to_owned(), None)),
        _ => Err(format!(
            "{s:?} is not KEY or KEY=VALUE: write e.g. --tag env or --tag env=prod"
        )),
    }
}

/// `Tag.N.Key`/`Tag.N.Value` parameters.
pub(crate) fn tag_params<'a>(
    tags: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, (k, v)) in tags.into_iter().enumerate() {
        out.push((format!("Tag.{}.Key", i + 1), k.to_owned()));
        if let Some(v) = v {
            out.push((format!("Tag.{}.Value", i + 1), v.to_owned()));
        }
    }
    out
}

/// `key=value, …` of a `Tags.Tag[]` list.
pub(crate) fn tags_text(v: &Value) -> String {
    list(v, "Tags", "Tag")
        .iter()
        .map(|t| format!("{}={}", text(t, "Key"), text(t, "Value")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn strings(v: &Value, outer: &str, inner: &str) -> Vec<String> {
    list(v, outer, inner)
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// `InError: 1, UnRelated: 2`.
fn warnings_text(w: &Value) -> String {
    list(w, "Warnings", "Warning")
        .iter()
        .map(|x| {
            format!(
                "{}: {}",
                text(x, "WarningType"),
                strings(x, "SourceIds", "SourceId").len()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn id_params(name: &str, ids: &[String]) -> Vec<(String, String)> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| (format!("{name}.{}", i + 1), id.clone()))
        .collect()
}

pub(super) async fn run(s: &mut Session<'_, '_>, cmd: WorkgroupCommand) -> anyhow::Result<()> {
    match cmd {
        WorkgroupCommand::Create {
            name,
            description,
            tags,
            client_token,
        } => {
            let mut params = vec![("Name".to_owned(), name)];
            if let Some(d) = description {
                params.push(("Description".to_owned(), d));
            }
            if let Some(t) = client_token {
                params.push(("ClientToken".to_owned(), t));
            }
            params.extend(tag_params(
                tags.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))),
            ));
            let resp = s.client.smc("CreateWorkgroup", &params).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            let id = text(&resp, "WorkgroupId");
            s.print(&format!(
                "Created workgroup {id}. Add source servers with `ferry workgroup add {id} SOURCE…`.\n"
            ))
        }
        WorkgroupCommand::List { status, tags } => {
            let mut params = tag_params(tags.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
            if let Some(st) = status {
                params.push(("Status".to_owned(), st));
            }
            let Some(items) = s
                .list_items(
                    SMC_VERSION,
                    "DescribeWorkgroups",
                    &params,
                    ("Workgroups", "Workgroup"),
                    50,
                    "No workgroups. Create one with `ferry workgroup create --name wave-1`.\n",
                )
                .await?
            else {
                return Ok(());
            };
            let mut t = Table::new(&[
                "ID", "NAME", "STATUS", "SOURCES", "WARNINGS", "TAGS", "CREATED",
            ]);
            for w in &items {
                t.row(vec![
                    text(w, "WorkgroupId"),
                    text(w, "Name"),
                    text(w, "Status"),
                    strings(w, "SourceIds", "SourceId").len().to_string(),
                    warnings_text(w),
                    tags_text(w),
                    time(w, "CreationTime"),
                ]);
            }
            s.print(&t.render())
        }
        WorkgroupCommand::Show { id } => {
            let resp = s
                .client
                .smc(
                    "DescribeWorkgroups",
                    &id_params("WorkgroupId", std::slice::from_ref(&id)),
                )
                .await?;
            let Some(w) = list(&resp, "Workgroups", "Workgroup")
                .iter()
                .find(|w| text(w, "WorkgroupId") == id)
                .cloned()
            else {
                anyhow::bail!(
                    "workgroup {id} does not exist: list workgroups with `ferry workgroup list`"
                );
            };
            if s.json_output() {
                return s.print_json(&resp);
            }
            let (_, sources) = s
                .fetch_all(
                    SMC_VERSION,
                    "DescribeSourceServers",
                    &[("WorkgroupId".to_owned(), id.clone())],
                    ("SourceServers", "SourceServer"),
                    50,
                )
                .await?;
            let mut out = key_values(
                &[
                    ("ID", text(&w, "WorkgroupId")),
                    ("Name", text(&w, "Name")),
                    ("Description", text(&w, "Description")),
                    ("Status", text(&w, "Status")),
                    ("Created", time(&w, "CreationTime")),
                    ("Tags", tags_text(&w)),
                ],
                0,
            );
            for warning in list(&w, "Warnings", "Warning") {
                let kind = text(warning, "WarningType");
                let why = match kind.as_str() {
                    "InError" => "the job failed: see `ferry job show`",
                    "UnRelated" => "no replication job yet: `ferry job create --source …`",
                    "NotPassed" => "the image failed validation",
                    _ => "",
                };
                out.push_str(&format!(
                    "Warning {kind} ({why}): {}\n",
                    strings(warning, "SourceIds", "SourceId").join(", ")
                ));
            }
            if sources.is_empty() {
                out.push_str(&format!(
                    "\nNo source servers. Add some with `ferry workgroup add {id} SOURCE…`.\n"
                ));
            } else {
                let mut t = Table::new(&["SOURCE", "NAME", "STATE", "JOB", "TAGS"]);
                for src in &sources {
                    t.row(vec![
                        text(src, "SourceId"),
                        text(src, "Name"),
                        text(src, "State"),
                        text(src, "JobId"),
                        tags_text(src),
                    ]);
                }
                out.push('\n');
                out.push_str(&t.render());
            }
            s.print(&out)
        }
        WorkgroupCommand::Rename {
            id,
            name,
            description,
        } => {
            if name.is_none() && description.is_none() {
                anyhow::bail!("nothing to change: give --name and/or --description");
            }
            let mut params = vec![("WorkgroupId".to_owned(), id.clone())];
            if let Some(n) = name {
                params.push(("Name".to_owned(), n));
            }
            if let Some(d) = description {
                params.push(("Description".to_owned(), d));
            }
            let resp = s.client.smc("ModifyWorkgroupAttribute", &params).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!("Workgroup {id} updated.\n"))
        }
        WorkgroupCommand::Delete { id } => {
            let resp = s
                .client
                .smc("DeleteWorkgroup", &[("WorkgroupId".to_owned(), id.clone())])
                .await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!("Workgroup {id} deleted.\n"))
        }
        WorkgroupCommand::Add { id, sources } => {
            members(s, "AssociateSourceServers", &id, &sources, "added to").await
        }
        WorkgroupCommand::Remove { id, sources } => {
            members(
                s,
                "DisassociateSourceServers",
                &id,
                &sources,
                "removed from",
            )
            .await
        }
    }
}

async fn members(
    s: &mut Session<'_, '_>,
    action: &str,
    id: &str,
    sources: &[String],
    done: &str,
) -> anyhow::Result<()> {
    let mut params = vec![("WorkgroupId".to_owned(), id.to_owned())];
    params.extend(id_params("SourceId", sources));
    let resp = s.client.smc(action, &params).await?;
    if s.json_output() {
        return s.print_json(&resp);
    }
    s.print(&format!(
        "{} source server(s) {done} workgroup {id}.\n",
        sources.len()
    ))
}
