//! `wss://`: the TLS layer under the WebSocket, by rustls with the ring provider,
//! trusting the Mozilla roots of webpki-roots plus the roots a program adds.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{ClientError, HubUrl};

/// The TLS client settings: the Mozilla roots and `extra_roots` (DER).
fn client_config(extra_roots: &[Vec<u8>]) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for (i, der) in extra_roots.iter().enumerate() {
        roots.add(CertificateDer::from(der.clone())).map_err(|e| {
            ClientError::TlsConfig(format!("extra root certificate #{}: {e}", i + 1))
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::TlsConfig(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The TLS handshake with `hub`'s host over `tcp`; the certificate must name the
/// host (a DNS name or an IP address) and chain to a trusted root.
pub(super) async fn wrap(
    hub: &HubUrl,
    tcp: TcpStream,
    extra_roots: &[Vec<u8>],
) -> Result<TlsStream<TcpStream>, ClientError> {
    let config = client_config(extra_roots)?;
    let name = ServerName::try_from(hub.host().to_owned())
        .map_err(|e| ClientError::TlsConfig(format!("`{}` as a server name: {e}", hub.host())))?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| ClientError::Tls {
            host: hub.host().to_owned(),
            detail: e.to_string(),
        })
}
