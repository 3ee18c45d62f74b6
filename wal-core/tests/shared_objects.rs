//! Shared write objects and segment flushing (MemoryBuffer): one object holds the blocks of many
//! logs, commits of those logs merge, each log stays fenced on its own, sealed segments are
//! rewritten into per-log objects, and shared objects nothing points into are collected; at no
//! point (crashes included) is an acknowledged entry lost, duplicated or misplaced.

mod common;

use std::collections::BTreeMap;

use common::*;
use rand::{Rng, SeedableRng};
use wal_core::{MetaStore, ObjectStore, Wal, WalConfig, WalError};

fn shared_config() -> WalConfig {
    WalConfig { shared_objects: true, put_budget_per_sec: 20, shared_gc_grace_ms: 0, ..small_config() }
}

async fn count(m: &MemWal, prefix: &str) -> usize {
    m.store.inner().list(prefix).await.unwrap().len()
}

async fn chunk_records(m: &MemWal) -> usize {
    m.meta.list("chunk/").await.unwrap().kvs.len()
}

async fn seqs(wal: &Wal, name: &str) -> Vec<u64> {
    read_all(wal, name, 0).await.iter().map(|e| seq_of(&e.data)).collect()
}

#[tokio::test]
async fn blocks_of_many_logs_share_objects_and_read_back_everywhere() {
    let m = mem_wal(shared_config());
    let logs: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    for l in &logs {
        m.wal.create_log(l).await.unwrap();
    }
    let acked = append_concurrently(&m.wal, &logs, 50).await;
    let objects = count(&m, "shared/").await;
    let blocks = chunk_records(&m).await;
    println!("{blocks} blocks in {objects} shared objects");
    assert!(blocks >= 20, "every log wrote blocks");
    assert!(objects * 3 <= blocks, "objects follow bytes, not logs: {objects} objects for {blocks} blocks");
    assert_eq!(count(&m, "logs/").await, 0, "no per-block objects in this mode");
    let other = reopen(&m, shared_config());
    for (name, want) in &acked {
        assert_eq!(&seqs(&m.wal, name).await, want, "{name} in the writing process");
        assert_eq!(&seqs(&other, name).await, want, "{name} in another process");
    }
}

#[tokio::test]
async fn a_fenced_log_fails_alone_when_its_blocks_share_an_object_with_others() {
    let m = mem_wal(WalConfig { put_budget_per_sec: 1, ..shared_config() });
    for l in ["x", "y"] {
        m.wal.create_log(l).await.unwrap();
    }
    let (wx, wy) = (m.wal.open_writer("x").await.unwrap(), m.wal.open_writer("y").await.unwrap());
    wx.append(entry(0, 100)).await.unwrap();
    wy.append(entry(0, 100)).await.unwrap();
    // Another process takes log x over.
    let other = reopen(&m, shared_config());
    let nx = other.open_writer("x").await.unwrap();
    // With the budget spent, both blocks wait for the same object.
    let (tx, ty) = (wx.submit(entry(1, 100)).await.unwrap(), wy.submit(entry(1, 100)).await.unwrap());
    let (rx, ry) = tokio::join!(tx.durable(), ty.durable());
    assert!(matches!(rx, Err(WalError::Fenced { .. })), "the stale writer of x: {rx:?}");
    ry.expect("y shares the object and is not fenced");
    nx.append(entry(2, 100)).await.unwrap();
    let fresh = reopen(&m, shared_config());
    assert_eq!(seqs(&fresh, "x").await, vec![0, 2], "x holds the old writer's acknowledged entry and the new writer's");
    assert_eq!(seqs(&fresh, "y").await, vec![0, 1]);
}

