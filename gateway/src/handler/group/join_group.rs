//! JoinGroup: the classic protocol's join phase (member-id-required round from v4, static
//! membership from v5); waits until the group's join phase completes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::group::state::{JoinArgs, JoinResult, Outcome};
use crate::group::{MAX_SESSION_TIMEOUT, MIN_SESSION_TIMEOUT};
use crate::handler::s;

pub async fn handle(b: Arc<Broker>, v: i16, client_id: String, client_host: String, req: JoinGroupRequest) -> JoinGroupResponse {
    let group_id = req.group_id.0.to_string();
    let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
    // Kafka takes any rebalance timeout; here it bounds how long a join may hold its request,
    // so it is kept within the session timeout bounds.
    let rebalance = if v >= 1 { Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64) } else { session }
        .clamp(MIN_SESSION_TIMEOUT, MAX_SESSION_TIMEOUT);
    let result = if group_id.is_empty() {
        JoinResult::error(ResponseError::InvalidGroupId, req.member_id.to_string())
    } else if !b.cluster.coordinates(&group_id) {
        JoinResult::error(ResponseError::NotCoordinator, req.member_id.to_string())
    } else if b.groups.is_active_consumer_group(&group_id) {
        JoinResult::error(ResponseError::InconsistentGroupProtocol, req.member_id.to_string())
    } else if session < MIN_SESSION_TIMEOUT || session > MAX_SESSION_TIMEOUT {
        JoinResult::error(ResponseError::InvalidSessionTimeout, req.member_id.to_string())
    } else {
        let args = JoinArgs {
            version: v,
            member_id: req.member_id.to_string(),
            instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
            client_id,
            client_host,
            session_timeout: session,
            rebalance_timeout: rebalance,
            protocol_type: req.protocol_type.to_string(),
            protocols: req.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
            max_size: b.cfg.group_max_size,
        };
        let create = args.member_id.is_empty() || args.instance_id.is_some();
        if create && b.groups.full(&group_id) {
            // Retriable: clients back off and join once groups have emptied (gateway_groups).
            tracing::debug!(group = %group_id, max_groups = b.cfg.max_groups, "refusing a new group: max_groups reached");
            return response(v, JoinResult::error(ResponseError::CoordinatorNotAvailable, req.member_id.to_string()));
        }
        let outcome = b.groups.with_group(&group_id, create, |g| g.join(args, Instant::now(), b.groups.initial_delay));
        match outcome {
            None => JoinResult::error(ResponseError::UnknownMemberId, req.member_id.to_string()),
            Some(Outcome::Now(r)) => r,
            Some(Outcome::Wait(rx)) => match tokio::time::timeout(rebalance + Duration::from_secs(5), rx).await {
                Ok(Ok(r)) => r,
                _ => JoinResult::error(ResponseError::RebalanceInProgress, req.member_id.to_string()),
            },
        }
    };
    response(v, result)
}

fn response(v: i16, result: JoinResult) -> JoinGroupResponse {
    let mut resp = JoinGroupResponse::default()
        .with_error_code(result.error.map(|e| e.code()).unwrap_or(0))
        .with_generation_id(result.generation)
        .with_protocol_name(result.protocol.clone().map(s).or(Some(s(""))))
        .with_leader(s(result.leader.clone()))
        .with_member_id(s(result.member_id.clone()))
        .with_members(
            result
                .members
                .iter()
                .map(|(id, inst, meta)| {
                    let mut m = JoinGroupResponseMember::default().with_member_id(s(id.clone())).with_metadata(meta.clone());
                    if v >= 5 {
                        m.group_instance_id = inst.clone().map(s);
                    }
                    m
                })
                .collect(),
        );
    if v >= 7 {
        resp.protocol_type = result.protocol_type.map(s);
    } else if result.protocol.is_none() {
        resp.protocol_name = Some(s(""));
    }
    resp
}
