//! Webhooks end to end, with real parts: a real nats-server, real `ledger
//! serve` processes (every one with `--webhook-allow-hosts 127.0.0.1`), and
//! real HTTP receivers on random loopback ports that check every signature
//! (an implementation of the Standard Webhooks scheme written here, apart
//! from the ledger's; the Python suite checks with the `standardwebhooks`
//! package too). Every notification arrives; a duplicate only ever repeats
//! a `webhook-id`; none is lost when the receiver fails or hangs, when a
//! `serve` is killed, or when nats-server restarts; with two `serve`
//! instances each goes out once per endpoint.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::serve::{wait_for_service, Serve};
use common::JetStream;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// What a receiver does with an attempt at a notification.
#[derive(Clone, Copy)]
enum Behaviour {
    /// 200 at once.
    Answer,
    /// 500 to the first `n` attempts at each notification, then 200.
    FailFirst(u32),
    /// No answer for this long to the first attempt at each, then 200.
    HangFirst(Duration),
    /// 200 after this long, every time.
    Slow(Duration),
}

#[derive(Debug, Clone)]
struct Received {
    id: String,
    body: Value,
    at: Instant,
}

struct Hook {
    behaviour: Behaviour,
    secret: Mutex<Option<Vec<u8>>>,
    attempts: Mutex<HashMap<String, u32>>,
    received: Mutex<Vec<Received>>,
    bad_signatures: Mutex<Vec<String>>,
}

/// A webhook receiver on a random loopback port.
struct Receiver {
    url: String,
    hook: Arc<Hook>,
}

