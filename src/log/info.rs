//! What `ledger info` shows: the ledger's partitions, and for each its
//! stream, replicas, leader and head.

use serde::{Deserialize, Serialize};

use super::{stream_name, AnyLog, EventLog, LogError, Source};

/// `ledger info --json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerInfo {
    pub partitions: u32,
    /// `jetstream` or `embedded`.
    pub backend: String,
    /// One per partition, in partition order.
    pub streams: Vec<PartitionInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub partition: u32,
    /// The JetStream stream (none for the embedded log).
    pub stream: Option<String>,
    pub subjects: Vec<String>,
    pub replicas: usize,
    /// The server that leads the stream; none during an election, on a
    /// single server outside a cluster, and for the embedded log.
    pub leader: Option<String>,
    /// The other replicas, as the leader sees them.
    pub peers: Vec<Peer>,
    pub messages: u64,
    /// The partition's last position (0: no events yet).
    pub last_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    /// Caught up with the leader.
    pub current: bool,
    pub offline: bool,
    /// Operations behind the leader, when the leader knows.
    pub lag: Option<u64>,
}

impl AnyLog {
    /// The partitions as the log describes them now.
    pub async fn info(&self) -> Result<LedgerInfo, LogError> {
        let (backend, streams) = match self {
            AnyLog::Embedded(log) => {
                let head = log.head().await?;
                let stream = PartitionInfo {
                    partition: 0,
                    stream: None,
                    subjects: vec![format!("{}.>", events::SUBJECT_PREFIX)],
                    replicas: 1,
                    leader: None,
                    peers: Vec::new(),
                    messages: head,
                    last_seq: head,
                };
                ("embedded", vec![stream])
            }
            AnyLog::JetStream(log) => {
                let mut streams = Vec::new();
                for partition in 0..log.partitions() {
                    let info = log.stream_info(partition).await?;
                    let cluster = info.cluster.unwrap_or_default();
                    streams.push(PartitionInfo {
                        partition,
                        stream: Some(stream_name(partition)),
                        subjects: info.config.subjects,
                        replicas: info.config.num_replicas,
                        leader: cluster.leader,
                        peers: cluster
                            .replicas
                            .into_iter()
                            .map(|p| Peer {
                                name: p.name,
                                current: p.current,
                                offline: p.offline,
                                lag: p.lag,
                            })
                            .collect(),
                        messages: info.state.messages,
                        last_seq: info.state.last_sequence,
                    });
                }
                ("jetstream", streams)
            }
        };
        Ok(LedgerInfo { partitions: self.partitions(), backend: backend.to_string(), streams })
    }

    /// Every partition's head, in partition order (see [`super::heads`]).
    pub async fn heads(&self) -> Result<Vec<u64>, LogError> {
        super::heads(self).await
    }
}

impl LedgerInfo {
    /// `ledger info` without `--json`.
    pub fn table(&self) -> String {
        let s = if self.partitions == 1 { "" } else { "s" };
        let mut out = format!("{} partition{s} on the {} log\n", self.partitions, self.backend);
        out.push_str(&format!(
            "{:<10} {:<10} {:>8} {:<12} {:>12}  {}\n",
            "PARTITION", "STREAM", "REPLICAS", "LEADER", "LAST SEQ", "PEERS"
        ));
        for p in &self.streams {
            let peers: Vec<String> = p
                .peers
                .iter()
                .map(|peer| {
                    let state = if peer.offline {
                        "offline"
                    } else if peer.current {
                        "current"
                    } else {
                        "behind"
                    };
                    format!("{} ({state})", peer.name)
                })
                .collect();
            out.push_str(&format!(
                "{:<10} {:<10} {:>8} {:<12} {:>12}  {}\n",
                p.partition,
                p.stream.as_deref().unwrap_or("-"),
                p.replicas,
                p.leader.as_deref().unwrap_or("-"),
                p.last_seq,
                if peers.is_empty() { "-".to_string() } else { peers.join(", ") }
            ));
        }
        out
    }
}
