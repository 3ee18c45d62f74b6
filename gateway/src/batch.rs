//! Kafka record batches (magic 2) as they arrive in Produce requests: split a `records` field
//! into batches, validate each header and its CRC32C, and read what the partition needs (record
//! count, max timestamp, producer id/epoch/sequence). Batches are stored as sent; only the base
//! offset and partition leader epoch (outside the CRC) are rewritten. Nothing is decompressed.
//!
//! ```text
//! 0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 | 17 crc u32
//! 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64 | 35 maxTimestamp i64
//! 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32 | 57 recordCount i32 | 61 records
//! ```

use bytes::Bytes;

pub const HEADER_LEN: usize = 61;
/// Bytes before the CRC-covered part.
const CRC_START: usize = 21;
/// `batchLength` counts from after itself.
const LENGTH_OVERHEAD: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated")]
    Truncated,
    #[error("unsupported magic {0}")]
    Magic(i8),
    #[error("CRC mismatch")]
    Crc,
    #[error("invalid batch: {0}")]
    Invalid(&'static str),
}

/// The header fields of one validated batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    pub attributes: i16,
    /// Offsets the batch takes (`lastOffsetDelta + 1`).
    pub offset_count: u32,
    pub record_count: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl BatchInfo {
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }
    /// The sequence of the batch's last record (wrapping as Kafka does).
    pub fn last_sequence(&self) -> i32 {
        let s = self.base_sequence as i64 + self.offset_count as i64 - 1;
        (s % (i32::MAX as i64 + 1)) as i32
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Validates one whole batch (exactly `b`).
pub fn validate(b: &[u8]) -> Result<BatchInfo, BatchError> {
    if b.len() < HEADER_LEN {
        return Err(BatchError::Truncated);
    }
    let len = i32_at(b, 8);
    if len < 0 || len as usize + LENGTH_OVERHEAD != b.len() {
        return Err(BatchError::Invalid("batch length disagrees with the data"));
    }
    let magic = b[16] as i8;
    if magic != 2 {
        return Err(BatchError::Magic(magic));
    }
    let crc = u32::from_be_bytes(b[17..21].try_into().expect("4 bytes"));
    if crc32c::crc32c(&b[CRC_START..]) != crc {
        return Err(BatchError::Crc);
    }
    let last_delta = i32_at(b, 23);
    let record_count = i32_at(b, 57);
    if last_delta < 0 || record_count < 0 {
        return Err(BatchError::Invalid("negative record count or offset delta"));
    }
    if record_count == 0 {
        return Err(BatchError::Invalid("empty batch"));
    }
    let info = BatchInfo {
        attributes: i16_at(b, 21),
        offset_count: last_delta as u32 + 1,
        record_count,
        base_timestamp: i64_at(b, 27),
        max_timestamp: i64_at(b, 35),
        producer_id: i64_at(b, 43),
        producer_epoch: i16_at(b, 51),
        base_sequence: i32_at(b, 53),
    };
    // Uncompressed batches must hold as many records as the header claims offsets for; a
    // compressed batch's records are opaque to us (we never decompress).
    if info.attributes & 0x07 == 0 && info.record_count as u32 != info.offset_count {
        return Err(BatchError::Invalid("record count disagrees with last offset delta"));
    }
    Ok(info)
}

/// Splits a `records` field into batches and validates each.
pub fn split(records: &Bytes) -> Result<Vec<(Bytes, BatchInfo)>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let rest = &records[pos..];
        if rest.len() < 12 {
            return Err(BatchError::Truncated);
        }
        let len = i32_at(rest, 8);
        if len < (HEADER_LEN - LENGTH_OVERHEAD) as i32 {
            return Err(BatchError::Invalid("batch length too small"));
        }
        let total = len as usize + LENGTH_OVERHEAD;
        if total > rest.len() {
            return Err(BatchError::Truncated);
        }
        let b = records.slice(pos..pos + total);
        let info = validate(&b)?;
        out.push((b, info));
        pos += total;
    }
    if out.is_empty() {
        return Err(BatchError::Invalid("no record batch"));
    }
    Ok(out)
}

