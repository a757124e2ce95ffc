//! Boot validation: launch an instance, wait for the guest probe's report, check it from outside, judge.
//!
//! The contract with the guest probe and the server is `docs/boot-validation.md`. [`validate`] binds a
//! loopback listener for the probe's report, forwards `10.0.2.100:7979` in the guest to it (`guestfwd`),
//! forwards a free loopback port to each guest port the user's TCP/HTTP checks name (`hostfwd`), passes
//! the checks configuration (with a random token) through fw_cfg as `opt/ferry/boot-checks`, starts the
//! instance, waits for the report (network or serial console), the timeout or QEMU's exit, runs the
//! host-side checks, and stops the instance unless [`ValidationSpec::keep_running`].
//!
//! Invariants: a guest that misbehaves never makes [`validate`] fail — it yields a failed
//! [`ValidationReport`] whose details say what was last seen; `Err` means the validation could not run
//! (QEMU missing, a bad spec). No QEMU outlives [`validate`] unless `keep_running` asked for it (a drop
//! guard kills it on every early return). Reports are versioned ([`VALIDATION_REPORT_VERSION`],
//! [`BOOT_REPORT_VERSION`]); a probe report of a newer version is refused with a clear detail.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::driver::{Driver, VmSpec};
use crate::error::VmError;
use crate::net::{GuestForward, PortForward};

/// The version of [`ValidationReport`] this Ferry writes.
pub const VALIDATION_REPORT_VERSION: u32 = 1;
/// The version of the probe's report ([`BootReport`]) this Ferry reads.
pub const BOOT_REPORT_VERSION: u32 = 1;
/// The console line prefix of the probe's report.
pub const CONSOLE_MARKER: &str = "FERRY-BOOT-REPORT/1 ";
/// The fw_cfg name of the checks configuration.
pub const FW_CFG_CHECKS: &str = "opt/ferry/boot-checks";
/// Where the guest sends its report; QEMU forwards it to the validator's loopback listener.
pub const REPORT_TO: &str = "10.0.2.100:7979";
/// How long a report seen on the console may take to arrive over the network (the probe retries sending
/// for up to 60 s: the network may come up a little after the default target).
const NETWORK_GRACE: Duration = Duration::from_secs(65);
/// How long the host-side checks keep trying (a service may start just after the report).
const HOST_CHECK_WINDOW: Duration = Duration::from_secs(20);
/// Longest line accepted on the report listener.
const MAX_REPORT_LINE: u64 = 1 << 20;
/// How much of the console the report keeps.
pub const CONSOLE_TAIL_BYTES: u64 = 64 << 10;

/// The user's own checks (the API's Ferry-only `ValidationChecks` parameter; JSON in the doc).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChecks {
    /// Guest TCP ports that must accept a connection.
    #[serde(default)]
    pub tcp: Vec<u16>,
    /// HTTP GETs that must answer a given status.
    #[serde(default)]
    pub http: Vec<HttpCheck>,
    /// Commands the probe runs in the guest.
    #[serde(default)]
    pub commands: Vec<CommandCheck>,
}

/// `GET <path>` on a guest port must answer `expect_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    pub port: u16,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_status")]
    pub expect_status: u16,
}

fn default_path() -> String {
    "/".to_owned()
}

fn default_status() -> u16 {
    200
}

/// A command the probe runs with `bash -c`; it passes on `expect_exit` and, when set, output containing
/// `expect_output`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandCheck {
    pub name: String,
    pub command: String,
    #[serde(default)]
    pub expect_exit: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_output: Option<String>,
}

/// The checks configuration the probe reads through fw_cfg (`docs/boot-validation.md`), version 1. Its
/// fields keep this order (`name` before `command` in each command) so that simple probes can scan it.
#[derive(Serialize)]
struct ChecksConfig<'a> {
    version: u32,
    token: &'a str,
    report_to: &'a str,
    commands: &'a [CommandCheck],
}

/// Malformed user checks; the message says which entry and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ValidationChecks: {0}")]
pub struct InvalidChecks(pub String);

impl UserChecks {
    /// Parses and checks the JSON form.
    pub fn parse(json: &str) -> Result<UserChecks, InvalidChecks> {
        let c: UserChecks = serde_json::from_str(json).map_err(|e| {
            InvalidChecks(format!(
                "{e} (expected {{\"tcp\":[22],\"http\":[{{\"port\":80,\"path\":\"/\",\"expect_status\":200}}],\"commands\":[{{\"name\":\"…\",\"command\":\"…\",\"expect_exit\":0}}]}})"
            ))
        })?;
        c.check()?;
        Ok(c)
    }

