//! Producer ids: unique across restarts and gateways, reserved from a MetaStore counter in
//! blocks (one compare-and-swap per block, not per id). Every id ever handed out is below the
//! counter, so a batch naming an id at or above it was never issued by InitProducerId and gets
//! no producer state (UNKNOWN_PRODUCER_ID): a client cannot grow the state with made-up ids.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use wal_core::meta::{advance_counter, Txn};
use wal_core::util::lock;

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
        self.issued.below.fetch_max(ids.limit, Ordering::AcqRel);
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    /// Whether `pid` was handed out by some gateway's InitProducerId. Ids below the highest
    /// counter value seen answer at once; a higher one reads the counter again (another gateway
    /// may have reserved a block meanwhile), at most once per [`ISSUED_RECHECK`]: between
    /// reads the answer is a retriable error, so made-up ids cannot turn into a MetaStore read
    /// each.
    pub async fn producer_id_issued(&self, pid: i64) -> Result<bool, ResponseError> {
        if pid < self.issued.below.load(Ordering::Acquire) {
            return Ok(true);
        }
        {
            let mut last = lock(&self.issued.checked);
            if last.is_some_and(|t| t.elapsed() < ISSUED_RECHECK) {
                return Err(ResponseError::NotEnoughReplicas);
            }
            *last = Some(Instant::now());
        }
        let counter = match self.meta.get(PRODUCER_ID_KEY).await {
            Ok(kv) => kv.map_or(0, |kv| wal_core::meta::counter_value(&kv) as i64),
            Err(_) => return Err(ResponseError::NotEnoughReplicas),
        };
        let below = self.issued.below.fetch_max(counter, Ordering::AcqRel).max(counter);
        Ok(pid < below)
    }
}

/// How often a producer id above every known one makes the counter be read again.
pub const ISSUED_RECHECK: Duration = Duration::from_millis(100);

/// What is known of the issued producer ids: all are below `below`.
#[derive(Debug, Default)]
pub(super) struct Issued {
    below: AtomicI64,
    checked: std::sync::Mutex<Option<Instant>>,
}

/// The block of producer ids this gateway reserved: `next` up to (not including) `limit`.
#[derive(Debug, Default)]
pub(super) struct IdBlock {
    pub next: i64,
    pub limit: i64,
}
