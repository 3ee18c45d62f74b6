//! The single writer of a log, in MemoryBuffer mode.
//!
//! `submit` assigns offsets at once (`written`) and queues the entry in a bounded buffer
//! (backpressure by bytes). A flusher task cuts the buffer into blocks and uploads them with
//! put-if-absent, up to `max_inflight_uploads` at a time, retrying with backoff. Cutting is group
//! commit: while fewer than half the upload slots are busy, waiting data is cut into a block at
//! once; beyond that, when the buffer reaches `flush_max_bytes`, when the oldest entry reaches
//! `flush_max_age_ms`, or on `flush` (and never past the in-flight bound). Completed
//! uploads are committed to metadata strictly in offset order (one transaction covering every
//! finished block, compared against this writer's epoch); only then are their appends
//! acknowledged and `durable` advanced.
//!
//! A block whose upload fails permanently fails its appends and every later pending append with a
//! retriable error, resets `written` to `durable` and rolls to a new segment: no hole, no reuse.
//! A failed epoch comparison means a newer writer exists: everything pending fails with
//! [`WalError::Fenced`] and the writer stops.
//!
//! In QuorumBuffer mode the same pipeline replicates each block to the segment's LogStore
//! replicas instead of uploading it: a block is acknowledged (and `durable` advanced) once
//! `ack_quorum` replicas hold it, and kept (tail cache pinned, buffer space held) until the
//! replicas report it stored; then its segment metadata is committed as above. Segments roll
//! only with an empty pipeline, and the roll's transaction records where the old segment ends
//! and which nodes hold the new one, before any block is sent to them (see `quorum`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::quorum::{self, QuorumSeg, ReplicateError};
use super::recovery::{seal_abandoned, write_index};
use super::shared::{load_segments, LogShared, SegView};
use super::{json, keys, SegmentMeta, SegmentState, WalInner};
use crate::entry::{AppendAck, Entry, StoredEntry};
use crate::error::{Result, SharedFailure, StorageError, WalError};
use crate::format::{encode_block, BlockInfo};
use crate::logstore::proto::SegKey;
use crate::logstore::Replication;
use crate::meta::{Compare, Op, Txn};
use crate::metrics as m;

/// The writer of one log. Cheap to clone; all clones share one flusher.
#[derive(Clone)]
pub struct LogWriter {
    inner: Arc<WriterInner>,
}

/// An accepted append: its offsets are assigned; await [`AppendTicket::durable`] for the ack.
pub struct AppendTicket {
    pub base_offset: u64,
    pub end_offset: u64,
    rx: oneshot::Receiver<Result<AppendAck>>,
}

impl AppendTicket {
    /// Resolves once the entry is durable (or failed; then nothing of it is readable).
    pub async fn durable(self) -> Result<AppendAck> {
        self.rx.await.unwrap_or(Err(WalError::Closed))
    }
}

struct Pending {
    entry: StoredEntry,
    ack: Option<oneshot::Sender<Result<AppendAck>>>,
    _permit: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
    at: Instant,
}

struct WState {
    /// Next offset to assign (`written`).
    next_offset: u64,
    buffer: VecDeque<Pending>,
    buffer_bytes: usize,
    failure: Option<SharedFailure>,
    flush_requested: bool,
    closing: bool,
    /// Bumped whenever pending appends are failed and `written` resets to `durable`.
    resets: u64,
}

struct WriterInner {
    wal: Arc<WalInner>,
    shared: Arc<LogShared>,
    name: String,
    log_id: u64,
    epoch: u64,
    epoch_rev: i64,
    state: Mutex<WState>,
    wake: Notify,
    space: Arc<Semaphore>,
    segment_max_bytes: u64,
    segment_max_age: Duration,
    task: Mutex<Option<JoinHandle<()>>>,
    /// QuorumBuffer mode.
    rep: Option<Arc<Replication>>,
}

/// Where new blocks go, and what is committed.
struct SegCursor {
    /// The committed state of the segment blocks are committed into.
    committed: SegmentMeta,
    committed_blocks: Vec<BlockInfo>,
    /// The segment new blocks are cut into, and its size so far.
    cut_id: u64,
    cut_bytes: u64,
    cut_blocks: u32,
    cut_since: Instant,
    roll_next: bool,
    /// QuorumBuffer: the segment blocks are cut into, the segments with blocks not yet stored,
    /// the metadata written when a segment was created, blocks acknowledged but not yet stored,
    /// and whether the committed segment's (empty) record was deleted at a roll.
    qseg: Option<Arc<QuorumSeg>>,
    qsegs: HashMap<u64, Arc<QuorumSeg>>,
    templates: HashMap<u64, SegmentMeta>,
    unflushed: VecDeque<InFlight>,
    committed_deleted: bool,
}

