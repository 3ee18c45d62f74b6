//! The group coordinator: every consumer group of this gateway, classic ([`state`]) and KIP-848
//! ([`consumer`]), and their committed offsets. Group membership lives in memory (after a
//! restart members rejoin, as with a new Kafka coordinator); committed offsets are durable (see
//! [`offsets`]). A background task applies session and rebalance timeouts. A group id is one
//! type at a time: a non-empty group refuses the other protocol (INCONSISTENT_GROUP_PROTOCOL),
//! an empty one is taken over by it, as Kafka 4 allows.

pub mod consumer;
pub mod offsets;
pub mod state;
pub mod txn_offsets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use wal_core::util::lock;
use wal_core::{MetaError, MetaStore};

use offsets::OffsetStore;
use state::{Group, GroupState};

/// How often timeouts are checked.
const TICK: Duration = Duration::from_millis(100);
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(1000);
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(1800);

pub struct Coordinator {
    groups: Mutex<HashMap<String, Arc<Mutex<Group>>>>,
    /// KIP-848 consumer groups.
    consumer: Mutex<HashMap<String, Arc<Mutex<consumer::ConsumerGroup>>>>,
    pub offsets: OffsetStore,
    /// Kafka's `group.initial.rebalance.delay.ms`: an empty group waits this long for more
    /// members before its first generation.
    pub initial_delay: Duration,
    /// Groups with members (or pending member ids) this coordinator holds at most
    /// (`max_groups`): each JoinGroup with an empty member id could otherwise create one.
    pub max_groups: usize,
    /// Kafka's `group.consumer.session.timeout.ms` for KIP-848 groups.
    pub consumer_session_timeout: Duration,
    /// Offsets committed inside transactions, until they end.
    pub txn_offsets: txn_offsets::TxnOffsets,
}

/// A group as DescribeGroups / ListGroups report it.
pub struct GroupSummary {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberSummary>,
}

/// One member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberSummary {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's metadata for the group's chosen protocol.
    pub metadata: bytes::Bytes,
    pub assignment: bytes::Bytes,
}

impl Coordinator {
    pub async fn open(
        meta: Arc<dyn MetaStore>,
        initial_delay: Duration,
        max_groups: usize,
        consumer_session_timeout: Duration,
    ) -> Result<Arc<Coordinator>, MetaError> {
        let offsets = OffsetStore::load(meta.clone()).await?;
        let txn_offsets = txn_offsets::TxnOffsets::load(meta).await?;
        Ok(Arc::new(Coordinator {
            txn_offsets,
            groups: Mutex::new(HashMap::new()),
            consumer: Mutex::new(HashMap::new()),
            offsets,
            initial_delay,
            max_groups,
            consumer_session_timeout,
        }))
    }

    /// The group, created empty when `create` and absent (unless [`Coordinator::max_groups`]
    /// groups exist: see [`Coordinator::full`]).
    pub fn group(&self, id: &str, create: bool) -> Option<Arc<Mutex<Group>>> {
        let mut map = lock(&self.groups);
        if let Some(g) = map.get(id) {
            return Some(g.clone());
        }
        if !create || self.refuses(&map, id) {
            return None;
        }
        Some(map.entry(id.to_string()).or_insert_with(|| Arc::new(Mutex::new(Group::new(id)))).clone())
    }

    /// Whether a group `id` would be refused creation: absent while `max_groups` exist.
    pub fn full(&self, id: &str) -> bool {
        self.refuses(&lock(&self.groups), id)
    }

    fn refuses(&self, map: &HashMap<String, Arc<Mutex<Group>>>, id: &str) -> bool {
        !map.contains_key(id) && map.len() >= self.max_groups
    }

    /// The end of producer `pid`'s transaction for its group offsets: committed (made visible)
    /// on COMMIT, dropped on ABORT.
    pub async fn complete_txn_offsets(&self, pid: i64, commit: bool) -> Result<(), MetaError> {
        let pending = self.txn_offsets.of(pid).await?;
        if commit {
            let mut by_group: HashMap<String, Vec<(String, i32, offsets::Committed)>> = HashMap::new();
            for o in pending {
                by_group.entry(o.group).or_default().push((o.topic, o.partition, o.committed));
            }
            for (g, commits) in by_group {
                self.offsets.commit(&g, commits).await?;
            }
        }
        self.txn_offsets.forget(pid).await
    }

    /// Whether `id` is a KIP-848 consumer group with members.
    pub fn is_active_consumer_group(&self, id: &str) -> bool {
        lock(&self.consumer).get(id).is_some_and(|g| !lock(g).is_empty())
    }

    /// Whether `id` is a classic group with members (or joining ones).
    pub fn is_active_classic_group(&self, id: &str) -> bool {
        self.with_group(id, false, |g| !g.is_empty() || g.state != GroupState::Empty).unwrap_or(false)
    }

