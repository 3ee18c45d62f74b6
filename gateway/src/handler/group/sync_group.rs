//! SyncGroup: the leader hands in the assignments; every member gets its own once the leader's
//! arrives.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::group::state::{Outcome, SyncResult};
use crate::handler::s;

pub async fn handle(b: Arc<Broker>, v: i16, req: SyncGroupRequest) -> SyncGroupResponse {
    if !b.cluster.coordinates(&req.group_id.0) {
        return SyncGroupResponse::default().with_error_code(ResponseError::NotCoordinator.code());
    }
    let member = req.member_id.to_string();
    let instance = req.group_instance_id.as_ref().map(|i| i.to_string());
    let assignments = req.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect();
    let mut protocol = (None, None);
    let outcome = b.groups.with_group(&req.group_id.0, false, |g| {
        if v >= 5 {
            let type_ok = req.protocol_type.as_ref().is_none_or(|t| g.protocol_type.as_deref() == Some(&**t));
            let name_ok = req.protocol_name.as_ref().is_none_or(|n| g.protocol.as_deref() == Some(&**n));
            if !type_ok || !name_ok {
                return Outcome::Now(SyncResult { error: Some(ResponseError::InconsistentGroupProtocol), assignment: Default::default() });
            }
        }
        protocol = (g.protocol_type.clone(), g.protocol.clone());
        g.sync(&member, instance.as_deref(), req.generation_id, assignments)
    });
    let r = match outcome {
        None => SyncResult { error: Some(ResponseError::UnknownMemberId), assignment: Default::default() },
        Some(Outcome::Now(r)) => r,
        Some(Outcome::Wait(rx)) => match tokio::time::timeout(Duration::from_secs(300), rx).await {
            Ok(Ok(r)) => r,
            _ => SyncResult { error: Some(ResponseError::RebalanceInProgress), assignment: Default::default() },
        },
    };
    let mut resp = SyncGroupResponse::default().with_error_code(r.error.map(|e| e.code()).unwrap_or(0)).with_assignment(r.assignment);
    if v >= 5 && r.error.is_none() {
        resp.protocol_type = protocol.0.map(s);
        resp.protocol_name = protocol.1.map(s);
    }
    resp
}
