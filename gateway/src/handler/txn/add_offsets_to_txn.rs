//! AddOffsetsToTxn: the transaction will commit offsets of a group (sent next, to the group's
//! coordinator, as TxnOffsetCommit).

use std::sync::Arc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::{code, coordinates};
use crate::broker::Broker;

pub async fn handle(b: Arc<Broker>, req: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let tid = req.transactional_id.0.to_string();
    let result = match coordinates(&b, &tid) {
        Ok(()) => b.txns.add_offsets(&tid, req.producer_id.0, req.producer_epoch, &req.group_id.0).await,
        Err(e) => Err(e),
    };
    AddOffsetsToTxnResponse::default().with_error_code(code(result))
}
