//! Kafka batches as compaction sees them ([`wal_core::log::RecordKeys`]): the key digest,
//! offset and tombstone flag of every record of a stored batch, and the batch rewritten to a
//! subset of its records as Kafka's log cleaner writes it: same base offset, last offset delta,
//! base timestamp, producer fields and codec; fewer records (sparse offset deltas), the max
//! timestamp of those kept (unless LogAppendTime), a new CRC. Records of aborted transactions
//! count as keyless, so they go and never supersede a committed record; control batches are
//! kept whole; a batch that cannot be read is kept whole too, never guessed at.

use std::hash::{Hash, Hasher};
use std::ops::Range;

use bytes::Bytes;
use wal_core::log::{KeyedRecord, RecordKeys};
use wal_core::StoredEntry;

use super::compression::{compress, decompress};
use super::records::varint;
use super::{i32_at, stored_info, BatchError, BatchInfo, CRC_START, HEADER_LEN, LENGTH_OVERHEAD};

/// One record inside the decompressed records of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Its bytes (length prefix included).
    pub span: Range<usize>,
    pub offset_delta: u32,
    pub timestamp: i64,
    pub key: Option<Range<usize>>,
    pub tombstone: bool,
}

fn bad(what: &'static str) -> BatchError {
    BatchError::Record(what)
}

/// Takes `n` bytes off the front of `cur`; returns their range in the buffer whose tail `cur` is.
fn take(cur: &mut &[u8], n: i64, total: usize) -> Result<Range<usize>, BatchError> {
    let n = usize::try_from(n).map_err(|_| bad("negative length"))?;
    if n > cur.len() {
        return Err(bad("field overruns its record"));
    }
    let start = total - cur.len();
    *cur = &cur[n..];
    Ok(start..start + n)
}

/// The records of a stored batch's decompressed records `raw`: offset deltas strictly
/// increasing within the batch's range (a compacted batch has gaps).
pub fn parse_records(raw: &[u8], info: &BatchInfo) -> Result<Vec<RawRecord>, BatchError> {
    let total = raw.len();
    let mut cur = raw;
    let mut out = Vec::with_capacity(info.record_count.clamp(0, 1 << 16) as usize);
    let mut next_min = 0i64;
    for _ in 0..info.record_count.max(0) {
        let start = total - cur.len();
        let len = varint(&mut cur)?;
        if len <= 0 {
            return Err(bad("record length is not positive"));
        }
        let body = take(&mut cur, len, total)?;
        // (`rec` is the tail, up to the record's end, of `raw[..body.end]`)
        let mut rec = &raw[body.clone()];
        let _attributes = take(&mut rec, 1, body.end)?;
        let timestamp = info.base_timestamp.saturating_add(varint(&mut rec)?);
        let delta = varint(&mut rec)?;
        if delta < next_min || delta >= info.offset_count as i64 {
            return Err(bad("offset deltas are not increasing within the batch"));
        }
        next_min = delta + 1;
        let klen = varint(&mut rec)?;
        let key = if klen == -1 { None } else { Some(take(&mut rec, klen, body.end)?) };
        let tombstone = varint(&mut rec)? == -1;
        out.push(RawRecord { span: start..body.end, offset_delta: delta as u32, timestamp, key, tombstone });
    }
    if !cur.is_empty() {
        return Err(bad("bytes after the last record"));
    }
    Ok(out)
}

/// A 128-bit digest of a key (two SipHash passes with different prefixes; lives only in one
/// compaction pass's memory, so it need not be stable across releases).
pub fn key_digest(key: &[u8]) -> u128 {
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut h);
        key.hash(&mut h);
        h.finish() as u128
    };
    (half(0) << 64) | half(1)
}

