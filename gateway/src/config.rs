//! The gateway's configuration: one typed TOML file (`--config`), every key with a named default,
//! the common ones overridable by command-line flags and `GATEWAY_*` environment variables,
//! validated at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wal_core::storage::s3::S3Config;
use wal_core::WalConfig;

use crate::security::listeners::{advertised_or, parse_host_port, valid_name, Listener, ListenerConfig};
use crate::security::tls::{ClientAuth, TlsConfig};
use crate::security::SecurityProtocol;

/// Kafka's default `socket.request.max.bytes`.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 << 20;
/// Requests other than Produce carry no record data; they are capped much lower.
pub const DEFAULT_MAX_ADMIN_REQUEST_BYTES: usize = 8 << 20;
/// Bytes of request frames being decoded or handled at once, over all connections.
pub const DEFAULT_MAX_INFLIGHT_REQUEST_BYTES: usize = 512 << 20;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Requests one connection may have in flight (received, response not yet written).
pub const DEFAULT_MAX_INFLIGHT_PER_CONNECTION: usize = 64;
/// Kafka's default `fetch.max.bytes`: the most record bytes one Fetch response carries.
pub const DEFAULT_FETCH_MAX_BYTES: usize = 55 << 20;
/// Largest `fetch_max_bytes` accepted: a response frame's length must fit its i32 prefix with room
/// for the non-record fields.
pub const MAX_FETCH_MAX_BYTES: usize = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// A local directory (`data_dir/objects`).
    Local,
    /// An S3 bucket (see the `s3` table).
    S3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MetadataKind {
    /// The embedded store (`data_dir/meta`), single node.
    Embedded,
    /// An etcd cluster (`etcd_endpoints`); needs the `etcd` build feature.
    Etcd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// This gateway's broker id.
    pub node_id: i32,
    /// Address the Kafka listener binds.
    pub listen: SocketAddr,
    /// host:port clients are told to connect to; `listen` when empty.
    pub advertised_listener: String,
    /// The main listener's name and security protocol (Kafka's listener name and
    /// `listener.security.protocol.map` entry for `listen`). Gateways call each other (WriteTxnMarkers) on it.
    pub listener_name: String,
    pub listener_protocol: SecurityProtocol,
    /// More listeners, each `{ name, listen, advertised, protocol }`.
    pub listeners: Vec<ListenerConfig>,
    /// What SSL and SASL_SSL listeners serve.
    pub tls: TlsConfig,
    /// What SASL_PLAINTEXT and SASL_SSL listeners accept.
    pub sasl: SaslConfig,
    /// Kafka's `super.users`: principals (`User:name`) allowed everything. Without the
    /// authorizer, SCRAM credential management is theirs when any are named.
    pub super_users: Vec<String>,
    /// ACL enforcement (the `[acl]` table).
    pub acl: crate::security::acl::AclConfig,
    /// Rack reported in metadata, if any.
    pub rack: Option<String>,
    /// Address of the HTTP endpoint serving /metrics, /healthz and /readyz.
    pub metrics_listen: SocketAddr,
    /// The cluster id reported to clients.
    pub cluster_id: String,
    /// Local state for the local storage and embedded metadata backends.
    pub data_dir: PathBuf,
    pub storage: StorageKind,
    pub s3: S3Config,
    pub metadata: MetadataKind,
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of everything this cluster keeps in etcd.
    pub etcd_root: String,
    /// Whether Metadata requests create unknown topics (Produce to one gets
    /// UNKNOWN_TOPIC_OR_PARTITION, and the client's next Metadata creates it).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, and of CreateTopics with num_partitions = -1.
    pub default_partitions: i32,
    pub max_request_bytes: usize,
    pub max_admin_request_bytes: usize,
    pub max_inflight_request_bytes: usize,
    pub max_connections: usize,
    pub max_inflight_per_connection: usize,
    /// The most record bytes one Fetch response carries, whatever the request asks.
    pub fetch_max_bytes: usize,
    /// Longest a request frame's bytes may stop arriving (its header once the size prefix came,
    /// its body once admitted); then the connection is closed, so a peer sending half a frame
    /// cannot hold memory or budget longer.
    pub request_read_timeout_ms: u64,
    /// Longest a response write may make no progress (a peer that stops reading); then the
    /// connection is closed and what its requests held is released.
    pub response_write_timeout_ms: u64,
    /// Kafka's `connections.max.idle.ms`: a connection with nothing in flight that sends nothing
    /// for this long is closed.
    pub connections_max_idle_ms: u64,
    /// How often retention is enforced.
    pub retention_check_interval_ms: u64,
    /// Kafka's `log.cleaner.backoff.ms`: how often the compactor looks at the compacted
    /// partitions this gateway leads.
    pub compaction_check_interval_ms: u64,
    /// Keys one compaction pass maps (Kafka's `log.cleaner.dedupe.buffer.size`, counted in keys:
    /// about 48 bytes of memory each).
    pub compaction_max_keys: usize,
    /// Kafka's `producer.id.expiration.ms`: an idempotent producer whose newest batch is older
    /// than this is forgotten (its next batch starts afresh at sequence 0).
    pub producer_id_expiration_ms: u64,
    /// Kafka's `group.consumer.session.timeout.ms`: a KIP-848 member silent this long is removed.
    pub group_consumer_session_timeout_ms: u64,
    /// Kafka's `group.consumer.heartbeat.interval.ms`: how often KIP-848 members heartbeat.
    pub group_consumer_heartbeat_interval_ms: u64,
    /// Kafka's `group.max.size`: members a consumer group may have (pending member ids count).
    pub group_max_size: usize,
    /// Consumer groups with members one gateway coordinates at most; JoinGroup for another new
    /// group gets COORDINATOR_NOT_AVAILABLE (retriable) until some group empties.
    pub max_groups: usize,
    /// Kafka's `offsets.retention.minutes`, in ms: committed offsets of a group without members
    /// are deleted once they are this old (measured from their commit).
    pub offsets_retention_ms: u64,
    /// Connections one client address may hold open (Kafka's `max.connections.per.ip`).
    pub max_connections_per_ip: usize,
    /// Kafka's group.initial.rebalance.delay.ms: a new group waits this long for more members.
    pub group_initial_rebalance_delay_ms: u64,
    /// Lease of this gateway's cluster registration: a gateway silent this long is taken over.
    pub cluster_lease_ttl_secs: i64,
    /// How often the gateway renews, reads membership and moves partitions.
    pub cluster_poll_ms: u64,
    /// Longest a graceful shutdown (SIGTERM: hand partitions over, flush, leave) may take; then
    /// the process exits without finishing, as after a crash. Within Kubernetes' default 30 s
    /// termination grace period by default.
    pub shutdown_timeout_ms: u64,
    /// The WAL: `wal.buffer = "memory" | "quorum"`, flush and segment settings, and
    /// `wal.quorum` (ensemble_size, write_quorum, ack_quorum, ...) for QuorumBuffer mode.
    pub wal: WalConfig,
    /// The `logstore` subcommand (a QuorumBuffer node); it uses the storage and metadata above.
    pub logstore: LogStoreConfig,
}

