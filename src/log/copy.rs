//! Copying a ledger's events into another ledger: how a ledger changes its
//! number of partitions (`ledger copy --to URL --partitions N`), or moves
//! from the embedded log to JetStream.
//!
//! A tenant's events are its hash chain: each names its predecessor's hash
//! and none names its log position, so the chain survives the move whole.
//! Every event keeps its bytes (ids, times, hashes) and is appended on its
//! tenant's subject in the new ledger's partition for it, after the
//! tenant's earlier events and with the tenant's expectation, as the
//! engine appends: the copy is a ledger the new views fold and `audit
//! verify` checks like any other. Positions change. Partition 0 of the old
//! ledger (the catalog's) is copied first, so the catalog precedes every
//! event that names a plan.

use std::collections::HashMap;

use futures_util::StreamExt;

use super::{heads, AppendBatch, AppendMessage, EventLog, Expectation, LogError, Position};

/// Messages per append: large batches make a copy fast (an atomic batch
/// costs about the same at 1 message as at 1,000).
const BATCH: usize = 500;

/// What a copy did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Copied {
    pub events: u64,
    pub tenants: usize,
    /// Records that are not ledger events (raw publishes `audit verify`
    /// reports), left behind.
    pub skipped: u64,
    pub partitions_from: u32,
    pub partitions_to: u32,
}

/// Copies every event of `from` into `to`, which must hold no events.
pub async fn copy<F: EventLog, T: EventLog>(from: &F, to: &T) -> anyhow::Result<Copied> {
    if heads(to).await?.iter().any(|&head| head != 0) {
        anyhow::bail!("the ledger to copy into holds events already: a copy goes into a new, empty ledger");
    }
    let mut copier = Copier {
        to,
        pending: vec![Vec::new(); to.partitions() as usize],
        last: HashMap::new(),
        copied: Copied {
            partitions_from: from.partitions(),
            partitions_to: to.partitions(),
            ..Copied::default()
        },
    };
    let from_heads = heads(from).await?;
    let total: u64 = from_heads.iter().map(|&h| Position::unpack(h).seq).sum();
    for (partition, head) in from_heads.into_iter().enumerate() {
        let partition = partition as u32;
        if head == 0 {
            continue;
        }
        let mut records = from.in_partition(partition).read(Position::pack(partition, 1), None).await?;
        while let Some(record) = records.next().await {
            let record = record?;
            let position = record.position;
            match record.decode().event {
                Ok(envelope) => {
                    let message = AppendMessage {
                        tenant: envelope.tenant.clone(),
                        kind: envelope.payload.kind().name(),
                        payload: record.payload.clone(),
                    };
                    copier.push(message).await?;
                }
                Err(error) => {
                    tracing::warn!(position = %Position::unpack(position), %error, "not a ledger event: left behind");
                    copier.copied.skipped += 1;
                }
            }
            let done = copier.copied.events + copier.copied.skipped;
            if done % 10_000 == 0 {
                tracing::info!(done, total, "copying");
            }
            if position >= head {
                break;
            }
        }
        // The catalog (partition 0) lands before anything that names it.
        for target in 0..copier.pending.len() {
            copier.flush(target).await?;
        }
    }
    copier.copied.tenants = copier.last.len();
    tracing::info!(events = copier.copied.events, tenants = copier.copied.tenants, "copied");
    Ok(copier.copied)
}

struct Copier<'a, T> {
    to: &'a T,
    /// Per partition of `to`: messages not appended yet, in log order.
    pending: Vec<Vec<AppendMessage>>,
    /// Per tenant: its last position in `to`.
    last: HashMap<String, u64>,
    copied: Copied,
}

impl<T: EventLog> Copier<'_, T> {
    async fn push(&mut self, message: AppendMessage) -> anyhow::Result<()> {
        let target = self.to.partition_of(&message.tenant) as usize;
        self.pending[target].push(message);
        if self.pending[target].len() >= BATCH {
            self.flush(target).await?;
        }
        Ok(())
    }

    /// Appends partition `target`'s pending messages as one batch, each
    /// tenant expected where its last copied event left it. A batch whose
    /// outcome is unknown is sent again with the same expectations, so it
    /// lands once.
    async fn flush(&mut self, target: usize) -> anyhow::Result<()> {
        let messages = std::mem::take(&mut self.pending[target]);
        if messages.is_empty() {
            return Ok(());
        }
        let mut expectations: Vec<Expectation> = Vec::new();
        for m in &messages {
            if !expectations.iter().any(|e| e.tenant == m.tenant) {
                let last_position = self.last.get(&m.tenant).copied().unwrap_or(0);
                expectations.push(Expectation { tenant: m.tenant.clone(), last_position });
            }
        }
        let batch = AppendBatch { messages, expectations };
        let mut tries = 0;
        let ack = loop {
            match self.to.append(batch.clone()).await {
                Ok(ack) => break ack,
                Err(LogError::Unavailable(error)) if tries < 20 => {
                    tries += 1;
                    tracing::warn!(%error, "appending to the new ledger; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                // After an unknown outcome, a conflict on the first try's
                // expectation means that try landed.
                Err(LogError::Conflict { .. }) if tries > 0 && self.landed(&batch).await? => {
                    break self.ack_of_landed(&batch).await?;
                }
                Err(error) => return Err(error.into()),
            }
        };
        for (i, m) in batch.messages.iter().enumerate() {
            self.last.insert(m.tenant.clone(), ack.first + i as u64);
        }
        self.copied.events += batch.messages.len() as u64;
        Ok(())
    }

    /// Whether `batch` is in the new ledger: its last message's tenant
    /// ends with that message's bytes.
    async fn landed(&self, batch: &AppendBatch) -> anyhow::Result<bool> {
        let last = batch.messages.last().expect("a batch has messages");
        let head = self.to.tenant_head(&last.tenant).await?;
        Ok(self.record_at(head).await?.is_some_and(|payload| payload == last.payload))
    }

    /// The positions a landed batch was given (consecutive in its partition).
    async fn ack_of_landed(&self, batch: &AppendBatch) -> anyhow::Result<super::AppendAck> {
        let last = batch.messages.last().expect("a batch has messages");
        let head = self.to.tenant_head(&last.tenant).await?;
        Ok(super::AppendAck { first: head + 1 - batch.messages.len() as u64, last: head })
    }

    async fn record_at(&self, position: u64) -> anyhow::Result<Option<bytes::Bytes>> {
        if position == 0 {
            return Ok(None);
        }
        let log = self.to.in_partition(Position::unpack(position).partition);
        let mut records = log.read(position, None).await?;
        Ok(match records.next().await {
            Some(record) => Some(record?.payload),
            None => None,
        })
    }
}
