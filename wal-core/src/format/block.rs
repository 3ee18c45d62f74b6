//! The data block object: what one upload stores.
//!
//! ```text
//! header (72 bytes, little-endian)
//!   magic "WALB" | version u16 | flags u16 | log_id u64 | segment u64 | epoch u64
//!   base_offset u64 | end_offset u64 | entry_count u32 | body_len u32 | max_timestamp i64
//!   body_crc u32 (CRC32C of the body) | header_crc u32 (CRC32C of the 68 bytes before it)
//! body
//!   entry table: entry_count x (count u32 | len u32 | max_timestamp i64)
//!   data: the entries' bytes, concatenated in order
//! ```
//! A reader can learn a block's offset range from one 72-byte range GET of its header.
//!
//! Flag [`FLAG_HOLES`] (blocks written by compaction): an entry of zero bytes is a hole, offsets
//! whose records compaction removed. The decoder counts its offsets and returns no entry for it,
//! so offsets stay dense in the format while readers see gaps.

use bytes::{BufMut, Bytes, BytesMut};

use super::{check_crc, Cursor};
use crate::entry::StoredEntry;
use crate::error::FormatError;

pub const BLOCK_MAGIC: [u8; 4] = *b"WALB";
pub const BLOCK_VERSION: u16 = 1;
pub const BLOCK_HEADER_LEN: usize = 72;
const ENTRY_META_LEN: usize = 16;
/// Header flag: zero-byte entries are holes (see the module text).
pub const FLAG_HOLES: u16 = 1;

/// The decoded header of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub log_id: u64,
    pub segment: u64,
    pub epoch: u64,
    pub base_offset: u64,
    pub end_offset: u64,
    pub entry_count: u32,
    pub body_len: u32,
    pub max_timestamp: i64,
    pub body_crc: u32,
    pub flags: u16,
}

/// Encodes entries (already carrying their offsets, dense and in order) as one block object.
pub fn encode_block(log_id: u64, segment: u64, epoch: u64, entries: &[StoredEntry]) -> Bytes {
    encode_block_flagged(log_id, segment, epoch, entries, 0)
}

/// [`encode_block`] with header `flags` ([`FLAG_HOLES`]: zero-byte entries are holes).
pub fn encode_block_flagged(log_id: u64, segment: u64, epoch: u64, entries: &[StoredEntry], flags: u16) -> Bytes {
    let data_len: usize = entries.iter().map(|e| e.data.len()).sum();
    let body_len = entries.len() * ENTRY_META_LEN + data_len;
    let mut buf = BytesMut::with_capacity(BLOCK_HEADER_LEN + body_len);
    let base = entries.first().map(|e| e.offset).unwrap_or(0);
    let end = entries.last().map(|e| e.end_offset()).unwrap_or(base);
    let max_ts = entries.iter().map(|e| e.max_timestamp).max().unwrap_or(-1);
    buf.put_slice(&BLOCK_MAGIC);
    buf.put_u16_le(BLOCK_VERSION);
    buf.put_u16_le(flags);
    buf.put_u64_le(log_id);
    buf.put_u64_le(segment);
    buf.put_u64_le(epoch);
    buf.put_u64_le(base);
    buf.put_u64_le(end);
    buf.put_u32_le(entries.len() as u32);
    buf.put_u32_le(body_len as u32);
    buf.put_i64_le(max_ts);
    buf.put_u32_le(0); // body crc, patched below
    buf.put_u32_le(0); // header crc, patched below
    for e in entries {
        buf.put_u32_le(e.count);
        buf.put_u32_le(e.data.len() as u32);
        buf.put_i64_le(e.max_timestamp);
    }
    for e in entries {
        buf.put_slice(&e.data);
    }
    let body_crc = crc32c::crc32c(&buf[BLOCK_HEADER_LEN..]);
    buf[64..68].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&buf[..68]);
    buf[68..72].copy_from_slice(&header_crc.to_le_bytes());
    buf.freeze()
}

