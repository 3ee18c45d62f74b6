//! InitProducerId: idempotent producers get a fresh producer id (unique across restarts), or,
//! when they send their current id and epoch (KIP-360), the same id with the next epoch. A
//! transactional id goes to the transaction coordinator ([`crate::txn`]): its producer id and
//! the next epoch, fencing older incarnations.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;

pub async fn handle(b: Arc<Broker>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let r = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if let Some(tid) = req.transactional_id.as_ref().map(|t| t.to_string()) {
        if let Err(e) = crate::handler::txn::coordinates(&b, &tid) {
            return r.with_error_code(e.code());
        }
        let expected = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
        return match b.txns.init_producer_id(&b, &tid, req.transaction_timeout_ms, expected).await {
            Ok((pid, epoch)) => r.with_producer_id(ProducerId(pid)).with_producer_epoch(epoch),
            Err(e) => r.with_error_code(e.code()),
        };
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
