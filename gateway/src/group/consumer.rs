//! KIP-848 consumer groups: the coordinator assigns, members only heartbeat.
//!
//! A group has a *group epoch*, bumped whenever what the assignment depends on changes (a member
//! joins or leaves, a subscription changes, a subscribed topic gains partitions or appears), and
//! a *target assignment* computed by a server-side assignor (`uniform`, the default, or `range`)
//! for that epoch. Each member converges on its target by heartbeats (incremental
//! reconciliation): a member first gives up the partitions it owns outside its target (its
//! epoch stays until it reports them gone), then receives its new partitions as soon as no
//! other member still owns them, and takes the assignment epoch. A partition is therefore never
//! owned by two members at once. Members leave by heartbeat (epoch -1, or -2 for a static
//! member), or are removed when their session times out; a member that does not give up the
//! partitions it was asked to revoke within its rebalance timeout is fenced (removed, its
//! partitions go to others). Subscriptions are topic names or a regular expression (Kafka's RE2
//! syntax, the regex crate's). Static members (an instance id) that leave with epoch -2 keep
//! their assignment for the session timeout; rejoining, they take the place, partitions and
//! epoch of their previous incarnation without a rebalance. With racks known (the member's
//! `rack_id`, the rack of the gateway leading a partition), the assignors prefer a member in
//! the partition's rack among those under their share.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;

/// Kafka's `group.consumer.heartbeat.interval.ms` default.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Kafka's `group.consumer.session.timeout.ms` default.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(45);

/// What the coordinator knows of the topics: partition counts (None: no such topic), every
/// topic's name (for regex subscriptions), and the rack of a partition's leader.
pub struct TopicView<'a> {
    pub partitions: &'a dyn Fn(&str) -> Option<i32>,
    pub names: &'a dyn Fn() -> Vec<String>,
    pub rack: &'a dyn Fn(&str, i32) -> Option<String>,
}
/// The server-side assignors (`group.consumer.assignors`); the first is the default.
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

pub type Tp = (String, i32);

/// One member of a consumer group.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub topics: Vec<String>,
    pub regex: Option<String>,
    pub assignor: Option<String>,
    pub rebalance_timeout: Duration,
    pub deadline: Instant,
    /// What the member was told it owns.
    pub assigned: BTreeSet<Tp>,
    /// What it still owns beyond that (told to revoke, not yet confirmed).
    pub revoking: BTreeSet<Tp>,
    /// The assignment last sent (to send again only when it changes).
    pub sent: Option<BTreeSet<Tp>>,
    /// When the member must have given up `revoking` (its rebalance timeout after being asked).
    pub revoke_by: Option<Instant>,
    /// A static member that left with epoch -2: kept (with its assignment) until its session
    /// deadline, for its next incarnation.
    pub away: bool,
}

/// A consumer group.
#[derive(Debug)]
pub struct ConsumerGroup {
    pub id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, Member>,
    pub target: BTreeMap<String, BTreeSet<Tp>>,
    /// The subscribed topics' partition counts the target was computed for.
    metadata: Vec<(String, i32)>,
    /// Kafka's `group.consumer.session.timeout.ms`.
    session_timeout: Duration,
}

/// One heartbeat, as the coordinator needs it.
pub struct Beat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub topics: Option<Vec<String>>,
    pub regex: Option<String>,
    pub assignor: Option<String>,
    pub owned: Option<Vec<Tp>>,
    pub client_id: String,
    pub client_host: String,
}

/// What a heartbeat answers.
#[derive(Debug, PartialEq, Eq)]
pub struct BeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    /// The member's assignment, when it changed (or the member just joined).
    pub assignment: Option<BTreeSet<Tp>>,
}

