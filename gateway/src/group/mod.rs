//! The group coordinator: every consumer group of this gateway (classic protocol) and their
//! committed offsets. Group membership lives in memory (after a restart members rejoin, as
//! with a new Kafka coordinator); committed offsets are durable (see [`offsets`]).
//! A background task applies session and rebalance timeouts.

pub mod offsets;
pub mod state;

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
    pub offsets: OffsetStore,
    /// Kafka's `group.initial.rebalance.delay.ms`: an empty group waits this long for more
    /// members before its first generation.
    pub initial_delay: Duration,
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
    pub async fn open(meta: Arc<dyn MetaStore>, initial_delay: Duration) -> Result<Arc<Coordinator>, MetaError> {
        let offsets = OffsetStore::load(meta).await?;
        Ok(Arc::new(Coordinator { groups: Mutex::new(HashMap::new()), offsets, initial_delay }))
    }

    /// The group, created empty when `create` and absent.
    pub fn group(&self, id: &str, create: bool) -> Option<Arc<Mutex<Group>>> {
        let mut map = lock(&self.groups);
        if let Some(g) = map.get(id) {
            return Some(g.clone());
        }
        create.then(|| map.entry(id.to_string()).or_insert_with(|| Arc::new(Mutex::new(Group::new(id)))).clone())
    }

    pub fn with_group<T>(&self, id: &str, create: bool, f: impl FnOnce(&mut Group) -> T) -> Option<T> {
        let g = self.group(id, create)?;
        let mut g = lock(&g);
        Some(f(&mut g))
    }

    /// Applies timeouts to every group; drops empty groups that hold no offsets.
    pub fn tick(&self) {
        let now = Instant::now();
        let groups: Vec<(String, Arc<Mutex<Group>>)> = lock(&self.groups).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (id, g) in groups {
            let empty = {
                let mut g = lock(&g);
                g.tick(now, self.initial_delay);
                g.state == GroupState::Empty && g.is_empty()
            };
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

    /// Every known group id (with members or with committed offsets).
    pub fn group_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.groups).keys().cloned().collect();
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
        let has_members = self.with_group(id, false, |g| !g.members.is_empty() || g.state != GroupState::Empty);
        match has_members {
            Some(true) => return Err(ResponseError::NonEmptyGroup),
            None if !self.offsets.has_group(id) => return Err(ResponseError::GroupIdNotFound),
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
