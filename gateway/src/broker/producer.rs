//! Idempotent-producer state of one partition: per producer id, the epoch and the last five
//! batches' sequence ranges with their offsets (as Kafka keeps them), so a retried batch gets its
//! original offsets back and a gap or a stale epoch gets Kafka's error.
//!
//! Bounded as Kafka bounds it: a producer whose newest batch timestamp is older than
//! `producer_id_expiration_ms` is forgotten ([`ProducerStates::expire`]), and only ids that
//! InitProducerId handed out get an entry (checked by the produce path). The state is
//! serialized in pieces of bounded size ([`ProducerStates::pieces`]) so no snapshot value
//! outgrows what the MetaStore takes in one write.

use std::collections::{HashMap, VecDeque};

use kafka_protocol::ResponseError;

use crate::batch::BatchInfo;

/// Batches remembered per producer (Kafka's `max.in.flight.requests.per.connection` bound).
pub const CACHED_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: u64,
    pub end_offset: u64,
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Producer {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
    /// Set when failed appends were rolled back and none of the producer's batches is left:
    /// the sequence its next batch must start at (the first rolled-back one), so a pipelined
    /// later batch cannot take the place of the failed ones.
    #[serde(default)]
    next_expected: Option<i32>,
    /// The newest batch timestamp (ms) seen from this producer; state loaded from a snapshot
    /// written before this field existed counts from the load.
    #[serde(default = "now_ms")]
    last_timestamp: i64,
}

fn now_ms() -> i64 {
    wal_core::util::now_ms() as i64
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Append,
    /// Already appended: answer with these offsets.
    Duplicate(BatchMeta),
    Reject(ResponseError),
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
}

