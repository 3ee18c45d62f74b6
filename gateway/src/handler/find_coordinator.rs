//! FindCoordinator: this gateway coordinates every group (single keys before v4, batched keys
//! from v4). Transaction coordinators do not exist here (no transactions).

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::ResponseError;

use super::s;
use crate::broker::Broker;

const KEY_TYPE_GROUP: i8 = 0;

pub fn handle(b: Arc<Broker>, v: i16, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let (host, port) = b.cfg.advertised();
    let node = BrokerId(b.cfg.node_id);
    let error = (req.key_type != KEY_TYPE_GROUP).then_some(ResponseError::TransactionalIdAuthorizationFailed);
    if v >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|k| match error {
                None => Coordinator::default().with_key(k).with_node_id(node).with_host(s(host.clone())).with_port(port),
                Some(e) => Coordinator::default()
                    .with_key(k)
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(e.code())
                    .with_error_message(Some(s("transactions are not supported"))),
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let mut r = FindCoordinatorResponse::default();
    match error {
        None => {
            r.node_id = node;
            r.host = s(host);
            r.port = port;
        }
        Some(e) => {
            r.error_code = e.code();
            r.node_id = BrokerId(-1);
            r.port = -1;
            if v >= 1 {
                r.error_message = Some(s("transactions are not supported"));
            }
        }
    }
    r
}
