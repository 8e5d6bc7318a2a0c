//! Opening the log and the views a data directory and `--nats` select: the
//! one place the command line, the service and the demo get them from.

use std::path::Path;

use projections::{ViewError, ViewStore};

use crate::log::{AnyLog, EmbeddedLog, JetStreamLog, JetStreamOptions, Source};

/// Where a ledger lives, in words for messages: the data directory's
/// embedded log, or the JetStream stream at a URL (credentials left out).
pub fn describe(data: &Path, nats: Option<&str>) -> String {
    match nats {
        Some(url) => {
            let servers: Vec<String> =
                url.split(',').map(|one| ledger_client::nats::split_credentials(one.trim()).0).collect();
            format!("the LEDGER stream at {}", servers.join(","))
        }
        None => format!("{}", data.display()),
    }
}

/// Opens the log of an existing ledger, for commands that read one. A
/// mistyped `--data` must not answer as if the ledger were empty: a
/// directory without a log, or an embedded log without events, is an error
/// that says so (and nothing is created).
pub async fn open_existing_log(data: &Path, nats: Option<&str>, replicas: usize) -> anyhow::Result<AnyLog> {
    if nats.is_none() && !data.join("log").is_dir() {
        anyhow::bail!(
            "no ledger in {}: it has no log. Create one with `ledger demo` or `ledger apply FILE`, \
             point --data at the directory they wrote, or pass --nats URL for a JetStream ledger",
            data.display()
        );
    }
    let log = open_log(data, nats, replicas).await?;
    // A stream that answers is the ledger asked for, even before its first
    // event; an embedded log without events is a directory a command made
    // and nothing filled.
    if nats.is_none() && log.head().await? == 0 {
        anyhow::bail!(
            "the ledger in {} holds no events yet: add some with `ledger apply FILE` (or `ledger demo`)",
            describe(data, nats)
        );
    }
    Ok(log)
}

/// Opens (creating it if need be) the log the global options select.
pub async fn open_log(data: &Path, nats: Option<&str>, replicas: usize) -> anyhow::Result<AnyLog> {
    Ok(match nats {
        Some(url) => {
            let options = JetStreamOptions { replicas, ..JetStreamOptions::new(url) };
            AnyLog::JetStream(JetStreamLog::connect(&options).await?)
        }
        None => {
            std::fs::create_dir_all(data)?;
            AnyLog::Embedded(EmbeddedLog::open(&data.join("log"))?)
        }
    })
}

/// Opens the views, refusing views that were folded from a different log.
/// Views sled finds damaged at open (a file truncated to nothing, deleted,
/// or corrupt where its recovery cannot find a consistent prefix) are moved
/// aside to `views.damaged` and rebuilt from the log: they are derived.
/// (Damage sled can recover from leaves a consistent, older prefix of
/// batches with its checkpoints; the projector resumes from there.)
pub fn open_views(data: &Path, log: &AnyLog) -> anyhow::Result<ViewStore> {
    let dir = data.join("views");
    let store = match ViewStore::open(&dir) {
        Err(error @ (ViewError::Storage(sled::Error::Corruption { .. }) | ViewError::Corrupt { .. })) => {
            let aside = data.join("views.damaged");
            tracing::warn!(
                %error,
                "the views in {} are damaged: moving them to {} and rebuilding them from the log",
                dir.display(),
                aside.display()
            );
            if aside.exists() {
                std::fs::remove_dir_all(&aside)?;
            }
            std::fs::rename(&dir, &aside)?;
            ViewStore::open(&dir)?
        }
        other => other?,
    };
    let meta = store.tree("meta")?;
    let source = log.describe();
    match meta.get(b"log")? {
        None => {
            meta.insert(b"log", source.as_bytes())?;
        }
        Some(bound) if bound.as_ref() == source.as_bytes() => {}
        Some(bound) => {
            // The log comes from --nats or from LEDGER_NATS, which may
            // still be exported from another walk-through: say so.
            let chosen = match std::env::var("LEDGER_NATS") {
                Ok(url) if !url.is_empty() && source.starts_with("jetstream") => {
                    " (LEDGER_NATS is set in the environment, which stands for --nats: unset it to use the embedded log)"
                }
                _ => "",
            };
            anyhow::bail!(
                "the views in {} were built from the {} log, not {source}{chosen}: use another --data \
                 directory, or delete its views/ to rebuild them",
                data.display(),
                String::from_utf8_lossy(&bound)
            )
        }
    }
    Ok(store)
}
