//! CreateAcls: stores bindings after Kafka's checks (ALTER on the cluster to call it; LITERAL or
//! PREFIXED patterns, a principal `Type:name`, a known operation and permission).

use std::sync::Arc;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::handler::s;
use crate::security::acl::{op, validate, Access, AclBinding};

pub async fn handle(b: Arc<Broker>, access: Access, req: CreateAclsRequest) -> CreateAclsResponse {
    let refuse = |e: ResponseError, msg: String| AclCreationResult::default().with_error_code(e.code()).with_error_message(Some(s(msg)));
    if !access.cluster(op::ALTER) {
        let results = req
            .creations
            .iter()
            .map(|_| refuse(ResponseError::ClusterAuthorizationFailed, "Cluster authorization failed".into()))
            .collect();
        return CreateAclsResponse::default().with_results(results);
    }
    let bindings: Vec<Result<AclBinding, String>> = req
        .creations
        .iter()
        .map(|c| {
            let binding = AclBinding {
                resource_type: c.resource_type,
                name: c.resource_name.to_string(),
                pattern: c.resource_pattern_type,
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: c.operation,
                permission: c.permission_type,
            };
            validate(&binding).map(|_| binding)
        })
        .collect();
    let valid: Vec<AclBinding> = bindings.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    let stored = b.authorizer.create(&valid).await.map_err(|e| e.to_string());
    let results = bindings
        .into_iter()
        .map(|r| match (r, &stored) {
            (Err(msg), _) => refuse(ResponseError::InvalidRequest, msg),
            (Ok(_), Err(msg)) => refuse(ResponseError::UnknownServerError, msg.clone()),
            (Ok(_), Ok(())) => AclCreationResult::default(),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}
