//! Every metric name the gateway exports (`gateway_<subsystem>_<name>_<unit>`), the Prometheus
//! exporter, and the HTTP endpoint serving `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const REQUESTS_TOTAL: &str = "gateway_requests_total";
pub const REQUEST_SECONDS: &str = "gateway_request_seconds";
pub const CONNECTIONS: &str = "gateway_connections";
pub const CONNECTIONS_TOTAL: &str = "gateway_connections_total";
pub const BYTES_RECEIVED_TOTAL: &str = "gateway_network_received_bytes_total";
pub const BYTES_SENT_TOTAL: &str = "gateway_network_sent_bytes_total";
pub const INFLIGHT_REQUEST_BYTES: &str = "gateway_inflight_request_bytes";
pub const PROTOCOL_ERRORS_TOTAL: &str = "gateway_protocol_errors_total";
/// Connections closed on accept (label `reason`: per_ip).
pub const CONNECTIONS_REFUSED_TOTAL: &str = "gateway_connections_refused_total";
/// Connections closed for a timeout (label `kind`: idle, read, write).
pub const CONNECTION_TIMEOUTS_TOTAL: &str = "gateway_connection_timeouts_total";
pub const PRODUCE_BYTES_TOTAL: &str = "gateway_produce_bytes_total";
pub const PRODUCE_BATCHES_TOTAL: &str = "gateway_produce_batches_total";
pub const FETCH_BYTES_TOTAL: &str = "gateway_fetch_bytes_total";
/// Per topic (label `topic`, bounded by [`MAX_TOPIC_LABELS`]).
pub const TOPIC_PRODUCE_BYTES_TOTAL: &str = "gateway_topic_produce_bytes_total";
pub const TOPIC_FETCH_BYTES_TOTAL: &str = "gateway_topic_fetch_bytes_total";
/// Consumer lag summed over a topic's partitions (labels `group`, `topic`), refreshed at scrape.
pub const GROUP_LAG: &str = "gateway_group_lag";
pub const GROUPS: &str = "gateway_groups";
pub const TOPICS: &str = "gateway_topics";
pub const PARTITIONS: &str = "gateway_partitions";
/// Live gateways in this gateway's view of the cluster.
pub const CLUSTER_MEMBERS: &str = "gateway_cluster_members";
/// Partitions this gateway leads (owns with a live writer).
pub const PARTITIONS_LED: &str = "gateway_partitions_led";
/// Partitions this gateway took over (at start, after a member left or died, or joined).
pub const PARTITION_TAKEOVERS_TOTAL: &str = "gateway_partition_takeovers_total";
/// Compaction, over the compacted partitions this gateway leads (last round): the largest
/// cleanable ratio (dirty bytes / cleanable bytes), the longest wait of a dirty segment, and
/// how many partitions there are. Bytes and records rewritten: wal-core's `wal_compaction_*`.
pub const COMPACTION_CLEANABLE_RATIO: &str = "gateway_compaction_cleanable_ratio";
pub const COMPACTION_LAG_SECONDS: &str = "gateway_compaction_lag_seconds";
pub const COMPACTED_PARTITIONS: &str = "gateway_compacted_partitions";

/// Authentications (labels `listener`; `mechanism`: SASL for a SASL exchange, SSL for a client
/// certificate; `result`: ok, failed).
pub const AUTHENTICATIONS_TOTAL: &str = "gateway_authentications_total";
/// TLS handshakes that failed (label `listener`): untrusted or missing client certificates,
/// plaintext clients on a TLS port.
pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "gateway_tls_handshake_failures_total";
/// Milliseconds of throttling imposed by client quotas (label `kind`: produce, fetch).
pub const THROTTLE_MS_TOTAL: &str = "gateway_quota_throttle_ms_total";
/// Certificate files re-read after a change on disk (label `result`: ok, error).
pub const TLS_RELOADS_TOTAL: &str = "gateway_tls_certificate_reloads_total";

/// Distinct topic label values before further topics are counted as `_other`.
pub const MAX_TOPIC_LABELS: usize = 1000;
/// Distinct (group, topic) lag series exported at most.
pub const MAX_LAG_SERIES: usize = 2000;

pub const ALL: &[&str] = &[
    REQUESTS_TOTAL,
    REQUEST_SECONDS,
    CONNECTIONS,
    CONNECTIONS_TOTAL,
    BYTES_RECEIVED_TOTAL,
    BYTES_SENT_TOTAL,
    INFLIGHT_REQUEST_BYTES,
    PROTOCOL_ERRORS_TOTAL,
    CONNECTION_TIMEOUTS_TOTAL,
    CONNECTIONS_REFUSED_TOTAL,
    PRODUCE_BYTES_TOTAL,
    PRODUCE_BATCHES_TOTAL,
    FETCH_BYTES_TOTAL,
    TOPIC_PRODUCE_BYTES_TOTAL,
    TOPIC_FETCH_BYTES_TOTAL,
    GROUP_LAG,
    GROUPS,
    TOPICS,
    PARTITIONS,
    CLUSTER_MEMBERS,
    PARTITIONS_LED,
    PARTITION_TAKEOVERS_TOTAL,
    COMPACTION_CLEANABLE_RATIO,
    COMPACTION_LAG_SECONDS,
    COMPACTED_PARTITIONS,
    AUTHENTICATIONS_TOTAL,
    TLS_HANDSHAKE_FAILURES_TOTAL,
    TLS_RELOADS_TOTAL,
    THROTTLE_MS_TOTAL,
];

