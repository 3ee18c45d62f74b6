//! ConsumerGroupDescribe (KIP-848): a consumer group's state, epochs, assignor and members, each
//! with its subscription, current assignment and target assignment. A classic group answers
//! GROUP_ID_NOT_FOUND ("not a consumer group"), as Kafka does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kafka_protocol::messages::consumer_group_describe_response::{Assignment, DescribedGroup, Member, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::group::consumer::Tp;
use crate::handler::s;
use crate::security::acl::{op, Access};

fn assignment(b: &Broker, set: &BTreeSet<Tp>) -> Assignment {
    let mut per: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in set {
        per.entry(t).or_default().push(*p);
    }
    let tps = per
        .into_iter()
        .filter_map(|(t, parts)| {
            let topic = b.topic(t)?;
            Some(TopicPartitions::default().with_topic_id(topic.meta.id).with_topic_name(TopicName(s(t))).with_partitions(parts))
        })
        .collect();
    Assignment::default().with_topic_partitions(tps)
}

pub fn handle(b: Arc<Broker>, req: ConsumerGroupDescribeRequest, access: &Access) -> ConsumerGroupDescribeResponse {
    let groups = req
        .group_ids
        .iter()
        .map(|id| {
            let mut r = DescribedGroup::default().with_group_id(id.clone()).with_authorized_operations(i32::MIN);
            if !access.group(op::DESCRIBE, id) {
                return r.with_error_code(ResponseError::GroupAuthorizationFailed.code());
            }
            if !b.cluster.coordinates(id) {
                return r.with_error_code(ResponseError::NotCoordinator.code());
            }
            let described = b.groups.with_consumer_group(id, false, |g| {
                r.group_state = s(g.state());
                r.group_epoch = g.group_epoch;
                r.assignment_epoch = g.assignment_epoch;
                r.assignor_name = s(g.assignor());
                r.members = g
                    .members
                    .values()
                    .map(|m| {
                        Member::default()
                            .with_member_id(s(m.id.clone()))
                            .with_instance_id(m.instance_id.clone().map(s))
                            .with_rack_id(m.rack_id.clone().map(s))
                            .with_member_epoch(m.epoch)
                            .with_client_id(s(m.client_id.clone()))
                            .with_client_host(s(m.client_host.clone()))
                            .with_subscribed_topic_names(m.topics.iter().map(|t| TopicName(s(t.clone()))).collect())
                            .with_subscribed_topic_regex(m.regex.clone().map(s))
                            .with_assignment(assignment(&b, &m.assigned))
                            .with_target_assignment(assignment(&b, g.target.get(&m.id).unwrap_or(&BTreeSet::new())))
                            .with_member_type(1)
                    })
                    .collect();
            });
            if described.is_none() {
                let classic = b.groups.summary(id).is_some();
                r.error_code = ResponseError::GroupIdNotFound.code();
                r.error_message = Some(s(if classic {
                    format!("Group {} is not a consumer group.", &**id)
                } else {
                    format!("Group {} not found.", &**id)
                }));
            }
            r
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
