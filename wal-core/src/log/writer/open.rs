//! Opening a writer: take the next epoch, seal what the previous writer left, start a segment.
//!
//! The epoch is a counter advanced by compare-and-swap (with the log's own record compared in
//! the same transaction, so a deleted log cannot get a writer): from then on every commit of an
//! older writer fails. Every segment the previous writer left active is sealed in order at its
//! durable end (a QuorumBuffer segment is recovered from its replicas first); a segment that
//! would start past the recovered end (its predecessor lost data only replicas held) is dropped,
//! so the log never has a hole. One transaction, compared against the new epoch, records all of
//! it and the new active segment.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};

use super::{cut, pipeline, quorum, LogWriter, SegCursor, Strategy, WState, WriterInner, WriterOptions};
use crate::config::BufferMode;
use crate::error::{Result, WalError};
use crate::log::recovery::{chunk_info, load_chunks, seal_abandoned, seal_segment};
use crate::log::shared::{get_or_load, load_segments};
use crate::log::{json, keys, quorum as replicas, read_log_meta, Layout, SegmentMeta, SegmentState, WalInner};
use crate::meta::{advance_counter, Compare, Op, Txn};
use crate::util::lock;

pub(crate) async fn open(wal: Arc<WalInner>, name: &str, opts: WriterOptions) -> Result<LogWriter> {
    let shared = get_or_load(&wal, name).await?;
    let meta = &*wal.meta;
    // 1. Take the next epoch: from here on, every commit of an older writer fails.
    // (The log's record is compared too, and must still be the log `shared` was loaded for: a
    // log deleted and created again meanwhile is another log, with objects under another id.)
    let log_id = shared.id;
    let (taken, ()) = advance_counter(meta, &keys::epoch(name), 1, |_| async move {
        let (lm, log_rev) = read_log_meta(meta, name).await?;
        if lm.id != log_id {
            return Err(WalError::LogNotFound(name.to_string()));
        }
        Ok::<_, WalError>((Txn::new().when(Compare::ModRevision(keys::log(name), log_rev)), ()))
    })
    .await?;
    let (epoch, epoch_rev) = (taken.value, taken.revision);
    // 2. Seal what the previous writer left, at its durable end, and start a new segment there.
    let segs = load_segments(meta, name).await?;
    let mut txn = Txn::new().when(Compare::ModRevision(keys::epoch(name), epoch_rev));
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
            SegmentState::Active if !seg.replicas.is_empty() => replicas::recover(&wal, shared.id, seg, epoch).await?,
            SegmentState::Active if seg.layout == Layout::Chunks => {
                let blocks: Vec<_> = load_chunks(meta, shared.id, Some(name), seg).await?.iter().map(chunk_info).collect();
                seal_segment(&*wal.store, shared.id, seg, &blocks).await?
            }
            SegmentState::Active => seal_abandoned(&*wal.store, shared.id, seg).await?.0,
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

    let rep = match opts.buffer.unwrap_or(wal.cfg.buffer) {
        BufferMode::Quorum => Some(wal.replication.clone()),
        BufferMode::Memory => None,
    };
    let segment_max_bytes = opts.segment_max_bytes.unwrap_or(wal.cfg.segment_max_bytes).max(1);
    let segment_max_age = Duration::from_millis(opts.segment_max_age_ms.unwrap_or(wal.cfg.segment_max_age_ms).max(1));
    let strategy = match &rep {
        Some(_) => Strategy::Quorum(quorum::QuorumState::default()),
        None => Strategy::Memory,
    };
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
        rep,
    });
    let cursor = SegCursor {
        cut: cut::SegFill::new(seg.id, Instant::now()),
        committed: seg,
        committed_blocks: Vec::new(),
        committed_deleted: false,
        templates: HashMap::new(),
        roll_next: false,
    };
    let task = tokio::spawn(pipeline::run(inner.clone(), cursor, strategy));
    *lock(&inner.task) = Some(task);
    Ok(LogWriter { inner })
}
