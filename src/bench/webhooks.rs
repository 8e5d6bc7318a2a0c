//! `ledger bench webhooks`: what webhooks cost decisions, and whether
//! delivery keeps up. On JetStream (`sync_interval: always`), one `serve`
//! in this process (engine, NATS service, deliveries), receivers on
//! loopback only (the service runs with `--webhook-allow-hosts 127.0.0.1`).
//!
//! 1. Decisions from 100 concurrent clients in rounds with no endpoint
//!    and with three (two answering at once, one failing every delivery,
//!    retried after 1, 2 and 4 s), in ABBA order (decisions slow a little
//!    as the log and the tenants' periods grow). The target's load is usage
//!    with a notification in it: 95% `consume_tokens`, 5% `set_seats` (a
//!    `subscription.changed` each). Target: with endpoints >= 0.9 of
//!    without. The same with every decision notifying is reported beside
//!    it (three deliveries per decision, on the same two cores).
//! 2. Decisions paced at 1,000/s for a few seconds, one endpoint answering
//!    at once: how old a notification is when it arrives (from its event's
//!    `at`). Target: the oldest under 1 s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use events::Actor;

use super::decide::tenant_name;
use super::support::{connect, machine, print_targets, rate};
use crate::engine::command::{Command, Submission};
use crate::engine::{Ledger, Reply};
use crate::notify::store::NotifyStore;

/// What the bench's receivers saw.
#[derive(Default)]
struct Seen {
    delivered: AtomicU64,
    /// Seconds from each notification's `timestamp` to its arrival.
    ages: Mutex<Vec<f64>>,
}

/// A receiver on 127.0.0.1: 200 at once (recording each arrival's age), or
/// 500 to everything.
async fn receiver(fail: bool) -> anyhow::Result<(String, Arc<Seen>)> {
    let seen = Arc::new(Seen::default());
    let state = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = state.clone();
            async move {
                if fail {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                let arrived = chrono::Utc::now().timestamp_micros();
                if let Some(at) = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str()?).ok())
                {
                    seen.ages.lock().unwrap().push((arrived - at.timestamp_micros()) as f64 / 1e6);
                }
                seen.delivered.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, seen))
}

async fn add_endpoint(
    store: &NotifyStore,
    ledger: &Ledger,
    url: &str,
    retries_ms: Vec<u64>,
) -> anyhow::Result<String> {
    let heads = ledger.appended_all();
    let endpoint = crate::notify::admin::new_endpoint(url, None, None, retries_ms, &heads, false)?;
    store.put_endpoint(&endpoint).await?;
    Ok(endpoint.id)
}

fn seats(tenant: String, n: u64) -> Submission {
    Submission::new(Actor::Admin, Command::SetSeats { tenant, seats: 1 + (n % 50) as i64 })
}

/// Decision `n` of a load where one in `notify_every` makes a
/// notification (`set_seats`) and the rest are token use.
fn decision(tenant: String, n: u64, notify_every: u64) -> Submission {
    if n % notify_every == 0 {
        return seats(tenant, n);
    }
    let request = format!("r-{n:016x}");
    Submission::new(
        Actor::TenantUser { tenant: tenant.clone() },
        Command::ConsumeTokens { tenant, request, tokens: 1 },
    )
}