    /// Runs `f` on the consumer group `id`, created when `create` (unless `max_groups` groups
    /// exist). An empty classic group of that id is dropped: the new protocol takes it over.
    pub fn with_consumer_group<T>(&self, id: &str, create: bool, f: impl FnOnce(&mut consumer::ConsumerGroup) -> T) -> Option<T> {
        let g = {
            let mut map = lock(&self.consumer);
            match map.get(id) {
                Some(g) => g.clone(),
                None if !create || map.len() + lock(&self.groups).len() >= self.max_groups => return None,
                None => {
                    lock(&self.groups).remove(id);
                    map.entry(id.to_string())
                        .or_insert_with(|| Arc::new(Mutex::new(consumer::ConsumerGroup::new(id, self.consumer_session_timeout))))
                        .clone()
                }
            }
        };
        let mut g = lock(&g);
        Some(f(&mut g))
    }

    /// Every consumer group's id, state and members' count (for ListGroups).
    pub fn consumer_groups(&self) -> Vec<(String, &'static str)> {
        lock(&self.consumer).iter().map(|(k, g)| (k.clone(), lock(g).state())).collect()
    }

    pub fn with_group<T>(&self, id: &str, create: bool, f: impl FnOnce(&mut Group) -> T) -> Option<T> {
        let g = self.group(id, create)?;
        let mut g = lock(&g);
        Some(f(&mut g))
    }

    /// Applies timeouts to every group; drops empty groups that hold no offsets.
    pub fn tick(&self) {
        let now = Instant::now();
        let consumer: Vec<(String, Arc<Mutex<consumer::ConsumerGroup>>)> =
            lock(&self.consumer).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (id, g) in consumer {
            let empty = {
                let mut g = lock(&g);
                g.expire(now);
                g.is_empty()
            };
            drop(g);
            if empty && !self.offsets.has_group(&id) {
                let mut map = lock(&self.consumer);
                if map.get(&id).is_some_and(|g| Arc::strong_count(g) == 1 && lock(g).is_empty()) {
                    map.remove(&id);
                }
            }
        }
        let groups: Vec<(String, Arc<Mutex<Group>>)> = lock(&self.groups).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (id, g) in groups {
            let empty = {
                let mut g = lock(&g);
                g.tick(now, self.initial_delay);
                g.state == GroupState::Empty && g.is_empty()
            };
            // Our clone of the group counts too: gone before asking whether anyone holds it.
            drop(g);
            if empty && !self.offsets.has_group(&id) {
                let mut map = lock(&self.groups);
                if map.get(&id).is_some_and(|g| Arc::strong_count(g) == 1 && lock(g).is_empty()) {
                    map.remove(&id);
                }
            }
        }
    }

