//! AddPartitionsToTxn (v0-3, the client's form): adds partitions to the producer's ongoing
//! transaction; every partition gets the same answer (Kafka's all-or-nothing).

use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use super::{code, coordinates};
use crate::broker::Broker;

pub async fn handle(b: Arc<Broker>, req: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    let tid = req.v3_and_below_transactional_id.0.to_string();
    let parts: Vec<(String, i32)> =
        req.v3_and_below_topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p))).collect();
    let result = match coordinates(&b, &tid) {
        Ok(()) => b.txns.add_partitions(&b, &tid, req.v3_and_below_producer_id.0, req.v3_and_below_producer_epoch, &parts).await,
        Err(e) => Err(e),
    };
    let c = code(result);
    let results = req
        .v3_and_below_topics
        .into_iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default().with_name(t.name).with_results_by_partition(
                t.partitions
                    .into_iter()
                    .map(|p| AddPartitionsToTxnPartitionResult::default().with_partition_index(p).with_partition_error_code(c))
                    .collect(),
            )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}
