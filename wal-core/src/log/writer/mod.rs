//! The single writer of a log: a pipeline from accepted entries to acknowledged ones.
//!
//! `submit` assigns offsets at once (`written`) and queues the entry in a bounded buffer
//! (backpressure by bytes, per log and per process). A background task (the *pipeline*, one per
//! writer) then runs every step in order:
//!
//! | step | file | what happens |
//! |---|---|---|
//! | open | [`open`] | take the next epoch (fences every older writer), seal what the previous writer left at its durable end, start a new segment there |
//! | flush | [`cut`] | the group-commit decision (a pure function) and cutting buffered entries into one block |
//! | persist | [`upload`] / [`quorum`] | the durability strategy: MemoryBuffer uploads the block (put-if-absent, retries); QuorumBuffer replicates it to the segment's LogStore nodes |
//! | commit | [`commit`] | one metadata transaction for every finished block, compared against this writer's epoch; publishes them to readers |
//! | ack | [`ack`] | the one place appends are answered: acknowledged in offset order, or failed |
//! | loop | [`pipeline`] | the task that drives the steps, the same for both strategies |
//!
//! MemoryBuffer: a block is durable once stored and committed; then its appends are
//! acknowledged. QuorumBuffer: a block is durable (acknowledged) once `ack_quorum` replicas hold
//! it, and kept (tail cache pinned, buffer space held) until the replicas report it stored; then
//! its segment metadata is committed. Segments roll only with an empty pipeline in that mode, and
//! the roll's transaction records where the old segment ends and which nodes hold the new one
//! before any block is sent to them.
//!
//! Failures: a block whose persist step fails permanently fails its appends and every later
//! pending one with a retriable error, resets `written` to `durable` and rolls to a new segment
//! (no hole, no reuse). A failed epoch comparison means a newer writer exists: everything
//! pending fails with [`WalError::Fenced`] and the writer stops.

mod ack;
mod commit;
mod cut;
mod open;
mod pipeline;
mod quorum;
mod upload;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

pub(crate) use open::open;

use super::shared::LogShared;
use super::{ChunkLoc, SegmentMeta, WalInner};
use crate::entry::{AppendAck, Entry, StoredEntry};
use crate::error::{Result, SharedFailure, StorageError, WalError};
use crate::format::BlockInfo;
use crate::logstore::Replication;
use crate::metrics as m;
use crate::util::lock;

/// The writer of one log. Cheap to clone; all clones share one pipeline task.
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

/// Per-writer overrides of the WAL configuration (Kafka's per-topic settings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterOptions {
    pub segment_max_bytes: Option<u64>,
    pub segment_max_age_ms: Option<u64>,
    /// This log's buffer mode (the process's `buffer` when unset): latency-critical logs on
    /// LogStore nodes, bulk logs straight to object storage, in one process.
    pub buffer: Option<crate::config::BufferMode>,
}

/// An accepted entry waiting for its acknowledgement, holding its share of the buffer bounds.
struct Pending {
    entry: StoredEntry,
    ack: Option<oneshot::Sender<Result<AppendAck>>>,
    _permit: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
    at: Instant,
}

/// What `submit` and the pipeline share.
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
    /// QuorumBuffer mode: connections to the LogStore nodes.
    rep: Option<Arc<Replication>>,
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

    /// Flushes everything accepted so far and waits until it is durable.
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

    /// Stops the pipeline at once without flushing (tests use it to simulate a crash).
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
}

/// Where new blocks go, and what is committed.
struct SegCursor {
    /// The committed state of the segment blocks are committed into, and its blocks.
    committed: SegmentMeta,
    committed_blocks: Vec<BlockInfo>,
    /// Whether `committed`'s (empty) record was deleted at a QuorumBuffer roll.
    committed_deleted: bool,
    /// Segment records written before their first block (QuorumBuffer rolls), by segment id.
    templates: HashMap<u64, SegmentMeta>,
    /// The segment new blocks are cut into.
    cut: cut::SegFill,
    /// Set after a failure: the next block starts a new segment.
    roll_next: bool,
}

/// A block on its way to durability: its persist step runs as `task`, and says where the
/// block lies when that is inside a shared object (`loc`, set once it finished).
struct InFlight {
    seg_id: u64,
    info: BlockInfo,
    entries: Vec<Pending>,
    task: JoinHandle<std::result::Result<Option<ChunkLoc>, PersistError>>,
    loc: Option<ChunkLoc>,
}

/// Why a block's persist step failed.
#[derive(Debug)]
enum PersistError {
    /// Another writer owns the log: an object exists under our key with other bytes, or the
    /// replicas refused our epoch.
    Conflict(String),
    Failed(StorageError),
}

impl std::fmt::Display for PersistError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PersistError::Conflict(k) => write!(f, "another writer owns {k}"),
            PersistError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// How blocks become durable: the one difference between the two buffer modes.
enum Strategy {
    /// Upload each block to object storage; durable once stored and committed.
    Memory,
    /// Replicate each block to the segment's LogStore nodes; durable at `ack_quorum`.
    Quorum(quorum::QuorumState),
}
