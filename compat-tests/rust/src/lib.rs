//! Shared helpers for the rdkafka tests and benchmark: start the gateway binary on free loopback
//! ports with a fresh data directory, and stop it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Gateway {
    pub child: Child,
    pub bootstrap: String,
    pub data_dir: PathBuf,
    port: u16,
    pub mport: u16,
    bin: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The gateway binary: `GATEWAY_BIN`, else `target/{release,debug}/gateway` of this workspace.
pub fn gateway_bin(release: bool) -> PathBuf {
    if let Ok(p) = std::env::var("GATEWAY_BIN") {
        return p.into();
    }
    let target = match std::env::var("CARGO_TARGET_DIR") {
        Ok(t) => PathBuf::from(t),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    };
    target.join(if release { "release/gateway" } else { "debug/gateway" })
}

impl Gateway {
    pub fn start(bin: PathBuf, data_dir: Option<PathBuf>) -> anyhow::Result<Gateway> {
        let (tmp, dir) = match data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir()?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let mut g = Gateway { child: Command::new("true").spawn()?, bootstrap: String::new(), data_dir: dir, port: free_port(), mport: free_port(), bin, _tmp: tmp };
        g.spawn()?;
        Ok(g)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.child = Command::new(&self.bin)
            .args(["--data-dir", self.data_dir.to_str().unwrap(), "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", self.mport), "--log", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        self.bootstrap = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "gateway did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// SIGKILL, then start again on the same directory and ports.
    pub fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        self.spawn()
    }

    /// The gateway's Prometheus metrics text.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.mport)) else { return String::new() };
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
