//! Hostile input against the real binary, run with its address space limited (RLIMIT_AS, as
//! `prlimit --as` does) so that no allocation can succeed by mapping memory it never touches:
//! length fields rewritten to huge values at every position of valid requests of every supported
//! API and version, random mutations, oversized and truncated frames. The gateway must answer or
//! close the offending connection, keep serving others, and keep its memory bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

mod common;

use bytes::{BufMut, BytesMut};
use common::{local_gateway, LocalGateway};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

/// Address space the gateway under test may map: far below what a preallocation from a lying
/// array length asks for (2^31 elements of tens of bytes), well above what it needs.
const ADDRESS_SPACE: u64 = 8 << 30;

fn start() -> LocalGateway {
    let gw = local_gateway(&["--log", "error"]);
    let limit = libc::rlimit { rlim_cur: ADDRESS_SPACE, rlim_max: ADDRESS_SPACE };
    // SAFETY: prlimit on our own child with a valid rlimit value; no memory is shared.
    let rc = unsafe { libc::prlimit(gw.gw.0.id() as libc::pid_t, libc::RLIMIT_AS, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    gw
}

fn frame(api: ApiKey, version: i16, body: &RequestKind) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("hostile")));
    header.encode(&mut buf, api.request_header_version(version)).unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = Vec::with_capacity(buf.len() + 4);
    out.extend_from_slice(&(buf.len() as i32).to_be_bytes());
    out.extend_from_slice(&buf);
    out
}

/// Sends raw bytes on a fresh connection; reads until a response frame, close, or timeout.
fn poke(port: u16, bytes: &[u8]) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { panic!("gateway stopped accepting") };
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 4096];
    let _ = s.read(&mut buf);
}

/// A working request/response round trip (ApiVersions v0).
fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = frame(ApiKey::ApiVersions, 0, &RequestKind::ApiVersions(ApiVersionsRequest::default()));
    if s.write_all(&req).is_err() {
        return false;
    }
    let mut size = [0u8; 4];
    if s.read_exact(&mut size).is_err() {
        return false;
    }
    let n = i32::from_be_bytes(size);
    let mut body = vec![0u8; n as usize];
    s.read_exact(&mut body).is_ok() && i32::from_be_bytes(body[..4].try_into().unwrap()) == 7
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap()
}

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str("t"))
}

/// A request of each supported API with one element in its arrays, so that nested length fields
/// exist to be corrupted.
fn samples() -> Vec<(ApiKey, RequestKind)> {
    use kafka_protocol::messages::*;
    vec![
        (
            ApiKey::Produce,
            RequestKind::Produce(ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![
                produce_request::TopicProduceData::default().with_name(topic_name()).with_partition_data(vec![
                    produce_request::PartitionProduceData::default().with_records(Some(bytes::Bytes::from_static(&[0u8; 70]))),
                ]),
            ])),
        ),
        (
            ApiKey::Fetch,
            RequestKind::Fetch(FetchRequest::default().with_max_wait_ms(0).with_topics(vec![
            fetch_request::FetchTopic::default().with_topic(topic_name()).with_partitions(vec![fetch_request::FetchPartition::default()]),
        ])),
        ),
        (
            ApiKey::ListOffsets,
            RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic_name())
                    .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()])])),
        ),
        (
            ApiKey::Metadata,
            RequestKind::Metadata(
                MetadataRequest::default()
                    .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name()))])),
            ),
        ),
        (ApiKey::ApiVersions, RequestKind::ApiVersions(ApiVersionsRequest::default())),
        (
            ApiKey::CreateTopics,
            RequestKind::CreateTopics(CreateTopicsRequest::default().with_validate_only(true).with_topics(
                vec![create_topics_request::CreatableTopic::default()
                    .with_name(topic_name())
                    .with_num_partitions(1)
                    .with_replication_factor(1)
                    .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_value(Some(StrBytes::from_static_str("1")))])],
            )),
        ),
        (
            ApiKey::DeleteTopics,
            RequestKind::DeleteTopics(DeleteTopicsRequest::default().with_topic_names(vec![TopicName(StrBytes::from_static_str("nope"))])),
        ),
        (
            ApiKey::DeleteRecords,
            RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(
                vec![delete_records_request::DeleteRecordsTopic::default()
                    .with_name(topic_name())
                    .with_partitions(vec![delete_records_request::DeleteRecordsPartition::default()])],
            )),
        ),
        (ApiKey::InitProducerId, RequestKind::InitProducerId(InitProducerIdRequest::default())),
        (
            ApiKey::DescribeConfigs,
            RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(
                vec![describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("t"))
                    .with_configuration_keys(Some(vec![StrBytes::from_static_str("x")]))],
            )),
        ),
        (
            ApiKey::AlterConfigs,
            RequestKind::AlterConfigs(AlterConfigsRequest::default().with_validate_only(true).with_resources(vec![
                    alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_static_str("t"))
                        .with_configs(vec![alter_configs_request::AlterableConfig::default()]),
                ])),
        ),
        (
            ApiKey::CreatePartitions,
            RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_validate_only(true).with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(topic_name())
                        .with_count(2)
                        .with_assignments(Some(vec![create_partitions_request::CreatePartitionsAssignment::default()])),
                ])),
        ),
        (
            ApiKey::IncrementalAlterConfigs,
            RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default().with_validate_only(true).with_resources(vec![
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_static_str("t"))
                        .with_configs(vec![incremental_alter_configs_request::AlterableConfig::default()]),
                ])),
        ),
        (ApiKey::DescribeCluster, RequestKind::DescribeCluster(DescribeClusterRequest::default())),
    ]
}

