//! Produce: validate each batch (magic 2, CRC32C, lengths, size limit), check idempotence, write
//! the assigned base offset into the batch header and append it as one wal-core entry; answer
//! once the entries are durable (acks=1/all) or not at all (acks=0).
//!
//! Offset assignment happens in `submit`, which the connection runs in request order; waiting
//! for durability happens in the returned future.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::ResponseError;
use wal_core::log::AppendTicket;
use wal_core::WalError;

use super::Pending;
use crate::batch::{self, BatchError, BatchInfo};
use crate::broker::producer::Check;
use crate::broker::{Broker, Partition};
use crate::metrics as m;

/// What phase 1 decided for one batch.
enum Step {
    Appended {
        ticket: AppendTicket,
    },
    /// A retry of a batch already appended (or still being appended) at `base`.
    Duplicate {
        base: u64,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
    },
}

/// One partition's outcome of phase 1.
struct PartState {
    index: i32,
    partition: Option<Arc<Partition>>,
    steps: Vec<Step>,
    error: Option<ResponseError>,
}

fn batch_error(e: &BatchError) -> ResponseError {
    match e {
        BatchError::Crc => ResponseError::CorruptMessage,
        BatchError::Magic(_) => ResponseError::UnsupportedForMessageFormat,
        BatchError::Truncated | BatchError::Invalid(_) => ResponseError::CorruptMessage,
        BatchError::Record(_) => ResponseError::InvalidRecord,
        BatchError::Timestamp(_) => ResponseError::InvalidTimestamp,
        BatchError::Decompress(_) => ResponseError::CorruptMessage,
        BatchError::TooLarge(_) => ResponseError::MessageTooLarge,
        BatchError::Codec(_) => ResponseError::UnsupportedCompressionType,
    }
}

/// Maps a WAL failure to the Kafka error the client acts on.
pub fn wal_error(e: &WalError) -> ResponseError {
    match e {
        WalError::Fenced { .. } | WalError::Closed | WalError::LogNotFound(_) => ResponseError::NotLeaderOrFollower,
        WalError::InvalidArgument(_) => ResponseError::MessageTooLarge,
        // Definitely not stored: retriable.
        WalError::AppendFailed(_) => ResponseError::NotEnoughReplicas,
        // Unknown outcome: a timeout, which idempotent producers retry with the same sequence.
        _ => ResponseError::RequestTimedOut,
    }
}

async fn submit_partition(
    b: &Broker,
    p: &Arc<Partition>,
    records: Option<bytes::Bytes>,
    max_message_bytes: usize,
) -> (Vec<Step>, Option<ResponseError>) {
    let Some(records) = records else { return (Vec::new(), Some(ResponseError::CorruptMessage)) };
    let batches = match batch::split(&records) {
        Ok(v) => v,
        Err(e) => return (Vec::new(), Some(batch_error(&e))),
    };
    for (data, info) in &batches {
        if data.len() > max_message_bytes || data.len() > b.cfg.wal.max_entry_bytes {
            return (Vec::new(), Some(ResponseError::MessageTooLarge));
        }
        if info.is_transactional() || info.is_control() {
            return (Vec::new(), Some(ResponseError::UnsupportedForMessageFormat));
        }
        if info.is_idempotent() {
            match b.producer_id_issued(info.producer_id).await {
                Ok(true) => {}
                Ok(false) => return (Vec::new(), Some(ResponseError::UnknownProducerId)),
                Err(e) => return (Vec::new(), Some(e)),
            }
        }
    }
    // Compressed records are decompressed (bounded, off this thread) and walked like others.
    for (data, info) in &batches {
        if batch::is_compressed(info) {
            if let Err(e) = batch::compression::validate_off_thread(data.clone(), info.clone()).await {
                return (Vec::new(), Some(batch_error(&e)));
            }
        }
    }
    let Some(writer) = p.writer().filter(|_| b.leads(p)) else {
        return (Vec::new(), Some(ResponseError::NotLeaderOrFollower));
    };
    let epoch = writer.epoch() as i32;
    let mut producers = p.producers.lock().await;
    // Appends at or past the writer's next offset failed (a failed upload resets it to the
    // durable end): their batches go now, before any check, not when their responses are sent.
    producers.rollback_from(writer.written());
    let mut steps = Vec::with_capacity(batches.len());
    for (data, info) in batches {
        if info.is_idempotent() {
            match producers.check(&info) {
                Check::Append => {}
                Check::Duplicate(meta) => {
                    steps.push(Step::Duplicate {
                        base: meta.base_offset,
                        producer_id: info.producer_id,
                        epoch: info.producer_epoch,
                        first_seq: info.base_sequence,
                    });
                    continue;
                }
                Check::Reject(e) => return (steps, Some(e)),
            }
        }
        let len = data.len();
        let ticket = match writer
            .submit_patched(info.offset_count, info.max_timestamp, BytesMut::from(&data[..]), |buf, base| batch::patch(buf, base, epoch))
            .await
        {
            Ok(t) => t,
            Err(e) => return (steps, Some(wal_error(&e))),
        };
        if info.is_idempotent() {
            producers.record(&info, ticket.base_offset, ticket.end_offset);
        }
        metrics::counter!(m::PRODUCE_BYTES_TOTAL).increment(len as u64);
        metrics::counter!(m::TOPIC_PRODUCE_BYTES_TOTAL, "topic" => m::topic_label(&p.topic)).increment(len as u64);
        metrics::counter!(m::PRODUCE_BATCHES_TOTAL).increment(1);
        steps.push(Step::Appended { ticket });
    }
    (steps, None)
}

