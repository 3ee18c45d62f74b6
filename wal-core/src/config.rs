//! The WAL's configuration: named defaults with a sentence each, validated at start-up.

use serde::{Deserialize, Serialize};

use crate::error::WalError;

/// A block is cut once this many bytes are buffered (Woodpecker uses 2-4 MiB).
pub const DEFAULT_FLUSH_MAX_BYTES: usize = 4 << 20;
/// Upper bound on how long an accepted entry waits before its block is cut, when every upload
/// slot is busy. With a free slot, waiting data is uploaded at once (group commit).
pub const DEFAULT_FLUSH_MAX_AGE_MS: u64 = 200;
/// Uploads in flight per writer; bounds memory and object-store concurrency. Half of them are
/// used eagerly (group commit at low load), the rest for full or aged blocks.
pub const DEFAULT_MAX_INFLIGHT_UPLOADS: usize = 8;
/// Accepted-but-not-durable bytes per writer; appends wait (backpressure) beyond this.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 << 20;
/// Accepted-but-not-durable bytes over all writers of the process (bounds memory with many logs).
pub const DEFAULT_MAX_TOTAL_BUFFERED_BYTES: usize = 512 << 20;
/// Attempts per block upload before its appends fail with a retriable error.
pub const DEFAULT_UPLOAD_ATTEMPTS: u32 = 6;
pub const DEFAULT_RETRY_BACKOFF_MS: u64 = 50;
pub const DEFAULT_RETRY_BACKOFF_MAX_MS: u64 = 2_000;
/// How long a metadata commit is retried before the writer gives up and must be reopened.
pub const DEFAULT_COMMIT_TIMEOUT_MS: u64 = 30_000;
/// A segment rolls after this many bytes ...
pub const DEFAULT_SEGMENT_MAX_BYTES: u64 = 256 << 20;
/// ... or this age (so retention can delete whole segments of slow logs) ...
pub const DEFAULT_SEGMENT_MAX_AGE_MS: u64 = 60 * 60 * 1000;
/// ... or this many blocks (bounds the size of its index).
pub const DEFAULT_SEGMENT_MAX_BLOCKS: u32 = 10_000;
/// Shared write objects are on by default: one object holds the blocks of every log of the
/// process (MemoryBuffer mode).
pub const DEFAULT_SHARED_OBJECTS: bool = true;
/// PUTs of shared objects a process makes per second while objects are not full (the budget:
/// eager group commit below it, larger objects above it). Full objects go out whatever it is.
pub const DEFAULT_PUT_BUDGET_PER_SEC: u32 = 50;
/// A shared object is cut once it holds this many bytes.
pub const DEFAULT_MAX_OBJECT_BYTES: usize = 8 << 20;
/// ... or this many blocks (each costs two metadata operations in its log's commit, and etcd
/// allows 128 per transaction).
pub const DEFAULT_MAX_OBJECT_CHUNKS: usize = 250;
/// Shared-object PUTs in flight at once.
pub const DEFAULT_MAX_INFLIGHT_OBJECTS: usize = 4;
/// A segment whose blocks are in shared objects rolls at this many blocks (each is a small
/// metadata key until segment flushing rewrites the segment).
pub const DEFAULT_SEGMENT_MAX_CHUNKS: u32 = 1_000;
/// How often segment flushing looks for sealed segments to rewrite and for shared objects to
/// delete.
pub const DEFAULT_SEGMENT_FLUSH_INTERVAL_MS: u64 = 2_000;
/// A shared object is deleted only this long after it was written and once nothing points
/// into it (far beyond any commit in flight).
pub const DEFAULT_SHARED_GC_GRACE_MS: u64 = 10 * 60 * 1000;
/// Recent durable entries kept in memory per log for tail readers.
pub const DEFAULT_TAIL_CACHE_BYTES: usize = 8 << 20;
/// Decoded blocks kept per log for readers that catch up from object storage.
pub const DEFAULT_BLOCK_CACHE_BLOCKS: usize = 8;
/// Largest accepted entry.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 64 << 20;
/// How often the cleaner deletes segments below each log's start.
pub const DEFAULT_CLEANER_INTERVAL_MS: u64 = 30_000;

/// How appends become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BufferMode {
    /// Buffer in memory, acknowledge once the block is in object storage (throughput-first).
    #[default]
    Memory,
    /// Replicate to LogStore nodes, acknowledge on `ack_quorum` of them (latency-first).
    Quorum,
}

/// Nodes a QuorumBuffer segment is replicated to.
pub const DEFAULT_ENSEMBLE_SIZE: usize = 3;
/// Nodes that must hold a block before its appends are acknowledged.
pub const DEFAULT_ACK_QUORUM: usize = 2;
/// A replica that has not answered an append within this long is dropped from the segment.
pub const DEFAULT_REPLICA_TIMEOUT_MS: u64 = 2_000;
/// A node that failed is avoided for new segments for this long (unless no other node is left).
pub const DEFAULT_NODE_BACKOFF_MS: u64 = 10_000;

