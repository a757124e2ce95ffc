//! The command line: every subcommand and option of `ferry`, as clap derive types.
//!
//! Connection options (`--endpoint`, `--profile`, `--data-dir`, `--region`, …) and `--output` are
//! global: they are accepted before or after the subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::ConnectionArgs;
use crate::output::{OutputFormat, parse_rate};

/// Ferry: a self-hosted server migration center. `ferry server` runs the control plane; the other
/// commands are an operator client of its Alibaba-Cloud-compatible API.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// What to print: aligned tables for people, or the API's JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (API, agent API, workers) until Ctrl-C or SIGTERM.
    Server(ServerArgs),
    /// Save a connection profile in ~/.ferry/config.json (mode 0600) and make it the current one.
    Configure(ConfigureArgs),
    /// Activation codes that let agents register source servers.
    #[command(subcommand)]
    ActivationCode(ActivationCodeCommand),
    /// Source servers registered by agents.
    #[command(subcommand)]
    Source(SourceCommand),
    /// Replication jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Images built by replication jobs.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Call any API action and print its JSON response.
    Call(CallArgs),
}

/// Log line format of `ferry server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on (HTTPS).
    #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Extra host name or IP address for the TLS certificate (repeatable).
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_san: Vec<String>,
    /// URL agents and clients use to reach this server, if not the listen address.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Database URL (sqlite://PATH or postgres://…); default: SQLite in the data directory.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// Seconds between agent heartbeats.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub heartbeat_interval: u32,
    /// Log format (the level comes from RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// Take endpoint, access key and CA from this server data directory's root-credentials.json.
    #[arg(long, value_name = "DIR")]
    pub from_data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ActivationCodeCommand {
    /// Create an activation code and print the command to run on source servers.
    Create {
        /// Name of the code (2-128 characters, starting with a letter).
        #[arg(long)]
        name: Option<String>,
        /// How many source servers may register with it (1-1000).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        count: Option<u32>,
        /// Days the code stays valid (1-90).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=90))]
        ttl_days: Option<u32>,
    },
    /// List activation codes.
    List,
    /// Disable an activation code: no new registrations (registered sources are unaffected).
    Disable { id: String },
    /// Delete an activation code.
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// List source servers.
    List,
    /// Show a source server's inventory and prechecks.
    Show { id: String },
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Create a replication job for a source server.
    Create(JobCreateArgs),
    /// Start (or resume) a job.
    Start {
        id: String,
        /// Follow the job's progress until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Stop a syncing or waiting job (what was copied stays stored; start resumes).
    Stop { id: String },
    /// List replication jobs.
    List,
    /// Show a job and its runs.
    Show { id: String },
    /// Follow a job's progress until it is Finished/Waiting (exit 0) or InError/Stopped (exit 1).
    Watch { id: String },
}

#[derive(Debug, Args)]
pub struct JobCreateArgs {
    /// The source server to migrate.
    #[arg(long, value_name = "ID")]
    pub source: String,
    /// Job name (default: derived from the source's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Name of the image the job builds.
    #[arg(long)]
    pub image_name: Option<String>,
    /// Bandwidth limit in bytes per second; K, M, G suffixes are 1024-based (10M, 512K). 0 = none.
    #[arg(long, value_parser = parse_rate_arg, value_name = "RATE")]
    pub bandwidth_limit: Option<u64>,
    /// zstd compression level, 0 (off) to 19 (default: chosen by the agent).
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=19), value_name = "N")]
    pub compress_level: Option<i32>,
    /// Incremental job: sync again every --frequency hours, keeping --keep images.
    #[arg(long, requires_all = ["frequency", "keep"])]
    pub incremental: bool,
    /// Hours between incremental runs (1-168).
    #[arg(long, requires = "incremental", value_parser = clap::value_parser!(u32).range(1..=168), value_name = "HOURS")]
    pub frequency: Option<u32>,
    /// Images to keep for an incremental job (1-10).
    #[arg(long, requires = "incremental", value_parser = clap::value_parser!(u32).range(1..=10), value_name = "N")]
    pub keep: Option<u32>,
}

fn parse_rate_arg(s: &str) -> Result<u64, String> {
    parse_rate(s).map_err(|e| e.to_string())
}

/// Disk image formats an export can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Raw,
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
}

impl ExportFormat {
    /// The API's `ImageFormat` value.
    pub fn as_api(self) -> &'static str {
        match self {
            ExportFormat::Raw => "raw",
            ExportFormat::Qcow2 => "qcow2",
            ExportFormat::Vmdk => "vmdk",
            ExportFormat::Vhd => "vhd",
            ExportFormat::Vhdx => "vhdx",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images (all statuses).
    List,
    /// Show an image and its disks.
    Show { id: String },
    /// Export an image's disks to a bucket (with the local store, <data-dir>/buckets/<bucket>).
    Export {
        id: String,
        #[arg(long, value_enum)]
        format: ExportFormat,
        #[arg(long, value_name = "B")]
        bucket: String,
        /// Object name prefix inside the bucket.
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// Wait for the export to finish and print the files written.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// The action, e.g. DescribeSourceServers.
    pub action: String,
    /// API version: 2019-06-01 (SMC) or 2014-05-26 (ECS).
    #[arg(long, default_value = crate::client::SMC_VERSION, value_name = "VERSION")]
    pub api_version: String,
    /// Parameters as Key=Value (lists as Key.1=Value); RegionId is added when absent.
    #[arg(value_name = "KEY=VALUE")]
    pub params: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "ferry",
            "job",
            "create",
            "--source",
            "s-1",
            "--bandwidth-limit",
            "10M",
            "--output",
            "json",
            "--region",
            "r1",
        ])
        .expect("parses");
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(cli.conn.region.as_deref(), Some("r1"));
        let Command::Job(JobCommand::Create(args)) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.bandwidth_limit, Some(10 << 20));
    }

    #[test]
    fn incremental_needs_frequency_and_keep() {
        let base = ["ferry", "job", "create", "--source", "s-1"];
        assert!(Cli::try_parse_from(base.iter().chain(&["--incremental"])).is_err());
        assert!(Cli::try_parse_from(base.iter().chain(&["--frequency", "2"])).is_err());
        assert!(
            Cli::try_parse_from(base.iter().chain(&[
                "--incremental",
                "--frequency",
                "2",
                "--keep",
                "3"
            ]))
            .is_ok()
        );
        assert!(Cli::try_parse_from(base.iter().chain(&["--bandwidth-limit", "fast"])).is_err());
    }
}
