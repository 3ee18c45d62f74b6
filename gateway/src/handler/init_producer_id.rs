//! InitProducerId: idempotent producers get a fresh producer id (unique across restarts), or,
//! when they send their current id and epoch (KIP-360), the same id with the next epoch.
//! Transactions are not supported: a transactional id gets an error.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::broker::Broker;

pub async fn handle(b: Arc<Broker>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let r = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        return r.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return r.with_producer_id(req.producer_id).with_producer_epoch(req.producer_epoch + 1);
    }
    // Epoch exhausted: a new id.
    match b.allocate_producer_id().await {
        Ok(id) => r.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err((e, _)) => r.with_error_code(e.code()),
    }
}
