//! The Kafka front-end of the WAL: existing Kafka clients produce to and consume from wal-core
//! logs through the Kafka wire protocol. One Kafka partition is one log; one record batch is one
//! entry; a Kafka offset is a wal-core offset.
//!
//! # Layout
//! - [`config`]: the typed configuration (file, flags, environment).
//! - [`server`]: listener, framing, ordered responses, limits.
//! - [`handler`]: one file per Kafka API.
//! - [`broker`]: topics, partitions, idempotent-producer state, retention.
//! - [`cluster`]: membership, partition ownership and group coordinators across gateways.
//! - [`group`]: the consumer-group coordinator and durable committed offsets.
//! - [`batch`]: Kafka record-batch header validation and patching.
//! - [`metrics`]: metric names, Prometheus exporter, health endpoints.

pub mod batch;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod group;
pub mod handler;
pub mod metrics;
pub mod security;
pub mod server;
pub mod txn;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

pub use broker::Broker;
pub use config::GatewayConfig;

/// A running gateway (for the binary and for in-process tests).
pub struct Running {
    /// The main listener's address.
    pub addr: SocketAddr,
    /// Every listener's name and bound address (the main one first).
    pub listeners: Vec<(String, SocketAddr)>,
    pub broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets connections finish, then flushes and closes every writer.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        self.broker.shutdown().await;
    }
}

/// Opens the broker and starts the Kafka listeners.
pub async fn start(mut cfg: GatewayConfig) -> anyhow::Result<Running> {
    cfg.validate()?;
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    if cfg.listen.port() == 0 && cfg.advertised_listener.is_empty() {
        cfg.advertised_listener = addr.to_string();
    }
    let mut sockets = vec![listener];
    for l in cfg.listeners.iter_mut() {
        let socket =
            tokio::net::TcpListener::bind(l.listen).await.map_err(|e| anyhow::anyhow!("listener {} on {}: {e}", l.name, l.listen))?;
        if l.listen.port() == 0 && l.advertised.is_empty() {
            l.advertised = socket.local_addr()?.to_string();
        }
        l.listen = socket.local_addr()?;
        sockets.push(socket);
    }
    let specs = cfg.listener_specs();
    let tls = match specs.iter().any(|(l, _)| l.protocol.tls()) {
        true => Some(Arc::new(security::tls::Tls::new(&cfg.tls)?)),
        false => None,
    };
    let broker = Broker::open(cfg).await?;
    let mut bound = Vec::new();
    let mut listeners = Vec::new();
    for (socket, (spec, _)) in sockets.into_iter().zip(specs) {
        let local = socket.local_addr()?;
        tracing::info!(addr = %local, name = %spec.name, protocol = spec.protocol.name(), "Kafka listener ready");
        listeners.push((spec.name.clone(), local));
        let tls = spec.protocol.tls().then(|| tls.clone()).flatten();
        bound.push(server::Bound { socket, listener: Arc::new(spec), tls });
    }
    let (tx, rx) = watch::channel(false);
    let server = tokio::spawn(server::serve_all(bound, broker.clone(), rx));
    Ok(Running { addr, listeners, broker, shutdown: tx, server })
}
