//! Idempotent-producer state of one partition: per producer id, the epoch and the last five
//! batches' sequence ranges with their offsets (as Kafka keeps them), so a retried batch gets its
//! original offsets back and a gap or a stale epoch gets Kafka's error.

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
        if p.batches.len() == CACHED_BATCHES {
            p.batches.pop_front();
        }
        p.batches.push_back(BatchMeta { first_seq: b.base_sequence, last_seq: b.last_sequence(), base_offset, end_offset });
    }

    /// Forgets batches at or after `offset` (their appends failed; offsets will be reused).
    pub fn rollback_from(&mut self, offset: u64) {
        for p in self.producers.values_mut() {
            p.batches.retain(|m| m.base_offset < offset);
        }
    }

    /// Forgets one batch whose append failed.
    pub fn forget(&mut self, producer_id: i64, first_seq: i32, base_offset: u64) {
        if let Some(p) = self.producers.get_mut(&producer_id) {
            p.batches.retain(|m| !(m.first_seq == first_seq && m.base_offset == base_offset));
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
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