    /// Checks the limits: ports non-zero, paths absolute, names unique and printable, at most 32 checks
    /// of each kind, commands at most 4 KiB.
    pub fn check(&self) -> Result<(), InvalidChecks> {
        let bad = |m: String| Err(InvalidChecks(m));
        if self.tcp.len() > 32 || self.http.len() > 32 || self.commands.len() > 32 {
            return bad("at most 32 checks of each kind".to_owned());
        }
        if self.tcp.contains(&0) {
            return bad("tcp port 0 is not a port".to_owned());
        }
        for h in &self.http {
            if h.port == 0 {
                return bad("http port 0 is not a port".to_owned());
            }
            if !h.path.starts_with('/')
                || h.path.len() > 1024
                || h.path.chars().any(|c| c.is_control() || c == ' ')
            {
                return bad(format!(
                    "http path {:?} must start with '/' and contain no spaces or control characters",
                    h.path
                ));
            }
            if !(100..=599).contains(&h.expect_status) {
                return bad(format!(
                    "http expect_status {} is not an HTTP status",
                    h.expect_status
                ));
            }
        }
        for (i, c) in self.commands.iter().enumerate() {
            if c.name.trim().is_empty()
                || c.name.len() > 128
                || c.name.chars().any(char::is_control)
            {
                return bad(format!(
                    "command {i}: name must be 1 to 128 printable characters"
                ));
            }
            if c.command.trim().is_empty() || c.command.len() > 4096 {
                return bad(format!(
                    "command {:?}: command must be 1 to 4096 bytes",
                    c.name
                ));
            }
            if self.commands[..i].iter().any(|o| o.name == c.name) {
                return bad(format!("command name {:?} is used twice", c.name));
            }
        }
        Ok(())
    }
}

/// What to validate and how long to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationSpec {
    /// How long the guest may take from start to report (default 600 s: TCG is slow).
    pub boot_timeout: Duration,
    pub checks: UserChecks,
    /// Leave the instance running after the checks (a cutover's production instance), pass or fail.
    pub keep_running: bool,
}

impl Default for ValidationSpec {
    fn default() -> Self {
        ValidationSpec {
            boot_timeout: Duration::from_secs(600),
            checks: UserChecks::default(),
            keep_running: false,
        }
    }
}

/// The probe's report, version 1 (`docs/boot-validation.md`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BootReport {
    pub version: u32,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub system_state: String,
    #[serde(default)]
    pub default_target: String,
    #[serde(default)]
    pub default_target_reached: bool,
    #[serde(default)]
    pub failed_units: Vec<String>,
    #[serde(default)]
    pub interfaces: Vec<BootInterface>,
    #[serde(default)]
    pub dhcp_lease: bool,
    #[serde(default)]
    pub mounts: Vec<BootMount>,
    #[serde(default)]
    pub commands: Vec<BootCommand>,
    #[serde(default)]
    pub uptime_secs: f64,
}

/// A non-loopback interface in the probe's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootInterface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub dhcp: bool,
}

/// An `/etc/fstab` entry in the probe's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootMount {
    pub spec: String,
    pub mountpoint: String,
    #[serde(default)]
    pub fstype: String,
    pub mounted: bool,
    #[serde(default)]
    pub source: Option<String>,
}

/// A command's outcome in the probe's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootCommand {
    pub name: String,
    #[serde(default)]
    pub command: String,
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub output: String,
    #[serde(default)]
    pub passed: bool,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// `kernel-booted`, `tcp:22`, `command:<name>`, … (the doc lists them).
    pub name: String,
    pub passed: bool,
    /// What was seen, in words a person can act on.
    pub detail: String,
}

/// The validator's verdict, version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    pub version: u32,
    /// Every check passed.
    pub passed: bool,
    pub checks: Vec<CheckResult>,
    /// The probe's report, when one arrived.
    pub boot: Option<BootReport>,
    /// The last 64 KiB of the serial console (lossy UTF-8).
    pub console_tail: String,
    pub elapsed_ms: u64,
    pub instance_id: String,
}

