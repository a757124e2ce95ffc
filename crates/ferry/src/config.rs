//! Where the CLI finds its server and its credentials.
//!
//! Each setting (endpoint, access key ID, access key secret, CA certificate, region) is taken from the
//! first of these that has it:
//!
//! 1. the command line (`--endpoint`, `--access-key-id`, `--access-key-secret`, `--ca-cert`, `--region`)
//!    or the matching `FERRY_*` environment variable;
//! 2. a profile of `~/.ferry/config.json` (aliyun-CLI-like): the one named by `--profile`, or else the
//!    file's `current` one;
//! 3. the server's own `<--data-dir>/root-credentials.json` (default `./ferry-data`), which
//!    `ferry server` writes at every start: on the server's host the CLI works with no setup at all.
//!
//! The region falls back to `local`. Errors list every place that was tried.
//!
//! An STS security token (temporary credentials from `ferry ram assume-role`) belongs to its access
//! key: it is taken from the same place as the access key ID, never combined with a key from elsewhere
//! (`--security-token`/`FERRY_SECURITY_TOKEN` go with a key from the command line or a profile).
//!
//! Profile file format, version 1: `{"version":1,"current":NAME,"profiles":[{"name","endpoint",
//! "access_key_id","access_key_secret","ca_cert"?,"ca_fingerprint"?,"region_id","security_token"?}]}`.
//! `security_token` was added compatibly (optional, omitted when absent): files without it read as
//! before, and older CLIs ignore it.
//!
//! Invariants: the profile file is written with mode 0600 (it holds secrets) and replaced atomically;
//! secrets are never printed.

use std::path::{Path, PathBuf};

use ferry_server::RootCredentials;
use serde::{Deserialize, Serialize};

use crate::client::{Client, ClientError};

/// Default server data directory, as `ferry server` uses it.
pub const DEFAULT_DATA_DIR: &str = "ferry-data";
/// Region used when none is configured (the embedded server's default).
pub const DEFAULT_REGION: &str = "local";

/// The connection options every command accepts.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectionArgs {
    /// Server URL, e.g. https://ferry.example:8443.
    #[arg(long, global = true, env = "FERRY_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,
    /// Access key ID to sign requests with.
    #[arg(long, global = true, env = "FERRY_ACCESS_KEY_ID", value_name = "ID")]
    pub access_key_id: Option<String>,
    /// Access key secret to sign requests with.
    #[arg(
        long,
        global = true,
        env = "FERRY_ACCESS_KEY_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub access_key_secret: Option<String>,
    /// The server's CA certificate (PEM), e.g. <data-dir>/tls/ca.pem.
    #[arg(long, global = true, env = "FERRY_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// STS security token of a temporary access key (from `ferry ram assume-role`).
    #[arg(
        long,
        global = true,
        env = "FERRY_SECURITY_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub security_token: Option<String>,
    /// Profile of ~/.ferry/config.json to use (default: the file's current profile).
    #[arg(long, global = true, env = "FERRY_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// The server's data directory [default: ./ferry-data]; the CLI reads its root-credentials.json
    /// when nothing else is configured.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Region ID [default: the profile's, else "local"].
    #[arg(long, global = true, env = "FERRY_REGION", value_name = "ID")]
    pub region: Option<String>,
}

impl ConnectionArgs {
    /// `--data-dir`, or its default.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }
}

/// `~/.ferry/config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileFile {
    /// Format version of this file (`docs/formats.md`); 1 today.
    #[serde(default = "profile_format_v1")]
    pub version: u32,
    /// Name of the profile used when `--profile` is not given.
    #[serde(default)]
    pub current: String,
    #[serde(default)]
    pub profiles: Vec<Profile>,
}

fn profile_format_v1() -> u32 {
    1
}

impl Default for ProfileFile {
    fn default() -> Self {
        Self {
            version: profile_format_v1(),
            current: String::new(),
            profiles: Vec::new(),
        }
    }
}

