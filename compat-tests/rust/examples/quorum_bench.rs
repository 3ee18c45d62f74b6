//! QuorumBuffer vs MemoryBuffer through the gateway, in one run, on the same etcd and S3 server
//! (moto_server): a librdkafka producer (acks=all, idempotent, 1 partition) sends 1 KiB messages
//! at a moderate fixed rate (latency p50/p99) and at full speed (throughput). The quorum gateway
//! replicates to three `gateway logstore` processes on loopback.
//!
//! `cargo build --release -p gateway --features etcd && \
//!  cargo run --release -p compat-rdkafka --example quorum_bench -- [--n 20000] [--rate 1000]`
//! (needs `etcd` and `moto_server` on the PATH).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use compat_rdkafka::bench::{pct, produce};
use compat_rdkafka::{free_port, gateway_bin, Gateway};

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(cmd: &mut Command) -> Proc {
    Proc(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn"))
}

fn main() {
    let mut n = 20_000usize;
    let mut rate = 1_000u64;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for w in args.chunks(2) {
        match (w[0].as_str(), w.get(1)) {
            ("--n", Some(v)) => n = v.parse().expect("--n"),
            ("--rate", Some(v)) => rate = v.parse().expect("--rate"),
            _ => panic!("usage: quorum_bench [--n N] [--rate MSG_PER_S]"),
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cport, pport, sport) = (free_port(), free_port(), free_port());
    let _etcd = spawn(
        Command::new("etcd")
            .arg("--data-dir")
            .arg(tmp.path().join("etcd"))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{cport}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{cport}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{pport}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{pport}")])
            .args(["--initial-cluster", &format!("default=http://127.0.0.1:{pport}")]),
    );
    let _moto = spawn(Command::new("moto_server").args(["-H", "127.0.0.1", "-p", &sport.to_string()]));
    wait_port(cport);
    wait_port(sport);
    let bin = gateway_bin(true);
    let common: Vec<String> = [
        "--storage",
        "s3",
        "--s3-endpoint",
        &format!("http://127.0.0.1:{sport}"),
        "--s3-path-style",
        "true",
        "--metadata",
        "etcd",
        "--etcd-endpoints",
        &format!("http://127.0.0.1:{cport}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let port = free_port();
        nodes.push(spawn(
            Command::new(&bin)
                .arg("logstore")
                .args(&common)
                .args(["--s3-bucket", "quorum", "--logstore-node-id", &format!("ls-{i}")])
                .args(["--logstore-listen", &format!("127.0.0.1:{port}"), "--metrics-listen", &format!("127.0.0.1:{}", free_port())])
                .arg("--data-dir")
                .arg(tmp.path().join(format!("ls-{i}")))
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test"),
        ));
        wait_port(port);
    }
    println!(
        "QuorumBuffer vs MemoryBuffer: rdkafka (librdkafka {}), acks=all, idempotent, 1 partition, 1 KiB",
        rdkafka::util::get_rdkafka_version().1
    );
    println!("both on etcd + moto_server (S3); quorum: 3 LogStore processes, ack 2 of 3; {n} messages per case");
    for (mode, bucket) in [("memory", "memory"), ("quorum", "quorum")] {
        let mut extra = common.clone();
        extra.extend(["--buffer", mode, "--s3-bucket", bucket].iter().map(|s| s.to_string()));
        let mut gw = Gateway::start_with(bin.clone(), Some(tmp.path().join(format!("gw-{mode}"))), &extra).unwrap();
        let (_, mut lat) = produce(&gw.bootstrap, &format!("{mode}-lat"), 1024, (n / 4).max(100), rate, 0);
        println!("{mode:<7} {:>6} msg/s linger 0     p50 {:>7.2} ms  p99 {:>7.2} ms", rate, pct(&mut lat, 0.5), pct(&mut lat, 0.99));
        let (secs, mut lat) = produce(&gw.bootstrap, &format!("{mode}-tput"), 1024, n, 0, 5);
        println!(
            "{mode:<7} full speed linger 5  {:>7.1} MB/s {:>8.0} msg/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
            (n * 1024) as f64 / secs / 1e6,
            n as f64 / secs,
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99)
        );
        gw.stop();
    }
    drop(nodes);
}
