//! The broker state of one gateway: the WAL, the topic registry (persisted in the MetaStore and
//! followed from it), every partition (with a writer where this gateway owns it), the cluster
//! view, and the producer-id allocator. Handlers call into it; it knows nothing of the wire
//! protocol beyond Kafka error codes.
//!
//! A background loop ([`Broker::cluster_tick`], every `cluster_poll_ms`) renews the gateway's
//! registration, picks up topics created or changed by other gateways, recomputes ownership and
//! acquires or releases partitions accordingly.

pub mod partition;
pub mod producer;
pub mod retention;
pub mod topics;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafka_protocol::ResponseError;
use wal_core::log::WriterOptions;
use wal_core::meta::{Compare, MetaStore, Op, Txn};
use wal_core::{ObjectStore, Wal, WalError};

use crate::cluster::{Cluster, Member};
use crate::config::{GatewayConfig, MetadataKind, StorageKind};
pub use partition::Partition;
use topics::{topic_key, TopicMeta, TOPIC_PREFIX};

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

const PRODUCER_ID_KEY: &str = "gw/producer_id";
/// How often idempotent-producer state is snapshotted (bounds the replay at start-up).
/// (A new owner replays the log after the last snapshot before it serves the partition, so this
/// also bounds the replay part of a failover.)
/// Only partitions whose log grew since their last snapshot are written.
const PRODUCER_SNAPSHOT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Producer ids are reserved from the MetaStore in blocks of this many.
const PRODUCER_ID_BLOCK: i64 = 1000;

pub struct Broker {
    pub cfg: GatewayConfig,
    pub wal: Wal,
    pub meta: Arc<dyn MetaStore>,
    pub groups: Arc<crate::group::Coordinator>,
    pub cluster: Arc<Cluster>,
    /// Wakes the cluster loop early (a topic was created here).
    wake: tokio::sync::Notify,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    admin: tokio::sync::Mutex<()>,
    pids: tokio::sync::Mutex<(i64, i64)>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn wal_err(e: WalError) -> AdminError {
    (ResponseError::KafkaStorageError, e.to_string())
}

/// The object store and metadata store the configuration names (shared with `logstore`).
pub async fn backends(cfg: &GatewayConfig) -> anyhow::Result<(Arc<dyn ObjectStore>, Arc<dyn MetaStore>)> {
    let store: Arc<dyn ObjectStore> = match cfg.storage {
        StorageKind::Local => {
            Arc::new(wal_core::storage::Instrumented(wal_core::storage::local::LocalStore::open(cfg.data_dir.join("objects"))?))
        }
        StorageKind::S3 => {
            let s3 = wal_core::storage::s3::S3Store::new(&cfg.s3)?;
            if let Err(e) = s3.ensure_bucket().await {
                tracing::warn!(error = %e, bucket = %cfg.s3.bucket, "could not check or create the bucket");
            }
            Arc::new(wal_core::storage::Instrumented(s3))
        }
    };
    let meta: Arc<dyn MetaStore> = match cfg.metadata {
        MetadataKind::Embedded => {
            Arc::new(wal_core::meta::Instrumented(wal_core::meta::embedded::EmbeddedMeta::open(cfg.data_dir.join("meta"), true)?))
        }
        #[cfg(feature = "etcd")]
        MetadataKind::Etcd => {
            Arc::new(wal_core::meta::Instrumented(wal_core::meta::etcd::EtcdMeta::connect(&cfg.etcd_endpoints, &cfg.etcd_root).await?))
        }
        #[cfg(not(feature = "etcd"))]
        MetadataKind::Etcd => anyhow::bail!("this binary was built without the `etcd` feature"),
    };
    Ok((store, meta))
}

impl Broker {
    /// Opens the backends, loads every topic and opens its partitions.
    pub async fn open(cfg: GatewayConfig) -> anyhow::Result<Arc<Broker>> {
        cfg.validate()?;
        let (store, meta) = backends(&cfg).await?;
        let wal = Wal::new(store, meta.clone(), cfg.wal.clone())?;
        let groups =
            crate::group::Coordinator::open(meta.clone(), std::time::Duration::from_millis(cfg.group_initial_rebalance_delay_ms)).await?;
        let (host, port) = cfg.advertised();
        let me = Member { node_id: cfg.node_id, host, port, rack: cfg.rack.clone(), session: 0 };
        let cluster = Cluster::join(meta.clone(), me, cfg.cluster_lease_ttl_secs).await?;
        let broker = Arc::new(Broker {
            cfg,
            wal,
            meta,
            groups,
            cluster,
            wake: tokio::sync::Notify::new(),
            topics: RwLock::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
            pids: tokio::sync::Mutex::new((0, 0)),
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        // Every topic, with the code that later follows the registry (errors fail the start).
        broker.sync_topics().await?;
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
        // Renewal runs on its own, so a slow takeover never lets this gateway's lease lapse.
        let renewing = {
            let c = broker.cluster.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(c.ttl() / 3).await;
                    if let Err(e) = c.renew().await {
                        tracing::warn!(error = %e, "renewing the cluster registration failed");
                    }
                }
            })
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
        let tasks =
            vec![retention::spawn(broker.clone()), broker.wal.spawn_cleaner(), broker.groups.spawn_ticker(), snapshots, looping, renewing];
        broker.tasks.lock().unwrap_or_else(|p| p.into_inner()).extend(tasks);
        Ok(broker)
    }

