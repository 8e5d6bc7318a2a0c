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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::serve::{wait_for_service, Serve};
use common::webhooks::{
    add_endpoint, deliveries, deliveries_until, ledger, subscribe, Behaviour, Receiver, PLAN,
};
use common::JetStream;
use futures_util::StreamExt;
use serde_json::{json, Value};

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
    // More than the deliveries in flight at once (32 an endpoint, on each
    // partition's consumer), so some are pending at the kill.
    subscribe(&url, &writer, 0, 200);
    // Some delivered, most pending: kill serve mid-delivery.
    slow.wait_for(3, Duration::from_secs(20)).await;
    serve.kill();
    let before_restart = slow.ids().len();
    assert!(before_restart < 200, "all delivered before the kill; nothing was pending");
    // nats-server goes down and comes back (same store, same port).
    js.server.as_mut().unwrap().restart().unwrap();
    let _serve = Serve::spawn(&url, &serve_data, 3_600_000);
    slow.wait_for(200, Duration::from_secs(60)).await;
    slow.assert_signed();
    // At least once: a notification seen twice was the same one (its id).
    let received = slow.received();
    let mut bodies: HashMap<&str, &Value> = HashMap::new();
    for r in &received {
        if let Some(first) = bodies.insert(&r.id, &r.body) {
            assert_eq!(first, &r.body, "a duplicate is the same notification");
        }
    }
    assert_eq!(slow.ids().len(), 200);
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
