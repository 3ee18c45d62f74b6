//! Transactions on the wire: InitProducerId with a transactional id bumps the epoch (fencing),
//! the coordinator's errors (PRODUCER_FENCED, INVALID_PRODUCER_ID_MAPPING), a transactional
//! batch for a partition the transaction did not add (INVALID_TXN_STATE), the last stable
//! offset and aborted-transaction list of read_committed Fetch, DescribeTransactions and
//! ListTransactions (the real-client side is compat-tests/test_transactions.py).

mod common;

use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn tid(s: &'static str) -> TransactionalId {
    TransactionalId(StrBytes::from_static_str(s))
}

fn init(addr: std::net::SocketAddr, id: &'static str) -> (i64, i16) {
    let req = InitProducerIdRequest::default().with_transactional_id(Some(tid(id))).with_transaction_timeout_ms(60_000);
    let ResponseKind::InitProducerId(r) = call(addr, ApiKey::InitProducerId, 1, RequestKind::InitProducerId(req)) else { panic!() };
    assert_eq!(r.error_code, 0);
    (r.producer_id.0, r.producer_epoch)
}

fn add_partition(addr: std::net::SocketAddr, id: &'static str, pid: i64, epoch: i16, topic: &'static str) -> i16 {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(tid(id))
        .with_v3_and_below_producer_id(pid.into())
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![0])]);
    let ResponseKind::AddPartitionsToTxn(r) = call(addr, ApiKey::AddPartitionsToTxn, 3, RequestKind::AddPartitionsToTxn(req)) else {
        panic!()
    };
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

/// AddPartitionsToTxn v4 with verify_only (KIP-890 part 1): the code of each topic's partition 0.
fn verify(addr: std::net::SocketAddr, id: &'static str, pid: i64, epoch: i16, topics: &[&'static str]) -> Vec<i16> {
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
        add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
            .with_transactional_id(tid(id))
            .with_producer_id(pid.into())
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(
                topics
                    .iter()
                    .map(|t| add_partitions_to_txn_request::AddPartitionsToTxnTopic::default().with_name(name(t)).with_partitions(vec![0]))
                    .collect(),
            ),
    ]);
    let ResponseKind::AddPartitionsToTxn(r) = call(addr, ApiKey::AddPartitionsToTxn, 4, RequestKind::AddPartitionsToTxn(req)) else {
        panic!()
    };
    r.results_by_transaction[0].topic_results.iter().map(|t| t.results_by_partition[0].partition_error_code).collect()
}

fn txn_produce(addr: std::net::SocketAddr, id: &'static str, topic: &'static str, pid: i64, epoch: i16, seq: i32) -> (i16, i64) {
    let mut b = gateway::batch::encode_simple_batch(2, pid, epoch, seq, wal_core::util::now_ms() as i64);
    b[21..23].copy_from_slice(&0x10i16.to_be_bytes()); // transactional
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    let req = ProduceRequest::default().with_transactional_id(Some(tid(id))).with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
        produce_request::TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![produce_request::PartitionProduceData::default().with_records(Some(bytes::Bytes::from(b)))]),
    ]);
    let ResponseKind::Produce(r) = call(addr, ApiKey::Produce, 9, RequestKind::Produce(req)) else { panic!() };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn end(addr: std::net::SocketAddr, id: &'static str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let req = EndTxnRequest::default()
        .with_transactional_id(tid(id))
        .with_producer_id(pid.into())
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let ResponseKind::EndTxn(r) = call(addr, ApiKey::EndTxn, 3, RequestKind::EndTxn(req)) else { panic!() };
    r.error_code
}

