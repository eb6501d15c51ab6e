//! ACME (RFC 8555): the certificate for `gateway.tls.acme.domains`, obtained from the
//! configured directory, stored under `data_dir/acme/`, served through [`Certs`] and
//! renewed ahead of its expiry.
//!
//! One task per config ([`spawn`]). At start it serves a stored certificate that is
//! still good, else orders one at once. Then it sleeps until the renewal time (looking
//! again at least hourly) and orders a new one: the account (registered once, its
//! credentials kept in `acme/account-<directory>.json`, 0600), an order for every
//! domain, each authorization answered by TLS-ALPN-01 (RFC 8737: a self-signed
//! certificate carrying the key authorization's digest, handed to the HTTPS
//! listeners' resolver for `acme-tls/1` handshakes) or HTTP-01 (the plain listeners
//! answer `/.well-known/acme-challenge/<token>`), then a CSR for a fresh key, the
//! chain fetched, both written to `acme/<first domain>/` (0600) and installed. A
//! failed step is tried again, the whole order, after 1 min doubling up to 1 h
//! (`HEALGATE_ACME_FIRST_RETRY` shortens the first wait, for tests). Every step is an
//! event; neither the account key nor a private key is ever logged.

use super::certs::{self, Certs, Loaded};
use crate::config::{Acme, AcmeChallenge};
use crate::observe::events::{Event, Events, GATEWAY};
use crate::observe::time::rfc3339;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, HttpClient, Identifier,
    NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Look at the certificate at least this often (a clock that jumped, a suspend).
const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// The first wait after a failure, doubled after each failure in a row.
const FIRST_RETRY: Duration = Duration::from_secs(60);
/// The longest wait between attempts.
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// One whole order (account to stored certificate) takes at most this long.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the server may take to validate, and to issue.
const POLL_TIMEOUT: Duration = Duration::from_secs(120);
/// A connect to the directory's host.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The ACME task of `cfg`, when `gateway.tls.acme` is set: its certificate and its
/// challenges go into `certs` (the HTTPS listeners' table; HTTP-01 answers are read
/// from it by the plain listeners' request path).
pub fn start(
    cfg: &crate::config::Config,
    certs: &Arc<Certs>,
    events: &Events,
    stop: &watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let acme = cfg.gateway.tls.as_ref()?.acme.as_ref()?;
    Some(spawn(
        acme,
        &cfg.gateway.data_dir,
        certs.clone(),
        events.clone(),
        stop.clone(),
    ))
}

/// Start obtaining and renewing the certificate for `cfg` into `certs`; the task
/// ends when `stop` turns true.
pub fn spawn(
    cfg: &Acme,
    data_dir: &Path,
    certs: Arc<Certs>,
    events: Events,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let first_retry = std::env::var("HEALGATE_ACME_FIRST_RETRY")
        .ok()
        .and_then(|v| crate::config::units::parse_duration(&v).ok())
        .unwrap_or(FIRST_RETRY);
    let task = Task {
        cfg: cfg.clone(),
        dir: data_dir.join("acme"),
        certs,
        events,
        first_retry,
        account: None,
    };
    tokio::spawn(task.run(stop))
}

struct Task {
    cfg: Acme,
    /// `data_dir/acme`.
    dir: PathBuf,
    certs: Arc<Certs>,
    events: Events,
    first_retry: Duration,
    /// Registered (or read back) at the first order, kept for the renewals.
    account: Option<Account>,
}

/// A step that failed and why.
#[derive(Debug)]
struct Failed {
    step: &'static str,
    error: String,
}

fn at(step: &'static str) -> impl Fn(instant_acme::Error) -> Failed {
    move |e| Failed {
        step,
        error: chain(&e),
    }
}

