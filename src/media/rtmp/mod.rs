//! The native RTMP(S) publisher: one tokio task per destination ingest instead of an FFmpeg
//! process, fed from the fan-out with the FLV tags the encoder (or a relayed camera) produces.
//!
//! - [`client`]: one publishing session (handshake, `connect` … `publish`, chunking, answers).
//! - [`incoming`]: the server's messages, read with every length checked.
//! - [`publisher`]: the supervised task: connect, publish, send, and on failure report the
//!   server's exact answer and retry with the same backoff and isolation rules as an FFmpeg job.

pub mod client;
pub mod incoming;
pub mod publisher;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::media::destination::TlsOptions;
use client::PublishError;

/// An ingest address, parsed from a destination's URL (the key is not part of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestAddr {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The RTMP application: the URL's path (and query), e.g. `live2` or `live2?backup=1`.
    pub app: String,
    /// The URL as given, which servers want back as `tcUrl`.
    pub tc_url: String,
}

/// Why an ingest URL cannot be published to (destinations are validated when added, so this is a
/// stored URL that no longer parses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("invalid ingest URL: {0}")]
    Invalid(String),
    #[error("unsupported ingest URL scheme {0:?}")]
    Scheme(String),
    #[error("the ingest URL has no host")]
    NoHost,
}

impl IngestAddr {
    pub fn parse(base: &str) -> Result<IngestAddr, AddrError> {
        let base = base.trim_end_matches('/');
        let u = url::Url::parse(base).map_err(|e| AddrError::Invalid(e.to_string()))?;
        let tls = match u.scheme() {
            "rtmp" => false,
            "rtmps" => true,
            s => return Err(AddrError::Scheme(s.to_string())),
        };
        let host = u.host_str().filter(|h| !h.is_empty()).ok_or(AddrError::NoHost)?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = u.port().unwrap_or(if tls { 443 } else { 1935 });
        let mut app = u.path().trim_start_matches('/').to_string();
        if let Some(q) = u.query() {
            app = format!("{app}?{q}");
        }
        Ok(IngestAddr { tls, host, port, app, tc_url: base.to_string() })
    }
}

/// A connected byte stream to the ingest: plain TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Opens TCP (and TLS for `rtmps://`) within `timeout`.
pub async fn connect(
    addr: &IngestAddr,
    tls: Option<&TlsOptions>,
    timeout: Duration,
) -> Result<Box<dyn Stream>, PublishError> {
    let shown = format!("{}:{}", addr.host, addr.port);
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect((addr.host.as_str(), addr.port))).await {
        Err(_) => return Err(PublishError::Timeout { stage: "the TCP connection", secs: timeout.as_secs_f64() }),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(PublishError::ConnectRefused(shown))
        }
        Ok(Err(e)) => return Err(PublishError::Unreachable { host: shown, reason: e.to_string() }),
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    if !addr.tls {
        return Ok(Box::new(tcp));
    }
    let config = tls_config(tls)?;
    let name = ServerName::try_from(addr.host.clone()).map_err(|e| PublishError::Tls(format!("server name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Err(_) => Err(PublishError::Timeout { stage: "the TLS handshake", secs: timeout.as_secs_f64() }),
        Ok(Err(e)) => Err(PublishError::Tls(tls_reason(&e))),
        Ok(Ok(s)) => Ok(Box::new(s)),
    }
}

fn tls_reason(e: &std::io::Error) -> String {
    let inner = e.get_ref().map(|i| i.to_string()).unwrap_or_else(|| e.to_string());
    if inner.contains("certificate") || inner.contains("UnknownIssuer") || inner.contains("NotValidForName") {
        format!("the ingest's TLS certificate is not trusted: {inner}")
    } else {
        inner
    }
}

fn tls_config(tls: Option<&TlsOptions>) -> Result<Arc<rustls::ClientConfig>, PublishError> {
    // The crypto provider is named, as everywhere in the agent (ring).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PublishError::Tls(e.to_string()))?;
    let verify = tls.is_none_or(|t| t.verify);
    let cfg = if verify {
        let ca = tls.and_then(|t| t.ca_file.clone()).ok_or_else(|| {
            PublishError::Tls("no CA to verify the ingest with (install ca-certificates or give a CA file)".into())
        })?;
        let roots = roots(&ca)?;
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider))).with_no_client_auth()
    };
    Ok(Arc::new(cfg))
}

/// The CAs an ingest's certificate is checked against (the system bundle, or the destination's CA file).
fn roots(path: &std::path::Path) -> Result<rustls::RootCertStore, PublishError> {
    use rustls::pki_types::pem::PemObject;
    let bad = |e: &dyn std::fmt::Display| PublishError::Tls(format!("CA file {}: {e}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
        roots.add(c.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no PEM certificate in it"));
    }
    Ok(roots)
}

/// For a destination added with TLS verification off (an ingest with a self-made certificate):
/// the connection is encrypted but the server is not authenticated, as the operator asked. Also used for
/// cameras' HTTPS ONVIF endpoints (the PTZ client), whose certificates are self-made.
#[derive(Debug)]
pub(crate) struct NoVerify(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_urls_parse_as_servers_expect() {
        let a = IngestAddr::parse("rtmp://a.rtmp.youtube.com/live2").unwrap();
        assert_eq!((a.tls, a.host.as_str(), a.port, a.app.as_str()), (false, "a.rtmp.youtube.com", 1935, "live2"));
        let b = IngestAddr::parse("rtmp://b.rtmp.youtube.com/live2?backup=1").unwrap();
        assert_eq!(b.app, "live2?backup=1");
        let f = IngestAddr::parse("rtmps://live-api-s.facebook.com:443/rtmp/").unwrap();
        assert_eq!((f.tls, f.port, f.app.as_str()), (true, 443, "rtmp"));
        assert_eq!(f.tc_url, "rtmps://live-api-s.facebook.com:443/rtmp");
        let n = IngestAddr::parse("rtmp://127.0.0.1:1936/app/inst").unwrap();
        assert_eq!((n.port, n.app.as_str()), (1936, "app/inst"));
        assert!(IngestAddr::parse("http://x/app").is_err());
        assert!(IngestAddr::parse("rtmp:///app").is_err());
    }
}
