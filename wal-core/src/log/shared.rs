//! In-process state of one log, shared by its writer and readers: the durable end (a watch
//! channel, so tail readers wait without polling), the start offset, the known segments with their
//! block lists, the tail cache of recent durable entries, and a small cache of decoded blocks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::{decode_json, keys, read_log_meta, ChunkLoc, SegmentMeta, WalInner};
use crate::entry::StoredEntry;
use crate::error::Result;
use crate::format::BlockInfo;
use crate::meta::MetaStore;
use crate::util::lock;

/// A segment as this process knows it.
#[derive(Debug, Clone)]
pub(crate) struct SegView {
    pub meta: SegmentMeta,
    /// Known blocks, in order from the segment base.
    pub blocks: Vec<BlockInfo>,
    /// Where known blocks lie inside larger objects (shared objects, a flushed segment's data
    /// object), by base offset; a block not here is its own object.
    pub chunks: BTreeMap<u64, ChunkLoc>,
}

impl SegView {
    pub fn new(meta: SegmentMeta) -> Self {
        SegView { meta, blocks: Vec::new(), chunks: BTreeMap::new() }
    }
}

impl SegView {
    /// Whether the known blocks cover the segment up to its durable end.
    pub fn complete(&self) -> bool {
        self.blocks.last().map(|b| b.end_offset).unwrap_or(self.meta.base_offset) >= self.meta.end_offset
    }
}

/// Recent durable entries, bounded by bytes.
pub(crate) struct TailCache {
    entries: VecDeque<StoredEntry>,
    bytes: usize,
    cap: usize,
    /// Entries ending after this are kept whatever the cap (QuorumBuffer: acknowledged but not
    /// yet in object storage, so readers can only get them here).
    pin: u64,
}

impl TailCache {
    fn new(cap: usize) -> Self {
        TailCache { entries: VecDeque::new(), bytes: 0, cap, pin: u64::MAX }
    }
    /// Appends an entry. The cache holds one contiguous run: an entry that does not continue it
    /// (a writer of this process took the log over after another process wrote to it) starts a
    /// new run, or a reader in the gap would be handed the entries after it.
    pub fn push(&mut self, e: StoredEntry) {
        if self.entries.back().is_some_and(|last| last.end_offset() != e.offset) {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += e.data.len();
        self.entries.push_back(e);
        self.evict();
    }
    pub fn set_pin(&mut self, pin: u64) {
        self.pin = pin;
        self.evict();
    }
    /// Drops the entries ending at or before `end` (compaction rewrote them: readers get the
    /// compacted ones from storage), never those pinned.
    pub fn forget_until(&mut self, end: u64) {
        while self.entries.front().is_some_and(|f| f.end_offset() <= end && f.end_offset() <= self.pin) {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.data.len();
            }
        }
    }
    fn evict(&mut self) {
        while self.bytes > self.cap && self.entries.len() > 1 && self.entries.front().is_some_and(|f| f.end_offset() <= self.pin) {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.data.len();
            }
        }
    }
    /// Entries ending after `from`, up to `max_bytes` (at least one), if the cache reaches back
    /// to `from`.
    pub fn read(&self, from: u64, max_bytes: usize) -> Option<Vec<StoredEntry>> {
        let first = self.entries.front()?;
        if first.offset > from {
            return None;
        }
        let i = self.entries.partition_point(|e| e.end_offset() <= from);
        if i == self.entries.len() {
            return None;
        }
        let mut out = Vec::new();
        let mut total = 0;
        for e in self.entries.range(i..) {
            if !out.is_empty() && total + e.data.len() > max_bytes {
                break;
            }
            total += e.data.len();
            out.push(e.clone());
        }
        Some(out)
    }
}

/// Recently decoded blocks, by object key.
/// Decoded blocks of one log, bounded by bytes (`block_cache_blocks` full blocks' worth, so
/// many small blocks fit), evicted oldest first: readers catching up read forward.
pub(crate) struct BlockCache {
    blocks: std::collections::HashMap<String, Arc<Vec<StoredEntry>>>,
    order: VecDeque<(String, usize)>,
    bytes: usize,
    cap_bytes: usize,
}

