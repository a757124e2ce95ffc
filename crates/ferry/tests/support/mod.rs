//! The whole-stack harness the CLI and API tests in this directory share: each test gets its own
//! in-process `ferry_server` (fresh data directory in a temp dir, loopback port 0, root credentials
//! read from the file the first start writes), drives the CLI through `ferry::run` (the binary's own
//! code path), calls the API with the CLI's signed client, and can play a source server's agent over
//! the real agent protocol.
//!
//! Invariants: nothing here outlives the test (the temp dir and the server go with the [`Harness`]);
//! the agent side trusts only the server's own CA, like a real agent that pinned it.

// Each test binary includes this module with `mod support;` and uses a different part of it, so an
// item one binary does not call would otherwise warn as dead code there.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser as _;
use ferry::{Cli, Client, ClientError, Io};
use ferry_server::{RootCredentials, RunningServer, ServerConfig};
use ferry_types::inventory::{BootMode, Inventory, OsRelease, Precheck};
use ferry_types::protocol::{
    ActivateRequest, ActivateResponse, AgentState, HeartbeatRequest, HeartbeatResponse,
};
use serde_json::Value;

/// How long a test waits for the stack to reach a state before it fails.
pub const WAIT: Duration = Duration::from_secs(180);

/// One server for one test, with the root account's credentials and a home directory for the CLI.
pub struct Harness {
    pub tmp: tempfile::TempDir,
    /// The server's data directory (`--data-dir` of every CLI call).
    pub data: PathBuf,
    /// `HOME` of the CLI calls, where profiles are saved.
    pub home: PathBuf,
    pub server: RunningServer,
    pub root: RootCredentials,
    /// The CLI's signed client with the root account's key.
    pub api: Client,
}

impl Harness {
    pub async fn start() -> Harness {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let cfg = ServerConfig {
            data_dir: data.clone(),
            listen: "127.0.0.1:0".parse().expect("address"),
            ..Default::default()
        };
        let server = ferry_server::start(cfg).await.expect("server starts");
        let creds = std::fs::read(data.join(ferry_server::ROOT_CREDENTIALS_FILE))
            .expect("root credentials file");
        let root: RootCredentials = serde_json::from_slice(&creds).expect("root credentials JSON");
        let api = Client::new(
            &server.endpoint(),
            &root.access_key_id,
            &root.access_key_secret,
            Some(&server.state.ca_pem),
        )
        .expect("client");
        Harness {
            tmp,
            data,
            home,
            server,
            root,
            api,
        }
    }

    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// The root account's access key id with another secret (to provoke signature errors).
    pub fn client_with_secret(&self, secret: &str) -> Client {
        Client::new(
            &self.endpoint(),
            &self.root.access_key_id,
            secret,
            Some(&self.server.state.ca_pem),
        )
        .expect("client")
    }

    /// An HTTPS client that trusts only this server's CA, to be finished by the caller.
    pub fn https_builder(&self) -> reqwest::ClientBuilder {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(self.server.state.ca_pem.as_bytes()).expect("CA");
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
    }

    /// An HTTPS client that trusts only this server's CA, as an agent that pinned it does.
    pub fn https(&self) -> reqwest::Client {
        self.https_builder().build().expect("HTTPS client")
    }

    /// A successful SMC call with the root key.
    pub async fn smc(&self, action: &str, params: &[(&str, &str)]) -> Value {
        match self.api.smc(action, &own(params)).await {
            Ok(v) => v,
            Err(e) => panic!("{action} {params:?} failed: {e}"),
        }
    }

    /// A failing SMC call with the root key: its HTTP status and code.
    pub async fn smc_err(&self, action: &str, params: &[(&str, &str)]) -> (u16, String) {
        match self.api.smc(action, &own(params)).await {
            Ok(v) => panic!("{action} {params:?} succeeded: {v}"),
            Err(ClientError::Api { status, code, .. }) => (status, code),
            Err(e) => panic!("{action}: not an API error: {e}"),
        }
    }

    /// The error code of a failing SMC call.
    pub async fn smc_code(&self, action: &str, params: &[(&str, &str)]) -> String {
        self.smc_err(action, params).await.1
    }

