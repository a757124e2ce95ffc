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
    /// Disk snapshots (one per disk of a replication run) that images are built from.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Instances: VMs launched from images, to test a migration or cut over to it.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// RAM: users, access keys, policies, roles and temporary credentials (STS AssumeRole).
    #[command(subcommand)]
    Ram(RamCommand),
    /// Print a shell completion script: `ferry completions bash > /etc/bash_completion.d/ferry`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Workgroups: migration waves of source servers moved together.
    #[command(subcommand)]
    Workgroup(crate::commands::workgroups::WorkgroupCommand),
    /// Tags on source servers and replication jobs.
    #[command(subcommand)]
    Tag(crate::commands::tags::TagCommand),
    /// The audit trail (ActionTrail): look up events, verify the hash chain.
    #[command(subcommand)]
    Audit(crate::commands::audit::AuditCommand),
    /// Call any API action and print its JSON response.
    Call(CallArgs),
    /// Check the connection to the server (or, with --source, this source server) and print what to fix.
    Doctor(crate::commands::doctor::DoctorArgs),
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
    /// Longest time a heartbeat is held while there is nothing new for the agent (at most one interval).
    /// Keep it below the idle and response timeouts of any load balancer or proxy in front of the servers.
    #[arg(long, default_value_t = 25, value_name = "SECS")]
    pub long_poll: u32,
    /// Nice value (0-19) of the threads that check and store uploaded chunks and build images: they use
    /// all the CPU that is free, and yield it to API calls when a migration wave saturates the machine.
    /// 0 runs them at the server's own priority.
    #[arg(long, default_value_t = ferry_chunk::bulk::DEFAULT_NICE, value_name = "N")]
    pub bulk_nice: i32,
    /// Directory shared by all replicas of one deployment: objects, images, export buckets and the CA
    /// (docs/scale-out.md). Default: the data directory (one server).
    #[arg(long, value_name = "DIR")]
    pub shared_dir: Option<PathBuf>,
    /// Seconds a replica's lease on background work lasts without renewal; a dead replica's work is taken
    /// over after this long.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub lease_ttl: u32,
    /// MiB kept free on the data volume for the database, the audit trail and the logs: uploads and image
    /// builds pause below it (runs resume by themselves once space is freed). 0 = write until the disk
    /// is full.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub reserve_mib: u64,
    /// Object store on an S3-compatible service (AWS S3, MinIO, Ceph RGW, Alibaba OSS) as
    /// s3://BUCKET/PREFIX; chunks are stored in packs. Default: objects/ in the data directory.
    #[arg(long, value_name = "URL", value_parser = parse_store)]
    pub store: Option<Box<ferry_chunk::S3Config>>,
    /// Endpoint of the S3-compatible service (e.g. https://oss-cn-hangzhou.aliyuncs.com,
    /// http://127.0.0.1:9000); default: AWS S3 in --s3-region.
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    /// Region S3 requests are signed for (any value for MinIO, Ceph and s3s).
    #[arg(
        long,
        value_name = "REGION",
        env = "AWS_REGION",
        default_value = "us-east-1"
    )]
    pub s3_region: String,
    /// S3 access key ID.
    #[arg(long, value_name = "ID", env = "AWS_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (prefer the environment variable: command lines are visible to other users).
    #[arg(
        long,
        value_name = "SECRET",
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub s3_secret_access_key: Option<String>,
    /// Path-style S3 requests (endpoint/bucket/key). Default: on with --s3-endpoint (MinIO, Ceph), off
    /// for AWS; Alibaba OSS needs --s3-path-style=false.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub s3_path_style: Option<bool>,
    /// Allow a plain-HTTP S3 endpoint that is not on loopback.
    #[arg(long)]
    pub s3_allow_http: bool,
    /// Log format (the level comes from RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for in-flight requests before closing connections.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace: u64,
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
    /// Rename a source server or change its description.
    Rename {
        id: String,
        /// New name (2-128 characters, starting with a letter).
        #[arg(long)]
        name: String,
        /// New description (up to 256 characters).
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a source server (its agent can no longer report).
    Delete {
        id: String,
        /// Also delete its replication job and release what the job holds.
        #[arg(long)]
        force: bool,
    },
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
    /// Change a job's name, description, schedule, validity or transfer parameters.
    Modify(JobModifyArgs),
    /// Delete a job that is not running (its delivered images stay).
    Delete { id: String },
    /// Cut over an incremental job that is Waiting: stop its periodic runs and finish it.
    Cutover {
        id: String,
        /// Run one last sync of the changes before finishing.
        #[arg(long)]
        sync_data: bool,
        /// Follow the job until it is Finished.
        #[arg(long)]
        watch: bool,
    },
    /// Launch a test instance from a completed run's image while the job goes on (RunInstances).
    TestInstance {
        id: String,
        /// The run (1 = the first) whose image to launch; default: the newest run with an image.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        run: Option<u32>,
        /// Instance type (default ecs.t1.small).
        #[arg(long = "type", value_name = "TYPE")]
        instance_type: Option<String>,
        /// Forward a loopback port to the guest: HOST_PORT:GUEST_PORT (repeatable), e.g. 8022:22.
        #[arg(long = "port-forward", value_name = "HOST:GUEST")]
        port_forwards: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct JobModifyArgs {
    pub id: String,
    /// New job name.
    #[arg(long)]
    pub name: Option<String>,
    /// New description.
    #[arg(long)]
    pub description: Option<String>,
    /// Hours between incremental runs (1-168); only before the first run or while Waiting.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=168), value_name = "HOURS")]
    pub frequency: Option<u32>,
    /// Images to keep for an incremental job (1-10); only before the first run or while Waiting.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10), value_name = "N")]
    pub keep: Option<u32>,
    /// When the job expires: a UTC time (2024-06-01T00:00:00Z) or from now (+30d, +12h).
    #[arg(long, value_parser = parse_time_arg, value_name = "TIME")]
    pub valid_until: Option<String>,
    /// Bandwidth limit in bytes per second; K, M, G suffixes are 1024-based (10M, 512K). 0 = none.
    #[arg(long, value_parser = parse_rate_arg, value_name = "RATE")]
    pub bandwidth_limit: Option<u64>,
    /// zstd compression level, 0 (off) to 19.
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=19), value_name = "N")]
    pub compress_level: Option<i32>,
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
    /// Start the job by itself at this time: UTC (2024-06-01T02:00:00Z) or from now (+2h), within 30 days.
    #[arg(long, value_parser = parse_time_arg, value_name = "TIME")]
    pub scheduled_start: Option<String>,
    /// When the job expires (7-90 days after creation): UTC time or from now (+30d).
    #[arg(long, value_parser = parse_time_arg, value_name = "TIME")]
    pub valid_until: Option<String>,
    /// A tag KEY=VALUE for the job (repeatable, up to 20).
    #[arg(long = "tag", value_parser = parse_tag_arg, value_name = "KEY=VALUE")]
    pub tags: Vec<(String, String)>,
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
    /// Build a new image from stored snapshots (the first is the system disk).
    Create {
        /// A snapshot ID, once per disk in order (system disk first).
        #[arg(long = "snapshot", required = true, value_name = "ID")]
        snapshots: Vec<String>,
        /// Name of the new image.
        #[arg(long)]
        name: String,
        /// Description of the new image.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete an image (its snapshots stay).
    Delete {
        id: String,
        /// Delete it even if instances use it.
        #[arg(long)]
        force: bool,
    },
    /// Show an image's boot validation: each check, and the end of the guest's console log.
    Validation { id: String },
    /// Rebuild an image from its stored snapshots: adapted and validated again, nothing copied again.
    Rebuild {
        id: String,
        /// Name of the new image (default: <name>-rebuild-<time>).
        #[arg(long)]
        name: Option<String>,
        /// Network adaptation: dhcp (default) or keep-static (re-apply the source's static addresses).
        #[arg(long, value_name = "MODE")]
        network_mode: Option<String>,
        /// Validation checks as JSON ({"tcp":[22],"http":[…],"commands":[…]}; docs/boot-validation.md).
        #[arg(long, value_name = "JSON")]
        checks: Option<String>,
        /// Do not boot-validate the new image.
        #[arg(long)]
        no_validation: bool,
    },
}

