//! Tests of the whole check: files in, [`Checked`] or [`Invalid`] out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// The example of SPEC §3, verbatim.
const SPEC_EXAMPLE: &str = r#"
[gateway]
listen = ["127.0.0.1:8080"]        # HTTP/1.1 + h2c
data_dir = "healgate-data"         # logs, events, diagnostics, admin token
workers = 0                        # proxy worker threads; 0 = one per core
access_log = true                  # logs/access.jsonl (false: off, e.g. for benchmarks)
[gateway.timeouts]                 # defaults shown
connect = "2s"
response_header = "30s"            # → 504 http_response_timeout
client_header = "10s"              # slow clients → 408
[gateway.limits]
request_header = "32KiB"           # → 431
response_header = "64KiB"          # → 502 http_response_header_section_size

[admin]
listen = "127.0.0.1:9901"          # API + dashboard + /metrics
# token = "..."  or env HEALGATE_ADMIN_TOKEN; else generated into data_dir/admin.token (0600)

[errors]
support_url = "https://example.com/support"   # shown on error pages
details = false                    # true: Proxy-Status carries details=; pages show the cause
# pages_dir = "errors/"            # optional 502.html, 503.html, ... overrides

[[app]]                            # an app whose instances healgate runs
name = "web"
command = ["python3", "app.py", "--port", "{port}"]   # {port} and env PORT are set per instance
cwd = "."
env = { APP_ENV = "production" }
instances = 3
routes = ["/"]                     # path prefixes, longest wins; optional host = "example.com";
                                   # the path is forwarded unchanged (strip_prefix = true to strip)
max_concurrency = 64               # per instance; beyond it requests queue
queue = { size = 1024, timeout = "5s" }   # full or timed out → 503 connection_limit_reached
health = { path = "/healthz", interval = "2s", timeout = "1s", unhealthy_after = 3, healthy_after = 1 }
startup_timeout = "60s"
shutdown_grace = "30s"

[app.autoheal]
min_uptime = "60s"                 # no rule fires on a younger instance
max_recycles = { count = 5, within = "1h" }
[[app.autoheal.rule]]
when = { memory_above = "512MiB" }                                   # working set of the instance's process tree
action = "recycle"                                                   # recycle | log | diagnose | command
[[app.autoheal.rule]]
when = { slow_requests = { count = 5, slower_than = "10s", within = "1m" } }
action = ["diagnose", "recycle"]
[[app.autoheal.rule]]
when = { requests = { count = 100000 } }
[[app.autoheal.rule]]
when = { status = { codes = "500-599", count = 50, within = "1m" } }

[app.autoscale]                    # absent: fixed `instances`
min = 2
max = 8
target_inflight = 16               # per instance
cooldown = "30s"

[[upstream]]                       # servers on other machines
name = "api"
servers = ["10.0.0.5:8000", "api.internal:8000"]
routes = ["/api/"]
dns = { resolvers = ["10.0.0.2:53", "10.0.0.3:53"], refresh = "30s" }
health = { path = "/healthz", interval = "5s" }
"#;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn check(text: &str) -> Result<Checked, Invalid> {
    parse(text, Path::new("/etc/healgate/healgate.toml"))
}

fn ok(text: &str) -> Checked {
    match check(text) {
        Ok(checked) => checked,
        Err(invalid) => panic!("expected a valid config, got:\n{invalid}"),
    }
}

/// The (path, line, message) of every problem.
fn problems(text: &str) -> Vec<(String, usize, String)> {
    match check(text) {
        Ok(checked) => panic!("expected an invalid config, got {checked:?}"),
        Err(invalid) => invalid
            .problems
            .into_iter()
            .map(|p| (p.path, p.line, p.message))
            .collect(),
    }
}

/// The only error of an invalid `text`: (path, message).
fn only_error(text: &str) -> (String, String) {
    let invalid = check(text).expect_err("expected an invalid config");
    let errors: Vec<_> = invalid.errors().collect();
    assert_eq!(errors.len(), 1, "expected one error, got:\n{invalid}");
    (errors[0].path.clone(), errors[0].message.clone())
}

const MINIMAL_APP: &str = r#"
[[app]]
name = "web"
command = ["./web"]
routes = ["/"]
"#;

