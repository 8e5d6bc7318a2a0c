//! The spec's Idempotency paragraph for commands without a key of their
//! own: `idempotency_key` (over HTTP the `Idempotency-Key` header) makes a
//! resend answer as the first time (`duplicate: true`, the first `seq`,
//! nothing appended) and another command under the key a conflict, for the
//! tenant's (or the catalog's) whole history: on both backends, through
//! `ledger apply` and the NATS service, from memory, from the views' key
//! buckets, and across two writers on one stream.

mod common;

use std::path::Path;

use common::cli::ledger;
use common::serve::{wait_for_service, Serve};
use common::JetStream;
use serde_json::{json, Value};

/// `ledger apply -` of `lines`: the answers, in order.
fn apply(data: &Path, nats: Option<&str>, lines: &[Value]) -> Vec<Value> {
    let input: Vec<String> = lines.iter().map(Value::to_string).collect();
    let (code, out, err) = ledger(data, nats, &["apply", "--allow-future", "-"], Some(&input.join("\n")));
    assert_eq!(code, 0, "{out}{err}");
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn kinds(data: &Path, nats: Option<&str>) -> Vec<String> {
    let (code, out, err) = ledger(data, nats, &["events", "--json"], None);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["kind"].as_str().unwrap().to_string())
        .collect()
}

const PLAN: &str = r#"{"id":"seats","currency":"USD","price":"4.00","per_seat":true,"max_seats":500,"storage_quota_gb":"1","monthly_token_limit":1000,"token_overage":"block","addons":[]}"#;

fn line(at: &str, mut fields: Value) -> Value {
    fields["at"] = json!(at);
    fields
}