/// A LogStore node's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogStoreConfig {
    /// Address of the replication listener.
    pub listen: SocketAddr,
    /// Unique, stable name of the node (its registration key).
    pub node_id: String,
    /// host:port writers connect to [default: the listen address].
    pub advertise: String,
    /// Bytes of not-yet-stored blocks held before appends are refused.
    pub max_held_bytes: usize,
    /// A replica uploads a block itself once it is this old and not known stored.
    pub takeover_ms: u64,
    pub lease_ttl_secs: i64,
    /// Directory of the node's local journal: every append and fence is fsync'd there before it
    /// is acknowledged, and a restarted node comes back holding it. Empty: memory only.
    pub data_dir: String,
    /// Shared-object PUTs per second this node makes while its objects are not full; 0 takes
    /// the process's `wal.put_budget_per_sec`. Every node of an ensemble uploads, so a QuorumBuffer
    /// cluster's PUT rate is the sum over its nodes: size this to the share each should have.
    pub put_budget_per_sec: u32,
}

impl Default for LogStoreConfig {
    fn default() -> Self {
        LogStoreConfig {
            listen: "127.0.0.1:9700".parse().expect("valid"),
            node_id: "logstore-0".into(),
            advertise: String::new(),
            max_held_bytes: wal_core::logstore::node::DEFAULT_MAX_HELD_BYTES,
            takeover_ms: wal_core::logstore::node::DEFAULT_TAKEOVER_MS,
            lease_ttl_secs: wal_core::logstore::node::DEFAULT_LEASE_TTL_SECS,
            data_dir: String::new(),
            put_budget_per_sec: 0,
        }
    }
}

impl LogStoreConfig {
    pub fn node_config(&self) -> wal_core::logstore::NodeConfig {
        let mut c = wal_core::logstore::NodeConfig::new(self.node_id.clone());
        c.advertise = (!self.advertise.is_empty()).then(|| self.advertise.clone());
        c.max_held_bytes = self.max_held_bytes;
        c.takeover_ms = self.takeover_ms;
        c.lease_ttl_secs = self.lease_ttl_secs;
        c.data_dir = (!self.data_dir.is_empty()).then(|| PathBuf::from(&self.data_dir));
        c
    }

