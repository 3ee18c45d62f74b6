//! Kafka 4's topic configs: every name, its type, default, broker-level synonym and valid values,
//! checked as Kafka checks them (values trimmed; longs, ints and doubles in range; enums and lists
//! from their value sets). What a config does here is in its documentation string: most are
//! enforced (retention, segments, message size, compression, timestamps, cleanup policy); those
//! about local disks and replicas are accepted for compatibility and have no effect, because a
//! partition here is a log in object storage. Configs Kafka 4 removed (`message.format.version`
//! and friends, [`REMOVED`]) are dropped from create and alter requests, as Kafka 4 drops them.

use wal_core::WalConfig;

/// How a config's values are checked; it also gives the config's Kafka type.
pub enum Check {
    Bool,
    /// An int in `min..=max`.
    Int(i64, i64),
    /// A long in `min..=max`.
    Long(i64, i64),
    Double(f64, f64),
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A non-empty comma-separated list of these strings.
    ListOf(&'static [&'static str]),
    /// A string checked by a function (of the config's own type `kind`).
    Custom(i8, fn(&str) -> bool),
}

/// Kafka's DescribeConfigs config types.
pub mod kind {
    pub const BOOLEAN: i8 = 1;
    pub const STRING: i8 = 2;
    pub const INT: i8 = 3;
    pub const SHORT: i8 = 4;
    pub const LONG: i8 = 5;
    pub const DOUBLE: i8 = 6;
    pub const LIST: i8 = 7;
}

impl Check {
    pub fn kind(&self) -> i8 {
        match self {
            Check::Bool => kind::BOOLEAN,
            Check::Int(..) => kind::INT,
            Check::Long(..) => kind::LONG,
            Check::Double(..) => kind::DOUBLE,
            Check::OneOf(_) => kind::STRING,
            Check::ListOf(_) => kind::LIST,
            Check::Custom(k, _) => *k,
        }
    }

