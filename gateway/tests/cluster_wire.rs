//! Two gateway processes on one etcd and one S3-compatible server (moto_server), checked at the
//! wire: partitions split between them; Metadata names every gateway and each partition's owner
//! and leader epoch; Produce to the non-owner gets NOT_LEADER_OR_FOLLOWER; Fetch with a stale
//! leader epoch gets FENCED_LEADER_EPOCH; group requests to the non-coordinator get
//! NOT_COORDINATOR; DeleteRecords to the non-owner gets NOT_LEADER_OR_FOLLOWER; new partitions are
//! led on their owners when CreateTopics / CreatePartitions answer; a gateway stopped with SIGTERM
//! hands its partitions over before it leaves
//! (well before its lease, 30 s here, would expire).
#![cfg(feature = "etcd")]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use wal_core::testing::servers::{self, free_port};

fn spawn(node: i32, port: u16, etcd: &str, s3: &str, dir: &std::path::Path) -> Gw {
    spawn_with_lease(node, port, etcd, s3, dir, 30)
}

fn spawn_with_lease(node: i32, port: u16, etcd: &str, s3: &str, dir: &std::path::Path, lease_secs: u32) -> Gw {
    let mut args = cloud_args(etcd, s3, "cluster");
    args.extend(["--node-id".into(), node.to_string(), "--metrics-listen".into(), format!("127.0.0.1:{}", free_port())]);
    args.extend(["--cluster-lease-ttl-secs".into(), lease_secs.to_string()]);
    args.extend(["--default-partitions", "4", "--log", "info"].map(String::from));
    args.extend(["--data-dir".into(), dir.join(node.to_string()).to_str().unwrap().into()]);
    spawn_gateway(port, &args, std::fs::File::create(dir.join(format!("gw{node}.log"))).unwrap().into())
}

/// (brokers, partition -> (leader, leader epoch)) from Metadata v12.
fn metadata(addr: SocketAddr) -> (Vec<i32>, HashMap<i32, (i32, i32)>) {
    metadata_of(addr, "split", true)
}

fn metadata_of(addr: SocketAddr, topic: &'static str, auto_create: bool) -> (Vec<i32>, HashMap<i32, (i32, i32)>) {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name(topic)))]))
        .with_allow_auto_topic_creation(auto_create);
    let ResponseKind::Metadata(r) = call(addr, ApiKey::Metadata, 12, RequestKind::Metadata(req)) else { panic!() };
    let brokers = r.brokers.iter().map(|b| b.node_id.0).collect();
    let parts = r.topics[0].partitions.iter().map(|p| (p.partition_index, (p.leader_id.0, p.leader_epoch))).collect();
    (brokers, parts)
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn produce_to(addr: SocketAddr, partition: i32) -> (i16, i64) {
    let req =
        ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(name("split"))
            .with_partition_data(vec![produce_request::PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch(2)))])]);
    let ResponseKind::Produce(r) = call(addr, ApiKey::Produce, 9, RequestKind::Produce(req)) else { panic!() };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn fetch_error(addr: SocketAddr, partition: i32, leader_epoch: i32) -> i16 {
    let req = FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![fetch_request::FetchTopic::default()
        .with_topic(name("split"))
        .with_partitions(vec![fetch_request::FetchPartition::default()
            .with_partition(partition)
            .with_current_leader_epoch(leader_epoch)
            .with_fetch_offset(0)
            .with_partition_max_bytes(1 << 20)])]);
    let ResponseKind::Fetch(r) = call(addr, ApiKey::Fetch, 12, RequestKind::Fetch(req)) else { panic!() };
    r.responses[0].partitions[0].error_code
}

fn delete_records_error(addr: SocketAddr, partition: i32) -> i16 {
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![delete_records_request::DeleteRecordsTopic::default().with_name(name("split")).with_partitions(vec![
            delete_records_request::DeleteRecordsPartition::default().with_partition_index(partition).with_offset(0),
        ])]);
    let ResponseKind::DeleteRecords(r) = call(addr, ApiKey::DeleteRecords, 2, RequestKind::DeleteRecords(req)) else { panic!() };
    r.topics[0].partitions[0].error_code
}

