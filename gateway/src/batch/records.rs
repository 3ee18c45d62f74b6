//! The records inside a batch, walked without keeping them: a streaming reader over the bytes
//! after the batch header (a slice for uncompressed batches, a bounded decompressor for
//! compressed ones) checks each record as Kafka's broker does: its length agrees with its
//! fields, its offset delta is its index, key / value / header lengths are in range (header
//! keys are never null), and nothing follows the last record. Memory stays constant whatever
//! the record sizes (values are skipped, not read into buffers).

use std::io::{BufRead, ErrorKind, Read};

use super::BatchError;

/// Why reading the record stream failed: the decompressor's own errors, or the bound.
pub(super) fn read_error(e: std::io::Error) -> BatchError {
    if let Some(bound) = e.get_ref().and_then(|i| i.downcast_ref::<OutputBound>()) {
        return BatchError::TooLarge(bound.0);
    }
    match e.kind() {
        ErrorKind::UnexpectedEof => BatchError::Record("record truncated"),
        _ => BatchError::Decompress(e.to_string()),
    }
}

/// The marker error of a stream that passed its output bound.
#[derive(Debug)]
pub struct OutputBound(pub u64);

impl std::fmt::Display for OutputBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "output bound of {} bytes passed", self.0)
    }
}

impl std::error::Error for OutputBound {}

fn byte(r: &mut impl BufRead) -> Result<u8, BatchError> {
    let b = r.fill_buf().map_err(read_error)?;
    let Some(&v) = b.first() else { return Err(BatchError::Record("record truncated")) };
    r.consume(1);
    Ok(v)
}

/// A zigzag varint of at most 10 bytes.
pub(super) fn varint(r: &mut impl BufRead) -> Result<i64, BatchError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = byte(r)?;
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    Err(BatchError::Record("varint longer than 10 bytes"))
}

/// Skips `n` bytes.
fn skip(r: &mut impl BufRead, mut n: u64) -> Result<(), BatchError> {
    while n > 0 {
        let b = r.fill_buf().map_err(read_error)?;
        if b.is_empty() {
            return Err(BatchError::Record("field overruns its record"));
        }
        let step = (b.len() as u64).min(n);
        r.consume(step as usize);
        n -= step;
    }
    Ok(())
}

/// Skips a length-prefixed field (-1 = null when `nullable`); true when it was null.
fn field(r: &mut impl BufRead, nullable: bool) -> Result<bool, BatchError> {
    match varint(r)? {
        -1 if nullable => Ok(true),
        len if len < 0 => Err(BatchError::Record("negative length")),
        len => skip(r, len as u64).map(|_| false),
    }
}

/// What a walk learned about a batch's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordStats {
    /// The oldest and newest record timestamps (`base_timestamp` + deltas).
    pub oldest: i64,
    pub newest: i64,
    /// The indexes of records with a null key (refused by compacted topics).
    pub null_keys: Vec<u32>,
}

/// Walks `count` records from `r` (everything after the batch header) and requires the stream
/// to end after them.
pub fn walk<R: BufRead>(r: &mut R, count: i32, base_timestamp: i64) -> Result<RecordStats, BatchError> {
    let mut stats = RecordStats { oldest: i64::MAX, newest: i64::MIN, null_keys: Vec::new() };
    for i in 0..count as i64 {
        let len = varint(r)?;
        if len <= 0 {
            return Err(BatchError::Record("record length is not positive"));
        }
        let mut rec = (&mut *r).take(len as u64);
        byte(&mut rec)?; // attributes (unused in v2)
        let ts = base_timestamp.saturating_add(varint(&mut rec)?);
        stats.oldest = stats.oldest.min(ts);
        stats.newest = stats.newest.max(ts);
        if varint(&mut rec)? != i {
            return Err(BatchError::Record("offset deltas are not 0, 1, 2, ..."));
        }
        if field(&mut rec, true)? {
            stats.null_keys.push(i as u32); // a null key
        }
        field(&mut rec, true)?; // value
        let headers = varint(&mut rec)?;
        if headers < 0 {
            return Err(BatchError::Record("negative header count"));
        }
        for _ in 0..headers {
            field(&mut rec, false)?;
            field(&mut rec, true)?;
        }
        if rec.limit() != 0 {
            return Err(BatchError::Record("record length disagrees with its fields"));
        }
    }
    if !r.fill_buf().map_err(read_error)?.is_empty() {
        return Err(BatchError::Record("bytes after the last record"));
    }
    Ok(stats)
}