struct InFlight {
    seg_id: u64,
    info: BlockInfo,
    entries: Vec<Pending>,
    upload: JoinHandle<std::result::Result<(), UploadError>>,
}

#[derive(Debug)]
enum UploadError {
    Conflict(String),
    Failed(StorageError),
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::Conflict(k) => write!(f, "another object exists at {k}"),
            UploadError::Failed(e) => write!(f, "{e}"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Per-writer overrides of the WAL configuration (Kafka's per-topic segment settings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterOptions {
    pub segment_max_bytes: Option<u64>,
    pub segment_max_age_ms: Option<u64>,
}

pub(crate) async fn open(wal: Arc<WalInner>, name: &str, opts: WriterOptions) -> Result<LogWriter> {
    let shared = super::shared::get_or_load(&wal, name).await?;
    let meta = &*wal.meta;
    // 1. Take the next epoch: from here on, every commit of an older writer fails.
    let (epoch, epoch_rev) = loop {
        let cur = meta.get(&keys::epoch(name)).await?;
        let (rev, last) = match &cur {
            Some(kv) => (kv.mod_revision, std::str::from_utf8(&kv.value).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)),
            None => (0, 0),
        };
        let r = meta
            .txn(
                Txn::new()
                    .when(Compare::ModRevision(keys::epoch(name), rev))
                    .when(Compare::ModRevision(keys::log(name), shared_log_rev(&wal, name).await?))
                    .then(Op::put(keys::epoch(name), (last + 1).to_string())),
            )
            .await?;
        if r.succeeded {
            break (last + 1, r.revision);
        }
    };
    // 2. Seal what the previous writer left, at its durable end, and start a new segment there.
    let segs = load_segments(meta, name).await?;
    let mut txn = Txn::new().when(Compare::ModRevision(keys::epoch(name), epoch_rev));
    // Every segment left active is sealed in order; a QuorumBuffer segment is recovered from its
    // replicas. A segment that would start past the recovered end (its predecessor lost data
    // that only replicas held) is dropped, so the log never has a hole.
    let mut end: Option<u64> = None;
    let mut next_id = 0;
    for seg in &segs {
        next_id = seg.id + 1;
        if end.is_some_and(|e| seg.base_offset > e) {
            tracing::warn!(log = name, segment = seg.id, "dropping a segment that starts past the recovered end");
            txn = txn.then(Op::Delete(keys::segment(name, seg.id)));
            continue;
        }
        let done = match seg.state {
            SegmentState::Sealed => seg.clone(),
            SegmentState::Active if seg.replicas.is_empty() => seal_abandoned(&*wal.store, shared.id, seg).await?.0,
            SegmentState::Active => quorum::recover(&wal, shared.id, seg, epoch).await?,
        };
        if done != *seg {
            txn = txn.then(Op::put(keys::segment(name, seg.id), json(&done)));
        }
        end = Some(done.end_offset);
    }
    let base = end.unwrap_or(0);
    let seg = SegmentMeta::active(next_id, epoch, base);
    txn = txn.then(Op::put(keys::segment(name, next_id), json(&seg)));
    if !meta.txn(txn).await?.succeeded {
        return Err(WalError::Fenced { log: name.to_string(), epoch });
    }
    shared.refresh(meta).await?;
    shared.has_writer.store(true, Ordering::Release);
    tracing::info!(log = name, epoch, segment = next_id, offset = base, "opened writer");

    let log_id = shared.id;
    let wal_rep = wal.replication.clone();
    let segment_max_bytes = opts.segment_max_bytes.unwrap_or(wal.cfg.segment_max_bytes).max(1);
    let segment_max_age = Duration::from_millis(opts.segment_max_age_ms.unwrap_or(wal.cfg.segment_max_age_ms).max(1));
    let inner = Arc::new(WriterInner {
        space: Arc::new(Semaphore::new(wal.cfg.max_buffered_bytes)),
        wal,
        shared,
        name: name.to_string(),
        log_id,
        epoch,
        epoch_rev,
        state: Mutex::new(WState {
            next_offset: base,
            buffer: VecDeque::new(),
            buffer_bytes: 0,
            failure: None,
            flush_requested: false,
            closing: false,
            resets: 0,
        }),
        wake: Notify::new(),
        task: Mutex::new(None),
        segment_max_bytes,
        segment_max_age,
        rep: wal_rep,
    });
    let cursor = SegCursor {
        cut_id: seg.id,
        committed: seg,
        committed_blocks: Vec::new(),
        cut_bytes: 0,
        cut_blocks: 0,
        cut_since: Instant::now(),
        roll_next: false,
        qseg: None,
        qsegs: HashMap::new(),
        templates: HashMap::new(),
        unflushed: VecDeque::new(),
        committed_deleted: false,
    };
    let task = tokio::spawn(run(inner.clone(), cursor));
    *lock(&inner.task) = Some(task);
    Ok(LogWriter { inner })
}

async fn shared_log_rev(wal: &WalInner, name: &str) -> Result<i64> {
    Ok(super::read_log_meta(&*wal.meta, name).await?.1)
}

impl LogWriter {
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }
    /// The next offset to be assigned.
    pub fn written(&self) -> u64 {
        lock(&self.inner.state).next_offset
    }
    /// Every offset below this is durable.
    pub fn durable(&self) -> u64 {
        self.inner.shared.durable_end()
    }
    /// The error every further append gets, if the writer stopped (fenced, failed, closed).
    pub fn failure(&self) -> Option<WalError> {
        lock(&self.inner.state).failure.as_ref().map(|f| f.to_error())
    }

