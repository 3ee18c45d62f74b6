//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use wal_core::meta::embedded::EmbeddedMeta;
use wal_core::storage::faulty::FaultyStore;
use wal_core::storage::memory::MemoryStore;
use wal_core::{Entry, Wal, WalConfig};

pub fn small_config() -> WalConfig {
    WalConfig {
        flush_max_bytes: 4096,
        flush_max_age_ms: 5,
        retry_backoff_ms: 1,
        retry_backoff_max_ms: 5,
        segment_max_bytes: 64 << 10,
        tail_cache_bytes: 8 << 10,
        max_buffered_bytes: 1 << 20,
        max_entry_bytes: 1 << 20,
        // Tests append one entry at a time and wait: a generous PUT budget keeps them fast.
        put_budget_per_sec: 1000,
        ..WalConfig::default()
    }
}

/// What holds a log's data: block and segment objects under `logs/`, and the metadata keys of
/// blocks inside shared objects.
pub async fn stored_pieces(m: &MemWal) -> usize {
    use wal_core::{MetaStore, ObjectStore};
    m.store.inner().list("logs/").await.unwrap().len() + m.meta.list("chunk/").await.unwrap().kvs.len()
}

pub struct MemWal {
    pub wal: Wal,
    pub store: Arc<FaultyStore<MemoryStore>>,
    pub meta: Arc<EmbeddedMeta>,
}

pub fn mem_wal(cfg: WalConfig) -> MemWal {
    let store = Arc::new(FaultyStore::new(MemoryStore::new(), 7));
    let meta = Arc::new(EmbeddedMeta::in_memory());
    let wal = Wal::new(store.clone(), meta.clone(), cfg).expect("valid config");
    MemWal { wal, store, meta }
}

/// A second process's view of the same storage and metadata (no shared in-memory state).
pub fn reopen(m: &MemWal, cfg: WalConfig) -> Wal {
    Wal::new(m.store.clone(), m.meta.clone(), cfg).expect("valid config")
}

/// A payload that names its sequence number, so duplicates and losses are visible.
pub fn payload(seq: u64, len: usize) -> Bytes {
    let mut v = format!("seq={seq:012};").into_bytes();
    v.resize(len.max(v.len()), (seq % 251) as u8);
    Bytes::from(v)
}

pub fn seq_of(data: &[u8]) -> u64 {
    std::str::from_utf8(&data[4..16]).expect("utf8").parse().expect("seq")
}

pub fn entry(seq: u64, len: usize) -> Entry {
    Entry::new(1 + (seq % 3) as u32, seq as i64 * 10, payload(seq, len))
}

/// Reads the whole log from `from` to its durable end.
pub async fn read_all(wal: &Wal, name: &str, from: u64) -> Vec<wal_core::StoredEntry> {
    let r = wal.open_reader(name).await.expect("reader");
    r.refresh().await.expect("refresh");
    let end = r.durable_end();
    let mut out = Vec::new();
    let mut pos = from;
    while pos < end {
        let batch = r.read(pos, 10_000).await.expect("read");
        assert!(!batch.is_empty(), "read below the end returned nothing at {pos}");
        for e in batch {
            if e.end_offset() > pos {
                pos = e.end_offset();
                out.push(e);
            }
        }
    }
    out
}

/// Appends `per_log` entries to each log, all logs at once; returns the sequence numbers each
/// log acknowledged, in offset order.
pub async fn append_concurrently(wal: &Wal, logs: &[String], per_log: u64) -> BTreeMap<String, Vec<u64>> {
    let mut tasks = Vec::new();
    for (i, name) in logs.iter().enumerate() {
        let w = wal.open_writer(name).await.unwrap();
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let mut tickets = Vec::new();
            for k in 0..per_log {
                let seq = i as u64 * 1_000_000 + k;
                tickets.push((seq, w.submit(entry(seq, 300)).await.unwrap()));
            }
            let mut acked = Vec::new();
            for (seq, t) in tickets {
                t.durable().await.unwrap();
                acked.push(seq);
            }
            w.close().await.unwrap();
            (name, acked)
        }));
    }
    let mut out = BTreeMap::new();
    for t in tasks {
        let (name, acked) = t.await.unwrap();
        out.insert(name, acked);
    }
    out
}
