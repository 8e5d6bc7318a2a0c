//! Notifications out of the ledger: what each notification says (its JSON),
//! and delivering it by webhook and on NATS.
//!
//! What a notification is comes from the log: the `ledger` view derives one
//! from each notifying event as it folds (`projections::notice`), with the
//! event's id, so every instance and every replay agrees on each. This
//! module renders them and delivers them; it decides nothing.

pub mod admin;
pub mod deliver;
pub mod egress;
pub mod sign;
pub mod store;

use events::Meter;
use projections::notice::{AddonState, Notice, NoticeRow};
use serde_json::{json, Value};

use crate::report::rfc3339;

pub use projections::notice::KINDS;

/// The `type` of the notification `webhooks test` sends.
pub const TEST_KIND: &str = "webhook.test";

/// A notification as it goes out: `{"type", "timestamp", "data"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Its id: the event's, as 32 hex digits (webhook ids and NATS headers
    /// derive from it).
    pub id: String,
    pub kind: &'static str,
    pub tenant: String,
    /// The event's `at`, RFC 3339.
    pub timestamp: String,
    /// The event's log position.
    pub position: u64,
    pub data: Value,
}

impl Notification {
    /// The JSON body every webhook and NATS message carries.
    pub fn body(&self) -> Value {
        json!({"type": self.kind, "timestamp": self.timestamp, "data": self.data})
    }

    /// The `webhook-id` of this notification at one endpoint: the same on
    /// every attempt and after any restart, never from a clock or a
    /// position.
    pub fn webhook_id(&self, endpoint: &str) -> String {
        format!("msg_{}_{endpoint}", self.id)
    }

    /// The `webhook-id` header of its NATS message.
    pub fn nats_id(&self) -> String {
        format!("msg_{}", self.id)
    }
}

fn meter_name(meter: Meter) -> &'static str {
    match meter {
        Meter::Tokens => "tokens",
        Meter::Storage => "storage",
    }
}

/// A stored notification as it goes out. `data` always names the tenant
/// and the log position (no order is promised; the position tells it).
pub fn render(row: &NoticeRow) -> Notification {
    let tenant = row.tenant.as_str();
    let mut data = match &row.notice {
        Notice::InvoiceFinalized { start_us, end_us, invoice, .. } => {
            crate::report::invoice_json(tenant, *start_us, *end_us, "final", invoice)
        }
        Notice::ThresholdCrossed { meter, threshold, used, limit, start_us, end_us } => json!({
            "tenant": tenant,
            "meter": meter_name(*meter),
            "threshold": threshold,
            "used": used,
            "limit": limit,
            "period": {"start": rfc3339(*start_us), "end": rfc3339(*end_us)},
        }),
        Notice::Denied { meter, used, limit, requested } => {
            // The figures the denial's reply carried.
            let (code, limit_key) = match meter {
                Meter::Tokens => ("token_limit_exceeded", "limit"),
                Meter::Storage => ("storage_quota_exceeded", "quota"),
            };
            let mut data = json!({"tenant": tenant, "meter": meter_name(*meter), "code": code, "used": used, "requested": requested});
            data[limit_key] = json!(limit);
            data
        }
        Notice::Addon { purchase, addon, quantity, amount, currency, state } => json!({
            "tenant": tenant,
            "purchase": purchase,
            "addon": addon,
            "quantity": quantity,
            "amount": amount.map(|a| a.to_string()),
            "currency": currency,
            "status": match state {
                AddonState::PaymentPending => "pending",
                AddonState::Activated => "active",
                AddonState::PaymentFailed => "failed",
            },
        }),
        Notice::SubscriptionChanged { command, plan, seats, cancelled } => json!({
            "tenant": tenant,
            "command": command.name(),
            "plan": plan,
            "seats": seats,
            "status": if *cancelled { "cancelled" } else { "active" },
        }),
    };
    let position = crate::log::Position::unpack(row.position);
    data["partition"] = json!(position.partition);
    data["position"] = json!(position.seq);
    Notification {
        id: format!("{:032x}", row.event_id),
        kind: row.notice.kind(),
        tenant: row.tenant.clone(),
        timestamp: rfc3339(row.at_us),
        position: row.position,
        data,
    }
}

/// The ledger's notification store: on the JetStream server beside the
/// stream (with its replicas), or in the embedded ledger's data directory.
pub async fn open_store(
    data: &std::path::Path,
    log: &crate::log::AnyLog,
) -> anyhow::Result<store::NotifyStore> {
    match log {
        crate::log::AnyLog::Embedded(_) => Ok(store::NotifyStore::Dir(data.to_path_buf())),
        crate::log::AnyLog::JetStream(js) => {
            let replicas = js.ledger_stream().cached_info().config.num_replicas;
            Ok(store::NotifyStore::JetStream(
                store::JetStreamStore::open(js.context().clone(), replicas).await?,
            ))
        }
    }
}
