//! Produce: validate each batch (magic 2, CRC32C, lengths, size limit), check idempotence and
//! the topic's batch rules (timestamps, keys of a compacted topic; recompression and
//! LogAppendTime, [`crate::batch::rewrite`]), write the assigned base offset into the batch
//! header and append it as one wal-core entry; answer once the entries are durable (acks=1/all)
//! or not at all (acks=0). A refused batch's error carries KIP-467's message and record indexes.
//!
//! Offset assignment happens in `submit`, which the connection runs in request order; waiting
//! for durability happens in the returned future.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::ResponseError;
use wal_core::log::AppendTicket;
use wal_core::WalError;

use super::Pending;
use crate::batch::{self, rewrite, BatchError, BatchInfo};
use crate::broker::producer::Check;
use crate::broker::topics::TopicSettings;
use crate::broker::{Broker, Partition};
use crate::metrics as m;
use crate::security::acl::{op, Access};

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
    /// Why, and which records of the refused batch (KIP-467's record errors).
    detail: Option<(String, Vec<i32>)>,
    /// The LogAppendTime stamped on the batches (-1: CreateTime).
    append_time: i64,
}

/// What phase 1 of one partition returns besides its steps.
#[derive(Default)]
struct Outcome {
    error: Option<ResponseError>,
    detail: Option<(String, Vec<i32>)>,
    append_time: Option<i64>,
}

impl From<ResponseError> for Outcome {
    fn from(e: ResponseError) -> Outcome {
        Outcome { error: Some(e), ..Outcome::default() }
    }
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
        BatchError::NullKey => ResponseError::InvalidRecord,
    }
}

/// The Kafka error of a refused batch, with KIP-467's message and record indexes.
fn refused(e: &BatchError, info: Option<&BatchInfo>, topic: &str, partition: i32) -> Outcome {
    let detail = match (e, info.and_then(|i| i.records.as_ref())) {
        (BatchError::NullKey, Some(r)) => Some((
            format!("Compacted topic cannot accept message without key in topic partition {topic}-{partition}."),
            r.null_keys.iter().map(|&i| i as i32).collect(),
        )),
        _ => Some((e.to_string(), Vec::new())),
    };
    Outcome { error: Some(batch_error(e)), detail, append_time: None }
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
    settings: &TopicSettings,
    txn: Option<&str>,
) -> (Vec<Step>, Outcome) {
    let Some(records) = records else { return (Vec::new(), ResponseError::CorruptMessage.into()) };
    let mut batches = match batch::split(&records) {
        Ok(v) => v,
        Err(e) => return (Vec::new(), refused(&e, None, &p.topic, p.index)),
    };
    let max_bytes = settings.max_message_bytes.min(b.cfg.wal.max_entry_bytes);
    let rules = settings.batch;
    let now = wal_core::util::now_ms() as i64;
    for (data, info) in &batches {
        if let Err(e) = rewrite::check_header(info, &rules, now) {
            return (Vec::new(), refused(&e, Some(info), &p.topic, p.index));
        }
        if data.len() > max_bytes {
            return (Vec::new(), ResponseError::MessageTooLarge.into());
        }
        if info.is_control() {
            // markers are the transaction coordinator's to write
            return (Vec::new(), ResponseError::InvalidRecord.into());
        }
        if info.is_transactional() {
            if let Err(e) = b.txns.verify_produce(txn, info.producer_id, info.producer_epoch, &p.topic, p.index) {
                return (Vec::new(), e.into());
            }
        }
        if info.is_idempotent() {
            match b.producer_id_issued(info.producer_id).await {
                Ok(true) => {}
                Ok(false) => return (Vec::new(), ResponseError::UnknownProducerId.into()),
                Err(e) => return (Vec::new(), e.into()),
            }
        }
    }
    // Compressed records are decompressed (bounded, off this thread) and walked like others;
    // then every batch meets the topic's rules, and is rewritten where they ask for it.
    for (data, info) in &mut batches {
        if info.records.is_none() {
            match batch::compression::validate_off_thread(data.clone(), info.clone()).await {
                Ok(stats) => info.records = Some(stats),
                Err(e) => return (Vec::new(), refused(&e, Some(&*info), &p.topic, p.index)),
            }
        }
        let stats = info.records.as_ref().expect("walked");
        if let Err(e) = rewrite::check(info, stats, &rules, settings.compact, now) {
            return (Vec::new(), refused(&e, Some(&*info), &p.topic, p.index));
        }
        if rewrite::needed(info, &rules) {
            match rewrite::rewrite_off_thread(data.clone(), info.clone(), rules, now).await {
                Ok((d, i)) if d.len() <= max_bytes => (*data, *info) = (d, i),
                Ok(_) => return (Vec::new(), ResponseError::MessageTooLarge.into()),
                Err(e) => return (Vec::new(), refused(&e, Some(&*info), &p.topic, p.index)),
            }
        }
    }
    let outcome = |error: Option<ResponseError>| Outcome { error, detail: None, append_time: rules.log_append_time.then_some(now) };
    let Some(writer) = p.writer().filter(|_| b.leads(p)) else {
        return (Vec::new(), ResponseError::NotLeaderOrFollower.into());
    };
    let epoch = writer.epoch() as i32;
    let mut producers = p.producers.lock().await;
    // Appends at or past the writer's next offset failed (a failed upload resets it to the
    // durable end): their batches go now, before any check, not when their responses are sent.
    producers.rollback_from(writer.written());
    wal_core::util::lock(&p.txns).rollback_from(writer.written());
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
                Check::Reject(e) => return (steps, outcome(Some(e))),
            }
        }
        let len = data.len();
        let ticket = match writer
            .submit_patched(info.offset_count, info.max_timestamp, BytesMut::from(&data[..]), |buf, base| batch::patch(buf, base, epoch))
            .await
        {
            Ok(t) => t,
            Err(e) => return (steps, outcome(Some(wal_error(&e)))),
        };
        if info.is_idempotent() {
            producers.record(&info, ticket.base_offset, ticket.end_offset);
        }
        if info.is_transactional() {
            wal_core::util::lock(&p.txns).on_data(info.producer_id, ticket.base_offset);
        }
        metrics::counter!(m::PRODUCE_BYTES_TOTAL).increment(len as u64);
        metrics::counter!(m::TOPIC_PRODUCE_BYTES_TOTAL, "topic" => m::topic_label(&p.topic)).increment(len as u64);
        metrics::counter!(m::PRODUCE_BATCHES_TOTAL).increment(1);
        steps.push(Step::Appended { ticket });
    }
    (steps, outcome(None))
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

