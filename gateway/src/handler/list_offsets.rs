//! ListOffsets: earliest (-2, and -4 "earliest local"), latest (-1), max timestamp (-3) and by
//! timestamp. Timestamp lookups answer a record, as Kafka does: the first one timestamped at or
//! after the target, or the first one holding the largest timestamp, with its own offset and
//! timestamp; the log finds the batch by its max timestamp, then the batch is opened
//! ([`crate::batch::lookup`]).

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use crate::batch;
use crate::broker::Broker;
use crate::security::acl::{op, Access};

pub async fn handle(b: Arc<Broker>, v: i16, req: ListOffsetsRequest, access: Access) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    let req_isolation = req.isolation_level;
    for t in req.topics {
        let mut parts = Vec::with_capacity(t.partitions.len());
        let denied = !access.topic(op::DESCRIBE, &t.name.0);
        for lp in t.partitions {
            let mut r = ListOffsetsPartitionResponse::default().with_partition_index(lp.partition_index).with_timestamp(-1).with_offset(-1);
            if denied {
                parts.push(r.with_error_code(ResponseError::TopicAuthorizationFailed.code()));
                continue;
            }
            let Some(p) = b.partition(&t.name.0, lp.partition_index) else {
                parts.push(r.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let requested = if v >= 4 { lp.current_leader_epoch } else { -1 };
            if let Some(e) = b.leader_epoch_error(&p, requested) {
                parts.push(r.with_error_code(e.code()));
                continue;
            }
            if v >= 4 {
                r.leader_epoch = p.leader_epoch();
            }
            let found = match lp.timestamp {
                // read_committed consumers start from the last stable offset
                -1 if v >= 2 && req_isolation == 1 => Ok(Some((p.last_stable_offset() as u64, -1))),
                -1 => Ok(Some((p.high_watermark() as u64, -1))),
                -2 | -4 => Ok(Some((p.log_start() as u64, -1))),
                -3 => {
                    let start = p.log_start().max(0) as u64;
                    p.reader
                        .max_timestamp_stored_entry()
                        .await
                        .map(|e| e.map(|e| batch::lookup::max_record(&e.data, start).unwrap_or((e.offset.max(start), e.max_timestamp))))
                }
                ts if ts >= 0 => {
                    let start = p.log_start().max(0) as u64;
                    let hit = |e: &wal_core::StoredEntry| {
                        e.max_timestamp >= ts && batch::lookup::record_at_or_after(&e.data, start, ts).is_some()
                    };
                    p.reader
                        .first_entry_where(|seg_max| seg_max >= ts, hit)
                        .await
                        .map(|e| e.and_then(|e| batch::lookup::record_at_or_after(&e.data, start, ts)))
                }
                _ => {
                    parts.push(r.with_error_code(ResponseError::InvalidRequest.code()));
                    continue;
                }
            };
            match found {
                Ok(Some((off, ts))) => {
                    r.offset = off as i64;
                    r.timestamp = ts;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(log = %p.log, error = %e, "list offsets failed");
                    r.error_code = ResponseError::KafkaStorageError.code();
                }
            }
            parts.push(r);
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(parts));
    }
    ListOffsetsResponse::default().with_topics(topics)
}
