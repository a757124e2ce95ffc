//! The server's own certificate authority and TLS certificate.
//!
//! On first start the server creates a CA and a server certificate signed by it, under `<data>/tls/`. Agents
//! pin the CA by the SHA-256 fingerprint of its DER encoding (printed by `ferry server` and carried in every
//! activation command), so no public CA is needed. A restart reuses the files; the server certificate is
//! re-issued (by the same CA) when the requested host names change.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::ServerError;

/// Paths of the TLS material and the CA fingerprint.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// `sha256:<hex>` of the CA certificate's DER.
    pub ca_fingerprint: String,
    pub ca_pem: String,
}

/// `sha256:<hex>` of the first certificate in a PEM text (what agents pin).
pub fn fingerprint_of_pem(pem: &str) -> Option<String> {
    ferry_types::protocol::ca_fingerprint(pem)
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> ServerError {
    ServerError::Tls(format!("{what}: {e}"))
}

/// Loads the TLS material from `dir`, creating whatever is missing. `names` are the host names and IP
/// addresses the server certificate must be valid for.
pub fn ensure(dir: &Path, names: &[String]) -> Result<TlsMaterial, ServerError> {
    fs::create_dir_all(dir).map_err(|e| ServerError::io(dir, e))?;
    let ca_cert_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    let names_path = dir.join("server.names");

    let (ca_pem, ca_key_pem) = if ca_cert_path.exists() && ca_key_path.exists() {
        (
            fs::read_to_string(&ca_cert_path).map_err(|e| ServerError::io(&ca_cert_path, e))?,
            fs::read_to_string(&ca_key_path).map_err(|e| ServerError::io(&ca_key_path, e))?,
        )
    } else {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("CA params", e))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Ferry server CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_after = rcgen::date_time_ymd(2046, 1, 1);
        let key = KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| tls_err("CA certificate", e))?;
        write_secret(&ca_key_path, key.serialize_pem().as_bytes())?;
        write_public(&ca_cert_path, cert.pem().as_bytes())?;
        (cert.pem(), key.serialize_pem())
    };

    let wanted_names = names.join("\n");
    let have_names = fs::read_to_string(&names_path).unwrap_or_default();
    if !(cert_path.exists() && key_path.exists() && have_names == wanted_names) {
        let ca_key =
            KeyPair::from_pem(&ca_key_pem).map_err(|e| tls_err("reading the CA key", e))?;
        let ca_params = CertificateParams::from_ca_cert_pem(&ca_pem)
            .map_err(|e| tls_err("reading the CA certificate", e))?;
        let ca = ca_params
            .self_signed(&ca_key)
            .map_err(|e| tls_err("loading the CA", e))?;
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(|e| tls_err("server certificate names", e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Ferry server");
        params.not_after = rcgen::date_time_ymd(2046, 1, 1);
        let key = KeyPair::generate().map_err(|e| tls_err("server key", e))?;
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .map_err(|e| tls_err("server certificate", e))?;
        write_secret(&key_path, key.serialize_pem().as_bytes())?;
        write_public(&cert_path, cert.pem().as_bytes())?;
        write_public(&names_path, wanted_names.as_bytes())?;
    }

    let ca_fingerprint = fingerprint_of_pem(&ca_pem).ok_or_else(|| {
        ServerError::Tls(format!(
            "{} is not a PEM certificate",
            ca_cert_path.display()
        ))
    })?;
    Ok(TlsMaterial {
        ca_cert: ca_cert_path,
        server_cert: cert_path,
        server_key: key_path,
        ca_fingerprint,
        ca_pem,
    })
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), ServerError> {
    ferry_chunk::durable_write(path, bytes).map_err(|e| ServerError::io(path, e))
}

/// Writes a file readable by its owner only (keys, credentials), durably.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), ServerError> {
    ferry_chunk::durable_write_secret(path, bytes).map_err(|e| ServerError::io(path, e))
}
