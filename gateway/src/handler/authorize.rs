//! Authorization of the requests that name one resource (a group, a transactional id, the
//! cluster): checked before the handler runs, refused whole with Kafka's error. Requests that
//! name many topics or groups are checked by their handlers, per resource.

use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use crate::security::acl::{op, Access};

const GROUP: ResponseError = ResponseError::GroupAuthorizationFailed;
const TXN: ResponseError = ResponseError::TransactionalIdAuthorizationFailed;

/// The whole answer to a request its principal may not make, or None to handle it.
pub fn refuse(a: &Access, req: &RequestKind) -> Option<ResponseKind> {
    if !a.authorizer.enabled() {
        return None;
    }
    let group = |g: &str, operation| !a.group(operation, g);
    Some(match req {
        RequestKind::JoinGroup(r) if group(&r.group_id, op::READ) => ResponseKind::JoinGroup(
            JoinGroupResponse::default().with_error_code(GROUP.code()).with_generation_id(-1).with_member_id(r.member_id.clone()),
        ),
        RequestKind::SyncGroup(r) if group(&r.group_id, op::READ) => {
            ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(GROUP.code()))
        }
        RequestKind::Heartbeat(r) if group(&r.group_id, op::READ) => {
            ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(GROUP.code()))
        }
        RequestKind::LeaveGroup(r) if group(&r.group_id, op::READ) => {
            ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(GROUP.code()))
        }
        RequestKind::ConsumerGroupHeartbeat(r) if group(&r.group_id, op::READ) => {
            ResponseKind::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse::default().with_error_code(GROUP.code()))
        }
        RequestKind::OffsetDelete(r) if group(&r.group_id, op::DELETE) => {
            ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_error_code(GROUP.code()))
        }
        RequestKind::InitProducerId(r) => match r.transactional_id.as_ref().filter(|t| !t.is_empty()) {
            Some(t) if !a.transactional_id(op::WRITE, t) => ResponseKind::InitProducerId(init_refused(TXN)),
            None if !a.idempotent_write() => ResponseKind::InitProducerId(init_refused(ResponseError::ClusterAuthorizationFailed)),
            _ => return None,
        },
        RequestKind::AddOffsetsToTxn(r) if !a.transactional_id(op::WRITE, &r.transactional_id) => {
            ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(TXN.code()))
        }
        RequestKind::AddOffsetsToTxn(r) if group(&r.group_id, op::READ) => {
            ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(GROUP.code()))
        }
        RequestKind::EndTxn(r) if !a.transactional_id(op::WRITE, &r.transactional_id) => {
            ResponseKind::EndTxn(EndTxnResponse::default().with_error_code(TXN.code()))
        }
        RequestKind::TxnOffsetCommit(r) => {
            let e = if !a.transactional_id(op::WRITE, &r.transactional_id) {
                TXN
            } else if group(&r.group_id, op::READ) {
                GROUP
            } else {
                return None;
            };
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(e.code())
                            })
                            .collect(),
                    )
                })
                .collect();
            ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default().with_topics(topics))
        }
        RequestKind::WriteTxnMarkers(r) if !a.cluster(op::CLUSTER_ACTION) => {
            let code = ResponseError::ClusterAuthorizationFailed.code();
            let markers = r
                .markers
                .iter()
                .map(|m| {
                    WritableTxnMarkerResult::default().with_producer_id(m.producer_id).with_topics(
                        m.topics
                            .iter()
                            .map(|t| {
                                WritableTxnMarkerTopicResult::default().with_name(t.name.clone()).with_partitions(
                                    t.partition_indexes
                                        .iter()
                                        .map(|p| WritableTxnMarkerPartitionResult::default().with_partition_index(*p).with_error_code(code))
                                        .collect(),
                                )
                            })
                            .collect(),
                    )
                })
                .collect();
            ResponseKind::WriteTxnMarkers(WriteTxnMarkersResponse::default().with_markers(markers))
        }
        _ => return None,
    })
}

fn init_refused(e: ResponseError) -> InitProducerIdResponse {
    InitProducerIdResponse::default().with_error_code(e.code()).with_producer_id(ProducerId(-1)).with_producer_epoch(-1)
}
