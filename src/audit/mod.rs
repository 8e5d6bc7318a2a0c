//! `ledger replay`, `ledger audit verify` and the point-in-time queries:
//! everything that re-derives state from the log instead of trusting views.

pub mod explain;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use projections::{View, ViewStore};
use replay::audit::{compare_views, Finding};
use replay::Progress;

use crate::log::{
    AnyLog, AppendBatch, AppendMessage, EmbeddedLog, EventLog, Position, Source, MAX_BATCH_MESSAGES,
};
use crate::projector::ALL_VIEWS;

/// A progress line on a terminal: position, events/s and time left.
struct TerminalProgress {
    started: Instant,
    last: Instant,
    start: Option<u64>,
}

impl Progress for TerminalProgress {
    fn update(&mut self, reached: u64, target: Option<u64>) {
        let start = *self.start.get_or_insert(reached);
        let done = target.is_some_and(|t| reached >= t);
        if self.last.elapsed() < Duration::from_millis(250) && !done {
            return;
        }
        self.last = Instant::now();
        let rate = (reached - start) as f64 / self.started.elapsed().as_secs_f64().max(1e-6);
        let target = target.unwrap_or(reached);
        let eta = if rate > 0.0 { (target.saturating_sub(reached)) as f64 / rate } else { 0.0 };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\rreplay: {reached}/{target} events  {rate:>9.0} events/s  ETA {eta:>5.0}s ");
        if done {
            let _ = writeln!(err);
        }
    }
}

/// Rebuilds `views` from the log into a fresh directory, up to `to` (default:
/// the head). On a ledger of several partitions, `to` is a position of one
/// of them: that partition is rebuilt to it, and the catalog's partition 0
/// to its head (every partition is rebuilt to its head without `to`;
/// partition 0 is read last and folded first). Shows a progress line on a
/// terminal, tracing logs otherwise. Returns the position reached and the
/// open store (sled locks its directory, so callers use this handle rather
/// than opening it again).
pub async fn replay_into<L: EventLog>(
    log: &L,
    dir: &Path,
    to: Option<u64>,
    views: &[&'static dyn View],
) -> anyhow::Result<(u64, ViewStore)> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        anyhow::bail!("{} is not empty: replay writes into a fresh directory", dir.display());
    }
    let target_partition = to.map_or(0, |to| Position::unpack(to).partition);
    let heads = crate::log::heads(log).await?;
    let store = ViewStore::open(dir)?;
    let mut reached = 0;
    for (partition, head) in (0..).zip(heads) {
        // Up to a position: its partition to there, and the catalog's
        // (partition 0) to its head, which every other partition's events
        // lean on; nothing of the rest.
        let until = match to {
            Some(to) if partition == target_partition => to.min(head),
            Some(_) if partition != 0 => continue,
            _ => head,
        };
        let part = log.in_partition(partition);
        let options = replay::Options { until: Some(until), batch_size: replay::CATCH_UP_BATCH };
        let done = if until == 0 {
            0
        } else if std::io::stderr().is_terminal() {
            let mut progress =
                TerminalProgress { started: Instant::now(), last: Instant::now(), start: None };
            replay::run(&part, &store, views, options, &mut progress).await?
        } else {
            replay::run(&part, &store, views, options, &mut replay::LogProgress::new()).await?
        };
        if partition == target_partition {
            reached = done;
        }
    }
    store.flush().await?;
    Ok((reached, store))
}

/// `ledger replay --into DIR`: DIR becomes a data directory of its own,
/// usable as `--data DIR`. With the embedded log, the log up to `to` is
/// copied into `DIR/log` (same positions, same bytes) and the views rebuilt
/// from it, so DIR answers as the ledger stood at `to`. With JetStream the
/// log stays the stream; `DIR/views` holds the rebuilt views, bound to it
/// (queries catch them up with the stream; `--as-of-seq` pins a position).
/// Returns the position reached.
pub async fn replay_into_data_dir(
    log: &AnyLog,
    dir: &Path,
    to: Option<u64>,
    views: &[&'static dyn View],
) -> anyhow::Result<u64> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        anyhow::bail!("{} is not empty: replay writes into a fresh directory", dir.display());
    }
    let (reached, store) = match log {
        AnyLog::Embedded(source) => {
            let until = to.unwrap_or(u64::MAX).min(log.head().await?);
            let copy = AnyLog::Embedded(copy_embedded_log(source, &dir.join("log"), until).await?);
            replay_into(&copy, &dir.join("views"), Some(until), views).await?
        }
        AnyLog::JetStream(_) => replay_into(log, &dir.join("views"), to, views).await?,
    };
    // Bind the views to their log, as every data directory's are.
    store.tree("meta")?.insert(b"log", log.describe().as_bytes())?;
    store.flush().await?;
    Ok(reached)
}

/// Copies the embedded log's records `1..=until` into a new embedded log
/// at `dir`: the same bytes at the same positions.
async fn copy_embedded_log(source: &EmbeddedLog, dir: &Path, until: u64) -> anyhow::Result<EmbeddedLog> {
    let copy = EmbeddedLog::open(dir)?;
    if until == 0 {
        return Ok(copy);
    }
    let mut records = source.read(1, None).await?;
    let mut batch = AppendBatch::default();
    let mut next = 1;
    while let Some(record) = records.next().await {
        let record = record?;
        let (tenant, kind) = events::parse_subject(&record.subject)
            .and_then(|(tenant, kind)| Some((tenant.to_string(), events::EventKind::from_name(kind)?.name())))
            .ok_or_else(|| {
                anyhow::anyhow!("position {}: unexpected subject {}", record.position, record.subject)
            })?;
        batch.messages.push(AppendMessage { tenant, kind, payload: record.payload.clone() });
        let last = record.position >= until;
        if batch.messages.len() == MAX_BATCH_MESSAGES || last {
            let ack = copy.append(std::mem::take(&mut batch)).await?;
            anyhow::ensure!(ack.first == next, "the copy's positions drifted from the log's");
            next = ack.last + 1;
        }
        if last {
            break;
        }
    }
    Ok(copy)
}