/// The last valid `FERRY-BOOT-REPORT/1` line of `console` (any token).
pub fn parse_console_report(console: &str) -> Option<BootReport> {
    console
        .lines()
        .rev()
        .filter_map(|line| {
            line.find(CONSOLE_MARKER)
                .map(|i| &line[i + CONSOLE_MARKER.len()..])
        })
        .find_map(|json| serde_json::from_str::<BootReport>(json.trim()).ok())
}

/// Launches `spec` as a throwaway instance and validates its boot (see the module doc).
///
/// The instance must not be running. Its `instance.json` keeps the caller's own network and fw_cfg
/// files (the validator's forwards are for this boot only), so a later start does not depend on the
/// validator's listener.
///
/// # Errors
/// Only when the validation cannot run: `BadSpec`, `AlreadyRunning`, `QemuMissing`, `FirmwareMissing`,
/// `QemuFailed` (QEMU refused to start), `Io`. A guest that does not boot or report is a failed report,
/// not an error.
pub async fn validate(
    driver: &Driver,
    spec: VmSpec,
    v: &ValidationSpec,
) -> Result<ValidationReport, VmError> {
    let started = Instant::now();
    spec.check()?;
    v.checks.check().map_err(|e| VmError::BadSpec {
        id: spec.id.clone(),
        detail: e.to_string(),
    })?;
    if let Some(r) = driver.find(&spec.id) {
        return Err(VmError::AlreadyRunning {
            id: spec.id.clone(),
            pid: r.pid,
        });
    }
    let id = spec.id.clone();
    let dir = driver.dir(&id)?;
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| VmError::io("creating", &dir, e))?;

    // The report listener, and one loopback port per guest port the host-side checks need.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| VmError::io("binding a loopback port for", "the boot report", e))?;
    let report_addr = listener
        .local_addr()
        .map_err(|e| VmError::io("binding a loopback port for", "the boot report", e))?;
    let mut run = spec.clone();
    run.network.enabled = true;
    let mut guest_ports: Vec<u16> = v.checks.tcp.clone();
    guest_ports.extend(v.checks.http.iter().map(|h| h.port));
    guest_ports.sort_unstable();
    guest_ports.dedup();
    let mut host_for = Vec::new();
    for port in guest_ports {
        let host = match run.network.forwards.iter().find(|f| f.guest_port == port) {
            Some(f) => f.host,
            None => {
                let host = free_loopback_port()
                    .map_err(|e| VmError::io("finding a free loopback port for", "a check", e))?;
                run.network.forwards.push(PortForward {
                    host,
                    guest_port: port,
                });
                host
            }
        };
        host_for.push((port, host));
    }
    let report_to = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 100), 7979);
    run.network.guest_forwards.retain(|g| g.guest != report_to);
    run.network.guest_forwards.push(GuestForward {
        guest: report_to,
        host: report_addr,
    });

    // The checks configuration, through fw_cfg.
    let token = random_token().map_err(|e| VmError::io("reading", "/dev/urandom", e))?;
    let config = ChecksConfig {
        version: 1,
        token: &token,
        report_to: REPORT_TO,
        commands: &v.checks.commands,
    };
    let config_path = dir.join("boot-checks.json");
    let bytes = serde_json::to_vec(&config).map_err(|e| VmError::BadSpec {
        id: id.clone(),
        detail: format!("the checks configuration cannot be written as JSON: {e}"),
    })?;
    ferry_chunk::durable_write(&config_path, &bytes)
        .map_err(|e| VmError::io("writing", &config_path, e))?;
    run.fw_cfg.retain(|(name, _)| name != FW_CFG_CHECKS);
    run.fw_cfg.push((FW_CFG_CHECKS.to_owned(), config_path));

    let (tx, mut rx) = mpsc::channel::<Result<BootReport, String>>(4);
    let accept = AbortOnDrop(tokio::spawn(accept_reports(listener, tx)));
    let mut guard = KillGuard {
        driver: driver.clone(),
        id: id.clone(),
        armed: true,
    };
    driver.start(&run).await?;
    // Record the caller's own network and fw_cfg for later starts (the running QEMU keeps this boot's).
    driver.prepare(&spec).await?;
    tracing::info!(instance = %id, timeout_s = v.boot_timeout.as_secs(), "boot validation started");

    // Wait for the report: over the network, else on the console; or the timeout, or QEMU's exit.
    let deadline = started + v.boot_timeout;
    let mut net_report: Option<BootReport> = None;
    let mut net_problem: Option<String> = None;
    let mut console_report: Option<BootReport> = None;
    let mut ended = "";
    let mut console_seen: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(Ok(r)) if r.token.as_deref() == Some(token.as_str()) => {
                    net_report = Some(r);
                    break;
                }
                Some(Ok(r)) => net_problem = Some(format!(
                    "a report arrived with token {:?}, not this validation's", r.token
                )),
                Some(Err(problem)) => net_problem = Some(problem),
                None => {}
            },
            _ = tick.tick() => {
                if console_report.is_none() {
                    let text = console_text(driver, &id, CONSOLE_TAIL_BYTES);
                    console_report = parse_console_report(&text)
                        .filter(|r| r.token.is_none() || r.token.as_deref() == Some(token.as_str()));
                }
                if driver.find(&id).is_none() {
                    ended = "QEMU exited (the guest powered off or crashed)";
                    break;
                }
                if Instant::now() >= deadline {
                    ended = "the boot timeout passed";
                    break;
                }
                // The probe prints its report on the console just before sending it: a report that has
                // not arrived over the network a while later never will.
                if console_report.is_some() {
                    let seen = *console_seen.get_or_insert_with(Instant::now);
                    if seen.elapsed() >= NETWORK_GRACE {
                        ended = "the report was on the console but did not arrive over the network";
                        break;
                    }
                }
            }
        }
    }
    drop(accept);

    // Host-side checks through the forwards (only worth trying while the guest runs).
    let running = driver.find(&id).is_some();
    let net_up = net_report.is_some();
    // All at once: each may retry for a while.
    let until = checks_deadline(net_up);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, &port) in v.checks.tcp.iter().enumerate() {
        let host = lookup(&host_for, port);
        tasks.spawn(async move {
            let (passed, detail) = tcp_check(host, port, net_up, until).await;
            (i, check(format!("tcp:{port}"), passed, detail))
        });
    }
    for (i, h) in v.checks.http.iter().enumerate() {
        let host = lookup(&host_for, h.port);
        let h = h.clone();
        tasks.spawn(async move {
            let (passed, detail) = http_check(host, &h, until).await;
            (
                1000 + i,
                check(format!("http:{}{}", h.port, h.path), passed, detail),
            )
        });
    }
    let mut user_results: Vec<(usize, CheckResult)> = Vec::new();
    if running {
        while let Some(done) = tasks.join_next().await {
            if let Ok(r) = done {
                user_results.push(r);
            }
        }
        user_results.sort_by_key(|(i, _)| *i);
    } else {
        tasks.abort_all();
        let not = |name: String| check(name, false, format!("not checked: {ended}"));
        user_results.extend(v.checks.tcp.iter().map(|p| (0, not(format!("tcp:{p}")))));
        user_results.extend(
            v.checks
                .http
                .iter()
                .map(|h| (0, not(format!("http:{}{}", h.port, h.path)))),
        );
    }
    let user_results: Vec<CheckResult> = user_results.into_iter().map(|(_, c)| c).collect();

    let console = console_text(driver, &id, CONSOLE_TAIL_BYTES);
    if console_report.is_none() {
        console_report = parse_console_report(&console)
            .filter(|r| r.token.is_none() || r.token.as_deref() == Some(token.as_str()));
    }
    if !v.keep_running {
        driver.kill(&id).await?;
    }
    guard.armed = !v.keep_running && driver.find(&id).is_some();

    let over_network = net_report.is_some();
    let boot = net_report.or(console_report);
    let mut checks = judge(
        &console,
        boot.as_ref(),
        over_network,
        net_problem.as_deref(),
        ended,
        &v.checks,
        v.boot_timeout,
    );
    checks.extend(user_results);
    let passed = checks.iter().all(|c| c.passed);
    tracing::info!(instance = %id, passed, "boot validation finished");
    Ok(ValidationReport {
        version: VALIDATION_REPORT_VERSION,
        passed,
        checks,
        boot,
        console_tail: console,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        instance_id: id,
    })
}

