//! Audit: re-derive what the ledger shows from its log and report every
//! difference.
//!
//! - [`compare_views`]: live views against a clean rebuild, key by key.
//! - [`audit_log`]: one pass over the log that reports messages the ledger
//!   did not write (undecodable, on the wrong subject, or breaking their
//!   tenant's hash chain) and re-derives every finalized invoice, which must
//!   charge what the recorded one charges, with a recorded inputs digest
//!   that verifies under some digest version (docs/audit-format.md).

use std::collections::{HashMap, VecDeque};

use events::{Event, CATALOG_TENANT};
use futures_util::StreamExt;
use projections::domain::{CatalogState, Chain, Fact, TenantState};
use projections::invoice::{
    check_recorded_invoice, inputs_digest_versioned, price_period, DigestVersion, InvoiceMismatch,
};
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
    /// What is wrong, in one readable sentence.
    pub detail: String,
    /// What the log re-derives, and what was found recorded (amounts in
    /// decimal, digests in hex), when the finding compares values.
    pub expected: Option<String>,
    pub found: Option<String>,
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
                expected: None,
                found: None,
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
    /// The invoices that verified, by how: `v3`, `v2`, `v1`, and `v2
    /// chained` for a v2 digest a chained decision took at a provisional
    /// position (docs/audit-format.md).
    pub digests: std::collections::BTreeMap<&'static str, u64>,
    pub findings: Vec<Finding>,
}

/// Before invoice digests left out the position (v3), a finalize decided in
/// the same append as earlier events of its tenant hashed the position the
/// writer's scratch state counted. An append holds at most this many
/// messages (the log's batch limit), so such a position can only come from
/// the tenant's events this close to the finalize.
const LEGACY_BATCH_WINDOW: u64 = 1000;

#[derive(Default)]
struct TenantAudit {
    state: TenantState,
    /// The chain before the tenant's latest cancellation: a cancel's
    /// invoices digest the history before the command.
    before_cancel: Chain,
    /// The positions of the tenant's latest events: those within
    /// [`LEGACY_BATCH_WINDOW`] of the newest, and one before them.
    recent: VecDeque<u64>,
    /// Whether `recent` no longer starts at the tenant's first event.
    dropped: bool,
}

impl TenantAudit {
    fn record(&mut self, position: u64) {
        self.recent.push_back(position);
        let floor = position.saturating_sub(LEGACY_BATCH_WINDOW);
        while self.recent.len() > 1 && self.recent[1] < floor {
            self.recent.pop_front();
            self.dropped = true;
        }
    }

