//! The gateway started in process, driven with kafka-protocol's client-side encoders: checks
//! that need the broker's internals (consumer lag, restart of the broker state).

mod common;

use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_lag_is_committed_offset_against_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = gateway::GatewayConfig { listen: "127.0.0.1:0".parse().unwrap(), data_dir: dir.path().to_path_buf(), ..Default::default() };
    let running = gateway::start(cfg).await.unwrap();
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(name("lagged"))
                .with_partition_data(vec![produce_request::PartitionProduceData::default().with_records(Some(batch(10)))]),
        ]);
        // unknown topic first: auto-creation happens on Metadata
        call(
            addr,
            ApiKey::Metadata,
            9,
            RequestKind::Metadata(
                MetadataRequest::default()
                    .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name("lagged")))]))
                    .with_allow_auto_topic_creation(true),
            ),
        );
        let ResponseKind::Produce(r) = call(addr, ApiKey::Produce, 9, RequestKind::Produce(produce)) else { panic!() };
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(name("lagged"))
                .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default().with_committed_offset(4)])]);
        let ResponseKind::OffsetCommit(r) = call(addr, ApiKey::OffsetCommit, 8, RequestKind::OffsetCommit(commit)) else { panic!() };
        assert_eq!(r.topics[0].partitions[0].error_code, 0);
    })
    .await
    .unwrap();
    let rows = running.broker.consumer_lag();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].committed, rows[0].high_watermark, rows[0].lag), (4, 10, 6));
    running.shutdown().await;
}

fn config(dir: &std::path::Path) -> gateway::GatewayConfig {
    gateway::GatewayConfig { listen: "127.0.0.1:0".parse().unwrap(), data_dir: dir.to_path_buf(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let running = gateway::start(config(dir.path())).await.unwrap();
    running.broker.create_topic("idem", 1, Default::default(), false).await.unwrap();
    running.broker.allocate_producer_id().await.unwrap(); // producer id 7 below is issued
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        assert_eq!(produce(addr, "idem", idempotent_batch(3, 7, 0, 0)), (0, 0));
        assert_eq!(produce(addr, "idem", idempotent_batch(2, 7, 0, 3)), (0, 3));
        // a retry of the first batch gets its original offset back, nothing is appended
        assert_eq!(produce(addr, "idem", idempotent_batch(3, 7, 0, 0)), (0, 0));
        // a gap in the sequence
        assert_eq!(produce(addr, "idem", idempotent_batch(1, 7, 0, 9)).0, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
        // a corrupt batch
        let mut bad = idempotent_batch(1, -1, -1, -1).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(produce(addr, "idem", bytes::Bytes::from(bad)).0, 2, "CORRUPT_MESSAGE");
    })
    .await
    .unwrap();
    running.shutdown().await;
    // a new process: the state is rebuilt from the log
    let running = gateway::start(config(dir.path())).await.unwrap();
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        assert_eq!(produce(addr, "idem", idempotent_batch(2, 7, 0, 3)), (0, 3), "duplicate detected after restart");
        assert_eq!(produce(addr, "idem", idempotent_batch(1, 7, 0, 5)), (0, 5));
        assert_eq!(produce(addr, "idem", idempotent_batch(1, 7, 1, 0)), (0, 6), "a new epoch starts at sequence 0");
        assert_eq!(produce(addr, "idem", idempotent_batch(1, 7, 0, 6)).0, 47, "INVALID_PRODUCER_EPOCH");
    })
    .await
    .unwrap();
    assert_eq!(running.broker.partition("idem", 0).unwrap().high_watermark(), 7);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_state_snapshot_outlives_truncation_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let running = gateway::start(config(dir.path())).await.unwrap();
    running.broker.create_topic("snap", 1, Default::default(), false).await.unwrap();
    running.broker.allocate_producer_id().await.unwrap(); // producer id 9 below is issued
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        assert_eq!(produce(addr, "snap", idempotent_batch(2, 9, 0, 0)), (0, 0));
        assert_eq!(produce(addr, "snap", idempotent_batch(2, 9, 0, 2)), (0, 2));
    })
    .await
    .unwrap();
    // Every batch is truncated away: a replay of the log alone would forget producer 9.
    running.broker.wal.truncate("snap-0", 4).await.unwrap();
    running.shutdown().await; // snapshots the producer state
    let running = gateway::start(config(dir.path())).await.unwrap();
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        assert_eq!(produce(addr, "snap", idempotent_batch(2, 9, 0, 2)), (0, 2), "the retry is still a duplicate");
        assert_eq!(produce(addr, "snap", idempotent_batch(1, 9, 0, 5)).0, 45, "and a gap is still a gap");
        assert_eq!(produce(addr, "snap", idempotent_batch(1, 9, 0, 4)), (0, 4));
    })
    .await
    .unwrap();
    running.shutdown().await;
}

