//! `--explain`: for each invoice line (and each usage figure) the events
//! behind it, with position, event id, `at` and actor, and the arithmetic.

use std::collections::{BTreeMap, HashMap};

use events::{Envelope, Event};
use futures_util::StreamExt;
use projections::domain::{CatalogState, Fact, TenantState};
use projections::invoice::{price_period, PricedPeriod};
use projections::period::period_bounds_us;
use projections::ViewStore;
use serde_json::{json, Value};

use crate::log::EventLog;
use crate::report::{rfc3339, QueryError};

/// The tenant's events as the views folded them (chain-continuing only).
async fn tenant_events<L: EventLog>(log: &L, tenant: &str) -> anyhow::Result<Vec<(u64, Envelope)>> {
    let head = log.tenant_head(tenant).await?;
    let mut out = Vec::new();
    if head == 0 {
        return Ok(out);
    }
    let mut scratch = TenantState::default();
    let mut records = log.read(1, Some(tenant)).await?;
    while let Some(record) = records.next().await {
        let record = record?;
        let decoded = record.decode();
        if let Ok(envelope) = decoded.event {
            let fact = Fact { position: record.position, hash: decoded.hash, envelope: &envelope };
            if scratch.fold(&fact).is_ok() {
                out.push((record.position, envelope));
            }
        }
        if record.position >= head {
            break;
        }
    }
    Ok(out)
}

fn event_json(position: u64, e: &Envelope) -> Value {
    json!({
        "partition": crate::log::Position::unpack(position).partition,
        "position": crate::log::Position::unpack(position).seq,
        "event_id": uuid::Uuid::from_u128(e.event_id).to_string(),
        "at": rfc3339(e.at_us),
        "actor": e.actor.label(),
        "kind": e.kind().name(),
    })
}

fn purchase_of(event: &Event) -> Option<&str> {
    match event {
        Event::AddonPurchased { purchase, .. }
        | Event::PaymentSettled { purchase, .. }
        | Event::AddonActivated { purchase }
        | Event::AddonCancelled { purchase } => Some(purchase),
        _ => None,
    }
}

fn is_subscription_change(event: &Event) -> bool {
    matches!(
        event,
        Event::Subscribed { .. }
            | Event::SeatsChanged { .. }
            | Event::PlanChanged { .. }
            | Event::SubscriptionCancelled
    )
}

/// Which events stand behind one line of a priced period.
fn line_events<'a>(
    code: &str,
    priced: &PricedPeriod,
    state: &TenantState,
    catalog: &CatalogState,
    all: &'a [(u64, Envelope)],
) -> Vec<&'a (u64, Envelope)> {
    let (start, end) = (priced.start_us, priced.end_us);
    // The subscription events in force during the period: the last one
    // before it starts and every one inside it.
    let last_before =
        all.iter().filter(|(_, e)| is_subscription_change(&e.payload) && e.at_us <= start).last();
    let subscription: Vec<&(u64, Envelope)> = last_before
        .into_iter()
        .chain(
            all.iter()
                .filter(|(_, e)| is_subscription_change(&e.payload) && e.at_us > start && e.at_us < end),
        )
        .collect();
    if let Some(plan) = code.strip_prefix("plan:") {
        let mut out = subscription;
        out.retain(|(_, e)| match &e.payload {
            Event::Subscribed { plan: p, .. } | Event::PlanChanged { plan: p } => p == plan,
            Event::SeatsChanged { .. } => state.segment_at(e.at_us).is_some_and(|s| s.plan == plan),
            _ => true,
        });
        return out;
    }
    if let Some(purchase) = code.strip_prefix("addon:") {
        return all.iter().filter(|(_, e)| purchase_of(&e.payload) == Some(purchase)).collect();
    }
    // Token overage: the consumption in the period, the plan in force at its
    // end, and the add-ons that raised the limit.
    let mut out: Vec<&(u64, Envelope)> = all
        .iter()
        .filter(|(_, e)| {
            matches!(e.payload, Event::TokensConsumed { .. }) && e.at_us >= start && e.at_us < end
        })
        .collect();
    out.extend(subscription);
    for (position, e) in all {
        if let Event::AddonActivated { purchase } = &e.payload {
            let grants = state
                .purchases
                .get(purchase)
                .and_then(|p| catalog.addons.get(&p.addon))
                .is_some_and(|a| a.grants.tokens.is_some());
            if grants && e.at_us < end {
                out.push(all.iter().find(|(p, _)| p == position).expect("from all"));
            }
        }
    }
    out.sort_by_key(|(p, _)| *p);
    out.dedup_by_key(|(p, _)| *p);
    out
}