    /// The positions a chained decision could have hashed into a v2 digest
    /// of the finalize at `position`, whose inputs end at `last_position`:
    /// for each earlier event p of the tenant (or none) whose successors up
    /// to `last_position` all lie in one append with the finalize, p plus
    /// the number of those successors.
    fn provisional_positions(&self, position: u64, last_position: u64) -> Vec<u64> {
        let floor = position.saturating_sub(LEGACY_BATCH_WINDOW - 1);
        let before: Vec<u64> = self.recent.iter().copied().filter(|p| *p <= last_position).collect();
        let n = before.len();
        let mut candidates = Vec::new();
        for i in (0..n).rev() {
            if before[i] < floor {
                break;
            }
            // Events i.. were staged in the finalize's append, after base.
            let base = if i == 0 {
                if self.dropped {
                    break;
                }
                0
            } else {
                before[i - 1]
            };
            candidates.push(base + (n - i) as u64);
        }
        candidates
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The charges of an invoice in one line: each line's code and amount,
/// then total, paid and amount due, in decimal.
fn charges(invoice: &events::Invoice) -> String {
    let mut text = format!("{}:", invoice.currency);
    for line in &invoice.lines {
        text.push_str(&format!(" {}={}{}", line.code, line.amount, if line.paid { " (paid)" } else { "" }));
    }
    text.push_str(&format!(
        "; total {} paid {} amount_due {}",
        invoice.total, invoice.paid, invoice.amount_due
    ));
    text
}

/// Reads the log up to `head` and checks every message (see module docs).
pub async fn audit_log<S: Source>(log: &S, head: u64) -> Result<LogSummary, ReplayError> {
    Ok(audit_log_with(log, head, CatalogState::default()).await?.0)
}

/// [`audit_log`] of one partition of a ledger, starting from `catalog`
/// (what partition 0, the catalog's, folded to), and the catalog folded
/// through this partition.
pub async fn audit_log_with<S: Source>(
    log: &S,
    head: u64,
    catalog: CatalogState,
) -> Result<(LogSummary, CatalogState), ReplayError> {
    let mut catalog = catalog;
    let mut summary = LogSummary::default();
    if head == 0 {
        return Ok((summary, catalog));
    }
    let mut tenants: HashMap<String, TenantAudit> = HashMap::new();
    let mut records = log.read(1, None).await.map_err(source)?;
    while let Some(record) = records.next().await {
        let record = record.map_err(source)?;
        let position = record.position;
        let decoded = record.decode();
        summary.events += 1;
        'check: {
            match &decoded.event {
                Err(error) => summary.findings.push(Finding {
                    kind: "undecodable",
                    position: Some(position),
                    view: None,
                    key: None,
                    detail: format!("the message on {} does not decode: {error}", record.subject),
                    expected: None,
                    found: None,
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
                            expected: None,
                            found: None,
                        })
                    };
                    if envelope.tenant == CATALOG_TENANT {
                        if catalog.fold(&fact).is_err() {
                            chain_break(&mut summary);
                        }
                        break 'check;
                    }
                    let tenant = tenants.entry(envelope.tenant.clone()).or_default();
                    let chain_before = tenant.state.chain;
                    // What a finalized invoice is re-derived from: the state
                    // before its event, and for a cancel's invoices the chain
                    // before the cancel.
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
                        break 'check;
                    }
                    tenant.record(position);
                    if let Event::SubscriptionCancelled = envelope.payload {
                        tenant.before_cancel = chain_before;
                    }
                    let (Event::PeriodFinalized { period, invoice, .. }, Some(basis)) =
                        (&envelope.payload, basis)
                    else {
                        break 'check;
                    };
                    summary.invoices_checked += 1;
                    let provisional = tenant.provisional_positions(position, basis.chain.last_position);
                    let derived = price_period(&basis, &catalog, *period).map(|p| p.invoice);
                    // Bit for bit, and the recorded digest under any digest
                    // version (older invoices carry v1 or v2).
                    let (detail, expected, found) = match &derived {
                    None => ("the period does not price from the log".to_string(), None, Some(charges(invoice))),
                    Some(d) => match check_recorded_invoice(invoice, d, &basis, &catalog, *period, &provisional) {
                        Ok(found) => {
                            let how = match found.provisional_position {
                                Some(_) => "v2 chained",
                                None => found.version.name(),
                            };
                            *summary.digests.entry(how).or_default() += 1;
                            break 'check;
                        }
                        Err(InvoiceMismatch::Charges) => (
                            "the recorded invoice charges other amounts than the log re-derives".to_string(),
                            Some(charges(d)),
                            Some(charges(invoice)),
                        ),
                        Err(InvoiceMismatch::Digest) => (
                            format!(
                                "the charges agree, but the recorded inputs digest is the digest of these inputs under no version ({})",
                                DigestVersion::ALL.map(DigestVersion::name).join(", ")
                            ),
                            Some(format!(
                                "{} ({})",
                                hex(&inputs_digest_versioned(&basis, &catalog, *period, DigestVersion::CURRENT)),
                                DigestVersion::CURRENT.name()
                            )),
                            Some(hex(&invoice.inputs_digest)),
                        ),
                    },
                };
                    summary.findings.push(Finding {
                        kind: "invoice_mismatch",
                        position: Some(position),
                        view: None,
                        key: Some(format!("{}/period {period}", envelope.tenant)),
                        detail,
                        expected,
                        found,
                    });
                }
            }
        }
        if position >= head {
            break;
        }
    }
    Ok((summary, catalog))
}
