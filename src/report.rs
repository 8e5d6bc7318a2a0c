//! The views as callers see them: the `usage` and `invoice` objects of the
//! spec's command line contract, their readable tables, and command replies.

use projections::domain::{CatalogState, TenantState};
use projections::invoice::price_period;
use projections::period::period_bounds_us;
use projections::{LedgerView, ViewStore};
use serde_json::{json, Value};

use crate::engine::command::Rejection;
use crate::engine::Reply;

pub use ledger_client::protocol::rfc3339;

/// The object `apply` prints for a line (without `line`) and `serve` replies.
pub fn reply_json(reply: &Reply) -> Value {
    match reply {
        Reply::Ok { seq, duplicate } => {
            let at = crate::log::Position::unpack(*seq);
            json!({"ok": true, "partition": at.partition, "seq": at.seq, "duplicate": duplicate})
        }
        Reply::Rejected { rejection, .. } => rejection_json(rejection),
        Reply::Failed { message } => json!({"ok": false, "code": "unavailable", "message": message}),
    }
}

pub fn rejection_json(rejection: &Rejection) -> Value {
    let mut object = json!({"ok": false, "code": rejection.code, "message": rejection.message});
    for (key, value) in &rejection.details {
        object[*key] = json!(value);
    }
    object
}

/// What a query could not answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The tenant never subscribed: check the tenant id.
    #[error("tenant {0} has no subscription")]
    NotSubscribed(String),
    /// The instant asked about lies before the subscription began.
    #[error("{0} is before tenant {1}'s subscription began")]
    BeforeSubscription(String, String),
    /// The period's amounts do not fit exactly (a history written before
    /// the ledger bounded them): the invoice cannot be shown.
    #[error("tenant {0}'s invoice for this period cannot be priced exactly: an amount is out of range")]
    Unpriceable(String),
    #[error(transparent)]
    View(#[from] projections::ViewError),
}

/// A subscribed tenant's folded state, the catalog, and ledger time.
pub(crate) struct Subject {
    pub state: TenantState,
    pub catalog: CatalogState,
    pub now_us: i64,
}

pub(crate) fn load(views: &ViewStore, tenant: &str) -> Result<Subject, QueryError> {
    let state = LedgerView::tenant(views, tenant)?
        .filter(|s| s.subscription.is_some())
        .ok_or_else(|| QueryError::NotSubscribed(tenant.to_string()))?;
    Ok(Subject { state, catalog: LedgerView::catalog(views)?, now_us: LedgerView::ledger_time_us(views)? })
}

/// The period holding `at_us`. A cancelled subscription has no period
/// after its last one (the cancel finalized it): later instants answer
/// with the last.
pub(crate) fn period_at(subject: &Subject, tenant: &str, at_us: i64) -> Result<u32, QueryError> {
    let k = subject
        .state
        .period_at(at_us)
        .ok_or_else(|| QueryError::BeforeSubscription(rfc3339(at_us), tenant.to_string()))?;
    Ok(match subject.state.subscription.as_ref().and_then(|s| s.cancelled_at_us.map(|_| s.closed_periods)) {
        Some(closed) => k.min(closed.saturating_sub(1)),
        None => k,
    })
}

impl Subject {
    /// The instant a query without `--at` is about: ledger time, or for a
    /// cancelled tenant the cancellation (its figures stop there).
    pub(crate) fn default_at_us(&self) -> i64 {
        match self.state.subscription.as_ref().and_then(|s| s.cancelled_at_us) {
            Some(cancelled_at_us) => cancelled_at_us.min(self.now_us),
            None => self.now_us,
        }
    }
}

/// `ledger usage TENANT [--at T] --json`.
pub fn usage(views: &ViewStore, tenant: &str, at_us: Option<i64>) -> Result<Value, QueryError> {
    let subject = load(views, tenant)?;
    let at_us = at_us.unwrap_or(subject.default_at_us());
    let k = period_at(&subject, tenant, at_us)?;
    let state = &subject.state;
    let sub = state.subscription.as_ref().expect("loaded only when subscribed");
    let (start, end) = period_bounds_us(sub.anchor_us, k);
    let addons: Vec<Value> = state
        .purchases
        .iter()
        .map(|(purchase, p)| json!({"purchase": purchase, "addon": p.addon, "quantity": p.quantity, "status": p.status.name()}))
        .collect();
    Ok(json!({
        "tenant": tenant,
        "plan": sub.plan,
        "seats": sub.seats,
        "status": if sub.cancelled_at_us.is_some() { "cancelled" } else { "active" },
        "period": {"start": rfc3339(start), "end": rfc3339(end)},
        "storage": {"used_bytes": state.used_bytes, "quota_bytes": state.quota_bytes(&subject.catalog)},
        "tokens": {"used": state.tokens_used(k), "limit": state.token_limit_at(&subject.catalog, at_us)},
        "addons": addons,
    }))
}

