//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;

pub fn handle(b: Arc<Broker>, req: HeartbeatRequest) -> HeartbeatResponse {
    if !b.cluster.coordinates(&req.group_id.0) {
        return HeartbeatResponse::default().with_error_code(ResponseError::NotCoordinator.code());
    }
    let instance = req.group_instance_id.as_ref().map(|i| i.to_string());
    let e = b
        .groups
        .with_group(&req.group_id.0, false, |g| g.heartbeat(&req.member_id, instance.as_deref(), req.generation_id, Instant::now()))
        .unwrap_or(Some(ResponseError::UnknownMemberId));
    HeartbeatResponse::default().with_error_code(e.map(|e| e.code()).unwrap_or(0))
}
