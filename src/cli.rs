//! The `ledger` command line: parsing and the commands' output.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use projections::{Activity, LedgerView, ViewStore};

use crate::apply::{apply_lines, read_lines, Future};
use crate::engine::Ledger;
use crate::log::{AnyLog, EventLog, Position, Source};
use crate::projector::{self, ProjectorOptions};
use crate::store::{open_existing_log, open_log, open_views};

#[derive(Debug, Parser)]
#[command(name = "ledger", version, about = "Event-sourced subscription ledger")]
pub struct Cli {
    /// Data directory: the embedded log (without --nats) and the views.
    #[arg(long, global = true, default_value = crate::demo::DEFAULT_DATA, env = "LEDGER_DATA")]
    pub data: PathBuf,
    /// NATS URL: use the JetStream stream LEDGER instead of the embedded log.
    #[arg(long, global = true, env = "LEDGER_NATS")]
    pub nats: Option<String>,
    /// Replicas for the LEDGER stream when the ledger creates it.
    #[arg(long, global = true, default_value_t = 1)]
    pub replicas: usize,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Rebuild every view from the log and compare it with the live views,
    /// re-derive every finalized invoice, and report every message the
    /// ledger did not write. Exits 1 on any finding.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Price the period holding T as if the tenant had been on another plan,
    /// from the same events, beside the real invoice.
    WhatIf {
        tenant: String,
        #[arg(long)]
        plan: String,
        /// RFC 3339; default: ledger time.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it, alone on stdout (the only time it is
    /// shown): `keys add TENANT user|admin`, or `keys add --panel`.
    Add {
        #[arg(required_unless_present = "panel", conflicts_with = "panel")]
        tenant: Option<String>,
        #[arg(required_unless_present = "panel", value_parser = ["user", "admin"])]
        role: Option<String>,
        /// A key for the control panel (actor `admin`).
        #[arg(long)]
        panel: bool,
    },
    /// Every key: id, tenant, role, created (never the key).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke the key with ID (as `keys list` shows it).
    Revoke { id: String },
}

/// Which state a query answers from: today's views, or the log as it stood.
#[derive(Debug, Clone, clap::Args)]
pub struct AsOf {
    /// Answer from the log up to this position (`P:SEQ`, or SEQ for
    /// partition 0), not from today's view.
    #[arg(long, conflicts_with = "as_of", value_name = "P:SEQ")]
    pub as_of_seq: Option<Position>,
    /// Answer from the log as it stood at this instant (RFC 3339).
    #[arg(long)]
    pub as_of: Option<String>,
}

/// What `usage` and `invoice` take.
#[derive(Debug, Clone, clap::Args)]
pub struct Query {
    pub tenant: String,
    /// The instant whose period (and token limit) to show, RFC 3339;
    /// default: ledger time.
    #[arg(long)]
    pub at: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// List the events and arithmetic behind each figure.
    #[arg(long, conflicts_with_all = ["as_of", "as_of_seq"])]
    pub explain: bool,
    #[command(flatten)]
    pub as_of: AsOf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print decoded events from the log.
    Events {
        /// Only this tenant's events (`_catalog` for plans and add-ons).
        #[arg(long)]
        tenant: Option<String>,
        /// First log position to print (`P:SEQ`, or SEQ for partition 0).
        #[arg(long, default_value = "0:1", value_name = "P:SEQ")]
        from: Position,
        #[arg(long)]
        json: bool,
    },
    /// Create a JetStream ledger of N partitions (tenants hashed over N
    /// streams, `docs/scale.md`), each stream with --replicas replicas. N
    /// is kept on the server and read by every writer; an existing ledger
    /// is left as it is if it has N partitions, refused otherwise.
    Init {
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=crate::log::MAX_PARTITIONS as i64))]
        partitions: u32,
        #[arg(long)]
        json: bool,
    },
    /// Copy every event of this ledger, in order, into a new JetStream
    /// ledger of N partitions at --to (made here as `init` makes it, and
    /// refused unless empty): how a ledger changes its number of
    /// partitions, or moves from the embedded log to JetStream. Each
    /// event keeps its bytes and hash chain; positions change
    /// (`docs/scale.md`).
    Copy {
        /// The nats-server(s) of the new ledger.
        #[arg(long, value_name = "URL")]
        to: String,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=crate::log::MAX_PARTITIONS as i64))]
        partitions: u32,
        #[arg(long)]
        json: bool,
    },
    /// The ledger's partitions: for each its stream, replicas, leader and
    /// last position.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Per-tenant activity (events by kind, last position, last time).
    Activity {
        /// One tenant; all when omitted.
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run the projectors: catch up with the log, or keep following it.
    Project {
        #[arg(long)]
        follow: bool,
        /// Most events folded per view write.
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        /// Only this view (`ledger` or `activity`); repeatable. Default: all.
        #[arg(long = "view")]
        views: Vec<String>,
    },
    /// Apply commands from a JSON Lines file (`-` for stdin); prints one
    /// result line per input line. Exit 2 if any line was malformed.
    ///
    /// A line: {"at"?: RFC 3339, "actor"?: "admin" | "<tenant>:admin" |
    /// "<tenant>:user", "cmd": NAME, ...fields}, for example
    /// {"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"r1","tokens":1200}.
    /// Every command, its fields and every rejection code: docs/commands.md;
    /// a file to try: examples/commands.jsonl.
    Apply {
        /// The JSON Lines file to read, or `-` for stdin.
        #[arg(value_name = "FILE")]
        file: String,
        /// Accept an `at` more than 24 hours after the wall clock (for
        /// simulations and tests); without it such a line is `future_at`,
        /// since one mistyped year would stamp every later command.
        #[arg(long)]
        allow_future: bool,
    },
    /// A tenant's usage: plan, seats, storage, tokens, add-ons.
    Usage(Query),
    /// A tenant's invoice for the period holding an instant.
    Invoice(Query),
    /// Rebuild views from the log into a fresh directory.
    Replay {
        /// A new data directory to rebuild into (must be empty or absent).
        /// With the embedded log it gets a copy of the log up to --to-seq,
        /// so `--data DIR` answers as the ledger stood then.
        #[arg(long)]
        into: PathBuf,
        /// Stop at this log position, `P:SEQ` or SEQ for partition 0
        /// (default: the head).
        #[arg(long, value_name = "P:SEQ")]
        to_seq: Option<Position>,
        /// Only this view (`ledger` or `activity`); repeatable. Default: all.
        #[arg(long = "view")]
        views: Vec<String>,
    },
    /// Audit the ledger against its log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Record a realistic multi-tenant month into a fresh ledger and print
    /// each command's answer, the tenants' usage and their invoices.
    ///
    /// The ledger is the data directory's embedded log (`--data`, default
    /// ./ledger-data), or the JetStream stream with `--nats`. Refuses a
    /// ledger that already holds events.
    Demo,
    /// Every tenant: plan, status, seats.
    Tenants {
        #[arg(long)]
        json: bool,
    },
    /// Serve commands and queries over NATS (with --nats) and/or HTTP (with
    /// --http; without --nats, on the embedded log), with the billing clock.
    /// Runs until Ctrl-C or SIGTERM.
    Serve {
        /// How often the billing clock looks for ended periods, in ms.
        #[arg(long, default_value_t = 10_000)]
        clock_interval_ms: u64,
        /// Serve the HTTP API, /metrics, /healthz and the console on ADDR
        /// (for example 127.0.0.1:8080; port 0 picks a free one, logged).
        #[arg(long, value_name = "ADDR", env = "LEDGER_HTTP")]
        http: Option<std::net::SocketAddr>,
        /// Webhooks reach only these hosts (names or addresses, as the URLs
        /// write them, comma-separated): an egress allowlist, checked
        /// before any name is looked up.
        #[arg(long, value_name = "H1,H2", value_delimiter = ',')]
        webhook_allow_hosts: Option<Vec<String>>,
        /// Tenants' webhooks may reach loopback, private and link-local
        /// addresses (by default only the panel's may).
        #[arg(long)]
        webhook_allow_private: bool,
    },
    /// Webhook endpoints: where notifications go, and how each went.
    #[command(subcommand)]
    Webhooks(crate::notify::admin::WebhooksCommand),
    /// API keys for the HTTP API, kept hashed with the ledger (the data
    /// directory's keys.json, or with --nats the server's KV bucket
    /// LEDGER_KEYS).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print the nats-server `authorization` block that isolates tenants:
    /// one credential per tenant role, the control panel, the ledger.
    /// Passwords are generated and printed in the block; keep it secret.
    NatsConfig {
        /// A tenant to create credentials for; repeatable.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// Also write the passwords to FILE as shell variables
        /// (LEDGER_PASSWORD, PANEL_PASSWORD, <TENANT>_ADMIN_PASSWORD,
        /// <TENANT>_USER_PASSWORD), readable by its owner only.
        #[arg(long)]
        env: Option<PathBuf>,
    },
    /// Benchmarks; each prints its figures and ratios.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEDGER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    // Colours only on a terminal: a log written to a file or a pipe stays
    // plain text.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_async(cli))
}

