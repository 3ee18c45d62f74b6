//! Flushing: when buffered entries become a block (group commit), and when a block starts a
//! new segment. Both decisions are pure functions of a few numbers, tested below; the cutting
//! itself takes entries off the buffer in order and encodes them.
//!
//! Group commit: while fewer than half the persist slots are busy (with shared objects: while
//! none is), waiting data is flushed at once (a lightly loaded log acknowledges in about one PUT
//! or one replication round). Beyond
//! that, data accumulates until a block is full (`flush_max_bytes`), its oldest entry is
//! `flush_max_age_ms` old, or a flush or close was asked for: a loaded log batches into large
//! blocks, and the in-flight bound is never passed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Pending, SegCursor, WState, WriterInner};
use crate::entry::StoredEntry;
use crate::format::{encode_block, BlockInfo};
use crate::metrics as m;
use crate::util::lock;

/// What the flush decision looks at.
#[derive(Debug, Clone, Copy)]
pub(super) struct FlushInput {
    /// Blocks being persisted now, and the bound on them.
    pub inflight: usize,
    pub max_inflight: usize,
    /// Blocks in flight below which data is cut at once (group commit).
    pub eager_below: usize,
    pub buffered_bytes: usize,
    pub max_bytes: usize,
    /// Age of the oldest buffered entry, and the bound on it.
    pub oldest_age: Duration,
    pub max_age: Duration,
    /// A flush or close asked for everything now.
    pub requested: bool,
}

/// Whether to cut a block now (the caller checks there is data and a free slot).
pub(super) fn should_flush(i: FlushInput) -> bool {
    let eager = i.inflight < i.eager_below.min(i.max_inflight);
    eager || i.buffered_bytes >= i.max_bytes || i.oldest_age >= i.max_age || i.requested
}

/// The segment blocks are being cut into, and how full it is.
#[derive(Debug, Clone, Copy)]
pub(super) struct SegFill {
    pub id: u64,
    pub bytes: u64,
    pub blocks: u32,
    pub since: Instant,
}

/// A segment's size and age limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct SegLimits {
    pub max_bytes: u64,
    pub max_blocks: u32,
    pub max_age: Duration,
}

impl SegFill {
    pub fn new(id: u64, now: Instant) -> Self {
        SegFill { id, bytes: 0, blocks: 0, since: now }
    }

    /// Whether a block of `incoming` bytes must go to a new segment. An empty segment always
    /// takes the block. QuorumBuffer decides before cutting, without the block's size: it passes
    /// 1, so the segment rolls once it holds `max_bytes`.
    pub fn full(&self, incoming: u64, limits: SegLimits, now: Instant) -> bool {
        self.blocks > 0
            && (self.bytes + incoming > limits.max_bytes
                || self.blocks >= limits.max_blocks
                || now.duration_since(self.since) >= limits.max_age)
    }

    /// Continues in the next segment.
    pub fn roll(&mut self, now: Instant) {
        *self = SegFill::new(self.id + 1, now);
    }
}

/// A block cut from the buffer, not yet persisted.
pub(super) struct Cut {
    pub seg_id: u64,
    pub info: BlockInfo,
    pub key: String,
    pub data: bytes::Bytes,
    pub entries: Vec<Pending>,
}

/// Takes entries off the front of the buffer, in order, up to `max_bytes` (at least one).
fn take(st: &mut WState, max_bytes: usize) -> (Vec<Pending>, usize) {
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    while let Some(p) = st.buffer.front() {
        if !entries.is_empty() && bytes + p.entry.data.len() > max_bytes {
            break;
        }
        bytes += p.entry.data.len();
        entries.push(st.buffer.pop_front().expect("front exists"));
    }
    st.buffer_bytes -= bytes;
    if st.buffer.is_empty() {
        st.flush_requested = false;
    }
    (entries, bytes)
}

impl WriterInner {
    pub(super) fn seg_limits(&self) -> SegLimits {
        // Blocks in shared objects are metadata keys until segment flushing: fewer per segment.
        let max_blocks = match (&self.rep, &self.wal.objects) {
            (None, Some(_)) => self.wal.cfg.segment_max_blocks.min(self.wal.cfg.segment_max_chunks),
            _ => self.wal.cfg.segment_max_blocks,
        };
        SegLimits { max_bytes: self.segment_max_bytes, max_blocks, max_age: self.segment_max_age }
    }