/// `clients` clients each decide on their own tenant, `total` in all.
async fn round(
    ledger: &Ledger,
    clients: usize,
    total: usize,
    offset: u64,
    notify_every: u64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..total / clients {
                let n = offset + (i * clients + c) as u64;
                match ledger.submit(decision(tenant_name("hook", c), n, notify_every)).await {
                    Reply::Ok { .. } => {}
                    other => anyhow::bail!("a decision failed: {other:?}"),
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

pub async fn webhooks(nats: Option<&str>, decisions: usize, rounds: usize) -> anyhow::Result<()> {
    let (_server, log) = connect(nats).await?;
    println!("bench webhooks: {decisions} set_seats per round from 100 clients, {rounds} rounds each way");
    println!(
        "machine: {}; nats-server {} with sync_interval: always",
        machine(),
        log.client().server_info().version
    );
    let (service, ledger, _views) = super::decide::start_service(&log).await?;
    let clients = 100;
    for c in 0..clients {
        let subscribe = Command::Subscribe { tenant: tenant_name("hook", c), plan: "bench".into(), seats: 1 };
        anyhow::ensure!(matches!(
            ledger.submit(Submission::new(Actor::Admin, subscribe)).await,
            Reply::Ok { .. }
        ));
    }
    let store =
        crate::notify::open_store(std::path::Path::new(""), &crate::log::AnyLog::JetStream(log.clone()))
            .await?;
    let (fast_a, seen_a) = receiver(false).await?;
    let (fast_b, seen_b) = receiver(false).await?;
    let (failing, _) = receiver(true).await?;

    // 1. Decisions with and without endpoints, alternating, for each load.
    let mut offset = 0;
    let mut delivered = 0u64;
    let mut ratios = Vec::new();
    for (load, notify_every) in [("usage, 5% notifying", 20u64), ("every decision notifying", 1)] {
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            // ABBA: the side measured first alternates, so the slowing of
            // decisions as the log and the tenants' periods grow weighs on
            // both sides alike rather than on whichever always runs second.
            let order = if r % 2 == 0 { [false, true] } else { [true, false] };
            for with_endpoints in order {
                let ids = if with_endpoints {
                    let ids = vec![
                        add_endpoint(&store, &ledger, &fast_a, vec![1000]).await?,
                        add_endpoint(&store, &ledger, &fast_b, vec![1000]).await?,
                        add_endpoint(&store, &ledger, &failing, vec![1000, 2000, 4000]).await?,
                    ];
                    // The service starts delivering within a second of a change.
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    ids
                } else {
                    Vec::new()
                };
                let took = round(&ledger, clients, decisions, offset, notify_every).await?;
                offset += decisions as u64;
                let (rates, side) = if with_endpoints {
                    (&mut with, "three endpoints")
                } else {
                    (&mut without, "no endpoint    ")
                };
                rates.push(rate(decisions, took));
                println!("{load}, round {}: {side}  {:>8.0} decisions/s", r + 1, rate(decisions, took));
                if !with_endpoints {
                    continue;
                }
                // The answering ones receive every notification of the
                // round, then all three go (and their consumers with them,
                // within a second) before anything else is measured.
                delivered += (decisions as u64).div_ceil(notify_every);
                let deadline = Instant::now() + Duration::from_secs(120);
                let behind =
                    || [&seen_a, &seen_b].iter().any(|s| s.delivered.load(Ordering::Relaxed) < delivered);
                while behind() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                anyhow::ensure!(!behind(), "the answering endpoints did not receive every notification");
                for id in ids {
                    store.remove_endpoint(&id).await?;
                }
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let ratio = median(&mut with) / median(&mut without);
        println!(
            "{load}: with three endpoints (one failing) / with none: {ratio:.3} (medians of {rounds} rounds)"
        );
        ratios.push(ratio);
    }
    let ratio = ratios[0];

    // 2. Delivery lag at 1,000 decisions/s.
    let (url, seen) = receiver(false).await?;
    let id = add_endpoint(&store, &ledger, &url, vec![1000]).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seconds = 5;
    let paced = 1000 * seconds;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0usize;
    let mut pending = Vec::new();
    while sent < paced {
        tick.tick().await;
        // 10 per 10 ms: 1,000 per second, spread over the tenants.
        for _ in 0..10 {
            let answer =
                ledger.submit_nowait(seats(tenant_name("hook", sent % clients), offset + sent as u64)).await;
            pending.push(answer);
            sent += 1;
        }
    }
    for answer in pending {
        anyhow::ensure!(
            matches!(crate::engine::wait(answer).await, Reply::Ok { .. }),
            "a paced decision failed"
        );
    }
    let achieved = rate(paced, started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(30);
    while (seen.delivered.load(Ordering::Relaxed) as usize) < paced && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ages = seen.ages.lock().unwrap().clone();
    ages.sort_by(f64::total_cmp);
    let delivered = ages.len();
    let oldest = ages.last().copied().unwrap_or(f64::INFINITY);
    let p99 = ages.get(delivered.saturating_sub(1) * 99 / 100).copied().unwrap_or(f64::INFINITY);
    println!(
        "paced at {achieved:.0} decisions/s for {seconds} s: {delivered} of {paced} delivered; age at arrival p99 {:.0} ms, oldest {:.0} ms",
        p99 * 1000.0,
        oldest * 1000.0
    );
    store.remove_endpoint(&id).await?;
    print_targets(&[
        ("decisions (usage, 5% notifying) with 3 endpoints (1 failing) / none >= 0.9", ratio, 0.9, true),
        ("oldest undelivered notification at 1,000 decisions/s, seconds, <= 1", oldest, 1.0, false),
    ]);
    service.stop().await;
    Ok(())
}