/// `buffer.mode` is a topic config: DescribeConfigs shows the process default, CreateTopics and
/// AlterConfigs validate it, and QuorumBuffer is refused where LogStore nodes cannot register
/// (embedded metadata).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_mode_is_a_validated_topic_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = gateway::GatewayConfig { listen: "127.0.0.1:0".parse().unwrap(), data_dir: dir.path().to_path_buf(), ..Default::default() };
    let running = gateway::start(cfg).await.unwrap();
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        let create = |topic: &'static str, mode: &'static str| {
            let t = create_topics_request::CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(1)
                .with_replication_factor(1)
                .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("buffer.mode"))
                    .with_value(Some(StrBytes::from_static_str(mode)))]);
            let req = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![t]);
            let ResponseKind::CreateTopics(r) = call(addr, ApiKey::CreateTopics, 5, RequestKind::CreateTopics(req)) else { panic!() };
            r.topics[0].error_code
        };
        assert_eq!(create("bulk", "memory"), 0);
        assert_eq!(create("fast", "quorum"), kafka_protocol::ResponseError::InvalidConfig.code(), "no LogStore nodes without etcd");
        assert_eq!(create("odd", "disk"), kafka_protocol::ResponseError::InvalidConfig.code());
        let describe = DescribeConfigsRequest::default().with_resources(vec![describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("bulk"))
            .with_configuration_keys(None)]);
        let ResponseKind::DescribeConfigs(r) = call(addr, ApiKey::DescribeConfigs, 4, RequestKind::DescribeConfigs(describe)) else {
            panic!()
        };
        let mode = r.results[0].configs.iter().find(|c| c.name.as_str() == "buffer.mode").expect("buffer.mode is described");
        assert_eq!(mode.value.as_ref().map(|v| v.as_str()), Some("memory"));
        // And the topic works in that mode.
        let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(name("bulk"))
                .with_partition_data(vec![produce_request::PartitionProduceData::default().with_records(Some(batch(3)))]),
        ]);
        let ResponseKind::Produce(r) = call(addr, ApiKey::Produce, 9, RequestKind::Produce(produce)) else { panic!() };
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    })
    .await
    .unwrap();
    running.shutdown().await;
}

