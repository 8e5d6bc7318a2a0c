//! The event log: an append-only sequence of encoded events, with per-tenant
//! optimistic concurrency and all-or-nothing batches.
//!
//! Two backends keep the same contract, and one conformance suite
//! (`tests/log_conformance.rs`) holds both to it:
//! - [`JetStreamLog`]: NATS JetStream, atomic batch publish.
//! - [`EmbeddedLog`]: a sled tree in the data directory, for one machine.
//!
//! Positions are 1-based and contiguous; 0 means "nothing yet".

pub mod copy;
mod embedded;
mod info;
mod jetstream;

use std::collections::HashSet;
use std::future::Future;

use bytes::Bytes;

pub use embedded::EmbeddedLog;
pub use info::{LedgerInfo, PartitionInfo, Peer};
pub use jetstream::{stream_name, JetStreamLog, JetStreamOptions, PARTITIONS_METADATA, STREAM_NAME};

/// Most messages one append may carry: the server's atomic batch limit.
pub const MAX_BATCH_MESSAGES: usize = 1000;

/// Most partitions a ledger may have (`ledger init --partitions N`).
pub const MAX_PARTITIONS: u32 = 1024;

/// Inside the ledger a position is one `u64`: the partition in the bits
/// above [`SEQ_BITS`], the stream sequence below (partition 0's positions
/// are its sequences, so a ledger of one partition is unchanged). Views,
/// checkpoints and answers carry it; it is split into `partition` and `seq`
/// wherever a position is shown.
pub const SEQ_BITS: u32 = 48;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// The partition a tenant's events live in: FNV-1a (64-bit) of the tenant
/// id's bytes, modulo the ledger's partitions. The catalog lives in
/// partition 0 (`docs/scale.md`).
pub fn partition_of(tenant: &str, partitions: u32) -> u32 {
    if partitions <= 1 || tenant == events::CATALOG_TENANT {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in tenant.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions)) as u32
}

/// A place on the ledger's log: a partition and a position within it. As
/// text it is `P:SEQ`; a bare number means partition 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: u32,
    pub seq: u64,
}

impl std::str::FromStr for Position {
    type Err = String;

    fn from_str(text: &str) -> Result<Position, String> {
        let bad =
            || format!("{text:?} is not a log position: expected SEQ or PARTITION:SEQ (e.g. 42 or 0:42)");
        let (partition, seq) = match text.split_once(':') {
            Some((p, s)) => (p.parse().map_err(|_| bad())?, s),
            None => (0, text),
        };
        let seq = seq.parse().map_err(|_| bad())?;
        Ok(Position { partition, seq })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.partition, self.seq)
    }
}

impl Position {
    /// The position as the ledger carries it inside (see [`SEQ_BITS`]), or
    /// why the ledger has no such place.
    pub fn in_partitions(self, partitions: u32) -> Result<u64, String> {
        if self.partition >= partitions {
            let s = if partitions == 1 { "" } else { "s" };
            return Err(format!(
                "position {self}: partition {} does not exist (this ledger has {partitions} partition{s}, numbered from 0)",
                self.partition
            ));
        }
        if self.seq > SEQ_MASK {
            return Err(format!("position {self}: the sequence is past the largest a partition holds"));
        }
        Ok(Position::pack(self.partition, self.seq))
    }

    /// A partition's sequence as one `u64` (0, "nothing yet", stays 0).
    pub fn pack(partition: u32, seq: u64) -> u64 {
        if seq == 0 {
            0
        } else {
            (u64::from(partition) << SEQ_BITS) | (seq & SEQ_MASK)
        }
    }

    /// The same sequence, said of `partition` (a packed 0 has none).
    pub fn with_partition(self, partition: u32) -> Position {
        Position { partition, seq: self.seq }
    }

    /// The partition and sequence of a position carried as one `u64`.
    pub fn unpack(packed: u64) -> Position {
        Position { partition: (packed >> SEQ_BITS) as u32, seq: packed & SEQ_MASK }
    }
}

/// One encoded event to append.
#[derive(Debug, Clone)]
pub struct AppendMessage {
    pub tenant: String,
    /// The event kind's name; the subject is `ledger.v1.<tenant>.<kind>`.
    pub kind: &'static str,
    pub payload: Bytes,
}

impl AppendMessage {
    pub fn subject(&self) -> String {
        format!("{}.{}.{}", events::SUBJECT_PREFIX, self.tenant, self.kind)
    }
}

