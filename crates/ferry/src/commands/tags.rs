//! `ferry tag …`: tags on source servers and replication jobs (TagResources, UntagResources,
//! ListTagResources; `docs/workgroups-and-tags.md`). `list` follows `NextToken` to the last page.

use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::Session;
use super::workgroups::{parse_tag, parse_tag_filter, tag_params};
use crate::output::Table;
use crate::view::{list, text};

/// What kind of resource a tag command works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TagTarget {
    /// Source servers (`s-…`).
    Source,
    /// Replication jobs (`j-…`).
    Job,
}

impl TagTarget {
    fn api(self) -> &'static str {
        match self {
            TagTarget::Source => "sourceserver",
            TagTarget::Job => "replicationjob",
        }
    }
}

/// `ferry tag …`.
#[derive(Debug, Subcommand)]
pub enum TagCommand {
    /// Add tags to resources (an existing key gets the new value; at most 20 tags per resource).
    Add {
        /// Kind of the resources.
        #[arg(long = "type", value_enum)]
        target: TagTarget,
        /// A tag KEY=VALUE (repeatable, up to 20).
        #[arg(long = "tag", required = true, value_parser = parse_tag, value_name = "KEY=VALUE")]
        tags: Vec<(String, String)>,
        /// Resource IDs (up to 50).
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Remove tags from resources, by key or all of them.
    Remove {
        /// Kind of the resources.
        #[arg(long = "type", value_enum)]
        target: TagTarget,
        /// A tag key to remove (repeatable).
        #[arg(
            long = "key",
            value_name = "KEY",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        keys: Vec<String>,
        /// Remove every tag.
        #[arg(long)]
        all: bool,
        /// Resource IDs (up to 50).
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// List tags of resources of one kind.
    List {
        /// Kind of the resources.
        #[arg(long = "type", value_enum)]
        target: TagTarget,
        /// Only resources with this tag: KEY or KEY=VALUE (repeatable; all must match).
        #[arg(long = "tag", value_parser = parse_tag_filter, value_name = "KEY[=VALUE]")]
        tags: Vec<(String, Option<String>)>,
        /// Only these resources (up to 50; default: all).
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
}

fn base(target: TagTarget, ids: &[String]) -> Vec<(String, String)> {
    let mut p = vec![("ResourceType".to_owned(), target.api().to_owned())];
    p.extend(
        ids.iter()
            .enumerate()
            .map(|(i, id)| (format!("ResourceId.{}", i + 1), id.clone())),
    );
    p
}

pub(super) async fn run(s: &mut Session<'_, '_>, cmd: TagCommand) -> anyhow::Result<()> {
    match cmd {
        TagCommand::Add { target, tags, ids } => {
            let mut params = base(target, &ids);
            params.extend(tag_params(
                tags.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))),
            ));
            let resp = s.client.smc("TagResources", &params).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!(
                "Tagged {} resource(s) with {} tag(s).\n",
                ids.len(),
                tags.len()
            ))
        }
        TagCommand::Remove {
            target,
            keys,
            all,
            ids,
        } => {
            let mut params = base(target, &ids);
            if all {
                params.push(("All".to_owned(), "true".to_owned()));
            }
            params.extend(
                keys.iter()
                    .enumerate()
                    .map(|(i, k)| (format!("TagKey.{}", i + 1), k.clone())),
            );
            let resp = s.client.smc("UntagResources", &params).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!("Removed tags from {} resource(s).\n", ids.len()))
        }
        TagCommand::List { target, tags, ids } => {
            let mut params = base(target, &ids);
            params.extend(tag_params(
                tags.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
            ));
            let mut rows: Vec<Value> = Vec::new();
            let mut token = String::new();
            loop {
                let mut p = params.clone();
                if !token.is_empty() {
                    p.push(("NextToken".to_owned(), token.clone()));
                }
                let resp = s.client.smc("ListTagResources", &p).await?;
                rows.extend(list(&resp, "TagResources", "TagResource").iter().cloned());
                let next = text(&resp, "NextToken");
                // A server that hands the same token back would loop forever: stop instead.
                if next.is_empty() || next == token {
                    break;
                }
                token = next;
            }
            if s.json_output() {
                let doc = json!({
                    "NextToken": "",
                    "TagResources": { "TagResource": rows },
                });
                return s.print_json(&doc);
            }
            if rows.is_empty() {
                return s.print("No tags.\n");
            }
            let mut t = Table::new(&["RESOURCE", "KEY", "VALUE"]);
            for r in &rows {
                t.row(vec![
                    text(r, "ResourceId"),
                    text(r, "TagKey"),
                    text(r, "TagValue"),
                ]);
            }
            s.print(&t.render())
        }
    }
}
