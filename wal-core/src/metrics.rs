//! Every metric name wal-core exports, in one place (`wal_<subsystem>_<name>_<unit>`).
//! Labels take values from fixed sets only (operation names, results, reasons), never log names.

pub const APPEND_ENTRIES_TOTAL: &str = "wal_writer_append_entries_total";
pub const APPEND_BYTES_TOTAL: &str = "wal_writer_append_bytes_total";
pub const APPEND_ERRORS_TOTAL: &str = "wal_writer_append_errors_total";
/// Time from append to durable acknowledgement.
pub const ACK_SECONDS: &str = "wal_writer_ack_seconds";
/// Bytes accepted but not yet durable, over all writers of the process.
pub const BUFFER_BYTES: &str = "wal_writer_buffer_bytes";
pub const FLUSH_TOTAL: &str = "wal_writer_flush_total";
pub const FLUSH_BYTES: &str = "wal_writer_flush_bytes";
pub const UPLOADS_INFLIGHT: &str = "wal_writer_uploads_inflight";
pub const UPLOAD_SECONDS: &str = "wal_writer_upload_seconds";
pub const UPLOAD_ERRORS_TOTAL: &str = "wal_writer_upload_errors_total";
pub const COMMIT_SECONDS: &str = "wal_writer_commit_seconds";
pub const SEGMENTS_SEALED_TOTAL: &str = "wal_segment_sealed_total";
pub const SEGMENTS_DELETED_TOTAL: &str = "wal_segment_deleted_total";
pub const READ_BYTES_TOTAL: &str = "wal_reader_read_bytes_total";
/// Per log (label `log`): bytes and blocks committed to object storage, and the storage reads
/// of its readers (a log's blocks per GiB is its share of shared-object chunks or, with shared
/// objects off, its objects per GiB).
pub const LOG_STORED_BYTES_TOTAL: &str = "wal_log_stored_bytes_total";
pub const LOG_STORED_BLOCKS_TOTAL: &str = "wal_log_stored_blocks_total";
pub const LOG_STORAGE_READS_TOTAL: &str = "wal_log_storage_reads_total";
/// Blocks a catch-up reader fetched ahead of its position.
pub const PREFETCHED_BLOCKS_TOTAL: &str = "wal_reader_prefetched_blocks_total";
pub const STORAGE_REQUESTS_TOTAL: &str = "wal_storage_requests_total";
pub const STORAGE_REQUEST_SECONDS: &str = "wal_storage_request_seconds";
pub const STORAGE_PUT_BYTES_TOTAL: &str = "wal_storage_put_bytes_total";
pub const STORAGE_GET_BYTES_TOTAL: &str = "wal_storage_get_bytes_total";
pub const META_REQUESTS_TOTAL: &str = "wal_meta_requests_total";
pub const META_REQUEST_SECONDS: &str = "wal_meta_request_seconds";
/// QuorumBuffer: time from sending a block to its `ack_quorum`-th acknowledgement.
pub const REPLICATION_SECONDS: &str = "wal_replication_seconds";
/// QuorumBuffer: replicas dropped from a segment (failed or timed out).
pub const REPLICA_FAILURES_TOTAL: &str = "wal_replica_failures_total";
/// QuorumBuffer recovery: blocks only replicas held, copied to object storage by a bulk read.
pub const RECOVERY_BLOCKS_COPIED_TOTAL: &str = "wal_recovery_blocks_copied_total";
/// Transactions merged into one metadata round trip by the transaction batcher.
pub const META_TXN_MEMBERS: &str = "wal_meta_txn_members";
/// Shared write objects: objects stored, their sizes, the blocks (chunks) and logs each holds.
pub const SHARED_OBJECTS_TOTAL: &str = "wal_shared_objects_total";
pub const SHARED_OBJECT_BYTES: &str = "wal_shared_object_bytes";
pub const SHARED_OBJECT_CHUNKS: &str = "wal_shared_object_chunks";
/// Time a chunk waited in the shared-object queue for a PUT (the PUT budget at work).
pub const SHARED_QUEUE_SECONDS: &str = "wal_shared_queue_seconds";
/// Bytes waiting in the shared-object queue.
pub const SHARED_QUEUE_BYTES: &str = "wal_shared_queue_bytes";
/// Shared objects deleted because nothing points into them any more.
pub const SHARED_OBJECTS_DELETED_TOTAL: &str = "wal_shared_objects_deleted_total";
/// Segment flushing: sealed segments whose blocks are still in shared objects, segments
/// rewritten into per-log segment objects, and the bytes rewritten.
pub const FLUSH_BACKLOG_SEGMENTS: &str = "wal_segment_flush_backlog_segments";
pub const SEGMENTS_FLUSHED_TOTAL: &str = "wal_segment_flushed_total";
pub const SEGMENT_FLUSH_BYTES_TOTAL: &str = "wal_segment_flush_bytes_total";
/// Compaction: passes that ran, segments rewritten, bytes read and written, records removed.
pub const COMPACTION_PASSES_TOTAL: &str = "wal_compaction_passes_total";
pub const COMPACTION_SEGMENTS_TOTAL: &str = "wal_compaction_segments_rewritten_total";
pub const COMPACTION_BYTES_READ_TOTAL: &str = "wal_compaction_bytes_read_total";
pub const COMPACTION_BYTES_WRITTEN_TOTAL: &str = "wal_compaction_bytes_written_total";
pub const COMPACTION_RECORDS_REMOVED_TOTAL: &str = "wal_compaction_records_removed_total";
/// The compaction counters (exported at 0 from the start).
pub const COMPACTION_COUNTERS: &[&str] = &[
    COMPACTION_PASSES_TOTAL,
    COMPACTION_SEGMENTS_TOTAL,
    COMPACTION_BYTES_READ_TOTAL,
    COMPACTION_BYTES_WRITTEN_TOTAL,
    COMPACTION_RECORDS_REMOVED_TOTAL,
];