/// What a writer believes a tenant's last position is (0: no events yet).
/// The append fails with [`LogError::Conflict`] if the log disagrees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub tenant: String,
    pub last_position: u64,
}

/// An all-or-nothing group of messages.
#[derive(Debug, Clone, Default)]
pub struct AppendBatch {
    pub messages: Vec<AppendMessage>,
    /// At most one per tenant, and only for tenants that have a message in
    /// the batch.
    pub expectations: Vec<Expectation>,
}

/// Positions given to a committed batch: `first..=last`, in message order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    pub first: u64,
    pub last: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Another writer appended to this tenant since the caller looked:
    /// reload the tenant from the log and decide again. Nothing was stored.
    #[error("conflict on tenant {tenant}: expected last position {expected}, log has {actual}")]
    Conflict { tenant: String, expected: u64, actual: u64 },
    /// The batch breaks the append contract (empty, too large, expectation
    /// for a tenant with no message): a bug in the caller. Nothing was stored.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// The log cannot be reached or refused the request for a reason outside
    /// the batch. Whether a batch in flight was stored is unknown: retry with
    /// the same expectations, which makes the retry safe.
    #[error("log unavailable: {0}")]
    Unavailable(String),
    /// nats-server is older than 2.12 and would ignore the headers this
    /// ledger's safety rests on. Upgrade the server.
    #[error("nats-server {found} is too old: the ledger needs >= 2.12 (atomic batch publish, per-subject expected sequence)")]
    ServerTooOld { found: String },
    /// The ledger's layout (its partitions and their streams) is not what
    /// was asked for, or not whole. Nothing was stored.
    #[error("{0}")]
    Layout(String),
    /// Local storage failed (disk full, corrupt file). The embedded log is the
    /// record itself: restore it from a backup; views can be rebuilt from it.
    #[error("log storage: {0}")]
    Storage(String),
}

impl AppendBatch {
    /// Checks the contract shared by both backends.
    pub(crate) fn check(&self) -> Result<(), LogError> {
        if self.messages.is_empty() {
            return Err(LogError::InvalidBatch("empty batch".into()));
        }
        if self.messages.len() > MAX_BATCH_MESSAGES {
            return Err(LogError::InvalidBatch(format!(
                "{} messages is over the {MAX_BATCH_MESSAGES}-message limit",
                self.messages.len()
            )));
        }
        for m in &self.messages {
            if !events::valid_tenant_id(&m.tenant) && m.tenant != events::CATALOG_TENANT {
                return Err(LogError::InvalidBatch(format!("bad tenant {:?}", m.tenant)));
            }
        }
        // Sets, not nested scans: a group-committed batch can carry up to a
        // thousand tenants, each with an expectation.
        let tenants: HashSet<&str> = self.messages.iter().map(|m| m.tenant.as_str()).collect();
        let mut expected: HashSet<&str> = HashSet::with_capacity(self.expectations.len());
        for e in &self.expectations {
            if !expected.insert(e.tenant.as_str()) {
                return Err(LogError::InvalidBatch(format!("two expectations for {}", e.tenant)));
            }
            if !tenants.contains(e.tenant.as_str()) {
                return Err(LogError::InvalidBatch(format!(
                    "expectation for {} which has no message in the batch",
                    e.tenant
                )));
            }
        }
        Ok(())
    }
}

pub use replay::{LogRecord, Source};

/// A stream of records that follows the tail: it ends only on error or drop.
pub type RecordStream = replay::RecordStream<LogError>;

/// The log contract: the read side (`replay::Source`: `head`, `read`) plus
/// appends. Implementations are cheap to clone and share.
pub trait EventLog: Source<Error = LogError> {
    /// How many partitions the ledger has (fixed when it was created).
    fn partitions(&self) -> u32 {
        1
    }

    /// The same log, with `head` and untargeted reads in `partition`.
    /// Appends and tenant reads always go to the tenant's own partition.
    fn in_partition(&self, partition: u32) -> Self
    where
        Self: Sized,
    {
        let _ = partition;
        self.clone()
    }

    /// The partition a tenant's events live in.
    fn partition_of(&self, tenant: &str) -> u32 {
        partition_of(tenant, self.partitions())
    }

    /// Appends the batch atomically and durably, or stores nothing.
    fn append(&self, batch: AppendBatch) -> impl Future<Output = Result<AppendAck, LogError>> + Send;

