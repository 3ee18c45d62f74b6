//! Fetch: serves stored batches as they are (no re-encoding), up to the partition and response
//! byte limits (always at least one batch for the first partition with data, as KIP-74 says),
//! with long polling on `max_wait_ms` / `min_bytes` woken by durability notifications.
//! Fetch sessions are not kept: session id 0 tells clients to send full fetches.
//!
//! Bounds: the response's record bytes are at most the request's `max_bytes` and the gateway's
//! `fetch_max_bytes` (the first batch included: KIP-74's oversized first batch is still one
//! batch, at most `wal.max_entry_bytes`); a partition named twice is served once (its first
//! occurrence), so a small request cannot ask for the same bytes thousands of times.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::select_all;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::ResponseError;
use wal_core::WalError;

use super::s;
use crate::broker::{Broker, Partition};
use crate::metrics as m;
use crate::security::acl::{op, Access};

/// Longest long poll honoured, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// How a request names a topic (by name before v13, by id from v13).
#[derive(Clone, PartialEq, Eq, Hash)]
enum TopicKey {
    Name(kafka_protocol::protocol::StrBytes),
    Id(uuid::Uuid),
}

struct Want {
    partition: Option<Arc<Partition>>,
    index: i32,
    offset: i64,
    max_bytes: usize,
    /// Why this gateway cannot serve the partition (not its leader, or another leader epoch).
    refused: Option<ResponseError>,
    /// The principal may not READ the topic.
    denied: bool,
    unknown: ResponseError,
}

async fn read_one(w: &Want, budget: &mut usize, first: &mut bool, v: i16, committed: bool) -> PartitionData {
    let mut d = PartitionData::default().with_partition_index(w.index).with_high_watermark(-1);
    if v >= 4 {
        d.last_stable_offset = -1;
        d.aborted_transactions = Some(Vec::new());
    }
    if v >= 5 {
        d.log_start_offset = -1;
    }
    if w.denied {
        return d.with_error_code(ResponseError::TopicAuthorizationFailed.code());
    }
    let Some(p) = &w.partition else { return d.with_error_code(w.unknown.code()) };
    let hw = p.high_watermark();
    d.high_watermark = hw;
    let lso = p.last_stable_offset();
    if v >= 4 {
        d.last_stable_offset = lso;
    }
    // read_committed: nothing at or past the last stable offset
    let visible_end = if committed { lso } else { hw };
    if v >= 5 {
        d.log_start_offset = p.log_start();
    }
    if let Some(e) = w.refused {
        return d.with_error_code(e.code());
    }
    if w.offset < 0 || w.offset < p.log_start() || w.offset > hw {
        return d.with_error_code(ResponseError::OffsetOutOfRange.code());
    }
    // The first batch comes whatever its size (KIP-74): a limit of 1 reads exactly one.
    let limit = if *first { w.max_bytes.min(*budget).max(1) } else { w.max_bytes.min(*budget) };
    if limit == 0 || w.offset >= visible_end {
        return d.with_records(Some(Bytes::new()));
    }
    match p.reader.read(w.offset as u64, limit).await {
        Ok(mut entries) => {
            entries.retain(|e| (e.offset as i64) < visible_end);
            // The log returns at least one entry; past the first non-empty partition only what
            // fits counts, so the response stays within fetch.max.bytes (librdkafka's 0082).
            if !*first {
                let mut sum = 0;
                let fits = entries.iter().take_while(|e| {
                    sum += e.data.len();
                    sum <= limit
                });
                let n = fits.count();
                entries.truncate(n);
            }
            let total: usize = entries.iter().map(|e| e.data.len()).sum();
            if committed {
                // the aborted transactions the returned range overlaps, so the consumer drops
                // their records (KIP-98)
                let to = entries.last().map(|e| e.end_offset()).unwrap_or(w.offset as u64);
                let aborted = wal_core::util::lock(&p.txns).aborted_in(w.offset as u64, to);
                d.aborted_transactions = Some(
                    aborted
                        .into_iter()
                        .map(|(pid, first)| {
                            kafka_protocol::messages::fetch_response::AbortedTransaction::default()
                                .with_producer_id(pid.into())
                                .with_first_offset(first as i64)
                        })
                        .collect(),
                );
            }
            let records = if entries.len() == 1 {
                entries.into_iter().next().map(|e| e.data).unwrap_or_default()
            } else {
                let mut buf = BytesMut::with_capacity(total);
                for e in &entries {
                    buf.extend_from_slice(&e.data);
                }
                buf.freeze()
            };
            if total > 0 {
                *first = false;
            }
            *budget = budget.saturating_sub(total);
            metrics::counter!(m::FETCH_BYTES_TOTAL).increment(total as u64);
            metrics::counter!(m::TOPIC_FETCH_BYTES_TOTAL, "topic" => m::topic_label(&p.topic)).increment(total as u64);
            d.with_records(Some(records))
        }
        Err(WalError::OffsetOutOfRange { .. }) => d.with_error_code(ResponseError::OffsetOutOfRange.code()),
        Err(e) => {
            tracing::warn!(log = %p.log, error = %e, "fetch read failed");
            d.with_error_code(ResponseError::KafkaStorageError.code())
        }
    }
}

