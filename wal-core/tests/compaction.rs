//! Compaction through the WAL API with a toy record format (an entry is a JSON list of
//! `(offset delta, key, value)`): the latest record per key stays at its offset, tombstones stay
//! until their horizon, segments of both layouts are rewritten, other processes read the result,
//! and a crash at any step of a pass leaves the log readable with every latest record in place.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use wal_core::log::{CompactionPolicy, KeyedRecord, RecordKeys, WriterOptions};
use wal_core::{Entry, ObjectStore, StoredEntry, Wal, WalConfig};

type Rec = (u32, Option<String>, Option<String>);

struct Toy;

fn digest(k: &str) -> u128 {
    // (the test's keys are short and distinct: their bytes are their digest)
    let mut b = [0u8; 16];
    b[..k.len()].copy_from_slice(k.as_bytes());
    u128::from_le_bytes(b)
}

impl RecordKeys for Toy {
    fn records(&self, e: &StoredEntry) -> Option<Vec<KeyedRecord>> {
        let recs: Vec<Rec> = serde_json::from_slice(&e.data).ok()?;
        Some(
            recs.iter()
                .map(|(d, k, v)| KeyedRecord { offset: e.offset + *d as u64, key: k.as_deref().map(digest), tombstone: v.is_none() })
                .collect(),
        )
    }
    fn retain(&self, e: &StoredEntry, keep: &[u64]) -> Result<Bytes, String> {
        let recs: Vec<Rec> = serde_json::from_slice(&e.data).map_err(|e| e.to_string())?;
        let kept: Vec<&Rec> = recs.iter().filter(|r| keep.contains(&(e.offset + r.0 as u64))).collect();
        Ok(Bytes::from(serde_json::to_vec(&kept).unwrap()))
    }
}

/// Every record the log returns: offset -> (key, value).
async fn records(wal: &Wal, name: &str) -> BTreeMap<u64, (Option<String>, Option<String>)> {
    let r = wal.open_reader(name).await.unwrap();
    r.refresh().await.unwrap();
    let mut out = BTreeMap::new();
    let mut pos = r.start_offset();
    while pos < r.durable_end() {
        let batch = r.read(pos, 1 << 20).await.unwrap();
        if batch.is_empty() {
            break; // only holes up to the end
        }
        for e in batch {
            let recs: Vec<Rec> = serde_json::from_slice(&e.data).unwrap();
            for (d, k, v) in recs {
                assert!(d < e.count, "a record inside its entry's range");
                out.insert(e.offset + d as u64, (k, v));
            }
            pos = e.end_offset();
        }
    }
    out
}

/// Entries of `per` records each, keys `k{n % keys}`, values naming their write; every tenth
/// write of a key a tombstone when `tombstones`.
async fn write(wal: &Wal, name: &str, entries: u32, per: u32, keys: u32, tombstones: bool) -> BTreeMap<String, Option<String>> {
    let w = wal.open_writer_with(name, WriterOptions { segment_max_bytes: Some(2000), ..Default::default() }).await.unwrap();
    let mut latest = BTreeMap::new();
    let mut n = 0u32;
    for _ in 0..entries {
        let mut recs: Vec<Rec> = Vec::new();
        for d in 0..per {
            let key = format!("k{}", n % keys);
            let value = (!(tombstones && n % 10 == 9)).then(|| format!("v{n}"));
            latest.insert(key.clone(), value.clone());
            recs.push((d, Some(key), value));
            n += 1;
        }
        w.append(Entry::new(per, wal_core::util::now_ms() as i64, serde_json::to_vec(&recs).unwrap())).await.unwrap();
    }
    w.close().await.unwrap();
    latest
}

fn policy() -> CompactionPolicy {
    CompactionPolicy { min_cleanable_dirty_ratio: 0.0, block_bytes: 1500, ..Default::default() }
}

/// What a compacted log must still hold: for every key, its latest write at its offset, and
/// nothing newer than what was written.
fn check_latest(
    before: &BTreeMap<u64, (Option<String>, Option<String>)>,
    after: &BTreeMap<u64, (Option<String>, Option<String>)>,
    tail_from: u64,
) {
    let mut last: BTreeMap<&Option<String>, u64> = BTreeMap::new();
    for (o, (k, _)) in before {
        last.insert(k, *o);
    }
    for (o, rec) in after {
        assert_eq!(before.get(o), Some(rec), "offset {o} holds what was written there");
    }
    for (k, o) in &last {
        assert!(after.contains_key(o) || (before[o].1.is_none()), "the latest record of {k:?} (offset {o}) is gone");
    }
    for (o, rec) in before.range(tail_from..) {
        assert_eq!(after.get(o), Some(rec), "the active segment is never compacted (offset {o})");
    }
}

