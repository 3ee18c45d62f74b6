//! EndTxn: commits or aborts the producer's transaction; answered once every marker is
//! written and the group offsets completed (a failure leaves it to the coordinator's retries,
//! and the client's retry of EndTxn waits for the same end).

use std::sync::Arc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use super::{code, coordinates};
use crate::broker::Broker;

pub async fn handle(b: Arc<Broker>, req: EndTxnRequest) -> EndTxnResponse {
    let tid = req.transactional_id.0.to_string();
    let result = match coordinates(&b, &tid) {
        Ok(()) => b.txns.end_txn(&b, &tid, req.producer_id.0, req.producer_epoch, req.committed).await,
        Err(e) => Err(e),
    };
    EndTxnResponse::default().with_error_code(code(result)).with_producer_id(req.producer_id).with_producer_epoch(req.producer_epoch)
}
