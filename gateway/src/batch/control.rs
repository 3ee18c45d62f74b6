//! Transaction markers: the control batches a transaction's end writes into each of its
//! partitions (attributes transactional | control, the producer's id and epoch, base sequence
//! -1, one record whose key is `version i16 = 0 | type i16` (0 abort, 1 commit) and whose value
//! is `version i16 = 0 | coordinator epoch i32`), and reading one back.

use super::{encode_batch, put_varint, stored_info, HEADER_LEN};

/// Attributes of a marker: transactional (0x10) and control (0x20).
const MARKER_ATTRIBUTES: i16 = 0x30;

/// A COMMIT (`commit`) or ABORT marker of `pid`/`epoch`, stamped `ts`.
pub fn encode_marker(pid: i64, epoch: i16, commit: bool, coordinator_epoch: i32, ts: i64) -> Vec<u8> {
    let key = [0u8, 0, 0, u8::from(commit)];
    let mut value = vec![0u8, 0];
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut body = vec![0u8];
    put_varint(&mut body, 0); // timestamp delta
    put_varint(&mut body, 0); // offset delta
    put_varint(&mut body, key.len() as i64);
    body.extend_from_slice(&key);
    put_varint(&mut body, value.len() as i64);
    body.extend_from_slice(&value);
    put_varint(&mut body, 0); // headers
    let mut record = Vec::new();
    put_varint(&mut record, body.len() as i64);
    record.extend(body);
    let mut b = encode_batch(&record, 1, pid, epoch, -1, ts);
    b[21..23].copy_from_slice(&MARKER_ATTRIBUTES.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The marker a stored batch is: `Some((producer id, commit))`, `None` for data batches.
pub fn marker_of(b: &[u8]) -> Option<(i64, bool)> {
    let info = stored_info(b)?;
    if !info.is_control() || b.len() < HEADER_LEN + 8 {
        return None;
    }
    // record: length, attributes, ts delta, offset delta, key length (varints of 1 byte here)
    let rec = &b[HEADER_LEN..];
    let key_at = 5; // len(1) attributes(1) ts(1) offset(1) key_len(1)
    let key = rec.get(key_at..key_at + 4)?;
    Some((info.producer_id, i16::from_be_bytes([key[2], key[3]]) == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_validate() {
        for commit in [true, false] {
            let b = encode_marker(42, 3, commit, 0, 1000);
            let info = stored_info(&b).unwrap();
            assert!(info.is_control() && info.is_transactional());
            assert_eq!((info.producer_id, info.producer_epoch, info.base_sequence, info.record_count), (42, 3, -1, 1));
            assert_eq!(marker_of(&b), Some((42, commit)));
            assert!(super::super::validate(&b).is_ok(), "a valid batch");
        }
        assert_eq!(marker_of(&super::super::encode_simple_batch(1, 5, 0, 0, 0)), None);
    }
}
