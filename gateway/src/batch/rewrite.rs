//! What a topic's configs require of a batch before it is stored, as Kafka's broker applies
//! them: [`check`] refuses records outside `message.timestamp.before.max.ms` /
//! `message.timestamp.after.max.ms` (CreateTime topics) and records without a key in a compacted
//! topic; [`rewrite`] recompresses a batch whose codec is not the topic's `compression.type` and
//! stamps LogAppendTime (`message.timestamp.type`). A rewritten batch keeps its records, offsets
//! and producer fields; its length, attributes, max timestamp and CRC are recomputed.

use bytes::Bytes;

use super::compression::{compress, decompress, slots};
use super::records::RecordStats;
use super::{i32_at, BatchError, BatchInfo, CRC_START, HEADER_LEN, LENGTH_OVERHEAD};

/// The batch rules of one topic (from its configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The codec batches are stored in (`None`: as the producer sent them).
    pub codec: Option<i16>,
    pub gzip_level: i32,
    pub log_append_time: bool,
    pub before_max_ms: i64,
    pub after_max_ms: i64,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules { codec: None, gzip_level: -1, log_append_time: false, before_max_ms: i64::MAX, after_max_ms: 3_600_000 }
    }
}

/// The codec a `compression.type` value asks for.
pub fn codec_of(v: &str) -> Option<i16> {
    match v {
        "uncompressed" => Some(0),
        "gzip" => Some(super::compression::GZIP),
        "snappy" => Some(super::compression::SNAPPY),
        "lz4" => Some(super::compression::LZ4),
        "zstd" => Some(super::compression::ZSTD),
        _ => None, // "producer"
    }
}

/// Whether the batch's timestamps are the producer's: LogAppendTime (the topic's, or a batch
/// that says so) carries the broker's clock and is not checked.
fn create_time(info: &BatchInfo, rules: &Rules) -> bool {
    !rules.log_append_time && info.attributes & 0x08 == 0
}

/// Whether the topic stores the batch in another codec than it came in.
fn recompresses(info: &BatchInfo, rules: &Rules) -> bool {
    rules.codec.is_some_and(|c| c != info.attributes & 0x07)
}

/// Checks a walked batch against the topic's rules at time `now` (ms).
pub fn check(info: &BatchInfo, stats: &RecordStats, rules: &Rules, compact: bool, now: i64) -> Result<(), BatchError> {
    if compact && !stats.null_keys.is_empty() {
        return Err(BatchError::NullKey);
    }
    if create_time(info, rules) {
        if stats.oldest < now.saturating_sub(rules.before_max_ms) {
            return Err(BatchError::Timestamp(stats.oldest));
        }
        if stats.newest > now.saturating_add(rules.after_max_ms) {
            return Err(BatchError::Timestamp(stats.newest));
        }
    }
    Ok(())
}

/// The cheap part of [`check`], on the header alone: a CreateTime batch whose max timestamp is
/// already past the after-bound is refused before its records are decompressed.
pub fn check_header(info: &BatchInfo, rules: &Rules, now: i64) -> Result<(), BatchError> {
    if create_time(info, rules) && info.max_timestamp > now.saturating_add(rules.after_max_ms) {
        return Err(BatchError::Timestamp(info.max_timestamp));
    }
    Ok(())
}

/// Whether [`rewrite`] would change the batch.
pub fn needed(info: &BatchInfo, rules: &Rules) -> bool {
    rules.log_append_time || recompresses(info, rules)
}

/// The batch `b` as the topic stores it, at time `now` (ms).
pub fn rewrite(b: &[u8], info: &BatchInfo, rules: &Rules, now: i64) -> Result<Vec<u8>, BatchError> {
    let codec = info.attributes & 0x07;
    let target = rules.codec.unwrap_or(codec);
    let mut attributes = info.attributes;
    let mut out = if target == codec {
        b.to_vec()
    } else {
        let raw = decompress(b, info)?;
        let body = compress(target, &raw, rules.gzip_level);
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&b[..HEADER_LEN]);
        out.extend_from_slice(&body);
        let len = i32::try_from(out.len() - LENGTH_OVERHEAD).map_err(|_| BatchError::TooLarge(out.len() as u64))?;
        out[8..12].copy_from_slice(&len.to_be_bytes());
        attributes = (attributes & !0x07) | target;
        out
    };
    if rules.log_append_time {
        attributes |= 0x08;
        out[35..43].copy_from_slice(&now.to_be_bytes());
    }
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    debug_assert_eq!(i32_at(&out, 8) as usize + LENGTH_OVERHEAD, out.len());
    Ok(out)
}

/// [`rewrite`], on the blocking pool (holding a per-core slot) when it recompresses.
pub async fn rewrite_off_thread(b: Bytes, info: BatchInfo, rules: Rules, now: i64) -> Result<(Bytes, BatchInfo), BatchError> {
    let out = if recompresses(&info, &rules) {
        let _slot = slots().acquire().await.expect("never closed");
        let i = info.clone();
        tokio::task::spawn_blocking(move || rewrite(&b, &i, &rules, now))
            .await
            .unwrap_or_else(|e| Err(BatchError::Decompress(e.to_string())))?
    } else {
        rewrite(&b, &info, &rules, now)?
    };
    let out = Bytes::from(out);
    let new = super::validate(&out).map_err(|_| BatchError::Invalid("rewritten batch did not validate"))?;
    Ok((out, BatchInfo { records: info.records, ..new }))
}

