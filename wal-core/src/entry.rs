//! The unit of the log: an entry is opaque bytes with a small generic header.
//!
//! wal-core knows nothing about Kafka. An entry holds `count` logical records (at least one) and
//! the maximum timestamp among them; the log assigns it the offset range `[base, base + count)`.

use bytes::Bytes;

/// One entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Number of logical records in the entry; the entry takes `count` offsets. At least 1.
    pub count: u32,
    /// Largest timestamp (ms) of the records in the entry; -1 when unknown.
    pub max_timestamp: i64,
    pub data: Bytes,
}

impl Entry {
    pub fn new(count: u32, max_timestamp: i64, data: impl Into<Bytes>) -> Self {
        Entry { count, max_timestamp, data: data.into() }
    }
}

/// An entry read back from the log with its assigned offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// First offset of the entry.
    pub offset: u64,
    pub count: u32,
    pub max_timestamp: i64,
    pub data: Bytes,
}

impl StoredEntry {
    /// One past the last offset of the entry.
    pub fn end_offset(&self) -> u64 {
        self.offset + self.count as u64
    }
}

/// The outcome of a durable append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    /// First offset assigned to the entry.
    pub base_offset: u64,
    /// One past the last offset assigned to the entry.
    pub end_offset: u64,
}
