//! Error pages as a user sees them, and `healgate check` as an operator sees it.

mod common;

use common::{get, Gateway};

fn refused_gateway() -> (Gateway, common::Refused) {
    let nothing = common::Refused::new();
    let port = nothing.port();
    let gw = Gateway::start(&format!(
        "[errors]\nsupport_url = \"https://help.example.com\"\n\n[[upstream]]\nname = \"shop\"\nservers = [\"127.0.0.1:{port}\"]\nroutes = [\"/\"]\n"
    ));
    (gw, nothing)
}

#[test]
fn html_or_problem_json_by_accept_with_one_request_id() {
    let (gw, _nothing) = refused_gateway();

    let html = get(
        gw.addr,
        "/",
        &[("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
    );
    assert_eq!(html.status, 502);
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let id = html.header("x-request-id").unwrap().to_owned();
    let page = html.text();
    assert!(
        page.contains(&format!("id=\"request-id\">{id}<")),
        "page shows the request id"
    );
    assert!(
        page.contains("https://help.example.com"),
        "page links support"
    );
    assert_eq!(gw.access_entry(&id)["request_id"], id.as_str());

    let json = get(gw.addr, "/", &[("Accept", "application/json")]);
    assert_eq!(json.status, 502);
    assert_eq!(
        json.header("content-type"),
        Some("application/problem+json")
    );
    let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    let id = json.header("x-request-id").unwrap();
    assert_eq!(v["status"], 502);
    assert_eq!(v["request_id"], id);
    assert_eq!(v["error"], "connection_refused");
    assert_eq!(gw.access_entry(id)["request_id"], id);
    // Details stay private unless errors.details is on.
    assert!(!json.text().contains("127.0.0.1"), "{}", json.text());
    assert_eq!(
        json.header("proxy-status"),
        Some("healgate; error=connection_refused")
    );
}

#[test]
fn french_for_a_french_browser() {
    let (gw, _nothing) = refused_gateway();
    let r = get(
        gw.addr,
        "/",
        &[("Accept-Language", "fr-FR,fr;q=0.9,en;q=0.5")],
    );
    assert_eq!(r.status, 502);
    assert_eq!(r.header("content-language"), Some("fr"));
    let page = r.text();
    assert!(page.contains("lang=\"fr\""));
    assert!(
        page.contains("Identifiant de la requête") || page.contains("requête"),
        "{page}"
    );
    let en = get(gw.addr, "/", &[("Accept-Language", "xx")]);
    assert_eq!(en.header("content-language"), Some("en"));
}

#[test]
fn details_on_shows_the_cause() {
    let nothing = common::Refused::new();
    let port = nothing.port();
    let gw = Gateway::start(&format!(
        "[errors]\ndetails = true\n\n[[upstream]]\nname = \"shop\"\nservers = [\"127.0.0.1:{port}\"]\nroutes = [\"/\"]\n"
    ));
    let r = get(gw.addr, "/", &[]);
    let ps = r.header("proxy-status").unwrap();
    assert!(
        ps.starts_with("healgate; error=connection_refused; details=\""),
        "{ps}"
    );
    assert!(ps.contains(&format!("127.0.0.1:{port}")), "{ps}");
}

#[test]
fn check_reports_all_three_mistakes_with_lines() {
    let dir = common::TempDir::new("check");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[gateway]\n\
         listen = [\"127.0.0.1:8080\"]\n\
         listn = [\"127.0.0.1:8081\"]\n\
         \n\
         [[upstream]]\n\
         name = \"api\"\n\
         servers = [\"10.0.0.5\"]\n\
         routes = [\"/api/\"]\n\
         health = { path = \"/healthz\", interval = \"5 seconds\" }\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let (code, _out, err) = common::healgate(&["check", "-c", p]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(":3:") && err.contains("listn"),
        "unknown key on line 3: {err}"
    );
    assert!(
        err.contains(":7:") && err.contains("upstream[0].servers[0]"),
        "server without port on line 7: {err}"
    );
    assert!(
        err.contains(":9:") && err.contains("upstream[0].health.interval"),
        "bad duration on line 9: {err}"
    );
    assert_eq!(err.matches(": error: ").count(), 3, "{err}");

    // `run` refuses the same file with the same messages.
    let (code, _out, run_err) = common::healgate(&["run", "-c", p]);
    assert_eq!(code, 1);
    for line in err.lines().filter(|l| l.contains(": error: ")) {
        assert!(run_err.contains(line), "run says {run_err}");
    }

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[upstream]]\nname = \"api\"\nservers = [\"10.0.0.5:80\"]\nroutes = [\"/\"]\n",
    )
    .unwrap();
    let (code, out, _) = common::healgate(&["check", "-c", good.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("valid"));
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, _) = common::healgate(&["no-such-command"]);
    assert_eq!(code, 2);
}
