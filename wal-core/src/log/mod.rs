//! The log API: create, open, list and delete logs; writers, readers, truncation, cleaning.
//!
//! # Metadata layout (keys in the [`MetaStore`])
//! - `logid`: the last log id handed out (a counter advanced by compare-and-swap);
//! - `log/{name}`: [`LogMeta`] (id, start offset after truncation);
//! - `epoch/{name}`: the writer epoch. Opening a writer bumps it by CAS; every commit of that
//!   writer compares the key's revision, so a newer writer fences every older one;
//! - `seg/{name}/{segment:010}`: [`SegmentMeta`] (epoch, offset range, state, layout);
//! - `chunk/{log_id:016x}/{segment:010}/{base:020}`: [`ChunkRef`], where a block inside a shared
//!   object lies (layout `Chunks`; deleted when segment flushing rewrites the segment).
//!
//! # Object layout (keys in the [`ObjectStore`])
//! `logs/{log_id:016x}/{segment:010}-e{epoch}/{base:020}-{end:020}.blk` for blocks, and `.../index`
//! for the index of a sealed segment (`.../data` holds a flushed segment's blocks); shared objects
//! are `shared/{created_ms:013}-{id:016x}.obj`. Objects are created with put-if-absent; a block
//! is part of the log only once a metadata commit has moved its segment's `end_offset` past it.

mod cleaner;
mod compactor;
mod flusher;
pub(crate) mod objects;
mod quorum;
mod reader;
mod recovery;
mod shared;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

pub use compactor::{CompactionPass, CompactionPolicy, KeyedRecord, RecordKeys};
pub use flusher::FlushPass;
pub use reader::LogReader;
pub use writer::{AppendTicket, LogWriter, WriterOptions};

use crate::config::WalConfig;
use crate::error::{MetaError, Result, WalError};
use crate::meta::{advance_counter, Compare, MetaStore, Op, Txn};
use crate::storage::ObjectStore;
pub(crate) use crate::util::now_ms;
use shared::LogShared;

/// A log's durable description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMeta {
    pub id: u64,
    pub name: String,
    pub created_ms: u64,
    /// Offsets below this were truncated.
    pub start_offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegmentState {
    Active,
    Sealed,
}

/// Where a segment's blocks are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// One object per block under the segment's prefix (QuorumBuffer, or shared objects off);
    /// a sealed segment adds an index object.
    #[default]
    Blocks,
    /// Inside shared write objects; each block's place is a `chunk/...` metadata key. Segment
    /// flushing rewrites a sealed segment of this layout into [`Layout::Flushed`].
    Chunks,
    /// One data object (the blocks concatenated in index order) and an index object.
    Flushed,
}

/// Where one block lies inside a larger object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkLoc {
    pub object: String,
    pub pos: u64,
    pub len: u32,
}

/// The metadata record of one block stored in a shared object (`chunk/{log_id}/{seg}/{base}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub base_offset: u64,
    pub end_offset: u64,
    pub max_timestamp: i64,
    #[serde(flatten)]
    pub loc: ChunkLoc,
}

/// A segment's durable description. `end_offset` is the durable end: every offset below it is
/// in a stored block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub id: u64,
    pub epoch: u64,
    pub base_offset: u64,
    pub end_offset: u64,
    pub bytes: u64,
    pub blocks: u32,
    pub max_timestamp: i64,
    pub state: SegmentState,
    pub created_ms: u64,
    /// QuorumBuffer: the LogStore nodes holding this segment's blocks until they are stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<crate::logstore::NodeInfo>,
    /// QuorumBuffer: acknowledgements each block needed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ack_quorum: usize,
    /// Set when the writer moved on to a later segment: the segment ends exactly here, whatever
    /// a replica may hold beyond (a block that never reached a quorum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_end: Option<u64>,
    /// Where the blocks are (absent in records written before shared objects: per-block objects).
    #[serde(default, skip_serializing_if = "is_blocks")]
    pub layout: Layout,
    /// Set once compaction rewrote the segment (layout [`Layout::Flushed`], objects under
    /// [`Compacted::dir`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted: Option<Compacted>,
}

