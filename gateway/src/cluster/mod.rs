//! A cluster of gateways on the MetaStore: membership, partition ownership, group coordinators.
//!
//! Every gateway registers `gw/members/{node_id}` (its advertised host:port and rack) under a
//! lease and renews it; a gateway that dies or pauses past the lease disappears. Every gateway
//! polls the member list and computes the same assignment from it: each partition goes to one
//! live member by rendezvous hashing with a bounded load (no member gets more than
//! `ceil(partitions / members)`), so ownership is balanced and moves little when members come
//! and go. A gateway opens the writers of the partitions it owns; opening a writer bumps the
//! log's epoch, which fences the previous owner even if it is only paused. The owner records
//! `gw/leaders/{log}` = (node, epoch) so every gateway can name the leader epoch in Metadata.
//!
//! Group coordinators are spread the same way (rendezvous hashing of the group id over the
//! members); committed offsets live in the MetaStore, so a new coordinator reloads them.
//!
//! A gateway whose lease may have expired (its last renewal is older than 3/4 of the TTL, e.g.
//! after a pause) owns nothing until it has registered again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wal_core::meta::{MetaStore, Op, Registration, Txn};
use wal_core::util::{lock, random_nonzero_id};
use wal_core::MetaError;

pub const MEMBER_PREFIX: &str = "gw/members/";
pub const LEADER_PREFIX: &str = "gw/leaders/";

/// A live gateway as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Random per process start: tells two registrations of one node id apart.
    pub session: u64,
    /// The advertised host and port of each named listener (the main one is `host`/`port`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub listeners: BTreeMap<String, (String, i32)>,
}

impl Member {
    /// This member as a client on `listener` must reach it: that listener's address, or the
    /// main one when the member has no listener of that name.
    pub fn on(mut self, listener: &str) -> Member {
        if let Some((h, p)) = self.listeners.get(listener) {
            self.host = h.clone();
            self.port = *p;
        }
        self
    }
}

/// Who last took ownership of a log, and at which writer epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub node_id: i32,
    pub epoch: i32,
}

pub fn leader_key(log: &str) -> String {
    format!("{LEADER_PREFIX}{log}")
}

fn member_key(node_id: i32) -> String {
    format!("{MEMBER_PREFIX}{node_id}")
}

/// A stable 64-bit hash (FNV-1a, then a final mix): the same in every process and version.
fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(&[0xff]) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

fn rank(key: &[u8], members: &[i32]) -> Vec<i32> {
    let mut v: Vec<(u64, i32)> = members.iter().map(|m| (hash(&[key, &m.to_be_bytes()]), *m)).collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v.into_iter().map(|(_, m)| m).collect()
}

/// Each partition's owner: the highest-ranked member (rendezvous hashing) that has fewer than
/// `ceil(partitions / members)` partitions already, partitions taken in a fixed order.
pub fn assign(partitions: &[(String, i32)], members: &[i32]) -> HashMap<(String, i32), i32> {
    let mut out = HashMap::with_capacity(partitions.len());
    if members.is_empty() {
        return out;
    }
    let cap = partitions.len().div_ceil(members.len());
    let mut load: HashMap<i32, usize> = HashMap::new();
    let mut sorted: Vec<&(String, i32)> = partitions.iter().collect();
    sorted.sort();
    for (topic, idx) in sorted {
        let key = [topic.as_bytes(), &idx.to_be_bytes()].concat();
        let owner = rank(&key, members).into_iter().find(|m| load.get(m).copied().unwrap_or(0) < cap).expect("capacity suffices");
        *load.entry(owner).or_default() += 1;
        out.insert((topic.clone(), *idx), owner);
    }
    out
}

/// The coordinator of a group: the highest-ranked member for its id.
pub fn coordinator(group: &str, members: &[i32]) -> Option<i32> {
    rank(group.as_bytes(), members).first().copied()
}

/// What this gateway knows of the cluster at one poll.
#[derive(Debug, Default)]
pub struct View {
    /// Live members by node id.
    pub members: BTreeMap<i32, Member>,
    pub owners: HashMap<(String, i32), i32>,
    pub leaders: HashMap<String, LeaderRecord>,
}

impl View {
    pub fn member_ids(&self) -> Vec<i32> {
        self.members.keys().copied().collect()
    }
}

