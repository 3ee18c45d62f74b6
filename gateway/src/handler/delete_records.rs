//! DeleteRecords: truncates partitions before an offset (-1: the high watermark); whole segments
//! below the new start are deleted by the background cleaner.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::security::acl::{op, Access};

pub async fn handle(b: Arc<Broker>, req: DeleteRecordsRequest, access: Access) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut parts = Vec::with_capacity(t.partitions.len());
        for dp in t.partitions {
            let mut r = DeleteRecordsPartitionResult::default().with_partition_index(dp.partition_index).with_low_watermark(-1);
            match b.partition(&t.name.0, dp.partition_index) {
                _ if !access.topic(op::DELETE, &t.name.0) => r.error_code = ResponseError::TopicAuthorizationFailed.code(),
                None => r.error_code = ResponseError::UnknownTopicOrPartition.code(),
                // DeleteRecords names no leader epoch: only the partition's leader truncates it.
                Some(p) if let Some(e) = b.leader_epoch_error(&p, -1) => r.error_code = e.code(),
                Some(p) => {
                    let hw = p.high_watermark();
                    let target = if dp.offset == -1 { hw } else { dp.offset };
                    if target < 0 || target > hw {
                        r.error_code = ResponseError::OffsetOutOfRange.code();
                    } else {
                        match b.wal.truncate(&p.log, target as u64).await {
                            Ok(start) => r.low_watermark = start as i64,
                            Err(e) => {
                                tracing::warn!(log = %p.log, error = %e, "delete records failed");
                                r.error_code = ResponseError::KafkaStorageError.code();
                            }
                        }
                    }
                }
            }
            parts.push(r);
        }
        topics.push(DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(parts));
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
