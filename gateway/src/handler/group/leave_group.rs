//! LeaveGroup: one member (before v3) or a batch of members, by member id or instance id.

use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;

pub fn handle(b: Arc<Broker>, v: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
    if !b.cluster.coordinates(&req.group_id.0) {
        return LeaveGroupResponse::default().with_error_code(ResponseError::NotCoordinator.code());
    }
    let delay = b.groups.initial_delay;
    if v < 3 {
        let e = b
            .groups
            .with_group(&req.group_id.0, false, |g| g.leave(&req.member_id, None, Instant::now(), delay))
            .unwrap_or(Some(ResponseError::UnknownMemberId));
        return LeaveGroupResponse::default().with_error_code(e.map(|e| e.code()).unwrap_or(0));
    }
    let mut top = None;
    let members = req
        .members
        .iter()
        .map(|m| {
            let inst = m.group_instance_id.as_ref().map(|i| i.to_string());
            let e = b
                .groups
                .with_group(&req.group_id.0, false, |g| g.leave(&m.member_id, inst.as_deref(), Instant::now(), delay))
                .unwrap_or_else(|| {
                    top = Some(ResponseError::UnknownMemberId);
                    Some(ResponseError::UnknownMemberId)
                });
            MemberResponse::default()
                .with_member_id(m.member_id.clone())
                .with_group_instance_id(m.group_instance_id.clone())
                .with_error_code(e.map(|e| e.code()).unwrap_or(0))
        })
        .collect();
    LeaveGroupResponse::default().with_error_code(top.map(|e| e.code()).unwrap_or(0)).with_members(members)
}