#[tokio::test]
async fn the_latest_record_per_key_stays_at_its_offset() {
    for shared in [false, true] {
        let cfg = WalConfig { shared_objects: shared, segment_max_chunks: 3, shared_gc_grace_ms: 0, ..small_config() };
        let m = mem_wal(cfg.clone());
        m.wal.create_log("c").await.unwrap();
        write(&m.wal, "c", 60, 4, 7, false).await;
        let before = records(&m.wal, "c").await;
        let segs = m.wal.segments("c").await.unwrap();
        assert!(segs.len() > 3, "the writes rolled segments: {}", segs.len());
        let tail_from = segs.last().unwrap().base_offset;
        // a reader of another process that knows the old block places (and caches no block)
        let early = reopen(&m, WalConfig { block_cache_blocks: 0, ..cfg.clone() }).open_reader("c").await.unwrap();
        assert!(!early.read(0, 100).await.unwrap().is_empty());
        let pass = m.wal.compact_log("c", &policy(), Arc::new(Toy)).await.unwrap();
        println!("shared={shared}: {pass:?}");
        // its next read finds the old objects gone (or still there, in shared objects) and
        // continues from the new places
        let first = early.read(0, 100).await.unwrap();
        assert!(!first.is_empty());
        assert!(pass.ran && pass.segments_rewritten == segs.len() - 1 && pass.records_removed > 0, "{pass:?}");
        let after = records(&m.wal, "c").await;
        check_latest(&before, &after, tail_from);
        // below the active segment every key appears at most once
        let keys: Vec<_> = after.range(..tail_from).map(|(_, (k, _))| k.clone()).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(keys.len(), unique.len(), "one record per key in the compacted segments");
        // another process reads the same; a second pass has nothing to do
        assert_eq!(records(&reopen(&m, cfg.clone()), "c").await, after);
        let again = m.wal.compact_log("c", &policy(), Arc::new(Toy)).await.unwrap();
        assert!(!again.ran, "nothing dirty: {again:?}");
        // no object the records do not name remains (the old segment objects went)
        m.wal.sweep_compacted("c").await.unwrap();
        for s in m.wal.segments("c").await.unwrap().iter().filter(|s| s.compacted.is_some()) {
            let prefix = format!("logs/{:016x}/{:010}-e{}/", m.wal.log_info("c").await.unwrap().id, s.id, s.epoch);
            let objs: Vec<String> = m.store.inner().list(&prefix).await.unwrap().into_iter().map(|o| o.key).collect();
            let dir = &s.compacted.as_ref().unwrap().dir;
            assert!(objs.iter().all(|k| k.contains(dir.as_str())), "{objs:?}");
            assert_eq!(objs.len(), 2, "data and index: {objs:?}");
        }
        // more writes make the log dirty again: a pass rewrites clean segments too
        write(&m.wal, "c", 30, 4, 7, false).await;
        let before = records(&m.wal, "c").await;
        let tail_from = m.wal.segments("c").await.unwrap().last().unwrap().base_offset;
        let pass = m.wal.compact_log("c", &policy(), Arc::new(Toy)).await.unwrap();
        assert!(pass.ran && pass.records_removed > 0);
        check_latest(&before, &records(&m.wal, "c").await, tail_from);
    }
}

#[tokio::test]
async fn tombstones_stay_until_their_horizon_then_go() {
    let m = mem_wal(small_config());
    m.wal.create_log("t").await.unwrap();
    write(&m.wal, "t", 40, 5, 5, true).await;
    let tail_from = m.wal.segments("t").await.unwrap().last().unwrap().base_offset;
    let p = CompactionPolicy { delete_retention_ms: 3_600_000, ..policy() };
    m.wal.compact_log("t", &p, Arc::new(Toy)).await.unwrap();
    let after = records(&m.wal, "t").await;
    let stones = after.range(..tail_from).filter(|(_, (_, v))| v.is_none()).count();
    assert!(stones > 0, "tombstones kept on the first pass");
    // within the horizon: nothing due
    assert!(!m.wal.compact_log("t", &p, Arc::new(Toy)).await.unwrap().ran);
    // past it (a zero retention), the pass is due without any dirty data and drops them
    let p0 = CompactionPolicy { delete_retention_ms: 0, ..policy() };
    let pass = m.wal.compact_log("t", &p0, Arc::new(Toy)).await.unwrap();
    assert!(pass.ran && pass.records_removed as usize >= stones, "{pass:?}");
    let last = records(&m.wal, "t").await;
    assert_eq!(last.range(..tail_from).filter(|(_, (_, v))| v.is_none()).count(), 0);
    assert_eq!(last.range(..tail_from).count(), after.range(..tail_from).count() - stones);
}