/// QuorumBuffer settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuorumConfig {
    pub ensemble_size: usize,
    /// Nodes each block is written to. Striping is not supported: must equal `ensemble_size`.
    pub write_quorum: usize,
    pub ack_quorum: usize,
    pub replica_timeout_ms: u64,
    pub node_backoff_ms: u64,
}

impl Default for QuorumConfig {
    fn default() -> Self {
        QuorumConfig {
            ensemble_size: DEFAULT_ENSEMBLE_SIZE,
            write_quorum: DEFAULT_ENSEMBLE_SIZE,
            ack_quorum: DEFAULT_ACK_QUORUM,
            replica_timeout_ms: DEFAULT_REPLICA_TIMEOUT_MS,
            node_backoff_ms: DEFAULT_NODE_BACKOFF_MS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    pub buffer: BufferMode,
    pub quorum: QuorumConfig,
    pub flush_max_bytes: usize,
    pub flush_max_age_ms: u64,
    pub max_inflight_uploads: usize,
    pub max_buffered_bytes: usize,
    pub max_total_buffered_bytes: usize,
    pub upload_attempts: u32,
    pub retry_backoff_ms: u64,
    pub retry_backoff_max_ms: u64,
    pub commit_timeout_ms: u64,
    pub segment_max_bytes: u64,
    pub segment_max_age_ms: u64,
    pub segment_max_blocks: u32,
    pub tail_cache_bytes: usize,
    pub block_cache_blocks: usize,
    pub max_entry_bytes: usize,
    pub cleaner_interval_ms: u64,
    pub shared_objects: bool,
    pub put_budget_per_sec: u32,
    pub max_object_bytes: usize,
    pub max_object_chunks: usize,
    pub max_inflight_objects: usize,
    pub segment_max_chunks: u32,
    pub segment_flush_interval_ms: u64,
    pub shared_gc_grace_ms: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            buffer: BufferMode::Memory,
            quorum: QuorumConfig::default(),
            flush_max_bytes: DEFAULT_FLUSH_MAX_BYTES,
            flush_max_age_ms: DEFAULT_FLUSH_MAX_AGE_MS,
            max_inflight_uploads: DEFAULT_MAX_INFLIGHT_UPLOADS,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            max_total_buffered_bytes: DEFAULT_MAX_TOTAL_BUFFERED_BYTES,
            upload_attempts: DEFAULT_UPLOAD_ATTEMPTS,
            retry_backoff_ms: DEFAULT_RETRY_BACKOFF_MS,
            retry_backoff_max_ms: DEFAULT_RETRY_BACKOFF_MAX_MS,
            commit_timeout_ms: DEFAULT_COMMIT_TIMEOUT_MS,
            segment_max_bytes: DEFAULT_SEGMENT_MAX_BYTES,
            segment_max_age_ms: DEFAULT_SEGMENT_MAX_AGE_MS,
            segment_max_blocks: DEFAULT_SEGMENT_MAX_BLOCKS,
            tail_cache_bytes: DEFAULT_TAIL_CACHE_BYTES,
            block_cache_blocks: DEFAULT_BLOCK_CACHE_BLOCKS,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            cleaner_interval_ms: DEFAULT_CLEANER_INTERVAL_MS,
            shared_objects: DEFAULT_SHARED_OBJECTS,
            put_budget_per_sec: DEFAULT_PUT_BUDGET_PER_SEC,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            max_object_chunks: DEFAULT_MAX_OBJECT_CHUNKS,
            max_inflight_objects: DEFAULT_MAX_INFLIGHT_OBJECTS,
            segment_max_chunks: DEFAULT_SEGMENT_MAX_CHUNKS,
            segment_flush_interval_ms: DEFAULT_SEGMENT_FLUSH_INTERVAL_MS,
            shared_gc_grace_ms: DEFAULT_SHARED_GC_GRACE_MS,
        }
    }
}

/// Room for a block's header, entry table and the LogStore append header in one frame.
const BLOCK_FRAME_OVERHEAD: usize = 1 << 20;

/// How a process cuts shared write objects: a MemoryBuffer gateway for its writers, a LogStore
/// node for the blocks it uploads (both from the `wal.*` settings of the same names).
#[derive(Debug, Clone, Copy)]
pub struct ObjectLimits {
    pub put_budget_per_sec: u32,
    pub max_object_bytes: usize,
    pub max_object_chunks: usize,
    pub max_inflight_objects: usize,
    pub retry: crate::storage::RetryPolicy,
}

impl Default for ObjectLimits {
    fn default() -> Self {
        WalConfig::default().object_limits()
    }
}

