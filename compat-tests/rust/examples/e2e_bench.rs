//! End-to-end benchmark with a native librdkafka client (the rdkafka crate), 1 topic, 1
//! partition, 1 producer, acks=all: throughput and ack latency p50/p99 for 1 KiB messages (at full
//! speed, and at a moderate fixed rate), messages/s for 100-byte messages, and consumer catch-up.
//! Start it after `cargo build --release -p gateway`; it runs the release gateway on a fresh
//! directory (`--dir`) and prints figures.
//!
//! `cargo run --release -p compat-rdkafka --example e2e_bench -- [--mib 256] [--dir DIR]`

use std::time::{Duration, Instant};

use compat_rdkafka::bench::{pct, produce};
use compat_rdkafka::{gateway_bin, Gateway};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

fn main() {
    let mut mib = 256usize;
    let mut dir = std::env::temp_dir().join("e2e-bench");
    let args: Vec<String> = std::env::args().skip(1).collect();
    for w in args.chunks(2) {
        match w[0].as_str() {
            "--mib" => mib = w[1].parse().unwrap(),
            "--dir" => dir = w[1].clone().into(),
            o => panic!("unknown argument {o}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The wal-core benchmark on the same directory, same run: the baseline for the ratios.
    let wal_bench = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/examples/bench");
    if wal_bench.exists() {
        let st = std::process::Command::new(&wal_bench)
            .args(["--dir", dir.join("wal").to_str().unwrap(), "--mib-per-case", &mib.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    } else {
        println!("(build the wal-core baseline with `cargo build --release -p wal-core --example bench`)");
    }
    let mut gw = Gateway::start(gateway_bin(true), Some(dir.clone())).unwrap();
    println!("gateway end to end: rdkafka (librdkafka {}), acks=all, idempotent, 1 partition", rdkafka::util::get_rdkafka_version().1);
    let n = (mib << 20) / 1024;
    let (secs, mut lat) = produce(&gw.bootstrap, "bench-1k", 1024, n, 0, 10);
    println!(
        "{:<34} {:>9.1} MB/s {:>10.0} msg/s  p50 {:>8.2} ms  p99 {:>8.2} ms",
        "produce 1 KiB, full speed, linger 10",
        (n * 1024) as f64 / secs / 1e6,
        n as f64 / secs,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    let (_, mut lat) = produce(&gw.bootstrap, "bench-rate", 1024, 10_000, 2_000, 0);
    println!(
        "{:<34} {:>9} {:>16}  p50 {:>8.2} ms  p99 {:>8.2} ms",
        "produce 1 KiB, 2000 msg/s, linger 0",
        "",
        "",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    let n100 = (mib << 20) / 8 / 100;
    let (secs100, _) = produce(&gw.bootstrap, "bench-100b", 100, n100, 0, 10);
    println!(
        "{:<34} {:>9.1} MB/s {:>10.0} msg/s",
        "produce 100 B, full speed, linger 10",
        (n100 * 100) as f64 / secs100 / 1e6,
        n100 as f64 / secs100
    );
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &gw.bootstrap)
        .set("group.id", "bench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("bench-1k", 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let t = Instant::now();
    let (mut got, mut bytes) = (0usize, 0usize);
    while got < n && t.elapsed() < Duration::from_secs(300) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(500)) {
            got += 1;
            bytes += m.payload_len();
        }
    }
    let cs = t.elapsed().as_secs_f64();
    println!("{:<34} {:>9.1} MB/s {:>10.0} msg/s  ({got}/{n})", "consumer catch-up 1 KiB", bytes as f64 / cs / 1e6, got as f64 / cs);
    if std::env::var("E2E_METRICS").is_ok() {
        for l in gw.metrics().lines().filter(|l| !l.starts_with('#') && (l.contains("sum") || l.contains("count") || l.contains("_total")))
        {
            println!("  {l}");
        }
    }
    gw.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
