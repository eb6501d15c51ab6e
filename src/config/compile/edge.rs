//! `[gateway.tls]` and `[gateway.compression]`: what the gateway does at the edge.
//!
//! Certificate files are read here, so `healgate check` (and a reload) reports a
//! missing, unreadable or mismatched key, or an expired certificate, at its key.

use super::*;
use crate::tls::certs;

/// A certificate expiring sooner than this is a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86400);

pub(super) fn tls(
    cx: &mut Ctx,
    mut t: TableReader,
    base: &Path,
    plain: &[SocketAddr],
) -> Option<EdgeTls> {
    let listen_field = t.require(cx, "listen");
    let listeners = listen_field.as_ref().and_then(|f| listen_addrs(f, cx));
    let proxy_protocol = listeners
        .iter()
        .flatten()
        .map(|(_, pp)| *pp)
        .collect::<Vec<_>>();
    let listen = listeners.map(|l| l.into_iter().map(|(a, _)| a).collect::<Vec<_>>());
    if let (Some(f), Some(l)) = (&listen_field, &listen) {
        if let Some(a) = l.iter().find(|a| a.port() != 0 && plain.contains(a)) {
            f.error(
                cx,
                format!(
                    "{a} is also in gateway.listen: one port cannot be both plain HTTP and HTTPS"
                ),
            );
        }
    }
    let certs = t
        .get(cx, "certs", |f, cx| cert_files(f, cx, base))
        .unwrap_or_default();
    let acme = t
        .take("acme")
        .and_then(|f| f.table(cx))
        .and_then(|at| acme(cx, at, base, plain, listen.as_deref().unwrap_or_default()));
    let redirect_http = t.get(cx, "redirect_http", Field::bool).unwrap_or(false);
    let hsts = t.get(cx, "hsts", |f, cx| {
        let s = f.str(cx)?;
        if s.is_empty() {
            return Some(None);
        }
        if http::HeaderValue::from_str(s).is_err() || !s.to_ascii_lowercase().contains("max-age=")
        {
            f.error(
                cx,
                r#"must be a Strict-Transport-Security value with max-age, e.g. "max-age=31536000""#,
            );
            return None;
        }
        Some(Some(s.to_owned()))
    });
    if certs.is_empty() && acme.is_none() && !cx.has_errors() {
        cx.error(
            &t.path,
            &t.span,
            r#"needs certificates: certs = [{ cert = "site.pem", key = "site.key" }] or acme = { domains = [...] }"#,
        );
    }
    t.finish(cx);
    Some(EdgeTls {
        listen: listen?,
        proxy_protocol,
        certs,
        acme,
        redirect_http,
        hsts: hsts.flatten(),
    })
}

/// `certs`: an array of `{ cert = "...", key = "..." }`, each read and checked now.
fn cert_files(f: &Field, cx: &mut Ctx, base: &Path) -> Option<Vec<CertFiles>> {
    let mut out = Vec::new();
    let mut loaded_all = Vec::new();
    for e in f.array(
        cx,
        r#"an array like [{ cert = "site.pem", key = "site.key" }]"#,
    )? {
        let mut t = e.table(cx)?;
        let cert = t.require(cx, "cert");
        let key = t.require(cx, "key");
        let cert_path = cert.as_ref().and_then(|c| path_field(cx, c, base));
        let key_path = key.as_ref().and_then(|k| path_field(cx, k, base));
        if let (Some(cp), Some(kp)) = (cert_path, key_path) {
            match certs::load_pair(&cp, &kp) {
                Ok(loaded) => {
                    check_validity(cx, &e, &loaded);
                    if let Err(why) = certs::public_trust(&loaded) {
                        e.warning(
                            cx,
                            format!("certificate for {}: {why}", loaded.names.join(", ")),
                        );
                    }
                    loaded_all.push(loaded);
                }
                Err(why) => e.error(cx, why),
            }
            out.push(CertFiles { cert: cp, key: kp });
        }
        t.finish(cx);
    }
    for (name, files) in certs::shared_names(&loaded_all) {
        f.warning(
            cx,
            format!(
                "{name} is in more than one certificate ({}): the first one listed is served for it",
                files.join(", ")
            ),
        );
    }
    Some(out)
}

/// An expired (or not yet valid) certificate is an error; one expiring within 14
/// days a warning.
fn check_validity(cx: &mut Ctx, at: &Field, c: &certs::Loaded) {
    let now = std::time::SystemTime::now();
    let names = c.names.join(", ");
    let when = crate::observe::time::rfc3339(c.not_after);
    if c.not_after <= now {
        at.error(
            cx,
            format!("certificate for {names} expired at {when}: renew it (or use acme)"),
        );
    } else if c.not_before > now {
        at.error(
            cx,
            format!(
                "certificate for {names} is not valid before {}",
                crate::observe::time::rfc3339(c.not_before)
            ),
        );
    } else if c.remaining() < EXPIRY_WARNING {
        at.warning(
            cx,
            format!(
                "certificate for {names} expires at {when}, in {} days: renew it soon",
                c.remaining().as_secs() / 86400
            ),
        );
    }
}

