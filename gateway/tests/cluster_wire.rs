//! Two gateway processes on one etcd and one S3-compatible server (moto_server), checked at the
//! wire: partitions split between them; Metadata names every gateway and each partition's owner
//! and leader epoch; Produce to the non-owner gets NOT_LEADER_OR_FOLLOWER; Fetch with a stale
//! leader epoch gets FENCED_LEADER_EPOCH; group requests to the non-coordinator get
//! NOT_COORDINATOR; DeleteRecords to the non-owner gets NOT_LEADER_OR_FOLLOWER; a gateway stopped with SIGTERM hands its partitions over before it leaves
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
    let mut args = cloud_args(etcd, s3, "cluster");
    args.extend(["--node-id".into(), node.to_string(), "--metrics-listen".into(), format!("127.0.0.1:{}", free_port())]);
    args.extend(["--cluster-lease-ttl-secs", "30", "--default-partitions", "4", "--log", "info"].map(String::from));
    args.extend(["--data-dir".into(), dir.join(node.to_string()).to_str().unwrap().into()]);
    spawn_gateway(port, &args, std::fs::File::create(dir.join(format!("gw{node}.log"))).unwrap().into())
}

/// (brokers, partition -> (leader, leader epoch)) from Metadata v12.
fn metadata(addr: SocketAddr) -> (Vec<i32>, HashMap<i32, (i32, i32)>) {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name("split")))]))
        .with_allow_auto_topic_creation(true);
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