impl ConsumerGroup {
    pub fn new(id: &str, session_timeout: Duration) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_string(),
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            metadata: Vec::new(),
            session_timeout,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kafka's group states: Empty, Assigning (target behind the group epoch), Reconciling
    /// (members converging), Stable.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.group_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.assignment_epoch || !m.revoking.is_empty() || self.target.get(&m.id) != Some(&m.assigned))
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The assignor the group uses: the one its members ask for (the first member's), else uniform.
    pub fn assignor(&self) -> &str {
        self.members.values().find_map(|m| m.assignor.as_deref()).unwrap_or("uniform")
    }

    /// Handles one heartbeat at `now`.
    pub fn heartbeat(&mut self, b: Beat, now: Instant, view: &TopicView) -> Result<BeatAnswer, (ResponseError, String)> {
        if let Some(a) = b.assignor.as_deref() {
            if !ASSIGNORS.contains(&a) {
                return Err((ResponseError::UnsupportedAssignor, format!("assignor {a} is not one of {}", ASSIGNORS.join(", "))));
            }
        }
        let regex = match b.regex.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => {
                Some(regex::Regex::new(&format!("^(?:{r})$")).map_err(|e| (ResponseError::InvalidRegularExpression, e.to_string()))?)
            }
            None => None,
        };
        let regex = regex.is_some();
        match b.member_epoch {
            -2 if self.members.get(&b.member_id).is_some_and(|m| m.instance_id.is_some()) => {
                // A static member's temporary leave: its place waits for its next incarnation.
                let m = self.members.get_mut(&b.member_id).expect("checked");
                m.away = true;
                m.deadline = now + self.session_timeout;
                return Ok(BeatAnswer { member_id: b.member_id, member_epoch: -2, assignment: None });
            }
            -1 | -2 => {
                if self.members.remove(&b.member_id).is_some() {
                    self.target.remove(&b.member_id);
                    self.group_epoch += 1;
                }
                return Ok(BeatAnswer { member_id: b.member_id, member_epoch: b.member_epoch, assignment: None });
            }
            0 => {
                if b.topics.as_ref().is_none_or(|t| t.is_empty()) && !regex {
                    return Err((ResponseError::InvalidRequest, "a joining member subscribes to topics or a regex".into()));
                }
                let id = if b.member_id.is_empty() { uuid::Uuid::new_v4().to_string() } else { b.member_id.clone() };
                // A static member rejoining takes its previous incarnation's place.
                let previous = b
                    .instance_id
                    .as_ref()
                    .and_then(|i| self.members.values().find(|m| m.instance_id.as_ref() == Some(i)).map(|m| m.id.clone()));
                let inherited = previous.and_then(|p| {
                    let m = self.members.remove(&p)?;
                    let t = self.target.remove(&p);
                    Some((m, t))
                });
                let mut m = Member {
                    id: id.clone(),
                    instance_id: b.instance_id.clone(),
                    rack_id: b.rack_id.clone(),
                    client_id: b.client_id.clone(),
                    client_host: b.client_host.clone(),
                    epoch: 0,
                    previous_epoch: 0,
                    topics: b.topics.clone().unwrap_or_default(),
                    regex: b.regex.clone().filter(|r| !r.is_empty()),
                    assignor: b.assignor.clone(),
                    rebalance_timeout: Duration::from_millis(b.rebalance_timeout_ms.max(0) as u64),
                    deadline: now + self.session_timeout,
                    assigned: BTreeSet::new(),
                    revoking: BTreeSet::new(),
                    sent: None,
                    revoke_by: None,
                    away: false,
                };
                match inherited {
                    Some((old, t)) if old.topics == m.topics && old.regex == m.regex => {
                        (m.epoch, m.assigned, m.revoking, m.revoke_by) = (old.epoch, old.assigned, old.revoking, old.revoke_by);
                        if let Some(t) = t {
                            self.target.insert(id.clone(), t);
                        }
                    }
                    _ => self.group_epoch += 1,
                }
                self.members.insert(id.clone(), m);
                if self.group_epoch == 0 {
                    self.group_epoch = 1;
                }
                let answer = self.reconcile(&id, None, now, view);
                return Ok(BeatAnswer { assignment: Some(answer.1), ..answer.0 });
            }
            _ => {}
        }
        let Some(m) = self.members.get_mut(&b.member_id).filter(|m| !m.away) else {
            return Err((ResponseError::UnknownMemberId, format!("member {} is not in group {}", b.member_id, self.id)));
        };
        if b.member_epoch != m.epoch && b.member_epoch != m.previous_epoch {
            return Err((ResponseError::FencedMemberEpoch, format!("epoch {} is not the member's {}", b.member_epoch, m.epoch)));
        }
        m.deadline = now + self.session_timeout;
        let mut changed = false;
        if let Some(t) = b.topics.filter(|t| *t != m.topics) {
            m.topics = t;
            changed = true;
        }
        if let Some(r) = b.regex.filter(|r| Some(r) != m.regex.as_ref()) {
            m.regex = Some(r).filter(|r| !r.is_empty());
            changed = true;
        }
        if changed {
            self.group_epoch += 1;
        }
        let (answer, assignment) = self.reconcile(&b.member_id, b.owned, now, view);
        Ok(BeatAnswer { assignment: Some(assignment).filter(|_| answer.assignment.is_some()), ..answer })
    }

