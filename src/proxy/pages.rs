//! Friendly error pages for gateway-made responses: HTML or problem+json, localized.
//!
//! When the gateway answers by itself (502, 503, 504, 404, ...), the body is either a
//! small self-contained HTML page or an RFC 9457 `application/problem+json` document,
//! chosen by the request's `Accept` header, in the language picked from
//! `Accept-Language` (en, fr, sv, nl, de, es; English by default).
//!
//! Callers should also send `Vary: Accept, Accept-Language` with the rendered body.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::SystemTime;

use crate::error::{Cause, PageText};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};

/// Base of the problem `type` URI; the Proxy-Status error type is appended.
const TYPE_BASE: &str = "https://healgate.dev/errors/";

/// Renders the bodies of gateway-made error responses.
///
/// Built once from the `[errors]` config; cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Pages {
    support_url: Option<String>,
    details: bool,
    /// Operator overrides: status code -> HTML template.
    overrides: HashMap<u16, String>,
}

/// Everything needed to render one gateway-made error body.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// The status the gateway answers with.
    pub status: StatusCode,
    /// Why the gateway answers: its Proxy-Status type and its text.
    pub cause: Cause,
    /// The request id (also sent as `X-Request-Id`).
    pub request_id: &'a str,
    /// The request's `Accept` header, if any.
    pub accept: Option<&'a HeaderValue>,
    /// The request's `Accept-Language` header, if any.
    pub accept_language: Option<&'a HeaderValue>,
    /// Cause text; shown only when [`Pages`] was built with `details = true`.
    pub details: Option<&'a str>,
    /// Seconds until a retry makes sense (mirrors `Retry-After`).
    pub retry_after: Option<u32>,
    /// The time the error happened.
    pub now: SystemTime,
}

/// A rendered error body with the headers describing it.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// `text/html; charset=utf-8` or `application/problem+json`.
    pub content_type: HeaderValue,
    /// The body bytes.
    pub body: Bytes,
    /// The language of the body, e.g. `fr`.
    pub content_language: HeaderValue,
}

impl Pages {
    /// `support_url`: shown on pages; `details`: whether the cause text may be shown;
    /// `pages_dir`: optional dir with `502.html`, `503.html`, ... overrides (read once here; a missing dir is an io error naming the path; missing files are fine).
    ///
    /// Override templates may use the placeholders `{{status}}`, `{{title}}`,
    /// `{{message}}`, `{{request_id}}`, `{{time}}`, `{{support_url}}`, `{{error}}`,
    /// `{{lang}}`, `{{retry_after}}` and `{{details}}`; each is replaced by its
    /// HTML-escaped value (empty when not available). Unknown placeholders are kept.
    pub fn new(
        support_url: Option<String>,
        details: bool,
        pages_dir: Option<&Path>,
    ) -> std::io::Result<Pages> {
        let mut overrides = HashMap::new();
        if let Some(dir) = pages_dir {
            let named = |e: std::io::Error, path: &Path| {
                std::io::Error::new(e.kind(), format!("error pages {}: {e}", path.display()))
            };
            for entry in std::fs::read_dir(dir).map_err(|e| named(e, dir))? {
                let entry = entry.map_err(|e| named(e, dir))?;
                let path = entry.path();
                let Some(status) = override_status(&path) else {
                    continue;
                };
                if !path.is_file() {
                    continue;
                }
                let text = std::fs::read_to_string(&path).map_err(|e| named(e, &path))?;
                overrides.insert(status, text);
            }
        }
        Ok(Pages {
            support_url: support_url.filter(|s| !s.trim().is_empty()),
            details,
            overrides,
        })
    }

    /// Whether cause text may be shown (the `errors.details` setting).
    pub fn details_enabled(&self) -> bool {
        self.details
    }

    /// Render the body for one response.
    pub fn render(&self, page: &Page<'_>) -> Rendered {
        let lang = negotiate_language(page.accept_language);
        let title = title(lang, page.status);
        let message = meaning(lang, page.cause.page_text());
        let time = crate::observe::time::rfc3339(page.now);
        let cause = if self.details { page.details } else { None };
        let content_language = HeaderValue::from_static(lang.code());

        if prefers_json(page.accept) {
            let body = self.problem_json(page, lang, title, message, &time, cause);
            return Rendered {
                content_type: HeaderValue::from_static("application/problem+json"),
                body: Bytes::from(body),
                content_language,
            };
        }

        let html = match self.overrides.get(&page.status.as_u16()) {
            Some(template) => {
                self.fill_override(template, page, lang, title, message, &time, cause)
            }
            None => self.html_page(page, lang, title, message, &time, cause),
        };
        Rendered {
            content_type: HeaderValue::from_static("text/html; charset=utf-8"),
            body: Bytes::from(html),
            content_language,
        }
    }

    fn problem_json(
        &self,
        page: &Page<'_>,
        lang: Lang,
        title: &str,
        message: &str,
        time: &str,
        cause: Option<&str>,
    ) -> String {
        let detail = match cause {
            Some(cause) => format!("{message} {}: {cause}", labels(lang).details),
            None => message.to_owned(),
        };
        let mut doc = serde_json::Map::new();
        doc.insert(
            "type".into(),
            format!("{TYPE_BASE}{}", page.cause.proxy_status()).into(),
        );
        doc.insert("title".into(), title.into());
        doc.insert("status".into(), page.status.as_u16().into());
        doc.insert("detail".into(), detail.into());
        doc.insert("request_id".into(), page.request_id.into());
        doc.insert("time".into(), time.into());
        doc.insert("error".into(), page.cause.proxy_status().into());
        if let Some(url) = &self.support_url {
            doc.insert("support_url".into(), url.as_str().into());
        }
        if let Some(secs) = page.retry_after {
            doc.insert("retry_after".into(), secs.into());
        }
        serde_json::Value::Object(doc).to_string()
    }

    #[allow(clippy::too_many_arguments)]
    fn fill_override(
        &self,
        template: &str,
        page: &Page<'_>,
        lang: Lang,
        title: &str,
        message: &str,
        time: &str,
        cause: Option<&str>,
    ) -> String {
        let status = page.status.as_u16().to_string();
        let retry = page.retry_after.map(|s| s.to_string()).unwrap_or_default();
        fill_placeholders(template, |name| match name {
            "status" => Some(status.as_str()),
            "title" => Some(title),
            "message" => Some(message),
            "request_id" => Some(page.request_id),
            "time" => Some(time),
            "support_url" => Some(self.support_url.as_deref().unwrap_or("")),
            "error" => Some(page.cause.proxy_status()),
            "lang" => Some(lang.code()),
            "retry_after" => Some(retry.as_str()),
            "details" => Some(cause.unwrap_or("")),
            _ => None,
        })
    }

