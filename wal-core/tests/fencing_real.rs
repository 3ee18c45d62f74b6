//! Fencing through a real etcd and a real S3-compatible server (moto_server, which implements
//! `If-None-Match: *`): two writers on one log, each in its own `Wal` with its own connections.
//! The old writer's appends after the fence fail, and nothing it writes after the fence is ever
//! readable; every append acknowledged to either writer is.
#![cfg(feature = "etcd")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use wal_core::meta::etcd::EtcdMeta;
use wal_core::storage::s3::S3Store;
use wal_core::testing::servers::{self, ChildServer};
use wal_core::{Entry, Wal, WalConfig, WalError};

async fn wal_on(etcd: &ChildServer, moto: &ChildServer) -> Wal {
    let s3 = S3Store::new(&servers::s3_config(moto, "fencing", "wal")).unwrap();
    s3.ensure_bucket().await.unwrap();
    let meta = EtcdMeta::connect(&[etcd.endpoint()], "/fencing").await.unwrap();
    let cfg = WalConfig { flush_max_bytes: 16 << 10, ..WalConfig::default() };
    Wal::new(Arc::new(s3), Arc::new(meta), cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_through_etcd_and_s3() {
    let (Some(etcd), Some(moto)) = (servers::start_etcd(), servers::start_moto()) else { return };
    let a = wal_on(&etcd, &moto).await;
    a.create_log("fenced").await.unwrap();
    let wa = a.open_writer("fenced").await.unwrap();
    let mut acked = Vec::new();
    for seq in 0..30 {
        wa.append(entry(seq, 500)).await.unwrap();
        acked.push(seq);
    }
    // The old writer has appends in flight while the new writer takes over.
    let mut inflight = Vec::new();
    for seq in 30..90 {
        inflight.push((seq, wa.submit(entry(seq, 500)).await.unwrap()));
    }
    let b = wal_on(&etcd, &moto).await;
    let wb = b.open_writer("fenced").await.unwrap();
    assert!(wb.epoch() > wa.epoch());
    let mut refused = Vec::new();
    for (seq, t) in inflight {
        match t.durable().await {
            Ok(_) => acked.push(seq),
            Err(WalError::Fenced { .. }) => refused.push(seq),
            Err(e) => panic!("unexpected error for seq {seq}: {e}"),
        }
    }
    // After the fence, every append of the old writer fails.
    for seq in 90..100 {
        let r = wa.append(entry(seq, 500)).await;
        assert!(matches!(r, Err(WalError::Fenced { .. })), "seq {seq}: {r:?}");
        refused.push(seq);
    }
    for seq in 100..130 {
        wb.append(entry(seq, 500)).await.unwrap();
        acked.push(seq);
    }
    // Give any stray upload of the old writer time to land; it must stay invisible.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = wal_on(&etcd, &moto).await;
    let seqs: Vec<u64> = read_all(&c, "fenced", 0).await.iter().map(|e| seq_of(&e.data)).collect();
    for s in &refused {
        assert!(!seqs.contains(s), "fenced append {s} became readable");
    }
    assert_eq!(seqs, acked, "exactly the acknowledged appends, in order");
    // A third writer recovers the same state.
    let wc = c.open_writer("fenced").await.unwrap();
    assert_eq!(wc.written(), wb.durable());
    assert!(matches!(wb.append(Entry::new(1, 0, "late")).await, Err(WalError::Fenced { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_and_etcd_round_trip_with_sealed_segments() {
    let (Some(etcd), Some(moto)) = (servers::start_etcd(), servers::start_moto()) else { return };
    let a = wal_on(&etcd, &moto).await;
    a.create_log("rt").await.unwrap();
    let w = a.open_writer("rt").await.unwrap();
    let mut tickets = Vec::new();
    for seq in 0..400 {
        tickets.push(w.submit(entry(seq, 1000)).await.unwrap());
    }
    for t in tickets {
        t.durable().await.unwrap();
    }
    w.close().await.unwrap();
    let b = wal_on(&etcd, &moto).await;
    let seqs: Vec<u64> = read_all(&b, "rt", 0).await.iter().map(|e| seq_of(&e.data)).collect();
    assert_eq!(seqs, (0..400).collect::<Vec<_>>());
    let r = b.open_reader("rt").await.unwrap();
    assert!(r.offset_for_timestamp(2000).await.unwrap().is_some());
}
