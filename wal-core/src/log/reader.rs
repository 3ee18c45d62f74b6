//! Readers: durable entries from any offset. Recent entries come from the tail cache; older ones
//! from object storage (the block found through the segment's block list, then one GET of its
//! object or one range GET inside a shared object or a flushed segment, cached decoded). Tail readers wait on the durable-offset notification, or on a metadata watch when
//! the log's writer lives in another process.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use futures::FutureExt;

use super::recovery::{chunk_info, discover_blocks, load_chunks, load_index};
use super::shared::LogShared;
use super::{keys, ChunkLoc, Layout, SegmentMeta, SegmentState, WalInner};
use crate::entry::StoredEntry;
use crate::error::{Result, StorageError, WalError};
use crate::format::{decode_block, index::find_block, BlockInfo};
use crate::metrics as m;

/// Bytes of blocks a catch-up reader has fetched ahead of its position (at most half the block
/// cache), and the range GETs of one prefetch at once.
const READ_AHEAD_BYTES: u64 = 8 << 20;
const READ_AHEAD_GETS: usize = 4;

/// A block's key in the block cache and in the table of fetches in flight.
fn cache_key(src: &Source) -> String {
    match src {
        Source::Object(k) => k.clone(),
        Source::Chunk(l) => format!("{}@{}", l.object, l.pos),
    }
}

/// Where a block's bytes are.
pub(crate) enum Source {
    /// Its own object.
    Object(String),
    /// A byte range of a larger object.
    Chunk(ChunkLoc),
}

/// A reader of one log. Cheap to clone.
#[derive(Clone)]
pub struct LogReader {
    wal: Arc<WalInner>,
    sh: Arc<LogShared>,
}

impl LogReader {
    pub(crate) fn new(wal: Arc<WalInner>, sh: Arc<LogShared>) -> Self {
        LogReader { wal, sh }
    }

    pub fn start_offset(&self) -> u64 {
        self.sh.start_offset()
    }

    /// The log's id: unique per incarnation (a log deleted and created again gets a new one).
    pub fn log_id(&self) -> u64 {
        self.sh.id
    }

    /// The durable end as this process knows it (see [`LogReader::refresh`]).
    pub fn durable_end(&self) -> u64 {
        self.sh.durable_end()
    }

    /// Re-reads the log's metadata (needed only when the writer lives in another process).
    pub async fn refresh(&self) -> Result<()> {
        self.sh.refresh(&*self.wal.meta).await
    }

    fn check(&self, from: u64) -> Result<u64> {
        if self.sh.is_deleted() {
            return Err(WalError::LogNotFound(self.sh.name.clone()));
        }
        let (start, end) = (self.sh.start_offset(), self.sh.durable_end());
        if from < start || from > end {
            return Err(WalError::OffsetOutOfRange { offset: from, start, end });
        }
        Ok(end)
    }

