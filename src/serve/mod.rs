//! `ledger serve`: the ledger as a service, over NATS (the spec's "Service
//! contract"), over HTTP (its "HTTP contract"), or both in one process
//! sharing one engine.
//!
//! - `core`: what the front ends share (parsing fields into submissions,
//!   deadlines, batches, views, measuring health, metrics);
//! - `health`: where the views stand against the log, which `/healthz`
//!   answers and `/metrics` reports;
//! - `nats`: the NATS service endpoints;
//! - `http`: the HTTP API, CloudEvents ingest, `/metrics`, `/healthz`,
//!   OpenAPI and the console;
//! - `keys`: the HTTP API keys, stored with the ledger;
//! - `local`: the data directory's socket, which answers the command
//!   line's queries while `serve` holds the directory;
//! - `clock`: the billing clock, a task of every instance.
//!
//! Two instances may both decide for one tenant: the per-tenant expected
//! sequence on every append makes the later one reload and decide again
//! (see `engine`), so they never corrupt a tenant.
//!
//! The billing clock finalizes each period that has ended with an admin
//! `close_period`. The decider makes that exactly-once however many
//! instances race or restart: a second `close_period` for the same tenant
//! finds the next period not ended and is rejected, recording nothing.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use projections::ViewStore;

mod clock;
mod config;
pub mod core;
mod health;
pub mod http;
pub mod keys;
pub mod local;
mod metrics;
mod nats;

pub use clock::close_ended_periods;
pub use config::{credentials_env, nats_authorization, TenantCredentials};
pub use nats::{inbox_prefix, parse_request, reply_allowed, ParsedRequest, SERVICE_NAME};

use self::core::Core;
use crate::engine::Ledger;
use crate::log::{AnyLog, JetStreamLog};

pub use self::core::{QueryView, MAX_BATCH_COMMANDS};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How often the billing clock looks for ended periods.
    pub clock_interval: Duration,
    /// Where webhooks may go.
    pub egress: crate::notify::egress::Egress,
}

/// A running NATS service. Dropping it does not stop it; call
/// [`Server::stop`].
pub struct Server {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    service: async_nats::service::Service,
    ledger: Ledger,
}

impl Server {
    /// Starts the engine, the projectors, the service endpoints and the
    /// billing clock over `log` and `views`.
    pub async fn start(log: JetStreamLog, views: ViewStore, options: ServeOptions) -> anyhow::Result<Server> {
        Server::start_with_http(log, views, options, None).await
    }

