//! Compaction: a log keeps the latest entry record per key (Kafka's `cleanup.policy=compact`).
//!
//! wal-core knows no record format: the application tells it the keys of an entry's records
//! and rewrites an entry to a subset of them ([`RecordKeys`]). A pass over one log, run by its
//! writer's process:
//! 1. The cleanable segments are a prefix of the sealed ones: never the last (active) segment,
//!    none past the caller's `upto`, none holding a record newer than `min_lag_ms`. Among them
//!    the *dirty* ones were never compacted. The pass runs when the dirty share of their bytes
//!    reaches `min_cleanable_dirty_ratio`, when a dirty segment is older than `max_lag_ms`, or
//!    when a compacted segment's tombstones are past their delete horizon.
//! 2. An offset map (key digest → latest offset) is built over the dirty segments, oldest first,
//!    stopping at the segment where it passes `max_keys`.
//! 3. Every cleanable segment up to the last one mapped is rewritten when something in it
//!    changes (always when dirty): a record stays when no later record has its key; keyless
//!    records go (Kafka drops them too); a tombstone stays until `delete_retention_ms` after its
//!    segment was first compacted (KIP-534's delete horizon, per segment); entries the
//!    application cannot key (control batches) stay whole. Offsets never move: an entry keeps
//!    its range with fewer records, an entry left with none becomes a hole in a
//!    [`FLAG_HOLES`] block, so readers see gaps and the block index stays dense.
//! 4. The new blocks go to a data object and an index under a fresh directory of the segment
//!    (`.../c{ms}-{random}/`); then one compare-and-swap replaces the segment record (layout
//!    [`Layout::Flushed`], [`Compacted`] set) and deletes its chunk records. A crash before the
//!    swap leaves the old segment whole (the new directory is an orphan, deleted once older than
//!    `shared_gc_grace_ms`); after it, the old objects are deleted (readers holding their place
//!    learn the new one on a miss), or, after a crash, by the sweep of a later pass.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::recovery::write_index;
use super::shared::load_segments;
use super::{decode_json, json, keys, Compacted, Layout, LogReader, SegmentMeta, SegmentState, Wal};
use crate::entry::StoredEntry;
use crate::error::{FormatError, Result, WalError};
use crate::format::{decode_block_header, encode_block_flagged, BlockInfo, FLAG_HOLES};
use crate::meta::{Compare, Op, Txn};
use crate::metrics as m;
use crate::storage::{put_retrying, PutError};
use crate::util::now_ms;

/// One record of an entry, as compaction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedRecord {
    pub offset: u64,
    /// A digest of the record's key (128 bits: collisions are out of reach); `None`: no key.
    pub key: Option<u128>,
    /// A delete marker: a key with no value.
    pub tombstone: bool,
}

/// What the application knows about its entries' records.
pub trait RecordKeys: Send + Sync + 'static {
    /// The entry's records in offset order; `None` keeps the entry whole whatever it holds.
    fn records(&self, entry: &StoredEntry) -> Option<Vec<KeyedRecord>>;
    /// The entry holding only the records at `keep` (ascending, a non-empty strict subset of
    /// its records), with the same offset range.
    fn retain(&self, entry: &StoredEntry, keep: &[u64]) -> std::result::Result<Bytes, String>;
}

/// When and how far one log is compacted (Kafka's topic configs of the same names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionPolicy {
    pub min_cleanable_dirty_ratio: f64,
    pub min_lag_ms: u64,
    /// `u64::MAX`: no maximum.
    pub max_lag_ms: u64,
    pub delete_retention_ms: u64,
    /// Only segments ending at or below this offset are touched (the caller's own state, such
    /// as producer snapshots, covers what lies below).
    pub upto: u64,
    /// Keys the offset map of one pass holds (Kafka's dedupe buffer).
    pub max_keys: usize,
    /// The size blocks of a rewritten segment are cut at.
    pub block_bytes: usize,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            min_cleanable_dirty_ratio: 0.5,
            min_lag_ms: 0,
            max_lag_ms: u64::MAX,
            delete_retention_ms: 86_400_000,
            upto: u64::MAX,
            max_keys: 4 << 20,
            block_bytes: 4 << 20,
        }
    }
}