/// One named connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub access_key_id: String,
    #[serde(default)]
    pub access_key_secret: String,
    /// Path of the server's CA certificate (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// `sha256:<hex>` of the CA, as `ferry server` prints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,
    #[serde(default)]
    pub region_id: String,
    /// STS security token when the access key is temporary (`STS.…`); absent for permanent keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_token: Option<String>,
}

impl ProfileFile {
    /// The profile called `name`.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }
}

/// Why no usable configuration was found, or a profile could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no {} configured; tried: {}. Pass --endpoint, --access-key-id and --access-key-secret (or \
         FERRY_ENDPOINT, FERRY_ACCESS_KEY_ID, FERRY_ACCESS_KEY_SECRET), save a profile with `ferry configure \
         --profile NAME --from-data-dir DIR`, or point --data-dir at the server's data directory",
        missing.join(", "),
        tried.join("; ")
    )]
    Incomplete {
        missing: Vec<&'static str>,
        tried: Vec<String>,
    },
    #[error(
        "no CA certificate to check {endpoint} with; tried: {}. Pass --ca-cert <data-dir>/tls/ca.pem \
         (copy it from the server host)",
        tried.join("; ")
    )]
    NoCa {
        endpoint: String,
        tried: Vec<String>,
    },
    #[error(
        "profile {name:?} is not in {}; it has: {}. Create it with `ferry configure --profile {name} ...`",
        path.display(),
        if available.is_empty() { "no profiles".to_owned() } else { available.join(", ") }
    )]
    ProfileNotFound {
        name: String,
        path: PathBuf,
        available: Vec<String>,
    },
    #[error(
        "--profile {name:?} was given but {} does not exist: create the profile with `ferry configure --profile {name} ...`",
        path.display()
    )]
    NoProfileFile { name: String, path: PathBuf },
    #[error("cannot read {}: check that it exists and that you may read it", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid JSON of the expected shape: fix or remove it", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} is not a PEM certificate: pass the server's <data-dir>/tls/ca.pem", path.display())]
    BadCa { path: PathBuf },
    #[error("cannot write {}: check the permissions of the directory", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "HOME is not set, so ~/.ferry/config.json cannot be found: set HOME or pass the connection options"
    )]
    NoHome,
    #[error("`ferry configure` needs --profile NAME: the name to save the profile under")]
    ConfigureWithoutProfile,
    #[error(
        "the profile would have no {}: pass {} or --from-data-dir DIR",
        missing.join(", "),
        missing.iter().map(|m| format!("--{}", m.replace(' ', "-"))).collect::<Vec<_>>().join(", ")
    )]
    ConfigureIncomplete { missing: Vec<&'static str> },
}

/// A complete connection: where, who, and which CA to trust.
#[derive(Clone)]
pub struct Resolved {
    pub endpoint: String,
    pub access_key_id: String,
    pub access_key_secret: String,
    /// The STS token that goes with a temporary `access_key_id`.
    pub security_token: Option<String>,
    /// The CA file and its contents (`None` only for `http://` endpoints).
    pub ca_cert: Option<PathBuf>,
    pub ca_pem: Option<String>,
    /// `sha256:<hex>` of the CA: computed from `ca_pem`, else as recorded in the profile or credentials.
    pub ca_fingerprint: Option<String>,
    pub region_id: String,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("ca_cert", &self.ca_cert)
            .field("region_id", &self.region_id)
            .finish_non_exhaustive()
    }
}

impl Resolved {
    /// A client for this connection.
    pub fn client(&self) -> Result<Client, ClientError> {
        Client::new(
            &self.endpoint,
            &self.access_key_id,
            &self.access_key_secret,
            self.ca_pem.as_deref(),
        )
        .map(|c| c.with_security_token(self.security_token.clone()))
    }
}

/// `<home>/.ferry/config.json`.
pub fn profile_path(home: &Path) -> PathBuf {
    home.join(".ferry").join("config.json")
}

/// The user's home directory, from `HOME`.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
}

/// Reads `~/.ferry/config.json`; `None` when it does not exist.
pub fn load_profiles(home: &Path) -> Result<Option<ProfileFile>, ConfigError> {
    read_json(&profile_path(home))
}

