//! Retention: deletes the objects and metadata (segment record, chunk records) of segments that
//! lie wholly below their log's start offset. The last segment of a log is always kept, because the next writer continues
//! from its end offset.

use super::shared::load_segments;
use super::{keys, SegmentState, Wal};
use crate::error::Result;
use crate::meta::{Op, Txn};
use crate::metrics as m;
use crate::storage::ObjectStore;

pub(crate) async fn delete_objects(store: &dyn ObjectStore, prefix: &str) -> Result<()> {
    for o in store.list(prefix).await? {
        store.delete(&o.key).await?;
    }
    Ok(())
}

pub(crate) async fn clean_once(wal: &Wal) -> Result<usize> {
    let mut deleted = 0;
    for lm in wal.list_logs().await? {
        let segs = load_segments(&**wal.meta(), &lm.name).await?;
        let Some(last) = segs.last().map(|s| s.id) else { continue };
        for s in segs.iter().filter(|s| s.id != last && s.state == SegmentState::Sealed && s.end_offset <= lm.start_offset) {
            delete_objects(&**wal.store(), &keys::segment_objects(lm.id, s.id, s.epoch)).await?;
            // (blocks inside shared objects: their records go; the objects are collected once
            // nothing points into them, see `flusher`)
            let txn = Txn::new()
                .then(Op::Delete(keys::segment(&lm.name, s.id)))
                .then(Op::DeletePrefix(keys::chunks(lm.id, s.id)))
                .then(Op::DeletePrefix(keys::legacy_chunks(&lm.name, s.id)));
            wal.meta().txn(txn).await?;
            metrics::counter!(m::SEGMENTS_DELETED_TOTAL).increment(1);
            deleted += 1;
        }
        if deleted > 0 {
            if let Some(sh) = wal.inner_logs().get(&lm.name) {
                let _ = sh.refresh(&**wal.meta()).await;
            }
        }
    }
    Ok(deleted)
}
