//! QuorumBuffer's persist strategy on the writer side: rolling segments onto replica sets,
//! replicating blocks, acknowledging at the quorum, and committing what the replicas stored.
//!
//! A segment's replica set is chosen when it is created: the roll's transaction records where
//! the current segment ends (or deletes it when it holds nothing) and creates the new one with
//! its replicas, before any block is sent to them. Rolls happen only with an empty pipeline:
//! when the segment is full, when too few replicas remain, or after a failure. A block reaching
//! its quorum is published to readers (tail cache pinned: the cache is then its only copy in
//! this process) and acknowledged at once; it is kept in `unstored` until the replicas report
//! it in object storage, then committed to metadata in order and released.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ack::{acknowledge, held_bytes};
use super::cut::Cut;
use super::{InFlight, PersistError, SegCursor, WriterInner};
use crate::error::{SharedFailure, StorageError};
use crate::log::quorum::{choose_replicas, QuorumSeg, ReplicateError};
use crate::log::{json, keys, Layout, SegmentMeta};
use crate::logstore::proto::SegKey;
use crate::logstore::Replication;
use crate::meta::Op;
use crate::metrics as m;

/// The writer's replication state.
#[derive(Default)]
pub(super) struct QuorumState {
    /// The segment blocks are replicated to now (none before the first roll).
    current: Option<Arc<QuorumSeg>>,
    /// Every segment with blocks not yet stored (and the current one), by segment id.
    segs: HashMap<u64, Arc<QuorumSeg>>,
    /// Blocks acknowledged but not yet in object storage, in offset order.
    unstored: VecDeque<InFlight>,
}

impl QuorumState {
    pub fn all_stored(&self) -> bool {
        self.unstored.is_empty()
    }

    /// A watch on the stored end of the oldest unstored block's segment, and that block's end.
    pub fn stored_watch(&self) -> Option<(tokio::sync::watch::Receiver<u64>, u64)> {
        let b = self.unstored.front()?;
        let qs = self.segs.get(&b.seg_id)?;
        let mut rx = qs.stored.clone();
        rx.mark_unchanged();
        Some((rx, b.info.end_offset))
    }
}

impl WriterInner {
    fn replication(&self) -> &Arc<Replication> {
        self.rep.as_ref().expect("QuorumBuffer mode")
    }

    /// Whether the next block needs a new segment (and so an empty pipeline).
    pub(super) fn needs_roll(&self, cur: &SegCursor, q: &QuorumState) -> bool {
        let Some(qs) = &q.current else { return true };
        cur.roll_next || qs.healthy_count() < qs.ack_quorum || cur.cut.full(1, self.seg_limits(), Instant::now())
    }

    /// Before cutting: commit what the replicas stored; roll when the next block needs it.
    /// Breaks when the writer must stop.
    pub(super) async fn quorum_prepare(
        &self,
        cur: &mut SegCursor,
        q: &mut QuorumState,
        pipeline: &mut VecDeque<InFlight>,
        retry_at: &mut Option<tokio::time::Instant>,
    ) -> ControlFlow<()> {
        if retry_at.is_some_and(|t| tokio::time::Instant::now() < t) {
            return ControlFlow::Continue(());
        }
        *retry_at = None;
        if let Err(f) = self.commit_stored(cur, q).await {
            if f.stops_writer() {
                self.fail_all(f, pipeline, true);
                return ControlFlow::Break(());
            }
            tracing::warn!(log = %self.name, error = %f, "committing stored blocks failed; retrying");
            *retry_at = Some(tokio::time::Instant::now() + self.backoff(0));
        }
        let has_data = !crate::util::lock(&self.state).buffer.is_empty();
        if retry_at.is_none() && has_data && pipeline.is_empty() && self.needs_roll(cur, q) {
            if let Err(f) = self.roll(cur, q).await {
                let stop = f.stops_writer();
                tracing::warn!(log = %self.name, error = %f, "cannot start a QuorumBuffer segment; failing pending appends");
                self.fail_all(f, pipeline, stop);
                if stop {
                    return ControlFlow::Break(());
                }
                *retry_at = Some(tokio::time::Instant::now() + Duration::from_millis(500));
            }
        }
        ControlFlow::Continue(())
    }

