//! Server configuration: embedded defaults that work with no options at all.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::ServerError;

/// How a server runs. `Default` is the embedded configuration: `./ferry-data`, SQLite, loopback.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Everything the server owns lives here.
    pub data_dir: PathBuf,
    /// Address to listen on (HTTPS).
    pub listen: SocketAddr,
    /// Extra host names / IPs for the TLS certificate (loopback and this host's name are always included).
    pub tls_san: Vec<String>,
    /// URL agents and clients use to reach this server, if not the listen address.
    pub public_url: Option<String>,
    /// Database URL; `None` = SQLite in the data directory.
    pub database: Option<String>,
    /// The region this server serves (its target).
    pub region_id: String,
    /// Seconds between agent heartbeats; an agent silent for three intervals is offline.
    pub heartbeat_interval_secs: u32,
    /// The longest a heartbeat's long poll is held, in seconds (at most one interval): below the idle and
    /// response timeouts of any load balancer or proxy between agents and servers.
    pub long_poll_secs: u32,
    /// Where replicas share objects/, images/, buckets/ and the CA (tls/) (docs/scale-out.md); `None` =
    /// the data directory (one server).
    pub shared_dir: Option<PathBuf>,
    /// How long a background-work lease lasts without renewal: how soon a dead replica's work is taken
    /// over by another.
    pub lease_ttl_secs: u32,
    /// The S3-compatible object store (`--store s3://…`); `None` = `objects/` under the shared root.
    pub object_store: Option<ferry_chunk::S3Config>,
    /// MiB kept free on the data volume for the database, the audit trail and the logs: chunk uploads and
    /// image builds pause (the run waits, the API keeps answering) rather than eat into it.
    pub reserve_mib: u64,
    /// The nice value of the threads that check and write uploads and build images (`ferry_chunk::bulk`),
    /// 0 to 19: the higher, the sooner they yield the CPU to API calls; 0 = the server's own priority.
    pub bulk_nice: i32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("ferry-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls_san: Vec::new(),
            public_url: None,
            database: None,
            region_id: "local".to_owned(),
            heartbeat_interval_secs: 30,
            long_poll_secs: 25,
            shared_dir: None,
            lease_ttl_secs: 30,
            object_store: None,
            reserve_mib: 256,
            bulk_nice: ferry_chunk::bulk::DEFAULT_NICE,
        }
    }
}

impl ServerConfig {
    /// [`ServerConfig::reserve_mib`] in bytes.
    pub fn reserve_bytes(&self) -> u64 {
        self.reserve_mib.saturating_mul(1 << 20)
    }

    /// Checks the configuration and says what to fix.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.data_dir.exists() && !self.data_dir.is_dir() {
            return Err(ServerError::Config(format!(
                "--data-dir {} is a file, not a directory: pass a directory (it is created if missing)",
                self.data_dir.display()
            )));
        }
        if let Some(url) = &self.database
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return Err(ServerError::Config(format!(
                "--database {url:?} is not supported: use sqlite://PATH or postgres://USER@HOST/DB"
            )));
        }
        if let Some(url) = &self.public_url
            && !url.starts_with("https://")
        {
            return Err(ServerError::Config(format!(
                "--public-url {url:?} must start with https:// (agents only talk HTTPS)"
            )));
        }
        if self.heartbeat_interval_secs == 0 || self.heartbeat_interval_secs > 3600 {
            return Err(ServerError::Config(format!(
                "--heartbeat-interval {} is out of range: use 1 to 3600 seconds",
                self.heartbeat_interval_secs
            )));
        }
        if !(1..=ferry_types::protocol::MAX_LONG_POLL_SECS).contains(&self.long_poll_secs) {
            return Err(ServerError::Config(format!(
                "--long-poll {} is out of range: use 1 to {} seconds",
                self.long_poll_secs,
                ferry_types::protocol::MAX_LONG_POLL_SECS,
            )));
        }
        if !(0..=19).contains(&self.bulk_nice) {
            return Err(ServerError::Config(format!(
                "--bulk-nice {} is out of range: use 0 (the server's own priority) to 19 (the lowest)",
                self.bulk_nice
            )));
        }
        if !(3..=3600).contains(&self.lease_ttl_secs) {
            return Err(ServerError::Config(format!(
                "--lease-ttl {} is out of range: use 3 to 3600 seconds",
                self.lease_ttl_secs
            )));
        }
        if let Some(dir) = &self.shared_dir
            && dir.exists()
            && !dir.is_dir()
        {
            return Err(ServerError::Config(format!(
                "--shared-dir {} is a file, not a directory: pass a directory (it is created if missing)",
                dir.display()
            )));
        }
        if let Some(s3) = &self.object_store {
            s3.validate()
                .map_err(|e| ServerError::Config(e.to_string()))?;
        }
        let valid_region = !self.region_id.is_empty()
            && self
                .region_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_region {
            return Err(ServerError::Config(format!(
                "--region {:?} is not a valid region ID: use lower-case letters, digits and '-'",
                self.region_id
            )));
        }
        Ok(())
    }

    /// Where the objects, images, export buckets and the CA live: `--shared-dir`, or the data directory.
    pub fn shared_root(&self) -> &std::path::Path {
        self.shared_dir.as_deref().unwrap_or(&self.data_dir)
    }

    /// Names the TLS certificate is valid for.
    pub fn tls_names(&self) -> Vec<String> {
        let mut names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let h = h.trim();
            if !h.is_empty() && !names.iter().any(|n| n == h) {
                names.push(h.to_owned());
            }
        }
        if !self.listen.ip().is_unspecified() && !self.listen.ip().is_loopback() {
            names.push(self.listen.ip().to_string());
        }
        if let Some(url) = &self.public_url {
            let host = url
                .trim_start_matches("https://")
                .split(['/', ':'])
                .next()
                .unwrap_or_default();
            if !host.is_empty() {
                names.push(host.to_owned());
            }
        }
        for n in &self.tls_san {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    }
}