    /// The node's shared-object settings: the process's `wal.*` ones, with this node's PUT budget.
    pub fn object_limits(&self, wal: &WalConfig) -> wal_core::config::ObjectLimits {
        let mut o = wal.object_limits();
        if self.put_budget_per_sec > 0 {
            o.put_budget_per_sec = self.put_budget_per_sec;
        }
        o
    }
}

/// The `[sasl]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SaslConfig {
    /// Kafka's `sasl.enabled.mechanisms`: any of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER.
    pub mechanisms: Vec<String>,
    /// Users with a password (name = password), e.g. the first administrator; they log in with
    /// every mechanism. More users are SCRAM credentials made by AlterUserScramCredentials.
    pub users: BTreeMap<String, String>,
    /// A TOML file of more `name = "password"` lines (a mounted Secret), read at start-up.
    pub users_file: Option<PathBuf>,
    /// Kafka's `connections.max.reauth.ms`: a session's lifetime (KIP-368); 0: unlimited.
    pub connections_max_reauth_ms: u64,
    /// Kafka's `connection.failed.authentication.delay.ms`: how long a refused client waits for
    /// its answer before the connection closes.
    pub failed_authentication_delay_ms: u64,
    /// OAUTHBEARER token validation (when `mechanisms` has OAUTHBEARER).
    pub oauthbearer: crate::security::sasl::oauthbearer::OauthConfig,
}

impl Default for SaslConfig {
    fn default() -> Self {
        SaslConfig {
            mechanisms: crate::security::sasl::DEFAULT_MECHANISMS.iter().map(|m| m.to_string()).collect(),
            users: BTreeMap::new(),
            users_file: None,
            connections_max_reauth_ms: 0,
            failed_authentication_delay_ms: 100,
            oauthbearer: Default::default(),
        }
    }
}

impl SaslConfig {
    /// The configured users and those of `users_file`.
    pub fn all_users(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut users = self.users.clone();
        if let Some(f) = &self.users_file {
            let text = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("sasl.users_file {}: {e}", f.display()))?;
            let more: BTreeMap<String, String> =
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("sasl.users_file {}: {e}", f.display()))?;
            users.extend(more);
        }
        Ok(users)
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            node_id: 0,
            listen: "127.0.0.1:9092".parse().expect("valid"),
            advertised_listener: String::new(),
            listener_name: "PLAINTEXT".into(),
            listener_protocol: SecurityProtocol::Plaintext,
            listeners: Vec::new(),
            tls: TlsConfig::default(),
            sasl: SaslConfig::default(),
            super_users: Vec::new(),
            acl: Default::default(),
            rack: None,
            metrics_listen: "127.0.0.1:9644".parse().expect("valid"),
            cluster_id: "wal-gateway".into(),
            data_dir: PathBuf::from("./data"),
            storage: StorageKind::Local,
            s3: S3Config::default(),
            metadata: MetadataKind::Embedded,
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            etcd_root: "/wal-gateway".into(),
            auto_create_topics: true,
            default_partitions: 1,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_admin_request_bytes: DEFAULT_MAX_ADMIN_REQUEST_BYTES,
            max_inflight_request_bytes: DEFAULT_MAX_INFLIGHT_REQUEST_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_inflight_per_connection: DEFAULT_MAX_INFLIGHT_PER_CONNECTION,
            fetch_max_bytes: DEFAULT_FETCH_MAX_BYTES,
            request_read_timeout_ms: 30_000,
            response_write_timeout_ms: 30_000,
            connections_max_idle_ms: 600_000,
            retention_check_interval_ms: 10_000,
            compaction_check_interval_ms: 15_000,
            compaction_max_keys: 2 << 20,
            group_initial_rebalance_delay_ms: 3_000,
            group_max_size: 1000,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            max_groups: 100_000,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            producer_id_expiration_ms: 86_400_000,
            max_connections_per_ip: 1000,
            cluster_lease_ttl_secs: 6,
            shutdown_timeout_ms: 25_000,
            cluster_poll_ms: 500,
            wal: WalConfig::default(),
            logstore: LogStoreConfig::default(),
        }
    }
}