    /// Brings the target up to the group epoch (and to the topics' current partitions), then
    /// moves member `id` one step towards its target. Returns the answer (its `assignment` set
    /// when the assignment changed) and the member's assignment.
    fn reconcile(&mut self, id: &str, owned: Option<Vec<Tp>>, now: Instant, view: &TopicView) -> (BeatAnswer, BTreeSet<Tp>) {
        let subscribed = self.subscribed(view);
        if subscribed != self.metadata {
            self.metadata = subscribed;
            self.group_epoch = self.group_epoch.max(self.assignment_epoch + 1);
        }
        if self.assignment_epoch < self.group_epoch {
            self.target = self.assign(view);
            self.assignment_epoch = self.group_epoch;
        }
        let target = self.target.get(id).cloned().unwrap_or_default();
        let held_by_others: BTreeSet<Tp> =
            self.members.values().filter(|o| o.id != id).flat_map(|o| o.assigned.iter().chain(o.revoking.iter()).cloned()).collect();
        let epoch = self.assignment_epoch;
        let m = self.members.get_mut(id).expect("the member exists");
        if let Some(owned) = owned {
            let owned: BTreeSet<Tp> = owned.into_iter().collect();
            m.revoking = owned.difference(&m.assigned).cloned().collect();
        }
        let keep: BTreeSet<Tp> = m.assigned.intersection(&target).cloned().collect();
        let revoke = m.assigned.len() > keep.len() || m.revoking.iter().any(|p| !target.contains(p));
        if m.assigned.len() > keep.len() {
            // Step 1: give up what is no longer ours (it stays "revoking" until reported gone).
            let gone: Vec<Tp> = m.assigned.difference(&keep).cloned().collect();
            m.revoking.extend(gone);
            m.assigned = keep;
            m.revoke_by.get_or_insert(now + m.rebalance_timeout);
        } else if !revoke {
            // Step 2: everything owned is in the target: take the epoch and what is free.
            let free: Vec<Tp> = target.difference(&m.assigned).filter(|p| !held_by_others.contains(*p)).cloned().collect();
            m.assigned.extend(free);
            if m.epoch != epoch {
                m.previous_epoch = m.epoch;
                m.epoch = epoch;
            }
        }
        if m.revoking.is_empty() {
            m.revoke_by = None;
        }
        let assignment = m.assigned.clone();
        let changed = m.sent.as_ref() != Some(&assignment);
        if changed {
            m.sent = Some(assignment.clone());
        }
        (BeatAnswer { member_id: id.to_string(), member_epoch: m.epoch, assignment: changed.then(|| assignment.clone()) }, assignment)
    }