/// A takeover whose producer-state rebuild fails (the object store refuses reads) keeps the
/// writer it opened and continues with it at the next try: retries neither leak writers nor
/// bump the log's epoch once per try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_takeover_is_retried_with_the_writer_it_opened() {
    use std::sync::Arc;
    use wal_core::storage::faulty::{FaultOps, FaultyStore};
    let store = Arc::new(FaultyStore::new(wal_core::storage::memory::MemoryStore::new(), 7));
    let meta: Arc<dyn wal_core::MetaStore> = Arc::new(wal_core::meta::embedded::EmbeddedMeta::in_memory());
    let cfg = wal_core::WalConfig { put_budget_per_sec: 1000, ..Default::default() };
    let first = wal_core::Wal::new(store.clone(), meta.clone(), cfg.clone()).unwrap();
    let p = gateway::broker::Partition::open(&first, Arc::from("t"), 0).await.unwrap();
    assert_eq!(p.acquire(&first, Default::default(), 1).await.unwrap(), Some(1));
    let w = p.writer().unwrap();
    for _ in 0..3 {
        w.append(wal_core::Entry::new(1, -1, bytes::Bytes::from_static(b"not a batch"))).await.unwrap();
    }
    // Another gateway (its own caches) takes the partition over while reads fail.
    let second = wal_core::Wal::new(store.clone(), meta.clone(), cfg).unwrap();
    let q = gateway::broker::Partition::open(&second, Arc::from("t"), 0).await.unwrap();
    store.set_ops(FaultOps::Reads);
    store.set_fail_probability(1.0);
    for _ in 0..4 {
        assert!(q.acquire(&second, Default::default(), 1).await.is_err(), "the rebuild cannot read the log");
    }
    assert!(q.holds_writer() && !q.leading(), "the opened writer is kept, not serving");
    store.heal();
    assert_eq!(q.acquire(&second, Default::default(), 1).await.unwrap(), Some(2), "one epoch for all the tries");
    assert!(q.leading());
    q.close().await;
    assert!(!q.holds_writer());
}

/// Sends one Produce of `records` to partition 0 of `topic` through the handler and returns
/// the pending response (not yet awaited).
async fn submit_produce(b: &std::sync::Arc<gateway::Broker>, topic: &'static str, records: bytes::Bytes) -> gateway::handler::Pending {
    let req =
        ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![produce_request::PartitionProduceData::default().with_records(Some(records))])]);
    gateway::handler::produce::submit(b.clone(), 9, req, gateway::security::acl::Access::all()).await
}

