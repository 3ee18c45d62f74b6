//! Timestamp lookups inside one stored batch, for ListOffsets: Kafka answers the first record
//! whose timestamp is at or after the target, and the first record holding the largest
//! timestamp, each with that record's own offset and timestamp, not the batch's base offset
//! and max timestamp. A LogAppendTime batch gives every record its max timestamp. Records below
//! the log start offset (after DeleteRecords inside a batch) are not answers.

use super::{compact, compression, stored_info};

/// Every record's (offset, timestamp) of the stored batch `b` from offset `start` on (offset
/// deltas may have gaps: compaction removes records).
fn record_times(b: &[u8], start: u64) -> Option<Vec<(u64, i64)>> {
    let info = stored_info(b)?;
    let base = i64::from_be_bytes(b[0..8].try_into().ok()?);
    let base = u64::try_from(base).ok()?;
    let log_append_time = info.attributes & 0x08 != 0;
    let raw = compression::decompress(b, &info).ok()?;
    let records = compact::parse_records(&raw, &info).ok()?;
    Some(
        records
            .iter()
            .map(|r| (base + r.offset_delta as u64, if log_append_time { info.max_timestamp } else { r.timestamp }))
            .filter(|(o, _)| *o >= start)
            .collect(),
    )
}

/// The first record of `b` (at or after `start`) timestamped at or after `target`.
pub fn record_at_or_after(b: &[u8], start: u64, target: i64) -> Option<(u64, i64)> {
    record_times(b, start)?.into_iter().find(|&(_, ts)| ts >= target)
}

/// The first record of `b` (at or after `start`) holding the batch's largest timestamp.
pub fn max_record(b: &[u8], start: u64) -> Option<(u64, i64)> {
    let times = record_times(b, start)?;
    let max = times.iter().map(|&(_, ts)| ts).max()?;
    times.into_iter().find(|&(_, ts)| ts == max)
}

#[cfg(test)]
mod tests {
    use super::super::compression::{compress, GZIP};
    use super::super::{encode_batch, patch, put_varint};
    use super::*;

    /// A stored batch at `base` whose records carry these timestamps, in `codec`.
    fn stored(base: u64, stamps: &[i64], codec: i16) -> Vec<u8> {
        let first = stamps[0];
        let mut records = Vec::new();
        for (i, ts) in stamps.iter().enumerate() {
            let mut body = vec![0u8];
            put_varint(&mut body, ts - first);
            put_varint(&mut body, i as i64);
            body.extend_from_slice(&[1, 2, b'x', 0]); // null key, value "x", no headers
            put_varint(&mut records, body.len() as i64);
            records.extend(body);
        }
        let body = compress(codec, &records, -1);
        let mut b = encode_batch(&body, stamps.len() as i32, -1, -1, -1, first);
        b[35..43].copy_from_slice(&stamps.iter().max().unwrap().to_be_bytes());
        b[21..23].copy_from_slice(&codec.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        patch(&mut b, base, 0);
        b
    }

    #[test]
    fn lookups_answer_records_not_batches() {
        for codec in [0, GZIP] {
            let b = stored(100, &[1000, 1010, 1005, 1030, 1020], codec);
            assert_eq!(record_at_or_after(&b, 0, 0), Some((100, 1000)));
            assert_eq!(record_at_or_after(&b, 0, 1006), Some((101, 1010)));
            assert_eq!(record_at_or_after(&b, 0, 1011), Some((103, 1030)), "not the older record after it");
            assert_eq!(record_at_or_after(&b, 0, 1031), None);
            assert_eq!(max_record(&b, 0), Some((103, 1030)));
            // below the log start: not an answer
            assert_eq!(record_at_or_after(&b, 102, 0), Some((102, 1005)));
            assert_eq!(max_record(&b, 104), Some((104, 1020)));
        }
    }

    #[test]
    fn log_append_time_records_share_the_batch_time() {
        let mut b = stored(0, &[1, 2, 3], 0);
        b[22] |= 0x08;
        b[35..43].copy_from_slice(&9000i64.to_be_bytes());
        assert_eq!(record_at_or_after(&b, 0, 5000), Some((0, 9000)));
        assert_eq!(max_record(&b, 1), Some((1, 9000)));
    }
}
