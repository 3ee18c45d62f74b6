//! The `gateway` binary: `gateway` (the default) runs the Kafka gateway; `logstore` runs a
//! QuorumBuffer LogStore node on the same storage and metadata settings.
//! Every configuration key can come from `--config FILE` (TOML); the keys operators change most
//! also have a flag and a `GATEWAY_*` environment variable, which override the file (the README's
//! configuration table says which).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use gateway::config::{GatewayConfig, MetadataKind, StorageKind};

#[derive(Parser)]
#[command(name = "gateway", version, about = "A Kafka-compatible gateway on a zero-disk write-ahead log")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the Kafka gateway (the default).
    Gateway(RunArgs),
    /// Run a LogStore node for QuorumBuffer mode (`logstore.*` keys; storage and etcd as above).
    Logstore(RunArgs),
    /// Print the effective configuration (file + flags + environment) as TOML and exit.
    PrintConfig(RunArgs),
}

#[derive(Args, Clone, Default)]
struct RunArgs {
    /// TOML configuration file; every key below can also be set there, and more (see the README).
    #[arg(long, env = "GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the Kafka listener [default: 127.0.0.1:9092].
    #[arg(long, env = "GATEWAY_LISTEN")]
    listen: Option<SocketAddr>,
    /// host:port clients are told to connect to [default: the listen address].
    #[arg(long, env = "GATEWAY_ADVERTISED_LISTENER")]
    advertised_listener: Option<String>,
    /// Address of the HTTP endpoint with /metrics, /healthz, /readyz [default: 127.0.0.1:9644].
    #[arg(long, env = "GATEWAY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Directory for the local object store and the embedded metadata store [default: ./data].
    #[arg(long, env = "GATEWAY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Broker id of this gateway [default: 0].
    #[arg(long, env = "GATEWAY_NODE_ID")]
    node_id: Option<i32>,
    /// Cluster id reported to clients [default: wal-gateway].
    #[arg(long, env = "GATEWAY_CLUSTER_ID")]
    cluster_id: Option<String>,
    /// Where log data lives [default: local].
    #[arg(long, env = "GATEWAY_STORAGE", value_enum)]
    storage: Option<StorageKind>,
    /// S3 endpoint URL (S3-compatible stores); AWS when unset.
    #[arg(long, env = "GATEWAY_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 bucket.
    #[arg(long, env = "GATEWAY_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// S3 region [default: us-east-1].
    #[arg(long, env = "GATEWAY_S3_REGION")]
    s3_region: Option<String>,
    /// Key prefix of every object.
    #[arg(long, env = "GATEWAY_S3_PREFIX")]
    s3_prefix: Option<String>,
    /// Use path-style S3 addressing (most S3-compatible servers need it).
    #[arg(long, env = "GATEWAY_S3_PATH_STYLE")]
    s3_path_style: Option<bool>,
    /// Where metadata lives [default: embedded].
    #[arg(long, env = "GATEWAY_METADATA", value_enum)]
    metadata: Option<MetadataKind>,
    /// Comma-separated etcd endpoints [default: http://127.0.0.1:2379].
    #[arg(long, env = "GATEWAY_ETCD_ENDPOINTS", value_delimiter = ',')]
    etcd_endpoints: Option<Vec<String>>,
    /// Create unknown topics on Metadata requests [default: true].
    #[arg(long, env = "GATEWAY_AUTO_CREATE_TOPICS")]
    auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics [default: 1].
    #[arg(long, env = "GATEWAY_DEFAULT_PARTITIONS")]
    default_partitions: Option<i32>,
    /// Largest request frame, in bytes [default: 104857600].
    #[arg(long, env = "GATEWAY_MAX_REQUEST_BYTES")]
    max_request_bytes: Option<usize>,
    /// Flush (cut a block) once this many bytes are buffered, in either buffer mode [default: 4194304].
    #[arg(long, env = "GATEWAY_FLUSH_MAX_BYTES")]
    flush_max_bytes: Option<usize>,
    /// Longest time an append waits for its block while the persist slots are busy [default: 200].
    #[arg(long, env = "GATEWAY_FLUSH_MAX_AGE_MS")]
    flush_max_age_ms: Option<u64>,
    /// How long a new consumer group waits for more members before its first generation [default: 3000].
    #[arg(long, env = "GATEWAY_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    group_initial_rebalance_delay_ms: Option<u64>,
    /// Lease of this gateway's cluster registration, in seconds [default: 6].
    #[arg(long, env = "GATEWAY_CLUSTER_LEASE_TTL_SECS")]
    cluster_lease_ttl_secs: Option<i64>,
    /// How often the gateway reads cluster membership and moves partitions [default: 500].
    #[arg(long, env = "GATEWAY_CLUSTER_POLL_MS")]
    cluster_poll_ms: Option<u64>,
    /// Longest a SIGTERM shutdown (handing partitions over) may take before the process exits
    /// anyway, leaving recovery to the next owner [default: 25000, within Kubernetes' 30 s grace].
    #[arg(long, env = "GATEWAY_SHUTDOWN_TIMEOUT_MS")]
    shutdown_timeout_ms: Option<u64>,
    /// How appends become durable: memory (MemoryBuffer) or quorum (QuorumBuffer, needs etcd and
    /// LogStore nodes) [default: memory].
    #[arg(long, env = "GATEWAY_BUFFER", value_parser = parse_buffer)]
    buffer: Option<wal_core::BufferMode>,
    /// QuorumBuffer: acknowledgements a block needs [default: 2].
    #[arg(long, env = "GATEWAY_ACK_QUORUM")]
    ack_quorum: Option<usize>,
    /// QuorumBuffer: nodes each segment is replicated to [default: 3].
    #[arg(long, env = "GATEWAY_ENSEMBLE_SIZE")]
    ensemble_size: Option<usize>,
    /// logstore: address of the replication listener [default: 127.0.0.1:9700].
    #[arg(long, env = "GATEWAY_LOGSTORE_LISTEN")]
    logstore_listen: Option<SocketAddr>,
    /// logstore: unique, stable node name [default: logstore-0].
    #[arg(long, env = "GATEWAY_LOGSTORE_NODE_ID")]
    logstore_node_id: Option<String>,
    /// logstore: host:port writers connect to [default: the listen address].
    #[arg(long, env = "GATEWAY_LOGSTORE_ADVERTISE")]
    logstore_advertise: Option<String>,
    /// logstore: bytes of not-yet-stored blocks held before appends are refused [default: 1073741824].
    #[arg(long, env = "GATEWAY_LOGSTORE_MAX_HELD_BYTES")]
    logstore_max_held_bytes: Option<usize>,
    /// logstore: shared-object PUTs per second of this node (0: wal.put_budget_per_sec) [default: 0].
    #[arg(long, env = "GATEWAY_LOGSTORE_PUT_BUDGET_PER_SEC")]
    logstore_put_budget_per_sec: Option<u32>,
    /// logstore: directory of the fsync'd local journal (empty: memory only) [default: empty].
    #[arg(long, env = "GATEWAY_LOGSTORE_DATA_DIR")]
    logstore_data_dir: Option<String>,
    /// Log filter (tracing syntax) [default: info].
    #[arg(long, env = "GATEWAY_LOG", default_value = "info")]
    log: String,
}

