//! Topic administration: create (or validate), auto-create, delete, add partitions, alter
//! configs. Each change is written to the topic registry in the MetaStore first; other gateways
//! follow it at their next cluster round.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use wal_core::meta::{Compare, Op, Txn};
use wal_core::util::now_ms;
use wal_core::WalError;

use super::partition::Partition;
use super::topic_config;
use super::topics::{self, topic_key, TopicMeta};
use super::{wal_err, AdminError, Broker, Topic};

/// Drops the configs Kafka 4 removed (from a request, or from an old topic's metadata), as
/// Kafka 4 drops them.
fn drop_removed(configs: &mut BTreeMap<String, String>) {
    configs.retain(|k, _| {
        let removed = topic_config::is_removed(k);
        if removed {
            tracing::warn!(config = %k, "ignoring a topic config that Kafka 4 removed");
        }
        !removed
    });
}

impl Broker {
    /// Checks explicit topic configs (after dropping removed ones), and that a QuorumBuffer
    /// topic has what it needs (LogStore nodes register in etcd).
    fn validate_topic_configs(&self, configs: &mut BTreeMap<String, String>) -> Result<(), AdminError> {
        drop_removed(configs);
        topics::validate_configs(configs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(|m| (ResponseError::InvalidConfig, m))?;
        let quorum = configs.get(topics::BUFFER_MODE).and_then(|v| topics::parse_buffer_mode(v)) == Some(wal_core::BufferMode::Quorum);
        if quorum && self.cfg.metadata == crate::config::MetadataKind::Embedded {
            return Err((
                ResponseError::InvalidConfig,
                "buffer.mode=quorum needs metadata = \"etcd\" (LogStore nodes register there)".into(),
            ));
        }
        Ok(())
    }

    /// Creates a topic (or only validates the request).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        mut configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, AdminError> {
        if !topics::valid_topic_name(name) {
            return Err((ResponseError::InvalidTopicException, format!("invalid topic name {name:?}")));
        }
        let partitions = if partitions == -1 { self.cfg.default_partitions } else { partitions };
        if !(1..=100_000).contains(&partitions) {
            return Err((ResponseError::InvalidPartitions, format!("invalid partition count {partitions}")));
        }
        self.validate_topic_configs(&mut configs)?;
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
        // The partitions' leader records go too (else a topic created again under this name
        // would look led before its new owners take it), in transactions etcd accepts.
        let keys: Vec<String> = t.partitions.iter().map(|p| crate::cluster::leader_key(&p.log)).collect();
        for chunk in keys.chunks(100) {
            let txn = chunk.iter().fold(Txn::new(), |txn, k| txn.then(Op::Delete(k.clone())));
            if let Err(e) = self.meta.txn(txn).await {
                tracing::warn!(topic = name, error = %e, "deleting the topic's leader records");
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
        drop(_g);
        // Take this gateway's new partitions now rather than at the next poll.
        self.cluster_tick().await;
        Ok(())
    }

    /// Waits (at most `timeout`) until partitions `from..` of `name` are led by their owners,
    /// here or on other gateways, so that a client's next request to them is served, as Kafka
    /// answers CreateTopics and CreatePartitions once the new partitions have leaders.
    pub async fn wait_served(&self, name: &str, from: i32, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let Some(t) = self.topic(name) else { return false };
            let view = self.cluster.view();
            let served = t.partitions.iter().skip(from.max(0) as usize).all(|p| match self.cluster.owner(name, p.index) {
                _ if self.cluster.owns(name, p.index) => self.leads(p),
                Some(owner) => view.leaders.get(&p.log).is_some_and(|r| r.node_id == owner),
                None => false,
            });
            if served {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            self.cluster_tick().await;
        }
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
                    if topics::config_def(&k).is_none() && !topic_config::is_removed(&k) {
                        return Err((ResponseError::InvalidConfig, format!("Unknown topic config name: {k}")));
                    }
                    configs.remove(&k);
                }
            }
        }
        self.validate_topic_configs(&mut configs)?;
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
}