pub async fn handle(b: Arc<Broker>, v: i16, req: FetchRequest, access: Access) -> FetchResponse {
    let by_id = v >= 13;
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut seen: HashSet<(TopicKey, i32)> = HashSet::new();
    for t in &req.topics {
        let topic = if by_id { b.topic_by_id(t.topic_id) } else { b.topic(&t.topic.0) };
        let unknown = if by_id { ResponseError::UnknownTopicId } else { ResponseError::UnknownTopicOrPartition };
        let key = if by_id { TopicKey::Id(t.topic_id) } else { TopicKey::Name(t.topic.0.clone()) };
        let denied = !access.topic(op::READ, topic.as_ref().map_or(&*t.topic.0, |t| t.meta.name.as_str()));
        let wants: Vec<Want> = t
            .partitions
            .iter()
            .filter(|fp| seen.insert((key.clone(), fp.partition)))
            .map(|fp| {
                let partition = topic.as_ref().and_then(|t| usize::try_from(fp.partition).ok().and_then(|i| t.partitions.get(i).cloned()));
                let requested = if v >= 9 { fp.current_leader_epoch } else { -1 };
                Want {
                    refused: partition.as_ref().and_then(|p| b.leader_epoch_error(p, requested)),
                    denied,
                    partition,
                    index: fp.partition,
                    offset: fp.fetch_offset,
                    max_bytes: fp.partition_max_bytes.max(0) as usize,
                    unknown,
                }
            })
            .collect();
        if wants.is_empty() && !t.partitions.is_empty() {
            continue; // every partition of this entry was named before
        }
        topics.push((t.topic.clone(), t.topic_id, wants));
    }
    let asked = if req.max_bytes <= 0 { usize::MAX } else { req.max_bytes as usize };
    let max_bytes = asked.min(b.cfg.fetch_max_bytes);
    let min_bytes = req.min_bytes.max(0) as usize;
    let committed = v >= 4 && req.isolation_level == 1;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    loop {
        let mut budget = max_bytes;
        let mut first = true;
        let mut responses = Vec::with_capacity(topics.len());
        let mut errors = false;
        for (name, id, wants) in &topics {
            let mut parts = Vec::with_capacity(wants.len());
            for w in wants {
                let d = read_one(w, &mut budget, &mut first, v, committed).await;
                errors |= d.error_code != 0;
                parts.push(d);
            }
            let mut r = FetchableTopicResponse::default().with_partitions(parts);
            if by_id {
                r.topic_id = *id;
            } else {
                r.topic = TopicName(s(name.0.to_string()));
            }
            responses.push(r);
        }
        let sent = max_bytes.saturating_sub(budget);
        let now = tokio::time::Instant::now();
        if sent >= min_bytes.max(1) || errors || now >= deadline {
            return FetchResponse::default().with_responses(responses);
        }
        // Long poll: wake when any requested partition gets new durable data.
        let waits: Vec<_> = topics
            .iter()
            .flat_map(|(_, _, w)| w.iter())
            .filter_map(|w| w.partition.clone().map(|p| (p, w.offset)))
            .map(|(p, off)| {
                let left = deadline.saturating_duration_since(now);
                Box::pin(async move {
                    let target = (off.max(0) as u64).max(p.reader.durable_end());
                    let _ = p.reader.wait_for(target, left).await;
                })
            })
            .collect();
        if waits.is_empty() {
            tokio::time::sleep_until(deadline).await;
        } else {
            let _ = tokio::time::timeout_at(deadline, select_all(waits)).await;
        }
    }
}