#[test]
fn the_spec_example_parses() {
    let checked = ok(SPEC_EXAMPLE);
    assert_eq!(checked.warnings, []);
    let c = checked.config;
    assert_eq!(c.gateway.listen, [addr("127.0.0.1:8080")]);
    assert_eq!(
        c.gateway.data_dir,
        PathBuf::from("/etc/healgate/healgate-data")
    );
    assert_eq!(c.gateway.limits.request_header, 32 * 1024);
    assert_eq!(c.admin.listen, addr("127.0.0.1:9901"));
    assert_eq!(
        c.errors.support_url.as_deref(),
        Some("https://example.com/support")
    );

    let web = &c.apps[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.command, ["python3", "app.py", "--port", "{port}"]);
    assert_eq!(web.cwd, PathBuf::from("/etc/healgate"));
    assert_eq!(web.env, [("APP_ENV".to_string(), "production".to_string())]);
    assert_eq!(web.instances, 3);
    assert_eq!(web.routes.prefixes, ["/"]);
    assert_eq!(web.health.path.as_deref(), Some("/healthz"));
    let autoheal = web.autoheal.as_ref().unwrap();
    assert_eq!(autoheal.max_recycles, (5, secs(3600)));
    assert_eq!(
        autoheal.rules,
        [
            AutohealRule {
                when: Trigger::MemoryAbove(512 << 20),
                actions: vec![Action::Recycle],
            },
            AutohealRule {
                when: Trigger::SlowRequests {
                    count: 5,
                    slower_than: secs(10),
                    within: secs(60),
                    path: None,
                },
                actions: vec![Action::Diagnose, Action::Recycle],
            },
            AutohealRule {
                when: Trigger::Requests { count: 100_000 },
                actions: vec![Action::Recycle],
            },
            AutohealRule {
                when: Trigger::Status {
                    codes: (500, 599),
                    count: 50,
                    within: secs(60),
                    path: None,
                },
                actions: vec![Action::Recycle],
            },
        ]
    );
    let autoscale = web.autoscale.as_ref().unwrap();
    assert_eq!((autoscale.min, autoscale.max), (2, 8));

    let api = &c.upstreams[0];
    assert_eq!(api.name, "api");
    assert_eq!(
        api.servers,
        [
            ServerAddr {
                host: "10.0.0.5".into(),
                port: 8000,
                tls: false
            },
            ServerAddr {
                host: "api.internal".into(),
                port: 8000,
                tls: false
            },
        ]
    );
    assert_eq!(
        api.dns.resolvers,
        [addr("10.0.0.2:53"), addr("10.0.0.3:53")]
    );
    let health = api.health.as_ref().unwrap();
    assert_eq!(health.interval, secs(5));
    assert_eq!(health.timeout, secs(1));
}

#[test]
fn three_mistakes_on_three_lines_are_all_reported() {
    let text = r#"
[gateway]
listn = ["127.0.0.1:8080"]

[[upstream]]
name = "api"
servers = ["10.0.0.4:8000", "10.0.0.5"]
routes = ["/api/"]
health = { path = "/healthz", interval = "5 seconds" }
"#;
    let got = problems(text);
    assert_eq!(
        got,
        [
            (
                "gateway.listn".to_string(),
                3,
                r#"unknown key "listn" (did you mean "listen"?); allowed: listen, data_dir, workers, access_log, trusted_proxies, underscores_in_headers, timeouts, limits, logs, shutdown_grace, tls, compression"#.to_string()
            ),
            (
                "upstream[0].servers[1]".to_string(),
                7,
                r#"expected "host:port", found "10.0.0.5" (the port is required)"#.to_string()
            ),
            (
                "upstream[0].health.interval".to_string(),
                9,
                r#"expected a duration like "500ms", "2s" or "1m", found "5 seconds""#.to_string()
            ),
        ]
    );
    let invalid = check(text).unwrap_err();
    let shown = invalid.to_string();
    let lines: Vec<_> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    assert_eq!(
        lines[1],
        r#"/etc/healgate/healgate.toml:7:29: error: upstream[0].servers[1]: expected "host:port", found "10.0.0.5" (the port is required)"#
    );
    assert!(lines[0].starts_with("/etc/healgate/healgate.toml:3:1: error: gateway.listn: "));
}