    /// Appends an entry and waits until it is durable.
    pub async fn append(&self, entry: Entry) -> Result<AppendAck> {
        self.submit(entry).await?.durable().await
    }

    /// Accepts an entry (waiting for buffer space) and assigns its offsets.
    pub async fn submit(&self, entry: Entry) -> Result<AppendTicket> {
        let Entry { count, max_timestamp, data } = entry;
        self.submit_inner(count, max_timestamp, data.len(), move |_| data).await
    }

    /// Like [`LogWriter::submit`], but `patch` sees the assigned base offset and may rewrite the
    /// bytes before they are buffered (the gateway writes the Kafka base offset this way).
    pub async fn submit_patched(
        &self,
        count: u32,
        max_timestamp: i64,
        mut data: BytesMut,
        patch: impl FnOnce(&mut [u8], u64),
    ) -> Result<AppendTicket> {
        let len = data.len();
        self.submit_inner(count, max_timestamp, len, move |base| {
            patch(&mut data, base);
            data.freeze()
        })
        .await
    }

    async fn submit_inner(&self, count: u32, max_timestamp: i64, len: usize, finish: impl FnOnce(u64) -> Bytes) -> Result<AppendTicket> {
        let w = &self.inner;
        if count == 0 {
            return Err(WalError::InvalidArgument("an entry holds at least one record".into()));
        }
        if len > w.wal.cfg.max_entry_bytes {
            return Err(WalError::InvalidArgument(format!("entry of {len} bytes exceeds max_entry_bytes")));
        }
        if let Some(f) = &lock(&w.state).failure {
            return Err(f.to_error());
        }
        let permits = len.max(1) as u32;
        let permit = w.space.clone().acquire_many_owned(permits).await.map_err(|_| WalError::Closed)?;
        let global = w.wal.buffer_space.clone().acquire_many_owned(permits).await.map_err(|_| WalError::Closed)?;
        let (tx, rx) = oneshot::channel();
        let mut st = lock(&w.state);
        if let Some(f) = &st.failure {
            return Err(f.to_error());
        }
        let base = st.next_offset;
        st.next_offset += count as u64;
        let data = finish(base);
        st.buffer_bytes += data.len();
        st.buffer.push_back(Pending {
            entry: StoredEntry { offset: base, count, max_timestamp, data },
            ack: Some(tx),
            _permit: permit,
            _global: global,
            at: Instant::now(),
        });
        drop(st);
        metrics::gauge!(m::BUFFER_BYTES).increment(len as f64);
        metrics::counter!(m::APPEND_ENTRIES_TOTAL).increment(1);
        metrics::counter!(m::APPEND_BYTES_TOTAL).increment(len as u64);
        w.wake.notify_one();
        Ok(AppendTicket { base_offset: base, end_offset: base + count as u64, rx })
    }

    /// Uploads everything accepted so far and waits until it is durable.
    pub async fn flush(&self) -> Result<()> {
        let w = &self.inner;
        let mut durable = w.shared.subscribe();
        let (target, resets) = {
            let mut st = lock(&w.state);
            if let Some(f) = &st.failure {
                return Err(f.to_error());
            }
            st.flush_requested = true;
            (st.next_offset, st.resets)
        };
        w.wake.notify_one();
        loop {
            if *durable.borrow_and_update() >= target {
                return Ok(());
            }
            {
                let st = lock(&w.state);
                if let Some(f) = &st.failure {
                    return Err(f.to_error());
                }
                if st.resets != resets {
                    return Err(WalError::AppendFailed("pending appends failed during flush".into()));
                }
            }
            // Woken by durability progress, or checked again at least every 100 ms for failures.
            let _ = tokio::time::timeout(Duration::from_millis(100), durable.changed()).await;
        }
    }