/// Decodes and verifies a block header from the first [`BLOCK_HEADER_LEN`] bytes of a block.
pub fn decode_block_header(buf: &[u8]) -> Result<BlockHeader, FormatError> {
    let mut c = Cursor::new(buf);
    let magic = c.magic()?;
    if magic != BLOCK_MAGIC {
        return Err(FormatError::BadMagic(magic));
    }
    let version = c.u16()?;
    if version != BLOCK_VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let flags = c.u16()?;
    let h = BlockHeader {
        log_id: c.u64()?,
        segment: c.u64()?,
        epoch: c.u64()?,
        base_offset: c.u64()?,
        end_offset: c.u64()?,
        entry_count: c.u32()?,
        body_len: c.u32()?,
        max_timestamp: c.i64()?,
        body_crc: c.u32()?,
        flags,
    };
    let header_crc = c.u32()?;
    check_crc("block header", &buf[..68], header_crc)?;
    if h.end_offset < h.base_offset {
        return Err(FormatError::Inconsistent(format!("end {} < base {}", h.end_offset, h.base_offset)));
    }
    if (h.entry_count as usize).saturating_mul(ENTRY_META_LEN) > h.body_len as usize {
        return Err(FormatError::Inconsistent(format!("{} entries cannot fit in a {}-byte body", h.entry_count, h.body_len)));
    }
    Ok(h)
}

