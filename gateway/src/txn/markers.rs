//! Delivering a transaction's end: a COMMIT or ABORT marker into every partition of the
//! transaction, and the completion of its pending group offsets. Partitions this gateway leads
//! get their marker directly ([`crate::broker::Partition::write_marker`]); the others' leaders
//! get Kafka's WriteTxnMarkers, sent by this gateway as a client. Group offsets travel the same
//! way as Kafka sends them, as a marker for `__consumer_offsets`, to the group's coordinator.
//! Each delivery is retried a few times (a partition changing owner answers
//! NOT_LEADER_OR_FOLLOWER for a moment); a delivery that still fails leaves the transaction in
//! its Prepare state for the coordinator's next pass. Markers are idempotent on the partition.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::broker::Broker;

/// The pseudo-topic of group offsets in WriteTxnMarkers (Kafka's offsets topic).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
const ATTEMPTS: u32 = 8;
const WRITE_TXN_MARKERS_VERSION: i16 = 1;

pub async fn deliver(
    b: &Broker,
    pid: i64,
    epoch: i16,
    commit: bool,
    partitions: &BTreeSet<(String, i32)>,
    groups: &BTreeSet<String>,
) -> Result<(), ResponseError> {
    let mut left: BTreeSet<(String, i32)> = partitions.iter().filter(|(t, p)| b.partition(t, *p).is_some()).cloned().collect();
    let mut groups_left = groups.clone();
    let mut delay = Duration::from_millis(50);
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
        // Local partitions and groups first, then one WriteTxnMarkers per other gateway.
        let mut remote: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        for (t, p) in left.clone() {
            let Some(part) = b.partition(&t, p) else {
                left.remove(&(t, p)); // deleted meanwhile
                continue;
            };
            if b.leads(&part) {
                if part.write_marker(pid, epoch, commit, true).await.is_ok() {
                    left.remove(&(t, p));
                }
            } else if let Some(owner) = b.cluster.owner(&t, p) {
                remote.entry(owner).or_default().push((t, p));
            }
        }
        for g in groups_left.clone() {
            if b.cluster.coordinates(&g) {
                if b.groups.complete_txn_offsets(pid, commit).await.is_ok() {
                    groups_left.remove(&g);
                }
            } else if let Some(c) = b.cluster.coordinator_of(&g) {
                remote.entry(c.node_id).or_default().push((OFFSETS_TOPIC.to_string(), 0));
            }
        }
        let gateways = b.cluster.advertised();
        for (node, tps) in remote {
            let Some(gw) = gateways.get(&node) else { continue };
            match send(&format!("{}:{}", gw.host, gw.port), pid, epoch, commit, &tps).await {
                Ok(done) => {
                    for tp in done {
                        if tp.0 == OFFSETS_TOPIC {
                            groups_left.retain(|g| b.cluster.coordinator_of(g).map(|c| c.node_id) != Some(node));
                        } else {
                            left.remove(&tp);
                        }
                    }
                }
                Err(e) => tracing::debug!(node, error = %e, "WriteTxnMarkers to another gateway failed; retrying"),
            }
        }
        if left.is_empty() && groups_left.is_empty() {
            return Ok(());
        }
    }
    tracing::warn!(producer_id = pid, partitions = left.len(), groups = groups_left.len(), "transaction markers not all delivered yet");
    Err(ResponseError::CoordinatorLoadInProgress)
}

/// One WriteTxnMarkers round trip; returns the partitions that took the marker.
async fn send(addr: &str, pid: i64, epoch: i16, commit: bool, tps: &[(String, i32)]) -> std::io::Result<Vec<(String, i32)>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in tps {
        by_topic.entry(t).or_default().push(*p);
    }
    let topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            WritableTxnMarkerTopic::default().with_name(TopicName(StrBytes::from_string(t.to_string()))).with_partition_indexes(ps)
        })
        .collect();
    let req = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(pid.into())
        .with_producer_epoch(epoch)
        .with_transaction_result(commit)
        .with_topics(topics)
        .with_coordinator_epoch(0)]);
    let api = ApiKey::WriteTxnMarkers;
    let v = WRITE_TXN_MARKERS_VERSION;
    let bad = |e: anyhow::Error| std::io::Error::other(e.to_string());
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(v)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("gateway-txn-coordinator")))
        .encode(&mut buf, api.request_header_version(v))
        .map_err(bad)?;
    req.encode(&mut buf, v).map_err(bad)?;
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(&(buf.len() as i32).to_be_bytes()).await?;
        s.write_all(&buf).await?;
        let mut size = [0u8; 4];
        s.read_exact(&mut size).await?;
        let len = i32::from_be_bytes(size);
        if !(0..=(16 << 20)).contains(&len) {
            return Err(std::io::Error::other("bad response size"));
        }
        let mut body = vec![0u8; len as usize];
        s.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(10), exchange).await.map_err(|_| std::io::Error::other("timed out"))??;
    let mut b = bytes::Bytes::from(body);
    ResponseHeader::decode(&mut b, api.response_header_version(v)).map_err(bad)?;
    let r = WriteTxnMarkersResponse::decode(&mut b, v).map_err(bad)?;
    let _ = b.remaining();
    let mut done = Vec::new();
    for m in r.markers {
        for t in m.topics {
            for p in t.partitions {
                if p.error_code == 0 {
                    done.push((t.name.0.to_string(), p.partition_index));
                }
            }
        }
    }
    Ok(done)
}
