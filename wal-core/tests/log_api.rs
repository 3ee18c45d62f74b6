//! The log API on in-memory backends: appends, reads, reopen, truncation, deletion, tail waits,
//! timestamps, segment rolling, fencing and injected storage faults.

mod common;

use std::time::Duration;

use common::*;
use wal_core::{Entry, ObjectStore, WalConfig, WalError};

#[tokio::test]
async fn append_then_read_back_in_order() {
    let m = mem_wal(small_config());
    m.wal.create_log("t-0").await.unwrap();
    assert!(matches!(m.wal.create_log("t-0").await, Err(WalError::LogExists(_))));
    let w = m.wal.open_writer("t-0").await.unwrap();
    let mut next = 0;
    for seq in 0..200u64 {
        let e = entry(seq, 100);
        let ack = w.append(e.clone()).await.unwrap();
        assert_eq!(ack.base_offset, next);
        next += e.count as u64;
        assert_eq!(ack.end_offset, next);
    }
    assert_eq!(w.durable(), next);
    let all = read_all(&m.wal, "t-0", 0).await;
    assert_eq!(all.len(), 200);
    let mut off = 0;
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.offset, off);
        assert_eq!(seq_of(&e.data), i as u64);
        assert_eq!(e.data, payload(i as u64, 100));
        off = e.end_offset();
    }
    // reading from the middle of an entry returns that entry
    let r = m.wal.open_reader("t-0").await.unwrap();
    let mid = all[10].offset + 1;
    if all[10].count > 1 {
        assert_eq!(r.read(mid, 1).await.unwrap()[0].offset, all[10].offset);
    }
    assert!(matches!(r.read(next + 1, 10).await, Err(WalError::OffsetOutOfRange { .. })));
    assert!(r.read(next, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_appends_get_dense_offsets_and_ordered_acks() {
    let m = mem_wal(small_config());
    m.wal.create_log("c").await.unwrap();
    let w = m.wal.open_writer("c").await.unwrap();
    let mut tickets = Vec::new();
    for seq in 0..500u64 {
        tickets.push((seq, w.submit(entry(seq, 300)).await.unwrap()));
    }
    let mut last_end = 0;
    for (seq, t) in tickets {
        let (base, end) = (t.base_offset, t.end_offset);
        assert_eq!(base, last_end, "dense offsets");
        let ack = t.durable().await.unwrap();
        assert_eq!((ack.base_offset, ack.end_offset), (base, end), "seq {seq}");
        last_end = end;
    }
    let all = read_all(&m.wal, "c", 0).await;
    assert_eq!(all.iter().map(|e| seq_of(&e.data)).collect::<Vec<_>>(), (0..500).collect::<Vec<_>>());
    // many blocks, several segments
    let info = m.wal.log_info("c").await.unwrap();
    assert!(info.segments > 1, "segments should roll by size: {info:?}");
}

#[tokio::test]
async fn reopen_continues_at_the_durable_end_and_seals() {
    let m = mem_wal(small_config());
    m.wal.create_log("r").await.unwrap();
    let w = m.wal.open_writer("r").await.unwrap();
    for seq in 0..50 {
        w.append(entry(seq, 50)).await.unwrap();
    }
    let end = w.durable();
    w.close().await.unwrap();
    assert!(matches!(w.append(entry(99, 1)).await, Err(WalError::Closed)));
    // another process
    let wal2 = reopen(&m, small_config());
    let w2 = wal2.open_writer("r").await.unwrap();
    assert_eq!(w2.written(), end);
    let ack = w2.append(entry(50, 50)).await.unwrap();
    assert_eq!(ack.base_offset, end);
    let all = read_all(&wal2, "r", 0).await;
    assert_eq!(all.len(), 51);
    assert_eq!(wal2.list_logs().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_new_writer_fences_the_old_one() {
    let m = mem_wal(small_config());
    m.wal.create_log("f").await.unwrap();
    let old = m.wal.open_writer("f").await.unwrap();
    for seq in 0..10 {
        old.append(entry(seq, 10)).await.unwrap();
    }
    let other = reopen(&m, small_config());
    let new = other.open_writer("f").await.unwrap();
    assert!(new.epoch() > old.epoch());
    // the old writer's next appends can never become durable
    let r = old.append(entry(1000, 10)).await;
    assert!(matches!(r, Err(WalError::Fenced { .. })), "{r:?}");
    assert!(matches!(old.append(entry(1001, 10)).await, Err(WalError::Fenced { .. })));
    new.append(entry(10, 10)).await.unwrap();
    let seqs: Vec<u64> = read_all(&other, "f", 0).await.iter().map(|e| seq_of(&e.data)).collect();
    assert_eq!(seqs, (0..11).collect::<Vec<_>>());
}

#[tokio::test]
async fn truncate_and_clean_delete_whole_segments_only() {
    let m = mem_wal(small_config());
    m.wal.create_log("ret").await.unwrap();
    let w = m.wal.open_writer("ret").await.unwrap();
    for seq in 0..400 {
        w.append(entry(seq, 500)).await.unwrap();
    }
    let before = stored_pieces(&m).await;
    let info = m.wal.log_info("ret").await.unwrap();
    let cut = info.end_offset / 2;
    assert_eq!(m.wal.truncate("ret", cut).await.unwrap(), cut);
    assert_eq!(m.wal.truncate("ret", 0).await.unwrap(), cut, "truncation never moves back");
    let r = m.wal.open_reader("ret").await.unwrap();
    assert!(matches!(r.read(cut - 1, 10).await, Err(WalError::OffsetOutOfRange { .. })));
    let deleted = m.wal.clean_once().await.unwrap();
    assert!(deleted > 0);
    let after = stored_pieces(&m).await;
    assert!(after < before);
    // everything from the start is still readable
    let all = read_all(&m.wal, "ret", cut).await;
    assert!(all.first().unwrap().offset <= cut);
    assert_eq!(all.last().unwrap().end_offset(), info.end_offset);
    // truncation past the end clamps
    assert_eq!(m.wal.truncate("ret", u64::MAX).await.unwrap(), info.end_offset);
    m.wal.clean_once().await.unwrap();
    let w2 = reopen(&m, small_config());
    drop(w);
    let nw = w2.open_writer("ret").await.unwrap();
    assert_eq!(nw.written(), info.end_offset, "offsets are never reused after truncation");
}

#[tokio::test]
async fn delete_log_removes_everything_and_fences_the_writer() {
    let m = mem_wal(small_config());
    m.wal.create_log("d").await.unwrap();
    let w = m.wal.open_writer("d").await.unwrap();
    w.append(entry(1, 100)).await.unwrap();
    m.wal.delete_log("d").await.unwrap();
    assert!(m.store.inner().list("logs/").await.unwrap().is_empty());
    assert!(w.append(entry(2, 100)).await.is_err());
    assert!(matches!(m.wal.open_reader("d").await, Err(WalError::LogNotFound(_))));
    // the name can be reused and starts again at 0 with a fresh id
    m.wal.create_log("d").await.unwrap();
    let w = m.wal.open_writer("d").await.unwrap();
    assert_eq!(w.append(entry(3, 1)).await.unwrap().base_offset, 0);
}

#[tokio::test]
async fn tail_reader_wakes_on_new_durable_entries() {
    let m = mem_wal(small_config());
    m.wal.create_log("tail").await.unwrap();
    let w = m.wal.open_writer("tail").await.unwrap();
    let r = m.wal.open_reader("tail").await.unwrap();
    assert!(!r.wait_for(0, Duration::from_millis(20)).await.unwrap());
    let waiter = tokio::spawn({
        let r = r.clone();
        async move { r.wait_for(0, Duration::from_secs(10)).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    w.append(Entry::new(1, 1, "x")).await.unwrap();
    assert!(waiter.await.unwrap());
    assert_eq!(r.read(0, 100).await.unwrap()[0].data, "x");
}

#[tokio::test]
async fn tail_reader_in_another_process_wakes_through_a_metadata_watch() {
    let m = mem_wal(small_config());
    m.wal.create_log("tw").await.unwrap();
    let w = m.wal.open_writer("tw").await.unwrap();
    w.append(Entry::new(1, 1, "a")).await.unwrap();
    let other = reopen(&m, small_config());
    let r = other.open_reader("tw").await.unwrap();
    assert_eq!(r.durable_end(), 1);
    let waiter = tokio::spawn({
        let r = r.clone();
        async move { r.wait_for(1, Duration::from_secs(10)).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    w.append(Entry::new(1, 2, "b")).await.unwrap();
    assert!(waiter.await.unwrap());
    assert_eq!(r.read(1, 100).await.unwrap()[0].data, "b");
}

#[tokio::test]
async fn offsets_by_timestamp() {
    let m = mem_wal(small_config());
    m.wal.create_log("ts").await.unwrap();
    let w = m.wal.open_writer("ts").await.unwrap();
    for i in 0..300u64 {
        w.append(Entry::new(1, 1000 + i as i64, payload(i, 200))).await.unwrap();
    }
    let other = reopen(&m, small_config());
    for wal in [&m.wal, &other] {
        let r = wal.open_reader("ts").await.unwrap();
        r.refresh().await.unwrap();
        assert_eq!(r.offset_for_timestamp(0).await.unwrap(), Some((0, 1000)));
        assert_eq!(r.offset_for_timestamp(1150).await.unwrap(), Some((150, 1150)));
        assert_eq!(r.offset_for_timestamp(1299).await.unwrap(), Some((299, 1299)));
        assert_eq!(r.offset_for_timestamp(5000).await.unwrap(), None);
        assert_eq!(r.max_timestamp_entry().await.unwrap(), Some((299, 1299)));
    }
}

#[tokio::test]
async fn transient_upload_failures_are_retried_without_loss_or_duplicates() {
    // Per-block objects, and shared objects of one block each (as many PUTs to fail).
    for shared_objects in [false, true] {
        let cfg = WalConfig { upload_attempts: 50, shared_objects, max_object_chunks: 1, ..small_config() };
        let m = mem_wal(cfg.clone());
        m.wal.create_log("flaky").await.unwrap();
        let w = m.wal.open_writer("flaky").await.unwrap();
        m.store.set_ops(wal_core::storage::faulty::FaultOps::Puts);
        m.store.set_fail_probability(0.3);
        m.store.set_lose_ack_probability(0.2);
        let mut tickets = Vec::new();
        for seq in 0..300 {
            tickets.push(w.submit(entry(seq, 200)).await.unwrap());
        }
        for t in tickets {
            t.durable().await.expect("with enough attempts every append succeeds");
        }
        m.store.heal();
        assert!(m.store.injected() > 10, "shared_objects={shared_objects}");
        let seqs: Vec<u64> = read_all(&reopen(&m, cfg), "flaky", 0).await.iter().map(|e| seq_of(&e.data)).collect();
        assert_eq!(seqs, (0..300).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn a_permanently_failed_upload_fails_its_appends_and_leaves_no_hole() {
    let mut cfg = small_config();
    cfg.upload_attempts = 2;
    let m = mem_wal(cfg);
    m.wal.create_log("hole").await.unwrap();
    let w = m.wal.open_writer("hole").await.unwrap();
    let mut acked = Vec::new();
    for seq in 0..20 {
        w.append(entry(seq, 100)).await.unwrap();
        acked.push(seq);
    }
    let durable = w.durable();
    m.store.set_ops(wal_core::storage::faulty::FaultOps::Puts);
    m.store.fail_next(4);
    let r = w.append(entry(20, 100)).await;
    assert!(matches!(&r, Err(e) if e.is_retriable()), "{r:?}");
    assert_eq!(w.durable(), durable);
    assert_eq!(w.written(), durable, "written resets to durable: no offset is skipped");
    m.store.heal();
    // the writer continues, in a new segment, at the durable end
    let ack = w.append(entry(21, 100)).await.unwrap();
    assert_eq!(ack.base_offset, durable);
    acked.push(21);
    for seq in 22..40 {
        w.append(entry(seq, 100)).await.unwrap();
        acked.push(seq);
    }
    let seqs: Vec<u64> = read_all(&reopen(&m, small_config()), "hole", 0).await.iter().map(|e| seq_of(&e.data)).collect();
    assert_eq!(seqs, acked);
}

#[tokio::test]
async fn flush_uploads_a_partial_buffer() {
    let mut cfg = small_config();
    cfg.flush_max_age_ms = 60_000;
    cfg.flush_max_bytes = 1 << 20;
    let m = mem_wal(cfg);
    m.wal.create_log("fl").await.unwrap();
    let w = m.wal.open_writer("fl").await.unwrap();
    let mut tickets = Vec::new();
    for seq in 0..10 {
        tickets.push(w.submit(entry(seq, 10)).await.unwrap());
    }
    w.flush().await.unwrap();
    assert_eq!(w.durable(), w.written());
    for t in tickets {
        t.durable().await.unwrap();
    }
}

#[tokio::test]
async fn invalid_input_is_refused() {
    let m = mem_wal(small_config());
    assert!(matches!(m.wal.create_log("../x").await, Err(WalError::InvalidArgument(_))));
    assert!(matches!(m.wal.open_writer("nope").await, Err(WalError::LogNotFound(_))));
    m.wal.create_log("v").await.unwrap();
    let w = m.wal.open_writer("v").await.unwrap();
    assert!(matches!(w.append(Entry::new(0, 0, "x")).await, Err(WalError::InvalidArgument(_))));
    assert!(matches!(w.append(Entry::new(1, 0, vec![0u8; 2 << 20])).await, Err(WalError::InvalidArgument(_))));
    let mut bad = small_config();
    bad.max_inflight_uploads = 0;
    assert!(matches!(wal_core::Wal::new(m.store.clone(), m.meta.clone(), bad), Err(WalError::Config(_))));
}

#[tokio::test]
async fn corrupt_blocks_surface_as_typed_errors() {
    for shared_objects in [false, true] {
        let cfg = WalConfig { shared_objects, ..small_config() };
        let m = mem_wal(cfg.clone());
        m.wal.create_log("cor").await.unwrap();
        let w = m.wal.open_writer("cor").await.unwrap();
        for seq in 0..100 {
            w.append(entry(seq, 200)).await.unwrap();
        }
        w.close().await.unwrap();
        if shared_objects {
            // Flip one byte inside the first block of the first shared object.
            let objects = m.store.inner().list("shared/").await.unwrap();
            let first = objects.iter().map(|o| o.key.clone()).min().unwrap();
            let mut data = m.store.inner().get(&first).await.unwrap().to_vec();
            data[100] ^= 0x5a;
            m.store.inner().delete(&first).await.unwrap();
            m.store.inner().put_if_absent(&first, bytes::Bytes::from(data)).await.unwrap();
        } else {
            // Replace the first block with garbage of the same name.
            let objects = m.store.inner().list("logs/").await.unwrap();
            let first = objects.iter().find(|o| o.key.ends_with(".blk")).unwrap().key.clone();
            m.store.inner().delete(&first).await.unwrap();
            m.store.inner().put_if_absent(&first, bytes::Bytes::from_static(b"WALBgarbage")).await.unwrap();
        }
        let other = reopen(&m, cfg);
        let r = other.open_reader("cor").await.unwrap();
        // Reading the whole log meets the damaged block.
        let mut pos = 0;
        loop {
            match r.read(pos, 100).await {
                Err(WalError::Format { .. }) => break,
                Ok(v) if !v.is_empty() => pos = v.last().unwrap().end_offset(),
                other => panic!("shared_objects={shared_objects}: expected a format error, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn buffered_bytes_are_bounded_across_writers() {
    let mut cfg = small_config();
    cfg.max_buffered_bytes = 4096;
    cfg.max_total_buffered_bytes = 4096;
    cfg.max_entry_bytes = 4096;
    cfg.upload_attempts = 1000;
    let m = mem_wal(cfg);
    m.wal.create_log("a").await.unwrap();
    m.wal.create_log("b").await.unwrap();
    let (wa, wb) = (m.wal.open_writer("a").await.unwrap(), m.wal.open_writer("b").await.unwrap());
    m.store.set_ops(wal_core::storage::faulty::FaultOps::Puts);
    m.store.fail_next(u64::MAX); // uploads stall: nothing becomes durable, buffers stay full
    let t = wa.submit(Entry::new(1, 0, vec![1u8; 3000])).await.unwrap();
    // the other log's writer has its own room, but the process-wide budget is used up
    let blocked = tokio::time::timeout(Duration::from_millis(200), wb.submit(Entry::new(1, 0, vec![2u8; 3000]))).await;
    assert!(blocked.is_err(), "a submit beyond the process-wide budget must wait");
    m.store.heal();
    t.durable().await.unwrap();
    let t2 = tokio::time::timeout(Duration::from_secs(10), wb.submit(Entry::new(1, 0, vec![2u8; 3000]))).await.unwrap().unwrap();
    t2.durable().await.unwrap();
}

#[tokio::test]
async fn timestamps_of_a_large_abandoned_segment_are_found_without_header_reads() {
    let mut cfg = small_config();
    cfg.segment_max_bytes = 1 << 30; // one segment
    let m = mem_wal(cfg.clone());
    m.wal.create_log("big").await.unwrap();
    let w = m.wal.open_writer("big").await.unwrap();
    for i in 0..100u64 {
        w.append(Entry::new(1, 5000 + i as i64, payload(i, 50))).await.unwrap();
        // one block each
    }
    w.abort(); // crash: the segment stays active
    let other = reopen(&m, cfg);
    let _w2 = other.open_writer("big").await.unwrap(); // seals 100 blocks from a listing only
    let segs = other.segments("big").await.unwrap();
    assert_eq!(segs[0].blocks, 100);
    assert_eq!(segs[0].max_timestamp, 5099, "the segment keeps its committed maximum");
    let r = other.open_reader("big").await.unwrap();
    assert_eq!(r.offset_for_timestamp(5042).await.unwrap(), Some((42, 5042)));
    assert_eq!(r.max_timestamp_entry().await.unwrap(), Some((99, 5099)));
}
