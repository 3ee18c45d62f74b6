//! DescribeTransactions: each transactional id's state, producer, timeout, start time and
//! partitions (NOT_COORDINATOR for ids another gateway coordinates, TRANSACTIONAL_ID_NOT_FOUND
//! for unknown ones).

use std::sync::Arc;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{DescribeTransactionsRequest, DescribeTransactionsResponse, TopicName};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::handler::s;
use crate::security::acl::{op, Access};

pub async fn handle(b: Arc<Broker>, req: DescribeTransactionsRequest, access: Access) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for id in req.transactional_ids {
        let tid = id.0.to_string();
        let base = TransactionState::default().with_transactional_id(id.clone()).with_producer_id((-1).into()).with_producer_epoch(-1);
        let st = match super::coordinates(&b, &tid) {
            _ if !access.transactional_id(op::DESCRIBE, &tid) => {
                base.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            }
            Err(e) => base.with_error_code(e.code()),
            Ok(()) => match b.txns.describe(&tid).await {
                Err(e) => base.with_error_code(e.code()),
                Ok(None) => base.with_error_code(ResponseError::TransactionalIdNotFound.code()),
                Ok(Some(m)) => {
                    let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
                    for (t, p) in &m.partitions {
                        by_topic.entry(t.clone()).or_default().push(*p);
                    }
                    let ongoing = m.status == crate::txn::Status::Ongoing;
                    base.with_transaction_state(s(m.status.name()))
                        .with_transaction_timeout_ms(m.timeout_ms)
                        .with_transaction_start_time_ms(if ongoing { m.started_ms as i64 } else { -1 })
                        .with_producer_id(m.producer_id.into())
                        .with_producer_epoch(m.producer_epoch)
                        .with_topics(
                            by_topic
                                .into_iter()
                                .filter(|_| ongoing)
                                .map(|(t, ps)| TopicData::default().with_topic(TopicName(s(t))).with_partitions(ps))
                                .collect(),
                        )
                }
            },
        };
        states.push(st);
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
