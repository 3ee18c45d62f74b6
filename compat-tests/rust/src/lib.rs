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
    extra: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

pub fn free_port() -> u16 {
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
        Self::start_with(bin, data_dir, &[])
    }

    /// Like [`Gateway::start`], with more command-line arguments.
    pub fn start_with(bin: PathBuf, data_dir: Option<PathBuf>, extra: &[String]) -> anyhow::Result<Gateway> {
        let (tmp, dir) = match data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir()?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let mut g = Gateway {
            child: Command::new("true").spawn()?,
            bootstrap: String::new(),
            data_dir: dir,
            port: free_port(),
            mport: free_port(),
            bin,
            extra: extra.to_vec(),
            _tmp: tmp,
        };
        g.spawn()?;
        Ok(g)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.child = Command::new(&self.bin)
            .args(["--data-dir", self.data_dir.to_str().unwrap(), "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", self.mport), "--log", "warn"])
            .args(&self.extra)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
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

/// The producer side of the benchmarks: timed produce runs and percentiles.
pub mod bench {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
    use rdkafka::ClientContext;

    struct Ctx {
        lat: Mutex<Vec<Duration>>,
        errors: Mutex<u64>,
    }
    impl ClientContext for Ctx {}
    impl ProducerContext for Ctx {
        type DeliveryOpaque = Box<Instant>;
        fn delivery(&self, r: &DeliveryResult<'_>, sent: Box<Instant>) {
            match r {
                Ok(_) => self.lat.lock().unwrap().push(sent.elapsed()),
                Err(_) => *self.errors.lock().unwrap() += 1,
            }
        }
    }

    pub fn pct(v: &mut [Duration], p: f64) -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort();
        v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
    }

    /// Produces `n` messages of `size` bytes, at most `rate` per second (0: unbounded), after one
    /// warm-up message (connection, metadata, topic creation and producer id are not measured).
    pub fn produce(bootstrap: &str, topic: &str, size: usize, n: usize, rate: u64, linger_ms: u32) -> (f64, Vec<Duration>) {
        let ctx = Arc::new(Ctx { lat: Mutex::new(Vec::with_capacity(n)), errors: Mutex::new(0) });
        let p: ThreadedProducer<ArcCtx> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", linger_ms.to_string())
            .set("batch.size", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("queue.buffering.max.messages", "1000000")
            .create_with_context(ArcCtx(ctx.clone()))
            .unwrap();
        let payload = vec![0x5au8; size];
        p.send(BaseRecord::<(), [u8], Box<Instant>>::with_opaque_to(topic, Box::new(Instant::now())).payload(&payload).partition(0))
            .map_err(|(e, _)| e)
            .unwrap();
        p.flush(Duration::from_secs(30)).unwrap();
        ctx.lat.lock().unwrap().clear();
        let t = Instant::now();
        for i in 0..n {
            if rate > 0 {
                let due = t + Duration::from_secs_f64(i as f64 / rate as f64);
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
            let mut rec =
                BaseRecord::<(), [u8], Box<Instant>>::with_opaque_to(topic, Box::new(Instant::now())).payload(&payload).partition(0);
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        rec = r;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        p.flush(Duration::from_secs(120)).unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(*ctx.errors.lock().unwrap(), 0, "delivery errors");
        let lat = std::mem::take(&mut *ctx.lat.lock().unwrap());
        assert_eq!(lat.len(), n);
        (secs, lat)
    }

    struct ArcCtx(Arc<Ctx>);
    impl ClientContext for ArcCtx {}
    impl ProducerContext for ArcCtx {
        type DeliveryOpaque = Box<Instant>;
        fn delivery(&self, r: &DeliveryResult<'_>, sent: Box<Instant>) {
            self.0.delivery(r, sent)
        }
    }
}
