//! Audit: re-derive what the ledger shows from its log and report every
//! difference.
//!
//! - [`compare_views`]: live views against a clean rebuild, key by key.
//! - [`audit_log`]: one pass over the log that reports messages the ledger
//!   did not write (undecodable, on the wrong subject, or breaking their
//!   tenant's hash chain) and re-derives every finalized invoice, which must
//!   charge what the recorded one charges, with a recorded inputs digest
//!   that verifies under some digest version (docs/audit-format.md).

use std::collections::HashMap;

use events::{Event, CATALOG_TENANT};
use futures_util::StreamExt;
use projections::domain::{CatalogState, Chain, Fact, TenantState};
use projections::invoice::{check_recorded_invoice, price_period};
use projections::{View, ViewStore};

use crate::{source, ReplayError, Source};

/// One thing an audit found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `view_differs`, `undecodable`, `chain_break`, `invoice_mismatch`.
    pub kind: &'static str,
    /// The log position concerned, when there is one.
    pub position: Option<u64>,
    /// The view and row key concerned, when there is one.
    pub view: Option<&'static str>,
    pub key: Option<String>,
    pub detail: String,
}

fn printable(key: &[u8]) -> String {
    key.iter()
        .map(|b| if b.is_ascii_graphic() { (*b as char).to_string() } else { format!("\\x{b:02x}") })
        .collect()
}

/// Compares each view of `live` with the same view of `rebuilt`, row by row.
pub fn compare_views(
    live: &ViewStore,
    rebuilt: &ViewStore,
    views: &[&dyn View],
) -> Result<Vec<Finding>, ReplayError> {
    let mut findings = Vec::new();
    for view in views {
        let name = view.name();
        if live.digest(name)? == rebuilt.digest(name)? {
            continue;
        }
        let a: HashMap<Vec<u8>, Vec<u8>> = live.dump(name)?.into_iter().collect();
        let b: HashMap<Vec<u8>, Vec<u8>> = rebuilt.dump(name)?.into_iter().collect();
        let mut keys: Vec<&Vec<u8>> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let detail = match (a.get(key), b.get(key)) {
                (Some(x), Some(y)) if x == y => continue,
                (Some(_), Some(_)) => "live row differs from the rebuilt one",
                (Some(_), None) => "row exists live but not in the rebuild",
                (None, Some(_)) => "row is missing from the live view",
                (None, None) => unreachable!("key came from one of the maps"),
            };
            findings.push(Finding {
                kind: "view_differs",
                position: None,
                view: Some(name),
                key: Some(printable(key)),
                detail: detail.to_string(),
            });
        }
    }
    Ok(findings)
}

/// What one pass over the log counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogSummary {
    pub events: u64,
    pub invoices_checked: u64,
    pub findings: Vec<Finding>,
}

#[derive(Default)]
struct TenantAudit {
    state: TenantState,
    /// The chain before the tenant's latest cancellation: a cancel's
    /// invoices digest the history before the command.
    before_cancel: Chain,
}

/// Reads the log up to `head` and checks every message (see module docs).
pub async fn audit_log<S: Source>(log: &S, head: u64) -> Result<LogSummary, ReplayError> {
    let mut summary = LogSummary::default();
    if head == 0 {
        return Ok(summary);
    }
    let mut catalog = CatalogState::default();
    let mut tenants: HashMap<String, TenantAudit> = HashMap::new();
    let mut records = log.read(1, None).await.map_err(source)?;
    while let Some(record) = records.next().await {
        let record = record.map_err(source)?;
        let position = record.position;
        let decoded = record.decode();
        summary.events += 1;
        match &decoded.event {
            Err(error) => summary.findings.push(Finding {
                kind: "undecodable",
                position: Some(position),
                view: None,
                key: None,
                detail: format!("on {}: {error}", record.subject),
            }),
            Ok(envelope) => {
                let fact = Fact { position, hash: decoded.hash, envelope };
                let chain_break = |summary: &mut LogSummary| {
                    summary.findings.push(Finding {
                        kind: "chain_break",
                        position: Some(position),
                        view: None,
                        key: Some(envelope.tenant.clone()),
                        detail: format!(
                            "{} on {} does not continue the tenant's hash chain (not written by the ledger)",
                            envelope.kind().name(),
                            record.subject
                        ),
                    })
                };
                if envelope.tenant == CATALOG_TENANT {
                    if catalog.fold(&fact).is_err() {
                        chain_break(&mut summary);
                    }
                } else {
                    let tenant = tenants.entry(envelope.tenant.clone()).or_default();
                    let chain_before = tenant.state.chain;
                    // What a finalized invoice is re-derived from: the state
                    // before its event, and for a cancel's invoices the
                    // chain before the cancel.
                    let basis = matches!(envelope.payload, Event::PeriodFinalized { .. }).then(|| {
                        let mut basis = tenant.state.clone();
                        let cancelled_now = basis
                            .subscription
                            .as_ref()
                            .is_some_and(|s| s.cancelled_at_us == Some(envelope.at_us));
                        if cancelled_now {
                            basis.chain = tenant.before_cancel;
                        }
                        basis
                    });
                    if tenant.state.fold(&fact).is_err() {
                        chain_break(&mut summary);
                    } else if let Event::SubscriptionCancelled = envelope.payload {
                        tenant.before_cancel = chain_before;
                    } else if let (Event::PeriodFinalized { period, invoice, .. }, Some(basis)) =
                        (&envelope.payload, basis)
                    {
                        summary.invoices_checked += 1;
                        let derived = price_period(&basis, &catalog, *period).map(|p| p.invoice);
                        // Bit for bit, and the recorded digest under any
                        // digest version (older invoices carry v1).
                        let checked = match &derived {
                            None => Err("the period does not price".to_string()),
                            Some(d) => check_recorded_invoice(invoice, d, &basis, &catalog, *period)
                                .map_err(|m| m.to_string()),
                        };
                        if let Err(why) = checked {
                            summary.findings.push(Finding {
                                kind: "invoice_mismatch",
                                position: Some(position),
                                view: None,
                                key: Some(format!("{}/period {period}", envelope.tenant)),
                                detail: format!("{why}: recorded {invoice:?}, re-derived {derived:?}"),
                            });
                        }
                    }
                }
            }
        }
        if position >= head {
            break;
        }
    }
    Ok(summary)
}
