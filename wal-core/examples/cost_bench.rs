//! Object-store cost benchmark on moto_server: PUTs per second and per GiB, ack latency and
//! throughput, with shared objects on and off in the same run, beside the raw PUT throughput of
//! the same server. Metadata is the embedded in-memory store, or with `--meta etcd` a real etcd
//! (needs the `etcd` feature and `etcd` on PATH: the merged metadata commits then pay etcd's
//! round trips). Needs `moto_server` on PATH.
//!
//! `cargo run --release -p wal-core [--features etcd] --example cost_bench -- [--secs N] [--rate-mb N] [--full-mib N] [--window N] [--hold-secs N] [--modes per-block,shared,quorum] [--meta etcd]`
//! (`--window`: appends in flight in the full-speed cases, 8192 KiB entries by default, about a
//! librdkafka producer's window)

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use wal_core::meta::embedded::EmbeddedMeta;
use wal_core::storage::s3::S3Store;
use wal_core::storage::ObjectMeta;
use wal_core::{Entry, ObjectStore, StorageError, Wal, WalConfig};

/// Counts requests by kind.
struct Counting {
    inner: Arc<dyn ObjectStore>,
    puts: AtomicU64,
    gets: AtomicU64,
    /// PUTs by kind of object: shared objects, flushed segments, everything else.
    kinds: [AtomicU64; 3],
}

impl Counting {
    fn new(inner: Arc<dyn ObjectStore>) -> Counting {
        Counting { inner, puts: AtomicU64::new(0), gets: AtomicU64::new(0), kinds: Default::default() }
    }

    fn kinds(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.kinds[i].load(Ordering::Relaxed))
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        let kind = if key.contains("shared/") {
            0
        } else if key.ends_with("/data") || key.ends_with("/index") {
            1
        } else {
            2
        };
        self.kinds[kind].fetch_add(1, Ordering::Relaxed);
        self.inner.put_if_absent(key, data).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get_range(key, range).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key).await
    }
    fn backend(&self) -> &'static str {
        "counting"
    }
}

fn arg(name: &str, default: f64) -> f64 {
    let v: Vec<String> = std::env::args().collect();
    v.iter().position(|a| a == name).and_then(|i| v.get(i + 1)).map(|s| s.parse().expect("a number")).unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    PerBlock,
    Shared,
    Quorum,
}

struct Figures {
    mb_s: f64,
    puts_s: f64,
    puts_gib: f64,
    p50: f64,
    p99: f64,
}

async fn s3(server: &wal_core::testing::servers::ChildServer, prefix: &str) -> Arc<Counting> {
    let s = S3Store::new(&wal_core::testing::servers::s3_config(server, "bench", prefix)).unwrap();
    s.ensure_bucket().await.unwrap();
    Arc::new(Counting::new(Arc::new(s)))
}

/// Where a run's metadata lives: a fresh embedded store, or a fresh root on one etcd server.
struct Metas {
    #[cfg(feature = "etcd")]
    etcd: Option<wal_core::testing::servers::ChildServer>,
    runs: AtomicU64,
}

impl Metas {
    fn new() -> Metas {
        let etcd = std::env::args().skip_while(|a| a != "--meta").nth(1).is_some_and(|m| m == "etcd");
        #[cfg(feature = "etcd")]
        return Metas { etcd: etcd.then(|| wal_core::testing::servers::start_etcd().expect("etcd on PATH")), runs: AtomicU64::new(0) };
        #[cfg(not(feature = "etcd"))]
        {
            assert!(!etcd, "--meta etcd needs --features etcd");
            Metas { runs: AtomicU64::new(0) }
        }
    }