pub fn invoice_json(tenant: &str, start: i64, end: i64, status: &str, invoice: &events::Invoice) -> Value {
    let lines: Vec<Value> = invoice
        .lines
        .iter()
        .map(|l| json!({"code": l.code, "description": l.description, "amount": l.amount.to_string(), "paid": l.paid}))
        .collect();
    json!({
        "tenant": tenant,
        "period": {"start": rfc3339(start), "end": rfc3339(end)},
        "currency": invoice.currency,
        "status": status,
        "lines": lines,
        "total": invoice.total.to_string(),
        "paid": invoice.paid.to_string(),
        "amount_due": invoice.amount_due.to_string(),
    })
}

/// `ledger invoice TENANT [--at T] --json`: the recorded invoice when the
/// period is final, else the draft priced from the current state.
pub fn invoice(views: &ViewStore, tenant: &str, at_us: Option<i64>) -> Result<Value, QueryError> {
    let subject = load(views, tenant)?;
    let k = period_at(&subject, tenant, at_us.unwrap_or(subject.default_at_us()))?;
    if let Some(recorded) = LedgerView::final_invoice(views, tenant, k)? {
        return Ok(invoice_json(tenant, recorded.start_us, recorded.end_us, "final", &recorded.invoice));
    }
    let priced = price_period(&subject.state, &subject.catalog, k)
        .ok_or_else(|| QueryError::Unpriceable(tenant.to_string()))?;
    Ok(invoice_json(tenant, priced.start_us, priced.end_us, "draft", &priced.invoice))
}

/// `ledger.query.<tenant>.invoices`: every period of a tenant so far, with
/// status and totals (a cancelled tenant's list ends at its last period).
pub fn invoices(views: &ViewStore, tenant: &str) -> Result<Value, QueryError> {
    let subject = load(views, tenant)?;
    let sub = subject.state.subscription.as_ref().expect("loaded only when subscribed");
    let last = match sub.cancelled_at_us {
        Some(_) => sub.closed_periods.saturating_sub(1),
        None => period_at(&subject, tenant, subject.now_us)?,
    };
    let mut periods = Vec::new();
    for k in 0..=last {
        let one = invoice(views, tenant, Some(period_bounds_us(sub.anchor_us, k).0))?;
        periods.push(json!({
            "period": one["period"], "status": one["status"], "currency": one["currency"],
            "total": one["total"], "paid": one["paid"], "amount_due": one["amount_due"],
        }));
    }
    Ok(json!({"tenant": tenant, "invoices": periods}))
}

/// The readable form of `usage`.
pub fn usage_table(u: &Value) -> String {
    let mut out = String::new();
    let gb = |b: &Value| b.as_u64().unwrap_or(0) as f64 / (1u64 << 30) as f64;
    out.push_str(&format!(
        "tenant   {}  ({})\n",
        u["tenant"].as_str().unwrap_or(""),
        u["status"].as_str().unwrap_or("")
    ));
    out.push_str(&format!("plan     {}  x {} seats\n", u["plan"].as_str().unwrap_or(""), u["seats"]));
    out.push_str(&format!(
        "period   {} .. {}\n",
        u["period"]["start"].as_str().unwrap_or(""),
        u["period"]["end"].as_str().unwrap_or("")
    ));
    out.push_str(&format!(
        "storage  {} / {} bytes ({:.2} / {:.2} GB)\n",
        u["storage"]["used_bytes"],
        u["storage"]["quota_bytes"],
        gb(&u["storage"]["used_bytes"]),
        gb(&u["storage"]["quota_bytes"])
    ));
    out.push_str(&format!("tokens   {} / {}\n", u["tokens"]["used"], u["tokens"]["limit"]));
    for a in u["addons"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "add-on   {:<16} {:<20} x{:<3} {}\n",
            a["purchase"].as_str().unwrap_or(""),
            a["addon"].as_str().unwrap_or(""),
            a["quantity"],
            a["status"].as_str().unwrap_or("")
        ));
    }
    out
}

