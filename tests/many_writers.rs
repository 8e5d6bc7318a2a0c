//! The spec's "Many writers": any number of writers share one stream, and
//! every answer is the one a single writer would give holding every event
//! acknowledged before the command arrived.
//!
//! - The issue's scenarios, through two real `ledger serve` processes and a
//!   `ledger apply` process writing beside them: a catalog change from
//!   another writer, stale `not_subscribed`, stale `unknown_purchase`, a
//!   stale duplicate upload, a stale `unknown_plan`.
//! - A randomized run: three engines interleave commands on shared tenants;
//!   every answer is then checked against a single writer re-deciding the
//!   same log, and the three engines' views are byte-identical.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::serve::{wait_for_service, Serve};
use common::JetStream;
use events::{Envelope, CATALOG_TENANT};
use ledger::bench::natsd::NatsServer;
use ledger::command::{parse_line, Submission};
use ledger::decide::{decide, Context, Decision};
use ledger::engine::{EngineStats, Ledger, Reply};
use ledger::log::Source;
use projections::domain::{CatalogState, Fact, FileEntry, RequestEntry, Spill, TenantState};
use projections::ViewStore;
use serde_json::{json, Value};

/// Runs `ledger --nats URL apply -` as a separate writer process.
fn apply(url: &str, data: &Path, lines: &[&str]) -> Vec<Value> {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg("--data")
        .arg(data)
        .args(["--nats", url, "apply", "-"])
        .env("LEDGER_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(lines.join("\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "apply failed: {out:?}");
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn request(client: &async_nats::Client, subject: &str, body: Value) -> Value {
    let reply = client
        .request(subject.to_string(), serde_json::to_vec(&body).unwrap().into())
        .await
        .unwrap_or_else(|e| panic!("{subject}: no answer: {e}"));
    serde_json::from_slice(&reply.payload).unwrap()
}

/// Sends the same request `n` times (the queue group spreads them over
/// both instances) and returns the answers.
async fn requests(client: &async_nats::Client, subject: &str, body: Value, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(request(client, subject, body.clone()).await);
    }
    out
}