#[tokio::test]
async fn segment_flushing_rewrites_sealed_segments_and_collects_shared_objects() {
    let cfg = WalConfig { segment_max_chunks: 4, ..shared_config() };
    let m = mem_wal(cfg.clone());
    let logs: Vec<String> = (0..3).map(|i| format!("f{i}")).collect();
    for l in &logs {
        m.wal.create_log(l).await.unwrap();
    }
    // A reader that learns the chunks' places before the rewrite.
    let acked = append_concurrently(&m.wal, &logs[..2], 40).await;
    let early: Vec<u64> = seqs(&m.wal, &logs[0]).await;
    assert_eq!(&early, &acked[&logs[0]]);
    // The third log keeps an active segment (still in shared objects) across the rewrite.
    let w2 = m.wal.open_writer(&logs[2]).await.unwrap();
    for seq in 0..3 {
        w2.append(entry(seq, 300)).await.unwrap();
    }
    let objects_before = count(&m, "shared/").await;
    // Writers of f0 and f1 are closed: a new owner (this process again) flushes them.
    let _w0 = m.wal.open_writer(&logs[0]).await.unwrap();
    let _w1 = m.wal.open_writer(&logs[1]).await.unwrap();
    let mut sealed = 0;
    for l in &logs[..2] {
        let segs = m.wal.segments(l).await.unwrap();
        sealed +=
            segs.iter().filter(|s| s.state == wal_core::log::SegmentState::Sealed && s.layout == wal_core::log::Layout::Chunks).count();
    }
    assert!(sealed >= 2, "closing and reopening sealed at least one segment per log");
    let pass = m.wal.flush_segments_once(true).await.unwrap();
    println!("{pass:?}, {objects_before} shared objects before");
    assert_eq!(pass.segments_flushed, sealed, "{pass:?}");
    assert!(pass.shared_objects_deleted > 0);
    let left = count(&m, "shared/").await;
    assert!(left < objects_before, "{left} of {objects_before} shared objects left");
    assert!(count(&m, "logs/").await > 0, "segment data and index objects");
    for l in &logs[..2] {
        let segs = m.wal.segments(l).await.unwrap();
        assert!(segs.iter().filter(|s| s.state == wal_core::log::SegmentState::Sealed).all(|s| s.layout == wal_core::log::Layout::Flushed));
    }
    // The early reader's cached places point into collected objects: it finds the new ones.
    for (name, want) in &acked {
        assert_eq!(&seqs(&m.wal, name).await, want, "{name} after the rewrite, same process");
        assert_eq!(&seqs(&reopen(&m, cfg.clone()), name).await, want, "{name} after the rewrite, another process");
    }
    assert_eq!(seqs(&m.wal, &logs[2]).await, vec![0, 1, 2], "the active segment's objects were kept");
    // A second pass finds nothing more to do.
    let again = m.wal.flush_segments_once(true).await.unwrap();
    assert_eq!((again.segments_flushed, again.shared_objects_deleted), (0, 0));
}

#[tokio::test]
async fn retention_deletes_shared_and_rewritten_segments_alike() {
    let cfg = WalConfig { segment_max_chunks: 3, ..shared_config() };
    let m = mem_wal(cfg.clone());
    m.wal.create_log("r").await.unwrap();
    let w = m.wal.open_writer("r").await.unwrap();
    for seq in 0..30 {
        w.append(entry(seq, 300)).await.unwrap();
    }
    // Flush the older half only: rewrite, then more segments in shared objects.
    m.wal.flush_segments_once(false).await.unwrap();
    for seq in 30..60 {
        w.append(entry(seq, 300)).await.unwrap();
    }
    let end = m.wal.log_info("r").await.unwrap().end_offset;
    let cut = end * 3 / 4;
    m.wal.truncate("r", cut).await.unwrap();
    let before = stored_pieces(&m).await;
    assert!(m.wal.clean_once().await.unwrap() > 0);
    assert!(stored_pieces(&m).await < before);
    m.wal.flush_segments_once(true).await.unwrap();
    let all = read_all(&reopen(&m, cfg), "r", cut).await;
    assert!(all.first().unwrap().offset <= cut);
    assert_eq!(all.last().unwrap().end_offset(), end);
}