impl BlockCache {
    pub fn new(cap_bytes: usize) -> Self {
        BlockCache { blocks: Default::default(), order: VecDeque::new(), bytes: 0, cap_bytes }
    }
    pub fn get(&mut self, key: &str) -> Option<Arc<Vec<StoredEntry>>> {
        self.blocks.get(key).cloned()
    }
    pub fn contains(&self, key: &str) -> bool {
        self.blocks.contains_key(key)
    }
    pub fn put(&mut self, key: String, v: Arc<Vec<StoredEntry>>) {
        let size = v.iter().map(|e| e.data.len() + 64).sum::<usize>();
        if size > self.cap_bytes || self.blocks.contains_key(&key) {
            return;
        }
        while self.bytes + size > self.cap_bytes {
            let Some((old, n)) = self.order.pop_front() else { break };
            self.blocks.remove(&old);
            self.bytes -= n;
        }
        self.bytes += size;
        self.order.push_back((key.clone(), size));
        self.blocks.insert(key, v);
    }
}

/// One block's fetch in flight: its decoded entries once there.
pub(crate) type Loading = tokio::sync::OnceCell<Arc<Vec<StoredEntry>>>;

pub(crate) struct LogShared {
    pub name: String,
    pub id: u64,
    durable: watch::Sender<u64>,
    start: AtomicU64,
    deleted: AtomicBool,
    /// Set while a writer in this process keeps `durable` and the segments current.
    pub has_writer: AtomicBool,
    pub tail: Mutex<TailCache>,
    pub segs: Mutex<BTreeMap<u64, SegView>>,
    pub block_cache: Mutex<BlockCache>,
    /// Blocks being fetched from storage, by cache key: a demand read and a prefetch of the
    /// same block share one GET.
    pub loads: Mutex<std::collections::HashMap<String, Arc<Loading>>>,
    /// Set while a prefetch of this log runs (one at a time).
    pub prefetching: AtomicBool,
    /// The furthest offset a reader of this process has read up to (prefetch skips below it).
    pub read_mark: AtomicU64,
}

impl LogShared {
    pub fn durable_end(&self) -> u64 {
        *self.durable.borrow()
    }
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }
    pub fn set_durable(&self, end: u64) {
        self.durable.send_if_modified(|d| {
            if end > *d {
                *d = end;
                true
            } else {
                false
            }
        });
    }
    pub fn start_offset(&self) -> u64 {
        self.start.load(Ordering::Acquire)
    }
    pub fn set_start(&self, s: u64) {
        self.start.fetch_max(s, Ordering::AcqRel);
    }
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        // Wake tail readers so they notice.
        self.durable.send_modify(|_| {});
    }
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }
    pub fn tail(&self) -> MutexGuard<'_, TailCache> {
        lock(&self.tail)
    }
    pub fn segs(&self) -> MutexGuard<'_, BTreeMap<u64, SegView>> {
        lock(&self.segs)
    }
    pub fn block_cache(&self) -> MutexGuard<'_, BlockCache> {
        lock(&self.block_cache)
    }

    /// Merges segment metadata read from the store into the known segments.
    pub fn merge_segments(&self, metas: Vec<SegmentMeta>) {
        let mut segs = self.segs();
        let live: std::collections::HashSet<u64> = metas.iter().map(|m| m.base_offset).collect();
        // Segments deleted by the cleaner disappear; empty ones can share a base with the next.
        segs.retain(|b, _| live.contains(b));
        let mut end = 0;
        for m in metas {
            end = end.max(m.end_offset);
            if m.end_offset == m.base_offset && m.state == super::SegmentState::Sealed {
                continue; // an empty sealed segment holds nothing to read
            }
            match segs.get_mut(&m.base_offset) {
                Some(v) if v.meta.id == m.id && (v.meta.layout != m.layout || v.meta.compacted != m.compacted) => {
                    // Rewritten by segment flushing or compaction: the blocks moved, learn them anew.
                    *v = SegView::new(m);
                }
                Some(v) if v.meta.id == m.id => {
                    if m.end_offset >= v.meta.end_offset {
                        v.meta = m;
                    }
                }
                _ => {
                    segs.insert(m.base_offset, SegView::new(m));
                }
            }
        }
        drop(segs);
        self.set_durable(end);
    }

    /// Publishes committed blocks (and where those inside shared objects lie) to readers:
    /// segment view, then the durable end.
    pub fn commit_blocks(&self, seg: &SegmentMeta, blocks: &[BlockInfo], locs: Vec<(u64, ChunkLoc)>) {
        {
            let mut segs = self.segs();
            let v = segs.entry(seg.base_offset).or_insert_with(|| SegView::new(seg.clone()));
            if v.meta.id != seg.id {
                *v = SegView::new(seg.clone());
            }
            let complete = v.complete();
            v.meta = seg.clone();
            if complete {
                v.blocks.extend_from_slice(blocks);
                v.chunks.extend(locs);
            }
        }
        self.set_durable(seg.end_offset);
    }

    /// Replaces a known segment's record with its sealed one.
    pub fn merge_segments_one(&self, sealed: SegmentMeta) {
        let mut segs = self.segs();
        if let Some(v) = segs.get_mut(&sealed.base_offset) {
            if v.meta.id == sealed.id {
                v.meta = sealed;
            }
        }
    }

    /// Re-reads the segments (and start offset) from metadata.
    pub async fn refresh(&self, meta: &dyn MetaStore) -> Result<()> {
        let (lm, _) = read_log_meta(meta, &self.name).await?;
        self.set_start(lm.start_offset);
        let segs = load_segments(meta, &self.name).await?;
        self.merge_segments(segs);
        Ok(())
    }
}