/// What one pass over a log found and did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CompactionPass {
    /// Whether the pass compacted (its trigger held).
    pub ran: bool,
    pub segments_rewritten: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    /// Dirty bytes over cleanable bytes when the pass started (Kafka's cleanable ratio).
    pub cleanable_ratio: f64,
    /// How long the oldest cleanable dirty segment has waited (ms).
    pub lag_ms: u64,
}

impl Wal {
    /// One compaction pass over the log `name` (see the module text).
    pub async fn compact_log(&self, name: &str, policy: &CompactionPolicy, app: Arc<dyn RecordKeys>) -> Result<CompactionPass> {
        let sh = self.shared(name).await?;
        let reader = LogReader::new(self.inner.clone(), sh.clone());
        let start = sh.start_offset();
        let now = now_ms();
        let segs = load_segments(&**self.meta(), name).await?;
        let cleanable = cleanable_prefix(&segs, start, policy, now);
        let mut pass = CompactionPass::default();
        let dirty_bytes: u64 = cleanable.iter().filter(|s| s.compacted.is_none()).map(|s| s.bytes).sum();
        let total: u64 = cleanable.iter().map(|s| s.bytes).sum();
        pass.cleanable_ratio = if total == 0 { 0.0 } else { dirty_bytes as f64 / total as f64 };
        pass.lag_ms = cleanable.iter().filter(|s| s.compacted.is_none()).map(|s| now.saturating_sub(s.created_ms)).max().unwrap_or(0);
        let any_dirty = cleanable.iter().any(|s| s.compacted.is_none());
        let horizon_due = cleanable
            .iter()
            .filter_map(|s| s.compacted.as_ref())
            .any(|c| c.tombstones > 0 && c.first_ms.saturating_add(policy.delete_retention_ms) <= now);
        let due =
            (any_dirty && (pass.cleanable_ratio >= policy.min_cleanable_dirty_ratio || pass.lag_ms >= policy.max_lag_ms)) || horizon_due;
        if !due {
            return Ok(pass);
        }
        pass.ran = true;
        // The offset map over the dirty segments, oldest first.
        let mut map: HashMap<u128, u64> = HashMap::new();
        let mut mapped_end = 0; // index in `cleanable` one past the last segment mapped
        for (i, seg) in cleanable.iter().enumerate() {
            if seg.compacted.is_some() {
                if map.is_empty() {
                    mapped_end = i + 1; // clean segments before any dirty one: rewritable
                }
                continue;
            }
            if map.len() >= policy.max_keys && mapped_end > 0 {
                break;
            }
            for (info, src) in reader.segment_blocks(seg).await? {
                let entries = reader.fetch_uncached(&src).await?;
                pass.bytes_read += info.size as u64;
                let app = app.clone();
                let keyed = tokio::task::spawn_blocking(move || entries.iter().filter_map(|e| app.records(e)).collect::<Vec<_>>())
                    .await
                    .map_err(|e| WalError::InvalidArgument(format!("compaction task failed: {e}")))?;
                for r in keyed.into_iter().flatten() {
                    if let Some(k) = r.key {
                        let e = map.entry(k).or_insert(r.offset);
                        *e = (*e).max(r.offset);
                    }
                }
            }
            mapped_end = i + 1;
        }
        let map = Arc::new(map);
        for seg in &cleanable[..mapped_end] {
            match rewrite_segment(self, &reader, name, seg, &map, policy, app.clone(), now).await? {
                Some(done) => {
                    pass.segments_rewritten += 1;
                    pass.bytes_read += done.read;
                    pass.bytes_written += done.written;
                    pass.records_removed += done.removed;
                }
                None if seg.compacted.is_none() => break, // changed under us: the next pass sees it
                None => {}
            }
        }
        if pass.segments_rewritten > 0 {
            let _ = sh.refresh(&**self.meta()).await;
            if let Some(last) = cleanable[..mapped_end].last() {
                sh.tail().forget_until(last.end_offset);
            }
        }
        metrics::counter!(m::COMPACTION_PASSES_TOTAL).increment(1);
        metrics::counter!(m::COMPACTION_SEGMENTS_TOTAL).increment(pass.segments_rewritten as u64);
        metrics::counter!(m::COMPACTION_BYTES_READ_TOTAL).increment(pass.bytes_read);
        metrics::counter!(m::COMPACTION_BYTES_WRITTEN_TOTAL).increment(pass.bytes_written);
        metrics::counter!(m::COMPACTION_RECORDS_REMOVED_TOTAL).increment(pass.records_removed);
        Ok(pass)
    }

