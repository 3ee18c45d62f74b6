//! DeleteAcls: removes the bindings matching each filter and names them (ALTER on the cluster
//! to call it).

use std::sync::Arc;

use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::handler::s;
use crate::security::acl::{op, Access, AclFilter};

pub async fn handle(b: Arc<Broker>, access: Access, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let allowed = access.cluster(op::ALTER);
    let refuse =
        |e: ResponseError, msg: String| DeleteAclsFilterResult::default().with_error_code(e.code()).with_error_message(Some(s(msg)));
    let mut results = Vec::with_capacity(req.filters.len());
    for f in req.filters {
        if !allowed {
            results.push(refuse(ResponseError::ClusterAuthorizationFailed, "Cluster authorization failed".into()));
            continue;
        }
        let filter = match AclFilter::from_request(
            f.resource_type_filter,
            f.resource_name_filter.as_deref(),
            f.pattern_type_filter,
            f.principal_filter.as_deref(),
            f.host_filter.as_deref(),
            f.operation,
            f.permission_type,
        ) {
            Ok(filter) => filter,
            Err(msg) => {
                results.push(refuse(ResponseError::InvalidRequest, msg));
                continue;
            }
        };
        match b.authorizer.delete(&filter).await {
            Err(e) => results.push(refuse(ResponseError::UnknownServerError, e.to_string())),
            Ok(gone) => results.push(
                DeleteAclsFilterResult::default().with_matching_acls(
                    gone.into_iter()
                        .map(|a| {
                            DeleteAclsMatchingAcl::default()
                                .with_resource_type(a.resource_type)
                                .with_resource_name(s(a.name))
                                .with_pattern_type(a.pattern)
                                .with_principal(s(a.principal))
                                .with_host(s(a.host))
                                .with_operation(a.operation)
                                .with_permission_type(a.permission)
                        })
                        .collect(),
                ),
            ),
        }
    }
    DeleteAclsResponse::default().with_filter_results(results)
}
