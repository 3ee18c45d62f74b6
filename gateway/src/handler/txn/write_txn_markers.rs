//! WriteTxnMarkers (from a transaction coordinator, another gateway or Kafka's own form): the
//! COMMIT / ABORT marker into each named partition this gateway leads, and for
//! `__consumer_offsets` the completion of the producer's pending group offsets.

use std::sync::Arc;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::txn::markers::OFFSETS_TOPIC;

pub async fn handle(b: Arc<Broker>, req: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let mut markers = Vec::with_capacity(req.markers.len());
    for m in req.markers {
        let (pid, epoch, commit) = (m.producer_id.0, m.producer_epoch, m.transaction_result);
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in m.topics {
            let mut parts = Vec::with_capacity(t.partition_indexes.len());
            for p in t.partition_indexes {
                let r = if t.name.0.as_str() == OFFSETS_TOPIC {
                    b.groups.complete_txn_offsets(pid, commit).await.map_err(|_| ResponseError::CoordinatorNotAvailable)
                } else {
                    match b.partition(&t.name.0, p) {
                        None => Err(ResponseError::UnknownTopicOrPartition),
                        Some(part) => {
                            let leads = b.leads(&part);
                            part.write_marker(pid, epoch, commit, leads).await
                        }
                    }
                };
                let code = r.err().map(|e| e.code()).unwrap_or(0);
                parts.push(WritableTxnMarkerPartitionResult::default().with_partition_index(p).with_error_code(code));
            }
            topics.push(WritableTxnMarkerTopicResult::default().with_name(t.name).with_partitions(parts));
        }
        markers.push(WritableTxnMarkerResult::default().with_producer_id(m.producer_id).with_topics(topics));
    }
    WriteTxnMarkersResponse::default().with_markers(markers)
}
