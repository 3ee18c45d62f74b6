//! AddPartitionsToTxn: adds partitions to the producer's ongoing transaction (v0-3, the
//! client's form: every partition gets the same answer, Kafka's all-or-nothing), and from v4
//! the batched form of KIP-890 part 1, one result per transaction, where `verify_only` asks
//! whether each partition is already in the transaction without adding it.

use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use kafka_protocol::ResponseError;

use super::coordinates;
use crate::broker::Broker;

fn partitions(topics: &[AddPartitionsToTxnTopic]) -> Vec<(String, i32)> {
    topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p))).collect()
}

/// The per-topic results, partition `i` (in request order) answered by `code(i)`.
fn results(topics: Vec<AddPartitionsToTxnTopic>, code: impl Fn(usize) -> i16) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut i = 0;
    topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .into_iter()
                .map(|p| {
                    i += 1;
                    AddPartitionsToTxnPartitionResult::default().with_partition_index(p).with_partition_error_code(code(i - 1))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default().with_name(t.name).with_results_by_partition(parts)
        })
        .collect()
}

/// Adds (or, `verify_only`, checks) one transaction's partitions: a code per partition.
async fn one(b: &Broker, tid: &str, pid: i64, epoch: i16, parts: &[(String, i32)], verify_only: bool) -> Vec<i16> {
    let all = |e: ResponseError| vec![e.code(); parts.len()];
    if let Err(e) = coordinates(b, tid) {
        return all(e);
    }
    if verify_only {
        return match b.txns.verify(tid, pid, epoch, parts).await {
            Ok(v) => v.into_iter().map(|e| e.map(|e| e.code()).unwrap_or(0)).collect(),
            Err(e) => all(e),
        };
    }
    match b.txns.add_partitions(b, tid, pid, epoch, parts).await {
        Ok(()) => vec![0; parts.len()],
        Err(e) => all(e),
    }
}

pub async fn handle(b: Arc<Broker>, v: i16, req: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    if v < 4 {
        let parts = partitions(&req.v3_and_below_topics);
        let tid = req.v3_and_below_transactional_id.0.to_string();
        let codes = one(&b, &tid, req.v3_and_below_producer_id.0, req.v3_and_below_producer_epoch, &parts, false).await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results(req.v3_and_below_topics, |i| codes[i]));
    }
    let mut out = Vec::with_capacity(req.transactions.len());
    for t in req.transactions {
        let parts = partitions(&t.topics);
        let codes = one(&b, &t.transactional_id.0, t.producer_id.0, t.producer_epoch, &parts, t.verify_only).await;
        out.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id)
                .with_topic_results(results(t.topics, |i| codes[i])),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(out)
}
