//! A model test of the log: random appends (awaited and not), flushes, graceful and crash
//! reopens (a new process view over the same storage and metadata), truncations, cleaner runs and
//! reads, checked against a plain vector. Unawaited appends that race a crash may or may not
//! survive, but what survives is always a prefix of them, with the offsets they were given.

mod common;

use common::*;
use proptest::prelude::*;
use wal_core::{Entry, StoredEntry};

#[derive(Debug, Clone)]
enum Op {
    Append { len: usize, count: u32 },
    Submit { n: usize },
    Flush,
    Close,
    Crash,
    Truncate { frac: u8 },
    Clean,
    Read { frac: u8, max_bytes: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..600, 1u32..4).prop_map(|(len, count)| Op::Append { len, count }),
        2 => (1usize..20).prop_map(|n| Op::Submit { n }),
        1 => Just(Op::Flush),
        1 => Just(Op::Close),
        1 => Just(Op::Crash),
        1 => any::<u8>().prop_map(|frac| Op::Truncate { frac }),
        1 => Just(Op::Clean),
        2 => (any::<u8>(), 1usize..3000).prop_map(|(frac, max_bytes)| Op::Read { frac, max_bytes }),
    ]
}

async fn run(ops: Vec<Op>) {
    let m = mem_wal(small_config());
    m.wal.create_log("m").await.unwrap();
    let mut wal = reopen(&m, small_config());
    let mut w = wal.open_writer("m").await.unwrap();
    let mut model: Vec<StoredEntry> = Vec::new();
    let mut start = 0u64;
    let mut seq = 0u64;
    let mut unacked: Vec<StoredEntry> = Vec::new();
    let end_of = |m: &Vec<StoredEntry>| m.last().map(|e| e.end_offset()).unwrap_or(0);
    for op in ops {
        match op {
            Op::Append { len, count } => {
                let e = Entry::new(count, seq as i64, payload(seq, len));
                seq += 1;
                let ack = w.append(e.clone()).await.unwrap();
                // earlier unawaited appends are durable once a later one is
                model.append(&mut unacked);
                assert_eq!(ack.base_offset, end_of(&model));
                model.push(StoredEntry { offset: ack.base_offset, count, max_timestamp: e.max_timestamp, data: e.data });
            }
            Op::Submit { n } => {
                for _ in 0..n {
                    let e = Entry::new(1, seq as i64, payload(seq, 40));
                    seq += 1;
                    let t = w.submit(e.clone()).await.unwrap();
                    let expect = unacked.last().map(|u| u.end_offset()).unwrap_or(end_of(&model));
                    assert_eq!(t.base_offset, expect);
                    unacked.push(StoredEntry { offset: t.base_offset, count: 1, max_timestamp: e.max_timestamp, data: e.data });
                }
            }
            Op::Flush => {
                w.flush().await.unwrap();
                model.append(&mut unacked);
            }
            Op::Close | Op::Crash => {
                if matches!(op, Op::Close) {
                    w.close().await.unwrap();
                    model.append(&mut unacked);
                } else {
                    w.abort();
                }
                wal = reopen(&m, small_config());
                w = wal.open_writer("m").await.unwrap();
                // of the unawaited appends, a prefix survived
                let end = w.written();
                let survived: Vec<StoredEntry> = unacked.drain(..).filter(|u| u.end_offset() <= end).collect();
                model.extend(survived);
                assert_eq!(end, end_of(&model).max(start), "reopen continues exactly at the durable end");
            }
            Op::Truncate { frac } => {
                let end = end_of(&model);
                let target = end * frac as u64 / 255;
                let s = wal.truncate("m", target).await.unwrap();
                start = start.max(target.min(w.durable()));
                assert_eq!(s, start);
            }
            Op::Clean => {
                wal.clean_once().await.unwrap();
            }
            Op::Read { frac, max_bytes } => {
                let end = end_of(&model);
                if end <= start {
                    continue;
                }
                let from = start + (end - start) * frac as u64 / 256;
                let r = wal.open_reader("m").await.unwrap();
                let got = r.read(from, max_bytes).await.unwrap();
                assert!(!got.is_empty());
                let i = model.partition_point(|e| e.end_offset() <= from);
                assert_eq!(&got[..], &model[i..i + got.len()], "read from {from}");
            }
        }
    }
    w.flush().await.unwrap();
    model.append(&mut unacked);
    // a fresh process sees exactly the model from the start
    let fresh = reopen(&m, small_config());
    let all = read_all(&fresh, "m", start).await;
    let i = model.partition_point(|e| e.end_offset() <= start);
    assert_eq!(all, model[i..].to_vec());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}
