//! Committing: recording finished blocks in the log's metadata, then publishing them.
//!
//! One transaction per segment touched covers every finished block of it (normally one
//! transaction for all of them), compared against this writer's epoch revision, so a fenced
//! writer can never extend the log. The first block of a new segment seals the previous one
//! (index object, then its sealed record) in the same transaction. After the commit the blocks
//! are published to readers: segment view and tail cache, then the durable end.

use std::time::{Duration, Instant};

use super::{InFlight, SegCursor, WriterInner};
use crate::error::SharedFailure;
use crate::log::recovery::{chunk_info, load_chunks, seal_abandoned, seal_segment};
use crate::log::{json, keys, ChunkRef, Layout, SegmentMeta};
use crate::meta::{Compare, Op, Txn};
use crate::metrics as m;

impl WriterInner {
    /// A transaction compared against this writer's epoch.
    pub(super) fn fenced_txn(&self) -> Txn {
        Txn::new().when(Compare::ModRevision(keys::epoch(&self.name), self.epoch_rev))
    }

    /// Commits finished blocks (in order) to metadata; returns the error to fail with, if any.
    /// `publish`: push their entries to the tail cache (QuorumBuffer did at acknowledgement).
    pub(super) async fn commit(&self, cur: &mut SegCursor, done: &[InFlight], publish: bool) -> Result<(), SharedFailure> {
        let started = Instant::now();
        let mut i = 0;
        while i < done.len() {
            let seg_id = done[i].seg_id;
            let mut txn = self.fenced_txn();
            let mut next = if seg_id != cur.committed.id {
                // The first block of a new segment: seal the current one in the same transaction.
                if !cur.committed_deleted {
                    let sealed = self.seal(cur).await.map_err(|e| SharedFailure::Retriable(format!("sealing segment failed: {e}")))?;
                    txn = txn.then(Op::put(keys::segment(&self.name, sealed.id), json(&sealed)));
                    self.shared.merge_segments_one(sealed);
                }
                match cur.templates.get(&seg_id) {
                    Some(t) => t.clone(),
                    None => SegmentMeta::active(seg_id, self.epoch, done[i].info.base_offset),
                }
            } else {
                cur.committed.clone()
            };
            let mut blocks = Vec::new();
            let mut locs = Vec::new();
            let first = i;
            while i < done.len() && done[i].seg_id == seg_id {
                let b = done[i].info;
                next.end_offset = b.end_offset;
                next.bytes += b.size as u64;
                next.blocks += 1;
                next.max_timestamp = next.max_timestamp.max(b.max_timestamp);
                if let Some(loc) = &done[i].loc {
                    // Inside a shared object: the block's place is part of the same commit.
                    next.layout = Layout::Chunks;
                    let r =
                        ChunkRef { base_offset: b.base_offset, end_offset: b.end_offset, max_timestamp: b.max_timestamp, loc: loc.clone() };
                    txn = txn.then(Op::put(keys::chunk(self.log_id, seg_id, b.base_offset), json(&r)));
                    locs.push((b.base_offset, loc.clone()));
                }
                blocks.push(b);
                i += 1;
            }
            txn = txn.then(Op::put(keys::segment(&self.name, seg_id), json(&next)));
            self.commit_txn(txn).await?;
            metrics::counter!(m::LOG_STORED_BLOCKS_TOTAL, "log" => self.name.clone()).increment(blocks.len() as u64);
            metrics::counter!(m::LOG_STORED_BYTES_TOTAL, "log" => self.name.clone())
                .increment(blocks.iter().map(|b| b.size as u64).sum::<u64>());
            if seg_id != cur.committed.id {
                cur.committed_blocks.clear();
                cur.committed_deleted = false;
                cur.templates.remove(&seg_id);
            }
            cur.committed = next;
            cur.committed_blocks.extend_from_slice(&blocks);
            if publish {
                let mut tail = self.shared.tail();
                for p in done[first..i].iter().flat_map(|b| b.entries.iter()) {
                    tail.push(p.entry.clone());
                }
            }
            // QuorumBuffer: the nodes store blocks as they choose (see `logstore::replica`), so
            // readers learn where from storage or the nodes' chunk keys.
            let published = if self.rep.is_some() { &[][..] } else { &blocks[..] };
            self.shared.commit_blocks(&cur.committed, published, locs);
        }
        metrics::histogram!(m::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Seals the committed segment: from the blocks this writer committed, or (QuorumBuffer,
    /// whose nodes store blocks as they choose) from the chunk keys the nodes committed or the
    /// objects listed in storage.
    async fn seal(&self, cur: &SegCursor) -> crate::error::Result<SegmentMeta> {
        let seg = &cur.committed;
        match (&self.rep, seg.layout) {
            (Some(_), Layout::Chunks) => {
                let blocks: Vec<_> =
                    load_chunks(&*self.wal.meta, self.log_id, Some(&self.name), seg).await?.iter().map(chunk_info).collect();
                seal_segment(&*self.wal.store, self.log_id, seg, &blocks).await
            }
            (Some(_), _) => Ok(seal_abandoned(&*self.wal.store, self.log_id, seg).await?.0),
            (None, _) => seal_segment(&*self.wal.store, self.log_id, seg, &cur.committed_blocks).await,
        }
    }

    /// Runs one metadata transaction, retrying transient failures (it is idempotent) until
    /// `commit_timeout_ms`.
    pub(super) async fn commit_txn(&self, txn: Txn) -> Result<(), SharedFailure> {
        let deadline = Instant::now() + Duration::from_millis(self.wal.cfg.commit_timeout_ms);
        let mut attempt = 0;
        loop {
            match self.wal.txns.txn(txn.clone()).await {
                Ok(r) if r.succeeded => return Ok(()),
                // After a failed attempt whose outcome is unknown, a failed comparison does not prove
                // the earlier attempt did not apply: report the outcome as unknown.
                Ok(_) if attempt > 0 => return Err(SharedFailure::WriterFailed("fenced after an attempt with an unknown outcome".into())),
                Ok(_) => return Err(SharedFailure::Fenced { log: self.name.clone(), epoch: self.epoch }),
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    tracing::warn!(log = %self.name, error = %e, "metadata commit failed; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    // The outcome is unknown: only a reopen (which reads the truth) may continue.
                    return Err(SharedFailure::WriterFailed(format!("metadata commit failed: {e}")));
                }
            }
        }
    }

    /// At close, with everything committed: seals the active segment so the next writer starts
    /// cleanly (best effort: a next writer seals it otherwise).
    pub(super) async fn seal_at_close(&self, cur: &SegCursor) {
        if cur.committed_deleted || cur.committed.end_offset == cur.committed.base_offset {
            return;
        }
        match self.seal(cur).await {
            Ok(sealed) => {
                let txn = self.fenced_txn().then(Op::put(keys::segment(&self.name, sealed.id), json(&sealed)));
                if self.commit_txn(txn).await.is_ok() {
                    self.shared.merge_segments_one(sealed);
                }
            }
            Err(e) => tracing::warn!(log = %self.name, error = %e, "could not seal segment at close"),
        }
    }
}
