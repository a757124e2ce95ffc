//! `ferry doctor`: checks what a migration needs and prints what to fix, one line per check.
//!
//! Two modes:
//! * **Server** (default): the connection this CLI uses. The configuration resolves; the endpoint
//!   answers; its certificate is signed by the CA this CLI trusts (and, with `--data-dir`, that CA is
//!   the data directory's); the clocks agree (the server's `Date` header: a warning beyond
//!   [`CLOCK_WARN_SECS`], a failure beyond [`CLOCK_FAIL_SECS`], the signature window); the access key
//!   authenticates (STS `GetCallerIdentity`, a signed call every key may make); the server is ready
//!   (`GET /ready`: database, migrations, object store; `/health` on servers without it); and, when
//!   `--data-dir` is given on the server's host, that the data directory has room and keeps its
//!   credentials private.
//! * **Source** (`--source`, run on the source server): the agent's own inventory and prechecks
//!   (`ferry_agent::inventory`, `ferry_agent::precheck`), run in-process rather than through a
//!   `ferry-agent inventory` subprocess, so the results are typed, the binary need not be installed
//!   yet, and the checks are exactly the ones the agent reports to the server. Added to them: root
//!   privileges and free space for the agent's state directory.
//!
//! Output: one line per check (`✔` pass, `!` warning, `✖` failure, `-` skipped because an earlier
//! check failed), or with `--output json` the report below. The command fails (exit 1) exactly when a
//! check failed; warnings do not fail it.
//!
//! JSON report, version 1: `{"Version":1,"Mode":"server"|"source","Result":"pass"|"warn"|"fail",
//! "Checks":[{"Name","Status":"pass"|"warn"|"fail"|"skip","Detail","Fix"}],"Inventory"?}`. `Fix` is
//! empty when there is nothing to do; `Inventory` (source mode) is the agent's inventory when it could
//! be collected. New fields may be added; a changed meaning gets a new `Version`.
//!
//! Invariants: the doctor only reads (no API call changes anything, nothing is written on either
//! side); secrets are never printed; every failing check says what to do.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use ferry_agent::daemon::AgentStateFile;
use ferry_agent::inventory::{self, DiskSpec, InventoryOptions};
use ferry_agent::precheck;
use ferry_types::inventory::{DiskSource, Inventory, Precheck};
use serde_json::{Value, json};

use super::Io;
use crate::client::{ClientError, TransportKind, key_source};
use crate::config::{self, ConnectionArgs, Resolved};
use crate::output::{OutputFormat, human_bytes, human_duration, pretty_json};

/// Version of the JSON report.
pub const REPORT_VERSION: u32 = 1;
/// Clock skew beyond which the server check warns: signed requests still pass, but timestamps in logs
/// and audit records stop lining up.
pub const CLOCK_WARN_SECS: u64 = 60;
/// Clock skew beyond which the server refuses signed requests (`InvalidTimeStamp.Expired`).
pub const CLOCK_FAIL_SECS: u64 = 15 * 60;
/// Free space below which a server data directory fails (images and chunks need GiBs) ...
pub const DATA_DIR_FAIL_BYTES: u64 = 1 << 30;
/// ... and below which it warns.
pub const DATA_DIR_WARN_BYTES: u64 = 10 << 30;
/// Free space below which the agent's state directory fails (it holds small state files and logs) ...
pub const STATE_DIR_FAIL_BYTES: u64 = 64 << 20;
/// ... and below which it warns.
pub const STATE_DIR_WARN_BYTES: u64 = 512 << 20;
/// Where `ferry-agent` keeps its state unless told otherwise.
pub const DEFAULT_AGENT_STATE_DIR: &str = "/var/lib/ferry-agent";

/// Probes must not hang the doctor: a server that does not answer in this time is a finding.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// `ferry doctor [--source [--disk DEV | --disk-image FILE]...]`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Check this machine as a source server (run it there, as root): the agent's prechecks, root
    /// privileges, the agent's free space and the connection to the server (--endpoint, else the
    /// agent's state, else the CLI's profile).
    #[arg(long)]
    pub source: bool,
    /// A block device to check (repeatable), e.g. /dev/sda; the first disk is the system disk. Without
    /// --disk or --disk-image: the activated agent's disks, else the machine's.
    #[arg(long = "disk", value_name = "DEVICE", requires = "source")]
    pub disks: Vec<PathBuf>,
    /// A raw disk image file standing in for a disk (repeatable; offline sources and tests).
    #[arg(long = "disk-image", value_name = "FILE", requires = "source")]
    pub disk_images: Vec<PathBuf>,
    /// The agent's state directory (its free space is checked; an activated agent's server and CA are
    /// read from it).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_AGENT_STATE_DIR, requires = "source")]
    pub state_dir: PathBuf,
    /// The server CA's fingerprint (sha256:...), as printed with the activation code: the CA is fetched
    /// from --endpoint and pinned, as `ferry-agent activate` does.
    #[arg(long, value_name = "SHA256", requires = "source")]
    pub ca_fingerprint: Option<String>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Pass,
    Skip,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Skip => "skip",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Status::Pass => "✔",
            Status::Skip => "-",
            Status::Warn => "!",
            Status::Fail => "✖",
        }
    }
}

