//! QuorumBuffer on the writer side: choosing a segment's replica set, replicating a block to it
//! (acknowledged at `ack_quorum`), and recovering a segment a previous writer left active.
//!
//! A segment's replica set is fixed when the segment is created (its metadata names the nodes and
//! their incarnations) and only shrinks: a replica that fails or times out is dropped for the rest
//! of the segment. When fewer than `ack_quorum` remain, the writer fails what is pending and rolls
//! to a new segment on other nodes, after recording where the old one ends (`fixed_end`).
//!
//! Recovery fences the replicas with the new epoch (so a paused old writer can no longer reach a
//! quorum), needs answers from `n - ack_quorum + 1` of them (then at least one holds every
//! acknowledged block), uploads whatever the stored objects lack from a replica, and seals the
//! segment at the end of the contiguous run. When every replica answered with a new incarnation
//! (all restarted empty), only what is in object storage survives: that is the mode's limit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;

use super::recovery::{chunk_info, load_chunks, seal_abandoned, seal_segment};
use super::{decode_json, json, keys, ChunkLoc, ChunkRef, Layout, SegmentMeta, WalInner};
use crate::error::{Result, StorageError, WalError};
use crate::format::decode_block_header;
use crate::logstore::proto::{Append, ErrorCode, Request, Response, SegKey};
use crate::logstore::{NodeInfo, Replication};
use crate::meta::{Op, Txn};
use crate::metrics as m;
use crate::util::lock;

/// The replication state of the segment a writer is cutting blocks into.
pub(crate) struct QuorumSeg {
    pub key: SegKey,
    pub epoch: u64,
    pub base: u64,
    pub replicas: Vec<NodeInfo>,
    pub ack_quorum: usize,
    /// The replicas store the blocks in their shared objects ([`Layout::Chunks`](super::Layout)).
    pub shared: bool,
    /// Replicas still in the write set.
    healthy: Mutex<Vec<bool>>,
    /// Every block below this is in object storage.
    pub stored: watch::Receiver<u64>,
}

/// Why a block was not replicated.
pub(crate) enum ReplicateError {
    Fenced(String),
    NoQuorum(String),
}

impl QuorumSeg {
    pub fn new(
        rep: &Replication,
        key: SegKey,
        epoch: u64,
        base: u64,
        replicas: Vec<NodeInfo>,
        ack_quorum: usize,
        shared: bool,
    ) -> Arc<Self> {
        let healthy = Mutex::new(vec![true; replicas.len()]);
        Arc::new(QuorumSeg { stored: rep.stored(key, base), key, epoch, base, replicas, ack_quorum, shared, healthy })
    }

    pub fn healthy_count(&self) -> usize {
        lock(&self.healthy).iter().filter(|h| **h).count()
    }

    fn drop_replica(&self, rep: &Replication, i: usize, why: &str) {
        let mut h = lock(&self.healthy);
        if h[i] {
            h[i] = false;
            rep.note_failure(&self.replicas[i]);
            metrics::counter!(m::REPLICA_FAILURES_TOTAL).increment(1);
            tracing::warn!(node = %self.replicas[i].id, segment = self.key.segment, reason = why, "dropping LogStore replica from segment");
        }
    }

    /// Tells the replicas what is stored, so they can drop it.
    pub fn progress(&self, rep: &Replication, stored_end: u64) {
        let h = lock(&self.healthy).clone();
        for (i, r) in self.replicas.iter().enumerate() {
            if h[i] {
                rep.client(&r.addr).send(&Request::Progress { seg: self.key, stored_end });
            }
        }
    }