fn next_seq(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

impl ProducerStates {
    pub fn check(&self, b: &BatchInfo) -> Check {
        let Some(p) = self.producers.get(&b.producer_id) else { return Check::Append };
        if b.producer_epoch < p.epoch {
            return Check::Reject(ResponseError::InvalidProducerEpoch);
        }
        if b.producer_epoch > p.epoch {
            return if b.base_sequence == 0 { Check::Append } else { Check::Reject(ResponseError::OutOfOrderSequenceNumber) };
        }
        if let Some(d) = p.batches.iter().find(|m| m.first_seq == b.base_sequence && m.last_seq == b.last_sequence()) {
            return Check::Duplicate(*d);
        }
        match p.batches.back() {
            None if p.next_expected.is_some_and(|s| s != b.base_sequence) => Check::Reject(ResponseError::OutOfOrderSequenceNumber),
            None => Check::Append,
            Some(last) if b.base_sequence == next_seq(last.last_seq) => Check::Append,
            Some(_) => Check::Reject(ResponseError::OutOfOrderSequenceNumber),
        }
    }

    pub fn record(&mut self, b: &BatchInfo, base_offset: u64, end_offset: u64) {
        let p = self.producers.entry(b.producer_id).or_default();
        if b.producer_epoch != p.epoch {
            p.epoch = b.producer_epoch;
            p.batches.clear();
        }
        p.next_expected = None;
        p.last_timestamp = p.last_timestamp.max(b.max_timestamp);
        if p.batches.len() == CACHED_BATCHES {
            p.batches.pop_front();
        }
        p.batches.push_back(BatchMeta { first_seq: b.base_sequence, last_seq: b.last_sequence(), base_offset, end_offset });
    }

    /// Forgets batches at or after `offset` (their appends failed; offsets will be reused).
    /// A producer keeps expecting the sequence of its first forgotten batch.
    pub fn rollback_from(&mut self, offset: u64) {
        for p in self.producers.values_mut() {
            let first_failed = p.batches.iter().find(|m| m.base_offset >= offset).map(|m| m.first_seq);
            p.batches.retain(|m| m.base_offset < offset);
            if p.batches.is_empty() && first_failed.is_some() {
                p.next_expected = first_failed;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// A transaction marker of `pid` at `epoch` is accepted unless the producer is known at a
    /// newer epoch.
    pub fn accepts_marker(&self, pid: i64, epoch: i16) -> bool {
        self.producers.get(&pid).is_none_or(|p| p.epoch <= epoch)
    }

    /// A marker (or the coordinator) moved `pid` to `epoch`: batches of older epochs are
    /// refused from now on (INVALID_PRODUCER_EPOCH), the next one starts at sequence 0.
    pub fn fence(&mut self, pid: i64, epoch: i16) {
        let p = self.producers.entry(pid).or_default();
        if epoch > p.epoch {
            p.epoch = epoch;
            p.batches.clear();
            p.next_expected = None;
        }
    }

    /// Forgets producers whose newest batch is older than `before` (ms); returns how many.
    pub fn expire(&mut self, before: i64) -> usize {
        let n = self.producers.len();
        self.producers.retain(|_, p| p.last_timestamp >= before);
        n - self.producers.len()
    }

    /// The state split into parts whose JSON is at most about `max_bytes` each (one producer
    /// is never split; an entry is a few hundred bytes).
    pub fn pieces(&self, max_bytes: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut piece = ProducerStates::default();
        let mut size = 0;
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort();
        for id in ids {
            let p = &self.producers[id];
            let entry = serde_json::to_vec(p).expect("serializes").len() + 24;
            if size + entry > max_bytes && !piece.producers.is_empty() {
                out.push(serde_json::to_vec(&piece).expect("serializes"));
                piece = ProducerStates::default();
                size = 0;
            }
            piece.producers.insert(*id, p.clone());
            size += entry;
        }
        if !piece.producers.is_empty() || out.is_empty() {
            out.push(serde_json::to_vec(&piece).expect("serializes"));
        }
        out
    }

    /// Adds the producers of another part.
    pub fn merge(&mut self, other: ProducerStates) {
        self.producers.extend(other.producers);
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(pid: i64, epoch: i16, seq: i32, n: u32) -> BatchInfo {
        BatchInfo {
            attributes: 0,
            offset_count: n,
            record_count: n as i32,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records: None,
        }
    }

    #[test]
    fn sequences_duplicates_and_epochs() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&b(1, 0, 0, 3)), Check::Append);
        s.record(&b(1, 0, 0, 3), 10, 13);
        assert_eq!(s.check(&b(1, 0, 0, 3)), Check::Duplicate(BatchMeta { first_seq: 0, last_seq: 2, base_offset: 10, end_offset: 13 }));
        assert_eq!(s.check(&b(1, 0, 4, 1)), Check::Reject(ResponseError::OutOfOrderSequenceNumber));
        assert_eq!(s.check(&b(1, 0, 3, 1)), Check::Append);
        s.record(&b(1, 1, 0, 1), 13, 14);
        assert_eq!(s.check(&b(1, 0, 1, 1)), Check::Reject(ResponseError::InvalidProducerEpoch));
        assert_eq!(s.check(&b(1, 2, 5, 1)), Check::Reject(ResponseError::OutOfOrderSequenceNumber));
        assert_eq!(s.check(&b(1, 2, 0, 1)), Check::Append);
        s.rollback_from(13);
        assert_eq!(s.check(&b(1, 1, 0, 1)), Check::Append, "a rolled-back batch can be appended again");
    }

    /// A pipelined later batch cannot take the place of failed ones: after a rollback the
    /// producer must resend from its first failed sequence.
    #[test]
    fn after_a_rollback_the_first_failed_sequence_comes_next() {
        let mut s = ProducerStates::default();
        s.record(&b(1, 0, 0, 2), 0, 2);
        s.record(&b(1, 0, 2, 2), 2, 4); // fails
        s.record(&b(1, 0, 4, 2), 4, 6); // fails
        s.rollback_from(2);
        assert_eq!(s.check(&b(1, 0, 6, 2)), Check::Reject(ResponseError::OutOfOrderSequenceNumber), "pipelined, after the failed ones");
        assert_eq!(s.check(&b(1, 0, 2, 2)), Check::Append, "the first failed batch again");
        // With none of its batches left, the producer still expects the first failed one.
        let mut s = ProducerStates::default();
        s.record(&b(2, 0, 10, 1), 0, 1);
        s.record(&b(2, 0, 11, 1), 1, 2);
        s.rollback_from(0);
        assert_eq!(s.check(&b(2, 0, 11, 1)), Check::Reject(ResponseError::OutOfOrderSequenceNumber));
        assert_eq!(s.check(&b(2, 0, 10, 1)), Check::Append);
        s.record(&b(2, 0, 10, 1), 0, 1);
        assert_eq!(s.check(&b(2, 0, 11, 1)), Check::Append);
    }

    #[test]
    fn idle_producers_expire_and_pieces_are_bounded() {
        let mut s = ProducerStates::default();
        for pid in 0..3000 {
            let mut info = b(pid, 0, 0, 1);
            info.max_timestamp = if pid < 1000 { 1_000 } else { 5_000 };
            for i in 0..5 {
                s.record(&BatchInfo { base_sequence: i, ..info.clone() }, pid as u64 * 10 + i as u64, pid as u64 * 10 + i as u64 + 1);
            }
        }
        let pieces = s.pieces(64 << 10);
        assert!(pieces.len() > 5, "{} pieces", pieces.len());
        assert!(pieces.iter().all(|p| p.len() <= (64 << 10) + 1024), "{:?}", pieces.iter().map(|p| p.len()).max());
        let mut back = ProducerStates::default();
        for p in &pieces {
            back.merge(serde_json::from_slice(p).unwrap());
        }
        assert_eq!(back.len(), 3000);
        assert_eq!(back.check(&b(2999, 0, 4, 1)), s.check(&b(2999, 0, 4, 1)));
        assert_eq!(s.expire(2_000), 1000, "the producers last seen at 1 s");
        assert_eq!(s.len(), 2000);
        assert_eq!(ProducerStates::default().pieces(1024).len(), 1, "an empty state is one piece");
        // a snapshot written before last_timestamp existed counts from its load
        let old: ProducerStates = serde_json::from_str(r#"{"producers":{"7":{"epoch":0,"batches":[]}}}"#).unwrap();
        let mut old = old;
        assert_eq!(old.expire(now_ms() - 60_000), 0);
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(&b(1, 0, i, 1), i as u64, i as u64 + 1);
        }
        assert!(matches!(s.check(&b(1, 0, 6, 1)), Check::Duplicate(_)));
        assert!(matches!(s.check(&b(1, 0, 2, 1)), Check::Duplicate(_)));
        assert_eq!(s.check(&b(1, 0, 1, 1)), Check::Reject(ResponseError::OutOfOrderSequenceNumber));
        assert_eq!(next_seq(i32::MAX), 0);
    }
}
