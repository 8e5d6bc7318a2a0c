//! `ledger serve` end to end: real nats-server processes, real `ledger serve`
//! processes, and the client library (plus raw NATS requests where the
//! test is about what a client of any language can do).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::serve::{wait_for_service, with_credentials, Serve};

use ledger::bench::natsd::NatsServer;
use ledger::serve::{inbox_prefix, nats_authorization, TenantCredentials};
use ledger_client::{AdminClient, Answer, Client, ClientConfig, OfflineConfig, Role};
use serde_json::{json, Value};

/// A nats-server with the shipped authorization for `tenants` (passwords
/// `<t>-admin-pw`, `<t>-user-pw`, `ledger-pw`, `panel-pw`) and one `ledger
/// serve` on it. Returns the server, the service, the ledger's URL.
async fn secured(tenants: &[&str], data: &Path) -> (NatsServer, Serve, String) {
    let credentials: Vec<TenantCredentials> = tenants
        .iter()
        .map(|t| TenantCredentials {
            tenant: t.to_string(),
            admin_password: format!("{t}-admin-pw"),
            user_password: format!("{t}-user-pw"),
        })
        .collect();
    let server =
        NatsServer::start_configured(&nats_authorization("ledger-pw", "panel-pw", &credentials)).unwrap();
    let ledger_url = with_credentials(server.url(), "ledger", "ledger-pw");
    let serve = Serve::spawn(&ledger_url, data, 60_000);
    wait_for_service(&ledger_url, 1).await;
    (server, serve, ledger_url)
}

fn config(url: &str) -> ClientConfig {
    ClientConfig::new(url)
}

const PLAN: &str = r#"{"id":"starter","currency":"USD","price":"20.00","per_seat":false,"storage_quota_gb":"2","monthly_token_limit":10000,"token_overage":"block","addons":["extra-storage"]}"#;
const ADDON: &str =
    r#"{"id":"extra-storage","currency":"USD","price":"3.00","recurring":true,"grants":{"storage_gb":"5"}}"#;

async fn catalog_and_tenants(panel: &AdminClient, tenants: &[&str]) {
    assert!(panel.define_addon(serde_json::from_str(ADDON).unwrap()).await.unwrap().ok);
    assert!(panel.define_plan(serde_json::from_str(PLAN).unwrap()).await.unwrap().ok);
    for tenant in tenants {
        let answer = panel.subscribe(tenant, "starter", 2).await.unwrap();
        assert!(answer.ok, "{:?}", answer.raw);
    }
}

fn code(answer: &Answer) -> &str {
    answer.code.as_deref().unwrap_or("")
}

