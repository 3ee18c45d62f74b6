//! Topic metadata: what is persisted per topic (in the MetaStore under `gw/topic/{name}`), and the
//! settings its configs ([`super::topic_config`]) give it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::topic_config::{buffer_mode_name, config_def, parse_buffer_mode, validate_configs, BUFFER_MODE};

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

/// The effective settings of a topic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopicSettings {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub max_message_bytes: usize,
    pub buffer: wal_core::BufferMode,
    /// `cleanup.policy` holds `delete`: retention applies.
    pub delete: bool,
    /// `cleanup.policy` holds `compact`: records need keys, the compactor keeps the latest per key.
    pub compact: bool,
    pub batch: crate::batch::rewrite::Rules,
    /// The compactor's settings (`min.cleanable.dirty.ratio`, `min.compaction.lag.ms`,
    /// `max.compaction.lag.ms`, `delete.retention.ms`).
    pub compaction: wal_core::log::CompactionPolicy,
}

impl TopicMeta {
    /// A config's effective value and whether it is the default; `None` for names that are not
    /// topic configs (or were removed in Kafka 4 and linger in an old topic's metadata).
    pub fn value(&self, name: &str, wal: &wal_core::WalConfig) -> Option<(String, bool)> {
        let d = config_def(name)?;
        Some(match self.configs.get(name) {
            Some(v) => (v.trim().to_string(), false),
            None => ((d.default)(wal), true),
        })
    }

    pub fn settings(&self, wal: &wal_core::WalConfig) -> TopicSettings {
        let text = |k: &str| self.value(k, wal).map(|(v, _)| v).unwrap_or_default();
        let get = |k: &str| text(k).parse::<i64>().unwrap_or(-1);
        let policy = text("cleanup.policy");
        let policy: Vec<&str> = policy.split(',').map(str::trim).collect();
        TopicSettings {
            retention_ms: get("retention.ms"),
            retention_bytes: get("retention.bytes"),
            segment_bytes: get("segment.bytes").max(1) as u64,
            segment_ms: get("segment.ms").max(1) as u64,
            max_message_bytes: get("max.message.bytes").max(0) as usize,
            buffer: parse_buffer_mode(&text(BUFFER_MODE)).unwrap_or(wal.buffer),
            delete: policy.contains(&"delete"),
            compact: policy.contains(&"compact"),
            batch: crate::batch::rewrite::Rules {
                codec: crate::batch::rewrite::codec_of(&text("compression.type")),
                gzip_level: get("compression.gzip.level") as i32,
                log_append_time: text("message.timestamp.type") == "LogAppendTime",
                before_max_ms: get("message.timestamp.before.max.ms"),
                after_max_ms: get("message.timestamp.after.max.ms"),
            },
            compaction: wal_core::log::CompactionPolicy {
                min_cleanable_dirty_ratio: text("min.cleanable.dirty.ratio").parse().unwrap_or(0.5),
                min_lag_ms: get("min.compaction.lag.ms").max(0) as u64,
                max_lag_ms: get("max.compaction.lag.ms").max(1) as u64,
                delete_retention_ms: get("delete.retention.ms").max(0) as u64,
                ..Default::default()
            },
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
    }
}