/// Writes the assigned base offset and the partition leader epoch (neither covered by the CRC).
pub fn patch(batch: &mut [u8], base_offset: u64, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&(base_offset as i64).to_be_bytes());
    batch[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Reads the producer fields of a stored batch (for rebuilding idempotence state).
pub fn stored_info(b: &[u8]) -> Option<BatchInfo> {
    if b.len() < HEADER_LEN || b[16] as i8 != 2 {
        return None;
    }
    let last_delta = i32_at(b, 23);
    Some(BatchInfo {
        attributes: i16_at(b, 21),
        offset_count: last_delta.max(0) as u32 + 1,
        record_count: i32_at(b, 57),
        base_timestamp: i64_at(b, 27),
        max_timestamp: i64_at(b, 35),
        producer_id: i64_at(b, 43),
        producer_epoch: i16_at(b, 51),
        base_sequence: i32_at(b, 53),
    })
}

/// Encodes a minimal valid uncompressed batch of `n` records (null key, value "x") with the
/// given producer fields and timestamp: for tests and tools that speak the protocol by hand.
pub fn encode_simple_batch(n: i32, producer_id: i64, epoch: i16, base_seq: i32, ts: i64) -> Vec<u8> {
    let mut records = Vec::new();
    for i in 0..n {
        // length varint | attributes | timestampDelta | offsetDelta | keyLen -1 | valueLen 1 | "x" | headers 0
        let body = [0u8, 0, (i as u8) << 1, 1, 2, b'x', 0];
        records.push((body.len() as u8) << 1);
        records.extend_from_slice(&body);
    }
    let mut b = vec![0u8; HEADER_LEN];
    b[16] = 2;
    b[23..27].copy_from_slice(&(n - 1).to_be_bytes());
    b[27..35].copy_from_slice(&ts.to_be_bytes());
    b[35..43].copy_from_slice(&ts.to_be_bytes());
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&base_seq.to_be_bytes());
    b[57..61].copy_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&records);
    let len = (b.len() - LENGTH_OVERHEAD) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_batch(n: i32, producer_id: i64, epoch: i16, base_seq: i32, ts: i64) -> Vec<u8> {
        encode_simple_batch(n, producer_id, epoch, base_seq, ts)
    }

    #[test]
    fn valid_batches_split_and_validate() {
        let mut two = make_batch(3, -1, -1, -1, 5);
        two.extend(make_batch(2, 7, 1, 3, 9));
        let v = split(&Bytes::from(two)).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].1.offset_count, 3);
        assert_eq!(v[1].1.producer_id, 7);
        assert_eq!(v[1].1.last_sequence(), 4);
    }

    #[test]
    fn corruption_is_rejected() {
        let b = make_batch(2, -1, -1, -1, 5);
        let mut bad = b.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(split(&Bytes::from(bad)).unwrap_err(), BatchError::Crc);
        let mut magic = b.clone();
        magic[16] = 1;
        assert_eq!(split(&Bytes::from(magic)).unwrap_err(), BatchError::Magic(1));
        assert_eq!(split(&Bytes::from(b[..30].to_vec())).unwrap_err(), BatchError::Truncated);
        let mut neg = b.clone();
        neg[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(split(&Bytes::from(neg)).is_err());
        assert!(split(&Bytes::new()).is_err());
    }

    #[test]
    fn patching_keeps_the_crc_valid() {
        let mut b = make_batch(2, -1, -1, -1, 5);
        patch(&mut b, 12345, 7);
        let info = validate(&b).unwrap();
        assert_eq!(info.offset_count, 2);
        assert_eq!(i64_at(&b, 0), 12345);
    }

    proptest::proptest! {
        #[test]
        fn split_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = split(&Bytes::from(data));
        }
    }
}
