//! Kafka record batches (magic 2) as they arrive in Produce requests: split a `records` field
//! into batches, validate each header and its CRC32C, and read what the partition needs (record
//! count, max timestamp, producer id/epoch/sequence). Batches are stored as sent (only the base
//! offset and partition leader epoch, outside the CRC, are written), unless the topic's configs
//! ask for another codec or for LogAppendTime ([`rewrite`]).
//!
//! The records of every batch are walked as Kafka's broker does before appending
//! ([`records`]): record lengths agree with their fields and the batch, offset deltas run
//! 0, 1, 2, ..., key, value and header lengths are in range; the walk also yields the records'
//! timestamp range and null keys, which the topic's rules check ([`rewrite::check`]).
//! Compressed records are decompressed for that walk only, streaming and with a hard output
//! bound ([`compression`]).
//!
//! ```text
//! 0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 | 17 crc u32
//! 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64 | 35 maxTimestamp i64
//! 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32 | 57 recordCount i32 | 61 records
//! ```

pub mod compact;
pub mod compression;
pub mod control;
pub mod lookup;
pub mod records;
pub mod rewrite;

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
    /// A record inside the batch is malformed (Kafka's INVALID_RECORD).
    #[error("invalid record: {0}")]
    Record(&'static str),
    /// A CreateTime outside the topic's bounds (Kafka's INVALID_TIMESTAMP).
    #[error("timestamp {0} is out of the topic's accepted range")]
    Timestamp(i64),
    /// A record without a key for a compacted topic (Kafka's INVALID_RECORD).
    #[error("compacted topic cannot accept a record without a key")]
    NullKey,
    /// Compressed records that do not decompress (Kafka's CORRUPT_MESSAGE).
    #[error("compressed records are corrupt: {0}")]
    Decompress(String),
    /// Compressed records that decompress past the bound (MESSAGE_TOO_LARGE).
    #[error("records decompress to more than {0} bytes")]
    TooLarge(u64),
    /// A compression codec Kafka does not define (UNSUPPORTED_COMPRESSION_TYPE).
    #[error("unknown compression codec {0}")]
    Codec(i16),
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
    /// What the walk of the records found (`None` until compressed records are walked).
    pub records: Option<records::RecordStats>,
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
        records: None,
    };
    // Every batch must hold as many records as the header claims offsets for.
    if info.record_count as u32 != info.offset_count {
        return Err(BatchError::Invalid("record count disagrees with last offset delta"));
    }
    // Compressed records are walked by [`compression::validate`], off the reader's thread.
    let mut info = info;
    if info.attributes & 0x07 == 0 {
        info.records = Some(records::walk(&mut &b[HEADER_LEN..], info.record_count, info.base_timestamp)?);
    }
    Ok(info)
}

/// Whether the batch's records are compressed (and checked by [`compression::validate`]).
pub fn is_compressed(info: &BatchInfo) -> bool {
    info.attributes & 0x07 != 0
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
        records: None,
    })
}

