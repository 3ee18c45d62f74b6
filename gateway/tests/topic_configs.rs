//! Topic configs that change what is stored, checked on the gateway's own state: a compacted
//! topic refuses keyless records with KIP-467's record errors and is never truncated by
//! retention; configs Kafka 4 removed are dropped; compression.type and LogAppendTime rewrite
//! the stored batches (the real-client side of these is in compat-tests/test_topic_configs.py).

mod common;

use common::*;
use kafka_protocol::messages::*;

/// One uncompressed batch of `n` records, record `i` keyed `k{i}` unless `i` is in `keyless`.
fn keyed_batch(n: i32, keyless: &[i32]) -> bytes::Bytes {
    use gateway::batch::put_varint;
    let mut records = Vec::new();
    for i in 0..n {
        let mut body = vec![0u8];
        put_varint(&mut body, 0); // timestamp delta
        put_varint(&mut body, i as i64);
        if keyless.contains(&i) {
            put_varint(&mut body, -1);
        } else {
            let key = format!("k{i}");
            put_varint(&mut body, key.len() as i64);
            body.extend_from_slice(key.as_bytes());
        }
        put_varint(&mut body, 1);
        body.push(b'v');
        put_varint(&mut body, 0);
        put_varint(&mut records, body.len() as i64);
        records.extend(body);
    }
    bytes::Bytes::from(gateway::batch::encode_batch(&records, n, -1, -1, -1, wal_core::util::now_ms() as i64))
}

fn produce_v9(addr: std::net::SocketAddr, topic: &'static str, records: bytes::Bytes) -> produce_response::PartitionProduceResponse {
    let req =
        ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![produce_request::PartitionProduceData::default().with_records(Some(records))])]);
    let ResponseKind::Produce(mut r) = call(addr, ApiKey::Produce, 9, RequestKind::Produce(req)) else { panic!() };
    r.responses.remove(0).partition_responses.remove(0)
}

