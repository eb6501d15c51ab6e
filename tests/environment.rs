//! `GET /api/v1/environment` and `GET /api/v1/processes` on the real binary: the
//! token is required, and planted secrets (in the gateway's environment, in an app's
//! `env` and on its command line) never appear in either answer.

mod common;

use common::*;

const GATEWAY_SECRET: &str = "sk-live-GwSecret0123456789abcdefXYZ";
const APP_ENV_SECRET: &str = "sk-live-AppEnvSecret9876543210zyx";
const APP_ARG_SECRET: &str = "Zq8hV2mK9pL4xR7tN3bW6cY1dF5gJ0sA2eU8iO4";

#[test]
fn environment_and_processes_need_the_token_and_show_no_secret() {
    // Inherited by the gateway this test starts (edition 2021: a safe call; this test
    // binary has no other test reading it).
    std::env::set_var("HEALGATE_TEST_API_KEY", GATEWAY_SECRET);
    let gw = Gateway::start(&format!(
        "[[app]]\nname = \"web\"\ncommand = [\"sh\", \"-c\", \"'{}' demo-app --port $PORT; : {APP_ARG_SECRET}\"]\ninstances = 1\nroutes = [\"/\"]\nenv = {{ STRIPE_API_KEY = \"{APP_ENV_SECRET}\" }}\n",
        bin()
    ));
    gw.wait_ready("web", 1);
    for path in ["/api/v1/environment", "/api/v1/processes"] {
        let anonymous = get(gw.admin, path, &[]);
        assert_eq!(anonymous.status, 401, "{path}");
        assert!(!anonymous.text().contains("sk-live"), "{path}");
    }

    let env = gw.admin_get("/api/v1/environment");
    assert_eq!(env.status, 200, "{}", env.text());
    let v: serde_json::Value = serde_json::from_slice(&env.body).unwrap();
    assert_eq!(v["environment"]["HEALGATE_TEST_API_KEY"], "[redacted]");
    assert!(v["environment"]["PATH"]
        .as_str()
        .is_some_and(|p| !p.is_empty()));
    assert!(v["limits"]["open_files_soft"].as_u64().is_some(), "{v}");
    assert!(v["limits"]["max_connections"].as_u64().unwrap() >= 16);
    assert!(v["data_dir"].as_str().unwrap().ends_with("/data"), "{v}");
    assert!(v["config_path"]
        .as_str()
        .unwrap()
        .ends_with("healgate.toml"));
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    let procs = gw.admin_get("/api/v1/processes");
    assert_eq!(procs.status, 200, "{}", procs.text());
    let p: serde_json::Value = serde_json::from_slice(&procs.body).unwrap();
    let inst = &p["apps"][0]["instances"][0];
    let tree = inst["processes"].as_array().unwrap();
    assert!(tree.len() >= 2, "sh and the demo app under it: {inst:#}");
    assert_eq!(tree[0]["pid"], inst["pid"]);
    assert!(
        tree.iter().any(|t| t["cmdline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "demo-app")),
        "{inst:#}"
    );
    assert!(tree.iter().all(|t| t["rss_bytes"].as_u64().unwrap() > 0));
    assert!(inst["open_files"].as_u64().unwrap() >= 3);
    assert_eq!(p["gateway"]["pid"], gw.pid());

    for (name, body) in [("environment", env.text()), ("processes", procs.text())] {
        for secret in [GATEWAY_SECRET, APP_ENV_SECRET, APP_ARG_SECRET] {
            assert!(!body.contains(secret), "{name} shows {secret}: {body}");
        }
    }
}
