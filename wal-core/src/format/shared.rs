//! The shared write object: blocks of many logs in one object, with an index at its end.
//!
//! ```text
//! chunk_0 | chunk_1 | ... | chunk_n-1            each chunk is one encoded block (see `block`)
//! n x (log_id u64 | segment u64 | epoch u64 | base u64 | end u64 | pos u64 | len u32 | reserved u32)
//! trailer (16 bytes): count u32 | version u16 | reserved u16 | crc u32 | magic "WALS"
//!   (crc: CRC32C of the index records, count, version and reserved fields)
//! ```
//! A reader of one log never needs the index: the log's metadata names each chunk's object and
//! byte range, and the chunk is a self-describing block (its own header, CRC and offsets). The
//! index lets tools and recovery see what an object holds without the metadata.

use bytes::{BufMut, Bytes, BytesMut};

use super::{check_crc, Cursor};
use crate::error::FormatError;

pub const SHARED_MAGIC: [u8; 4] = *b"WALS";
pub const SHARED_VERSION: u16 = 1;
const RECORD_LEN: usize = 56;
const TRAILER_LEN: usize = 16;

/// One chunk of a shared object: which log's block it is and where it lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry {
    pub log_id: u64,
    pub segment: u64,
    pub epoch: u64,
    pub base_offset: u64,
    pub end_offset: u64,
    pub pos: u64,
    pub len: u32,
}

/// Concatenates encoded blocks into one object; returns it and each chunk's entry (`pos` and
/// `len` filled in, in input order).
pub fn encode_shared(chunks: &[(ChunkEntry, Bytes)]) -> (Bytes, Vec<ChunkEntry>) {
    let data: usize = chunks.iter().map(|(_, b)| b.len()).sum();
    let mut buf = BytesMut::with_capacity(data + chunks.len() * RECORD_LEN + TRAILER_LEN);
    let mut entries = Vec::with_capacity(chunks.len());
    for (e, b) in chunks {
        entries.push(ChunkEntry { pos: buf.len() as u64, len: b.len() as u32, ..*e });
        buf.put_slice(b);
    }
    let index_start = buf.len();
    for e in &entries {
        for v in [e.log_id, e.segment, e.epoch, e.base_offset, e.end_offset, e.pos] {
            buf.put_u64_le(v);
        }
        buf.put_u32_le(e.len);
        buf.put_u32_le(0);
    }
    buf.put_u32_le(entries.len() as u32);
    buf.put_u16_le(SHARED_VERSION);
    buf.put_u16_le(0);
    let crc = crc32c::crc32c(&buf[index_start..]);
    buf.put_u32_le(crc);
    buf.put_slice(&SHARED_MAGIC);
    (buf.freeze(), entries)
}

/// Decodes a shared object's index, checking every range against the object's size.
pub fn decode_shared_index(obj: &[u8]) -> Result<Vec<ChunkEntry>, FormatError> {
    if obj.len() < TRAILER_LEN {
        return Err(FormatError::Truncated { need: TRAILER_LEN, have: obj.len() });
    }
    let trailer = &obj[obj.len() - TRAILER_LEN..];
    let mut t = Cursor::new(trailer);
    let count = t.u32()? as usize;
    let version = t.u16()?;
    let _reserved = t.u16()?;
    let crc = t.u32()?;
    let magic = t.magic()?;
    if magic != SHARED_MAGIC {
        return Err(FormatError::BadMagic(magic));
    }
    if version != SHARED_VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let index_len = count
        .checked_mul(RECORD_LEN)
        .filter(|n| *n <= obj.len() - TRAILER_LEN)
        .ok_or(FormatError::Truncated { need: count.saturating_mul(RECORD_LEN).saturating_add(TRAILER_LEN), have: obj.len() })?;
    let index_start = obj.len() - TRAILER_LEN - index_len;
    check_crc("shared object index", &obj[index_start..obj.len() - 8], crc)?;
    let mut c = Cursor::new(&obj[index_start..index_start + index_len]);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let e = ChunkEntry {
            log_id: c.u64()?,
            segment: c.u64()?,
            epoch: c.u64()?,
            base_offset: c.u64()?,
            end_offset: c.u64()?,
            pos: c.u64()?,
            len: c.u32()?,
        };
        let _ = c.u32()?;
        if e.pos.checked_add(e.len as u64).is_none_or(|end| end > index_start as u64) || e.end_offset <= e.base_offset {
            return Err(FormatError::Inconsistent(format!("chunk {}..{} lies outside the object's data", e.pos, e.len)));
        }
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::entry::StoredEntry;
    use crate::format::{decode_block, encode_block};

    fn block(log: u64, base: u64, n: u32) -> (ChunkEntry, Bytes) {
        let e = StoredEntry { offset: base, count: n, max_timestamp: 5, data: Bytes::from(vec![log as u8; 10]) };
        let b = encode_block(log, 0, 1, &[e]);
        (ChunkEntry { log_id: log, segment: 0, epoch: 1, base_offset: base, end_offset: base + n as u64, pos: 0, len: 0 }, b)
    }

    #[test]
    fn chunks_round_trip_and_each_is_a_block() {
        let chunks = vec![block(1, 0, 3), block(2, 10, 1), block(1, 3, 2)];
        let (obj, entries) = encode_shared(&chunks);
        assert_eq!(decode_shared_index(&obj).unwrap(), entries);
        for (e, (_, b)) in entries.iter().zip(&chunks) {
            let slice = obj.slice(e.pos as usize..(e.pos + e.len as u64) as usize);
            assert_eq!(&slice, b);
            let (h, _) = decode_block(&slice).unwrap();
            assert_eq!((h.log_id, h.base_offset), (e.log_id, e.base_offset));
        }
    }

    proptest! {
        #[test]
        fn damaged_objects_are_errors_never_panics(flip in 0usize..400, cut in 0usize..400) {
            let (obj, _) = encode_shared(&[block(1, 0, 3), block(2, 10, 1)]);
            let mut v = obj.to_vec();
            let i = flip % v.len();
            v[i] ^= 0x5a;
            let damaged = decode_shared_index(&v);
            // A flipped data byte leaves the index valid; a flipped index byte must not pass.
            if i >= obj.len() - TRAILER_LEN - 2 * RECORD_LEN {
                prop_assert!(damaged.is_err());
            }
            let _ = decode_shared_index(&obj[..cut.min(obj.len())]);
        }
    }
}