#[cfg(test)]
mod tests {
    use super::super::compression::{GZIP, LZ4, SNAPPY, ZSTD};
    use super::super::{encode_simple_batch, split};
    use super::*;

    fn now() -> i64 {
        wal_core::util::now_ms() as i64
    }

    fn info_of(b: &[u8]) -> (Bytes, BatchInfo) {
        split(&Bytes::copy_from_slice(b)).unwrap().pop().unwrap()
    }

    fn stats(b: &Bytes, info: &BatchInfo) -> RecordStats {
        info.records.clone().unwrap_or_else(|| super::super::compression::validate(b, info).unwrap())
    }

    #[test]
    fn timestamps_are_checked_against_the_topic_bounds() {
        let rules = Rules { before_max_ms: 60_000, after_max_ms: 60_000, ..Rules::default() };
        for (ts, ok) in [(now(), true), (now() - 120_000, false), (now() + 120_000, false), (now() - 30_000, true)] {
            let (b, info) = info_of(&encode_simple_batch(3, -1, -1, -1, ts));
            let r = check(&info, &stats(&b, &info), &rules, false, now());
            assert_eq!(r.is_ok(), ok, "ts {ts}: {r:?}");
        }
        // Kafka 4's default: an hour ahead at most, any age
        let (b, info) = info_of(&encode_simple_batch(1, -1, -1, -1, now() + 7_200_000));
        assert!(matches!(check(&info, &stats(&b, &info), &Rules::default(), false, now()), Err(BatchError::Timestamp(_))));
        let (b, info) = info_of(&encode_simple_batch(1, -1, -1, -1, 0));
        assert!(check(&info, &stats(&b, &info), &Rules::default(), false, now()).is_ok());
        // the header alone already refuses a batch claiming a max timestamp past the bound
        let (_, info) = info_of(&encode_simple_batch(1, -1, -1, -1, now() + 7_200_000));
        assert!(matches!(check_header(&info, &Rules::default(), now()), Err(BatchError::Timestamp(_))));
        assert!(check_header(&info, &Rules { log_append_time: true, ..Rules::default() }, now()).is_ok());
        // a LogAppendTime topic takes any producer timestamp (it is replaced)
        let lat = Rules { log_append_time: true, ..rules };
        let (b, info) = info_of(&encode_simple_batch(1, -1, -1, -1, now() + 7_200_000));
        assert!(check(&info, &stats(&b, &info), &lat, false, now()).is_ok());
    }

    #[test]
    fn compacted_topics_refuse_null_keys() {
        let (b, info) = info_of(&encode_simple_batch(3, -1, -1, -1, now()));
        let s = stats(&b, &info);
        assert_eq!(s.null_keys, vec![0, 1, 2]);
        assert_eq!(check(&info, &s, &Rules::default(), true, now()), Err(BatchError::NullKey));
        assert!(check(&info, &s, &Rules::default(), false, now()).is_ok());
    }

    #[test]
    fn recompression_keeps_the_records_and_producer_fields() {
        let plain = encode_simple_batch(40, 7, 2, 100, now());
        let (b, info) = info_of(&plain);
        let raw = decompress(&b, &info).unwrap();
        for target in [GZIP, SNAPPY, LZ4, ZSTD, 0] {
            let rules = Rules { codec: Some(target), ..Rules::default() };
            // from uncompressed to target, then from target back to every other codec
            let once = rewrite(&b, &info, &rules, now()).unwrap();
            let (ob, oi) = info_of(&once);
            assert_eq!(oi.attributes & 0x07, target);
            assert_eq!((oi.producer_id, oi.producer_epoch, oi.base_sequence, oi.record_count), (7, 2, 100, 40));
            assert_eq!(decompress(&ob, &oi).unwrap(), raw, "codec {target}");
            assert_eq!(stats(&ob, &oi).null_keys.len(), 40);
            for again in [GZIP, SNAPPY, LZ4, ZSTD, 0] {
                let twice = rewrite(&ob, &oi, &Rules { codec: Some(again), ..Rules::default() }, now()).unwrap();
                let (tb, ti) = info_of(&twice);
                assert_eq!(decompress(&tb, &ti).unwrap(), raw, "codec {target} -> {again}");
            }
        }
        assert!(!needed(&info, &Rules::default()));
        assert!(!needed(&info, &Rules { codec: Some(0), ..Rules::default() }));
        assert!(needed(&info, &Rules { codec: Some(LZ4), ..Rules::default() }));
    }

    #[test]
    fn log_append_time_stamps_the_batch() {
        let (b, info) = info_of(&encode_simple_batch(2, -1, -1, -1, 1000));
        let out = rewrite(&b, &info, &Rules { log_append_time: true, ..Rules::default() }, 5_000_000).unwrap();
        let (_, oi) = info_of(&out);
        assert_eq!(oi.attributes & 0x08, 0x08);
        assert_eq!(oi.max_timestamp, 5_000_000);
        assert_eq!(oi.base_timestamp, 1000, "records keep their own timestamps");
    }
}
