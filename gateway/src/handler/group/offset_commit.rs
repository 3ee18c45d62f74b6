//! OffsetCommit: validates the member and generation (a KIP-848 group: the member epoch), or
//! accepts a standalone commit for a group without members, then stores every partition's
//! offset in one durable transaction.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::group::offsets::Committed;
use crate::group::state::GroupState;
use crate::security::acl::{op, Access};
use wal_core::util::now_ms;

/// Kafka's offset.metadata.max.bytes.
const MAX_METADATA: usize = 4096;

fn check_member(b: &Broker, req: &OffsetCommitRequest) -> Option<ResponseError> {
    let generation = req.generation_id_or_member_epoch;
    let instance = req.group_instance_id.as_ref().map(|i| i.to_string());
    if b.groups.is_active_consumer_group(&req.group_id.0) {
        // A KIP-848 group: the member and its epoch (OffsetCommit v9's rule).
        if generation < 0 {
            return Some(ResponseError::UnknownMemberId);
        }
        return b.groups.with_consumer_group(&req.group_id.0, false, |g| g.check_commit(&req.member_id, generation).err()).flatten();
    }
    if generation < 0 {
        // A standalone commit (manual assignment, admin tools; a KIP-848 client sends its own
        // member id with it): only for a group without members, as Kafka's coordinator does.
        return b
            .groups
            .with_group(&req.group_id.0, false, |g| (!g.members.is_empty()).then_some(ResponseError::UnknownMemberId))
            .flatten();
    }
    b.groups
        .with_group(&req.group_id.0, false, |g| {
            if let Err(e) = g.check_member(&req.member_id, instance.as_deref(), generation) {
                return Some(e);
            }
            (g.state == GroupState::CompletingRebalance).then_some(ResponseError::RebalanceInProgress)
        })
        .unwrap_or(Some(ResponseError::UnknownMemberId))
}

pub async fn handle(b: Arc<Broker>, req: OffsetCommitRequest, access: Access) -> OffsetCommitResponse {
    let group_error = if !access.group(op::READ, &req.group_id.0) {
        Some(ResponseError::GroupAuthorizationFailed)
    } else if req.group_id.is_empty() {
        Some(ResponseError::InvalidGroupId)
    } else if !b.cluster.coordinates(&req.group_id.0) {
        Some(ResponseError::NotCoordinator)
    } else {
        check_member(&b, &req)
    };
    let mut commits = Vec::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let e = if let Some(e) = group_error {
                Some(e)
            } else if !access.topic(op::READ, &t.name.0) {
                Some(ResponseError::TopicAuthorizationFailed)
            } else if b.partition(&t.name.0, p.partition_index).is_none() {
                Some(ResponseError::UnknownTopicOrPartition)
            } else if p.committed_metadata.as_ref().is_some_and(|m| m.len() > MAX_METADATA) {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                commits.push((
                    t.name.0.to_string(),
                    p.partition_index,
                    Committed {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                        commit_ms: now_ms(),
                    },
                ));
                None
            };
            parts.push((p.partition_index, e));
        }
        topics.push((t.name.clone(), parts));
    }
    let stored = b.groups.offsets.commit(&req.group_id.0, commits).await;
    if let Err(e) = &stored {
        tracing::warn!(group = %&*req.group_id.0, error = %e, "offset commit failed");
    }
    let topics = topics
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(i, e)| {
                    let e = e.or(stored.as_ref().err().map(|_| ResponseError::CoordinatorNotAvailable));
                    OffsetCommitResponsePartition::default().with_partition_index(i).with_error_code(e.map(|e| e.code()).unwrap_or(0))
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(name).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
