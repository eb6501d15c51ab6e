//! TLS at the edge: the HTTPS listeners' certificates ([`certs`]), their server
//! configuration (TLS 1.2 and 1.3, ALPN h2 and http/1.1), and the watcher that
//! re-reads certificate files when they change.

pub mod acme;
pub mod certs;
pub mod io;

use crate::config::EdgeTls;
use certs::{Certs, FileStamp, Loaded};
use std::sync::{Arc, Mutex};

/// What every HTTPS listener shares: the certificate table and the rustls config.
pub struct Edge {
    pub certs: Arc<Certs>,
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The configured files and their stamps when last read.
    files: Mutex<Vec<(crate::config::CertFiles, FileStamp, FileStamp)>>,
}

impl Edge {
    /// The edge for `cfg`, its certificate files read (the config check read them
    /// too; a file that changed in between is reported here).
    pub fn new(cfg: &EdgeTls) -> Result<Arc<Edge>, String> {
        let certs = Certs::new();
        let edge = Arc::new(Edge {
            acceptor: tokio_rustls::TlsAcceptor::from(server_config(certs.clone())),
            certs,
            files: Mutex::new(Vec::new()),
        });
        edge.load(&cfg.certs)?;
        Ok(edge)
    }

    /// Read `files` and serve them (reload: the new list replaces the old).
    pub fn load(&self, files: &[crate::config::CertFiles]) -> Result<Vec<Loaded>, String> {
        let mut loaded = Vec::new();
        let mut stamps = Vec::new();
        for f in files {
            let (c, k) = (FileStamp::of(&f.cert), FileStamp::of(&f.key));
            loaded.push(certs::load_pair(&f.cert, &f.key)?);
            stamps.push((f.clone(), c, k));
        }
        self.certs.install("files", loaded.clone());
        *self.files.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        Ok(loaded)
    }

    /// Re-read the files whose size or modification time changed. `Ok(None)`: none
    /// did; `Ok(Some(..))`: these are served now; `Err`: a changed file does not
    /// load, and the certificates served before stay.
    pub fn refresh(&self) -> Result<Option<Vec<Loaded>>, String> {
        let files: Vec<_> = {
            let stamps = self.files.lock().unwrap_or_else(|p| p.into_inner());
            let changed = stamps
                .iter()
                .any(|(f, c, k)| FileStamp::of(&f.cert) != *c || FileStamp::of(&f.key) != *k);
            if !changed {
                return Ok(None);
            }
            stamps.iter().map(|(f, ..)| f.clone()).collect()
        };
        match self.load(&files) {
            Ok(l) => Ok(Some(l)),
            Err(e) => {
                // Not again every tick: the next change is tried again.
                let mut stamps = self.files.lock().unwrap_or_else(|p| p.into_inner());
                for (f, c, k) in stamps.iter_mut() {
                    *c = FileStamp::of(&f.cert);
                    *k = FileStamp::of(&f.key);
                }
                Err(e)
            }
        }
    }
}

/// The server side of rustls: TLS 1.3 and 1.2 (ring), certificates by SNI, ALPN h2
/// then http/1.1, and `acme-tls/1` for TLS-ALPN-01 validation. That one is offered
/// whether ACME is on or not (a reload may turn it on): only a CA's validation asks
/// for it, and [`Certs`] answers it with a pending challenge's certificate or not at
/// all.
pub fn server_config(certs: Arc<Certs>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(certs);
    // Stateless session tickets (keys made at start and rotated by rustls every 6
    // hours): a client coming back resumes however many came in between, which
    // the default cache of 256 sessions does not allow. Without a ticketer (ring
    // failing to make keys) that cache is what remains.
    match rustls::crypto::ring::Ticketer::new() {
        Ok(ticketer) => config.ticketer = ticketer,
        Err(e) => tracing::warn!("TLS session tickets are off ({e}): resumption by cache only"),
    }
    config.alpn_protocols = vec![
        b"h2".to_vec(),
        b"http/1.1".to_vec(),
        certs::ACME_TLS_ALPN.to_vec(),
    ];
    Arc::new(config)
}
