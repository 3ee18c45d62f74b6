//! DescribeGroups: state, protocol and members (with metadata and assignment) of each group;
//! an unknown group is reported as Dead, and a KIP-848 consumer group as GROUP_ID_NOT_FOUND
//! (ConsumerGroupDescribe describes it), as Kafka does.

use std::sync::Arc;

use kafka_protocol::ResponseError;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use crate::broker::Broker;
use crate::handler::s;
use crate::security::acl::{op, Access};

pub fn handle(b: Arc<Broker>, v: i16, req: DescribeGroupsRequest, access: &Access) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .iter()
        .map(|id| {
            let mut r = DescribedGroup::default().with_group_id(id.clone());
            if !access.group(op::DESCRIBE, id) {
                return r.with_error_code(ResponseError::GroupAuthorizationFailed.code());
            }
            if !b.cluster.coordinates(id) {
                return r.with_error_code(ResponseError::NotCoordinator.code());
            }
            if b.groups.with_consumer_group(id, false, |_| ()).is_some() {
                r.error_code = ResponseError::GroupIdNotFound.code();
                if v >= 6 {
                    r.error_message = Some(s(format!("Group {} is not a classic group.", &**id)));
                }
                return r;
            }
            match b.groups.summary(id) {
                None => r.group_state = s("Dead"),
                Some(g) => {
                    r.group_state = s(g.state.name());
                    r.protocol_type = s(g.protocol_type);
                    r.protocol_data = s(g.protocol);
                    r.members = g
                        .members
                        .into_iter()
                        .map(|g| {
                            let mut m = DescribedGroupMember::default()
                                .with_member_id(s(g.member_id))
                                .with_client_id(s(g.client_id))
                                .with_client_host(s(g.client_host))
                                .with_member_metadata(g.metadata)
                                .with_member_assignment(g.assignment);
                            if v >= 4 {
                                m.group_instance_id = g.instance_id.map(s);
                            }
                            m
                        })
                        .collect();
                }
            }
            r
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