    /// Starts the next segment on a fresh replica set.
    async fn roll(&self, cur: &mut SegCursor, q: &mut QuorumState) -> Result<(), SharedFailure> {
        let rep = self.replication();
        let nodes = choose_replicas(&self.wal, rep, self.log_id).await.map_err(|e| SharedFailure::Retriable(e.to_string()))?;
        let base = self.shared.durable_end();
        let (old_id, new_id) = (cur.cut.id, cur.cut.id + 1);
        let old_empty = cur.cut.blocks == 0 && cur.committed.id == old_id && cur.committed.end_offset == cur.committed.base_offset
            || cur.cut.blocks == 0 && cur.templates.contains_key(&old_id);
        let mut txn = self.fenced_txn();
        if old_empty {
            txn = txn.then(Op::Delete(keys::segment(&self.name, old_id)));
        } else {
            let mut old = if cur.committed.id == old_id {
                cur.committed.clone()
            } else {
                cur.templates.get(&old_id).cloned().unwrap_or_else(|| cur.committed.clone())
            };
            old.fixed_end = Some(base);
            txn = txn.then(Op::put(keys::segment(&self.name, old.id), json(&old)));
        }
        // With shared objects on, the replicas put the blocks into their shared objects.
        let shared = self.wal.cfg.shared_objects;
        let meta = SegmentMeta {
            replicas: nodes.clone(),
            ack_quorum: self.wal.cfg.quorum.ack_quorum,
            layout: if shared { Layout::Chunks } else { Layout::Blocks },
            ..SegmentMeta::active(new_id, self.epoch, base)
        };
        txn = txn.then(Op::put(keys::segment(&self.name, new_id), json(&meta)));
        self.commit_txn(txn).await?;
        if old_empty {
            cur.templates.remove(&old_id);
            if cur.committed.id == old_id {
                cur.committed_deleted = true;
            }
            if !q.unstored.iter().any(|b| b.seg_id == old_id) {
                if let Some(qs) = q.segs.remove(&old_id) {
                    rep.forget(qs.key);
                }
            }
        } else if cur.committed.id == old_id {
            cur.committed.fixed_end = Some(base);
        } else if let Some(t) = cur.templates.get_mut(&old_id) {
            t.fixed_end = Some(base);
        }
        let key = SegKey { log_id: self.log_id, segment: new_id };
        let qs = QuorumSeg::new(rep, key, self.epoch, base, nodes, self.wal.cfg.quorum.ack_quorum, shared);
        tracing::info!(log = %self.name, segment = new_id, base, replicas = ?qs.replicas.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), "QuorumBuffer segment opened");
        cur.templates.insert(new_id, meta);
        q.segs.insert(new_id, qs.clone());
        q.current = Some(qs);
        cur.cut.roll(Instant::now());
        cur.roll_next = false;
        Ok(())
    }

    /// Sends a cut block to the current segment's replicas; the task ends at the quorum.
    pub(super) fn replicate(&self, q: &QuorumState, c: Cut) -> InFlight {
        let qs = q.current.as_ref().expect("cut only after a roll");
        let timeout = Duration::from_millis(self.wal.cfg.quorum.replica_timeout_ms);
        let replicated = qs.replicate(self.replication(), timeout, c.info.base_offset, c.info.end_offset, c.data);
        let task = tokio::spawn(async move {
            let r = replicated.await.map(|()| None).map_err(|e| match e {
                ReplicateError::Fenced(m) => PersistError::Conflict(m),
                ReplicateError::NoQuorum(message) => PersistError::Failed(StorageError::Transient { op: "replicate", message }),
            });
            metrics::gauge!(m::UPLOADS_INFLIGHT).decrement(1.0);
            r
        });
        InFlight { seg_id: c.seg_id, info: c.info, entries: c.entries, task, loc: None }
    }

    /// The blocks reached their quorum: publish them to readers (tail cache pinned until they
    /// are stored), acknowledge their appends, and keep them until they are stored.
    pub(super) fn quorum_reached(&self, q: &mut QuorumState, mut done: Vec<InFlight>) {
        let Some(end) = done.last().map(|b| b.info.end_offset) else { return };
        {
            let mut tail = self.shared.tail();
            if q.unstored.is_empty() {
                tail.set_pin(done[0].info.base_offset);
            }
            for p in done.iter().flat_map(|b| b.entries.iter()) {
                tail.push(p.entry.clone());
            }
        }
        self.shared.set_durable(end);
        acknowledge(done.iter_mut().flat_map(|b| b.entries.iter_mut()));
        q.unstored.extend(done);
    }

    /// Commits (in order) the acknowledged blocks the replicas report stored, then frees their
    /// buffer space and tells the replicas they may drop them.
    async fn commit_stored(&self, cur: &mut SegCursor, q: &mut QuorumState) -> Result<(), SharedFailure> {
        let rep = self.replication();
        loop {
            let Some(seg_id) = q.unstored.front().map(|b| b.seg_id) else { return Ok(()) };
            let Some(qs) = q.segs.get(&seg_id).cloned() else { return Ok(()) };
            let stored = *qs.stored.borrow();
            let n = q.unstored.iter().take_while(|b| b.seg_id == seg_id && b.info.end_offset <= stored).count();
            if n == 0 {
                return Ok(());
            }
            let batch: Vec<InFlight> = q.unstored.drain(..n).collect();
            if let Err(f) = self.commit(cur, &batch, false).await {
                for b in batch.into_iter().rev() {
                    q.unstored.push_front(b);
                }
                return Err(f);
            }
            metrics::gauge!(m::BUFFER_BYTES).decrement(held_bytes(&batch) as f64);
            drop(batch);
            qs.progress(rep, stored);
            let pin = q.unstored.front().map(|b| b.info.base_offset).unwrap_or(u64::MAX);
            self.shared.tail().set_pin(pin);
            let current = q.current.as_ref().is_some_and(|c| c.key.segment == seg_id);
            if !current && !q.unstored.iter().any(|b| b.seg_id == seg_id) {
                q.segs.remove(&seg_id);
                rep.forget(qs.key);
            }
        }
    }
}