    /// Deletes objects under the log's compacted segments that their records no longer name:
    /// what a rewrite replaced (left by a crash between the swap and the deletion), and
    /// directories of rewrites that never committed once older than `shared_gc_grace_ms`.
    pub async fn sweep_compacted(&self, name: &str) -> Result<usize> {
        let sh = self.shared(name).await?;
        let mut deleted = 0;
        for seg in load_segments(&**self.meta(), name).await? {
            if let Some(c) = &seg.compacted {
                deleted += delete_replaced(self, sh.id, &seg, &c.dir).await?;
            }
        }
        Ok(deleted)
    }
}

/// The segments a pass may rewrite, oldest first (see the module text).
fn cleanable_prefix(segs: &[SegmentMeta], start: u64, policy: &CompactionPolicy, now: u64) -> Vec<SegmentMeta> {
    let mut out = Vec::new();
    for s in segs.iter().take(segs.len().saturating_sub(1)) {
        if s.end_offset <= start || s.end_offset == s.base_offset {
            continue; // below the log start (retention deletes it) or empty
        }
        let newest = if s.max_timestamp >= 0 { s.max_timestamp as u64 } else { s.created_ms };
        if s.state != SegmentState::Sealed || s.end_offset > policy.upto || newest.saturating_add(policy.min_lag_ms) > now {
            break;
        }
        out.push(s.clone());
    }
    out
}

/// What rewriting one segment did.
struct Rewritten {
    read: u64,
    written: u64,
    removed: u64,
}

/// The segment's entries as compaction leaves them, cut into blocks.
struct Output {
    blocks: Vec<Bytes>,
    infos: Vec<BlockInfo>,
    cur: Vec<StoredEntry>,
    cur_bytes: usize,
    limit: usize,
    ids: (u64, u64, u64),
}

