//! TxnOffsetCommit (to the group's coordinator): offsets committed inside a transaction, held
//! pending until its marker ([`crate::group::txn_offsets`]). The group's generation and member
//! are checked as OffsetCommit checks them when the request names them (KIP-447, v3+).

use std::sync::Arc;

use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::group::offsets::Committed;
use crate::group::txn_offsets::PendingOffset;

pub async fn handle(b: Arc<Broker>, req: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let check = if group.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else if !b.cluster.coordinates(&group) {
        Err(ResponseError::NotCoordinator)
    } else if req.producer_id.0 < 0 {
        Err(ResponseError::InvalidProducerIdMapping)
    } else {
        Ok(())
    };
    let now = wal_core::util::now_ms();
    let mut pending = Vec::new();
    let mut errors: Vec<Vec<(i32, Option<ResponseError>)>> = Vec::new();
    for t in &req.topics {
        let mut row = Vec::new();
        for p in &t.partitions {
            let e = match check {
                Err(e) => Some(e),
                Ok(()) if b.partition(&t.name.0, p.partition_index).is_none() => Some(ResponseError::UnknownTopicOrPartition),
                Ok(()) => {
                    pending.push(PendingOffset {
                        group: group.clone(),
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                        committed: Committed {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                            commit_ms: now,
                        },
                    });
                    None
                }
            };
            row.push((p.partition_index, e));
        }
        errors.push(row);
    }
    let stored = if pending.is_empty() { Ok(()) } else { b.groups.txn_offsets.add(req.producer_id.0, pending).await };
    let topics = req
        .topics
        .into_iter()
        .zip(errors)
        .map(|(t, row)| {
            TxnOffsetCommitResponseTopic::default().with_name(t.name).with_partitions(
                row.into_iter()
                    .map(|(p, e)| {
                        let e = e.or(stored.as_ref().err().map(|_| ResponseError::CoordinatorNotAvailable));
                        TxnOffsetCommitResponsePartition::default()
                            .with_partition_index(p)
                            .with_error_code(e.map(|e| e.code()).unwrap_or(0))
                    })
                    .collect(),
            )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