    /// Queues the block on every healthy replica now (so replicas see blocks in order) and returns
    /// a future that resolves once `ack_quorum` of them hold it.
    pub fn replicate(
        self: &Arc<Self>,
        rep: &Arc<Replication>,
        timeout: Duration,
        base: u64,
        end: u64,
        block: Bytes,
    ) -> impl std::future::Future<Output = std::result::Result<(), ReplicateError>> + Send + 'static {
        let healthy = lock(&self.healthy).clone();
        let stored_end = *self.stored.borrow();
        let uploader = healthy.iter().position(|h| *h);
        let mut calls = FuturesUnordered::new();
        for (i, r) in self.replicas.iter().enumerate() {
            if !healthy[i] {
                continue;
            }
            let id = rep.request_id();
            let req = Request::Append(Append {
                id,
                seg: self.key,
                epoch: self.epoch,
                seg_base: self.base,
                base,
                end,
                upload_now: Some(i) == uploader,
                shared: self.shared,
                stored_end,
                block: block.clone(),
            });
            let rx = rep.client(&r.addr).call(id, &req);
            calls.push(async move { (i, tokio::time::timeout(timeout, rx).await) });
        }
        let me = self.clone();
        let rep = rep.clone();
        let started = Instant::now();
        async move {
            let mut acks = 0;
            let mut failed = Vec::new();
            while let Some((i, r)) = calls.next().await {
                match r {
                    Ok(Ok(Response::Ok { stored_end, .. })) => {
                        rep.note_stored(me.key, stored_end);
                        acks += 1;
                        if acks == me.ack_quorum {
                            metrics::histogram!(m::REPLICATION_SECONDS).record(started.elapsed().as_secs_f64());
                            // The rest answer in the background; a failure there drops the replica.
                            let (me2, rep2) = (me.clone(), rep.clone());
                            tokio::spawn(async move {
                                while let Some((i, r)) = calls.next().await {
                                    match r {
                                        Ok(Ok(Response::Ok { stored_end, .. })) => rep2.note_stored(me2.key, stored_end),
                                        Ok(Ok(Response::Error { code: ErrorCode::Fenced, .. })) => {}
                                        other => me2.drop_replica(&rep2, i, &describe(&other)),
                                    }
                                }
                            });
                            return Ok(());
                        }
                    }
                    Ok(Ok(Response::Error { code: ErrorCode::Fenced, message, .. })) => {
                        return Err(ReplicateError::Fenced(message));
                    }
                    other => {
                        let why = describe(&other);
                        me.drop_replica(&rep, i, &why);
                        failed.push(why);
                    }
                }
            }
            Err(ReplicateError::NoQuorum(format!(
                "block {base}..{end} reached {acks} of the {} acknowledgements it needs ({})",
                me.ack_quorum,
                failed.join("; ")
            )))
        }
    }
}

fn describe(
    r: &std::result::Result<std::result::Result<Response, tokio::sync::oneshot::error::RecvError>, tokio::time::error::Elapsed>,
) -> String {
    match r {
        Err(_) => "timed out".into(),
        Ok(Err(_)) => "connection lost".into(),
        Ok(Ok(Response::Error { message, .. })) => message.clone(),
        Ok(Ok(other)) => format!("unexpected answer {other:?}"),
    }
}

/// Picks the replica set of a new segment: registered nodes that did not fail recently, spread
/// by log id; nodes that failed recently only when too few others are left. Fewer than
/// `ensemble_size` nodes are used (down to `ack_quorum`) rather than refusing writes.
pub(crate) async fn choose_replicas(wal: &WalInner, rep: &Replication, log_id: u64) -> Result<Vec<NodeInfo>> {
    let q = &wal.cfg.quorum;
    let mut nodes = rep.discover().await?;
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    if !nodes.is_empty() {
        let k = (log_id as usize) % nodes.len();
        nodes.rotate_left(k);
    }
    let window = Duration::from_millis(q.node_backoff_ms);
    let (mut good, bad): (Vec<NodeInfo>, Vec<NodeInfo>) = nodes.into_iter().partition(|n| !rep.failed_recently(n, window));
    if good.len() < q.ack_quorum {
        // Do not build a segment on nodes that just failed: the appends would fail again.
        return Err(WalError::AppendFailed(format!(
            "QuorumBuffer needs {} usable LogStore nodes; {} registered, {} of them failed within {} ms",
            q.ack_quorum,
            good.len() + bad.len(),
            bad.len(),
            q.node_backoff_ms
        )));
    }
    for n in bad {
        if good.len() >= q.ensemble_size {
            break;
        }
        good.push(n);
    }
    good.truncate(q.ensemble_size);
    Ok(good)
}