    /// Every topic some member subscribes to, with its partition count.
    fn subscribed(&self, view: &TopicView) -> Vec<(String, i32)> {
        let mut topics = BTreeSet::new();
        let all = if self.members.values().any(|m| m.regex.is_some()) { (view.names)() } else { Vec::new() };
        for m in self.members.values() {
            topics.extend(member_topics(m, &all));
        }
        topics.into_iter().filter_map(|t| (view.partitions)(&t).map(|n| (t, n))).collect()
    }

    /// The target assignment of every member with the group's assignor, sticky where the
    /// current target allows it, rack-aware where racks are known.
    fn assign(&self, view: &TopicView) -> BTreeMap<String, BTreeSet<Tp>> {
        let partitions = view.partitions;
        let rack_of = |m: &str| self.members.get(m).and_then(|m| m.rack_id.clone());
        let all = if self.members.values().any(|m| m.regex.is_some()) { (view.names)() } else { Vec::new() };
        let subs: BTreeMap<&str, BTreeSet<String>> = self.members.values().map(|m| (m.id.as_str(), member_topics(m, &all))).collect();
        let mut out: BTreeMap<String, BTreeSet<Tp>> = self.members.keys().map(|k| (k.clone(), BTreeSet::new())).collect();
        let topics: BTreeSet<&String> = subs.values().flatten().collect();
        if self.assignor() == "range" {
            for t in topics {
                let Some(n) = partitions(t) else { continue };
                let who: Vec<&str> = subs.iter().filter(|(_, s)| s.contains(t)).map(|(m, _)| *m).collect();
                let (per, extra) = (n as usize / who.len(), n as usize % who.len());
                let quota = |i: usize| per + usize::from(i < extra);
                // Ranges in member order; with racks, a partition first goes to a member of its
                // rack still under its range's size, the rest fill the ranges in order.
                let mut left: Vec<i32> = Vec::new();
                for q in 0..n {
                    let rack = (view.rack)(t, q);
                    let same = who
                        .iter()
                        .enumerate()
                        .find(|(i, m)| rack.is_some() && rack_of(m) == rack && out[**m].iter().filter(|p| &p.0 == t).count() < quota(*i));
                    match same {
                        Some((_, m)) => {
                            out.get_mut(*m).expect("member").insert((t.clone(), q));
                        }
                        None => left.push(q),
                    }
                }
                let mut rest = left.into_iter();
                for (i, m) in who.iter().enumerate() {
                    while out[*m].iter().filter(|p| &p.0 == t).count() < quota(i) {
                        let Some(q) = rest.next() else { break };
                        out.get_mut(*m).expect("member").insert((t.clone(), q));
                    }
                }
            }
            return out;
        }
        // uniform: balanced counts; a partition stays with its current target owner while that
        // owner is under its share.
        let all_parts: Vec<Tp> =
            topics.iter().filter_map(|t| partitions(t).map(|n| (0..n).map(move |p| ((*t).clone(), p)))).flatten().collect();
        let quota = all_parts.len().div_ceil(self.members.len().max(1));
        let mut free = Vec::new();
        for p in &all_parts {
            let owner = self.target.iter().find(|(_, s)| s.contains(p)).map(|(m, _)| m.clone());
            match owner {
                Some(o) if subs.get(o.as_str()).is_some_and(|s| s.contains(&p.0)) && out[&o].len() < quota => {
                    out.get_mut(&o).expect("member").insert(p.clone());
                }
                _ => free.push(p.clone()),
            }
        }
        for p in free {
            // the least loaded member, one in the partition's rack first among those under their share
            let rack = (view.rack)(&p.0, p.1);
            let best = subs
                .iter()
                .filter(|(_, s)| s.contains(&p.0))
                .map(|(m, _)| *m)
                .min_by_key(|m| (!(rack.is_some() && rack_of(m) == rack && out[*m].len() < quota), out[*m].len(), *m));
            if let Some(m) = best {
                out.get_mut(m).expect("member").insert(p);
            }
        }
        out
    }