/// Reads `<data_dir>/root-credentials.json`; `None` when it does not exist.
pub fn load_root_credentials(data_dir: &Path) -> Result<Option<RootCredentials>, ConfigError> {
    read_json(&data_dir.join(ferry_server::ROOT_CREDENTIALS_FILE))
}

/// The CA path recorded in a credentials file, made usable from here: the server records it relative
/// to its own working directory, so a relative path that does not exist from ours is looked up in the
/// data directory instead.
fn credentials_ca_path(creds: &RootCredentials, data_dir: &Path) -> PathBuf {
    if creds.ca_cert.is_absolute() || creds.ca_cert.exists() {
        creds.ca_cert.clone()
    } else {
        data_dir.join("tls").join("ca.pem")
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// Settings gathered so far, layer by layer.
#[derive(Default)]
struct Layered {
    endpoint: Option<String>,
    access_key_id: Option<String>,
    access_key_secret: Option<String>,
    security_token: Option<String>,
    ca_cert: Option<PathBuf>,
    ca_fingerprint: Option<String>,
    region_id: Option<String>,
}

impl Layered {
    fn fill(&mut self, other: Layered) {
        // A token is only valid with its own key: it comes along with the key ID, or not at all.
        if self.access_key_id.is_none() && other.access_key_id.is_some() {
            self.security_token = self.security_token.take().or(other.security_token);
        }
        self.endpoint = self.endpoint.take().or(other.endpoint);
        self.access_key_id = self.access_key_id.take().or(other.access_key_id);
        self.access_key_secret = self.access_key_secret.take().or(other.access_key_secret);
        self.ca_cert = self.ca_cert.take().or(other.ca_cert);
        self.ca_fingerprint = self.ca_fingerprint.take().or(other.ca_fingerprint);
        self.region_id = self.region_id.take().or(other.region_id);
    }

    fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.endpoint.is_none() {
            m.push("endpoint");
        }
        if self.access_key_id.is_none() {
            m.push("access key id");
        }
        if self.access_key_secret.is_none() {
            m.push("access key secret");
        }
        m
    }

    fn needs_more(&self) -> bool {
        !self.missing().is_empty() || (self.ca_cert.is_none() && self.wants_tls())
    }

    fn wants_tls(&self) -> bool {
        self.endpoint
            .as_deref()
            .is_none_or(|e| !e.starts_with("http://"))
    }

    fn from_profile(p: &Profile) -> Layered {
        Layered {
            endpoint: non_empty(&p.endpoint),
            access_key_id: non_empty(&p.access_key_id),
            access_key_secret: non_empty(&p.access_key_secret),
            security_token: p.security_token.as_deref().and_then(non_empty),
            ca_cert: p.ca_cert.clone(),
            ca_fingerprint: p.ca_fingerprint.clone(),
            region_id: non_empty(&p.region_id),
        }
    }

    fn from_credentials(c: &RootCredentials, data_dir: &Path) -> Layered {
        Layered {
            endpoint: non_empty(&c.endpoint),
            access_key_id: non_empty(&c.access_key_id),
            access_key_secret: non_empty(&c.access_key_secret),
            security_token: None,
            ca_cert: Some(credentials_ca_path(c, data_dir)),
            ca_fingerprint: non_empty(&c.ca_fingerprint),
            region_id: None,
        }
    }
}

/// Resolves the connection from the options, the profile file under `home` and the server's
/// credentials file, in that order (see the module documentation).
///
/// Errors: [`ConfigError::Incomplete`] and [`ConfigError::NoCa`] list every place tried;
/// [`ConfigError::ProfileNotFound`], [`ConfigError::NoProfileFile`] for a `--profile` that does not
/// exist; `Read`/`Parse`/`BadCa` for unusable files.
pub fn resolve(args: &ConnectionArgs, home: Option<&Path>) -> Result<Resolved, ConfigError> {
    let mut tried = vec![
        "--endpoint/--access-key-id/--access-key-secret/--ca-cert and FERRY_ENDPOINT/FERRY_ACCESS_KEY_ID/\
         FERRY_ACCESS_KEY_SECRET/FERRY_CA_CERT"
            .to_owned(),
    ];
    let mut have = Layered {
        endpoint: args.endpoint.as_deref().and_then(non_empty),
        access_key_id: args.access_key_id.as_deref().and_then(non_empty),
        access_key_secret: args.access_key_secret.as_deref().and_then(non_empty),
        security_token: args.security_token.as_deref().and_then(non_empty),
        ca_cert: args.ca_cert.clone(),
        ca_fingerprint: None,
        region_id: args.region.as_deref().and_then(non_empty),
    };

    match (home, &args.profile) {
        (None, Some(_)) => return Err(ConfigError::NoHome),
        (None, None) => tried.push("~/.ferry/config.json (HOME is not set)".to_owned()),
        (Some(home), wanted) => {
            let path = profile_path(home);
            match (load_profiles(home)?, wanted) {
                (None, Some(name)) => {
                    return Err(ConfigError::NoProfileFile {
                        name: name.clone(),
                        path,
                    });
                }
                (None, None) => tried.push(format!("{} (does not exist)", path.display())),
                (Some(file), Some(name)) => {
                    let profile = file.get(name).ok_or_else(|| ConfigError::ProfileNotFound {
                        name: name.clone(),
                        path: path.clone(),
                        available: file.profiles.iter().map(|p| p.name.clone()).collect(),
                    })?;
                    tried.push(format!("profile {name:?} of {}", path.display()));
                    have.fill(Layered::from_profile(profile));
                }
                (Some(file), None) => match file.get(&file.current) {
                    Some(profile) => {
                        tried.push(format!(
                            "current profile {:?} of {}",
                            profile.name,
                            path.display()
                        ));
                        have.fill(Layered::from_profile(profile));
                    }
                    None => tried.push(format!(
                        "{} (no current profile; choose one with --profile)",
                        path.display()
                    )),
                },
            }
        }
    }

    if have.needs_more() {
        let data_dir = args.data_dir();
        let path = data_dir.join(ferry_server::ROOT_CREDENTIALS_FILE);
        match load_root_credentials(&data_dir)? {
            Some(creds) => {
                tried.push(path.display().to_string());
                have.fill(Layered::from_credentials(&creds, &data_dir));
            }
            None => tried.push(format!(
                "{} (does not exist; choose the server's data directory with --data-dir)",
                path.display()
            )),
        }
    }

    let missing = have.missing();
    let (Some(endpoint), Some(access_key_id), Some(access_key_secret)) = (
        have.endpoint.clone(),
        have.access_key_id.clone(),
        have.access_key_secret.clone(),
    ) else {
        return Err(ConfigError::Incomplete { missing, tried });
    };
    let ca_pem = match &have.ca_cert {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            Some(pem)
        }
        None if have.wants_tls() => return Err(ConfigError::NoCa { endpoint, tried }),
        None => None,
    };
    let ca_fingerprint = match (&ca_pem, &have.ca_cert) {
        (Some(pem), Some(path)) => Some(
            ferry_server::tls::fingerprint_of_pem(pem)
                .ok_or_else(|| ConfigError::BadCa { path: path.clone() })?,
        ),
        _ => have.ca_fingerprint.clone(),
    };
    Ok(Resolved {
        endpoint,
        access_key_id,
        access_key_secret,
        security_token: have.security_token,
        ca_cert: have.ca_cert,
        ca_pem,
        ca_fingerprint,
        region_id: have.region_id.unwrap_or_else(|| DEFAULT_REGION.to_owned()),
    })
}