/// A seeded crash model: writers of three logs append, crash (abort) at random moments, are
/// reopened, and segment flushing and collection run in between; afterwards every acknowledged
/// entry is readable exactly once, in order, and nothing unacknowledged appears twice.
#[tokio::test]
async fn any_crash_point_leaves_every_acknowledged_entry_readable_once() {
    for seed in 0..6u64 {
        let cfg = WalConfig { segment_max_chunks: 3, put_budget_per_sec: 200, ..shared_config() };
        let m = mem_wal(cfg.clone());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let logs = ["a", "b", "c"];
        for l in logs {
            m.wal.create_log(l).await.unwrap();
        }
        let mut acked: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        let mut wal = reopen(&m, cfg.clone());
        let mut seq = 0u64;
        for _round in 0..8 {
            let mut writers = Vec::new();
            for l in logs {
                writers.push((l, wal.open_writer(l).await.unwrap()));
            }
            let mut pending = Vec::new();
            for _ in 0..rng.gen_range(5..25) {
                let (l, w) = &writers[rng.gen_range(0..writers.len())];
                seq += 1;
                pending.push((*l, seq, w.submit(entry(seq, 200)).await.unwrap()));
            }
            // Crash after a random number of acknowledgements were awaited.
            let wait = rng.gen_range(0..=pending.len());
            for (l, s, t) in pending.drain(..wait) {
                t.durable().await.unwrap();
                acked.entry(l).or_default().push(s);
            }
            for (_, w) in &writers {
                w.abort();
            }
            for (l, s, t) in pending {
                // Resolved as durable before the crash: acknowledged.
                if let Ok(Ok(_)) = tokio::time::timeout(std::time::Duration::from_millis(1), t.durable()).await {
                    acked.entry(l).or_default().push(s);
                }
            }
            if rng.gen_bool(0.5) {
                // A new process flushes and collects (it must own the logs to flush them).
                wal = reopen(&m, cfg.clone());
                for l in logs {
                    wal.open_writer(l).await.unwrap().abort();
                }
                let _ = wal.flush_segments_once(rng.gen_bool(0.5)).await.unwrap();
            }
            wal = reopen(&m, cfg.clone());
        }
        let fresh = reopen(&m, cfg.clone());
        for l in logs {
            let got = seqs(&fresh, l).await;
            let want = acked.get(l).cloned().unwrap_or_default();
            let mut sorted = got.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), got.len(), "seed {seed}, log {l}: duplicates in {got:?}");
            assert_eq!(sorted, got, "seed {seed}, log {l}: out of order");
            for s in &want {
                assert!(got.contains(s), "seed {seed}, log {l}: acknowledged {s} lost; read {got:?}");
            }
        }
    }
}

/// A takeover while segment flushing runs: the old owner (still flushing, as a paused gateway
/// would after it resumes) and the new owner rewrite the same sealed segments at once; the
/// compare-and-swap on each segment record lets exactly one rewrite win, and the new owner's
/// appends, the old owner's acknowledged entries and the collector all stay consistent.
#[tokio::test]
async fn a_takeover_while_segment_flushing_runs_keeps_every_entry() {
    let cfg = WalConfig { segment_max_chunks: 2, ..shared_config() };
    let m = mem_wal(cfg.clone());
    m.wal.create_log("t").await.unwrap();
    let old = m.wal.open_writer("t").await.unwrap();
    let mut want = Vec::new();
    for seq in 0..24 {
        old.append(entry(seq, 400)).await.unwrap();
        want.push(seq);
    }
    let other = reopen(&m, cfg.clone());
    // The new owner takes over (sealing what the old one left) while the old process flushes.
    let (flushed_old, new) = tokio::join!(m.wal.flush_segments_once(true), other.open_writer("t"));
    let new = new.unwrap();
    flushed_old.unwrap();
    let (a, b) = tokio::join!(m.wal.flush_segments_once(true), other.flush_segments_once(true));
    println!("old owner: {:?}, new owner: {:?}", a.unwrap(), b.unwrap());
    assert!(matches!(old.append(entry(999, 10)).await, Err(WalError::Fenced { .. })));
    for seq in 24..30 {
        new.append(entry(seq, 400)).await.unwrap();
        want.push(seq);
    }
    other.flush_segments_once(true).await.unwrap();
    let segs = other.segments("t").await.unwrap();
    let sealed: Vec<_> = segs.iter().filter(|s| s.state == wal_core::log::SegmentState::Sealed).collect();
    assert!(sealed.iter().all(|s| s.layout == wal_core::log::Layout::Flushed), "{segs:?}");
    assert_eq!(seqs(&reopen(&m, cfg.clone()), "t").await, want);
    assert_eq!(seqs(&other, "t").await, want);
}

