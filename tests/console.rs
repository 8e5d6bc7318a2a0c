//! The console (`GET /`) in a real browser: Debian's Chromium driven by
//! Playwright (`scripts/browser` installs both; `scripts/test` sets
//! LEDGER_BROWSER_PYTHONPATH). The checks are in `tests/console/console.py`.
//! The serve delivers webhooks to 127.0.0.1 only, where the test's own
//! receiver answers.

mod common;

use std::path::Path;
use std::process::Command;

use common::http::{add_key, Http, HttpServe};

fn ledger(data: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ledger")).arg("--data").arg(data).args(args).output().unwrap();
    assert!(out.status.success(), "ledger {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

const SEED: &str = r#"{"cmd":"define_addon","addon":{"id":"extra-storage","currency":"USD","price":"3.00","recurring":true,"grants":{"storage_gb":"5"}}}
{"cmd":"define_plan","plan":{"id":"starter","currency":"USD","price":"20.00","per_seat":false,"storage_quota_gb":"2","monthly_token_limit":10000,"token_overage":"block","addons":["extra-storage"]}}
{"cmd":"define_plan","plan":{"id":"team","currency":"USD","price":"8.00","per_seat":true,"storage_quota_gb":"10","monthly_token_limit":50000,"token_overage":"block","addons":[]}}
{"cmd":"subscribe","tenant":"acme","plan":"starter","seats":2}
{"cmd":"subscribe","tenant":"beta","plan":"team","seats":5}
{"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"a","tokens":6000}
{"actor":"acme:user","cmd":"upload","tenant":"acme","file":"report.pdf","bytes":1500000000}
{"actor":"acme:admin","cmd":"purchase_addon","tenant":"acme","addon":"extra-storage","purchase":"x1","payment":"invoice"}
{"actor":"beta:user","cmd":"consume_tokens","tenant":"beta","request":"b","tokens":12345}
"#;

/// 2,500 more of acme's 10,000 tokens: past 80% with the seed's 6,000.
const CROSSING: &str =
    r#"{"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"c","tokens":2500}"#;

/// A webhook receiver on a random loopback port that answers 200 to
/// everything; its URL.
async fn receiver() -> String {
    let app =
        axum::Router::new().route("/hook", axum::routing::post(|| async { axum::http::StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_tenant_its_own_figures_and_explanations() {
    let data = tempfile::tempdir().unwrap();
    let seed = data.path().join("seed.jsonl");
    std::fs::write(&seed, SEED).unwrap();
    ledger(data.path(), &["apply", seed.to_str().unwrap()]);
    // An endpoint for acme's notifications, then a threshold crossed.
    let hook = receiver().await;
    ledger(data.path(), &["webhooks", "add", &hook, "--tenant", "acme"]);
    let crossing = data.path().join("crossing.jsonl");
    std::fs::write(&crossing, CROSSING).unwrap();
    ledger(data.path(), &["apply", crossing.to_str().unwrap()]);
    // What the command line prints is what the page must show.
    let acme = String::from_utf8(ledger(data.path(), &["usage", "acme", "--json"]).stdout).unwrap();
    let beta = String::from_utf8(ledger(data.path(), &["usage", "beta", "--json"]).stdout).unwrap();
    let acme_key = add_key(data.path(), &["acme", "user"]);
    let beta_key = add_key(data.path(), &["beta", "admin"]);
    let panel_key = add_key(data.path(), &["--panel"]);
    let serve = HttpServe::spawn(data.path(), None);
    // Once the crossing is delivered, what the route answers is what the
    // page must show.
    let http = Http::new(&serve.base);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let notifications = loop {
        let answer = http.get("/v1/tenants/acme/notifications", Some(&acme_key)).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        if answer.body["notifications"][0]["deliveries"][0]["outcome"] == "delivered" {
            break answer.body;
        }
        assert!(std::time::Instant::now() < deadline, "not delivered: {}", answer.body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(notifications["notifications"][0]["type"], "usage.threshold_crossed", "{notifications}");

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python_path = std::env::var("LEDGER_BROWSER_PYTHONPATH").ok().unwrap_or_else(|| {
        let installed = root.join(".tools/pylib-browser");
        assert!(installed.exists(), "Playwright is missing: run scripts/test (or scripts/browser)");
        installed.to_string_lossy().into_owned()
    });
    let mut script = Command::new("python3");
    script
        .arg(root.join("tests/console/console.py"))
        .env("PYTHONPATH", python_path)
        .env("BASE", &serve.base)
        .env("ACME_KEY", &acme_key)
        .env("BETA_KEY", &beta_key)
        .env("PANEL_KEY", &panel_key)
        .env("ACME_USAGE", acme.trim())
        .env("BETA_USAGE", beta.trim())
        .env("ACME_NOTIFICATIONS", notifications.to_string());
    // LEDGER_SCREENSHOT=docs/console.png refreshes the README's picture.
    if let Ok(path) = std::env::var("LEDGER_SCREENSHOT") {
        script.env("SCREENSHOT", root.join(path));
    }
    let out = tokio::task::spawn_blocking(move || script.output().unwrap()).await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("console checks passed"), "{stdout}");
}
