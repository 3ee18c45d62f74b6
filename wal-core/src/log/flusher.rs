//! Segment flushing: sealed segments whose blocks are inside shared write objects are rewritten
//! into one per-log data object with an index, and shared objects nothing points into any more
//! are deleted.
//!
//! A pass, for every log this process writes (its owner: one process per log does the work):
//! each sealed segment of [`Layout::Chunks`] is read chunk by chunk (range GETs, a few at once),
//! its blocks concatenated in offset order into `.../data` and indexed in `.../index` (both
//! put-if-absent with identical bytes on a retry), then one transaction, compared against the
//! segment record as read, marks it [`Layout::Flushed`] and deletes its chunk records. A crash
//! anywhere before that transaction leaves the segment as it was (the objects written are
//! rewritten identically next time); after it, readers that still hold a chunk's place find
//! the shared object until the collector removes it, and learn the new place on a miss.
//!
//! The collector (every `GC_EVERY` passes) lists every chunk record of every log, deletes those
//! of segments that are gone or flushed, and deletes shared objects older than
//! `shared_gc_grace_ms` that none of the rest names: an object is only ever referenced by
//! commits that finish within seconds of its upload.

use std::collections::HashSet;
use std::time::Duration;

use bytes::BytesMut;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::recovery::{chunk_info, load_chunks, write_index};
use super::shared::load_segments;
use super::{decode_json, json, keys, ChunkRef, Layout, SegmentMeta, SegmentState, Wal};
use crate::error::{Result, WalError};
use crate::meta::{Compare, Op, Txn};
use crate::metrics as m;
use crate::storage::{put_retrying, PutError};
use crate::util::now_ms;

/// Range GETs one segment rewrite runs at once.
const READS: usize = 8;
/// The collector runs every this many passes.
const GC_EVERY: u64 = 15;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushPass {
    pub segments_flushed: usize,
    pub bytes_rewritten: u64,
    /// Sealed segments still waiting (failed this pass, or of logs written elsewhere).
    pub backlog: usize,
    pub shared_objects_deleted: usize,
}

impl Wal {
    /// One pass of segment flushing over the logs this process writes; with `collect`, also
    /// deletes unreferenced shared objects past their grace period.
    pub async fn flush_segments_once(&self, collect: bool) -> Result<FlushPass> {
        let mut pass = FlushPass::default();
        let names: Vec<String> = self
            .inner_logs()
            .iter()
            .filter(|e| e.value().has_writer.load(std::sync::atomic::Ordering::Acquire))
            .map(|e| e.key().clone())
            .collect();
        for name in names {
            let Some(sh) = self.inner_logs().get(&name).map(|e| e.value().clone()) else { continue };
            for seg in load_segments(&**self.meta(), &name).await? {
                if seg.state != SegmentState::Sealed || seg.layout != Layout::Chunks {
                    continue;
                }
                match flush_segment(self, &name, sh.id, &seg).await {
                    Ok(bytes) => {
                        pass.segments_flushed += 1;
                        pass.bytes_rewritten += bytes;
                    }
                    Err(e) => {
                        pass.backlog += 1;
                        tracing::warn!(log = %name, segment = seg.id, error = %e, "segment flushing failed; retrying at the next pass");
                    }
                }
            }
            if pass.segments_flushed > 0 {
                let _ = sh.refresh(&**self.meta()).await;
            }
        }
        metrics::gauge!(m::FLUSH_BACKLOG_SEGMENTS).set(pass.backlog as f64);
        if collect {
            pass.shared_objects_deleted = collect_shared_objects(self).await?;
        }
        Ok(pass)
    }

    /// Runs [`Wal::flush_segments_once`] every `segment_flush_interval_ms` until the handle is
    /// dropped or aborted.
    pub fn spawn_flusher(&self) -> tokio::task::JoinHandle<()> {
        let wal = self.clone();
        let every = Duration::from_millis(self.config().segment_flush_interval_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            for n in 0u64.. {
                tick.tick().await;
                if let Err(e) = wal.flush_segments_once(n % GC_EVERY == GC_EVERY - 1).await {
                    tracing::warn!(error = %e, "segment flushing pass failed");
                }
            }
        })
    }
}