fn keyed_commands_answer_as_the_first_time(nats: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let plan: Value = serde_json::from_str(PLAN).unwrap();
    let t0 = "2026-03-01T00:00:00Z";
    let define = line(t0, json!({"cmd": "define_plan", "plan": plan, "idempotency_key": "plan-1"}));
    let subscribe = line(
        t0,
        json!({"cmd": "subscribe", "tenant": "acme", "plan": "seats", "seats": 1, "idempotency_key": "sub-1"}),
    );
    let seats = line(
        "2026-03-02T00:00:00Z",
        json!({"cmd": "set_seats", "tenant": "acme", "seats": 3, "idempotency_key": "seats-1"}),
    );
    let close =
        |at: &str| line(at, json!({"cmd": "close_period", "tenant": "acme", "idempotency_key": "close-1"}));
    let answers = apply(
        &data,
        nats,
        &[
            define.clone(),
            define.clone(),
            subscribe.clone(),
            seats.clone(),
            seats.clone(),
            line(
                "2026-03-02T00:00:00Z",
                json!({"cmd": "set_seats", "tenant": "acme", "seats": 4, "idempotency_key": "seats-1"}),
            ),
            close("2026-04-01T00:00:00Z"),
            // After a second period ended: still the first close, answered again.
            close("2026-05-02T00:00:00Z"),
        ],
    );
    let outcome = |a: &Value| (a["ok"].clone(), a["duplicate"].clone(), a["seq"].clone(), a["code"].clone());
    assert_eq!(outcome(&answers[0]).1, json!(false));
    assert_eq!(outcome(&answers[1]), (json!(true), json!(true), answers[0]["seq"].clone(), Value::Null));
    assert_eq!(answers[4]["duplicate"], true, "{:?}", answers[4]);
    assert_eq!(answers[4]["seq"], answers[3]["seq"], "the first answer's seq");
    assert_eq!(answers[5]["code"], "idempotency_conflict", "{:?}", answers[5]);
    assert_eq!(
        (answers[6]["duplicate"].clone(), answers[7]["duplicate"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(answers[7]["seq"], answers[6]["seq"]);
    let recorded = kinds(&data, nats);
    assert_eq!(recorded.iter().filter(|k| *k == "period_finalized").count(), 1, "{recorded:?}");
    assert_eq!(recorded.iter().filter(|k| *k == "seats_changed").count(), 1, "{recorded:?}");
    assert_eq!(recorded.iter().filter(|k| *k == "plan_defined").count(), 1, "{recorded:?}");
    // Without a key a redefinition is refused, and a second close closes
    // the next period: the key is what makes the resend safe.
    let unkeyed =
        apply(&data, nats, &[line("2026-05-02T00:00:00Z", json!({"cmd": "define_plan", "plan": plan}))]);
    assert_eq!(unkeyed[0]["code"], "plan_exists");

    // A new process reads the keys from the views (100 of them: most
    // moved from the state row into the key buckets) and the log.
    let many: Vec<Value> = (0..100)
        .map(|i| line("2026-05-03T00:00:00Z", json!({"cmd": "set_seats", "tenant": "acme", "seats": 10 + i, "idempotency_key": format!("bulk-{i}")})))
        .collect();
    let first = apply(&data, nats, &many);
    assert!(first.iter().all(|a| a["ok"] == true && a["duplicate"] == false), "{first:?}");
    let again = apply(&data, nats, &many);
    for (a, b) in first.iter().zip(&again) {
        assert_eq!((b["duplicate"].clone(), b["seq"].clone()), (json!(true), a["seq"].clone()), "{b}");
    }
    let conflict = apply(
        &data,
        nats,
        &[line(
            "2026-05-04T00:00:00Z",
            json!({"cmd": "set_seats", "tenant": "acme", "seats": 7, "idempotency_key": "bulk-3"}),
        )],
    );
    assert_eq!(conflict[0]["code"], "idempotency_conflict");
    // A self-keyed command takes no second key: malformed, and apply exits 2.
    let tokens = line(
        "2026-05-04T00:00:00Z",
        json!({"cmd": "consume_tokens", "tenant": "acme", "request": "r", "tokens": 1, "idempotency_key": "x"}),
    );
    let (code, out, _) = ledger(&data, nats, &["apply", "--allow-future", "-"], Some(&tokens.to_string()));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(r#""code":"malformed""#), "{out}");
    let (code, out, err) = ledger(&data, nats, &["audit", "verify"], None);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn keyed_commands_answer_as_the_first_time_on_the_embedded_log() {
    keyed_commands_answer_as_the_first_time(None);
}

#[test]
fn keyed_commands_answer_as_the_first_time_on_jetstream() {
    let server = JetStream::new();
    keyed_commands_answer_as_the_first_time(Some(&server.url()));
}

#[test]
fn a_key_used_by_one_writer_answers_at_another() {
    let server = JetStream::new();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let plan: Value = serde_json::from_str(PLAN).unwrap();
    let t0 = "2026-03-01T00:00:00Z";
    apply(
        &a,
        Some(&url),
        &[
            line(t0, json!({"cmd": "define_plan", "plan": plan})),
            line(t0, json!({"cmd": "subscribe", "tenant": "acme", "plan": "seats", "seats": 1})),
        ],
    );
    let seats = line(
        "2026-03-02T00:00:00Z",
        json!({"cmd": "set_seats", "tenant": "acme", "seats": 3, "idempotency_key": "k"}),
    );
    let first = apply(&a, Some(&url), std::slice::from_ref(&seats));
    // Writer b has never seen acme: it loads it from its own views and the log.
    let again = apply(&b, Some(&url), std::slice::from_ref(&seats));
    assert_eq!(
        (again[0]["duplicate"].clone(), again[0]["seq"].clone()),
        (json!(true), first[0]["seq"].clone())
    );
    let mut other = seats.clone();
    other["seats"] = json!(5);
    assert_eq!(apply(&b, Some(&url), &[other])[0]["code"], "idempotency_conflict");
    let close = line(
        "2026-04-01T00:00:00Z",
        json!({"cmd": "close_period", "tenant": "acme", "idempotency_key": "c"}),
    );
    let closed = apply(&b, Some(&url), std::slice::from_ref(&close));
    let mut later = close.clone();
    later["at"] = json!("2026-05-02T00:00:00Z");
    let resent = apply(&a, Some(&url), &[later]);
    assert_eq!(
        (resent[0]["duplicate"].clone(), resent[0]["seq"].clone()),
        (json!(true), closed[0]["seq"].clone())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_service_takes_the_key_in_the_body() {
    let server = JetStream::new();
    let url = server.url();
    let data = tempfile::tempdir().unwrap();
    let _serve = Serve::spawn(&url, data.path(), 3_600_000);
    wait_for_service(&url, 1).await;
    let nats = async_nats::connect(&url).await.unwrap();
    let request = |subject: &'static str, body: Value| {
        let nats = nats.clone();
        async move {
            let reply = nats.request(subject, body.to_string().into()).await.unwrap();
            serde_json::from_slice::<Value>(&reply.payload).unwrap()
        }
    };
    let plan: Value = serde_json::from_str(PLAN).unwrap();
    assert_eq!(
        request("ledger.admin.define_plan", json!({"plan": plan, "idempotency_key": "p"})).await["ok"],
        true
    );
    let again = request("ledger.admin.define_plan", json!({"plan": plan, "idempotency_key": "p"})).await;
    assert_eq!(again["duplicate"], true, "{again}");
    let sub = json!({"tenant": "acme", "plan": "seats", "seats": 1});
    assert_eq!(request("ledger.admin.subscribe", sub).await["ok"], true);
    let first = request("ledger.cmd.acme.admin.set_seats", json!({"seats": 2, "idempotency_key": "s"})).await;
    let second =
        request("ledger.cmd.acme.admin.set_seats", json!({"seats": 2, "idempotency_key": "s"})).await;
    assert_eq!((second["duplicate"].clone(), second["seq"].clone()), (json!(true), first["seq"].clone()));
    let conflict =
        request("ledger.cmd.acme.admin.set_seats", json!({"seats": 3, "idempotency_key": "s"})).await;
    assert_eq!(conflict["code"], "idempotency_conflict", "{conflict}");
}