    pub fn spawn_ticker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(TICK);
            loop {
                t.tick().await;
                match me.upgrade() {
                    Some(c) => c.tick(),
                    None => return,
                }
            }
        })
    }

    pub fn summary(&self, id: &str) -> Option<GroupSummary> {
        let from_members = self.with_group(id, false, |g| GroupSummary {
            id: g.id.clone(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if g.state == GroupState::Stable || g.state == GroupState::CompletingRebalance {
                g.protocol.clone().unwrap_or_default()
            } else {
                String::new()
            },
            members: g
                .members
                .values()
                .map(|m| {
                    let meta = m.protocols.iter().find(|(p, _)| Some(p) == g.protocol.as_ref()).map(|(_, b)| b.clone()).unwrap_or_default();
                    MemberSummary {
                        member_id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: meta,
                        assignment: m.assignment.clone(),
                    }
                })
                .collect(),
        });
        match from_members {
            Some(s) if s.state != GroupState::Empty || !s.members.is_empty() || self.offsets.has_group(id) => Some(s),
            Some(s) if s.state == GroupState::Empty => Some(s),
            _ if self.offsets.has_group(id) => Some(GroupSummary {
                id: id.to_string(),
                state: GroupState::Empty,
                protocol_type: "consumer".into(),
                protocol: String::new(),
                members: Vec::new(),
            }),
            _ => None,
        }
    }

    /// Deletes the committed offsets older than `retention` of groups without members that
    /// `coordinated` says this gateway coordinates; returns how many.
    pub async fn expire_offsets(&self, retention: Duration, coordinated: impl Fn(&str) -> bool) -> Result<usize, MetaError> {
        let before = (wal_core::util::now_ms()).saturating_sub(retention.as_millis() as u64);
        let idle =
            |g: &str| coordinated(g) && self.with_group(g, false, |gr| gr.members.is_empty() && gr.pending.is_empty()).unwrap_or(true);
        let mut n = 0;
        for (group, parts) in self.offsets.older_than(before, idle) {
            self.offsets.delete(&group, &parts).await?;
            tracing::info!(group = %group, partitions = parts.len(), "expired committed offsets (offsets_retention_ms)");
            n += parts.len();
        }
        Ok(n)
    }

    /// Every known group id (with members or with committed offsets), classic or consumer.
    pub fn group_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.groups).keys().cloned().collect();
        ids.extend(lock(&self.consumer).keys().filter(|k| !ids.contains(k)).cloned().collect::<Vec<_>>());
        for g in self.offsets.groups() {
            if !ids.contains(&g) {
                ids.push(g);
            }
        }
        ids.sort();
        ids
    }

    /// Deletes an empty group and its offsets.
    pub async fn delete_group(&self, id: &str) -> Result<(), ResponseError> {
        if self.is_active_consumer_group(id) {
            return Err(ResponseError::NonEmptyGroup);
        }
        let was_consumer = lock(&self.consumer).remove(id).is_some();
        let has_members = self.with_group(id, false, |g| !g.members.is_empty() || g.state != GroupState::Empty);
        match has_members {
            Some(true) => return Err(ResponseError::NonEmptyGroup),
            None if !was_consumer && !self.offsets.has_group(id) => return Err(ResponseError::GroupIdNotFound),
            _ => {}
        }
        self.offsets.delete_group(id).await.map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        let mut map = lock(&self.groups);
        if let Some(g) = map.get(id) {
            let mut g = lock(g);
            if g.members.is_empty() {
                g.state = GroupState::Dead;
            }
        }
        map.remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::state::{JoinArgs, Outcome};

    fn join(id: &str) -> JoinArgs {
        JoinArgs {
            version: 4,
            member_id: String::new(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".into(),
            protocols: vec![(id.into(), bytes::Bytes::new())],
            max_size: 10,
        }
    }

    /// max_groups bounds the groups JoinGroup creates; a group that empties and is dropped
    /// frees its place.
    #[tokio::test]
    async fn joins_create_at_most_max_groups() {
        let meta: Arc<dyn MetaStore> = Arc::new(wal_core::meta::embedded::EmbeddedMeta::in_memory());
        let c = Coordinator::open(meta, Duration::ZERO, 2, consumer::SESSION_TIMEOUT).await.unwrap();
        let now = Instant::now();
        for g in ["g1", "g2"] {
            assert!(matches!(c.with_group(g, true, |gr| gr.join(join("range"), now, Duration::ZERO)), Some(Outcome::Now(_))));
        }
        assert!(c.full("g3"));
        assert!(!c.full("g1"), "an existing group is never refused");
        assert!(c.with_group("g3", true, |_| ()).is_none(), "a third group is not created");
        // g1's pending member id expires; the empty group is dropped at the next tick
        c.with_group("g1", false, |gr| gr.tick(now + Duration::from_secs(11), Duration::ZERO));
        c.tick();
        assert!(!c.full("g3"));
        assert!(c.with_group("g3", true, |_| ()).is_some());
    }

    /// Offsets of a group without members expire after the retention; a group with members
    /// keeps them, and so does a group another gateway coordinates.
    #[tokio::test]
    async fn committed_offsets_of_idle_groups_expire() {
        let meta: Arc<dyn MetaStore> = Arc::new(wal_core::meta::embedded::EmbeddedMeta::in_memory());
        let c = Coordinator::open(meta.clone(), Duration::ZERO, 10, consumer::SESSION_TIMEOUT).await.unwrap();
        let old = wal_core::util::now_ms() - 3_600_000;
        let commit = |ms| offsets::Committed { offset: 5, leader_epoch: -1, metadata: String::new(), commit_ms: ms };
        for g in ["idle", "busy", "elsewhere"] {
            c.offsets.commit(g, vec![("t".into(), 0, commit(old)), ("t".into(), 1, commit(wal_core::util::now_ms()))]).await.unwrap();
        }
        let joined = c.with_group("busy", true, |gr| gr.join(JoinArgs { version: 3, ..join("range") }, Instant::now(), Duration::ZERO));
        assert!(joined.is_some());
        let n = c.expire_offsets(Duration::from_secs(60), |g| g != "elsewhere").await.unwrap();
        assert_eq!(n, 1, "only idle's old offset");
        assert!(c.offsets.get("idle", "t", 0).is_none() && c.offsets.get("idle", "t", 1).is_some());
        assert!(c.offsets.get("busy", "t", 0).is_some() && c.offsets.get("elsewhere", "t", 0).is_some());
        // gone from the MetaStore too: a coordinator starting now does not see it
        let fresh = Coordinator::open(meta, Duration::ZERO, 10, consumer::SESSION_TIMEOUT).await.unwrap();
        assert!(fresh.offsets.get("idle", "t", 0).is_none());
    }
}
