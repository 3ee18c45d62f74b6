//! One topic partition: its log's reader, its writer while this gateway owns it, and its
//! idempotent-producer state. A Kafka offset is a wal-core offset; a Kafka record batch is one
//! wal-core entry. Taking ownership ([`Partition::acquire`]) opens the writer (fencing any
//! previous owner) and rebuilds the producer state from the log; giving it up
//! ([`Partition::release`]) snapshots that state and closes the writer, sealing its segment.
//!
//! The producer state is snapshotted to the MetaStore (`gw/pstate/{log}`, with the offset it
//! covers and the log id) at close and periodically; opening a partition loads the snapshot and
//! replays only the batches after it, instead of the whole log.

use std::sync::{Arc, RwLock};

use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use wal_core::log::WriterOptions;
use wal_core::meta::{Op, Txn};
use wal_core::{LogReader, LogWriter, MetaStore, Wal, WalError};

use super::producer::ProducerStates;
use super::txn_index::TxnIndex;
use crate::batch;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    log_id: u64,
    /// Every batch below this offset is reflected in the state.
    offset: u64,
    /// The state, when it fits one value (else empty, and in `pieces` keys).
    #[serde(default)]
    states: ProducerStates,
    /// How many keys `{snapshot_key}/{generation}/{i}` hold the state; 0 = inline.
    #[serde(default)]
    pieces: u32,
    #[serde(default)]
    generation: u64,
    /// The partition's open and aborted transactions as of `offset`.
    #[serde(default)]
    txns: TxnIndex,
}

/// A snapshot whose state is larger is written in pieces of about this size, each its own
/// MetaStore write (etcd refuses a request over 1.5 MiB).
pub const SNAPSHOT_PIECE_BYTES: usize = 512 << 10;

fn snapshot_key(log: &str) -> String {
    format!("gw/pstate/{log}")
}

fn pieces_prefix(log: &str) -> String {
    format!("gw/pstate/{log}/")
}

fn piece_key(log: &str, generation: u64, i: u32) -> String {
    format!("gw/pstate/{log}/{generation}/{i}")
}

pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    pub log: String,
    pub reader: LogReader,
    writer: RwLock<Option<LogWriter>>,
    /// A writer opened by a takeover that failed afterwards (rebuilding producer state), with
    /// the generation it was opened under: the next try continues with it instead of opening
    /// another (each open bumps the epoch and starts a segment); closed on release.
    standby: std::sync::Mutex<Option<(LogWriter, u64)>>,
    /// Held while checking idempotence and submitting, so that sequence order is offset order.
    pub producers: Mutex<ProducerStates>,
    reopen: Mutex<()>,
    /// The cluster registration generation the writer was acquired under.
    generation: std::sync::atomic::AtomicU64,
    /// The offset of the last producer-state snapshot written from here.
    snapshot_at: std::sync::atomic::AtomicU64,
    /// The generation of the snapshot pieces the head points to (0: inline or none).
    snapshot_generation: std::sync::atomic::AtomicU64,
    /// Open and aborted transactions (changed under the `producers` lock, read without it).
    pub txns: std::sync::Mutex<TxnIndex>,
}

impl Partition {
    /// Opens (creating the log if needed) the partition's reader; no writer until
    /// [`Partition::acquire`].
    pub async fn open(wal: &Wal, topic: Arc<str>, index: i32) -> Result<Arc<Partition>, WalError> {
        let log = super::topics::log_name(&topic, index);
        match wal.create_log(&log).await {
            Ok(_) | Err(WalError::LogExists(_)) => {}
            Err(e) => return Err(e),
        }
        let reader = wal.open_reader(&log).await?;
        Ok(Arc::new(Partition {
            topic,
            index,
            log,
            reader,
            writer: RwLock::new(None),
            standby: std::sync::Mutex::new(None),
            producers: Mutex::new(ProducerStates::default()),
            reopen: Mutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(0),
            snapshot_at: std::sync::atomic::AtomicU64::new(u64::MAX),
            snapshot_generation: std::sync::atomic::AtomicU64::new(0),
            txns: std::sync::Mutex::new(TxnIndex::default()),
        }))
    }

    /// Whether this gateway holds a writer that has not failed.
    pub fn leading(&self) -> bool {
        self.writer().is_some_and(|w| w.failure().is_none())
    }

