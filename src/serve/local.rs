//! The data directory's local socket, `DATA/serve.sock`: how the command
//! line queries a directory that a running `serve` holds.
//!
//! sled locks its files for one process and has no read-only open, so while
//! `serve` runs, `ledger usage` and the other queries of its data directory
//! cannot open the views themselves. The serve that holds them answers
//! instead, from the same views (caught up with the log first, as its other
//! front ends do). The socket is the owner's alone (mode 0600, like the
//! files it stands for), and it only reads: commands still go through NATS
//! or HTTP, where keys and credentials decide who may send them.
//!
//! The protocol is one JSON request line ([`LocalQuery`]); the answer is
//! JSON lines: one object (`usage`, `invoice`, `tenants`), one per tenant
//! (`activity`) or per record (`events`), or `{"error": ..., "code"?}`,
//! then the end of the stream.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::core::{Core, QueryView};
use crate::log::{EventLog, Source};
use crate::report;

/// The socket's name in the data directory.
pub const SOCKET_NAME: &str = "serve.sock";
/// The longest request line read.
const MAX_REQUEST_BYTES: u64 = 4096;

/// A query the command line sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum LocalQuery {
    Usage {
        tenant: String,
        at_us: Option<i64>,
        explain: bool,
    },
    Invoice {
        tenant: String,
        at_us: Option<i64>,
        explain: bool,
    },
    Tenants,
    Activity {
        tenant: Option<String>,
    },
    Events {
        tenant: Option<String>,
        from: u64,
    },
    /// The log's last position (`webhooks add` on a served embedded ledger).
    Head,
    /// `ledger info`.
    Info,
}

pub fn socket_path(data: &Path) -> PathBuf {
    data.join(SOCKET_NAME)
}

/// Binds the socket, replacing a file a killed serve left behind (the
/// caller holds the directory's views, so no other serve uses it). `None`,
/// with a warning, when the path is too long for a Unix socket.
pub fn bind(data: &Path) -> anyhow::Result<Option<UnixListener>> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(data);
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "no local socket: command-line queries of this data directory wait until serve stops");
            return Ok(None);
        }
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(Some(listener))
}

/// Answers queries on `listener` until the task is aborted.
pub async fn serve(listener: UnixListener, core: Arc<Core>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let core = core.clone();
                tokio::spawn(async move {
                    if let Err(error) = answer(stream, &core).await {
                        tracing::debug!(%error, "a local query ended early");
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, "the local socket stopped accepting");
                return;
            }
        }
    }
}

async fn answer(stream: UnixStream, core: &Core) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).take(MAX_REQUEST_BYTES).read_line(&mut line).await?;
    let send = |value: Value| {
        let mut bytes = value.to_string().into_bytes();
        bytes.push(b'\n');
        bytes
    };
    let query: LocalQuery = match serde_json::from_str(&line) {
        Ok(query) => query,
        Err(error) => return write.write_all(&send(json!({"error": format!("not a query: {error}")}))).await,
    };
    let one = |answer: Result<Value, String>| match answer {
        Ok(value) => value,
        Err(error) => json!({"error": error}),
    };
    let rejected = |r: crate::engine::command::Rejection| json!({"error": r.message, "code": r.code});
    match query {
        LocalQuery::Usage { tenant, at_us, explain } => {
            let view = if explain { QueryView::UsageExplained } else { QueryView::Usage };
            let value = core.query(&tenant, view, at_us).await.unwrap_or_else(rejected);
            write.write_all(&send(value)).await
        }
        LocalQuery::Invoice { tenant, at_us, explain } => {
            let value =
                core.query(&tenant, QueryView::Invoice { explain }, at_us).await.unwrap_or_else(rejected);
            write.write_all(&send(value)).await
        }
        LocalQuery::Tenants => {
            let value = match core.synced_views().await {
                Ok(views) => one(report::tenants(views).map_err(|e| e.to_string())),
                Err(r) => rejected(r),
            };
            write.write_all(&send(value)).await
        }
        LocalQuery::Activity { tenant } => {
            let rows = match core.synced_views().await {
                Ok(views) => report::activity(views, tenant.as_deref()).map_err(|e| e.to_string()),
                Err(r) => Err(r.message),
            };
            match rows {
                Ok(rows) => {
                    for row in rows {
                        write.write_all(&send(row)).await?;
                    }
                    Ok(())
                }
                Err(error) => write.write_all(&send(json!({"error": error}))).await,
            }
        }
        LocalQuery::Head => {
            let value = match core.log.head().await {
                Ok(head) => json!({ "head": head }),
                Err(error) => json!({"error": error.to_string()}),
            };
            write.write_all(&send(value)).await
        }
        LocalQuery::Info => {
            let value = match core.log.info().await {
                Ok(info) => serde_json::to_value(info).unwrap_or_else(|e| json!({"error": e.to_string()})),
                Err(error) => json!({"error": error.to_string()}),
            };
            write.write_all(&send(value)).await
        }
        LocalQuery::Events { tenant, from } => {
            let log = &core.log;
            let end = match &tenant {
                Some(t) => log.tenant_head(t).await,
                None => log.head().await,
            };
            let end = match end {
                Ok(0) if tenant.is_some() => {
                    let error = format!(
                        "tenant {} has no events on this ledger (`ledger tenants` lists them)",
                        tenant.unwrap_or_default()
                    );
                    return write.write_all(&send(json!({ "error": error }))).await;
                }
                Ok(end) => end,
                Err(error) => return write.write_all(&send(json!({"error": error.to_string()}))).await,
            };
            if from > end {
                return Ok(());
            }
            let mut records = match log.read(from, tenant.as_deref()).await {
                Ok(records) => records,
                Err(error) => return write.write_all(&send(json!({"error": error.to_string()}))).await,
            };
            while let Some(record) = records.next().await {
                let record = match record {
                    Ok(record) => record,
                    Err(error) => return write.write_all(&send(json!({"error": error.to_string()}))).await,
                };
                write.write_all(&send(report::event_json(&record))).await?;
                if record.position >= end {
                    break;
                }
            }
            Ok(())
        }
    }
}

/// A connection to the serve that holds `data`, or `None` when none
/// answers there (no socket, or one a killed serve left).
pub async fn connect(data: &Path) -> Option<UnixStream> {
    UnixStream::connect(socket_path(data)).await.ok()
}

/// The log's head as the serve that holds `data` answers it, or `None`
/// when no serve holds it.
pub async fn head(data: &Path) -> anyhow::Result<Option<u64>> {
    let Some(stream) = connect(data).await else { return Ok(None) };
    let answer = ask(stream, &LocalQuery::Head).await?;
    let head = answer.first().and_then(|a| a["head"].as_u64());
    Ok(Some(head.ok_or_else(|| anyhow::anyhow!("serve did not say its head"))?))
}

/// Sends `query` and returns the answer's JSON lines; an `{"error"}` line
/// becomes the error.
pub async fn ask(stream: UnixStream, query: &LocalQuery) -> anyhow::Result<Vec<Value>> {
    let (read, mut write) = stream.into_split();
    let mut request = serde_json::to_vec(query)?;
    request.push(b'\n');
    write.write_all(&request).await?;
    let mut lines = BufReader::new(read).lines();
    let mut out = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let value: Value = serde_json::from_str(&line)?;
        if let Some(error) = value.get("error").filter(|_| value.get("position").is_none()) {
            let code = value["code"].as_str().map(|c| format!("{c}: ")).unwrap_or_default();
            anyhow::bail!("{code}{}", error.as_str().unwrap_or_default());
        }
        out.push(value);
    }
    Ok(out)
}
