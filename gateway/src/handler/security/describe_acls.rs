//! DescribeAcls: the bindings matching a filter, grouped by resource pattern (DESCRIBE on the
//! cluster to call it).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::handler::s;
use crate::security::acl::{op, Access, AclFilter};

pub async fn handle(b: Arc<Broker>, access: Access, req: DescribeAclsRequest) -> DescribeAclsResponse {
    let resp = DescribeAclsResponse::default();
    if !access.cluster(op::DESCRIBE) {
        return resp
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(s("Cluster authorization failed")));
    }
    let filter = match AclFilter::from_request(
        req.resource_type_filter,
        req.resource_name_filter.as_deref(),
        req.pattern_type_filter,
        req.principal_filter.as_deref(),
        req.host_filter.as_deref(),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(msg) => return resp.with_error_code(ResponseError::InvalidRequest.code()).with_error_message(Some(s(msg))),
    };
    if let Err(e) = b.authorizer.refresh().await {
        tracing::debug!(error = %e, "DescribeAcls answers from the last ACLs read");
    }
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for a in b.authorizer.bindings().iter().filter(|a| filter.matches(a)) {
        by_resource.entry((a.resource_type, a.name.clone(), a.pattern)).or_default().push(
            AclDescription::default()
                .with_principal(s(a.principal.clone()))
                .with_host(s(a.host.clone()))
                .with_operation(a.operation)
                .with_permission_type(a.permission),
        );
    }
    resp.with_resources(
        by_resource
            .into_iter()
            .map(|((t, name, pattern), acls)| {
                DescribeAclsResource::default().with_resource_type(t).with_resource_name(s(name)).with_pattern_type(pattern).with_acls(acls)
            })
            .collect(),
    )
}