/// The batch `b` (header included) with only the records whose offset deltas are in `keep`.
pub fn retain(b: &[u8], info: &BatchInfo, raw: &[u8], records: &[RawRecord], keep: &[u32]) -> Result<Vec<u8>, BatchError> {
    let kept: Vec<&RawRecord> = records.iter().filter(|r| keep.binary_search(&r.offset_delta).is_ok()).collect();
    let mut body = Vec::with_capacity(kept.iter().map(|r| r.span.len()).sum());
    for r in &kept {
        body.extend_from_slice(&raw[r.span.clone()]);
    }
    let codec = info.attributes & 0x07;
    let body = compress(codec, &body, -1);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&b[..HEADER_LEN]);
    out.extend_from_slice(&body);
    out[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    if info.attributes & 0x08 == 0 {
        let max = kept.iter().map(|r| r.timestamp).max().unwrap_or(info.max_timestamp);
        out[35..43].copy_from_slice(&max.to_be_bytes());
    }
    let len = i32::try_from(out.len() - LENGTH_OVERHEAD).map_err(|_| BatchError::TooLarge(out.len() as u64))?;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    debug_assert_eq!(i32_at(&out, 8) as usize + LENGTH_OVERHEAD, out.len());
    Ok(out)
}

/// A stored batch's header and decompressed records, unless it is a control batch or unreadable.
fn open(e: &StoredEntry) -> Option<(BatchInfo, Vec<u8>, Vec<RawRecord>)> {
    let info = stored_info(&e.data)?;
    if info.is_control() || e.data.len() < HEADER_LEN {
        return None;
    }
    let raw = decompress(&e.data, &info).ok()?;
    let records = parse_records(&raw, &info).ok()?;
    Some((info, raw, records))
}

/// [`RecordKeys`] for one partition's log (one Kafka batch per entry), knowing its aborted
/// transactions: (producer id, first offset, marker offset).
#[derive(Default)]
pub struct KafkaKeys {
    pub aborted: Vec<(i64, u64, u64)>,
}

impl KafkaKeys {
    fn aborted(&self, info: &BatchInfo, offset: u64) -> bool {
        info.is_transactional()
            && self.aborted.iter().any(|(pid, first, last)| *pid == info.producer_id && (*first..*last).contains(&offset))
    }
}

impl RecordKeys for KafkaKeys {
    fn records(&self, e: &StoredEntry) -> Option<Vec<KeyedRecord>> {
        let (info, raw, records) = open(e)?;
        let aborted = self.aborted(&info, e.offset);
        Some(
            records
                .iter()
                .map(|r| KeyedRecord {
                    offset: e.offset + r.offset_delta as u64,
                    key: r.key.clone().filter(|_| !aborted).map(|k| key_digest(&raw[k])),
                    tombstone: r.tombstone,
                })
                .collect(),
        )
    }