/// The label value for a topic: its name for the first [`MAX_TOPIC_LABELS`] topics seen, then
/// `_other`, so label cardinality stays bounded.
pub fn topic_label(topic: &str) -> String {
    static SEEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> = std::sync::OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if seen.contains(topic) {
        return topic.to_string();
    }
    if seen.len() < MAX_TOPIC_LABELS {
        seen.insert(topic.to_string());
        return topic.to_string();
    }
    "_other".to_string()
}

/// Refreshes the gauges that are computed from broker state (called before each scrape).
pub fn refresh(broker: &crate::Broker) {
    let topics = broker.topics();
    metrics::gauge!(TOPICS).set(topics.len() as f64);
    metrics::gauge!(PARTITIONS).set(topics.iter().map(|t| t.partitions.len()).sum::<usize>() as f64);
    metrics::gauge!(GROUPS).set(broker.groups.group_ids().len() as f64);
    let mut lag: std::collections::BTreeMap<(String, String), i64> = std::collections::BTreeMap::new();
    for row in broker.consumer_lag() {
        *lag.entry((row.group, row.topic)).or_default() += row.lag;
    }
    for ((group, topic), v) in lag.into_iter().take(MAX_LAG_SERIES) {
        metrics::gauge!(GROUP_LAG, "group" => group, "topic" => topic).set(v as f64);
    }
}

/// Installs the Prometheus recorder (once per process) and registers the error and byte
/// counters at zero, so that a dashboard shows 0 rather than "no data" before the first error.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    // Sizes in bytes (blocks, shared objects) and counts (chunks per object) get their own.
    let bytes = [1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 2097152.0, 4194304.0, 8388608.0, 16777216.0, 67108864.0];
    let counts = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
    let handle = PrometheusBuilder::new()
        .set_buckets(&buckets)?
        .set_buckets_for_metric(Matcher::Full(wal_core::metrics::FLUSH_BYTES.into()), &bytes)?
        .set_buckets_for_metric(Matcher::Full(wal_core::metrics::SHARED_OBJECT_BYTES.into()), &bytes)?
        .set_buckets_for_metric(Matcher::Full(wal_core::metrics::SHARED_OBJECT_CHUNKS.into()), &counts)?
        .set_buckets_for_metric(Matcher::Full(wal_core::metrics::META_TXN_MEMBERS.into()), &counts)?
        .install_recorder()?;
    use wal_core::metrics as w;
    for name in [
        w::UPLOAD_ERRORS_TOTAL,
        w::APPEND_ERRORS_TOTAL,
        w::STORAGE_PUT_BYTES_TOTAL,
        w::STORAGE_GET_BYTES_TOTAL,
        w::SEGMENTS_SEALED_TOTAL,
        w::SEGMENTS_DELETED_TOTAL,
        w::SEGMENTS_FLUSHED_TOTAL,
        w::SEGMENT_FLUSH_BYTES_TOTAL,
        w::SHARED_OBJECTS_DELETED_TOTAL,
        w::PREFETCHED_BLOCKS_TOTAL,
        w::LOG_STORAGE_READS_TOTAL,
    ] {
        metrics::counter!(name).increment(0);
    }
    for name in [AUTHENTICATIONS_TOTAL, TLS_HANDSHAKE_FAILURES_TOTAL, THROTTLE_MS_TOTAL] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!(CONNECTIONS).increment(0.0);
    Ok(handle)
}

/// The broker, once open (for gauges refreshed at scrape time).
pub type BrokerSlot = Arc<std::sync::OnceLock<Arc<crate::Broker>>>;

/// Serves `/metrics`, `/healthz` (process alive) and `/readyz` (broker open) over plain HTTP/1.
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    ready: Arc<AtomicBool>,
    broker: BrokerSlot,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        let limit = Arc::new(tokio::sync::Semaphore::new(64));
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { continue };
            let Ok(permit) = limit.clone().try_acquire_owned() else { continue };
            let handle = handle.clone();
            let ready = ready.clone();
            let broker = broker.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                    while n < buf.len() {
                        let k = sock.read(&mut buf[n..]).await?;
                        if k == 0 {
                            break;
                        }
                        n += k;
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    Ok::<_, std::io::Error>(())
                })
                .await;
                if !matches!(read, Ok(Ok(()))) {
                    return;
                }
                let line = String::from_utf8_lossy(&buf[..n]);
                let path = line.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match path {
                    "/metrics" => {
                        if let Some(b) = broker.get() {
                            refresh(b);
                        }
                        ("200 OK", handle.render())
                    }
                    "/healthz" => ("200 OK", "ok\n".to_string()),
                    "/readyz" if ready.load(Ordering::Acquire) => ("200 OK", "ready\n".to_string()),
                    "/readyz" => ("503 Service Unavailable", "not ready\n".to_string()),
                    _ => ("404 Not Found", "not found\n".to_string()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
                drop(permit);
            });
        }
    }))
}
