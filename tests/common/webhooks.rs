//! Webhook receivers for the tests: real HTTP servers on random loopback
//! ports that check every signature (the Standard Webhooks scheme written
//! here, apart from the ledger's), and the `ledger` commands the webhook
//! tests run.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

/// What a receiver does with an attempt at a notification.
#[derive(Clone, Copy)]
pub enum Behaviour {
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
pub struct Received {
    pub id: String,
    pub body: Value,
    pub at: Instant,
}

pub struct Hook {
    pub behaviour: Behaviour,
    pub secret: Mutex<Option<Vec<u8>>>,
    pub attempts: Mutex<HashMap<String, u32>>,
    pub received: Mutex<Vec<Received>>,
    pub bad_signatures: Mutex<Vec<String>>,
}

/// A webhook receiver on a random loopback port.
pub struct Receiver {
    pub url: String,
    pub hook: Arc<Hook>,
}

/// `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the secret's
/// decoded bytes, as the scheme defines it.
pub fn expected_signature(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut message = format!("{id}.{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!("v1,{}", STANDARD.encode(ring::hmac::sign(&key, &message).as_ref()))
}

pub async fn receive(
    State(hook): State<Arc<Hook>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
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
    pub async fn start(behaviour: Behaviour) -> Receiver {
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

    pub fn set_secret(&self, secret: &str) {
        let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
        *self.hook.secret.lock().unwrap() = Some(key);
    }

    pub fn received(&self) -> Vec<Received> {
        self.hook.received.lock().unwrap().clone()
    }

    /// Distinct notifications received, by `webhook-id`.
    pub fn ids(&self) -> BTreeMap<String, usize> {
        let mut ids = BTreeMap::new();
        for r in self.received() {
            *ids.entry(r.id).or_default() += 1;
        }
        ids
    }

    pub fn attempts(&self, id: &str) -> u32 {
        self.hook.attempts.lock().unwrap().get(id).copied().unwrap_or(0)
    }

    pub fn assert_signed(&self) {
        assert!(
            self.hook.bad_signatures.lock().unwrap().is_empty(),
            "bad signatures: {:?}",
            self.hook.bad_signatures
        );
    }

    /// Waits until `n` distinct notifications arrived (or fails after `limit`).
    pub async fn wait_for(&self, n: usize, limit: Duration) {
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

/// `ledger ARGS...`: whether it succeeded, its output and its errors.
pub fn ledger(data: &Path, nats: Option<&str>, args: &[&str], input: Option<&str>) -> (bool, String, String) {
    let (code, out, err) = super::cli::ledger(data, nats, args, input);
    (code == 0, out, err)
}

/// `ledger webhooks add URL ARGS...`: the endpoint's id, and the receiver
/// told its secret.
pub fn add_endpoint(data: &Path, nats: Option<&str>, receiver: &Receiver, args: &[&str]) -> String {
    let mut all = vec!["webhooks", "add", receiver.url.as_str()];
    all.extend_from_slice(args);
    let (ok, out, err) = ledger(data, nats, &all, None);
    assert!(ok, "{err}");
    let added: Value = serde_json::from_str(&out).unwrap();
    receiver.set_secret(added["secret"].as_str().unwrap());
    added["id"].as_str().unwrap().to_string()
}

pub const PLAN: &str = r#"{"cmd":"define_plan","plan":{"id":"basic","currency":"USD","price":"5.00","per_seat":true,"storage_quota_gb":"1","monthly_token_limit":1000,"token_overage":"block","addons":[]}}"#;

/// Subscribes `n` tenants (`t0`..): one `subscription.changed` each.
pub fn subscribe(url: &str, data: &Path, first: usize, n: usize) {
    let mut lines = vec![PLAN.to_string()];
    for i in first..first + n {
        lines.push(format!(r#"{{"cmd":"subscribe","tenant":"t{i}","plan":"basic","seats":1}}"#));
    }
    let (ok, out, err) = ledger(data, Some(url), &["apply", "-"], Some(&lines.join("\n")));
    assert!(ok, "{out}{err}");
}

/// The delivery records of an endpoint, as `webhooks deliveries --json`.
pub fn deliveries(data: &Path, nats: Option<&str>, id: &str, failed: bool) -> Vec<Value> {
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
pub async fn deliveries_until(
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
