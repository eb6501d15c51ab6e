//! Forwarding headers are believed only from `gateway.trusted_proxies`: from anyone
//! else the gateway's own `X-Forwarded-For/-Proto/-Host/-Port` replace the client's
//! (no scheme spoofing, no poisoned reset links); from a trusted proxy they are kept
//! and `X-Forwarded-For` is appended to. `X-Forwarded-Prefix` names a stripped prefix.

mod common;

use common::upstreams::DemoApp;
use common::{get, Gateway};

fn gateway(app: &DemoApp, gateway_extra: &str, route_extra: &str) -> Gateway {
    Gateway::start(&format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n{gateway_extra}\n\n\
         [[upstream]]\nname = \"app\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n\n\
         [[upstream]]\nname = \"api\"\nservers = [\"{}\"]\nroutes = [\"/api/\"]\n{route_extra}\n",
        app.addr, app.addr
    ))
}

/// The values of header `name` the app saw (lowercase), in order.
fn seen(text: &str, name: &str) -> Vec<String> {
    text.to_ascii_lowercase()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
        .collect()
}

const SPOOF: &[(&str, &str)] = &[
    ("X-Forwarded-For", "10.9.8.7"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/evil"),
    ("Forwarded", "for=10.9.8.7;proto=https;host=evil.example"),
    ("Host", "shop.example"),
];

#[test]
fn an_untrusted_client_cannot_say_who_it_is_or_how_it_came() {
    let app = DemoApp::start();
    let gw = gateway(&app, "", "");
    let r = get(gw.addr, "/echo", SPOOF);
    assert_eq!(r.status, 200);
    let text = r.text();
    assert_eq!(seen(&text, "x-forwarded-for"), ["127.0.0.1"], "{text}");
    assert_eq!(seen(&text, "x-forwarded-proto"), ["http"], "{text}");
    assert_eq!(seen(&text, "x-forwarded-host"), ["shop.example"], "{text}");
    assert_eq!(
        seen(&text, "x-forwarded-port"),
        [gw.addr.port().to_string()],
        "{text}"
    );
    assert!(seen(&text, "x-forwarded-prefix").is_empty(), "{text}");
    assert!(seen(&text, "forwarded").is_empty(), "{text}");
}

#[test]
fn a_trusted_proxy_is_believed_and_appended_to() {
    let app = DemoApp::start();
    let gw = gateway(&app, "trusted_proxies = [\"127.0.0.0/8\"]", "");
    let r = get(gw.addr, "/echo", SPOOF);
    let text = r.text();
    assert_eq!(
        seen(&text, "x-forwarded-for"),
        ["10.9.8.7, 127.0.0.1"],
        "{text}"
    );
    assert_eq!(seen(&text, "x-forwarded-proto"), ["https"], "{text}");
    assert_eq!(seen(&text, "x-forwarded-host"), ["evil.example"], "{text}");
    assert_eq!(seen(&text, "x-forwarded-port"), ["443"], "{text}");
    assert_eq!(
        seen(&text, "forwarded"),
        ["for=10.9.8.7;proto=https;host=evil.example"],
        "{text}"
    );
    // Without headers of its own, the trusted peer gets the gateway's.
    let r = get(gw.addr, "/echo", &[]);
    let text = r.text();
    assert_eq!(seen(&text, "x-forwarded-for"), ["127.0.0.1"], "{text}");
    assert_eq!(seen(&text, "x-forwarded-proto"), ["http"], "{text}");
}

#[test]
fn a_stripped_prefix_is_named_for_the_app() {
    let app = DemoApp::start();
    let gw = gateway(&app, "", "strip_prefix = true");
    let r = get(gw.addr, "/api/echo", &[("X-Forwarded-Prefix", "/evil")]);
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.starts_with("GET /echo\n"), "{text}");
    assert_eq!(seen(&text, "x-forwarded-prefix"), ["/api"], "{text}");
    // Not stripped: no prefix header.
    let r = get(gw.addr, "/echo", &[]);
    assert!(seen(&r.text(), "x-forwarded-prefix").is_empty());
}

#[test]
fn a_bad_trusted_proxies_entry_names_key_and_line() {
    let dir = common::TempDir::new("trust");
    let path = dir.path().join("healgate.toml");
    std::fs::write(
        &path,
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ntrusted_proxies = [\"10.0.0.0/8\", \"lb.internal\"]\n",
    )
    .unwrap();
    let (code, out, err) = common::healgate(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(text.contains("gateway.trusted_proxies"), "{text}");
    assert!(text.contains("healgate.toml:3:"), "the line: {text}");
    assert!(text.contains("lb.internal"), "{text}");
}