    /// Why `v` is not a valid value, or `None`.
    fn problem(&self, v: &str) -> Option<String> {
        let v = v.trim();
        match self {
            Check::Bool => (!v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false"))
                .then(|| "Expected value to be either true or false".into()),
            Check::Int(min, max) | Check::Long(min, max) => match v.parse::<i64>() {
                Err(_) => Some(format!("Not a number of type {}", if self.kind() == kind::INT { "INT" } else { "LONG" })),
                Ok(x) if x < *min => Some(format!("Value must be at least {min}")),
                Ok(x) if x > *max => Some(format!("Value must be no more than {max}")),
                Ok(_) => None,
            },
            Check::Double(min, max) => match v.parse::<f64>() {
                Ok(x) if x >= *min && x <= *max => None,
                Ok(_) => Some(format!("Value must be in [{min},...,{max}]")),
                Err(_) => Some("Not a number of type DOUBLE".into()),
            },
            Check::OneOf(set) => (!set.contains(&v)).then(|| format!("String must be one of: {}", set.join(", "))),
            Check::ListOf(set) => {
                let items: Vec<&str> = v.split(',').map(str::trim).collect();
                (v.is_empty() || items.iter().any(|i| !set.contains(i))).then(|| format!("Each item must be one of: {}", set.join(", ")))
            }
            Check::Custom(_, f) => (!f(v)).then(|| "Invalid value".into()),
        }
    }
}

/// One topic config.
pub struct ConfigDef {
    pub name: &'static str,
    pub check: Check,
    pub default: fn(&WalConfig) -> String,
    /// The broker config that supplies the default (Kafka's synonym), if any.
    pub broker: Option<&'static str>,
    /// Whether the default comes from this gateway's own configuration (not a Kafka constant).
    pub from_gateway: bool,
    pub doc: &'static str,
}

/// The topic config choosing a topic's buffer mode.
pub const BUFFER_MODE: &str = "buffer.mode";

/// Topic configs Kafka 4 removed: accepted in create and alter requests and dropped.
pub const REMOVED: &[&str] = &["message.format.version", "message.downconversion.enable", "message.timestamp.difference.max.ms"];

const MAX: i64 = i64::MAX;
const IMAX: i64 = i32::MAX as i64;
const CODECS: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

macro_rules! def {
    ($name:expr, $check:expr, $default:expr, $broker:expr, $doc:expr) => {
        ConfigDef { name: $name, check: $check, default: |_| $default.to_string(), broker: $broker, from_gateway: false, doc: $doc }
    };
    // A default taken from the gateway's own configuration.
    (gateway $name:expr, $check:expr, $default:expr, $broker:expr, $doc:expr) => {
        ConfigDef { name: $name, check: $check, default: $default, broker: $broker, from_gateway: true, doc: $doc }
    };
}

/// `partition:broker` pairs, or `*`, or nothing (the replication throttle lists).
fn throttled_replicas(v: &str) -> bool {
    v.is_empty()
        || v == "*"
        || v.split(',')
            .all(|p| p.trim().split_once(':').is_some_and(|(a, b)| a.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()))
}

pub const CONFIGS: &[ConfigDef] = &[
    def!("cleanup.policy", Check::ListOf(&["compact", "delete"]), "delete", Some("log.cleanup.policy"),
        "delete: old segments go by retention.ms / retention.bytes. compact: nothing is deleted by age or size (records are kept until compaction, which keeps at least the latest record per key). compact,delete: both."),
    def!("compression.gzip.level", Check::Custom(kind::INT, |v| v == "-1" || v.parse::<i32>().is_ok_and(|x| (1..=9).contains(&x))), "-1", Some("compression.gzip.level"),
        "The gzip level used when the gateway compresses a batch (compression.type=gzip); -1 is the codec's default."),
    def!("compression.lz4.level", Check::Int(1, 17), "9", Some("compression.lz4.level"),
        "Accepted; the gateway's lz4 encoder has one level."),
    def!("compression.type", Check::OneOf(CODECS), "producer", Some("compression.type"),
        "producer: batches are stored as the producer compressed them. uncompressed, gzip, snappy, lz4, zstd: batches in another codec are recompressed to this one before they are stored."),
    def!("compression.zstd.level", Check::Int(-131072, 22), "3", Some("compression.zstd.level"),
        "Accepted; the gateway's zstd encoder has one level."),
    def!("delete.retention.ms", Check::Long(0, MAX), "86400000", Some("log.cleaner.delete.retention.ms"),
        "How long tombstones are kept in a compacted topic."),
    def!("file.delete.delay.ms", Check::Long(0, MAX), "60000", Some("log.segment.delete.delay.ms"),
        "Accepted; no effect: deleted segments' objects are collected by the object garbage collector."),
    def!("flush.messages", Check::Long(1, MAX), MAX, Some("log.flush.interval.messages"),
        "Accepted; no effect: acknowledged data is already in object storage or on a LogStore quorum."),
    def!("flush.ms", Check::Long(0, MAX), MAX, Some("log.flush.interval.ms"),
        "Accepted; no effect: acknowledged data is already in object storage or on a LogStore quorum."),
    def!("follower.replication.throttled.replicas", Check::Custom(kind::LIST, throttled_replicas), "", Some("follower.replication.throttled.replicas"),
        "Accepted; no effect: there is no follower replication."),
    def!("index.interval.bytes", Check::Int(0, IMAX), "4096", Some("log.index.interval.bytes"),
        "Accepted; no effect: each block has its own index entry."),
    def!("leader.replication.throttled.replicas", Check::Custom(kind::LIST, throttled_replicas), "", Some("leader.replication.throttled.replicas"),
        "Accepted; no effect: there is no follower replication."),
    def!("local.retention.bytes", Check::Long(-2, MAX), "-2", Some("log.local.retention.bytes"),
        "Accepted; no effect: no data is kept on local disks."),
    def!("local.retention.ms", Check::Long(-2, MAX), "-2", Some("log.local.retention.ms"),
        "Accepted; no effect: no data is kept on local disks."),
    def!("max.compaction.lag.ms", Check::Long(1, MAX), MAX, Some("log.cleaner.max.compaction.lag.ms"),
        "The longest a record stays uncompacted in a compacted topic."),
    def!("max.message.bytes", Check::Int(0, IMAX), "1048588", Some("message.max.bytes"),
        "The largest record batch accepted (after the topic's compression)."),
    def!("message.timestamp.after.max.ms", Check::Long(0, MAX), "3600000", Some("log.message.timestamp.after.max.ms"),
        "With CreateTime, records timestamped more than this ahead of the gateway's clock are refused (INVALID_TIMESTAMP)."),
    def!("message.timestamp.before.max.ms", Check::Long(0, MAX), MAX, Some("log.message.timestamp.before.max.ms"),
        "With CreateTime, records timestamped more than this behind the gateway's clock are refused (INVALID_TIMESTAMP)."),
    def!("message.timestamp.type", Check::OneOf(&["CreateTime", "LogAppendTime"]), "CreateTime", Some("log.message.timestamp.type"),
        "CreateTime: the producer's timestamps. LogAppendTime: each batch is stamped with the gateway's clock when it is appended."),
    def!("min.cleanable.dirty.ratio", Check::Double(0.0, 1.0), "0.5", Some("log.cleaner.min.cleanable.ratio"),
        "The share of a compacted log that must be uncompacted before compaction runs."),
    def!("min.compaction.lag.ms", Check::Long(0, MAX), "0", Some("log.cleaner.min.compaction.lag.ms"),
        "The shortest a record stays uncompacted in a compacted topic."),
    def!("min.insync.replicas", Check::Int(1, IMAX), "1", Some("min.insync.replicas"),
        "Accepted; no effect: durability comes from object storage (MemoryBuffer) or a 2-of-3 LogStore quorum (QuorumBuffer)."),
    def!("preallocate", Check::Bool, "false", Some("log.preallocate"), "Accepted; no effect: no local segment files."),
    def!("remote.log.copy.disable", Check::Bool, "false", None, "Accepted; no effect: every segment is in object storage."),
    def!("remote.log.delete.on.disable", Check::Bool, "false", None, "Accepted; no effect: every segment is in object storage."),
    def!("remote.storage.enable", Check::Bool, "false", None, "Accepted; no effect: every segment is in object storage."),
    def!("retention.bytes", Check::Long(-1, MAX), "-1", Some("log.retention.bytes"),
        "With cleanup.policy delete, the oldest segments beyond this size per partition are deleted (-1: no limit)."),
    def!("retention.ms", Check::Long(-1, MAX), "604800000", Some("log.retention.ms"),
        "With cleanup.policy delete, segments older than this are deleted (-1: kept)."),
    def!(gateway "segment.bytes", Check::Int(14, IMAX), |w| w.segment_max_bytes.to_string(), Some("log.segment.bytes"),
        "A segment is sealed after this many bytes (the gateway's wal.segment_max_bytes by default)."),
    def!("segment.index.bytes", Check::Int(4, IMAX), "10485760", Some("log.index.size.max.bytes"),
        "Accepted; no effect: the block index is part of each segment's metadata."),
    def!("segment.jitter.ms", Check::Long(0, MAX), "0", Some("log.roll.jitter.ms"), "Accepted; no effect: segments roll by segment.ms."),
    def!(gateway "segment.ms", Check::Long(1, MAX), |w| w.segment_max_age_ms.to_string(), Some("log.roll.ms"),
        "A segment is sealed after this age (the gateway's wal.segment_max_age_ms by default)."),
    def!("unclean.leader.election.enable", Check::Bool, "false", Some("unclean.leader.election.enable"),
        "Accepted; no effect: a partition's new owner always reads the whole acknowledged log."),
    def!(gateway BUFFER_MODE, Check::Custom(kind::STRING, |v| parse_buffer_mode(v).is_some()), |w| buffer_mode_name(w.buffer).into(), None,
        "memory (MemoryBuffer: shared objects, throughput-first) or quorum (QuorumBuffer: LogStore nodes, latency-first; needs etcd). Takes effect when the partition's writer next opens."),
];

pub fn buffer_mode_name(m: wal_core::BufferMode) -> &'static str {
    match m {
        wal_core::BufferMode::Memory => "memory",
        wal_core::BufferMode::Quorum => "quorum",
    }
}

