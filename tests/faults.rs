//! Faults: kill anything, lose nothing (issue 14). Real processes
//! throughout: nats-server (one, or a three-node cluster with the ledger's
//! stream at R3), two `ledger serve` instances, and tenant clients (the
//! Rust client, retrying with the same idempotency keys until a decision
//! is definite). Each scenario runs a seeded random schedule of kills
//! (`LEDGER_FAULT_SEED` replays one; the seed is printed) for
//! `LEDGER_FAULT_ROUNDS` kills (CI: the short default; `scripts/faults
//! ROUNDS` runs the long version), then checks the log itself:
//! - every decision a client saw acknowledged is in the log exactly once;
//! - no idempotency key appears twice;
//! - quota-limited tenants never exceed their limit;
//! - `audit verify` is clean (the views equal a replay, every final invoice
//!   re-derives, nothing forged);
//!
//! and prints kills, decisions acknowledged, lost, doubled, and the longest
//! time a client waited for a definite answer.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::serve::{wait_for_service, Serve};
use events::Event;
use futures_util::StreamExt;
use ledger::log::Source;
use serde_json::{json, Value};

/// One scenario at a time: each runs several servers and clients on a
/// 2-core machine, and measures how long answers take.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The token limit of the `small` plan: tight enough that clients hit it.
const LIMIT: u64 = 300;
const CLIENTS: usize = 6;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from))
    }
}

fn seed(scenario: &str) -> u64 {
    let seed = std::env::var("LEDGER_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    }) | 1;
    eprintln!("{scenario}: LEDGER_FAULT_SEED={seed}");
    seed
}

fn rounds(default: usize) -> usize {
    std::env::var("LEDGER_FAULT_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn ledger(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ledger")).args(args).env_remove("LEDGER_NATS").output().unwrap()
}

/// The tenants: `big-*` on a plan with a limit out of reach, `small-*` on
/// the `small` plan (LIMIT tokens, `block`).
fn tenants() -> (Vec<String>, Vec<String>) {
    ((0..4).map(|i| format!("big-{i}")).collect(), (0..4).map(|i| format!("small-{i}")).collect())
}