/// Waits for a partition's appends; returns (error, base offset of the first batch).
async fn complete(b: &Broker, st: PartState) -> (Option<ResponseError>, i64) {
    let p = match (&st.error, &st.partition) {
        (None, Some(p)) => p.clone(),
        (Some(e), Some(p)) => {
            // Batches before the rejected one were appended; wait so they are not orphaned in
            // the producer state, then report the error.
            let _ = wait_steps(b, &p.clone(), st.steps).await;
            return (Some(*e), -1);
        }
        (e, None) => return (Some(e.unwrap_or(ResponseError::UnknownTopicOrPartition)), -1),
    };
    wait_steps(b, &p, st.steps).await
}

async fn wait_steps(b: &Broker, p: &Arc<Partition>, steps: Vec<Step>) -> (Option<ResponseError>, i64) {
    let mut first = -1i64;
    let mut err = None;
    for step in steps {
        let base = match step {
            Step::Duplicate { base, producer_id, epoch, first_seq } => {
                // The first attempt may still be pending, and may fail: then other batches take
                // its offsets. Answer success only when the batch stored at `base` is this one.
                match p.reader.wait_for(base, Duration::from_secs(30)).await {
                    // Below the log start: it was durable (only durable data is truncated).
                    Ok(true) if (base as i64) < p.log_start() => {}
                    Ok(true) => match stored_at(p, base).await {
                        Some(i) if i.producer_id == producer_id && i.producer_epoch == epoch && i.base_sequence == first_seq => {}
                        Some(_) => err = err.or(Some(ResponseError::NotEnoughReplicas)), // it failed: send it again
                        None => err = err.or(Some(ResponseError::RequestTimedOut)),
                    },
                    _ => err = err.or(Some(ResponseError::RequestTimedOut)),
                }
                base
            }
            Step::Appended { ticket } => {
                let base = ticket.base_offset;
                let epoch = p.writer().map(|w| w.epoch()).unwrap_or(0);
                match ticket.durable().await {
                    Ok(_) => {}
                    Err(e) => {
                        err = err.or(Some(wal_error(&e)));
                        // The producer state is not touched here: a surely failed batch was
                        // rolled back by the next submit (the writer's next offset went back),
                        // and after an unknown outcome (the commit may have applied) a retry
                        // must still find it as a duplicate until the reopened writer rolls back
                        // what was not stored. (Forgetting it here also dropped the retry that
                        // had meanwhile been stored at the same offset with the same sequence.)
                        b.append_failed(p, &e, epoch);
                    }
                }
                base
            }
        };
        if first < 0 {
            first = base as i64;
        }
    }
    (err, first)
}

/// The header of the batch stored at `offset` (None when it cannot be read now).
async fn stored_at(p: &Partition, offset: u64) -> Option<BatchInfo> {
    let entries = p.reader.read(offset, 1).await.ok()?;
    entries.into_iter().find(|e| e.offset == offset).and_then(|e| batch::stored_info(&e.data))
}

pub async fn submit(b: Arc<Broker>, v: i16, req: ProduceRequest) -> Pending {
    let acks = req.acks;
    let reject_all = if req.transactional_id.is_some() {
        Some(ResponseError::TransactionalIdAuthorizationFailed)
    } else if !matches!(acks, -1..=1) {
        Some(ResponseError::InvalidRequiredAcks)
    } else {
        None
    };
    let mut topics: Vec<(kafka_protocol::messages::TopicName, Vec<PartState>)> = Vec::with_capacity(req.topic_data.len());
    for td in req.topic_data {
        let topic = b.topic(&td.name.0);
        let max_message_bytes = topic.as_ref().map(|t| t.meta.settings(&b.cfg.wal).max_message_bytes).unwrap_or(0);
        let mut parts = Vec::with_capacity(td.partition_data.len());
        for pd in td.partition_data {
            let partition = topic.as_ref().and_then(|t| usize::try_from(pd.index).ok().and_then(|i| t.partitions.get(i).cloned()));
            let (steps, error) = match (&reject_all, &partition) {
                (Some(e), _) => (Vec::new(), Some(*e)),
                (None, None) => (Vec::new(), Some(ResponseError::UnknownTopicOrPartition)),
                (None, Some(p)) => submit_partition(&b, p, pd.records, max_message_bytes).await,
            };
            parts.push(PartState { index: pd.index, partition, steps, error });
        }
        topics.push((td.name, parts));
    }
    let timeout = Duration::from_millis(req.timeout_ms.max(1000) as u64);
    Box::pin(async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, parts) in topics {
            let mut out = Vec::with_capacity(parts.len());
            for st in parts {
                let index = st.index;
                let p = st.partition.clone();
                let (err, base) = match tokio::time::timeout(timeout, complete(&b, st)).await {
                    Ok(r) => r,
                    Err(_) => (Some(ResponseError::RequestTimedOut), -1),
                };
                let code = err.map(|e| e.code()).unwrap_or(0);
                let mut r = PartitionProduceResponse::default().with_index(index).with_error_code(code).with_base_offset(base);
                if v >= 5 {
                    r.log_start_offset = p.map(|p| p.log_start()).unwrap_or(-1);
                }
                out.push(r);
            }
            responses.push(TopicProduceResponse::default().with_name(name).with_partition_responses(out));
        }
        if acks == 0 {
            return None;
        }
        Some(ResponseKind::Produce(ProduceResponse::default().with_responses(responses)))
    })
}
