//! The operator commands: each turns its arguments into API calls and prints the answer, as a table
//! for people or as the API's JSON for scripts (`--output json`).
//!
//! Invariants:
//! * Commands only use the public RPC API, as any SDK would: no database or file access on the server's
//!   side (except `configure`, which reads the local credentials file, and `audit verify`, which checks
//!   the audit trail in the database without trusting the server; both on purpose).
//! * Everything a command prints goes to [`Io::out`], so tests can read it; only the live progress bar
//!   draws on the terminal directly.
//! * Failures are returned, never printed here: `main` prints them once with a hint and exits 1.

mod activation;
pub(crate) mod audit;
pub mod doctor;
mod images;
mod instances;
mod jobs;
mod ram;
mod snapshots;
mod sources;
pub(crate) mod tags;
pub(crate) mod workgroups;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

use crate::cli::{CallArgs, Cli, Command};
use crate::client::Client;
use crate::config::{self, Resolved};
use crate::output::{OutputFormat, pretty_json};
use crate::view;

/// Where a command prints and what it knows about its surroundings.
pub struct Io<'a> {
    /// Standard output (or a buffer in tests).
    pub out: &'a mut dyn Write,
    /// Whether `out` is a terminal: live progress bars instead of one line per second.
    pub interactive: bool,
    /// The home directory holding `.ferry/config.json`.
    pub home: Option<PathBuf>,
}

/// Runs one command line to completion.
///
/// Errors: anything that stops the command (configuration, API and transport errors, a watched job
/// that fails); the caller prints it and exits 1.
pub async fn run(cli: Cli, io: &mut Io<'_>) -> anyhow::Result<()> {
    let Cli {
        conn,
        output,
        command,
    } = cli;
    match command {
        Command::Server(args) => crate::server::run(&conn, args, io.out).await,
        Command::Configure(args) => {
            let path = config::configure(&conn, args.from_data_dir.as_deref(), io.home.as_deref())?;
            let name = conn.profile.unwrap_or_default();
            writeln!(
                io.out,
                "Saved profile {name:?} in {} (current profile).",
                path.display()
            )?;
            Ok(())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "ferry", io.out);
            io.out.flush().context("writing to standard output")
        }
        // Offline on purpose: it reads the server's database, not the API (see commands::audit).
        Command::Audit(audit::AuditCommand::Verify(args)) => {
            audit::verify(&conn, args, output, io.out).await
        }
        // Before connecting: finding out why connecting fails is its job.
        Command::Doctor(args) => doctor::run(&conn, args, output, io).await,
        command => {
            let resolved = config::resolve(&conn, io.home.as_deref())?;
            let key = crate::client::key_source(&conn, io.home.as_deref(), &resolved.access_key_id);
            let client = resolved.client()?.with_key_source(key);
            let mut s = Session {
                client,
                resolved,
                output,
                io,
            };
            match command {
                Command::ActivationCode(c) => activation::run(&mut s, c).await,
                Command::Source(c) => sources::run(&mut s, c).await,
                Command::Job(c) => jobs::run(&mut s, c).await,
                Command::Image(c) => images::run(&mut s, c).await,
                Command::Snapshot(c) => snapshots::run(&mut s, c).await,
                Command::Instance(c) => instances::run(&mut s, c).await,
                Command::Ram(c) => ram::run(&mut s, c).await,
                Command::Workgroup(c) => workgroups::run(&mut s, c).await,
                Command::Tag(c) => tags::run(&mut s, c).await,
                Command::Audit(c) => audit::run(&mut s, c).await,
                Command::Call(args) => call(&mut s, args).await,
                // These were handled above, before connecting.
                Command::Server(_)
                | Command::Configure(_)
                | Command::Completions { .. }
                | Command::Doctor(_) => Ok(()),
            }
        }
    }
}

/// A connected command's state.
pub(crate) struct Session<'a, 'io> {
    pub client: Client,
    pub resolved: Resolved,
    pub output: OutputFormat,
    pub io: &'a mut Io<'io>,
}