#[test]
fn two_gateways_split_partitions_refuse_what_they_do_not_lead_and_hand_over_on_sigterm() {
    let (Some(etcd), Some(moto)) = (servers::start_etcd(), servers::start_moto()) else { return };
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port()];
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| format!("127.0.0.1:{p}").parse().unwrap()).collect();
    let _g1 = spawn(1, ports[0], &etcd.endpoint(), &moto.endpoint(), dir.path());
    let mut g2 = spawn(2, ports[1], &etcd.endpoint(), &moto.endpoint(), dir.path());
    let addr_of = |node: i32| addrs[(node - 1) as usize];

    // Both gateways listed; the four partitions split 2/2, every one with a leader epoch.
    let parts = wait_for("both gateways to lead partitions", || {
        let (brokers, parts) = metadata(addrs[0]);
        let mut load: HashMap<i32, usize> = HashMap::new();
        for (l, e) in parts.values() {
            if *e < 1 {
                return None;
            }
            *load.entry(*l).or_default() += 1;
        }
        (brokers == vec![1, 2] && parts.len() == 4 && load.get(&1) == Some(&2) && load.get(&2) == Some(&2)).then_some(parts)
    });
    // The other gateway reports the same leaders and epochs once its next poll has read them.
    wait_for("both gateways to report the same leaders and epochs", || (metadata(addrs[1]).1 == parts).then_some(()));

    for (&p, &(leader, epoch)) in &parts {
        let other = 3 - leader;
        // Produce: only the owner accepts.
        let (err, _) = wait_for("the owner to accept", || Some(produce_to(addr_of(leader), p)).filter(|r| r.0 == 0));
        assert_eq!(err, 0);
        assert_eq!(produce_to(addr_of(other), p).0, ResponseError::NotLeaderOrFollower.code(), "partition {p} on node {other}");
        // Fetch: the current epoch is served by the owner only; an older one is fenced anywhere.
        assert_eq!(fetch_error(addr_of(leader), p, epoch), 0);
        assert_eq!(fetch_error(addr_of(leader), p, -1), 0);
        assert_eq!(fetch_error(addr_of(other), p, epoch), ResponseError::NotLeaderOrFollower.code());
        if epoch > 1 {
            assert_eq!(fetch_error(addr_of(leader), p, epoch - 1), ResponseError::FencedLeaderEpoch.code());
        }
        assert_eq!(fetch_error(addr_of(leader), p, 0), ResponseError::FencedLeaderEpoch.code());
        assert_eq!(fetch_error(addr_of(other), p, 0), ResponseError::FencedLeaderEpoch.code());
        // DeleteRecords: only the owner truncates.
        assert_eq!(delete_records_error(addr_of(other), p), ResponseError::NotLeaderOrFollower.code());
        assert_eq!(delete_records_error(addr_of(leader), p), 0);
        assert_eq!(fetch_error(addr_of(leader), p, epoch + 1), ResponseError::UnknownLeaderEpoch.code());
    }

    // Groups: both gateways name the same coordinator; the other one refuses the group.
    let coordinator = |addr| {
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("audit")).with_key_type(0);
        let ResponseKind::FindCoordinator(r) = call(addr, ApiKey::FindCoordinator, 3, RequestKind::FindCoordinator(req)) else { panic!() };
        assert_eq!(r.error_code, 0);
        r.node_id.0
    };
    let c = coordinator(addrs[0]);
    assert_eq!(coordinator(addrs[1]), c);
    let hb = HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("audit")))
        .with_generation_id(1)
        .with_member_id(StrBytes::from_static_str("m"));
    let ResponseKind::Heartbeat(r) = call(addr_of(3 - c), ApiKey::Heartbeat, 4, RequestKind::Heartbeat(hb.clone())) else { panic!() };
    assert_eq!(r.error_code, ResponseError::NotCoordinator.code());
    let ResponseKind::Heartbeat(r) = call(addr_of(c), ApiKey::Heartbeat, 4, RequestKind::Heartbeat(hb)) else { panic!() };
    assert_ne!(r.error_code, ResponseError::NotCoordinator.code());

    // SIGTERM gateway 2: it hands its partitions over and leaves; gateway 1 leads them all with
    // new epochs long before the 30 s lease would have expired.
    let stopped = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &g2.0.id().to_string()]).status().unwrap().success());
    let status = g2.0.wait().unwrap();
    assert!(status.success(), "gateway 2 exited with {status}");
    let after = wait_for("gateway 1 to lead every partition", || {
        let (brokers, now) = metadata(addrs[0]);
        (brokers == vec![1] && now.values().all(|(l, _)| *l == 1) && now.iter().all(|(p, (_, e))| *e > parts[p].1 || parts[p].0 == 1))
            .then_some(now)
    });
    assert!(stopped.elapsed() < Duration::from_secs(20), "takeover waited for the lease instead of a handover");
    let log = std::fs::read_to_string(dir.path().join("gw2.log")).unwrap();
    for (p, (leader, _)) in &parts {
        if *leader == 2 {
            assert!(log.contains(&format!("handed partition over log=split-{p}")), "partition {p} not handed over:\n{log}");
        }
    }
    for p in after.keys() {
        let (err, _) = wait_for("gateway 1 to accept", || Some(produce_to(addrs[0], *p)).filter(|r| r.0 == 0));
        assert_eq!(err, 0);
    }
}

