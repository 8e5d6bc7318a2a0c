//! The billing clock: every instance of `ledger serve` finalizes each period
//! that has ended with an admin `close_period`. Exactly once comes from the
//! decider (a period closes once, in order) and the per-tenant expected
//! sequence, not from coordination between instances.

use std::time::Duration;

use events::Actor;
use projections::period::period_bounds_us;
use projections::LedgerView;

use crate::engine::command::{Command, Submission};
use crate::engine::{Ledger, Reply};

/// Finalizes every ended period, every `interval`.
pub(super) async fn billing_clock(ledger: Ledger, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match close_ended_periods(&ledger).await {
            Ok(0) => {}
            Ok(closed) => tracing::info!(closed, "billing clock finalized periods"),
            Err(error) => tracing::warn!(%error, "billing clock: will try again"),
        }
    }
}

/// Issues `close_period` (as the control panel) for every active tenant
/// whose earliest unclosed period has ended by the wall clock, until its
/// next one has not. Returns how many periods were finalized.
pub async fn close_ended_periods(ledger: &Ledger) -> anyhow::Result<u32> {
    let now_us = chrono::Utc::now().timestamp_micros();
    let mut due = Vec::new();
    for item in LedgerView::tenants(ledger.views())? {
        let (tenant, state) = match item {
            Ok(found) => found,
            Err((tenant, error)) => {
                // One unreadable row must not stop the clock for everyone.
                tracing::warn!(%error, %tenant, "billing clock skips a row");
                continue;
            }
        };
        let Some(sub) = state.subscription.as_ref().filter(|s| s.cancelled_at_us.is_none()) else { continue };
        if period_bounds_us(sub.anchor_us, sub.closed_periods).1 <= now_us {
            due.push(tenant);
        }
    }
    let mut closed = 0;
    for tenant in due {
        // A tenant the ledger was down for may owe several periods; the cap
        // only stops a runaway loop (a century of months).
        for _ in 0..1200 {
            let close = Submission::new(Actor::Admin, Command::ClosePeriod { tenant: tenant.clone() });
            match ledger.submit(close).await {
                Reply::Ok { .. } => closed += 1,
                Reply::Rejected { rejection, .. } if rejection.code == "period_not_ended" => break,
                other => {
                    tracing::warn!(%tenant, reply = ?other, "billing clock could not close a period");
                    break;
                }
            }
        }
    }
    Ok(closed)
}