#[tokio::test]
async fn the_dirty_ratio_min_lag_and_upto_hold_a_pass_back() {
    let m = mem_wal(small_config());
    m.wal.create_log("r").await.unwrap();
    write(&m.wal, "r", 40, 4, 5, false).await;
    let ratio = CompactionPolicy { min_cleanable_dirty_ratio: 1.5, ..policy() };
    let pass = m.wal.compact_log("r", &ratio, Arc::new(Toy)).await.unwrap();
    assert!(!pass.ran && pass.cleanable_ratio == 1.0, "{pass:?}");
    // ... unless a dirty segment waited past max.compaction.lag.ms
    let lag = CompactionPolicy { max_lag_ms: 0, ..ratio };
    assert!(m.wal.compact_log("r", &lag, Arc::new(Toy)).await.unwrap().ran);
    write(&m.wal, "r", 40, 4, 5, false).await;
    // records written just now are younger than min.compaction.lag.ms
    let young = m.wal.compact_log("r", &CompactionPolicy { min_lag_ms: 3_600_000, ..policy() }, Arc::new(Toy)).await.unwrap();
    assert!(!young.ran, "{young:?}");
    let p = m.wal.compact_log("r", &CompactionPolicy { upto: 0, ..policy() }, Arc::new(Toy)).await.unwrap();
    assert!(!p.ran, "nothing below upto: {p:?}");
    assert!(m.wal.compact_log("r", &policy(), Arc::new(Toy)).await.unwrap().ran);
}

#[tokio::test]
async fn a_crash_at_any_step_leaves_the_log_readable_and_complete() {
    use wal_core::storage::faulty::FaultOps;
    for seed in 0..24u64 {
        let cfg =
            WalConfig { shared_objects: seed % 2 == 0, segment_max_chunks: 3, shared_gc_grace_ms: 0, upload_attempts: 1, ..small_config() };
        let store = Arc::new(wal_core::storage::faulty::FaultyStore::new(wal_core::storage::memory::MemoryStore::new(), seed));
        let meta = Arc::new(wal_core::meta::faulty::FaultyMeta::new(wal_core::meta::embedded::EmbeddedMeta::in_memory()));
        let wal = Wal::new(store.clone(), meta.clone(), cfg.clone()).unwrap();
        let reopen = |cfg: WalConfig| Wal::new(store.clone(), meta.clone(), cfg).unwrap();
        let m = (wal, store.clone(), meta.clone());
        let m = Crash { wal: m.0, store: m.1, meta: m.2 };
        m.wal.create_log("x").await.unwrap();
        write(&m.wal, "x", 40, 4, 6, seed % 3 == 0).await;
        let before = records(&m.wal, "x").await;
        let tail_from = m.wal.segments("x").await.unwrap().last().unwrap().base_offset;
        // The pass dies at a random storage call (a GET, a PUT, a delete) or loses the answer
        // of its swap.
        m.store.set_ops(FaultOps::All);
        m.store.set_fail_probability(0.02 + (seed % 6) as f64 * 0.03);
        if seed % 4 == 1 {
            m.meta.lose_answers("seg/", 1);
        }
        let crashed = m.wal.compact_log("x", &policy(), Arc::new(Toy)).await;
        println!("seed {seed}: the pass {}", if crashed.is_ok() { "finished" } else { "crashed" });
        m.store.heal();
        m.meta.heal();
        // a new process reads every latest record where it was written
        let other = reopen(cfg.clone());
        check_latest(&before, &records(&other, "x").await, tail_from);
        // and finishes the work; nothing is left that the records do not name
        let pass = other.compact_log("x", &policy(), Arc::new(Toy)).await.unwrap();
        let done = records(&other, "x").await;
        check_latest(&before, &done, tail_from);
        other.sweep_compacted("x").await.unwrap();
        let segs = other.segments("x").await.unwrap();
        assert!(
            segs[..segs.len() - 1].iter().all(|s| s.compacted.is_some()),
            "seed {seed}: every sealed segment compacted ({crashed:?}, {pass:?})"
        );
        let objects = m.store.inner().list("logs/").await.unwrap();
        for o in &objects {
            let named = segs.iter().any(|s| match &s.compacted {
                Some(c) => o.key.contains(&format!("{:010}-e{}/{}/", s.id, s.epoch, c.dir)),
                None => o.key.contains(&format!("{:010}-e{}/", s.id, s.epoch)),
            });
            assert!(named, "seed {seed}: {} is named by no segment record", o.key);
        }
        assert_eq!(records(&reopen(cfg), "x").await, done);
    }
}

struct Crash {
    wal: Wal,
    store: Arc<wal_core::storage::faulty::FaultyStore<wal_core::storage::memory::MemoryStore>>,
    meta: Arc<wal_core::meta::faulty::FaultyMeta<wal_core::meta::embedded::EmbeddedMeta>>,
}
