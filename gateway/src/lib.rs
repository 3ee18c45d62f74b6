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
pub mod server;
pub mod txn;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

pub use broker::Broker;
pub use config::GatewayConfig;

/// A running gateway (for the binary and for in-process tests).
pub struct Running {
    pub addr: SocketAddr,
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

/// Opens the broker and starts the Kafka listener.
pub async fn start(mut cfg: GatewayConfig) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    if cfg.listen.port() == 0 && cfg.advertised_listener.is_empty() {
        cfg.advertised_listener = addr.to_string();
    }
    let broker = Broker::open(cfg).await?;
    let (tx, rx) = watch::channel(false);
    let server = tokio::spawn(server::serve(listener, broker.clone(), rx));
    tracing::info!(%addr, "Kafka listener ready");
    Ok(Running { addr, broker, shutdown: tx, server })
}