#[test]
fn huge_lengths_at_every_position_of_every_request() {
    let gw = start();
    let pid = gw.gw.0.id();
    let mut sent = 0;
    for (api, req) in samples() {
        let (lo, hi) = gateway::handler::versions(api).expect("supported");
        for v in lo..=hi {
            let valid = frame(api, v, &req);
            // the valid request itself is answered
            poke(gw.port, &valid);
            for pos in 4..valid.len().saturating_sub(3) {
                // a classic int32 length / count of 2^31-1
                let mut m = valid.clone();
                m[pos..pos + 4].copy_from_slice(&0x7fff_ffffi32.to_be_bytes());
                poke(gw.port, &m);
                // a compact (varint) length of 2^32-1
                let mut c = valid[..pos].to_vec();
                c.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
                c.extend_from_slice(&valid[pos + 1..]);
                let len = (c.len() - 4) as i32;
                c[..4].copy_from_slice(&len.to_be_bytes());
                poke(gw.port, &c);
                sent += 2;
            }
        }
        assert!(healthy(gw.port), "gateway stopped answering after {api:?} bombs");
    }
    let rss = rss_kib(pid);
    eprintln!("{sent} hostile frames; gateway RSS {rss} KiB");
    assert!(rss < 1024 * 1024, "RSS {rss} KiB exceeds 1 GiB");
}

#[test]
fn random_mutations_and_bad_frames() {
    use rand::{Rng, SeedableRng};
    let gw = start();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261122);
    let samples = samples();
    for i in 0..1500 {
        let (api, req) = &samples[i % samples.len()];
        let (lo, hi) = gateway::handler::versions(*api).unwrap();
        let mut f = frame(*api, rng.gen_range(lo..=hi), req);
        for _ in 0..rng.gen_range(1..6) {
            let p = rng.gen_range(4..f.len());
            f[p] = rng.gen();
        }
        poke(gw.port, &f);
    }
    // size prefixes: negative, zero, tiny, over the limit; truncated frames; unknown API key
    for size in [-1i32, 0, 3, i32::MAX, 200 << 20] {
        poke(gw.port, &size.to_be_bytes());
    }
    let mut truncated = 100i32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[0, 3, 0, 1, 0, 0]);
    poke(gw.port, &truncated);
    let mut unknown = BytesMut::new();
    unknown.put_i32(10);
    unknown.put_i16(9999);
    unknown.put_i16(0);
    unknown.put_i32(1);
    unknown.put_i16(-1);
    poke(gw.port, &unknown);
    let noise: Vec<u8> = (0..10_000).map(|_| rng.gen()).collect();
    poke(gw.port, &noise);
    assert!(healthy(gw.port));
    assert!(rss_kib(gw.gw.0.id()) < 1024 * 1024);
}

#[test]
fn unsupported_api_versions_version_gets_the_v0_fallback() {
    let gw = start();
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = BytesMut::new();
    req.put_i32(0);
    req.put_i16(ApiKey::ApiVersions as i16);
    req.put_i16(127);
    req.put_i32(42);
    req.put_i16(-1);
    req.put_u8(0);
    let n = (req.len() - 4) as i32;
    req[..4].copy_from_slice(&n.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut size = [0u8; 4];
    s.read_exact(&mut size).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).unwrap();
    let mut b = bytes::Bytes::from(body);
    use bytes::Buf;
    assert_eq!(b.get_i32(), 42);
    use kafka_protocol::protocol::Decodable;
    let resp = ApiVersionsResponse::decode(&mut b, 0).unwrap();
    assert_eq!(resp.error_code, 35);
    assert!(resp.api_keys.iter().any(|k| k.api_key == ApiKey::Produce as i16));
}
