//! `ledger webhooks add|list|remove|deliveries|retry|test|rotate`.
//!
//! The command line is the operator's: an endpoint it registers may reach
//! any address (the allowlist of `serve --webhook-allow-hosts` still holds
//! at every delivery). Tenants register theirs over HTTP, where their
//! destinations are checked.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use super::deliver::DEFAULT_RETRIES_MS;
use super::store::{DeliveryRecord, Endpoint, NotifyStore, Request, Secret};
use super::{egress, sign, KINDS};
use crate::log::AnyLog;

#[derive(Debug, clap::Subcommand)]
pub enum WebhooksCommand {
    /// Register an endpoint; prints {"id", "secret"} once (the secret signs
    /// every delivery). It receives the notifications recorded from now on.
    Add {
        url: String,
        /// Only this tenant's notifications (default: every tenant's).
        #[arg(long)]
        tenant: Option<String>,
        /// Only these types, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        types: Option<Vec<String>>,
        /// The delays between attempts, comma-separated (5s, 2m, 1h, 1d;
        /// default 5s,30s,2m,10m,1h,4h,12h,24h,24h).
        #[arg(long, value_delimiter = ',')]
        retries: Option<Vec<String>>,
    },
    /// Every endpoint (never a secret).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove the endpoint; nothing more goes to it.
    Remove { id: String },
    /// The endpoint's recent attempts and how each went.
    Deliveries {
        id: String,
        /// Only notifications whose last attempt failed.
        #[arg(long)]
        failed: bool,
        #[arg(long)]
        json: bool,
    },
    /// Send the failed notifications again (one attempt each).
    Retry { id: String },
    /// Send a `webhook.test` notification.
    Test { id: String },
    /// A new secret; for 24 hours deliveries are signed with both.
    Rotate { id: String },
}

/// How long a rotated-out secret keeps signing.
pub const ROTATION_OVERLAP_US: i64 = 24 * 3600 * 1_000_000;
/// Most delays an endpoint may list, and the longest.
pub const MAX_RETRIES: usize = 20;
const MAX_DELAY_MS: u64 = 7 * 86_400_000;

/// The delays [`parse_delay`] takes, as the OpenAPI document says them: a
/// count (leading zeros allowed) and a unit (`ms` or none, `s`, `m`, `h`,
/// `d`), at most 7 days in each unit. `tests/contract.rs` holds the two
/// together.
pub const DELAY_PATTERN: &str = concat!(
    "^0*(",
    "(604800000|604[0-7][0-9]{5}|60[0-3][0-9]{6}|[1-5][0-9]{8}|[1-9][0-9]{0,7}|0)(ms)?",
    "|(604800|604[0-7][0-9]{2}|60[0-3][0-9]{3}|[1-5][0-9]{5}|[1-9][0-9]{0,4}|0)s",
    "|(10080|100[0-7][0-9]|[1-9][0-9]{0,3}|0)m",
    "|(16[0-8]|1[0-5][0-9]|[1-9]?[0-9])h",
    "|[0-7]d",
    ")$",
);

/// `5s`, `30s`, `2m`, `1h`, `1d` (or plain milliseconds) as milliseconds,
/// from 0 to 7 days.
pub fn parse_delay(text: &str) -> Result<u64, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a delay such as 5s, 2m, 1h or 1d"))?;
    let ms = match unit {
        "" | "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    };
    ms.filter(|ms| *ms <= MAX_DELAY_MS).ok_or_else(|| format!("{text:?} is not a delay from 0 to 7d"))
}

/// An endpoint's delays: at most [`MAX_RETRIES`], each at most 7 days; the
/// default when none are given.
pub fn retries(list: Option<&[String]>) -> Result<Vec<u64>, String> {
    let Some(list) = list else { return Ok(DEFAULT_RETRIES_MS.to_vec()) };
    if list.len() > MAX_RETRIES {
        return Err(format!("at most {MAX_RETRIES} retries, not {}", list.len()));
    }
    list.iter().map(|d| parse_delay(d)).collect()
}

/// The notification types an endpoint asks for, each a known one.
pub fn types(list: Option<&[String]>) -> Result<Option<Vec<String>>, String> {
    let Some(list) = list else { return Ok(None) };
    for t in list {
        if !KINDS.contains(&t.as_str()) {
            return Err(format!("unknown notification type {t:?}; the types are {}", KINDS.join(", ")));
        }
    }
    let mut list = list.to_vec();
    list.sort();
    list.dedup();
    Ok(Some(list))
}

