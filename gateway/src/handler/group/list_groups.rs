//! ListGroups: every group with members or committed offsets, filtered by state (v4+) and type
//! (v5+: "classic" or "consumer", KIP-848's).

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use crate::broker::Broker;
use crate::handler::s;
use crate::security::acl::{op, Access};

pub fn handle(b: Arc<Broker>, v: i16, req: ListGroupsRequest, access: &Access) -> ListGroupsResponse {
    // DESCRIBE on the cluster lists every group; otherwise the groups the principal may describe.
    let all = access.cluster(op::DESCRIBE);
    let visible = |id: &str| all || access.group(op::DESCRIBE, id);
    let wanted_type = |t: &str| req.types_filter.is_empty() || req.types_filter.iter().any(|f| f.eq_ignore_ascii_case(t));
    let wanted_state = |st: &str| req.states_filter.is_empty() || req.states_filter.iter().any(|f| f.eq_ignore_ascii_case(st));
    let listed = |id: String, protocol_type: String, state: &str, kind: &str| {
        let mut r = ListedGroup::default().with_group_id(GroupId(s(id))).with_protocol_type(s(protocol_type));
        if v >= 4 {
            r.group_state = s(state);
        }
        if v >= 5 {
            r.group_type = s(kind);
        }
        r
    };
    let consumer = b.groups.consumer_groups();
    let mut groups: Vec<ListedGroup> = consumer
        .iter()
        .filter(|(id, _)| b.cluster.coordinates(id) && visible(id))
        .filter(|(_, st)| wanted_type("consumer") && wanted_state(st))
        .map(|(id, st)| listed(id.clone(), "consumer".into(), st, "consumer"))
        .collect();
    groups.extend(
        b.groups
            .group_ids()
            .into_iter()
            .filter(|id| b.cluster.coordinates(id) && visible(id) && !consumer.iter().any(|(c, _)| c == id))
            .filter_map(|id| b.groups.summary(&id))
            .filter(|g| wanted_state(g.state.name()) && wanted_type("classic"))
            .map(|g| listed(g.id, g.protocol_type, g.state.name(), "classic")),
    );
    ListGroupsResponse::default().with_groups(groups)
}
