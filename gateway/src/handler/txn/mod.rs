//! The transaction APIs (KIP-98), one file each: the coordinator's (AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn, DescribeTransactions, ListTransactions), the group coordinator's
//! (TxnOffsetCommit) and the partition leader's (WriteTxnMarkers). InitProducerId with a
//! transactional id is in `handler/init_producer_id.rs`; the state machine in [`crate::txn`].

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod describe_transactions;
pub mod end_txn;
pub mod list_transactions;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use crate::broker::Broker;
use kafka_protocol::ResponseError;

/// NOT_COORDINATOR unless this gateway coordinates the transactional id.
pub fn coordinates(b: &Broker, tid: &str) -> Result<(), ResponseError> {
    if tid.is_empty() {
        return Err(ResponseError::InvalidRequest);
    }
    if !b.cluster.coordinates(tid) {
        return Err(ResponseError::NotCoordinator);
    }
    Ok(())
}

/// The error code of a result.
pub fn code(r: Result<(), ResponseError>) -> i16 {
    r.err().map(|e| e.code()).unwrap_or(0)
}