    fn html_page(
        &self,
        page: &Page<'_>,
        lang: Lang,
        title: &str,
        message: &str,
        time: &str,
        cause: Option<&str>,
    ) -> String {
        let l = labels(lang);
        let status = page.status.as_u16();
        let retry = match page.retry_after {
            Some(secs) => format!("<p class=\"retry\">{}</p>\n", Esc(&retry_hint(lang, secs))),
            None => String::new(),
        };
        let support = match &self.support_url {
            Some(url) => format!(
                "<p class=\"hint\">{}</p>\n<a class=\"support\" href=\"{}\" rel=\"noopener\">{}</a>\n",
                Esc(l.support_hint),
                Esc(url),
                Esc(l.contact_support),
            ),
            None => String::new(),
        };
        let cause = match cause {
            Some(cause) => format!(
                "<details>\n<summary>{}</summary>\n<pre id=\"details\">{}</pre>\n</details>\n",
                Esc(l.details),
                Esc(cause),
            ),
            None => String::new(),
        };
        format!(
            "<!DOCTYPE html>\n\
<html lang=\"{lang}\">\n\
<head>\n\
<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<meta name=\"robots\" content=\"noindex\">\n\
<title>{status} {title}</title>\n\
<style>{CSS}</style>\n\
</head>\n\
<body>\n\
<main>\n\
<div class=\"code\">{status}</div>\n\
<h1>{title}</h1>\n\
<p class=\"message\">{message}</p>\n\
{retry}\
<dl>\n\
<dt>{l_request_id}</dt><dd id=\"request-id\">{request_id}</dd>\n\
<dt>{l_time}</dt><dd><time datetime=\"{time}\">{time}</time></dd>\n\
<dt>{l_error}</dt><dd id=\"error\">{error}</dd>\n\
</dl>\n\
{cause}\
{support}\
</main>\n\
</body>\n\
</html>\n",
            lang = lang.code(),
            title = Esc(title),
            message = Esc(message),
            l_request_id = Esc(l.request_id),
            request_id = Esc(page.request_id),
            l_time = Esc(l.time),
            time = Esc(time),
            l_error = Esc(l.error_code),
            error = Esc(page.cause.proxy_status()),
        )
    }
}

/// `502.html` -> 502, for any valid status code; anything else -> None.
fn override_status(path: &Path) -> Option<u16> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".html")?;
    if stem.len() != 3 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = stem.parse().ok()?;
    StatusCode::from_u16(code).ok().map(|s| s.as_u16())
}

/// Replace `{{name}}` placeholders with escaped values; unknown names are kept as is.
fn fill_placeholders<'v>(template: &str, value: impl Fn(&str) -> Option<&'v str>) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        match value(after[..end].trim()) {
            Some(v) => {
                let _ = fmt::Write::write_fmt(&mut out, format_args!("{}", Esc(v)));
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Displays a string HTML-escaped (safe in text and in quoted attributes): the one
/// HTML escape of the crate.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = 0;
        for (i, c) in self.0.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&self.0[last..i])?;
            f.write_str(rep)?;
            last = i + 1;
        }
        f.write_str(&self.0[last..])
    }
}

const CSS: &str = "\
:root{color-scheme:light dark;--bg:#f5f6f8;--card:#fff;--fg:#1f2328;--muted:#59636e;\
--accent:#b4441a;--on-accent:#fff;--soft:#fbeee8;--border:#d8dee4}\
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--card:#161b22;--fg:#e6edf3;\
--muted:#9198a1;--accent:#f0883e;--on-accent:#0d1117;--soft:#2b1d12;--border:#30363d}}\
*{box-sizing:border-box}\
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;\
padding:20px;background:var(--bg);color:var(--fg);\
font:16px/1.55 system-ui,-apple-system,\"Segoe UI\",Roboto,\"Helvetica Neue\",Arial,sans-serif}\
main{width:100%;max-width:34rem;background:var(--card);border:1px solid var(--border);\
border-radius:14px;padding:2rem;box-shadow:0 2px 10px rgba(0,0,0,.05)}\
.code{font-size:3rem;font-weight:700;line-height:1;color:var(--accent);letter-spacing:.02em}\
h1{margin:.5rem 0 .75rem;font-size:1.5rem;line-height:1.25}\
p{margin:0 0 1rem}\
.retry{padding:.6rem .9rem;border-radius:8px;background:var(--soft);font-weight:600}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1rem;margin:1.5rem 0 0;\
padding-top:1rem;border-top:1px solid var(--border);font-size:.875rem}\
dt{color:var(--muted)}\
dd{margin:0;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}\
details{margin-top:1.25rem;font-size:.875rem}\
summary{cursor:pointer;color:var(--muted)}\
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:var(--bg);border:1px solid var(--border);\
border-radius:8px;padding:.75rem;margin:.5rem 0 0}\
.hint{margin:1.25rem 0 .75rem;color:var(--muted);font-size:.875rem}\
.support{display:inline-block;padding:.6rem 1.1rem;border-radius:8px;background:var(--accent);\
color:var(--on-accent);text-decoration:none;font-weight:600}\
.support:hover,.support:focus{filter:brightness(1.1)}\
@media (max-width:480px){main{padding:1.25rem}.code{font-size:2.5rem}\
dl{grid-template-columns:1fr;gap:0}dd{margin-bottom:.5rem}}";

// ---------------------------------------------------------------------------
// Content negotiation

/// Parse a q-value (`0`, `0.5`, `1.000`) into thousandths.
fn parse_q(s: &str) -> Option<u16> {
    let q: f32 = s.trim().parse().ok()?;
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    Some((q * 1000.0).round() as u16)
}

/// Split one header list element into its value and q (default 1000).
/// Elements with an unparsable q are dropped.
fn split_q(element: &str) -> Option<(&str, u16)> {
    let mut parts = element.split(';');
    let value = parts.next()?.trim();
    if value.is_empty() {
        return None;
    }
    let mut q = 1000;
    for param in parts {
        if let Some((k, v)) = param.split_once('=') {
            if k.trim().eq_ignore_ascii_case("q") {
                q = parse_q(v)?;
            }
        }
    }
    Some((value, q))
}

/// How well a media range matches a concrete type; higher is more specific.
fn range_specificity(range: &str, candidate: &str) -> Option<u8> {
    let (rt, rs) = range.split_once('/')?;
    let (ct, cs) = candidate.split_once('/')?;
    let (rt, rs) = (rt.trim(), rs.trim());
    let suffix_match = |rs: &str| {
        rs.strip_prefix('*')
            .filter(|suffix| suffix.starts_with('+'))
            .is_some_and(|suffix| cs.len() > suffix.len() && cs.ends_with(suffix))
    };
    if rt == "*" {
        if rs == "*" {
            Some(1)
        } else if suffix_match(rs) {
            Some(2)
        } else {
            None
        }
    } else if rt == ct {
        if rs == cs {
            Some(4)
        } else if suffix_match(rs) {
            Some(3)
        } else if rs == "*" {
            Some(2)
        } else {
            None
        }
    } else {
        None
    }
}

