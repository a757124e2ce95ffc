//! `ferry audit …`: the ActionTrail audit trail.
//!
//! * `ferry audit lookup` lists events through the public API (ActionTrail `LookupEvents`), following
//!   `NextToken` until `--limit` events are printed.
//! * `ferry audit verify` is the one command that reads the server's database directly, on purpose: a
//!   check of the audit trail must not trust the server that writes it (or need it running). It walks
//!   the hash chain, compares it with the head anchors (`docs/audit-trail.md`), prints `OK` with the
//!   record count and head hash, or every problem with its record number, and then fails (exit 1).

use std::io::Write;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::Session;
use crate::config::ConnectionArgs;
use crate::output::{OutputFormat, Table, pretty_json};
use crate::view::text;

/// ActionTrail's API version.
const ACTIONTRAIL_VERSION: &str = "2020-07-06";
/// Largest page `LookupEvents` returns.
const MAX_PAGE: u32 = 50;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit events (newest first), through the API.
    Lookup(LookupArgs),
    /// Check the audit trail offline: walk its hash chain in the server's database and compare it with
    /// the head anchors. Exits 1 and names each damaged record when the trail was tampered with.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    /// Only events of this action, e.g. StartReplicationJob.
    #[arg(long, value_name = "ACTION")]
    pub event_name: Option<String>,
    /// Only events of this user (`root` for the root account).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Start of the window: a UTC time (2024-06-01T00:00:00Z) or an age (-2h, -3d) [default: 7 days
    /// before the end].
    #[arg(long, value_parser = parse_lookup_time, value_name = "TIME", allow_hyphen_values = true)]
    pub start: Option<String>,
    /// End of the window, like --start [default: now]. The window is at most 30 days.
    #[arg(long, value_parser = parse_lookup_time, value_name = "TIME", allow_hyphen_values = true)]
    pub end: Option<String>,
    /// Most events to print.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The server's database URL (postgres://…); default: <data-dir>/ferry.db. The anchor file is read
    /// from --data-dir either way.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
}

/// A time for `--start`/`--end`: an age (`-90m`, `-2h`, `-7d`) or anything `--valid-until` accepts.
fn parse_lookup_time(s: &str) -> Result<String, String> {
    match s.trim().strip_prefix('-') {
        Some(age) => {
            let now = time::OffsetDateTime::now_utc();
            let ahead = crate::cli::parse_time_arg(&format!("+{age}"))?;
            let ahead =
                time::OffsetDateTime::parse(&ahead, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| e.to_string())?;
            // The same distance, backwards (both computed from "now" a moment apart: within a second).
            Ok(ferry_api::fmt_time(now - (ahead - now)))
        }
        None => crate::cli::parse_time_arg(s),
    }
}

pub(super) async fn run(s: &mut Session<'_, '_>, cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Lookup(args) => lookup(s, args).await,
        // Handled by `commands::run` before connecting: it needs no server.
        AuditCommand::Verify(_) => Ok(()),
    }
}

async fn lookup(s: &mut Session<'_, '_>, args: LookupArgs) -> anyhow::Result<()> {
    let mut base: Vec<(String, String)> = Vec::new();
    let attributes = [("EventName", &args.event_name), ("User", &args.user)];
    for (n, (key, value)) in attributes
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v)))
        .enumerate()
    {
        base.push((format!("LookupAttribute.{}.Key", n + 1), key.to_owned()));
        base.push((format!("LookupAttribute.{}.Value", n + 1), value.clone()));
    }
    if let Some(t) = &args.start {
        base.push(("StartTime".into(), t.clone()));
    }
    if let Some(t) = &args.end {
        base.push(("EndTime".into(), t.clone()));
    }
    let mut events: Vec<Value> = Vec::new();
    let mut first: Option<Value> = None;
    let mut token: Option<String> = None;
    loop {
        let want = (args.limit as usize - events.len()).min(MAX_PAGE as usize);
        let mut p = base.clone();
        p.push(("MaxResults".into(), want.to_string()));
        if let Some(t) = &token {
            p.push(("NextToken".into(), t.clone()));
        }
        let resp = s
            .client
            .call(ACTIONTRAIL_VERSION, "LookupEvents", &p)
            .await?;
        let page = resp
            .get("Events")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        events.extend(page);
        token = resp
            .get("NextToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if first.is_none() {
            first = Some(resp);
        }
        if token.is_none() || events.len() >= args.limit as usize {
            break;
        }
    }
    if s.json_output() {
        let mut doc = first.unwrap_or_else(|| json!({}));
        doc["Events"] = Value::Array(events);
        if let Some(o) = doc.as_object_mut() {
            match &token {
                Some(t) => o.insert("NextToken".into(), json!(t)),
                None => o.remove("NextToken"),
            };
        }
        return s.print_json(&doc);
    }
    if events.is_empty() {
        return s.print("No audit events in that window.\n");
    }
    let mut out = events_table(&events).render();
    if token.is_some() {
        out.push_str(&format!(
            "(more events: raise --limit above {}, or narrow --start/--end)\n",
            args.limit
        ));
    }
    s.print(&out)
}