/// One check: what was found and, unless it passed, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub fix: String,
}

impl Check {
    pub fn pass(name: &str, detail: impl Into<String>) -> Check {
        Check::new(name, Status::Pass, detail, "")
    }

    pub fn new(
        name: &str,
        status: Status,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.to_owned(),
            status,
            detail: detail.into(),
            fix: fix.into(),
        }
    }

    fn skip(name: &str, why: &str) -> Check {
        Check::new(name, Status::Skip, format!("not checked: {why}"), "")
    }

    /// An agent precheck as a doctor check: its reason already says what to do on failure.
    pub fn from_precheck(p: &Precheck) -> Check {
        let status = if p.passed { Status::Pass } else { Status::Fail };
        Check::new(&p.name, status, p.reason.clone(), "")
    }
}

/// Which side was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Server,
    Source,
}

/// All checks of one run.
#[derive(Debug, Clone)]
pub struct Report {
    pub mode: Mode,
    pub checks: Vec<Check>,
    /// The source's inventory (source mode), when it could be collected.
    pub inventory: Option<Inventory>,
}

impl Report {
    /// The worst status: `Fail` if any check failed, else `Warn` if any warned, else `Pass`.
    pub fn result(&self) -> Status {
        match self.checks.iter().map(|c| c.status).max() {
            Some(Status::Fail) => Status::Fail,
            Some(Status::Warn) => Status::Warn,
            _ => Status::Pass,
        }
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// The JSON report (see the module documentation).
    pub fn to_json(&self) -> Value {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                json!({
                    "Name": c.name,
                    "Status": c.status.as_str(),
                    "Detail": c.detail,
                    "Fix": c.fix,
                })
            })
            .collect();
        let mut v = json!({
            "Version": REPORT_VERSION,
            "Mode": match self.mode { Mode::Server => "server", Mode::Source => "source" },
            "Result": self.result().as_str(),
            "Checks": checks,
        });
        if let (Some(inv), Some(o)) = (&self.inventory, v.as_object_mut()) {
            o.insert(
                "Inventory".into(),
                serde_json::to_value(inv).unwrap_or(Value::Null),
            );
        }
        v
    }

    /// One line per check, names aligned, then a summary line.
    pub fn render(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let pad = width - c.name.chars().count();
            let fix = if c.fix.is_empty() {
                String::new()
            } else {
                format!(" -> fix: {}", c.fix)
            };
            out.push_str(&format!(
                "{} {}{:pad$}  {}{fix}\n",
                c.status.symbol(),
                c.name,
                "",
                c.detail,
                pad = pad
            ));
        }
        let skipped = match self.count(Status::Skip) {
            0 => String::new(),
            n => format!(", {n} skipped"),
        };
        out.push_str(&format!(
            "{} checks: {} passed, {} warnings, {} failed{skipped}.\n",
            self.checks.len(),
            self.count(Status::Pass),
            self.count(Status::Warn),
            self.count(Status::Fail),
        ));
        out
    }
}

/// `ferry doctor` found at least one failing check (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} checks failed: fix what the ✖ lines say")]
pub struct DoctorFailed {
    pub failed: usize,
    pub total: usize,
    pub mode: Mode,
}

impl DoctorFailed {
    /// The hint `main` prints under the error.
    pub fn hint(&self) -> String {
        match self.mode {
            Mode::Server => "then run `ferry doctor` again; `--output json` gives the same report for scripts",
            Mode::Source => {
                "then run `ferry doctor --source` again on this server; `--output json` gives the same report"
            }
        }
        .to_owned()
    }
}

