//! `ledger serve --http` end to end: real `ledger serve` processes (on the
//! embedded log, and beside NATS on a real nats-server), real API keys from
//! `ledger keys`, and a real HTTP client.

mod common;

use std::path::Path;
use std::process::Command;

use common::http::{add_key, Http, HttpServe};
use serde_json::{json, Value};

/// The spec's worked example catalog, through the panel's HTTP routes, and
/// two subscribed tenants.
async fn catalog(http: &Http, panel: &str, tenants: &[&str]) {
    let addon = json!({"addon": {"id": "extra-storage", "currency": "USD", "price": "3.00", "recurring": true, "grants": {"storage_gb": "5"}}});
    let plan = json!({"plan": {"id": "starter", "currency": "USD", "price": "20.00", "per_seat": false, "storage_quota_gb": "2", "monthly_token_limit": 10000, "token_overage": "block", "addons": ["extra-storage"]}});
    for (command, body) in [("define_addon", addon), ("define_plan", plan)] {
        let answer = http.post(&format!("/v1/admin/{command}"), Some(panel), &body).await;
        assert_eq!((answer.status, &answer.body["ok"]), (200, &json!(true)), "{:?}", answer.body);
    }
    for tenant in tenants {
        let answer = http
            .post(
                "/v1/admin/subscribe",
                Some(panel),
                &json!({"tenant": tenant, "plan": "starter", "seats": 2}),
            )
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
}

fn ledger(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ledger")).arg("--data").arg(data).args(args).output().unwrap()
}

const CE_ONE: &str = "application/cloudevents+json";
const CE_BATCH: &str = "application/cloudevents-batch+json";

fn cloudevent(id: &str, tenant: &str, kind: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "tests/http", "type": kind, "subject": tenant, "data": data})
}