/// The preference (q, specificity) for the best of `candidates`; (0, 0) if none match.
fn preference(ranges: &[(String, u16)], candidates: &[&str]) -> (u16, u8) {
    let mut best = (0u16, 0u8);
    for candidate in candidates {
        // For one type, the most specific matching range decides its q.
        let mut this = (0u16, 0u8);
        for (range, q) in ranges {
            if let Some(spec) = range_specificity(range, candidate) {
                if spec > this.1 || (spec == this.1 && *q > this.0) {
                    this = (*q, spec);
                }
            }
        }
        if this.1 > 0 && (this.0 > best.0 || (this.0 == best.0 && this.1 > best.1)) {
            best = this;
        }
    }
    best
}

/// Whether the client prefers problem+json over HTML.
///
/// JSON wins when its q-value is higher, or equal (and non-zero) with a more
/// specific match (`Accept: application/json, */*`). A missing `Accept`, `*/*`
/// or a tie gives HTML.
fn prefers_json(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let text = String::from_utf8_lossy(accept.as_bytes()).to_ascii_lowercase();
    let ranges: Vec<(String, u16)> = text
        .split(',')
        .filter_map(split_q)
        .map(|(range, q)| (range.to_owned(), q))
        .collect();
    let html = preference(&ranges, &["text/html"]);
    let json = preference(&ranges, &["application/problem+json", "application/json"]);
    json.0 > html.0 || (json.0 == html.0 && json.0 > 0 && json.1 > html.1)
}

/// A supported page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    En = 0,
    Fr = 1,
    Sv = 2,
    Nl = 3,
    De = 4,
    Es = 5,
}

impl Lang {
    const ALL: [Lang; 6] = [Lang::En, Lang::Fr, Lang::Sv, Lang::Nl, Lang::De, Lang::Es];

    fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fr => "fr",
            Lang::Sv => "sv",
            Lang::Nl => "nl",
            Lang::De => "de",
            Lang::Es => "es",
        }
    }

    /// `fr`, `fr-FR`, `FR_ca` -> Fr.
    fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.split(['-', '_']).next()?.trim();
        Lang::ALL
            .into_iter()
            .find(|l| primary.eq_ignore_ascii_case(l.code()))
    }
}

/// Pick the language by `Accept-Language` (highest q, first listed on ties).
fn negotiate_language(header: Option<&HeaderValue>) -> Lang {
    let Some(header) = header else {
        return Lang::En;
    };
    let text = String::from_utf8_lossy(header.as_bytes());
    let mut best: Option<(Lang, u16)> = None;
    for (tag, q) in text.split(',').filter_map(split_q) {
        if q == 0 {
            continue;
        }
        let lang = if tag == "*" {
            Some(Lang::En)
        } else {
            Lang::from_tag(tag)
        };
        if let Some(lang) = lang {
            if best.is_none_or(|(_, bq)| q > bq) {
                best = Some((lang, q));
            }
        }
    }
    best.map_or(Lang::En, |(lang, _)| lang)
}

// ---------------------------------------------------------------------------
// Texts: en, fr, sv, nl, de, es (in `Lang` order)

type Tr = [&'static str; 6];

fn pick(texts: &Tr, lang: Lang) -> &'static str {
    texts[lang as usize]
}

/// The localized short title for a status.
fn title(lang: Lang, status: StatusCode) -> &'static str {
    let texts: &Tr = match status.as_u16() {
        400 => &[
            "Bad Request",
            "Requête incorrecte",
            "Felaktig förfrågan",
            "Ongeldig verzoek",
            "Ungültige Anfrage",
            "Solicitud incorrecta",
        ],
        404 => &[
            "Not Found",
            "Page introuvable",
            "Sidan hittades inte",
            "Niet gevonden",
            "Nicht gefunden",
            "No encontrado",
        ],
        408 => &[
            "Request Timeout",
            "Délai de la requête dépassé",
            "Tidsgränsen för förfrågan överskreds",
            "Time-out van het verzoek",
            "Zeitüberschreitung der Anfrage",
            "Tiempo de espera de la solicitud agotado",
        ],
        431 => &[
            "Request Header Fields Too Large",
            "Champs d’en-tête de la requête trop volumineux",
            "Förfrågans huvudfält är för stora",
            "Headervelden van het verzoek te groot",
            "Header-Felder der Anfrage zu groß",
            "Campos de encabezado de la solicitud demasiado grandes",
        ],
        500 => &[
            "Internal Server Error",
            "Erreur interne du serveur",
            "Internt serverfel",
            "Interne serverfout",
            "Interner Serverfehler",
            "Error interno del servidor",
        ],
        502 => &[
            "Bad Gateway",
            "Passerelle incorrecte",
            "Felaktig gateway",
            "Ongeldige gateway",
            "Fehlerhaftes Gateway",
            "Puerta de enlace incorrecta",
        ],
        503 => &[
            "Service Unavailable",
            "Service indisponible",
            "Tjänsten är inte tillgänglig",
            "Dienst niet beschikbaar",
            "Dienst nicht verfügbar",
            "Servicio no disponible",
        ],
        504 => &[
            "Gateway Timeout",
            "Délai de la passerelle dépassé",
            "Tidsgränsen för gatewayen överskreds",
            "Time-out van de gateway",
            "Gateway-Zeitüberschreitung",
            "Tiempo de espera de la puerta de enlace agotado",
        ],
        508 => &[
            "Loop Detected",
            "Boucle détectée",
            "Slinga upptäckt",
            "Lus gedetecteerd",
            "Schleife erkannt",
            "Bucle detectado",
        ],
        _ => &[
            "Something went wrong",
            "Une erreur s’est produite",
            "Något gick fel",
            "Er is iets misgegaan",
            "Etwas ist schiefgelaufen",
            "Algo salió mal",
        ],
    };
    pick(texts, lang)
}