    /// `ferry --data-dir <data> <args>`, as the binary would parse it.
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            "ferry".to_owned(),
            "--data-dir".to_owned(),
            self.data.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv
    }

    /// Runs a CLI command line in-process; returns its result and what it printed.
    pub async fn cli(&self, args: &[&str]) -> (anyhow::Result<()>, String) {
        let cli = Cli::try_parse_from(self.argv(args)).expect("valid command line");
        let mut out = Vec::new();
        let result = {
            let mut io = Io {
                out: &mut out,
                interactive: false,
                home: Some(self.home.clone()),
            };
            ferry::run(cli, &mut io).await
        };
        (result, String::from_utf8(out).expect("UTF-8 output"))
    }

    /// Runs a command that must succeed; returns its output.
    pub async fn ok(&self, args: &[&str]) -> String {
        let (result, out) = self.cli(args).await;
        if let Err(e) = result {
            panic!("`ferry {}` failed: {e:#}\noutput:\n{out}", args.join(" "));
        }
        out
    }

    /// Runs a command that must succeed with `--output json`; returns what it printed, parsed.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.ok(&all).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
    }

    /// Runs a command that must fail; returns its error.
    pub async fn fails(&self, args: &[&str]) -> Failed {
        let (result, out) = self.cli(args).await;
        match result {
            Ok(()) => panic!("`ferry {}` succeeded:\n{out}", args.join(" ")),
            Err(err) => Failed { err },
        }
    }

    /// Runs a command that must fail with API error `code`; returns its error.
    pub async fn fails_with(&self, args: &[&str], code: &str) -> Failed {
        let f = self.fails(args).await;
        assert_eq!(f.code().as_deref(), Some(code), "{:#}", f.err);
        f
    }

    /// Polls `args` (JSON output) until `done` picks a value from it, for at most [`WAIT`].
    pub async fn wait_json<T>(
        &self,
        args: &[&str],
        what: &str,
        mut done: impl FnMut(&Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.json(args).await;
            if let Some(t) = done(&v) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last answer:\n{v:#}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Posts an activation request with `inventory` and `prechecks`; returns the raw answer.
    pub async fn activate_raw(
        &self,
        http: &reqwest::Client,
        code: &str,
        inventory: Inventory,
        prechecks: Vec<Precheck>,
    ) -> reqwest::Response {
        let req = ActivateRequest {
            token_id: None,
            code: code.to_owned(),
            inventory,
            prechecks,
        };
        http.post(format!(
            "{}{}/activate",
            self.endpoint(),
            ferry_types::protocol::PREFIX
        ))
        .json(&req)
        .send()
        .await
        .expect("activate request")
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

/// A CLI command that failed.
pub struct Failed {
    pub err: anyhow::Error,
}

impl Failed {
    /// The API error code behind the failure, if it was one.
    pub fn code(&self) -> Option<String> {
        self.err
            .chain()
            .find_map(|c| c.downcast_ref::<ClientError>())
            .and_then(|e| e.api_code().map(str::to_owned))
    }

    /// The hint the binary prints under the error.
    pub fn hint(&self) -> String {
        ferry::hint_for(&self.err)
    }
}

/// Plays a registered agent over the real agent protocol.
pub struct Agent {
    http: reqwest::Client,
    base: String,
    bearer: String,
    pub source_id: String,
}

impl Agent {
    /// Activates with `code`, failing the test unless the server registers the source.
    pub async fn activate(
        h: &Harness,
        http: reqwest::Client,
        code: &str,
        inventory: Inventory,
        prechecks: Vec<Precheck>,
    ) -> Agent {
        let resp = h.activate_raw(&http, code, inventory, prechecks).await;
        assert!(resp.status().is_success(), "activate: {}", resp.status());
        let a: ActivateResponse = resp.json().await.expect("activate response");
        Agent {
            http,
            base: format!("{}{}", h.endpoint(), ferry_types::protocol::PREFIX),
            bearer: a.credentials.bearer(),
            source_id: a.credentials.source_id.to_string(),
        }
    }

    /// Posts `body` to the agent API's `path` with this agent's credentials; fails the test on an
    /// error status.
    pub async fn post<T: serde::Serialize>(&self, path: &str, body: &T) -> reqwest::Response {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("authorization", &self.bearer)
            .json(body)
            .send()
            .await
            .expect("agent request");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp
    }

    /// One heartbeat of an idle agent.
    pub async fn heartbeat(&self) -> HeartbeatResponse {
        let req = HeartbeatRequest {
            agent_version: AGENT_VERSION.into(),
            state: AgentState::Idle,
            inventory: None,
            prechecks: None,
            wait: false,
        };
        self.post("/heartbeat", &req)
            .await
            .json()
            .await
            .expect("heartbeat response")
    }
}

/// The agent version the played agents report.
pub const AGENT_VERSION: &str = "0.1.0-test";

/// A Debian 12 server named `hostname` with no disks and no network; tests add what they need.
pub fn inventory(hostname: &str) -> Inventory {
    Inventory {
        hostname: hostname.into(),
        os: OsRelease {
            id: "debian".into(),
            name: "Debian GNU/Linux".into(),
            version_id: "12".into(),
            pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
        },
        kernel: "6.1.0-18-amd64".into(),
        architecture: "x86_64".into(),
        boot_mode: BootMode::Bios,
        cpus: 2,
        memory_bytes: 4 << 30,
        disks: vec![],
        network: vec![],
        dns: vec![],
        gateway: None,
        agent_version: AGENT_VERSION.into(),
    }
}

/// The activation code's secret, from `activation-code create`'s table output.
pub fn code_from(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.starts_with("Code:"))
        .unwrap_or_else(|| panic!("no Code line in:\n{out}"));
    line.trim_start_matches("Code:")
        .split_whitespace()
        .next()
        .expect("a code")
        .to_owned()
}

/// The first ID with `prefix` (`j-`, `w-`, …) in a command's output, without trailing punctuation.
pub fn printed_id(out: &str, prefix: &str) -> String {
    out.split_whitespace()
        .find(|w| w.starts_with(prefix))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .unwrap_or_else(|| panic!("no {prefix}… ID in:\n{out}"))
}

/// Parameters as the client takes them.
pub fn own(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The items of a wrapped list (`"Outer":{"Inner":[...]}`); none when it is missing.
pub fn items<'a>(v: &'a Value, outer: &str, inner: &str) -> &'a [Value] {
    v[outer][inner].as_array().map(Vec::as_slice).unwrap_or(&[])
}