/// Runs the doctor and prints its report.
///
/// Errors: [`DoctorFailed`] when a check failed (after the report is printed), or a write error.
pub async fn run(
    conn: &ConnectionArgs,
    args: DoctorArgs,
    output: OutputFormat,
    io: &mut Io<'_>,
) -> anyhow::Result<()> {
    let report = if args.source {
        source_report(conn, &args, io.home.as_deref()).await
    } else {
        server_report(conn, io.home.as_deref()).await
    };
    let text = match output {
        OutputFormat::Json => pretty_json(&report.to_json()),
        OutputFormat::Table => report.render(),
    };
    io.out
        .write_all(text.as_bytes())
        .and_then(|()| io.out.flush())
        .context("writing to standard output")?;
    let failed = report.count(Status::Fail);
    if failed > 0 {
        return Err(DoctorFailed {
            failed,
            total: report.checks.len(),
            mode: report.mode,
        }
        .into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Server mode.

/// The clock check from the skew `server - local` in seconds (positive: the server is ahead).
pub fn clock_check(skew_secs: i64) -> Check {
    let abs = skew_secs.unsigned_abs();
    let direction = if skew_secs > 0 { "behind" } else { "ahead of" };
    let described = if abs == 0 {
        "this machine's clock agrees with the server's (within a second)".to_owned()
    } else {
        format!(
            "this machine's clock is {} {direction} the server's",
            human_duration(abs)
        )
    };
    let ntp = "enable time synchronisation (NTP: chrony or systemd-timesyncd) on this machine and the server";
    if abs > CLOCK_FAIL_SECS {
        Check::new(
            "clock",
            Status::Fail,
            format!(
                "{described}: more than the {} the server accepts, so every signed call fails with \
                 InvalidTimeStamp",
                human_duration(CLOCK_FAIL_SECS)
            ),
            ntp,
        )
    } else if abs > CLOCK_WARN_SECS {
        Check::new(
            "clock",
            Status::Warn,
            format!(
                "{described}: calls still pass (the limit is {}), but logs and audit times will not line up",
                human_duration(CLOCK_FAIL_SECS)
            ),
            ntp,
        )
    } else {
        Check::pass("clock", described)
    }
}

/// The skew `server - local` in seconds, from a response's `Date` header and the time the request was
/// sent and answered (the server stamped it somewhere in between: the midpoint is the best guess).
fn skew_from_date(
    date: Option<&reqwest::header::HeaderValue>,
    sent: SystemTime,
    took: Duration,
) -> Option<i64> {
    let server = httpdate::parse_http_date(date?.to_str().ok()?).ok()?;
    let local = sent + took / 2;
    Some(match server.duration_since(local) {
        Ok(ahead) => i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX),
        Err(behind) => -i64::try_from(behind.duration().as_secs()).unwrap_or(i64::MAX),
    })
}

/// An HTTPS client for unauthenticated probes that trusts only `ca_pem` (like the CLI's API client).
fn probe_client(ca_pem: Option<&str>) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .connect_timeout(PROBE_CONNECT_TIMEOUT)
        .timeout(PROBE_TIMEOUT)
        .user_agent(concat!("ferry-doctor/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem {
        let cert = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| format!("the CA certificate is not usable PEM ({e})"))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up HTTPS ({e})"))
}

/// What a GET of a probe path returned.
struct Probe {
    status: u16,
    body: String,
    skew: Option<i64>,
    took: Duration,
}

async fn probe(http: &reqwest::Client, url: &str) -> Result<Probe, reqwest::Error> {
    let sent = SystemTime::now();
    let started = Instant::now();
    let resp = http.get(url).send().await?;
    let took = started.elapsed();
    let status = resp.status().as_u16();
    let skew = skew_from_date(resp.headers().get(reqwest::header::DATE), sent, took);
    let body = resp.text().await?;
    Ok(Probe {
        status,
        body,
        skew,
        took,
    })
}

/// The profile `conn` selects, if the profile file has it.
fn selected_profile(conn: &ConnectionArgs, home: Option<&Path>) -> Option<config::Profile> {
    let file = config::load_profiles(home?).ok().flatten()?;
    let name = conn.profile.clone().unwrap_or_else(|| file.current.clone());
    file.get(&name).cloned()
}

fn configure_fix(conn: &ConnectionArgs) -> String {
    let profile = conn.profile.as_deref().unwrap_or("NAME");
    format!(
        "save the server's current CA: `ferry configure --profile {profile} --from-data-dir <data-dir>` on the \
         server host, or --ca-cert with its <data-dir>/tls/ca.pem"
    )
}

/// Checks of the trusted CA beyond the handshake: the profile's recorded fingerprint and, with
/// `--data-dir`, the data directory's own CA.
fn ca_consistency(conn: &ConnectionArgs, home: Option<&Path>, r: &Resolved) -> Option<Check> {
    let trusted = r.ca_fingerprint.as_deref()?;
    if let Some(dir) = &conn.data_dir {
        let path = dir.join("tls").join("ca.pem");
        if let Ok(pem) = std::fs::read_to_string(&path)
            && let Some(fp) = ferry_server::tls::fingerprint_of_pem(&pem)
            && fp != trusted
        {
            return Some(Check::new(
                "tls",
                Status::Fail,
                format!(
                    "this CLI trusts the CA {trusted}, but the server of {} uses {fp} ({})",
                    dir.display(),
                    path.display()
                ),
                configure_fix(conn),
            ));
        }
    }
    // Only when the trusted CA is the profile's own file: otherwise its record is about another one.
    let profile = selected_profile(conn, home)?;
    let recorded = profile.ca_fingerprint?;
    let from_profile =
        conn.ca_cert.is_none() && profile.ca_cert.is_some() && profile.ca_cert == r.ca_cert;
    (from_profile && recorded != trusted).then(|| {
        Check::new(
            "tls",
            Status::Warn,
            format!(
                "the CA file {} is now {trusted}, but `ferry configure` recorded {recorded}: it was replaced \
                 since",
                r.ca_cert
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            configure_fix(conn),
        )
    })
}

fn transport_fix(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Refused => {
            "start the server (`ferry server`), or fix --endpoint / the profile's endpoint (`ferry configure`)"
        }
        TransportKind::Timeout => {
            "check that the server runs and that firewalls and proxies between here and there let HTTPS through"
        }
        TransportKind::NameResolution => "fix the host name in --endpoint or the profile, or DNS",
        TransportKind::Certificate | TransportKind::Other => {
            "check --endpoint and that a Ferry server (not another service) listens there"
        }
    }
}

/// The `/ready` body's checks (`{"checks":{"database":{"ok":true},...}}`, `docs/operations.md`) as
/// doctor checks.
pub fn ready_checks(body: &Value) -> Vec<Check> {
    let Some(checks) = body.get("checks").and_then(Value::as_object) else {
        return Vec::new();
    };
    checks
        .iter()
        .map(|(name, c)| {
            let ok = c.get("ok").and_then(Value::as_bool).unwrap_or(false);
            if ok {
                Check::pass(name, "ok (GET /ready)")
            } else {
                let why = crate::view::text(c, "error");
                Check::new(
                    name,
                    Status::Fail,
                    if why.is_empty() {
                        "not ready".to_owned()
                    } else {
                        why
                    },
                    "see the server's log; `docs/operations.md` explains each readiness check",
                )
            }
        })
        .collect()
}

async fn readiness(http: &reqwest::Client, endpoint: &str) -> Vec<Check> {
    let ready = match probe(http, &format!("{endpoint}/ready")).await {
        Ok(p) => p,
        Err(e) => {
            return vec![Check::new(
                "ready",
                Status::Fail,
                format!("GET /ready got no answer ({})", e.without_url()),
                "check the server's log",
            )];
        }
    };
    let ms = ready.took.as_millis();
    match ready.status {
        200 | 503 => {
            let body: Value = serde_json::from_str(&ready.body).unwrap_or(Value::Null);
            let mut out = Vec::new();
            if ready.status == 200 {
                out.push(Check::pass(
                    "ready",
                    format!("GET /ready: the server is ready ({ms} ms)"),
                ));
            } else {
                let failed: Vec<String> = body
                    .get("failed")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Check::new(
                    "ready",
                    Status::Fail,
                    format!(
                        "GET /ready: HTTP 503, not ready{}",
                        if failed.is_empty() {
                            String::new()
                        } else {
                            format!(" ({} failed)", failed.join(", "))
                        }
                    ),
                    "fix the failing checks below; the server's log has details",
                ));
            }
            out.extend(ready_checks(&body));
            out
        }
        404 => {
            // Servers older than the readiness endpoint only have /health.
            match probe(http, &format!("{endpoint}/health")).await {
                Ok(h) if h.status == 200 => vec![Check::new(
                    "ready",
                    Status::Warn,
                    "this server has no /ready (an older version); /health answers, but the database and \
                     object store could not be checked",
                    "upgrade the server to get readiness checks",
                )],
                Ok(h) => vec![Check::new(
                    "ready",
                    Status::Fail,
                    format!("GET /health answered HTTP {}", h.status),
                    "check the server's log",
                )],
                Err(e) => vec![Check::new(
                    "ready",
                    Status::Fail,
                    format!("GET /health got no answer ({})", e.without_url()),
                    "check the server's log",
                )],
            }
        }
        other => vec![Check::new(
            "ready",
            Status::Fail,
            format!("GET /ready answered HTTP {other}"),
            "check that --endpoint points at a Ferry server, and the server's log",
        )],
    }
}

/// The `credentials` check: a signed `GetCallerIdentity`.
async fn credentials(r: &Resolved, key: &str) -> Check {
    let client = match r.client() {
        Ok(c) => c.with_key_source(key.to_owned()),
        Err(e) => return Check::new("credentials", Status::Fail, e.to_string(), e.hint()),
    };
    match client.sts("GetCallerIdentity", &[]).await {
        Ok(v) => Check::pass(
            "credentials",
            format!(
                "{key} is valid: {} ({})",
                crate::view::text(&v, "Arn"),
                crate::view::text(&v, "IdentityType")
            ),
        ),
        Err(ClientError::Api { code, .. })
            if code.starts_with("Forbidden") || code == "NoPermission" =>
        {
            // Authorization comes after authentication: a denial proves the key and secret are right.
            Check::pass(
                "credentials",
                format!(
                    "{key} authenticates (its policies do not allow sts:GetCallerIdentity: {code})"
                ),
            )
        }
        Err(e) => {
            // The code is the finding; the server's message (for a signature, its whole string to
            // sign) is for `ferry call`, not for a one-line report.
            let detail = match &e {
                ClientError::Api {
                    code, request_id, ..
                } => format!("the server refused {key}: {code} (request {request_id})"),
                other => other.to_string(),
            };
            Check::new("credentials", Status::Fail, detail, e.hint())
        }
    }
}

/// Free space and credentials file of a server data directory on this machine.
fn data_dir_checks(dir: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    let creds = dir.join(ferry_server::ROOT_CREDENTIALS_FILE);
    if !dir.is_dir() {
        out.push(Check::new(
            "data_dir",
            Status::Fail,
            format!("{} does not exist", dir.display()),
            "pass the directory `ferry server --data-dir` uses (default ./ferry-data), on the server's host",
        ));
        return out;
    }
    out.push(free_space_check(
        "data_dir_space",
        dir,
        DATA_DIR_FAIL_BYTES,
        DATA_DIR_WARN_BYTES,
        "free space on that filesystem (old exports and images: `ferry image list`, `ferry image delete`), \
         or move the data directory to a larger one",
    ));
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(&creds) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => out.push(Check::new(
            "credentials_file",
            Status::Fail,
            format!(
                "{} (the root account's secret) has mode {:o}: other users can read it",
                creds.display(),
                m.permissions().mode() & 0o777
            ),
            format!("chmod 600 {}", creds.display()),
        )),
        Ok(_) => out.push(Check::pass(
            "credentials_file",
            format!("{} is private (mode 600)", creds.display()),
        )),
        Err(e) => out.push(Check::new(
            "credentials_file",
            Status::Warn,
            format!("cannot read {}: {e}", creds.display()),
            "is this a Ferry data directory? `ferry server --data-dir DIR` writes the file at each start",
        )),
    }
    out
}