/// Encodes a minimal valid uncompressed batch of `n` records (null key, value "x") with the
/// given producer fields and timestamp: for tests and tools that speak the protocol by hand.
pub fn encode_simple_batch(n: i32, producer_id: i64, epoch: i16, base_seq: i32, ts: i64) -> Vec<u8> {
    let mut records = Vec::new();
    for i in 0..n {
        // length varint | attributes | timestampDelta | offsetDelta | keyLen -1 | valueLen 1 | "x" | headers 0
        let mut body = vec![0u8, 0];
        put_varint(&mut body, i as i64);
        body.extend_from_slice(&[1, 2, b'x', 0]);
        put_varint(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    encode_batch(&records, n, producer_id, epoch, base_seq, ts)
}

/// An uncompressed batch around already encoded `records` (`n` of them), CRC computed.
pub fn encode_batch(records: &[u8], n: i32, producer_id: i64, epoch: i16, base_seq: i32, ts: i64) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    b[16] = 2;
    b[23..27].copy_from_slice(&(n - 1).to_be_bytes());
    b[27..35].copy_from_slice(&ts.to_be_bytes());
    b[35..43].copy_from_slice(&ts.to_be_bytes());
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&base_seq.to_be_bytes());
    b[57..61].copy_from_slice(&n.to_be_bytes());
    b.extend_from_slice(records);
    let len = (b.len() - LENGTH_OVERHEAD) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Appends a zigzag varint (the record format's signed varint).
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
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

    /// One record: timestamp delta, offset delta, key, value, headers (each -1 = null).
    fn record(ts_delta: i64, offset_delta: i64, key: Option<&[u8]>, value: Option<&[u8]>, headers: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
        let mut body = vec![0u8];
        put_varint(&mut body, ts_delta);
        put_varint(&mut body, offset_delta);
        for f in [key, value] {
            match f {
                None => put_varint(&mut body, -1),
                Some(f) => {
                    put_varint(&mut body, f.len() as i64);
                    body.extend_from_slice(f);
                }
            }
        }
        put_varint(&mut body, headers.len() as i64);
        for (k, v) in headers {
            put_varint(&mut body, k.len() as i64);
            body.extend_from_slice(k);
            match v {
                None => put_varint(&mut body, -1),
                Some(v) => {
                    put_varint(&mut body, v.len() as i64);
                    body.extend_from_slice(v);
                }
            }
        }
        let mut out = Vec::new();
        put_varint(&mut out, body.len() as i64);
        out.extend(body);
        out
    }

    fn now() -> i64 {
        wal_core::util::now_ms() as i64
    }

    #[test]
    fn records_inside_uncompressed_batches_are_checked() {
        let good = [record(0, 0, Some(b"k"), Some(b"v"), &[(b"h", Some(b"x"))]), record(5, 1, None, None, &[])].concat();
        assert!(validate(&encode_batch(&good, 2, -1, -1, -1, now())).is_ok());
        let cases: Vec<(&str, Vec<u8>, i32)> = vec![
            ("offset deltas skip", [record(0, 0, None, None, &[]), record(0, 2, None, None, &[])].concat(), 2),
            ("offset deltas repeat", [record(0, 0, None, None, &[]), record(0, 0, None, None, &[])].concat(), 2),
            ("fewer records than counted", record(0, 0, None, None, &[]), 2),
            ("trailing bytes", [record(0, 0, None, None, &[]), vec![0]].concat(), 1),
            (
                "key length -2",
                {
                    let mut r = record(0, 0, None, None, &[]);
                    r[4] = 3;
                    r
                },
                1,
            ),
            (
                "negative header count",
                {
                    let mut r = record(0, 0, None, None, &[]);
                    let l = r.len();
                    r[l - 1] = 1;
                    r
                },
                1,
            ),
            (
                "value overruns the record",
                {
                    let mut r = record(0, 0, None, Some(b"v"), &[]);
                    r[5] = 40;
                    r
                },
                1,
            ),
            (
                "record length too long",
                {
                    let mut r = record(0, 0, None, None, &[]);
                    r[0] += 2;
                    r
                },
                1,
            ),
            (
                "null header key",
                {
                    let mut r = record(0, 0, None, None, &[(b"h", None)]);
                    r[7] = 1;
                    r
                },
                1,
            ),
        ];
        for (name, records, n) in cases {
            let b = encode_batch(&records, n, -1, -1, -1, now());
            assert!(matches!(validate(&b), Err(BatchError::Record(_))), "{name}: {:?}", validate(&b));
        }
    }

    proptest::proptest! {
        #[test]
        fn well_formed_batches_validate(n in 1i32..400, key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let records: Vec<u8> = (0..n).flat_map(|i| record(i as i64, i as i64, Some(&key), Some(b"v"), &[(b"h", Some(&key))])).collect();
            let info = validate(&encode_batch(&records, n, -1, -1, -1, now())).unwrap();
            proptest::prop_assert_eq!(info.record_count, n);
        }

        #[test]
        fn corrupted_records_never_panic(n in 1i32..20, flips in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..4)) {
            let mut records: Vec<u8> = (0..n).flat_map(|i| record(0, i as i64, Some(b"key"), Some(b"value"), &[])).collect();
            for (at, byte) in flips {
                let l = records.len();
                records[at % l] = byte;
            }
            let _ = validate(&encode_batch(&records, n, -1, -1, -1, now()));
        }

        #[test]
        fn split_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = split(&Bytes::from(data));
        }
    }
}