    fn name(&self) -> &'static str {
        #[cfg(feature = "etcd")]
        if self.etcd.is_some() {
            return "etcd";
        }
        "embedded, in memory"
    }

    async fn fresh(&self) -> Arc<dyn wal_core::MetaStore> {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "etcd")]
        if let Some(e) = &self.etcd {
            let m = wal_core::meta::etcd::EtcdMeta::connect(&[e.endpoint()], &format!("bench-{run}/")).await.unwrap();
            return Arc::new(m);
        }
        let _ = run;
        Arc::new(EmbeddedMeta::in_memory())
    }
}

/// `logs` partitions sharing `rate` bytes/s of 1 KiB entries for `secs` (or, `rate` = 0, as
/// fast as `window` appends in flight allow for `full_bytes`: a producer's in-flight window).
/// `warm` bytes per log go first as fast as `window` allows, unmeasured (nodes that just took a
/// full-speed load).
#[allow(clippy::too_many_arguments)]
async fn run(
    metas: &Metas,
    store: Arc<Counting>,
    mode: Mode,
    logs: usize,
    rate: f64,
    secs: f64,
    full_bytes: usize,
    window: usize,
    warm: usize,
) -> (Figures, Wal) {
    let meta = metas.fresh().await;
    let mut cfg = WalConfig { shared_objects: mode != Mode::PerBlock, ..WalConfig::default() };
    let mut nodes = Vec::new();
    let mut node_stores: Vec<Arc<Counting>> = Vec::new();
    if mode == Mode::Quorum {
        cfg.buffer = wal_core::BufferMode::Quorum;
        for i in 0..3 {
            // (each node's own count too: which nodes upload)
            let c = Arc::new(Counting::new(store.clone()));
            node_stores.push(c.clone());
            let s: Arc<dyn ObjectStore> = c;
            let n = wal_core::logstore::LogStoreNode::start(
                wal_core::logstore::NodeConfig::new(format!("ls-{i}")),
                "127.0.0.1:0".parse().unwrap(),
                s,
                meta.clone(),
            );
            nodes.push(n.await.unwrap());
        }
    }
    let wal = Wal::new(store.clone(), meta, cfg).unwrap();
    let mut writers = Vec::new();
    for i in 0..logs {
        let name = format!("p{i}");
        wal.create_log(&name).await.unwrap();
        writers.push(wal.open_writer(&name).await.unwrap());
    }
    let payload = Bytes::from(vec![7u8; 1024]);
    if warm > 0 {
        let mut tasks = Vec::new();
        for w in &writers {
            let (w, payload) = (w.clone(), payload.clone());
            tasks.push(tokio::spawn(async move {
                let mut inflight = std::collections::VecDeque::new();
                for _ in 0..warm / 1024 {
                    inflight.push_back(w.submit(Entry::new(1, 0, payload.clone())).await.unwrap());
                    if inflight.len() >= window.max(1) {
                        inflight.pop_front().unwrap().durable().await.unwrap();
                    }
                }
                for t in inflight {
                    t.durable().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    let puts0 = store.puts.load(Ordering::Relaxed);
    let kinds0 = store.kinds();
    let started = Instant::now();
    // Steady cases: PUTs counted over the offered window only (closing the writers at the end
    // is not part of the load).
    let window_puts = (rate > 0.0).then(|| {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            store.puts.load(Ordering::Relaxed)
        })
    });
    let mut tasks = Vec::new();
    for w in writers {
        let payload = payload.clone();
        let per_log = rate / logs as f64;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut bytes = 0usize;
            if rate > 0.0 {
                let every = Duration::from_secs_f64(1024.0 / per_log);
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let end = Instant::now() + Duration::from_secs_f64(secs);
                let mut acks = Vec::new();
                while Instant::now() < end {
                    tick.tick().await;
                    let t = Instant::now();
                    let ticket = w.submit(Entry::new(1, 0, payload.clone())).await.unwrap();
                    acks.push(tokio::spawn(async move {
                        ticket.durable().await.unwrap();
                        t.elapsed()
                    }));
                    bytes += 1024;
                }
                for a in acks {
                    lat.push(a.await.unwrap());
                }
            } else {
                let mut inflight = std::collections::VecDeque::new();
                while bytes < full_bytes {
                    let t = Instant::now();
                    inflight.push_back((t, w.submit(Entry::new(1, 0, payload.clone())).await.unwrap()));
                    bytes += 1024;
                    if inflight.len() >= window {
                        let (t, tk) = inflight.pop_front().unwrap();
                        tk.durable().await.unwrap();
                        lat.push(t.elapsed());
                    }
                }
                for (t, tk) in inflight {
                    tk.durable().await.unwrap();
                    lat.push(t.elapsed());
                }
            }
            w.close().await.unwrap();
            (lat, bytes)
        }));
    }
    let mut lat = Vec::new();
    let mut bytes = 0usize;
    for t in tasks {
        let (l, b) = t.await.unwrap();
        lat.extend(l);
        bytes += b;
    }
    // QuorumBuffer: count the nodes' uploads too, once they stored everything (closed writers
    // waited for that).
    let (secs, puts) = match window_puts {
        Some(t) => (secs, (t.await.unwrap() - puts0) as f64),
        None => (started.elapsed().as_secs_f64(), (store.puts.load(Ordering::Relaxed) - puts0) as f64),
    };
    let kinds = store.kinds();
    eprintln!(
        "  ({logs} partitions: PUTs of shared objects {}, of flushed segments {}, other {})",
        kinds[0] - kinds0[0],
        kinds[1] - kinds0[1],
        kinds[2] - kinds0[2]
    );
    if !node_stores.is_empty() {
        let per: Vec<u64> = node_stores.iter().map(|c| c.puts.load(Ordering::Relaxed)).collect();
        eprintln!("  ({logs} partitions: PUTs by LogStore node {per:?})");
    }
    for n in nodes {
        n.shutdown().await;
    }
    lat.sort();
    let f = Figures {
        mb_s: bytes as f64 / secs / 1e6,
        puts_s: puts / secs,
        puts_gib: puts / (bytes as f64 / (1u64 << 30) as f64),
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
    };
    (f, wal)
}

#[tokio::main]
async fn main() {
    let secs = arg("--secs", 5.0);
    let rate = arg("--rate-mb", 4.0) * 1e6;
    let full = (arg("--full-mib", 128.0) * (1 << 20) as f64) as usize;
    let window = arg("--window", 8192.0) as usize;
    let server = wal_core::testing::servers::start_moto().expect("moto_server on PATH");
    let metas = Metas::new();
    println!("metadata: {}", metas.name());
    // Raw PUT limit: 4 MiB objects, one stream and four.
    let raw = s3(&server, "raw").await;
    let obj = Bytes::from(vec![1u8; 4 << 20]);
    let mut raw_mb = HashMap::new();
    for streams in [1usize, 4] {
        let t = Instant::now();
        let n = 16;
        let mut tasks = Vec::new();
        for s in 0..streams {
            let (raw, obj) = (raw.clone(), obj.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..n / streams {
                    raw.put_if_absent(&format!("raw/{streams}-{s}-{i}"), obj.clone()).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        raw_mb.insert(streams, (n * obj.len()) as f64 / t.elapsed().as_secs_f64() / 1e6);
    }
    println!("raw PUT, 4 MiB objects: 1 stream {:.0} MB/s, 4 streams {:.0} MB/s", raw_mb[&1], raw_mb[&4]);
    println!();
    println!("{:<44} {:>8} {:>8} {:>10} {:>8} {:>8}", "case", "MB/s", "PUT/s", "PUTs/GiB", "p50 ms", "p99 ms");
    let only = std::env::args().skip_while(|a| a != "--modes").nth(1).unwrap_or_else(|| "per-block,shared,quorum".into());
    let modes = [(Mode::PerBlock, "per-block"), (Mode::Shared, "shared"), (Mode::Quorum, "quorum")];
    for m in modes.iter().filter(|(_, n)| only.split(',').any(|o| o == *n)).map(|(m, _)| *m) {
        let mode = match m {
            Mode::PerBlock => "one object per block",
            Mode::Shared => "shared objects",
            Mode::Quorum => "QuorumBuffer",
        };
        let store = s3(&server, &format!("full-{m:?}")).await;
        let (f, wal) = run(&metas, store.clone(), m, 1, 0.0, 0.0, full, window, 0).await;
        println!(
            "{:<44} {:>8.1} {:>8.0} {:>10.0} {:>8.2} {:>8.2}",
            format!("{mode}, full speed, 1 partition"),
            f.mb_s,
            f.puts_s,
            f.puts_gib,
            f.p50,
            f.p99
        );
        // Catch-up: a reader in another process reads it all from object storage.
        let reader = Wal::new(store.clone(), wal.meta().clone(), WalConfig::default()).unwrap();
        let r = reader.open_reader("p0").await.unwrap();
        r.refresh().await.unwrap();
        let (t, end) = (Instant::now(), r.durable_end());
        let (mut pos, mut bytes) = (0u64, 0usize);
        while pos < end {
            let batch = r.read(pos, 8 << 20).await.unwrap();
            bytes += batch.iter().map(|e| e.data.len()).sum::<usize>();
            pos = batch.last().unwrap().end_offset();
        }
        println!("{:<44} {:>8.1}", format!("{mode}, catch-up read"), bytes as f64 / t.elapsed().as_secs_f64() / 1e6);
        for logs in [1usize, 10, 100, 1000] {
            if m == Mode::PerBlock && logs == 1000 {
                // (1,000 PUT streams: moto_server refuses connections and appends fail)
                println!("{:<44} {:>8}", "one object per block, 4 MB/s, 1000 partitions", "skipped");
                continue;
            }
            let store = s3(&server, &format!("steady-{m:?}-{logs}")).await;
            let (f, _) = run(&metas, store, m, logs, rate, secs, 0, 0, 0).await;
            println!(
                "{:<44} {:>8.1} {:>8.0} {:>10.0} {:>8.2} {:>8.2}",
                format!("{mode}, {:.0} MB/s, {logs} partitions", rate / 1e6),
                f.mb_s,
                f.puts_s,
                f.puts_gib,
                f.p50,
                f.p99
            );
        }
    }
    // QuorumBuffer on fresh nodes: 5,000 and 10,000 1 KiB messages/s on one partition.
    if only.split(',').any(|o| o == "quorum") {
        for msgs in [5_000.0, 10_000.0] {
            let store = s3(&server, &format!("fresh-{msgs}")).await;
            let (f, _) = run(&metas, store, Mode::Quorum, 1, msgs * 1024.0, secs, 0, window, 0).await;
            println!(
                "{:<44} {:>8.1} {:>8.0} {:>10.0} {:>8.2} {:>8.2}",
                format!("QuorumBuffer, fresh nodes, {msgs:.0} msg/s"),
                f.mb_s,
                f.puts_s,
                f.puts_gib,
                f.p50,
                f.p99
            );
        }
    }
    // QuorumBuffer holding 20,000 1 KiB messages/s on one partition for `--hold-secs`, after a
    // full-speed load of the same nodes.
    let hold = arg("--hold-secs", 0.0);
    if hold > 0.0 {
        let store = s3(&server, "hold").await;
        let (f, _) = run(&metas, store, Mode::Quorum, 1, 20_000.0 * 1024.0, hold, 0, window, full).await;
        println!(
            "{:<44} {:>8.1} {:>8.0} {:>10.0} {:>8.2} {:>8.2}",
            format!("QuorumBuffer, 20,000 msg/s for {hold:.0} s after full speed"),
            f.mb_s,
            f.puts_s,
            f.puts_gib,
            f.p50,
            f.p99
        );
    }
}