/// Kills the instance's QEMU when dropped while armed: no early return leaks a QEMU.
struct KillGuard {
    driver: Driver,
    id: String,
    armed: bool,
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(r) = self.driver.find(&self.id)
            && let Ok(pid) = i32::try_from(r.pid)
        {
            tracing::warn!(instance = %self.id, pid = r.pid, "validation ended early: killing its QEMU");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Accepts connections on the report listener (QEMU's guestfwd connects once at start, and the guest's
/// connections flow through it) and sends every JSON line that parses as a report.
async fn accept_reports(listener: TcpListener, tx: mpsc::Sender<Result<BootReport, String>>) {
    let mut readers = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let tx = tx.clone();
        readers.spawn(async move {
            // One stream carries every guest connection: bytes that are not UTF-8 spoil their line only.
            let mut reader = BufReader::new(stream.take(16 * MAX_REPORT_LINE));
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim();
                let json = line.strip_prefix(CONSOLE_MARKER.trim_end()).unwrap_or(line).trim();
                if json.is_empty() {
                    continue;
                }
                let got = match serde_json::from_str::<BootReport>(json) {
                    Ok(r) if r.version > BOOT_REPORT_VERSION => Err(format!(
                        "the probe sent a report of version {}, newer than this Ferry reads ({BOOT_REPORT_VERSION}): upgrade Ferry",
                        r.version
                    )),
                    Ok(r) => Ok(r),
                    Err(e) => Err(format!("the probe sent a line that is not a report: {e}")),
                };
                if tx.send(got).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn free_loopback_port() -> std::io::Result<SocketAddr> {
    // Bound and released at once: QEMU binds it a moment later. Another process could take it in
    // between, in which case QEMU fails to start with a clear message.
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn console_text(driver: &Driver, id: &str, max: u64) -> String {
    match driver.console(id, max) {
        Ok(Some(c)) => String::from_utf8_lossy(&c.bytes).into_owned(),
        _ => String::new(),
    }
}

fn lookup(host_for: &[(u16, SocketAddr)], port: u16) -> SocketAddr {
    host_for
        .iter()
        .find(|(p, _)| *p == port)
        .map(|(_, h)| *h)
        .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
}

/// Until when the host-side checks retry: a while when the guest's network works (a service may start
/// just after the report), a single try otherwise.
fn checks_deadline(net_up: bool) -> Instant {
    if net_up {
        Instant::now() + HOST_CHECK_WINDOW
    } else {
        Instant::now()
    }
}

/// One try at a guest TCP port through its forward. QEMU accepts on the host side before it knows
/// whether the guest port is open, and closes the connection at once when the guest refuses: a port is
/// open when the service sent data, or when the connection is still up a moment after connecting and
/// the guest's network is known to work (`net_up`: its report arrived over the network).
async fn tcp_once(host: SocketAddr, net_up: bool) -> Result<String, String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(host))
        .await
        .map_err(|_| "connecting timed out".to_owned())?
        .map_err(|e| format!("connecting failed: {e}"))?;
    let mut buf = [0u8; 256];
    match tokio::time::timeout(Duration::from_millis(1500), s.read(&mut buf)).await {
        // A guest whose network is down never answers QEMU's SYN either: the host side stays open.
        Err(_) if net_up => Ok("connection accepted".to_owned()),
        Err(_) => Err(
            "QEMU accepted the connection but the guest never answered (its network did not come up)"
                .to_owned(),
        ),
        Ok(Ok(0)) => {
            Err("the guest closed the connection at once (nothing listens there)".to_owned())
        }
        Ok(Ok(n)) => Ok(format!(
            "connection accepted, the service said {:?}",
            String::from_utf8_lossy(&buf[..n]).trim()
        )),
        Ok(Err(e)) => Err(format!("the connection failed: {e}")),
    }
}

async fn tcp_check(host: SocketAddr, port: u16, net_up: bool, until: Instant) -> (bool, String) {
    let mut last;
    loop {
        match tcp_once(host, net_up).await {
            Ok(d) => return (true, format!("guest port {port} (host {host}): {d}")),
            Err(e) => last = e,
        }
        if Instant::now() >= until {
            return (
                false,
                format!(
                    "guest port {port} (forwarded from {host}): {last}; check that the service is enabled and listens on all addresses, and the guest's firewall"
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn http_once(host: SocketAddr, path: &str) -> Result<u16, String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(host))
        .await
        .map_err(|_| "connecting timed out".to_owned())?
        .map_err(|e| format!("connecting failed: {e}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request failed: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.contains(&b'\n') && head.len() < 4096 {
            let n = s
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading failed: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<(), String>(())
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())??;
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ if head.is_empty() => {
            Err("the connection closed without an answer (nothing listens there)".to_owned())
        }
        _ => Err(format!("not an HTTP answer: {line:?}")),
    }
}

async fn http_check(host: SocketAddr, h: &HttpCheck, until: Instant) -> (bool, String) {
    let mut last;
    loop {
        match http_once(host, &h.path).await {
            Ok(code) if code == h.expect_status => {
                return (true, format!("GET {} answered {code}", h.path));
            }
            Ok(code) => {
                last = format!(
                    "GET {} answered {code}, expected {}",
                    h.path, h.expect_status
                )
            }
            Err(e) => last = format!("GET {} on guest port {}: {e}", h.path, h.port),
        }
        if Instant::now() >= until {
            return (false, format!("{last} (forwarded from {host})"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The last non-empty console line, for details (control characters removed, at most 200 characters).
fn last_console_line(console: &str) -> String {
    let line = console
        .lines()
        .rev()
        .map(plain)
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    if line.is_empty() {
        "nothing: the console is empty".to_owned()
    } else {
        format!("{:?}", line.trim().chars().take(200).collect::<String>())
    }
}

/// `line` without terminal escape sequences (`ESC [ … final`, `ESC x`) and control characters: firmware
/// and boot loaders draw their screens with them.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, then one final byte in '@'..='~'.
                for f in chars.by_ref() {
                    if ('@'..='~').contains(&f) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out
}

fn check(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name: name.into(),
        passed,
        detail: detail.into(),
    }
}

/// The checks named in `docs/boot-validation.md`, from the console and the probe's report.
fn judge(
    console: &str,
    boot: Option<&BootReport>,
    over_network: bool,
    net_problem: Option<&str>,
    ended: &str,
    user: &UserChecks,
    timeout: Duration,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let linux = console
        .lines()
        .find_map(|l| l.find("Linux version").map(|i| &l[i..]));
    out.push(match linux {
        Some(l) => check(
            "kernel-booted",
            true,
            plain(l).trim().chars().take(200).collect::<String>(),
        ),
        None => check(
            "kernel-booted",
            false,
            format!(
                "no \"Linux version\" line on the serial console: the boot loader or the kernel did not start, or the kernel does not print to ttyS0 (console=ttyS0); last console line: {}",
                last_console_line(console)
            ),
        ),
    });
    let Some(b) = boot else {
        let why = format!(
            "no boot report from the guest ({} after {} s); last console line: {}{}",
            if ended.is_empty() {
                "it stopped"
            } else {
                ended
            },
            timeout.as_secs(),
            last_console_line(console),
            net_problem.map(|p| format!("; {p}")).unwrap_or_default()
        );
        for name in [
            "default-target-reached",
            "no-failed-units",
            "network-dhcp-lease",
            "report-over-network",
            "filesystems-mounted",
        ] {
            out.push(check(name, false, why.clone()));
        }
        for c in &user.commands {
            out.push(check(format!("command:{}", c.name), false, why.clone()));
        }
        return out;
    };
    if b.version != BOOT_REPORT_VERSION {
        let why = format!(
            "the probe's report is version {}, this Ferry reads version {BOOT_REPORT_VERSION}: use a matching Ferry",
            b.version
        );
        for name in [
            "default-target-reached",
            "no-failed-units",
            "network-dhcp-lease",
            "report-over-network",
            "filesystems-mounted",
        ] {
            out.push(check(name, false, why.clone()));
        }
        return out;
    }
    out.push(check(
        "default-target-reached",
        b.default_target_reached,
        format!(
            "default target {:?} {}; system state {:?}",
            b.default_target,
            if b.default_target_reached {
                "is active"
            } else {
                "is not active"
            },
            b.system_state
        ),
    ));
    out.push(check(
        "no-failed-units",
        b.failed_units.is_empty(),
        if b.failed_units.is_empty() {
            "no failed units".to_owned()
        } else {
            format!(
                "failed units: {} (see `journalctl -u <unit>` in the console log or on a test instance)",
                b.failed_units.join(", ")
            )
        },
    ));
    let addrs: Vec<String> = b
        .interfaces
        .iter()
        .map(|i| {
            format!(
                "{} {} [{}]{}",
                i.name,
                i.mac,
                i.addresses.join(" "),
                if i.dhcp { " dhcp" } else { "" }
            )
        })
        .collect();
    out.push(check(
        "network-dhcp-lease",
        b.dhcp_lease,
        if b.dhcp_lease {
            format!("DHCP lease: {}", addrs.join("; "))
        } else {
            format!(
                "no interface has a DHCP-assigned address (interfaces: {}): the network configuration was not switched to DHCP on {}",
                if addrs.is_empty() { "none".to_owned() } else { addrs.join("; ") },
                crate::net::TARGET_NIC_NAME
            )
        },
    ));
    out.push(check(
        "report-over-network",
        over_network,
        if over_network {
            format!("the report arrived at {REPORT_TO}")
        } else {
            format!(
                "the report was on the console but never arrived at {REPORT_TO}{}: the guest has no working route to 10.0.2.0/24",
                net_problem.map(|p| format!(" ({p})")).unwrap_or_default()
            )
        },
    ));
    let unmounted: Vec<String> = b
        .mounts
        .iter()
        .filter(|m| !m.mounted)
        .map(|m| format!("{} on {} ({})", m.spec, m.mountpoint, m.fstype))
        .collect();
    out.push(check(
        "filesystems-mounted",
        unmounted.is_empty(),
        if unmounted.is_empty() {
            format!("{} fstab entries mounted", b.mounts.len())
        } else {
            format!(
                "not mounted: {} (check /etc/fstab: device names change on the target; use UUID=)",
                unmounted.join(", ")
            )
        },
    ));
    for c in &user.commands {
        let name = format!("command:{}", c.name);
        let Some(r) = b.commands.iter().find(|r| r.name == c.name) else {
            out.push(check(
                name,
                false,
                if b.token.is_none() {
                    "not run: the probe did not receive the checks configuration (fw_cfg opt/ferry/boot-checks)".to_owned()
                } else {
                    "not in the probe's report".to_owned()
                },
            ));
            continue;
        };
        let exit_ok = r.exit_code == Some(c.expect_exit);
        let output_ok = c
            .expect_output
            .as_deref()
            .is_none_or(|want| r.output.contains(want));
        let output: String = r.output.chars().take(300).collect();
        out.push(check(
            name,
            exit_ok && output_ok,
            match (exit_ok, output_ok) {
                (true, true) => format!("exit {}; output {output:?}", c.expect_exit),
                (false, _) => format!(
                    "exit {}, expected {}; output {output:?}",
                    r.exit_code
                        .map_or("none (timed out)".to_owned(), |e| e.to_string()),
                    c.expect_exit
                ),
                (true, false) => format!(
                    "output {output:?} does not contain {:?}",
                    c.expect_output.as_deref().unwrap_or_default()
                ),
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{"version":1,"token":"t1","kernel":"6.1.0","hostname":"web01","system_state":"degraded","default_target":"multi-user.target","default_target_reached":true,"failed_units":["app.service"],"interfaces":[{"name":"enp0s3","mac":"52:54:00:01:02:03","addresses":["10.0.2.15/24"],"dhcp":true}],"dhcp_lease":true,"mounts":[{"spec":"UUID=1","mountpoint":"/","fstype":"ext4","mounted":true,"source":"/dev/vda1"},{"spec":"/dev/sdb1","mountpoint":"/data","fstype":"xfs","mounted":false,"source":null}],"commands":[{"name":"conf","command":"cat /etc/app.conf","exit_code":0,"output":"port=80","passed":true}],"uptime_secs":41.5}"#;

    #[test]
    fn the_last_valid_console_report_wins() {
        let console = format!(
            "[ 1.0] Linux version 6.1\r\nFERRY-BOOT-REPORT/1 {{\"version\":1,\"token\":\"old\"}}\r\nnoise FERRY-BOOT-REPORT/1 {REPORT}\r\nFERRY-BOOT-REPORT/1 {{truncated\r\n"
        );
        let r = parse_console_report(&console).expect("a report");
        assert_eq!(r.token.as_deref(), Some("t1"));
        assert_eq!(r.failed_units, ["app.service"]);
        assert_eq!(r.mounts[1].source, None);
        assert!(parse_console_report("no report here").is_none());
    }

    #[tokio::test]
    async fn the_report_listener_survives_garbage_and_refuses_newer_versions() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, mut rx) = mpsc::channel(8);
        let _task = AbortOnDrop(tokio::spawn(accept_reports(listener, tx)));
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut bytes = b"\xff\xfe not json\n".to_vec();
        bytes.extend_from_slice(REPORT.as_bytes());
        bytes.extend_from_slice(b"\n{\"version\":2}\n");
        s.write_all(&bytes).await.expect("write");
        let first = rx.recv().await.expect("first");
        assert!(first.is_err_and(|e| e.contains("not a report")));
        let second = rx.recv().await.expect("second").expect("a report");
        assert_eq!(second.token.as_deref(), Some("t1"));
        let third = rx.recv().await.expect("third");
        assert!(third.is_err_and(|e| e.contains("upgrade Ferry")));
    }

    #[test]
    fn user_checks_parse_with_defaults_and_clear_errors() {
        let c = UserChecks::parse(
            r#"{"tcp":[22],"http":[{"port":80}],"commands":[{"name":"a","command":"true"}]}"#,
        )
        .expect("valid");
        assert_eq!(c.http[0].path, "/");
        assert_eq!(c.http[0].expect_status, 200);
        assert_eq!(c.commands[0].expect_exit, 0);
        for (bad, want) in [
            (r#"{"tcp":[0]}"#, "port 0"),
            (
                r#"{"http":[{"port":80,"path":"health"}]}"#,
                "must start with '/'",
            ),
            (
                r#"{"http":[{"port":80,"expect_status":42}]}"#,
                "not an HTTP status",
            ),
            (
                r#"{"commands":[{"name":"a","command":"x"},{"name":"a","command":"y"}]}"#,
                "used twice",
            ),
            (r#"{"tcpp":[22]}"#, "unknown field"),
            ("[", "expected"),
        ] {
            let e = UserChecks::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
        assert_eq!(UserChecks::parse("{}"), Ok(UserChecks::default()));
    }

    #[test]
    fn console_details_are_plain_text() {
        let console = "Linux version 6.1\r\n\u{1b}[14;01H\u{1b}[1m\u{1b}[33m\u{1b}[40mShell> \u{1b}[0m\u{1b}[37m\u{1b}[40m\r\n";
        assert_eq!(last_console_line(console), "\"Shell>\"");
        assert_eq!(last_console_line(""), "nothing: the console is empty");
    }

    #[test]
    fn the_checks_config_lists_name_before_command() {
        let cmds = [CommandCheck {
            name: "n".to_owned(),
            command: "c".to_owned(),
            expect_exit: 0,
            expect_output: None,
        }];
        let json = serde_json::to_string(&ChecksConfig {
            version: 1,
            token: "t",
            report_to: REPORT_TO,
            commands: &cmds,
        })
        .expect("json");
        assert_eq!(
            json,
            r#"{"version":1,"token":"t","report_to":"10.0.2.100:7979","commands":[{"name":"n","command":"c","expect_exit":0}]}"#
        );
    }

    #[test]
    fn judging_names_what_failed() {
        let boot: BootReport = serde_json::from_str(REPORT).expect("report");
        let user = UserChecks {
            commands: vec![
                CommandCheck {
                    name: "conf".to_owned(),
                    command: "cat /etc/app.conf".to_owned(),
                    expect_exit: 0,
                    expect_output: Some("port=80".to_owned()),
                },
                CommandCheck {
                    name: "missing".to_owned(),
                    command: "true".to_owned(),
                    expect_exit: 0,
                    expect_output: None,
                },
            ],
            ..UserChecks::default()
        };
        let checks = judge(
            "Linux version 6.1",
            Some(&boot),
            false,
            None,
            "",
            &user,
            Duration::from_secs(600),
        );
        let get = |n: &str| checks.iter().find(|c| c.name == n).expect(n);
        assert!(get("kernel-booted").passed);
        assert!(get("default-target-reached").passed);
        assert!(
            !get("no-failed-units").passed && get("no-failed-units").detail.contains("app.service")
        );
        assert!(get("network-dhcp-lease").passed);
        assert!(!get("report-over-network").passed);
        let fs = get("filesystems-mounted");
        assert!(
            !fs.passed && fs.detail.contains("/dev/sdb1 on /data"),
            "{fs:?}"
        );
        assert!(get("command:conf").passed);
        assert!(!get("command:missing").passed);

        let mut newer = boot;
        newer.version = 2;
        let checks = judge("", Some(&newer), true, None, "", &user, Duration::ZERO);
        assert!(!checks[0].passed, "no Linux version on the console");
        assert!(checks[1].detail.contains("version 2"), "{:?}", checks[1]);

        let none = judge(
            "booting...\r\nlast words\r\n",
            None,
            false,
            None,
            "the boot timeout passed",
            &user,
            Duration::from_secs(5),
        );
        assert!(none.iter().all(|c| !c.passed));
        assert!(none[1].detail.contains("last words") && none[1].detail.contains("timeout"));
    }
}