    /// The cluster registration generation of the current writer.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Takes the partition over: opens a writer (bumping the log's epoch, so a previous owner
    /// is fenced), then rebuilds the producer state from the snapshot and the log up to the
    /// writer's start. Returns the new epoch; does nothing when already leading.
    pub async fn acquire(&self, wal: &Wal, opts: WriterOptions, generation: u64) -> Result<Option<u64>, WalError> {
        let _g = self.reopen.lock().await;
        if self.leading() && self.generation() == generation {
            return Ok(None);
        }
        // A writer from an older registration may have been fenced while this gateway was away.
        let stale = self.writer.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = stale {
            let _ = w.close().await;
        }
        self.generation.store(generation, std::sync::atomic::Ordering::Release);
        self.snapshot_at.store(u64::MAX, std::sync::atomic::Ordering::Release);
        let kept = wal_core::util::lock(&self.standby).take();
        let w = match kept {
            Some((w, g)) if g == generation && w.failure().is_none() => w,
            other => {
                if let Some((w, _)) = other {
                    let _ = w.close().await;
                }
                wal.open_writer_with(&self.log, opts).await?
            }
        };
        let epoch = w.epoch();
        if let Err(e) = self.prepare(wal, &w).await {
            *wal_core::util::lock(&self.standby) = Some((w, generation));
            return Err(e);
        }
        *self.writer.write().unwrap_or_else(|p| p.into_inner()) = Some(w);
        metrics::counter!(crate::metrics::PARTITION_TAKEOVERS_TOTAL).increment(1);
        Ok(Some(epoch))
    }

