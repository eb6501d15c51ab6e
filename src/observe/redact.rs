//! Redaction of secret-looking values in app output before it leaves the app's own
//! log file (events, crash reasons, status, pages; diagnose bundles may reuse it).
//!
//! What is replaced by `[redacted]`:
//! - the value of `key=value` / `key: value` when the key names a secret (it contains
//!   `key`, `secret`, `token`, `pass`, `pwd`, `credential` or `auth`, any case; not a
//!   key that ends in `error` or `exception`, such as Python's `KeyError:`);
//! - the token after `Bearer ` or `Basic `;
//! - the password of a URL, `scheme://user:password@host`;
//! - long runs that look like keys: 32 or more hex digits, or 32 or more base64
//!   characters mixing upper case, lower case and digits.
//!
//! Diagnose bundles add [`Secrets`]: values known to be secret (the environment's and
//! the config's values under a name that [`names_secret`]) replaced wherever they
//! appear, whatever the line looks like.

use std::borrow::Cow;

/// What a redacted value is replaced with.
pub const MARK: &str = "[redacted]";

const SECRET_WORDS: [&str; 7] = [
    "key",
    "secret",
    "token",
    "pass",
    "pwd",
    "credential",
    "auth",
];
const LONG_RUN: usize = 32;

/// `line` with every secret-looking value replaced by [`MARK`].
pub fn redact(line: &str) -> Cow<'_, str> {
    let b = line.as_bytes();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    url_passwords(b, &mut spans);
    schemes(b, &mut spans);
    key_values(b, &mut spans);
    long_runs(b, &mut spans);
    if spans.is_empty() {
        return Cow::Borrowed(line);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(line.len());
    let mut at = 0;
    for (s, e) in spans {
        if e <= at {
            continue;
        }
        let s = s.max(at);
        out.push_str(&line[at..s]);
        out.push_str(MARK);
        at = e;
    }
    out.push_str(&line[at..]);
    Cow::Owned(out)
}

/// The words that make an environment variable's name secret (any case).
const SECRET_NAMES: [&str; 7] = [
    "KEY",
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASS",
    "CREDENTIAL",
    "AUTH",
];

/// Prefixes of well-known API keys (`sk-live-...`, `ghp_...`, `AKIA...`).
const KEY_PREFIXES: [&str; 9] = [
    "sk-",
    "sk_",
    "pk_live_",
    "rk_live_",
    "ghp_",
    "gho_",
    "github_pat_",
    "xox",
    "AKIA",
];

/// One environment variable as the admin API shows it: the whole value replaced
/// when the name names a secret or the value looks like a key; else the value with
/// URL passwords, bearer tokens and long key-like runs redacted (as in app output).
pub fn env_value<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    let upper = name.to_ascii_uppercase();
    if SECRET_NAMES.iter().any(|w| upper.contains(w)) || looks_like_key(value) {
        return Cow::Borrowed(MARK);
    }
    redact(value)
}

/// A value shaped like an API key: a known key prefix followed by more.
fn looks_like_key(value: &str) -> bool {
    let v = value.trim();
    KEY_PREFIXES
        .iter()
        .any(|p| v.len() >= p.len() + 8 && v.starts_with(p) && !v.contains(char::is_whitespace))
}

/// A command line as the admin API shows it: each argument redacted as app output
/// is, an argument that looks like a key replaced, and the argument after a flag
/// that names a secret (`--api-key VALUE`, `-p VALUE` is left) replaced too.
pub fn argv(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut secret_next = false;
    for a in args {
        if secret_next && !a.starts_with('-') {
            out.push(MARK.to_owned());
            secret_next = false;
            continue;
        }
        let flag = a.starts_with('-') && !a.contains('=');
        let upper = a.to_ascii_uppercase();
        secret_next = flag && SECRET_NAMES.iter().any(|w| upper.contains(w));
        if looks_like_key(a) {
            out.push(MARK.to_owned());
        } else {
            out.push(redact(a).into_owned());
        }
    }
    out
}

/// Characters a bare value runs over (ends at space, quote, comma, `;`, `&` ...).
fn value_char(c: u8) -> bool {
    !(c.is_ascii_whitespace()
        || matches!(c, b'"' | b'\'' | b',' | b';' | b'&' | b')' | b']' | b'}'))
}

fn key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

/// `scheme://user:password@host`: the password.
fn url_passwords(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    let mut i = 0;
    while let Some(p) = find(b, i, b"://") {
        let start = p + 3;
        let mut j = start;
        let mut colon = None;
        while j < b.len() && !matches!(b[j], b'/' | b'?' | b'#' | b'@') && value_char(b[j]) {
            if b[j] == b':' && colon.is_none() {
                colon = Some(j);
            }
            j += 1;
        }
        if j < b.len() && b[j] == b'@' {
            if let Some(c) = colon {
                if c + 1 < j {
                    spans.push((c + 1, j));
                }
            }
        }
        i = start;
    }
}

