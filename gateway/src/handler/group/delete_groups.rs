//! DeleteGroups: deletes empty groups and their committed offsets.

use std::sync::Arc;

use kafka_protocol::ResponseError;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::broker::Broker;
use crate::security::acl::{op, Access};

pub async fn handle(b: Arc<Broker>, req: DeleteGroupsRequest, access: Access) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in req.groups_names {
        let e = if !access.group(op::DELETE, &g.0) {
            Some(ResponseError::GroupAuthorizationFailed)
        } else if b.cluster.coordinates(&g.0) {
            b.groups.delete_group(&g.0).await.err()
        } else {
            Some(ResponseError::NotCoordinator)
        };
        results.push(DeletableGroupResult::default().with_group_id(g).with_error_code(e.map(|e| e.code()).unwrap_or(0)));
    }
    DeleteGroupsResponse::default().with_results(results)
}
