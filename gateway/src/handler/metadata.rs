//! Metadata: every live gateway of the cluster as a broker; each partition led by its owner, with
//! the owner's writer epoch as leader epoch (LEADER_NOT_AVAILABLE while nobody owns it); unknown
//! topics are auto-created when configured and allowed by the request.
//!
//! Bounds: a topic named twice is answered once, and one request auto-creates at most
//! [`MAX_AUTO_CREATE_PER_REQUEST`] topics (the others get the retriable
//! UNKNOWN_TOPIC_OR_PARTITION: a client asking again creates the next ones).

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;

use super::s;
use crate::broker::{topics::valid_topic_name, Broker, Topic};
use crate::security::acl::{op, Access};

/// Topics one Metadata request may create.
pub const MAX_AUTO_CREATE_PER_REQUEST: usize = 100;

fn topic_response(b: &Broker, v: i16, t: &Topic) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .map(|p| {
            let mut r = MetadataResponsePartition::default().with_partition_index(p.index);
            match b.cluster.owner(&t.meta.name, p.index) {
                Some(owner) => {
                    let node = BrokerId(owner);
                    r = r.with_leader_id(node).with_replica_nodes(vec![node]).with_isr_nodes(vec![node]);
                }
                None => r = r.with_leader_id(BrokerId(-1)).with_error_code(ResponseError::LeaderNotAvailable.code()),
            }
            if v >= 7 {
                r.leader_epoch = b.leader_epoch(p);
            }
            r
        })
        .collect();
    let mut r = MetadataResponseTopic::default().with_name(Some(TopicName(s(t.meta.name.clone())))).with_partitions(partitions);
    if v >= 10 {
        r.topic_id = t.meta.id;
    }
    r
}

fn error_topic(v: i16, name: Option<String>, id: uuid::Uuid, e: ResponseError) -> MetadataResponseTopic {
    let mut r = MetadataResponseTopic::default().with_error_code(e.code()).with_name(name.map(|n| TopicName(s(n))));
    if v >= 10 {
        r.topic_id = id;
    }
    r
}

pub async fn handle(b: Arc<Broker>, v: i16, req: MetadataRequest, listener: &str, access: Access) -> MetadataResponse {
    let advertised = b.cluster.advertised_on(listener);
    let brokers: Vec<MetadataResponseBroker> = advertised
        .values()
        .map(|m| {
            let mut r = MetadataResponseBroker::default().with_node_id(BrokerId(m.node_id)).with_host(s(m.host.clone())).with_port(m.port);
            if v >= 1 {
                r.rack = m.rack.clone().map(s);
            }
            r
        })
        .collect();
    let controller = advertised.keys().next().copied().unwrap_or(b.cfg.node_id);
    let auto_create = b.cfg.auto_create_topics && (v < 4 || req.allow_auto_topic_creation);
    // Auto-creation needs CREATE on the cluster or on the topic, as CreateTopics does.
    let may_create = |n: &str| access.cluster(op::CREATE) || access.topic(op::CREATE, n);
    // v0: an empty list means all topics; later versions use null for that.
    let requested = match req.topics {
        None => None,
        Some(t) if t.is_empty() && v == 0 => None,
        Some(t) => Some(t),
    };
    let topics = match requested {
        // every topic: those the principal may describe
        None => b.topics().iter().filter(|t| access.topic(op::DESCRIBE, &t.meta.name)).map(|t| topic_response(&b, v, t)).collect(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            let mut seen = HashSet::new();
            let mut created = 0;
            for rt in list {
                if !seen.insert((rt.name.clone(), rt.topic_id)) {
                    continue;
                }
                let name = rt.name.map(|n| n.0.to_string());
                let found = match &name {
                    Some(n) => b.topic(n),
                    None => b.topic_by_id(rt.topic_id),
                };
                let r = match (found, name) {
                    (Some(t), _) if !access.topic(op::DESCRIBE, &t.meta.name) => {
                        error_topic(v, Some(t.meta.name.clone()), rt.topic_id, ResponseError::TopicAuthorizationFailed)
                    }
                    (Some(t), _) => topic_response(&b, v, &t),
                    (None, Some(n)) if !access.topic(op::DESCRIBE, &n) => {
                        error_topic(v, Some(n), rt.topic_id, ResponseError::TopicAuthorizationFailed)
                    }
                    (None, Some(n)) if !valid_topic_name(&n) => error_topic(v, Some(n), rt.topic_id, ResponseError::InvalidTopicException),
                    (None, Some(n)) if auto_create && created < MAX_AUTO_CREATE_PER_REQUEST && may_create(&n) => {
                        created += 1;
                        match b.ensure_topic(&n).await {
                            Ok(t) => topic_response(&b, v, &t),
                            Err((e, _)) => error_topic(v, Some(n), rt.topic_id, e),
                        }
                    }
                    (None, n) => error_topic(v, n, rt.topic_id, ResponseError::UnknownTopicOrPartition),
                };
                out.push(r);
            }
            out
        }
    };
    let mut resp = MetadataResponse::default().with_brokers(brokers).with_topics(topics);
    if v >= 1 {
        resp.controller_id = BrokerId(controller);
    }
    if v >= 2 {
        resp.cluster_id = Some(s(b.cfg.cluster_id.clone()));
    }
    resp
}
