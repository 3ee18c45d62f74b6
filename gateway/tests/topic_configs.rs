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
