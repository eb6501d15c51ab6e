//! TLS to upstream servers (rustls with the ring provider).

use crate::config::{Protocol, UpstreamTls};
use crate::error::{Cause, ProxyError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A TLS client for one upstream: trusted roots, and the name to verify.
pub struct Tls {
    connector: TlsConnector,
    server_name: Option<String>,
    /// What ALPN offers (to name a refusal).
    protocol: Protocol,
}

impl Tls {
    /// Trust the webpki roots plus the PEM certificates in `cfg.ca`, if set; offer
    /// the ALPN protocols `protocol` speaks (`h2`, `http/1.1`, or both for `auto`).
    pub fn new(cfg: &UpstreamTls, protocol: Protocol) -> io::Result<Tls> {
        let roots = roots(cfg)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = match protocol {
            Protocol::H1 => vec![b"http/1.1".to_vec()],
            Protocol::H2 => vec![b"h2".to_vec()],
            Protocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: cfg.server_name.clone(),
            protocol,
        })
    }

    /// Handshake over `tcp` with `host` (or the configured server name).
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
        what: &str,
    ) -> Result<TlsStream<TcpStream>, ProxyError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_owned()).map_err(|e| {
            ProxyError::new(
                Cause::TlsProtocol,
                format!("{what}: invalid TLS server name {name:?}: {e}"),
            )
        })?;
        self.connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| classify(e, what, self.protocol))
    }
}

/// The roots an upstream's certificates are checked against: the webpki roots plus
/// the PEM certificates in `cfg.ca`, if set (also what `healgate probe` trusts).
pub fn roots(cfg: &UpstreamTls) -> io::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &cfg.ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("reading CA file {}: {e}", ca.display()),
                )
            })?;
        for cert in certs {
            roots.add(cert).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("CA file {}: {e}", ca.display()),
                )
            })?;
        }
    }
    Ok(roots)
}

/// A failed handshake: a certificate problem, a server refusing the only protocol
/// offered (`protocol = "h2"` to a server without h2), or any other TLS failure.
fn classify(e: io::Error, what: &str, protocol: Protocol) -> ProxyError {
    let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    if protocol == Protocol::H2
        && tls
            == Some(&rustls::Error::AlertReceived(
                rustls::AlertDescription::NoApplicationProtocol,
            ))
    {
        return super::h2::refused_h2(
            what,
            "it refused the handshake: no ALPN protocol in common, alert no_application_protocol",
        );
    }
    let cause = match tls {
        Some(rustls::Error::InvalidCertificate(_))
        | Some(rustls::Error::NoCertificatesPresented) => Cause::TlsCertificate,
        Some(_) => Cause::TlsProtocol,
        None if e.kind() == io::ErrorKind::UnexpectedEof
            || e.kind() == io::ErrorKind::ConnectionReset =>
        {
            Cause::TlsProtocol
        }
        None => Cause::TlsProtocol,
    };
    ProxyError::new(cause, format!("{what}: TLS handshake failed: {e}"))
}