/// What compaction did to a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compacted {
    /// The directory of its data and index objects under the segment's prefix,
    /// `c{created_ms:013}-{random:016x}`: a fresh one per rewrite, so an unfinished rewrite of
    /// another process never collides with the current one (and ages out by its name).
    pub dir: String,
    /// When compaction first rewrote the segment: its tombstones are kept until
    /// `delete.retention.ms` after this (Kafka's delete horizon, KIP-534).
    pub first_ms: u64,
    /// Tombstones the segment still holds.
    #[serde(default)]
    pub tombstones: u64,
}

fn is_blocks(l: &Layout) -> bool {
    *l == Layout::Blocks
}

impl SegmentMeta {
    /// A new, empty active segment starting at `base`.
    pub(crate) fn active(id: u64, epoch: u64, base: u64) -> SegmentMeta {
        SegmentMeta {
            id,
            epoch,
            base_offset: base,
            end_offset: base,
            bytes: 0,
            blocks: 0,
            max_timestamp: -1,
            state: SegmentState::Active,
            created_ms: now_ms(),
            replicas: Vec::new(),
            ack_quorum: 0,
            fixed_end: None,
            layout: Layout::Blocks,
            compacted: None,
        }
    }

    /// The key of the segment's index object (sealed segments of layouts `Blocks` and `Flushed`).
    pub(crate) fn index_key(&self, log_id: u64) -> String {
        match &self.compacted {
            Some(c) => format!("{}{}/index", keys::segment_objects(log_id, self.id, self.epoch), c.dir),
            None => keys::index(log_id, self.id, self.epoch),
        }
    }

    /// The key of a flushed segment's data object.
    pub(crate) fn data_key(&self, log_id: u64) -> String {
        match &self.compacted {
            Some(c) => format!("{}{}/data", keys::segment_objects(log_id, self.id, self.epoch), c.dir),
            None => keys::segment_data(log_id, self.id, self.epoch),
        }
    }
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// What [`Wal::log_info`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogInfo {
    pub name: String,
    pub id: u64,
    pub start_offset: u64,
    /// The durable end (next offset to be assigned once everything in flight is durable).
    pub end_offset: u64,
    pub segments: usize,
    pub bytes: u64,
}

