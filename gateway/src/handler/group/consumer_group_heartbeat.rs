//! ConsumerGroupHeartbeat (KIP-848): a member joins (epoch 0), heartbeats (reporting the
//! partitions it owns) and leaves (epoch -1 / -2); the coordinator answers its epoch and, when
//! it changed, its assignment by topic id ([`crate::group::consumer`]).

use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::group::consumer::{Beat, TopicView};
use crate::handler::s;

fn error(e: ResponseError, msg: String) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default().with_error_code(e.code()).with_error_message(Some(s(msg))).with_member_epoch(-1)
}

pub fn handle(
    b: Arc<Broker>,
    client_id: String,
    client_host: String,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let group = req.group_id.0.to_string();
    if group.is_empty() {
        return error(ResponseError::InvalidGroupId, "the group id is empty".into());
    }
    if !b.cluster.coordinates(&group) {
        return error(ResponseError::NotCoordinator, format!("this gateway does not coordinate {group}"));
    }
    if b.groups.is_active_classic_group(&group) {
        return error(ResponseError::InconsistentGroupProtocol, format!("{group} is a classic group with members"));
    }
    let topics = b.topics();
    let by_id = |id: &uuid::Uuid| topics.iter().find(|t| t.meta.id == *id).map(|t| t.meta.name.clone());
    let owned = req.topic_partitions.as_ref().map(|tps| {
        tps.iter()
            .filter_map(|tp| by_id(&tp.topic_id).map(|name| tp.partitions.iter().map(move |&p| (name.clone(), p))))
            .flatten()
            .collect()
    });
    let beat = Beat {
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|i| i.to_string()),
        rack_id: req.rack_id.as_ref().map(|r| r.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        topics: req.subscribed_topic_names.as_ref().map(|t| t.iter().map(|n| n.0.to_string()).collect()),
        regex: req.subscribed_topic_regex.as_ref().map(|r| r.to_string()),
        assignor: req.server_assignor.as_ref().map(|a| a.to_string()),
        owned,
        client_id,
        client_host,
    };
    let partitions = |name: &str| topics.iter().find(|t| t.meta.name == name).map(|t| t.meta.partitions);
    let names = || topics.iter().map(|t| t.meta.name.clone()).filter(|n| !n.starts_with("__")).collect();
    // the rack of the gateway leading a partition (rack-aware assignment)
    let gateways = b.cluster.advertised();
    let rack = |t: &str, p: i32| b.cluster.owner(t, p).and_then(|n| gateways.get(&n)).and_then(|m| m.rack.clone());
    let view = TopicView { partitions: &partitions, names: &names, rack: &rack };
    let create = req.member_epoch == 0;
    let answer = b.groups.with_consumer_group(&group, create, |g| g.heartbeat(beat, Instant::now(), &view));
    match answer {
        None if create => error(ResponseError::GroupMaxSizeReached, "this coordinator holds its most groups".into()),
        None => error(ResponseError::UnknownMemberId, format!("no consumer group {group}")),
        Some(Err((e, msg))) => error(e, msg),
        Some(Ok(a)) => {
            let assignment = a.assignment.map(|set| {
                let mut per: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
                for (t, p) in set {
                    per.entry(t).or_default().push(p);
                }
                let topic_partitions = per
                    .into_iter()
                    .filter_map(|(t, parts)| {
                        let id = topics.iter().find(|x| x.meta.name == t)?.meta.id;
                        Some(TopicPartitions::default().with_topic_id(id).with_partitions(parts))
                    })
                    .collect();
                Assignment::default().with_topic_partitions(topic_partitions)
            });
            ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(s(a.member_id)))
                .with_member_epoch(a.member_epoch)
                .with_heartbeat_interval_ms(b.cfg.group_consumer_heartbeat_interval_ms as i32)
                .with_assignment(assignment)
        }
    }
}
