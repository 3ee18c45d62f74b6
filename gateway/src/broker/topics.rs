//! Topic metadata: what is persisted per topic (in the MetaStore under `gw/topic/{name}`), and the
//! topic configurations the gateway understands, with Kafka's names, defaults and validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: uuid::Uuid,
    pub partitions: i32,
    /// Only explicitly set configs; defaults are not stored.
    pub configs: BTreeMap<String, String>,
    pub created_ms: u64,
}

pub fn topic_key(name: &str) -> String {
    format!("gw/topic/{name}")
}
pub const TOPIC_PREFIX: &str = "gw/topic/";

/// The log of one partition.
pub fn log_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// Kafka's topic-name rule: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A topic config the gateway understands: its Kafka name, default, and whether a value is valid.
pub struct ConfigDef {
    pub name: &'static str,
    pub default: fn(&wal_core::WalConfig) -> String,
    pub valid: fn(&str) -> bool,
    pub doc: &'static str,
}

fn long_at_least(v: &str, min: i64) -> bool {
    v.parse::<i64>().is_ok_and(|x| x >= min)
}

pub const CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "retention.ms",
        default: |_| "604800000".into(),
        valid: |v| long_at_least(v, -1),
        doc: "Delete segments older than this (-1: keep).",
    },
    ConfigDef {
        name: "retention.bytes",
        default: |_| "-1".into(),
        valid: |v| long_at_least(v, -1),
        doc: "Delete the oldest segments beyond this size per partition (-1: no limit).",
    },
    ConfigDef {
        name: "segment.bytes",
        default: |w| w.segment_max_bytes.to_string(),
        valid: |v| long_at_least(v, 14),
        doc: "Roll a segment after this many bytes.",
    },
    ConfigDef {
        name: "segment.ms",
        default: |w| w.segment_max_age_ms.to_string(),
        valid: |v| long_at_least(v, 1),
        doc: "Roll a segment after this age.",
    },
    ConfigDef {
        name: "max.message.bytes",
        default: |_| "1048588".into(),
        valid: |v| long_at_least(v, 0),
        doc: "Largest record batch accepted.",
    },
    ConfigDef {
        name: "cleanup.policy",
        default: |_| "delete".into(),
        valid: |v| v == "delete",
        doc: "Only delete is supported (no compaction).",
    },
    ConfigDef {
        name: "message.timestamp.type",
        default: |_| "CreateTime".into(),
        valid: |v| v == "CreateTime",
        doc: "Only CreateTime is supported.",
    },
    ConfigDef {
        name: "compression.type",
        default: |_| "producer".into(),
        valid: |v| v == "producer",
        doc: "Batches are stored as the producer compressed them.",
    },
    ConfigDef {
        name: BUFFER_MODE,
        default: |w| buffer_mode_name(w.buffer).into(),
        valid: |v| parse_buffer_mode(v).is_some(),
        doc: "memory (MemoryBuffer: shared objects, throughput-first) or quorum (QuorumBuffer: LogStore nodes, latency-first; needs etcd). Takes effect when the partition's writer next opens.",
    },
    ConfigDef {
        name: "min.insync.replicas",
        default: |_| "1".into(),
        valid: |v| long_at_least(v, 1),
        doc: "Accepted for compatibility; durability comes from object storage.",
    },
];

/// The topic config choosing a topic's buffer mode.
pub const BUFFER_MODE: &str = "buffer.mode";

pub fn buffer_mode_name(m: wal_core::BufferMode) -> &'static str {
    match m {
        wal_core::BufferMode::Memory => "memory",
        wal_core::BufferMode::Quorum => "quorum",
    }
}

pub fn parse_buffer_mode(v: &str) -> Option<wal_core::BufferMode> {
    match v {
        "memory" => Some(wal_core::BufferMode::Memory),
        "quorum" => Some(wal_core::BufferMode::Quorum),
        _ => None,
    }
}

pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    CONFIGS.iter().find(|c| c.name == name)
}

/// Checks a set of explicit configs; returns the first problem.
pub fn validate_configs<'a>(configs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), String> {
    for (k, v) in configs {
        match config_def(k) {
            None => return Err(format!("unknown or unsupported topic config {k}")),
            Some(d) if !(d.valid)(v) => return Err(format!("invalid value {v:?} for {k}")),
            _ => {}
        }
    }
    Ok(())
}

/// The effective settings of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub max_message_bytes: usize,
    pub buffer: wal_core::BufferMode,
}

impl TopicMeta {
    pub fn value(&self, name: &str, wal: &wal_core::WalConfig) -> Option<(String, bool)> {
        let d = config_def(name)?;
        Some(match self.configs.get(name) {
            Some(v) => (v.clone(), false),
            None => ((d.default)(wal), true),
        })
    }

    pub fn settings(&self, wal: &wal_core::WalConfig) -> TopicSettings {
        let get = |k: &str| self.value(k, wal).and_then(|(v, _)| v.parse::<i64>().ok()).unwrap_or(-1);
        TopicSettings {
            retention_ms: get("retention.ms"),
            retention_bytes: get("retention.bytes"),
            segment_bytes: get("segment.bytes").max(1) as u64,
            segment_ms: get("segment.ms").max(1) as u64,
            max_message_bytes: get("max.message.bytes").max(0) as usize,
            buffer: self.value(BUFFER_MODE, wal).and_then(|(v, _)| parse_buffer_mode(&v)).unwrap_or(wal.buffer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_configs() {
        assert!(valid_topic_name("orders.v1_a-b"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name(".."));
        assert!(!valid_topic_name("a/b"));
        assert!(!valid_topic_name(&"x".repeat(250)));
        assert!(validate_configs([("retention.ms", "1000")]).is_ok());
        assert!(validate_configs([("retention.ms", "abc")]).is_err());
        assert!(validate_configs([("cleanup.policy", "compact")]).is_err());
        assert!(validate_configs([("no.such", "1")]).is_err());
    }
}
