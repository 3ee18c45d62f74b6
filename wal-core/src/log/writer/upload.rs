//! MemoryBuffer's persist step: upload a block with put-if-absent, retrying with backoff.
//!
//! An upload that finds its key taken reads the object back: identical bytes are our own earlier
//! attempt whose answer was lost (success); other bytes mean another writer owns the key (a
//! conflict, which stops this writer).

use std::time::Instant;

use bytes::Bytes;

use super::{PersistError, WriterInner};
use crate::error::StorageError;
use crate::metrics as m;

impl WriterInner {
    pub(super) async fn upload(&self, key: &str, data: Bytes) -> Result<(), PersistError> {
        let started = Instant::now();
        let attempts = self.wal.cfg.upload_attempts;
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt - 1)).await;
            }
            match self.wal.store.put_if_absent(key, data.clone()).await {
                Ok(()) => {
                    metrics::histogram!(m::UPLOAD_SECONDS).record(started.elapsed().as_secs_f64());
                    return Ok(());
                }
                Err(StorageError::AlreadyExists(_)) => match self.wal.store.get(key).await {
                    Ok(existing) if existing == data => return Ok(()),
                    Ok(_) => return Err(PersistError::Conflict(key.to_string())),
                    Err(e) => last = Some(e),
                },
                Err(e) if e.is_retriable() => last = Some(e),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
            metrics::counter!(m::UPLOAD_ERRORS_TOTAL).increment(1);
        }
        Err(PersistError::Failed(last.unwrap_or(StorageError::Transient { op: "put", message: "no attempt made".into() })))
    }
}
