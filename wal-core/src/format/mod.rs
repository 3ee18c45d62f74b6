//! On-storage formats: data blocks, shared write objects (blocks of many logs) and
//! sealed-segment index objects.
//!
//! Both are versioned and self-describing (magic, format version, log id, segment, epoch) and
//! protected by CRC32C. Decoders never trust a length read from storage: every length and count is
//! checked against the bytes actually present before anything is sliced or allocated, and every
//! failure is a typed [`FormatError`](crate::error::FormatError).

pub mod block;
pub mod index;
pub mod shared;

pub use block::{decode_block, decode_block_header, encode_block, encode_block_flagged, BlockHeader, BLOCK_HEADER_LEN, FLAG_HOLES};
pub use index::{decode_index, encode_index, BlockInfo, SegmentIndex};
pub use shared::{decode_shared_index, encode_shared, ChunkEntry};

use crate::error::FormatError;

/// Little-endian cursor over a byte slice that reports truncation as a typed error.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(FormatError::Truncated { need: self.pos.saturating_add(n), have: self.buf.len() })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn magic(&mut self) -> Result<[u8; 4], FormatError> {
        let s = self.take(4)?;
        Ok([s[0], s[1], s[2], s[3]])
    }
    pub fn u16(&mut self) -> Result<u16, FormatError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes(s.try_into().expect("4 bytes")))
    }
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        let s = self.take(8)?;
        Ok(u64::from_le_bytes(s.try_into().expect("8 bytes")))
    }
    pub fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(self.u64()? as i64)
    }
}

pub(crate) fn check_crc(what: &'static str, data: &[u8], stored: u32) -> Result<(), FormatError> {
    let computed = crc32c::crc32c(data);
    if computed != stored {
        return Err(FormatError::Checksum { what, stored, computed });
    }
    Ok(())
}
