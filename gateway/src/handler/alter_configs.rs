//! AlterConfigs (replace all explicit configs of a topic) and IncrementalAlterConfigs (set or
//! delete single keys). Broker configs are static: changing them is refused.

use std::sync::Arc;

use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::ResponseError;

use super::describe_configs::RESOURCE_TOPIC;
use super::s;
use crate::broker::{AdminError, Broker};

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

pub async fn handle(b: Arc<Broker>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let mut out = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let changes = res.configs.iter().map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))).collect();
        let mut r =
            AlterConfigsResourceResponse::default().with_resource_type(res.resource_type).with_resource_name(res.resource_name.clone());
        if let Err((e, msg)) = apply(&b, res.resource_type, &res.resource_name, changes, false, req.validate_only).await {
            r.error_code = e.code();
            r.error_message = Some(s(msg));
        }
        out.push(r);
    }
    AlterConfigsResponse::default().with_responses(out)
}

pub async fn handle_incremental(b: Arc<Broker>, req: IncrementalAlterConfigsRequest) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let mut out = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let mut r =
            AlterConfigsResourceResponse::default().with_resource_type(res.resource_type).with_resource_name(res.resource_name.clone());
        let mut changes = Vec::with_capacity(res.configs.len());
        let mut bad = None;
        for c in &res.configs {
            match c.config_operation {
                0 => changes.push((c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))),
                1 => changes.push((c.name.to_string(), None)),
                op => bad = Some(format!("operation {op} is not supported for {}", &*c.name)),
            }
        }
        let res_ = match bad {
            Some(m) => Err((ResponseError::InvalidConfig, m)),
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