fn create_topic(addr: SocketAddr, topic: &'static str, partitions: i32) -> i16 {
    let t =
        create_topics_request::CreatableTopic::default().with_name(name(topic)).with_num_partitions(partitions).with_replication_factor(-1);
    let req = CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![t]);
    let ResponseKind::CreateTopics(r) = call(addr, ApiKey::CreateTopics, 5, RequestKind::CreateTopics(req)) else { panic!() };
    r.topics[0].error_code
}

fn delete_topic(addr: SocketAddr, topic: &'static str) -> i16 {
    let req = DeleteTopicsRequest::default().with_timeout_ms(10_000).with_topic_names(vec![name(topic)]);
    let ResponseKind::DeleteTopics(r) = call(addr, ApiKey::DeleteTopics, 5, RequestKind::DeleteTopics(req)) else { panic!() };
    r.responses[0].error_code
}

fn produce_batch(addr: SocketAddr, topic: &'static str, partition: i32, records: i32) -> (i16, i64) {
    let req =
        ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![produce_request::PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch(records)))])]);
    let ResponseKind::Produce(r) = call(addr, ApiKey::Produce, 9, RequestKind::Produce(req)) else { panic!() };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// (error, high watermark, (base offset, record count) of every batch from offset 0).
fn fetch_batches(addr: SocketAddr, topic: &'static str, partition: i32) -> (i16, i64, Vec<(i64, i32)>) {
    let req = FetchRequest::default().with_max_wait_ms(0).with_max_bytes(8 << 20).with_topics(vec![fetch_request::FetchTopic::default()
        .with_topic(name(topic))
        .with_partitions(vec![fetch_request::FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(0)
            .with_partition_max_bytes(8 << 20)])]);
    let ResponseKind::Fetch(r) = call(addr, ApiKey::Fetch, 11, RequestKind::Fetch(req)) else { panic!() };
    let p = &r.responses[0].partitions[0];
    let records = p.records.clone().unwrap_or_default();
    let mut batches = Vec::new();
    let mut at = 0;
    while at + 61 <= records.len() {
        let base = i64::from_be_bytes(records[at..at + 8].try_into().unwrap());
        let len = i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize;
        let count = i32::from_be_bytes(records[at + 57..at + 61].try_into().unwrap());
        batches.push((base, count));
        at += 12 + len;
    }
    (p.error_code, p.high_watermark, batches)
}

