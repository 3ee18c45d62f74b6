//! DescribeClientQuotas: the quota entries whose entity matches every component of the filter
//! (an exact name, the default, or any), only those with no other entity type when `strict`.
//! DESCRIBE_CONFIGS on the cluster to call it.

use std::sync::Arc;

use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::handler::s;
use crate::security::acl::{op, Access};
use crate::security::quota::{Entity, CLIENT_ID, USER};

const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

fn part<'a>(e: &'a Entity, entity_type: &str) -> Option<&'a Option<Option<String>>> {
    match entity_type {
        USER => Some(&e.user),
        CLIENT_ID => Some(&e.client_id),
        _ => None,
    }
}

pub async fn handle(b: Arc<Broker>, access: Access, req: DescribeClientQuotasRequest) -> DescribeClientQuotasResponse {
    let resp = DescribeClientQuotasResponse::default();
    let fail = |e: ResponseError, msg: &str| resp.clone().with_error_code(e.code()).with_error_message(Some(s(msg)));
    if !super::may_administer(&access, op::DESCRIBE_CONFIGS) {
        return fail(ResponseError::ClusterAuthorizationFailed, "Cluster authorization failed");
    }
    for c in &req.components {
        if part(&Entity { user: None, client_id: None }, &c.entity_type).is_none() {
            return fail(ResponseError::InvalidRequest, "Custom entity type is not supported: only user and client-id");
        }
        if !matches!(c.match_type, MATCH_EXACT | MATCH_DEFAULT | MATCH_SPECIFIED) || (c.match_type == MATCH_EXACT && c._match.is_none()) {
            return fail(ResponseError::InvalidRequest, "Unknown match type or no name to match");
        }
    }
    if let Err(e) = b.quotas.refresh().await {
        tracing::debug!(error = %e, "DescribeClientQuotas answers from the last quotas read");
    }
    let entries = b
        .quotas
        .entries()
        .iter()
        .filter(|(e, _)| {
            req.components.iter().all(|c| match part(e, &c.entity_type).expect("checked above") {
                None => false,
                Some(name) => match c.match_type {
                    MATCH_EXACT => name.as_deref() == c._match.as_deref(),
                    MATCH_DEFAULT => name.is_none(),
                    _ => true,
                },
            }) && (!req.strict || {
                let named = |t: &str| req.components.iter().any(|c| &*c.entity_type == t);
                (e.user.is_none() || named(USER)) && (e.client_id.is_none() || named(CLIENT_ID))
            })
        })
        .map(|(e, values)| {
            let mut entity = Vec::new();
            for (t, v) in [(USER, &e.user), (CLIENT_ID, &e.client_id)] {
                if let Some(name) = v {
                    entity.push(EntityData::default().with_entity_type(s(t)).with_entity_name(name.clone().map(s)));
                }
            }
            EntryData::default()
                .with_entity(entity)
                .with_values(values.iter().map(|(k, v)| ValueData::default().with_key(s(k.clone())).with_value(*v)).collect())
        })
        .collect();
    resp.with_entries(Some(entries))
}