pub struct Cluster {
    pub me: Member,
    meta: Arc<dyn MetaStore>,
    ttl: Duration,
    registration: Registration,
    renewed: Mutex<Instant>,
    view: RwLock<Arc<View>>,
    /// Bumped at every new registration: whatever was acquired under an older one may have
    /// been taken over meanwhile and is acquired again.
    generation: std::sync::atomic::AtomicU64,
}

impl Cluster {
    /// Registers this gateway under a new lease.
    pub async fn join(meta: Arc<dyn MetaStore>, mut me: Member, ttl_secs: i64) -> Result<Arc<Cluster>, MetaError> {
        me.session = random_nonzero_id();
        let value = serde_json::to_vec(&me).expect("member serializes");
        let registration = Registration::register(meta.clone(), member_key(me.node_id), value.into(), ttl_secs).await?;
        let view = View { members: BTreeMap::from([(me.node_id, me.clone())]), ..View::default() };
        Ok(Arc::new(Cluster {
            me,
            meta,
            ttl: Duration::from_secs(ttl_secs as u64),
            registration,
            renewed: Mutex::new(Instant::now()),
            view: RwLock::new(Arc::new(view)),
            generation: std::sync::atomic::AtomicU64::new(1),
        }))
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The registration generation (see the field).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether this gateway's registration is surely still live (renewed within 3/4 of the TTL).
    pub fn serving(&self) -> bool {
        lock(&self.renewed).elapsed() < self.ttl * 3 / 4
    }

    /// Renews the lease; registers again (new lease) when it expired. The renewal counts from
    /// when the keep-alive was sent (the lease's new TTL started no earlier), not from when its
    /// answer came back late.
    pub async fn renew(&self) -> Result<(), MetaError> {
        let sent = Instant::now();
        if self.registration.renew().await? {
            self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        let mut renewed = lock(&self.renewed);
        *renewed = (*renewed).max(sent);
        Ok(())
    }

    /// Withdraws the registration (graceful shutdown, after handing partitions over).
    pub async fn leave(&self) {
        *lock(&self.renewed) = Instant::now() - self.ttl;
        if let Err(e) = self.registration.revoke().await {
            tracing::warn!(error = %e, "revoking the cluster lease");
        }
    }

    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The gateways to advertise to clients (Metadata, DescribeCluster): the live members, and
    /// always this gateway itself. While its lease lapsed (a pause, an etcd cut) the member list
    /// may lack it or be empty; a client told "no brokers" forgets the one it is talking to
    /// (librdkafka then waits on a coordinator it decommissioned and never looks it up again),
    /// whereas a listed gateway that is not serving answers retriable errors until it is.
    pub fn advertised(&self) -> BTreeMap<i32, Member> {
        let mut members = self.view().members.clone();
        members.entry(self.me.node_id).or_insert_with(|| self.me.clone());
        members
    }

    /// [`Cluster::advertised`] with the addresses of the listener a client came in on.
    pub fn advertised_on(&self, listener: &str) -> BTreeMap<i32, Member> {
        self.advertised().into_iter().map(|(id, m)| (id, m.on(listener))).collect()
    }

    /// Reads members and leader records and recomputes the assignment of `partitions`.
    /// Returns whether the member set changed.
    pub async fn refresh(&self, partitions: &[(String, i32)]) -> Result<bool, MetaError> {
        let mut members = BTreeMap::new();
        for kv in self.meta.list(MEMBER_PREFIX).await?.kvs {
            match serde_json::from_slice::<Member>(&kv.value) {
                Ok(m) => {
                    if m.node_id == self.me.node_id && m.session != self.me.session {
                        tracing::error!(node = m.node_id, host = %m.host, port = m.port, "another gateway registered this node id");
                    }
                    members.insert(m.node_id, m);
                }
                Err(e) => tracing::warn!(key = %kv.key, error = %e, "skipping an unreadable member record"),
            }
        }
        let mut leaders = HashMap::new();
        for kv in self.meta.list(LEADER_PREFIX).await?.kvs {
            if let Ok(r) = serde_json::from_slice::<LeaderRecord>(&kv.value) {
                leaders.insert(kv.key[LEADER_PREFIX.len()..].to_string(), r);
            }
        }
        let ids: Vec<i32> = members.keys().copied().collect();
        let owners = assign(partitions, &ids);
        let old = self.view();
        let changed = old.member_ids() != ids;
        if changed {
            tracing::info!(members = ?ids, "cluster membership changed");
        }
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(View { members, owners, leaders });
        Ok(changed)
    }

    /// The owner of a partition in the current view.
    pub fn owner(&self, topic: &str, index: i32) -> Option<i32> {
        self.view().owners.get(&(topic.to_string(), index)).copied()
    }

    /// Whether this gateway should lead the partition now.
    pub fn owns(&self, topic: &str, index: i32) -> bool {
        self.serving() && self.owner(topic, index) == Some(self.me.node_id)
    }

    /// The member coordinating a group.
    pub fn coordinator_of(&self, group: &str) -> Option<Member> {
        let v = self.view();
        coordinator(group, &v.member_ids()).and_then(|id| v.members.get(&id).cloned())
    }

    pub fn coordinates(&self, group: &str) -> bool {
        self.serving() && self.coordinator_of(group).is_some_and(|m| m.node_id == self.me.node_id)
    }

    /// Records that this gateway took the log over at `epoch`.
    pub async fn record_leader(&self, log: &str, epoch: i32) -> Result<(), MetaError> {
        let r = LeaderRecord { node_id: self.me.node_id, epoch };
        self.meta.txn(Txn::new().then(Op::put(leader_key(log), serde_json::to_vec(&r).expect("serializes")))).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(n: i32) -> Vec<(String, i32)> {
        (0..n).map(|i| (format!("t{}", i % 3), i)).collect()
    }

    #[test]
    fn assignment_is_deterministic_complete_and_balanced() {
        let p = parts(40);
        let a = assign(&p, &[1, 2, 3]);
        assert_eq!(a, assign(&p, &[3, 1, 2]));
        assert_eq!(a.len(), 40);
        let mut load: HashMap<i32, usize> = HashMap::new();
        for o in a.values() {
            *load.entry(*o).or_default() += 1;
        }
        assert!(load.values().all(|n| *n <= 14), "{load:?}");
        assert_eq!(load.len(), 3);
        assert!(assign(&p, &[]).is_empty());
    }

    #[test]
    fn a_member_leaving_moves_mostly_its_own_partitions() {
        let p = parts(60);
        let before = assign(&p, &[1, 2, 3]);
        let after = assign(&p, &[1, 3]);
        assert!(after.values().all(|o| *o != 2));
        let kept = before.iter().filter(|(k, o)| **o != 2 && after[*k] == **o).count();
        let others = before.values().filter(|o| **o != 2).count();
        // Bounded load may move a few more, but most partitions of the survivors stay put.
        assert!(kept * 10 >= others * 7, "kept {kept} of {others}");
    }

    #[test]
    fn coordinators_spread_over_members() {
        let members = [1, 2, 3];
        let mut seen: HashMap<i32, usize> = HashMap::new();
        for g in 0..300 {
            *seen.entry(coordinator(&format!("group-{g}"), &members).unwrap()).or_default() += 1;
        }
        assert_eq!(seen.len(), 3);
        assert!(seen.values().all(|n| *n > 50), "{seen:?}");
        assert_eq!(coordinator("g", &[]), None);
        assert_eq!(coordinator("g", &[1, 2]), coordinator("g", &[2, 1]));
    }

    #[tokio::test]
    async fn a_gateway_whose_registration_lapsed_still_advertises_itself() {
        let meta: Arc<dyn MetaStore> = Arc::new(wal_core::meta::embedded::EmbeddedMeta::in_memory());
        let me = Member { node_id: 7, host: "127.0.0.1".into(), port: 9092, rack: None, session: 0, listeners: Default::default() };
        let c = Cluster::join(meta.clone(), me, 6).await.unwrap();
        c.refresh(&[]).await.unwrap();
        assert_eq!(c.view().member_ids(), vec![7]);
        // The lease ran out while the process was paused: its member record is gone.
        meta.txn(Txn::new().then(Op::Delete(member_key(7)))).await.unwrap();
        c.refresh(&[]).await.unwrap();
        assert!(c.view().members.is_empty());
        assert_eq!(c.advertised().keys().copied().collect::<Vec<_>>(), vec![7]);
        assert_eq!(c.coordinator_of("g"), None, "no group is coordinated by an unregistered gateway");
    }
}