fn coordinator_of(addr: SocketAddr, group: &str) -> i32 {
    let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.into())).with_key_type(0);
    let ResponseKind::FindCoordinator(r) = call(addr, ApiKey::FindCoordinator, 3, RequestKind::FindCoordinator(req)) else { panic!() };
    assert_eq!(r.error_code, 0);
    r.node_id.0
}

fn commit_offset(addr: SocketAddr, group: &str, topic: &'static str, partition: i32, offset: i64) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default().with_name(name(topic)).with_partitions(vec![
            offset_commit_request::OffsetCommitRequestPartition::default().with_partition_index(partition).with_committed_offset(offset),
        ])]);
    let ResponseKind::OffsetCommit(r) = call(addr, ApiKey::OffsetCommit, 8, RequestKind::OffsetCommit(req)) else { panic!() };
    r.topics[0].partitions[0].error_code
}

fn committed_offset(addr: SocketAddr, group: &str, topic: &'static str, partition: i32) -> i64 {
    let req = OffsetFetchRequest::default().with_group_id(GroupId(StrBytes::from_string(group.into()))).with_topics(Some(vec![
        offset_fetch_request::OffsetFetchRequestTopic::default().with_name(name(topic)).with_partition_indexes(vec![partition]),
    ]));
    let ResponseKind::OffsetFetch(r) = call(addr, ApiKey::OffsetFetch, 7, RequestKind::OffsetFetch(req)) else { panic!() };
    assert_eq!(r.error_code, 0);
    r.topics.iter().flat_map(|t| &t.partitions).find(|p| p.partition_index == partition).map(|p| p.committed_offset).unwrap_or(-1)
}

/// A topic deleted and created again through one gateway while the other owns one of its
/// partitions: the owner serves the new, empty log (offsets from 0, none of the old records,
/// no old committed offsets of a group it coordinates), and after it is killed the other
/// gateway takes the new log over and reads exactly what was acknowledged.
#[test]
fn a_topic_deleted_and_created_again_through_another_gateway_starts_empty_everywhere() {
    let (Some(etcd), Some(moto)) = (servers::start_etcd(), servers::start_moto()) else { return };
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port()];
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| format!("127.0.0.1:{p}").parse().unwrap()).collect();
    let _g1 = spawn_with_lease(1, ports[0], &etcd.endpoint(), &moto.endpoint(), dir.path(), 4);
    let mut g2 = spawn_with_lease(2, ports[1], &etcd.endpoint(), &moto.endpoint(), dir.path(), 4);
    wait_for("both gateways to be members", || (metadata_of(addrs[0], "again", false).0 == vec![1, 2]).then_some(()));
    assert_eq!(create_topic(addrs[0], "again", 2), 0);
    // The partition gateway 2 leads, as both gateways see it.
    let p = wait_for("gateway 2 to lead a partition", || {
        let (_, parts) = metadata_of(addrs[1], "again", false);
        parts.iter().find(|(_, (l, e))| *l == 2 && *e >= 1).map(|(p, _)| *p)
    });
    for i in 0..3 {
        let (err, base) = wait_for("gateway 2 to accept", || Some(produce_batch(addrs[1], "again", p, 2)).filter(|r| r.0 == 0));
        assert_eq!((err, base), (0, i * 2));
    }
    let group = (0..64).map(|i| format!("readers-{i}")).find(|g| coordinator_of(addrs[0], g) == 2).expect("a group coordinated by 2");
    assert_eq!(commit_offset(addrs[1], &group, "again", p, 5), 0);
    assert_eq!(committed_offset(addrs[1], &group, "again", p), 5);

    assert_eq!(delete_topic(addrs[0], "again"), 0);
    assert_eq!(create_topic(addrs[0], "again", 2), 0);

    let (err, base) = wait_for("gateway 2 to lead the new partition", || {
        let (_, parts) = metadata_of(addrs[1], "again", false);
        if parts.get(&p).map(|(l, _)| *l) != Some(2) {
            return None;
        }
        Some(produce_batch(addrs[1], "again", p, 2)).filter(|r| r.0 == 0)
    });
    assert_eq!((err, base), (0, 0), "the new log starts at offset 0");
    assert_eq!(fetch_batches(addrs[1], "again", p), (0, 2, vec![(0, 2)]), "only the new log's records");
    assert_eq!(committed_offset(addrs[1], &group, "again", p), -1, "the deleted topic's committed offset is gone");

    // The owner dies; the other gateway takes the new log over and finds all of it.
    let _ = g2.0.kill();
    let _ = g2.0.wait();
    let got = wait_for("gateway 1 to lead and serve the partition", || {
        let (_, parts) = metadata_of(addrs[0], "again", false);
        if parts.get(&p).map(|(l, _)| *l) != Some(1) {
            return None;
        }
        Some(fetch_batches(addrs[0], "again", p)).filter(|r| r.0 == 0)
    });
    assert_eq!(got, (0, 2, vec![(0, 2)]), "the new log as acknowledged, after the takeover");
    let (err, base) = wait_for("gateway 1 to accept", || Some(produce_batch(addrs[0], "again", p, 1)).filter(|r| r.0 == 0));
    assert_eq!((err, base), (0, 2));
}