impl RunArgs {
    fn config(&self) -> anyhow::Result<GatewayConfig> {
        let mut c = match &self.config {
            Some(p) => toml::from_str(&std::fs::read_to_string(p)?).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
            None => GatewayConfig::default(),
        };
        macro_rules! set {
            ($($field:ident => $target:expr),* $(,)?) => { $( if let Some(v) = self.$field.clone() { $target = v; } )* };
        }
        set!(
            listen => c.listen,
            advertised_listener => c.advertised_listener,
            metrics_listen => c.metrics_listen,
            data_dir => c.data_dir,
            node_id => c.node_id,
            cluster_id => c.cluster_id,
            storage => c.storage,
            s3_bucket => c.s3.bucket,
            s3_region => c.s3.region,
            s3_prefix => c.s3.prefix,
            s3_path_style => c.s3.path_style,
            metadata => c.metadata,
            etcd_endpoints => c.etcd_endpoints,
            auto_create_topics => c.auto_create_topics,
            default_partitions => c.default_partitions,
            max_request_bytes => c.max_request_bytes,
            flush_max_bytes => c.wal.flush_max_bytes,
            flush_max_age_ms => c.wal.flush_max_age_ms,
            group_initial_rebalance_delay_ms => c.group_initial_rebalance_delay_ms,
            buffer => c.wal.buffer,
            cluster_lease_ttl_secs => c.cluster_lease_ttl_secs,
            cluster_poll_ms => c.cluster_poll_ms,
            shutdown_timeout_ms => c.shutdown_timeout_ms,
            ack_quorum => c.wal.quorum.ack_quorum,
            logstore_listen => c.logstore.listen,
            logstore_node_id => c.logstore.node_id,
            logstore_advertise => c.logstore.advertise,
            logstore_max_held_bytes => c.logstore.max_held_bytes,
            logstore_data_dir => c.logstore.data_dir,
            logstore_put_budget_per_sec => c.logstore.put_budget_per_sec,
        );
        if let Some(n) = self.ensemble_size {
            c.wal.quorum.ensemble_size = n;
            c.wal.quorum.write_quorum = n;
        }
        if let Some(e) = &self.s3_endpoint {
            c.s3.endpoint = Some(e.clone());
        }
        c.validate()?;
        Ok(c)
    }
}

