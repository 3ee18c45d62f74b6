//! Real servers for integration tests, started as child processes on free loopback ports and
//! killed when dropped: `etcd` (Debian's etcd-server) and `moto_server` (PyPI), an S3-compatible
//! server that implements conditional writes.
//!
//! When a binary is missing the harness returns `None` and the test is skipped with a message,
//! unless `WAL_REQUIRE_SERVERS=1` (set by the project's test command), where it panics: CI never
//! passes by skipping.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Picks a free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

fn required() -> bool {
    std::env::var("WAL_REQUIRE_SERVERS").map(|v| v == "1").unwrap_or(false)
}

fn find(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(bin)).find(|p| p.is_file())
}

fn missing(bin: &str) -> Option<ChildServer> {
    if required() {
        panic!("{bin} is not installed but WAL_REQUIRE_SERVERS=1");
    }
    eprintln!("SKIPPED: {bin} not installed (run the README's test command to install it)");
    None
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A child process killed on drop.
pub struct ChildServer {
    child: Child,
    pub port: u16,
    _dir: Option<tempfile_dir::TempDir>,
}

impl ChildServer {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// Stops the process with SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `etcd` with a fresh data directory.
pub fn start_etcd() -> Option<ChildServer> {
    let Some(bin) = find("etcd") else { return missing("etcd") };
    let dir = tempfile_dir::TempDir::new("etcd");
    for _ in 0..3 {
        let (client, peer) = (free_port(), free_port());
        let child = Command::new(&bin)
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--listen-client-urls")
            .arg(format!("http://127.0.0.1:{client}"))
            .arg("--advertise-client-urls")
            .arg(format!("http://127.0.0.1:{client}"))
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{peer}"))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{peer}"))
            .arg("--initial-cluster")
            .arg(format!("default=http://127.0.0.1:{peer}"))
            .arg("--log-level")
            .arg("error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        let mut s = ChildServer { child, port: client, _dir: None };
        if wait_port(client, Duration::from_secs(20)) {
            s._dir = Some(dir);
            return Some(s);
        }
        s.kill();
    }
    panic!("etcd did not start");
}

/// Starts `moto_server` (an S3-compatible server).
pub fn start_moto() -> Option<ChildServer> {
    let Some(bin) = find("moto_server") else { return missing("moto_server") };
    for _ in 0..3 {
        let port = free_port();
        let child = Command::new(&bin)
            .arg("-H")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        let mut s = ChildServer { child, port, _dir: None };
        if wait_port(port, Duration::from_secs(30)) {
            return Some(s);
        }
        s.kill();
    }
    panic!("moto_server did not start");
}

/// An S3 configuration for a bucket on a local test server.
pub fn s3_config(server: &ChildServer, bucket: &str, prefix: &str) -> crate::storage::s3::S3Config {
    crate::storage::s3::S3Config {
        endpoint: Some(server.endpoint()),
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        path_style: true,
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        ..Default::default()
    }
}

/// A minimal temporary directory (the library does not depend on `tempfile`).
pub mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("wal-{tag}-{}-{}", std::process::id(), rand::random::<u64>()));
            std::fs::create_dir_all(&p).expect("create temp dir");
            TempDir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
