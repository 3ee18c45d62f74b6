//! ListTransactions: the transactional ids this gateway coordinates, filtered by state,
//! producer id and (v1) how long they have been running; unknown state names are echoed back.

use std::sync::Arc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{ListTransactionsRequest, ListTransactionsResponse, TransactionalId};

use crate::broker::Broker;
use crate::handler::s;
use crate::security::acl::{op, Access};
use crate::txn::Status;

const STATES: &[Status] =
    &[Status::Empty, Status::Ongoing, Status::PrepareCommit, Status::PrepareAbort, Status::CompleteCommit, Status::CompleteAbort];

pub async fn handle(b: Arc<Broker>, req: ListTransactionsRequest, access: Access) -> ListTransactionsResponse {
    let known: Vec<&str> = STATES.iter().map(|s| s.name()).collect();
    let unknown: Vec<_> = req.state_filters.iter().filter(|f| !known.contains(&f.as_str())).cloned().collect();
    let all = match b.txns.all().await {
        Ok(v) => v,
        Err(e) => return ListTransactionsResponse::default().with_error_code(e.code()),
    };
    let now = wal_core::util::now_ms() as i64;
    let states = all
        .into_iter()
        .filter(|m| b.cluster.coordinates(&m.transactional_id) && access.transactional_id(op::DESCRIBE, &m.transactional_id))
        .filter(|m| req.state_filters.is_empty() || req.state_filters.iter().any(|f| f.as_str() == m.status.name()))
        .filter(|m| req.producer_id_filters.is_empty() || req.producer_id_filters.iter().any(|p| p.0 == m.producer_id))
        .filter(|m| req.duration_filter < 0 || (m.status == Status::Ongoing && now - m.started_ms as i64 >= req.duration_filter))
        .map(|m| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(s(m.transactional_id)))
                .with_producer_id(m.producer_id.into())
                .with_transaction_state(s(m.status.name()))
        })
        .collect();
    ListTransactionsResponse::default().with_unknown_state_filters(unknown).with_transaction_states(states)
}