fn parse_buffer(s: &str) -> Result<wal_core::BufferMode, String> {
    match s {
        "memory" => Ok(wal_core::BufferMode::Memory),
        "quorum" => Ok(wal_core::BufferMode::Quorum),
        _ => Err(format!("{s:?}: expected memory or quorum")),
    }
}

/// Runs a LogStore node until SIGTERM or Ctrl-C.
async fn run_logstore(cfg: gateway::config::GatewayConfig) -> anyhow::Result<()> {
    let prom = gateway::metrics::install()?;
    let ready = Arc::new(AtomicBool::new(false));
    let _http = gateway::metrics::serve(cfg.metrics_listen, prom, ready.clone(), Default::default()).await?;
    let (store, meta) = gateway::broker::backends(&cfg).await?;
    // (the node cuts shared objects with the process's `wal.*` object settings and its own budget)
    let node_cfg = wal_core::logstore::NodeConfig { objects: cfg.logstore.object_limits(&cfg.wal), ..cfg.logstore.node_config() };
    let node = wal_core::logstore::LogStoreNode::start(node_cfg, cfg.logstore.listen, store, meta).await?;
    tracing::info!(addr = %node.addr, node = %cfg.logstore.node_id, "LogStore node listening");
    ready.store(true, Ordering::Release);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    ready.store(false, Ordering::Release);
    bounded_shutdown(cfg.shutdown_timeout_ms, node.shutdown()).await;
    Ok(())
}

/// Runs a shutdown for at most `timeout_ms`; past it (the object store or etcd gone, so the
/// handover cannot finish) the process exits at once: nothing more is acknowledged, and the
/// next owner recovers what was left, as after a crash.
async fn bounded_shutdown(timeout_ms: u64, shutdown: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(std::time::Duration::from_millis(timeout_ms), shutdown).await.is_err() {
        tracing::error!(timeout_ms, "shutdown did not finish in time; exiting without finishing the handover");
        std::process::exit(1);
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (print, logstore, args) = match cli.cmd {
        None => (false, false, cli.run),
        Some(Cmd::Gateway(a)) => (false, false, a),
        Some(Cmd::Logstore(a)) => (false, true, a),
        Some(Cmd::PrintConfig(a)) => (true, false, a),
    };
    let cfg = args.config()?;
    if print {
        println!("{}", toml::to_string_pretty(&cfg)?);
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if logstore {
        return rt.block_on(run_logstore(cfg));
    }
    rt.block_on(async move {
        let prom = gateway::metrics::install()?;
        let ready = Arc::new(AtomicBool::new(false));
        let metrics_addr = cfg.metrics_listen;
        let slot: gateway::metrics::BrokerSlot = Default::default();
        let _http = gateway::metrics::serve(metrics_addr, prom, ready.clone(), slot.clone()).await?;
        tracing::info!(%metrics_addr, "metrics endpoint ready");
        let shutdown_timeout_ms = cfg.shutdown_timeout_ms;
        let running = gateway::start(cfg).await?;
        let _ = slot.set(running.broker.clone());
        ready.store(true, Ordering::Release);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        ready.store(false, Ordering::Release);
        bounded_shutdown(shutdown_timeout_ms, running.shutdown()).await;
        tracing::info!("stopped");
        Ok(())
    })
}
