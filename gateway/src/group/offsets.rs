//! Committed offsets, durable in the MetaStore (`gw/offsets/{hex(group)}/{topic}/{partition}`),
//! cached in memory for OffsetFetch. One OffsetCommit request is one MetaStore transaction per
//! 128 partitions (etcd's default `--max-txn-ops`), so a commit of many partitions costs few
//! round trips; Kafka does not make a commit atomic across partitions either.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use wal_core::util::lock;

use serde::{Deserialize, Serialize};
use wal_core::meta::batcher::DEFAULT_MAX_TXN_OPS;
use wal_core::meta::{write_in_chunks, MetaStore, Op, Txn};
use wal_core::MetaError;

const PREFIX: &str = "gw/offsets/";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: u64,
}

type GroupOffsets = BTreeMap<(String, i32), Committed>;

pub struct OffsetStore {
    meta: Arc<dyn MetaStore>,
    cache: Mutex<HashMap<String, GroupOffsets>>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    String::from_utf8(bytes?).ok()
}

/// (group, topic, partition, committed) of one stored offset.
fn parse(kv: &wal_core::meta::KeyValue) -> Option<(String, String, i32, Committed)> {
    let rest = kv.key.strip_prefix(PREFIX)?;
    let mut parts = rest.splitn(2, '/');
    let (Some(g), Some(tp)) = (parts.next(), parts.next()) else { return None };
    let (topic, partition) = tp.rsplit_once('/')?;
    match (unhex(g), partition.parse::<i32>(), serde_json::from_slice::<Committed>(&kv.value)) {
        (Some(group), Ok(partition), Ok(c)) => Some((group, topic.to_string(), partition, c)),
        _ => {
            tracing::warn!(key = %kv.key, "skipping an unreadable committed offset");
            None
        }
    }
}

fn key(group: &str, topic: &str, partition: i32) -> String {
    format!("{PREFIX}{}/{topic}/{partition}", hex(group))
}

impl OffsetStore {
    /// Loads every committed offset.
    pub async fn load(meta: Arc<dyn MetaStore>) -> Result<OffsetStore, MetaError> {
        let cache = Self::read_all(&*meta).await?;
        Ok(OffsetStore { meta, cache: Mutex::new(cache) })
    }

    /// Reads every committed offset again (groups whose coordinator moved here were committed
    /// on another gateway).
    pub async fn reload(&self) -> Result<(), MetaError> {
        let fresh = Self::read_all(&*self.meta).await?;
        *self.cache() = fresh;
        Ok(())
    }

    async fn read_all(meta: &dyn MetaStore) -> Result<HashMap<String, GroupOffsets>, MetaError> {
        let mut cache: HashMap<String, GroupOffsets> = HashMap::new();
        for kv in meta.list(PREFIX).await?.kvs {
            if let Some((group, topic, partition, c)) = parse(&kv) {
                cache.entry(group).or_default().insert((topic, partition), c);
            }
        }
        Ok(cache)
    }