/// `Bearer <token>` and `Basic <token>`, any case.
fn schemes(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    for word in [&b"bearer "[..], &b"basic "[..]] {
        let mut i = 0;
        while let Some(p) = find_ci(b, i, word) {
            let boundary = p == 0 || !b[p - 1].is_ascii_alphanumeric();
            let s = p + word.len();
            let mut e = s;
            while e < b.len() && value_char(b[e]) {
                e += 1;
            }
            if boundary && e > s {
                spans.push((s, e));
            }
            i = s;
        }
    }
}

fn names_a_secret(key: &[u8]) -> bool {
    let k = String::from_utf8_lossy(key).to_ascii_lowercase();
    if k.ends_with("error") || k.ends_with("exception") || k.ends_with("passed") {
        return false;
    }
    SECRET_WORDS.iter().any(|w| k.contains(w))
}

/// `key=value`, `key: value`, `"key": "value"` when the key names a secret.
fn key_values(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    for (i, &c) in b.iter().enumerate() {
        if c != b'=' && c != b':' {
            continue;
        }
        // The key: a run of key characters before, maybe in quotes, maybe spaced
        // (`token = "..."` in TOML).
        let mut ke = i;
        while ke > 0 && b[ke - 1] == b' ' {
            ke -= 1;
        }
        if ke > 0 && matches!(b[ke - 1], b'"' | b'\'') {
            ke -= 1;
        }
        let mut ks = ke;
        while ks > 0 && key_char(b[ks - 1]) {
            ks -= 1;
        }
        if ks == ke || !names_a_secret(&b[ks..ke]) {
            continue;
        }
        // `key: value` needs the space (or a quote): `a:b` is not a pair.
        let mut s = i + 1;
        if c == b':' && s < b.len() && b[s] == b'/' {
            continue; // a URL scheme
        }
        if c == b'=' && s < b.len() && b[s] == b'=' {
            continue; // `a == b`
        }
        while s < b.len() && b[s] == b' ' {
            s += 1;
        }
        if s < b.len() && matches!(b[s], b'"' | b'\'') {
            let q = b[s];
            let vs = s + 1;
            let mut ve = vs;
            while ve < b.len() && b[ve] != q {
                ve += 1;
            }
            if ve > vs {
                spans.push((vs, ve));
            }
            continue;
        }
        let mut e = s;
        while e < b.len() && value_char(b[e]) {
            e += 1;
        }
        if e > s && &b[s..e] != MARK.as_bytes() {
            spans.push((s, e));
        }
    }
}

/// 32+ hex digits, or 32+ base64 characters with upper, lower and digits.
fn long_runs(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    let run_char =
        |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'_' | b'-');
    let mut i = 0;
    while i < b.len() {
        if !run_char(b[i]) {
            i += 1;
            continue;
        }
        let s = i;
        while i < b.len() && run_char(b[i]) {
            i += 1;
        }
        let run = &b[s..i];
        // Paths are not keys: split on '/' unless the run is one long piece.
        for (ps, piece) in pieces(run) {
            if piece.len() < LONG_RUN {
                continue;
            }
            let hex = piece.iter().all(|c| c.is_ascii_hexdigit());
            let mixed = piece.iter().any(|c| c.is_ascii_uppercase())
                && piece.iter().any(|c| c.is_ascii_lowercase())
                && piece.iter().any(|c| c.is_ascii_digit());
            if hex || mixed {
                spans.push((s + ps, s + ps + piece.len()));
            }
        }
    }
}

fn pieces(run: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut s = 0;
    for (i, c) in run.iter().enumerate() {
        if *c == b'/' {
            out.push((s, &run[s..i]));
            s = i + 1;
        }
    }
    out.push((s, &run[s..]));
    out
}

/// Whether an environment variable or config key of this name holds a secret: it
/// contains KEY, SECRET, TOKEN, PASSWORD, PASS, PWD, CREDENTIAL or AUTH (any case).
pub fn names_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| n.contains(w))
}

/// Values known to be secret, replaced by [`MARK`] wherever they appear (then the
/// patterns of [`redact`]). Values shorter than [`Secrets::MIN`] are not searched
/// for (replacing every `abc` would wreck the text); [`redact`]'s patterns still
/// apply to them where they follow a secret name.
#[derive(Debug, Default, Clone)]
pub struct Secrets {
    values: Vec<String>,
}

impl Secrets {
    /// Shortest value searched for.
    pub const MIN: usize = 5;

    /// Remember `value` as a secret (trimmed; ignored when shorter than [`Self::MIN`]).
    pub fn add(&mut self, value: &str) {
        let v = value.trim();
        if v.len() >= Self::MIN && !self.values.iter().any(|x| x == v) {
            self.values.push(v.to_owned());
            // Longest first, so that a value containing another goes whole.
            self.values.sort_by_key(|x| std::cmp::Reverse(x.len()));
        }
    }

    /// Remember `value` when `name` names a secret, and the password of any URL in it.
    pub fn add_named(&mut self, name: &str, value: &str) {
        if names_secret(name) {
            self.add(value);
        }
        let b = value.as_bytes();
        let mut spans = Vec::new();
        url_passwords(b, &mut spans);
        for (s, e) in spans {
            self.add(&value[s..e]);
        }
    }

