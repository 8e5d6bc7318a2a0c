//! Webhook endpoints as a tenant admin registers them (public destinations
//! of its own tenant only, nothing stored when refused) and the
//! notifications route, against real `ledger serve` processes with
//! `--webhook-allow-hosts 127.0.0.1`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::webhooks::{ledger, subscribe, Behaviour, Receiver, PLAN};
use common::JetStream;
use serde_json::{json, Value};

/// `ledger webhooks list --json` of a ledger: every endpoint stored.
fn listed(data: &Path, nats: Option<&str>) -> Vec<Value> {
    let (ok, out, err) = ledger(data, nats, &["webhooks", "list", "--json"], None);
    assert!(ok, "{err}");
    serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
}

/// Registration over HTTP: a tenant admin's endpoint must be public (a
/// loopback, private or link-local one is refused with nothing stored)
/// unless `serve --webhook-allow-private`; a host off the allowlist is
/// refused for the panel too; a tenant admin cannot see, register for or
/// remove another tenant's endpoints, and a user key manages none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_registers_public_destinations_of_its_own_tenant_only() {
    use common::http::{add_key, Http, HttpServe};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let seed = format!(
        "{PLAN}\n{}\n{}",
        r#"{"cmd":"subscribe","tenant":"acme","plan":"basic","seats":1}"#,
        r#"{"cmd":"subscribe","tenant":"beta","plan":"basic","seats":1}"#
    );
    let (ok, _, err) = ledger(&data, None, &["apply", "-"], Some(&seed));
    assert!(ok, "{err}");
    let panel = add_key(&data, &["--panel"]);
    let acme = add_key(&data, &["acme", "admin"]);
    let user = add_key(&data, &["acme", "user"]);
    let beta = add_key(&data, &["beta", "admin"]);
    let (p, a, u, b) = (Some(panel.as_str()), Some(acme.as_str()), Some(user.as_str()), Some(beta.as_str()));

    // No allowlist and no --webhook-allow-private: a tenant's endpoint must
    // be public. Nothing here is looked up or connected to: each refused
    // host is an address.
    let mut strict = HttpServe::spawn_with(&data, None, &[]);
    let http = Http::new(&strict.base);
    for url in
        ["http://127.0.0.1:9/hook", "http://10.0.0.1/hook", "http://[::1]:8080/x", "http://169.254.169.254/"]
    {
        let refused = http.post("/v1/webhooks", a, &json!({ "url": url })).await;
        refused.problem(403, "webhook_destination_refused");
    }
    let public = json!({"url": "http://93.184.216.34/hook"});
    http.post("/v1/webhooks", u, &public).await.problem(403, "forbidden");
    http.get("/v1/webhooks", u).await.problem(403, "forbidden");
    let theirs = json!({"url": "http://93.184.216.34/hook", "tenant": "beta"});
    http.post("/v1/webhooks", a, &theirs).await.problem(403, "forbidden");
    for malformed in [
        json!({"url": "http://93.184.216.34/hook", "types": ["usage.denied", "nope"]}),
        json!({"url": "http://93.184.216.34/hook", "retries": ["8d"]}),
        json!({"url": "http://93.184.216.34/hook", "retries": vec!["1s"; 21]}),
        json!({"url": "ftp://93.184.216.34/hook"}),
        json!({"url": "http://93.184.216.34/hook", "secret": "whsec_mine"}),
        json!({"tenant": "acme"}),
    ] {
        http.post("/v1/webhooks", a, &malformed).await.problem(400, "malformed");
    }
    for key in [a, p] {
        let none = http.get("/v1/webhooks", key).await;
        assert_eq!((none.status, none.body.clone()), (200, json!({"webhooks": []})));
    }
    assert!(listed(&data, None).is_empty(), "nothing refused was stored");
    strict.kill();

    // Webhooks reach 127.0.0.1 only, and tenants may register private
    // destinations: acme's is taken, any other host is refused, the
    // panel's too.
    let open = HttpServe::spawn_with(
        &data,
        None,
        &["--webhook-allow-hosts", "127.0.0.1", "--webhook-allow-private"],
    );
    let http = Http::new(&open.base);
    let added =
        http.post("/v1/webhooks", a, &json!({"url": "http://127.0.0.1:9/acme", "retries": ["1m"]})).await;
    assert_eq!(added.status, 200, "{:?}", added.body);
    assert!(added.body["secret"].as_str().unwrap().starts_with("whsec_"));
    let acme_id = added.body["id"].as_str().unwrap().to_string();
    http.post("/v1/webhooks", a, &json!({"url": "http://10.0.0.1/acme"}))
        .await
        .problem(403, "webhook_destination_refused");
    http.post("/v1/webhooks", p, &json!({"url": "https://hooks.example.com/ledger"}))
        .await
        .problem(403, "webhook_destination_refused");
    let beta_id = http.post("/v1/webhooks", b, &json!({"url": "http://127.0.0.1:9/beta"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let every_id = http.post("/v1/webhooks", p, &json!({"url": "http://127.0.0.1:9/all"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();

    // acme's admin sees acme's endpoint only, and cannot remove the others
    // (404: it learns nothing of them); the panel sees every one.
    let mine = http.get("/v1/webhooks", a).await.body;
    assert_eq!(mine["webhooks"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(
        (mine["webhooks"][0]["id"].clone(), mine["webhooks"][0]["tenant"].clone()),
        (json!(acme_id), json!("acme"))
    );
    assert!(mine["webhooks"][0].get("secrets").is_none() && !mine.to_string().contains("whsec_"));
    for other in [&beta_id, &every_id] {
        http.send("DELETE", &format!("/v1/webhooks/{other}"), a, None, Vec::new())
            .await
            .problem(404, "not_found");
    }
    http.send("DELETE", &format!("/v1/webhooks/{acme_id}"), u, None, Vec::new())
        .await
        .problem(403, "forbidden");
    assert_eq!(http.get("/v1/webhooks", p).await.body["webhooks"].as_array().unwrap().len(), 3);
    let removed = http.send("DELETE", &format!("/v1/webhooks/{acme_id}"), a, None, Vec::new()).await;
    assert_eq!((removed.status, removed.body.clone()), (200, json!({"id": acme_id, "removed": true})));
    http.send("DELETE", &format!("/v1/webhooks/{acme_id}"), a, None, Vec::new())
        .await
        .problem(404, "not_found");
    let left: Vec<Value> = listed(&data, None).iter().map(|e| e["id"].clone()).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&json!(beta_id)) && left.contains(&json!(every_id)));
}

/// `GET /v1/tenants/{tenant}/notifications` on a JetStream ledger: the
/// tenant's thresholds (the defaults, then what it set), and a threshold
/// crossing with how it went to each endpoint: delivered to a receiver,
/// retrying at a port where nothing listens. A tenant key sees its own
/// tenant's endpoints only; another tenant's key sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_notifications_route_shows_a_crossing_and_how_it_went() {
    use common::http::{add_key_to, Http, HttpServe};
    let js = JetStream::new();
    let url = js.url();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("serve");
    subscribe(&url, &data, 0, 2);
    let panel = add_key_to(&data, Some(&url), &["--panel"]);
    let admin = add_key_to(&data, Some(&url), &["t0", "admin"]);
    let user = add_key_to(&data, Some(&url), &["t0", "user"]);
    let other = add_key_to(&data, Some(&url), &["t1", "user"]);
    let (p, a, u) = (Some(panel.as_str()), Some(admin.as_str()), Some(user.as_str()));
    let serve = HttpServe::spawn_with(
        &data,
        Some(&url),
        &["--webhook-allow-hosts", "127.0.0.1", "--webhook-allow-private"],
    );
    let http = Http::new(&serve.base);
    let route = "/v1/tenants/t0/notifications";

    let before = http.get(route, u).await;
    assert_eq!(before.status, 200, "{:?}", before.body);
    assert_eq!(before.body["alerts"], json!({"tokens": [80, 100], "storage": [80, 100]}));
    let subscribed = &before.body["notifications"];
    assert_eq!(subscribed.as_array().unwrap().len(), 1, "{subscribed}");
    assert_eq!(subscribed[0]["type"], "subscription.changed");

    let receiver = Receiver::start(Behaviour::Answer).await;
    let added = http
        .post("/v1/webhooks", a, &json!({"url": receiver.url, "types": ["usage.threshold_crossed"]}))
        .await;
    assert_eq!(added.status, 200, "{:?}", added.body);
    receiver.set_secret(added.body["secret"].as_str().unwrap());
    let delivered_to = added.body["id"].as_str().unwrap().to_string();
    let nowhere = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/gone", listener.local_addr().unwrap())
    };
    let failing = http.post("/v1/webhooks", a, &json!({"url": nowhere, "retries": ["1m"]})).await;
    let failing_to = failing.body["id"].as_str().unwrap().to_string();
    let operators = http.post("/v1/webhooks", p, &json!({"url": nowhere})).await;
    let operators = operators.body["id"].as_str().unwrap().to_string();

    // 900 of t0's 1,000 tokens: the 80% threshold.
    let used = http.post("/v1/tenants/t0/consume_tokens", u, &json!({"request": "big", "tokens": 900})).await;
    assert_eq!(used.status, 200, "{:?}", used.body);
    receiver.wait_for(1, Duration::from_secs(20)).await;
    receiver.assert_signed();
    let deadline = Instant::now() + Duration::from_secs(20);
    let crossing = loop {
        let answer = http.get(route, u).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let newest = answer.body["notifications"][0].clone();
        let outcomes: Vec<Value> =
            newest["deliveries"].as_array().unwrap().iter().map(|d| d["outcome"].clone()).collect();
        if outcomes == [json!("delivered"), json!("retrying")]
            || outcomes == [json!("retrying"), json!("delivered")]
        {
            break newest;
        }
        assert!(Instant::now() < deadline, "{}", answer.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(crossing["type"], "usage.threshold_crossed");
    assert_eq!(
        (crossing["data"]["threshold"].clone(), crossing["data"]["used"].clone()),
        (json!(80), json!(900))
    );
    let at = |endpoint: &str| {
        crossing["deliveries"].as_array().unwrap().iter().find(|d| d["endpoint"] == endpoint).unwrap().clone()
    };
    let delivered = at(&delivered_to);
    assert_eq!(
        (delivered["attempts"].clone(), delivered["status"].clone(), delivered["error"].clone()),
        (json!(1), json!(200), Value::Null)
    );
    assert!(delivered["at"].as_str().is_some());
    let retrying = at(&failing_to);
    assert_eq!((retrying["status"].clone(), retrying["attempts"].clone()), (Value::Null, json!(1)));
    assert!(retrying["error"].as_str().is_some_and(|e| !e.is_empty()), "{retrying}");
    // What the receiver got is this notification, at this endpoint.
    let id = crossing["id"].as_str().unwrap();
    assert_eq!(receiver.ids().into_keys().collect::<Vec<_>>(), [format!("msg_{id}_{delivered_to}")]);
    // The operator's endpoint for every tenant: the panel sees it, t0 not.
    assert!(!crossing.to_string().contains(&operators));
    let all = http.get(route, p).await.body;
    let seen: Vec<Value> = all["notifications"][0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["endpoint"].clone())
        .collect();
    assert!(seen.contains(&json!(operators)) && seen.len() == 3, "{all}");
    // The subscription came before any endpoint: none receives it.
    assert_eq!(all["notifications"][1]["type"], "subscription.changed");
    assert_eq!(all["notifications"][1]["deliveries"], json!([]));

    let alerts = json!({"tokens": [50, 95], "storage": []});
    assert_eq!(http.post("/v1/tenants/t0/set_usage_alerts", a, &alerts).await.status, 200);
    assert_eq!(http.get(route, u).await.body["alerts"], alerts);
    http.get(route, Some(&other)).await.problem(403, "forbidden");
    http.get("/v1/tenants/t0/notifications?limit=5", u).await.problem(400, "malformed");
}