/// The localized plain-language meaning of a failure (one text per [`PageText`]).
fn meaning(lang: Lang, text: PageText) -> &'static str {
    let texts: &Tr = match text {
        PageText::DnsError => &[
            "We could not locate the application behind this site. The problem is on our side, not with your device. Please try again in a few minutes.",
            "Nous ne parvenons pas à localiser l’application qui fait fonctionner ce site. Le problème vient de chez nous, pas de votre appareil. Veuillez réessayer dans quelques minutes.",
            "Vi kunde inte hitta applikationen bakom den här webbplatsen. Felet ligger hos oss, inte hos din enhet. Försök igen om några minuter.",
            "We konden de applicatie achter deze website niet vinden. Het probleem ligt bij ons, niet bij uw apparaat. Probeer het over een paar minuten opnieuw.",
            "Wir konnten die Anwendung hinter dieser Website nicht finden. Das Problem liegt bei uns, nicht bei Ihrem Gerät. Bitte versuchen Sie es in ein paar Minuten erneut.",
            "No pudimos localizar la aplicación que hay detrás de este sitio. El problema es nuestro, no de su dispositivo. Vuelva a intentarlo dentro de unos minutos.",
        ],
        PageText::DnsTimeout => &[
            "Finding the application behind this site took too long. This is usually temporary. Please try again in a moment.",
            "La recherche de l’application qui fait fonctionner ce site a pris trop de temps. C’est généralement passager. Veuillez réessayer dans un instant.",
            "Det tog för lång tid att hitta applikationen bakom den här webbplatsen. Det är oftast tillfälligt. Försök igen om en stund.",
            "Het zoeken naar de applicatie achter deze website duurde te lang. Dit is meestal tijdelijk. Probeer het zo meteen opnieuw.",
            "Die Suche nach der Anwendung hinter dieser Website hat zu lange gedauert. Das ist meist nur vorübergehend. Bitte versuchen Sie es gleich noch einmal.",
            "La búsqueda de la aplicación que hay detrás de este sitio tardó demasiado. Suele ser algo temporal. Vuelva a intentarlo en un momento.",
        ],
        PageText::Refused => &[
            "The application behind this site is not accepting connections right now. It may be restarting. Please try again in a moment.",
            "L’application qui fait fonctionner ce site n’accepte pas de connexions pour le moment. Elle est peut-être en train de redémarrer. Veuillez réessayer dans un instant.",
            "Applikationen bakom den här webbplatsen tar inte emot anslutningar just nu. Den kanske håller på att starta om. Försök igen om en stund.",
            "De applicatie achter deze website accepteert op dit moment geen verbindingen. Mogelijk wordt ze opnieuw opgestart. Probeer het zo meteen opnieuw.",
            "Die Anwendung hinter dieser Website nimmt gerade keine Verbindungen an. Möglicherweise wird sie neu gestartet. Bitte versuchen Sie es gleich noch einmal.",
            "La aplicación que hay detrás de este sitio no acepta conexiones en este momento. Puede que se esté reiniciando. Vuelva a intentarlo en un momento.",
        ],
        PageText::ConnectTimeout => &[
            "The application behind this site could not be reached in time. It may be overloaded. Please try again in a moment.",
            "L’application qui fait fonctionner ce site n’a pas pu être jointe à temps. Elle est peut-être surchargée. Veuillez réessayer dans un instant.",
            "Det gick inte att nå applikationen bakom den här webbplatsen i tid. Den kan vara överbelastad. Försök igen om en stund.",
            "De applicatie achter deze website was niet op tijd bereikbaar. Mogelijk is ze overbelast. Probeer het zo meteen opnieuw.",
            "Die Anwendung hinter dieser Website war nicht rechtzeitig erreichbar. Möglicherweise ist sie überlastet. Bitte versuchen Sie es gleich noch einmal.",
            "No se pudo contactar a tiempo con la aplicación que hay detrás de este sitio. Puede que esté sobrecargada. Vuelva a intentarlo en un momento.",
        ],
        PageText::Terminated => &[
            "The connection to the application behind this site was cut off before it answered. Please try again.",
            "La connexion avec l’application qui fait fonctionner ce site a été coupée avant qu’elle ne réponde. Veuillez réessayer.",
            "Anslutningen till applikationen bakom den här webbplatsen bröts innan den hann svara. Försök igen.",
            "De verbinding met de applicatie achter deze website werd verbroken voordat er een antwoord kwam. Probeer het opnieuw.",
            "Die Verbindung zur Anwendung hinter dieser Website wurde unterbrochen, bevor sie antworten konnte. Bitte versuchen Sie es erneut.",
            "La conexión con la aplicación que hay detrás de este sitio se cortó antes de que respondiera. Vuelva a intentarlo.",
        ],
        PageText::BadResponse => &[
            "The application behind this site sent an answer we could not understand. The problem is on our side. Please try again later.",
            "L’application qui fait fonctionner ce site a envoyé une réponse que nous n’avons pas pu comprendre. Le problème vient de chez nous. Veuillez réessayer plus tard.",
            "Applikationen bakom den här webbplatsen skickade ett svar som vi inte kunde tolka. Felet ligger hos oss. Försök igen senare.",
            "De applicatie achter deze website stuurde een antwoord dat we niet konden begrijpen. Het probleem ligt bij ons. Probeer het later opnieuw.",
            "Die Anwendung hinter dieser Website hat eine Antwort gesendet, die wir nicht verstehen konnten. Das Problem liegt bei uns. Bitte versuchen Sie es später erneut.",
            "La aplicación que hay detrás de este sitio envió una respuesta que no pudimos entender. El problema es nuestro. Vuelva a intentarlo más tarde.",
        ],
        PageText::ResponseHeaderTooLarge => &[
            "The application behind this site sent an answer that was too large to pass on. The problem is on our side. Please try again later.",
            "L’application qui fait fonctionner ce site a envoyé une réponse trop volumineuse pour être transmise. Le problème vient de chez nous. Veuillez réessayer plus tard.",
            "Applikationen bakom den här webbplatsen skickade ett svar som var för stort för att skickas vidare. Felet ligger hos oss. Försök igen senare.",
            "De applicatie achter deze website stuurde een antwoord dat te groot was om door te geven. Het probleem ligt bij ons. Probeer het later opnieuw.",
            "Die Anwendung hinter dieser Website hat eine Antwort gesendet, die zu groß zum Weiterleiten war. Das Problem liegt bei uns. Bitte versuchen Sie es später erneut.",
            "La aplicación que hay detrás de este sitio envió una respuesta demasiado grande para poder transmitirla. El problema es nuestro. Vuelva a intentarlo más tarde.",
        ],
        PageText::ResponseTimeout => &[
            "The application behind this site did not answer in time. It may be busy. Please try again in a moment.",
            "L’application qui fait fonctionner ce site n’a pas répondu à temps. Elle est peut-être occupée. Veuillez réessayer dans un instant.",
            "Applikationen bakom den här webbplatsen svarade inte i tid. Den kan vara upptagen. Försök igen om en stund.",
            "De applicatie achter deze website antwoordde niet op tijd. Mogelijk heeft ze het druk. Probeer het zo meteen opnieuw.",
            "Die Anwendung hinter dieser Website hat nicht rechtzeitig geantwortet. Möglicherweise ist sie gerade ausgelastet. Bitte versuchen Sie es gleich noch einmal.",
            "La aplicación que hay detrás de este sitio no respondió a tiempo. Puede que esté ocupada. Vuelva a intentarlo en un momento.",
        ],
        PageText::ResponseIncomplete => &[
            "The application behind this site stopped before its answer was complete. Please try again.",
            "L’application qui fait fonctionner ce site s’est arrêtée avant d’avoir terminé sa réponse. Veuillez réessayer.",
            "Applikationen bakom den här webbplatsen avbröt innan svaret var klart. Försök igen.",
            "De applicatie achter deze website stopte voordat haar antwoord compleet was. Probeer het opnieuw.",
            "Die Anwendung hinter dieser Website hat abgebrochen, bevor ihre Antwort vollständig war. Bitte versuchen Sie es erneut.",
            "La aplicación que hay detrás de este sitio se detuvo antes de completar su respuesta. Vuelva a intentarlo.",
        ],
        PageText::Tls => &[
            "A secure connection to the application behind this site could not be set up. The problem is on our side. Please try again later.",
            "Impossible d’établir une connexion sécurisée avec l’application qui fait fonctionner ce site. Le problème vient de chez nous. Veuillez réessayer plus tard.",
            "Det gick inte att upprätta en säker anslutning till applikationen bakom den här webbplatsen. Felet ligger hos oss. Försök igen senare.",
            "Er kon geen beveiligde verbinding worden opgezet met de applicatie achter deze website. Het probleem ligt bij ons. Probeer het later opnieuw.",
            "Es konnte keine sichere Verbindung zur Anwendung hinter dieser Website aufgebaut werden. Das Problem liegt bei uns. Bitte versuchen Sie es später erneut.",
            "No se pudo establecer una conexión segura con la aplicación que hay detrás de este sitio. El problema es nuestro. Vuelva a intentarlo más tarde.",
        ],
        PageText::TlsCertificate => &[
            "The security certificate of the application behind this site could not be verified, so the connection was stopped to protect you. The problem is on our side.",
            "Le certificat de sécurité de l’application qui fait fonctionner ce site n’a pas pu être vérifié. La connexion a donc été interrompue pour vous protéger. Le problème vient de chez nous.",
            "Säkerhetscertifikatet för applikationen bakom den här webbplatsen kunde inte verifieras, så anslutningen stoppades för att skydda dig. Felet ligger hos oss.",
            "Het beveiligingscertificaat van de applicatie achter deze website kon niet worden gecontroleerd, dus is de verbinding verbroken om u te beschermen. Het probleem ligt bij ons.",
            "Das Sicherheitszertifikat der Anwendung hinter dieser Website konnte nicht überprüft werden. Zu Ihrem Schutz wurde die Verbindung daher abgebrochen. Das Problem liegt bei uns.",
            "No se pudo verificar el certificado de seguridad de la aplicación que hay detrás de este sitio, así que la conexión se detuvo para protegerle. El problema es nuestro.",
        ],
        PageText::Unavailable => &[
            "The application behind this site is temporarily unavailable, for example during maintenance or a restart. Please try again shortly.",
            "L’application qui fait fonctionner ce site est momentanément indisponible, par exemple pendant une maintenance ou un redémarrage. Veuillez réessayer d’ici peu.",
            "Applikationen bakom den här webbplatsen är tillfälligt otillgänglig, till exempel på grund av underhåll eller en omstart. Försök igen om en liten stund.",
            "De applicatie achter deze website is tijdelijk niet beschikbaar, bijvoorbeeld door onderhoud of een herstart. Probeer het straks opnieuw.",
            "Die Anwendung hinter dieser Website ist vorübergehend nicht verfügbar, zum Beispiel wegen Wartungsarbeiten oder eines Neustarts. Bitte versuchen Sie es in Kürze erneut.",
            "La aplicación que hay detrás de este sitio no está disponible temporalmente, por ejemplo por mantenimiento o un reinicio. Vuelva a intentarlo en breve.",
        ],
        PageText::Busy => &[
            "This site is very busy right now and could not handle your request. Please try again shortly.",
            "Ce site est très sollicité en ce moment et n’a pas pu traiter votre demande. Veuillez réessayer d’ici peu.",
            "Webbplatsen är hårt belastad just nu och kunde inte hantera din förfrågan. Försök igen om en liten stund.",
            "Het is op dit moment erg druk op deze website, waardoor uw verzoek niet kon worden verwerkt. Probeer het straks opnieuw.",
            "Diese Website ist gerade stark ausgelastet und konnte Ihre Anfrage nicht bearbeiten. Bitte versuchen Sie es in Kürze erneut.",
            "Este sitio está muy saturado en este momento y no pudo atender su solicitud. Vuelva a intentarlo en breve.",
        ],
        PageText::NotFound => &[
            "There is nothing at this address. Check the address for typos, or go back to the home page.",
            "Il n’y a rien à cette adresse. Vérifiez qu’elle ne contient pas de faute de frappe, ou revenez à la page d’accueil.",
            "Det finns ingenting på den här adressen. Kontrollera att adressen är rätt stavad, eller gå tillbaka till startsidan.",
            "Op dit adres is niets te vinden. Controleer het adres op typefouten of ga terug naar de startpagina.",
            "Unter dieser Adresse gibt es nichts. Prüfen Sie die Adresse auf Tippfehler oder kehren Sie zur Startseite zurück.",
            "No hay nada en esta dirección. Compruebe que no contenga errores de escritura o vuelva a la página de inicio.",
        ],
        PageText::BadRequest => &[
            "Your browser sent a request this site could not process. Reloading the page or clearing this site’s cookies often helps.",
            "Votre navigateur a envoyé une requête que ce site n’a pas pu traiter. Recharger la page ou effacer les cookies de ce site résout souvent le problème.",
            "Din webbläsare skickade en förfrågan som webbplatsen inte kunde behandla. Det hjälper ofta att ladda om sidan eller rensa webbplatsens cookies.",
            "Uw browser stuurde een verzoek dat deze website niet kon verwerken. Vaak helpt het om de pagina opnieuw te laden of de cookies van deze website te wissen.",
            "Ihr Browser hat eine Anfrage gesendet, die diese Website nicht verarbeiten konnte. Oft hilft es, die Seite neu zu laden oder die Cookies dieser Website zu löschen.",
            "Su navegador envió una solicitud que este sitio no pudo procesar. A menudo ayuda recargar la página o borrar las cookies de este sitio.",
        ],
        PageText::Loop => &[
            "Your request was going around in circles and was stopped. This is a configuration problem on our side. Please contact support if it keeps happening.",
            "Votre demande tournait en boucle et a été arrêtée. Il s’agit d’un problème de configuration de notre côté. Contactez l’assistance si cela se reproduit.",
            "Din förfrågan gick runt i en slinga och stoppades. Det är ett konfigurationsfel hos oss. Kontakta supporten om det fortsätter att hända.",
            "Uw verzoek bleef rondgaan in een lus en is gestopt. Dit is een configuratieprobleem aan onze kant. Neem contact op met support als het blijft gebeuren.",
            "Ihre Anfrage ist im Kreis gelaufen und wurde gestoppt. Das ist ein Konfigurationsfehler auf unserer Seite. Bitte wenden Sie sich an den Support, falls das wieder passiert.",
            "Su solicitud estaba dando vueltas en un bucle y se detuvo. Se trata de un problema de configuración por nuestra parte. Contacte con soporte si vuelve a ocurrir.",
        ],
        PageText::Internal => &[
            "Something went wrong on our side while handling your request. Please try again in a moment.",
            "Un problème est survenu de notre côté lors du traitement de votre demande. Veuillez réessayer dans un instant.",
            "Något gick fel hos oss när din förfrågan hanterades. Försök igen om en stund.",
            "Er ging aan onze kant iets mis bij het verwerken van uw verzoek. Probeer het zo meteen opnieuw.",
            "Bei der Bearbeitung Ihrer Anfrage ist auf unserer Seite ein Fehler aufgetreten. Bitte versuchen Sie es gleich noch einmal.",
            "Algo salió mal por nuestra parte al procesar su solicitud. Vuelva a intentarlo en un momento.",
        ],
        PageText::Unreachable => &[
            "The application behind this site cannot be reached from here right now. The problem is on our side, not with your device. Please try again in a few minutes.",
            "L’application qui fait fonctionner ce site est injoignable depuis chez nous pour le moment. Le problème vient de chez nous, pas de votre appareil. Veuillez réessayer dans quelques minutes.",
            "Applikationen bakom den här webbplatsen går inte att nå härifrån just nu. Felet ligger hos oss, inte hos din enhet. Försök igen om några minuter.",
            "De applicatie achter deze website is op dit moment vanaf hier niet bereikbaar. Het probleem ligt bij ons, niet bij uw apparaat. Probeer het over een paar minuten opnieuw.",
            "Die Anwendung hinter dieser Website ist von hier aus gerade nicht erreichbar. Das Problem liegt bei uns, nicht bei Ihrem Gerät. Bitte versuchen Sie es in ein paar Minuten erneut.",
            "La aplicación que hay detrás de este sitio no es accesible desde aquí en este momento. El problema es nuestro, no de su dispositivo. Vuelva a intentarlo dentro de unos minutos.",
        ],
        PageText::RequestHeaderTooLarge => &[
            "Your browser sent more header data than this site accepts, often because of too many or too large cookies. Clearing this site’s cookies usually helps.",
            "Votre navigateur a envoyé plus d’en-têtes que ce site n’en accepte, souvent à cause de cookies trop nombreux ou trop volumineux. Effacer les cookies de ce site résout généralement le problème.",
            "Din webbläsare skickade mer huvuddata än webbplatsen tar emot, ofta på grund av för många eller för stora cookies. Det hjälper oftast att rensa webbplatsens cookies.",
            "Uw browser stuurde meer headergegevens dan deze website accepteert, vaak door te veel of te grote cookies. Het wissen van de cookies van deze website helpt meestal.",
            "Ihr Browser hat mehr Header-Daten gesendet, als diese Website annimmt, oft wegen zu vieler oder zu großer Cookies. Meist hilft es, die Cookies dieser Website zu löschen.",
            "Su navegador envió más datos de cabecera de los que este sitio acepta, a menudo por tener demasiadas cookies o cookies demasiado grandes. Borrar las cookies de este sitio suele ayudar.",
        ],
        PageText::ClientTimeout => &[
            "Your request arrived too slowly and the connection was closed. This is often a slow or interrupted network. Please try again.",
            "Votre requête est arrivée trop lentement et la connexion a été fermée. C’est souvent dû à un réseau lent ou interrompu. Veuillez réessayer.",
            "Din förfrågan kom fram för långsamt och anslutningen stängdes. Det beror ofta på ett långsamt eller avbrutet nätverk. Försök igen.",
            "Uw verzoek kwam te langzaam binnen en de verbinding is gesloten. Dit komt vaak door een traag of onderbroken netwerk. Probeer het opnieuw.",
            "Ihre Anfrage kam zu langsam an und die Verbindung wurde geschlossen. Das liegt oft an einem langsamen oder unterbrochenen Netzwerk. Bitte versuchen Sie es erneut.",
            "Su solicitud llegó demasiado despacio y se cerró la conexión. Suele deberse a una red lenta o interrumpida. Vuelva a intentarlo.",
        ],
    };
    pick(texts, lang)
}