/// Decodes a whole block, verifying both checksums and every length. Entries are zero-copy
/// slices of `buf`; holes ([`FLAG_HOLES`]) are not returned.
pub fn decode_block(buf: &Bytes) -> Result<(BlockHeader, Vec<StoredEntry>), FormatError> {
    let h = decode_block_header(buf)?;
    let need = BLOCK_HEADER_LEN + h.body_len as usize;
    if buf.len() < need {
        return Err(FormatError::Truncated { need, have: buf.len() });
    }
    if buf.len() > need {
        return Err(FormatError::Inconsistent(format!("{} trailing bytes", buf.len() - need)));
    }
    let body = &buf[BLOCK_HEADER_LEN..need];
    check_crc("block body", body, h.body_crc)?;
    let n = h.entry_count as usize;
    let table_len = n * ENTRY_META_LEN; // bounded by body_len, checked in the header decoder
    let mut table = Cursor::new(&body[..table_len]);
    // `n` is bounded by body_len / 16, itself bounded by the bytes present.
    let mut entries = Vec::with_capacity(n);
    let mut offset = h.base_offset;
    let mut pos = BLOCK_HEADER_LEN + table_len;
    let mut max_ts = i64::MIN;
    for _ in 0..n {
        let count = table.u32()?;
        let len = table.u32()? as usize;
        let ts = table.i64()?;
        if count == 0 {
            return Err(FormatError::Inconsistent("entry with zero records".into()));
        }
        let end = pos
            .checked_add(len)
            .filter(|e| *e <= need)
            .ok_or_else(|| FormatError::Inconsistent(format!("entry of {len} bytes overruns the body")))?;
        if len > 0 || h.flags & FLAG_HOLES == 0 {
            entries.push(StoredEntry { offset, count, max_timestamp: ts, data: buf.slice(pos..end) });
        }
        offset = offset.checked_add(count as u64).ok_or_else(|| FormatError::Inconsistent("offset overflow".into()))?;
        max_ts = max_ts.max(ts);
        pos = end;
    }
    if pos != need {
        return Err(FormatError::Inconsistent(format!("{} unaccounted body bytes", need - pos)));
    }
    if offset != h.end_offset {
        return Err(FormatError::Inconsistent(format!("entries end at {offset}, header says {}", h.end_offset)));
    }
    if n > 0 && max_ts != h.max_timestamp {
        return Err(FormatError::Inconsistent("max timestamp disagrees with entries".into()));
    }
    Ok((h, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entries(specs: &[(u32, i64, Vec<u8>)], base: u64) -> Vec<StoredEntry> {
        let mut off = base;
        specs
            .iter()
            .map(|(c, ts, d)| {
                let e = StoredEntry { offset: off, count: *c, max_timestamp: *ts, data: Bytes::from(d.clone()) };
                off += *c as u64;
                e
            })
            .collect()
    }

    #[test]
    fn round_trip() {
        let es = entries(&[(1, 10, b"a".to_vec()), (3, 5, b"bcd".to_vec()), (2, 7, vec![])], 100);
        let b = encode_block(7, 2, 3, &es);
        let (h, back) = decode_block(&b).unwrap();
        assert_eq!((h.log_id, h.segment, h.epoch, h.base_offset, h.end_offset), (7, 2, 3, 100, 106));
        assert_eq!(h.max_timestamp, 10);
        assert_eq!(back, es);
    }

    #[test]
    fn holes_take_offsets_but_are_not_entries() {
        let es = entries(&[(2, 10, b"ab".to_vec()), (5, -1, vec![]), (1, 7, b"c".to_vec())], 100);
        let b = encode_block_flagged(7, 2, 3, &es, FLAG_HOLES);
        let (h, back) = decode_block(&b).unwrap();
        assert_eq!((h.base_offset, h.end_offset, h.flags), (100, 108, FLAG_HOLES));
        assert_eq!(back, vec![es[0].clone(), es[2].clone()]);
        // without the flag an empty entry is an entry
        assert_eq!(decode_block(&encode_block(7, 2, 3, &es)).unwrap().1, es);
        // a block of holes only
        let (h, back) = decode_block(&encode_block_flagged(7, 2, 3, &es[1..2], FLAG_HOLES)).unwrap();
        assert_eq!((h.base_offset, h.end_offset, back.len()), (102, 107, 0));
    }

    #[test]
    fn timestamps_below_minus_one_round_trip() {
        // Found by the round_trips property: the decoder started its maximum at -1.
        let es = entries(&[(1, -5, b"a".to_vec()), (1, i64::MIN, b"b".to_vec())], 0);
        let (h, back) = decode_block(&encode_block(1, 0, 1, &es)).unwrap();
        assert_eq!(h.max_timestamp, -5);
        assert_eq!(back, es);
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let es = entries(&[(1, 1, b"hello".to_vec()), (2, 2, b"world!".to_vec())], 0);
        let b = encode_block(1, 0, 1, &es);
        for len in 0..b.len() {
            assert!(decode_block(&b.slice(..len)).is_err(), "prefix of {len} bytes decoded");
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let es = entries(&[(1, 1, b"hello".to_vec()), (2, 2, b"world!".to_vec())], 0);
        let b = encode_block(1, 0, 1, &es);
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut m = b.to_vec();
                m[i] ^= 1 << bit;
                assert!(decode_block(&Bytes::from(m)).is_err(), "flip at {i}:{bit} undetected");
            }
        }
    }

    #[test]
    fn huge_counts_in_a_valid_header_do_not_allocate() {
        // A header whose CRC is valid but which claims 2^32-1 entries in a tiny body.
        let mut b = encode_block(1, 0, 1, &entries(&[(1, 1, b"x".to_vec())], 0)).to_vec();
        b[48..52].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&b[..68]);
        b[68..72].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode_block(&Bytes::from(b)), Err(FormatError::Inconsistent(_))));
    }

    proptest! {
        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_block(&Bytes::from(data));
        }

        #[test]
        fn decoder_never_panics_on_mutated_blocks(
            specs in proptest::collection::vec((1u32..5, any::<i64>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
            mutations in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        ) {
            let b = encode_block(1, 2, 3, &entries(&specs, 42)).to_vec();
            let mut m = b.clone();
            for (i, v) in mutations { let i = i % m.len(); m[i] = v; }
            let r = decode_block(&Bytes::from(m.clone()));
            if m != b { prop_assert!(r.is_err() || r.unwrap().1.len() == specs.len()); }
        }

        #[test]
        fn round_trips(specs in proptest::collection::vec((1u32..5, any::<i64>(), proptest::collection::vec(any::<u8>(), 0..40)), 1..8), base in 0u64..1<<40) {
            let es = entries(&specs, base);
            let (_, back) = decode_block(&encode_block(9, 8, 7, &es)).unwrap();
            prop_assert_eq!(back, es);
        }
    }
}