/// The tenant's state, the catalog, the instant asked about (default: ledger
/// time, or a cancelled tenant's cancellation) and the period holding it.
fn load_at(
    views: &ViewStore,
    tenant: &str,
    at_us: Option<i64>,
) -> Result<(TenantState, CatalogState, i64, u32), QueryError> {
    let subject = crate::report::load(views, tenant)?;
    let at_us = at_us.unwrap_or(subject.default_at_us());
    let k = crate::report::period_at(&subject, tenant, at_us)?;
    Ok((subject.state, subject.catalog, at_us, k))
}

fn unpriceable(tenant: &str) -> anyhow::Error {
    crate::report::QueryError::Unpriceable(tenant.to_string()).into()
}

/// `ledger invoice TENANT --at T --explain`.
pub async fn invoice<L: EventLog>(
    log: &L,
    views: &ViewStore,
    tenant: &str,
    at_us: Option<i64>,
) -> anyhow::Result<Value> {
    let (state, catalog, at_us, k) = load_at(views, tenant, at_us)?;
    let priced = price_period(&state, &catalog, k).ok_or_else(|| unpriceable(tenant))?;
    let all = tenant_events(log, tenant).await?;
    let mut invoice = crate::report::invoice(views, tenant, Some(at_us))?;
    let lines: Vec<Value> = priced
        .lines
        .iter()
        .map(|l| {
            let events: Vec<Value> = line_events(&l.line.code, &priced, &state, &catalog, &all)
                .iter()
                .map(|(p, e)| event_json(*p, e))
                .collect();
            json!({
                "code": l.line.code,
                "arithmetic": l.arithmetic,
                "exact": l.exact.normalize().to_string(),
                "amount": l.line.amount.to_string(),
                "paid": l.line.paid,
                "events": events,
            })
        })
        .collect();
    invoice["explain"] = json!(lines);
    Ok(invoice)
}

/// `ledger usage TENANT --explain`.
pub async fn usage<L: EventLog>(
    log: &L,
    views: &ViewStore,
    tenant: &str,
    at_us: Option<i64>,
) -> anyhow::Result<Value> {
    let (state, catalog, at_us, k) = load_at(views, tenant, at_us)?;
    let (start, end) = period_bounds_us(state.subscription.as_ref().expect("subscribed").anchor_us, k);
    let all = tenant_events(log, tenant).await?;
    // The live files are the stores no delete has undone, in the order
    // stored, up to the event the view's state includes (so the list and
    // the figures describe the same moment).
    let mut live: BTreeMap<u64, &(u64, Envelope)> = BTreeMap::new();
    let mut stored_at: HashMap<&str, u64> = HashMap::new();
    for event in all.iter().take_while(|(p, _)| *p <= state.chain.last_position) {
        match &event.1.payload {
            Event::FileStored { file, .. } => {
                stored_at.insert(file, event.0);
                live.insert(event.0, event);
            }
            Event::FileDeleted { file, .. } => {
                if let Some(position) = stored_at.remove(file.as_str()) {
                    live.remove(&position);
                }
            }
            _ => {}
        }
    }
    let live_files: Vec<Value> = live.values().map(|(p, e)| event_json(*p, e)).collect();
    let active_grants: Vec<Value> = all
        .iter()
        .filter(|(_, e)| {
            matches!(&e.payload, Event::AddonActivated { purchase }
                if state.purchases.get(purchase).is_some_and(|p| p.status == projections::domain::PurchaseStatus::Active))
        })
        .map(|(p, e)| event_json(*p, e))
        .collect();
    let consumed: Vec<Value> = all
        .iter()
        .filter(|(_, e)| {
            matches!(e.payload, Event::TokensConsumed { .. }) && e.at_us >= start && e.at_us < end
        })
        .map(|(p, e)| event_json(*p, e))
        .collect();
    let plan_events: Vec<Value> = all
        .iter()
        .filter(|(_, e)| matches!(e.payload, Event::Subscribed { .. } | Event::PlanChanged { .. }))
        .map(|(p, e)| event_json(*p, e))
        .collect();
    // The alerts each meter has fired: this period's token crossings, and
    // every storage crossing (armed again only below its level).
    let alerts = |meter: events::Meter| -> Vec<Value> {
        all.iter()
            .filter(|(_, e)| match &e.payload {
                Event::UsageThresholdCrossed { meter: m, period, .. } => {
                    *m == meter && (meter == events::Meter::Storage || *period == k)
                }
                Event::UsageAlertsSet { .. } => true,
                _ => false,
            })
            .map(|(p, e)| event_json(*p, e))
            .collect()
    };
    let mut usage = crate::report::usage(views, tenant, Some(at_us))?;
    let plan = catalog.plans.get(&state.subscription.as_ref().expect("subscribed").plan);
    usage["explain"] = json!({
        "storage": {
            "used_bytes": format!("sum of {} live files' bytes", state.live_files),
            "quota_bytes": format!(
                "floor(({} GB plan + active add-on GB x quantity) x 2^30)",
                plan.map(|p| p.storage_quota_gb.to_string()).unwrap_or_default()
            ),
            "files": live_files,
            "plan": plan_events,
            "add_ons": active_grants,
            "alerts": alerts(events::Meter::Storage),
        },
        "tokens": {
            "used": format!("sum of {} TokensConsumed in the period", consumed.len()),
            "limit": format!(
                "{} plan monthly limit + tokens of add-ons in force at {}",
                plan.map(|p| p.monthly_token_limit).unwrap_or(0),
                rfc3339(at_us)
            ),
            "consumed": consumed,
            "alerts": alerts(events::Meter::Tokens),
        },
    });
    Ok(usage)
}

