//! The replica rules of a LogStore node, as a pure state machine: no sockets, timers or files.
//!
//! [`Replica`] holds, per segment, a contiguous run of blocks (the first at the segment base,
//! each next at the previous end), the segment's fence (appends from older epochs are refused)
//! and its stored end (every block below it is in object storage, so it is dropped). Each
//! operation returns the answer and the [`Effects`] to write to the journal, in order: the node
//! (see [`node`](super::node)) applies them under its state lock, so the journal sees changes in
//! the order they happened. [`Replica::apply`] replays a journal record; the property test below
//! checks that any sequence of operations reaches the same state live and after replay, from the
//! records written or from a snapshot.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::journal::Record;
use super::proto::{Append, ErrorCode, SegKey};

/// Segments with no blocks left are forgotten after this long without an append.
pub const IDLE_SEGMENT_TTL: Duration = Duration::from_secs(600);

struct Blk {
    end: u64,
    data: Bytes,
    at: Instant,
    upload_now: bool,
    /// Goes into a shared object (each block on its own: the node's object writer merges them).
    shared: bool,
    uploading: bool,
    uploaded: bool,
}

struct Seg {
    epoch: u64,
    fence: u64,
    base: u64,
    /// End of the contiguous run held (or stored).
    end: u64,
    /// Every block below this is in object storage.
    stored_end: u64,
    blocks: BTreeMap<u64, Blk>,
    touched: Instant,
}

impl Seg {
    /// A segment first seen in a fence: its identity is adopted at the first append.
    fn fenced_only(now: Instant) -> Seg {
        Seg::new(0, 0, now)
    }

    fn new(epoch: u64, base: u64, now: Instant) -> Seg {
        Seg { epoch, fence: 0, base, end: base, stored_end: base, blocks: BTreeMap::new(), touched: now }
    }

    fn is_fenced_only(&self) -> bool {
        self.blocks.is_empty() && self.end == 0 && self.epoch == 0
    }

    /// The segment `key` as (epoch, base) names it: created if unknown, and a segment known
    /// only from a fence adopts that identity (keeping its fence).
    fn named(segs: &mut HashMap<SegKey, Seg>, key: SegKey, epoch: u64, base: u64, now: Instant) -> &mut Seg {
        let s = segs.entry(key).or_insert_with(|| Seg::new(epoch, base, now));
        if s.is_fenced_only() {
            let fence = s.fence;
            *s = Seg { fence, ..Seg::new(epoch, base, now) };
        }
        s
    }

    /// Raises the stored end to `to` (and over blocks uploaded in a row), dropping what is
    /// known to be in object storage; returns the bytes dropped.
    fn advance(&mut self, to: u64) -> usize {
        if to > self.stored_end {
            self.stored_end = to;
        }
        while let Some(e) = self.blocks.get(&self.stored_end).filter(|b| b.uploaded).map(|b| b.end) {
            self.stored_end = e;
        }
        let keep = self.blocks.split_off(&self.stored_end);
        let dropped = std::mem::replace(&mut self.blocks, keep).into_values().map(|b| b.data.len()).sum();
        // A block that straddles the stored end cannot exist: blocks are whole units.
        if self.stored_end > self.end {
            self.end = self.stored_end;
        }
        dropped
    }
}

/// Journal records a state change needs, in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// The record the answer waits for (on disk before the node answers).
    pub wait: Option<Record>,
    /// Records written after it, not waited for (stored marks).
    pub notes: Vec<Record>,
}

/// What an append gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// Held (or already held: a resend); answer with the segment's stored end.
    Ok {
        stored_end: u64,
    },
    Refused {
        code: ErrorCode,
        message: String,
    },
    /// Over the memory bound: wait for space, then try again.
    Full,
}

/// A run of consecutive blocks of one segment due for upload (as one object), marked as
/// uploading: `[base, end)`, and each block's `(base, bytes)`.
#[derive(Debug, Clone)]
pub struct Upload {
    pub seg: SegKey,
    pub epoch: u64,
    pub base: u64,
    pub end: u64,
    /// Into a shared object (one block), not an object of its own (a run).
    pub shared: bool,
    pub blocks: Vec<(u64, Bytes)>,
}