pub fn parse_buffer_mode(v: &str) -> Option<wal_core::BufferMode> {
    match v.trim() {
        "memory" => Some(wal_core::BufferMode::Memory),
        "quorum" => Some(wal_core::BufferMode::Quorum),
        _ => None,
    }
}

pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    CONFIGS.iter().find(|c| c.name == name)
}

pub fn is_removed(name: &str) -> bool {
    REMOVED.contains(&name)
}

/// Checks a set of explicit configs (removed ones already dropped); returns the first problem,
/// worded as Kafka words it.
pub fn validate_configs<'a>(configs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), String> {
    for (k, v) in configs {
        let Some(d) = config_def(k) else { return Err(format!("Unknown topic config name: {k}")) };
        if let Some(why) = d.check.problem(v) {
            return Err(format!("Invalid value {v} for configuration {k}: {why}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_value_sets_and_ranges() {
        let ok = |k: &str, v: &str| validate_configs([(k, v)]).is_ok();
        for codec in CODECS {
            assert!(ok("compression.type", codec), "{codec}");
        }
        assert!(!ok("compression.type", "brotli"));
        assert!(ok("cleanup.policy", "compact"));
        assert!(ok("cleanup.policy", "compact, delete"));
        assert!(!ok("cleanup.policy", "compact,nope"));
        assert!(!ok("cleanup.policy", ""));
        assert!(ok("message.timestamp.type", "LogAppendTime"));
        assert!(!ok("message.timestamp.type", "logappendtime"));
        assert!(ok("retention.ms", " 1000 "));
        assert!(ok("retention.ms", "-1"));
        assert!(!ok("retention.ms", "-2"));
        assert!(!ok("retention.ms", "abc"));
        assert!(ok("local.retention.ms", "-2"));
        assert!(!ok("max.message.bytes", "3000000000"), "past INT");
        assert!(ok("preallocate", "TRUE"));
        assert!(!ok("preallocate", "yes"));
        assert!(ok("min.cleanable.dirty.ratio", "0.1"));
        assert!(!ok("min.cleanable.dirty.ratio", "1.5"));
        assert!(ok("compression.gzip.level", "-1"));
        assert!(!ok("compression.gzip.level", "0"));
        assert!(ok("leader.replication.throttled.replicas", "0:1, 1:2"));
        assert!(ok("leader.replication.throttled.replicas", "*"));
        assert!(!ok("leader.replication.throttled.replicas", "x"));
        assert!(ok(BUFFER_MODE, "quorum"));
        let unknown = validate_configs([("no.such", "1")]).unwrap_err();
        assert_eq!(unknown, "Unknown topic config name: no.such");
        assert!(validate_configs([("message.format.version", "3.0")]).is_err(), "removed configs are dropped before validation");
    }

    #[test]
    fn every_default_is_valid_and_names_are_unique() {
        let wal = WalConfig::default();
        for (i, d) in CONFIGS.iter().enumerate() {
            assert!(d.check.problem(&(d.default)(&wal)).is_none(), "{} default", d.name);
            assert!(CONFIGS[i + 1..].iter().all(|o| o.name != d.name), "{} twice", d.name);
            assert!(!is_removed(d.name));
        }
    }
}