fn acme(
    cx: &mut Ctx,
    mut t: TableReader,
    base: &Path,
    plain: &[SocketAddr],
    https: &[SocketAddr],
) -> Option<Acme> {
    let domains_field = t.require(cx, "domains");
    let domains = domains_field.as_ref().and_then(|f| {
        let d = f.strings(cx)?;
        if d.is_empty() {
            f.error(cx, r#"must name at least one domain, e.g. ["example.com"]"#);
            return None;
        }
        for name in &d {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name.trim_start_matches("*.").split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                f.error(cx, format!("{name:?} is not a DNS name"));
                return None;
            }
        }
        Some(
            d.into_iter()
                .map(|n| n.to_ascii_lowercase())
                .collect::<Vec<String>>(),
        )
    });
    let email = t.get(cx, "email", |f, cx| {
        let s = f.text(cx)?;
        if !s.contains('@') {
            f.error(cx, "must be an email address, e.g. \"ops@example.com\"");
            return None;
        }
        Some(s)
    });
    let directory = t
        .get(cx, "directory", |f, cx| {
            let s = f.text(cx)?;
            match s.parse::<http::Uri>() {
                Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => Some(s),
                _ => {
                    f.error(cx, "must be an https:// URL of an ACME directory");
                    None
                }
            }
        })
        .unwrap_or_else(|| LETS_ENCRYPT.to_owned());
    let ca = t.get(cx, "ca", |f, cx| {
        let p = path_field(cx, f, base)?;
        if let Err(e) = certs::read_chain(&p) {
            f.error(cx, e);
        }
        Some(p)
    });
    let challenge = t
        .get(cx, "challenge", |f, cx| match f.str(cx)? {
            "tls-alpn-01" => Some(AcmeChallenge::TlsAlpn01),
            "http-01" => Some(AcmeChallenge::Http01),
            other => {
                f.error(
                    cx,
                    format!(r#"{other:?} is not a challenge: "tls-alpn-01" or "http-01""#),
                );
                None
            }
        })
        .unwrap_or(AcmeChallenge::TlsAlpn01);
    let renew_before = t
        .get(cx, "renew_before", Field::positive_duration)
        .unwrap_or(Duration::from_secs(30 * 86400));
    if let (Some(f), Some(d)) = (&domains_field, &domains) {
        acme_reachable(cx, f, d, challenge, plain, https);
    }
    t.finish(cx);
    Some(Acme {
        domains: domains?,
        email,
        directory,
        ca,
        challenge,
        renew_before,
    })
}

/// What the CA must reach to validate: a wildcard only by DNS-01 (not offered), and
/// HTTP-01 on port 80, TLS-ALPN-01 on port 443 (a warning: a port forward or a load
/// balancer in front may map it).
fn acme_reachable(
    cx: &mut Ctx,
    f: &Field,
    domains: &[String],
    challenge: AcmeChallenge,
    plain: &[SocketAddr],
    https: &[SocketAddr],
) {
    if let Some(w) = domains.iter().find(|d| d.starts_with("*.")) {
        f.error(
            cx,
            format!(
                "{w}: a wildcard is validated only by DNS-01, which healgate does not answer; name each host"
            ),
        );
    }
    let (port, listeners, key, name) = match challenge {
        AcmeChallenge::Http01 => (80, plain, "gateway.listen", "http-01"),
        AcmeChallenge::TlsAlpn01 => (443, https, "gateway.tls.listen", "tls-alpn-01"),
    };
    if !listeners.iter().any(|a| a.port() == port) {
        f.warning(
            cx,
            format!(
                "{name}: the CA validates on port {port} and {key} has no listener on it; \
                 it works only if port {port} is forwarded to one"
            ),
        );
    }
}

/// Let's Encrypt's production directory.
pub(crate) const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

pub(super) fn compression(cx: &mut Ctx, mut t: TableReader) -> Compression {
    let mut c = Compression::default();
    set(
        &mut c.types,
        t.get(cx, "types", |f, cx| {
            let types = f.strings(cx)?;
            for ty in &types {
                let ok = ty
                    .split_once('/')
                    .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !ty.contains(';'));
                if !ok {
                    f.error(
                        cx,
                        format!(r#"{ty:?} is not a media type like "text/html" or "text/*""#),
                    );
                    return None;
                }
            }
            Some(types.into_iter().map(|t| t.to_ascii_lowercase()).collect())
        }),
    );
    set(&mut c.min_size, t.get(cx, "min_size", Field::size));
    set(
        &mut c.algorithms,
        t.get(cx, "algorithms", |f, cx| {
            let mut out = Vec::new();
            for a in f.strings(cx)? {
                let coding = match a.as_str() {
                    "gzip" => Coding::Gzip,
                    "br" => Coding::Brotli,
                    "zstd" => Coding::Zstd,
                    other => {
                        f.error(
                            cx,
                            format!(r#"{other:?} is not a coding: "zstd", "br" or "gzip""#),
                        );
                        return None;
                    }
                };
                if !out.contains(&coding) {
                    out.push(coding);
                }
            }
            if out.is_empty() {
                f.error(cx, r#"must list at least one of "zstd", "br", "gzip""#);
                return None;
            }
            Some(out)
        }),
    );
    if let Some(levels) = t.get(cx, "levels", levels) {
        c.levels = levels;
    }
    t.finish(cx);
    c
}

/// `levels = { gzip = 5, br = 4, zstd = 3 }`: any of them, the rest default.
fn levels(f: &Field, cx: &mut Ctx) -> Option<Levels> {
    let mut t = f.table(cx)?;
    let mut l = Levels::default();
    let level = |t: &mut TableReader, cx: &mut Ctx, key, max, to: &mut u32| {
        let min = if key == "br" { 0 } else { 1 };
        if let Some(n) = t.get(cx, key, |f, cx| f.int(cx, min, max)) {
            *to = n as u32;
        }
    };
    level(&mut t, cx, "gzip", 9, &mut l.gzip);
    level(&mut t, cx, "br", 11, &mut l.br);
    level(&mut t, cx, "zstd", 19, &mut l.zstd);
    t.finish(cx);
    Some(l)
}
