//! Helpers shared by the gateway's integration tests: one Kafka request/response round trip with
//! kafka-protocol's client-side codecs, and hand-built record batches.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// A request frame (size prefix included).
pub fn frame(api: ApiKey, v: i16, correlation_id: i32, req: &RequestKind) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(v)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("test")))
        .encode(&mut buf, api.request_header_version(v))
        .unwrap();
    req.encode(&mut buf, v).unwrap();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

/// Reads one response to `api` v`v` from `s`: its correlation id and body.
pub fn read_response_of(s: &mut TcpStream, api: ApiKey, v: i16) -> (i32, ResponseKind) {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).unwrap();
    let mut b = bytes::Bytes::from(body);
    let header = ResponseHeader::decode(&mut b, api.response_header_version(v)).unwrap();
    let r = ResponseKind::decode(api, &mut b, v).unwrap();
    assert!(!b.has_remaining());
    (header.correlation_id, r)
}

/// A gateway in this process on a free loopback port over a fresh data directory, its
/// configuration adjusted by `tune`.
pub async fn start_local(tune: impl FnOnce(&mut gateway::GatewayConfig)) -> (gateway::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg =
        gateway::GatewayConfig { listen: "127.0.0.1:0".parse().unwrap(), data_dir: dir.path().to_path_buf(), ..Default::default() };
    tune(&mut cfg);
    (gateway::start(cfg).await.unwrap(), dir)
}

pub fn call(addr: std::net::SocketAddr, api: ApiKey, v: i16, req: RequestKind) -> ResponseKind {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&frame(api, v, 1, &req)).unwrap();
    read_response_of(&mut s, api, v).1
}

pub fn batch(n: i32) -> bytes::Bytes {
    idempotent_batch(n, -1, -1, -1)
}

/// One uncompressed batch of n tiny records with the given producer fields.
pub fn idempotent_batch(n: i32, pid: i64, epoch: i16, seq: i32) -> bytes::Bytes {
    // current timestamps: a batch from 1970 is past any retention.ms and gets deleted
    bytes::Bytes::from(gateway::batch::encode_simple_batch(n, pid, epoch, seq, wal_core::util::now_ms() as i64))
}

/// InitProducerId (non-transactional): the id and epoch. Producer ids a test makes up must be
/// below one the gateway handed out (it refuses ids it never issued), and ids come in blocks of
/// 1000, so one call makes 0..1000 valid.
pub fn init_producer_id(addr: std::net::SocketAddr) -> (i64, i16) {
    let ResponseKind::InitProducerId(r) = call(
        addr,
        ApiKey::InitProducerId,
        1,
        RequestKind::InitProducerId(InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000)),
    ) else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    (r.producer_id.0, r.producer_epoch)
}

pub fn name(s: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(s))
}

pub fn produce(addr: std::net::SocketAddr, topic: &'static str, records: bytes::Bytes) -> (i16, i64) {
    let req =
        ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![produce_request::PartitionProduceData::default().with_records(Some(records))])]);
    let ResponseKind::Produce(r) = call(addr, ApiKey::Produce, 9, RequestKind::Produce(req)) else { panic!() };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// A gateway process; killed (SIGKILL) when dropped, passing or failing.
pub struct Gw(pub std::process::Child);

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The flags for data in S3 (`s3`, path-style, `bucket`) and metadata in etcd (`etcd`).
pub fn cloud_args(etcd: &str, s3: &str, bucket: &str) -> Vec<String> {
    [
        "--storage",
        "s3",
        "--s3-endpoint",
        s3,
        "--s3-bucket",
        bucket,
        "--s3-path-style",
        "true",
        "--metadata",
        "etcd",
        "--etcd-endpoints",
        etcd,
    ]
    .map(String::from)
    .to_vec()
}

/// Starts the gateway binary listening on 127.0.0.1:`port` with `args` (S3 test credentials in
/// its environment) and waits until it accepts connections; `None` if it exits first (its port
/// was taken between choosing and binding it: the caller may try another).
pub fn try_spawn_gateway(port: u16, args: &[String], stderr: std::process::Stdio) -> Option<Gw> {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .env("NO_COLOR", "1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut gw = Gw(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if gw.0.try_wait().ok().flatten().is_some() {
            return None;
        }
        assert!(std::time::Instant::now() < deadline, "gateway on port {port} did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Some(gw)
}

/// [`try_spawn_gateway`] that must succeed.
pub fn spawn_gateway(port: u16, args: &[String], stderr: std::process::Stdio) -> Gw {
    try_spawn_gateway(port, args, stderr).unwrap_or_else(|| panic!("gateway on port {port} exited before accepting connections"))
}

/// A single-node gateway with the embedded defaults over a fresh data directory, on free
/// loopback ports (tried again on other ports when one was taken before the gateway bound it).
pub struct LocalGateway {
    pub gw: Gw,
    pub port: u16,
    _dir: tempfile::TempDir,
}

pub fn local_gateway(extra: &[&str]) -> LocalGateway {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let (port, mport) = (wal_core::testing::servers::free_port(), wal_core::testing::servers::free_port());
        let mut args: Vec<String> =
            ["--data-dir", dir.path().to_str().unwrap(), "--metrics-listen", &format!("127.0.0.1:{mport}")].map(String::from).to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        if let Some(gw) = try_spawn_gateway(port, &args, std::process::Stdio::null()) {
            return LocalGateway { gw, port, _dir: dir };
        }
    }
    panic!("no gateway could start on free ports in 5 tries")
}