/// The server-side checks (see the module documentation).
pub async fn server_report(conn: &ConnectionArgs, home: Option<&Path>) -> Report {
    let mut checks = Vec::new();
    let network = ["endpoint", "tls", "clock", "credentials", "ready"];
    let local = conn.data_dir.as_deref().map(data_dir_checks);
    let r = match config::resolve(conn, home) {
        Ok(r) => r,
        Err(e) => {
            checks.push(Check::new(
                "config",
                Status::Fail,
                e.to_string(),
                "`ferry configure --profile NAME --from-data-dir <data-dir>` saves a working profile",
            ));
            checks.extend(
                network
                    .iter()
                    .map(|n| Check::skip(n, "the configuration is incomplete")),
            );
            checks.extend(local.into_iter().flatten());
            return Report {
                mode: Mode::Server,
                checks,
                inventory: None,
            };
        }
    };
    let key = key_source(conn, home, &r.access_key_id);
    checks.push(Check::pass(
        "config",
        format!("endpoint {}, {key}", r.endpoint),
    ));
    let http = match probe_client(r.ca_pem.as_deref()) {
        Ok(h) => h,
        Err(why) => {
            checks.push(Check::new(
                "tls",
                Status::Fail,
                why,
                "pass the server's <data-dir>/tls/ca.pem with --ca-cert",
            ));
            checks.extend(local.into_iter().flatten());
            return Report {
                mode: Mode::Server,
                checks,
                inventory: None,
            };
        }
    };
    let endpoint = r.endpoint.trim_end_matches('/').to_owned();
    let reached = probe(&http, &format!("{endpoint}/health")).await;
    let mut reachable = false;
    match reached {
        Ok(p) => {
            reachable = true;
            checks.push(Check::pass(
                "endpoint",
                format!(
                    "{endpoint} answered (HTTP {} in {} ms)",
                    p.status,
                    p.took.as_millis()
                ),
            ));
            if endpoint.starts_with("http://") {
                checks.push(Check::new(
                    "tls",
                    Status::Warn,
                    "plain HTTP: requests are signed but not encrypted, and the server is not authenticated",
                    "use the server's https:// endpoint with its CA (--ca-cert)",
                ));
            } else {
                checks.push(ca_consistency(conn, home, &r).unwrap_or_else(|| {
                    Check::pass(
                        "tls",
                        format!(
                            "the server's certificate is signed by the trusted CA {} ({})",
                            r.ca_fingerprint.as_deref().unwrap_or("?"),
                            r.ca_cert
                                .as_deref()
                                .map(|p| p.display().to_string())
                                .unwrap_or_default()
                        ),
                    )
                }));
            }
            checks.push(match p.skew {
                Some(skew) => clock_check(skew),
                None => Check::new(
                    "clock",
                    Status::Warn,
                    "the server's answer had no usable Date header, so the clocks could not be compared",
                    "check that --endpoint points at a Ferry server (not a proxy that strips headers)",
                ),
            });
        }
        Err(e) => {
            let kind = TransportKind::of(&e);
            let e = e.without_url();
            if kind == TransportKind::Certificate {
                checks.push(Check::pass(
                    "endpoint",
                    format!("{endpoint} accepts connections"),
                ));
                checks.push(Check::new(
                    "tls",
                    Status::Fail,
                    format!(
                        "the server's certificate is not signed by the CA this CLI trusts ({}, {}): {e}",
                        r.ca_cert
                            .as_deref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        r.ca_fingerprint.as_deref().unwrap_or("?")
                    ),
                    configure_fix(conn),
                ));
                checks.push(Check::skip("clock", "no verified connection"));
            } else {
                checks.push(Check::new(
                    "endpoint",
                    Status::Fail,
                    format!("no answer from {endpoint}: {e}"),
                    transport_fix(kind),
                ));
                checks.push(Check::skip("tls", "the endpoint does not answer"));
                checks.push(Check::skip("clock", "the endpoint does not answer"));
            }
        }
    }
    if reachable {
        checks.push(credentials(&r, &key).await);
        checks.extend(readiness(&http, &endpoint).await);
    } else {
        checks.push(Check::skip("credentials", "no verified connection"));
        checks.push(Check::skip("ready", "no verified connection"));
    }
    checks.extend(local.into_iter().flatten());
    Report {
        mode: Mode::Server,
        checks,
        inventory: None,
    }
}