fn configs(kv: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_refuses_keyless_records_with_record_errors() {
    let (running, _dir) = start_local(|_| {}).await;
    running.broker.create_topic("compacted", 1, configs(&[("cleanup.policy", "compact")]), false).await.unwrap();
    running.broker.create_topic("plain", 1, configs(&[]), false).await.unwrap();
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        let r = produce_v9(addr, "compacted", keyed_batch(5, &[1, 3]));
        assert_eq!(r.error_code, 87, "INVALID_RECORD");
        assert_eq!(r.record_errors.iter().map(|e| e.batch_index).collect::<Vec<_>>(), vec![1, 3]);
        assert!(r.error_message.as_deref().is_some_and(|m| m.contains("without key")), "{:?}", r.error_message);
        let ok = produce_v9(addr, "compacted", keyed_batch(5, &[]));
        assert_eq!((ok.error_code, ok.base_offset), (0, 0), "nothing of the refused batch was stored");
        assert!(ok.record_errors.is_empty());
        assert_eq!(ok.log_append_time_ms, -1, "a CreateTime topic");
        // the same keyless batch is fine for a delete topic
        let r = produce_v9(addr, "plain", keyed_batch(5, &[1, 3]));
        assert_eq!(r.error_code, 0);
    })
    .await
    .unwrap();
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_with_the_delete_policy() {
    let (running, _dir) = start_local(|c| c.retention_check_interval_ms = 3_600_000).await;
    let b = running.broker.clone();
    let small = [("segment.bytes", "1000"), ("retention.bytes", "0")];
    b.create_topic("kept", 1, configs(&[small[0], small[1], ("cleanup.policy", "compact")]), false).await.unwrap();
    b.create_topic("both", 1, configs(&[small[0], small[1], ("cleanup.policy", "compact,delete")]), false).await.unwrap();
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        for _ in 0..12 {
            for t in ["kept", "both"] {
                assert_eq!(produce_v9(addr, t, keyed_batch(20, &[])).error_code, 0);
            }
        }
    })
    .await
    .unwrap();
    gateway::broker::retention::enforce_once(&b).await.unwrap();
    assert_eq!(b.partition("kept", 0).unwrap().reader.start_offset(), 0, "compact alone: nothing deleted by size");
    assert!(b.partition("both", 0).unwrap().reader.start_offset() > 0, "compact,delete: retention applies");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_removed_in_kafka_4_are_dropped() {
    let (running, _dir) = start_local(|_| {}).await;
    let b = running.broker.clone();
    let t = b.create_topic("old", 1, configs(&[("message.format.version", "2.8"), ("retention.ms", "1000000")]), false).await.unwrap();
    assert_eq!(t.meta.configs, configs(&[("retention.ms", "1000000")]));
    b.alter_configs("old", vec![("message.downconversion.enable".into(), Some("true".into()))], true, false).await.unwrap();
    b.alter_configs("old", vec![("message.format.version".into(), None)], true, false).await.unwrap();
    assert_eq!(b.topic("old").unwrap().meta.configs, configs(&[("retention.ms", "1000000")]));
    let Err(err) = b.create_topic("bad", 1, configs(&[("no.such.config", "1")]), false).await else { panic!("created") };
    assert_eq!(err.1, "Unknown topic config name: no.such.config");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_type_and_log_append_time_rewrite_stored_batches() {
    let (running, _dir) = start_local(|_| {}).await;
    let b = running.broker.clone();
    b.create_topic("zstd", 1, configs(&[("compression.type", "zstd")]), false).await.unwrap();
    b.create_topic("lat", 1, configs(&[("message.timestamp.type", "LogAppendTime")]), false).await.unwrap();
    let addr = running.addr;
    let before = wal_core::util::now_ms() as i64;
    let lat = tokio::task::spawn_blocking(move || {
        assert_eq!(produce_v9(addr, "zstd", keyed_batch(50, &[])).error_code, 0);
        let r = produce_v9(addr, "lat", keyed_batch(3, &[]));
        assert_eq!(r.error_code, 0);
        r.log_append_time_ms
    })
    .await
    .unwrap();
    assert!(lat >= before, "the response carries the LogAppendTime");
    let z = stored(&b, "zstd").await;
    assert_eq!(z.attributes & 0x07, 4, "stored as zstd");
    assert_eq!(z.record_count, 50);
    let l = stored(&b, "lat").await;
    assert_eq!(l.attributes & 0x08, 0x08, "LogAppendTime attribute");
    assert_eq!(l.max_timestamp, lat);
    running.shutdown().await;
}

/// The header of the first batch stored in `topic`-0, after checking the whole batch (CRC).
async fn stored(b: &gateway::Broker, topic: &str) -> gateway::batch::BatchInfo {
    let p = b.partition(topic, 0).unwrap();
    let e = p.reader.read(0, 1).await.unwrap().remove(0);
    let data = bytes::Bytes::copy_from_slice(&e.data);
    gateway::batch::split(&data).expect("a valid batch").remove(0).1
}

/// Every record of partition 0 from offset 0, as a client decodes them: (offset, key, value).
fn fetch_records(addr: std::net::SocketAddr, topic: &'static str) -> Vec<(i64, Option<String>, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let req =
            FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]);
        let ResponseKind::Fetch(r) = call(addr, ApiKey::Fetch, 11, RequestKind::Fetch(req)) else { panic!() };
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let mut data = p.records.clone().unwrap_or_default();
        if data.is_empty() {
            return out;
        }
        let text = |b: &Option<bytes::Bytes>| b.as_ref().map(|b| String::from_utf8(b.to_vec()).unwrap());
        for set in kafka_protocol::records::RecordBatchDecoder::decode_all(&mut data).unwrap() {
            for rec in set.records {
                out.push((rec.offset, text(&rec.key), text(&rec.value)));
                offset = rec.offset + 1;
            }
        }
        // (a batch whose last records were compacted away ends past its last record)
        offset = offset.max(p.high_watermark.min(offset));
    }
}