    /// The position of the tenant's last event (0 when it has none).
    fn tenant_head(&self, tenant: &str) -> impl Future<Output = Result<u64, LogError>> + Send;

    /// The tenant's records from `from` through `head` (a tenant head read
    /// before), in order: a tenant load's tail. A log may serve a short
    /// tail without opening a reader.
    fn read_tenant(
        &self,
        tenant: &str,
        from: u64,
        head: u64,
    ) -> impl Future<Output = Result<Vec<LogRecord>, LogError>> + Send {
        async move { read_through(self, tenant, from, head, Vec::new()).await }
    }
}

/// Every partition's head, in partition order. Partition 0 (the catalog's)
/// is read last, so it holds every plan an event at or before another
/// partition's head names: folding partition 0 first to these heads never
/// meets a plan the catalog lacks.
pub async fn heads<L: EventLog>(log: &L) -> Result<Vec<u64>, LogError> {
    let mut heads = Vec::new();
    for partition in (0..log.partitions()).rev() {
        heads.push(log.in_partition(partition).head().await?);
    }
    heads.reverse();
    Ok(heads)
}

/// Appends the tenant's records from `from` through `head` to `out`, with a
/// reader.
pub(crate) async fn read_through<L: Source<Error = LogError>>(
    log: &L,
    tenant: &str,
    from: u64,
    head: u64,
    mut out: Vec<LogRecord>,
) -> Result<Vec<LogRecord>, LogError> {
    use futures_util::StreamExt;
    if from > head {
        return Ok(out);
    }
    let mut records = log.read(from, Some(tenant)).await?;
    while let Some(record) = records.next().await {
        let record = record?;
        let position = record.position;
        out.push(record);
        if position >= head {
            break;
        }
    }
    Ok(out)
}

/// Either backend, chosen at run time from `--nats`.
#[derive(Clone)]
pub enum AnyLog {
    Embedded(EmbeddedLog),
    JetStream(JetStreamLog),
}

impl AnyLog {
    /// Which log this is, for messages and for binding views to their log.
    pub fn describe(&self) -> String {
        match self {
            AnyLog::Embedded(_) => "embedded".into(),
            AnyLog::JetStream(_) => format!("jetstream:{STREAM_NAME}"),
        }
    }
}

impl EventLog for AnyLog {
    fn partitions(&self) -> u32 {
        match self {
            AnyLog::Embedded(_) => 1,
            AnyLog::JetStream(l) => l.partitions(),
        }
    }
    fn in_partition(&self, partition: u32) -> AnyLog {
        match self {
            AnyLog::Embedded(l) => AnyLog::Embedded(l.clone()),
            AnyLog::JetStream(l) => AnyLog::JetStream(l.in_partition(partition)),
        }
    }

    async fn append(&self, batch: AppendBatch) -> Result<AppendAck, LogError> {
        match self {
            AnyLog::Embedded(l) => l.append(batch).await,
            AnyLog::JetStream(l) => l.append(batch).await,
        }
    }
    async fn tenant_head(&self, tenant: &str) -> Result<u64, LogError> {
        match self {
            AnyLog::Embedded(l) => l.tenant_head(tenant).await,
            AnyLog::JetStream(l) => l.tenant_head(tenant).await,
        }
    }
    async fn read_tenant(&self, tenant: &str, from: u64, head: u64) -> Result<Vec<LogRecord>, LogError> {
        match self {
            AnyLog::Embedded(l) => l.read_tenant(tenant, from, head).await,
            AnyLog::JetStream(l) => l.read_tenant(tenant, from, head).await,
        }
    }
}

impl Source for AnyLog {
    type Error = LogError;
    fn partition(&self) -> u32 {
        match self {
            AnyLog::Embedded(_) => 0,
            AnyLog::JetStream(l) => l.partition(),
        }
    }
    async fn catalog_head(&self) -> Result<u64, LogError> {
        match self {
            AnyLog::Embedded(l) => l.catalog_head().await,
            AnyLog::JetStream(l) => l.catalog_head().await,
        }
    }
    async fn head(&self) -> Result<u64, LogError> {
        match self {
            AnyLog::Embedded(l) => l.head().await,
            AnyLog::JetStream(l) => l.head().await,
        }
    }
    async fn read(&self, from: u64, tenant: Option<&str>) -> Result<RecordStream, LogError> {
        match self {
            AnyLog::Embedded(l) => l.read(from, tenant).await,
            AnyLog::JetStream(l) => l.read(from, tenant).await,
        }
    }
}