/// The decoded events of the log, through the CLI.
fn events(url: &str, data: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg("--data")
        .arg(data)
        .arg("--nats")
        .arg(url)
        .args(["events", "--json"])
        .env("LEDGER_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_batches_and_queries_through_the_service() {
    let server = NatsServer::start().unwrap();
    let (_dir, data) = scratch();
    let _serve = Serve::spawn(server.url(), &data.join("a"), 60_000);
    wait_for_service(server.url(), 1).await;

    let panel = AdminClient::connect(config(server.url())).await.unwrap();
    catalog_and_tenants(&panel, &["acme"]).await;
    let user = Client::connect(config(server.url()), "acme", Role::User, None).await.unwrap();
    let admin = Client::connect(config(server.url()), "acme", Role::Admin, None).await.unwrap();

    // Commands: accepted, duplicate, denied (and recorded), rejected.
    let first = user.consume_tokens("r1", 6000).await.unwrap();
    assert!(first.ok && !first.duplicate, "{:?}", first.raw);
    let again = user.consume_tokens("r1", 6000).await.unwrap();
    assert!(again.ok && again.duplicate);
    assert_eq!(again.seq, first.seq);
    let denied = user.consume_tokens("r2", 5000).await.unwrap();
    assert_eq!(code(&denied), "token_limit_exceeded");
    assert_eq!(denied.raw["used"], 6000);
    assert_eq!(code(&user.consume_tokens("r1", 10).await.unwrap()), "idempotency_conflict");
    assert!(user.upload("logo.png", 1024).await.unwrap().ok);

    // The actor comes from the subject: a user claiming to be admin in the
    // body is still a user, and cannot set seats.
    let raw = async_nats::connect(server.url()).await.unwrap();
    let claim = raw
        .request(
            "ledger.cmd.acme.user.set_seats",
            json!({"seats": 5, "actor": "admin", "tenant": "beta"}).to_string().into(),
        )
        .await
        .unwrap();
    let claim: Value = serde_json::from_slice(&claim.payload).unwrap();
    assert_eq!(claim["code"], "forbidden", "{claim}");
    assert!(admin.set_seats(3).await.unwrap().ok);
    assert!(admin.purchase_addon("extra-storage", "x1", 1, "invoice").await.unwrap().ok);

    // Errors are replies with a code, never silence.
    for (subject, body, expected) in [
        ("ledger.cmd.acme.user.consume_tokens", "not json", "malformed"),
        ("ledger.cmd.acme.user.consume_tokens", r#"{"request":"r9"}"#, "malformed"),
        ("ledger.cmd.acme.user.teleport", "{}", "malformed"),
        ("ledger.cmd.acme.owner.upload", "{}", "malformed"),
        ("ledger.cmd.acme.admin.define_plan", "{}", "forbidden"),
        ("ledger.cmd.nobody.user.consume_tokens", r#"{"request":"r1","tokens":1}"#, "not_subscribed"),
        ("ledger.query.acme.balance", "", "malformed"),
        ("ledger.query.nobody.usage", "", "not_subscribed"),
    ] {
        let reply = raw.request(subject, body.to_string().into()).await.unwrap();
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply["ok"], false, "{subject}: {reply}");
        assert_eq!(reply["code"], expected, "{subject}: {reply}");
    }

    // A batch: results in order, a malformed item answered in place.
    let results = user
        .batch(vec![
            json!({"cmd": "consume_tokens", "request": "b1", "tokens": 100}),
            json!({"cmd": "consume_tokens", "tokens": 1}),
            json!({"cmd": "upload", "file": "a.txt", "bytes": 10}),
            json!({"cmd": "consume_tokens", "request": "b1", "tokens": 100}),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 4);
    assert!(results[0].ok && !results[0].duplicate);
    assert_eq!(code(&results[1]), "malformed");
    assert!(results[2].ok);
    assert!(results[3].ok && results[3].duplicate);
    let panel_batch = panel
        .batch(vec![json!({"cmd": "settle_payment", "tenant": "acme", "purchase": "x1", "outcome": "paid"})])
        .await
        .unwrap();
    assert_eq!(code(&panel_batch[0]), "payment_not_pending");

    // Queries read their writes: the CLI's --json objects.
    let usage = user.usage(None).await.unwrap();
    assert_eq!(usage["tenant"], "acme");
    assert_eq!(usage["tokens"]["used"], 6100);
    assert_eq!(usage["tokens"]["limit"], 10000);
    assert_eq!(usage["seats"], 3);
    assert_eq!(usage["storage"]["used_bytes"], 1034);
    assert_eq!(usage["storage"]["quota_bytes"], 7u64 << 30);
    let invoice = user.invoice(None).await.unwrap();
    assert_eq!(invoice["status"], "draft");
    assert_eq!(invoice["currency"], "USD");
    let invoices = admin.invoices().await.unwrap();
    assert_eq!(invoices["invoices"].as_array().unwrap().len(), 1);
    assert_eq!(invoices["invoices"][0]["total"], invoice["total"]);
    // A well-formed instant before the subscription: the state's answer,
    // as over HTTP (404 there).
    let at = panel.query("acme", "usage", Some("2000-01-01T00:00:00Z")).await.unwrap();
    assert_eq!(at["code"], "not_subscribed", "{at}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_reach_only_their_own_tenant_and_role() {
    let (_dir, data) = scratch();
    let (server, _serve, ledger_url) = secured(&["acme", "beta"], &data.join("a")).await;

    let as_user = |user: &str, password: &str| {
        let mut config = config(&with_credentials(server.url(), user, password));
        assert_eq!(config.inbox_prefix, Some(inbox_prefix(user)));
        config.request_timeout = Duration::from_millis(500);
        config.attempts = 1;
        config
    };
    let panel = AdminClient::connect(as_user("panel", "panel-pw")).await.unwrap();
    catalog_and_tenants(&panel, &["acme", "beta"]).await;

    let acme_user =
        Client::connect(as_user("acme-user", "acme-user-pw"), "acme", Role::User, None).await.unwrap();
    assert!(acme_user.consume_tokens("r1", 100).await.unwrap().ok);
    assert_eq!(acme_user.usage(None).await.unwrap()["tokens"]["used"], 100);

    // Tenant A's user cannot change or read tenant B, nor act as A's admin.
    let (address, options) = ledger_client::nats::options(
        &with_credentials(server.url(), "acme-user", "acme-user-pw"),
        "intruder",
        Some(&inbox_prefix("acme-user")),
    );
    let intruder = options.request_timeout(Some(Duration::from_millis(500))).connect(&address).await.unwrap();
    for subject in [
        "ledger.cmd.beta.user.consume_tokens",
        "ledger.cmd.acme.admin.set_seats",
        "ledger.query.beta.usage",
        "ledger.admin.subscribe",
    ] {
        let body = json!({"request": "x", "tokens": 1, "seats": 9, "tenant": "acme", "plan": "starter"});
        let outcome = intruder.request(subject, body.to_string().into()).await;
        assert!(outcome.is_err(), "{subject} reached the ledger: {outcome:?}");
    }
    // A tenant admin reaches its own admin subject but not the other tenant.
    let beta_admin =
        Client::connect(as_user("beta-admin", "beta-admin-pw"), "beta", Role::Admin, None).await.unwrap();
    assert!(beta_admin.set_seats(4).await.unwrap().ok);
    let acme_as_beta =
        Client::connect(as_user("beta-admin", "beta-admin-pw"), "acme", Role::Admin, None).await.unwrap();
    assert!(matches!(acme_as_beta.usage(None).await, Err(ledger_client::ClientError::Unreachable(_))));
    assert!(matches!(acme_as_beta.set_seats(9).await, Err(ledger_client::ClientError::Unreachable(_))));

    // Nobody but the ledger writes the stream: neither a plain publish nor
    // a JetStream publish from a tenant credential lands.
    let before = events(&ledger_url, &data.join("a")).len();
    let forged = ledger::log::AppendMessage {
        tenant: "acme".into(),
        kind: "tokens_consumed",
        payload: bytes::Bytes::from_static(b"forged"),
    };
    intruder.publish(forged.subject(), forged.payload.clone()).await.unwrap();
    // The control panel's credential cannot either.
    let (address, options) = ledger_client::nats::options(
        &with_credentials(server.url(), "panel", "panel-pw"),
        "panel-raw",
        Some(&inbox_prefix("panel")),
    );
    let panel_raw = options.connect(&address).await.unwrap();
    panel_raw.publish(forged.subject(), forged.payload.clone()).await.unwrap();
    panel_raw.flush().await.unwrap();
    // Nor through the ledger: a request whose reply subject is not an inbox
    // would make the ledger's own credential publish there. The service
    // drops such requests unanswered and undecided.
    for (n, reply) in ["ledger.v1.beta.tokens_consumed", "$JS.API.STREAM.PURGE.LEDGER"].iter().enumerate() {
        let body = json!({"request": format!("smuggled-{n}"), "tokens": 1}).to_string();
        intruder
            .publish_with_reply("ledger.cmd.acme.user.consume_tokens", *reply, body.into())
            .await
            .unwrap();
    }
    intruder.flush().await.unwrap();
    let js = async_nats::jetstream::new(intruder.clone());
    let published =
        async { js.publish(forged.subject(), forged.payload.clone()).await?.await.map_err(Into::into) };
    let published: Result<_, async_nats::Error> = published.await;
    assert!(published.is_err(), "a tenant credential published into the stream");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = events(&ledger_url, &data.join("a"));
    assert_eq!(after.len(), before, "the stream changed");
    assert!(after.iter().all(|e| e.get("error").is_none()));
    // And every recorded actor is the one the subject carried.
    let seats = after.iter().find(|e| e["kind"] == "seats_changed").unwrap();
    assert_eq!(seats["actor"], "beta:admin");
    assert_eq!(seats["tenant"], "beta");
}

fn months_ago_rfc3339(days: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_tenants_and_the_clock_closes_each_period_once() {
    let server = NatsServer::start().unwrap();
    let (_dir, data) = scratch();
    // History imported with its own `at`: subscriptions 65 days ago, so two
    // periods have ended by now and a third is running.
    let start = months_ago_rfc3339(65);
    let mut import = format!(
        "{{\"at\":\"{start}\",\"cmd\":\"define_addon\",\"addon\":{ADDON}}}\n{{\"at\":\"{start}\",\"cmd\":\"define_plan\",\"plan\":{PLAN}}}\n"
    );
    let tenants: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
    for t in &tenants {
        import.push_str(&format!("{{\"at\":\"{start}\",\"cmd\":\"subscribe\",\"tenant\":\"{t}\",\"plan\":\"starter\",\"seats\":1}}\n"));
    }
    let file = data.join("import.jsonl");
    std::fs::write(&file, import).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg("--data")
        .arg(data.join("import"))
        .args(["--nats", server.url(), "apply"])
        .arg(&file)
        .env("LEDGER_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut one = Serve::spawn(server.url(), &data.join("one"), 200);
    let _two = Serve::spawn(server.url(), &data.join("two"), 200);
    wait_for_service(server.url(), 2).await;

    // Many clients on one tenant through both instances (the queue group
    // splits requests): no over-admission, nothing lost.
    let mut calls = Vec::new();
    for i in 0..40u64 {
        let url = server.url().to_string();
        calls.push(tokio::spawn(async move {
            let client = Client::connect(config(&url), "t0", Role::User, None).await.unwrap();
            client.consume_tokens(&format!("r{i}"), 300).await.unwrap()
        }));
    }
    let mut admitted = 0;
    for call in calls {
        let answer = call.await.unwrap();
        match answer.code.as_deref() {
            None => admitted += 300,
            Some("token_limit_exceeded") => {}
            other => panic!("unexpected {other:?}: {:?}", answer.raw),
        }
    }
    assert_eq!(admitted, 9900, "33 of 40 fit a 10,000 limit");

    // The clock: periods 0 and 1 of every tenant become final.
    let deadline = Instant::now() + Duration::from_secs(60);
    let panel = AdminClient::connect(config(server.url())).await.unwrap();
    for t in &tenants {
        loop {
            let list = panel.query(t, "invoices", None).await.unwrap();
            let statuses: Vec<&str> =
                list["invoices"].as_array().unwrap().iter().map(|i| i["status"].as_str().unwrap()).collect();
            if statuses == ["final", "final", "draft"] {
                break;
            }
            assert!(Instant::now() < deadline, "{t}: {statuses:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let usage = panel.query("t0", "usage", None).await.unwrap();
    assert_eq!(usage["tokens"]["used"], 9900);

    // A restart of one instance, and more clock ticks, close nothing twice.
    one.kill();
    let _one = Serve::spawn(server.url(), &data.join("one"), 200);
    wait_for_service(server.url(), 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = events(server.url(), &data.join("audit"));
    for t in &tenants {
        let finalized: Vec<u64> = log
            .iter()
            .filter(|e| e["tenant"] == t.as_str() && e["kind"] == "period_finalized")
            .map(|e| e["payload"]["PeriodFinalized"]["period"].as_u64().unwrap())
            .collect();
        assert_eq!(finalized, [0, 1], "{t}: each ended period finalized exactly once");
    }
    let consumed = log.iter().filter(|e| e["kind"] == "tokens_consumed").count();
    assert_eq!(consumed, 33);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_survives_a_server_stop_and_restart() {
    let mut server = NatsServer::start().unwrap();
    let (_dir, data) = scratch();
    let _serve = Serve::spawn(server.url(), &data.join("a"), 60_000);
    wait_for_service(server.url(), 1).await;
    let mut patient = config(server.url());
    patient.request_timeout = Duration::from_secs(20);
    let panel = AdminClient::connect(patient).await.unwrap();
    catalog_and_tenants(&panel, &["acme"]).await;

    let mut fast = config(server.url());
    fast.request_timeout = Duration::from_millis(300);
    fast.attempts = 2;
    let offline = |dir: &str, staleness_ms: u64| OfflineConfig {
        dir: data.join(dir),
        max_staleness: Duration::from_millis(staleness_ms),
        offline_share: 0.5,
    };
    let app = Client::connect(fast.clone(), "acme", Role::User, Some(offline("app", 600_000))).await.unwrap();
    let stale = Client::connect(fast.clone(), "acme", Role::User, Some(offline("stale", 500))).await.unwrap();
    let other = Client::connect(fast.clone(), "acme", Role::User, None).await.unwrap();

    assert!(app.consume_tokens("on-1", 2000).await.unwrap().ok);
    app.refresh().await.unwrap();
    stale.refresh().await.unwrap();
    let reading = app.snapshot().await.unwrap().unwrap();
    assert_eq!((reading.tokens_used, reading.tokens_limit), (2000, 10_000));
    // Another writer uses more after the app's reading: the offline
    // decisions will not know, which is where overshoot comes from.
    assert!(other.consume_tokens("other-1", 7000).await.unwrap().ok);

    server.stop();
    // Offline: up to half of the 8,000 left at the reading.
    let mut offline_admitted = 0;
    for i in 0..6 {
        let answer = app.consume_tokens(&format!("off-{i}"), 1000).await.unwrap();
        assert!(answer.offline, "{:?}", answer.raw);
        if answer.ok {
            offline_admitted += 1000;
        } else {
            assert_eq!(code(&answer), "offline_limit_exceeded");
        }
    }
    assert_eq!(offline_admitted, 4000);
    let retry = app.consume_tokens("off-0", 1000).await.unwrap();
    assert!(retry.ok && retry.duplicate && retry.offline);
    assert!(app.upload("offline.bin", 1 << 20).await.unwrap().ok);
    assert_eq!(app.outbox_len().await.unwrap(), 5);
    // The outbox is durable: the application restarts with it.
    drop(app);
    let app = Client::connect(fast.clone(), "acme", Role::User, Some(offline("app", 600_000))).await.unwrap();
    assert_eq!(app.outbox_len().await.unwrap(), 5);
    let refused = app.consume_tokens("off-9", 1).await.unwrap();
    assert_eq!(
        (refused.offline, code(&refused)),
        (true, "offline_limit_exceeded"),
        "the allowance survives too"
    );
    // Too old a reading fails closed.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let closed = stale.consume_tokens("on-1", 2000).await.unwrap();
    assert_eq!((closed.ok, code(&closed)), (false, "ledger_unreachable"));
    // Without a cache there is no fallback at all.
    // (A request given up on may still be buffered by the NATS connection
    // and land after the restart; these reuse keys already accepted, so
    // if they land they are duplicates.)
    assert!(matches!(
        other.consume_tokens("other-1", 7000).await,
        Err(ledger_client::ClientError::Unreachable(_))
    ));

    // Back: the outbox is delivered with its original keys, before any new
    // decision, exactly once.
    server.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Nobody calls deliver_outbox: the client's background task does it.
    while app.outbox_len().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "the outbox was not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.deliver_outbox().await.unwrap(), 0);
    // The ledger refused what went past its offline margin; the client
    // keeps those for the application, which had been told ok.
    let refused = app.refused_offline().unwrap();
    let refused_keys: Vec<&str> = refused.iter().map(|r| r["command"]["request"].as_str().unwrap()).collect();
    assert_eq!(refused_keys, ["off-2", "off-3"]);
    assert!(refused.iter().all(|r| r["answer"]["code"] == "token_limit_exceeded"), "{refused:?}");
    app.forget_refused().unwrap();
    assert!(app.refused_offline().unwrap().is_empty());
    let next = app.consume_tokens("on-2", 1).await.unwrap();
    assert_eq!(code(&next), "token_limit_exceeded", "{:?}", next.raw);

    let log = events(server.url(), &data.join("audit"));
    let request = |e: &Value, kind: &str| e["payload"][kind]["request"].as_str().unwrap().to_string();
    let consumed: Vec<&Value> = log.iter().filter(|e| e["kind"] == "tokens_consumed").collect();
    let keys: Vec<String> = consumed.iter().map(|e| request(e, "TokensConsumed")).collect();
    // None lost, none doubled. The ledger records offline uses past the
    // 10,000 limit only up to its 10% margin: off-2 and off-3 were denied
    // on delivery (and recorded as denials, for the audit).
    assert_eq!(keys, ["on-1", "other-1", "off-0", "off-1"]);
    let offline_marked: Vec<String> = consumed
        .iter()
        .filter(|e| e["admitted_offline_at"].is_string())
        .map(|e| request(e, "TokensConsumed"))
        .collect();
    assert_eq!(offline_marked, ["off-0", "off-1"]);
    let denied: Vec<String> =
        log.iter().filter(|e| e["kind"] == "tokens_denied").map(|e| request(e, "TokensDenied")).collect();
    assert!(denied.contains(&"off-2".to_string()) && denied.contains(&"off-3".to_string()), "{denied:?}");
    let upload = log.iter().find(|e| e["kind"] == "file_stored").unwrap();
    assert!(upload["admitted_offline_at"].is_string());

    // The overshoot: what the ledger holds beyond the limit, against the
    // client's stated bound (its allowance at the reading) and the ledger's.
    let usage = panel.query("acme", "usage", None).await.unwrap();
    let used = usage["tokens"]["used"].as_u64().unwrap();
    let overshoot = used.saturating_sub(10_000);
    let client_bound = (10_000 - reading.tokens_used) / 2;
    let ledger_bound = 10_000 * ledger::decide::OFFLINE_MARGIN_PERCENT / 100;
    println!(
        "offline overshoot: {overshoot} tokens over a 10,000 limit (client bound {client_bound}, ledger margin {ledger_bound})"
    );
    assert_eq!(used, 11_000);
    assert!(overshoot <= client_bound.min(ledger_bound));
}

/// Where nats-py is (`scripts/python-nats` installs it; `scripts/test` sets
/// LEDGER_PYTHONPATH).
fn python_path() -> String {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/pylib");
    std::env::var("LEDGER_PYTHONPATH").ok().unwrap_or_else(|| {
        assert!(installed.exists(), "nats-py is missing: run scripts/test (or scripts/python-nats)");
        installed.to_string_lossy().into_owned()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_python_example_works_with_plain_nats_py() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let example = readme.split("```python\n").nth(1).and_then(|rest| rest.split("```").next()).unwrap();
    let (_dir, data) = scratch();
    let (server, _serve, _) = secured(&["acme"], &data.join("a")).await;
    // The client takes its inbox prefix (_INBOX_panel) from the URL's user.
    let panel =
        AdminClient::connect(config(&with_credentials(server.url(), "panel", "panel-pw"))).await.unwrap();
    catalog_and_tenants(&panel, &["acme"]).await;

    let script = example.replace("nats://127.0.0.1:4222", server.url());
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .env("PYTHONPATH", python_path())
        .env("ACME_USER_PASSWORD", "acme-user-pw")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("'ok': True") && lines[0].contains("'duplicate': False"), "{stdout}");
    assert!(lines[1].contains("'used': 1200"), "{stdout}");
}

/// Notifications on NATS: a tenant's credentials subscribe to their own
/// tenant's (`ledger.notify.<t>.>`), the panel's to all; another tenant's
/// subscription is a permissions violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_hear_their_own_notifications_and_the_panel_all() {
    use futures_util::StreamExt;
    let (_dir, data) = scratch();
    let (server, _serve, _ledger_url) = secured(&["acme", "beta"], &data.join("a")).await;
    let connect = |user: &'static str, password: &'static str| {
        let url = with_credentials(server.url(), user, password);
        async move {
            let (errors_tx, errors) = tokio::sync::mpsc::unbounded_channel::<String>();
            let (address, options) = ledger_client::nats::options(&url, user, Some(&inbox_prefix(user)));
            let client = options
                .event_callback(move |event| {
                    if let async_nats::Event::ServerError(error) = event {
                        let _ = errors_tx.send(error.to_string());
                    }
                    std::future::ready(())
                })
                .connect(&address)
                .await
                .unwrap();
            (client, errors)
        }
    };
    let (acme, mut acme_errors) = connect("acme-user", "acme-user-pw").await;
    let (panel_nats, _) = connect("panel", "panel-pw").await;
    let mut own = acme.subscribe("ledger.notify.acme.>").await.unwrap();
    let _other = acme.subscribe("ledger.notify.beta.>").await.unwrap();
    let mut all = panel_nats.subscribe("ledger.notify.>").await.unwrap();
    acme.flush().await.unwrap();
    panel_nats.flush().await.unwrap();
    // The server refuses the foreign subscription outright.
    let refused = tokio::time::timeout(Duration::from_secs(10), acme_errors.recv()).await.unwrap().unwrap();
    assert!(
        refused.to_lowercase().contains("permissions violation") && refused.contains("ledger.notify.beta"),
        "{refused}"
    );
    let panel =
        AdminClient::connect(config(&with_credentials(server.url(), "panel", "panel-pw"))).await.unwrap();
    catalog_and_tenants(&panel, &["acme", "beta"]).await;
    let mine = tokio::time::timeout(Duration::from_secs(10), own.next()).await.unwrap().unwrap();
    let body: Value = serde_json::from_slice(&mine.payload).unwrap();
    assert_eq!(
        (body["type"].clone(), body["data"]["tenant"].clone()),
        (json!("subscription.changed"), json!("acme"))
    );
    let mut tenants = std::collections::BTreeSet::new();
    while tenants.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(10), all.next()).await.unwrap().unwrap();
        let body: Value = serde_json::from_slice(&message.payload).unwrap();
        tenants.insert(body["data"]["tenant"].as_str().unwrap().to_string());
    }
}