/// An error with its sources: `client error (Connect): tcp connect error: Connection
/// refused (os error 111)`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl Task {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut current = self.stored();
        let mut failures = 0u32;
        let mut announced: Option<SystemTime> = None;
        loop {
            let now = SystemTime::now();
            if let Some(c) = &current {
                let when = renew_at(c.not_before, c.not_after, self.cfg.renew_before);
                if when > now {
                    if announced != Some(when) {
                        announced = Some(when);
                        self.events.emit(Event::AcmeRenewalScheduled {
                            app: GATEWAY,
                            names: c.names.clone(),
                            not_after: rfc3339(c.not_after),
                            renew_at: rfc3339(when),
                            in_s: when.duration_since(now).unwrap_or_default().as_secs(),
                        });
                    }
                    let nap = when
                        .duration_since(now)
                        .unwrap_or_default()
                        .min(CHECK_EVERY);
                    if sleep_or_stop(nap, &mut stop).await {
                        return;
                    }
                    continue;
                }
            }
            let reason = match &current {
                None => "no certificate yet".to_owned(),
                Some(c) => format!("renewal: expires at {}", rfc3339(c.not_after)),
            };
            let attempt = tokio::time::timeout(ORDER_TIMEOUT, self.obtain(&reason));
            let outcome = tokio::select! {
                r = attempt => r.unwrap_or_else(|_| Err(Failed {
                    step: "order",
                    error: format!("not done within {}s", ORDER_TIMEOUT.as_secs()),
                })),
                _ = stopped(&mut stop) => return,
            };
            match outcome {
                Ok(c) => {
                    failures = 0;
                    current = Some(c);
                }
                Err(f) => {
                    let wait = backoff(self.first_retry, failures);
                    failures = failures.saturating_add(1);
                    self.events.emit(Event::AcmeFailed {
                        app: GATEWAY,
                        step: f.step,
                        error: f.error,
                        retry_in_s: wait.as_secs(),
                    });
                    if sleep_or_stop(wait, &mut stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Where the certificate of these domains is kept.
    fn cert_dir(&self) -> PathBuf {
        let first = self.cfg.domains.first().map(String::as_str).unwrap_or("_");
        self.dir.join(first.replace('*', "_wildcard"))
    }

    /// The stored certificate, served again when it names every domain and has not
    /// expired.
    fn stored(&self) -> Option<Loaded> {
        let dir = self.cert_dir();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if !cert.exists() {
            return None;
        }
        let loaded = match certs::load_pair(&cert, &key) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("acme: the stored certificate is not used: {e}");
                return None;
            }
        };
        if !self.cfg.domains.iter().all(|d| loaded.names.contains(d)) {
            tracing::info!(
                "acme: the stored certificate names {}, not every domain of {}: ordering a new one",
                loaded.names.join(", "),
                self.cfg.domains.join(", ")
            );
            return None;
        }
        if loaded.not_after <= SystemTime::now() {
            return None;
        }
        let mut loaded = loaded;
        loaded.source = "acme".into();
        self.certs.install("acme", vec![loaded.clone()]);
        self.events.emit(Event::AcmeCertificateLoaded {
            app: GATEWAY,
            names: loaded.names.clone(),
            not_after: rfc3339(loaded.not_after),
            serial: serial(&loaded),
            path: cert.display().to_string(),
        });
        Some(loaded)
    }

    /// The account: read back from its file, else registered and written there.
    async fn account(&mut self) -> Result<Account, Failed> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        let file = self
            .dir
            .join(format!("account-{}.json", slug(&self.cfg.directory)));
        let http = || http_client(self.cfg.ca.as_deref());
        let account = match std::fs::read(&file) {
            Ok(bytes) => {
                let creds: AccountCredentials =
                    serde_json::from_slice(&bytes).map_err(|e| Failed {
                        step: "account",
                        error: format!("{}: {e}", file.display()),
                    })?;
                Account::builder_with_http(http()?)
                    .from_credentials(creds)
                    .await
                    .map_err(|e| Failed {
                        step: "directory",
                        error: format!("{}: {}", self.cfg.directory, chain(&e)),
                    })?
            }
            Err(_) => {
                let contact = self.cfg.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, creds) = Account::builder_with_http(http()?)
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.cfg.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| Failed {
                        step: "account",
                        error: format!("{}: {}", self.cfg.directory, chain(&e)),
                    })?;
                let json = serde_json::to_vec(&creds).map_err(|e| Failed {
                    step: "account",
                    error: e.to_string(),
                })?;
                write_private(&self.dir, &file, &json).map_err(|e| Failed {
                    step: "store",
                    error: e,
                })?;
                self.events.emit(Event::AcmeAccountCreated {
                    app: GATEWAY,
                    directory: self.cfg.directory.clone(),
                });
                account
            }
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    /// One order, from the account to the certificate served.
    async fn obtain(&mut self, reason: &str) -> Result<Loaded, Failed> {
        let account = self.account().await?;
        let ids: Vec<Identifier> = self
            .cfg
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(at("order"))?;
        self.events.emit(Event::AcmeOrderStarted {
            app: GATEWAY,
            domains: self.cfg.domains.clone(),
            directory: self.cfg.directory.clone(),
            reason: reason.to_owned(),
        });
        {
            // Cleared however this block ends.
            let mut pending = Pending {
                certs: &self.certs,
                names: Vec::new(),
                tokens: Vec::new(),
            };
            self.answer(&mut order, &mut pending).await?;
            let status = order
                .poll_ready(&RetryPolicy::new().timeout(POLL_TIMEOUT))
                .await
                .map_err(at("validation"))?;
            if status != OrderStatus::Ready {
                return Err(Failed {
                    step: "validation",
                    error: why_invalid(&mut order, status).await,
                });
            }
        }
        // A fresh key for every certificate.
        let key = rcgen::KeyPair::generate().map_err(|e| Failed {
            step: "finalize",
            error: e.to_string(),
        })?;
        let csr = rcgen::CertificateParams::new(self.cfg.domains.clone())
            .and_then(|mut p| {
                p.distinguished_name = rcgen::DistinguishedName::new();
                p.serialize_request(&key)
            })
            .map_err(|e| Failed {
                step: "finalize",
                error: e.to_string(),
            })?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(at("finalize"))?;
        let chain_pem = order
            .poll_certificate(&RetryPolicy::new().timeout(POLL_TIMEOUT))
            .await
            .map_err(at("certificate"))?;
        let bad = |error: String| Failed {
            step: "certificate",
            error,
        };
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("the issued chain is not PEM: {e:?}")))?;
        if chain.is_empty() {
            return Err(bad("the issued chain is empty".into()));
        }
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let loaded = certs::from_der(chain, key_der, "acme").map_err(bad)?;
        let dir = self.cert_dir();
        let cert_file = dir.join("cert.pem");
        write_private(&dir, &dir.join("key.pem"), key.serialize_pem().as_bytes())
            .and_then(|()| write_private(&dir, &cert_file, chain_pem.as_bytes()))
            .map_err(|e| Failed {
                step: "store",
                error: e,
            })?;
        self.certs.install("acme", vec![loaded.clone()]);
        self.events.emit(Event::AcmeCertificateObtained {
            app: GATEWAY,
            names: loaded.names.clone(),
            not_after: rfc3339(loaded.not_after),
            serial: serial(&loaded),
            path: cert_file.display().to_string(),
        });
        Ok(loaded)
    }

    /// Answer every pending authorization with the configured challenge and tell the
    /// server it may validate.
    async fn answer(&self, order: &mut Order, pending: &mut Pending<'_>) -> Result<(), Failed> {
        let (kind, name) = match self.cfg.challenge {
            AcmeChallenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
            AcmeChallenge::Http01 => (ChallengeType::Http01, "http-01"),
        };
        let mut authorizations = order.authorizations();
        while let Some(a) = authorizations.next().await {
            let mut a = a.map_err(at("authorization"))?;
            let domain = a.identifier().to_string();
            match a.status {
                AuthorizationStatus::Pending => {}
                // Validated for an earlier order (the server reuses it).
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(Failed {
                        step: "authorization",
                        error: format!("the authorization of {domain} is {other:?}"),
                    })
                }
            }
            let Some(mut challenge) = a.challenge(kind.clone()) else {
                return Err(Failed {
                    step: "challenge",
                    error: format!("the server offers no {name} challenge for {domain}"),
                });
            };
            let auth = challenge.key_authorization();
            match self.cfg.challenge {
                AcmeChallenge::TlsAlpn01 => {
                    let bare = match challenge.identifier().identifier {
                        Identifier::Dns(d) => d.clone(),
                        _ => domain.clone(),
                    };
                    let key =
                        alpn_certificate(&bare, auth.digest().as_ref()).map_err(|e| Failed {
                            step: "challenge",
                            error: e,
                        })?;
                    self.certs.set_challenge(&bare, key);
                    pending.names.push(bare);
                }
                AcmeChallenge::Http01 => {
                    self.certs.set_http01(&challenge.token, auth.as_str());
                    pending.tokens.push(challenge.token.clone());
                }
            }
            self.events.emit(Event::AcmeChallenge {
                app: GATEWAY,
                challenge: name,
                domain,
            });
            challenge.set_ready().await.map_err(at("challenge"))?;
        }
        Ok(())
    }
}