/// `ferry snapshot …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots.
    List {
        /// Only the snapshots of this image's disks.
        #[arg(long, value_name = "ID", conflicts_with = "job")]
        image: Option<String>,
        /// Only the snapshots of the images this replication job built.
        #[arg(long, value_name = "ID")]
        job: Option<String>,
        /// Only snapshots with this status.
        #[arg(long, value_parser = ["progressing", "accomplished", "failed", "all"])]
        status: Option<String>,
    },
    /// Delete a snapshot (refused while an image uses it, unless --force).
    Delete {
        id: String,
        /// Delete it even if an image was built from it.
        #[arg(long)]
        force: bool,
    },
}

/// `ferry instance …`.
#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// Launch instances from an image and start them.
    Run(InstanceRunArgs),
    /// Create one instance from an image without starting it.
    Create(InstanceCreateArgs),
    /// List instances.
    List,
    /// Show an instance.
    Show { id: String },
    /// Start a stopped instance.
    Start { id: String },
    /// Stop a running instance (a clean shutdown unless --force).
    Stop {
        id: String,
        /// Power it off at once instead of asking the guest to shut down.
        #[arg(long)]
        force: bool,
    },
    /// Delete an instance and its disk overlay.
    Delete {
        id: String,
        /// Delete it even while it runs.
        #[arg(long)]
        force: bool,
    },
    /// Print an instance's serial console output.
    Console { id: String },
}