/// The readable form of an explained invoice.
pub fn invoice_table(i: &Value) -> String {
    let mut out = crate::report::invoice_table(i);
    for line in i["explain"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n{}: {} = {} -> {}\n",
            line["code"].as_str().unwrap_or(""),
            line["arithmetic"].as_str().unwrap_or(""),
            line["exact"].as_str().unwrap_or(""),
            line["amount"].as_str().unwrap_or("")
        ));
        for e in line["events"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  #{:<8} {}  {:<14} {:<24} {}\n",
                e["position"],
                e["at"].as_str().unwrap_or(""),
                e["actor"].as_str().unwrap_or(""),
                e["kind"].as_str().unwrap_or(""),
                e["event_id"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

/// `ledger audit what-if TENANT --plan P --at T`: the period holding T
/// priced from the same events as if every plan segment had been on `plan`
/// (same seats, same add-ons, `plan`'s token rules), beside the real one.
pub fn what_if(views: &ViewStore, tenant: &str, plan: &str, at_us: Option<i64>) -> anyhow::Result<Value> {
    let (state, catalog, _, k) = load_at(views, tenant, at_us)?;
    let new_plan = catalog.plans.get(plan).ok_or_else(|| anyhow::anyhow!("unknown_plan: no plan {plan}"))?;
    let actual = price_period(&state, &catalog, k).ok_or_else(|| unpriceable(tenant))?;
    anyhow::ensure!(
        new_plan.currency == actual.invoice.currency,
        "currency_mismatch: plan {plan} bills in {}, the tenant in {}",
        new_plan.currency,
        actual.invoice.currency
    );
    let mut repriced_state = state.clone();
    for segment in &mut repriced_state.segments {
        segment.plan = plan.to_string();
    }
    if let Some(sub) = &mut repriced_state.subscription {
        sub.plan = plan.to_string();
    }
    let repriced = price_period(&repriced_state, &catalog, k)
        .ok_or_else(|| anyhow::anyhow!("invalid_amount: on plan {plan} an amount would be out of range"))?;
    let side = |p: &PricedPeriod| {
        json!({
            "lines": p.invoice.lines.iter().map(|l| json!({"code": l.code, "amount": l.amount.to_string(), "paid": l.paid})).collect::<Vec<_>>(),
            "total": p.invoice.total.to_string(),
            "amount_due": p.invoice.amount_due.to_string(),
        })
    };
    Ok(json!({
        "tenant": tenant,
        "period": {"start": rfc3339(actual.start_us), "end": rfc3339(actual.end_us)},
        "currency": actual.invoice.currency,
        "plan": plan,
        "actual": side(&actual),
        "what_if": side(&repriced),
        "difference": (repriced.invoice.total - actual.invoice.total).to_string(),
    }))
}

/// The readable form of a what-if: old and new side by side.
pub fn what_if_table(w: &Value) -> String {
    let currency = w["currency"].as_str().unwrap_or("");
    let mut out = format!(
        "what-if  {}  {} .. {}  on plan {}\n  {:<28} {:>12} {:>12}\n",
        w["tenant"].as_str().unwrap_or(""),
        w["period"]["start"].as_str().unwrap_or(""),
        w["period"]["end"].as_str().unwrap_or(""),
        w["plan"].as_str().unwrap_or(""),
        "line",
        "actual",
        "what-if"
    );
    let mut codes: Vec<String> = Vec::new();
    for side in ["actual", "what_if"] {
        for l in w[side]["lines"].as_array().into_iter().flatten() {
            let code = l["code"].as_str().unwrap_or("").to_string();
            if !codes.contains(&code) {
                codes.push(code);
            }
        }
    }
    let amount = |side: &str, code: &str| {
        w[side]["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["code"] == code)
            .and_then(|l| l["amount"].as_str())
            .unwrap_or("-")
            .to_string()
    };
    for code in &codes {
        out.push_str(&format!(
            "  {code:<28} {:>12} {:>12}\n",
            amount("actual", code),
            amount("what_if", code)
        ));
    }
    out.push_str(&format!(
        "  {:<28} {:>12} {:>12} {currency}\n  {:<28} {:>25} {currency}\n",
        "total",
        w["actual"]["total"].as_str().unwrap_or(""),
        w["what_if"]["total"].as_str().unwrap_or(""),
        "difference",
        w["difference"].as_str().unwrap_or("")
    ));
    out
}
