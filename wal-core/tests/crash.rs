//! Crash safety: a child process appends with acknowledgements and is killed with SIGKILL in
//! mid-stream; after reopening, every acknowledged entry is readable at its acknowledged offset,
//! in order, exactly once. Several rounds, each continuing the same log.
//!
//! The child is this test binary itself, run with `WAL_CRASH_CHILD` set.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use wal_core::meta::embedded::EmbeddedMeta;
use wal_core::storage::local::LocalStore;
use wal_core::{Entry, Wal, WalConfig};

fn local_wal(dir: &std::path::Path) -> Wal {
    let store = Arc::new(LocalStore::open(dir.join("data")).unwrap());
    let meta = Arc::new(EmbeddedMeta::open(dir.join("meta"), true).unwrap());
    let cfg = WalConfig { flush_max_bytes: 64 << 10, segment_max_bytes: 1 << 20, ..WalConfig::default() };
    Wal::new(store, meta, cfg).unwrap()
}

/// The child: appends forever (bounded) and prints `ACK seq base` for each durable entry.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("WAL_CRASH_CHILD") else { return };
    let round: u64 = std::env::var("WAL_CRASH_ROUND").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let wal = local_wal(std::path::Path::new(&dir));
        if round == 0 {
            wal.create_log("crash").await.unwrap();
        }
        let w = wal.open_writer("crash").await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, u64)>(1024);
        let printer = tokio::spawn(async move {
            while let Some((seq, base)) = rx.recv().await {
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {seq} {base}").unwrap();
                out.flush().unwrap();
            }
        });
        let sem = Arc::new(tokio::sync::Semaphore::new(64));
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..200_000u64 {
            if Instant::now() > deadline {
                break;
            }
            let seq = round * 1_000_000 + i;
            let permit = sem.clone().acquire_owned().await.unwrap();
            let t = w.submit(Entry::new(1 + (i % 2) as u32, i as i64, payload(seq, 100 + (i % 700) as usize))).await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(ack) = t.durable().await {
                    let _ = tx.send((seq, ack.base_offset)).await;
                }
                drop(permit);
            });
        }
        drop(tx);
        let _ = printer.await;
    });
}

#[test]
fn acknowledged_entries_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashMap<u64, u64> = HashMap::new();
    for round in 0..3u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads", "1"])
            .env("WAL_CRASH_CHILD", dir.path())
            .env("WAL_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let target = 1500 + round as usize * 700;
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        while n < target && Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(rest) = line.strip_prefix("ACK ") {
                let (s, b) = rest.split_once(' ').unwrap();
                acked.insert(s.parse().unwrap(), b.parse().unwrap());
                n += 1;
            }
        }
        assert!(n >= target, "child produced only {n} acks in round {round}");
        child.kill().unwrap(); // SIGKILL
                               // acks already written to the pipe were acknowledged before the kill
        for line in lines.map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("ACK ") {
                let (s, b) = rest.split_once(' ').unwrap();
                acked.insert(s.parse().unwrap(), b.parse().unwrap());
            }
        }
        child.wait().unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let wal = local_wal(dir.path());
        let w = wal.open_writer("crash").await.unwrap(); // recovery seals the last child's segment
        let all = read_all(&wal, "crash", 0).await;
        assert_eq!(w.written(), all.last().unwrap().end_offset());
        let mut seen: HashMap<u64, u64> = HashMap::new();
        for e in &all {
            let seq = seq_of(&e.data);
            assert!(seen.insert(seq, e.offset).is_none(), "seq {seq} stored twice");
            assert_eq!(e.data, payload(seq, 100 + ((seq % 1_000_000) % 700) as usize), "payload of seq {seq}");
        }
        for (seq, base) in &acked {
            assert_eq!(seen.get(seq), Some(base), "acknowledged seq {seq} at offset {base} lost or moved");
        }
        eprintln!("{} acknowledged entries, {} stored; all acknowledged ones present", acked.len(), all.len());
    });
}