/// (error code, base offset) of a Produce response.
async fn answer(pending: gateway::handler::Pending) -> (i16, i64) {
    let Some(ResponseKind::Produce(r)) = pending.await else { panic!("no produce response") };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// A gateway over `store` and `meta` (config tuned by `tune`) with one-partition `topics`
/// (and their configs) created and led, and a block of producer ids issued (0..1000, so the
/// ids tests make up are valid).
async fn led_broker(
    store: std::sync::Arc<dyn wal_core::ObjectStore>,
    meta: std::sync::Arc<dyn wal_core::MetaStore>,
    tune: impl FnOnce(&mut gateway::GatewayConfig),
    topics: &[(&str, &[(&str, &str)])],
) -> std::sync::Arc<gateway::Broker> {
    let mut cfg = gateway::GatewayConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
    cfg.wal.put_budget_per_sec = 1000;
    tune(&mut cfg);
    let b = gateway::Broker::open_with(cfg, store, meta).await.unwrap();
    for (name, configs) in topics {
        let configs = configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        b.create_topic(name, 1, configs, false).await.unwrap();
    }
    b.allocate_producer_id().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for (name, _) in topics {
        while !b.leads(&b.partition(name, 0).unwrap()) {
            assert!(std::time::Instant::now() < deadline, "{name} is never led");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    b
}

/// A gateway over a fault-injecting store whose failed uploads give up quickly, with topic
/// `t` (one partition) led.
async fn faulty_broker(
) -> (std::sync::Arc<gateway::Broker>, std::sync::Arc<wal_core::storage::faulty::FaultyStore<wal_core::storage::memory::MemoryStore>>) {
    use std::sync::Arc;
    let store = Arc::new(wal_core::storage::faulty::FaultyStore::new(wal_core::storage::memory::MemoryStore::new(), 3));
    let meta = Arc::new(wal_core::meta::embedded::EmbeddedMeta::in_memory());
    let tune = |cfg: &mut gateway::GatewayConfig| {
        cfg.wal.upload_attempts = 3;
        cfg.wal.retry_backoff_ms = 100;
        cfg.wal.retry_backoff_max_ms = 200;
    };
    (led_broker(store.clone(), meta, tune, &[("t", &[])]).await, store)
}

/// A retry that arrives while the first attempt of its batch is still being uploaded, whose
/// upload then fails for good: another producer's batch takes the offsets, and the retry must
/// not be answered with them (issue 12, defect 2). The producer's next retry is appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_never_answered_with_another_batchs_offset() {
    let (b, store) = faulty_broker().await;
    store.set_ops(wal_core::storage::faulty::FaultOps::Puts);
    store.set_fail_probability(1.0);
    let first = submit_produce(&b, "t", idempotent_batch(2, 1, 0, 0)).await;
    let retry = submit_produce(&b, "t", idempotent_batch(2, 1, 0, 0)).await;
    let (err, _) = answer(first).await;
    assert_ne!(err, 0, "the first attempt's upload failed for good");
    store.heal();
    assert_eq!(answer(submit_produce(&b, "t", idempotent_batch(3, 2, 0, 0)).await).await, (0, 0), "another producer takes offset 0");
    let (err, base) = answer(retry).await;
    assert_ne!(err, 0, "the retry is not acknowledged with the other producer's offset {base}");
    assert_eq!(answer(submit_produce(&b, "t", idempotent_batch(2, 1, 0, 0)).await).await, (0, 3), "sent again, it is appended");
    b.shutdown().await;
}

/// After failed uploads, a pipelined later batch of the same producer is refused until the
/// failed ones are sent again, so the log keeps the producer's order (defect 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_batch_cannot_overtake_failed_ones() {
    let (b, store) = faulty_broker().await;
    assert_eq!(answer(submit_produce(&b, "t", idempotent_batch(1, 1, 0, 0)).await).await, (0, 0));
    store.set_ops(wal_core::storage::faulty::FaultOps::Puts);
    store.set_fail_probability(1.0);
    // Two batches in flight; their responses are not awaited (nothing runs for them).
    let _b1 = submit_produce(&b, "t", idempotent_batch(1, 1, 0, 1)).await;
    let _b2 = submit_produce(&b, "t", idempotent_batch(1, 1, 0, 2)).await;
    let p = b.partition("t", 0).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while p.writer().unwrap().written() != 1 {
        assert!(std::time::Instant::now() < deadline, "the failed uploads never reset the writer");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    store.heal();
    let (err, _) = answer(submit_produce(&b, "t", idempotent_batch(1, 1, 0, 3)).await).await;
    assert_eq!(err, kafka_protocol::ResponseError::OutOfOrderSequenceNumber.code(), "sequence 3 may not take the failed ones' place");
    for seq in 1..=3 {
        assert_eq!(answer(submit_produce(&b, "t", idempotent_batch(1, 1, 0, seq)).await).await, (0, seq as i64), "resent in order");
    }
    b.shutdown().await;
}

/// Producer state stays bounded: an id InitProducerId never handed out gets
/// UNKNOWN_PRODUCER_ID and no entry; an id handed out by another gateway meanwhile is found by
/// reading the counter again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_producer_ids_get_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let running = gateway::start(config(dir.path())).await.unwrap();
    running.broker.create_topic("ids", 1, Default::default(), false).await.unwrap();
    let addr = running.addr;
    let b = running.broker.clone();
    tokio::task::spawn_blocking(move || {
        let (pid, epoch) = init_producer_id(addr);
        assert_eq!(produce(addr, "ids", idempotent_batch(1, pid, epoch, 0)), (0, 0));
        let unknown = kafka_protocol::ResponseError::UnknownProducerId.code();
        assert_eq!(produce(addr, "ids", idempotent_batch(1, 5_000_000, 0, 0)).0, unknown);
        std::thread::sleep(gateway::broker::producer_ids::ISSUED_RECHECK);
        assert_eq!(produce(addr, "ids", idempotent_batch(1, i64::MAX, 0, 0)).0, unknown);
    })
    .await
    .unwrap();
    assert_eq!(b.partition("ids", 0).unwrap().producers.lock().await.len(), 1, "only the issued producer has state");
    // Another gateway reserves the next block: its ids are accepted here.
    wal_core::meta::advance_counter(&*b.meta, "gw/producer_id", 1000, |_| async {
        Ok::<_, wal_core::MetaError>((wal_core::meta::Txn::new(), ()))
    })
    .await
    .unwrap();
    tokio::time::sleep(gateway::broker::producer_ids::ISSUED_RECHECK).await;
    tokio::task::spawn_blocking(move || assert_eq!(produce(addr, "ids", idempotent_batch(1, 1500, 0, 0)), (0, 1))).await.unwrap();
    running.shutdown().await;
}

/// A producer state too large for one MetaStore value is snapshotted in pieces and read back
/// whole by the next owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_producer_state_is_snapshotted_in_pieces() {
    use std::sync::Arc;
    let store = Arc::new(wal_core::storage::memory::MemoryStore::new());
    let meta: Arc<dyn wal_core::MetaStore> = Arc::new(wal_core::meta::embedded::EmbeddedMeta::in_memory());
    let cfg = wal_core::WalConfig { put_budget_per_sec: 1000, ..Default::default() };
    let first = wal_core::Wal::new(store.clone(), meta.clone(), cfg.clone()).unwrap();
    let p = gateway::broker::Partition::open(&first, Arc::from("big"), 0).await.unwrap();
    p.acquire(&first, Default::default(), 1).await.unwrap();
    let w = p.writer().unwrap();
    let end = w.append(wal_core::Entry::new(1, -1, bytes::Bytes::from_static(b"x"))).await.unwrap();
    let _ = end;
    let producers = 4000;
    {
        let mut s = p.producers.lock().await;
        for pid in 0..producers {
            for seq in 0..5 {
                let info = gateway::batch::BatchInfo {
                    attributes: 0,
                    offset_count: 1,
                    record_count: 1,
                    base_timestamp: 0,
                    max_timestamp: wal_core::util::now_ms() as i64,
                    producer_id: pid,
                    producer_epoch: 0,
                    base_sequence: seq,
                    records: None,
                };
                s.record(&info, 0, 1); // below the durable end: covered by the snapshot
            }
        }
    }
    p.snapshot_producers(&*meta).await.unwrap();
    let pieces = meta.list("gw/pstate/big-0/").await.unwrap().kvs;
    assert!(pieces.len() >= 2, "{} pieces", pieces.len());
    assert!(pieces.iter().all(|kv| kv.value.len() <= gateway::broker::partition::SNAPSHOT_PIECE_BYTES + 4096));
    let head = meta.get("gw/pstate/big-0").await.unwrap().unwrap();
    assert!(head.value.len() < 1024, "the head holds no state");
    // Written again: the previous generation's pieces go.
    p.writer().unwrap().append(wal_core::Entry::new(1, -1, bytes::Bytes::from_static(b"y"))).await.unwrap();
    p.snapshot_producers(&*meta).await.unwrap();
    assert_eq!(meta.list("gw/pstate/big-0/").await.unwrap().kvs.len(), pieces.len(), "one generation kept");
    // The next owner reads every piece.
    let second = wal_core::Wal::new(store.clone(), meta.clone(), cfg).unwrap();
    let q = gateway::broker::Partition::open(&second, Arc::from("big"), 0).await.unwrap();
    q.acquire(&second, Default::default(), 1).await.unwrap();
    let s = q.producers.lock().await;
    assert_eq!(s.len(), producers as usize);
    let retry = gateway::batch::BatchInfo {
        attributes: 0,
        offset_count: 1,
        record_count: 1,
        base_timestamp: 0,
        max_timestamp: 0,
        producer_id: producers - 1,
        producer_epoch: 0,
        base_sequence: 4,
        records: None,
    };
    assert!(matches!(s.check(&retry), gateway::broker::producer::Check::Duplicate(_)));
    drop(s);
    q.close().await;
}