    /// Removes members whose session expired, or who did not revoke within their rebalance
    /// timeout; true when any was.
    pub fn expire(&mut self, now: Instant) -> bool {
        let gone: Vec<String> =
            self.members.values().filter(|m| m.deadline <= now || m.revoke_by.is_some_and(|t| t <= now)).map(|m| m.id.clone()).collect();
        for id in &gone {
            let why =
                if self.members[id].deadline <= now { "its session expired" } else { "it did not revoke within its rebalance timeout" };
            tracing::info!(group = %self.id, member = %id, "consumer group member removed: {why}");
            self.members.remove(id);
            self.target.remove(id);
        }
        if !gone.is_empty() {
            self.group_epoch += 1;
        }
        !gone.is_empty()
    }

    /// Whether `member_id` at `epoch` may commit offsets (Kafka's OffsetCommit v9 rule).
    pub fn check_commit(&self, member_id: &str, epoch: i32) -> Result<(), ResponseError> {
        match self.members.get(member_id) {
            None => Err(ResponseError::UnknownMemberId),
            Some(m) if epoch > m.epoch => Err(ResponseError::FencedMemberEpoch),
            Some(m) if epoch < m.epoch && epoch != m.previous_epoch => Err(ResponseError::StaleMemberEpoch),
            Some(_) => Ok(()),
        }
    }
}

