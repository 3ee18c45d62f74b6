//! MemoryBuffer's persist step: the block goes to object storage, either into the process's
//! next shared write object (with the blocks of other logs; see `log::objects`) or, with shared
//! objects turned off, as its own object under the block's key. Either way the PUT is
//! put-if-absent with retries: an object found with other bytes means another writer owns the
//! key (a conflict, which stops this writer).

use std::time::Instant;

use bytes::Bytes;

use super::{PersistError, WriterInner};
use crate::format::ChunkEntry;
use crate::log::ChunkLoc;
use crate::metrics as m;
use crate::storage::{put_retrying, PutError};

impl WriterInner {
    /// Stores a cut block; returns where it lies when that is inside a shared object.
    pub(super) async fn upload(
        &self,
        key: &str,
        seg_id: u64,
        info: crate::format::BlockInfo,
        data: Bytes,
    ) -> Result<Option<ChunkLoc>, PersistError> {
        let started = Instant::now();
        let r = match &self.wal.objects {
            Some(objects) => {
                let entry = ChunkEntry {
                    log_id: self.log_id,
                    segment: seg_id,
                    epoch: self.epoch,
                    base_offset: info.base_offset,
                    end_offset: info.end_offset,
                    pos: 0,
                    len: 0,
                };
                objects.put(entry, data).await.map(Some)
            }
            None => put_retrying(&*self.wal.store, key, data, self.wal.retry_policy()).await.map(|()| None),
        };
        match r {
            Ok(loc) => {
                metrics::histogram!(m::UPLOAD_SECONDS).record(started.elapsed().as_secs_f64());
                Ok(loc)
            }
            Err(PutError::Conflict(k)) => Err(PersistError::Conflict(k)),
            Err(PutError::Failed(e)) => Err(PersistError::Failed(e)),
        }
    }
}