pub(crate) mod keys {
    pub fn log(name: &str) -> String {
        format!("log/{name}")
    }
    pub fn epoch(name: &str) -> String {
        format!("epoch/{name}")
    }
    pub fn segments(name: &str) -> String {
        format!("seg/{name}/")
    }
    pub fn segment(name: &str, id: u64) -> String {
        format!("seg/{name}/{id:010}")
    }
    pub const LOG_ID: &str = "logid";
    pub fn log_objects(log_id: u64) -> String {
        format!("logs/{log_id:016x}/")
    }
    pub fn segment_objects(log_id: u64, seg: u64, epoch: u64) -> String {
        format!("logs/{log_id:016x}/{seg:010}-e{epoch}/")
    }
    pub fn block(log_id: u64, seg: u64, epoch: u64, base: u64, end: u64) -> String {
        format!("{}{base:020}-{end:020}.blk", segment_objects(log_id, seg, epoch))
    }
    pub fn index(log_id: u64, seg: u64, epoch: u64) -> String {
        format!("{}index", segment_objects(log_id, seg, epoch))
    }
    /// A shared write object, named by its creation time (for the collector's grace period).
    pub fn shared_object(created_ms: u64, id: u64) -> String {
        format!("{SHARED_OBJECTS}{created_ms:013}-{id:016x}.obj")
    }
    pub const SHARED_OBJECTS: &str = "shared/";
    /// The creation time in a shared object's key.
    pub fn shared_object_ms(key: &str) -> Option<u64> {
        key.strip_prefix(SHARED_OBJECTS)?.split('-').next()?.parse().ok()
    }
    /// Where a segment's blocks lie in shared objects: one small key per block.
    /// (Keyed by log id, not name: a LogStore node, which knows only the id, commits them too.)
    pub fn log_chunks(log_id: u64) -> String {
        format!("chunk/{log_id:016x}/")
    }
    pub const ALL_CHUNKS: &str = "chunk/";
    pub fn chunks(log_id: u64, seg: u64) -> String {
        format!("chunk/{log_id:016x}/{seg:010}/")
    }
    pub fn chunk(log_id: u64, seg: u64, base: u64) -> String {
        format!("chunk/{log_id:016x}/{seg:010}/{base:020}")
    }
    /// Chunk keys written before they were keyed by log id (`chunk/{name}/...`): still read,
    /// and deleted with their segment or log.
    pub fn legacy_log_chunks(name: &str) -> String {
        format!("chunk/{}/", legacy_name(name))
    }
    pub fn legacy_chunks(name: &str, seg: u64) -> String {
        format!("chunk/{}/{seg:010}/", legacy_name(name))
    }
    /// A name that reads like a log id would name another log's records: nothing was ever
    /// written under it worth reading, so its legacy prefix is one nothing is under.
    fn legacy_name(name: &str) -> String {
        if name.len() == 16 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            format!("/{name}")
        } else {
            name.to_string()
        }
    }
    /// The log id and segment of a chunk key (`None` for a legacy, name-keyed one).
    pub fn parse_chunk(key: &str) -> Option<(u64, u64)> {
        let mut parts = key.strip_prefix(ALL_CHUNKS)?.split('/');
        let id = parts.next().filter(|p| p.len() == 16 && p.bytes().all(|b| b.is_ascii_hexdigit()))?;
        let log_id = u64::from_str_radix(id, 16).ok()?;
        let seg = parts.next()?.parse().ok()?;
        Some((log_id, seg))
    }
    /// A flushed segment's blocks, concatenated in index order.
    pub fn segment_data(log_id: u64, seg: u64, epoch: u64) -> String {
        format!("{}data", segment_objects(log_id, seg, epoch))
    }
    /// Parses `{base:020}-{end:020}.blk` at the end of a block key.
    pub fn parse_block(key: &str) -> Option<(u64, u64)> {
        let name = key.rsplit('/').next()?.strip_suffix(".blk")?;
        let (b, e) = name.split_once('-')?;
        Some((b.parse().ok()?, e.parse().ok()?))
    }
}

pub(crate) fn decode_json<T: for<'de> Deserialize<'de>>(key: &str, v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| WalError::Meta(MetaError::Permanent { op: "decode", message: format!("{key}: {e}") }))
}

pub(crate) fn json<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).expect("metadata serializes"))
}

/// Log names: what Kafka allows in topic names plus a partition suffix.
pub fn validate_log_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 249 + 12 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(WalError::InvalidArgument(format!("invalid log name {name:?}")));
    }
    Ok(())
}

/// The object key of a block (LogStore nodes upload under the same keys as writers).
pub(crate) fn block_key(log_id: u64, seg: u64, epoch: u64, base: u64, end: u64) -> String {
    keys::block(log_id, seg, epoch, base, end)
}

pub(crate) struct WalInner {
    /// MemoryBuffer with shared objects: the process's shared-object writer.
    pub objects: Option<objects::ObjectWriter>,
    /// Writers' metadata commits, merged when concurrent.
    pub txns: crate::meta::batcher::TxnBatcher,
    /// QuorumBuffer: connections to LogStore nodes and discovery (for the logs in that mode).
    pub replication: Arc<crate::logstore::Replication>,
    pub store: Arc<dyn ObjectStore>,
    pub meta: Arc<dyn MetaStore>,
    pub cfg: WalConfig,
    pub logs: DashMap<String, Arc<LogShared>>,
    /// Buffer space shared by every writer of the process (`max_total_buffered_bytes`).
    pub buffer_space: Arc<tokio::sync::Semaphore>,
}

/// The entry point: one per process, shared by writers and readers of every log.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<WalInner>,
}

