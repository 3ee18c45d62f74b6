//! One consumer group under the classic protocol: members, generations, the rebalance state
//! machine (Empty -> PreparingRebalance -> CompletingRebalance -> Stable), static membership and
//! session/rebalance timeouts. Pure state plus waiters: no I/O and no awaiting under the lock.
//!
//! Size: about 500 lines before its tests, because the classic protocol's states and
//! transitions are one pure state machine that reads best whole.

use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a JoinGroup caller gets.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: (member id, instance id, metadata of the chosen protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    pub fn error(e: ResponseError, member_id: String) -> Self {
        JoinResult { error: Some(e), generation: -1, member_id, ..Default::default() }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub assignment: Bytes,
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat: Instant,
    pub join_waiter: Option<oneshot::Sender<JoinResult>>,
    pub sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
    fn fail_waiters(&mut self, e: ResponseError) {
        if let Some(w) = self.join_waiter.take() {
            let _ = w.send(JoinResult::error(e, self.id.clone()));
        }
        if let Some(w) = self.sync_waiter.take() {
            let _ = w.send(SyncResult { error: Some(e), assignment: Bytes::new() });
        }
    }
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: IndexMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, valid until the deadline.
    pub pending: IndexMap<String, Instant>,
    /// group.instance.id -> member id.
    pub statics: IndexMap<String, String>,
    rebalance_deadline: Option<Instant>,
    initial_delay_until: Option<Instant>,
}

/// Arguments of a JoinGroup.
pub struct JoinArgs {
    pub version: i16,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// Kafka's `group.max.size`: members (and pending member ids) a group may have.
    pub max_size: usize,
}

pub enum Outcome<T> {
    Now(T),
    Wait(oneshot::Receiver<T>),
}

impl Group {
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: IndexMap::new(),
            pending: IndexMap::new(),
            statics: IndexMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
        }
    }

    fn supports(&self, protocols: &[(String, Bytes)]) -> bool {
        self.members.is_empty() || protocols.iter().any(|(p, _)| self.members.values().all(|m| m.protocols.iter().any(|(q, _)| q == p)))
    }

    /// The protocol every member supports with the most first-choice votes.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(p, _)| p)
            .filter(|p| self.members.values().all(|m| m.protocols.iter().any(|(q, _)| q == *p)))
            .collect();
        let mut best: Option<(&String, usize)> = None;
        for c in &candidates {
            let votes = self
                .members
                .values()
                .filter(|m| m.protocols.iter().find(|(q, _)| candidates.contains(&q)).map(|(q, _)| q) == Some(*c))
                .count();
            if best.is_none_or(|(_, v)| votes > v) {
                best = Some((c, votes));
            }
        }
        best.map(|(p, _)| p.clone())
    }

    fn result_for(&self, member_id: &str) -> JoinResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members.values().map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol))).collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult { error: Some(ResponseError::RebalanceInProgress), assignment: Bytes::new() });
            }
        }
        let timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or(Duration::from_secs(60));
        self.rebalance_deadline = Some(now + timeout);
        self.initial_delay_until = (self.state == GroupState::Empty).then(|| now + initial_delay.min(timeout));
        self.state = GroupState::PreparingRebalance;
    }

    fn all_joined(&self) -> bool {
        self.members.values().all(|m| m.join_waiter.is_some())
    }

    /// Finishes the join phase: a new generation, a protocol, a leader; answers every joiner.
    fn complete_join(&mut self) {
        self.members.retain(|_, m| m.join_waiter.is_some());
        let ids: Vec<String> = self.members.keys().cloned().collect();
        self.statics.retain(|_, id| ids.contains(id));
        self.generation += 1;
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let now = Instant::now();
        let results: Vec<(String, JoinResult)> = ids.iter().map(|id| (id.clone(), self.result_for(id))).collect();
        for (id, r) in results {
            if let Some(m) = self.members.get_mut(&id) {
                m.last_heartbeat = now;
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(r);
                }
            }
        }
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state == GroupState::PreparingRebalance && self.all_joined() && self.initial_delay_until.is_none_or(|t| now >= t) {
            self.complete_join();
        }
    }

    fn remove_member(&mut self, id: &str, e: ResponseError) {
        if let Some(mut m) = self.members.shift_remove(id) {
            m.fail_waiters(e);
            if let Some(inst) = &m.instance_id {
                if self.statics.get(inst).is_some_and(|v| v == id) {
                    self.statics.shift_remove(inst);
                }
            }
        }
    }

    /// After members left: rebalance, or finish the join in progress, or become empty.
    fn after_departure(&mut self, now: Instant, initial_delay: Duration) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.state = GroupState::Empty;
                    self.generation += 1;
                    self.protocol = None;
                    self.leader = None;
                } else {
                    self.prepare_rebalance(now, initial_delay);
                }
            }
            GroupState::PreparingRebalance => {
                if self.members.is_empty() {
                    self.complete_join();
                } else {
                    self.maybe_complete_join(now);
                }
            }
            _ => {}
        }
    }

    pub fn join(&mut self, a: JoinArgs, now: Instant, initial_delay: Duration) -> Outcome<JoinResult> {
        if a.protocol_type.is_empty() || a.protocols.is_empty() {
            return Outcome::Now(JoinResult::error(ResponseError::InconsistentGroupProtocol, a.member_id));
        }
        if (self.state != GroupState::Empty || !self.members.is_empty())
            && (self.protocol_type.as_deref().is_some_and(|t| t != a.protocol_type) || !self.supports(&a.protocols))
        {
            return Outcome::Now(JoinResult::error(ResponseError::InconsistentGroupProtocol, a.member_id));
        }
        if a.member_id.is_empty() {
            let rejoining = a.instance_id.as_ref().is_some_and(|i| self.statics.contains_key(i));
            if !rejoining && self.members.len() + self.pending.len() >= a.max_size {
                return Outcome::Now(JoinResult::error(ResponseError::GroupMaxSizeReached, a.member_id));
            }
            let new_id = format!("{}-{}", if a.client_id.is_empty() { "member" } else { &a.client_id }, uuid::Uuid::new_v4());
            if let Some(inst) = a.instance_id.clone() {
                if let Some(old_id) = self.statics.get(&inst).cloned() {
                    // A static member restarted: it takes over its old identity and assignment.
                    let Some(mut m) = self.members.shift_remove(&old_id) else {
                        self.statics.shift_remove(&inst);
                        return self.join(a, now, initial_delay);
                    };
                    m.fail_waiters(ResponseError::FencedInstanceId);
                    let unchanged = m.protocols == a.protocols;
                    m.id = new_id.clone();
                    m.protocols = a.protocols;
                    m.session_timeout = a.session_timeout;
                    m.rebalance_timeout = a.rebalance_timeout;
                    m.last_heartbeat = now;
                    self.members.insert(new_id.clone(), m);
                    self.statics.insert(inst, new_id.clone());
                    if self.leader.as_deref() == Some(&old_id) {
                        self.leader = Some(new_id.clone());
                    }
                    if self.state == GroupState::Stable && unchanged {
                        return Outcome::Now(self.result_for(&new_id));
                    }
                    return self.wait_join(&new_id, now, initial_delay);
                }
                self.add_member(new_id.clone(), a, now);
                return self.wait_join(&new_id, now, initial_delay);
            }
            if a.version >= 4 {
                self.pending.insert(new_id.clone(), now + a.session_timeout);
                return Outcome::Now(JoinResult::error(ResponseError::MemberIdRequired, new_id));
            }
            self.add_member(new_id.clone(), a, now);
            return self.wait_join(&new_id, now, initial_delay);
        }
        let id = a.member_id.clone();
        if self.pending.shift_remove(&id).is_some() {
            self.add_member(id.clone(), a, now);
            return self.wait_join(&id, now, initial_delay);
        }
        if let Some(inst) = &a.instance_id {
            if self.statics.get(inst).is_some_and(|v| *v != id) {
                return Outcome::Now(JoinResult::error(ResponseError::FencedInstanceId, id));
            }
        }
        let Some(m) = self.members.get_mut(&id) else {
            return Outcome::Now(JoinResult::error(ResponseError::UnknownMemberId, id));
        };
        let changed = m.protocols != a.protocols;
        m.protocols = a.protocols;
        m.session_timeout = a.session_timeout;
        m.rebalance_timeout = a.rebalance_timeout;
        m.client_host = a.client_host;
        m.last_heartbeat = now;
        let is_leader = self.leader.as_deref() == Some(&id);
        match self.state {
            GroupState::CompletingRebalance if !changed => Outcome::Now(self.result_for(&id)),
            GroupState::Stable if !changed && !is_leader => Outcome::Now(self.result_for(&id)),
            _ => self.wait_join(&id, now, initial_delay),
        }
    }

    fn add_member(&mut self, id: String, a: JoinArgs, now: Instant) {
        if let Some(inst) = &a.instance_id {
            self.statics.insert(inst.clone(), id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(a.protocol_type.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                id,
                instance_id: a.instance_id,
                client_id: a.client_id,
                client_host: a.client_host,
                session_timeout: a.session_timeout,
                rebalance_timeout: a.rebalance_timeout,
                protocols: a.protocols,
                assignment: Bytes::new(),
                last_heartbeat: now,
                join_waiter: None,
                sync_waiter: None,
            },
        );
    }

    fn wait_join(&mut self, id: &str, now: Instant, initial_delay: Duration) -> Outcome<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(id) {
            if let Some(old) = m.join_waiter.replace(tx) {
                let _ = old.send(JoinResult::error(ResponseError::RebalanceInProgress, id.to_string()));
            }
        }
        self.prepare_rebalance(now, initial_delay);
        self.maybe_complete_join(now);
        Outcome::Wait(rx)
    }

    pub fn check_member(&self, id: &str, instance_id: Option<&str>, generation: i32) -> Result<(), ResponseError> {
        if let Some(inst) = instance_id {
            if self.statics.get(inst).is_some_and(|v| v != id) {
                return Err(ResponseError::FencedInstanceId);
            }
        }
        if !self.members.contains_key(id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Outcome<SyncResult> {
        let err = |e| Outcome::Now(SyncResult { error: Some(e), assignment: Bytes::new() });
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return err(e);
        }
        match self.state {
            GroupState::PreparingRebalance => err(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                let a = self.members[member_id].assignment.clone();
                Outcome::Now(SyncResult { error: None, assignment: a })
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                self.members[member_id].sync_waiter = Some(tx);
                if self.leader.as_deref() == Some(member_id) {
                    for m in self.members.values_mut() {
                        m.assignment = assignments.iter().find(|(id, _)| *id == m.id).map(|(_, a)| a.clone()).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    let now = Instant::now();
                    for m in self.members.values_mut() {
                        m.last_heartbeat = now;
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncResult { error: None, assignment: m.assignment.clone() });
                        }
                    }
                }
                Outcome::Wait(rx)
            }
            GroupState::Empty | GroupState::Dead => err(ResponseError::UnknownMemberId),
        }
    }

    pub fn heartbeat(&mut self, member_id: &str, instance_id: Option<&str>, generation: i32, now: Instant) -> Option<ResponseError> {
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return Some(e);
        }
        self.members[member_id].last_heartbeat = now;
        match self.state {
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => Some(ResponseError::UnknownMemberId),
            _ => None,
        }
    }

    /// Removes a member by id, or by instance id when `member_id` is empty.
    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now: Instant, initial_delay: Duration) -> Option<ResponseError> {
        let id = if member_id.is_empty() {
            match instance_id.and_then(|i| self.statics.get(i)) {
                Some(id) => id.clone(),
                None => return Some(ResponseError::UnknownMemberId),
            }
        } else {
            if let Some(inst) = instance_id {
                if self.statics.get(inst).is_some_and(|v| v != member_id) {
                    return Some(ResponseError::FencedInstanceId);
                }
            }
            member_id.to_string()
        };
        if !self.members.contains_key(&id) {
            return Some(ResponseError::UnknownMemberId);
        }
        self.remove_member(&id, ResponseError::UnknownMemberId);
        self.after_departure(now, initial_delay);
        None
    }

    /// Timeouts: expired sessions leave; a rebalance past its deadline completes without the
    /// members that did not rejoin; the initial delay ends.
    pub fn tick(&mut self, now: Instant, initial_delay: Duration) {
        self.pending.retain(|_, deadline| *deadline > now);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                let left = self.expire_sessions(now);
                if left {
                    self.after_departure(now, initial_delay);
                }
            }
            GroupState::PreparingRebalance => {
                self.expire_sessions(now);
                if self.rebalance_deadline.is_some_and(|d| now >= d) {
                    self.complete_join();
                } else {
                    self.maybe_complete_join(now);
                }
            }
            _ => {}
        }
    }

    /// Removes the members whose session ran out; returns whether any left. During a
    /// rebalance only those that have not rejoined: a member that died mid-rebalance leaves at
    /// its session timeout, as in Kafka, instead of holding every joiner until the rebalance
    /// timeout (often minutes).
    fn expire_sessions(&mut self, now: Instant) -> bool {
        let rebalancing = self.state == GroupState::PreparingRebalance;
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !(rebalancing && m.join_waiter.is_some()) && m.last_heartbeat + m.session_timeout < now)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, rebalancing, "session expired");
            self.remove_member(id, ResponseError::UnknownMemberId);
        }
        !expired.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(member: &str, proto: &str, version: i16) -> JoinArgs {
        JoinArgs {
            version,
            member_id: member.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: vec![(proto.into(), Bytes::from_static(b"meta"))],
            max_size: 1000,
        }
    }

    /// group.max.size counts members and pending member ids; a full group refuses newcomers
    /// with GROUP_MAX_SIZE_REACHED, and pending ids that expire free their places.
    #[test]
    fn a_full_group_refuses_new_members() {
        let mut g = Group::new("g");
        let t = Instant::now();
        let small = |member: &str| JoinArgs { max_size: 2, ..args(member, "range", 4) };
        let a = now_value(g.join(small(""), t, Duration::ZERO));
        assert_eq!(a.error, Some(ResponseError::MemberIdRequired));
        let b = now_value(g.join(small(""), t, Duration::ZERO));
        assert_eq!(b.error, Some(ResponseError::MemberIdRequired));
        let c = now_value(g.join(small(""), t, Duration::ZERO));
        assert_eq!(c.error, Some(ResponseError::GroupMaxSizeReached));
        assert_eq!(g.pending.len(), 2);
        // a pending id may still complete its join
        let a = now_value(g.join(small(&a.member_id), t, Duration::ZERO));
        assert_eq!(a.error, None);
        // b never comes back: after its session timeout a newcomer fits (a heartbeats)
        g.heartbeat(&a.member_id, None, a.generation, t + Duration::from_secs(8));
        g.tick(t + Duration::from_secs(11), Duration::ZERO);
        assert_eq!((g.members.len(), g.pending.len()), (1, 0));
        let d = now_value(g.join(small(""), t + Duration::from_secs(11), Duration::ZERO));
        assert_eq!(d.error, Some(ResponseError::MemberIdRequired));
    }

    fn now_value<T>(o: Outcome<T>) -> T {
        match o {
            Outcome::Now(v) => v,
            Outcome::Wait(mut rx) => rx.try_recv().expect("completed"),
        }
    }

    #[test]
    fn member_id_required_then_join_sync_stable() {
        let mut g = Group::new("g");
        let t = Instant::now();
        let r = now_value(g.join(args("", "range", 4), t, Duration::ZERO));
        assert_eq!(r.error, Some(ResponseError::MemberIdRequired));
        let id = r.member_id;
        let r = now_value(g.join(args(&id, "range", 4), t, Duration::ZERO));
        assert_eq!((r.error, r.generation, r.leader.clone()), (None, 1, id.clone()));
        assert_eq!(r.members.len(), 1);
        assert_eq!(g.state, GroupState::CompletingRebalance);
        let s = now_value(g.sync(&id, None, 1, vec![(id.clone(), Bytes::from_static(b"A"))]));
        assert_eq!(&s.assignment[..], b"A");
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.heartbeat(&id, None, 1, t), None);
        assert_eq!(g.heartbeat(&id, None, 0, t), Some(ResponseError::IllegalGeneration));
        assert_eq!(g.heartbeat("x", None, 1, t), Some(ResponseError::UnknownMemberId));
    }

    #[test]
    fn a_second_member_triggers_a_rebalance_and_a_timeout_removes_laggards() {
        let mut g = Group::new("g");
        let t = Instant::now();
        let a = now_value(g.join(args("", "range", 3), t, Duration::ZERO));
        now_value(g.sync(&a.member_id, None, 1, vec![]));
        // b joins: a must rejoin
        let Outcome::Wait(mut b_rx) = g.join(args("", "range", 3), t, Duration::ZERO) else { panic!("should wait") };
        assert_eq!(g.heartbeat(&a.member_id, None, 1, t), Some(ResponseError::RebalanceInProgress));
        assert!(b_rx.try_recv().is_err());
        // a never rejoins: at the deadline b forms generation 2 alone
        g.tick(t + Duration::from_secs(31), Duration::ZERO);
        let b = b_rx.try_recv().unwrap();
        assert_eq!((b.generation, b.leader == b.member_id), (2, true));
        assert_eq!(g.members.len(), 1);
    }

    /// A member that dies mid-rebalance leaves when its session (10 s) runs out, not at the
    /// rebalance timeout (30 s); one that keeps heartbeating is waited for.
    #[test]
    fn a_member_dead_during_a_rebalance_leaves_at_its_session_timeout() {
        let mut g = Group::new("g");
        let t = Instant::now();
        let a = now_value(g.join(args("", "range", 3), t, Duration::ZERO));
        now_value(g.sync(&a.member_id, None, 1, vec![]));
        let Outcome::Wait(mut b_rx) = g.join(args("", "range", 3), t, Duration::ZERO) else { panic!("should wait") };
        g.tick(t + Duration::from_secs(5), Duration::ZERO);
        assert_eq!(g.heartbeat(&a.member_id, None, 1, t + Duration::from_secs(5)), Some(ResponseError::RebalanceInProgress));
        g.tick(t + Duration::from_secs(11), Duration::ZERO);
        assert!(b_rx.try_recv().is_err(), "a heartbeat at 5 s keeps a until 15 s");
        g.tick(t + Duration::from_secs(16), Duration::ZERO);
        let b = b_rx.try_recv().expect("the join completes once a's session ran out");
        assert_eq!((b.generation, b.members.len()), (2, 1));
        assert_eq!(g.members.len(), 1);
    }

    #[test]
    fn session_expiry_and_leave_rebalance() {
        let mut g = Group::new("g");
        let t = Instant::now();
        let a = now_value(g.join(args("", "range", 3), t, Duration::ZERO));
        now_value(g.sync(&a.member_id, None, 1, vec![]));
        assert_eq!(g.leave(&a.member_id, None, t, Duration::ZERO), None);
        assert_eq!(g.state, GroupState::Empty);
        let b = now_value(g.join(args("", "range", 3), t, Duration::ZERO));
        now_value(g.sync(&b.member_id, None, b.generation, vec![]));
        g.tick(t + Duration::from_secs(11), Duration::ZERO);
        assert_eq!(g.state, GroupState::Empty);
        assert!(g.members.is_empty());
    }

    #[test]
    fn incompatible_protocols_are_refused() {
        let mut g = Group::new("g");
        let t = Instant::now();
        now_value(g.join(args("", "range", 3), t, Duration::ZERO));
        let r = now_value(g.join(args("", "roundrobin", 3), t, Duration::ZERO));
        assert_eq!(r.error, Some(ResponseError::InconsistentGroupProtocol));
    }

    #[test]
    fn a_restarted_static_member_keeps_its_assignment_without_rebalance() {
        let mut g = Group::new("g");
        let t = Instant::now();
        let mut a = args("", "range", 5);
        a.instance_id = Some("i1".into());
        let r = now_value(g.join(a, t, Duration::ZERO));
        now_value(g.sync(&r.member_id, Some("i1"), 1, vec![(r.member_id.clone(), Bytes::from_static(b"P"))]));
        let mut again = args("", "range", 5);
        again.instance_id = Some("i1".into());
        let r2 = now_value(g.join(again, t, Duration::ZERO));
        assert_eq!((r2.error, r2.generation), (None, 1), "no new generation");
        assert_ne!(r2.member_id, r.member_id);
        assert_eq!(g.heartbeat(&r.member_id, Some("i1"), 1, t), Some(ResponseError::FencedInstanceId));
        let s = now_value(g.sync(&r2.member_id, Some("i1"), 1, vec![]));
        assert_eq!(&s.assignment[..], b"P");
    }
}