/// A run uploaded as one object holds at most this many bytes.
pub const MAX_UPLOAD_RUN_BYTES: usize = 8 << 20;

/// What a fence answers: what the node holds of the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceAnswer {
    pub stored_end: u64,
    pub blocks: Vec<(u64, u64)>,
}

/// Every segment a node holds, and the bytes of blocks not yet stored.
#[derive(Default)]
pub struct Replica {
    segs: HashMap<SegKey, Seg>,
    held: usize,
}

impl Replica {
    /// Bytes of blocks held (not yet known stored).
    pub fn held(&self) -> usize {
        self.held
    }

    pub fn segments(&self) -> usize {
        self.segs.len()
    }

    /// Raises a segment's stored end; the journal notes it when it rose. A segment known only
    /// from a fence has no identity yet and keeps none (replay ignores such marks too: a
    /// stored notice from a fenced writer must not give it one).
    fn advance(&mut self, key: SegKey, to: u64, fx: &mut Effects) -> Option<u64> {
        let s = self.segs.get_mut(&key).filter(|s| !s.is_fenced_only())?;
        let before = s.stored_end;
        self.held -= s.advance(to);
        (s.stored_end > before).then(|| {
            fx.notes.push(Record::Stored { seg: key, stored_end: s.stored_end });
            s.stored_end
        })
    }

    /// Holds a block, refuses it, or asks the caller to wait for space (`max_held`).
    pub fn append(&mut self, a: &Append, max_held: usize, now: Instant) -> (Appended, Effects) {
        let refuse = |code, message| (Appended::Refused { code, message }, Effects::default());
        if a.end <= a.base || a.base < a.seg_base {
            return refuse(ErrorCode::Invalid, format!("bad block range {}..{}", a.base, a.end));
        }
        // (checked before a fence-only segment adopts the appender's identity)
        if let Some(fence) = self.segs.get(&a.seg).map(|s| s.fence).filter(|f| a.epoch < *f) {
            return refuse(ErrorCode::Fenced, format!("segment fenced at epoch {fence}"));
        }
        // The segment as held, or as this append would create it: nothing changes unless the
        // block is taken (a refused append leaves no trace, live or in the journal).
        let held = self.segs.get(&a.seg).filter(|s| !s.is_fenced_only());
        let (epoch, base, end, stored_end) = match held {
            Some(s) => (s.epoch, s.base, s.end, s.stored_end),
            None => (a.epoch, a.seg_base, a.seg_base, a.seg_base),
        };
        if a.epoch != epoch || a.seg_base != base {
            return refuse(ErrorCode::Invalid, format!("segment identity mismatch (epoch {} vs {epoch})", a.epoch));
        }
        if a.base < end {
            // A resend of a block we hold (or stored): idempotent.
            let same = held.and_then(|s| s.blocks.get(&a.base)).map(|b| b.end == a.end).unwrap_or(a.end <= stored_end);
            if !same {
                return refuse(ErrorCode::Gap, format!("block {}..{} overlaps held data ending at {end}", a.base, a.end));
            }
            if let Some(s) = self.segs.get_mut(&a.seg) {
                s.touched = now;
            }
            // Answered once every record queued so far (this block's among them) is on disk:
            // the stored mark is a harmless barrier.
            let fx = Effects { wait: Some(Record::Stored { seg: a.seg, stored_end }), notes: Vec::new() };
            return (Appended::Ok { stored_end }, fx);
        }
        if a.base != end {
            return refuse(ErrorCode::Gap, format!("block starts at {}, held data ends at {end}", a.base));
        }
        let len = a.block.len();
        if self.held + len > max_held && self.held != 0 {
            return (Appended::Full, Effects::default());
        }
        self.held += len;
        let s = Seg::named(&mut self.segs, a.seg, a.epoch, a.seg_base, now);
        s.touched = now;
        s.end = a.end;
        s.blocks.insert(
            a.base,
            Blk {
                end: a.end,
                data: a.block.clone(),
                at: now,
                upload_now: a.upload_now,
                shared: a.shared,
                uploading: false,
                uploaded: false,
            },
        );
        let mut fx = Effects {
            wait: Some(Record::Append {
                seg: a.seg,
                epoch: a.epoch,
                seg_base: a.seg_base,
                base: a.base,
                end: a.end,
                shared: a.shared,
                block: a.block.clone(),
            }),
            notes: Vec::new(),
        };
        self.advance(a.seg, a.stored_end, &mut fx);
        let stored_end = self.segs[&a.seg].stored_end;
        (Appended::Ok { stored_end }, fx)
    }

