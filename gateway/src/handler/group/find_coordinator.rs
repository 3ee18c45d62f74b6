//! FindCoordinator: the live gateway the cluster assigns the group or the transactional id to
//! (both chosen the same way; single keys before v4, batched keys from v4).

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::handler::s;
use crate::security::acl::{op, Access};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub fn handle(b: Arc<Broker>, v: i16, req: FindCoordinatorRequest, listener: &str, access: &Access) -> FindCoordinatorResponse {
    let error = !matches!(req.key_type, KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION);
    let lookup = |key: &str| match error {
        true => Err((ResponseError::InvalidRequest, "unknown coordinator key type")),
        false if req.key_type == KEY_TYPE_GROUP && !access.group(op::DESCRIBE, key) => {
            Err((ResponseError::GroupAuthorizationFailed, "Group authorization failed."))
        }
        false if req.key_type == KEY_TYPE_TRANSACTION && !access.transactional_id(op::DESCRIBE, key) => {
            Err((ResponseError::TransactionalIdAuthorizationFailed, "Transactional Id authorization failed."))
        }
        false => b.cluster.coordinator_of(key).map(|m| m.on(listener)).ok_or((ResponseError::CoordinatorNotAvailable, "no live gateway")),
    };
    if v >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|k| match lookup(&k) {
                Ok(m) => Coordinator::default().with_key(k).with_node_id(BrokerId(m.node_id)).with_host(s(m.host)).with_port(m.port),
                Err((e, msg)) => Coordinator::default()
                    .with_key(k)
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(e.code())
                    .with_error_message(Some(s(msg))),
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let mut r = FindCoordinatorResponse::default();
    match lookup(&req.key) {
        Ok(m) => {
            r.node_id = BrokerId(m.node_id);
            r.host = s(m.host);
            r.port = m.port;
        }
        Err((e, msg)) => {
            r.error_code = e.code();
            r.node_id = BrokerId(-1);
            r.port = -1;
            if v >= 1 {
                r.error_message = Some(s(msg));
            }
        }
    }
    r
}
