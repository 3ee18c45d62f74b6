//! The gateway binary in its production configuration: data in an S3-compatible server
//! (moto_server), metadata in a real etcd, both started on loopback. Produce, fetch, SIGKILL,
//! restart: every acknowledged batch is read back at its offset.
#![cfg(feature = "etcd")]

mod common;

use std::process::Stdio;

use common::*;
use kafka_protocol::messages::*;
use wal_core::testing::servers::{self, free_port};

fn spawn(port: u16, mport: u16, etcd: &str, s3: &str, dir: &std::path::Path) -> Gw {
    let mut args = cloud_args(etcd, s3, "gateway-data");
    args.extend(["--metrics-listen".into(), format!("127.0.0.1:{mport}"), "--data-dir".into(), dir.to_str().unwrap().into()]);
    args.extend(["--log".into(), "warn".into()]);
    spawn_gateway(port, &args, Stdio::inherit())
}

fn fetch_all(addr: std::net::SocketAddr, topic: &'static str) -> Vec<u8> {
    let req = FetchRequest::default().with_max_wait_ms(0).with_max_bytes(50 << 20).with_topics(vec![fetch_request::FetchTopic::default()
        .with_topic(name(topic))
        .with_partitions(vec![fetch_request::FetchPartition::default().with_fetch_offset(0).with_partition_max_bytes(50 << 20)])]);
    let ResponseKind::Fetch(r) = call(addr, ApiKey::Fetch, 11, RequestKind::Fetch(req)) else { panic!() };
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0, "fetch failed: high watermark {}, log start {}", p.high_watermark, p.log_start_offset);
    p.records.clone().unwrap_or_default().to_vec()
}

#[test]
fn produce_and_fetch_through_s3_and_etcd_across_a_crash() {
    let (Some(etcd), Some(moto)) = (servers::start_etcd(), servers::start_moto()) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (port, mport) = (free_port(), free_port());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let gw = spawn(port, mport, &etcd.endpoint(), &moto.endpoint(), dir.path());
    call(
        addr,
        ApiKey::Metadata,
        9,
        RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name("cloud")))]))
                .with_allow_auto_topic_creation(true),
        ),
    );
    assert!(init_producer_id(addr).0 < 11, "producer id 11 (used below) was issued");
    let mut expected = Vec::new();
    for i in 0..20 {
        let (err, base) = produce(addr, "cloud", idempotent_batch(3, 11, 0, i * 3));
        assert_eq!((err, base), (0, i as i64 * 3));
        expected.push(base);
    }
    drop(gw); // SIGKILL
              // the local data dir is not where the data lives: wipe it
    std::fs::remove_dir_all(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let _gw = spawn(port, mport, &etcd.endpoint(), &moto.endpoint(), dir.path());
    // the producer retries its last batch: it is recognised (Kafka remembers the last five)
    let (err, base) = produce(addr, "cloud", idempotent_batch(3, 11, 0, 57));
    assert_eq!((err, base), (0, 57), "a retried batch is recognised after the crash");
    let (err, base) = produce(addr, "cloud", idempotent_batch(2, 11, 0, 60));
    assert_eq!((err, base), (0, 60));
    let data = fetch_all(addr, "cloud");
    // walk the returned batches: base offsets 0, 3, ..., 57, 60
    let mut pos = 0;
    let mut bases = Vec::new();
    while pos + 61 <= data.len() {
        let base = i64::from_be_bytes(data[pos..pos + 8].try_into().unwrap());
        let len = i32::from_be_bytes(data[pos + 8..pos + 12].try_into().unwrap()) as usize;
        gateway::batch::validate(&data[pos..pos + 12 + len]).expect("stored batch is intact");
        bases.push(base);
        pos += 12 + len;
    }
    expected.push(60);
    assert_eq!(bases, expected);
}