/// The challenge answers of one order, withdrawn when it is done.
struct Pending<'a> {
    certs: &'a Certs,
    names: Vec<String>,
    tokens: Vec<String>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            self.certs.clear_challenge(n);
        }
        for t in &self.tokens {
            self.certs.clear_http01(t);
        }
    }
}

/// What the server said of the failed challenges of an order that did not get ready.
async fn why_invalid(order: &mut Order, status: OrderStatus) -> String {
    let mut why = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(a)) = authorizations.next().await {
        for c in &a.challenges {
            if let Some(p) = &c.error {
                why.push(format!(
                    "{} {:?}: {}",
                    a.identifier(),
                    c.r#type,
                    p.detail.as_deref().unwrap_or("no detail")
                ));
            }
        }
    }
    if why.is_empty() {
        format!("the order is {status:?}")
    } else {
        format!("the order is {status:?}: {}", why.join("; "))
    }
}

/// The TLS-ALPN-01 answer for `domain` (RFC 8737 §3): a self-signed certificate for
/// that name with the critical acmeIdentifier extension holding `digest`.
fn alpn_certificate(
    domain: &str,
    digest: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok(certs::from_der(vec![cert.der().clone()], key_der, "acme challenge")?.key)
}

/// The ACME client's HTTPS: rustls (ring) trusting the web's roots and `ca`.
fn http_client(ca: Option<&Path>) -> Result<Box<dyn HttpClient>, Failed> {
    let fail = |error: String| Failed {
        step: "directory",
        error,
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca {
        for c in certs::read_chain(ca).map_err(fail)? {
            roots
                .add(c)
                .map_err(|e| fail(format!("CA file {}: {e}", ca.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, instant_acme::BodyWrapper<bytes::Bytes>>(https);
    Ok(Box::new(client))
}

/// When to renew a certificate valid from `not_before` to `not_after`:
/// `renew_before` ahead of its expiry, or, when it lives no longer than that, once a
/// third of its life is left (never in a loop right after it was issued).
pub fn renew_at(
    not_before: SystemTime,
    not_after: SystemTime,
    renew_before: Duration,
) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    if renew_before < life {
        not_after - renew_before
    } else {
        not_after - life / 3
    }
}

/// The wait after `failures` failures in a row: `first`, doubling, at most an hour.
pub fn backoff(first: Duration, failures: u32) -> Duration {
    first
        .saturating_mul(1u32 << failures.min(16))
        .min(MAX_RETRY.max(first))
}

/// A certificate's serial number in hex (what `openssl x509 -serial` prints).
fn serial(l: &Loaded) -> String {
    l.key
        .end_entity_cert()
        .ok()
        .and_then(|der| {
            x509_parser::parse_x509_certificate(der.as_ref())
                .ok()
                .map(|(_, c)| {
                    c.raw_serial()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                })
        })
        .unwrap_or_default()
}

/// A file name for a directory URL: `acme-v02.api.letsencrypt.org_directory`.
fn slug(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.trim_end_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Write `bytes` to `file` (mode 0600) in `dir` (created 0700, with `data_dir/acme`
/// above it also 0700), through a temporary file renamed over it.
fn write_private(dir: &Path, file: &Path, bytes: &[u8]) -> Result<(), String> {
    let mkdir = |d: &Path| -> Result<(), String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d)
            .and_then(|()| std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("{}: {e}", d.display()))
    };
    if let Some(parent) = dir.parent().filter(|p| p.ends_with("acme")) {
        mkdir(parent)?;
    }
    mkdir(dir)?;
    let tmp = file.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, file));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", file.display())
    })
}

/// Sleep `d`; true when `stop` turned true meanwhile.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stopped(stop) => true,
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_ahead_of_expiry_or_at_a_third_of_a_short_life() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86400);
        // 90 days, renew 30 days ahead: at day 60.
        assert_eq!(renew_at(t0, t0 + day * 90, day * 30), t0 + day * 60);
        // A certificate that lives less than renew_before: with a third left.
        let life = Duration::from_secs(30);
        assert_eq!(renew_at(t0, t0 + life, day), t0 + Duration::from_secs(20));
    }

    #[test]
    fn retries_double_up_to_an_hour() {
        let m = Duration::from_secs(60);
        assert_eq!(backoff(m, 0), m);
        assert_eq!(backoff(m, 1), m * 2);
        assert_eq!(backoff(m, 5), m * 32);
        assert_eq!(backoff(m, 6), MAX_RETRY);
        assert_eq!(backoff(m, 40), MAX_RETRY);
        let fast = Duration::from_millis(200);
        assert_eq!(backoff(fast, 2), Duration::from_millis(800));
    }

    #[test]
    fn directory_urls_become_file_names() {
        assert_eq!(
            slug("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org_directory"
        );
        assert_eq!(slug("https://127.0.0.1:14000/dir"), "127.0.0.1_14000_dir");
    }

    #[test]
    fn the_tls_alpn_answer_names_the_domain_and_carries_the_digest() {
        let digest = [7u8; 32];
        let key = alpn_certificate("a.example", &digest).unwrap();
        let der = key.end_entity_cert().unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        // id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31), critical, an OCTET STRING of the digest.
        let ext = c
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        assert_eq!(&ext.value[2..], &digest);
        assert_eq!(certs::describe(der).unwrap().names, vec!["a.example"]);
    }

    #[test]
    fn private_files_are_0600_in_0700_dirs() {
        let base = std::env::temp_dir().join(format!("healgate-acme-unit-{}", std::process::id()));
        let dir = base.join("acme").join("a.example");
        let file = dir.join("key.pem");
        write_private(&dir, &file, b"secret").unwrap();
        write_private(&dir, &file, b"secret2").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&base.join("acme")), 0o700);
        assert_eq!(std::fs::read(&file).unwrap(), b"secret2");
        let _ = std::fs::remove_dir_all(&base);
    }
}