impl Session<'_, '_> {
    pub fn json_output(&self) -> bool {
        self.output == OutputFormat::Json
    }

    pub fn print(&mut self, text: &str) -> anyhow::Result<()> {
        self.io
            .out
            .write_all(text.as_bytes())
            .context("writing to standard output")?;
        self.io.out.flush().context("writing to standard output")
    }

    pub fn print_json(&mut self, v: &Value) -> anyhow::Result<()> {
        self.print(&pretty_json(v))
    }

    pub fn region(&self) -> (String, String) {
        ("RegionId".to_owned(), self.resolved.region_id.clone())
    }

    /// Every item of a paged list action: pages of `page_size` are fetched until `TotalCount` items
    /// are read (or a page comes back empty). Returns the first page's response with the list replaced
    /// by all items (so `--output json` shows one document) and the items.
    pub async fn fetch_all(
        &self,
        version: &str,
        action: &str,
        params: &[(String, String)],
        (outer, inner): (&str, &str),
        page_size: u64,
    ) -> anyhow::Result<(Value, Vec<Value>)> {
        let mut items = Vec::new();
        let mut first: Option<Value> = None;
        let mut page = 1u64;
        loop {
            let mut p = params.to_vec();
            p.push(("PageNumber".to_owned(), page.to_string()));
            p.push(("PageSize".to_owned(), page_size.to_string()));
            let resp = self.client.call(version, action, &p).await?;
            let got = view::list(&resp, outer, inner).to_vec();
            let total = view::number(&resp, "TotalCount").unwrap_or(0);
            let empty = got.is_empty();
            items.extend(got);
            if first.is_none() {
                first = Some(resp);
            }
            if empty || items.len() as u64 >= total {
                break;
            }
            page += 1;
        }
        let mut doc = first.unwrap_or(Value::Null);
        // Several pages became one document: say so in its paging fields.
        if let Some(o) = doc.as_object_mut().filter(|_| page > 1) {
            o.insert("PageNumber".into(), Value::from(1));
            o.insert("PageSize".into(), Value::from(items.len()));
        }
        if let Some(list) = doc.get_mut(outer).and_then(|o| o.get_mut(inner)) {
            *list = Value::Array(items.clone());
        }
        Ok((doc, items))
    }

    /// What every `… list` command does first: all items of a paged list action ([`Self::fetch_all`]),
    /// or `None` when the command's output is already printed: the whole list as one document with
    /// `--output json`, or `empty` (a hint saying how to make some) when there are no items.
    pub async fn list_items(
        &mut self,
        version: &str,
        action: &str,
        params: &[(String, String)],
        keys: (&str, &str),
        page_size: u64,
        empty: &str,
    ) -> anyhow::Result<Option<Vec<Value>>> {
        let (doc, items) = self
            .fetch_all(version, action, params, keys, page_size)
            .await?;
        if self.json_output() {
            self.print_json(&doc)?;
            return Ok(None);
        }
        if items.is_empty() {
            self.print(empty)?;
            return Ok(None);
        }
        Ok(Some(items))
    }
}

/// `ferry call ACTION [Key=Value]...`: the API verbatim.
async fn call(s: &mut Session<'_, '_>, args: CallArgs) -> anyhow::Result<()> {
    let mut params = Vec::with_capacity(args.params.len() + 1);
    for p in &args.params {
        let (k, v) = p.split_once('=').with_context(|| {
            format!("parameter {p:?} is not Key=Value: write e.g. JobId=j-123 or SourceId.1=s-1")
        })?;
        if k.is_empty() {
            anyhow::bail!("parameter {p:?} has an empty key: write e.g. JobId=j-123");
        }
        params.push((k.to_owned(), v.to_owned()));
    }
    // Like the v1 SDKs, which add the client's region to every call; actions that do not take it
    // ignore it.
    if !params.iter().any(|(k, _)| k == "RegionId") {
        params.push(s.region());
    }
    let resp = s
        .client
        .call(&args.api_version, &args.action, &params)
        .await?;
    s.print_json(&resp)
}