// ---------------------------------------------------------------------------------------------------
// Source mode.

/// A free-space check of the filesystem holding `path` (or its nearest existing ancestor).
fn free_space_check(name: &str, path: &Path, fail_below: u64, warn_below: u64, fix: &str) -> Check {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let note = if existing == path {
        String::new()
    } else {
        format!(" (it does not exist yet; checked {})", existing.display())
    };
    let st = match nix::sys::statvfs::statvfs(existing) {
        Ok(st) => st,
        Err(e) => {
            return Check::new(
                name,
                Status::Fail,
                format!("cannot read the free space of {}: {e}", existing.display()),
                "check that the path is on a mounted filesystem",
            );
        }
    };
    if st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
        return Check::new(
            name,
            Status::Fail,
            format!("{}{note} is on a read-only filesystem", path.display()),
            "remount it read-write or choose another directory",
        );
    }
    let free = st.blocks_available().saturating_mul(st.fragment_size());
    let detail = format!("{} free for {}{note}", human_bytes(free), path.display());
    if free < fail_below {
        Check::new(
            name,
            Status::Fail,
            format!("only {detail}, less than {}", human_bytes(fail_below)),
            fix,
        )
    } else if free < warn_below {
        Check::new(
            name,
            Status::Warn,
            format!("only {detail}, less than {}", human_bytes(warn_below)),
            fix,
        )
    } else {
        Check::pass(name, detail)
    }
}