    /// Refuses the segment's appends from epochs below `epoch` from now on.
    pub fn fence(&mut self, seg: SegKey, epoch: u64, now: Instant) -> (FenceAnswer, Effects) {
        let s = self.segs.entry(seg).or_insert_with(|| Seg::fenced_only(now));
        s.fence = s.fence.max(epoch);
        let answer = FenceAnswer { stored_end: s.stored_end, blocks: s.blocks.iter().map(|(b, k)| (*b, k.end)).collect() };
        (answer, Effects { wait: Some(Record::Fence { seg, epoch }), notes: Vec::new() })
    }

    /// The stored bytes of the block starting at `base`, if held.
    pub fn read(&self, seg: SegKey, base: u64) -> Option<Bytes> {
        self.segs.get(&seg).and_then(|s| s.blocks.get(&base)).map(|b| b.data.clone())
    }

    /// The consecutive blocks held from `base` on, at most `max_bytes` of them but at least the
    /// first (empty if `base` does not start a held block).
    pub fn read_run(&self, seg: SegKey, base: u64, max_bytes: usize) -> Vec<Bytes> {
        let Some(s) = self.segs.get(&seg) else { return Vec::new() };
        let (mut run, mut pos, mut bytes) = (Vec::new(), base, 0usize);
        for (&b, blk) in s.blocks.range(base..) {
            if b != pos || (!run.is_empty() && bytes + blk.data.len() > max_bytes) {
                break;
            }
            bytes += blk.data.len();
            pos = blk.end;
            run.push(blk.data.clone());
        }
        run
    }

    /// The writer reports the segment stored below `stored_end`.
    pub fn stored(&mut self, seg: SegKey, stored_end: u64) -> Effects {
        let mut fx = Effects::default();
        self.advance(seg, stored_end, &mut fx);
        fx
    }

    /// Runs to upload now, one per segment and only while none of the segment is uploading
    /// (what arrives during an upload joins the next run: PUTs follow the upload latency, not
    /// the append rate). A run is the first due block not yet uploaded, and, when this node is
    /// that block's designated uploader, the consecutive blocks it is designated for after it,
    /// up to [`MAX_UPLOAD_RUN_BYTES`]. A block another replica was named for is due once it is
    /// `takeover` old (that uploader may be gone) and goes alone: runs of different replicas then
    /// never overlap partly (each block has one designated uploader), so stored objects always
    /// chain at block boundaries. Blocks bound for shared objects are due one by one, as many
    /// at once as are ready (the node's object writer merges them, across logs, within its PUT
    /// budget). Forgets idle empty segments first.
    pub fn due(&mut self, now: Instant, takeover: Duration) -> Vec<Upload> {
        self.segs.retain(|_, s| !(s.blocks.is_empty() && now.duration_since(s.touched) > IDLE_SEGMENT_TTL));
        let mut due = Vec::new();
        for (k, s) in self.segs.iter_mut() {
            if s.blocks.values().next().is_some_and(|b| b.shared) {
                for (base, b) in s.blocks.iter_mut() {
                    if !b.uploaded && !b.uploading && (b.upload_now || now.duration_since(b.at) >= takeover) {
                        b.uploading = true;
                        let blocks = vec![(*base, b.data.clone())];
                        due.push(Upload { seg: *k, epoch: s.epoch, base: *base, end: b.end, shared: true, blocks });
                    }
                }
                continue;
            }
            if s.blocks.values().any(|b| b.uploading) {
                continue;
            }
            let mut run: Vec<(u64, Bytes)> = Vec::new();
            let (mut end, mut bytes, mut merging) = (0u64, 0usize, false);
            for (base, b) in s.blocks.iter_mut() {
                let ready = !b.uploaded && (b.upload_now || now.duration_since(b.at) >= takeover);
                if run.is_empty() {
                    if !ready {
                        continue;
                    }
                    merging = b.upload_now;
                } else if !(merging && ready && b.upload_now && *base == end && bytes + b.data.len() <= MAX_UPLOAD_RUN_BYTES) {
                    break;
                }
                b.uploading = true;
                end = b.end;
                bytes += b.data.len();
                run.push((*base, b.data.clone()));
                if !merging {
                    break;
                }
            }
            if let Some((first, _)) = run.first() {
                due.push(Upload { seg: *k, epoch: s.epoch, base: *first, end, shared: false, blocks: run });
            }
        }
        due
    }