impl Output {
    fn push(&mut self, e: StoredEntry) {
        if e.data.is_empty() {
            // a hole: merged into the hole before it when there is one
            if let Some(last) = self.cur.last_mut().filter(|l| l.data.is_empty() && l.count.checked_add(e.count).is_some()) {
                last.count += e.count;
                return;
            }
        }
        self.cur_bytes += e.data.len() + 16;
        self.cur.push(e);
        if self.cur_bytes >= self.limit {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if self.cur.is_empty() {
            return;
        }
        let (log, seg, epoch) = self.ids;
        let b = encode_block_flagged(log, seg, epoch, &self.cur, FLAG_HOLES);
        let h = decode_block_header(&b).expect("a block just encoded");
        self.infos.push(BlockInfo {
            base_offset: h.base_offset,
            end_offset: h.end_offset,
            max_timestamp: h.max_timestamp,
            size: b.len() as u32,
        });
        self.blocks.push(b);
        self.cur.clear();
        self.cur_bytes = 0;
    }
}

/// What the map and the rules keep of one entry: `None` = the entry as it is.
fn decide(records: &[KeyedRecord], map: &HashMap<u128, u64>, drop_tombstones: bool) -> Option<Vec<u64>> {
    let keep: Vec<u64> = records
        .iter()
        .filter(|r| match r.key {
            None => false,
            Some(k) => map.get(&k).is_none_or(|&latest| latest <= r.offset) && !(r.tombstone && drop_tombstones),
        })
        .map(|r| r.offset)
        .collect();
    (keep.len() != records.len()).then_some(keep)
}

/// One entry as compaction leaves it (a hole when no record stays), with the records it lost
/// and the tombstones it keeps.
fn keep_of(
    app: &dyn RecordKeys,
    e: &StoredEntry,
    map: &HashMap<u128, u64>,
    drop_tombstones: bool,
) -> std::result::Result<(StoredEntry, u64, u64), String> {
    let Some(records) = app.records(e) else { return Ok((e.clone(), 0, 0)) };
    let stones = |keep: &dyn Fn(&KeyedRecord) -> bool| records.iter().filter(|r| r.tombstone && keep(r)).count() as u64;
    Ok(match decide(&records, map, drop_tombstones) {
        None => (e.clone(), 0, stones(&|_| true)),
        Some(keep) if keep.is_empty() => (StoredEntry { data: Bytes::new(), max_timestamp: -1, ..e.clone() }, records.len() as u64, 0),
        Some(keep) => {
            let data = app.retain(e, &keep)?;
            let gone = (records.len() - keep.len()) as u64;
            (StoredEntry { data, ..e.clone() }, gone, stones(&|r| keep.binary_search(&r.offset).is_ok()))
        }
    })
}

/// Rewrites one segment if anything in it changes (always when it is dirty); `None` when it
/// was left as it is (nothing to remove, or its record changed meanwhile).
#[allow(clippy::too_many_arguments)]
async fn rewrite_segment(
    wal: &Wal,
    reader: &LogReader,
    name: &str,
    seg: &SegmentMeta,
    map: &Arc<HashMap<u128, u64>>,
    policy: &CompactionPolicy,
    app: Arc<dyn RecordKeys>,
    now: u64,
) -> Result<Option<Rewritten>> {
    let meta = &**wal.meta();
    let Some(kv) = meta.get(&keys::segment(name, seg.id)).await? else { return Ok(None) };
    let current: SegmentMeta = decode_json(&kv.key, &kv.value)?;
    if current != *seg {
        return Ok(None);
    }
    let log_id = reader.log_id();
    let drop_tombstones = seg.compacted.as_ref().is_some_and(|c| c.first_ms.saturating_add(policy.delete_retention_ms) <= now);
    let mut out = Output {
        blocks: Vec::new(),
        infos: Vec::new(),
        cur: Vec::new(),
        cur_bytes: 0,
        limit: policy.block_bytes.max(1),
        ids: (log_id, seg.id, seg.epoch),
    };
    let (mut read, mut removed, mut tombstones) = (0u64, 0u64, 0u64);
    for (info, src) in reader.segment_blocks(seg).await? {
        let entries = reader.fetch_uncached(&src).await?;
        read += info.size as u64;
        // (holes of an earlier compaction: the offsets between the entries the block returns)
        let mut pos = info.base_offset;
        let (app, map) = (app.clone(), map.clone());
        let kept = tokio::task::spawn_blocking(move || {
            entries.iter().map(|e| keep_of(&*app, e, &map, drop_tombstones)).collect::<std::result::Result<Vec<_>, String>>()
        })
        .await
        .map_err(|e| WalError::InvalidArgument(format!("compaction task failed: {e}")))?
        .map_err(|e| WalError::Format { key: name.to_string(), source: FormatError::Inconsistent(e) })?;
        for (e, gone, stones) in kept {
            if e.offset > pos {
                out.push(StoredEntry { offset: pos, count: (e.offset - pos) as u32, max_timestamp: -1, data: Bytes::new() });
            }
            pos = e.end_offset();
            removed += gone;
            tombstones += stones;
            out.push(e);
        }
        if pos < info.end_offset {
            out.push(StoredEntry { offset: pos, count: (info.end_offset - pos) as u32, max_timestamp: -1, data: Bytes::new() });
        }
    }
    out.cut();
    if removed == 0 && seg.compacted.is_some() {
        return Ok(None); // nothing changes
    }
    let dir = format!("c{:013}-{:016x}", now_ms(), crate::util::random_nonzero_id());
    let compacted = Compacted { dir: dir.clone(), first_ms: seg.compacted.as_ref().map_or(now, |c| c.first_ms), tombstones };
    let mut data = BytesMut::with_capacity(out.blocks.iter().map(|b| b.len()).sum());
    for b in &out.blocks {
        data.extend_from_slice(b);
    }
    let written = data.len() as u64;
    let new_meta =
        SegmentMeta { layout: Layout::Flushed, bytes: written, blocks: out.infos.len() as u32, compacted: Some(compacted), ..seg.clone() };
    let store = &**wal.store();
    match put_retrying(store, &new_meta.data_key(log_id), data.freeze(), wal.inner_retry_policy()).await {
        Ok(()) => {}
        Err(PutError::Conflict(k)) => {
            return Err(WalError::Format { key: k, source: FormatError::Inconsistent("a fresh compaction directory exists".into()) })
        }
        Err(PutError::Failed(e)) => return Err(e.into()),
    }
    write_index(store, log_id, &new_meta, &out.infos).await?;
    let txn = Txn::new()
        .when(Compare::ModRevision(keys::segment(name, seg.id), kv.mod_revision))
        .then(Op::put(keys::segment(name, seg.id), json(&new_meta)))
        .then(Op::DeletePrefix(keys::chunks(log_id, seg.id)))
        .then(Op::DeletePrefix(keys::legacy_chunks(name, seg.id)));
    if !meta.txn(txn).await?.succeeded {
        // ours alone, never named by a record
        let prefix = format!("{}{dir}/", keys::segment_objects(log_id, seg.id, seg.epoch));
        super::cleaner::delete_objects(store, &prefix).await?;
        return Ok(None);
    }
    if let Err(e) = delete_replaced(wal, log_id, &new_meta, &dir).await {
        tracing::warn!(log = name, segment = seg.id, error = %e, "deleting a compacted segment's old objects failed; a later sweep retries");
    }
    tracing::debug!(log = name, segment = seg.id, read, written, removed, "segment compacted");
    Ok(Some(Rewritten { read, written, removed }))
}

/// Deletes the segment's objects outside its current directory `dir`: everything a rewrite
/// replaced, and other compaction directories once older than the grace period (a younger
/// one may belong to a rewrite about to commit elsewhere, which then fails its swap).
async fn delete_replaced(wal: &Wal, log_id: u64, seg: &SegmentMeta, dir: &str) -> Result<usize> {
    let prefix = keys::segment_objects(log_id, seg.id, seg.epoch);
    let grace = wal.config().shared_gc_grace_ms;
    let now = now_ms();
    let mut deleted = 0;
    for o in wal.store().list(&prefix).await? {
        let rest = &o.key[prefix.len()..];
        let Some((first, _)) = rest.split_once('/') else {
            wal.store().delete(&o.key).await?; // the data, index or blocks the rewrite replaced
            deleted += 1;
            continue;
        };
        if first == dir {
            continue;
        }
        let created = first.strip_prefix('c').and_then(|r| r.split('-').next()).and_then(|ms| ms.parse::<u64>().ok());
        if created.is_some_and(|ms| now.saturating_sub(ms) >= grace) {
            wal.store().delete(&o.key).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: u64, key: Option<u128>, tombstone: bool) -> KeyedRecord {
        KeyedRecord { offset, key, tombstone }
    }

    #[test]
    fn the_latest_record_per_key_stays() {
        let map: HashMap<u128, u64> = [(1, 5), (2, 3)].into_iter().collect();
        let records = [rec(3, Some(1), false), rec(4, Some(2), false), rec(5, Some(1), false), rec(6, None, false), rec(7, Some(9), false)];
        // key 1's latest is 5; key 2's latest (3) is older than its record at 4 (a clean segment
        // record of a key mapped earlier); keyless goes; an unmapped key stays
        assert_eq!(decide(&records, &map, false), Some(vec![4, 5, 7]));
        assert_eq!(decide(&records[1..2], &map, false), None, "nothing removed: the entry as it is");
        // tombstones: kept until their horizon
        let t = [rec(5, Some(1), true)];
        assert_eq!(decide(&t, &map, false), None);
        assert_eq!(decide(&t, &map, true), Some(vec![]));
    }

    fn seg(id: u64, base: u64, end: u64, ts: i64, compacted: bool) -> SegmentMeta {
        SegmentMeta {
            state: SegmentState::Sealed,
            end_offset: end,
            bytes: 100,
            max_timestamp: ts,
            compacted: compacted.then(|| Compacted { dir: "c".into(), first_ms: 0, tombstones: 0 }),
            ..SegmentMeta::active(id, 1, base)
        }
    }

    #[test]
    fn cleanable_segments_are_a_sealed_prefix_old_enough_and_below_upto() {
        let segs = vec![seg(0, 0, 10, 100, true), seg(1, 10, 20, 200, false), seg(2, 20, 30, 900, false), seg(3, 30, 30, -1, false)];
        let p = |min_lag_ms, upto| CompactionPolicy { min_lag_ms, upto, ..Default::default() };
        let ids = |v: Vec<SegmentMeta>| v.iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(ids(cleanable_prefix(&segs, 0, &p(0, u64::MAX), 1000)), vec![0, 1, 2], "never the last");
        assert_eq!(ids(cleanable_prefix(&segs, 0, &p(500, u64::MAX), 1000)), vec![0, 1], "min lag");
        assert_eq!(ids(cleanable_prefix(&segs, 0, &p(0, 25), 1000)), vec![0, 1], "upto");
        assert_eq!(ids(cleanable_prefix(&segs, 10, &p(0, u64::MAX), 1000)), vec![1, 2], "below the start");
    }
}
