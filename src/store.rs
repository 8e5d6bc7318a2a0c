//! Opening the log and the views a data directory and `--nats` select: the
//! one place the command line, the service and the demo get them from.

use std::path::Path;

use projections::ViewStore;

use crate::log::{AnyLog, EmbeddedLog, JetStreamLog, JetStreamOptions};

/// Opens the log the global options select.
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
pub fn open_views(data: &Path, log: &AnyLog) -> anyhow::Result<ViewStore> {
    let store = ViewStore::open(&data.join("views"))?;
    let meta = store.tree("meta")?;
    let source = log.describe();
    match meta.get(b"log")? {
        None => {
            meta.insert(b"log", source.as_bytes())?;
        }
        Some(bound) if bound.as_ref() == source.as_bytes() => {}
        Some(bound) => anyhow::bail!(
            "the views in {} were built from the {} log, not {source}: use another --data \
             directory, or delete its views/ to rebuild them",
            data.display(),
            String::from_utf8_lossy(&bound)
        ),
    }
    Ok(store)
}