fn root_check(euid_is_root: bool, only_images: bool) -> Check {
    if euid_is_root {
        Check::pass("root", "running as root, as ferry-agent does")
    } else if only_images {
        Check::new(
            "root",
            Status::Warn,
            "not running as root: enough for disk image files, but ferry-agent must run as root on a live server",
            "run the agent (and this check for block devices) as root: `sudo ferry doctor --source`",
        )
    } else {
        Check::new(
            "root",
            Status::Fail,
            "not running as root: block devices and some inventory sources cannot be read",
            "run it as root: `sudo ferry doctor --source ...`, as ferry-agent runs",
        )
    }
}

/// Where the source's server is and which CA to trust. The server: `--endpoint`, else the activated
/// agent's, else the CLI's own configuration. The CA: `--ca-cert`, else `--ca-fingerprint` (fetched and
/// pinned like `ferry-agent activate` does), else the one the agent or the configuration has for that
/// same server. `Err` says why there is none.
async fn source_server(
    conn: &ConnectionArgs,
    args: &DoctorArgs,
    home: Option<&Path>,
    agent: Option<&AgentStateFile>,
) -> Result<(String, Option<String>), String> {
    let resolved = config::resolve(conn, home).ok();
    let trim = |e: &str| e.trim().trim_end_matches('/').to_owned();
    let endpoint = conn
        .endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
        .map(trim)
        .or_else(|| agent.map(|a| trim(&a.server)))
        .or_else(|| resolved.as_ref().map(|r| trim(&r.endpoint)))
        .ok_or_else(|| {
            "no server to check against: pass --endpoint URL --ca-fingerprint sha256:... (both are in the \
             activation command), or run this on an activated source (--state-dir)"
                .to_owned()
        })?;
    if let Some(path) = &conn.ca_cert {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --ca-cert {}: {e}", path.display()))?;
        return Ok((endpoint, Some(pem)));
    }
    if let Some(fp) = &args.ca_fingerprint {
        let pem = ferry_agent::conn::Conn::fetch_pinned_ca(&endpoint, fp)
            .await
            .map_err(|e| e.to_string())?;
        return Ok((endpoint, Some(pem)));
    }
    let known = agent
        .filter(|a| trim(&a.server) == endpoint)
        .map(|a| a.ca_pem.clone())
        .or_else(|| {
            resolved
                .filter(|r| trim(&r.endpoint) == endpoint)
                .and_then(|r| r.ca_pem)
        });
    match known {
        None if endpoint.starts_with("https://") => Err(format!(
            "no CA to check {endpoint} with: pass --ca-fingerprint sha256:... (from the activation command) \
             or --ca-cert FILE"
        )),
        ca => Ok((endpoint, ca)),
    }
}