fn create_partitions(addr: SocketAddr, topic: &'static str, count: i32) -> i16 {
    let t = create_partitions_request::CreatePartitionsTopic::default().with_name(name(topic)).with_count(count);
    let req = CreatePartitionsRequest::default().with_timeout_ms(20_000).with_topics(vec![t]);
    let ResponseKind::CreatePartitions(r) = call(addr, ApiKey::CreatePartitions, 3, RequestKind::CreatePartitions(req)) else { panic!() };
    r.results[0].error_code
}

fn list_latest(addr: SocketAddr, topic: &'static str, partition: i32) -> (i16, i64) {
    let req =
        ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(-1)])]);
    let ResponseKind::ListOffsets(r) = call(addr, ApiKey::ListOffsets, 7, RequestKind::ListOffsets(req)) else { panic!() };
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.offset)
}

/// CreateTopics and CreatePartitions answer once every new partition is led, on whichever
/// gateway owns it: the next request to the leader Metadata names is served at once (KafkaJS's
/// fetchTopicOffsets right after createPartitions failed with NOT_LEADER_OR_FOLLOWER).
#[test]
fn new_partitions_are_led_on_every_gateway_when_the_call_returns() {
    let (Some(etcd), Some(moto)) = (servers::start_etcd(), servers::start_moto()) else { return };
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port()];
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| format!("127.0.0.1:{p}").parse().unwrap()).collect();
    let _g1 = spawn(1, ports[0], &etcd.endpoint(), &moto.endpoint(), dir.path());
    let _g2 = spawn(2, ports[1], &etcd.endpoint(), &moto.endpoint(), dir.path());
    wait_for("both gateways to be members", || (metadata_of(addrs[0], "grown", false).0 == vec![1, 2]).then_some(()));
    wait_for("both gateways to be members", || (metadata_of(addrs[1], "grown", false).0 == vec![1, 2]).then_some(()));
    let check_all = |count: i32| {
        let (_, parts) = metadata_of(addrs[0], "grown", false);
        assert_eq!(parts.len(), count as usize);
        for (p, (leader, epoch)) in parts {
            assert!(epoch >= 1, "partition {p} has no leader epoch yet");
            assert_eq!(list_latest(addrs[(leader - 1) as usize], "grown", p), (0, 0), "partition {p} on its leader {leader}");
        }
    };
    assert_eq!(create_topic(addrs[0], "grown", 2), 0);
    check_all(2);
    assert_eq!(create_partitions(addrs[0], "grown", 8), 0);
    check_all(8);
    assert_eq!(create_partitions(addrs[1], "grown", 12), 0);
    check_all(12);
}
