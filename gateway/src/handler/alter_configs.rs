//! AlterConfigs (replace all explicit configs of a topic) and IncrementalAlterConfigs (set,
//! delete, and for list configs such as cleanup.policy append to or subtract from the effective
//! value). Broker configs are static: changing them is refused.

use std::sync::Arc;

use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::ResponseError;

use super::describe_configs::RESOURCE_TOPIC;
use super::s;
use crate::broker::{topic_config, AdminError, Broker};
use crate::security::acl::{op, Access};

async fn apply(
    b: &Broker,
    resource_type: i8,
    name: &str,
    changes: Vec<(String, Option<String>)>,
    incremental: bool,
    validate_only: bool,
) -> Result<(), AdminError> {
    if resource_type != RESOURCE_TOPIC {
        return Err((ResponseError::InvalidRequest, "only topic configs can be altered".into()));
    }
    b.alter_configs(name, changes, incremental, validate_only).await
}

/// A config resource the principal may not `operation` (ALTER_CONFIGS, DESCRIBE_CONFIGS):
/// topics need it on the topic, brokers on the cluster.
pub fn config_denied(access: &Access, resource_type: i8, name: &str, operation: i8) -> Option<(ResponseError, String)> {
    let allowed = if resource_type == RESOURCE_TOPIC { access.topic(operation, name) } else { access.cluster(operation) };
    match (allowed, resource_type == RESOURCE_TOPIC) {
        (true, _) => None,
        (false, true) => Some((ResponseError::TopicAuthorizationFailed, "Authorization failed.".into())),
        (false, false) => Some((ResponseError::ClusterAuthorizationFailed, "Authorization failed.".into())),
    }
}

pub async fn handle(b: Arc<Broker>, req: AlterConfigsRequest, access: Access) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let mut out = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let changes = res.configs.iter().map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))).collect();
        let mut r =
            AlterConfigsResourceResponse::default().with_resource_type(res.resource_type).with_resource_name(res.resource_name.clone());
        let outcome = match config_denied(&access, res.resource_type, &res.resource_name, op::ALTER_CONFIGS) {
            Some(e) => Err(e),
            None => apply(&b, res.resource_type, &res.resource_name, changes, false, req.validate_only).await,
        };
        if let Err((e, msg)) = outcome {
            r.error_code = e.code();
            r.error_message = Some(s(msg));
        }
        out.push(r);
    }
    AlterConfigsResponse::default().with_responses(out)
}

pub async fn handle_incremental(b: Arc<Broker>, req: IncrementalAlterConfigsRequest, access: Access) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let mut out = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let mut r =
            AlterConfigsResourceResponse::default().with_resource_type(res.resource_type).with_resource_name(res.resource_name.clone());
        let mut changes: Vec<(String, Option<String>)> = Vec::with_capacity(res.configs.len());
        let mut bad = config_denied(&access, res.resource_type, &res.resource_name, op::ALTER_CONFIGS);
        let topic = (res.resource_type == RESOURCE_TOPIC).then(|| b.topic(&res.resource_name)).flatten();
        for c in &res.configs {
            let name = c.name.to_string();
            if changes.iter().any(|(k, _)| *k == name) {
                bad = Some((ResponseError::InvalidRequest, format!("Error due to duplicate config keys: {name}")));
                continue;
            }
            match c.config_operation {
                0 => changes.push((name, c.value.as_ref().map(|v| v.to_string()))),
                1 => changes.push((name, None)),
                // APPEND / SUBTRACT: list configs only, from the effective value.
                op @ (2 | 3) => match (topic_config::config_def(&name), &topic) {
                    (Some(d), Some(t)) if d.check.kind() == topic_config::kind::LIST => {
                        let current = t.meta.value(&name, &b.cfg.wal).map(|(v, _)| v).unwrap_or_default();
                        let mut items: Vec<String> = current.split(',').map(|i| i.trim().to_string()).filter(|i| !i.is_empty()).collect();
                        for item in c.value.as_deref().unwrap_or("").split(',').map(str::trim).filter(|i| !i.is_empty()) {
                            match op {
                                2 if !items.iter().any(|i| i == item) => items.push(item.to_string()),
                                3 => items.retain(|i| i != item),
                                _ => {}
                            }
                        }
                        changes.push((name, Some(items.join(","))));
                    }
                    (Some(_), _) => {
                        bad = Some((
                            ResponseError::InvalidConfig,
                            format!("operation {op} (APPEND or SUBTRACT) is only for list configs, not {name}"),
                        ))
                    }
                    (None, _) => bad = Some((ResponseError::InvalidConfig, format!("Unknown topic config name: {name}"))),
                },
                op => bad = Some((ResponseError::InvalidConfig, format!("operation {op} is not supported for {name}"))),
            }
        }
        let res_ = match bad {
            Some(e) => Err(e),
            None => apply(&b, res.resource_type, &res.resource_name, changes, true, req.validate_only).await,
        };
        if let Err((e, msg)) = res_ {
            r.error_code = e.code();
            r.error_message = Some(s(msg));
        }
        out.push(r);
    }
    IncrementalAlterConfigsResponse::default().with_responses(out)
}