    /// Cuts the next block if the flush decision says so. `roll_by_size`: this strategy rolls
    /// segments here, by the block's size (MemoryBuffer); QuorumBuffer rolls before cutting.
    pub(super) fn cut(self: &Arc<Self>, cur: &mut SegCursor, inflight: usize, roll_by_size: bool) -> Option<Cut> {
        let cfg = &self.wal.cfg;
        let mut st = lock(&self.state);
        let front = st.buffer.front()?;
        // Shared objects: one block per log at a time, cut when the previous one is stored (the
        // object writer groups logs' blocks; a second eager block would go out almost empty
        // in the next object). Otherwise half the persist slots.
        let eager_below = match (&self.rep, &self.wal.objects) {
            (None, Some(_)) => 1,
            _ => cfg.max_inflight_uploads.div_ceil(2),
        };
        let input = FlushInput {
            inflight,
            max_inflight: cfg.max_inflight_uploads,
            eager_below,
            buffered_bytes: st.buffer_bytes,
            max_bytes: cfg.flush_max_bytes,
            oldest_age: front.at.elapsed(),
            max_age: Duration::from_millis(cfg.flush_max_age_ms),
            requested: st.flush_requested || st.closing,
        };
        if !should_flush(input) {
            return None;
        }
        let (entries, bytes) = take(&mut st, cfg.flush_max_bytes);
        drop(st);
        let now = Instant::now();
        if roll_by_size && (cur.roll_next || cur.cut.full(bytes as u64, self.seg_limits(), now)) {
            cur.cut.roll(now);
            cur.roll_next = false;
        }
        let stored: Vec<StoredEntry> = entries.iter().map(|p| p.entry.clone()).collect();
        let data = encode_block(self.log_id, cur.cut.id, self.epoch, &stored);
        let info = BlockInfo {
            base_offset: stored[0].offset,
            end_offset: stored.last().expect("non-empty").end_offset(),
            max_timestamp: stored.iter().map(|e| e.max_timestamp).max().unwrap_or(-1),
            size: data.len() as u32,
        };
        cur.cut.bytes += data.len() as u64;
        cur.cut.blocks += 1;
        let key = crate::log::keys::block(self.log_id, cur.cut.id, self.epoch, info.base_offset, info.end_offset);
        metrics::counter!(m::FLUSH_TOTAL).increment(1);
        metrics::histogram!(m::FLUSH_BYTES).record(data.len() as f64);
        Some(Cut { seg_id: cur.cut.id, info, key, data, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> FlushInput {
        FlushInput {
            inflight: 0,
            max_inflight: 4,
            eager_below: 2,
            buffered_bytes: 10,
            max_bytes: 1000,
            oldest_age: Duration::ZERO,
            max_age: Duration::from_millis(200),
            requested: false,
        }
    }

    #[test]
    fn flushes_eagerly_while_fewer_than_half_the_slots_are_busy() {
        assert!(should_flush(FlushInput { inflight: 1, ..input() }));
        assert!(!should_flush(FlushInput { inflight: 2, ..input() }));
        // Shared objects: only with nothing of the log in flight.
        assert!(should_flush(FlushInput { inflight: 0, eager_below: 1, ..input() }));
        assert!(!should_flush(FlushInput { inflight: 1, eager_below: 1, ..input() }));
        assert!(!should_flush(FlushInput { inflight: 4, eager_below: 8, ..input() }), "never past the slots");
    }

    #[test]
    fn a_busy_pipeline_waits_for_size_age_or_a_request() {
        let busy = FlushInput { inflight: 3, ..input() };
        assert!(!should_flush(busy));
        assert!(should_flush(FlushInput { buffered_bytes: 1000, ..busy }));
        assert!(should_flush(FlushInput { oldest_age: Duration::from_millis(200), ..busy }));
        assert!(should_flush(FlushInput { requested: true, ..busy }));
        assert!(!should_flush(FlushInput { buffered_bytes: 999, oldest_age: Duration::from_millis(199), ..busy }));
    }

    #[test]
    fn a_segment_rolls_by_size_blocks_or_age_but_never_empty() {
        let t0 = Instant::now();
        let limits = SegLimits { max_bytes: 100, max_blocks: 3, max_age: Duration::from_secs(10) };
        let mut f = SegFill::new(7, t0);
        assert!(!f.full(1000, limits, t0 + Duration::from_secs(60)), "an empty segment takes any block");
        f.bytes = 60;
        f.blocks = 1;
        assert!(!f.full(40, limits, t0));
        assert!(f.full(41, limits, t0));
        assert!(f.full(1, limits, t0 + Duration::from_secs(10)));
        f.blocks = 3;
        assert!(f.full(1, limits, t0));
        // QuorumBuffer's "holds max_bytes" check.
        let g = SegFill { bytes: 100, blocks: 1, ..SegFill::new(7, t0) };
        assert!(g.full(1, limits, t0));
        assert!(!SegFill { bytes: 99, ..g }.full(1, limits, t0));
        f.roll(t0);
        assert_eq!((f.id, f.bytes, f.blocks), (8, 0, 0));
    }
}