#[derive(Debug, Args)]
pub struct InstanceCreateArgs {
    /// The image to launch.
    #[arg(long, value_name = "ID")]
    pub image: String,
    /// Instance type, e.g. ecs.t1.small (default: the server's smallest).
    #[arg(long = "type", value_name = "TYPE")]
    pub instance_type: Option<String>,
    /// Instance name.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct InstanceRunArgs {
    #[command(flatten)]
    pub create: InstanceCreateArgs,
    /// How many instances to launch (1-100).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100), value_name = "N")]
    pub count: u32,
}

/// `ferry ram …`.
#[derive(Debug, Subcommand)]
pub enum RamCommand {
    /// RAM users.
    #[command(subcommand)]
    User(RamUserCommand),
    /// Access keys of RAM users (or of the caller).
    #[command(subcommand)]
    Key(RamKeyCommand),
    /// Permission policies, and attaching them to users and roles.
    #[command(subcommand)]
    Policy(RamPolicyCommand),
    /// Roles that can be assumed for temporary credentials.
    #[command(subcommand)]
    Role(RamRoleCommand),
    /// Get temporary credentials for a role (STS AssumeRole).
    AssumeRole(AssumeRoleArgs),
}

#[derive(Debug, Subcommand)]
pub enum RamUserCommand {
    /// Create a RAM user (it may do nothing until a policy is attached).
    Create {
        /// User name (1-64 characters: letters, digits, `.`, `_`, `-`).
        name: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        comments: Option<String>,
    },
    /// List RAM users.
    List,
    /// Show a user, its access keys and its policies.
    Show { name: String },
    /// Delete a user (detach its policies and delete its keys first).
    Delete { name: String },
    /// Set the user's web-console password (creates or replaces its login profile; a new password
    /// ends the user's console sessions). Without --password-stdin a strong password is generated and
    /// printed once.
    SetPassword {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Ask the user to bind an MFA device (recorded as MFABindRequired).
        #[arg(long)]
        require_mfa: bool,
        /// Ask the user to change the password at next sign-in (recorded as PasswordResetRequired).
        #[arg(long)]
        reset_required: bool,
    },
    /// Console MFA (a virtual TOTP device) for the user.
    #[command(subcommand)]
    Mfa(RamMfaCommand),
}