    /// A run's upload finished (`bases`: its blocks). A failed one is retried `retry_in` from
    /// now. Returns the segment's new stored end when it rose (the writers are told).
    pub fn upload_done(
        &mut self,
        seg: SegKey,
        bases: &[u64],
        ok: bool,
        now: Instant,
        takeover: Duration,
        retry_in: Duration,
    ) -> (Option<u64>, Effects) {
        let mut fx = Effects::default();
        for base in bases {
            if let Some(b) = self.segs.get_mut(&seg).and_then(|s| s.blocks.get_mut(base)) {
                b.uploading = false;
                b.uploaded = ok;
                if !ok {
                    b.at = now.checked_sub(takeover.saturating_sub(retry_in)).unwrap_or(now);
                    b.upload_now = false;
                }
            }
        }
        let rose = self.advance(seg, 0, &mut fx);
        (rose, fx)
    }

    /// The records that rebuild this state (the journal's snapshot).
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for (k, s) in &self.segs {
            out.push(Record::Seg { seg: *k, epoch: s.epoch, base: s.base, fence: s.fence, stored_end: s.stored_end });
            for (b, blk) in &s.blocks {
                out.push(Record::Append {
                    seg: *k,
                    epoch: s.epoch,
                    seg_base: s.base,
                    base: *b,
                    end: blk.end,
                    shared: blk.shared,
                    block: blk.data.clone(),
                });
            }
        }
        out
    }

    /// Applies one replayed journal record (idempotently: see the journal module).
    pub fn apply(&mut self, rec: Record, now: Instant) {
        match rec {
            Record::Header { .. } => {}
            Record::Fence { seg, epoch } => {
                let s = self.segs.entry(seg).or_insert_with(|| Seg::fenced_only(now));
                s.fence = s.fence.max(epoch);
            }
            Record::Seg { seg, epoch, base, fence, stored_end } => {
                let s = Seg::named(&mut self.segs, seg, epoch, base, now);
                s.fence = s.fence.max(fence);
                if s.epoch == epoch && s.base == base {
                    self.held -= s.advance(stored_end);
                }
            }
            Record::Stored { seg, stored_end } => {
                if let Some(s) = self.segs.get_mut(&seg).filter(|s| !s.is_fenced_only()) {
                    self.held -= s.advance(stored_end);
                }
            }
            Record::Append { seg, epoch, seg_base, base, end, shared, block } => {
                let s = Seg::named(&mut self.segs, seg, epoch, seg_base, now);
                if s.epoch != epoch || s.base != seg_base || base != s.end || end <= base {
                    // Already held (a snapshot and the records in flight when it was taken overlap).
                    return;
                }
                self.held += block.len();
                s.end = end;
                s.blocks.insert(base, Blk { end, data: block, at: now, upload_now: false, shared, uploading: false, uploaded: false });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// An append to segment `seg` at the end held (or `skew` off it), of `len` bytes.
        Append {
            seg: u64,
            epoch: u64,
            skew: i8,
            count: u64,
            len: usize,
            stored_end: u64,
        },
        Fence {
            seg: u64,
            epoch: u64,
        },
        Stored {
            seg: u64,
            stored_end: u64,
        },
        /// Runs the due uploads, each succeeding or failing.
        Uploads {
            ok: Vec<bool>,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u64..3, 1u64..4, prop_oneof![8 => Just(0i8), 1 => -3i8..3], 1u64..5, 1usize..64, 0u64..40)
                .prop_map(|(seg, epoch, skew, count, len, stored_end)| Op::Append { seg, epoch, skew, count, len, stored_end }),
            1 => (0u64..3, 1u64..5).prop_map(|(seg, epoch)| Op::Fence { seg, epoch }),
            2 => (0u64..3, 0u64..60).prop_map(|(seg, stored_end)| Op::Stored { seg, stored_end }),
            2 => proptest::collection::vec(any::<bool>(), 0..6).prop_map(|ok| Op::Uploads { ok }),
        ]
    }

    fn key(seg: u64) -> SegKey {
        SegKey { log_id: 1, segment: seg }
    }

    /// A segment as (epoch, fence, base, end, stored end, blocks as (base, end, shared, bytes)).
    type SegDump = (u64, u64, u64, u64, u64, Vec<(u64, u64, bool, Bytes)>);

    /// Everything that must survive a restart, in a comparable form: held bytes and segments.
    fn dump(r: &Replica) -> (usize, BTreeMap<SegKey, SegDump>) {
        let segs = r
            .segs
            .iter()
            .map(|(k, s)| {
                let blocks = s.blocks.iter().map(|(b, blk)| (*b, blk.end, blk.shared, blk.data.clone())).collect();
                (*k, (s.epoch, s.fence, s.base, s.end, s.stored_end, blocks))
            })
            .collect();
        (r.held, segs)
    }

    fn record(journal: &mut Vec<Record>, fx: Effects) {
        journal.extend(fx.wait);
        journal.extend(fx.notes);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn replay_of_the_journal_or_a_snapshot_reaches_the_live_state(ops in proptest::collection::vec(op(), 1..60)) {
            let now = Instant::now();
            let mut live = Replica::default();
            let mut journal = Vec::new();
            // Stored notices name block boundaries (blocks are stored whole): the segment base
            // and the end of every block accepted so far, picked by index.
            let mut bounds: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            let pick = |bounds: &BTreeMap<u64, Vec<u64>>, seg: u64, i: u64| {
                let b = bounds.get(&seg).map(|v| v.as_slice()).unwrap_or(&[]);
                if b.is_empty() { seg * 100 } else { b[i as usize % b.len()] }
            };
            for op in ops {
                match op {
                    Op::Append { seg, epoch, skew, count, len, stored_end } => {
                        let held_end = live.segs.get(&key(seg)).map(|s| s.end).unwrap_or(seg * 100);
                        let base = held_end.saturating_add_signed(skew as i64);
                        let a = Append {
                            id: 1, seg: key(seg), epoch, seg_base: seg * 100, base, end: base + count,
                            upload_now: count % 2 == 0, shared: seg % 2 == 0, stored_end: pick(&bounds, seg, stored_end),
                            block: Bytes::from(vec![(base % 251) as u8; len]),
                        };
                        let (_, fx) = live.append(&a, 256, now);
                        if matches!(fx.wait, Some(Record::Append { .. })) {
                            let b = bounds.entry(seg).or_insert_with(|| vec![seg * 100]);
                            if !b.contains(&a.end) {
                                b.push(a.end);
                            }
                        }
                        record(&mut journal, fx);
                    }
                    Op::Fence { seg, epoch } => {
                        let (_, fx) = live.fence(key(seg), epoch, now);
                        record(&mut journal, fx);
                    }
                    Op::Stored { seg, stored_end } => {
                        let fx = live.stored(key(seg), pick(&bounds, seg, stored_end));
                        record(&mut journal, fx);
                    }
                    Op::Uploads { ok } => {
                        let due = live.due(now, Duration::ZERO);
                        for (job, ok) in due.iter().zip(ok.iter().chain(std::iter::repeat(&true))) {
                            let bases: Vec<u64> = job.blocks.iter().map(|(b, _)| *b).collect();
                            let (_, fx) = live.upload_done(job.seg, &bases, *ok, now, Duration::ZERO, Duration::ZERO);
                            record(&mut journal, fx);
                        }
                    }
                }
                prop_assert!(live.held <= 256 + 64, "the memory bound holds (one block may pass it when nothing is held)");
            }
            let mut replayed = Replica::default();
            for r in journal {
                replayed.apply(r, now);
            }
            prop_assert_eq!(dump(&replayed), dump(&live));
            let mut from_snapshot = Replica::default();
            for r in live.snapshot() {
                from_snapshot.apply(r, now);
            }
            prop_assert_eq!(dump(&from_snapshot), dump(&live));
        }
    }

    #[test]
    fn a_fence_refuses_older_epochs_and_a_fenced_only_segment_adopts_the_first_appender() {
        let now = Instant::now();
        let mut r = Replica::default();
        r.fence(key(0), 3, now);
        let a = |epoch, base, end| Append {
            id: 1,
            seg: key(0),
            epoch,
            seg_base: 10,
            base,
            end,
            upload_now: false,
            shared: false,
            stored_end: 0,
            block: Bytes::from_static(b"x"),
        };
        assert!(matches!(r.append(&a(2, 10, 11), 1 << 20, now).0, Appended::Refused { code: ErrorCode::Fenced, .. }));
        assert_eq!(r.append(&a(3, 10, 11), 1 << 20, now).0, Appended::Ok { stored_end: 10 });
        assert!(matches!(r.append(&a(3, 12, 13), 1 << 20, now).0, Appended::Refused { code: ErrorCode::Gap, .. }));
        // A resend is idempotent and waits for a barrier record.
        let (resent, fx) = r.append(&a(3, 10, 11), 1 << 20, now);
        assert_eq!(resent, Appended::Ok { stored_end: 10 });
        assert_eq!(fx.wait, Some(Record::Stored { seg: key(0), stored_end: 10 }));
        assert_eq!(r.held(), 1);
        r.stored(key(0), 11);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn a_run_read_returns_consecutive_held_blocks_within_its_byte_bound() {
        let now = Instant::now();
        let mut r = Replica::default();
        let a = |base, end, block: &'static [u8]| Append {
            id: 1,
            seg: key(0),
            epoch: 1,
            seg_base: 0,
            base,
            end,
            upload_now: false,
            shared: true,
            stored_end: 0,
            block: Bytes::from_static(block),
        };
        for (base, end, b) in [(0, 2, &b"aa"[..]), (2, 5, b"bbb"), (5, 6, b"c"), (6, 9, b"ddd")] {
            assert_eq!(r.append(&a(base, end, b), 1 << 20, now).0, Appended::Ok { stored_end: 0 });
        }
        let lens = |r: &Replica, base, max| r.read_run(key(0), base, max).iter().map(|b| b.len()).collect::<Vec<_>>();
        let run = |base, max| lens(&r, base, max);
        assert_eq!(run(0, 100), vec![2, 3, 1, 3]);
        assert_eq!(run(2, 4), vec![3, 1], "stops before the block that would pass the bound");
        assert_eq!(run(6, 1), vec![3], "the first block always comes, whatever the bound");
        assert!(run(3, 100).is_empty(), "3 starts no block");
        assert!(r.read_run(key(9), 0, 100).is_empty());
        // Blocks stored (and dropped) leave the run starting later.
        r.stored(key(0), 5);
        assert!(lens(&r, 0, 100).is_empty());
        assert_eq!(lens(&r, 5, 100), vec![1, 3]);
    }

    /// Found by the replay property: a stored notice for a segment this node knew only from a
    /// fence gave it a stored end live (never replayed), after which the segment refused the
    /// first appender as an identity mismatch.
    #[test]
    fn a_stored_notice_does_not_give_a_fenced_only_segment_an_identity() {
        let now = Instant::now();
        let mut r = Replica::default();
        r.fence(key(1), 1, now);
        assert_eq!(r.stored(key(1), 100), Effects::default());
        let a = Append {
            id: 1,
            seg: key(1),
            epoch: 2,
            seg_base: 100,
            base: 100,
            end: 101,
            upload_now: false,
            shared: false,
            stored_end: 0,
            block: Bytes::from_static(b"x"),
        };
        assert_eq!(r.append(&a, 1 << 20, now).0, Appended::Ok { stored_end: 100 });
    }

    /// A one-offset block at `base` of segment 0 (epoch 1, base 0).
    fn one_block(base: u64, upload_now: bool) -> Append {
        Append {
            id: 1,
            seg: key(0),
            epoch: 1,
            seg_base: 0,
            base,
            end: base + 1,
            upload_now,
            shared: false,
            stored_end: 0,
            block: Bytes::from(vec![base as u8; 4]),
        }
    }

    #[test]
    fn blocks_bound_for_shared_objects_are_due_one_by_one_while_others_upload() {
        let now = Instant::now();
        let mut r = Replica::default();
        let a = |base: u64, upload_now: bool| Append { shared: true, ..one_block(base, upload_now) };
        for b in 0..3 {
            r.append(&a(b, true), 1 << 20, now);
        }
        let due = r.due(now, Duration::from_secs(60));
        assert_eq!(
            due.iter().map(|u| (u.base, u.end, u.shared, u.blocks.len())).collect::<Vec<_>>(),
            [(0, 1, true, 1), (1, 2, true, 1), (2, 3, true, 1)]
        );
        // A block arriving while they upload is due at once; those uploading are not due twice.
        r.append(&a(3, true), 1 << 20, now);
        assert_eq!(r.due(now, Duration::from_secs(60)).iter().map(|u| u.base).collect::<Vec<_>>(), [3]);
        // Stored out of order: the stored end rises only over a contiguous prefix.
        let t = Duration::from_secs(60);
        assert_eq!(r.upload_done(key(0), &[1], true, now, t, Duration::ZERO).0, None);
        assert_eq!(r.upload_done(key(0), &[0], true, now, t, Duration::ZERO).0, Some(2));
        // A block another replica was named for is due only at takeover age.
        r.append(&a(4, false), 1 << 20, now);
        assert!(r.due(now, t).is_empty());
        assert_eq!(r.due(now + t, t).iter().map(|u| u.base).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn consecutive_due_blocks_upload_as_one_run_one_run_per_segment_at_a_time() {
        let now = Instant::now();
        let mut r = Replica::default();
        let a = |base: u64| one_block(base, true);
        for b in 0..5 {
            r.append(&a(b), 1 << 20, now);
        }
        let due = r.due(now, Duration::from_secs(60));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].base, due[0].end, due[0].blocks.len()), (0, 5, 5));
        // Blocks arriving during the upload wait for the next run.
        r.append(&a(5), 1 << 20, now);
        r.append(&a(6), 1 << 20, now);
        assert!(r.due(now, Duration::from_secs(60)).is_empty());
        let (rose, _) = r.upload_done(key(0), &[0, 1, 2, 3, 4], true, now, Duration::from_secs(60), Duration::ZERO);
        assert_eq!(rose, Some(5));
        let due = r.due(now, Duration::from_secs(60));
        assert_eq!((due[0].base, due[0].end, due[0].blocks.len()), (5, 7, 2));
        // A failed run is tried again block by block (as a takeover would be).
        r.upload_done(key(0), &[5, 6], false, now, Duration::from_secs(60), Duration::ZERO);
        let later = now + Duration::from_secs(61);
        let due = r.due(later, Duration::from_secs(60));
        assert_eq!((due[0].base, due[0].end), (5, 6));
    }

    /// Found by the compat suite's node-loss test: a replica named uploader after the previous
    /// one died held older blocks it was not named for; they must not hold its own uploads back.
    /// They go alone once `takeover` old, so no run of this replica overlaps one of another.
    #[test]
    fn a_new_uploader_uploads_its_blocks_at_once_and_the_older_ones_alone_later() {
        let now = Instant::now();
        let mut r = Replica::default();
        let a = one_block;
        r.append(&a(0, false), 1 << 20, now);
        r.append(&a(1, false), 1 << 20, now);
        assert!(r.due(now, Duration::from_secs(60)).is_empty(), "not the uploader, not old");
        r.append(&a(2, true), 1 << 20, now);
        r.append(&a(3, true), 1 << 20, now);
        let due = r.due(now, Duration::from_secs(60));
        assert_eq!((due[0].base, due[0].end), (2, 4), "its own blocks, merged, at once");
        r.upload_done(key(0), &[2, 3], true, now, Duration::from_secs(60), Duration::ZERO);
        assert!(r.due(now, Duration::from_secs(60)).is_empty());
        let later = now + Duration::from_secs(61);
        let due = r.due(later, Duration::from_secs(60));
        assert_eq!((due[0].base, due[0].end), (0, 1), "another replica's block: alone");
    }
}
