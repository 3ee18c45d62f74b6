//! OffsetDelete: removes committed offsets of a group, refused for topics the group's active
//! members subscribe to (read from the consumer protocol's subscription metadata).

use std::sync::Arc;

use bytes::Buf;
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;

/// Topics of a consumer-protocol subscription: version i16, then an array of strings.
fn subscribed_topics(mut meta: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if meta.remaining() < 6 {
        return out;
    }
    let _version = meta.get_i16();
    let n = meta.get_i32();
    for _ in 0..n.max(0) {
        if meta.remaining() < 2 {
            break;
        }
        let len = meta.get_i16();
        if len < 0 || meta.remaining() < len as usize {
            break;
        }
        out.push(String::from_utf8_lossy(&meta[..len as usize]).into_owned());
        meta.advance(len as usize);
    }
    out
}

pub async fn handle(b: Arc<Broker>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = req.group_id.0.to_string();
    if !b.cluster.coordinates(&group) {
        return OffsetDeleteResponse::default().with_error_code(ResponseError::NotCoordinator.code());
    }
    let Some(summary) = b.groups.summary(&group) else {
        return OffsetDeleteResponse::default().with_error_code(ResponseError::GroupIdNotFound.code());
    };
    let subscribed: Vec<String> = if summary.protocol_type == "consumer" {
        summary.members.iter().flat_map(|m| subscribed_topics(&m.metadata)).collect()
    } else {
        Vec::new()
    };
    let mut doomed = Vec::new();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let busy = subscribed.iter().any(|s| *s == *t.name.0);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let e = if busy {
                        Some(ResponseError::GroupSubscribedToTopic)
                    } else if b.partition(&t.name.0, p.partition_index).is_none() {
                        Some(ResponseError::UnknownTopicOrPartition)
                    } else {
                        doomed.push((t.name.0.to_string(), p.partition_index));
                        None
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(e.map(|e| e.code()).unwrap_or(0))
                })
                .collect();
            OffsetDeleteResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions)
        })
        .collect();
    if let Err(e) = b.groups.offsets.delete(&group, &doomed).await {
        tracing::warn!(group, error = %e, "offset delete failed");
        return OffsetDeleteResponse::default().with_error_code(ResponseError::CoordinatorNotAvailable.code());
    }
    OffsetDeleteResponse::default().with_topics(topics)
}