/// Every name above, for tests and dashboards that must only use exported names.
pub const ALL: &[&str] = &[
    REPLICATION_SECONDS,
    REPLICA_FAILURES_TOTAL,
    RECOVERY_BLOCKS_COPIED_TOTAL,
    APPEND_ENTRIES_TOTAL,
    APPEND_BYTES_TOTAL,
    APPEND_ERRORS_TOTAL,
    ACK_SECONDS,
    BUFFER_BYTES,
    FLUSH_TOTAL,
    FLUSH_BYTES,
    UPLOADS_INFLIGHT,
    UPLOAD_SECONDS,
    UPLOAD_ERRORS_TOTAL,
    COMMIT_SECONDS,
    SEGMENTS_SEALED_TOTAL,
    SEGMENTS_DELETED_TOTAL,
    READ_BYTES_TOTAL,
    PREFETCHED_BLOCKS_TOTAL,
    LOG_STORED_BYTES_TOTAL,
    LOG_STORED_BLOCKS_TOTAL,
    LOG_STORAGE_READS_TOTAL,
    STORAGE_REQUESTS_TOTAL,
    STORAGE_REQUEST_SECONDS,
    STORAGE_PUT_BYTES_TOTAL,
    STORAGE_GET_BYTES_TOTAL,
    META_REQUESTS_TOTAL,
    META_REQUEST_SECONDS,
    META_TXN_MEMBERS,
    SHARED_OBJECTS_TOTAL,
    SHARED_OBJECT_BYTES,
    SHARED_OBJECT_CHUNKS,
    SHARED_QUEUE_SECONDS,
    SHARED_QUEUE_BYTES,
    SHARED_OBJECTS_DELETED_TOTAL,
    FLUSH_BACKLOG_SEGMENTS,
    SEGMENTS_FLUSHED_TOTAL,
    SEGMENT_FLUSH_BYTES_TOTAL,
    COMPACTION_PASSES_TOTAL,
    COMPACTION_SEGMENTS_TOTAL,
    COMPACTION_BYTES_READ_TOTAL,
    COMPACTION_BYTES_WRITTEN_TOTAL,
    COMPACTION_RECORDS_REMOVED_TOTAL,
];