/// Rewrites one sealed segment out of shared objects; returns the bytes rewritten.
async fn flush_segment(wal: &Wal, name: &str, log_id: u64, seg: &SegmentMeta) -> Result<u64> {
    let meta = &**wal.meta();
    let store = &**wal.store();
    let Some(kv) = meta.get(&keys::segment(name, seg.id)).await? else { return Ok(0) };
    let current: SegmentMeta = decode_json(&kv.key, &kv.value)?;
    if current != *seg {
        return Ok(0); // changed since listed: the next pass sees it as it is
    }
    let refs: Vec<ChunkRef> = load_chunks(meta, log_id, Some(name), seg).await?;
    let blocks: Vec<_> = refs.iter().map(chunk_info).collect();
    let locs: Vec<super::ChunkLoc> = refs.iter().map(|r| r.loc.clone()).collect();
    let parts: Vec<bytes::Bytes> = stream::iter(locs)
        .map(|l| {
            let store = wal.store().clone();
            async move { Ok::<_, WalError>(store.get_range(&l.object, l.pos..l.pos + l.len as u64).await?) }
        })
        .buffered(READS)
        .try_collect()
        .await?;
    let mut data = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum());
    for (p, r) in parts.iter().zip(&refs) {
        if p.len() != r.loc.len as usize {
            return Err(WalError::Format {
                key: r.loc.object.clone(),
                source: crate::error::FormatError::Truncated { need: r.loc.len as usize, have: p.len() },
            });
        }
        data.extend_from_slice(p);
    }
    let bytes = data.len() as u64;
    let data_key = seg.data_key(log_id);
    match put_retrying(store, &data_key, data.freeze(), wal.inner_retry_policy()).await {
        Ok(()) => {}
        Err(PutError::Conflict(k)) => {
            return Err(WalError::Format {
                key: k,
                source: crate::error::FormatError::Inconsistent("another segment data object exists".into()),
            })
        }
        Err(PutError::Failed(e)) => return Err(e.into()),
    }
    let flushed_meta = SegmentMeta { layout: Layout::Flushed, ..seg.clone() };
    write_index(store, log_id, &flushed_meta, &blocks).await?;
    let txn = Txn::new()
        .when(Compare::ModRevision(keys::segment(name, seg.id), kv.mod_revision))
        .then(Op::put(keys::segment(name, seg.id), json(&flushed_meta)))
        .then(Op::DeletePrefix(keys::chunks(log_id, seg.id)))
        .then(Op::DeletePrefix(keys::legacy_chunks(name, seg.id)));
    if !meta.txn(txn).await?.succeeded {
        return Ok(0); // changed under us (deleted by retention, say): nothing to do
    }
    metrics::counter!(m::SEGMENTS_FLUSHED_TOTAL).increment(1);
    metrics::counter!(m::SEGMENT_FLUSH_BYTES_TOTAL).increment(bytes);
    tracing::debug!(log = name, segment = seg.id, bytes, blocks = blocks.len(), "segment flushed");
    Ok(bytes)
}

/// The segments, among those chunk records name, whose records are stray: the segment is gone
/// or no longer in shared objects. (A LogStore replica can commit a block's place late, after
/// another replica's copy was committed and the segment flushed or deleted.) A segment's record
/// is always written before any of its chunk records, so one missing here is gone.
async fn stray_chunk_segments(wal: &Wal, named: impl Iterator<Item = (u64, u64)>) -> Result<HashSet<(u64, u64)>> {
    let named: HashSet<(u64, u64)> = named.collect();
    if named.is_empty() {
        return Ok(HashSet::new());
    }
    let logs: std::collections::HashMap<u64, String> = wal.list_logs().await?.into_iter().map(|l| (l.id, l.name)).collect();
    let mut chunked: std::collections::HashMap<u64, HashSet<u64>> = std::collections::HashMap::new();
    for log_id in named.iter().map(|(l, _)| *l).collect::<HashSet<_>>() {
        let Some(name) = logs.get(&log_id) else { continue };
        let segs = load_segments(&**wal.meta(), name).await?;
        chunked.insert(log_id, segs.iter().filter(|s| s.layout == Layout::Chunks).map(|s| s.id).collect());
    }
    Ok(named.into_iter().filter(|(l, s)| !chunked.get(l).is_some_and(|c| c.contains(s))).collect())
}

/// Deletes shared objects past their grace period that no chunk record names (after deleting
/// stray chunk records).
async fn collect_shared_objects(wal: &Wal) -> Result<usize> {
    let grace = wal.config().shared_gc_grace_ms;
    // Objects first, then the records: an object listed here and committed by a writer after
    // the records were read is younger than the grace period.
    let objects = wal.store().list(keys::SHARED_OBJECTS).await?;
    let records = wal.meta().list(keys::ALL_CHUNKS).await?;
    let strays = stray_chunk_segments(wal, records.kvs.iter().filter_map(|kv| keys::parse_chunk(&kv.key))).await?;
    let mut live: HashSet<String> = HashSet::new();
    for kv in &records.kvs {
        if keys::parse_chunk(&kv.key).is_some_and(|k| strays.contains(&k)) {
            continue;
        }
        let r: ChunkRef = decode_json(&kv.key, &kv.value)?;
        live.insert(r.loc.object);
    }
    for (log_id, seg) in &strays {
        wal.meta().txn(Txn::new().then(Op::DeletePrefix(keys::chunks(*log_id, *seg)))).await?;
    }
    let now = now_ms();
    let mut deleted = 0;
    for o in objects {
        let old = keys::shared_object_ms(&o.key).is_some_and(|ms| now.saturating_sub(ms) >= grace);
        if old && !live.contains(&o.key) {
            wal.store().delete(&o.key).await?;
            deleted += 1;
        }
    }
    metrics::counter!(m::SHARED_OBJECTS_DELETED_TOTAL).increment(deleted as u64);
    Ok(deleted)
}