    fn retain(&self, e: &StoredEntry, keep: &[u64]) -> Result<Bytes, String> {
        let (info, raw, records) = open(e).ok_or("the batch no longer reads")?;
        let deltas: Vec<u32> = keep.iter().map(|o| (o - e.offset) as u32).collect();
        retain(&e.data, &info, &raw, &records, &deltas).map(Bytes::from).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::super::compression::{GZIP, LZ4, SNAPPY, ZSTD};
    use super::super::{encode_batch, patch, put_varint};
    use super::*;

    /// A stored batch at `base` of records (key, value), in `codec`.
    fn stored(base: u64, recs: &[(Option<&str>, Option<&str>)], codec: i16) -> Vec<u8> {
        let mut records = Vec::new();
        for (i, (k, v)) in recs.iter().enumerate() {
            let mut body = vec![0u8];
            put_varint(&mut body, i as i64 * 10); // timestamp delta
            put_varint(&mut body, i as i64);
            for f in [k, v] {
                match f {
                    Some(s) => {
                        put_varint(&mut body, s.len() as i64);
                        body.extend_from_slice(s.as_bytes());
                    }
                    None => put_varint(&mut body, -1),
                }
            }
            put_varint(&mut body, 0);
            put_varint(&mut records, body.len() as i64);
            records.extend(body);
        }
        let body = compress(codec, &records, -1);
        let mut b = encode_batch(&body, recs.len() as i32, 7, 1, 40, 1000);
        b[35..43].copy_from_slice(&(1000 + (recs.len() as i64 - 1) * 10).to_be_bytes());
        b[21..23].copy_from_slice(&codec.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        patch(&mut b, base, 0);
        b
    }

    fn entry(b: Vec<u8>, base: u64, count: u32) -> StoredEntry {
        StoredEntry { offset: base, count, max_timestamp: 0, data: Bytes::from(b) }
    }

    #[test]
    fn records_and_retain_in_every_codec() {
        let recs = [(Some("a"), Some("1")), (Some("b"), Some("2")), (Some("a"), None), (None, Some("x")), (Some("c"), Some("3"))];
        for codec in [0, GZIP, SNAPPY, LZ4, ZSTD] {
            let e = entry(stored(100, &recs, codec), 100, 5);
            let keyed = KafkaKeys::default().records(&e).unwrap();
            assert_eq!(keyed.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![100, 101, 102, 103, 104]);
            assert_eq!(keyed[0].key, keyed[2].key, "same key, same digest");
            assert_ne!(keyed[0].key, keyed[1].key);
            assert_eq!(keyed[3].key, None);
            assert!(keyed[2].tombstone && !keyed[0].tombstone);
            // keep b, the tombstone of a, and c
            let data = KafkaKeys::default().retain(&e, &[101, 102, 104]).unwrap();
            let info = super::super::validate(&data).err();
            assert!(matches!(info, Some(BatchError::Invalid(_))), "a compacted batch has fewer records than offsets: {info:?}");
            let back = stored_info(&data).unwrap();
            assert_eq!((back.record_count, back.offset_count, back.producer_id, back.base_sequence), (3, 5, 7, 40));
            assert_eq!(back.attributes & 0x07, codec);
            assert_eq!(back.max_timestamp, 1040, "the newest kept record");
            assert_eq!(crc32c::crc32c(&data[21..]), u32::from_be_bytes(data[17..21].try_into().unwrap()));
            let again = entry(data.to_vec(), 100, 5);
            let keyed2 = KafkaKeys::default().records(&again).unwrap();
            assert_eq!(keyed2.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![101, 102, 104], "codec {codec}");
            assert_eq!(keyed2[0].key, keyed[1].key);
            // timestamp lookups (ListOffsets) answer the records that are left
            assert_eq!(super::super::lookup::record_at_or_after(&data, 0, 0), Some((101, 1010)));
            assert_eq!(super::super::lookup::record_at_or_after(&data, 0, 1025), Some((104, 1040)));
            assert_eq!(super::super::lookup::max_record(&data, 0), Some((104, 1040)));
            // compacting a compacted batch again
            let twice = KafkaKeys::default().retain(&again, &[104]).unwrap();
            assert_eq!(KafkaKeys::default().records(&entry(twice.to_vec(), 100, 5)).unwrap().len(), 1);
        }
    }

    #[test]
    fn records_of_aborted_transactions_count_as_keyless() {
        let mut b = stored(10, &[(Some("a"), Some("1")), (Some("b"), Some("2"))], 0);
        b[21..23].copy_from_slice(&0x10i16.to_be_bytes()); // transactional, producer 7
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let e = entry(b, 10, 2);
        let keys = |aborted| KafkaKeys { aborted }.records(&e).unwrap().iter().map(|r| r.key.is_some()).collect::<Vec<_>>();
        assert_eq!(keys(vec![]), vec![true, true]);
        assert_eq!(keys(vec![(7, 5, 20)]), vec![false, false], "aborted: dropped, never the latest");
        assert_eq!(keys(vec![(8, 5, 20), (7, 11, 20)]), vec![true, true], "another producer's, or a later transaction");
    }

    #[test]
    fn control_and_unreadable_batches_are_kept_whole() {
        let mut b = stored(0, &[(Some("a"), Some("1"))], 0);
        b[21..23].copy_from_slice(&0x20i16.to_be_bytes());
        assert!(KafkaKeys::default().records(&entry(b, 0, 1)).is_none());
        assert!(KafkaKeys::default().records(&entry(vec![1, 2, 3], 0, 1)).is_none());
        let mut torn = stored(0, &[(Some("a"), Some("1")), (Some("b"), Some("2"))], 0);
        torn.truncate(torn.len() - 3);
        assert!(KafkaKeys::default().records(&entry(torn, 0, 2)).is_none());
    }
}
