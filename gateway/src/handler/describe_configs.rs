//! DescribeConfigs: every topic config ([`crate::broker::topic_config`]) with its value, source
//! and synonyms (the topic's override, then the broker setting or Kafka default behind it), type
//! and documentation when asked; and this gateway's broker configs (its own settings under
//! Kafka's names, and the broker-level defaults of the topic configs), all read-only. Configs
//! Kafka 4 removed (`message.format.version`, ...) are not described, as Kafka 4 does not.

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;

use super::s;
use crate::broker::topic_config::{kind, ConfigDef, CONFIGS};
use crate::broker::topics::TopicMeta;
use crate::broker::Broker;
use crate::security::acl::{op, Access};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// One described config: its effective value and source, and the synonyms behind it (most
/// specific first).
pub struct Described {
    pub name: &'static str,
    pub value: String,
    pub source: i8,
    pub kind: i8,
    pub doc: &'static str,
    pub synonyms: Vec<(&'static str, String, i8)>,
}

/// Every topic config of `meta` as Kafka describes it.
pub fn topic_configs(meta: &TopicMeta, wal: &wal_core::WalConfig) -> Vec<Described> {
    CONFIGS.iter().map(|d| topic_config(d, meta, wal)).collect()
}

fn topic_config(d: &'static ConfigDef, meta: &TopicMeta, wal: &wal_core::WalConfig) -> Described {
    let default = (d.default)(wal);
    let default_source = if d.from_gateway { SOURCE_STATIC_BROKER } else { SOURCE_DEFAULT };
    let mut synonyms = Vec::with_capacity(2);
    let (value, source) = match meta.value(d.name, wal) {
        Some((v, false)) => {
            synonyms.push((d.name, v.clone(), SOURCE_DYNAMIC_TOPIC));
            (v, SOURCE_DYNAMIC_TOPIC)
        }
        _ => (default.clone(), default_source),
    };
    synonyms.push((d.broker.unwrap_or(d.name), default, default_source));
    Described { name: d.name, value, source, kind: d.check.kind(), doc: d.doc, synonyms }
}

/// This gateway's broker configs under Kafka's names.
fn broker_configs(b: &Broker) -> Vec<Described> {
    let (host, port) = b.cfg.advertised();
    let c = &b.cfg;
    let own: Vec<(&'static str, String, i8, &'static str)> = vec![
        ("broker.id", c.node_id.to_string(), kind::INT, "This gateway's broker id."),
        ("node.id", c.node_id.to_string(), kind::INT, "This gateway's node id (its broker id)."),
        ("listeners", format!("PLAINTEXT://{}", c.listen), kind::LIST, "Where this gateway listens."),
        ("advertised.listeners", format!("PLAINTEXT://{host}:{port}"), kind::LIST, "Where clients connect."),
        ("broker.rack", c.rack.clone().unwrap_or_default(), kind::STRING, "This gateway's rack, if set."),
        ("socket.request.max.bytes", c.max_request_bytes.to_string(), kind::INT, "Largest request accepted."),
        ("max.connections", c.max_connections.to_string(), kind::INT, "Most connections this gateway accepts."),
        ("max.connections.per.ip", c.max_connections_per_ip.to_string(), kind::INT, "Most connections from one address."),
        ("connections.max.idle.ms", c.connections_max_idle_ms.to_string(), kind::LONG, "Idle connections are closed after this."),
        (
            "connections.max.reauth.ms",
            c.sasl.connections_max_reauth_ms.to_string(),
            kind::LONG,
            "SASL session lifetime before re-authentication (0: none).",
        ),
        ("sasl.enabled.mechanisms", c.sasl.mechanisms.join(","), kind::LIST, "SASL mechanisms the SASL listeners offer."),
        ("auto.create.topics.enable", c.auto_create_topics.to_string(), kind::BOOLEAN, "Whether unknown topics are created."),
        ("num.partitions", c.default_partitions.to_string(), kind::INT, "Partitions of an auto-created topic."),
        ("default.replication.factor", "1".into(), kind::SHORT, "Reported replication factor (durability comes from object storage)."),
        ("group.max.size", c.group_max_size.to_string(), kind::INT, "Most members of one consumer group."),
        (
            "group.consumer.session.timeout.ms",
            c.group_consumer_session_timeout_ms.to_string(),
            kind::INT,
            "A KIP-848 member silent this long is removed.",
        ),
        (
            "group.consumer.heartbeat.interval.ms",
            c.group_consumer_heartbeat_interval_ms.to_string(),
            kind::INT,
            "How often KIP-848 members heartbeat.",
        ),
        (
            "group.initial.rebalance.delay.ms",
            c.group_initial_rebalance_delay_ms.to_string(),
            kind::INT,
            "Delay of a new group's first rebalance.",
        ),
        (
            "offsets.retention.minutes",
            (c.offsets_retention_ms / 60_000).to_string(),
            kind::INT,
            "Committed offsets of empty groups are kept this long.",
        ),
        ("log.retention.check.interval.ms", c.retention_check_interval_ms.to_string(), kind::LONG, "How often retention runs."),
        ("transactional.id.expiration.ms", c.producer_id_expiration_ms.to_string(), kind::INT, "Producer state expires after this."),
    ];
    let mut out: Vec<Described> = own
        .into_iter()
        .map(|(name, value, kind, doc)| Described {
            name,
            synonyms: vec![(name, value.clone(), SOURCE_STATIC_BROKER)],
            value,
            source: SOURCE_STATIC_BROKER,
            kind,
            doc,
        })
        .collect();
    for d in CONFIGS {
        let Some(name) = d.broker else { continue };
        if out.iter().any(|o| o.name == name) {
            continue;
        }
        let value = (d.default)(&c.wal);
        let source = if d.from_gateway { SOURCE_STATIC_BROKER } else { SOURCE_DEFAULT };
        out.push(Described { name, synonyms: vec![(name, value.clone(), source)], value, source, kind: d.check.kind(), doc: d.doc });
    }
    out
}

fn entry(v: i16, d: Described, read_only: bool, synonyms: bool, documentation: bool) -> DescribeConfigsResourceResult {
    let mut r = DescribeConfigsResourceResult::default().with_name(s(d.name)).with_value(Some(s(d.value))).with_read_only(read_only);
    r.config_source = d.source;
    if synonyms {
        r.synonyms = d
            .synonyms
            .into_iter()
            .map(|(n, val, src)| DescribeConfigsSynonym::default().with_name(s(n)).with_value(Some(s(val))).with_source(src))
            .collect();
    }
    if v >= 3 {
        r.config_type = d.kind;
        if documentation {
            r.documentation = Some(s(d.doc));
        }
    }
    r
}

pub async fn handle(b: Arc<Broker>, v: i16, req: DescribeConfigsRequest, access: Access) -> DescribeConfigsResponse {
    let mut results = Vec::with_capacity(req.resources.len());
    let (synonyms, docs) = (req.include_synonyms, req.include_documentation);
    for res in req.resources {
        let mut r = DescribeConfigsResult::default().with_resource_type(res.resource_type).with_resource_name(res.resource_name.clone());
        let wanted = |name: &str| res.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| &**k == name));
        let denied = super::alter_configs::config_denied(&access, res.resource_type, &res.resource_name, op::DESCRIBE_CONFIGS);
        let (described, read_only) = match res.resource_type {
            _ if let Some((e, msg)) = denied => {
                r.error_code = e.code();
                r.error_message = Some(s(msg));
                (Vec::new(), true)
            }
            RESOURCE_TOPIC => match b.topic(&res.resource_name) {
                None => {
                    r.error_code = ResponseError::UnknownTopicOrPartition.code();
                    r.error_message = Some(s(format!("unknown topic {}", &*res.resource_name)));
                    (Vec::new(), false)
                }
                Some(t) => (topic_configs(&t.meta, &b.cfg.wal), false),
            },
            // "" names the cluster-wide dynamic defaults: there are none (broker configs are static).
            RESOURCE_BROKER if res.resource_name.is_empty() => (Vec::new(), true),
            RESOURCE_BROKER if *res.resource_name == *b.cfg.node_id.to_string() => (broker_configs(&b), true),
            RESOURCE_BROKER => {
                r.error_code = ResponseError::InvalidRequest.code();
                r.error_message = Some(s(format!(
                    "Unexpected broker id, expected {} or empty string, but received {}",
                    b.cfg.node_id, &*res.resource_name
                )));
                (Vec::new(), true)
            }
            other => {
                r.error_code = ResponseError::InvalidRequest.code();
                r.error_message = Some(s(format!("unsupported resource type {other}")));
                (Vec::new(), true)
            }
        };
        r.configs = described.into_iter().filter(|d| wanted(d.name)).map(|d| entry(v, d, read_only, synonyms, docs)).collect();
        results.push(r);
    }
    DescribeConfigsResponse::default().with_results(results)
}