    /// What a takeover does once its writer is open: catch the reader up to the writer's start
    /// and rebuild the producer state up to there.
    async fn prepare(&self, wal: &Wal, w: &LogWriter) -> Result<(), WalError> {
        let end = w.written();
        // The reader shares the log's state with the writer, but refresh in case it lagged.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.reader.durable_end() < end && std::time::Instant::now() < deadline {
            self.reader.refresh().await?;
            if self.reader.durable_end() < end {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        *self.producers.lock().await = ProducerStates::default();
        self.rebuild_producers(&**wal.meta()).await
    }

    /// Hands the partition over: snapshots the producer state and closes the writer (flushing
    /// and sealing), so the next owner starts at once.
    pub async fn release(&self, meta: &dyn MetaStore) {
        let _g = self.reopen.lock().await;
        let Some(healthy) = self.writer().map(|w| w.failure().is_none()) else {
            self.close().await; // a failed takeover's standby writer
            return;
        };
        if healthy {
            if let Err(e) = self.snapshot_producers(meta).await {
                tracing::warn!(log = %self.log, error = %e, "snapshotting producer state");
            }
        }
        self.close().await;
        // The next owner's state is the current one; ours goes stale from here.
        *self.producers.lock().await = ProducerStates::default();
        tracing::info!(log = %self.log, "handed partition over");
    }

    /// Loads the producer-state snapshot (if it belongs to this log) and replays the stored
    /// batches after it.
    async fn rebuild_producers(&self, meta: &dyn MetaStore) -> Result<(), WalError> {
        let mut states = self.producers.lock().await;
        let mut pos = self.reader.start_offset();
        if let Some(kv) = meta.get(&snapshot_key(&self.log)).await? {
            match serde_json::from_slice::<Snapshot>(&kv.value) {
                Ok(s) if s.log_id == self.reader.log_id() && s.offset <= self.reader.durable_end() => {
                    let (offset, generation, pieces) = (s.offset, s.generation, s.pieces);
                    let txns = s.txns;
                    let mut loaded = Some(s.states);
                    for i in 0..pieces {
                        let piece = meta.get(&piece_key(&self.log, generation, i)).await?;
                        match piece.map(|kv| serde_json::from_slice::<ProducerStates>(&kv.value)) {
                            Some(Ok(part)) => {
                                if let Some(l) = loaded.as_mut() {
                                    l.merge(part)
                                }
                            }
                            other => {
                                tracing::warn!(log = %self.log, piece = i, ok = ?other.map(|r| r.is_ok()), "a producer-state snapshot piece is missing or unreadable; replaying the whole log");
                                loaded = None;
                            }
                        }
                    }
                    if let Some(l) = loaded {
                        *states = l;
                        *wal_core::util::lock(&self.txns) = txns;
                        pos = pos.max(offset);
                        self.snapshot_generation.store(generation, std::sync::atomic::Ordering::Release);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(log = %self.log, error = %e, "ignoring an unreadable producer-state snapshot"),
            }
        }
        let end = self.reader.durable_end();
        while pos < end {
            let entries = self.reader.read(pos, 8 << 20).await?;
            if entries.is_empty() {
                break;
            }
            for e in entries {
                if let Some(info) = batch::stored_info(&e.data) {
                    if let Some((pid, commit)) = batch::control::marker_of(&e.data) {
                        wal_core::util::lock(&self.txns).on_marker(pid, commit, e.offset);
                        states.fence(pid, info.producer_epoch);
                    } else if info.is_idempotent() {
                        states.record(&info, e.offset, e.end_offset());
                        if info.is_transactional() {
                            wal_core::util::lock(&self.txns).on_data(info.producer_id, e.offset);
                        }
                    }
                }
                pos = pos.max(e.end_offset());
            }
        }
        Ok(())
    }

    /// The last stable offset: the high watermark capped by the first offset of any open
    /// transaction (what read_committed consumers may read up to).
    pub fn last_stable_offset(&self) -> i64 {
        wal_core::util::lock(&self.txns).lso(self.reader.durable_end()) as i64
    }

    /// Writes the COMMIT or ABORT marker of producer `pid` at `epoch` and waits until it is
    /// durable; then the transaction is closed here. Idempotent: a partition where `pid` has no
    /// open transaction gets no marker (a retried delivery, or a transaction that never wrote
    /// here). A marker's epoch fences older epochs of the producer.
    pub async fn write_marker(&self, pid: i64, epoch: i16, commit: bool, leads: bool) -> Result<(), ResponseError> {
        let ticket = {
            let Some(writer) = self.writer().filter(|_| leads) else { return Err(ResponseError::NotLeaderOrFollower) };
            let mut producers = self.producers.lock().await;
            producers.rollback_from(writer.written());
            wal_core::util::lock(&self.txns).rollback_from(writer.written());
            if !producers.accepts_marker(pid, epoch) {
                return Err(ResponseError::InvalidProducerEpoch);
            }
            producers.fence(pid, epoch);
            if !wal_core::util::lock(&self.txns).is_open(pid) {
                return Ok(());
            }
            let marker = batch::control::encode_marker(pid, epoch, commit, 0, wal_core::util::now_ms() as i64);
            let leader_epoch = writer.epoch() as i32;
            writer
                .submit_patched(1, wal_core::util::now_ms() as i64, bytes::BytesMut::from(&marker[..]), |buf, base| {
                    batch::patch(buf, base, leader_epoch)
                })
                .await
                .map_err(|e| crate::handler::produce::wal_error(&e))?
        };
        let offset = ticket.base_offset;
        ticket.durable().await.map_err(|e| crate::handler::produce::wal_error(&e))?;
        wal_core::util::lock(&self.txns).on_marker(pid, commit, offset);
        Ok(())
    }

    /// Whether this gateway holds any writer of the log (serving, or kept by a failed takeover).
    pub fn holds_writer(&self) -> bool {
        self.writer().is_some() || wal_core::util::lock(&self.standby).is_some()
    }

    pub fn writer(&self) -> Option<LogWriter> {
        self.writer.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The leader epoch clients see: the epoch of this gateway's writer.
    pub fn leader_epoch(&self) -> i32 {
        self.writer().map(|w| w.epoch() as i32).unwrap_or(-1)
    }

    pub fn high_watermark(&self) -> i64 {
        self.reader.durable_end() as i64
    }

    pub fn log_start(&self) -> i64 {
        self.reader.start_offset() as i64
    }

    /// Replaces a writer that stopped in an unknown state (the new one recovers from metadata).
    /// The caller checks that this gateway still owns the partition: a fenced writer's owner
    /// must not take the log back.
    pub async fn reopen_writer(&self, wal: &Wal, opts: WriterOptions, failed_epoch: u64) -> Result<(), WalError> {
        let _g = self.reopen.lock().await;
        if self.writer().is_some_and(|w| w.epoch() != failed_epoch && w.failure().is_none()) {
            return Ok(()); // someone else already reopened it
        }
        let w = wal.open_writer_with(&self.log, opts).await?;
        let durable = w.written();
        self.producers.lock().await.rollback_from(durable);
        *self.writer.write().unwrap_or_else(|p| p.into_inner()) = Some(w);
        tracing::info!(log = %self.log, "reopened writer");
        Ok(())
    }

    /// Drops a writer that failed, without reopening (this gateway no longer owns the log).
    pub fn drop_failed_writer(&self) {
        let mut g = self.writer.write().unwrap_or_else(|p| p.into_inner());
        if g.as_ref().is_some_and(|w| w.failure().is_some()) {
            *g = None;
        }
    }

    /// The offset the last producer-state snapshot written from here covers.
    pub fn snapshot_offset(&self) -> Option<u64> {
        Some(self.snapshot_at.load(std::sync::atomic::Ordering::Acquire)).filter(|o| *o != u64::MAX)
    }

    /// Stores the producer state as of the durable end, so a restart replays only what follows.
    /// (A failed write leaves no offset claimed as covered: the next call writes again.)
    pub async fn snapshot_producers(&self, meta: &dyn MetaStore) -> Result<(), WalError> {
        let r = self.write_snapshot(meta).await;
        if r.is_err() {
            self.snapshot_at.store(u64::MAX, std::sync::atomic::Ordering::Release);
        }
        r
    }

    async fn write_snapshot(&self, meta: &dyn MetaStore) -> Result<(), WalError> {
        let snap = {
            let states = self.producers.lock().await;
            let offset = self.reader.durable_end();
            if self.snapshot_at.swap(offset, std::sync::atomic::Ordering::AcqRel) == offset {
                return Ok(()); // nothing appended since the last one
            }
            let mut states = states.clone();
            states.rollback_from(offset); // pending appends are not covered by the offset
            let mut txns = wal_core::util::lock(&self.txns).clone();
            txns.rollback_from(offset);
            txns.forget_below(self.reader.start_offset());
            Snapshot { log_id: self.reader.log_id(), offset, states, pieces: 0, generation: 0, txns }
        };
        let old = self.snapshot_generation.load(std::sync::atomic::Ordering::Acquire);
        let parts = snap.states.pieces(SNAPSHOT_PIECE_BYTES);
        let head = if parts.len() == 1 {
            snap
        } else {
            // A fresh generation: the pieces the current head points to stay intact until the
            // new head replaces it, whatever happens in between.
            let generation = wal_core::util::random_nonzero_id();
            let pieces = parts.len() as u32;
            for (i, part) in parts.into_iter().enumerate() {
                meta.txn(Txn::new().then(Op::put(piece_key(&self.log, generation, i as u32), part))).await?;
            }
            Snapshot { states: ProducerStates::default(), pieces, generation, ..snap }
        };
        let generation = head.generation;
        meta.txn(Txn::new().then(Op::put(snapshot_key(&self.log), serde_json::to_vec(&head).expect("serializes")))).await?;
        self.snapshot_generation.store(generation, std::sync::atomic::Ordering::Release);
        if old != 0 || generation != 0 {
            // Pieces of other generations (the previous one, or one a crash left unreferenced).
            let keep = format!("{}{generation}/", pieces_prefix(&self.log));
            let stale: Vec<Op> = meta
                .list(&pieces_prefix(&self.log))
                .await?
                .kvs
                .into_iter()
                .filter(|kv| generation == 0 || !kv.key.starts_with(&keep))
                .map(|kv| Op::Delete(kv.key))
                .collect();
            wal_core::meta::write_in_chunks(meta, stale, wal_core::meta::batcher::DEFAULT_MAX_TXN_OPS).await?;
        }
        Ok(())
    }

    /// Forgets the snapshot (the topic is being deleted).
    pub async fn drop_snapshot(&self, meta: &dyn MetaStore) -> Result<(), WalError> {
        meta.txn(Txn::new().then(Op::Delete(snapshot_key(&self.log))).then(Op::DeletePrefix(pieces_prefix(&self.log)))).await?;
        Ok(())
    }

    /// Flushes and closes the writer (and a takeover's standby writer).
    pub async fn close(&self) {
        let standby = wal_core::util::lock(&self.standby).take();
        if let Some((w, _)) = standby {
            let _ = w.close().await;
        }
        let w = self.writer.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = w {
            if let Err(e) = w.close().await {
                tracing::warn!(log = %self.log, error = %e, "closing writer");
            }
        }
    }
}