    /// Entries that end after `from`, in order, up to about `max_bytes` (always at least one entry
    /// when `from` is below the durable end; none when it equals the end).
    pub async fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<StoredEntry>> {
        let end = self.check(from)?;
        if from == end {
            return Ok(Vec::new());
        }
        if let Some(v) = self.sh.tail().read(from, max_bytes) {
            metrics::counter!(m::READ_BYTES_TOTAL, "source" => "cache").increment(v.iter().map(|e| e.data.len() as u64).sum());
            return Ok(v);
        }
        let mut out: Vec<StoredEntry> = Vec::new();
        let mut total = 0usize;
        let mut pos = from;
        'blocks: while pos < end && (out.is_empty() || total < max_bytes) {
            if pos > from {
                // Caught up with the tail cache (in QuorumBuffer mode, entries not yet stored are
                // only there): continue from it.
                if let Some(v) = self.sh.tail().read(pos, max_bytes.saturating_sub(total).max(1)) {
                    out.extend(v.into_iter().filter(|e| e.end_offset() > pos));
                    break 'blocks;
                }
            }
            let (entries, info) = self.load_located(pos).await?;
            // (at every block: a read larger than one prefetch continues into blocks no
            // prefetch has covered; a prefetch already running makes this a no-op)
            self.prefetch_after(info.end_offset, end);
            for e in entries.iter().filter(|e| e.end_offset() > pos) {
                if !out.is_empty() && total + e.data.len() > max_bytes {
                    break 'blocks;
                }
                total += e.data.len();
                out.push(e.clone());
            }
            pos = info.end_offset;
        }
        metrics::counter!(m::READ_BYTES_TOTAL, "source" => "storage").increment(total as u64);
        if let Some(e) = out.last() {
            self.sh.read_mark.fetch_max(e.end_offset(), Ordering::AcqRel);
        }
        Ok(out)
    }

    /// Finds the block holding `pos`, loading block lists (index objects, chunk records or
    /// listings) as needed.
    async fn locate(&self, pos: u64) -> Result<(Source, BlockInfo)> {
        for attempt in 0..3 {
            let seg = {
                let segs = self.sh.segs();
                match segs.range(..=pos).next_back() {
                    Some((_, v)) if pos < v.meta.end_offset => {
                        if let Some(i) = find_block(&v.blocks, pos) {
                            let b = v.blocks[i];
                            let src = match v.chunks.get(&b.base_offset) {
                                Some(loc) => Source::Chunk(loc.clone()),
                                None => Source::Object(keys::block(self.sh.id, v.meta.id, v.meta.epoch, b.base_offset, b.end_offset)),
                            };
                            return Ok((src, b));
                        }
                        Some(v.meta.clone())
                    }
                    _ => None,
                }
            };
            match seg {
                Some(meta) => {
                    let (blocks, chunks) = self.block_list(&meta).await?;
                    let mut segs = self.sh.segs();
                    if let Some(v) = segs.get_mut(&meta.base_offset) {
                        if v.meta.id == meta.id && blocks.last().map(|b| b.end_offset) >= v.blocks.last().map(|b| b.end_offset) {
                            v.blocks = blocks;
                            v.chunks = chunks;
                        }
                    }
                }
                None if attempt == 0 => self.refresh().await?,
                None => break,
            }
        }
        Err(WalError::OffsetOutOfRange { offset: pos, start: self.sh.start_offset(), end: self.sh.durable_end() })
    }

    /// A segment's blocks, and where those inside larger objects lie.
    async fn block_list(&self, meta: &SegmentMeta) -> Result<(Vec<BlockInfo>, BTreeMap<u64, ChunkLoc>)> {
        let store = &*self.wal.store;
        Ok(match (meta.layout, meta.state) {
            (Layout::Chunks, _) => {
                let refs = load_chunks(&*self.wal.meta, self.sh.id, Some(&self.sh.name), meta).await?;
                (refs.iter().map(chunk_info).collect(), refs.into_iter().map(|r| (r.base_offset, r.loc)).collect())
            }
            (Layout::Flushed, _) => {
                let blocks = load_index(store, self.sh.id, meta).await?;
                let data = meta.data_key(self.sh.id);
                let mut pos = 0u64;
                let mut chunks = BTreeMap::new();
                for b in &blocks {
                    chunks.insert(b.base_offset, ChunkLoc { object: data.clone(), pos, len: b.size });
                    pos += b.size as u64;
                }
                (blocks, chunks)
            }
            (Layout::Blocks, SegmentState::Sealed) => (load_index(store, self.sh.id, meta).await?, BTreeMap::new()),
            (Layout::Blocks, SegmentState::Active) => (discover_blocks(store, self.sh.id, meta, false).await?, BTreeMap::new()),
        })
    }

    /// Catch-up readers: loads about [`READ_AHEAD_BYTES`] of stored blocks after `from` into
    /// the block cache, in the background, across segment ends, fetching consecutive blocks of
    /// one object (a shared object's chunks of this log, a flushed segment's data) in one range
    /// GET, so a sequential reader's next reads find them fetched or in flight. One prefetch
    /// per log at a time, never of a block a reader of this process has already read past.
    fn prefetch_after(&self, from: u64, end: u64) {
        if self.wal.cfg.block_cache_blocks == 0 || from >= end || self.sh.prefetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let budget = READ_AHEAD_BYTES.min(me.wal.cfg.block_cache_blocks.saturating_mul(me.wal.cfg.flush_max_bytes) as u64 / 2);
            let (mut pos, mut bytes) = (from, 0u64);
            let mut runs: Vec<Vec<Source>> = Vec::new();
            while bytes < budget && pos < end {
                // (what the tail cache holds needs no GET)
                if me.sh.tail().read(pos, 1).is_some() {
                    break;
                }
                let Ok((src, info)) = me.locate(pos).await else { break };
                pos = info.end_offset;
                let key = cache_key(&src);
                let have = me.sh.block_cache().contains(&key) || crate::util::lock(&me.sh.loads).contains_key(&key);
                if have || info.end_offset <= me.sh.read_mark.load(Ordering::Acquire) {
                    continue;
                }
                bytes += info.size as u64;
                match (runs.last_mut().and_then(|r| r.last()), &src) {
                    (Some(Source::Chunk(a)), Source::Chunk(b)) if a.object == b.object && a.pos + a.len as u64 == b.pos => {
                        runs.last_mut().expect("a run").push(src)
                    }
                    _ => runs.push(vec![src]),
                }
            }
            // Every block's fetch is registered at once (a demand read of a block further on
            // waits for its run rather than fetching it again); the GETs run a few at a time.
            let gets = Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_GETS));
            futures::future::join_all(runs.into_iter().map(|run| me.fetch_run(run, gets.clone()))).await;
            me.sh.prefetching.store(false, Ordering::Release);
        });
    }

    /// Loads consecutive blocks of one object with one range GET (a demand read of any of
    /// them meanwhile waits for it).
    async fn fetch_run(&self, run: Vec<Source>, gets: Arc<tokio::sync::Semaphore>) {
        let (object, start, len) = match (run.first(), run.last()) {
            (Some(Source::Chunk(a)), Some(Source::Chunk(b))) if run.len() > 1 => (a.object.clone(), a.pos, b.pos + b.len as u64 - a.pos),
            _ => {
                let loads = run.iter().map(|src| {
                    self.load_cached(cache_key(src), || async {
                        let _get = gets.acquire().await;
                        self.fetch_block(src).await
                    })
                });
                let done = futures::future::join_all(loads).await;
                metrics::counter!(m::PREFETCHED_BLOCKS_TOTAL).increment(done.iter().filter(|r| r.is_ok()).count() as u64);
                return;
            }
        };
        let (store, key, name) = (self.wal.store.clone(), object.clone(), self.sh.name.clone());
        let fetched = async move {
            let _get = gets.acquire().await;
            metrics::counter!(m::LOG_STORAGE_READS_TOTAL, "log" => name).increment(1);
            store.get_range(&key, start..start + len).await.map_err(|e| e.to_string())
        }
        .boxed()
        .shared();
        let loads = run.iter().map(|src| {
            let Source::Chunk(l) = src else { unreachable!("a run holds chunks") };
            let part = (l.pos - start) as usize..(l.pos - start) as usize + l.len as usize;
            let (fetched, object) = (fetched.clone(), object.clone());
            self.load_cached(cache_key(src), move || async move {
                let data = fetched.await.map_err(|message| WalError::Storage(StorageError::Transient { op: "get", message }))?;
                let block = data.get(part.clone()).map(|_| data.slice(part)).ok_or_else(|| WalError::Format {
                    key: object.clone(),
                    source: crate::error::FormatError::Truncated { need: len as usize, have: data.len() },
                })?;
                let (_, entries) = decode_block(&block).map_err(|source| WalError::Format { key: object, source })?;
                Ok(Arc::new(entries))
            })
        });
        let done = futures::future::join_all(loads).await;
        metrics::counter!(m::PREFETCHED_BLOCKS_TOTAL).increment(done.iter().filter(|r| r.is_ok()).count() as u64);
    }

    /// A segment's blocks in order, each with where its bytes are (for compaction, which reads
    /// every block once and keeps none in the block cache).
    pub(crate) async fn segment_blocks(&self, meta: &SegmentMeta) -> Result<Vec<(BlockInfo, Source)>> {
        let (blocks, chunks) = self.block_list(meta).await?;
        Ok(blocks
            .into_iter()
            .map(|b| {
                let src = match chunks.get(&b.base_offset) {
                    Some(loc) => Source::Chunk(loc.clone()),
                    None => Source::Object(keys::block(self.sh.id, meta.id, meta.epoch, b.base_offset, b.end_offset)),
                };
                (b, src)
            })
            .collect())
    }

    /// One block's entries, fetched now (not cached).
    pub(crate) async fn fetch_uncached(&self, src: &Source) -> Result<Arc<Vec<StoredEntry>>> {
        self.fetch_block(src).await
    }

    /// A block's entries: from the block cache, from a fetch already in flight, or fetched now.
    async fn load_block(&self, src: &Source) -> Result<Arc<Vec<StoredEntry>>> {
        self.load_cached(cache_key(src), || self.fetch_block(src)).await
    }

    /// The cached entries under `key`, or those of a fetch in flight, or `fetch`'s (then cached).
    async fn load_cached<F, Fut>(&self, key: String, fetch: F) -> Result<Arc<Vec<StoredEntry>>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Arc<Vec<StoredEntry>>>>,
    {
        let cell = {
            // (the cache is checked under the loads lock: a fetch puts its block in the cache
            // before it leaves the loads, so a block is never fetched twice at once)
            let mut loads = crate::util::lock(&self.sh.loads);
            if let Some(v) = self.sh.block_cache().get(&key) {
                return Ok(v);
            }
            loads.entry(key.clone()).or_default().clone()
        };
        let r = cell
            .get_or_try_init(|| async {
                let v = fetch().await?;
                self.sh.block_cache().put(key.clone(), v.clone());
                Ok(v)
            })
            .await
            .cloned();
        let mut loads = crate::util::lock(&self.sh.loads);
        if loads.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            loads.remove(&key);
        }
        r
    }

    async fn fetch_block(&self, src: &Source) -> Result<Arc<Vec<StoredEntry>>> {
        metrics::counter!(m::LOG_STORAGE_READS_TOTAL, "log" => self.sh.name.clone()).increment(1);
        let (key, data) = match src {
            Source::Object(k) => (k.as_str(), self.wal.store.get(k).await?),
            Source::Chunk(l) => (l.object.as_str(), self.wal.store.get_range(&l.object, l.pos..l.pos + l.len as u64).await?),
        };
        let (_, entries) = decode_block(&data).map_err(|source| WalError::Format { key: key.to_string(), source })?;
        Ok(Arc::new(entries))
    }

    /// [`LogReader::load_block`], learning the block's place anew once if it moved (segment
    /// flushing or compaction rewrote its segment and the object it was in is gone).
    async fn load_located(&self, pos: u64) -> Result<(Arc<Vec<StoredEntry>>, BlockInfo)> {
        let (src, info) = self.locate(pos).await?;
        match self.load_block(&src).await {
            Err(WalError::Storage(StorageError::NotFound(_))) => {
                self.refresh().await?;
                let (src, info) = self.locate(pos).await?;
                Ok((self.load_block(&src).await?, info))
            }
            r => Ok((r?, info)),
        }
    }

    /// Waits until the durable end passes `offset` or `timeout` elapses; returns whether it did.
    pub async fn wait_for(&self, offset: u64, timeout: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        if self.sh.durable_end() > offset {
            return Ok(true);
        }
        if self.sh.has_writer.load(Ordering::Acquire) {
            let mut rx = self.sh.subscribe();
            loop {
                if *rx.borrow_and_update() > offset {
                    return Ok(true);
                }
                if self.sh.is_deleted() {
                    return Err(WalError::LogNotFound(self.sh.name.clone()));
                }
                if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                    return Ok(self.sh.durable_end() > offset);
                }
            }
        }
        // The writer is elsewhere: watch its segment metadata.
        let listing = self.wal.meta.list(&keys::segments(&self.sh.name)).await?;
        let mut watch = self.wal.meta.watch(&keys::segments(&self.sh.name), listing.revision).await?;
        self.refresh().await?;
        loop {
            if self.sh.durable_end() > offset {
                return Ok(true);
            }
            match tokio::time::timeout_at(deadline, watch.recv()).await {
                Err(_) => return Ok(false),
                Ok(None) | Ok(Some(Err(_))) => {
                    // The watch broke: fall back to one refresh and report what it shows.
                    self.refresh().await?;
                    return Ok(self.sh.durable_end() > offset);
                }
                Ok(Some(Ok(_))) => self.refresh().await?,
            }
        }
    }

    /// The first entry with a timestamp at or after `ts`: its offset and max timestamp.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(u64, i64)>> {
        let start = self.sh.start_offset();
        let e = self.first_entry_where(|seg_max| seg_max >= ts, |e| e.max_timestamp >= ts).await?;
        Ok(e.map(|e| (e.offset.max(start), e.max_timestamp)))
    }

    /// The first entry holding the log's largest timestamp: its offset and that timestamp.
    pub async fn max_timestamp_entry(&self) -> Result<Option<(u64, i64)>> {
        let start = self.sh.start_offset();
        Ok(self.max_timestamp_stored_entry().await?.map(|e| (e.offset.max(start), e.max_timestamp)))
    }

    /// The first entry holding the log's largest timestamp, whole.
    pub async fn max_timestamp_stored_entry(&self) -> Result<Option<StoredEntry>> {
        let start = self.sh.start_offset();
        let best = self.sh.segs().values().filter(|v| v.meta.end_offset > start).map(|v| v.meta.max_timestamp).max();
        match best {
            Some(ts) if ts >= 0 => self.first_entry_where(|seg_max| seg_max >= ts, |e| e.max_timestamp >= ts).await,
            _ => Ok(None),
        }
    }

    /// Walks segments and blocks whose max timestamp passes `seg_ok`, then their entries,
    /// returning the first entry (ending past the start offset) that `hit` accepts: a caller
    /// that looks inside entries (records of a Kafka batch) refines a timestamp lookup with it.
    pub async fn first_entry_where(&self, seg_ok: impl Fn(i64) -> bool, hit: impl Fn(&StoredEntry) -> bool) -> Result<Option<StoredEntry>> {
        let start = self.sh.start_offset();
        let segs: Vec<super::SegmentMeta> = self.sh.segs().values().map(|v| v.meta.clone()).collect();
        for seg in segs.into_iter().filter(|s| s.end_offset > start) {
            if seg.state == SegmentState::Sealed && !seg_ok(seg.max_timestamp) {
                continue;
            }
            let mut pos = seg.base_offset.max(start);
            while pos < seg.end_offset {
                let (src, info) = self.locate(pos).await?;
                if seg_ok(info.max_timestamp) {
                    let entries = self.load_block(&src).await?;
                    if let Some(e) = entries.iter().find(|e| e.end_offset() > start && hit(e)) {
                        return Ok(Some(e.clone()));
                    }
                }
                pos = info.end_offset;
            }
        }
        Ok(None)
    }
}