    /// Flushes, seals the active segment and stops the writer.
    pub async fn close(&self) -> Result<()> {
        let flushed = self.flush().await;
        lock(&self.inner.state).closing = true;
        self.inner.wake.notify_one();
        let task = lock(&self.inner.task).take();
        if let Some(t) = task {
            let _ = t.await;
        }
        self.inner.shared.has_writer.store(false, Ordering::Release);
        flushed
    }

    /// Stops the flusher at once without flushing (tests use it to simulate a crash).
    pub fn abort(&self) {
        if let Some(t) = lock(&self.inner.task).take() {
            t.abort();
        }
        self.inner.fail_all(SharedFailure::WriterFailed("writer aborted".into()), &mut VecDeque::new(), true);
        self.inner.shared.has_writer.store(false, Ordering::Release);
    }
}

impl WriterInner {
    fn backoff(&self, attempt: u32) -> Duration {
        let ms = self.wal.cfg.retry_backoff_ms.saturating_mul(1 << attempt.min(16)).min(self.wal.cfg.retry_backoff_max_ms);
        Duration::from_millis(ms)
    }

    /// Cuts the next block if the policy says so.
    fn maybe_cut(self: &Arc<Self>, cur: &mut SegCursor, inflight: usize) -> Option<InFlight> {
        let cfg = &self.wal.cfg;
        if self.rep.is_some() && cur.qseg.is_none() {
            return None; // QuorumBuffer: no replica set yet (the run loop rolls first)
        }
        let mut st = lock(&self.state);
        let front = st.buffer.front()?;
        let aged = front.at.elapsed() >= Duration::from_millis(cfg.flush_max_age_ms);
        // Group commit: while fewer than half the upload slots are busy, waiting data is
        // uploaded at once (a lightly loaded log acknowledges in about one PUT). Beyond that,
        // data accumulates until a block is full (`flush_max_bytes`) or its oldest entry is
        // `flush_max_age_ms` old, so a loaded log batches into large blocks.
        let eager = inflight < cfg.max_inflight_uploads.div_ceil(2);
        if !(eager || st.buffer_bytes >= cfg.flush_max_bytes || aged || st.flush_requested || st.closing) {
            return None;
        }
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        while let Some(p) = st.buffer.front() {
            if !entries.is_empty() && bytes + p.entry.data.len() > cfg.flush_max_bytes {
                break;
            }
            bytes += p.entry.data.len();
            entries.push(st.buffer.pop_front().expect("front exists"));
        }
        st.buffer_bytes -= bytes;
        if st.buffer.is_empty() {
            st.flush_requested = false;
        }
        drop(st);
        // Roll the segment the block goes to? (QuorumBuffer rolls before cutting, in `roll_quorum`.)
        let age = cur.cut_since.elapsed() >= self.segment_max_age;
        if self.rep.is_none()
            && (cur.roll_next
                || (cur.cut_blocks > 0
                    && (cur.cut_bytes + bytes as u64 > self.segment_max_bytes || cur.cut_blocks >= cfg.segment_max_blocks || age)))
        {
            cur.cut_id += 1;
            cur.cut_bytes = 0;
            cur.cut_blocks = 0;
            cur.cut_since = Instant::now();
            cur.roll_next = false;
        }
        let stored: Vec<StoredEntry> = entries.iter().map(|p| p.entry.clone()).collect();
        let data = encode_block(self.log_id, cur.cut_id, self.epoch, &stored);
        let info = BlockInfo {
            base_offset: stored[0].offset,
            end_offset: stored.last().expect("non-empty").end_offset(),
            max_timestamp: stored.iter().map(|e| e.max_timestamp).max().unwrap_or(-1),
            size: data.len() as u32,
        };
        cur.cut_bytes += data.len() as u64;
        cur.cut_blocks += 1;
        let key = keys::block(self.log_id, cur.cut_id, self.epoch, info.base_offset, info.end_offset);
        metrics::counter!(m::FLUSH_TOTAL).increment(1);
        metrics::histogram!(m::FLUSH_BYTES).record(data.len() as f64);
        metrics::gauge!(m::UPLOADS_INFLIGHT).increment(1.0);
        if let (Some(rep), Some(qs)) = (&self.rep, &cur.qseg) {
            let timeout = Duration::from_millis(cfg.quorum.replica_timeout_ms);
            let replicated = qs.replicate(rep, timeout, info.base_offset, info.end_offset, data);
            let upload = tokio::spawn(async move {
                let r = replicated.await.map_err(|e| match e {
                    ReplicateError::Fenced(m) => UploadError::Conflict(m),
                    ReplicateError::NoQuorum(message) => UploadError::Failed(StorageError::Transient { op: "replicate", message }),
                });
                metrics::gauge!(m::UPLOADS_INFLIGHT).decrement(1.0);
                r
            });
            return Some(InFlight { seg_id: cur.cut_id, info, entries, upload });
        }
        let me = self.clone();
        let upload = tokio::spawn(async move {
            let r = me.upload(&key, data).await;
            metrics::gauge!(m::UPLOADS_INFLIGHT).decrement(1.0);
            r
        });
        Some(InFlight { seg_id: cur.cut_id, info, entries, upload })
    }

