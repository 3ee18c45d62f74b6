//! Resource bounds of one gateway (issue 13), driven in process over real sockets: Fetch
//! responses bounded by `fetch_max_bytes` with repeated partitions served once, the request
//! budget admitting frames without deadlock, and the read, write and idle timeouts that keep a
//! stalled or non-reading peer from holding budget forever.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

/// Reads one response frame; its correlation id, or None on close / timeout.
fn read_response(s: &mut TcpStream, timeout: Duration) -> Option<i32> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut size = [0u8; 4];
    s.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).ok()?;
    Some(i32::from_be_bytes(body[..4].try_into().unwrap()))
}

/// Whether the gateway closed `s` within `within` (reading and discarding whatever comes).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 1 << 16];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true, // reset
        }
    }
    false
}

fn api_versions_answered(addr: SocketAddr, within: Duration) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&frame(ApiKey::ApiVersions, 0, 99, &RequestKind::ApiVersions(ApiVersionsRequest::default()))).unwrap();
    read_response(&mut s, within) == Some(99)
}

fn fetch_request(topic: &'static str, copies: usize, partition_max_bytes: i32, max_bytes: i32) -> RequestKind {
    let partitions = (0..copies)
        .map(|_| {
            fetch_request::FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(partition_max_bytes)
        })
        .collect();
    RequestKind::Fetch(
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_topics(vec![fetch_request::FetchTopic::default().with_topic(name(topic)).with_partitions(partitions)]),
    )
}

/// The repro, scaled: one partition named 2,000 times with 1 MiB each and max_bytes
/// 2^31-1 is served once, within `fetch_max_bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_is_bounded_by_fetch_max_bytes_and_serves_a_partition_once() {
    let (running, _dir) = start_local(|c| c.fetch_max_bytes = 16 << 10).await;
    running.broker.create_topic("f", 1, Default::default(), false).await.unwrap();
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        for _ in 0..60 {
            assert_eq!(produce(addr, "f", batch(100)).0, 0);
        }
        let ResponseKind::Fetch(r) = call(addr, ApiKey::Fetch, 11, fetch_request("f", 2000, 1 << 20, i32::MAX)) else { panic!() };
        assert_eq!(r.responses.len(), 1);
        assert_eq!(r.responses[0].partitions.len(), 1, "a repeated partition is answered once");
        let bytes = r.responses[0].partitions[0].records.as_ref().map_or(0, |b| b.len());
        assert!(bytes > 0 && bytes <= 16 << 10, "{bytes} record bytes, fetch_max_bytes is 16 KiB");
        // The request's own max_bytes still applies below the gateway's.
        let ResponseKind::Fetch(r) = call(addr, ApiKey::Fetch, 11, fetch_request("f", 1, 1 << 20, 4000)) else { panic!() };
        let small = r.responses[0].partitions[0].records.as_ref().map_or(0, |b| b.len());
        assert!(small > 0 && small <= 4000, "{small} bytes for max_bytes 4000");
        // KIP-74: one batch larger than every limit still comes, alone.
        let ResponseKind::Fetch(r) = call(addr, ApiKey::Fetch, 11, fetch_request("f", 1, 1, 1)) else { panic!() };
        let one = r.responses[0].partitions[0].records.as_ref().map_or(0, |b| b.len());
        assert_eq!(one, batch(100).len(), "exactly the first batch");
    })
    .await
    .unwrap();
    running.shutdown().await;
}

/// librdkafka's 0082: past the first partition with data, a batch that does not fit the rest of
/// max_bytes is not sent (the response went over fetch.max.bytes by a whole batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_first_partition_may_pass_max_bytes() {
    let (running, _dir) = start_local(|_| {}).await;
    running.broker.create_topic("two", 2, Default::default(), false).await.unwrap();
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        let big = batch(6000); // about 40 KiB in one batch
        for p in 0..2 {
            let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
                produce_request::TopicProduceData::default().with_name(name("two")).with_partition_data(vec![
                    produce_request::PartitionProduceData::default().with_index(p).with_records(Some(big.clone())),
                ]),
            ]);
            let ResponseKind::Produce(r) = call(addr, ApiKey::Produce, 9, RequestKind::Produce(req)) else { panic!() };
            assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        }
        let max = (big.len() + big.len() / 2) as i32;
        let partitions = (0..2)
            .map(|p| fetch_request::FetchPartition::default().with_partition(p).with_fetch_offset(0).with_partition_max_bytes(20 << 20))
            .collect();
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(max)
            .with_topics(vec![fetch_request::FetchTopic::default().with_topic(name("two")).with_partitions(partitions)]);
        let ResponseKind::Fetch(r) = call(addr, ApiKey::Fetch, 11, RequestKind::Fetch(req)) else { panic!() };
        let sizes: Vec<usize> = r.responses[0].partitions.iter().map(|p| p.records.as_ref().map_or(0, |b| b.len())).collect();
        assert_eq!(sizes, vec![big.len(), 0], "the second batch would pass max_bytes {max}");
    })
    .await
    .unwrap();
    running.shutdown().await;
}

