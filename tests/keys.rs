//! API keys over HTTP: made, listed and revoked by the panel through real
//! `ledger serve --http` processes, and on a JetStream ledger shared by
//! every `serve` (a revoke reaches the others within seconds).

mod common;

use common::cli::ledger;
use common::http::{add_key, add_key_to, Http, HttpServe};
use serde_json::{json, Value};

/// Keys over HTTP with the panel key: made (shown once), used, listed
/// (never a key or its hash), revoked (401 at once); a role and a tenant
/// that do not go together are 400 with nothing stored; a tenant key may
/// not manage keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_made_listed_and_revoked_over_http() {
    let data = tempfile::tempdir().unwrap();
    let panel = add_key(data.path(), &["--panel"]);
    let serve = HttpServe::spawn(data.path(), None);
    let http = Http::new(&serve.base);
    let p = Some(panel.as_str());
    let made = http.post("/v1/keys", p, &json!({"tenant": "acme", "role": "admin"})).await;
    assert_eq!(made.status, 200, "{:?}", made.body);
    let (id, key) = (made.body["id"].as_str().unwrap(), made.body["key"].as_str().unwrap().to_string());
    assert_eq!((made.body["tenant"].clone(), made.body["role"].clone()), (json!("acme"), json!("admin")));
    assert!(key.starts_with(&format!("lk_{id}_")), "{key}");
    let me = http.get("/v1/me", Some(&key)).await;
    assert_eq!((me.status, me.body["actor"].clone()), (200, json!("acme:admin")), "{:?}", me.body);
    let second_panel = http.post("/v1/keys", p, &json!({"role": "panel"})).await;
    assert_eq!(second_panel.body["tenant"], Value::Null, "{:?}", second_panel.body);

    let listed = http.get("/v1/keys", p).await;
    assert_eq!(listed.status, 200);
    let keys = listed.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    let entry = keys.iter().find(|k| k["id"] == id).unwrap();
    assert_eq!(entry.as_object().unwrap().keys().collect::<Vec<_>>(), ["created", "id", "role", "tenant"]);
    assert!(!listed.body.to_string().contains(&key[16..]), "no key, nor any of its secret, is listed");

    // Refusals store nothing.
    for body in [
        json!({"role": "panel", "tenant": "acme"}),
        json!({"role": "user"}),
        json!({"role": "user", "tenant": null}),
        json!({"role": "root", "tenant": "acme"}),
        json!({"role": "user", "tenant": "Not A Tenant"}),
        json!({"role": "user", "tenant": "acme", "key": "lk_mine"}),
    ] {
        http.post("/v1/keys", p, &body).await.problem(400, "malformed");
    }
    http.get("/v1/keys", Some(&key)).await.problem(403, "forbidden");
    http.post("/v1/keys", Some(&key), &json!({"role": "panel"})).await.problem(403, "forbidden");
    http.send("DELETE", &format!("/v1/keys/{id}"), Some(&key), None, Vec::new())
        .await
        .problem(403, "forbidden");
    assert_eq!(http.get("/v1/keys", p).await.body["keys"].as_array().unwrap().len(), 3);

    // Revoked: refused at once, gone from every list, and a second revoke
    // finds nothing.
    let revoked = http.send("DELETE", &format!("/v1/keys/{id}"), p, None, Vec::new()).await;
    assert_eq!((revoked.status, revoked.body.clone()), (200, json!({"id": id, "revoked": true})));
    http.get("/v1/me", Some(&key)).await.problem(401, "unauthorized");
    http.send("DELETE", &format!("/v1/keys/{id}"), p, None, Vec::new()).await.problem(404, "not_found");
    http.send("DELETE", "/v1/keys/not-an-id", p, None, Vec::new()).await.problem(404, "not_found");
    let (_, cli, _) = ledger(data.path(), None, &["keys", "list", "--json"], None);
    let cli: Value = serde_json::from_str(&cli).unwrap();
    assert_eq!(cli.as_array().unwrap().len(), 2, "{cli}");
    assert!(cli.as_array().unwrap().iter().all(|k| k["id"] != id));
}

/// A JetStream ledger keeps its keys on the server: two `serve --http`
/// instances with data directories of their own know the same keys; a key
/// made through one works at the other, and one revoked through one is
/// refused by the other within seconds. An old `keys.json` is imported
/// once, into a bucket that never held a key, so a revoke is never undone
/// by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_serve_of_a_jetstream_ledger_knows_the_same_keys() {
    let nats = common::JetStream::new();
    let url = nats.url();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Added before keys moved to the server: in the data directory's file.
    let old = add_key(one.path(), &["acme", "user"]);
    let mut serve_a = HttpServe::spawn(one.path(), Some(&url));
    let panel = add_key_to(two.path(), Some(&url), &["--panel"]);
    assert!(!two.path().join("keys.json").exists(), "a JetStream ledger's key is on the server");
    let serve_b = HttpServe::spawn(two.path(), Some(&url));
    let (a, b) = (Http::new(&serve_a.base), Http::new(&serve_b.base));
    assert_eq!(b.get("/v1/me", Some(&old)).await.status, 200, "the old file's key was imported");
    let made = a.post("/v1/keys", Some(&panel), &json!({"tenant": "acme", "role": "user"})).await;
    assert_eq!(made.status, 200, "{:?}", made.body);
    let (id, key) =
        (made.body["id"].as_str().unwrap().to_string(), made.body["key"].as_str().unwrap().to_string());
    let me = b.get("/v1/me", Some(&key)).await;
    assert_eq!((me.status, me.body["id"].clone()), (200, json!(id)), "{:?}", me.body);
    let (_, listed, _) = ledger(two.path(), Some(&url), &["keys", "list", "--json"], None);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");

    let revoked = a.send("DELETE", &format!("/v1/keys/{id}"), Some(&panel), None, Vec::new()).await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    a.get("/v1/me", Some(&key)).await.problem(401, "unauthorized");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let answer = b.get("/v1/me", Some(&key)).await;
        if answer.status == 401 {
            answer.problem(401, "unauthorized");
            break;
        }
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert!(
            std::time::Instant::now() < deadline,
            "the other serve still takes the revoked key after 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The imported key, revoked with the command line: a serve started
    // again on the directory whose file still holds it does not bring it
    // back.
    let old_id = &old[3..15];
    let (code, _, err) = ledger(one.path(), Some(&url), &["keys", "revoke", old_id], None);
    assert!(code == 0, "{err}");
    serve_a.kill();
    let again = HttpServe::spawn(one.path(), Some(&url));
    let again = Http::new(&again.base);
    again.get("/v1/me", Some(&old)).await.problem(401, "unauthorized");
    assert!(std::fs::read_to_string(one.path().join("keys.json")).unwrap().contains(old_id));
    assert_eq!(again.get("/v1/me", Some(&panel)).await.status, 200);
}