/// The agent's `PrecheckContext` for this source: the server's `Date` and whether it answered.
async fn server_context(
    server: Result<(String, Option<String>), String>,
) -> precheck::PrecheckContext {
    let unreachable = |why: String| precheck::PrecheckContext {
        server_time: None,
        server_reachable: Err(why),
    };
    let (endpoint, ca) = match server {
        Ok(s) => s,
        Err(why) => return unreachable(why),
    };
    let http = match probe_client(ca.as_deref()) {
        Ok(h) => h,
        Err(why) => return unreachable(why),
    };
    let sent = SystemTime::now();
    let started = Instant::now();
    match http.get(format!("{endpoint}/health")).send().await {
        Ok(resp) if resp.status().is_success() => {
            let took = started.elapsed();
            let server_time = resp
                .headers()
                .get(reqwest::header::DATE)
                .and_then(|d| d.to_str().ok())
                .and_then(|d| httpdate::parse_http_date(d).ok())
                // Stamped somewhere during the request: move it to the moment the local clock is read.
                .map(|t| {
                    t + (SystemTime::now().duration_since(sent).unwrap_or_default()) - took / 2
                });
            precheck::PrecheckContext {
                server_time,
                server_reachable: Ok(()),
            }
        }
        Ok(resp) => unreachable(format!("{endpoint}/health answered HTTP {}", resp.status())),
        Err(e) => {
            let kind = TransportKind::of(&e);
            let why = if kind == TransportKind::Certificate {
                format!(
                    "{endpoint} presented a certificate the pinned CA did not sign ({})",
                    e.without_url()
                )
            } else {
                format!("{endpoint}: {}", e.without_url())
            };
            unreachable(why)
        }
    }
}

