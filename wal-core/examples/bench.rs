//! wal-core benchmark: appends to one log on the local-directory backend (embedded metadata,
//! fsync on) and prints throughput and ack latency, beside the raw sequential write throughput of
//! the same directory (the same bytes written to one file in flush-sized chunks, fsync after each)
//! measured in the same run.
//!
//! `cargo run --release -p wal-core --example bench -- [--dir DIR] [--mib-per-case N] [--inflight N]`

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wal_core::meta::embedded::EmbeddedMeta;
use wal_core::storage::local::LocalStore;
use wal_core::{Entry, Wal, WalConfig};

struct Args {
    dir: std::path::PathBuf,
    mib: usize,
    inflight: usize,
}

fn args() -> Args {
    let mut a = Args { dir: std::env::temp_dir().join("wal-bench"), mib: 256, inflight: 256 };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--dir" => a.dir = val.into(),
            "--mib-per-case" => a.mib = val.parse().expect("--mib-per-case N"),
            "--inflight" => a.inflight = val.parse().expect("--inflight N"),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn raw_write(dir: &std::path::Path, total: usize, chunk: usize) -> f64 {
    let path = dir.join("raw.bin");
    let buf = vec![0x5au8; chunk];
    let t = Instant::now();
    let mut f = std::fs::File::create(&path).unwrap();
    let mut written = 0;
    while written < total {
        f.write_all(&buf).unwrap();
        f.sync_data().unwrap();
        written += chunk;
    }
    let secs = t.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path).unwrap();
    written as f64 / secs / 1e6
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn wal_case(dir: &std::path::Path, entry_bytes: usize, total: usize, inflight: usize) -> (f64, f64, f64) {
    let _ = std::fs::remove_dir_all(dir);
    let store = Arc::new(LocalStore::open(dir.join("data")).unwrap());
    let meta = Arc::new(EmbeddedMeta::open(dir.join("meta"), true).unwrap());
    let wal = Wal::new(store, meta, WalConfig::default()).unwrap();
    wal.create_log("bench").await.unwrap();
    let w = wal.open_writer("bench").await.unwrap();
    let payload = Bytes::from(vec![0xa5u8; entry_bytes]);
    let n = total / entry_bytes;
    let sem = Arc::new(tokio::sync::Semaphore::new(inflight));
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let started = Instant::now();
        let ticket = w.submit(Entry::new(1, i as i64, payload.clone())).await.unwrap();
        let lat = lat.clone();
        tasks.push(tokio::spawn(async move {
            ticket.durable().await.unwrap();
            lat.lock().unwrap().push(started.elapsed());
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    w.close().await.unwrap();
    let mut l = lat.lock().unwrap().clone();
    l.sort();
    ((n * entry_bytes) as f64 / secs / 1e6, pct(&l, 0.5), pct(&l, 0.99))
}

fn main() {
    let a = args();
    std::fs::create_dir_all(&a.dir).unwrap();
    let total = a.mib << 20;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("wal-core benchmark: {} MiB per case, {} appends in flight, dir {}", a.mib, a.inflight, a.dir.display());
    println!("{:<28} {:>10} {:>10} {:>10} {:>12}", "case", "MB/s", "p50 ms", "p99 ms", "vs raw");
    for entry in [1024usize, 64 << 10] {
        let raw = raw_write(&a.dir, total, WalConfig::default().flush_max_bytes);
        let (mbs, p50, p99) = rt.block_on(wal_case(&a.dir.join("wal"), entry, total, a.inflight));
        println!("{:<28} {:>10.1} {:>10} {:>10} {:>12}", "raw write+fsync (4 MiB)", raw, "-", "-", "1.00");
        println!("{:<28} {:>10.1} {:>10.2} {:>10.2} {:>12.2}", format!("wal append {} KiB", entry / 1024), mbs, p50, p99, mbs / raw);
    }
    let _ = std::fs::remove_dir_all(&a.dir);
}