    async fn upload(&self, key: &str, data: Bytes) -> std::result::Result<(), UploadError> {
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
                Err(StorageError::AlreadyExists(_)) => {
                    // Our earlier attempt may have landed with its answer lost: it is ours only if
                    // the bytes are identical.
                    match self.wal.store.get(key).await {
                        Ok(existing) if existing == data => return Ok(()),
                        Ok(_) => return Err(UploadError::Conflict(key.to_string())),
                        Err(e) => last = Some(e),
                    }
                }
                Err(e) if e.is_retriable() => last = Some(e),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
            metrics::counter!(m::UPLOAD_ERRORS_TOTAL).increment(1);
        }
        Err(UploadError::Failed(last.unwrap_or(StorageError::Transient { op: "put", message: "no attempt made".into() })))
    }

    /// Commits finished blocks (in order) to metadata; returns the error to fail with, if any.
    async fn commit(&self, cur: &mut SegCursor, done: &[InFlight], publish: bool) -> std::result::Result<(), SharedFailure> {
        let started = Instant::now();
        let mut i = 0;
        while i < done.len() {
            let seg_id = done[i].seg_id;
            let mut txn = Txn::new().when(Compare::ModRevision(keys::epoch(&self.name), self.epoch_rev));
            let mut next = if seg_id != cur.committed.id {
                // The first block of a new segment: seal the current one in the same transaction.
                if !cur.committed_deleted {
                    let sealed = write_index(&*self.wal.store, self.log_id, &cur.committed, &cur.committed_blocks)
                        .await
                        .map_err(|e| SharedFailure::Retriable(format!("sealing segment failed: {e}")))?;
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
            let first = i;
            while i < done.len() && done[i].seg_id == seg_id {
                let b = done[i].info;
                next.end_offset = b.end_offset;
                next.bytes += b.size as u64;
                next.blocks += 1;
                next.max_timestamp = next.max_timestamp.max(b.max_timestamp);
                blocks.push(b);
                i += 1;
            }
            txn = txn.then(Op::put(keys::segment(&self.name, seg_id), json(&next)));
            self.commit_txn(txn).await?;
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
            self.shared.commit_blocks(&cur.committed, &blocks);
        }
        metrics::histogram!(m::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Runs one metadata transaction, retrying transient failures (it is idempotent) until
    /// `commit_timeout_ms`.
    async fn commit_txn(&self, txn: Txn) -> std::result::Result<(), SharedFailure> {
        let deadline = Instant::now() + Duration::from_millis(self.wal.cfg.commit_timeout_ms);
        let mut attempt = 0;
        loop {
            match self.wal.meta.txn(txn.clone()).await {
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

    /// Fails every pending append. With `stop`, the writer accepts nothing more; otherwise
    /// `written` resets to `durable` and appends continue in a new segment.
    fn fail_all(&self, f: SharedFailure, pipeline: &mut VecDeque<InFlight>, stop: bool) {
        let mut failed: Vec<Pending> = Vec::new();
        for b in pipeline.drain(..) {
            b.upload.abort();
            failed.extend(b.entries);
        }
        {
            let mut st = lock(&self.state);
            failed.extend(st.buffer.drain(..));
            metrics::gauge!(m::BUFFER_BYTES).decrement(st.buffer_bytes as f64);
            st.buffer_bytes = 0;
            st.resets += 1;
            st.flush_requested = false;
            if stop {
                st.failure = Some(f.clone());
            } else {
                // Everything after the durable end failed: offsets continue from there.
                st.next_offset = self.shared.durable_end();
            }
        }
        metrics::counter!(m::APPEND_ERRORS_TOTAL).increment(failed.len() as u64);
        for p in failed {
            if let Some(a) = p.ack {
                let _ = a.send(Err(f.to_error()));
            }
        }
    }

    /// QuorumBuffer: the blocks reached their quorum: publish them to readers (tail cache pinned
    /// until they are stored), acknowledge their appends, and keep them until they are stored.
    fn acked(&self, cur: &mut SegCursor, done: Vec<InFlight>) {
        let Some(end) = done.last().map(|b| b.info.end_offset) else { return };
        {
            let mut tail = self.shared.tail();
            if cur.unflushed.is_empty() {
                tail.set_pin(done[0].info.base_offset);
            }
            for p in done.iter().flat_map(|b| b.entries.iter()) {
                tail.push(p.entry.clone());
            }
        }
        self.shared.set_durable(end);
        for mut b in done {
            for p in b.entries.iter_mut() {
                metrics::histogram!(m::ACK_SECONDS).record(p.at.elapsed().as_secs_f64());
                if let Some(a) = p.ack.take() {
                    let _ = a.send(Ok(AppendAck { base_offset: p.entry.offset, end_offset: p.entry.end_offset() }));
                }
            }
            cur.unflushed.push_back(b);
        }
    }

    /// QuorumBuffer: whether the next block needs a new segment (and so an empty pipeline).
    fn needs_roll(&self, cur: &SegCursor) -> bool {
        let Some(qs) = &cur.qseg else { return true };
        cur.roll_next
            || qs.healthy_count() < qs.ack_quorum
            || (cur.cut_blocks > 0
                && (cur.cut_bytes >= self.segment_max_bytes
                    || cur.cut_blocks >= self.wal.cfg.segment_max_blocks
                    || cur.cut_since.elapsed() >= self.segment_max_age))
    }

    /// QuorumBuffer: starts the next segment on a fresh replica set. One transaction records
    /// where the current segment ends (or deletes it when it holds nothing) and creates the new
    /// one with its replicas, before any block is sent to them.
    async fn roll_quorum(&self, cur: &mut SegCursor) -> std::result::Result<(), SharedFailure> {
        let rep = self.rep.as_ref().expect("QuorumBuffer mode");
        let nodes = quorum::choose_replicas(&self.wal, rep, self.log_id).await.map_err(|e| SharedFailure::Retriable(e.to_string()))?;
        let base = self.shared.durable_end();
        let (old_id, new_id) = (cur.cut_id, cur.cut_id + 1);
        let old_empty = cur.cut_blocks == 0 && cur.committed.id == old_id && cur.committed.end_offset == cur.committed.base_offset
            || cur.cut_blocks == 0 && cur.templates.contains_key(&old_id);
        let mut txn = Txn::new().when(Compare::ModRevision(keys::epoch(&self.name), self.epoch_rev));
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
        let meta = SegmentMeta {
            replicas: nodes.clone(),
            ack_quorum: self.wal.cfg.quorum.ack_quorum,
            ..SegmentMeta::active(new_id, self.epoch, base)
        };
        txn = txn.then(Op::put(keys::segment(&self.name, new_id), json(&meta)));
        self.commit_txn(txn).await?;
        if old_empty {
            cur.templates.remove(&old_id);
            if cur.committed.id == old_id {
                cur.committed_deleted = true;
            }
            if !cur.unflushed.iter().any(|b| b.seg_id == old_id) {
                if let Some(q) = cur.qsegs.remove(&old_id) {
                    rep.forget(q.key);
                }
            }
        } else if cur.committed.id == old_id {
            cur.committed.fixed_end = Some(base);
        } else if let Some(t) = cur.templates.get_mut(&old_id) {
            t.fixed_end = Some(base);
        }
        let qs =
            QuorumSeg::new(rep, SegKey { log_id: self.log_id, segment: new_id }, self.epoch, base, nodes, self.wal.cfg.quorum.ack_quorum);
        tracing::info!(log = %self.name, segment = new_id, base, replicas = ?qs.replicas.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), "QuorumBuffer segment opened");
        cur.templates.insert(new_id, meta);
        cur.qsegs.insert(new_id, qs.clone());
        cur.qseg = Some(qs);
        cur.cut_id = new_id;
        cur.cut_bytes = 0;
        cur.cut_blocks = 0;
        cur.cut_since = Instant::now();
        cur.roll_next = false;
        Ok(())
    }

    /// QuorumBuffer: commits (in order) the acknowledged blocks the replicas report stored, then
    /// frees their buffer space and tells the replicas they may drop them.
    async fn commit_stored(&self, cur: &mut SegCursor) -> std::result::Result<(), SharedFailure> {
        let rep = self.rep.as_ref().expect("QuorumBuffer mode");
        loop {
            let Some(seg_id) = cur.unflushed.front().map(|b| b.seg_id) else { return Ok(()) };
            let Some(qs) = cur.qsegs.get(&seg_id).cloned() else { return Ok(()) };
            let stored = *qs.stored.borrow();
            let n = cur.unflushed.iter().take_while(|b| b.seg_id == seg_id && b.info.end_offset <= stored).count();
            if n == 0 {
                return Ok(());
            }
            let batch: Vec<InFlight> = cur.unflushed.drain(..n).collect();
            if let Err(f) = self.commit(cur, &batch, false).await {
                for b in batch.into_iter().rev() {
                    cur.unflushed.push_front(b);
                }
                return Err(f);
            }
            let bytes: usize = batch.iter().flat_map(|b| b.entries.iter()).map(|p| p.entry.data.len()).sum();
            metrics::gauge!(m::BUFFER_BYTES).decrement(bytes as f64);
            drop(batch);
            qs.progress(rep, stored);
            let pin = cur.unflushed.front().map(|b| b.info.base_offset).unwrap_or(u64::MAX);
            self.shared.tail().set_pin(pin);
            let current = cur.qseg.as_ref().is_some_and(|q| q.key.segment == seg_id);
            if !current && !cur.unflushed.iter().any(|b| b.seg_id == seg_id) {
                cur.qsegs.remove(&seg_id);
                rep.forget(qs.key);
            }
        }
    }

    fn release(&self, done: Vec<InFlight>) {
        for b in done {
            let mut bytes = 0;
            for p in b.entries {
                bytes += p.entry.data.len();
                metrics::histogram!(m::ACK_SECONDS).record(p.at.elapsed().as_secs_f64());
                if let Some(a) = p.ack {
                    let _ = a.send(Ok(AppendAck { base_offset: p.entry.offset, end_offset: p.entry.end_offset() }));
                }
            }
            metrics::gauge!(m::BUFFER_BYTES).decrement(bytes as f64);
        }
    }
}

impl LogShared {
    /// Publishes committed blocks to readers: segment view, tail cache, then the durable end.
    fn commit_blocks(&self, seg: &SegmentMeta, blocks: &[BlockInfo]) {
        {
            let mut segs = self.segs();
            let v = segs.entry(seg.base_offset).or_insert_with(|| SegView { meta: seg.clone(), blocks: Vec::new() });
            if v.meta.id != seg.id {
                *v = SegView { meta: seg.clone(), blocks: Vec::new() };
            }
            let complete = v.complete();
            v.meta = seg.clone();
            if complete {
                v.blocks.extend_from_slice(blocks);
            }
        }
        self.set_durable(seg.end_offset);
    }

    fn merge_segments_one(&self, sealed: SegmentMeta) {
        let mut segs = self.segs();
        if let Some(v) = segs.get_mut(&sealed.base_offset) {
            if v.meta.id == sealed.id {
                v.meta = sealed;
            }
        }
    }
}

async fn run(w: Arc<WriterInner>, mut cur: SegCursor) {
    let mut pipeline: VecDeque<InFlight> = VecDeque::new();
    let max = w.wal.cfg.max_inflight_uploads;
    let age = Duration::from_millis(w.wal.cfg.flush_max_age_ms);
    let quorum = w.rep.is_some();
    // QuorumBuffer: when to try again a roll or a commit that failed.
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut closing_since: Option<Instant> = None;
    loop {
        let retry_due = retry_at.is_none_or(|t| tokio::time::Instant::now() >= t);
        if quorum && retry_due {
            retry_at = None;
            if let Err(f) = w.commit_stored(&mut cur).await {
                if f.stops_writer() {
                    w.fail_all(f, &mut pipeline, true);
                    break;
                }
                tracing::warn!(log = %w.name, error = %f, "committing stored blocks failed; retrying");
                retry_at = Some(tokio::time::Instant::now() + w.backoff(0));
            }
            let has_data = !lock(&w.state).buffer.is_empty();
            if retry_at.is_none() && has_data && pipeline.is_empty() && w.needs_roll(&cur) {
                if let Err(f) = w.roll_quorum(&mut cur).await {
                    let stop = f.stops_writer();
                    tracing::warn!(log = %w.name, error = %f, "cannot start a QuorumBuffer segment; failing pending appends");
                    w.fail_all(f, &mut pipeline, stop);
                    if stop {
                        break;
                    }
                    retry_at = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                }
            }
        }
        let hold = quorum && w.needs_roll(&cur);
        while pipeline.len() < max && !hold {
            match w.maybe_cut(&mut cur, pipeline.len()) {
                Some(b) => pipeline.push_back(b),
                None => break,
            }
        }
        let (closing, oldest) = {
            let st = lock(&w.state);
            (st.closing, st.buffer.front().map(|p| p.at))
        };
        if closing && pipeline.is_empty() && oldest.is_none() {
            if cur.unflushed.is_empty() {
                break;
            }
            let since = *closing_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_millis(w.wal.cfg.commit_timeout_ms) {
                tracing::warn!(log = %w.name, "closing before the replicas stored everything; the next writer recovers it");
                break;
            }
        }
        // QuorumBuffer: wake when the replicas report the oldest unstored block stored.
        let mut stored_rx = cur.unflushed.front().and_then(|b| cur.qsegs.get(&b.seg_id)).map(|q| {
            let mut rx = q.stored.clone();
            rx.mark_unchanged();
            rx
        });
        if let (Some(rx), Some(b)) = (&stored_rx, cur.unflushed.front()) {
            if *rx.borrow() >= b.info.end_offset && retry_at.is_none() {
                continue;
            }
        }
        let hold = quorum && w.needs_roll(&cur);
        let deadline = oldest.map(|t| tokio::time::Instant::from_std(t + age));
        tokio::select! {
            r = async { (&mut pipeline.front_mut().expect("checked").upload).await }, if !pipeline.is_empty() => {
                let first = pipeline.pop_front().expect("checked");
                let mut outcome = match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(join) => Err(UploadError::Failed(StorageError::Transient { op: "put", message: join.to_string() })),
                };
                let mut done = Vec::new();
                if outcome.is_ok() {
                    done.push(first);
                } else {
                    pipeline.push_front(first); // failed below, with everything behind it
                }
                // Every later block that already finished joins this commit.
                while outcome.is_ok() && pipeline.front().is_some_and(|b| b.upload.is_finished()) {
                    let mut b = pipeline.pop_front().expect("checked");
                    match (&mut b.upload).now_or_never() {
                        Some(Ok(Ok(()))) => done.push(b),
                        other => {
                            outcome = Err(match other {
                                Some(Ok(Err(e))) => e,
                                _ => UploadError::Failed(StorageError::Transient { op: "put", message: "upload task lost".into() }),
                            });
                            pipeline.push_front(b);
                        }
                    }
                }
                // Commit what succeeded, in order, then deal with a failure behind it.
                if w.rep.is_some() {
                    w.acked(&mut cur, done);
                } else {
                    if let Err(f) = w.commit(&mut cur, &done, true).await {
                        let stop = f.stops_writer();
                        let mut all: VecDeque<InFlight> = done.into_iter().chain(pipeline.drain(..)).collect();
                        w.fail_all(f, &mut all, stop);
                        if stop {
                            break;
                        }
                        cur.roll_next = true;
                        continue;
                    }
                    w.release(done);
                }
                if let Err(e) = outcome {
                    let fenced = matches!(e, UploadError::Conflict(_));
                    tracing::warn!(log = %w.name, error = %e, "upload failed permanently; failing pending appends");
                    let f = if fenced {
                        SharedFailure::Fenced { log: w.name.clone(), epoch: w.epoch }
                    } else {
                        SharedFailure::Retriable(format!("block upload failed: {e}"))
                    };
                    w.fail_all(f, &mut pipeline, fenced);
                    if fenced {
                        break;
                    }
                    cur.roll_next = true;
                }
            }
            _ = w.wake.notified() => {}
            _ = async { tokio::time::sleep_until(deadline.expect("checked")).await }, if deadline.is_some() && pipeline.len() < max && !hold => {}
            _ = async { stored_rx.as_mut().expect("checked").changed().await }, if stored_rx.is_some() => {}
            _ = async { tokio::time::sleep_until(retry_at.expect("checked")).await }, if retry_at.is_some() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)), if closing => {}
        }
    }
    // Closing: seal the active segment so the next writer starts cleanly.
    if lock(&w.state).closing && cur.unflushed.is_empty() && !cur.committed_deleted && cur.committed.end_offset > cur.committed.base_offset
    {
        match write_index(&*w.wal.store, w.log_id, &cur.committed, &cur.committed_blocks).await {
            Ok(sealed) => {
                let txn = Txn::new()
                    .when(Compare::ModRevision(keys::epoch(&w.name), w.epoch_rev))
                    .then(Op::put(keys::segment(&w.name, sealed.id), json(&sealed)));
                if w.commit_txn(txn).await.is_ok() {
                    w.shared.merge_segments_one(sealed);
                }
            }
            Err(e) => tracing::warn!(log = %w.name, error = %e, "could not seal segment at close"),
        }
    }
    let mut st = lock(&w.state);
    if st.failure.is_none() {
        st.failure = Some(SharedFailure::Closed);
    }
}