/// `ferry configure`: saves (creates or updates) the profile `args.profile` in `<home>/.ferry/config.json`
/// and makes it the current one. Values come from `from_data_dir`'s credentials file, overridden by the
/// options given; an existing profile of that name keeps what neither provides. Returns the file's path.
pub fn configure(
    args: &ConnectionArgs,
    from_data_dir: Option<&Path>,
    home: Option<&Path>,
) -> Result<PathBuf, ConfigError> {
    let name = args
        .profile
        .as_deref()
        .and_then(non_empty)
        .ok_or(ConfigError::ConfigureWithoutProfile)?;
    let home = home.ok_or(ConfigError::NoHome)?;
    let path = profile_path(home);
    let mut file = load_profiles(home)?.unwrap_or_default();
    let old = file.get(&name).cloned().unwrap_or_default();

    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let mut have = Layered {
        endpoint: args.endpoint.as_deref().and_then(non_empty),
        access_key_id: args.access_key_id.as_deref().and_then(non_empty),
        access_key_secret: args.access_key_secret.as_deref().and_then(non_empty),
        security_token: args.security_token.as_deref().and_then(non_empty),
        ca_cert: args.ca_cert.as_deref().map(absolute),
        ca_fingerprint: None,
        region_id: args.region.as_deref().and_then(non_empty),
    };
    if let Some(dir) = from_data_dir {
        let creds_path = dir.join(ferry_server::ROOT_CREDENTIALS_FILE);
        let creds = load_root_credentials(dir)?.ok_or_else(|| ConfigError::Read {
            path: creds_path,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no credentials file: has `ferry server` been started with this --data-dir?",
            ),
        })?;
        let mut from_creds = Layered::from_credentials(&creds, dir);
        from_creds.ca_cert = from_creds.ca_cert.as_deref().map(absolute);
        have.fill(from_creds);
    }
    have.fill(Layered::from_profile(&old));
    let missing = have.missing();
    if !missing.is_empty() {
        return Err(ConfigError::ConfigureIncomplete { missing });
    }
    // A fingerprint recorded next to the CA path lets `activation-code create` print the agent
    // command even if the CA file later moves.
    let ca_fingerprint = match &have.ca_cert {
        Some(ca) => match std::fs::read_to_string(ca) {
            Ok(pem) => Some(
                ferry_server::tls::fingerprint_of_pem(&pem)
                    .ok_or_else(|| ConfigError::BadCa { path: ca.clone() })?,
            ),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: ca.clone(),
                    source,
                });
            }
        },
        None => have.ca_fingerprint.clone(),
    };
    let profile = Profile {
        name: name.clone(),
        endpoint: have.endpoint.unwrap_or_default(),
        access_key_id: have.access_key_id.unwrap_or_default(),
        access_key_secret: have.access_key_secret.unwrap_or_default(),
        ca_cert: have.ca_cert,
        ca_fingerprint,
        region_id: have.region_id.unwrap_or_else(|| DEFAULT_REGION.to_owned()),
        security_token: have.security_token,
    };
    match file.profiles.iter_mut().find(|p| p.name == name) {
        Some(slot) => *slot = profile,
        None => file.profiles.push(profile),
    }
    file.current = name;
    save_profiles(&path, &file)?;
    Ok(path)
}

