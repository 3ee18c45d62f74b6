//! CreateTopics: with configs and validate-only; answered once the new partitions are led (as
//! CreatePartitions). Any replication factor is accepted (durability comes from object storage)
//! and reported as 1 replica, this gateway.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;

use super::create_partitions::served_within;
use super::describe_configs::topic_configs;
use super::s;
use crate::broker::Broker;
use crate::security::acl::{op, Access};

pub async fn handle(b: Arc<Broker>, v: i16, req: CreateTopicsRequest, access: Access) -> CreateTopicsResponse {
    let cluster_create = access.cluster(op::CREATE);
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatableTopicResult::default().with_name(t.name.clone());
        let invalid_rf = t.replication_factor == 0 || t.replication_factor < -1;
        let outcome = if !cluster_create && !access.topic(op::CREATE, &name) {
            Err((ResponseError::TopicAuthorizationFailed, "Authorization failed.".to_string()))
        } else if invalid_rf {
            Err((ResponseError::InvalidReplicationFactor, format!("invalid replication factor {}", t.replication_factor)))
        } else if !t.assignments.is_empty() && t.num_partitions != -1 {
            Err((ResponseError::InvalidRequest, "give either num_partitions or assignments".to_string()))
        } else {
            let partitions = if t.assignments.is_empty() { t.num_partitions } else { t.assignments.len() as i32 };
            match t.configs.iter().find(|c| c.value.is_none()) {
                Some(c) => Err((ResponseError::InvalidConfig, format!("Null value not supported for topic configs: {}", &*c.name))),
                None => {
                    let configs: BTreeMap<String, String> =
                        t.configs.iter().filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string()))).collect();
                    match b.create_topic(&name, partitions, configs, req.validate_only).await {
                        Ok(topic) if !req.validate_only => served_within(&b, &name, 0, req.timeout_ms).await.map(|_| topic),
                        other => other,
                    }
                }
            }
        };
        match outcome {
            Ok(topic) => {
                if v >= 7 {
                    r.topic_id = topic.meta.id;
                }
                if v >= 5 {
                    r.num_partitions = topic.meta.partitions;
                    r.replication_factor = 1;
                    r.configs = Some(
                        topic_configs(&topic.meta, &b.cfg.wal)
                            .into_iter()
                            .map(|d| {
                                CreatableTopicConfigs::default()
                                    .with_name(s(d.name))
                                    .with_value(Some(s(d.value)))
                                    .with_config_source(d.source)
                            })
                            .collect(),
                    );
                }
            }
            Err((e, msg)) => {
                r.error_code = e.code();
                if v >= 1 {
                    r.error_message = Some(s(msg));
                }
                if v >= 5 {
                    r.num_partitions = -1;
                    r.replication_factor = -1;
                }
            }
        }
        results.push(r);
    }
    CreateTopicsResponse::default().with_topics(results)
}
