//! ListGroups: every group with members or committed offsets, filtered by state (v4+) and type
//! (v5+, only "classic" groups exist here).

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use crate::broker::Broker;
use crate::handler::s;

pub fn handle(b: Arc<Broker>, v: i16, req: ListGroupsRequest) -> ListGroupsResponse {
    let groups = b
        .groups
        .group_ids()
        .into_iter()
        .filter(|id| b.cluster.coordinates(id))
        .filter_map(|id| b.groups.summary(&id))
        .filter(|g| req.states_filter.is_empty() || req.states_filter.iter().any(|f| f.eq_ignore_ascii_case(g.state.name())))
        .filter(|_| req.types_filter.is_empty() || req.types_filter.iter().any(|t| t.eq_ignore_ascii_case("classic")))
        .map(|g| {
            let mut r = ListedGroup::default().with_group_id(GroupId(s(g.id))).with_protocol_type(s(g.protocol_type));
            if v >= 4 {
                r.group_state = s(g.state.name());
            }
            if v >= 5 {
                r.group_type = s("classic");
            }
            r
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