fn assert_alive(serves: &mut [Serve]) {
    for serve in serves {
        assert!(serve.child.try_wait().unwrap().is_none(), "a serve process exited");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_instances_and_an_apply_writer_give_single_writer_answers() {
    let server = NatsServer::start().unwrap();
    let url = server.url().to_string();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut serves =
        vec![Serve::spawn(&url, dirs[0].path(), 60_000), Serve::spawn(&url, dirs[1].path(), 60_000)];
    wait_for_service(&url, 2).await;
    let (address, options) = ledger_client::nats::options(&url, "test", None);
    let nc = options.connect(&address).await.unwrap();
    let tokens = |request: &str| json!({"request": request, "tokens": 10});
    let cmd = "ledger.cmd.acme.user.consume_tokens";

    // Both instances learn that acme has no subscription (and no catalog).
    for answer in requests(&nc, cmd, tokens("early"), 8).await {
        assert_eq!(answer["code"], "not_subscribed", "{answer}");
    }
    // Another writer defines the catalog and subscribes acme.
    let setup = apply(
        &url,
        dirs[2].path(),
        &[
            r#"{"cmd":"define_addon","addon":{"id":"boost","currency":"USD","price":"5.00","recurring":false,"grants":{"tokens":100}}}"#,
            r#"{"cmd":"define_plan","plan":{"id":"starter","currency":"USD","price":"20.00","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":10000,"token_overage":"block","addons":["boost"]}}"#,
            r#"{"cmd":"subscribe","tenant":"acme","plan":"starter","seats":1}"#,
        ],
    );
    assert!(setup.iter().all(|r| r["ok"] == true), "{setup:?}");
    // Before: the engine panicked on the unknown plan, then answered
    // "unavailable" forever. Now every instance sees the subscription.
    for (i, answer) in requests(&nc, cmd, tokens("after"), 8).await.into_iter().enumerate() {
        assert_eq!(answer["ok"], true, "{answer}");
        assert_eq!(answer["duplicate"], i > 0, "{answer}");
    }
    assert_alive(&mut serves);

    // A rejection decided from a stale state: the purchase another writer
    // made is found.
    let settle = json!({"tenant": "acme", "purchase": "p1", "outcome": "paid"});
    for answer in requests(&nc, "ledger.admin.settle_payment", settle.clone(), 6).await {
        assert_eq!(answer["code"], "unknown_purchase", "{answer}");
    }
    let bought = apply(
        &url,
        dirs[2].path(),
        &[r#"{"cmd":"purchase_addon","tenant":"acme","addon":"boost","purchase":"p1","payment":"card"}"#],
    );
    assert_eq!(bought[0]["ok"], true, "{bought:?}");
    let settled = request(&nc, "ledger.admin.settle_payment", settle.clone()).await;
    assert_eq!(settled["ok"], true, "{settled}");
    // ... and the other instance, asked again, knows it is settled.
    for answer in requests(&nc, "ledger.admin.settle_payment", settle, 6).await {
        assert_eq!(answer["code"], "payment_not_pending", "{answer}");
    }

    // A duplicate decided from a stale state: the file another writer
    // deleted is stored again, not reported as already there.
    let upload = json!({"file": "f1", "bytes": 100});
    let first = requests(&nc, "ledger.cmd.acme.user.upload", upload.clone(), 6).await;
    assert_eq!(first[0]["duplicate"], false, "{first:?}");
    assert!(first[1..].iter().all(|a| a["duplicate"] == true), "{first:?}");
    for round in 0..4 {
        let deleted = apply(
            &url,
            dirs[2].path(),
            &[r#"{"cmd":"delete_file","tenant":"acme","file":"f1","actor":"acme:user"}"#],
        );
        assert_eq!(deleted[0]["ok"], true, "round {round}: {deleted:?}");
        let again = request(&nc, "ledger.cmd.acme.user.upload", upload.clone()).await;
        assert_eq!(
            (again["ok"].clone(), again["duplicate"].clone()),
            (json!(true), json!(false)),
            "round {round}: {again}"
        );
    }

    // A catalog rejection from a stale catalog: the plan another writer
    // defined is found.
    let change = json!({"tenant": "acme", "plan": "pro"});
    for answer in requests(&nc, "ledger.admin.change_plan", change.clone(), 6).await {
        assert_eq!(answer["code"], "unknown_plan", "{answer}");
    }
    let pro = apply(
        &url,
        dirs[2].path(),
        &[
            r#"{"cmd":"define_plan","plan":{"id":"pro","currency":"USD","price":"50.00","per_seat":false,"storage_quota_gb":"10","monthly_token_limit":100000,"token_overage":"block","addons":[]}}"#,
        ],
    );
    assert_eq!(pro[0]["ok"], true, "{pro:?}");
    let changed = request(&nc, "ledger.admin.change_plan", change).await;
    // The active one-off add-on does not block the change; the plan exists.
    assert_eq!(changed["ok"], true, "{changed}");
    let usage = request(&nc, "ledger.query.acme.usage", json!({})).await;
    assert_eq!(usage["plan"], "pro", "{usage}");
    assert_eq!(usage["storage"]["used_bytes"], 100, "{usage}");
    assert_alive(&mut serves);
}

// ---------------------------------------------------------------------------
// Randomized: several engines, one log, checked against a single writer.

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TENANTS: [&str; 2] = ["t0", "t1"];

fn random_command(rng: &mut Rng) -> String {
    let t = TENANTS[rng.below(2) as usize];
    match rng.below(9) {
        0 | 1 => format!(
            r#"{{"actor":"{t}:user","cmd":"consume_tokens","tenant":"{t}","request":"r{}","tokens":{}}}"#,
            rng.below(12),
            [100, 200][rng.below(2) as usize]
        ),
        2 => format!(
            r#"{{"actor":"{t}:user","cmd":"upload","tenant":"{t}","file":"f{}","bytes":{}}}"#,
            rng.below(4),
            [300, 500][rng.below(2) as usize]
        ),
        3 => {
            format!(r#"{{"actor":"{t}:user","cmd":"delete_file","tenant":"{t}","file":"f{}"}}"#, rng.below(4))
        }
        4 => format!(r#"{{"cmd":"set_seats","tenant":"{t}","seats":{}}}"#, 1 + rng.below(4)),
        5 => format!(
            r#"{{"cmd":"purchase_addon","tenant":"{t}","addon":"boost","purchase":"p{}","payment":"card"}}"#,
            rng.below(4)
        ),
        6 => format!(
            r#"{{"cmd":"settle_payment","tenant":"{t}","purchase":"p{}","outcome":"{}"}}"#,
            rng.below(4),
            ["paid", "failed"][rng.below(2) as usize]
        ),
        7 => format!(r#"{{"cmd":"subscribe","tenant":"{t}","plan":"std","seats":1}}"#),
        _ => format!(r#"{{"actor":"{t}:admin","cmd":"set_seats","tenant":"{t}","seats":2}}"#),
    }
}

/// One tenant (or the catalog) as a single writer folding the log holds it.
#[derive(Clone, Default)]
struct Model {
    state: TenantState,
    catalog: CatalogState,
    requests: HashMap<String, RequestEntry>,
    files: HashMap<String, FileEntry>,
}

impl Model {
    fn fold(&mut self, fact: &Fact<'_>) {
        if fact.envelope.tenant == CATALOG_TENANT {
            self.catalog.fold(fact).expect("the ledger keeps the catalog's chain");
            return;
        }
        // These streams carry no idempotency keys: only the payload spills.
        match self.state.fold(fact).expect("the ledger keeps every tenant's chain").payload {
            Some(Spill::Request { request, entry }) => {
                self.requests.insert(request, entry);
            }
            Some(Spill::File { file, entry: Some(entry) }) => {
                self.files.insert(file, entry);
            }
            Some(Spill::File { file, entry: None }) => {
                self.files.remove(&file);
            }
            _ => {}
        }
    }
}

/// Every tenant's and the catalog's model after each of its events.
struct History {
    /// Per tenant (and `_catalog`): (position, model after it), ascending;
    /// starts with (0, empty).
    snapshots: HashMap<String, Vec<(u64, Model)>>,
    events: HashMap<u64, Envelope>,
}

impl History {
    fn at(&self, tenant: &str, position: u64) -> Model {
        self.snapshots
            .get(tenant)
            .and_then(|s| s.iter().rev().find(|(p, _)| *p <= position).map(|(_, m)| m.clone()))
            .unwrap_or_default()
    }

    /// Positions where `tenant`'s or the catalog's state changed in `from..=to`.
    fn changes(&self, tenant: &str, from: u64, to: u64) -> Vec<u64> {
        let mut out = vec![from];
        for key in [tenant, CATALOG_TENANT] {
            if let Some(s) = self.snapshots.get(key) {
                out.extend(s.iter().map(|(p, _)| *p).filter(|p| *p > from && *p <= to));
            }
        }
        out
    }

    /// What a single writer decides for `submission` with the log up to
    /// `position` (exclusive of nothing: everything `<= position`).
    fn decide(&self, submission: &Submission, position: u64, at_us: i64) -> Result<Decision, String> {
        let tenant = submission.command.tenant().unwrap_or(CATALOG_TENANT);
        let model = self.at(tenant, position);
        let catalog = self.at(CATALOG_TENANT, position).catalog;
        let earlier_request = match &submission.command {
            ledger::command::Command::ConsumeTokens { request, .. } => model.requests.get(request).copied(),
            _ => None,
        };
        let existing_file = match &submission.command {
            ledger::command::Command::Upload { file, .. }
            | ledger::command::Command::DeleteFile { file, .. } => model.files.get(file).copied(),
            _ => None,
        };
        let ctx = Context {
            catalog: &catalog,
            state: &model.state,
            actor: &submission.actor,
            at_us,
            earlier_request,
            existing_file,
            admitted_offline: false,
            fingerprint: None,
            earlier_key: None,
        };
        decide(&ctx, &submission.command).map_err(|r| r.code.to_string())
    }
}

struct Answered {
    line: String,
    /// Every partition's head before the command was sent, and after its answer.
    head_before: Vec<u64>,
    reply: Reply,
    head_after: Vec<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_writers_answer_as_one_writer_replaying_the_log() {
    let seed: u64 =
        std::env::var("LEDGER_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_1e55);
    let js = JetStream::new();
    let log = common::connect(&js.url()).await;
    let mut engines = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let views = ViewStore::open(dir.path()).unwrap();
        engines.push(Ledger::start(common::connect(&js.url()).await, views).await.unwrap());
        dirs.push(dir);
    }
    for line in [
        r#"{"cmd":"define_addon","addon":{"id":"boost","currency":"USD","price":"5.00","recurring":false,"grants":{"tokens":300}}}"#,
        r#"{"cmd":"define_plan","plan":{"id":"std","currency":"USD","price":"10.00","per_seat":true,"max_seats":3,"storage_quota_gb":"0.000001","monthly_token_limit":1000,"token_overage":"block","addons":["boost"]}}"#,
        r#"{"cmd":"subscribe","tenant":"t0","plan":"std","seats":1}"#,
    ] {
        let reply = engines[0].submit(parse_line(line).unwrap()).await;
        assert!(matches!(reply, Reply::Ok { .. }), "{line}: {reply:?}");
    }

    // Each writer sends its commands three at a time; the writers run at once.
    let mut tasks = Vec::new();
    for (w, engine) in engines.iter().enumerate() {
        let (engine, log) = (engine.clone(), log.clone());
        let mut rng = Rng(seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        tasks.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            for _ in 0..25 {
                let lines: Vec<String> = (0..3).map(|_| random_command(&mut rng)).collect();
                let head_before = ledger::log::heads(&log).await.unwrap();
                let mut pending = Vec::new();
                for line in &lines {
                    pending.push(engine.submit_nowait(parse_line(line).unwrap()).await);
                }
                let mut replies = Vec::new();
                for answer in pending {
                    replies.push(ledger::engine::wait(answer).await);
                }
                let head_after = ledger::log::heads(&log).await.unwrap();
                for (line, reply) in lines.into_iter().zip(replies) {
                    let (head_before, head_after) = (head_before.clone(), head_after.clone());
                    answered.push(Answered { line, head_before, reply, head_after });
                }
            }
            answered
        }));
    }
    let mut answered = Vec::new();
    for task in tasks {
        answered.extend(task.await.unwrap());
    }

    // A single writer's view of the whole log, partition by partition (a
    // tenant's events and its positions live in one partition; the catalog,
    // fixed before the writers start, in partition 0).
    let heads = ledger::log::heads(&log).await.unwrap();
    let mut history = History { snapshots: HashMap::new(), events: HashMap::new() };
    let mut models: HashMap<String, Model> = HashMap::new();
    use futures_util::StreamExt;
    for (partition, head) in heads.iter().enumerate() {
        let partition_log = log.in_partition(partition as u32);
        let first = ledger::log::Position::pack(partition as u32, 1);
        if *head < first {
            continue;
        }
        let mut records = partition_log.read(first, None).await.unwrap();
        while let Some(record) = records.next().await {
            let record = record.unwrap();
            let decoded = record.decode();
            let envelope = decoded.event.expect("the ledger writes decodable events");
            let model = models.entry(envelope.tenant.clone()).or_default();
            model.fold(&Fact { position: record.position, hash: decoded.hash, envelope: &envelope });
            history
                .snapshots
                .entry(envelope.tenant.clone())
                .or_insert_with(|| vec![(0, Model::default())])
                .push((record.position, model.clone()));
            history.events.insert(record.position, envelope);
            if record.position >= *head {
                break;
            }
        }
    }
    let head = u64::MAX;
    let partitions = log.partitions();

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for a in &answered {
        let submission = parse_line(&a.line).unwrap();
        match &a.reply {
            Reply::Failed { message } => panic!("{}: failed: {message}", a.line),
            // Appended: the events at `seq` are what a single writer decides
            // with the log just before them.
            Reply::Ok { seq, duplicate: false } | Reply::Rejected { seq: Some(seq), .. } => {
                let last = &history.events[seq];
                let matched = (1..=3u64).any(|k| {
                    let first = seq + 1 - k;
                    let recorded: Vec<_> = (first..=*seq).filter_map(|p| history.events.get(&p)).collect();
                    if recorded.len() as u64 != k || recorded.iter().any(|e| e.tenant != last.tenant) {
                        return false;
                    }
                    let payloads: Vec<_> = recorded.iter().map(|e| e.payload.clone()).collect();
                    match history.decide(&submission, first - 1, last.at_us) {
                        // A use's alert crossings follow its own events
                        // (which `seq` ends), in the same append.
                        Ok(Decision::Accept(events)) => {
                            let (own, crossings): (Vec<_>, Vec<_>) = events
                                .into_iter()
                                .partition(|e| !matches!(e, events::Event::UsageThresholdCrossed { .. }));
                            let after: Vec<_> = (seq + 1..=seq + crossings.len() as u64)
                                .filter_map(|p| history.events.get(&p).map(|e| e.payload.clone()))
                                .collect();
                            own == payloads && after == crossings
                        }
                        Ok(Decision::Deny { event, rejection }) => {
                            payloads == [event]
                                && matches!(&a.reply, Reply::Rejected { rejection: r, .. } if r.code == rejection.code)
                        }
                        _ => false,
                    }
                });
                assert!(
                    matched,
                    "{} answered {:?}, which one writer would not have recorded",
                    a.line, a.reply
                );
                *counts.entry("appended").or_default() += 1;
            }
            // Nothing appended: some moment between the command's arrival
            // and its answer gives a single writer the same answer.
            other => {
                let at_us = chrono::Utc::now().timestamp_micros();
                let tenant = submission_tenant(&submission);
                let partition = ledger::log::partition_of(&tenant, partitions) as usize;
                let (before, after) = (a.head_before[partition], a.head_after[partition]);
                let same = history.changes(&tenant, before, after).into_iter().any(|p| {
                    match (history.decide(&submission, p, at_us), other) {
                        (Ok(Decision::Duplicate { seq }), Reply::Ok { seq: s, duplicate: true }) => seq == *s,
                        (Err(code), Reply::Rejected { rejection, seq: None }) => code == rejection.code,
                        _ => false,
                    }
                });
                assert!(
                    same,
                    "{} answered {other:?} with the log at {before}..={after}; no single writer would",
                    a.line
                );
                *counts
                    .entry(if matches!(other, Reply::Ok { .. }) { "duplicate" } else { "rejected" })
                    .or_default() += 1;
            }
        }
    }
    // The run exercised every kind of answer.
    for kind in ["appended", "duplicate", "rejected"] {
        assert!(counts.get(kind).copied().unwrap_or(0) > 3, "too few {kind} answers: {counts:?}");
    }

    // No over-admission on the block plan, whoever decided.
    for tenant in TENANTS {
        let model = history.at(tenant, head);
        let catalog = history.at(CATALOG_TENANT, head).catalog;
        for (period, used) in &model.state.tokens_by_period {
            let (start, end) = projections::period::period_bounds_us(
                model.state.subscription.as_ref().unwrap().anchor_us,
                *period,
            );
            let limit = (start..end)
                .step_by(3_600_000_000)
                .map(|t| model.state.token_limit_at(&catalog, t))
                .max()
                .unwrap();
            assert!(*used <= limit, "{tenant} used {used} of {limit}");
        }
        assert!(model.state.used_bytes <= model.state.quota_bytes(&catalog));
    }

    // The run went through the chained path (several commands of one
    // tenant decided into one batch), which the checks above cover too.
    let chained: u64 = engines.iter().map(|e| EngineStats::get(&e.stats().chained)).sum();
    assert!(chained > 0, "no decision was chained: the randomized run missed that path");

    // Every engine's views hold the same bytes.
    for engine in &engines {
        for head in &heads {
            engine.sync_to(*head).await.unwrap();
        }
    }
    let digests: Vec<_> = engines.iter().map(|e| e.views().digest("ledger").unwrap()).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "the writers' views differ");
    for engine in &engines {
        engine.shutdown().await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}

fn submission_tenant(submission: &Submission) -> String {
    submission.command.tenant().unwrap_or(CATALOG_TENANT).to_string()
}
