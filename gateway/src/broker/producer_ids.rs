//! Producer ids: unique across restarts and gateways, reserved from a MetaStore counter in
//! blocks (one compare-and-swap per block, not per id).

use kafka_protocol::ResponseError;
use wal_core::meta::{advance_counter, Txn};

use super::{AdminError, Broker};

const PRODUCER_ID_KEY: &str = "gw/producer_id";
/// Producer ids are reserved from the MetaStore in blocks of this many.
const PRODUCER_ID_BLOCK: u64 = 1000;

impl Broker {
    /// A new producer id, unique across restarts (reserved in blocks from the MetaStore).
    pub async fn allocate_producer_id(&self) -> Result<i64, AdminError> {
        let mut ids = self.pids.lock().await;
        if ids.next >= ids.limit {
            let storage = |e: wal_core::MetaError| (ResponseError::KafkaStorageError, e.to_string());
            let (block, ()) = advance_counter(&*self.meta, PRODUCER_ID_KEY, PRODUCER_ID_BLOCK, |_| async { Ok((Txn::new(), ())) })
                .await
                .map_err(storage)?;
            *ids = IdBlock { next: block.previous as i64, limit: block.value as i64 };
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }
}

/// The block of producer ids this gateway reserved: `next` up to (not including) `limit`.
#[derive(Debug, Default)]
pub(super) struct IdBlock {
    pub next: i64,
    pub limit: i64,
}
