//! One connection's requests take effect in the order they were sent, as on Kafka (issue 16):
//! a client that pipelines async commits of increasing offsets must find the last one
//! committed, and admin requests sent back to back must apply one after another. Driven in
//! process over a real socket, every request written before any response is read.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn create(topic: &'static str, partitions: i32) -> RequestKind {
    let t =
        create_topics_request::CreatableTopic::default().with_name(name(topic)).with_num_partitions(partitions).with_replication_factor(1);
    RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![t]).with_timeout_ms(10_000))
}

fn commit(group: &str, topic: &'static str, offset: i64) -> RequestKind {
    let p = offset_commit_request::OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(offset);
    let t = offset_commit_request::OffsetCommitRequestTopic::default().with_name(name(topic)).with_partitions(vec![p]);
    RequestKind::OffsetCommit(
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.into())))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![t]),
    )
}

/// librdkafka test 0030's shape: 300 async commits of increasing offsets from one consumer,
/// then `committed()`. Requests of a connection used to run concurrently, so an earlier commit
/// could land after a later one (299 or 297 instead of 300, 5 of 5 tries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commits_land_in_the_order_sent() {
    let (running, _dir) = start_local(|_| {}).await;
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        let ResponseKind::CreateTopics(r) = call(addr, ApiKey::CreateTopics, 7, create("ordered", 1)) else { panic!() };
        assert_eq!(r.topics[0].error_code, 0);
        for round in 0..3 {
            let group = format!("g{round}");
            let mut frames = Vec::new();
            for i in 1..=300i64 {
                frames.extend(frame(ApiKey::OffsetCommit, 8, i as i32, &commit(&group, "ordered", i)));
            }
            let fetch = OffsetFetchRequest::default().with_group_id(GroupId(StrBytes::from_string(group.clone()))).with_topics(None);
            frames.extend(frame(ApiKey::OffsetFetch, 7, 301, &RequestKind::OffsetFetch(fetch)));
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&frames).unwrap();
            for i in 1..=300 {
                let (corr, r) = read_response_of(&mut s, ApiKey::OffsetCommit, 8);
                assert_eq!(corr, i);
                let ResponseKind::OffsetCommit(r) = r else { panic!() };
                assert_eq!(r.topics[0].partitions[0].error_code, 0);
            }
            let (corr, r) = read_response_of(&mut s, ApiKey::OffsetFetch, 7);
            assert_eq!(corr, 301);
            let ResponseKind::OffsetFetch(r) = r else { panic!() };
            assert_eq!(r.topics[0].partitions[0].committed_offset, 300, "round {round}: the last commit sent is the one stored");
        }
    })
    .await
    .unwrap();
    running.shutdown().await;
}

/// Create, delete, create again (with another partition count), then Metadata, all written
/// at once: each applies after the one before, so the last create wins and nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_admin_requests_apply_one_after_another() {
    let (running, _dir) = start_local(|_| {}).await;
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        let delete = RequestKind::DeleteTopics(
            DeleteTopicsRequest::default()
                .with_topics(vec![delete_topics_request::DeleteTopicState::default().with_name(Some(name("admin-order")))])
                .with_timeout_ms(10_000),
        );
        let metadata = RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name("admin-order")))])),
        );
        let mut frames = frame(ApiKey::CreateTopics, 7, 1, &create("admin-order", 2));
        frames.extend(frame(ApiKey::DeleteTopics, 6, 2, &delete));
        frames.extend(frame(ApiKey::CreateTopics, 7, 3, &create("admin-order", 5)));
        frames.extend(frame(ApiKey::Metadata, 12, 4, &metadata));
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&frames).unwrap();
        for (corr, api, v) in [(1, ApiKey::CreateTopics, 7), (3, ApiKey::CreateTopics, 7)] {
            if corr == 3 {
                let (c, r) = read_response_of(&mut s, ApiKey::DeleteTopics, 6);
                assert_eq!(c, 2);
                let ResponseKind::DeleteTopics(r) = r else { panic!() };
                assert_eq!(r.responses[0].error_code, 0, "the delete follows the first create");
            }
            let (c, r) = read_response_of(&mut s, api, v);
            assert_eq!(c, corr);
            let ResponseKind::CreateTopics(r) = r else { panic!() };
            assert_eq!(r.topics[0].error_code, 0, "create {corr}: {:?}", r.topics[0].error_message);
        }
        let (c, r) = read_response_of(&mut s, ApiKey::Metadata, 12);
        assert_eq!(c, 4);
        let ResponseKind::Metadata(r) = r else { panic!() };
        assert_eq!(r.topics[0].error_code, 0);
        assert_eq!(r.topics[0].partitions.len(), 5, "the second create is the topic that exists");
    })
    .await
    .unwrap();
    running.shutdown().await;
}