fn disk_specs(args: &DoctorArgs, agent: Option<&AgentStateFile>) -> Vec<DiskSpec> {
    let devices = args.disks.iter().map(|p| DiskSpec {
        path: p.clone(),
        kind: DiskSource::BlockDevice,
    });
    let images = args.disk_images.iter().map(|p| DiskSpec {
        path: p.clone(),
        kind: DiskSource::ImageFile,
    });
    let given: Vec<DiskSpec> = devices.chain(images).collect();
    if !given.is_empty() {
        return given;
    }
    agent
        .map(|a| {
            a.disks
                .iter()
                .map(|d| DiskSpec {
                    path: d.path.clone(),
                    kind: if d.image_file {
                        DiskSource::ImageFile
                    } else {
                        DiskSource::BlockDevice
                    },
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The source-side checks (see the module documentation).
pub async fn source_report(
    conn: &ConnectionArgs,
    args: &DoctorArgs,
    home: Option<&Path>,
) -> Report {
    let mut checks = Vec::new();
    // Not activated (or unreadable) is normal before activation: the doctor then needs --endpoint.
    let agent = AgentStateFile::load(&args.state_dir).ok();
    let specs = disk_specs(args, agent.as_ref());
    let only_images = !specs.is_empty() && specs.iter().all(|s| s.kind == DiskSource::ImageFile);
    checks.push(root_check(nix::unistd::geteuid().is_root(), only_images));

    let server = source_server(conn, args, home, agent.as_ref()).await;
    let ctx = server_context(server).await;
    checks.push(Check::from_precheck(&precheck::connectivity(
        &ctx.server_reachable,
    )));
    checks.push(Check::from_precheck(&precheck::clock_skew(
        SystemTime::now(),
        ctx.server_time,
    )));

    // The inventory runs tools (sfdisk, blkid, ip): keep it off the async threads.
    let opts = InventoryOptions {
        disks: specs,
        ..InventoryOptions::default()
    };
    let collected = tokio::task::spawn_blocking(move || inventory::collect(&opts)).await;
    let inventory = match collected {
        Ok(Ok(inv)) => {
            let total: u64 = inv.disks.iter().map(|d| d.size_bytes).sum();
            checks.push(Check::pass(
                "inventory",
                format!(
                    "{} ({}, {} {}), {} disk(s), {}",
                    inv.hostname,
                    if inv.os.pretty_name.is_empty() {
                        inv.os.id.clone()
                    } else {
                        inv.os.pretty_name.clone()
                    },
                    inv.kernel,
                    inv.architecture,
                    inv.disks.len(),
                    human_bytes(total)
                ),
            ));
            checks.push(Check::from_precheck(&precheck::disks_readable(&inv.disks)));
            checks.push(Check::from_precheck(&precheck::supported_layout(
                &inv.disks,
            )));
            checks.push(Check::from_precheck(&precheck::boot_mode_supported(
                &inv.architecture,
                inv.boot_mode,
            )));
            Some(inv)
        }
        Ok(Err(e)) => {
            checks.push(Check::new(
                precheck::DISKS_READABLE,
                Status::Fail,
                format!("the inventory could not be collected: {e}"),
                "",
            ));
            for name in [precheck::SUPPORTED_LAYOUT, precheck::BOOT_MODE_SUPPORTED] {
                checks.push(Check::skip(name, "no inventory"));
            }
            None
        }
        Err(e) => {
            checks.push(Check::new(
                "inventory",
                Status::Fail,
                format!("collecting the inventory crashed: {e}"),
                "report this as a bug, with `ferry-agent inventory`'s output",
            ));
            None
        }
    };
    checks.push(free_space_check(
        "state_dir_space",
        &args.state_dir,
        STATE_DIR_FAIL_BYTES,
        STATE_DIR_WARN_BYTES,
        "free space on that filesystem, or give the agent another --state-dir",
    ));
    Report {
        mode: Mode::Source,
        checks,
        inventory,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_thresholds_are_a_minute_and_the_signature_window() {
        assert_eq!(clock_check(0).status, Status::Pass);
        assert_eq!(clock_check(60).status, Status::Pass);
        assert_eq!(clock_check(-60).status, Status::Pass);
        let warn = clock_check(61);
        assert_eq!(warn.status, Status::Warn);
        assert!(warn.detail.contains("1m 01s behind"), "{}", warn.detail);
        assert!(warn.fix.contains("NTP"), "{}", warn.fix);
        assert_eq!(clock_check(-900).status, Status::Warn);
        let fail = clock_check(-901);
        assert_eq!(fail.status, Status::Fail);
        assert!(fail.detail.contains("15m 01s ahead of"), "{}", fail.detail);
        assert!(fail.detail.contains("InvalidTimeStamp"), "{}", fail.detail);
    }

    #[test]
    fn skew_is_read_from_the_date_header_at_the_midpoint() {
        let sent = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let date =
            |t: SystemTime| reqwest::header::HeaderValue::from_str(&httpdate::fmt_http_date(t));
        let ahead = date(sent + Duration::from_secs(3601)).expect("header");
        assert_eq!(
            skew_from_date(Some(&ahead), sent, Duration::from_secs(2)),
            Some(3600)
        );
        let behind = date(sent - Duration::from_secs(120)).expect("header");
        assert_eq!(
            skew_from_date(Some(&behind), sent, Duration::ZERO),
            Some(-120)
        );
        let junk = reqwest::header::HeaderValue::from_static("yesterday");
        assert_eq!(skew_from_date(Some(&junk), sent, Duration::ZERO), None);
        assert_eq!(skew_from_date(None, sent, Duration::ZERO), None);
    }

    fn report(statuses: &[Status]) -> Report {
        Report {
            mode: Mode::Server,
            checks: statuses
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    Check::new(
                        &format!("check{i}"),
                        *s,
                        format!("detail {i}"),
                        if *s == Status::Pass { "" } else { "do this" },
                    )
                })
                .collect(),
            inventory: None,
        }
    }

    #[test]
    fn the_report_is_one_line_per_check_with_symbols_and_fixes() {
        let r = report(&[Status::Pass, Status::Warn, Status::Fail, Status::Skip]);
        assert_eq!(r.result(), Status::Fail);
        let text = r.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("✔ check0  detail 0"), "{text}");
        assert!(!lines[0].contains("fix:"), "{text}");
        assert!(
            lines[1].starts_with("! check1  detail 1 -> fix: do this"),
            "{text}"
        );
        assert!(lines[2].starts_with("✖ check2"), "{text}");
        assert!(lines[3].starts_with("- check3"), "{text}");
        assert_eq!(
            lines[4],
            "4 checks: 1 passed, 1 warnings, 1 failed, 1 skipped."
        );
        assert_eq!(report(&[Status::Pass, Status::Warn]).result(), Status::Warn);
        assert_eq!(report(&[Status::Pass, Status::Skip]).result(), Status::Pass);
    }

    #[test]
    fn the_json_report_is_versioned_and_structured() {
        let v = report(&[Status::Pass, Status::Fail]).to_json();
        assert_eq!(v["Version"], REPORT_VERSION);
        assert_eq!(v["Mode"], "server");
        assert_eq!(v["Result"], "fail");
        let checks = v["Checks"].as_array().expect("array");
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[1]["Name"], "check1");
        assert_eq!(checks[1]["Status"], "fail");
        assert_eq!(checks[1]["Fix"], "do this");
        assert!(v.get("Inventory").is_none());
    }

    #[test]
    fn ready_bodies_become_one_check_each() {
        let body = json!({"version": 1, "status": "not_ready", "failed": ["database"],
            "checks": {"database": {"ok": false, "error": "connection refused"},
                       "object_store": {"ok": true}}});
        let checks = ready_checks(&body);
        assert_eq!(checks.len(), 2);
        let db = checks
            .iter()
            .find(|c| c.name == "database")
            .expect("database");
        assert_eq!(db.status, Status::Fail);
        assert_eq!(db.detail, "connection refused");
        let os = checks
            .iter()
            .find(|c| c.name == "object_store")
            .expect("store");
        assert_eq!(os.status, Status::Pass);
        assert!(ready_checks(&json!("ok")).is_empty());
    }

    #[test]
    fn root_is_required_for_devices_only() {
        assert_eq!(root_check(true, false).status, Status::Pass);
        assert_eq!(root_check(false, true).status, Status::Warn);
        let fail = root_check(false, false);
        assert_eq!(fail.status, Status::Fail);
        assert!(fail.fix.contains("sudo"), "{}", fail.fix);
    }

    #[test]
    fn free_space_names_the_existing_ancestor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("not/yet");
        let c = free_space_check("space", &missing, 0, 0, "fix");
        assert_eq!(c.status, Status::Pass, "{}", c.detail);
        assert!(c.detail.contains("does not exist yet"), "{}", c.detail);
        let c = free_space_check("space", dir.path(), u64::MAX, u64::MAX, "free some");
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.fix, "free some");
        let c = free_space_check("space", dir.path(), 0, u64::MAX, "free some");
        assert_eq!(c.status, Status::Warn);
    }
}