enum Answer {
    Held { blocks: Vec<(u64, u64)>, addr: String },
    Lost,
    Unreachable,
}

/// Recovers an active QuorumBuffer segment left by a previous writer and returns it sealed.
pub(crate) async fn recover(wal: &WalInner, log_id: u64, seg: &SegmentMeta, epoch: u64) -> Result<SegmentMeta> {
    let rep = wal.replication.clone();
    let key = SegKey { log_id, segment: seg.id };
    // Walk the contiguous run from the base: stored objects first, then replica copies.
    let limit = seg.fixed_end.unwrap_or(u64::MAX);
    // Stored runs by base, the longest within the limit (replicas may store overlapping runs:
    // one merged, another block by block); blocks in shared objects by their chunk keys.
    let shared = seg.layout == Layout::Chunks;
    let found: Vec<(u64, u64)> = if shared {
        let listed = wal.meta.list(&keys::chunks(log_id, seg.id)).await?;
        let refs: Vec<ChunkRef> = listed.kvs.iter().map(|kv| decode_json(&kv.key, &kv.value)).collect::<Result<_>>()?;
        refs.iter().map(|r| (r.base_offset, r.end_offset)).collect()
    } else {
        let listed = wal.store.list(&keys::segment_objects(log_id, seg.id, seg.epoch)).await?;
        listed.iter().filter_map(|o| keys::parse_block(&o.key)).collect()
    };
    let mut stored: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (b, e) in found {
        if e > b && e <= limit {
            stored.entry(b).or_default().push(e);
        }
    }
    // A segment whose end was fixed at a roll needs no replica once its blocks are all stored
    // (and its writer moved on, so there is nobody to fence).
    let stored_end = furthest(&stored, seg.base_offset).last().map(|r| r.1).unwrap_or(seg.base_offset);
    let fenced = if seg.fixed_end == Some(stored_end) {
        Fenced { held: Vec::new(), lost: 0, replicas: seg.replicas.len() }
    } else {
        fence_replicas(wal, &rep, key, seg, epoch).await?
    };
    if fenced.replicas > 0 && fenced.lost == fenced.replicas {
        tracing::warn!(log_id, segment = seg.id, "every replica of the segment restarted empty: keeping what is in object storage");
    }
    // The contiguous run: stored runs as far as they reach, then blocks only replicas hold
    // (copied below), then stored runs again, and so on.
    let mut pos = seg.base_offset;
    let mut count = 0usize;
    let mut copies: Vec<(u64, u64, String)> = Vec::new();
    loop {
        let chain = furthest(&stored, pos);
        count += chain.len();
        pos = chain.last().map(|r| r.1).unwrap_or(pos);
        if pos >= limit {
            break;
        }
        let Some((end, addr)) =
            fenced.held.iter().find_map(|h| h.blocks.iter().find(|(b, e)| *b == pos && *e <= limit).map(|(_, e)| (*e, h.addr.clone())))
        else {
            break;
        };
        copies.push((pos, end, addr));
        count += 1;
        pos = end;
    }
    // Copy them: consecutive blocks one replica holds are read in bulk and stored as one
    // object (a lagging upload can leave many small blocks behind); runs concurrently.
    let results: Vec<Result<()>> = futures::stream::iter(replica_runs(&copies))
        .map(|run| copy_run(wal, &rep, key, seg, run))
        .buffer_unordered(RECOVERY_COPIES)
        .collect()
        .await;
    for r in results {
        r?;
    }
    let mut s = seg.clone();
    s.end_offset = pos;
    s.blocks = count as u32;
    let (sealed, infos) = if shared {
        let infos: Vec<_> = load_chunks(&*wal.meta, log_id, None, &s).await?.iter().map(chunk_info).collect();
        (seal_segment(&*wal.store, log_id, &s, &infos).await?, infos)
    } else {
        seal_abandoned(&*wal.store, log_id, &s).await?
    };
    let mut sealed = sealed;
    sealed.bytes = infos.iter().map(|b| b.size as u64).sum();
    tracing::info!(log_id, segment = seg.id, end = pos, "recovered QuorumBuffer segment");
    Ok(sealed)
}