impl WalConfig {
    pub fn object_limits(&self) -> ObjectLimits {
        ObjectLimits {
            put_budget_per_sec: self.put_budget_per_sec,
            max_object_bytes: self.max_object_bytes,
            max_object_chunks: self.max_object_chunks,
            max_inflight_objects: self.max_inflight_objects,
            retry: crate::storage::RetryPolicy {
                attempts: self.upload_attempts,
                backoff_ms: self.retry_backoff_ms,
                backoff_max_ms: self.retry_backoff_max_ms,
            },
        }
    }

    pub fn validate(&self) -> Result<(), WalError> {
        let bad = |m: &str| Err(WalError::Config(m.to_string()));
        if self.flush_max_bytes == 0 || self.flush_max_bytes > u32::MAX as usize / 2 {
            return bad("flush_max_bytes must be in 1..2GiB");
        }
        if self.flush_max_age_ms == 0 {
            return bad("flush_max_age_ms must be positive");
        }
        if self.max_inflight_uploads == 0 || self.max_inflight_uploads > 256 {
            return bad("max_inflight_uploads must be in 1..=256");
        }
        if self.max_buffered_bytes < self.flush_max_bytes {
            return bad("max_buffered_bytes must be at least flush_max_bytes");
        }
        if self.max_total_buffered_bytes < self.max_buffered_bytes || self.max_total_buffered_bytes > u32::MAX as usize {
            return bad("max_total_buffered_bytes must be in max_buffered_bytes..=4GiB");
        }
        if self.max_entry_bytes == 0 || self.max_entry_bytes > self.max_buffered_bytes || self.max_entry_bytes > u32::MAX as usize / 2 {
            return bad("max_entry_bytes must be positive and at most max_buffered_bytes");
        }
        // A block is at most flush_max_bytes, or one entry alone; in QuorumBuffer mode (a topic
        // can choose it in any process) it travels in one LogStore frame.
        if self.flush_max_bytes.max(self.max_entry_bytes) + BLOCK_FRAME_OVERHEAD > crate::logstore::proto::MAX_FRAME_BYTES {
            return bad("flush_max_bytes and max_entry_bytes must leave a block within one LogStore frame (160 MiB)");
        }
        if self.upload_attempts == 0 {
            return bad("upload_attempts must be at least 1");
        }
        if self.retry_backoff_ms == 0 || self.retry_backoff_max_ms < self.retry_backoff_ms {
            return bad("retry_backoff_ms must be positive and at most retry_backoff_max_ms");
        }
        if self.segment_max_bytes == 0 || self.segment_max_age_ms == 0 || self.segment_max_blocks == 0 {
            return bad("segment limits must be positive");
        }
        if self.cleaner_interval_ms == 0 || self.commit_timeout_ms == 0 {
            return bad("cleaner_interval_ms and commit_timeout_ms must be positive");
        }
        if self.put_budget_per_sec == 0 || self.max_inflight_objects == 0 || self.max_inflight_objects > 64 {
            return bad("put_budget_per_sec must be positive and max_inflight_objects in 1..=64");
        }
        if self.max_object_bytes == 0 || self.max_object_bytes > u32::MAX as usize / 2 {
            return bad("max_object_bytes must be in 1..2GiB (a larger block still goes out alone)");
        }
        if self.max_object_chunks == 0 || self.max_object_chunks > 1000 || self.segment_max_chunks == 0 {
            return bad("max_object_chunks must be in 1..=1000 and segment_max_chunks positive");
        }
        if self.segment_flush_interval_ms == 0 {
            return bad("segment_flush_interval_ms must be positive");
        }
        let q = &self.quorum;
        if q.ack_quorum == 0 || q.ack_quorum > q.write_quorum || q.write_quorum > q.ensemble_size || q.ensemble_size > 16 {
            return bad("quorum: need 1 <= ack_quorum <= write_quorum <= ensemble_size <= 16");
        }
        if q.write_quorum != q.ensemble_size {
            return bad("quorum: write_quorum must equal ensemble_size (striping is not supported)");
        }
        if q.replica_timeout_ms == 0 {
            return bad("quorum.replica_timeout_ms must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_must_fit_one_logstore_frame() {
        assert!(WalConfig::default().validate().is_ok());
        let big = WalConfig {
            max_entry_bytes: 200 << 20,
            max_buffered_bytes: 256 << 20,
            max_total_buffered_bytes: 512 << 20,
            ..WalConfig::default()
        };
        assert!(matches!(big.validate(), Err(WalError::Config(m)) if m.contains("LogStore frame")));
        let big = WalConfig {
            flush_max_bytes: 160 << 20,
            max_buffered_bytes: 256 << 20,
            max_total_buffered_bytes: 512 << 20,
            ..WalConfig::default()
        };
        assert!(big.validate().is_err());
        let ok = WalConfig {
            flush_max_bytes: 128 << 20,
            max_buffered_bytes: 256 << 20,
            max_total_buffered_bytes: 512 << 20,
            ..WalConfig::default()
        };
        assert!(ok.validate().is_ok(), "{:?}", ok.validate());
    }
}