#[test]
fn defaults_are_filled_in() {
    let c = ok(MINIMAL_APP).config;
    assert_eq!(
        c.gateway,
        Gateway {
            data_dir: PathBuf::from("/etc/healgate/healgate-data"),
            ..Gateway::default()
        }
    );
    assert_eq!(c.gateway.listen, [addr("127.0.0.1:8080")]);
    assert_eq!(c.gateway.timeouts.connect, secs(2));
    assert_eq!(c.gateway.timeouts.response_header, secs(30));
    assert_eq!(c.gateway.timeouts.client_header, secs(10));
    assert_eq!(
        c.gateway.timeouts.upstream_idle,
        Duration::from_millis(1500)
    );
    assert_eq!(c.gateway.limits.response_header, 64 * 1024);
    assert_eq!(c.gateway.shutdown_grace, secs(30));
    assert!(c.gateway.access_log);
    assert_eq!(c.admin.listen, addr("127.0.0.1:9901"));
    assert_eq!(c.errors, ErrorPages::default());

    let app = &c.apps[0];
    assert_eq!(app.cwd, PathBuf::from("/etc/healgate"));
    assert_eq!(app.instances, 1);
    assert_eq!(app.max_concurrency, 64);
    assert_eq!(
        app.queue,
        Queue {
            size: 1024,
            timeout: secs(5)
        }
    );
    assert_eq!(
        app.health,
        Health {
            path: None,
            interval: secs(2),
            timeout: secs(1),
            unhealthy_after: 3,
            healthy_after: 1
        }
    );
    assert_eq!(app.startup_timeout, secs(60));
    assert_eq!(app.shutdown_grace, secs(30));
    assert_eq!(
        app.retry,
        Retry {
            attempts: 3,
            budget_percent: 20
        }
    );
    assert_eq!(app.autoheal, None);
    assert_eq!(app.autoscale, None);
    assert_eq!(app.routes.host, None);
    assert!(!app.routes.strip_prefix);

    let c = ok(r#"
[[upstream]]
name = "api"
servers = ["api.internal:80"]
routes = ["/api/"]
"#)
    .config;
    let api = &c.upstreams[0];
    assert_eq!(api.health, None);
    assert_eq!(api.max_concurrency, 0);
    assert_eq!(
        api.dns,
        Dns {
            resolvers: vec![],
            refresh: secs(30)
        }
    );
    assert_eq!(
        api.eject,
        Eject {
            consecutive_failures: 3,
            cooldown: secs(10)
        }
    );
    assert_eq!(api.tls, UpstreamTls::default());

    let c = ok(r#"
[[upstream]]
name = "api"
servers = ["api.internal:80"]
routes = ["/api/"]
health = { path = "/up" }
"#)
    .config;
    assert_eq!(
        c.upstreams[0].health,
        Some(Health::upstream_default("/up".into()))
    );
    assert_eq!(c.upstreams[0].health.as_ref().unwrap().interval, secs(5));
}

#[test]
fn an_empty_file_is_all_defaults() {
    let c = ok("").config;
    assert!(c.apps.is_empty() && c.upstreams.is_empty());
    assert_eq!(c.gateway.workers, 0);
}

#[test]
fn warnings_stay_apart_from_errors() {
    let risky = r#"
[admin]
listen = "0.0.0.0:9901"
[errors]
details = true
[[app]]
name = "web"
command = ["./web"]
routes = ["/"]
health = { interval = "1s", timeout = "1s" }
"#;
    let checked = ok(risky);
    let warnings: Vec<_> = checked
        .warnings
        .iter()
        .map(|w| (w.severity, w.path.as_str(), w.line))
        .collect();
    assert_eq!(
        warnings,
        [
            (Severity::Warning, "admin.listen", 3),
            (Severity::Warning, "errors.details", 5),
            (Severity::Warning, "app[0].health.timeout", 10),
        ]
    );
    assert!(checked.warnings[0]
        .message
        .contains("exposes the control API"));
    assert!(checked.warnings[1].message.contains("visible to clients"));

    // With an error too, the file is invalid and the warnings are still told apart.
    let invalid = check(&format!("{risky}instances = 0\n")).unwrap_err();
    assert_eq!(invalid.errors().count(), 1);
    assert_eq!(invalid.problems.len(), 4);
    assert!(invalid.to_string().contains(": warning: admin.listen: "));
}

#[test]
fn servers_take_every_documented_form() {
    use super::compile::upstream::parse_server;
    let server = |host: &str, port, tls| ServerAddr {
        host: host.into(),
        port,
        tls,
    };
    assert_eq!(
        parse_server("10.0.0.5:8000"),
        Ok(server("10.0.0.5", 8000, false))
    );
    assert_eq!(parse_server("[::1]:8080"), Ok(server("::1", 8080, false)));
    assert_eq!(
        parse_server("https://API.example.com:443"),
        Ok(server("api.example.com", 443, true))
    );
    assert_eq!(parse_server("http://web:80/"), Ok(server("web", 80, false)));
    for (bad, why) in [
        ("10.0.0.5", "the port is required"),
        ("https://example.com", "the port is required"),
        ("[::1]", "the port is required"),
        ("::1:8080", "brackets"),
        ("web:http", "1 to 65535"),
        ("web:0", "1 to 65535"),
        ("ftp://web:21", "unsupported scheme"),
        ("web:80/api", "no path"),
        ("we b:80", "not a valid host"),
    ] {
        let err = parse_server(bad).unwrap_err();
        assert!(
            err.starts_with(&format!(r#"expected "host:port", found {bad:?}"#)),
            "{err}"
        );
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn names_and_routes_must_be_unique() {
    let got = problems(
        r#"
[[app]]
name = "web"
command = ["./web"]
routes = ["/", "/static/"]

[[app]]
name = "Web 2"
command = ["./web2"]
routes = ["/static/"]

[[upstream]]
name = "web"
servers = ["10.0.0.1:80"]
routes = ["/api/"]
host = "example.com"

[[upstream]]
name = "api2"
servers = ["10.0.0.1:80"]
routes = ["/api/"]
host = "Example.com"
"#,
    );
    let got: Vec<_> = got
        .iter()
        .map(|(p, l, m)| (p.as_str(), *l, m.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "app[1].name",
                8,
                r#"names use only a-z, 0-9, _ and - (at least one), found "Web 2""#
            ),
            (
                "app[1].routes[0]",
                10,
                r#"route "/static/" is already claimed by app "web" on line 5"#
            ),
            (
                "upstream[0].name",
                13,
                r#"name "web" is already used by the app on line 3; names must be unique across apps and upstreams"#
            ),
            (
                "upstream[1].routes[0]",
                21,
                r#"route "/api/" on host "example.com" is already claimed by upstream "web" on line 15"#
            ),
        ]
    );
}

#[test]
fn value_checks_name_what_is_allowed() {
    let cases: &[(&str, &str, &str)] = &[
        ("[gateway]\nlisten = []", "gateway.listen", "at least one address"),
        ("[gateway]\nlisten = [\"localhost:80\"]", "gateway.listen[0]", "not a host name"),
        ("[gateway]\nlisten = [{ proxy_protocol = true }]", "gateway.listen[0]", r#"missing key "addr""#),
        ("[gateway]\nlisten = [{ addr = \"127.0.0.1:80\", proxy_protocol = \"yes\" }]", "gateway.listen[0].proxy_protocol", "expected true or false"),
        ("[gateway]\ntrusted_proxies = [\"10.0.0.0/33\"]", "gateway.trusted_proxies[0]", "expected a network"),
        ("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nroutes = [\"/\"]\ninstances = 4\nmax_instances = 2", "app[0].max_instances", "at least 4"),
        ("[gateway]\nworkers = 2000", "gateway.workers", "expected an integer from 0 to 1024, found 2000"),
        ("[gateway]\nworkers = \"4\"", "gateway.workers", "expected an integer from 0 to 1024, found a string"),
        ("[gateway.timeouts]\nconnect = 5", "gateway.timeouts.connect", "add a unit"),
        ("[gateway.timeouts]\nconnect = \"0s\"", "gateway.timeouts.connect", "longer than 0s"),
        ("[gateway.limits]\nrequest_header = \"lots\"", "gateway.limits.request_header", "expected a size like"),
        ("[admin]\ntoken = 5", "admin.token", "expected a string, found an integer"),
        ("[admin]\nlisten = \"127.0.0.1:8080\"", "admin.listen", "also a gateway.listen address"),
        ("[errors]\nsupport_url = \"example.com\"", "errors.support_url", "http:// or https:// URL"),
        ("[[app]]\nname = \"a\"\ncommand = []\nroutes = [\"/\"]", "app[0].command", "must name a program"),
        ("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nroutes = []", "app[0].routes", "at least one path prefix"),
        ("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nroutes = [\"api\"]", "app[0].routes[0]", r#"starting with "/""#),
        ("[[app]]\nname = \"a\"\ncommand = [\"x\"]", "app[0]", r#"missing key "routes""#),
        ("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nroutes = [\"/\"]\ninstances = 0", "app[0].instances", "at least 1"),
        ("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nroutes = [\"/\"]\nenv = { N = 1 }", "app[0].env.N", "expected a string"),
        ("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nroutes = [\"/\"]\nhealth = { path = \"healthz\" }", "app[0].health.path", r#"starting with "/""#),
        ("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nroutes = [\"/\"]\nqueue = { size = 0 }", "app[0].queue.size", "at least 1"),
        ("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nroutes = [\"/\"]\nretry = { attempts = 11 }", "app[0].retry.attempts", "from 1 to 10"),
        ("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nroutes = [\"/\"]\n[app.autoscale]\nmin = 5\nmax = 2", "app[0].autoscale.min", "min (5) is greater than max (2)"),
        ("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nroutes = [\"/\"]\n[app.autoscale]\nmin = 0\nmax = 2", "app[0].autoscale.min", "at least 1"),
        ("[[upstream]]\nname = \"u\"\nservers = []\nroutes = [\"/\"]", "upstream[0].servers", "at least one server"),
        ("[[upstream]]\nname = \"u\"\nservers = [\"a:1\"]\nroutes = [\"/\"]\ndns = { resolvers = [\"10.0.0.2\"] }", "upstream[0].dns.resolvers[0]", r#"expected "ip:port""#),
        ("[[upstream]]\nname = \"u\"\nservers = [\"a:1\"]\nroutes = [\"/\"]\nhealth = { interval = \"5s\" }", "upstream[0].health", r#"missing key "path""#),
        ("[[upstream]]\nname = \"u\"\nservers = [\"a:1\"]\nroutes = [\"/\"]\nhost = \"example.com:80\"", "upstream[0].host", "without scheme or port"),
        ("[[upstream]]\nservers = [\"a:1\"]\nroutes = [\"/\"]", "upstream[0]", r#"missing key "name""#),
        ("[gatway]\nworkers = 1", "gatway", r#"unknown key "gatway" (did you mean "gateway"?); allowed: gateway, admin, errors, app, upstream"#),
        ("gateway = 5", "gateway", "expected a table, found an integer"),
        ("app = 5", "app", "expected an array of tables, found an integer"),
    ];
    for (text, path, needle) in cases {
        let (got_path, message) = only_error(text);
        assert_eq!(&got_path, path, "{text}");
        assert!(
            message.contains(needle),
            "{text}\n  got: {message}\n  want: {needle}"
        );
    }
}

#[test]
fn autoheal_rules_check_triggers_and_actions() {
    let app = |rules: &str| format!("{MINIMAL_APP}[app.autoheal]\n{rules}");
    let c = ok(&app(r#"
[[app.autoheal.rule]]
when = { cpu_above = { percent = 90, for = "5m" } }
action = { command = ["/usr/bin/dump", "{pid}"] }
[[app.autoheal.rule]]
when = { unhealthy = { for = "30s" } }
action = ["log", "diagnose"]
[[app.autoheal.rule]]
when = { status = { codes = 502, count = 3, within = "10s", path = "/api/" } }
action = "log"
"#))
    .config;
    let autoheal = c.apps[0].autoheal.clone().unwrap();
    assert_eq!(autoheal.min_uptime, secs(60));
    assert_eq!(autoheal.max_recycles, (5, secs(3600)));
    assert_eq!(
        autoheal.rules,
        [
            AutohealRule {
                when: Trigger::CpuAbove {
                    percent: 90.0,
                    for_: secs(300)
                },
                actions: vec![Action::Command(vec![
                    "/usr/bin/dump".into(),
                    "{pid}".into()
                ])],
            },
            AutohealRule {
                when: Trigger::Unhealthy { for_: secs(30) },
                actions: vec![Action::Log, Action::Diagnose],
            },
            AutohealRule {
                when: Trigger::Status {
                    codes: (502, 502),
                    count: 3,
                    within: secs(10),
                    path: Some("/api/".into())
                },
                actions: vec![Action::Log],
            },
        ]
    );

    let cases: &[(&str, &str, &str)] = &[
        (
            r#"when = { memory_above = "512MiB", requests = { count = 5 } }"#,
            "app[0].autoheal.rule[0].when.requests",
            r#"already has "memory_above""#,
        ),
        (
            "when = {}",
            "app[0].autoheal.rule[0].when",
            "names no trigger; use one of: memory_above, cpu_above",
        ),
        (
            "when = { memory_abve = \"1GiB\" }",
            "app[0].autoheal.rule[0].when.memory_abve",
            r#"did you mean "memory_above"?"#,
        ),
        (
            r#"when = { status = { codes = "500-700", count = 1, within = "1m" } }"#,
            "app[0].autoheal.rule[0].when.status.codes",
            r#"found "500-700""#,
        ),
        (
            r#"when = { status = { codes = "599-500", count = 1, within = "1m" } }"#,
            "app[0].autoheal.rule[0].when.status.codes",
            "within 100 to 599",
        ),
        (
            r#"when = { slow_requests = { count = 5, within = "1m" } }"#,
            "app[0].autoheal.rule[0].when.slow_requests",
            r#"missing key "slower_than""#,
        ),
        (
            "when = { requests = { count = 5 } }\naction = \"restart\"",
            "app[0].autoheal.rule[0].action",
            r#"unknown action "restart"; allowed: recycle, log, diagnose"#,
        ),
        (
            "when = { requests = { count = 5 } }\naction = \"command\"",
            "app[0].autoheal.rule[0].action",
            "needs its argv",
        ),
        (
            "when = { requests = { count = 5 } }\naction = []",
            "app[0].autoheal.rule[0].action",
            "at least one action",
        ),
        (
            "action = \"log\"",
            "app[0].autoheal.rule[0]",
            r#"missing key "when""#,
        ),
    ];
    for (rule, path, needle) in cases {
        let text = app(&format!("[[app.autoheal.rule]]\n{rule}\n"));
        let (got_path, message) = only_error(&text);
        assert_eq!(&got_path, path, "{rule}");
        assert!(
            message.contains(needle),
            "{rule}\n  got: {message}\n  want: {needle}"
        );
    }
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let text = r#"
[gateway]
data_dir = "./state"
[errors]
pages_dir = "errors/"
[[app]]
name = "web"
command = ["./web"]
cwd = "apps/web"
routes = ["/"]
[[upstream]]
name = "api"
servers = ["https://api.example.com:443"]
routes = ["/api/"]
tls = { ca = "/etc/ssl/ca.pem", server_name = "api.example.com" }
"#;
    let c = parse(text, Path::new("conf/healgate.toml")).unwrap().config;
    assert_eq!(c.gateway.data_dir, PathBuf::from("conf/state"));
    assert_eq!(c.errors.pages_dir, Some(PathBuf::from("conf/errors/")));
    assert_eq!(c.apps[0].cwd, PathBuf::from("conf/apps/web"));
    assert_eq!(
        c.upstreams[0].tls.ca,
        Some(PathBuf::from("/etc/ssl/ca.pem"))
    );
    assert!(c.upstreams[0].servers[0].tls);

    let c = parse(MINIMAL_APP, Path::new("healgate.toml"))
        .unwrap()
        .config;
    assert_eq!(c.apps[0].cwd, PathBuf::from("."));
    assert_eq!(c.gateway.data_dir, PathBuf::from("healgate-data"));
}

#[test]
fn listeners_may_take_the_proxy_protocol() {
    let c = ok("[gateway]\nlisten = [\"127.0.0.1:80\", { addr = \"127.0.0.1:81\", proxy_protocol = true }]\n").config;
    assert_eq!(
        c.gateway.listen,
        [addr("127.0.0.1:80"), addr("127.0.0.1:81")]
    );
    assert_eq!(c.gateway.proxy_protocol, [addr("127.0.0.1:81")]);
}

#[test]
fn tables_may_be_inline_or_headers() {
    let c = ok(r#"
gateway = { listen = "127.0.0.1:9000", timeouts = { connect = "1s" } }
[[app]]
name = "web"
command = ["./web"]
routes = ["/"]
host = "Example.COM"
strip_prefix = true
[app.env]
A = "1"
[app.health]
path = "/up"
interval = "1h30m"
"#)
    .config;
    assert_eq!(c.gateway.listen, [addr("127.0.0.1:9000")]);
    assert_eq!(c.gateway.timeouts.connect, secs(1));
    let app = &c.apps[0];
    assert_eq!(app.routes.host.as_deref(), Some("example.com"));
    assert!(app.routes.strip_prefix);
    assert_eq!(app.env, [("A".to_string(), "1".to_string())]);
    assert_eq!(app.health.interval, secs(5400));
}

#[test]
fn invalid_toml_is_one_problem_with_a_place() {
    let invalid = check("[gateway]\nlisten = [\"a\"\n").unwrap_err();
    assert_eq!(invalid.problems.len(), 1);
    let p = &invalid.problems[0];
    assert!(p.message.starts_with("invalid TOML: "), "{}", p.message);
    assert!(p.line >= 2, "{p:?}");
}

#[test]
fn an_unreadable_file_names_the_file_and_the_os_error() {
    let path = Path::new("/nonexistent/healgate.toml");
    let invalid = load(path).unwrap_err();
    assert_eq!(invalid.problems.len(), 1);
    assert_eq!(invalid.problems[0].line, 0);
    let shown = invalid.to_string();
    assert!(
        shown.starts_with(
            "/nonexistent/healgate.toml: error: cannot read /nonexistent/healgate.toml: "
        ),
        "{shown}"
    );
    assert!(shown.contains("No such file"), "{shown}");
}

#[test]
fn the_demo_runs_three_demo_apps() {
    let c = demo(
        PathBuf::from("/tmp/demo-data"),
        addr("127.0.0.1:8080"),
        addr("127.0.0.1:9901"),
        Path::new("/usr/bin/healgate"),
    );
    assert_eq!(c.gateway.listen, [addr("127.0.0.1:8080")]);
    assert_eq!(c.gateway.data_dir, PathBuf::from("/tmp/demo-data"));
    assert_eq!(c.admin.listen, addr("127.0.0.1:9901"));
    let app = &c.apps[0];
    assert_eq!(app.name, "demo");
    assert_eq!(app.instances, 3);
    assert_eq!(
        app.command,
        ["/usr/bin/healgate", "demo-app", "--port", "{port}"]
    );
    assert_eq!(app.routes.prefixes, ["/"]);
    assert_eq!(app.health.path.as_deref(), Some("/healthz"));
}

#[test]
fn protocol_is_h1_h2_or_for_tls_upstreams_auto() {
    let up = |p: &str| {
        format!("[[upstream]]\nname = \"u\"\nservers = [\"https://a:1\"]\nroutes = [\"/\"]\n{p}")
    };
    let app = |p: &str| format!("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nroutes = [\"/\"]\n{p}");
    let cfg = check(&up("")).unwrap().config;
    assert_eq!(cfg.upstreams[0].protocol, Protocol::H1, "the default");
    for (text, want) in [
        ("h1", Protocol::H1),
        ("h2", Protocol::H2),
        ("auto", Protocol::Auto),
    ] {
        let cfg = check(&up(&format!("protocol = {text:?}"))).unwrap().config;
        assert_eq!(cfg.upstreams[0].protocol, want);
    }
    let cfg = check(&app("protocol = \"h2\"")).unwrap().config;
    assert_eq!(cfg.apps[0].protocol, Protocol::H2);
    assert_eq!(
        check(&app("")).unwrap().config.apps[0].protocol,
        Protocol::H1
    );
    let got = problems(&up("protocol = \"h3\""));
    assert_eq!(got[0].0, "upstream[0].protocol");
    assert_eq!(
        got[0].2,
        r#"unknown protocol "h3"; allowed: "h1", "h2" or "auto""#
    );
    let got = problems(&app("protocol = \"auto\""));
    assert_eq!(got[0].0, "app[0].protocol");
    assert!(got[0].2.contains("use \"h1\" or \"h2\""), "{}", got[0].2);
    // "auto" with no TLS server is a warning: ALPN cannot choose.
    let plain =
        "[[upstream]]\nname = \"u\"\nservers = [\"a:1\"]\nroutes = [\"/\"]\nprotocol = \"auto\"";
    let checked = check(plain).unwrap();
    assert!(
        checked
            .warnings
            .iter()
            .any(|w| w.path == "upstream[0].protocol"),
        "{:?}",
        checked.warnings
    );
}

#[test]
fn upstream_and_app_keys_are_listed_when_one_is_misspelt() {
    let got = problems(
        "[[upstream]]\nname = \"u\"\nservers = [\"a:1\"]\nroutes = [\"/\"]\nprotocl = \"h2\"",
    );
    assert_eq!(
        got[0].2,
        r#"unknown key "protocl" (did you mean "protocol"?); allowed: name, servers, host, strip_prefix, routes, dns, health, tls, max_concurrency, protocol, queue, retry, eject"#
    );
    let got =
        problems("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nroutes = [\"/\"]\nprotocl = \"h2\"");
    assert_eq!(
        got[0].2,
        r#"unknown key "protocl" (did you mean "protocol"?); allowed: name, command, cwd, env, instances, host, strip_prefix, routes, max_concurrency, protocol, queue, health, startup_timeout, shutdown_grace, retry, autoheal, autoscale, max_instances"#
    );
}

#[test]
fn compression_takes_types_sizes_codings_and_levels() {
    let c = ok("[gateway.compression]\n")
        .config
        .gateway
        .compression
        .expect("an empty section turns it on");
    assert_eq!(c, Compression::default());
    assert_eq!(
        c.levels,
        Levels {
            gzip: 5,
            br: 4,
            zstd: 3
        }
    );
    let c = ok(r#"
[gateway.compression]
types = ["Text/HTML", "application/*"]
min_size = "4KiB"
algorithms = ["gzip", "br"]
levels = { gzip = 1, zstd = 19 }
"#)
    .config
    .gateway
    .compression
    .unwrap();
    assert_eq!(c.types, ["text/html", "application/*"]);
    assert_eq!(c.min_size, 4096);
    assert_eq!(c.algorithms, [Coding::Gzip, Coding::Brotli]);
    assert_eq!(
        c.levels,
        Levels {
            gzip: 1,
            br: 4,
            zstd: 19
        }
    );
    assert_eq!(ok("").config.gateway.compression, None);
    assert_eq!(
        only_error("[gateway.compression]\nlevels = { gzip = 10 }\n"),
        (
            "gateway.compression.levels.gzip".to_string(),
            "expected an integer from 1 to 9, found 10".to_string()
        )
    );
    assert_eq!(
        only_error("[gateway.compression]\nlevels = { brotli = 5 }\n"),
        (
            "gateway.compression.levels.brotli".to_string(),
            r#"unknown key "brotli"; allowed: gzip, br, zstd"#.to_string()
        )
    );
    let (path, message) = only_error("[gateway.compression]\nlevel = 5\n");
    assert_eq!(path, "gateway.compression.level");
    assert!(
        message.ends_with("allowed: types, min_size, algorithms, levels"),
        "{message}"
    );
}

#[test]
fn acme_names_what_the_ca_cannot_validate() {
    let cfg = |listen: &str, tls_listen: &str, acme: &str| {
        format!(
            "[gateway]\nlisten = [\"{listen}\"]\n[gateway.tls]\nlisten = [\"{tls_listen}\"]\nacme = {{ {acme} }}\n{MINIMAL_APP}"
        )
    };
    // The CA's ports are listened on: nothing to say.
    let c = ok(&cfg(
        "0.0.0.0:80",
        "0.0.0.0:443",
        r#"domains = ["example.com"]"#,
    ));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let acme = c.config.gateway.tls.unwrap().acme.unwrap();
    assert_eq!(acme.challenge, AcmeChallenge::TlsAlpn01);
    assert_eq!(acme.renew_before, secs(30 * 86400));
    // TLS-ALPN-01 is validated on 443, HTTP-01 on 80: a warning when neither listens.
    let c = ok(&cfg(
        "0.0.0.0:80",
        "0.0.0.0:8443",
        r#"domains = ["example.com"]"#,
    ));
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].path, "gateway.tls.acme.domains");
    assert!(
        c.warnings[0].message.contains("port 443"),
        "{:?}",
        c.warnings
    );
    let c = ok(&cfg(
        "0.0.0.0:8080",
        "0.0.0.0:443",
        r#"domains = ["example.com"], challenge = "http-01""#,
    ));
    assert!(
        c.warnings[0].message.contains("port 80"),
        "{:?}",
        c.warnings
    );
    // A wildcard needs DNS-01.
    let (path, message) = only_error(&cfg(
        "0.0.0.0:80",
        "0.0.0.0:443",
        r#"domains = ["*.example.com"]"#,
    ));
    assert_eq!(path, "gateway.tls.acme.domains");
    assert!(message.contains("DNS-01"), "{message}");
}