/// The chain of stored runs from `from` that reaches furthest (replicas may store overlapping
/// runs, so the longest run first is not always the way on).
fn furthest(stored: &BTreeMap<u64, Vec<u64>>, from: u64) -> Vec<(u64, u64)> {
    // Where each run start can reach, computed from the highest start down.
    let mut reach: BTreeMap<u64, (u64, Option<u64>)> = BTreeMap::new();
    for (&b, ends) in stored.range(from..).rev() {
        let best = ends.iter().map(|&e| (reach.get(&e).map(|r| r.0).unwrap_or(e), Some(e))).max().unwrap_or((b, None));
        reach.insert(b, best);
    }
    let mut chain = Vec::new();
    let mut pos = from;
    while let Some((_, Some(e))) = reach.get(&pos) {
        chain.push((pos, *e));
        pos = *e;
    }
    chain
}

/// What fencing a segment's replicas found.
struct Fenced {
    /// The replicas that answered with their incarnation, and what each holds.
    held: Vec<HeldBlocks>,
    /// Replicas that answered with another incarnation (restarted empty).
    lost: usize,
    /// Replicas the segment names.
    replicas: usize,
}

/// The blocks `[base, end)` one replica holds, and where it is reached.
struct HeldBlocks {
    blocks: Vec<(u64, u64)>,
    addr: String,
}

/// Runs of blocks recovery copies from replicas to object storage at once.
const RECOVERY_COPIES: usize = 16;

/// What one bulk read of a replica's blocks asks for (and one copied object holds at most).
const RUN_READ_BYTES: u32 = 8 << 20;

/// The blocks to copy, `(base, end, replica)` in offset order, split into runs of consecutive
/// blocks of one replica.
fn replica_runs(copies: &[(u64, u64, String)]) -> Vec<Vec<(u64, u64, String)>> {
    let mut runs: Vec<Vec<(u64, u64, String)>> = Vec::new();
    for c in copies {
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|(_, end, addr)| *end == c.0 && *addr == c.2) => run.push(c.clone()),
            _ => runs.push(vec![c.clone()]),
        }
    }
    runs
}

/// Copies a run of consecutive blocks one replica holds: read in bulk (`ReadRun`, up to
/// [`RUN_READ_BYTES`] a request) and stored together, one object per read. A replica that
/// answers nothing for the run's next block (it uploaded and dropped it since the fence, or is
/// a node from before `ReadRun`) is asked for that block alone, as [`copy_block`] does.
async fn copy_run(wal: &WalInner, rep: &Arc<Replication>, key: SegKey, seg: &SegmentMeta, run: Vec<(u64, u64, String)>) -> Result<()> {
    let mut rest = &run[..];
    while let Some((base, end, addr)) = rest.first() {
        let id = rep.request_id();
        let rx = rep.client(addr).call(id, &Request::ReadRun { id, seg: key, base: *base, max_bytes: RUN_READ_BYTES });
        let blocks = match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(Response::Blocks { blocks, .. })) => blocks,
            _ => Vec::new(),
        };
        let mut got = Vec::with_capacity(blocks.len());
        for (data, (b, e, _)) in blocks.into_iter().zip(rest) {
            got.push((checked_block(key, seg, *b, *e, &data)?, data));
        }
        if got.is_empty() {
            copy_block(wal, rep, key, seg, *base, *end, addr.clone()).await?;
            rest = &rest[1..];
            continue;
        }
        store_copied(wal, key, seg, &got).await?;
        metrics::counter!(m::RECOVERY_BLOCKS_COPIED_TOTAL).increment(got.len() as u64);
        rest = &rest[got.len()..];
    }
    Ok(())
}

