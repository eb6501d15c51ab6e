//! The certificates HTTPS listeners present: loaded from PEM files (or obtained by
//! ACME), chosen per connection by the name the client asks for (SNI), wildcards
//! included. The table is swapped whole when a file changes or on reload; a
//! connection keeps the certificate it was handshaken with.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The ALPN protocol of the ACME TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Where ACME HTTP-01 challenges are fetched (RFC 8555 §8.3), on plain HTTP.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// A certificate with its key, ready to serve, and what a person needs to know of it.
#[derive(Clone)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// The DNS names (and IP addresses) of the leaf's subjectAltName, lowercase;
    /// its subject CN when it has none.
    pub names: Vec<String>,
    pub not_after: SystemTime,
    pub not_before: SystemTime,
    /// Where it came from: "certs/site.pem" or "acme".
    pub source: String,
}

impl Loaded {
    /// How long until it expires (zero when it has).
    pub fn remaining(&self) -> Duration {
        self.not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }

    /// Whether it serves `name` (exactly, or by a `*.` wildcard one label deep).
    pub fn covers(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.names.iter().any(|n| {
            n == &name
                || n.strip_prefix("*.").is_some_and(|rest| {
                    name.split_once('.')
                        .is_some_and(|(first, tail)| !first.is_empty() && tail == rest)
                })
        })
    }
}

/// Read a certificate chain and its private key from PEM files and check that they
/// belong together. The error says which file and what is wrong with it.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Loaded, String> {
    let chain = read_chain(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "key file {}: {}",
            key.display(),
            pem_error(&e, "a PEM private key")
        )
    })?;
    certified(chain, key_der, &cert.display().to_string())
        .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))
}

/// A chain and key already in memory (ACME): checked the same way.
pub fn from_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    source: &str,
) -> Result<Loaded, String> {
    certified(chain, key, source)
}

/// Read the PEM certificates of a file (leaf first).
pub fn read_chain(cert: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "certificate file {}: {}",
                cert.display(),
                pem_error(&e, "PEM certificates")
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "certificate file {}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
            cert.display()
        ));
    }
    Ok(chain)
}

fn pem_error(e: &rustls::pki_types::pem::Error, what: &str) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => format!("no {what} in it"),
        other => format!("not {what}: {other:?}"),
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    source: &str,
) -> Result<Loaded, String> {
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the private key cannot be used: {e}"))?;
    let info = describe(&chain[0])?;
    let key = CertifiedKey::new(chain, signing);
    match key.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(
                "the private key does not belong to the certificate (their public keys differ)"
                    .into(),
            )
        }
        // Some key types cannot tell; the handshake would.
        Err(_) => {}
    }
    Ok(Loaded {
        key: Arc::new(key),
        names: info.names,
        not_after: info.not_after,
        not_before: info.not_before,
        source: source.to_owned(),
    })
}

/// What browsers would say of a certificate chain: verified against the usual
/// public roots (webpki-roots) with the file's intermediates, for the leaf's first
/// name. `Ok(())` when they accept it; otherwise the sentence to show (a private CA,
/// a missing intermediate, a chain out of order ...).
pub fn public_trust(loaded: &Loaded) -> Result<(), String> {
    use rustls::client::danger::ServerCertVerifier;
    let chain = &loaded.key.cert;
    let Some(name) = loaded.names.first() else {
        return Err("it names no host".into());
    };
    let host = name
        .strip_prefix("*.")
        .map_or(name.clone(), |rest| format!("x.{rest}"));
    let Ok(server_name) = rustls::pki_types::ServerName::try_from(host) else {
        return Ok(());
    };
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| e.to_string())?;
    if chain.len() == 1 {
        if let Ok(d) = describe(&chain[0]) {
            if d.subject == d.issuer {
                return Err("it is self-signed: browsers and other clients refuse it unless it is installed on them as trusted".into());
            }
        }
    }
    let now = rustls::pki_types::UnixTime::now();
    match verifier.verify_server_cert(&chain[0], &chain[1..], &server_name, &[], now) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InvalidCertificate(e)) => {
            use rustls::CertificateError as C;
            let issuer = describe(chain.last().unwrap_or(&chain[0]))
                .map(|d| d.issuer)
                .unwrap_or_default();
            Err(match e {
                C::UnknownIssuer if chain.len() == 1 => format!(
                    "its issuer ({issuer}) is not a public CA and the file has no intermediate: browsers will refuse it unless the issuing CA is installed (self-signed or a private CA); a public certificate's file must hold the intermediates after the leaf"
                ),
                C::UnknownIssuer => format!(
                    "the chain ends at {issuer}, which is not a public root: a private CA, or an intermediate missing from the file"
                ),
                C::BadSignature => "the chain is out of order or holds a certificate that did not sign the one before it (leaf first, then each issuer)".into(),
                other => format!("{other:?}"),
            })
        }
        Err(other) => Err(other.to_string()),
    }
}

/// Names covered by more than one of `certs`: (name, the files that claim it).
pub fn shared_names(certs: &[Loaded]) -> Vec<(String, Vec<String>)> {
    let mut by_name: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for c in certs {
        for n in &c.names {
            by_name.entry(n).or_default().push(c.source.clone());
        }
    }
    by_name
        .into_iter()
        .filter(|(_, files)| files.len() > 1)
        .map(|(n, files)| (n.to_owned(), files))
        .collect()
}