pub(crate) async fn load_segments(meta: &dyn MetaStore, name: &str) -> Result<Vec<SegmentMeta>> {
    let l = meta.list(&keys::segments(name)).await?;
    let mut v: Vec<SegmentMeta> = l.kvs.iter().map(|kv| decode_json(&kv.key, &kv.value)).collect::<Result<_>>()?;
    v.sort_by_key(|s| s.id);
    Ok(v)
}

/// The shared state of a log, loaded from metadata on first use.
///
/// The log's record is read every time: a log deleted and created again under the same name by
/// another process (a topic re-created through another gateway) has a new id, and the state
/// cached for the old one (its offsets, tail cache, objects) must not serve the new one.
pub(crate) async fn get_or_load(wal: &Arc<WalInner>, name: &str) -> Result<Arc<LogShared>> {
    let (lm, _) = read_log_meta(&*wal.meta, name).await?;
    if let Some(sh) = wal.logs.get(name) {
        if !sh.is_deleted() && sh.id == lm.id {
            return Ok(sh.clone());
        }
    }
    let segs = load_segments(&*wal.meta, name).await?;
    let (tx, _) = watch::channel(0);
    let fresh = Arc::new(LogShared {
        name: name.to_string(),
        id: lm.id,
        durable: tx,
        start: AtomicU64::new(lm.start_offset),
        deleted: AtomicBool::new(false),
        has_writer: AtomicBool::new(false),
        tail: Mutex::new(TailCache::new(wal.cfg.tail_cache_bytes)),
        segs: Mutex::new(BTreeMap::new()),
        block_cache: Mutex::new(BlockCache::new(wal.cfg.block_cache_blocks.saturating_mul(wal.cfg.flush_max_bytes))),
        loads: Mutex::new(std::collections::HashMap::new()),
        prefetching: AtomicBool::new(false),
        read_mark: AtomicU64::new(0),
    });
    fresh.merge_segments(segs);
    let entry = wal.logs.entry(name.to_string());
    let sh = match entry {
        dashmap::mapref::entry::Entry::Occupied(mut o) => {
            if o.get().is_deleted() || o.get().id != lm.id {
                o.get().mark_deleted();
                o.insert(fresh.clone());
                fresh
            } else {
                o.get().clone()
            }
        }
        dashmap::mapref::entry::Entry::Vacant(v) => {
            v.insert(fresh.clone());
            fresh
        }
    };
    Ok(sh)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64, count: u32) -> StoredEntry {
        StoredEntry { offset, count, max_timestamp: 0, data: bytes::Bytes::from(vec![1u8; 10]) }
    }

    #[test]
    fn the_tail_cache_never_skips_a_gap() {
        let mut t = TailCache::new(1 << 20);
        t.push(entry(0, 5));
        t.push(entry(5, 5));
        assert_eq!(t.read(3, 100).unwrap().len(), 2);
        // Another process wrote 10..20; this process's new writer continues at 20.
        t.push(entry(20, 5));
        assert!(t.read(12, 100).is_none(), "a read in the gap must go to storage");
        assert!(t.read(3, 100).is_none(), "the old run is gone");
        assert_eq!(t.read(20, 100).unwrap()[0].offset, 20);
    }
}
