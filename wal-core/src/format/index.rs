//! The index object of a sealed segment: one record per block, so a reader finds the block that
//! holds any offset (or timestamp) with one GET of the index and one range GET of the block.
//!
//! ```text
//! magic "WALI" | version u16 | flags u16 | log_id u64 | segment u64 | epoch u64
//! base_offset u64 | end_offset u64 | block_count u32 | reserved u32
//! block_count x (base_offset u64 | end_offset u64 | max_timestamp i64 | size u32 | reserved u32)
//! crc u32 (CRC32C of everything before it)
//! ```

use bytes::{BufMut, BytesMut};

use super::{check_crc, Cursor};
use crate::error::FormatError;

pub const INDEX_MAGIC: [u8; 4] = *b"WALI";
pub const INDEX_VERSION: u16 = 1;
const INDEX_HEADER_LEN: usize = 56;
const INDEX_RECORD_LEN: usize = 32;

/// Where one block of a segment lives and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockInfo {
    pub base_offset: u64,
    pub end_offset: u64,
    pub max_timestamp: i64,
    /// Size of the block object in bytes.
    pub size: u32,
}

/// The decoded index of a sealed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    pub log_id: u64,
    pub segment: u64,
    pub epoch: u64,
    pub base_offset: u64,
    pub end_offset: u64,
    pub blocks: Vec<BlockInfo>,
}

pub fn encode_index(idx: &SegmentIndex) -> bytes::Bytes {
    let mut buf = BytesMut::with_capacity(INDEX_HEADER_LEN + idx.blocks.len() * INDEX_RECORD_LEN + 4);
    buf.put_slice(&INDEX_MAGIC);
    buf.put_u16_le(INDEX_VERSION);
    buf.put_u16_le(0);
    buf.put_u64_le(idx.log_id);
    buf.put_u64_le(idx.segment);
    buf.put_u64_le(idx.epoch);
    buf.put_u64_le(idx.base_offset);
    buf.put_u64_le(idx.end_offset);
    buf.put_u32_le(idx.blocks.len() as u32);
    buf.put_u32_le(0);
    for b in &idx.blocks {
        buf.put_u64_le(b.base_offset);
        buf.put_u64_le(b.end_offset);
        buf.put_i64_le(b.max_timestamp);
        buf.put_u32_le(b.size);
        buf.put_u32_le(0);
    }
    let crc = crc32c::crc32c(&buf);
    buf.put_u32_le(crc);
    buf.freeze()
}

pub fn decode_index(buf: &[u8]) -> Result<SegmentIndex, FormatError> {
    if buf.len() < INDEX_HEADER_LEN + 4 {
        return Err(FormatError::Truncated { need: INDEX_HEADER_LEN + 4, have: buf.len() });
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    let mut c = Cursor::new(body);
    let magic = c.magic()?;
    if magic != INDEX_MAGIC {
        return Err(FormatError::BadMagic(magic));
    }
    let version = c.u16()?;
    if version != INDEX_VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    check_crc("segment index", body, stored)?;
    let _flags = c.u16()?;
    let (log_id, segment, epoch, base_offset, end_offset) = (c.u64()?, c.u64()?, c.u64()?, c.u64()?, c.u64()?);
    let count = c.u32()? as usize;
    let _ = c.u32()?;
    let need = count.saturating_mul(INDEX_RECORD_LEN).saturating_add(INDEX_HEADER_LEN);
    if need != body.len() {
        return Err(FormatError::Inconsistent(format!("{count} blocks need {need} bytes, have {}", body.len())));
    }
    let mut blocks = Vec::with_capacity(count);
    let mut expect = base_offset;
    for _ in 0..count {
        let b = BlockInfo { base_offset: c.u64()?, end_offset: c.u64()?, max_timestamp: c.i64()?, size: c.u32()? };
        let _ = c.u32()?;
        if b.base_offset != expect || b.end_offset <= b.base_offset {
            return Err(FormatError::Inconsistent(format!(
                "block [{}, {}) breaks the offset chain at {expect}",
                b.base_offset, b.end_offset
            )));
        }
        expect = b.end_offset;
        blocks.push(b);
    }
    if expect != end_offset {
        return Err(FormatError::Inconsistent(format!("blocks end at {expect}, index says {end_offset}")));
    }
    Ok(SegmentIndex { log_id, segment, epoch, base_offset, end_offset, blocks })
}

impl SegmentIndex {
    /// The position of the block holding `offset`, if any.
    pub fn find(&self, offset: u64) -> Option<usize> {
        find_block(&self.blocks, offset)
    }
}

/// Binary search for the block whose range holds `offset`.
pub fn find_block(blocks: &[BlockInfo], offset: u64) -> Option<usize> {
    let i = blocks.partition_point(|b| b.end_offset <= offset);
    (i < blocks.len() && blocks[i].base_offset <= offset).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> SegmentIndex {
        let blocks = vec![
            BlockInfo { base_offset: 10, end_offset: 15, max_timestamp: 3, size: 100 },
            BlockInfo { base_offset: 15, end_offset: 16, max_timestamp: 9, size: 80 },
        ];
        SegmentIndex { log_id: 1, segment: 4, epoch: 2, base_offset: 10, end_offset: 16, blocks }
    }

    #[test]
    fn round_trip_and_find() {
        let idx = sample();
        let back = decode_index(&encode_index(&idx)).unwrap();
        assert_eq!(back, idx);
        assert_eq!(back.find(9), None);
        assert_eq!(back.find(10), Some(0));
        assert_eq!(back.find(14), Some(0));
        assert_eq!(back.find(15), Some(1));
        assert_eq!(back.find(16), None);
    }

    #[test]
    fn corruption_is_detected() {
        let b = encode_index(&sample()).to_vec();
        for i in 0..b.len() {
            let mut m = b.clone();
            m[i] ^= 0x40;
            assert!(decode_index(&m).is_err(), "flip at {i} undetected");
        }
        for len in 0..b.len() {
            assert!(decode_index(&b[..len]).is_err());
        }
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_index(&data);
        }
    }
}