/// Fixed page labels in one language.
struct Labels {
    request_id: &'static str,
    time: &'static str,
    error_code: &'static str,
    contact_support: &'static str,
    support_hint: &'static str,
    details: &'static str,
}

const LABELS: [Labels; 6] = [
    Labels {
        request_id: "Request ID",
        time: "Time",
        error_code: "Error code",
        contact_support: "Contact support",
        support_hint: "If the problem persists, mention this request ID when you contact support.",
        details: "Technical details",
    },
    Labels {
        request_id: "Identifiant de la requête",
        time: "Heure",
        error_code: "Code d’erreur",
        contact_support: "Contacter l’assistance",
        support_hint: "Si le problème persiste, indiquez cet identifiant de requête en contactant l’assistance.",
        details: "Détails techniques",
    },
    Labels {
        request_id: "Förfrågnings-ID",
        time: "Tid",
        error_code: "Felkod",
        contact_support: "Kontakta supporten",
        support_hint: "Om problemet kvarstår, ange detta förfrågnings-ID när du kontaktar supporten.",
        details: "Tekniska detaljer",
    },
    Labels {
        request_id: "Verzoek-ID",
        time: "Tijd",
        error_code: "Foutcode",
        contact_support: "Contact opnemen met support",
        support_hint: "Blijft het probleem zich voordoen? Vermeld dan dit verzoek-ID als u contact opneemt met support.",
        details: "Technische details",
    },
    Labels {
        request_id: "Anfrage-ID",
        time: "Zeit",
        error_code: "Fehlercode",
        contact_support: "Support kontaktieren",
        support_hint: "Wenn das Problem weiterhin besteht, nennen Sie bitte diese Anfrage-ID, wenn Sie sich an den Support wenden.",
        details: "Technische Details",
    },
    Labels {
        request_id: "ID de solicitud",
        time: "Hora",
        error_code: "Código de error",
        contact_support: "Contactar con soporte",
        support_hint: "Si el problema continúa, indique este ID de solicitud al contactar con soporte.",
        details: "Detalles técnicos",
    },
];