/// A gateway over a MetaStore that can lose answers or refuse reads, with topics led.
async fn broker_over_faulty_meta(
    topics: &[(&str, &[(&str, &str)])],
    commit_timeout_ms: u64,
) -> (std::sync::Arc<gateway::Broker>, std::sync::Arc<wal_core::meta::faulty::FaultyMeta<wal_core::meta::embedded::EmbeddedMeta>>) {
    use std::sync::Arc;
    let meta = Arc::new(wal_core::meta::faulty::FaultyMeta::new(wal_core::meta::embedded::EmbeddedMeta::in_memory()));
    let tune = |cfg: &mut gateway::GatewayConfig| {
        cfg.retention_check_interval_ms = 3_600_000; // retention runs when the test says
        cfg.wal.commit_timeout_ms = commit_timeout_ms;
    };
    let b = led_broker(Arc::new(wal_core::storage::memory::MemoryStore::new()), meta.clone(), tune, topics).await;
    (b, meta)
}

/// One partition whose metadata cannot be read does not stop retention for the others (issue
/// 12, defect 5: a `?` in the loop ended the pass at the first failing partition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_goes_on_past_a_partition_it_cannot_read() {
    let limits: &[(&str, &str)] = &[("segment.bytes", "1000"), ("retention.bytes", "0")];
    let (b, meta) = broker_over_faulty_meta(&[("r1", limits), ("r2", limits)], 30_000).await;
    for _ in 0..12 {
        for t in ["r1", "r2"] {
            assert_eq!(answer(submit_produce(&b, t, batch(100)).await).await.0, 0);
        }
    }
    let (r1, r2) = (b.partition("r1", 0).unwrap(), b.partition("r2", 0).unwrap());
    meta.make_unreadable(&format!("seg/{}/", r1.log));
    let _ = gateway::broker::retention::enforce_once(&b).await;
    assert_eq!(r1.reader.start_offset(), 0, "r1's segments could not be read");
    assert!(r2.reader.start_offset() > 0, "r2 (after r1 in the pass) was not truncated");
    meta.heal();
    gateway::broker::retention::enforce_once(&b).await.unwrap();
    assert!(r1.reader.start_offset() > 0, "r1 is truncated at the next pass");
    b.shutdown().await;
}