    /// How many values are known.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every known value, then every pattern of [`redact`], replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MARK);
            }
        }
        out.lines()
            .map(|l| redact(l).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
            + if text.ends_with('\n') { "\n" } else { "" }
    }

    /// Only the known values replaced (for text whose long hex runs must stay, such
    /// as request ids in the access log).
    pub fn known(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MARK);
            }
        }
        out
    }
}

fn find(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    (from..=b.len().checked_sub(pat.len())?).find(|&i| &b[i..i + pat.len()] == pat)
}

fn find_ci(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    (from..=b.len().checked_sub(pat.len())?)
        .find(|&i| b[i..i + pat.len()].eq_ignore_ascii_case(pat))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        redact(s).into_owned()
    }

    #[test]
    fn environment_values_and_command_lines() {
        assert_eq!(env_value("HEALGATE_TEST_API_KEY", "sk-live-abc"), MARK);
        assert_eq!(env_value("DB_PASSWORD", "x"), MARK);
        assert_eq!(env_value("GITHUB_AUTH", "x"), MARK);
        assert_eq!(env_value("SOMETHING", "sk-live-0123456789"), MARK);
        assert_eq!(env_value("PATH", "/usr/bin:/bin"), "/usr/bin:/bin");
        assert_eq!(env_value("PWD", "/srv/app"), "/srv/app");
        assert_eq!(
            env_value("DATABASE_URL", "postgres://app:hunter2@db/x"),
            "postgres://app:[redacted]@db/x"
        );
        let args: Vec<String> = [
            "app",
            "--api-key",
            "abc",
            "--port",
            "8080",
            "--token=xyz",
            "sk-live-0123456789",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            argv(&args),
            [
                "app",
                "--api-key",
                MARK,
                "--port",
                "8080",
                "--token=[redacted]",
                MARK
            ]
        );
    }

    #[test]
    fn key_values_naming_a_secret() {
        assert_eq!(r("api_key=abcd1234 next"), "api_key=[redacted] next");
        assert_eq!(r("PASSWORD: hunter2"), "PASSWORD: [redacted]");
        assert_eq!(r("db_pass=x;user=bob"), "db_pass=[redacted];user=bob");
        assert_eq!(
            r(r#"{"client_secret": "s3 cr3t", "user": "bob"}"#),
            r#"{"client_secret": "[redacted]", "user": "bob"}"#
        );
        assert_eq!(r("AUTH_TOKEN='abc'"), "AUTH_TOKEN='[redacted]'");
        assert_eq!(r("Authorization: xyz"), "Authorization: [redacted]");
    }

    #[test]
    fn bearer_and_url_passwords() {
        assert_eq!(
            r("GET / with Bearer eyJhbGciOi.x.y"),
            "GET / with Bearer [redacted]"
        );
        assert_eq!(
            r("DATABASE_URL=postgres://app:s3cret@db/x"),
            "DATABASE_URL=postgres://app:[redacted]@db/x"
        );
        assert_eq!(
            r("connect redis://:pw@cache:6379 failed"),
            "connect redis://:[redacted]@cache:6379 failed"
        );
    }

    #[test]
    fn spaced_toml_pairs_and_known_values() {
        assert_eq!(r(r#"token = "abc def""#), r#"token = "[redacted]""#);
        assert_eq!(
            r(r#"env = { DB_PASSWORD = "hunter22", APP_ENV = "prod" }"#),
            r#"env = { DB_PASSWORD = "[redacted]", APP_ENV = "prod" }"#
        );
        assert_eq!(r("if key == other"), "if key == other");
        let mut s = Secrets::default();
        s.add_named("HEALGATE_TEST_SECRET_TOKEN", "plain-words-here");
        s.add_named("DATABASE_URL", "postgres://u:pw-12345@db/x");
        s.add_named("APP_ENV", "production");
        s.add("abc");
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.redact("Some(\"plain-words-here\") and pw-12345 and production\n"),
            "Some(\"[redacted]\") and [redacted] and production\n"
        );
        assert!(
            names_secret("db_Password") && names_secret("AUTH_HEADER") && !names_secret("PATH")
        );
    }

    #[test]
    fn long_key_looking_runs() {
        assert_eq!(
            r("using 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
            "using [redacted]"
        );
        assert_eq!(
            r("sig AKIAx9Fq2LmN0pQrStUvWxYz12345678Ab done"),
            "sig [redacted] done"
        );
    }

    #[test]
    fn ordinary_lines_and_errors_are_left_alone() {
        for line in [
            "KeyError: 'user'",
            "Error: Cannot find module 'nosuch'",
            "INFO: Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)",
            "thread 'main' panicked at src/main.rs:2:5:",
            "    at Module._resolveFilename (node:internal/modules/cjs/loader:1225:15)",
            "/usr/lib/python3/dist-packages/some_package/submodule/file.py",
            "request id 550e8400-e29b-41d4-a716-446655440000 done",
            "tests passed: 5",
        ] {
            assert_eq!(r(line), line);
            assert!(matches!(redact(line), Cow::Borrowed(_)));
        }
    }
}