pub async fn submit(b: Arc<Broker>, v: i16, req: ProduceRequest, access: Access) -> Pending {
    let acks = req.acks;
    let txn = req.transactional_id.as_ref().map(|t| t.to_string());
    let reject_all = if !matches!(acks, -1..=1) {
        Some(ResponseError::InvalidRequiredAcks)
    } else if txn.as_ref().is_some_and(|t| !access.transactional_id(op::WRITE, t)) {
        Some(ResponseError::TransactionalIdAuthorizationFailed)
    } else {
        None
    };
    let mut topics: Vec<(kafka_protocol::messages::TopicName, Vec<PartState>)> = Vec::with_capacity(req.topic_data.len());
    for td in req.topic_data {
        let topic = b.topic(&td.name.0);
        let settings = topic.as_ref().map(|t| t.meta.settings(&b.cfg.wal));
        let denied = (!access.topic(op::WRITE, &td.name.0)).then_some(ResponseError::TopicAuthorizationFailed);
        let mut parts = Vec::with_capacity(td.partition_data.len());
        for pd in td.partition_data {
            let partition = topic.as_ref().and_then(|t| usize::try_from(pd.index).ok().and_then(|i| t.partitions.get(i).cloned()));
            let (steps, o) = match (&reject_all, &partition, &settings) {
                (Some(e), _, _) => (Vec::new(), (*e).into()),
                (None, _, _) if denied.is_some() => (Vec::new(), ResponseError::TopicAuthorizationFailed.into()),
                (None, Some(p), Some(s)) => submit_partition(&b, p, pd.records, s, txn.as_deref()).await,
                (None, _, _) => (Vec::new(), ResponseError::UnknownTopicOrPartition.into()),
            };
            let append_time = o.append_time.unwrap_or(-1);
            parts.push(PartState { index: pd.index, partition, steps, error: o.error, detail: o.detail, append_time });
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
                let (detail, append_time) = (st.detail.clone(), st.append_time);
                let (err, base) = match tokio::time::timeout(timeout, complete(&b, st)).await {
                    Ok(r) => r,
                    Err(_) => (Some(ResponseError::RequestTimedOut), -1),
                };
                let code = err.map(|e| e.code()).unwrap_or(0);
                let mut r = PartitionProduceResponse::default().with_index(index).with_error_code(code).with_base_offset(base);
                if v >= 2 && err.is_none() {
                    r.log_append_time_ms = append_time;
                }
                if v >= 5 {
                    r.log_start_offset = p.map(|p| p.log_start()).unwrap_or(-1);
                }
                if let (true, Some((message, records))) = (v >= 8, detail) {
                    r.error_message = Some(super::s(message));
                    r.record_errors = records
                        .into_iter()
                        .map(|i| BatchIndexAndErrorMessage::default().with_batch_index(i).with_batch_index_error_message(None))
                        .collect();
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