/// Block commits applied but answered with an error (outcome unknown): once (the WAL retries
/// the commit), and for longer than `commit_timeout_ms` (the writer stops, the produce gets an
/// error, the partition is taken again and its producer state rebuilt from the log). Either
/// way the batch is stored once and the producer's retries are answered with its offsets,
/// never appended again (issue 12, defect 3, the outcome-unknown half).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_lost_commit_answers_is_not_stored_twice() {
    for lost in [1, 1000] {
        let (b, meta) = broker_over_faulty_meta(&[("t", &[])], 1500).await;
        assert_eq!(answer(submit_produce(&b, "t", idempotent_batch(2, 1, 0, 0)).await).await, (0, 0));
        meta.lose_answers("chunk/", lost);
        let mut got = answer(submit_produce(&b, "t", idempotent_batch(3, 1, 0, 2)).await).await;
        assert!(meta.lost.load(std::sync::atomic::Ordering::SeqCst) >= 1, "a commit's answer was lost");
        if lost > 1 {
            assert_ne!(got.0, 0, "the writer gave up: the producer sees an error");
            meta.heal();
        }
        // The client retries the same batch until it is acknowledged, as librdkafka does.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while got.0 != 0 {
            assert!(std::time::Instant::now() < deadline, "never acknowledged (last error {})", got.0);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            got = answer(submit_produce(&b, "t", idempotent_batch(3, 1, 0, 2)).await).await;
        }
        assert_eq!(got.1, 2, "{lost} lost: acknowledged at the offset it was stored at");
        assert_eq!(answer(submit_produce(&b, "t", idempotent_batch(3, 1, 0, 2)).await).await, (0, 2), "a late duplicate");
        assert_eq!(
            answer(submit_produce(&b, "t", idempotent_batch(1, 1, 0, 5)).await).await,
            (0, 5),
            "stored once: the next batch follows"
        );
        assert_eq!(b.partition("t", 0).unwrap().high_watermark(), 6);
        b.shutdown().await;
    }
}