/// A batch of `n` records: write `w` keyed `k{w % keys}` valued `v{w}`; writes 10 and 150
/// are of key `gone`, the second a tombstone (null value).
fn overwrite_batch(first: i32, n: i32, keys: i32) -> bytes::Bytes {
    use gateway::batch::put_varint;
    let mut records = Vec::new();
    for i in 0..n {
        let w = first + i;
        let mut body = vec![0u8];
        put_varint(&mut body, 0);
        put_varint(&mut body, i as i64);
        let key = if w == 10 || w == 150 { "gone".to_string() } else { format!("k{}", w % keys) };
        put_varint(&mut body, key.len() as i64);
        body.extend_from_slice(key.as_bytes());
        if w == 150 {
            put_varint(&mut body, -1);
        } else {
            let v = format!("v{w}");
            put_varint(&mut body, v.len() as i64);
            body.extend_from_slice(v.as_bytes());
        }
        put_varint(&mut body, 0);
        put_varint(&mut records, body.len() as i64);
        records.extend(body);
    }
    bytes::Bytes::from(gateway::batch::encode_batch(&records, n, -1, -1, -1, wal_core::util::now_ms() as i64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compactor_keeps_the_latest_record_per_key_at_its_offset() {
    let (running, _dir) = start_local(|c| c.compaction_check_interval_ms = 3_600_000).await;
    let b = running.broker.clone();
    let cfg =
        [("cleanup.policy", "compact"), ("segment.bytes", "600"), ("min.cleanable.dirty.ratio", "0.01"), ("delete.retention.ms", "0")];
    b.create_topic("table", 1, configs(&cfg), false).await.unwrap();
    b.create_topic("plain", 1, configs(&[("segment.bytes", "600")]), false).await.unwrap();
    let addr = running.addr;
    // 40 batches of 5 writes over 8 keys, and a key deleted by a tombstone
    tokio::task::spawn_blocking(move || {
        for i in 0..40 {
            for t in ["table", "plain"] {
                assert_eq!(produce_v9(addr, t, overwrite_batch(i * 5, 5, 8)).error_code, 0);
            }
        }
    })
    .await
    .unwrap();
    let written = tokio::task::spawn_blocking(move || fetch_records(addr, "table")).await.unwrap();
    assert_eq!(written.len(), 200);
    let round = gateway::broker::compaction::compact_once(&b, true).await;
    assert_eq!((round.partitions, round.passes), (1, 1), "only the compacted topic: {round:?}");
    assert!(round.records_removed > 100, "{round:?}");
    let tail = b.wal.segments("table-0").await.unwrap().last().unwrap().base_offset as i64;
    let (after, plain) = tokio::task::spawn_blocking(move || (fetch_records(addr, "table"), fetch_records(addr, "plain"))).await.unwrap();
    assert_eq!(plain.len(), 200, "a delete topic is not compacted");
    // every record left is one that was written, at its offset
    for r in &after {
        assert_eq!(Some(r), written.iter().find(|w| w.0 == r.0), "record at {} changed", r.0);
    }
    // below the active segment: one record per key, the latest; the tombstone is kept on the
    // first pass (its horizon starts when the segment is first compacted)
    let head: Vec<_> = after.iter().filter(|r| r.0 < tail).collect();
    let mut keys: Vec<_> = head.iter().map(|r| r.1.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), head.len(), "one record per key: {head:?}");
    for (k, latest) in latest_by_key(&written) {
        assert!(after.iter().any(|r| r.0 == latest), "the latest record of {k:?} (offset {latest}) is there");
    }
    assert!(tail > 150, "the tombstone is in a compacted segment");
    assert!(after.iter().any(|r| r.0 == 150 && r.2.is_none()), "the tombstone stays on the first pass");
    assert!(!after.iter().any(|r| r.0 == 10), "the record it deletes went");
    // a later pass past the horizon (delete.retention.ms=0) drops the tombstone, and the
    // gateway keeps serving the rest
    let again = gateway::broker::compaction::compact_once(&b, true).await;
    assert!(again.records_removed >= 1, "{again:?}");
    let last = tokio::task::spawn_blocking(move || fetch_records(addr, "table")).await.unwrap();
    assert!(!last.iter().any(|r| r.0 == 150), "the tombstone went after its horizon");
    assert_eq!(last.len(), after.len() - 1);
    running.shutdown().await;
}

fn latest_by_key(records: &[(i64, Option<String>, Option<String>)]) -> std::collections::BTreeMap<Option<String>, i64> {
    records.iter().map(|r| (r.1.clone(), r.0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_between_writes_compact_new_segments_and_clean_ones_again() {
    let (running, _dir) = start_local(|c| c.compaction_check_interval_ms = 3_600_000).await;
    let b = running.broker.clone();
    let cfg = [("cleanup.policy", "compact"), ("segment.bytes", "600"), ("min.cleanable.dirty.ratio", "0.01")];
    b.create_topic("table", 1, configs(&cfg), false).await.unwrap();
    let addr = running.addr;
    for round in 0..4 {
        tokio::task::spawn_blocking(move || {
            for i in 0..10 {
                assert_eq!(produce_v9(addr, "table", overwrite_batch(round * 50 + i * 5, 5, 8)).error_code, 0);
            }
        })
        .await
        .unwrap();
        let r = gateway::broker::compaction::compact_once(&b, true).await;
        assert!(r.passes == 1 && r.records_removed > 0, "round {round}: {r:?}");
        let segs = b.wal.segments("table-0").await.unwrap();
        assert!(segs[..segs.len() - 1].iter().all(|s| s.compacted.is_some()), "round {round}: every sealed segment compacted");
        let tail = segs.last().unwrap().base_offset as i64;
        let read = tokio::task::spawn_blocking(move || fetch_records(addr, "table")).await.unwrap();
        let mut keys: Vec<_> = read.iter().filter(|r| r.0 < tail).map(|r| r.1.clone()).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "round {round}: one record per key below the active segment");
    }
    running.shutdown().await;
}