    pub fn writer_options(&self, tm: &TopicMeta) -> WriterOptions {
        let s = tm.settings(&self.cfg.wal);
        WriterOptions { segment_max_bytes: Some(s.segment_bytes), segment_max_age_ms: Some(s.segment_ms) }
    }

    async fn open_topic(&self, meta: TopicMeta) -> Result<Arc<Topic>, WalError> {
        let name: Arc<str> = Arc::from(meta.name.as_str());
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for i in 0..meta.partitions {
            partitions.push(Partition::open(&self.wal, name.clone(), i).await?);
        }
        Ok(Arc::new(Topic { meta, partitions }))
    }

    /// One round of the cluster loop: follow the topic registry, recompute ownership,
    /// acquire what this gateway owns and release what it no longer owns. Errors are logged and
    /// retried at the next round.
    pub async fn cluster_tick(&self) {
        if !self.cluster.serving() {
            // (after a pause: register again before owning anything)
            if let Err(e) = self.cluster.renew().await {
                tracing::warn!(error = %e, "renewing the cluster registration failed");
            }
        }
        if let Err(e) = self.sync_topics().await {
            tracing::warn!(error = %e, "reading the topic registry failed");
        }
        let parts: Vec<(String, i32)> =
            self.topics().iter().flat_map(|t| t.partitions.iter().map(|p| (t.meta.name.clone(), p.index))).collect();
        match self.cluster.refresh(&parts).await {
            Ok(true) => {
                // Coordinators may have moved here: committed offsets are read again.
                if let Err(e) = self.groups.offsets.reload().await {
                    tracing::warn!(error = %e, "reloading committed offsets failed");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "reading cluster membership failed"),
        }
        let mut work = Vec::new();
        for t in self.topics() {
            for p in &t.partitions {
                let owns = self.cluster.owns(&t.meta.name, p.index);
                if owns && !self.leads(p) {
                    let (p, opts) = (p.clone(), self.writer_options(&t.meta));
                    work.push(futures::future::Either::Left(async move {
                        let started = std::time::Instant::now();
                        match p.acquire(&self.wal, opts, self.cluster.generation()).await {
                            Ok(Some(epoch)) => {
                                tracing::info!(log = %p.log, epoch, ms = started.elapsed().as_millis() as u64, "took partition over");
                                if let Err(e) = self.cluster.record_leader(&p.log, epoch as i32).await {
                                    tracing::warn!(log = %p.log, error = %e, "recording the leader");
                                }
                            }
                            Ok(None) => {}
                            Err(e) => tracing::warn!(log = %p.log, error = %e, "taking partition over failed; retrying"),
                        }
                    }));
                } else if !owns && p.writer().is_some() {
                    let p = p.clone();
                    work.push(futures::future::Either::Right(async move {
                        p.release(&*self.meta).await;
                    }));
                }
            }
        }
        futures::future::join_all(work).await;
        let led: usize = self.topics().iter().map(|t| t.partitions.iter().filter(|p| self.leads(p)).count()).sum();
        metrics::gauge!(crate::metrics::PARTITIONS_LED).set(led as f64);
        metrics::gauge!(crate::metrics::CLUSTER_MEMBERS).set(self.cluster.view().members.len() as f64);
    }

    /// Follows topics created, deleted or changed by other gateways.
    async fn sync_topics(&self) -> anyhow::Result<()> {
        let listing = self.meta.list(TOPIC_PREFIX).await?;
        let _g = self.admin.lock().await;
        let mut seen = std::collections::HashSet::new();
        for kv in listing.kvs {
            let tm: TopicMeta = serde_json::from_slice(&kv.value)?;
            seen.insert(tm.name.clone());
            match self.topic(&tm.name) {
                None => {
                    let t = self.open_topic(tm).await?;
                    self.insert(t);
                }
                Some(t) if t.meta.id != tm.id => {
                    // Deleted and created again elsewhere.
                    self.remove_topic_local(&t).await;
                    let t = self.open_topic(tm).await?;
                    self.insert(t);
                }
                Some(t) if t.meta != tm => {
                    let mut partitions = t.partitions.clone();
                    for i in t.meta.partitions..tm.partitions {
                        partitions.push(Partition::open(&self.wal, Arc::from(tm.name.as_str()), i).await?);
                    }
                    self.insert(Arc::new(Topic { meta: tm, partitions }));
                }
                Some(_) => {}
            }
        }
        for t in self.topics() {
            if !seen.contains(&t.meta.name) {
                self.remove_topic_local(&t).await;
            }
        }
        Ok(())
    }

    /// Forgets a topic deleted elsewhere (its writers closed; the log is the deleter's business).
    async fn remove_topic_local(&self, t: &Topic) {
        self.topics.write().unwrap_or_else(|p| p.into_inner()).remove(&t.meta.name);
        for p in &t.partitions {
            p.close().await;
        }
    }

    /// Whether this gateway leads the partition now (owns it and holds a live writer).
    pub fn leads(&self, p: &Partition) -> bool {
        self.cluster.owns(&p.topic, p.index) && p.leading() && p.generation() == self.cluster.generation()
    }

    /// The leader epoch clients see for a partition: this gateway's writer epoch where it
    /// leads, else the epoch the owner recorded.
    pub fn leader_epoch(&self, p: &Partition) -> i32 {
        if p.leading() {
            return p.leader_epoch();
        }
        self.cluster.view().leaders.get(&p.log).map(|r| r.epoch).unwrap_or(-1)
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

    /// Creates a topic (or only validates the request).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, AdminError> {
        if !topics::valid_topic_name(name) {
            return Err((ResponseError::InvalidTopicException, format!("invalid topic name {name:?}")));
        }
        let partitions = if partitions == -1 { self.cfg.default_partitions } else { partitions };
        if !(1..=100_000).contains(&partitions) {
            return Err((ResponseError::InvalidPartitions, format!("invalid partition count {partitions}")));
        }
        topics::validate_configs(configs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(|m| (ResponseError::InvalidConfig, m))?;
        let _g = self.admin.lock().await;
        if self.topic(name).is_some() {
            return Err((ResponseError::TopicAlreadyExists, format!("topic {name} already exists")));
        }
        let meta = TopicMeta { name: name.to_string(), id: uuid::Uuid::new_v4(), partitions, configs, created_ms: now_ms() };
        if validate_only {
            return Ok(Arc::new(Topic { meta, partitions: Vec::new() }));
        }
        let r = self
            .meta
            .txn(
                Txn::new()
                    .when(Compare::ModRevision(topic_key(name), 0))
                    .then(Op::put(topic_key(name), serde_json::to_vec(&meta).expect("serializes"))),
            )
            .await
            .map_err(|e| (ResponseError::KafkaStorageError, e.to_string()))?;
        if !r.succeeded {
            return Err((ResponseError::TopicAlreadyExists, format!("topic {name} already exists")));
        }
        let t = self.open_topic(meta).await.map_err(wal_err)?;
        self.insert(t.clone());
        tracing::info!(topic = name, partitions, "created topic");
        drop(_g);
        // Take this gateway's partitions of it now rather than at the next poll.
        self.cluster_tick().await;
        Ok(t)
    }

    /// Creates a topic unless it exists (auto-creation); returns it either way.
    pub async fn ensure_topic(&self, name: &str) -> Result<Arc<Topic>, AdminError> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        match self.create_topic(name, -1, BTreeMap::new(), false).await {
            Ok(t) => Ok(t),
            Err((ResponseError::TopicAlreadyExists, _)) => {
                self.topic(name).ok_or((ResponseError::UnknownTopicOrPartition, name.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), AdminError> {
        let _g = self.admin.lock().await;
        let Some(t) = self.topic(name) else {
            return Err((ResponseError::UnknownTopicOrPartition, format!("unknown topic {name}")));
        };
        self.meta.txn(Txn::new().then(Op::Delete(topic_key(name)))).await.map_err(|e| (ResponseError::KafkaStorageError, e.to_string()))?;
        self.topics.write().unwrap_or_else(|p| p.into_inner()).remove(name);
        for p in &t.partitions {
            p.close().await;
            if let Err(e) = p.drop_snapshot(&*self.meta).await {
                tracing::warn!(log = %p.log, error = %e, "deleting the producer-state snapshot");
            }
            match self.wal.delete_log(&p.log).await {
                Ok(()) | Err(WalError::LogNotFound(_)) => {}
                Err(e) => tracing::warn!(log = %p.log, error = %e, "deleting log"),
            }
        }
        if let Err(e) = self.groups.offsets.delete_topic(name).await {
            tracing::warn!(topic = name, error = %e, "deleting the topic's committed offsets");
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    pub async fn create_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<(), AdminError> {
        let _g = self.admin.lock().await;
        let Some(t) = self.topic(name) else {
            return Err((ResponseError::UnknownTopicOrPartition, format!("unknown topic {name}")));
        };
        if count <= t.meta.partitions {
            return Err((
                ResponseError::InvalidPartitions,
                format!("topic {name} has {} partitions; the count can only grow", t.meta.partitions),
            ));
        }
        if count > 100_000 {
            return Err((ResponseError::InvalidPartitions, format!("invalid partition count {count}")));
        }
        if validate_only {
            return Ok(());
        }
        let mut meta = t.meta.clone();
        meta.partitions = count;
        self.persist(&meta).await?;
        let mut partitions = t.partitions.clone();
        for i in t.meta.partitions..count {
            partitions.push(Partition::open(&self.wal, Arc::from(name), i).await.map_err(wal_err)?);
        }
        self.insert(Arc::new(Topic { meta, partitions }));
        self.wake.notify_one();
        Ok(())
    }

    /// Replaces (`incremental = false`) or updates a topic's explicit configs. `None` deletes a key.
    pub async fn alter_configs(
        &self,
        name: &str,
        changes: Vec<(String, Option<String>)>,
        incremental: bool,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        let _g = self.admin.lock().await;
        let Some(t) = self.topic(name) else {
            return Err((ResponseError::UnknownTopicOrPartition, format!("unknown topic {name}")));
        };
        let mut configs = if incremental { t.meta.configs.clone() } else { BTreeMap::new() };
        for (k, v) in changes {
            match v {
                Some(v) => {
                    configs.insert(k, v);
                }
                None => {
                    if topics::config_def(&k).is_none() {
                        return Err((ResponseError::InvalidConfig, format!("unknown or unsupported topic config {k}")));
                    }
                    configs.remove(&k);
                }
            }
        }
        topics::validate_configs(configs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(|m| (ResponseError::InvalidConfig, m))?;
        if validate_only {
            return Ok(());
        }
        let mut meta = t.meta.clone();
        meta.configs = configs;
        self.persist(&meta).await?;
        self.insert(Arc::new(Topic { meta, partitions: t.partitions.clone() }));
        Ok(())
    }

    async fn persist(&self, meta: &TopicMeta) -> Result<(), AdminError> {
        self.meta
            .txn(Txn::new().then(Op::put(topic_key(&meta.name), serde_json::to_vec(meta).expect("serializes"))))
            .await
            .map_err(|e| (ResponseError::KafkaStorageError, e.to_string()))?;
        Ok(())
    }

    /// A new producer id, unique across restarts (reserved in blocks from the MetaStore).
    pub async fn allocate_producer_id(&self) -> Result<i64, AdminError> {
        let mut g = self.pids.lock().await;
        if g.0 >= g.1 {
            loop {
                let cur = self.meta.get(PRODUCER_ID_KEY).await.map_err(|e| (ResponseError::KafkaStorageError, e.to_string()))?;
                let (rev, next) = match &cur {
                    Some(kv) => (kv.mod_revision, std::str::from_utf8(&kv.value).ok().and_then(|s| s.parse().ok()).unwrap_or(0)),
                    None => (0, 0i64),
                };
                let limit = next + PRODUCER_ID_BLOCK;
                let r = self
                    .meta
                    .txn(
                        Txn::new()
                            .when(Compare::ModRevision(PRODUCER_ID_KEY.into(), rev))
                            .then(Op::put(PRODUCER_ID_KEY, limit.to_string())),
                    )
                    .await
                    .map_err(|e| (ResponseError::KafkaStorageError, e.to_string()))?;
                if r.succeeded {
                    *g = (next, limit);
                    break;
                }
            }
        }
        let id = g.0;
        g.0 += 1;
        Ok(id)
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
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
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
                if !self.leads(p) || p.producers.lock().await.len() == 0 {
                    continue;
                }
                if let Err(e) = p.snapshot_producers(&*self.meta).await {
                    tracing::warn!(log = %p.log, error = %e, "snapshotting producer state");
                }
            }
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
