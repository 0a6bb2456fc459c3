//! TLS material for the cloud links (MQTT and WebSocket alike): a private CA, the device's client
//! certificate and its key, read from PEM files each time a link connects, so a renewed
//! certificate is used without a restart. One crypto provider (ring) is named explicitly in every
//! config, so no process-wide default is needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {reason}")]
    File { what: &'static str, path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The three files of a mutual-TLS identity.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(what: &'static str, path: &Path, reason: impl std::fmt::Display) -> TlsError {
    // The reason comes from the PEM parser or the file system: never the key's bytes.
    TlsError::File { what, path: path.display().to_string(), reason: reason.to_string() }
}

pub fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(what, path, e))?;
    if certs.is_empty() {
        return Err(file_err(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err("private key", path, e))
}

pub fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs("CA file", path)? {
        roots.add(c).map_err(|e| file_err("CA file", path, e))?;
    }
    Ok(roots)
}

/// A client config that trusts only `files.ca` and presents `files.cert`.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = roots(&files.ca)?;
    let chain = certs("certificate", &files.cert)?;
    let key = key(&files.key)?;
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            TlsError::Config(format!("{} and {} do not go together: {e}", files.cert.display(), files.key.display()))
        })?;
    Ok(Arc::new(cfg))
}

/// A server config that presents `files.cert` and requires a client certificate signed by
/// `files.ca` (the reference studio's WebSocket endpoint).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&files.ca)?), provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs("certificate", &files.cert)?, key(&files.key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(cfg))
}

/// What identifies the files' current content cheaply (modification time and size of each): a
/// link reconnects with the new material when it changes.
pub fn fingerprint(files: &TlsFiles) -> Vec<Option<(SystemTime, u64)>> {
    [&files.ca, &files.cert, &files.key]
        .iter()
        .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named_and_nothing_leaks() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("device.key");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n")
            .unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "nothing here").unwrap();
        let files = TlsFiles { ca: empty.clone(), cert: dir.path().join("absent.pem"), key: key.clone() };
        let e = client_config(&files).unwrap_err().to_string();
        assert!(e.contains("CA file") && e.contains("ca.pem"), "{e}");
        let files = TlsFiles { ca: dir.path().join("absent.pem"), ..files };
        let e = client_config(&files).unwrap_err().to_string();
        assert!(e.contains("absent.pem"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "{e}");
        assert_eq!(fingerprint(&files).iter().filter(|f| f.is_some()).count(), 1);
    }
}