fn labels(lang: Lang) -> &'static Labels {
    &LABELS[lang as usize]
}

/// "Try again in N seconds", with the right singular/plural form.
fn retry_hint(lang: Lang, secs: u32) -> String {
    let one = secs == 1 || (lang == Lang::Fr && secs == 0);
    match (lang, one) {
        (Lang::En, true) => "Try again in 1 second.".to_owned(),
        (Lang::En, false) => format!("Try again in {secs} seconds."),
        (Lang::Fr, true) => format!("Réessayez dans {secs} seconde."),
        (Lang::Fr, false) => format!("Réessayez dans {secs} secondes."),
        (Lang::Sv, true) => "Försök igen om 1 sekund.".to_owned(),
        (Lang::Sv, false) => format!("Försök igen om {secs} sekunder."),
        (Lang::Nl, true) => "Probeer het over 1 seconde opnieuw.".to_owned(),
        (Lang::Nl, false) => format!("Probeer het over {secs} seconden opnieuw."),
        (Lang::De, true) => "Versuchen Sie es in 1 Sekunde erneut.".to_owned(),
        (Lang::De, false) => format!("Versuchen Sie es in {secs} Sekunden erneut."),
        (Lang::Es, true) => "Vuelva a intentarlo dentro de 1 segundo.".to_owned(),
        (Lang::Es, false) => format!("Vuelva a intentarlo dentro de {secs} segundos."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn page<'a>(
        accept: Option<&'a HeaderValue>,
        accept_language: Option<&'a HeaderValue>,
    ) -> Page<'a> {
        Page {
            status: StatusCode::BAD_GATEWAY,
            cause: Cause::ConnectionRefused,
            request_id: "req-123",
            accept,
            accept_language,
            details: None,
            retry_after: None,
            now: at(1_795_321_264),
        }
    }

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn text(r: &Rendered) -> &str {
        std::str::from_utf8(&r.body).unwrap()
    }

    fn json(r: &Rendered) -> serde_json::Value {
        assert_eq!(r.content_type, "application/problem+json");
        serde_json::from_slice(&r.body).unwrap()
    }

    fn is_json(accept: Option<&str>) -> bool {
        prefers_json(accept.map(hv).as_ref())
    }

    /// A unique temp dir removed on drop.
    struct TempDir(std::path::PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dir = std::env::temp_dir().join(format!(
                "healgate-pages-{tag}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn accept_negotiation() {
        assert!(!is_json(None));
        assert!(!is_json(Some("*/*")));
        assert!(!is_json(Some("text/html")));
        assert!(!is_json(Some("image/png")));
        assert!(!is_json(Some(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("application/problem+json")));
        assert!(is_json(Some("*/*+json")));
        assert!(is_json(Some("application/*")));
        assert!(is_json(Some("Application/JSON")));
        assert!(is_json(Some("application/json, text/plain, */*")));
        // q-values decide.
        assert!(is_json(Some("text/html;q=0.5, application/json")));
        assert!(is_json(Some("text/html; q=0.5, application/json; q=0.9")));
        assert!(!is_json(Some("application/json;q=0.5, text/html")));
        assert!(!is_json(Some("application/json;q=0.8, */*")));
        assert!(!is_json(Some("application/json;q=0, */*")));
        assert!(is_json(Some("text/html;q=0, */*")));
        // A plain tie goes to HTML.
        assert!(!is_json(Some("application/json, text/html")));
    }

    #[test]
    fn html_by_default_and_json_on_request() {
        let pages = Pages::new(None, false, None).unwrap();
        let r = pages.render(&page(None, None));
        assert_eq!(r.content_type, "text/html; charset=utf-8");
        assert_eq!(r.content_language, "en");
        let html = text(&r);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<html lang=\"en\">"));
        assert!(html.contains("name=\"viewport\""));
        assert!(html.contains("Bad Gateway"));
        assert!(html.contains(">502<"));
        assert!(html.contains("not accepting connections"));
        assert!(html.contains("2026-11-22T04:21:04Z"));
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!html.contains("<script"));

        let accept = hv("application/json");
        let r = pages.render(&page(Some(&accept), None));
        let v = json(&r);
        assert_eq!(v["type"], "https://healgate.dev/errors/connection_refused");
        assert_eq!(v["title"], "Bad Gateway");
        assert_eq!(v["status"], 502);
        assert_eq!(v["error"], "connection_refused");
        assert_eq!(v["time"], "2026-11-22T04:21:04Z");
        assert!(v["detail"]
            .as_str()
            .unwrap()
            .contains("not accepting connections"));
        assert!(v.get("support_url").is_none());
        assert!(v.get("retry_after").is_none());
    }

    #[test]
    fn request_id_in_both_forms() {
        let pages = Pages::new(None, false, None).unwrap();
        let r = pages.render(&page(None, None));
        assert!(text(&r).contains("<dd id=\"request-id\">req-123</dd>"));
        let accept = hv("application/problem+json");
        let v = json(&pages.render(&page(Some(&accept), None)));
        assert_eq!(v["request_id"], "req-123");
    }

    #[test]
    fn french_from_fr_fr() {
        let pages = Pages::new(None, false, None).unwrap();
        let lang = hv("fr-FR,fr;q=0.9,en;q=0.8");
        let r = pages.render(&page(None, Some(&lang)));
        assert_eq!(r.content_language, "fr");
        let html = text(&r);
        assert!(html.contains("<html lang=\"fr\">"));
        assert!(html.contains("Passerelle incorrecte"));
        assert!(html.contains("Identifiant de la requête"));
        assert!(html.contains("n’accepte pas de connexions"));

        let accept = hv("application/json");
        let r = pages.render(&page(Some(&accept), Some(&lang)));
        assert_eq!(r.content_language, "fr");
        let v = json(&r);
        assert_eq!(v["title"], "Passerelle incorrecte");
    }

    #[test]
    fn language_selection() {
        let pick = |s: &str| negotiate_language(Some(&hv(s)));
        assert_eq!(negotiate_language(None), Lang::En);
        assert_eq!(pick("sv-SE"), Lang::Sv);
        assert_eq!(pick("nl-BE, en;q=0.5"), Lang::Nl);
        assert_eq!(pick("en;q=0.5, de-CH"), Lang::De);
        assert_eq!(pick("ES"), Lang::Es);
        assert_eq!(pick("ja, zh-CN;q=0.9"), Lang::En);
        assert_eq!(pick("ja, fr;q=0.3"), Lang::Fr);
        assert_eq!(pick("fr;q=0, sv;q=0.1"), Lang::Sv);
        assert_eq!(pick("*"), Lang::En);
        assert_eq!(pick(""), Lang::En);
    }

    #[test]
    fn unknown_language_falls_back_to_english() {
        let pages = Pages::new(None, false, None).unwrap();
        let lang = hv("ja-JP, zh;q=0.8");
        let r = pages.render(&page(None, Some(&lang)));
        assert_eq!(r.content_language, "en");
        assert!(text(&r).contains("Bad Gateway"));
    }

    #[test]
    fn escaping() {
        let pages = Pages::new(
            Some("https://example.com/help?a=1&b=\"x\"".into()),
            true,
            None,
        )
        .unwrap();
        let mut p = page(None, None);
        let nasty = "<script>alert('x')</script>&\"";
        p.request_id = nasty;
        p.details = Some("<img src=x onerror=alert(1)>");
        let html = text(&pages.render(&p)).to_owned();
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<img"));
        assert!(html.contains(
            "<dd id=\"request-id\">&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;</dd>"
        ));
        assert!(html.contains("href=\"https://example.com/help?a=1&amp;b=&quot;x&quot;\""));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));

        let accept = hv("application/json");
        p.accept = Some(&accept);
        let v = json(&pages.render(&p));
        assert_eq!(v["request_id"], nasty);
    }

    #[test]
    fn details_hidden_unless_enabled() {
        let cause = "connect to 10.0.0.5:8000: refused";
        let accept = hv("application/json");
        for enabled in [false, true] {
            let pages = Pages::new(None, enabled, None).unwrap();
            assert_eq!(pages.details_enabled(), enabled);
            let mut p = page(None, None);
            p.details = Some(cause);
            let html = text(&pages.render(&p)).to_owned();
            p.accept = Some(&accept);
            let v = json(&pages.render(&p));
            let detail = v["detail"].as_str().unwrap();
            assert_eq!(html.contains(cause), enabled);
            assert_eq!(html.contains("Technical details"), enabled);
            assert_eq!(detail.contains(cause), enabled);
            assert!(detail.contains("not accepting connections"));
        }
    }

    #[test]
    fn support_url_and_retry_after() {
        let pages = Pages::new(Some("https://example.com/support".into()), false, None).unwrap();
        let mut p = page(None, None);
        p.status = StatusCode::SERVICE_UNAVAILABLE;
        p.cause = Cause::NoHealthyPeer;
        p.retry_after = Some(30);
        let html = text(&pages.render(&p)).to_owned();
        assert!(html.contains("href=\"https://example.com/support\""));
        assert!(html.contains("Contact support"));
        assert!(html.contains("Try again in 30 seconds."));
        assert!(html.contains("Service Unavailable"));

        let de = hv("de-DE");
        p.accept_language = Some(&de);
        p.retry_after = Some(1);
        let html = text(&pages.render(&p)).to_owned();
        assert!(html.contains("Versuchen Sie es in 1 Sekunde erneut."));
        assert!(html.contains("Support kontaktieren"));

        let accept = hv("application/json");
        p.accept = Some(&accept);
        p.accept_language = None;
        let v = json(&pages.render(&p));
        assert_eq!(v["support_url"], "https://example.com/support");
        assert_eq!(v["retry_after"], 1);
        assert_eq!(v["status"], 503);
    }

    #[test]
    fn override_file_placeholders() {
        let dir = TempDir::new("override");
        std::fs::write(
            dir.0.join("502.html"),
            "<html lang=\"{{lang}}\"><h1>{{status}} {{ title }}</h1><p>{{message}}</p>\
             <code>{{request_id}}</code> at {{time}} / {{error}} / <a href=\"{{support_url}}\">help</a> \
             {{unknown}} {{ broken",
        )
        .unwrap();
        std::fs::write(dir.0.join("README.txt"), "not a page").unwrap();
        std::fs::write(dir.0.join("abc.html"), "not a page either").unwrap();
        let pages = Pages::new(Some("https://x.test/?a&b".into()), false, Some(&dir.0)).unwrap();

        let mut p = page(None, None);
        p.request_id = "<id>";
        let html = text(&pages.render(&p)).to_owned();
        assert_eq!(
            html,
            "<html lang=\"en\"><h1>502 Bad Gateway</h1><p>The application behind this site is not \
             accepting connections right now. It may be restarting. Please try again in a moment.</p>\
             <code>&lt;id&gt;</code> at 2026-11-22T04:21:04Z / connection_refused / \
             <a href=\"https://x.test/?a&amp;b\">help</a> {{unknown}} {{ broken"
        );

        // Localized values flow into the override too.
        let fr = hv("fr");
        p.accept_language = Some(&fr);
        let html = text(&pages.render(&p)).to_owned();
        assert!(html.contains("502 Passerelle incorrecte"));

        // JSON ignores the override; other statuses use the built-in page.
        let accept = hv("application/json");
        p.accept = Some(&accept);
        assert_eq!(json(&pages.render(&p))["status"], 502);
        p.accept = None;
        p.status = StatusCode::GATEWAY_TIMEOUT;
        assert!(text(&pages.render(&p)).starts_with("<!DOCTYPE html>"));
    }

    #[test]
    fn missing_pages_dir_names_path() {
        let dir = std::env::temp_dir().join(format!(
            "healgate-pages-missing-{}-does-not-exist",
            std::process::id()
        ));
        let err = Pages::new(None, false, Some(&dir)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert!(err.to_string().contains(&dir.display().to_string()));
        // An empty dir is fine.
        let empty = TempDir::new("empty");
        assert!(Pages::new(None, false, Some(&empty.0)).is_ok());
    }

    #[test]
    fn every_cause_has_a_text_and_a_title_in_every_language() {
        let mut texts = std::collections::HashMap::new();
        for cause in Cause::ALL {
            let en = meaning(Lang::En, cause.page_text());
            assert!(!en.is_empty(), "{cause:?}");
            // One text is one meaning: two texts never read the same.
            if let Some(other) = texts.insert(en, cause.page_text()) {
                assert_eq!(other, cause.page_text(), "{cause:?} shares a text");
            }
            for lang in &Lang::ALL[1..] {
                let t = meaning(*lang, cause.page_text());
                assert!(!t.is_empty());
                assert_ne!(t, en, "{cause:?} not translated to {}", lang.code());
            }
            let s = cause.status();
            assert_ne!(
                title(Lang::En, s),
                title(Lang::En, StatusCode::IM_A_TEAPOT),
                "{cause:?}: {s} has no own title"
            );
            for lang in &Lang::ALL[1..] {
                assert_ne!(title(*lang, s), title(Lang::En, s), "{cause:?}");
            }
        }
        for lang in Lang::ALL {
            assert!(retry_hint(lang, 5).contains('5'));
            assert!(!labels(lang).request_id.is_empty());
        }
    }
}