/// A replica's block checked against the range recovery asked for; returns its header.
fn checked_block(key: SegKey, seg: &SegmentMeta, base: u64, end: u64, data: &Bytes) -> Result<crate::format::BlockHeader> {
    let k = keys::block(key.log_id, seg.id, seg.epoch, base, end);
    let h = decode_block_header(data).map_err(|source| WalError::Format { key: k.clone(), source })?;
    if h.base_offset != base || h.end_offset != end {
        return Err(WalError::Format {
            key: k,
            source: crate::error::FormatError::Inconsistent("replica block disagrees with its range".into()),
        });
    }
    Ok(h)
}

/// Stores blocks copied from a replica: a segment in shared objects gets one object holding
/// them all and their chunk keys in as few transactions as etcd allows; any other segment gets
/// each block as an object of its own (its layout names blocks by range).
async fn store_copied(wal: &WalInner, key: SegKey, seg: &SegmentMeta, got: &[(crate::format::BlockHeader, Bytes)]) -> Result<()> {
    if seg.layout != Layout::Chunks {
        let puts = got.iter().map(|(h, data)| async move {
            put_once(wal, &keys::block(key.log_id, seg.id, seg.epoch, h.base_offset, h.end_offset), data.clone()).await
        });
        return futures::future::try_join_all(puts).await.map(|_| ());
    }
    let chunks: Vec<(crate::format::ChunkEntry, Bytes)> = got
        .iter()
        .map(|(h, data)| {
            let e = crate::format::ChunkEntry {
                log_id: key.log_id,
                segment: seg.id,
                epoch: seg.epoch,
                base_offset: h.base_offset,
                end_offset: h.end_offset,
                pos: 0,
                len: 0,
            };
            (e, data.clone())
        })
        .collect();
    let (obj, entries) = crate::format::encode_shared(&chunks);
    let object = keys::shared_object(crate::util::now_ms(), crate::util::random_nonzero_id());
    // (a crash before the chunk keys leaves an object nothing points into: the collector's)
    put_once(wal, &object, obj).await?;
    let ops = got
        .iter()
        .zip(&entries)
        .map(|((h, _), e)| {
            let loc = ChunkLoc { object: object.clone(), pos: e.pos, len: e.len };
            let r = ChunkRef { base_offset: h.base_offset, end_offset: h.end_offset, max_timestamp: h.max_timestamp, loc };
            Op::put(keys::chunk(key.log_id, seg.id, h.base_offset), json(&r))
        })
        .collect();
    crate::meta::write_in_chunks(&*wal.meta, ops, crate::meta::batcher::DEFAULT_MAX_TXN_OPS).await?;
    Ok(())
}

