//! Spreading partition leaders over a cluster's nodes.
//!
//! JetStream places a stream's replicas, and its raft group elects a
//! leader, with no regard for the ledger's other streams: on a 3-node
//! cluster four R3 partitions can all be led by one node, which then does
//! every commit while the others only follow. Stream configurations may not
//! name a preferred leader (nats-server refuses `placement.preferred` there),
//! but a leader step-down may (nats-server >= 2.11): `init` asks each
//! partition whose leader is not its turn to step down in favour of the node
//! whose turn it is. Partition P's turn is the P-th of the nodes that hold
//! the ledger's streams, by name, round robin. After a node fails its
//! partitions elect leaders among the others; `init` run again spreads them
//! back.

use std::time::{Duration, Instant};

use super::{unavailable, JetStreamLog, LogError};

/// How long `init` waits for one partition's leader to move.
const MOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one partition's leader ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub partition: u32,
    pub wanted: String,
    pub leader: Option<String>,
}

impl JetStreamLog {
    /// Moves partition leaders so that partition P is led by the
    /// (P mod K)-th of the K nodes holding the streams, by name. A ledger
    /// on one server (or of R1 streams) has nothing to spread. A leader
    /// that does not move within [`MOVE_TIMEOUT`] is logged and left where
    /// it is: placement is for speed, never for correctness.
    pub async fn spread_leaders(&self) -> Result<Vec<Placed>, LogError> {
        let mut nodes = std::collections::BTreeSet::new();
        let mut leaders = Vec::new();
        for partition in 0..self.partitions() {
            let info = self.stream_info(partition).await?;
            let cluster = info.cluster.unwrap_or_default();
            nodes.extend(cluster.leader.clone());
            nodes.extend(cluster.replicas.iter().map(|r| r.name.clone()));
            leaders.push(cluster.leader);
        }
        let nodes: Vec<String> = nodes.into_iter().collect();
        if nodes.len() < 2 {
            return Ok(Vec::new());
        }
        let mut placed = Vec::new();
        for (partition, leader) in leaders.into_iter().enumerate() {
            let partition = partition as u32;
            let wanted = nodes[partition as usize % nodes.len()].clone();
            let leader = if leader.as_deref() == Some(wanted.as_str()) {
                leader
            } else {
                self.move_leader(partition, &wanted).await?
            };
            if leader.as_deref() != Some(wanted.as_str()) {
                tracing::warn!(partition, %wanted, ?leader, "a partition's leader did not move; left where it is");
            }
            placed.push(Placed { partition, wanted, leader });
        }
        Ok(placed)
    }

    /// Asks partition `partition`'s leader to step down in favour of node
    /// `wanted`, and waits for the stream to name its new leader.
    async fn move_leader(&self, partition: u32, wanted: &str) -> Result<Option<String>, LogError> {
        let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{}", super::stream_name(partition));
        let body = serde_json::json!({"placement": {"preferred": wanted}}).to_string();
        let reply = self.client().request(subject, body.into()).await.map_err(unavailable)?;
        let answer: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
        if answer["success"] != true {
            tracing::warn!(partition, %wanted, %answer, "the stream refused to hand its leadership over");
        }
        let deadline = Instant::now() + MOVE_TIMEOUT;
        loop {
            // Between the step-down and the election the stream has no
            // leader to answer: ask again.
            let leader = match self.stream_info(partition).await {
                Ok(info) => info.cluster.and_then(|c| c.leader),
                Err(_) => None,
            };
            if leader.as_deref() == Some(wanted) || Instant::now() > deadline {
                return Ok(leader);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