/// The last position of `log`'s partition whose event happened at or
/// before `t_us` (events are recorded in non-decreasing `at` order). 0 when
/// none did.
pub async fn position_at<L: EventLog>(log: &L, t_us: i64) -> anyhow::Result<u64> {
    let head = log.head().await?;
    let mut last = 0;
    if head == 0 {
        return Ok(0);
    }
    let mut records = log.read(1, None).await?;
    while let Some(record) = records.next().await {
        let record = record?;
        if let Ok(envelope) = record.decode().event {
            if envelope.at_us > t_us {
                break;
            }
        }
        last = record.position;
        if record.position >= head {
            break;
        }
    }
    Ok(last)
}

fn finding_json(f: &Finding) -> serde_json::Value {
    let at = f.position.map(Position::unpack);
    serde_json::json!({
        "kind": f.kind, "partition": at.map(|p| p.partition), "position": at.map(|p| p.seq), "view": f.view,
        "key": f.key, "detail": f.detail, "expected": f.expected, "found": f.found,
    })
}

/// `ledger audit verify`: the live views against a clean rebuild, and
/// every partition's chains and invoices (partition 0's catalog first: the
/// other partitions' invoices are priced with it).
pub async fn verify(log: &AnyLog, live: &ViewStore, json: bool) -> anyhow::Result<ExitCode> {
    let heads = log.heads().await?;
    for (partition, head) in heads.iter().enumerate() {
        let part = log.in_partition(partition as u32);
        let options = replay::Options { until: Some(*head), ..Default::default() };
        crate::projector::run(&part, live, &ALL_VIEWS, options).await?;
    }
    let scratch = tempfile::tempdir()?;
    let (_, rebuilt) = replay_into(log, &scratch.path().join("views"), None, &ALL_VIEWS).await?;
    let mut findings = compare_views(live, &rebuilt, &ALL_VIEWS)?;
    let mut summary = replay::audit::LogSummary::default();
    let mut catalog = projections::domain::CatalogState::default();
    for (partition, head) in heads.iter().enumerate() {
        let part = log.in_partition(partition as u32);
        let (one, folded) = replay::audit::audit_log_with(&part, *head, catalog).await?;
        catalog = folded;
        summary.events += one.events;
        summary.invoices_checked += one.invoices_checked;
        for (how, n) in one.digests {
            *summary.digests.entry(how).or_default() += n;
        }
        summary.findings.extend(one.findings);
    }
    let head = heads[0];
    findings.extend(summary.findings.iter().cloned());
    if json {
        let views: Vec<serde_json::Value> = ALL_VIEWS
            .iter()
            .map(|v| {
                let digest =
                    live.digest(v.name()).map(|d| d.iter().map(|b| format!("{b:02x}")).collect::<String>());
                serde_json::json!({"view": v.name(), "digest": digest.unwrap_or_default()})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "ok": findings.is_empty(),
                "head": head,
                "partitions": heads.len(),
                "heads": heads.iter().map(|h| Position::unpack(*h).seq).collect::<Vec<_>>(),
                "events": summary.events,
                "invoices_checked": summary.invoices_checked,
                "digests": summary.digests,
                "views": views,
                "findings": findings.iter().map(finding_json).collect::<Vec<_>>(),
            })
        );
    } else {
        if heads.len() == 1 {
            println!("log: {} events up to position {head}", summary.events);
        } else {
            let ends: Vec<String> = heads.iter().map(|h| Position::unpack(*h).seq.to_string()).collect();
            println!(
                "log: {} events in {} partitions, up to {}",
                summary.events,
                heads.len(),
                ends.join(", ")
            );
        }
        for view in ALL_VIEWS {
            let differs = findings.iter().any(|f| f.view == Some(view.name()));
            println!(
                "view {:<10} {}",
                view.name(),
                if differs { "DIFFERS from a clean rebuild" } else { "matches a clean rebuild" }
            );
        }
        let digests: Vec<String> = summary.digests.iter().map(|(how, n)| format!("{how} {n}")).collect();
        println!(
            "finalized invoices re-derived: {}{}",
            summary.invoices_checked,
            if digests.is_empty() { String::new() } else { format!(" (digests: {})", digests.join(", ")) }
        );
        for f in &findings {
            let at = f.position.map(|p| format!(" at position {}", Position::unpack(p))).unwrap_or_default();
            let key = f.key.as_deref().map(|k| format!(" [{k}]")).unwrap_or_default();
            let view = f.view.map(|v| format!(" view {v}")).unwrap_or_default();
            let values = match (&f.expected, &f.found) {
                (Some(e), Some(x)) => format!(": expected {e}, found {x}"),
                (None, Some(x)) => format!(": found {x}"),
                _ => String::new(),
            };
            println!("FINDING {}{at}{view}{key}: {}{values}", f.kind, f.detail);
        }
        println!("{}", if findings.is_empty() { "audit: OK" } else { "audit: FAILED" });
    }
    Ok(if findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