/// Counts GETs (whole and ranged) of the store it wraps.
struct CountingGets {
    inner: std::sync::Arc<dyn ObjectStore>,
    gets: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl ObjectStore for CountingGets {
    async fn put_if_absent(&self, key: &str, data: bytes::Bytes) -> Result<(), wal_core::StorageError> {
        self.inner.put_if_absent(key, data).await
    }
    async fn get(&self, key: &str) -> Result<bytes::Bytes, wal_core::StorageError> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = self.inner.get(key).await;
        if let Ok(d) = &r {
            self.bytes.fetch_add(d.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<bytes::Bytes, wal_core::StorageError> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.bytes.fetch_add(range.end - range.start, std::sync::atomic::Ordering::Relaxed);
        self.inner.get_range(key, range).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<wal_core::storage::ObjectMeta>, wal_core::StorageError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), wal_core::StorageError> {
        self.inner.delete(key).await
    }
    fn backend(&self) -> &'static str {
        "counting"
    }
}

/// A catch-up reader fetches the next blocks ahead of its position (consecutive blocks of one
/// object in one range GET), and a block it asks for while its prefetch is in flight costs no
/// second GET: fewer GETs than blocks, and about each block's bytes once (a demand read that
/// starts just before the prefetch covers its block is the only overlap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_reader_prefetches_and_fetches_each_block_once() {
    use std::sync::atomic::Ordering;
    // (a block cache of 64 of this config's 4 KiB blocks; prefetch fills up to half of it)
    let cfg = WalConfig { block_cache_blocks: 64, ..shared_config() };
    let m = mem_wal(cfg.clone());
    m.wal.create_log("c").await.unwrap();
    let acked = append_concurrently(&m.wal, &["c".to_string()], 300).await;
    let records = m.meta.list("chunk/").await.unwrap().kvs;
    let blocks = records.len() as u64;
    assert!(blocks >= 10, "{blocks} blocks");
    let block_bytes: u64 =
        records.iter().map(|kv| serde_json::from_slice::<serde_json::Value>(&kv.value).unwrap()["len"].as_u64().unwrap()).sum();
    let store = std::sync::Arc::new(CountingGets { inner: m.store.clone(), gets: Default::default(), bytes: Default::default() });
    let other = Wal::new(store.clone(), m.meta.clone(), cfg).unwrap();
    let r = other.open_reader("c").await.unwrap();
    r.refresh().await.unwrap();
    // One read of one block: the next ones are fetched in the background.
    let first = r.read(0, 1).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.gets.load(Ordering::Relaxed) < 2 {
        assert!(std::time::Instant::now() < deadline, "no prefetch after the first read");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut got: Vec<u64> = first.iter().map(|e| seq_of(&e.data)).collect();
    let mut pos = first.last().unwrap().end_offset();
    while pos < r.durable_end() {
        let batch = r.read(pos, 1).await.unwrap();
        got.extend(batch.iter().map(|e| seq_of(&e.data)));
        pos = batch.last().unwrap().end_offset();
    }
    assert_eq!(got, acked["c"]);
    // (a prefetch past the last block the reader asked for may still be in flight: wait)
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let gets = store.gets.load(Ordering::Relaxed);
    println!("{gets} GETs for {blocks} blocks");
    let fetched = store.bytes.load(Ordering::Relaxed);
    println!("{fetched} bytes fetched for {block_bytes} bytes of blocks");
    assert!(fetched >= block_bytes && fetched * 4 <= block_bytes * 5, "{fetched} bytes fetched for {block_bytes}");
    assert!(gets < blocks, "{gets} GETs for {blocks} blocks: consecutive blocks of an object share one");
}

/// Chunk records written before they were keyed by log id (`chunk/{name}/...`) are still read,
/// flushed and then deleted; the collector keeps the objects they name meanwhile.
#[tokio::test]
async fn chunk_records_keyed_by_name_from_before_are_still_read_and_flushed() {
    let cfg = shared_config();
    let m = mem_wal(cfg.clone());
    m.wal.create_log("old-0").await.unwrap();
    let acked = append_concurrently(&m.wal, &["old-0".to_string()], 50).await;
    // Rewrite the records as the previous release keyed them.
    let id = m.wal.log_info("old-0").await.unwrap().id;
    let records = m.meta.list(&format!("chunk/{id:016x}/")).await.unwrap().kvs;
    assert!(!records.is_empty());
    let mut txn = wal_core::meta::Txn::new().then(wal_core::meta::Op::DeletePrefix(format!("chunk/{id:016x}/")));
    for kv in &records {
        let legacy = kv.key.replace(&format!("{id:016x}"), "old-0");
        txn = txn.then(wal_core::meta::Op::put(legacy, kv.value.clone()));
    }
    m.meta.txn(txn).await.unwrap();
    let other = reopen(&m, cfg.clone());
    assert_eq!(seqs(&other, "old-0").await, acked["old-0"], "read through the legacy records");
    // The collector keeps what they name (no writer here: a pass only collects)...
    let pass = other.flush_segments_once(true).await.unwrap();
    assert_eq!((pass.segments_flushed, pass.shared_objects_deleted), (0, 0), "{pass:?}");
    assert_eq!(seqs(&reopen(&m, cfg.clone()), "old-0").await, acked["old-0"]);
    // ... and flushing by the log's owner rewrites the segment and drops them.
    let _w = other.open_writer("old-0").await.unwrap();
    let pass = other.flush_segments_once(true).await.unwrap();
    assert!(pass.segments_flushed >= 1, "{pass:?}");
    assert_eq!(chunk_records(&m).await, 0, "legacy records deleted with the flush");
    assert_eq!(seqs(&reopen(&m, cfg), "old-0").await, acked["old-0"]);
}