/// The topics a member subscribes to, by name or by regex over `all`.
fn member_topics(m: &Member, all: &[String]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = m.topics.iter().cloned().collect();
    if let Some(re) = m.regex.as_ref().and_then(|r| regex::Regex::new(&format!("^(?:{r})$")).ok()) {
        out.extend(all.iter().filter(|t| re.is_match(t)).cloned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(id: &str, epoch: i32, topics: Option<&[&str]>, owned: Option<&BTreeSet<Tp>>) -> Beat {
        Beat {
            member_id: id.into(),
            member_epoch: epoch,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: 30_000,
            topics: topics.map(|t| t.iter().map(|s| s.to_string()).collect()),
            regex: None,
            assignor: None,
            owned: owned.map(|o| o.iter().cloned().collect()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
        }
    }

    fn parts(t: &str) -> Option<i32> {
        match t {
            "a" => Some(6),
            "b" => Some(2),
            _ => None,
        }
    }

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into(), "other".into()]
    }

    fn no_rack(_: &str, _: i32) -> Option<String> {
        None
    }

    fn view() -> TopicView<'static> {
        TopicView { partitions: &parts, names: &names, rack: &no_rack }
    }

    /// Drives members' heartbeats (each reporting what it was told it owns) until nothing
    /// changes; returns every member's (epoch, assignment).
    fn settle(g: &mut ConsumerGroup, ids: &[String], now: Instant) -> BTreeMap<String, (i32, BTreeSet<Tp>)> {
        let mut owned: BTreeMap<String, BTreeSet<Tp>> = ids.iter().map(|i| (i.clone(), g.members[i].assigned.clone())).collect();
        for _ in 0..10 {
            for id in ids {
                let epoch = g.members[id].epoch;
                let a = g.heartbeat(beat(id, epoch, None, Some(&owned[id])), now, &view()).unwrap();
                if let Some(a) = a.assignment {
                    owned.insert(id.clone(), a);
                }
                // never two owners of one partition
                let all: Vec<&Tp> = owned.values().flatten().collect();
                let distinct: BTreeSet<&Tp> = all.iter().copied().collect();
                assert_eq!(all.len(), distinct.len(), "a partition owned twice: {owned:?}");
            }
        }
        ids.iter().map(|i| (i.clone(), (g.members[i].epoch, owned[i].clone()))).collect()
    }

    #[test]
    fn members_converge_without_a_partition_owned_twice() {
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", SESSION_TIMEOUT);
        let first = g.heartbeat(beat("", 0, Some(&["a", "b"]), None), now, &view()).unwrap();
        assert_eq!(first.member_epoch, 1);
        assert_eq!(first.assignment.as_ref().map(|a| a.len()), Some(8), "alone: every partition");
        let m1 = first.member_id.clone();
        let second = g.heartbeat(beat("m2", 0, Some(&["a", "b"]), None), now, &view()).unwrap();
        assert_eq!(second.assignment, Some(BTreeSet::new()), "nothing free until m1 revokes");
        let done = settle(&mut g, &[m1.clone(), "m2".into()], now);
        assert_eq!(done[&m1].1.len() + done["m2"].1.len(), 8);
        assert_eq!(done[&m1].1.len(), 4);
        assert_eq!(done[&m1].0, g.assignment_epoch);
        assert_eq!(done["m2"].0, g.assignment_epoch);
        assert_eq!(g.state(), "Stable");
        // m2 leaves: m1 takes everything back
        g.heartbeat(beat("m2", -1, None, None), now, &view()).unwrap();
        let done = settle(&mut g, std::slice::from_ref(&m1), now);
        assert_eq!(done[&m1].1.len(), 8);
    }

    #[test]
    fn epochs_are_checked_and_sessions_expire() {
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", SESSION_TIMEOUT);
        let a = g.heartbeat(beat("m1", 0, Some(&["a"]), None), now, &view()).unwrap();
        assert!(matches!(
            g.heartbeat(beat("m1", a.member_epoch + 5, None, None), now, &view()),
            Err((ResponseError::FencedMemberEpoch, _))
        ));
        assert!(matches!(g.heartbeat(beat("nobody", 3, None, None), now, &view()), Err((ResponseError::UnknownMemberId, _))));
        assert_eq!(g.check_commit("m1", a.member_epoch), Ok(()));
        assert_eq!(g.check_commit("m1", a.member_epoch + 1), Err(ResponseError::FencedMemberEpoch));
        assert!(!g.expire(now + Duration::from_secs(10)));
        assert!(g.expire(now + SESSION_TIMEOUT + Duration::from_secs(1)));
        assert!(g.is_empty());
        assert!(matches!(g.heartbeat(beat("m9", 0, None, None), now, &view()), Err((ResponseError::InvalidRequest, _))));
    }

    #[test]
    fn range_regex_and_new_partitions() {
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", SESSION_TIMEOUT);
        let mut b1 = beat("m1", 0, Some(&[]), None);
        b1.regex = Some("a|b".into());
        b1.assignor = Some("range".into());
        let a = g.heartbeat(b1, now, &view()).unwrap();
        assert_eq!(a.assignment.unwrap().len(), 8, "the regex matched a and b");
        let mut bad = beat("m2", 0, Some(&["a"]), None);
        bad.assignor = Some("sticky".into());
        assert!(matches!(g.heartbeat(bad, now, &view()), Err((ResponseError::UnsupportedAssignor, _))));
        g.heartbeat(beat("m2", 0, Some(&["a"]), None), now, &view()).unwrap();
        let done = settle(&mut g, &["m1".into(), "m2".into()], now);
        // range: a's 6 partitions split 3/3 in member order, b only to m1
        assert_eq!(done["m1"].1.iter().filter(|p| p.0 == "a").count(), 3);
        assert_eq!(done["m1"].1.iter().filter(|p| p.0 == "b").count(), 2);
        assert_eq!(done["m2"].1, (0..3).map(|p| ("a".to_string(), p + 3)).collect());
    }

    #[test]
    fn a_member_that_does_not_revoke_in_time_is_fenced() {
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", SESSION_TIMEOUT);
        let m1 = g.heartbeat(beat("m1", 0, Some(&["a"]), None), now, &view()).unwrap();
        g.heartbeat(beat("m2", 0, Some(&["a"]), None), now, &view()).unwrap();
        // m1 is asked to give up half of its partitions (rebalance timeout 30 s) and never does
        let all: BTreeSet<Tp> = m1.assignment.unwrap();
        let asked = g.heartbeat(beat("m1", m1.member_epoch, None, Some(&all)), now, &view()).unwrap();
        assert_eq!(asked.assignment.map(|a| a.len()), Some(3));
        assert!(!g.expire(now + Duration::from_secs(29)), "within the rebalance timeout");
        // (its heartbeats keep its session, not its revocation deadline)
        g.heartbeat(beat("m1", asked.member_epoch, None, Some(&all)), now + Duration::from_secs(20), &view()).unwrap();
        assert!(g.expire(now + Duration::from_secs(31)), "fenced past it");
        assert!(!g.members.contains_key("m1"));
        let done = settle(&mut g, &["m2".into()], now + Duration::from_secs(31));
        assert_eq!(done["m2"].1.len(), 6, "m2 gets everything");
    }

    #[test]
    fn a_static_member_leaving_with_minus_two_keeps_its_partitions_for_its_next_incarnation() {
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", SESSION_TIMEOUT);
        let mut b = beat("s1", 0, Some(&["a"]), None);
        b.instance_id = Some("host-1".into());
        g.heartbeat(b, now, &view()).unwrap();
        g.heartbeat(beat("m2", 0, Some(&["a"]), None), now, &view()).unwrap();
        let done = settle(&mut g, &["s1".into(), "m2".into()], now);
        let (epoch, mine) = done["s1"].clone();
        assert_eq!(mine.len(), 3);
        let group_epoch = g.group_epoch;
        let left = g.heartbeat(beat("s1", -2, None, None), now, &view()).unwrap();
        assert_eq!(left.member_epoch, -2);
        assert_eq!(g.group_epoch, group_epoch, "no rebalance");
        assert!(matches!(g.heartbeat(beat("s1", epoch, None, None), now, &view()), Err((ResponseError::UnknownMemberId, _))));
        // m2 does not get s1's partitions meanwhile
        let m2 = settle(&mut g, &["m2".into()], now);
        assert_eq!(m2["m2"].1.len(), 3);
        // the next incarnation (a new member id) takes the place, partitions and epoch
        let mut again = beat("s1-new", 0, Some(&["a"]), None);
        again.instance_id = Some("host-1".into());
        let back = g.heartbeat(again, now + Duration::from_secs(10), &view()).unwrap();
        assert_eq!((back.member_epoch, back.assignment), (epoch, Some(mine)));
        assert_eq!(g.group_epoch, group_epoch);
        // one that never comes back is removed after the session timeout
        g.heartbeat(beat("s1-new", -2, None, None), now, &view()).unwrap();
        assert!(g.expire(now + SESSION_TIMEOUT + Duration::from_secs(1)));
        assert!(!g.members.contains_key("s1-new"));
    }

    #[test]
    fn assignors_prefer_the_partition_leaders_rack() {
        fn rack(_: &str, p: i32) -> Option<String> {
            Some(if p % 2 == 0 { "east" } else { "west" }.to_string())
        }
        let view = TopicView { partitions: &parts, names: &names, rack: &rack };
        for assignor in ["uniform", "range"] {
            let now = Instant::now();
            let mut g = ConsumerGroup::new("g", SESSION_TIMEOUT);
            for (id, r) in [("m1", "west"), ("m2", "east")] {
                let mut b = beat(id, 0, Some(&["a"]), None);
                b.rack_id = Some(r.into());
                b.assignor = Some(assignor.into());
                g.heartbeat(b, now, &view).unwrap();
            }
            // (a fresh assignment: stickiness to the current target comes first)
            g.target.clear();
            let target = g.assign(&view);
            assert_eq!(target["m1"], [1, 3, 5].iter().map(|p| ("a".to_string(), *p)).collect(), "{assignor}: west gets the odd ones");
            assert_eq!(target["m2"], [0, 2, 4].iter().map(|p| ("a".to_string(), *p)).collect(), "{assignor}");
        }
    }
}