impl Wal {
    pub fn new(store: Arc<dyn ObjectStore>, meta: Arc<dyn MetaStore>, cfg: WalConfig) -> Result<Wal> {
        cfg.validate()?;
        let buffer_space = Arc::new(tokio::sync::Semaphore::new(cfg.max_total_buffered_bytes));
        // Both are cheap until used: a log's writer options may choose either buffer mode.
        let replication = Arc::new(crate::logstore::Replication::new(meta.clone()));
        let objects = cfg.shared_objects.then(|| objects::ObjectWriter::start(store.clone(), cfg.object_limits()));
        let txns = crate::meta::batcher::TxnBatcher::start(meta.clone(), crate::meta::batcher::DEFAULT_MAX_TXN_OPS);
        // Exported from the start (at 0), so a dashboard shows "no copies" rather than no data.
        metrics::counter!(crate::metrics::RECOVERY_BLOCKS_COPIED_TOTAL).increment(0);
        for c in crate::metrics::COMPACTION_COUNTERS {
            metrics::counter!(*c).increment(0);
        }
        Ok(Wal { inner: Arc::new(WalInner { objects, txns, replication, store, meta, cfg, logs: DashMap::new(), buffer_space }) })
    }

    pub fn config(&self) -> &WalConfig {
        &self.inner.cfg
    }
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }
    pub fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.inner.meta
    }

    /// Creates a log; [`WalError::LogExists`] when the name is taken.
    pub async fn create_log(&self, name: &str) -> Result<LogMeta> {
        validate_log_name(name)?;
        let meta = &*self.inner.meta;
        let (_, created) = advance_counter(meta, keys::LOG_ID, 1, |id| async move {
            if meta.get(&keys::log(name)).await?.is_some() {
                return Err(WalError::LogExists(name.to_string()));
            }
            let lm = LogMeta { id, name: name.to_string(), created_ms: now_ms(), start_offset: 0 };
            let txn = Txn::new().when(Compare::ModRevision(keys::log(name), 0)).then(Op::put(keys::log(name), json(&lm)));
            Ok((txn, lm))
        })
        .await?;
        Ok(created)
    }

    pub async fn list_logs(&self) -> Result<Vec<LogMeta>> {
        let l = self.inner.meta.list("log/").await?;
        l.kvs.iter().map(|kv| decode_json(&kv.key, &kv.value)).collect()
    }

    pub(crate) async fn read_log_meta(&self, name: &str) -> Result<(LogMeta, i64)> {
        read_log_meta(&*self.inner.meta, name).await
    }

    /// The log's offsets and size, from metadata (and from this process's writer when newer).
    pub async fn log_info(&self, name: &str) -> Result<LogInfo> {
        let (lm, _) = self.read_log_meta(name).await?;
        let segs = shared::load_segments(&*self.inner.meta, name).await?;
        let mut end = segs.last().map(|s| s.end_offset).unwrap_or(0);
        if let Some(sh) = self.inner.logs.get(name) {
            if sh.id == lm.id {
                end = end.max(sh.durable_end());
            }
        }
        Ok(LogInfo {
            name: lm.name,
            id: lm.id,
            start_offset: lm.start_offset,
            end_offset: end,
            segments: segs.len(),
            bytes: segs.iter().map(|s| s.bytes).sum(),
        })
    }

    /// Deletes a log, its metadata and (best effort, the cleaner finishes) its objects. A writer
    /// of the log is fenced.
    pub async fn delete_log(&self, name: &str) -> Result<()> {
        let (lm, rev) = self.read_log_meta(name).await?;
        let r = self
            .inner
            .meta
            .txn(
                Txn::new()
                    .when(Compare::ModRevision(keys::log(name), rev))
                    .then(Op::Delete(keys::log(name)))
                    .then(Op::Delete(keys::epoch(name)))
                    .then(Op::DeletePrefix(keys::segments(name)))
                    .then(Op::DeletePrefix(keys::log_chunks(lm.id)))
                    .then(Op::DeletePrefix(keys::legacy_log_chunks(name))),
            )
            .await?;
        if !r.succeeded {
            return Err(WalError::LogNotFound(name.to_string()));
        }
        self.forget_log(name);
        cleaner::delete_objects(&*self.inner.store, &keys::log_objects(lm.id)).await?;
        Ok(())
    }

    /// Drops this process's cached state of a log that another process deleted (readers of it
    /// see it deleted; the next open loads the log that has the name then, if any).
    pub fn forget_log(&self, name: &str) {
        if let Some((_, sh)) = self.inner.logs.remove(name) {
            sh.mark_deleted();
        }
    }

    /// Opens the single writer of a log: fences any previous writer, seals what it left from
    /// durable metadata, and continues at the next offset.
    pub async fn open_writer(&self, name: &str) -> Result<LogWriter> {
        writer::open(self.inner.clone(), name, WriterOptions::default()).await
    }

    /// [`Wal::open_writer`] with per-log overrides.
    pub async fn open_writer_with(&self, name: &str, opts: WriterOptions) -> Result<LogWriter> {
        writer::open(self.inner.clone(), name, opts).await
    }

    /// The log's segments, oldest first, as metadata describes them.
    pub async fn segments(&self, name: &str) -> Result<Vec<SegmentMeta>> {
        shared::load_segments(&*self.inner.meta, name).await
    }

    /// Opens a reader; readers see only durable entries.
    pub async fn open_reader(&self, name: &str) -> Result<LogReader> {
        let sh = self.shared(name).await?;
        Ok(LogReader::new(self.inner.clone(), sh))
    }

    /// Truncates the log before `offset` (clamped to the durable end); returns the new start.
    pub async fn truncate(&self, name: &str, offset: u64) -> Result<u64> {
        let sh = self.shared(name).await?;
        loop {
            let (mut lm, rev) = self.read_log_meta(name).await?;
            if lm.id != sh.id {
                return Err(WalError::LogNotFound(name.to_string()));
            }
            let end = self.log_info(name).await?.end_offset;
            let new_start = offset.min(end).max(lm.start_offset);
            if new_start == lm.start_offset {
                sh.set_start(new_start);
                return Ok(new_start);
            }
            lm.start_offset = new_start;
            let r = self
                .inner
                .meta
                .txn(Txn::new().when(Compare::ModRevision(keys::log(name), rev)).then(Op::put(keys::log(name), json(&lm))))
                .await?;
            if r.succeeded {
                sh.set_start(new_start);
                return Ok(new_start);
            }
        }
    }

    /// Deletes the segments of every log that lie wholly below its start; returns how many.
    pub async fn clean_once(&self) -> Result<usize> {
        cleaner::clean_once(self).await
    }

    /// Runs [`Wal::clean_once`] every `cleaner_interval_ms` until the returned handle is dropped
    /// or aborted.
    pub fn spawn_cleaner(&self) -> tokio::task::JoinHandle<()> {
        let wal = self.clone();
        let every = Duration::from_millis(self.inner.cfg.cleaner_interval_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = wal.clean_once().await {
                    tracing::warn!(error = %e, "segment cleaner pass failed");
                }
            }
        })
    }

    /// The in-process shared state of a log, loaded from metadata on first use.
    pub(crate) async fn shared(&self, name: &str) -> Result<Arc<LogShared>> {
        shared::get_or_load(&self.inner, name).await
    }
}

pub(crate) async fn read_log_meta(meta: &dyn MetaStore, name: &str) -> Result<(LogMeta, i64)> {
    match meta.get(&keys::log(name)).await? {
        Some(kv) => Ok((decode_json(&kv.key, &kv.value)?, kv.mod_revision)),
        None => Err(WalError::LogNotFound(name.to_string())),
    }
}

impl WalInner {
    pub fn retry_policy(&self) -> crate::storage::RetryPolicy {
        crate::storage::RetryPolicy {
            attempts: self.cfg.upload_attempts,
            backoff_ms: self.cfg.retry_backoff_ms,
            backoff_max_ms: self.cfg.retry_backoff_max_ms,
        }
    }
}

impl Wal {
    pub(crate) fn inner_retry_policy(&self) -> crate::storage::RetryPolicy {
        self.inner.retry_policy()
    }

    pub(crate) fn inner_logs(&self) -> &DashMap<String, Arc<LogShared>> {
        &self.inner.logs
    }
}