/// read_committed Fetch v11 of partition 0: (last stable offset, aborted transactions, bytes).
fn fetch_committed(addr: std::net::SocketAddr, topic: &'static str) -> (i64, Vec<(i64, i64)>, usize) {
    let req = FetchRequest::default().with_isolation_level(1).with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![
        fetch_request::FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![fetch_request::FetchPartition::default().with_fetch_offset(0).with_partition_max_bytes(1 << 20)]),
    ]);
    let ResponseKind::Fetch(r) = call(addr, ApiKey::Fetch, 11, RequestKind::Fetch(req)) else { panic!() };
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let aborted = p.aborted_transactions.iter().flatten().map(|a| (a.producer_id.0, a.first_offset)).collect();
    (p.last_stable_offset, aborted, p.records.as_ref().map(|r| r.len()).unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transaction_protocol_on_the_wire() {
    let (running, _dir) = start_local(|_| {}).await;
    running.broker.create_topic("t", 1, Default::default(), false).await.unwrap();
    running.broker.create_topic("other", 1, Default::default(), false).await.unwrap();
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        // a plain record first (offset 0)
        assert_eq!(produce(addr, "t", batch(1)).0, 0);
        let (pid, e0) = init(addr, "app");
        let (pid2, e1) = init(addr, "app");
        assert_eq!((pid2, e1), (pid, e0 + 1), "a new incarnation: same id, next epoch");
        assert_eq!(
            add_partition(addr, "app", pid, e0, "t"),
            kafka_protocol::ResponseError::ProducerFenced.code(),
            "the old epoch is fenced"
        );
        assert_eq!(add_partition(addr, "app", pid + 1, e1, "t"), 49, "INVALID_PRODUCER_ID_MAPPING");
        assert_eq!(add_partition(addr, "app", pid, e1, "t"), 0);
        // a partition the transaction did not add
        assert_eq!(txn_produce(addr, "app", "other", pid, e1, 0).0, 48, "INVALID_TXN_STATE");
        assert_eq!(verify(addr, "app", pid, e1, &["t", "other"]), vec![0, 48], "the v4 verification form agrees");
        assert_eq!(verify(addr, "app", pid, e0, &["t"]), vec![kafka_protocol::ResponseError::ProducerFenced.code()]);
        let (code, first) = txn_produce(addr, "app", "t", pid, e1, 0);
        assert_eq!((code, first), (0, 1));
        assert_eq!(produce(addr, "t", batch(1)).0, 0); // offset 3, after the open transaction
        let (lso, aborted, _) = fetch_committed(addr, "t");
        assert_eq!((lso, aborted.len()), (1, 0), "the open transaction holds the last stable offset");
        // DescribeTransactions / ListTransactions while it is open
        let req = DescribeTransactionsRequest::default().with_transactional_ids(vec![tid("app"), tid("nobody")]);
        let ResponseKind::DescribeTransactions(d) = call(addr, ApiKey::DescribeTransactions, 0, RequestKind::DescribeTransactions(req))
        else {
            panic!()
        };
        assert_eq!(d.transaction_states[0].transaction_state.as_str(), "Ongoing");
        assert_eq!(d.transaction_states[0].topics[0].partitions, vec![0]);
        assert_eq!(d.transaction_states[1].error_code, 105, "TRANSACTIONAL_ID_NOT_FOUND");
        let req = ListTransactionsRequest::default()
            .with_state_filters(vec![StrBytes::from_static_str("Ongoing"), StrBytes::from_static_str("Bogus")]);
        let ResponseKind::ListTransactions(l) = call(addr, ApiKey::ListTransactions, 0, RequestKind::ListTransactions(req)) else {
            panic!()
        };
        assert_eq!(l.transaction_states.iter().map(|t| t.transactional_id.0.to_string()).collect::<Vec<_>>(), vec!["app".to_string()]);
        assert_eq!(l.unknown_state_filters.iter().map(|s| s.to_string()).collect::<Vec<_>>(), vec!["Bogus".to_string()]);
        // abort: the marker closes it; read_committed sees the aborted range
        assert_eq!(end(addr, "app", pid, e1, false), 0);
        assert_eq!(end(addr, "app", pid, e1, false), 0, "a retried EndTxn answers the same");
        assert_eq!(end(addr, "app", pid, e1, true), 48, "commit after abort: INVALID_TXN_STATE");
        let (lso, aborted, bytes) = fetch_committed(addr, "t");
        assert_eq!(lso, 5, "records 0-3 and the marker at 4");
        assert_eq!(aborted, vec![(pid, 1)]);
        assert!(bytes > 0);
        // a zombie of the old epoch cannot write any more
        assert_eq!(txn_produce(addr, "app", "t", pid, e0, 2).0, 47, "INVALID_PRODUCER_EPOCH");
    })
    .await
    .unwrap();
    running.shutdown().await;
}