#[derive(Debug, Subcommand)]
pub enum RamMfaCommand {
    /// Create a virtual MFA device and bind it to the user: prints the otpauth:// URI to add to an
    /// authenticator app, then asks for two consecutive codes on a terminal; elsewhere run it again
    /// with --codes to bind.
    Enable {
        name: String,
        /// Two consecutive codes of the authenticator app, e.g. --codes 123456,654321: binds the
        /// device an earlier `mfa enable` created.
        #[arg(long, value_delimiter = ',')]
        codes: Vec<String>,
        /// The device's name (default: the user's name).
        #[arg(long)]
        device: Option<String>,
    },
    /// Unbind the user's MFA device and delete it; the password alone signs in again.
    Disable { name: String },
}

#[derive(Debug, Subcommand)]
pub enum RamKeyCommand {
    /// Create an access key; its secret is printed once.
    Create {
        /// The user (default: the caller).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// List access keys.
    List {
        /// The user (default: the caller).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Disable an access key: requests signed with it are refused.
    Disable {
        id: String,
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Enable a disabled access key.
    Enable {
        id: String,
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Delete an access key.
    Delete {
        id: String,
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
}

/// `--type` of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyType {
    System,
    Custom,
}

impl PolicyType {
    /// The API's `PolicyType` value.
    pub fn as_api(self) -> &'static str {
        match self {
            PolicyType::System => "System",
            PolicyType::Custom => "Custom",
        }
    }
}

/// Who a policy is attached to or detached from.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct PolicyPrincipal {
    /// A RAM user.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// A RAM role.
    #[arg(long, value_name = "NAME")]
    pub role: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RamPolicyCommand {
    /// Create a custom policy from a policy document (JSON).
    Create {
        #[arg(long)]
        name: String,
        /// The policy document: a JSON file, or - for standard input.
        #[arg(long, value_name = "FILE")]
        document: PathBuf,
        #[arg(long)]
        description: Option<String>,
    },
    /// List policies.
    List {
        #[arg(long = "type", value_enum, ignore_case = true)]
        policy_type: Option<PolicyType>,
    },
    /// Show a policy and its document.
    Show {
        name: String,
        /// System or Custom (default: Custom if such a custom policy exists, else System).
        #[arg(long = "type", value_enum, ignore_case = true)]
        policy_type: Option<PolicyType>,
    },
    /// Delete a custom policy (detach it everywhere first).
    Delete { name: String },
    /// Attach a policy to a user or a role.
    Attach {
        /// The policy's name, e.g. AliyunSMCReadOnlyAccess.
        name: String,
        #[command(flatten)]
        to: PolicyPrincipal,
        /// System or Custom (default: Custom if such a custom policy exists, else System).
        #[arg(long = "type", value_enum, ignore_case = true)]
        policy_type: Option<PolicyType>,
    },
    /// Detach a policy from a user or a role.
    Detach {
        /// The policy's name, e.g. AliyunSMCReadOnlyAccess.
        name: String,
        #[command(flatten)]
        from: PolicyPrincipal,
        /// System or Custom (default: Custom if such a custom policy exists, else System).
        #[arg(long = "type", value_enum, ignore_case = true)]
        policy_type: Option<PolicyType>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RamRoleCommand {
    /// Create a role with a trust policy saying who may assume it.
    Create {
        #[arg(long)]
        name: String,
        /// The trust policy (AssumeRolePolicyDocument): a JSON file, or - for standard input.
        #[arg(long, value_name = "FILE")]
        trust: PathBuf,
        /// Longest session, in seconds (3600-43200).
        #[arg(long, value_parser = clap::value_parser!(u32).range(3600..=43200), value_name = "SECS")]
        max_session: Option<u32>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List roles.
    List,
    /// Delete a role (detach its policies first).
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct AssumeRoleArgs {
    /// The role's ARN, e.g. acs:ram::1234567890123456:role/migrator.
    #[arg(long, value_name = "ARN")]
    pub role_arn: String,
    /// A name for the session (2-64 characters: letters, digits, `.`, `@`, `-`, `_`); audit records show it.
    #[arg(long, value_name = "NAME")]
    pub session: String,
    /// Seconds the credentials stay valid (900 up to the role's maximum; default 3600).
    #[arg(long, value_parser = clap::value_parser!(u32).range(900..=43200), value_name = "SECS")]
    pub duration: Option<u32>,
    /// Save the credentials as this profile of ~/.ferry/config.json (used with --profile NAME).
    #[arg(long, value_name = "NAME")]
    pub save_profile: Option<String>,
}

/// A `--tag KEY=VALUE`.
fn parse_tag_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE: write e.g. --tag env=prod")),
    }
}

/// A time option: an RFC 3339 time (any offset, sent as UTC) or a delay from now (`+30m`, `+2h`,
/// `+30d`), as the API's `YYYY-MM-DDThh:mm:ssZ`.
pub fn parse_time_arg(s: &str) -> Result<String, String> {
    parse_time_at(s, time::OffsetDateTime::now_utc())
}

fn parse_time_at(s: &str, now: time::OffsetDateTime) -> Result<String, String> {
    let bad = || {
        format!(
            "{s:?} is not a time: write a UTC time like 2024-06-01T02:00:00Z or a delay like +2h or +30d"
        )
    };
    let s = s.trim();
    let t = if let Some(delay) = s.strip_prefix('+') {
        let split = delay.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, unit) = delay.split_at(split);
        let n: i64 = n.parse().map_err(|_| bad())?;
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        let d = time::Duration::seconds(n.checked_mul(secs).ok_or_else(bad)?);
        now.checked_add(d).ok_or_else(bad)?
    } else {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|_| bad())?
    };
    let t = t.to_offset(time::UtcOffset::UTC);
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// The action, e.g. DescribeSourceServers.
    pub action: String,
    /// API version: 2019-06-01 (SMC), 2014-05-26 (ECS), 2015-05-01 (RAM) or 2015-04-01 (STS).
    #[arg(long, default_value = crate::client::SMC_VERSION, value_name = "VERSION")]
    pub api_version: String,
    /// Parameters as Key=Value (lists as Key.1=Value); RegionId is added when absent.
    #[arg(value_name = "KEY=VALUE")]
    pub params: Vec<String>,
}

/// `--store s3://BUCKET/PREFIX` (boxed: the configuration is large and `Command` is an enum).
fn parse_store(url: &str) -> Result<Box<ferry_chunk::S3Config>, String> {
    ferry_chunk::S3Config::from_url(url)
        .map(Box::new)
        .map_err(|e| e.to_string())
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

    fn parse(args: &[&str]) -> Command {
        let mut argv = vec!["ferry"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.command,
            Err(e) => panic!("`{}` does not parse: {e}", args.join(" ")),
        }
    }

    fn rejects(args: &[&str]) -> bool {
        let mut argv = vec!["ferry"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).is_err()
    }

    #[test]
    fn source_and_job_resource_commands_parse() {
        let Command::Source(SourceCommand::Rename {
            id,
            name,
            description,
        }) = parse(&["source", "rename", "s-1", "--name", "web-02"])
        else {
            panic!("not a rename");
        };
        assert_eq!(
            (id.as_str(), name.as_str(), description),
            ("s-1", "web-02", None)
        );
        assert!(rejects(&["source", "rename", "s-1"]), "--name is required");
        assert!(matches!(
            parse(&["source", "delete", "s-1", "--force"]),
            Command::Source(SourceCommand::Delete { force: true, .. })
        ));

        let Command::Job(JobCommand::Modify(m)) = parse(&[
            "job",
            "modify",
            "j-1",
            "--frequency",
            "6",
            "--keep",
            "2",
            "--bandwidth-limit",
            "1M",
            "--valid-until",
            "2030-01-02T03:04:05+01:00",
        ]) else {
            panic!("not a modify");
        };
        assert_eq!((m.frequency, m.keep), (Some(6), Some(2)));
        assert_eq!(m.bandwidth_limit, Some(1 << 20));
        assert_eq!(m.valid_until.as_deref(), Some("2030-01-02T02:04:05Z"));
        assert!(rejects(&["job", "modify", "j-1", "--frequency", "0"]));
        assert!(matches!(
            parse(&["job", "cutover", "j-1", "--sync-data", "--watch"]),
            Command::Job(JobCommand::Cutover {
                sync_data: true,
                watch: true,
                ..
            })
        ));
        assert!(matches!(
            parse(&["job", "delete", "j-1"]),
            Command::Job(JobCommand::Delete { .. })
        ));

        let Command::Job(JobCommand::Create(c)) = parse(&[
            "job",
            "create",
            "--source",
            "s-1",
            "--tag",
            "env=prod",
            "--tag",
            "team=a=b",
            "--scheduled-start",
            "2030-01-01T00:00:00Z",
        ]) else {
            panic!("not a create");
        };
        assert_eq!(
            c.tags,
            [("env".into(), "prod".into()), ("team".into(), "a=b".into())]
        );
        assert_eq!(c.scheduled_start.as_deref(), Some("2030-01-01T00:00:00Z"));
        assert!(rejects(&[
            "job", "create", "--source", "s-1", "--tag", "novalue"
        ]));
        assert!(rejects(&[
            "job", "create", "--source", "s-1", "--tag", "=v"
        ]));
        assert!(rejects(&[
            "job",
            "create",
            "--source",
            "s-1",
            "--valid-until",
            "soon"
        ]));
    }

    #[test]
    fn times_are_utc_or_relative() {
        let now = time::macros::datetime!(2024-05-01 10:00:00 UTC);
        assert_eq!(
            parse_time_at("+2h", now).as_deref(),
            Ok("2024-05-01T12:00:00Z")
        );
        assert_eq!(
            parse_time_at("+30d", now).as_deref(),
            Ok("2024-05-31T10:00:00Z")
        );
        assert_eq!(
            parse_time_at("+90m", now).as_deref(),
            Ok("2024-05-01T11:30:00Z")
        );
        assert_eq!(
            parse_time_at("2024-06-01T02:00:00Z", now).as_deref(),
            Ok("2024-06-01T02:00:00Z")
        );
        for bad in [
            "",
            "+",
            "+2",
            "+2w",
            "+h",
            "tomorrow",
            "2024-06-01",
            "+99999999999999999d",
        ] {
            let err = parse_time_at(bad, now).expect_err(bad);
            assert!(err.contains("+2h"), "{err}");
        }
    }

    #[test]
    fn image_snapshot_and_instance_commands_parse() {
        let Command::Image(ImageCommand::Create {
            snapshots, name, ..
        }) = parse(&[
            "image",
            "create",
            "--snapshot",
            "sp-1",
            "--snapshot",
            "sp-2",
            "--name",
            "web",
        ])
        else {
            panic!("not an image create");
        };
        assert_eq!(
            (snapshots, name.as_str()),
            (vec!["sp-1".to_owned(), "sp-2".to_owned()], "web")
        );
        assert!(
            rejects(&["image", "create", "--name", "web"]),
            "a snapshot is required"
        );
        assert!(matches!(
            parse(&["image", "delete", "m-1", "--force"]),
            Command::Image(ImageCommand::Delete { force: true, .. })
        ));
        assert!(matches!(
            parse(&["snapshot", "list", "--image", "m-1"]),
            Command::Snapshot(SnapshotCommand::List {
                image: Some(_),
                job: None,
                ..
            })
        ));
        assert!(rejects(&[
            "snapshot", "list", "--image", "m-1", "--job", "j-1"
        ]));
        assert!(rejects(&["snapshot", "list", "--status", "done"]));

        let Command::Instance(InstanceCommand::Run(r)) = parse(&[
            "instance",
            "run",
            "--image",
            "m-1",
            "--type",
            "ecs.t1.small",
            "--count",
            "3",
        ]) else {
            panic!("not a run");
        };
        assert_eq!(r.count, 3);
        assert_eq!(r.create.instance_type.as_deref(), Some("ecs.t1.small"));
        let Command::Instance(InstanceCommand::Run(r)) =
            parse(&["instance", "run", "--image", "m-1"])
        else {
            panic!("not a run");
        };
        assert_eq!(r.count, 1);
        assert!(rejects(&[
            "instance", "run", "--image", "m-1", "--count", "101"
        ]));
        assert!(rejects(&["instance", "run"]));
        assert!(matches!(
            parse(&["instance", "stop", "i-1", "--force"]),
            Command::Instance(InstanceCommand::Stop { force: true, .. })
        ));
        assert!(matches!(
            parse(&["instance", "console", "i-1"]),
            Command::Instance(InstanceCommand::Console { .. })
        ));
    }

    #[test]
    fn ram_console_commands_parse() {
        assert!(matches!(
            parse(&[
                "ram",
                "user",
                "set-password",
                "alice",
                "--password-stdin",
                "--require-mfa"
            ]),
            Command::Ram(RamCommand::User(RamUserCommand::SetPassword {
                password_stdin: true,
                require_mfa: true,
                reset_required: false,
                ..
            }))
        ));
        let Command::Ram(RamCommand::User(RamUserCommand::Mfa(RamMfaCommand::Enable {
            codes,
            ..
        }))) = parse(&[
            "ram",
            "user",
            "mfa",
            "enable",
            "alice",
            "--codes",
            "123456,654321",
        ])
        else {
            panic!("mfa enable");
        };
        assert_eq!(codes, ["123456", "654321"]);
        assert!(matches!(
            parse(&["ram", "user", "mfa", "disable", "alice"]),
            Command::Ram(RamCommand::User(RamUserCommand::Mfa(
                RamMfaCommand::Disable { .. }
            )))
        ));
    }

    #[test]
    fn ram_commands_parse() {
        assert!(matches!(
            parse(&["ram", "key", "create", "--user", "alice"]),
            Command::Ram(RamCommand::Key(RamKeyCommand::Create { user: Some(_) }))
        ));
        assert!(matches!(
            parse(&["ram", "key", "disable", "LTAI1"]),
            Command::Ram(RamCommand::Key(RamKeyCommand::Disable { user: None, .. }))
        ));
        let Command::Ram(RamCommand::Policy(RamPolicyCommand::Attach {
            name,
            to,
            policy_type,
        })) = parse(&[
            "ram",
            "policy",
            "attach",
            "AliyunSMCReadOnlyAccess",
            "--user",
            "alice",
            "--type",
            "system",
        ])
        else {
            panic!("not an attach");
        };
        assert_eq!(name, "AliyunSMCReadOnlyAccess");
        assert_eq!((to.user.as_deref(), to.role), (Some("alice"), None));
        assert_eq!(policy_type, Some(PolicyType::System));
        assert!(
            rejects(&["ram", "policy", "attach", "P"]),
            "needs --user or --role"
        );
        assert!(rejects(&[
            "ram", "policy", "detach", "P", "--user", "a", "--role", "r"
        ]));
        assert!(rejects(&["ram", "policy", "list", "--type", "Managed"]));
        // The API's spelling works as well as the lower-case one.
        assert!(matches!(
            parse(&["ram", "policy", "list", "--type", "Custom"]),
            Command::Ram(RamCommand::Policy(RamPolicyCommand::List {
                policy_type: Some(PolicyType::Custom)
            }))
        ));
        assert!(matches!(
            parse(&["ram", "policy", "create", "--name", "P", "--document", "-"]),
            Command::Ram(RamCommand::Policy(RamPolicyCommand::Create { .. }))
        ));
        assert!(rejects(&[
            "ram",
            "role",
            "create",
            "--name",
            "r",
            "--trust",
            "t.json",
            "--max-session",
            "60"
        ]));
        let Command::Ram(RamCommand::AssumeRole(a)) = parse(&[
            "ram",
            "assume-role",
            "--role-arn",
            "acs:ram::1:role/r",
            "--session",
            "s1",
            "--duration",
            "900",
            "--save-profile",
            "tmp",
        ]) else {
            panic!("not assume-role");
        };
        assert_eq!(a.duration, Some(900));
        assert_eq!(a.save_profile.as_deref(), Some("tmp"));
        assert!(rejects(&[
            "ram",
            "assume-role",
            "--role-arn",
            "a",
            "--session",
            "s",
            "--duration",
            "60"
        ]));
        assert!(matches!(
            parse(&["completions", "bash"]),
            Command::Completions { .. }
        ));
        assert!(rejects(&["completions", "cmd.exe"]));
    }
}