/// The readable form of `invoice`.
pub fn invoice_table(i: &Value) -> String {
    let currency = i["currency"].as_str().unwrap_or("");
    let mut out = format!(
        "invoice  {}  {} .. {}  [{}]\n",
        i["tenant"].as_str().unwrap_or(""),
        i["period"]["start"].as_str().unwrap_or(""),
        i["period"]["end"].as_str().unwrap_or(""),
        i["status"].as_str().unwrap_or("")
    );
    for l in i["lines"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<28} {:<24} {:>12} {currency}{}\n",
            l["code"].as_str().unwrap_or(""),
            l["description"].as_str().unwrap_or(""),
            l["amount"].as_str().unwrap_or(""),
            if l["paid"].as_bool() == Some(true) { "  paid" } else { "" }
        ));
    }
    for (label, key) in [("total", "total"), ("paid", "paid"), ("amount due", "amount_due")] {
        out.push_str(&format!("  {label:<53} {:>12} {currency}\n", i[key].as_str().unwrap_or("")));
    }
    out
}

/// `ledger tenants --json`: every tenant with its plan, status and seats
/// (`status` is `active`, `cancelled`, or `unsubscribed` for a tenant whose
/// only events came before a subscription).
pub fn tenants(views: &ViewStore) -> Result<Value, QueryError> {
    let mut out = Vec::new();
    for item in LedgerView::tenants(views)? {
        let (tenant, state) = item.map_err(|(_, e)| QueryError::View(e))?;
        out.push(match &state.subscription {
            Some(sub) => json!({
                "tenant": tenant,
                "plan": sub.plan,
                "status": if sub.cancelled_at_us.is_some() { "cancelled" } else { "active" },
                "seats": sub.seats,
            }),
            None => json!({"tenant": tenant, "plan": null, "status": "unsubscribed", "seats": null}),
        });
    }
    Ok(Value::Array(out))
}

/// The readable form of [`tenants`].
pub fn tenants_table(tenants: &Value) -> String {
    let mut out = format!("{:<24} {:<16} {:<12} {:>6}\n", "tenant", "plan", "status", "seats");
    for t in tenants.as_array().into_iter().flatten() {
        let text = |v: &Value| v.as_str().map_or_else(|| "-".to_string(), str::to_string);
        let seats = t["seats"].as_u64().map_or_else(|| "-".to_string(), |s| s.to_string());
        out.push_str(&format!(
            "{:<24} {:<16} {:<12} {:>6}\n",
            text(&t["tenant"]),
            text(&t["plan"]),
            text(&t["status"]),
            seats
        ));
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One record of `ledger events --json`.
pub fn event_json(record: &crate::log::LogRecord) -> Value {
    match record.decode().event {
        Ok(e) => json!({
            "partition": crate::log::Position::unpack(record.position).partition,
            "position": crate::log::Position::unpack(record.position).seq,
            "subject": record.subject,
            "event_id": uuid::Uuid::from_u128(e.event_id).to_string(),
            "tenant": e.tenant,
            "at": rfc3339(e.at_us),
            "actor": e.actor.label(),
            "kind": e.kind().name(),
            "prev_hash": hex(&e.prev_hash),
            "payload": e.payload,
            "admitted_offline_at": e.offline.as_ref().map(|o| rfc3339(o.admitted_at_us)),
            "idempotency_key": e.key.as_ref().map(|k| k.key.clone()),
        }),
        Err(error) => json!({
            "partition": crate::log::Position::unpack(record.position).partition,
            "position": crate::log::Position::unpack(record.position).seq,
            "subject": record.subject,
            "error": error.to_string(),
        }),
    }
}

/// `ledger activity [TENANT] --json`: one object per tenant (all, or the
/// one asked for, which must have events).
pub fn activity(views: &ViewStore, tenant: Option<&str>) -> anyhow::Result<Vec<Value>> {
    use projections::{Activity, ActivityRow, Projection};
    let mut rows = Vec::new();
    for item in views.tree(Activity::NAME)?.iter() {
        let (key, value) = item?;
        if key.first() == Some(&0) {
            continue; // bookkeeping (checkpoint)
        }
        let name = String::from_utf8_lossy(&key).into_owned();
        if tenant.is_none_or(|t| t == name) {
            let row: ActivityRow = projections::decode_row(Activity::NAME, &value)?;
            rows.push(json!({
                "tenant": name,
                "events": row.events,
                "events_by_kind": row.events_by_kind,
                "partition": crate::log::Position::unpack(row.last_position).partition,
                "first_position": crate::log::Position::unpack(row.first_position).seq,
                "last_position": crate::log::Position::unpack(row.last_position).seq,
                "last_at": rfc3339(row.last_at_us),
            }));
        }
    }
    if let Some(t) = tenant {
        anyhow::ensure!(!rows.is_empty(), "no events for tenant {t}");
    }
    Ok(rows)
}