    /// [`Server::start`], plus the HTTP API on `http` (a bound listener and
    /// the keys it accepts) over the same engine.
    pub async fn start_with_http(
        log: JetStreamLog,
        views: ViewStore,
        options: ServeOptions,
        http: Option<(tokio::net::TcpListener, Arc<keys::KeyRing>)>,
    ) -> anyhow::Result<Server> {
        let ledger = Ledger::start(log.clone(), views.clone()).await?;
        let any = AnyLog::JetStream(log.clone());
        let core = Arc::new(Core::new(ledger.clone(), any.clone()));
        let (service, mut tasks) = nats::start(log.client(), core.clone()).await?;
        // A JetStream ledger keeps its notification store on the server:
        // no data directory is needed.
        let store = crate::notify::open_store(Path::new(""), &any).await?;
        tasks.push(spawn_delivery(store.clone(), &options, &ledger, &any, &core));
        if let Some((listener, keys)) = http {
            let state = http::Http { core, keys, notify: store, egress: options.egress.clone() };
            tasks.push(tokio::spawn(http::serve(listener, state)));
        }
        tasks.push(tokio::spawn(clock::billing_clock(ledger.clone(), options.clock_interval)));
        Ok(Server { tasks, service, ledger })
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Stops taking requests and the clock, then the projectors.
    pub async fn stop(self) {
        let _ = self.service.stop().await;
        stop(&self.tasks, &self.ledger).await;
    }
}

/// Webhook deliveries and NATS notifications, beside the front ends.
fn spawn_delivery(
    store: crate::notify::store::NotifyStore,
    options: &ServeOptions,
    ledger: &Ledger,
    log: &AnyLog,
    core: &Core,
) -> tokio::task::JoinHandle<()> {
    let (records, recorded) = tokio::sync::mpsc::unbounded_channel();
    let writer = crate::notify::deliver::Delivery::write_records(store.clone(), recorded);
    let delivery = Arc::new(crate::notify::deliver::Delivery {
        store,
        egress: options.egress.clone(),
        ledger: ledger.clone(),
        log: log.clone(),
        stats: core.metrics.deliveries(),
        records,
    });
    tokio::spawn(async move {
        // Stops (aborted) with the delivery, as everything it spawns does.
        let _writer = crate::notify::deliver::Task(tokio::spawn(writer));
        delivery.run().await;
    })
}

/// How long `serve` keeps trying to open a store of the ledger's on the
/// server before it gives up: a JetStream cluster electing a leader (a node
/// restarting, say) times requests out for a few seconds, which is no
/// reason to stop.
const STORE_PATIENCE: Duration = Duration::from_secs(30);

/// What `open` opens, tried again every second while it fails, for up to
/// [`STORE_PATIENCE`].
async fn patiently<T, F>(what: &str, open: impl Fn() -> F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + STORE_PATIENCE;
    loop {
        match open().await {
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %format!("{error:#}"), "opening {what}; trying again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            opened => return opened,
        }
    }
}

async fn stop(tasks: &[tokio::task::JoinHandle<()>], ledger: &Ledger) {
    for task in tasks {
        task.abort();
    }
    ledger.shutdown().await;
    let _ = ledger.views().flush().await;
}

/// `ledger serve`: NATS endpoints when the log is JetStream (`--nats`), the
/// HTTP API when `http` is given, both over one engine. Runs until
/// interrupted (Ctrl-C or SIGTERM).
pub async fn run(
    data: &Path,
    nats: Option<&str>,
    replicas: usize,
    http: Option<SocketAddr>,
    options: ServeOptions,
) -> anyhow::Result<()> {
    if nats.is_none() && http.is_none() {
        anyhow::bail!("serve needs --nats URL (NATS service), --http ADDR (HTTP API), or both");
    }
    let log = crate::store::open_log(data, nats, replicas).await?;
    let views = crate::store::open_views(data, &log)?;
    let ledger = Ledger::start(log.clone(), views).await?;
    let core = Arc::new(Core::new(ledger.clone(), log.clone()));
    let mut tasks = Vec::new();
    let notify = patiently("the webhook store", || crate::notify::open_store(data, &log)).await?;
    // The local socket and HTTP first: once any "serving ledger" line is
    // logged, every front end asked for takes requests, and the command
    // line's queries reach this serve.
    if let Some(listener) = local::bind(data)? {
        tasks.push(tokio::spawn(local::serve(listener, core.clone())));
    }
    if let Some(address) = http {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("binding the HTTP API to {address}: {e}"))?;
        let keys = Arc::new(keys::KeyRing::new(
            patiently("the API keys", || keys::KeyStore::open(data, &log)).await?,
        ));
        let bound = listener.local_addr()?;
        let state =
            http::Http { core: core.clone(), keys, notify: notify.clone(), egress: options.egress.clone() };
        tasks.push(tokio::spawn(http::serve(listener, state)));
        tracing::info!("serving ledger HTTP on http://{bound}");
    }
    let mut service = None;
    if let AnyLog::JetStream(log) = &log {
        let (started, endpoints) = nats::start(log.client(), core.clone()).await?;
        service = Some(started);
        tasks.extend(endpoints);
    }
    tasks.push(tokio::spawn(clock::billing_clock(ledger.clone(), options.clock_interval)));
    tasks.push(spawn_delivery(notify, &options, &ledger, &log, &core));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping");
    if let Some(service) = service {
        let _ = service.stop().await;
    }
    stop(&tasks, &ledger).await;
    let _ = std::fs::remove_file(local::socket_path(data));
    Ok(())
}