/// The repro: budget = largest frame = 1 MiB, two peers each announce 1 MiB and send
/// half of it. Small requests keep being answered at once, and the stalled peers are closed
/// after `request_read_timeout_ms`, after which a full-size frame is admitted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_frames_cannot_hold_the_budget() {
    let (running, _dir) = start_local(|c| {
        c.max_request_bytes = 1 << 20;
        c.max_admin_request_bytes = 1 << 20;
        c.max_inflight_request_bytes = 1 << 20;
        c.request_read_timeout_ms = 1500;
    })
    .await;
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        let mut stalled: Vec<TcpStream> = (0..2)
            .map(|i| {
                let mut s = TcpStream::connect(addr).unwrap();
                let mut head = (1i32 << 20).to_be_bytes().to_vec();
                head.extend_from_slice(&(ApiKey::Produce as i16).to_be_bytes());
                head.extend_from_slice(&9i16.to_be_bytes());
                head.extend_from_slice(&i32::to_be_bytes(i));
                head.resize(512 << 10, 0);
                s.write_all(&head).unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..5 {
            assert!(api_versions_answered(addr, Duration::from_secs(1)), "a small request waits behind stalled frames");
        }
        for s in &mut stalled {
            assert!(closed_within(s, Duration::from_secs(10)), "a stalled frame is never timed out");
        }
        // The budget came back: a real 1 MiB-class request is admitted and answered.
        let big = RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(
                    (0..20_000)
                        .map(|i| {
                            metadata_request::MetadataRequestTopic::default()
                                .with_name(Some(TopicName(StrBytes::from_string(format!("t{i:030}")))))
                        })
                        .collect(),
                ))
                .with_allow_auto_topic_creation(false),
        );
        let f = frame(ApiKey::Metadata, 9, 5, &big);
        assert!(f.len() > 600 << 10 && f.len() < 1 << 20);
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&f).unwrap();
        assert_eq!(read_response(&mut s, Duration::from_secs(10)), Some(5));
    })
    .await
    .unwrap();
    running.shutdown().await;
}

/// A peer that never reads its responses is closed after `response_write_timeout_ms`; one that
/// sends nothing is closed after `connections_max_idle_ms`, unless a request of it is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reading_and_idle_peers_are_closed() {
    let (running, _dir) = start_local(|c| {
        c.response_write_timeout_ms = 500;
        c.connections_max_idle_ms = 700;
    })
    .await;
    running.broker.create_topic("w", 1, Default::default(), false).await.unwrap();
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        for _ in 0..20 {
            assert_eq!(produce(addr, "w", batch(2000)).0, 0);
        }
        // ~300 KB per response, 64 of them unread: far more than the socket buffers hold.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        let req = frame(ApiKey::Fetch, 11, 1, &fetch_request("w", 1, 1 << 20, 1 << 20));
        for _ in 0..64 {
            if s.write_all(&req).is_err() {
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(3));
        assert!(closed_within(&mut s, Duration::from_secs(10)), "a peer that does not read is never closed");

        let mut idle = TcpStream::connect(addr).unwrap();
        assert!(closed_within(&mut idle, Duration::from_secs(5)), "an idle connection is never closed");

        // A long poll (1.5 s, past the idle time) is in flight: not idle.
        let mut polling = TcpStream::connect(addr).unwrap();
        let mut long = fetch_request("w", 1, 1 << 20, 1 << 20);
        if let RequestKind::Fetch(f) = &mut long {
            f.max_wait_ms = 1500;
            f.min_bytes = 1 << 30;
        }
        polling.write_all(&frame(ApiKey::Fetch, 11, 8, &long)).unwrap();
        assert_eq!(read_response(&mut polling, Duration::from_secs(5)), Some(8), "a long poll was cut as idle");
    })
    .await
    .unwrap();
    running.shutdown().await;
}

/// `max_connections_per_ip`: connections past it are closed on accept; a closed one frees its
/// place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped() {
    let (running, _dir) = start_local(|c| c.max_connections_per_ip = 3).await;
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        let mut open: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        for s in &mut open {
            s.write_all(&frame(ApiKey::ApiVersions, 0, 1, &RequestKind::ApiVersions(ApiVersionsRequest::default()))).unwrap();
            assert_eq!(read_response(s, Duration::from_secs(5)), Some(1), "within the cap: served");
        }
        let mut fourth = TcpStream::connect(addr).unwrap();
        assert!(closed_within(&mut fourth, Duration::from_secs(5)), "a fourth connection from 127.0.0.1 stays open");
        drop(open.pop());
        std::thread::sleep(Duration::from_millis(300));
        assert!(api_versions_answered(addr, Duration::from_secs(5)), "a closed connection frees its place");
    })
    .await
    .unwrap();
    running.shutdown().await;
}

/// OffsetFetch v8: a group named twice is answered once, and past 10000 groups the rest get
/// INVALID_REQUEST instead of a MetaStore read each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_fetch_answers_each_group_once_and_at_most_ten_thousand() {
    let (running, _dir) = start_local(|_| {}).await;
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        let group = |i: usize| {
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(format!("g{i}"))))
                .with_topics(None)
        };
        let mut groups: Vec<_> = (0..3).map(|_| group(0)).collect();
        groups.extend((1..=10_005).map(group));
        let ResponseKind::OffsetFetch(r) =
            call(addr, ApiKey::OffsetFetch, 8, RequestKind::OffsetFetch(OffsetFetchRequest::default().with_groups(groups)))
        else {
            panic!()
        };
        assert_eq!(r.groups.len(), 10_006, "g0 once, then g1..g10005");
        let refused = r.groups.iter().filter(|g| g.error_code == kafka_protocol::ResponseError::InvalidRequest.code()).count();
        assert_eq!(refused, 6, "the groups past the first 10000");
        assert_eq!(r.groups[0].group_id.as_str(), "g0");
        assert!(r.groups[..10_000].iter().all(|g| g.error_code == 0));
    })
    .await
    .unwrap();
    running.shutdown().await;
}