/// Stores an object recovery copied; already there (a retry, or a replica's own upload of the
/// same bytes) is as good.
async fn put_once(wal: &WalInner, key: &str, data: Bytes) -> Result<()> {
    match wal.store.put_if_absent(key, data).await {
        Ok(()) | Err(StorageError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Copies one block a replica holds to object storage (or finds it stored since the listing).
/// A block of a segment in shared objects is stored as an object of its own that its chunk key
/// points to.
async fn copy_block(
    wal: &WalInner,
    rep: &Arc<Replication>,
    key: SegKey,
    seg: &SegmentMeta,
    base: u64,
    end: u64,
    addr: String,
) -> Result<()> {
    let id = rep.request_id();
    let k = keys::block(key.log_id, seg.id, seg.epoch, base, end);
    let rx = rep.client(&addr).call(id, &Request::Read { id, seg: key, base });
    let shared = seg.layout == Layout::Chunks;
    let data = match tokio::time::timeout(Duration::from_secs(10), rx).await {
        Ok(Ok(Response::Block { data: Some(d), .. })) => d,
        _ => {
            // Uploaded (and dropped by the replica) since the listing?
            let there = if shared {
                wal.meta.get(&keys::chunk(key.log_id, seg.id, base)).await.ok().flatten().is_some()
            } else {
                wal.store.get(&k).await.is_ok()
            };
            return match there {
                true => Ok(()),
                false => Err(WalError::AppendFailed(format!("reading block {base} of segment {} from {addr} failed", seg.id))),
            };
        }
    };
    let h = checked_block(key, seg, base, end, &data)?;
    let len = data.len() as u32;
    put_once(wal, &k, data).await?;
    if shared {
        let loc = ChunkLoc { object: k, pos: 0, len };
        let r = ChunkRef { base_offset: base, end_offset: end, max_timestamp: h.max_timestamp, loc };
        wal.meta.txn(Txn::new().then(Op::put(keys::chunk(key.log_id, seg.id, base), json(&r)))).await?;
    }
    Ok(())
}

/// Fences the segment's replicas with `epoch`; returns what the answering ones hold (blocks and
/// address), how many are lost (restarted empty), and how many there are. Fails (retriable)
/// when too few answer to be sure every acknowledged block is among the answers.
async fn fence_replicas(wal: &WalInner, rep: &Arc<Replication>, key: SegKey, seg: &SegmentMeta, epoch: u64) -> Result<Fenced> {
    let registered = rep.discover().await?;
    let asks = seg.replicas.iter().map(|r| {
        let now = registered.iter().find(|n| n.id == r.id).cloned();
        let rep = rep.clone();
        let r = r.clone();
        async move {
            let Some(now) = now else { return Answer::Unreachable };
            if now.incarnation != r.incarnation {
                return Answer::Lost;
            }
            let id = rep.request_id();
            let rx = rep.client(&now.addr).call(id, &Request::Fence { id, seg: key, epoch });
            match tokio::time::timeout(Duration::from_secs(3), rx).await {
                Ok(Ok(Response::Fenced { incarnation, blocks, .. })) if incarnation == r.incarnation => {
                    Answer::Held { blocks, addr: now.addr }
                }
                Ok(Ok(Response::Fenced { .. })) => Answer::Lost,
                _ => Answer::Unreachable,
            }
        }
    });
    let answers: Vec<Answer> = futures::future::join_all(asks).await;
    let n = seg.replicas.len();
    let ack = if seg.ack_quorum == 0 { wal.cfg.quorum.ack_quorum.min(n) } else { seg.ack_quorum };
    let need = n + 1 - ack.min(n);
    let held: Vec<HeldBlocks> = answers
        .iter()
        .filter_map(|a| {
            if let Answer::Held { blocks, addr } = a {
                Some(HeldBlocks { blocks: blocks.clone(), addr: addr.clone() })
            } else {
                None
            }
        })
        .collect();
    let lost = answers.iter().filter(|a| matches!(a, Answer::Lost)).count();
    if held.len() < need && lost < n {
        return Err(WalError::AppendFailed(format!(
            "cannot recover segment {} of log {}: {} of its {n} LogStore replicas answered, {need} needed",
            seg.id,
            key.log_id,
            held.len()
        )));
    }
    Ok(Fenced { held, lost, replicas: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_furthest_chain_of_overlapping_runs_is_found() {
        let runs = |v: &[(u64, u64)]| {
            let mut m: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            for (b, e) in v {
                m.entry(*b).or_default().push(*e);
            }
            m
        };
        // One replica merged [0,100) and nothing after it; another stored its runs to 150.
        assert_eq!(furthest(&runs(&[(0, 100), (0, 30), (30, 60), (60, 150)]), 0), vec![(0, 30), (30, 60), (60, 150)]);
        assert_eq!(furthest(&runs(&[(0, 10), (10, 20), (0, 20), (20, 25)]), 0).last(), Some(&(20, 25)));
        assert_eq!(furthest(&runs(&[(5, 10)]), 0), vec![]);
        assert_eq!(furthest(&runs(&[(0, 10), (20, 30)]), 0), vec![(0, 10)]);
    }
}
