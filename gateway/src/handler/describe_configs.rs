//! DescribeConfigs: topic configs (explicit and default, with their source) and this gateway's
//! read-only broker settings.

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;

use super::s;
use crate::broker::{topics::CONFIGS, Broker};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

fn entry(v: i16, name: &str, value: String, source: i8, read_only: bool, synonyms: bool, doc: &str) -> DescribeConfigsResourceResult {
    let mut r = DescribeConfigsResourceResult::default().with_name(s(name)).with_value(Some(s(value.clone()))).with_read_only(read_only);
    if v >= 1 {
        r.config_source = source;
        if synonyms {
            r.synonyms = vec![DescribeConfigsSynonym::default().with_name(s(name)).with_value(Some(s(value))).with_source(source)];
        }
    }
    if v >= 3 {
        r.config_type = if name.ends_with(".ms") || name.ends_with(".bytes") || name == "min.insync.replicas" { 5 } else { 2 };
        r.documentation = Some(s(doc));
    }
    r
}

pub async fn handle(b: Arc<Broker>, v: i16, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut results = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let mut r = DescribeConfigsResult::default().with_resource_type(res.resource_type).with_resource_name(res.resource_name.clone());
        let wanted = |name: &str| res.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| &**k == name));
        match res.resource_type {
            RESOURCE_TOPIC => match b.topic(&res.resource_name) {
                None => {
                    r.error_code = ResponseError::UnknownTopicOrPartition.code();
                    r.error_message = Some(s(format!("unknown topic {}", &*res.resource_name)));
                }
                Some(t) => {
                    r.configs = CONFIGS
                        .iter()
                        .filter(|d| wanted(d.name))
                        .map(|d| {
                            let (value, default) = t.meta.value(d.name, &b.cfg.wal).unwrap_or_default();
                            let source = if default { SOURCE_DEFAULT } else { SOURCE_DYNAMIC_TOPIC };
                            entry(v, d.name, value, source, false, req.include_synonyms, d.doc)
                        })
                        .collect();
                }
            },
            RESOURCE_BROKER => {
                let (host, port) = b.cfg.advertised();
                let items = [
                    ("broker.id", b.cfg.node_id.to_string(), "This gateway's broker id."),
                    ("advertised.listeners", format!("PLAINTEXT://{host}:{port}"), "Where clients connect."),
                    ("socket.request.max.bytes", b.cfg.max_request_bytes.to_string(), "Largest request accepted."),
                    ("auto.create.topics.enable", b.cfg.auto_create_topics.to_string(), "Whether unknown topics are created."),
                    ("num.partitions", b.cfg.default_partitions.to_string(), "Partitions of an auto-created topic."),
                ];
                r.configs = items
                    .into_iter()
                    .filter(|(n, _, _)| wanted(n))
                    .map(|(n, val, doc)| entry(v, n, val, SOURCE_STATIC_BROKER, true, req.include_synonyms, doc))
                    .collect();
            }
            other => {
                r.error_code = ResponseError::InvalidRequest.code();
                r.error_message = Some(s(format!("unsupported resource type {other}")));
            }
        }
        results.push(r);
    }
    DescribeConfigsResponse::default().with_results(results)
}