/// A new endpoint (not stored): its id and first secret.
pub fn new_endpoint(
    url: &str,
    tenant: Option<String>,
    types: Option<Vec<String>>,
    retries_ms: Vec<u64>,
    heads: &[u64],
    registered_by_tenant: bool,
) -> anyhow::Result<Endpoint> {
    Ok(Endpoint {
        id: format!("ep_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        url: url.to_string(),
        tenant,
        types,
        retries_ms,
        secrets: vec![Secret { secret: sign::new_secret()?, expires_at_us: None }],
        created: crate::report::rfc3339(chrono::Utc::now().timestamp_micros()),
        after_position: heads.first().copied().unwrap_or(0),
        after_partitions: heads.get(1..).unwrap_or_default().to_vec(),
        registered_by_tenant,
    })
}

/// The endpoint with a new current secret; the old one signs too for
/// [`ROTATION_OVERLAP_US`] (older ones are dropped).
pub fn rotated(mut endpoint: Endpoint, now_us: i64) -> anyhow::Result<Endpoint> {
    let previous = endpoint.secrets.iter().find(|s| s.expires_at_us.is_none()).cloned();
    endpoint.secrets = vec![Secret { secret: sign::new_secret()?, expires_at_us: None }];
    if let Some(previous) = previous {
        endpoint
            .secrets
            .push(Secret { secret: previous.secret, expires_at_us: Some(now_us + ROTATION_OVERLAP_US) });
    }
    Ok(endpoint)
}

/// An endpoint as lists show it: never a secret.
pub fn endpoint_json(endpoint: &Endpoint) -> serde_json::Value {
    json!({
        "id": endpoint.id,
        "url": endpoint.url,
        "tenant": endpoint.tenant,
        "types": endpoint.types,
        "retries_ms": endpoint.retries_ms,
        "created": endpoint.created,
        "rotating": endpoint.secrets.len() > 1,
    })
}

/// The notifications whose latest record says `failed`, newest record of
/// each.
pub fn failed(records: &[DeliveryRecord]) -> Vec<&DeliveryRecord> {
    let mut last: std::collections::BTreeMap<&str, &DeliveryRecord> = std::collections::BTreeMap::new();
    for record in records {
        last.insert(&record.webhook_id, record);
    }
    last.into_values().filter(|r| r.outcome == "failed").collect()
}

async fn open(data: &Path, nats: Option<&str>) -> anyhow::Result<(NotifyStore, Option<AnyLog>)> {
    match nats {
        Some(_) => {
            let log = crate::store::open_existing_log(data, nats, 1).await?;
            Ok((super::open_store(data, &log).await?, Some(log)))
        }
        None => Ok((NotifyStore::Dir(data.to_path_buf()), None)),
    }
}

/// The log's head: on JetStream from the stream; on the embedded log what
/// the serve that holds the directory said (`served_head`), or the log
/// itself.
async fn head(data: &Path, log: Option<&AnyLog>, served_head: Option<u64>) -> anyhow::Result<Vec<u64>> {
    if let Some(log) = log {
        return Ok(log.heads().await?);
    }
    if let Some(head) = served_head {
        return Ok(vec![head]);
    }
    let log = crate::store::open_existing_log(data, None, 1).await?;
    Ok(log.heads().await?)
}

/// `served_head`: the head of an embedded log as the `serve` holding the
/// data directory answers it (sled admits one process, so only it can read
/// the log then); the command line asks it, as this module may not import
/// `serve`, which imports this one.
pub async fn run(
    data: &Path,
    nats: Option<&str>,
    command: &WebhooksCommand,
    served_head: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let (store, log) = open(data, nats).await?;
    let existing = |id: &str| {
        let store = store.clone();
        let id = id.to_string();
        async move {
            store
                .endpoint(&id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no endpoint {id} (`ledger webhooks list`)"))
        }
    };
    match command {
        WebhooksCommand::Add { url, tenant, types: wanted, retries: delays } => {
            egress::check_registration(url, &egress::Egress::default(), false)
                .await
                .map_err(|r| anyhow::anyhow!("{}: {}", r.code, r.message))?;
            if let Some(tenant) = tenant {
                crate::engine::command::tenant_id(tenant).map_err(|r| anyhow::anyhow!(r.message))?;
            }
            let types = types(wanted.as_deref()).map_err(anyhow::Error::msg)?;
            // The command line's list may be written `5s, 1m` or end in a comma.
            let delays: Option<Vec<String>> = delays
                .as_ref()
                .map(|list| list.iter().map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect());
            let retries_ms = retries(delays.as_deref()).map_err(anyhow::Error::msg)?;
            let endpoint = new_endpoint(
                url,
                tenant.clone(),
                types,
                retries_ms,
                &head(data, log.as_ref(), served_head).await?,
                false,
            )?;
            store.put_endpoint(&endpoint).await?;
            println!("{}", json!({"id": endpoint.id, "secret": endpoint.secrets[0].secret}));
        }
        WebhooksCommand::List { json } => {
            let endpoints = store.endpoints().await?;
            if *json {
                println!("{}", serde_json::Value::Array(endpoints.iter().map(endpoint_json).collect()));
            } else {
                println!("{:<16} {:<20} {:<40} types", "id", "tenant", "url");
                for e in &endpoints {
                    let types = e.types.as_ref().map_or("all".to_string(), |t| t.join(","));
                    println!(
                        "{:<16} {:<20} {:<40} {types}",
                        e.id,
                        e.tenant.as_deref().unwrap_or("(every tenant)"),
                        e.url
                    );
                }
            }
        }
        WebhooksCommand::Remove { id } => {
            anyhow::ensure!(store.remove_endpoint(id).await?, "no endpoint {id} (`ledger webhooks list`)");
            eprintln!("removed {id}");
        }
        WebhooksCommand::Deliveries { id, failed: only_failed, json } => {
            existing(id).await?;
            let records = store.deliveries(id).await?;
            let shown: Vec<&DeliveryRecord> =
                if *only_failed { failed(&records) } else { records.iter().collect() };
            for r in shown {
                if *json {
                    println!("{}", serde_json::to_string(r)?);
                } else {
                    let answer =
                        r.status.map_or_else(|| r.error.clone().unwrap_or_default(), |s| s.to_string());
                    println!(
                        "{}  {:<24} {:<10} attempt {:<2} {:<9} {answer}  {}",
                        r.at,
                        r.kind,
                        r.tenant.as_deref().unwrap_or("-"),
                        r.attempt,
                        r.outcome,
                        r.webhook_id
                    );
                }
            }
        }
        WebhooksCommand::Retry { id } => {
            existing(id).await?;
            let records = store.deliveries(id).await?;
            let count = failed(&records).len();
            store.request(&Request::Retry { endpoint: id.clone() }).await?;
            eprintln!("asked serve to send {count} failed notification(s) to {id} again");
        }
        WebhooksCommand::Test { id } => {
            existing(id).await?;
            let test = uuid::Uuid::new_v4().simple().to_string();
            store.request(&Request::Test { endpoint: id.clone(), id: test.clone() }).await?;
            eprintln!("asked serve to send a webhook.test (webhook-id msg_test_{test}_{id}); `ledger webhooks deliveries {id}` shows how it went");
        }
        WebhooksCommand::Rotate { id } => {
            let endpoint = rotated(existing(id).await?, chrono::Utc::now().timestamp_micros())?;
            store.put_endpoint(&endpoint).await?;
            println!("{}", json!({"id": endpoint.id, "secret": endpoint.secrets[0].secret}));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_and_types() {
        assert_eq!(parse_delay("5s"), Ok(5_000));
        assert_eq!(parse_delay("2m"), Ok(120_000));
        assert_eq!(parse_delay("1d"), Ok(86_400_000));
        assert_eq!(parse_delay("250"), Ok(250));
        assert!(parse_delay("8d").is_err());
        assert!(parse_delay("soon").is_err());
        assert!(parse_delay(" 5s").is_err() && parse_delay("").is_err() && parse_delay("5 s").is_err());
        assert_eq!(retries(None).unwrap(), DEFAULT_RETRIES_MS);
        assert_eq!(retries(Some(&["1s".into(), "1m".into()])).unwrap(), [1000, 60_000]);
        assert!(types(Some(&["usage.denied".into(), "nope".into()])).is_err());
        assert_eq!(
            types(Some(&["usage.denied".into(), "usage.denied".into()])).unwrap(),
            Some(vec!["usage.denied".into()])
        );
    }

    #[test]
    fn a_rotation_signs_with_both_for_a_day() {
        let endpoint = new_endpoint("http://127.0.0.1/x", None, None, vec![], &[0], false).unwrap();
        let first = endpoint.secrets[0].secret.clone();
        let now = 1_000_000_000_000;
        let turned = rotated(endpoint, now).unwrap();
        let signing: Vec<&str> = turned.signing_secrets(now).collect();
        assert_eq!(signing.len(), 2);
        assert_eq!(signing[1], first);
        assert_eq!(turned.signing_secrets(now + ROTATION_OVERLAP_US).count(), 1, "a day later, only the new");
        let again = rotated(turned, now + 1).unwrap();
        assert_eq!(again.secrets.len(), 2, "the oldest goes");
    }
}