/// Defines the catalog (40 days ago) and subscribes the tenants through
/// `ledger apply`; `clocked` tenants are subscribed so that their first
/// period ends at the given instants, for the billing clock to finalize.
fn seed_ledger(url: &str, clocked: &[(String, chrono::DateTime<chrono::Utc>)]) {
    let scratch = tempfile::tempdir().unwrap();
    let long_ago = (chrono::Utc::now() - chrono::Duration::days(40)).to_rfc3339();
    let mut lines = vec![
        format!(
            r#"{{"at":"{long_ago}","cmd":"define_plan","plan":{{"id":"big","currency":"USD","price":"10.00","per_seat":false,"storage_quota_gb":"100","monthly_token_limit":1000000000,"token_overage":"block","addons":[]}}}}"#
        ),
        format!(
            r#"{{"at":"{long_ago}","cmd":"define_plan","plan":{{"id":"small","currency":"USD","price":"5.00","per_seat":true,"storage_quota_gb":"1","monthly_token_limit":{LIMIT},"token_overage":"block","addons":[]}}}}"#
        ),
    ];
    for (tenant, period_end) in clocked {
        let anchor = period_end.checked_sub_months(chrono::Months::new(1)).unwrap();
        lines.push(format!(
            r#"{{"at":"{}","cmd":"subscribe","tenant":"{tenant}","plan":"small","seats":1}}"#,
            anchor.to_rfc3339()
        ));
    }
    let (big, small) = tenants();
    for tenant in &big {
        lines.push(format!(r#"{{"cmd":"subscribe","tenant":"{tenant}","plan":"big","seats":1}}"#));
    }
    for tenant in &small {
        lines.push(format!(r#"{{"cmd":"subscribe","tenant":"{tenant}","plan":"small","seats":1}}"#));
    }
    let file = scratch.path().join("seed.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let data = scratch.path().join("data");
    let out = ledger(&["--nats", url, "--data", data.to_str().unwrap(), "apply", file.to_str().unwrap()]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !printed.contains("\"ok\":false"),
        "{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    /// (tenant, request, tokens) of every decision answered `ok`.
    acked: Vec<(String, String, u64)>,
    denied: usize,
    /// Attempts that got no definite answer (and were retried).
    retried: usize,
    /// The longest time from a first failed attempt to the definite answer.
    longest_wait: Duration,
    /// When each definite answer arrived.
    answered: Vec<Instant>,
    /// When each answer of any kind arrived (`unavailable` included).
    replies: Vec<Instant>,
    /// The longest time one request waited for its reply (of any kind).
    longest_reply: Duration,
}

/// One client: `consume_tokens` on random tenants, each request retried with
/// the same key until it is accepted, a duplicate, or denied; until `stop`.
/// It speaks the service protocol itself, waiting `patience` for each reply
/// before sending it again: past the spec's 5 s ([`PATIENT`]) to tell an
/// `unavailable` answer from none, or less ([`HASTY`]) to move on from a
/// request a killed `serve` took with it, which nothing will ever answer.
async fn client(
    url: String,
    id: usize,
    tenants: Vec<String>,
    stop: Arc<AtomicBool>,
    seed: u64,
    patience: Duration,
) -> Seen {
    let (addresses, options) = ledger_client::nats::options(&url, "fault-client", None);
    let nc = options
        .retry_on_initial_connect()
        .max_reconnects(None)
        .request_timeout(Some(patience))
        .connect(addresses)
        .await
        .unwrap();
    let subjects: Vec<String> = tenants
        .iter()
        .map(|t| ledger_client::protocol::command_subject(t, "user", "consume_tokens"))
        .collect();
    let mut rng = Rng(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut seen = Seen::default();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let pick = (rng.next() % subjects.len() as u64) as usize;
        let (request, tokens) = (format!("c{id}-{i}"), 1 + rng.next() % 20);
        let body = bytes::Bytes::from(json!({"request": request, "tokens": tokens}).to_string());
        let mut first_failure: Option<Instant> = None;
        loop {
            let sent = Instant::now();
            // Sent again at once if the connection moves meanwhile.
            let reply = ledger_client::nats::request(&nc, subjects[pick].clone(), body.clone()).await;
            let answer: Option<Value> = reply.ok().map(|m| serde_json::from_slice(&m.payload).unwrap());
            if answer.is_some() {
                seen.replies.push(Instant::now());
                seen.longest_reply = seen.longest_reply.max(sent.elapsed());
            }
            match answer {
                Some(a) if a["ok"] == true => {
                    seen.acked.push((tenants[pick].clone(), request.clone(), tokens));
                    break;
                }
                Some(a) if a["code"] == "token_limit_exceeded" => {
                    seen.denied += 1;
                    break;
                }
                Some(a) if a["code"] == "unavailable" => {}
                None => {}
                Some(other) => panic!("client {id}: {request}: unexpected {other}"),
            }
            seen.retried += 1;
            let since = *first_failure.get_or_insert_with(Instant::now);
            assert!(
                since.elapsed() < Duration::from_secs(120),
                "client {id}: {request} undecided for 2 minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen.answered.push(Instant::now());
        if let Some(since) = first_failure {
            seen.longest_wait = seen.longest_wait.max(since.elapsed());
        }
    }
    seen
}

/// Waits past the spec's 5 s for a reply.
const PATIENT: Duration = Duration::from_secs(8);
/// Sends again after 2 s without a reply.
const HASTY: Duration = Duration::from_secs(2);

fn start_clients(
    url: &str,
    seed: u64,
    patience: Duration,
) -> (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<Seen>>) {
    let (big, small) = tenants();
    let all: Vec<String> = big.into_iter().chain(small).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..CLIENTS)
        .map(|id| tokio::spawn(client(url.to_string(), id, all.clone(), stop.clone(), seed, patience)))
        .collect();
    (stop, tasks)
}

/// What the log holds, against what the clients saw.
struct Tally {
    events: usize,
    acked: usize,
    denied: usize,
    lost: usize,
    doubled: usize,
    longest_wait: Duration,
    /// The longest time in which no client got any definite answer.
    longest_gap: Duration,
    /// The longest time in which no client got any answer at all.
    longest_silence: Duration,
    /// The longest one request waited for a reply of any kind.
    longest_reply: Duration,
    /// tenant -> finalized period indexes, in log order.
    finalized: HashMap<String, Vec<u32>>,
}

async fn tally(url: &str, seen: Vec<Seen>) -> Tally {
    let log = common::connect(url).await;
    let mut consumed: HashMap<(String, String), Vec<u64>> = HashMap::new();
    let mut finalized: HashMap<String, Vec<u32>> = HashMap::new();
    let mut events = 0;
    for partition in 0..log.partitions() {
        let log = log.in_partition(partition);
        // The cluster may still be electing a leader after the last kill:
        // the log answers once it has one.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (head, mut stream) = loop {
            let first = ledger::log::Position::pack(partition, 1);
            let opened =
                async { Ok::<_, ledger::log::LogError>((log.head().await?, log.read(first, None).await?)) };
            match opened.await {
                Ok(opened) => break opened,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("reading partition {partition} to tally it: {error}; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => panic!("partition {partition} did not answer within 60 s: {error}"),
            }
        };
        let head = ledger::log::Position::unpack(head).seq;
        for _ in 0..head {
            let record = stream.next().await.unwrap().unwrap();
            let envelope = events::decode(&record.payload).unwrap();
            events += 1;
            match envelope.payload {
                Event::TokensConsumed { request, tokens, .. } => {
                    consumed.entry((envelope.tenant, request)).or_default().push(tokens)
                }
                Event::PeriodFinalized { period, .. } => {
                    finalized.entry(envelope.tenant).or_default().push(period)
                }
                _ => {}
            }
        }
    }
    let doubled = consumed.values().filter(|v| v.len() > 1).count();
    let mut lost = 0;
    let (mut acked, mut denied, mut longest_wait) = (0, 0, Duration::ZERO);
    let mut answered: Vec<Instant> = seen.iter().flat_map(|s| s.answered.iter().copied()).collect();
    answered.sort_unstable();
    let longest_gap = answered.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let mut replies: Vec<Instant> = seen.iter().flat_map(|s| s.replies.iter().copied()).collect();
    replies.sort_unstable();
    let longest_silence = replies.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let longest_reply = seen.iter().map(|s| s.longest_reply).max().unwrap_or_default();
    for one in &seen {
        for (tenant, request, tokens) in &one.acked {
            match consumed.get(&(tenant.clone(), request.clone())) {
                Some(found) if found.as_slice() == [*tokens] => {}
                _ => lost += 1,
            }
        }
        acked += one.acked.len();
        denied += one.denied;
        longest_wait = longest_wait.max(one.longest_wait);
    }
    let (_, small) = tenants();
    for tenant in &small {
        let used: u64 = consumed.iter().filter(|((t, _), _)| t == tenant).flat_map(|(_, v)| v).sum();
        assert!(used <= LIMIT, "{tenant} consumed {used} tokens, over its limit of {LIMIT}");
    }
    Tally {
        events,
        acked,
        denied,
        lost,
        doubled,
        longest_wait,
        longest_gap,
        longest_silence,
        longest_reply,
        finalized,
    }
}

/// `audit verify` over a data directory's views (caught up first): exit 0.
fn verify(url: &str, data: &Path) {
    let out = ledger(&["--nats", url, "--data", data.to_str().unwrap(), "audit", "verify"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "audit verify found something:\n{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("OK"), "{printed}");
}

fn report(scenario: &str, kills: usize, tally: &Tally) {
    eprintln!(
        "{scenario}: kills {kills}, log events {}, decisions acknowledged {}, denied {}, lost {}, doubled {}, \
         longest time without any definite answer {:.1} s, longest wait of one request {:.1} s, \
         longest time without any answer (unavailable included) {:.1} s, longest wait for one reply {:.1} s",
        tally.events,
        tally.acked,
        tally.denied,
        tally.lost,
        tally.doubled,
        tally.longest_gap.as_secs_f64(),
        tally.longest_wait.as_secs_f64(),
        tally.longest_silence.as_secs_f64(),
        tally.longest_reply.as_secs_f64()
    );
    assert!(tally.acked > 0, "no decision was acknowledged");
    assert_eq!(tally.lost, 0, "acknowledged decisions missing from the log");
    assert_eq!(tally.doubled, 0, "idempotency keys recorded twice");
}

/// Stops the clients, checks no serve exited on its own, and tallies the log.
async fn finish(
    url: &str,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Seen>>,
    serves: &mut [Serve],
) -> Tally {
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for task in clients {
        seen.push(task.await.unwrap());
    }
    alive(serves);
    tally(url, seen).await
}

/// Both serve processes are still running (nothing exited on its own).
fn alive(serves: &mut [Serve]) {
    for serve in serves {
        assert!(serve.child.try_wait().unwrap().is_none(), "a serve process exited");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_server_killed_loses_nothing() {
    let _serial = serial();
    let mut rng = Rng(seed("log server killed"));
    let kills = rounds(20);
    let mut nats = common::JetStream::new();
    let url = nats.url();
    seed_ledger(&url, &[]);
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut serves: Vec<Serve> = dirs.iter().map(|d| Serve::spawn(&url, d.path(), 3_600_000)).collect();
    wait_for_service(&url, 2).await;
    let (stop, clients) = start_clients(&url, rng.next(), HASTY);
    for _ in 0..kills {
        tokio::time::sleep(rng.millis(300, 1500)).await;
        let server = nats.server.as_mut().unwrap();
        server.stop(); // SIGKILL
        tokio::time::sleep(rng.millis(50, 600)).await;
        server.restart().unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = finish(&url, stop, clients, &mut serves).await;
    report("log server killed", kills, &tally);
    drop(serves);
    verify(&url, dirs[0].path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_loses_nothing_and_the_clock_closes_each_period_once() {
    let _serial = serial();
    let nats = common::JetStream::new();
    serve_kills("serve killed", &nats.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_on_the_r3_cluster_loses_nothing() {
    let _serial = serial();
    let cluster = Cluster::start();
    create_r3_stream(&cluster.url()).await;
    serve_kills("serve killed (R3 cluster)", &cluster.url()).await;
}

/// Two serve instances SIGKILLed and restarted at random moments under load,
/// while the billing clock has periods to finalize.
async fn serve_kills(scenario: &str, url: &str) {
    let mut rng = Rng(seed(scenario));
    let kills = rounds(20);
    let url = url.to_string();
    // Periods that end while serves are being killed: one every 2 s.
    let start = chrono::Utc::now();
    let clocked: Vec<(String, chrono::DateTime<chrono::Utc>)> =
        (0..6).map(|i| (format!("clk-{i}"), start + chrono::Duration::seconds(4 + 2 * i))).collect();
    seed_ledger(&url, &clocked);
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let spawn = |i: usize| Serve::spawn(&url, dirs[i].path(), 200);
    let mut serves: Vec<Serve> = (0..2).map(spawn).collect();
    wait_for_service(&url, 2).await;
    let (stop, clients) = start_clients(&url, rng.next(), HASTY);
    for _ in 0..kills {
        tokio::time::sleep(rng.millis(200, 1200)).await;
        let victim = (rng.next() % 2) as usize;
        serves[victim].kill(); // SIGKILL
        tokio::time::sleep(rng.millis(50, 500)).await;
        serves[victim] = spawn(victim);
    }
    // Every clocked period has ended; give the clock a few ticks.
    let last_end = clocked.last().unwrap().1;
    while chrono::Utc::now() < last_end + chrono::Duration::seconds(1) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for_service(&url, 2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = tally(&url, Vec::new()).await;
        let all_closed = clocked.iter().all(|(t, _)| probe.finalized.get(t).is_some_and(|p| !p.is_empty()));
        if all_closed || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tally = finish(&url, stop, clients, &mut serves).await;
    report(scenario, kills, &tally);
    for (tenant, _) in &clocked {
        assert_eq!(
            tally.finalized.get(tenant),
            Some(&vec![0]),
            "{tenant}: its first period finalized exactly once"
        );
    }
    drop(serves);
    verify(&url, dirs[0].path());
}

/// Creates the LEDGER stream at R3 (as the first ledger process to connect
/// with `--replicas 3` does), waiting for the new cluster to take it.
async fn create_r3_stream(url: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().to_str().unwrap();
    on_the_new_cluster(&["--nats", url, "--replicas", "3", "--data", data, "tenants"]).await;
}

/// Runs `ledger ARGS` until it succeeds: a new cluster takes a few seconds
/// to be ready for streams.
async fn on_the_new_cluster(args: &[&str]) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = ledger(args);
        if out.status.success() {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster never took the ledger: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The stream's leader (partition 0's), by server name.
async fn stream_leader(nc: &async_nats::Client) -> Option<String> {
    partition_leaders(nc, 1).await.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_cluster_leader_killed_and_stepped_down_loses_nothing() {
    let _serial = serial();
    let mut rng = Rng(seed("R3 cluster"));
    let kills = rounds(10);
    let mut cluster = Cluster::start();
    let url = cluster.url();
    create_r3_stream(&url).await;
    seed_ledger(&url, &[]);
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut serves: Vec<Serve> = dirs.iter().map(|d| Serve::spawn(&url, d.path(), 3_600_000)).collect();
    wait_for_service(&url, 2).await;
    let (addresses, options) = ledger_client::nats::options(&url, "fault-admin", None);
    let admin = options.retry_on_initial_connect().connect(addresses).await.unwrap();
    let info: serde_json::Value = serde_json::from_slice(
        &admin.request("$JS.API.STREAM.INFO.LEDGER", "".into()).await.unwrap().payload,
    )
    .unwrap();
    assert_eq!(info["config"]["num_replicas"], 3, "{info}");
    // `ledger info` names the same leader and its two peers.
    let shown =
        ledger(&["--nats", &url, "--data", dirs[0].path().join("info").to_str().unwrap(), "info", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let stream = &shown["streams"][0];
    assert_eq!(
        (stream["replicas"].clone(), stream["peers"].as_array().map(Vec::len)),
        (3.into(), Some(2)),
        "{shown}"
    );
    assert_eq!(stream["leader"].as_str(), stream_leader(&admin).await.as_deref(), "{shown}");
    let (stop, clients) = start_clients(&url, rng.next(), PATIENT);
    let (mut killed, mut stepped_down) = (0, 0);
    for round in 0..kills {
        tokio::time::sleep(rng.millis(500, 2000)).await;
        // During an election the stream has no leader yet: wait for one.
        let deadline = Instant::now() + Duration::from_secs(60);
        let leader = loop {
            if let Some(leader) = stream_leader(&admin).await {
                break leader;
            }
            assert!(Instant::now() < deadline, "the stream found no leader within 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if round % 3 == 2 {
            // A clean leader change.
            let _ = admin.request("$JS.API.STREAM.LEADER.STEPDOWN.LEDGER", "".into()).await;
            stepped_down += 1;
        } else {
            let i = cluster.index_of(&leader).unwrap();
            cluster.kill_node(i);
            tokio::time::sleep(rng.millis(200, 2000)).await;
            cluster.start_node(i);
            killed += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = finish(&url, stop, clients, &mut serves).await;
    eprintln!("R3 cluster: leader killed {killed} times, stepped down {stepped_down} times");
    report("R3 cluster", killed + stepped_down, &tally);
    assert_eq!(killed + stepped_down, kills);
    drop(serves);
    verify(&url, dirs[0].path());
}

/// Every partition's leader, by server name, in partition order (`None`
/// while a partition elects one).
async fn partition_leaders(nc: &async_nats::Client, partitions: u32) -> Vec<Option<String>> {
    let mut leaders = Vec::new();
    for p in 0..partitions {
        let stream = ledger::log::stream_name(p);
        let reply = nc.request(format!("$JS.API.STREAM.INFO.{stream}"), "".into()).await.ok();
        let info: Option<serde_json::Value> = reply.and_then(|r| serde_json::from_slice(&r.payload).ok());
        leaders.push(info.and_then(|i| i["cluster"]["leader"].as_str().map(str::to_string)));
    }
    leaders
}

/// A ledger of 4 partitions at R3: `init` spreads the partitions' leaders
/// over the three nodes; then a random node (leader of some partitions or
/// of none) is SIGKILLed every few seconds and restarted, under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_cluster_of_4_partitions_random_node_killed_loses_nothing() {
    let _serial = serial();
    let mut rng = Rng(seed("R3 cluster, 4 partitions"));
    let kills = rounds(20);
    let mut cluster = Cluster::start();
    let url = cluster.url();
    let out =
        on_the_new_cluster(&["--nats", &url, "init", "--partitions", "4", "--replicas", "3", "--json"]).await;
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Partition P is led by the (P mod 3)-th node, by name: every node
    // leads at least one partition.
    let leaders: Vec<&str> =
        shown["streams"].as_array().unwrap().iter().map(|s| s["leader"].as_str().unwrap()).collect();
    assert_eq!(leaders, ["n1", "n2", "n3", "n1"], "{shown}");
    seed_ledger(&url, &[]);
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut serves: Vec<Serve> = dirs.iter().map(|d| Serve::spawn(&url, d.path(), 3_600_000)).collect();
    wait_for_service(&url, 2).await;
    let (addresses, options) = ledger_client::nats::options(&url, "fault-admin", None);
    let admin = options.retry_on_initial_connect().connect(addresses).await.unwrap();
    let (stop, clients) = start_clients(&url, rng.next(), PATIENT);
    let mut led = 0;
    for _ in 0..kills {
        tokio::time::sleep(rng.millis(1500, 3500)).await;
        let victim = (rng.next() % 3) as usize;
        let name = cluster.nodes[victim].name.clone();
        led += partition_leaders(&admin, 4).await.iter().filter(|l| l.as_deref() == Some(&name)).count();
        cluster.kill_node(victim);
        tokio::time::sleep(rng.millis(500, 2000)).await;
        cluster.start_node(victim);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = finish(&url, stop, clients, &mut serves).await;
    eprintln!("R3 cluster, 4 partitions: {kills} nodes killed, leading {led} partitions between them");
    report("R3 cluster, 4 partitions", kills, &tally);
    assert!(led > 0, "no kill took a partition's leader");
    drop(serves);
    verify(&url, dirs[0].path());
}

/// A small tmpfs, unmounted on drop: a disk that fills up.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let args = ["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.path().to_str().unwrap()];
        let mounted = Command::new("mount").args(args).output().unwrap();
        if !mounted.status.success() {
            let with_sudo = Command::new("sudo").arg("-n").arg("mount").args(args).output();
            assert!(
                with_sudo.is_ok_and(|o| o.status.success()),
                "mounting a tmpfs needs root or passwordless sudo: {}",
                String::from_utf8_lossy(&mounted.stderr)
            );
        }
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).and_then(|()| file.sync_all()).is_ok() {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).output();
    }
}

/// The views' disk fills up under a served ledger (log on JetStream): the
/// service keeps answering (commands the log takes are recorded, views it
/// cannot store are `unavailable`), never crashes, and recovers when space
/// returns; the log holds every acknowledged command once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_views_answers_unavailable_and_recovers() {
    let _serial = serial();
    use common::http::{add_key, Http, HttpServe};
    let disk = Tmpfs::mount("16m");
    let nats = common::JetStream::new();
    let url = nats.url();
    let data = disk.path().join("data");
    let panel = add_key(&data, &["--panel"]);
    let user = add_key(&data, &["acme", "user"]);
    let mut serve = HttpServe::spawn(&data, Some(&url));
    let http = Http::new(&serve.base);
    let plan = json!({"plan": {"id": "big", "currency": "USD", "price": "1.00", "per_seat": false, "storage_quota_gb": "1", "monthly_token_limit": 1_000_000_000u64, "token_overage": "block", "addons": []}});
    assert_eq!(http.post("/v1/admin/define_plan", Some(&panel), &plan).await.status, 200);
    let subscribe = json!({"tenant": "acme", "plan": "big", "seats": 1});
    assert_eq!(http.post("/v1/admin/subscribe", Some(&panel), &subscribe).await.status, 200);

    let filler = disk.fill();
    let (mut acked, mut unknown) = (Vec::new(), Vec::new());
    let mut views_behind = false;
    for i in 0..300 {
        // Long keys: every event is a row the views must store.
        let command = json!({"request": format!("r{i}-{}", "x".repeat(100)), "tokens": 1 + i % 7});
        let answer = http.post("/v1/tenants/acme/consume_tokens", Some(&user), &command).await;
        match answer.status {
            200 => acked.push(command),
            _ => {
                answer.problem(503, "unavailable");
                unknown.push(command);
            }
        }
        if i % 50 == 49 {
            let usage = http.get("/v1/tenants/acme/usage", Some(&user)).await;
            if usage.status != 200 {
                usage.problem(503, "unavailable");
                views_behind = true;
            }
        }
    }
    let health = http.get("/healthz", None).await;
    assert!(views_behind || health.status == 503, "the disk never filled: {:?}", health.body);
    assert!(serve.child.try_wait().unwrap().is_none(), "serve exited on a full disk");
    eprintln!("disk full: {} commands recorded, {} unavailable while full", acked.len(), unknown.len());

    // Space returns: the views catch up; unknown outcomes are retried.
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for command in unknown {
        loop {
            let answer = http.post("/v1/tenants/acme/consume_tokens", Some(&user), &command).await;
            if answer.status == 200 {
                break;
            }
            answer.problem(503, "unavailable");
            assert!(Instant::now() < deadline, "still unavailable a minute after space returned");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        acked.push(command);
    }
    let expected: u64 = acked.iter().map(|c| c["tokens"].as_u64().unwrap()).sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let usage = http.get("/v1/tenants/acme/usage", Some(&user)).await;
        if usage.status == 200 && usage.body["tokens"]["used"] == expected {
            break;
        }
        assert!(Instant::now() < deadline, "the views did not recover: {:?}", usage.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(http.get("/healthz", None).await.status, 200);
    serve.kill();
    let seen = Seen {
        acked: acked
            .iter()
            .map(|c| {
                (
                    "acme".to_string(),
                    c["request"].as_str().unwrap().to_string(),
                    c["tokens"].as_u64().unwrap(),
                )
            })
            .collect(),
        ..Seen::default()
    };
    let tally = tally(&url, vec![seen]).await;
    assert_eq!((tally.lost, tally.doubled), (0, 0));
    verify(&url, &data);
}

/// A view file damaged at rest (truncated, zeroed, bit-flipped, deleted,
/// its config garbled): the ledger notices at open what sled cannot
/// recover, moves it aside and rebuilds from the log; what sled recovers
/// is a consistent prefix the projector resumes from. Either way the
/// answers equal the undamaged ones and `audit verify` is clean.
#[test]
fn damaged_views_are_noticed_at_open_and_rebuilt() {
    let _serial = serial();
    let scratch = tempfile::tempdir().unwrap();
    let base = scratch.path().join("base");
    let demo =
        Command::new(env!("CARGO_BIN_EXE_ledger")).arg("--data").arg(&base).arg("demo").output().unwrap();
    assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stderr));
    let run = |data: &Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ledger")).arg("--data").arg(data).args(args).output().unwrap()
    };
    let expected = run(&base, &["usage", "acme", "--json"]).stdout;
    let expected_invoice = run(&base, &["invoice", "acme", "--json"]).stdout;
    type Damage = fn(&Path);
    let damages: [(&str, Damage, bool); 6] = [
        (
            "truncated to nothing",
            |db| std::fs::File::options().write(true).open(db).unwrap().set_len(0).unwrap(),
            true,
        ),
        (
            "truncated to half",
            |db| {
                let len = std::fs::metadata(db).unwrap().len();
                std::fs::File::options().write(true).open(db).unwrap().set_len(len / 2).unwrap()
            },
            false,
        ),
        ("a block zeroed", |db| overwrite(db, 1, 3, &[0u8; 4096]), false),
        ("bytes flipped", |db| overwrite(db, 1, 2, &[0xFF; 8]), false),
        ("deleted", |db| std::fs::remove_file(db).unwrap(), true),
        ("config garbled", |db| std::fs::write(db.with_file_name("conf"), b"garbage").unwrap(), false),
    ];
    for (what, damage, moved_aside) in damages {
        let data = scratch.path().join(what.replace(' ', "-"));
        let copied = Command::new("cp").arg("-r").arg(&base).arg(&data).status().unwrap();
        assert!(copied.success());
        damage(&data.join("views/db"));
        let usage = run(&data, &["usage", "acme", "--json"]);
        assert_eq!(usage.stdout, expected, "{what}: {}", String::from_utf8_lossy(&usage.stderr));
        assert_eq!(run(&data, &["invoice", "acme", "--json"]).stdout, expected_invoice, "{what}");
        let noticed = data.join("views.damaged").exists();
        assert_eq!(noticed, moved_aside, "{what}: {}", String::from_utf8_lossy(&usage.stderr));
        if moved_aside {
            assert!(String::from_utf8_lossy(&usage.stderr).contains("damaged"), "{what}");
        }
        let verify = run(&data, &["audit", "verify"]);
        assert!(verify.status.success(), "{what}: {}", String::from_utf8_lossy(&verify.stdout));
    }
}

/// Overwrites `bytes` at `numerator/denominator` of the file's length.
fn overwrite(file: &Path, numerator: u64, denominator: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::options().write(true).open(file).unwrap();
    let len = f.metadata().unwrap().len();
    f.seek(SeekFrom::Start(len * numerator / denominator)).unwrap();
    f.write_all(&bytes[..bytes.len().min((len - len * numerator / denominator) as usize)]).unwrap();
}