/// `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the secret's
/// decoded bytes, as the scheme defines it.
fn expected_signature(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut message = format!("{id}.{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!("v1,{}", STANDARD.encode(ring::hmac::sign(&key, &message).as_ref()))
}

async fn receive(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (id, timestamp, signatures) =
        (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    // Verified as a receiver would: a current timestamp, one signature of
    // the (space separated) list under the secret.
    let key = hook.secret.lock().unwrap().clone().expect("the secret is set before anything is sent");
    let fresh = timestamp.parse::<i64>().is_ok_and(|t| (t - chrono::Utc::now().timestamp()).abs() < 300);
    let expected = expected_signature(&key, &id, &timestamp, &body);
    if !fresh || !signatures.split(' ').any(|s| s == expected) {
        hook.bad_signatures.lock().unwrap().push(id.clone());
        return StatusCode::UNAUTHORIZED;
    }
    let attempt = {
        let mut attempts = hook.attempts.lock().unwrap();
        let n = attempts.entry(id.clone()).or_default();
        *n += 1;
        *n
    };
    match hook.behaviour {
        Behaviour::FailFirst(n) if attempt <= n => return StatusCode::INTERNAL_SERVER_ERROR,
        Behaviour::HangFirst(hang) if attempt == 1 => tokio::time::sleep(hang).await,
        Behaviour::Slow(pause) => tokio::time::sleep(pause).await,
        _ => {}
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    hook.received.lock().unwrap().push(Received { id, body, at: Instant::now() });
    StatusCode::OK
}

impl Receiver {
    async fn start(behaviour: Behaviour) -> Receiver {
        let hook = Arc::new(Hook {
            behaviour,
            secret: Mutex::new(None),
            attempts: Mutex::new(HashMap::new()),
            received: Mutex::new(Vec::new()),
            bad_signatures: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(hook.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, hook }
    }

    fn set_secret(&self, secret: &str) {
        let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
        *self.hook.secret.lock().unwrap() = Some(key);
    }

    fn received(&self) -> Vec<Received> {
        self.hook.received.lock().unwrap().clone()
    }

    /// Distinct notifications received, by `webhook-id`.
    fn ids(&self) -> BTreeMap<String, usize> {
        let mut ids = BTreeMap::new();
        for r in self.received() {
            *ids.entry(r.id).or_default() += 1;
        }
        ids
    }

    fn attempts(&self, id: &str) -> u32 {
        self.hook.attempts.lock().unwrap().get(id).copied().unwrap_or(0)
    }

    fn assert_signed(&self) {
        assert!(
            self.hook.bad_signatures.lock().unwrap().is_empty(),
            "bad signatures: {:?}",
            self.hook.bad_signatures
        );
    }

    /// Waits until `n` distinct notifications arrived (or fails after `limit`).
    async fn wait_for(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.ids().len() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} notifications after {limit:?}: {:?}",
                self.ids().len(),
                self.ids()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn ledger(data: &Path, nats: Option<&str>, args: &[&str], input: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"));
    command.arg("--data").arg(data).env("LEDGER_LOG", "warn").env_remove("LEDGER_NATS");
    if let Some(url) = nats {
        command.arg("--nats").arg(url);
    }
    let mut child = command
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.unwrap_or("").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// `ledger webhooks add URL ARGS...`: the endpoint's id, and the receiver
/// told its secret.
fn add_endpoint(data: &Path, nats: Option<&str>, receiver: &Receiver, args: &[&str]) -> String {
    let mut all = vec!["webhooks", "add", receiver.url.as_str()];
    all.extend_from_slice(args);
    let (ok, out, err) = ledger(data, nats, &all, None);
    assert!(ok, "{err}");
    let added: Value = serde_json::from_str(&out).unwrap();
    receiver.set_secret(added["secret"].as_str().unwrap());
    added["id"].as_str().unwrap().to_string()
}

const PLAN: &str = r#"{"cmd":"define_plan","plan":{"id":"basic","currency":"USD","price":"5.00","per_seat":true,"storage_quota_gb":"1","monthly_token_limit":1000,"token_overage":"block","addons":[]}}"#;

/// Subscribes `n` tenants (`t0`..): one `subscription.changed` each.
fn subscribe(url: &str, data: &Path, first: usize, n: usize) {
    let mut lines = vec![PLAN.to_string()];
    for i in first..first + n {
        lines.push(format!(r#"{{"cmd":"subscribe","tenant":"t{i}","plan":"basic","seats":1}}"#));
    }
    let (ok, out, err) = ledger(data, Some(url), &["apply", "-"], Some(&lines.join("\n")));
    assert!(ok, "{out}{err}");
}

/// The delivery records of an endpoint, as `webhooks deliveries --json`.
fn deliveries(data: &Path, nats: Option<&str>, id: &str, failed: bool) -> Vec<Value> {
    let mut args = vec!["webhooks", "deliveries", id, "--json"];
    if failed {
        args.push("--failed");
    }
    let (ok, out, err) = ledger(data, nats, &args, None);
    assert!(ok, "{err}");
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Waits until the endpoint's records satisfy `done` (they are written a
/// batch at a time, a moment after the attempts), and returns them.
async fn deliveries_until(
    data: &Path,
    nats: Option<&str>,
    id: &str,
    failed: bool,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = deliveries(data, nats, id, failed);
        if done(&records) {
            return records;
        }
        assert!(Instant::now() < deadline, "{records:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_notification_arrives_signed_and_on_nats() {
    let js = JetStream::new();
    let url = js.url();
    let dir = tempfile::tempdir().unwrap();
    let (serve_data, writer) = (dir.path().join("serve"), dir.path().join("writer"));
    // The stream exists before the endpoint: created by a first apply.
    ledger(&writer, Some(&url), &["apply", "-"], Some(PLAN));
    let receiver = Receiver::start(Behaviour::Answer).await;
    let id = add_endpoint(
        &serve_data,
        Some(&url),
        &receiver,
        &["--types", "subscription.changed,usage.threshold_crossed"],
    );
    let _serve = Serve::spawn(&url, &serve_data, 3_600_000);
    wait_for_service(&url, 1).await;
    let nats = async_nats::connect(&url).await.unwrap();
    let mut on_nats = nats.subscribe("ledger.notify.>").await.unwrap();
    subscribe(&url, &writer, 0, 12);
    // A threshold crossing too: 900 of t0's 1,000 tokens.
    let tokens = r#"{"actor":"t0:user","cmd":"consume_tokens","tenant":"t0","request":"big","tokens":900}"#;
    assert!(ledger(&writer, Some(&url), &["apply", "-"], Some(tokens)).0);
    receiver.wait_for(13, Duration::from_secs(20)).await;
    receiver.assert_signed();
    let received = receiver.received();
    let kinds: Vec<&str> = received.iter().map(|r| r.body["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "subscription.changed").count(), 12, "{kinds:?}");
    let crossing = received.iter().find(|r| r.body["type"] == "usage.threshold_crossed").unwrap();
    assert_eq!(
        (
            crossing.body["data"]["tenant"].clone(),
            crossing.body["data"]["threshold"].clone(),
            crossing.body["data"]["used"].clone()
        ),
        (json!("t0"), json!(80), json!(900))
    );
    for r in &received {
        assert!(r.body["data"]["position"].as_u64().is_some(), "{}", r.body);
        assert!(r.id.starts_with("msg_") && r.id.ends_with(&id), "{}", r.id);
    }
    assert!(receiver.ids().values().all(|n| *n == 1), "{:?}", receiver.ids());
    // The same notifications on NATS, with their ids in a header.
    let mut seen = Vec::new();
    while seen.len() < 13 {
        let message = tokio::time::timeout(Duration::from_secs(10), on_nats.next()).await.unwrap().unwrap();
        let body: Value = serde_json::from_slice(&message.payload).unwrap();
        let header = message.headers.as_ref().and_then(|h| h.get("webhook-id")).unwrap().to_string();
        assert!(message
            .subject
            .starts_with(&format!("ledger.notify.{}.", body["data"]["tenant"].as_str().unwrap())));
        seen.push((header, body["type"].as_str().unwrap().to_string()));
    }
    assert_eq!(seen.iter().filter(|(_, k)| k == "usage.threshold_crossed").count(), 1);
    // Every delivery is on record.
    deliveries_until(&serve_data, Some(&url), &id, false, |records| {
        records.iter().filter(|r| r["outcome"] == "delivered").count() == 13
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_and_hanging_receivers_get_every_notification_and_delay_no_other() {
    let js = JetStream::new();
    let url = js.url();
    let dir = tempfile::tempdir().unwrap();
    let (serve_data, writer) = (dir.path().join("serve"), dir.path().join("writer"));
    ledger(&writer, Some(&url), &["apply", "-"], Some(PLAN));
    let flaky = Receiver::start(Behaviour::FailFirst(2)).await;
    let hanging = Receiver::start(Behaviour::HangFirst(Duration::from_secs(13))).await;
    let prompt = Receiver::start(Behaviour::Answer).await;
    let flaky_id = add_endpoint(&serve_data, Some(&url), &flaky, &["--retries", "300ms,300ms,300ms"]);
    let hanging_id = add_endpoint(&serve_data, Some(&url), &hanging, &["--retries", "1s"]);
    add_endpoint(&serve_data, Some(&url), &prompt, &[]);
    let _serve = Serve::spawn(&url, &serve_data, 3_600_000);
    wait_for_service(&url, 1).await;
    let started = Instant::now();
    subscribe(&url, &writer, 0, 5);
    // Another endpoint hanging does not hold this one up.
    prompt.wait_for(5, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    flaky.wait_for(5, Duration::from_secs(20)).await;
    for id in flaky.ids().keys() {
        assert_eq!(flaky.attempts(id), 3, "two 500s, then delivered: {id}");
    }
    // The hanging one is given up after 10 s, and tried again.
    hanging.wait_for(5, Duration::from_secs(30)).await;
    for receiver in [&flaky, &hanging, &prompt] {
        receiver.assert_signed();
        assert!(receiver.ids().values().all(|n| *n == 1), "each delivered once: {:?}", receiver.ids());
    }
    deliveries_until(&serve_data, Some(&url), &hanging_id, false, |records| {
        records
            .iter()
            .any(|r| r["outcome"] == "retrying" && r["error"].as_str().unwrap_or("").contains("10 s"))
    })
    .await;
    deliveries_until(&serve_data, Some(&url), &flaky_id, false, |records| {
        records.iter().filter(|r| r["status"] == 500).count() == 10
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notification_past_its_retries_is_marked_failed_and_sent_again_on_request() {
    let js = JetStream::new();
    let url = js.url();
    let dir = tempfile::tempdir().unwrap();
    let (serve_data, writer) = (dir.path().join("serve"), dir.path().join("writer"));
    ledger(&writer, Some(&url), &["apply", "-"], Some(PLAN));
    let broken = Receiver::start(Behaviour::FailFirst(3)).await;
    let id = add_endpoint(&serve_data, Some(&url), &broken, &["--retries", "200ms"]);
    let _serve = Serve::spawn(&url, &serve_data, 3_600_000);
    wait_for_service(&url, 1).await;
    subscribe(&url, &writer, 0, 2);
    // Two attempts each, both 500: failed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while deliveries(&serve_data, Some(&url), &id, true).len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", deliveries(&serve_data, Some(&url), &id, false));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(broken.ids().is_empty());
    // The third attempt of each still fails (a retry is one attempt, and
    // is failed again); after a second retry, the fourth lands.
    let attempts = |broken: &Receiver| -> u32 { broken.hook.attempts.lock().unwrap().values().sum() };
    for (round, total) in [(0, 6), (1, 8)] {
        let (ok, _, err) = ledger(&serve_data, Some(&url), &["webhooks", "retry", &id], None);
        assert!(ok && err.contains("2 failed"), "{round}: {err}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while attempts(&broken) < total {
            assert!(Instant::now() < deadline, "round {round}: {} attempts", attempts(&broken));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The retry's outcome is on record before the next one reads it.
        let deadline = Instant::now() + Duration::from_secs(20);
        while round == 0 && deliveries(&serve_data, Some(&url), &id, false).len() < 6 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    broken.wait_for(2, Duration::from_secs(20)).await;
    // Nothing failed any more, once the last attempts are on record.
    deliveries_until(&serve_data, Some(&url), &id, true, <[Value]>::is_empty).await;
    // A test notification: one attempt, signed, on record (this receiver
    // fails every notification's first three attempts).
    let (ok, _, err) = ledger(&serve_data, Some(&url), &["webhooks", "test", &id], None);
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = deliveries(&serve_data, Some(&url), &id, false);
        if let Some(test) = records.iter().find(|r| r["kind"] == "webhook.test") {
            assert_eq!(
                (test["status"].clone(), test["outcome"].clone()),
                (json!(500), json!("failed")),
                "{test}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{records:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(broken.hook.attempts.lock().unwrap().keys().any(|k| k.starts_with("msg_test_")));
    broken.assert_signed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_when_serve_is_killed_and_nats_server_restarts() {
    let mut js = JetStream::new();
    let url = js.url();
    let dir = tempfile::tempdir().unwrap();
    let (serve_data, writer) = (dir.path().join("serve"), dir.path().join("writer"));
    ledger(&writer, Some(&url), &["apply", "-"], Some(PLAN));
    let slow = Receiver::start(Behaviour::Slow(Duration::from_millis(400))).await;
    let id = add_endpoint(
        &serve_data,
        Some(&url),
        &slow,
        &["--retries", "500ms,500ms,500ms,500ms,500ms,1s,1s,1s,1s,1s"],
    );
    let mut serve = Serve::spawn(&url, &serve_data, 3_600_000);
    wait_for_service(&url, 1).await;
    subscribe(&url, &writer, 0, 40);
    // Some delivered, most pending: kill serve mid-delivery.
    slow.wait_for(3, Duration::from_secs(20)).await;
    serve.kill();
    let before_restart = slow.ids().len();
    assert!(before_restart < 40, "all delivered before the kill; nothing was pending");
    // nats-server goes down and comes back (same store, same port).
    js.server.as_mut().unwrap().restart().unwrap();
    let _serve = Serve::spawn(&url, &serve_data, 3_600_000);
    slow.wait_for(40, Duration::from_secs(60)).await;
    slow.assert_signed();
    // At least once: a notification seen twice was the same one (its id).
    let received = slow.received();
    let mut bodies: HashMap<&str, &Value> = HashMap::new();
    for r in &received {
        if let Some(first) = bodies.insert(&r.id, &r.body) {
            assert_eq!(first, &r.body, "a duplicate is the same notification");
        }
    }
    assert_eq!(slow.ids().len(), 40);
    let _ = id;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_serve_instances_deliver_each_notification_once_per_endpoint() {
    let js = JetStream::new();
    let url = js.url();
    let dir = tempfile::tempdir().unwrap();
    let writer = dir.path().join("writer");
    ledger(&writer, Some(&url), &["apply", "-"], Some(PLAN));
    let (a, b) = (Receiver::start(Behaviour::Answer).await, Receiver::start(Behaviour::Answer).await);
    let registrar = dir.path().join("registrar");
    add_endpoint(&registrar, Some(&url), &a, &[]);
    add_endpoint(&registrar, Some(&url), &b, &[]);
    let _serves: Vec<Serve> =
        ["s1", "s2"].iter().map(|d| Serve::spawn(&url, &dir.path().join(d), 3_600_000)).collect();
    wait_for_service(&url, 2).await;
    subscribe(&url, &writer, 0, 60);
    a.wait_for(60, Duration::from_secs(30)).await;
    b.wait_for(60, Duration::from_secs(30)).await;
    // Settle: nothing more arrives.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for receiver in [&a, &b] {
        receiver.assert_signed();
        assert_eq!(receiver.received().len(), 60, "each notification once: {:?}", receiver.ids());
    }
    // Both endpoints got the same notifications (their ids differ only by
    // the endpoint).
    let strip = |r: &Receiver| -> Vec<String> {
        r.ids()
            .keys()
            .map(|id| id.rsplit_once('_').unwrap().0.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    assert_eq!(strip(&a), strip(&b));
    let _ = a.received().iter().map(|r| r.at).max();
}

/// An embedded ledger delivers from its one `serve`, and picks up where it
/// was after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_log_delivers_too_and_resumes_after_a_restart() {
    use common::http::{add_key, Http, HttpServe};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let (ok, _, err) = ledger(&data, None, &["apply", "-"], Some(PLAN));
    assert!(ok, "{err}");
    let receiver = Receiver::start(Behaviour::FailFirst(1)).await;
    add_endpoint(&data, None, &receiver, &["--retries", "300ms"]);
    let panel = add_key(&data, &["--panel"]);
    let subscribe = |http: Http, tenants: std::ops::Range<usize>| {
        let panel = panel.clone();
        async move {
            for i in tenants {
                let body = json!({"tenant": format!("e{i}"), "plan": "basic", "seats": 1});
                let answer = http.post("/v1/admin/subscribe", Some(&panel), &body).await;
                assert_eq!(answer.status, 200, "{:?}", answer.body);
            }
        }
    };
    let mut serve = HttpServe::spawn(&data, None);
    subscribe(Http::new(&serve.base), 0..5).await;
    receiver.wait_for(5, Duration::from_secs(20)).await;
    let before: Vec<String> = receiver.ids().into_keys().collect();
    serve.kill();
    let serve = HttpServe::spawn(&data, None);
    subscribe(Http::new(&serve.base), 5..8).await;
    receiver.wait_for(8, Duration::from_secs(20)).await;
    // The deliveries are counted, by outcome, in /metrics.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = Http::new(&serve.base).get("/metrics", None).await.body;
        let text = metrics.as_str().unwrap_or_default().to_string();
        let counted = |outcome: &str| {
            text.lines().any(|l| {
                l.starts_with("ledger_webhook_deliveries_total{")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
        };
        if counted("delivered")
            && counted("retrying")
            && text.contains("ledger_webhook_oldest_undelivered_seconds{")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver.assert_signed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Killed right after a delivery, serve may not have saved it: that one
    // may come again, with its id (at least once). The rest, once each.
    for (id, n) in receiver.ids() {
        assert!(n == 1 || (n == 2 && before.contains(&id)), "{id}: {n}");
    }
}

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
