//! OffsetFetch: committed offsets of one group (before v8) or several (v8+), for the listed
//! partitions or, with a null topic list, for everything the group committed.
//!
//! Bounds (v8+): a group named twice is answered once; at most [`MAX_GROUPS_PER_REQUEST`]
//! groups are looked up (each costs a MetaStore read), the rest get INVALID_REQUEST.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::ResponseError;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use crate::broker::Broker;
use crate::handler::s;
use crate::security::acl::{op, Access};

/// Groups one OffsetFetch may ask for (an admin client asks for all the groups of one
/// coordinator at once: thousands are legitimate, a million are not).
pub const MAX_GROUPS_PER_REQUEST: usize = 10_000;

/// (topic, [(partition, offset, leader epoch, metadata, unstable)])
type Fetched = Vec<(String, Vec<(i32, i64, i32, String, bool)>)>;

/// The committed offsets; with `require_stable` (KIP-447), a partition with an offset pending
/// in a transaction is unstable (UNSTABLE_OFFSET_COMMIT, offset -1) until the transaction ends.
fn fetch(b: &Broker, group: &str, topics: Option<Vec<(String, Vec<i32>)>>, require_stable: bool) -> Fetched {
    let mut out = fetch_committed(b, group, topics);
    if require_stable {
        for (t, ps) in &mut out {
            for p in ps.iter_mut() {
                if b.groups.txn_offsets.is_pending(group, t, p.0) {
                    *p = (p.0, -1, -1, String::new(), true);
                }
            }
        }
    }
    out
}

fn fetch_committed(b: &Broker, group: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> Fetched {
    let offsets = &b.groups.offsets;
    match topics {
        // A topic or partition named twice is answered once (Kafka keys the request by partition).
        Some(list) => dedupe(list)
            .into_iter()
            .map(|(t, parts)| {
                let ps = parts
                    .into_iter()
                    .map(|p| match offsets.get(group, &t, p) {
                        Some(c) => (p, c.offset, c.leader_epoch, c.metadata, false),
                        None => (p, -1, -1, String::new(), false),
                    })
                    .collect();
                (t, ps)
            })
            .collect(),
        None => {
            let mut out: Fetched = Vec::new();
            for (t, p, c) in offsets.group(group) {
                match out.iter_mut().find(|(n, _)| *n == t) {
                    Some((_, v)) => v.push((p, c.offset, c.leader_epoch, c.metadata, false)),
                    None => out.push((t, vec![(p, c.offset, c.leader_epoch, c.metadata, false)])),
                }
            }
            out
        }
    }
}

fn dedupe(list: Vec<(String, Vec<i32>)>) -> Vec<(String, Vec<i32>)> {
    let mut out: Vec<(String, Vec<i32>)> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut seen: HashSet<(usize, i32)> = HashSet::new();
    for (t, parts) in list {
        let i = *at.entry(t.clone()).or_insert_with(|| {
            out.push((t, Vec::new()));
            out.len() - 1
        });
        out[i].1.extend(parts.into_iter().filter(|p| seen.insert((i, *p))));
    }
    out
}

pub async fn handle(b: Arc<Broker>, v: i16, mut req: OffsetFetchRequest, access: Access) -> OffsetFetchResponse {
    let mut seen = HashSet::new();
    req.groups.retain(|g| seen.insert(g.group_id.0.clone()));
    let refused: Vec<_> = if req.groups.len() > MAX_GROUPS_PER_REQUEST { req.groups.split_off(MAX_GROUPS_PER_REQUEST) } else { Vec::new() };
    // The group may have moved here moments ago: read its commits from the MetaStore first.
    let groups: Vec<&str> = if v >= 8 { req.groups.iter().map(|g| &*g.group_id.0).collect() } else { vec![&*req.group_id.0] };
    for g in groups {
        if b.cluster.coordinates(g) {
            if let Err(e) = b.groups.offsets.refresh_group(g).await {
                tracing::warn!(group = g, error = %e, "reading committed offsets; answering from memory");
            }
        }
    }
    if v >= 8 {
        let groups = req
            .groups
            .iter()
            .map(|g| {
                if !access.group(op::DESCRIBE, &g.group_id.0) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(ResponseError::GroupAuthorizationFailed.code());
                }
                if !b.cluster.coordinates(&g.group_id.0) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(ResponseError::NotCoordinator.code());
                }
                let topics = g.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
                let mut fetched = fetch(&b, &g.group_id.0, topics, req.require_stable);
                fetched.retain(|(t, _)| access.topic(op::DESCRIBE, t));
                OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone()).with_topics(
                    fetched
                        .into_iter()
                        .map(|(t, ps)| {
                            OffsetFetchResponseTopics::default().with_name(TopicName(s(t))).with_partitions(
                                ps.into_iter()
                                    .map(|(p, o, e, m, unstable)| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(o)
                                            .with_committed_leader_epoch(e)
                                            .with_metadata(Some(s(m)))
                                            .with_error_code(if unstable { ResponseError::UnstableOffsetCommit.code() } else { 0 })
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                )
            })
            .chain(refused.into_iter().map(|g| {
                OffsetFetchResponseGroup::default().with_group_id(g.group_id).with_error_code(ResponseError::InvalidRequest.code())
            }))
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    if !access.group(op::DESCRIBE, &req.group_id.0) {
        return OffsetFetchResponse::default().with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    if !b.cluster.coordinates(&req.group_id.0) {
        // (v0-1 have no group-level error code: a per-partition one tells the client.)
        let topics = req.topics.iter().flatten().map(|t| {
            OffsetFetchResponseTopic::default().with_name(t.name.clone()).with_partitions(
                t.partition_indexes
                    .iter()
                    .map(|p| {
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(-1)
                            .with_error_code(ResponseError::NotCoordinator.code())
                    })
                    .collect(),
            )
        });
        return OffsetFetchResponse::default().with_error_code(ResponseError::NotCoordinator.code()).with_topics(topics.collect());
    }
    let topics = req.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
    let mut fetched = fetch(&b, &req.group_id.0, topics, v >= 7 && req.require_stable);
    fetched.retain(|(t, _)| access.topic(op::DESCRIBE, t));
    OffsetFetchResponse::default().with_topics(
        fetched
            .into_iter()
            .map(|(t, ps)| {
                OffsetFetchResponseTopic::default().with_name(TopicName(s(t))).with_partitions(
                    ps.into_iter()
                        .map(|(p, o, e, m, unstable)| {
                            let mut r = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(o)
                                .with_metadata(Some(s(m)))
                                .with_error_code(if unstable { ResponseError::UnstableOffsetCommit.code() } else { 0 });
                            if v >= 5 {
                                r.committed_leader_epoch = e;
                            }
                            r
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}