impl GatewayConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.node_id >= 0, "node_id must be >= 0");
        anyhow::ensure!(self.default_partitions >= 1, "default_partitions must be >= 1");
        anyhow::ensure!(self.max_request_bytes >= 1024, "max_request_bytes must be >= 1024");
        anyhow::ensure!(
            self.max_admin_request_bytes >= 1024 && self.max_admin_request_bytes <= self.max_request_bytes,
            "max_admin_request_bytes must be in 1024..=max_request_bytes"
        );
        anyhow::ensure!(
            self.max_inflight_request_bytes >= self.max_request_bytes,
            "max_inflight_request_bytes must be >= max_request_bytes"
        );
        anyhow::ensure!(self.max_connections >= 1 && self.max_inflight_per_connection >= 1, "connection limits must be >= 1");
        anyhow::ensure!(self.group_max_size >= 1, "group_max_size must be >= 1");
        anyhow::ensure!(
            (1000..=1_800_000).contains(&self.group_consumer_session_timeout_ms),
            "group_consumer_session_timeout_ms must be in 1000..=1800000"
        );
        anyhow::ensure!(
            self.group_consumer_heartbeat_interval_ms >= 100
                && self.group_consumer_heartbeat_interval_ms < self.group_consumer_session_timeout_ms,
            "group_consumer_heartbeat_interval_ms must be >= 100 and below group_consumer_session_timeout_ms"
        );
        anyhow::ensure!(self.max_groups >= 1, "max_groups must be >= 1");
        anyhow::ensure!(self.offsets_retention_ms >= 1000, "offsets_retention_ms must be >= 1000");
        anyhow::ensure!(self.producer_id_expiration_ms >= 1000, "producer_id_expiration_ms must be >= 1000");
        anyhow::ensure!(self.max_connections_per_ip >= 1, "max_connections_per_ip must be >= 1");
        anyhow::ensure!(
            (1024..=MAX_FETCH_MAX_BYTES).contains(&self.fetch_max_bytes),
            "fetch_max_bytes must be in 1024..={MAX_FETCH_MAX_BYTES}"
        );
        for (name, v) in [
            ("request_read_timeout_ms", self.request_read_timeout_ms),
            ("response_write_timeout_ms", self.response_write_timeout_ms),
            ("connections_max_idle_ms", self.connections_max_idle_ms),
        ] {
            anyhow::ensure!((100..=86_400_000).contains(&v), "{name} must be in 100..=86400000");
        }
        anyhow::ensure!(!self.cluster_id.is_empty(), "cluster_id must not be empty");
        anyhow::ensure!(self.retention_check_interval_ms > 0, "retention_check_interval_ms must be > 0");
        anyhow::ensure!(self.compaction_check_interval_ms > 0, "compaction_check_interval_ms must be > 0");
        anyhow::ensure!(self.compaction_max_keys >= 1024, "compaction_max_keys must be >= 1024");
        anyhow::ensure!((2..=300).contains(&self.cluster_lease_ttl_secs), "cluster_lease_ttl_secs must be in 2..=300");
        anyhow::ensure!(
            self.cluster_poll_ms >= 50 && self.cluster_poll_ms * 3 <= self.cluster_lease_ttl_secs as u64 * 1000,
            "cluster_poll_ms must be >= 50 and at most a third of the lease TTL"
        );
        anyhow::ensure!((100..=3_600_000).contains(&self.shutdown_timeout_ms), "shutdown_timeout_ms must be in 100..=3600000");
        if !self.advertised_listener.is_empty() {
            let (h, p) =
                self.advertised_listener.rsplit_once(':').ok_or_else(|| anyhow::anyhow!("advertised_listener must be host:port"))?;
            anyhow::ensure!(!h.is_empty() && p.parse::<u16>().is_ok(), "advertised_listener must be host:port");
        }
        self.validate_listeners()?;
        if self.storage == StorageKind::S3 {
            self.s3.validate().map_err(|e| anyhow::anyhow!(e))?;
        }
        if self.metadata == MetadataKind::Etcd {
            anyhow::ensure!(!self.etcd_endpoints.is_empty(), "etcd_endpoints must not be empty");
        }
        self.wal.validate()?;
        if self.wal.buffer == wal_core::BufferMode::Quorum {
            anyhow::ensure!(
                self.metadata == MetadataKind::Etcd,
                "wal.buffer = \"quorum\" needs metadata = \"etcd\" (LogStore nodes register there)"
            );
        }
        self.logstore.node_config().validate()?;
        Ok(())
    }

    fn validate_listeners(&self) -> anyhow::Result<()> {
        let mut names = vec![self.listener_name.to_uppercase()];
        let mut addrs = vec![self.listen];
        anyhow::ensure!(valid_name(&self.listener_name), "listener_name must be letters, digits, '_' or '-'");
        for l in &self.listeners {
            anyhow::ensure!(valid_name(&l.name), "listener name {:?} must be letters, digits, '_' or '-'", l.name);
            anyhow::ensure!(!names.contains(&l.name.to_uppercase()), "listener name {} is used twice", l.name);
            anyhow::ensure!(l.listen.port() == 0 || !addrs.contains(&l.listen), "listener {} binds {} twice", l.name, l.listen);
            anyhow::ensure!(
                l.advertised.is_empty() || parse_host_port(&crate::security::listeners::expand_env(&l.advertised)).is_some(),
                "listener {}: advertised must be host:port",
                l.name
            );
            names.push(l.name.to_uppercase());
            addrs.push(l.listen);
        }
        let protocols: Vec<SecurityProtocol> = self.listener_specs().iter().map(|(l, _)| l.protocol).collect();
        if protocols.iter().any(|p| p.tls()) {
            anyhow::ensure!(
                self.tls.cert_file.is_some() && self.tls.key_file.is_some(),
                "an SSL or SASL_SSL listener needs tls.cert_file and tls.key_file"
            );
            anyhow::ensure!(self.tls.client_auth == ClientAuth::None || self.tls.ca_file.is_some(), "tls.client_auth needs tls.ca_file");
            anyhow::ensure!((100..=600_000).contains(&self.tls.handshake_timeout_ms), "tls.handshake_timeout_ms must be in 100..=600000");
            anyhow::ensure!(self.tls.reload_check_ms >= 100, "tls.reload_check_ms must be >= 100");
            crate::security::principal::MappingRules::parse(&self.tls.principal_mapping_rules)
                .map_err(|e| anyhow::anyhow!("tls.principal_mapping_rules: {e}"))?;
        }
        if protocols.iter().any(|p| p.sasl()) {
            anyhow::ensure!(!self.sasl.mechanisms.is_empty(), "a SASL listener needs sasl.mechanisms");
            for m in &self.sasl.mechanisms {
                anyhow::ensure!(
                    crate::security::sasl::MECHANISMS.contains(&m.as_str()),
                    "sasl.mechanisms: {m} is not one of {:?}",
                    crate::security::sasl::MECHANISMS
                );
            }
            anyhow::ensure!(self.sasl.failed_authentication_delay_ms <= 60_000, "sasl.failed_authentication_delay_ms must be <= 60000");
            anyhow::ensure!(
                self.sasl.connections_max_reauth_ms == 0 || self.sasl.connections_max_reauth_ms >= 1000,
                "sasl.connections_max_reauth_ms must be 0 or >= 1000"
            );
        }
        anyhow::ensure!(self.acl.poll_ms >= 50, "acl.poll_ms must be >= 50");
        for u in &self.super_users {
            anyhow::ensure!(u.starts_with("User:") && u.len() > 5, "super_users: {u:?} must be User:name");
        }
        Ok(())
    }

    /// Every listener with the address it binds: the main one first.
    pub fn listener_specs(&self) -> Vec<(Listener, SocketAddr)> {
        let (host, port) = self.advertised();
        let mut out = vec![(Listener { name: self.listener_name.clone(), protocol: self.listener_protocol, host, port }, self.listen)];
        for l in &self.listeners {
            let (host, port) = advertised_or(&l.advertised, l.listen);
            out.push((Listener { name: l.name.clone(), protocol: l.protocol, host, port }, l.listen));
        }
        out
    }

    /// The host and port clients should connect to.
    pub fn advertised(&self) -> (String, i32) {
        if let Some((h, p)) = self.advertised_listener.rsplit_once(':') {
            if let Ok(p) = p.parse::<u16>() {
                return (h.to_string(), p as i32);
            }
        }
        (self.listen.ip().to_string(), self.listen.port() as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logstore_node_takes_its_own_put_budget_or_the_process_one() {
        let mut c = GatewayConfig::default();
        assert_eq!(c.logstore.object_limits(&c.wal).put_budget_per_sec, c.wal.put_budget_per_sec);
        c.logstore.put_budget_per_sec = 7;
        let o = c.logstore.object_limits(&c.wal);
        assert_eq!(o.put_budget_per_sec, 7);
        assert_eq!(o.max_inflight_objects, c.wal.object_limits().max_inflight_objects, "the rest is the process's");
        let parsed: GatewayConfig = toml::from_str("[logstore]\nput_budget_per_sec = 12\n").unwrap();
        assert_eq!(parsed.logstore.put_budget_per_sec, 12);
    }
}
