//! The broker state of one gateway: the WAL, the topic registry (persisted in the MetaStore and
//! followed from it), every partition (with a writer where this gateway owns it), the cluster
//! view, and the producer-id allocator. Handlers call into it; it knows nothing of the wire
//! protocol beyond Kafka error codes.
//!
//! A background loop ([`Broker::cluster_tick`], every `cluster_poll_ms`) renews the gateway's
//! registration, picks up topics created or changed by other gateways, recomputes ownership and
//! acquires or releases partitions accordingly.

mod admin;
mod backends;
pub mod compaction;
mod ownership;
pub mod partition;
pub mod producer;
pub mod producer_ids;
pub mod retention;
pub mod topic_config;
pub mod topics;
pub mod txn_index;

pub use backends::backends;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use wal_core::util::lock;

use kafka_protocol::ResponseError;
use wal_core::meta::MetaStore;
use wal_core::{Wal, WalError};

use crate::cluster::{Cluster, Member};
use crate::config::GatewayConfig;
pub use partition::Partition;
use topics::TopicMeta;

/// A topic and its partitions.
pub struct Topic {
    pub meta: TopicMeta,
    pub partitions: Vec<Arc<Partition>>,
}

/// One row of [`Broker::consumer_lag`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerLag {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub high_watermark: i64,
    pub lag: i64,
}

/// A failed admin operation: the Kafka error and a message for the client.
pub type AdminError = (ResponseError, String);