/// What a certificate says of itself.
pub struct Described {
    pub subject: String,
    pub issuer: String,
    /// subjectAltName DNS names and IP addresses (lowercase); the subject CN when there
    /// are none.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Parse a DER certificate.
pub fn describe(der: &CertificateDer<'_>) -> Result<Described, String> {
    use x509_parser::extensions::GeneralName;
    let (_, c) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        names.push(std::net::IpAddr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        names.push(std::net::IpAddr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        names.extend(
            c.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(|s| s.to_ascii_lowercase()),
        );
    }
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    Ok(Described {
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        names,
        not_before: at(c.validity().not_before.timestamp()),
        not_after: at(c.validity().not_after.timestamp()),
    })
}

/// The certificates of the HTTPS listeners, by name. Shared by every listener, the
/// file watcher and ACME; cloned `Arc`s only, no lock held during a handshake.
#[derive(Default)]
pub struct Certs {
    table: RwLock<Arc<Table>>,
    /// TLS-ALPN-01 challenge certificates, by the name being validated.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 challenge answers: token → key authorization.
    http01: RwLock<HashMap<String, String>>,
}

/// Each source's certificates ("files" for the configured ones, "acme" for the
/// obtained ones); a name is looked up in every source, the files first.
#[derive(Default)]
struct Table {
    sources: Vec<(String, Vec<Loaded>)>,
}

impl Table {
    fn find(&self, name: Option<&str>) -> Option<&Loaded> {
        let all = || self.sources.iter().flat_map(|(_, l)| l.iter());
        match name {
            Some(n) => {
                // An exact name wins over a wildcard.
                let n = n.to_ascii_lowercase();
                all()
                    .find(|l| l.names.contains(&n))
                    .or_else(|| all().find(|l| l.covers(&n)))
            }
            None => None,
        }
        // No SNI (an IP-address URL) or an unknown name: the first certificate.
        .or_else(|| all().next())
    }
}

impl Certs {
    pub fn new() -> Arc<Certs> {
        Arc::new(Certs::default())
    }

    /// Replace the certificates of one source.
    pub fn install(&self, source: &str, certs: Vec<Loaded>) {
        let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
        let mut sources: Vec<(String, Vec<Loaded>)> = t
            .sources
            .iter()
            .filter(|(s, _)| s != source)
            .cloned()
            .collect();
        sources.push((source.to_owned(), certs));
        // Files first: a configured certificate wins over an obtained one.
        sources.sort_by_key(|(s, _)| s != "files");
        *t = Arc::new(Table { sources });
    }

    /// Every certificate served now, with its source.
    pub fn all(&self) -> Vec<Loaded> {
        let t = self.table.read().unwrap_or_else(|p| p.into_inner()).clone();
        t.sources.iter().flat_map(|(_, l)| l.clone()).collect()
    }

    /// The certificate a client asking for `name` gets.
    pub fn find(&self, name: Option<&str>) -> Option<Loaded> {
        let t = self.table.read().unwrap_or_else(|p| p.into_inner()).clone();
        t.find(name).cloned()
    }

    /// Serve `key` to TLS-ALPN-01 validation of `name` until [`Certs::clear_challenge`].
    pub fn set_challenge(&self, name: &str, key: Arc<CertifiedKey>) {
        self.challenges
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_ascii_lowercase(), key);
    }

    pub fn clear_challenge(&self, name: &str) {
        self.challenges
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name.to_ascii_lowercase());
    }

    /// Answer `GET /.well-known/acme-challenge/<token>` with `authorization`.
    pub fn set_http01(&self, token: &str, authorization: &str) {
        self.http01
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_owned(), authorization.to_owned());
    }

    pub fn clear_http01(&self, token: &str) {
        self.http01
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }

    /// The key authorization for an HTTP-01 token, when a challenge is pending.
    pub fn http01(&self, token: &str) -> Option<String> {
        self.http01
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        let acme = hello
            .alpn()
            .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // A validation handshake gets the challenge certificate or nothing.
            let name = name?.to_ascii_lowercase();
            return self
                .challenges
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .cloned();
        }
        let t = self.table.read().unwrap_or_else(|p| p.into_inner()).clone();
        t.find(name).map(|l| l.key.clone())
    }
}

/// The configured certificate files, as last read: what the watcher compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub path: PathBuf,
    pub modified: Option<SystemTime>,
    pub len: u64,
}

impl FileStamp {
    pub fn of(path: &Path) -> FileStamp {
        let meta = std::fs::metadata(path).ok();
        FileStamp {
            path: path.to_owned(),
            modified: meta.as_ref().and_then(|m| m.modified().ok()),
            len: meta.map(|m| m.len()).unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(names: &[&str]) -> Loaded {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .expect("cert");
        let chain = vec![ck.cert.der().clone()];
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).expect("key");
        from_der(chain, key, "test").expect("loads")
    }

    #[test]
    fn names_and_wildcards() {
        let certs = Certs::new();
        let a = loaded(&["a.example"]);
        let w = loaded(&["*.example"]);
        certs.install("files", vec![a.clone(), w]);
        assert_eq!(certs.find(Some("a.example")).unwrap().names, a.names);
        assert_eq!(
            certs.find(Some("B.example")).unwrap().names,
            vec!["*.example"]
        );
        // A wildcard covers one label only.
        assert!(!loaded(&["*.example"]).covers("x.y.example"));
        assert!(!loaded(&["*.example"]).covers("example"));
        // No SNI: the first certificate.
        assert_eq!(certs.find(None).unwrap().names, a.names);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let a = rcgen::generate_simple_self_signed(vec!["a.example".to_string()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.example".to_string()]).unwrap();
        let key = PrivateKeyDer::try_from(b.signing_key.serialize_der()).unwrap();
        let e = from_der(vec![a.cert.der().clone()], key, "test")
            .err()
            .unwrap();
        assert!(e.contains("does not belong"), "{e}");
    }
}