    /// Reads one group's committed offsets again from the MetaStore (before answering a fetch:
    /// the group's previous coordinator may have taken commits until it saw the move).
    pub async fn refresh_group(&self, group: &str) -> Result<(), MetaError> {
        let mut fresh = GroupOffsets::default();
        for kv in self.meta.list(&format!("{PREFIX}{}/", hex(group))).await?.kvs {
            if let Some((g, topic, partition, c)) = parse(&kv) {
                if g == group {
                    fresh.insert((topic, partition), c);
                }
            }
        }
        let mut cache = self.cache();
        if fresh.is_empty() {
            cache.remove(group);
        } else {
            cache.insert(group.to_string(), fresh);
        }
        Ok(())
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<String, GroupOffsets>> {
        lock(&self.cache)
    }

    /// Stores the commits atomically, then makes them visible to fetches.
    pub async fn commit(&self, group: &str, commits: Vec<(String, i32, Committed)>) -> Result<(), MetaError> {
        if commits.is_empty() {
            return Ok(());
        }
        let ops = commits.iter().map(|(t, p, c)| Op::put(key(group, t, *p), serde_json::to_vec(c).expect("serializes"))).collect();
        write_in_chunks(&*self.meta, ops, DEFAULT_MAX_TXN_OPS).await?;
        let mut cache = self.cache();
        let g = cache.entry(group.to_string()).or_default();
        for (t, p, c) in commits {
            g.insert((t, p), c);
        }
        Ok(())
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<Committed> {
        self.cache().get(group).and_then(|g| g.get(&(topic.to_string(), partition)).cloned())
    }

    /// Every committed offset of a group.
    pub fn group(&self, group: &str) -> Vec<(String, i32, Committed)> {
        self.cache().get(group).map(|g| g.iter().map(|((t, p), c)| (t.clone(), *p, c.clone())).collect()).unwrap_or_default()
    }

    pub fn groups(&self) -> Vec<String> {
        self.cache().iter().filter(|(_, g)| !g.is_empty()).map(|(k, _)| k.clone()).collect()
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.cache().get(group).is_some_and(|g| !g.is_empty())
    }

    pub async fn delete_group(&self, group: &str) -> Result<(), MetaError> {
        self.meta.txn(Txn::new().then(Op::DeletePrefix(format!("{PREFIX}{}/", hex(group))))).await?;
        self.cache().remove(group);
        Ok(())
    }

    pub async fn delete(&self, group: &str, parts: &[(String, i32)]) -> Result<(), MetaError> {
        let ops = parts.iter().map(|(t, p)| Op::Delete(key(group, t, *p))).collect();
        write_in_chunks(&*self.meta, ops, DEFAULT_MAX_TXN_OPS).await?;
        if let Some(g) = self.cache().get_mut(group) {
            for (t, p) in parts {
                g.remove(&(t.clone(), *p));
            }
        }
        Ok(())
    }

    /// The offsets committed before `before_ms` of the groups `expires` selects (Kafka's
    /// `offsets.retention.minutes`, for groups without members).
    pub fn older_than(&self, before_ms: u64, expires: impl Fn(&str) -> bool) -> Vec<(String, Vec<(String, i32)>)> {
        self.cache()
            .iter()
            .filter(|(g, _)| expires(g))
            .map(|(g, offs)| {
                (g.clone(), offs.iter().filter(|(_, c)| c.commit_ms < before_ms).map(|(tp, _)| tp.clone()).collect::<Vec<_>>())
            })
            .filter(|(_, parts)| !parts.is_empty())
            .collect()
    }

    /// Offsets of a deleted topic are dropped with it: for every group, read from the MetaStore
    /// (the groups' coordinators may be other gateways, whose commits this one never cached), so
    /// a topic created again under the name starts with no committed offsets.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), MetaError> {
        let doomed: Vec<Op> = self
            .meta
            .list(PREFIX)
            .await?
            .kvs
            .iter()
            .filter(|kv| parse(kv).is_some_and(|(_, t, _, _)| t == topic))
            .map(|kv| Op::Delete(kv.key.clone()))
            .collect();
        write_in_chunks(&*self.meta, doomed, DEFAULT_MAX_TXN_OPS).await?;
        self.forget_topic(topic);
        Ok(())
    }

    /// Drops a topic's offsets from the cache only (the topic was deleted through another
    /// gateway, which deletes them from the MetaStore).
    pub fn forget_topic(&self, topic: &str) {
        for g in self.cache().values_mut() {
            g.retain(|(t, _), _| t != topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_of_any_bytes_round_trip() {
        for g in ["a", "with/slash", "ünï", ""] {
            assert_eq!(unhex(&hex(g)).as_deref(), Some(g));
        }
    }

    #[tokio::test]
    async fn a_new_coordinator_sees_commits_taken_by_the_old_one_after_it_loaded() {
        let meta: Arc<dyn MetaStore> = Arc::new(wal_core::meta::embedded::EmbeddedMeta::in_memory());
        let c = |o| Committed { offset: o, leader_epoch: 1, metadata: String::new(), commit_ms: 5 };
        let old = OffsetStore::load(meta.clone()).await.unwrap();
        old.commit("g", vec![("t".into(), 0, c(10))]).await.unwrap();
        let new = OffsetStore::load(meta.clone()).await.unwrap();
        // The old coordinator takes one more commit before it notices the move.
        old.commit("g", vec![("t".into(), 0, c(15)), ("t".into(), 1, c(3))]).await.unwrap();
        old.commit("other", vec![("t".into(), 0, c(99))]).await.unwrap();
        assert_eq!(new.get("g", "t", 0).map(|c| c.offset), Some(10));
        new.refresh_group("g").await.unwrap();
        assert_eq!(new.get("g", "t", 0).map(|c| c.offset), Some(15));
        assert_eq!(new.get("g", "t", 1).map(|c| c.offset), Some(3));
        assert_eq!(new.get("other", "t", 0), None, "only the asked group is read");
        // A group whose offsets were all deleted elsewhere is forgotten.
        old.delete_group("g").await.unwrap();
        new.refresh_group("g").await.unwrap();
        assert!(!new.has_group("g"));
    }

    /// On a real etcd (its default `--max-txn-ops` of 128): a commit of 300 partitions, and a
    /// topic deleted through another gateway, which never cached the group's commits.
    #[cfg(feature = "etcd")]
    #[tokio::test]
    async fn many_partitions_commit_on_etcd_and_topic_deletion_reaches_every_group() {
        let Some(etcd) = wal_core::testing::servers::start_etcd() else { return };
        let endpoints = vec![etcd.endpoint()];
        let connect = || wal_core::meta::etcd::EtcdMeta::connect(&endpoints, "/offsets-test");
        let meta: Arc<dyn MetaStore> = Arc::new(connect().await.unwrap());
        let c = |o| Committed { offset: o, leader_epoch: 1, metadata: String::new(), commit_ms: 5 };
        let coordinator = OffsetStore::load(meta.clone()).await.unwrap();
        let commits: Vec<_> = (0..300).map(|p| ("wide".to_string(), p, c(p as i64))).collect();
        coordinator.commit("g", commits).await.unwrap();
        coordinator.commit("g", vec![("kept".into(), 0, c(7))]).await.unwrap();
        let other: Arc<dyn MetaStore> = Arc::new(connect().await.unwrap());
        let reloaded = OffsetStore::load(other.clone()).await.unwrap();
        assert_eq!(reloaded.group("g").len(), 301, "every partition committed");
        // Another gateway, which loaded nothing of the group, deletes the topic.
        let deleter = OffsetStore { meta: other, cache: Mutex::new(HashMap::new()) };
        deleter.delete_topic("wide").await.unwrap();
        coordinator.refresh_group("g").await.unwrap();
        assert_eq!(coordinator.group("g"), vec![("kept".to_string(), 0, c(7))], "the deleted topic's offsets are gone for the group");
        let parts: Vec<_> = vec![("kept".to_string(), 0)];
        coordinator.delete("g", &parts).await.unwrap();
        assert!(!coordinator.has_group("g"));
    }

    #[tokio::test]
    async fn commits_survive_a_reload() {
        let meta: Arc<dyn MetaStore> = Arc::new(wal_core::meta::embedded::EmbeddedMeta::in_memory());
        let s = OffsetStore::load(meta.clone()).await.unwrap();
        let c = |o| Committed { offset: o, leader_epoch: 1, metadata: "m".into(), commit_ms: 5 };
        s.commit("g/1", vec![("t".into(), 0, c(10)), ("t".into(), 1, c(20))]).await.unwrap();
        s.commit("g2", vec![("u".into(), 3, c(7))]).await.unwrap();
        let r = OffsetStore::load(meta.clone()).await.unwrap();
        assert_eq!(r.get("g/1", "t", 1), Some(c(20)));
        assert_eq!(r.group("g/1").len(), 2);
        r.delete_topic("t").await.unwrap();
        assert!(!r.has_group("g/1"));
        r.delete_group("g2").await.unwrap();
        let r = OffsetStore::load(meta).await.unwrap();
        assert!(r.groups().is_empty());
    }
}
