//! AlterClientQuotas: sets or removes quota keys of user / client-id entities (each may be the
//! default, a null name), checked as Kafka checks them; ALTER_CONFIGS on the cluster to call it.

use std::sync::Arc;

use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::handler::s;
use crate::security::acl::{op, Access};
use crate::security::quota::{Entity, CLIENT_ID, KEYS, USER};

pub async fn handle(b: Arc<Broker>, access: Access, req: AlterClientQuotasRequest) -> AlterClientQuotasResponse {
    let allowed = super::may_administer(&access, op::ALTER_CONFIGS);
    let mut out = Vec::with_capacity(req.entries.len());
    for e in req.entries {
        let echo: Vec<EntityData> = e
            .entity
            .iter()
            .map(|d| EntityData::default().with_entity_type(d.entity_type.clone()).with_entity_name(d.entity_name.clone()))
            .collect();
        let result = EntryData::default().with_entity(echo);
        let mut entity = Entity { user: None, client_id: None };
        let mut bad: Option<(ResponseError, String)> =
            (!allowed).then(|| (ResponseError::ClusterAuthorizationFailed, "Cluster authorization failed".into()));
        for d in &e.entity {
            let slot = match &*d.entity_type {
                USER => &mut entity.user,
                CLIENT_ID => &mut entity.client_id,
                other => {
                    bad.get_or_insert((ResponseError::InvalidRequest, format!("Unhandled client quota entity type: {other}")));
                    continue;
                }
            };
            if slot.is_some() {
                bad.get_or_insert((ResponseError::InvalidRequest, format!("Duplicate {} entity", &*d.entity_type)));
            }
            *slot = Some(d.entity_name.as_ref().map(|n| n.to_string()));
        }
        if e.entity.is_empty() {
            bad.get_or_insert((ResponseError::InvalidRequest, "Invalid empty client quota entity".into()));
        }
        let mut ops = Vec::with_capacity(e.ops.len());
        for o in &e.ops {
            if !KEYS.contains(&&*o.key) {
                bad.get_or_insert((ResponseError::InvalidRequest, format!("Unknown quota key {}", &*o.key)));
            } else if !(o.remove || o.value > 0.0 && o.value.is_finite()) {
                bad.get_or_insert((ResponseError::InvalidRequest, format!("Quota {} must be a positive number", &*o.key)));
            } else {
                ops.push((o.key.to_string(), (!o.remove).then_some(o.value)));
            }
        }
        let outcome = match bad {
            Some(e) => Err(e),
            None if req.validate_only => Ok(()),
            None => b.quotas.alter(&entity, &ops).await.map_err(|e| (ResponseError::UnknownServerError, e.to_string())),
        };
        out.push(match outcome {
            Ok(()) => result,
            Err((err, msg)) => result.with_error_code(err.code()).with_error_message(Some(s(msg))),
        });
    }
    AlterClientQuotasResponse::default().with_entries(out)
}