/// Saves `profile` in `<home>/.ferry/config.json`, replacing one of the same name, without changing
/// the current profile (used for temporary STS credentials, which should be chosen on purpose with
/// `--profile`). Returns the file's path.
///
/// Errors: [`ConfigError::NoHome`], and `Read`/`Parse`/`Write` for an unusable profile file.
pub fn save_profile(home: Option<&Path>, profile: Profile) -> Result<PathBuf, ConfigError> {
    let home = home.ok_or(ConfigError::NoHome)?;
    let path = profile_path(home);
    let mut file = load_profiles(home)?.unwrap_or_default();
    match file.profiles.iter_mut().find(|p| p.name == profile.name) {
        Some(slot) => *slot = profile,
        None => file.profiles.push(profile),
    }
    save_profiles(&path, &file)?;
    Ok(path)
}

/// Writes the profile file atomically with mode 0600 (its directory 0700).
fn save_profiles(path: &Path, file: &ProfileFile) -> Result<(), ConfigError> {
    use std::os::unix::fs::DirBuilderExt as _;

    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ConfigError::Write { path, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(write_err(dir))?;
    let json = serde_json::to_vec_pretty(file).map_err(|e| ConfigError::Write {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    let mut json = json;
    json.push(b'\n');
    ferry_chunk::durable_write_secret(path, &json).map_err(write_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake server data directory with a credentials file and a real CA certificate.
    struct Fixture {
        _tmp: tempfile::TempDir,
        home: PathBuf,
        data: PathBuf,
        ca_pem: String,
    }

    const CA_PEM: &str =
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().join("home");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&home).expect("home");
        std::fs::create_dir_all(data.join("tls")).expect("data");
        std::fs::write(data.join("tls/ca.pem"), CA_PEM).expect("ca");
        let creds = RootCredentials {
            version: 1,
            account_id: "1234567890123456".into(),
            access_key_id: "LTAIroot".into(),
            access_key_secret: "rootsecret".into(),
            endpoint: "https://127.0.0.1:9443".into(),
            ca_cert: data.join("tls/ca.pem"),
            ca_fingerprint: "sha256:recorded".into(),
        };
        std::fs::write(
            data.join(ferry_server::ROOT_CREDENTIALS_FILE),
            serde_json::to_vec(&creds).expect("json"),
        )
        .expect("creds");
        Fixture {
            _tmp: tmp,
            home,
            data,
            ca_pem: CA_PEM.to_owned(),
        }
    }

    fn write_profiles(home: &Path, file: &ProfileFile) {
        save_profiles(&profile_path(home), file).expect("save");
    }

    fn args_with_data(f: &Fixture) -> ConnectionArgs {
        ConnectionArgs {
            data_dir: Some(f.data.clone()),
            ..Default::default()
        }
    }

    #[test]
    fn credentials_file_is_the_last_resort() {
        let f = fixture();
        let r = resolve(&args_with_data(&f), Some(&f.home)).expect("resolves from the data dir");
        assert_eq!(r.endpoint, "https://127.0.0.1:9443");
        assert_eq!(r.access_key_id, "LTAIroot");
        assert_eq!(r.access_key_secret, "rootsecret");
        assert_eq!(r.region_id, "local");
        assert_eq!(r.ca_pem.as_deref(), Some(f.ca_pem.as_str()));
        // Computed from the CA actually loaded, not copied from the file.
        let expected = ferry_server::tls::fingerprint_of_pem(&f.ca_pem);
        assert!(expected.is_some());
        assert_eq!(r.ca_fingerprint, expected);
    }

    #[test]
    fn current_profile_wins_over_the_credentials_file() {
        let f = fixture();
        write_profiles(
            &f.home,
            &ProfileFile {
                version: 1,
                current: "prod".into(),
                profiles: vec![
                    Profile {
                        name: "prod".into(),
                        endpoint: "https://prod:8443".into(),
                        access_key_id: "LTAIprod".into(),
                        access_key_secret: "prodsecret".into(),
                        ca_cert: Some(f.data.join("tls/ca.pem")),
                        region_id: "eu-1".into(),
                        ..Default::default()
                    },
                    Profile {
                        name: "lab".into(),
                        endpoint: "https://lab:8443".into(),
                        access_key_id: "LTAIlab".into(),
                        ..Default::default()
                    },
                ],
            },
        );
        let r = resolve(&args_with_data(&f), Some(&f.home)).expect("resolves");
        assert_eq!(
            (
                r.endpoint.as_str(),
                r.access_key_id.as_str(),
                r.region_id.as_str()
            ),
            ("https://prod:8443", "LTAIprod", "eu-1")
        );

        // --profile picks another one; what it lacks comes from the credentials file.
        let args = ConnectionArgs {
            profile: Some("lab".into()),
            ..args_with_data(&f)
        };
        let r = resolve(&args, Some(&f.home)).expect("resolves");
        assert_eq!(r.endpoint, "https://lab:8443");
        assert_eq!(r.access_key_id, "LTAIlab");
        assert_eq!(r.access_key_secret, "rootsecret");
        assert_eq!(r.region_id, "local");
    }

    #[test]
    fn flags_win_over_profiles_and_files() {
        let f = fixture();
        write_profiles(
            &f.home,
            &ProfileFile {
                version: 1,
                current: "p".into(),
                profiles: vec![Profile {
                    name: "p".into(),
                    endpoint: "https://profile:1".into(),
                    access_key_id: "LTAIprofile".into(),
                    access_key_secret: "profilesecret".into(),
                    region_id: "r-profile".into(),
                    ..Default::default()
                }],
            },
        );
        let args = ConnectionArgs {
            endpoint: Some("https://flag:2".into()),
            access_key_secret: Some("flagsecret".into()),
            region: Some("r-flag".into()),
            ..args_with_data(&f)
        };
        let r = resolve(&args, Some(&f.home)).expect("resolves");
        assert_eq!(r.endpoint, "https://flag:2");
        assert_eq!(r.access_key_id, "LTAIprofile");
        assert_eq!(r.access_key_secret, "flagsecret");
        assert_eq!(r.region_id, "r-flag");
        // The CA, absent from flags and profile, comes from the data directory.
        assert_eq!(r.ca_cert, Some(f.data.join("tls/ca.pem")));
    }

    #[test]
    fn a_security_token_comes_only_with_its_own_key() {
        let f = fixture();
        write_profiles(
            &f.home,
            &ProfileFile {
                version: 1,
                current: String::new(),
                profiles: vec![Profile {
                    name: "sts".into(),
                    access_key_id: "STS.temp".into(),
                    access_key_secret: "tempsecret".into(),
                    security_token: Some("token-1".into()),
                    ..Default::default()
                }],
            },
        );
        let sts = ConnectionArgs {
            profile: Some("sts".into()),
            ..args_with_data(&f)
        };
        let r = resolve(&sts, Some(&f.home)).expect("resolves");
        assert_eq!(r.access_key_id, "STS.temp");
        assert_eq!(r.security_token.as_deref(), Some("token-1"));
        // The endpoint and CA still come from the data directory.
        assert_eq!(r.endpoint, "https://127.0.0.1:9443");

        // Another key on the command line does not pick up the profile's token.
        let flags = ConnectionArgs {
            access_key_id: Some("LTAIother".into()),
            access_key_secret: Some("othersecret".into()),
            ..sts.clone()
        };
        let r = resolve(&flags, Some(&f.home)).expect("resolves");
        assert_eq!(r.access_key_id, "LTAIother");
        assert_eq!(r.security_token, None);

        // A token on the command line goes with the key it is given with.
        let token_flag = ConnectionArgs {
            access_key_id: Some("STS.flag".into()),
            access_key_secret: Some("flagsecret".into()),
            security_token: Some("token-2".into()),
            ..args_with_data(&f)
        };
        let r = resolve(&token_flag, Some(&f.home)).expect("resolves");
        assert_eq!(r.security_token.as_deref(), Some("token-2"));
        // The root key of the data directory never has one.
        let r = resolve(&args_with_data(&f), Some(&f.home)).expect("resolves");
        assert_eq!(r.security_token, None);
    }

    #[test]
    fn profiles_without_a_token_still_read_and_tokens_round_trip() {
        let old = r#"{"version":1,"current":"p","profiles":[{"name":"p","endpoint":"https://h:1",
            "access_key_id":"LTAIa","access_key_secret":"s","region_id":"local"}]}"#;
        let file: ProfileFile = serde_json::from_str(old).expect("a version 1 file without tokens");
        assert_eq!(file.get("p").and_then(|p| p.security_token.clone()), None);
        let json = serde_json::to_string(&file).expect("JSON");
        assert!(!json.contains("security_token"), "{json}");

        let f = fixture();
        let prof = Profile {
            name: "tmp".into(),
            access_key_id: "STS.x".into(),
            security_token: Some("tok".into()),
            ..Default::default()
        };
        let path = save_profile(Some(&f.home), prof.clone()).expect("saved");
        let back = load_profiles(&f.home).expect("read").expect("exists");
        assert_eq!(back.get("tmp"), Some(&prof));
        assert_eq!(back.version, 1);
        // Saving temporary credentials does not change the current profile.
        assert_eq!(back.current, "");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn nothing_configured_names_every_place_tried() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let args = ConnectionArgs {
            data_dir: Some(tmp.path().join("nowhere")),
            ..Default::default()
        };
        let err = resolve(&args, Some(tmp.path())).expect_err("nothing is configured");
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Incomplete { .. }), "{msg}");
        assert!(msg.contains("--endpoint"), "{msg}");
        assert!(msg.contains(".ferry/config.json (does not exist)"), "{msg}");
        assert!(msg.contains("nowhere/root-credentials.json"), "{msg}");
        assert!(
            msg.contains("endpoint, access key id, access key secret"),
            "{msg}"
        );
    }

    #[test]
    fn an_unknown_profile_is_an_error_listing_the_known_ones() {
        let f = fixture();
        write_profiles(
            &f.home,
            &ProfileFile {
                version: 1,
                current: String::new(),
                profiles: vec![Profile {
                    name: "a".into(),
                    ..Default::default()
                }],
            },
        );
        let args = ConnectionArgs {
            profile: Some("b".into()),
            ..args_with_data(&f)
        };
        let msg = resolve(&args, Some(&f.home))
            .expect_err("no profile b")
            .to_string();
        assert!(msg.contains("\"b\"") && msg.contains("it has: a"), "{msg}");
    }

    #[test]
    fn an_https_endpoint_without_a_ca_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let args = ConnectionArgs {
            endpoint: Some("https://h:1".into()),
            access_key_id: Some("k".into()),
            access_key_secret: Some("s".into()),
            data_dir: Some(tmp.path().join("none")),
            ..Default::default()
        };
        let err = resolve(&args, Some(tmp.path())).expect_err("no CA");
        assert!(matches!(err, ConfigError::NoCa { .. }), "{err}");
        let plain = ConnectionArgs {
            endpoint: Some("http://h:1".into()),
            ..args
        };
        let r = resolve(&plain, Some(tmp.path())).expect("plain http needs no CA");
        assert!(r.ca_pem.is_none());
    }

    #[test]
    fn configure_saves_a_private_profile_and_makes_it_current() {
        use std::os::unix::fs::PermissionsExt as _;
        let f = fixture();
        let args = ConnectionArgs {
            profile: Some("local".into()),
            endpoint: Some("https://override:1".into()),
            ..Default::default()
        };
        let path = configure(&args, Some(&f.data), Some(&f.home)).expect("configure");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let file = load_profiles(&f.home).expect("read").expect("exists");
        assert_eq!(file.current, "local");
        let p = file.get("local").expect("saved");
        assert_eq!(p.endpoint, "https://override:1");
        assert_eq!(p.access_key_id, "LTAIroot");
        assert_eq!(p.access_key_secret, "rootsecret");
        assert!(p.ca_cert.as_deref().is_some_and(Path::is_absolute));
        assert_eq!(
            p.ca_fingerprint,
            ferry_server::tls::fingerprint_of_pem(&f.ca_pem)
        );

        // Updating one field keeps the others.
        let args = ConnectionArgs {
            profile: Some("local".into()),
            region: Some("eu-2".into()),
            ..Default::default()
        };
        configure(&args, None, Some(&f.home)).expect("update");
        let file = load_profiles(&f.home).expect("read").expect("exists");
        let p = file.get("local").expect("kept");
        assert_eq!(
            (p.endpoint.as_str(), p.region_id.as_str()),
            ("https://override:1", "eu-2")
        );
        assert_eq!(file.profiles.len(), 1);
    }

    #[test]
    fn configure_without_enough_values_says_which_options_to_pass() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let args = ConnectionArgs {
            profile: Some("x".into()),
            endpoint: Some("https://h:1".into()),
            ..Default::default()
        };
        let msg = configure(&args, None, Some(tmp.path()))
            .expect_err("incomplete")
            .to_string();
        assert!(
            msg.contains("--access-key-id") && msg.contains("--access-key-secret"),
            "{msg}"
        );
        assert!(!profile_path(tmp.path()).exists());
    }
}