async fn run_async(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Bench(command) = cli.command {
        return crate::bench::run(command, cli.nats.as_deref(), cli.replicas)
            .await
            .map(|()| ExitCode::SUCCESS);
    }
    if let Command::Demo = &cli.command {
        return crate::demo::run(&cli.data, cli.nats.as_deref(), cli.replicas)
            .await
            .map(|()| ExitCode::SUCCESS);
    }
    if let Command::NatsConfig { tenants, env } = &cli.command {
        let password = || uuid::Uuid::new_v4().simple().to_string();
        let mut credentials = Vec::new();
        for tenant in tenants {
            crate::engine::command::tenant_id(tenant).map_err(|r| anyhow::anyhow!(r.message))?;
            credentials.push(crate::serve::TenantCredentials {
                tenant: tenant.clone(),
                admin_password: password(),
                user_password: password(),
            });
        }
        let (ledger_password, panel_password) = (password(), password());
        if let Some(file) = env {
            write_secret(
                file,
                &crate::serve::credentials_env(&ledger_password, &panel_password, &credentials),
            )?;
        }
        print!("{}", crate::serve::nats_authorization(&ledger_password, &panel_password, &credentials));
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Webhooks(command) = &cli.command {
        // A new endpoint starts after the log's head, which on a served
        // embedded ledger only its serve can read (sled admits one process).
        let served_head = match (command, &cli.nats) {
            (crate::notify::admin::WebhooksCommand::Add { .. }, None) => {
                crate::serve::local::head(&cli.data).await?
            }
            _ => None,
        };
        return crate::notify::admin::run(&cli.data, cli.nats.as_deref(), command, served_head).await;
    }
    if let Command::Serve { clock_interval_ms, http, webhook_allow_hosts, webhook_allow_private } =
        cli.command
    {
        let options = crate::serve::ServeOptions {
            clock_interval: Duration::from_millis(clock_interval_ms.max(1)),
            egress: crate::notify::egress::Egress {
                allow_hosts: webhook_allow_hosts,
                allow_private: webhook_allow_private,
            },
        };
        crate::serve::run(&cli.data, cli.nats.as_deref(), cli.replicas, http, options).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Init { partitions, json } = cli.command {
        let Some(url) = cli.nats.as_deref() else {
            anyhow::bail!(
                "init creates a JetStream ledger: pass --nats URL (the embedded log is one partition, made by \
                 `ledger apply` or `ledger demo`)"
            );
        };
        let options =
            crate::log::JetStreamOptions { replicas: cli.replicas, ..crate::log::JetStreamOptions::new(url) };
        let log = AnyLog::JetStream(crate::log::JetStreamLog::init(&options, partitions).await?);
        print_info(&log.info().await?, json)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Keys(command) = &cli.command {
        return keys(&cli.data, cli.nats.as_deref(), command).await;
    }
    if let Some(stream) = crate::serve::local::connect(&cli.data).await {
        return served(stream, &cli).await;
    }
    let log = match cli.command {
        // Only `apply` may start a ledger; everything else reads one.
        Command::Apply { .. } => open_log(&cli.data, cli.nats.as_deref(), cli.replicas).await?,
        _ => open_existing_log(&cli.data, cli.nats.as_deref(), cli.replicas).await?,
    };
    match cli.command {
        Command::Apply { file, allow_future } => {
            let store = open_views(&cli.data, &log)?;
            return apply(log, store, &file, allow_future).await;
        }
        Command::Usage(Query { tenant, at, json, explain, as_of }) => {
            let (store, at, _scratch) = query_state(&cli.data, &log, &tenant, at, &as_of).await?;
            if explain {
                let usage = crate::audit::explain::usage(&log, &store, &tenant, at).await?;
                print_view(&usage, json, |u| {
                    format!(
                        "{}{}\n",
                        crate::report::usage_table(u),
                        serde_json::to_string_pretty(&u["explain"]).unwrap_or_default()
                    )
                });
            } else {
                print_view(&crate::report::usage(&store, &tenant, at)?, json, crate::report::usage_table);
            }
        }
        Command::Invoice(Query { tenant, at, json, explain, as_of }) => {
            let (store, at, _scratch) = query_state(&cli.data, &log, &tenant, at, &as_of).await?;
            if explain {
                let invoice = crate::audit::explain::invoice(&log, &store, &tenant, at).await?;
                print_view(&invoice, json, crate::audit::explain::invoice_table);
            } else {
                print_view(&crate::report::invoice(&store, &tenant, at)?, json, crate::report::invoice_table);
            }
        }
        Command::Replay { into, to_seq, views } => {
            let selected = projector::select_views(&views).map_err(anyhow::Error::msg)?;
            let to_seq = to_seq.map(|p| seq_in_ledger(&log, p)).transpose()?;
            let reached = crate::audit::replay_into_data_dir(&log, &into, to_seq, &selected).await?;
            let reached = Position::unpack(reached);
            println!("rebuilt {} into {} at position {reached}", names(&selected), into.display());
            let nats = if matches!(log, AnyLog::JetStream(_)) { " --nats URL" } else { "" };
            println!("ask it like any data directory: ledger{nats} --data {} usage TENANT", into.display());
        }
        Command::Audit(AuditCommand::WhatIf { tenant, plan, at, json }) => {
            let store = open_views(&cli.data, &log)?;
            projector::catch_up_all(&log, &store, &[&LedgerView]).await?;
            let at = at.as_deref().map(parse_at).transpose()?;
            let report = crate::audit::explain::what_if(&store, &tenant, &plan, at)?;
            print_view(&report, json, crate::audit::explain::what_if_table);
        }
        Command::Audit(AuditCommand::Verify { json }) => {
            let store = open_views(&cli.data, &log)?;
            return crate::audit::verify(&log, &store, json).await;
        }
        Command::Tenants { json } => {
            let store = open_views(&cli.data, &log)?;
            projector::catch_up_all(&log, &store, &[&LedgerView]).await?;
            print_view(&crate::report::tenants(&store)?, json, crate::report::tenants_table);
        }
        Command::Info { json } => print_info(&log.info().await?, json)?,
        Command::Copy { to, partitions, json } => {
            let options = crate::log::JetStreamOptions {
                replicas: cli.replicas,
                ..crate::log::JetStreamOptions::new(to)
            };
            let target = crate::log::JetStreamLog::init(&options, partitions).await?;
            let copied = crate::log::copy::copy(&log, &target).await?;
            if json {
                println!("{}", serde_json::to_string(&copied)?);
            } else {
                println!(
                    "copied {} events of {} tenants from {} partition(s) into {} partition(s); {} records left behind (not ledger events)",
                    copied.events, copied.tenants, copied.partitions_from, copied.partitions_to, copied.skipped
                );
            }
        }
        Command::Events { tenant, from, json } => {
            let from = seq_in_ledger(&log, from)?;
            print_events(&log, tenant.as_deref(), from, json).await?
        }
        Command::Activity { tenant, json } => {
            let store = open_views(&cli.data, &log)?;
            projector::catch_up_all(&log, &store, &[&Activity]).await?;
            print_activity(&crate::report::activity(&store, tenant.as_deref())?, json);
        }
        Command::Project { follow, batch_size, views } => {
            let store = open_views(&cli.data, &log)?;
            let selected = projector::select_views(&views).map_err(anyhow::Error::msg)?;
            // Every partition (one fold loop each); partition 0, the
            // catalog's, read last so it holds every plan the others name.
            let heads = log.heads().await?;
            let runs = heads.into_iter().enumerate().map(|(partition, head)| {
                let (partition, until) = (partition as u32, (!follow).then_some(head));
                let (part, store, selected) = (log.in_partition(partition), store.clone(), selected.clone());
                async move {
                    let options = ProjectorOptions { batch_size, until };
                    projector::run(&part, &store, &selected, options).await
                }
            });
            let checkpoints = futures_util::future::try_join_all(runs).await?;
            store.flush().await?;
            let at: Vec<String> = checkpoints.iter().map(|c| Position::unpack(*c).seq.to_string()).collect();
            if at.len() == 1 {
                println!("views at position {}", at[0]);
            } else {
                println!("views at positions {} (partitions 0 to {})", at.join(", "), at.len() - 1);
            }
        }
        Command::Bench(_)
        | Command::Serve { .. }
        | Command::Keys(_)
        | Command::Webhooks(_)
        | Command::NatsConfig { .. }
        | Command::Init { .. }
        | Command::Demo => {
            unreachable!("handled above")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A data directory a running `serve` holds (sled admits one process): the
/// queries go through its socket and print as they would here; anything
/// that needs the directory's files is refused with what to do instead,
/// rather than waiting on sled's lock.
async fn served(stream: tokio::net::UnixStream, cli: &Cli) -> anyhow::Result<ExitCode> {
    use crate::serve::local::{ask, LocalQuery};
    let at = |at: &Option<String>| at.as_deref().map(parse_at).transpose();
    let no_as_of = |q: &Query| q.as_of.as_of.is_none() && q.as_of.as_of_seq.is_none();
    match &cli.command {
        Command::Usage(q) if no_as_of(q) => {
            let query = LocalQuery::Usage { tenant: q.tenant.clone(), at_us: at(&q.at)?, explain: q.explain };
            let usage = ask(stream, &query).await?.remove(0);
            if q.explain {
                print_view(&usage, q.json, |u| {
                    format!(
                        "{}{}\n",
                        crate::report::usage_table(u),
                        serde_json::to_string_pretty(&u["explain"]).unwrap_or_default()
                    )
                });
            } else {
                print_view(&usage, q.json, crate::report::usage_table);
            }
        }
        Command::Invoice(q) if no_as_of(q) => {
            let query =
                LocalQuery::Invoice { tenant: q.tenant.clone(), at_us: at(&q.at)?, explain: q.explain };
            let invoice = ask(stream, &query).await?.remove(0);
            let table =
                if q.explain { crate::audit::explain::invoice_table } else { crate::report::invoice_table };
            print_view(&invoice, q.json, table);
        }
        Command::Tenants { json } => {
            print_view(
                &ask(stream, &LocalQuery::Tenants).await?.remove(0),
                *json,
                crate::report::tenants_table,
            );
        }
        Command::Info { json } => {
            let info = ask(stream, &LocalQuery::Info).await?.remove(0);
            let info: crate::log::LedgerInfo = serde_json::from_value(info)?;
            print_info(&info, *json)?;
        }
        Command::Activity { tenant, json } => {
            print_activity(&ask(stream, &LocalQuery::Activity { tenant: tenant.clone() }).await?, *json);
        }
        Command::Events { tenant, from, json } => {
            use std::io::Write;
            // A served data directory is an embedded ledger: one partition.
            let from = from.in_partitions(1).map_err(anyhow::Error::msg)?;
            let records = ask(stream, &LocalQuery::Events { tenant: tenant.clone(), from }).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if !json {
                writeln!(out, "{}", events_header())?;
            }
            for record in &records {
                print_event(&mut out, record, *json)?;
            }
            out.flush()?;
        }
        other => anyhow::bail!(
            "{data} is held by a running `ledger serve`, which answers usage, invoice, tenants, activity and \
             events for it (through {data}/{socket}); `{name}` needs the directory itself: stop that serve, \
             or use another --data directory{nats}",
            data = cli.data.display(),
            socket = crate::serve::local::SOCKET_NAME,
            name = command_name(other),
            nats = if cli.nats.is_some() { " with the same --nats" } else { "" },
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The subcommand's name as typed, for messages.
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Events { .. } => "events",
        Command::Info { .. } => "info",
        Command::Init { .. } => "init",
        Command::Copy { .. } => "copy",
        Command::Activity { .. } => "activity",
        Command::Project { .. } => "project",
        Command::Apply { .. } => "apply",
        Command::Usage(_) => "usage",
        Command::Invoice(_) => "invoice",
        Command::Replay { .. } => "replay",
        Command::Audit(AuditCommand::Verify { .. }) => "audit verify",
        Command::Audit(AuditCommand::WhatIf { .. }) => "audit what-if",
        Command::Demo => "demo",
        Command::Tenants { .. } => "tenants",
        Command::Serve { .. } => "serve",
        Command::NatsConfig { .. } => "nats-config",
        Command::Bench(_) => "bench",
        Command::Keys(_) => "keys",
        Command::Webhooks(_) => "webhooks",
    }
}

/// Writes `text` to a new file only its owner may read.
fn write_secret(file: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display()))?;
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// A position typed on the command line, within this ledger's partitions
/// (as the ledger carries it inside: `log::SEQ_BITS`).
fn seq_in_ledger(log: &AnyLog, position: Position) -> anyhow::Result<u64> {
    position.in_partitions(log.partitions()).map_err(anyhow::Error::msg)
}

fn print_info(info: &crate::log::LedgerInfo, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(info)?);
    } else {
        print!("{}", info.table());
    }
    Ok(())
}

fn names(views: &[&dyn projector::View]) -> String {
    views.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
}

/// The views a query reads: today's (caught up), or a scratch rebuild of the
/// log up to `--as-of-seq` / `--as-of`. The instant asked about defaults to
/// `--as-of`. The scratch directory lives as long as the returned guard.
async fn query_state(
    data: &Path,
    log: &AnyLog,
    tenant: &str,
    at: Option<String>,
    as_of: &AsOf,
) -> anyhow::Result<(ViewStore, Option<i64>, Option<tempfile::TempDir>)> {
    let mut at = at.as_deref().map(parse_at).transpose()?;
    let as_of_us = as_of.as_of.as_deref().map(parse_at).transpose()?;
    let partition = crate::log::partition_of(tenant, log.partitions());
    let to = match (as_of.as_of_seq, as_of_us) {
        (Some(position), _) => {
            let seq = seq_in_ledger(log, position)?;
            anyhow::ensure!(
                position.partition == partition || position.seq == 0,
                "--as-of-seq {position}: tenant {tenant} lives in partition {partition}, so its positions are {partition}:SEQ"
            );
            let head = log.in_partition(partition).head().await?;
            anyhow::ensure!(
                seq <= head,
                "--as-of-seq {position} is past the log's last position, {}",
                Position::unpack(head).with_partition(partition)
            );
            Some(seq)
        }
        (None, Some(t)) => {
            at = at.or(Some(t));
            let found = crate::audit::position_at(&log.in_partition(partition), t).await?;
            // Nothing yet in the tenant's partition: its position 0.
            Some(if found == 0 { Position::pack(partition, 0) } else { found })
        }
        (None, None) => None,
    };
    match to {
        None => {
            let store = open_views(data, log)?;
            projector::catch_up_all(log, &store, &[&LedgerView]).await?;
            Ok((store, at, None))
        }
        Some(to) => {
            let scratch = tempfile::tempdir()?;
            let (_, store) =
                crate::audit::replay_into(log, &scratch.path().join("views"), Some(to), &[&LedgerView])
                    .await?;
            Ok((store, at, Some(scratch)))
        }
    }
}

fn parse_at(text: &str) -> anyhow::Result<i64> {
    crate::engine::command::parse_at(text).map_err(|r| anyhow::anyhow!(r.message))
}

fn print_view(value: &serde_json::Value, json: bool, table: fn(&serde_json::Value) -> String) {
    if json {
        println!("{value}");
    } else {
        print!("{}", table(value));
    }
}

async fn apply(log: AnyLog, store: ViewStore, file: &str, allow_future: bool) -> anyhow::Result<ExitCode> {
    let lines = read_lines(file)?;
    let ledger = Ledger::start(log, store).await?;
    let future = if allow_future { Future::Allow } else { Future::Refuse };
    let (results, malformed) = apply_lines(&ledger, &lines, future).await?;
    for result in results {
        println!("{result}");
    }
    Ok(if malformed { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

async fn print_events(log: &AnyLog, tenant: Option<&str>, from: u64, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    // A tenant's events are in its partition; the whole log's, partition by
    // partition from `from`'s.
    let parts: Vec<(AnyLog, u64)> = match tenant {
        Some(t) => {
            if t != events::CATALOG_TENANT {
                crate::engine::command::tenant_id(t).map_err(|r| anyhow::anyhow!(r.message))?;
            }
            let end = log.tenant_head(t).await?;
            anyhow::ensure!(end > 0, "tenant {t} has no events on this ledger (`ledger tenants` lists them)");
            vec![(log.in_partition(log.partition_of(t)), end)]
        }
        None => {
            let mut parts = Vec::new();
            for partition in Position::unpack(from).partition..log.partitions() {
                let part = log.in_partition(partition);
                let end = part.head().await?;
                parts.push((part, end));
            }
            parts
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if !json {
        writeln!(out, "{}", events_header())?;
    }
    for (part, end) in parts {
        let first = Position::pack(part.partition(), 1);
        let start =
            if Position::unpack(from).partition == part.partition() { from.max(first) } else { first };
        if end == 0 || start > end {
            continue;
        }
        let mut records = part.read(start, tenant).await?;
        while let Some(record) = records.next().await {
            let record = record?;
            print_event(&mut out, &crate::report::event_json(&record), json)?;
            if record.position >= end {
                break;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// The header of `ledger events` as a table.
fn events_header() -> String {
    format!("{:>8}  {:<27}  {:<14}  {:<14}  {:<22}  payload", "position", "at", "tenant", "actor", "kind")
}

/// One line of `ledger events`: the JSON object, or a table row made from it.
fn print_event(out: &mut impl std::io::Write, event: &serde_json::Value, json: bool) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{event}");
    }
    let text = |key: &str| event[key].as_str().unwrap_or("").to_string();
    // Partition 0's positions as they always were; the others' as P:SEQ.
    let position = match event["partition"].as_u64().unwrap_or_default() {
        0 => event["position"].as_u64().unwrap_or_default().to_string(),
        p => format!("{p}:{}", event["position"].as_u64().unwrap_or_default()),
    };
    match event.get("error") {
        Some(error) => writeln!(
            out,
            "{:>8}  UNDECODABLE on {}: {}",
            position,
            text("subject"),
            error.as_str().unwrap_or("")
        ),
        None => writeln!(
            out,
            "{:>8}  {:<27}  {:<14}  {:<14}  {:<22}  {}",
            position,
            text("at"),
            text("tenant"),
            text("actor"),
            text("kind"),
            event["payload"]
        ),
    }
}

fn print_activity(rows: &[serde_json::Value], json: bool) {
    for row in rows {
        if json {
            println!("{row}");
            continue;
        }
        println!(
            "{}: {} events, positions {}..={}, last at {}",
            row["tenant"].as_str().unwrap_or(""),
            row["events"],
            row["first_position"],
            row["last_position"],
            row["last_at"].as_str().unwrap_or("")
        );
        for (kind, count) in row["events_by_kind"].as_object().into_iter().flatten() {
            println!("  {kind:<24} {count:>10}");
        }
    }
}

/// `ledger keys add|list|revoke`: in the data directory's `keys.json`, or
/// with `--nats` in the JetStream ledger's bucket.
async fn keys(data: &Path, nats: Option<&str>, command: &KeysCommand) -> anyhow::Result<ExitCode> {
    use crate::serve::keys::{KeyStore, Role};
    let store = match nats {
        Some(_) => KeyStore::open(data, &open_existing_log(data, nats, 1).await?).await?,
        // The embedded ledger's keys need no log (a running serve holds it).
        None => KeyStore::Dir(data.to_path_buf()),
    };
    match command {
        KeysCommand::Add { tenant, role, panel } => {
            let (_, key) = if *panel {
                store.add(None, Role::Panel).await?
            } else {
                let role = if role.as_deref() == Some("admin") { Role::Admin } else { Role::User };
                store.add(tenant.as_deref(), role).await?
            };
            println!("{key}");
        }
        KeysCommand::List { json } => {
            let list = store.list().await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<14} {:<24} {:<6} created", "id", "tenant", "role");
                for key in list {
                    let role = serde_json::to_value(key.role)?;
                    println!(
                        "{:<14} {:<24} {:<6} {}",
                        key.id,
                        key.tenant.as_deref().unwrap_or("-"),
                        role.as_str().unwrap_or(""),
                        key.created
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            if !store.revoke(id).await? {
                anyhow::bail!("no key with id {id}");
            }
            eprintln!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