/// How often idempotent-producer state is snapshotted (bounds the replay at start-up).
/// (A new owner replays the log after the last snapshot before it serves the partition, so this
/// also bounds the replay part of a failover.)
/// Only partitions whose log grew since their last snapshot are written.
const PRODUCER_SNAPSHOT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Broker {
    pub cfg: GatewayConfig,
    pub wal: Wal,
    pub meta: Arc<dyn MetaStore>,
    pub groups: Arc<crate::group::Coordinator>,
    /// The transaction coordinator (for the transactional ids this gateway coordinates).
    pub txns: Arc<crate::txn::TxnCoordinator>,
    pub cluster: Arc<Cluster>,
    /// SASL credentials: configured users and the SCRAM credentials in the MetaStore.
    pub credentials: Arc<crate::security::credentials::Credentials>,
    /// The ACLs and who is a super user.
    pub authorizer: Arc<crate::security::acl::Authorizer>,
    /// Client quotas (byte rates per user / client id).
    pub quotas: Arc<crate::security::quota::Quotas>,
    /// OAUTHBEARER token validation, when a SASL listener offers it.
    pub oauth: Option<Arc<crate::security::sasl::oauthbearer::Validator>>,
    /// Wakes the cluster loop early (a topic was created here).
    wake: tokio::sync::Notify,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    admin: tokio::sync::Mutex<()>,
    pids: tokio::sync::Mutex<producer_ids::IdBlock>,
    /// Which producer ids were handed out (see [`Broker::producer_id_issued`]).
    issued: producer_ids::Issued,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn wal_err(e: WalError) -> AdminError {
    (ResponseError::KafkaStorageError, e.to_string())
}

impl Broker {
    /// Opens the backends, loads every topic and opens its partitions.
    pub async fn open(cfg: GatewayConfig) -> anyhow::Result<Arc<Broker>> {
        cfg.validate()?;
        let (store, meta) = backends(&cfg).await?;
        Self::open_with(cfg, store, meta).await
    }

    /// [`Broker::open`] over given backends (tests put a fault-injecting store here).
    pub async fn open_with(
        cfg: GatewayConfig,
        store: Arc<dyn wal_core::ObjectStore>,
        meta: Arc<dyn MetaStore>,
    ) -> anyhow::Result<Arc<Broker>> {
        cfg.validate()?;
        let wal = Wal::new(store, meta.clone(), cfg.wal.clone())?;
        let groups = crate::group::Coordinator::open(
            meta.clone(),
            std::time::Duration::from_millis(cfg.group_initial_rebalance_delay_ms),
            cfg.max_groups,
            std::time::Duration::from_millis(cfg.group_consumer_session_timeout_ms),
        )
        .await?;
        let (host, port) = cfg.advertised();
        let listeners = cfg.listener_specs().into_iter().map(|(l, _)| (l.name, (l.host, l.port))).collect();
        let me = Member { node_id: cfg.node_id, host, port, rack: cfg.rack.clone(), session: 0, listeners };
        let cluster = Cluster::join(meta.clone(), me, cfg.cluster_lease_ttl_secs).await?;
        let txns = crate::txn::TxnCoordinator::new(meta.clone());
        let credentials = Arc::new(crate::security::credentials::Credentials::new(meta.clone(), &cfg.sasl.all_users()?));
        let authorizer = Arc::new(crate::security::acl::Authorizer::new(meta.clone(), cfg.acl.clone(), cfg.super_users.clone()));
        authorizer.refresh().await?;
        let quotas = Arc::new(crate::security::quota::Quotas::new(meta.clone()));
        let oauth = match cfg.sasl.mechanisms.iter().any(|m| m == crate::security::sasl::OAUTHBEARER) {
            true => Some(Arc::new(crate::security::sasl::oauthbearer::Validator::new(&cfg.sasl.oauthbearer)?)),
            false => None,
        };
        quotas.refresh().await?;
        let broker = Arc::new(Broker {
            cfg,
            wal,
            meta,
            groups,
            txns,
            cluster,
            credentials,
            authorizer,
            quotas,
            oauth,
            wake: tokio::sync::Notify::new(),
            topics: RwLock::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
            pids: tokio::sync::Mutex::new(producer_ids::IdBlock::default()),
            issued: producer_ids::Issued::default(),
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        // Every topic, with the code that later follows the registry (errors fail the start).
        broker.sync_topics().await?;
        {
            // Every gateway re-reads the ACLs and quotas, so a cluster enforces the same ones
            // within a poll.
            let (a, q) = (broker.authorizer.clone(), broker.quotas.clone());
            let every = std::time::Duration::from_millis(broker.cfg.acl.poll_ms);
            let poll = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if a.enabled() {
                        if let Err(e) = a.refresh().await {
                            tracing::warn!(error = %e, "cannot re-read the ACLs; enforcing the last ones read");
                        }
                    }
                    if let Err(e) = q.refresh().await {
                        tracing::warn!(error = %e, "cannot re-read the client quotas; enforcing the last ones read");
                    }
                    if Arc::strong_count(&q) == 1 {
                        return; // the broker is gone
                    }
                }
            });
            lock(&broker.tasks).push(poll);
        }
        let snapshots = {
            let b = Arc::downgrade(&broker);
            tokio::spawn(async move {
                let mut t = tokio::time::interval(PRODUCER_SNAPSHOT_INTERVAL);
                t.tick().await;
                loop {
                    t.tick().await;
                    let Some(b) = b.upgrade() else { return };
                    b.snapshot_producers().await;
                }
            })
        };
        // Renewal runs on its own, so a slow takeover never lets this gateway's lease lapse. A
        // failed keep-alive is retried soon (within the lease), not at the next third of it.
        let renewing = {
            let c = broker.cluster.clone();
            tokio::spawn(async move { wal_core::meta::keep_renewing(c.ttl(), "gateway", || c.renew()).await })
        };
        // Take this gateway's share before serving (a lone gateway owns everything at once).
        broker.cluster_tick().await;
        let looping = {
            let b = Arc::downgrade(&broker);
            let every = Duration::from_millis(broker.cfg.cluster_poll_ms);
            tokio::spawn(async move {
                loop {
                    let Some(b) = b.upgrade() else { return };
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = b.wake.notified() => {}
                    }
                    b.cluster_tick().await;
                }
            })
        };
        let tasks = vec![
            retention::spawn(broker.clone()),
            compaction::spawn(broker.clone()),
            crate::txn::spawn(broker.clone()),
            broker.wal.spawn_cleaner(),
            broker.wal.spawn_flusher(),
            broker.groups.spawn_ticker(),
            snapshots,
            looping,
            renewing,
        ];
        lock(&broker.tasks).extend(tasks);
        Ok(broker)
    }

    async fn open_topic(&self, meta: TopicMeta) -> Result<Arc<Topic>, WalError> {
        let name: Arc<str> = Arc::from(meta.name.as_str());
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for i in 0..meta.partitions {
            partitions.push(Partition::open(&self.wal, name.clone(), i).await?);
        }
        Ok(Arc::new(Topic { meta, partitions }))
    }

    fn insert(&self, t: Arc<Topic>) {
        self.topics.write().unwrap_or_else(|p| p.into_inner()).insert(t.meta.name.clone(), t);
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).values().find(|t| t.meta.id == id).cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let t = self.topic(topic)?;
        usize::try_from(index).ok().and_then(|i| t.partitions.get(i).cloned())
    }

    /// Consumer lag: for every committed offset of every group, the partition's high watermark
    /// and the distance to it.
    pub fn consumer_lag(&self) -> Vec<ConsumerLag> {
        let mut out = Vec::new();
        for group in self.groups.group_ids() {
            for (topic, partition, c) in self.groups.offsets.group(&group) {
                let Some(p) = self.partition(&topic, partition) else { continue };
                let hw = p.high_watermark();
                out.push(ConsumerLag {
                    group: group.clone(),
                    topic,
                    partition,
                    committed: c.offset,
                    high_watermark: hw,
                    lag: (hw - c.offset).max(0),
                });
            }
        }
        out
    }

    /// Stops background work, hands every partition over (snapshotting producer state, closing
    /// the writer: flushed and sealed) and only then leaves the cluster, so the next owners
    /// start from sealed logs at once.
    pub async fn shutdown(&self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        let mut work = Vec::new();
        for t in self.topics() {
            for p in &t.partitions {
                let p = p.clone();
                work.push(async move { p.release(&*self.meta).await });
            }
        }
        futures::future::join_all(work).await;
        self.cluster.leave().await;
    }

    /// Snapshots the producer state of every partition this gateway leads that has idempotent
    /// producers (only the leader's state is current).
    pub async fn snapshot_producers(&self) {
        for t in self.topics() {
            for p in &t.partitions {
                if !self.leads(p) {
                    continue;
                }
                {
                    let mut states = p.producers.lock().await;
                    let expired = states.expire(wal_core::util::now_ms() as i64 - self.cfg.producer_id_expiration_ms as i64);
                    if expired > 0 {
                        tracing::info!(log = %p.log, expired, "forgot idle producers (producer_id_expiration_ms)");
                    }
                    if states.is_empty() && expired == 0 {
                        continue;
                    }
                }
                if let Err(e) = p.snapshot_producers(&*self.meta).await {
                    tracing::warn!(log = %p.log, error = %e, "snapshotting producer state");
                }
            }
        }
    }
}