fn events_table(events: &[Value]) -> Table {
    let mut t = Table::new(&[
        "TIME",
        "EVENT",
        "SERVICE",
        "USER",
        "SOURCE IP",
        "RESULT",
        "RESOURCE",
    ]);
    for e in events {
        let identity = e.get("userIdentity").cloned().unwrap_or(Value::Null);
        let user = match text(&identity, "userName") {
            u if u.is_empty() => text(&identity, "accessKeyId"),
            u => u,
        };
        let result = match text(e, "errorCode") {
            c if c.is_empty() => "OK".to_owned(),
            c => c,
        };
        t.row(vec![
            text(e, "eventTime").replace('T', " ").replace('Z', ""),
            text(e, "eventName"),
            text(e, "serviceName"),
            user,
            text(e, "sourceIpAddress"),
            result,
            text(e, "resourceName"),
        ]);
    }
    t
}

/// `ferry audit verify`, before any connection is made: it needs no credentials and no running server.
///
/// Errors: the database cannot be opened, or the trail is damaged (after printing each problem).
pub(super) async fn verify(
    conn: &ConnectionArgs,
    args: VerifyArgs,
    output: OutputFormat,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let report = ferry_server::audit::verify(&conn.data_dir(), args.database.as_deref())
        .await
        .context("cannot check the audit trail")?;
    let head = report.head.as_ref();
    if output == OutputFormat::Json {
        let problems: Vec<Value> = report
            .problems
            .iter()
            .map(|p| json!({"Seq": p.seq, "Kind": format!("{:?}", p.kind), "Detail": p.detail}))
            .collect();
        let doc = json!({
            "Ok": report.is_ok(),
            "Count": report.count,
            "HeadSeq": head.map(|h| h.seq),
            "HeadHash": head.map(|h| h.hash.clone()),
            "Problems": problems,
        });
        out.write_all(pretty_json(&doc).as_bytes())?;
    } else if report.is_ok() {
        match head {
            Some(h) => writeln!(
                out,
                "OK: {} audit events, chain intact; head record {} hash {}",
                report.count, h.seq, h.hash
            )?,
            None => writeln!(out, "OK: the audit trail is empty")?,
        }
    } else {
        for p in &report.problems {
            writeln!(out, "DAMAGED {p}")?;
        }
    }
    out.flush().context("writing to standard output")?;
    if !report.is_ok() {
        anyhow::bail!(
            "the audit trail is damaged: {} problem(s) in {} records (listed above); keep a copy of the \
             database for investigation and restore it from a backup",
            report.problems.len(),
            report.count
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_in_the_past_and_times_pass_through() {
        let now = time::OffsetDateTime::now_utc();
        let t = parse_lookup_time("-2h").expect("age");
        let t = time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
            .expect("UTC time");
        let age = (now - t).whole_seconds();
        assert!((7195..=7205).contains(&age), "{age}");
        assert_eq!(
            parse_lookup_time("2024-06-01T00:00:00Z").expect("time"),
            "2024-06-01T00:00:00Z"
        );
        assert!(parse_lookup_time("-2 weeks").is_err());
        assert!(parse_lookup_time("yesterday").is_err());
    }

    #[test]
    fn events_render_as_a_table() {
        let e = json!({"eventTime": "2024-05-01T10:00:00Z", "eventName": "StartReplicationJob",
                       "serviceName": "Smc", "userIdentity": {"userName": "root"},
                       "sourceIpAddress": "127.0.0.1", "resourceName": "j-1"});
        let f = json!({"eventTime": "2024-05-01T10:00:01Z", "eventName": "DescribeSourceServers",
                       "serviceName": "Smc", "userIdentity": {"accessKeyId": "LTAIx"},
                       "errorCode": "SignatureDoesNotMatch"});
        let text = events_table(&[e, f]).render();
        assert!(
            text.contains("2024-05-01 10:00:00  StartReplicationJob"),
            "{text}"
        );
        assert!(text.contains("LTAIx"), "{text}");
        assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    }
}