async fn log_head(http: &Http) -> u64 {
    let health = http.get("/healthz", None).await;
    health.body["log_head"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_the_spec_on_the_embedded_log() {
    let data = tempfile::tempdir().unwrap();
    let panel = add_key(data.path(), &["--panel"]);
    let user = add_key(data.path(), &["acme", "user"]);
    let admin = add_key(data.path(), &["acme", "admin"]);
    let serve = HttpServe::spawn(data.path(), None);
    let http = Http::new(&serve.base);
    catalog(&http, &panel, &["acme"]).await;
    let (u, a, p) = (Some(user.as_str()), Some(admin.as_str()), Some(panel.as_str()));

    // Commands: accepted, a recorded denial (200), a duplicate, and
    // rejections as problems with the spec's statuses.
    let tokens = |request: &str, n: i64| json!({"request": request, "tokens": n});
    let ok = http.post("/v1/tenants/acme/consume_tokens", u, &tokens("a", 6000)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("content-type"), Some("application/json"));
    assert_eq!((ok.body["ok"].clone(), ok.body["duplicate"].clone()), (json!(true), json!(false)));
    let denied = http.post("/v1/tenants/acme/consume_tokens", u, &tokens("b", 5000)).await;
    assert_eq!(denied.status, 200, "a recorded denial is a decision: {:?}", denied.body);
    assert_eq!(denied.body["code"], "token_limit_exceeded");
    assert_eq!(denied.body["ok"], false);
    let again = http.post("/v1/tenants/acme/consume_tokens", u, &tokens("a", 6000)).await;
    assert_eq!((again.status, again.body["duplicate"].clone()), (200, json!(true)));
    http.post("/v1/tenants/acme/consume_tokens", u, &tokens("a", 7))
        .await
        .problem(409, "idempotency_conflict");
    http.post("/v1/tenants/acme/consume_tokens", u, &tokens("c", 0)).await.problem(400, "invalid_amount");
    http.post("/v1/tenants/acme/set_seats", u, &json!({"seats": 3})).await.problem(403, "forbidden");
    // The catalog's commands have no tenant path; nor has a command that
    // does not exist.
    http.post("/v1/tenants/acme/define_plan", a, &json!({})).await.problem(404, "not_found");
    let bought = json!({"addon": "nope", "purchase": "p1", "payment": "invoice"});
    http.post("/v1/tenants/acme/purchase_addon", a, &bought).await.problem(404, "unknown_addon");
    http.post("/v1/tenants/acme/delete_file", u, &json!({"file": "ghost"}))
        .await
        .problem(404, "unknown_file");
    http.post("/v1/tenants/acme/no_such_command", u, &json!({})).await.problem(404, "not_found");
    // The route names the command and tenant, the key the actor, the
    // ledger's clock the time: a body that names them is refused.
    for field in [json!({"tenant": "acme"}), json!({"at": "2026-01-01T00:00:00Z"}), json!({"actor": "admin"})]
    {
        let mut body = tokens("t-1", 1);
        body.as_object_mut().unwrap().extend(field.as_object().unwrap().clone());
        http.post("/v1/tenants/acme/consume_tokens", u, &body).await.problem(400, "malformed");
    }
    // What only a comparison of two fields shows is a 409: no schema can
    // compare fields, and a request the document accepts never gets a 400.
    let inverted = json!({"plan": {"id": "inverted", "currency": "USD", "price": "1", "per_seat": true, "min_seats": 5, "max_seats": 2, "storage_quota_gb": "1", "monthly_token_limit": 1, "token_overage": "block", "addons": []}});
    http.post("/v1/admin/define_plan", p, &inverted).await.problem(409, "invalid_seats");
    // Seats below 1 no plan allows; past a plan's range is the plan's say.
    http.post("/v1/tenants/acme/set_seats", a, &json!({"seats": 0})).await.problem(400, "invalid_seats");
    let duo = json!({"plan": {"id": "duo", "currency": "USD", "price": "1", "per_seat": true, "max_seats": 2, "storage_quota_gb": "1", "monthly_token_limit": 1, "token_overage": "block", "addons": []}});
    assert_eq!(http.post("/v1/admin/define_plan", p, &duo).await.status, 200);
    let three = json!({"tenant": "duo-co", "plan": "duo", "seats": 3});
    http.post("/v1/admin/subscribe", p, &three).await.problem(409, "invalid_seats");
    let not_json =
        http.send("POST", "/v1/tenants/acme/upload", u, Some("application/json"), b"{".to_vec()).await;
    not_json.problem(400, "malformed");
    http.post("/v1/admin/subscribe", p, &json!({"tenant": "acme", "plan": "starter", "seats": 2}))
        .await
        .problem(409, "already_subscribed");
    http.post("/v1/admin/close_period", p, &json!({"tenant": "ghost"})).await.problem(404, "not_subscribed");
    let big = format!("{{\"file\": \"f\", \"bytes\": 1, \"pad\": \"{}\"}}", "x".repeat(1 << 20));
    http.send("POST", "/v1/tenants/acme/upload", u, Some("application/json"), big.into_bytes())
        .await
        .problem(413, "too_large");
    let purchase = json!({"addon": "extra-storage", "purchase": "x1", "payment": "invoice"});
    assert_eq!(http.post("/v1/tenants/acme/purchase_addon", a, &purchase).await.status, 200);

    // Batches: tenant and panel, results in order, each item on its own.
    let batch = json!({"commands": [
        {"cmd": "upload", "file": "f1", "bytes": 1000},
        {"cmd": "upload", "file": "f2", "bytes": 8_000_000_000u64},
        {"cmd": "nonsense"},
        {"cmd": "delete_file", "file": "f1"},
    ]});
    let results = http.post("/v1/tenants/acme/batch", u, &batch).await;
    assert_eq!(results.status, 200);
    let codes: Vec<Value> =
        results.body["results"].as_array().unwrap().iter().map(|r| r["code"].clone()).collect();
    assert_eq!(codes, [Value::Null, json!("storage_quota_exceeded"), json!("malformed"), Value::Null]);
    // A body that is not a batch is refused whole: no commands array,
    // anything beside it, or an item that is not an object with a `cmd`.
    for not_a_batch in [
        json!({"commands": 3}),
        json!({"commands": [], "extra": 1}),
        json!({"commands": [{"cmd": "upload", "file": "f9", "bytes": 1}, [null, null]]}),
        json!({"commands": [{"file": "f9", "bytes": 1}]}),
        json!({"commands": [{"cmd": 7}]}),
    ] {
        http.post("/v1/tenants/acme/batch", u, &not_a_batch).await.problem(400, "malformed");
    }
    let panel_batch = json!({"commands": [{"cmd": "set_seats", "tenant": "acme", "seats": 4}]});
    let results = http.post("/v1/admin/batch", p, &panel_batch).await;
    assert_eq!(results.body["results"][0]["ok"], true, "{:?}", results.body);

    // CloudEvents: one, a retry of it (a duplicate, counted once), a batch.
    let event = cloudevent("ce-1", "acme", "ledger.tokens.consumed", json!({"tokens": 100}));
    let body = serde_json::to_vec(&event).unwrap();
    let first = http.send("POST", "/v1/events", u, Some(CE_ONE), body.clone()).await;
    assert_eq!(
        (first.status, first.body["results"][0]["ok"].clone()),
        (200, json!(true)),
        "{:?}",
        first.body
    );
    let retry = http.send("POST", "/v1/events", u, Some(CE_ONE), body).await;
    assert_eq!(retry.body["results"][0]["duplicate"], true, "{:?}", retry.body);
    let batch = json!([
        cloudevent("up-1", "acme", "ledger.file.stored", json!({"bytes": 2048})),
        cloudevent("ev-2", "acme", "ledger.file.stored", json!({"bytes": 10, "file": "named"})),
        cloudevent("ev-3", "acme", "ledger.file.deleted", json!({"file": "named"})),
        cloudevent("ev-4", "acme", "com.example.unknown", json!({})),
    ]);
    let results =
        http.send("POST", "/v1/events", u, Some(CE_BATCH), serde_json::to_vec(&batch).unwrap()).await;
    let oks: Vec<Value> =
        results.body["results"].as_array().unwrap().iter().map(|r| r["ok"].clone()).collect();
    assert_eq!(oks, [json!(true), json!(true), json!(true), json!(false)], "{:?}", results.body);
    assert_eq!(results.body["results"][3]["code"], "malformed");
    // JSON without ce-* headers is in none of the three content modes.
    http.send("POST", "/v1/events", u, Some("application/json"), b"{}".to_vec())
        .await
        .problem(415, "unsupported_media_type");

    // Views: the CLI's objects.
    let usage = http.get("/v1/tenants/acme/usage", u).await;
    assert_eq!(usage.status, 200, "{:?}", usage.body);
    assert_eq!(usage.body["tokens"], json!({"used": 6100, "limit": 10000}));
    assert_eq!(usage.body["storage"], json!({"used_bytes": 2048, "quota_bytes": 7u64 << 30}));
    assert_eq!(usage.body["seats"], 4);
    assert_eq!(usage.body["addons"][0]["purchase"], "x1");
    let invoice = http.get("/v1/tenants/acme/invoice?explain=true", a).await;
    assert_eq!(invoice.body["status"], "draft", "{:?}", invoice.body);
    let explained = invoice.body["explain"].as_array().unwrap();
    assert_eq!(explained.len(), invoice.body["lines"].as_array().unwrap().len());
    assert!(explained.iter().all(|line| !line["events"].as_array().unwrap().is_empty()), "{explained:?}");
    let plain = http.get("/v1/tenants/acme/invoice", a).await;
    assert!(plain.body.get("explain").is_none());
    let list = http.get("/v1/tenants/acme/invoices", u).await;
    assert_eq!(list.body["invoices"].as_array().unwrap().len(), 1, "{:?}", list.body);
    http.get("/v1/tenants/acme/usage?at=yesterday", u).await.problem(400, "malformed");
    http.get("/v1/tenants/acme/usage?colour=blue", u).await.problem(400, "malformed");
    http.get("/v1/tenants/acme/usage?explain=true", u).await.problem(400, "malformed");
    http.get("/v1/tenants/acme/invoices?at=2026-03-15T00:00:00Z", u).await.problem(400, "malformed");
    // Instants up to the year 9998, so every period answered ends in a
    // four-digit year.
    http.get("/v1/tenants/acme/usage?at=9999-01-01T00:00:00Z", u).await.problem(400, "malformed");
    http.get("/v1/tenants/Acme/usage", p).await.problem(400, "malformed");
    // A well-formed instant before the subscription: the state's answer.
    http.get("/v1/tenants/acme/usage?at=1999-01-01T00:00:00Z", u).await.problem(404, "not_subscribed");
    let ghost_key = add_key(data.path(), &["ghost", "user"]);
    http.get("/v1/tenants/ghost/usage", Some(&ghost_key)).await.problem(404, "not_subscribed");
    let tenants = http.get("/v1/tenants", p).await;
    assert_eq!(tenants.body["tenants"][0]["tenant"], "acme", "{:?}", tenants.body);
    assert_eq!(tenants.body["tenants"][0]["tokens"]["used"], 6100);
    let me = http.get("/v1/me", u).await;
    assert_eq!((me.body["tenant"].clone(), me.body["actor"].clone()), (json!("acme"), json!("acme:user")));

    // Keys: none, unknown, malformed, revoked while serving: 401.
    http.get("/v1/me", None).await.problem(401, "unauthorized");
    let unknown = http.get("/v1/me", Some("lk_000000000000_00000000000000000000000000000000")).await;
    assert_eq!(unknown.header("www-authenticate"), Some("Bearer"));
    unknown.problem(401, "unauthorized");
    let basic = http.send("GET", "/v1/me", None, None, Vec::new()).await;
    basic.problem(401, "unauthorized");
    let id = me.body["id"].as_str().unwrap();
    assert!(ledger(data.path(), &["keys", "revoke", id]).status.success());
    http.get("/v1/tenants/acme/usage", u).await.problem(401, "unauthorized");
    let listed = ledger(data.path(), &["keys", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(listed.as_array().unwrap().iter().all(|k| k["id"] != id && k.get("key").is_none()));
    assert!(!std::fs::read_to_string(data.path().join("keys.json")).unwrap().contains(&panel));

    // Operations.
    let health = http.get("/healthz", None).await;
    assert_eq!((health.status, health.body["status"].clone()), (200, json!("ok")), "{:?}", health.body);
    let metrics = http.get("/metrics", None).await;
    let text = metrics.body.as_str().unwrap();
    for expected in [
        "ledger_decisions_total{command=\"consume_tokens\",outcome=\"accepted\"} 2",
        "ledger_decisions_total{command=\"consume_tokens\",outcome=\"denied\"} 1",
        "ledger_decisions_total{command=\"consume_tokens\",outcome=\"duplicate\"} 2",
        "ledger_decisions_total{command=\"upload\",outcome=\"denied\"} 1",
        "ledger_decision_seconds_bucket{le=\"+Inf\"}",
        "ledger_log_batch_messages_count",
        "ledger_projector_lag_events 0",
        "ledger_log_reachable 1",
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
    let page = http.get("/", None).await;
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.body.as_str().unwrap().contains("Subscription ledger"));
    http.get("/v1/nowhere", u).await.problem(404, "not_found");
}

/// Every documented route exists, and every route is documented: each
/// path and method of `/v1/openapi.json` is served (never the router's
/// 404 or 405), and a path it does not list is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() {
    let data = tempfile::tempdir().unwrap();
    let panel = add_key(data.path(), &["--panel"]);
    let spare = add_key(data.path(), &["acme", "user"]);
    let serve = HttpServe::spawn(data.path(), None);
    let http = Http::new(&serve.base);
    let hook = json!({"url": "http://127.0.0.1:9/hook"});
    let endpoint = http.post("/v1/webhooks", Some(&panel), &hook).await;
    assert_eq!(endpoint.status, 200, "{:?}", endpoint.body);
    let doc = http.get("/v1/openapi.json", None).await.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, operations) in paths {
        // The methods a path serves, as `Allow` names them (GET with HEAD).
        let mut served: Vec<String> =
            operations.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect();
        if served.iter().any(|m| m == "GET") {
            served.push("HEAD".into());
        }
        served.sort();
        for (method, operation) in operations.as_object().unwrap() {
            documented.push(format!("{} {path}", method.to_uppercase()));
            assert!(operation["responses"]["200"].is_object(), "{method} {path}");
            // Ids of a key and an endpoint that exist, so a DELETE finds one.
            let id = if path.starts_with("/v1/keys/") {
                &spare[3..15]
            } else {
                endpoint.body["id"].as_str().unwrap()
            };
            let concrete = path.replace("{tenant}", "acme").replace("{id}", id);
            let answer = http
                .send(
                    &method.to_uppercase(),
                    &concrete,
                    Some(&panel),
                    Some("application/json"),
                    b"{}".to_vec(),
                )
                .await;
            assert_ne!(answer.status, 405, "{method} {path}");
            assert_ne!(answer.body["code"], "not_found", "{method} {path} is documented but not served");
            // A documented path refuses the methods it does not serve, QUERY
            // and TRACE included: 405 with Allow, as a problem.
            for other in ["GET", "POST", "PUT", "DELETE", "PATCH", "QUERY", "TRACE"] {
                if served.iter().any(|m| m == other) {
                    continue;
                }
                let refused = http.send(other, &concrete, Some(&panel), None, Vec::new()).await;
                let mut allowed: Vec<&str> = refused.header("allow").unwrap_or_default().split(',').collect();
                allowed.sort();
                assert_eq!(allowed, served, "{other} {path}");
                refused.problem(405, "method_not_allowed");
            }
        }
    }
    documented.sort();
    // The spec's contract: each command its own operation on the panel's
    // path, each tenant command on the tenant's too, the two batches,
    // CloudEvents, the views and the operations' routes.
    let tenant_commands = [
        "subscribe",
        "set_seats",
        "change_plan",
        "cancel",
        "upload",
        "delete_file",
        "consume_tokens",
        "purchase_addon",
        "settle_payment",
        "cancel_addon",
        "close_period",
        "set_usage_alerts",
    ];
    let mut expected: Vec<String> = [
        "GET /",
        "GET /healthz",
        "GET /metrics",
        "GET /v1/me",
        "GET /v1/openapi.json",
        "GET /v1/tenants",
        "GET /v1/tenants/{tenant}/invoice",
        "GET /v1/tenants/{tenant}/invoices",
        "GET /v1/tenants/{tenant}/usage",
        "GET /v1/tenants/{tenant}/notifications",
        "POST /v1/keys",
        "GET /v1/keys",
        "DELETE /v1/keys/{id}",
        "POST /v1/webhooks",
        "GET /v1/webhooks",
        "DELETE /v1/webhooks/{id}",
        "POST /v1/events",
        "POST /v1/admin/batch",
        "POST /v1/tenants/{tenant}/batch",
        "POST /v1/admin/define_plan",
        "POST /v1/admin/define_addon",
    ]
    .map(String::from)
    .into();
    for command in tenant_commands {
        expected.push(format!("POST /v1/admin/{command}"));
        expected.push(format!("POST /v1/tenants/{{tenant}}/{command}"));
    }
    expected.sort();
    assert_eq!(documented, expected);
    let operations: std::collections::BTreeSet<&str> = paths
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .map(|o| o["operationId"].as_str().unwrap())
        .collect();
    assert_eq!(operations.len(), expected.len(), "each operation its own operationId");
    for undocumented in [
        "/v1/tenants/acme/usage/extra",
        "/v1/admin",
        "/v2/events",
        "/console",
        "/v1/tenants/acme/define_plan",
    ] {
        http.get(undocumented, Some(&panel)).await.problem(404, "not_found");
    }
}

/// A tenant's keys never reach another tenant, on any route: each attempt
/// is a 403 (not a 401, not a 404), and the log does not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_never_reaches_another_tenant() {
    let data = tempfile::tempdir().unwrap();
    let panel = add_key(data.path(), &["--panel"]);
    let keys = [add_key(data.path(), &["acme", "user"]), add_key(data.path(), &["acme", "admin"])];
    let serve = HttpServe::spawn(data.path(), None);
    let http = Http::new(&serve.base);
    catalog(&http, &panel, &["acme", "beta"]).await;
    let before = log_head(&http).await;
    let beta_usage = http.get("/v1/tenants/beta/usage", Some(&panel)).await.body;
    for key in keys.iter().map(|k| Some(k.as_str())) {
        for command in [
            "consume_tokens",
            "upload",
            "delete_file",
            "set_seats",
            "purchase_addon",
            "cancel_addon",
            "batch",
        ] {
            let body = json!({"request": "r", "tokens": 1, "file": "f", "bytes": 1, "seats": 2, "commands": [{"cmd": "consume_tokens", "request": "r", "tokens": 1}]});
            http.post(&format!("/v1/tenants/beta/{command}"), key, &body).await.problem(403, "forbidden");
        }
        for view in ["usage", "invoice", "invoice?explain=true", "invoices"] {
            http.get(&format!("/v1/tenants/beta/{view}"), key).await.problem(403, "forbidden");
        }
        for command in ["subscribe", "set_seats", "consume_tokens", "batch", "define_plan"] {
            let body = json!({"tenant": "beta", "seats": 9, "commands": []});
            http.post(&format!("/v1/admin/{command}"), key, &body).await.problem(403, "forbidden");
        }
        http.get("/v1/tenants", key).await.problem(403, "forbidden");
        // CloudEvents: one event for another tenant stops the whole request.
        let events = json!([
            cloudevent("mine", "acme", "ledger.tokens.consumed", json!({"tokens": 1})),
            cloudevent("theirs", "beta", "ledger.tokens.consumed", json!({"tokens": 1})),
        ]);
        let answer =
            http.send("POST", "/v1/events", key, Some(CE_BATCH), serde_json::to_vec(&events).unwrap()).await;
        answer.problem(403, "forbidden");
    }
    assert_eq!(log_head(&http).await, before, "nothing was recorded");
    assert_eq!(http.get("/v1/tenants/beta/usage", Some(&panel)).await.body, beta_usage);
    // The same key on its own tenant works, so the 403s were about the tenant.
    let own = http
        .post("/v1/tenants/acme/consume_tokens", Some(&keys[0]), &json!({"request": "r", "tokens": 1}))
        .await;
    assert_eq!(own.status, 200);
}

/// With `--nats`, HTTP runs beside the NATS service over one engine: what
/// HTTP records, a NATS client and `ledger usage --json` see; when the log
/// is unreachable, commands are 503 with Retry-After and `/healthz` is 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_beside_nats_shares_the_engine_and_reports_an_outage() {
    let mut nats = common::JetStream::new();
    let url = nats.url();
    let data = tempfile::tempdir().unwrap();
    let panel = add_key(data.path(), &["--panel"]);
    let user = add_key(data.path(), &["acme", "user"]);
    let serve = HttpServe::spawn(data.path(), Some(&url));
    let http = Http::new(&serve.base);
    catalog(&http, &panel, &["acme"]).await;
    let answer = http
        .post("/v1/tenants/acme/consume_tokens", Some(&user), &json!({"request": "h1", "tokens": 42}))
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);

    // The same tenant over NATS, from the same process.
    let config = ledger_client::ClientConfig::new(&url);
    let client =
        ledger_client::Client::connect(config, "acme", ledger_client::Role::User, None).await.unwrap();
    let over_nats = client.usage(None).await.unwrap();
    let over_http = http.get("/v1/tenants/acme/usage", Some(&user)).await.body;
    assert_eq!(over_nats, over_http);
    let elsewhere = tempfile::tempdir().unwrap();
    let cli = ledger(elsewhere.path(), &["--nats", &url, "usage", "acme", "--json"]);
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&cli.stdout).unwrap(), over_http);
    assert_eq!(over_http["tokens"]["used"], 42);

    // The log goes away.
    nats.server.as_mut().unwrap().stop();
    let answer = http
        .post("/v1/tenants/acme/consume_tokens", Some(&user), &json!({"request": "h2", "tokens": 1}))
        .await;
    answer.problem(503, "unavailable");
    assert!(answer.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok()));
    let event = cloudevent("ce-outage", "acme", "ledger.tokens.consumed", json!({"tokens": 8}));
    let event = serde_json::to_vec(&event).unwrap();
    // The server keeps the keys too: a request whose key was not read in
    // the last second is 503 as a whole (the key cannot be checked), one
    // whose key was has each event answered unavailable.
    let unavailable = |answer: &common::http::Answer| {
        (answer.status == 503 && answer.body["code"] == "unavailable")
            || (answer.status == 200 && answer.body["results"][0]["code"] == "unavailable")
    };
    let during = http.send("POST", "/v1/events", Some(&user), Some(CE_ONE), event.clone()).await;
    assert!(unavailable(&during), "{:?}", during.body);
    let health = http.get("/healthz", None).await;
    assert_eq!((health.status, health.body["status"].clone()), (503, json!("log_unreachable")));
    assert!(health.header("retry-after").is_some());
    assert!(http.get("/metrics", None).await.body.as_str().unwrap().contains("ledger_log_reachable 0"));

    // It comes back. The outage's answer meant "outcome unknown" (the
    // client library may still deliver a publish it buffered), so the
    // retry is either recorded now or a duplicate of the earlier attempt;
    // either way the event counts once, and nothing marked its id seen
    // before it was durable.
    nats.server.as_mut().unwrap().restart().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let retried = loop {
        let answer = http.send("POST", "/v1/events", Some(&user), Some(CE_ONE), event.clone()).await;
        if !unavailable(&answer) {
            break answer.body["results"][0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "still unavailable a minute after the restart");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(retried["ok"], true, "{retried:?}");
    // The command the outage answered `unavailable` is retried the same way.
    let h2 = http
        .post("/v1/tenants/acme/consume_tokens", Some(&user), &json!({"request": "h2", "tokens": 1}))
        .await;
    assert_eq!((h2.status, h2.body["ok"].clone()), (200, json!(true)), "{:?}", h2.body);
    let again = http.send("POST", "/v1/events", Some(&user), Some(CE_ONE), event).await;
    assert_eq!(again.body["results"][0]["duplicate"], true, "{:?}", again.body);
    // The views catch up once the projector has followed the restarted
    // server (until then a view is a 503, not a stale answer).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let usage = loop {
        let usage = http.get("/v1/tenants/acme/usage", Some(&user)).await;
        if usage.status == 200 || std::time::Instant::now() > deadline {
            break usage;
        }
        usage.problem(503, "unavailable");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(usage.body["tokens"]["used"], 42 + 1 + 8, "each counted once: {:?}", usage.body);
}

/// CloudEvents in binary mode (what the official SDKs send by default):
/// the attributes in percent-encoded `ce-*` headers, the body as the data.
/// A request whose events lack their required attributes is refused whole,
/// with nothing decided; one in no content mode is a 415.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_arrive_in_binary_mode_and_non_events_are_refused_whole() {
    let data = tempfile::tempdir().unwrap();
    let panel = add_key(data.path(), &["--panel"]);
    let user = add_key(data.path(), &["acme", "user"]);
    let serve = HttpServe::spawn(data.path(), None);
    let http = Http::new(&serve.base);
    catalog(&http, &panel, &["acme", "beta"]).await;
    let u = Some(user.as_str());
    let binary =
        |id: &'static str, kind: &'static str, subject: &'static str, content_type: Option<&'static str>| {
            let mut headers = vec![
                ("ce-specversion", "1.0"),
                ("ce-id", id),
                ("ce-source", "tests%2Fhttp binary"),
                ("ce-type", kind),
                ("ce-subject", subject),
            ];
            headers.extend(content_type.map(|t| ("content-type", t)));
            headers
        };
    let tokens = binary("bin-1", "ledger.tokens.consumed", "acme", Some("application/json"));
    let first = http.send_with("POST", "/v1/events", u, &tokens, br#"{"tokens": 40}"#.to_vec()).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(
        (first.body["results"][0]["ok"].clone(), first.body["results"][0]["duplicate"].clone()),
        (json!(true), json!(false))
    );
    let again = http.send_with("POST", "/v1/events", u, &tokens, br#"{"tokens": 40}"#.to_vec()).await;
    assert_eq!(again.body["results"][0]["duplicate"], true, "{:?}", again.body);
    // No Content-Type (the SDK's default without datacontenttype), and an id
    // that arrives percent-encoded: the file is `bin%2`.
    let stored = binary("bin%252", "ledger.file.stored", "acme", None);
    let answer = http.send_with("POST", "/v1/events", u, &stored, br#"{"bytes": 10}"#.to_vec()).await;
    assert_eq!(answer.body["results"][0]["ok"], true, "{:?}", answer.body);
    let usage = http.get("/v1/tenants/acme/usage", u).await.body;
    assert_eq!(
        (usage["tokens"]["used"].clone(), usage["storage"]["used_bytes"].clone()),
        (json!(40), json!(10))
    );
    let deleted = binary("other-id", "ledger.file.deleted", "acme", Some("application/json"));
    let answer = http.send_with("POST", "/v1/events", u, &deleted, br#"{"file": "bin%2"}"#.to_vec()).await;
    assert_eq!(answer.body["results"][0]["ok"], true, "{:?}", answer.body);
    // Data the ledger cannot use is the event's own answer.
    let unknown = binary("bin-3", "com.example.other", "acme", Some("application/json"));
    let answer = http.send_with("POST", "/v1/events", u, &unknown, b"{}".to_vec()).await;
    assert_eq!((answer.status, answer.body["results"][0]["code"].clone()), (200, json!("malformed")));

    let before = log_head(&http).await;
    // Attributes missing: the request is no CloudEvent, nothing is decided.
    let mut no_source = binary("bin-4", "ledger.tokens.consumed", "acme", Some("application/json"));
    no_source.retain(|(name, _)| *name != "ce-source");
    http.send_with("POST", "/v1/events", u, &no_source, br#"{"tokens": 1}"#.to_vec())
        .await
        .problem(400, "malformed");
    let foreign = binary("bin-5", "ledger.tokens.consumed", "beta", Some("application/json"));
    http.send_with("POST", "/v1/events", u, &foreign, br#"{"tokens": 1}"#.to_vec())
        .await
        .problem(403, "forbidden");
    let good = cloudevent("batch-ok", "acme", "ledger.tokens.consumed", json!({"tokens": 1}));
    for not_events in [
        json!([[null, null]]),
        json!([good.clone(), {}]),
        json!([good.clone(), 5]),
        json!([good.clone(), {"specversion": "0.3", "id": "x", "source": "s", "type": "t", "subject": "acme"}]),
        json!([good.clone(), {"specversion": "1.0", "id": "", "source": "s", "type": "t", "subject": "acme"}]),
        json!([good.clone(), {"specversion": "1.0", "id": "x", "source": "s", "type": "t", "subject": "Not A Tenant"}]),
        json!({"not": "an array"}),
    ] {
        let body = serde_json::to_vec(&not_events).unwrap();
        http.send("POST", "/v1/events", u, Some(CE_BATCH), body).await.problem(400, "malformed");
    }
    let one_without_subject =
        json!({"specversion": "1.0", "id": "x", "source": "s", "type": "ledger.tokens.consumed"});
    http.send("POST", "/v1/events", u, Some(CE_ONE), serde_json::to_vec(&one_without_subject).unwrap())
        .await
        .problem(400, "malformed");
    for content_type in [Some("text/plain"), Some("application/json"), None] {
        let body = serde_json::to_vec(&good).unwrap();
        http.send("POST", "/v1/events", u, content_type, body).await.problem(415, "unsupported_media_type");
    }
    assert_eq!(log_head(&http).await, before, "nothing was decided");
    assert_eq!(http.get("/v1/tenants/acme/usage", u).await.body["tokens"]["used"], 40);
}

/// The `Idempotency-Key` header is the body's `idempotency_key`: a resend
/// answers as the first time, another command under the key is a 409, and
/// a header and a body naming different keys is a 409 too (two fields
/// compared). Commands keyed by a field of their own ignore it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idempotency_key_header_keys_a_command() {
    let data = tempfile::tempdir().unwrap();
    let panel = add_key(data.path(), &["--panel"]);
    let admin = add_key(data.path(), &["acme", "admin"]);
    let serve = HttpServe::spawn(data.path(), None);
    let http = Http::new(&serve.base);
    catalog(&http, &panel, &["acme"]).await;
    let a = Some(admin.as_str());
    let seats = |n: u32| serde_json::to_vec(&json!({ "seats": n })).unwrap();
    let keyed = |key: &'static str| [("content-type", "application/json"), ("idempotency-key", key)];
    let path = "/v1/tenants/acme/set_seats";
    let first = http.send_with("POST", path, a, &keyed("k-1"), seats(3)).await;
    assert_eq!((first.status, first.body["duplicate"].clone()), (200, json!(false)), "{:?}", first.body);
    let again = http.send_with("POST", path, a, &keyed("k-1"), seats(3)).await;
    assert_eq!(
        (again.body["duplicate"].clone(), again.body["seq"].clone()),
        (json!(true), first.body["seq"].clone())
    );
    // The same key in the body is the same key.
    let body = serde_json::to_vec(&json!({"seats": 3, "idempotency_key": "k-1"})).unwrap();
    let in_body = http.send("POST", path, a, Some("application/json"), body).await;
    assert_eq!(in_body.body["duplicate"], true, "{:?}", in_body.body);
    http.send_with("POST", path, a, &keyed("k-1"), seats(4)).await.problem(409, "idempotency_conflict");
    let both = serde_json::to_vec(&json!({"seats": 4, "idempotency_key": "k-2"})).unwrap();
    http.send_with("POST", path, a, &keyed("k-3"), both).await.problem(409, "idempotency_conflict");
    http.send_with("POST", path, a, &keyed("has space"), seats(4)).await.problem(400, "malformed");
    assert_eq!(http.get("/v1/tenants/acme/usage", a).await.body["seats"], 3);
    // An upload is keyed by its file: the header changes nothing.
    let upload = serde_json::to_vec(&json!({"file": "f", "bytes": 5})).unwrap();
    let path = "/v1/tenants/acme/upload";
    let first = http.send_with("POST", path, a, &keyed("u-1"), upload.clone()).await;
    assert_eq!(first.body["duplicate"], false, "{:?}", first.body);
    let other_key = http.send_with("POST", path, a, &keyed("u-2"), upload).await;
    assert_eq!(other_key.body["duplicate"], true, "{:?}", other_key.body);
}

/// Every answer carries the security headers, and the console's
/// Content-Security-Policy allows exactly the page's inline script and
/// style, by their hashes, and never `unsafe-inline`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_security_headers() {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};

    let data = tempfile::tempdir().unwrap();
    let serve = HttpServe::spawn(data.path(), None);
    let http = Http::new(&serve.base);
    let page = http.get("/", None).await;
    let mut answers = vec![("GET /", page.clone())];
    for (method, path) in [
        ("GET", "/healthz"),
        ("GET", "/v1/openapi.json"),
        ("GET", "/v1/me"),
        ("GET", "/nowhere"),
        ("DELETE", "/healthz"),
    ] {
        answers.push((path, http.send(method, path, None, None, Vec::new()).await));
    }
    assert_eq!(answers.iter().map(|(_, a)| a.status).collect::<Vec<_>>(), [200, 200, 200, 401, 404, 405]);
    let policy = page.header("content-security-policy").expect("a policy").to_string();
    for (what, answer) in &answers {
        assert_eq!(answer.header("content-security-policy"), Some(policy.as_str()), "{what}");
        assert_eq!(answer.header("x-frame-options"), Some("DENY"), "{what}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"), "{what}");
        assert_eq!(answer.header("referrer-policy"), Some("no-referrer"), "{what}");
    }
    let directives: std::collections::BTreeMap<&str, Vec<&str>> = policy
        .split(';')
        .map(|d| {
            let mut words = d.split_whitespace();
            (words.next().unwrap(), words.collect())
        })
        .collect();
    for (directive, sources) in [
        ("default-src", vec!["'none'"]),
        ("connect-src", vec!["'self'"]),
        ("img-src", vec!["'self'", "data:"]),
        ("frame-ancestors", vec!["'none'"]),
        ("base-uri", vec!["'none'"]),
        ("form-action", vec!["'none'"]),
    ] {
        assert_eq!(directives[directive], sources, "{policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    // The hashes are the page's own inline blocks, every one of them.
    let html = page.body.as_str().unwrap();
    for tag in ["script", "style"] {
        let blocks: Vec<String> = html
            .split(&format!("<{tag}>"))
            .skip(1)
            .map(|rest| rest.split_once(&format!("</{tag}>")).unwrap().0)
            .map(|block| {
                format!(
                    "'sha256-{}'",
                    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(block))
                )
            })
            .collect();
        assert!(!blocks.is_empty(), "the page has an inline {tag}");
        assert_eq!(directives[format!("{tag}-src").as_str()], blocks, "{policy}");
    }
    // The page's icon is a data: URL the policy allows, so a browser asks
    // for no /favicon.ico.
    assert!(html.contains(r#"<link rel="icon" href="data:image/svg+xml,"#), "{html}");
}
