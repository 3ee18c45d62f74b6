//! DescribeGroups: state, protocol and members (with metadata and assignment) of each group;
//! an unknown group is reported as Dead, as Kafka does.

use std::sync::Arc;

use kafka_protocol::ResponseError;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use crate::broker::Broker;
use crate::handler::s;

pub fn handle(b: Arc<Broker>, v: i16, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .iter()
        .map(|id| {
            let mut r = DescribedGroup::default().with_group_id(id.clone());
            if !b.cluster.coordinates(id) {
                return r.with_error_code(ResponseError::NotCoordinator.code());
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
                        .map(|(mid, inst, client, host, meta, assign)| {
                            let mut m = DescribedGroupMember::default()
                                .with_member_id(s(mid))
                                .with_client_id(s(client))
                                .with_client_host(s(host))
                                .with_member_metadata(meta)
                                .with_member_assignment(assign);
                            if v >= 4 {
                                m.group_instance_id = inst.map(s);
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
