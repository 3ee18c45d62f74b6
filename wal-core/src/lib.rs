//! wal-core: a write-ahead log on object storage in the Woodpecker design, in Rust.
//!
//! A [`Wal`] holds many named logs. Each log has one writer at a time ([`LogWriter`], fenced by a
//! metadata epoch) and any number of readers ([`LogReader`]). Entries are opaque bytes with a
//! record count and a timestamp; offsets are dense and never reused. Data lives in object storage
//! as self-describing blocks; metadata lives in etcd or in an embedded store.
//!
//! # Layout
//! - [`entry`]: what is appended and read back.
//! - [`format`]: the block and segment-index object formats (versioned, CRC32C, bounds-checked).
//! - [`storage`]: the `ObjectStore` trait; local directory, S3, in-memory and fault-injecting
//!   backends.
//! - [`meta`]: the `MetaStore` trait; embedded (journal file) and etcd (feature `etcd`) backends.
//! - [`log`]: the log API: writer (MemoryBuffer mode, group commit, ordered acks), readers (tail
//!   cache, block cache), recovery and sealing, retention cleaner.
//! - [`logstore`]: QuorumBuffer mode: the LogStore node service, its wire protocol, and the
//!   client side (connections, discovery).
//! - [`config`], [`error`], [`metrics`]: named configuration, typed errors, metric names.
//! - [`testing`]: conformance suites every backend runs, and a harness that starts real etcd and
//!   S3-compatible servers on loopback for integration tests.

pub mod config;
pub mod entry;
pub mod error;
pub mod format;
pub mod log;
pub mod logstore;
pub mod meta;
pub mod metrics;
pub mod storage;
pub mod testing;
pub mod util;

pub use config::{BufferMode, QuorumConfig, WalConfig};
pub use entry::{AppendAck, Entry, StoredEntry};
pub use error::{FormatError, MetaError, StorageError, WalError};
pub use log::{LogInfo, LogMeta, LogReader, LogWriter, Wal};
pub use meta::MetaStore;
pub use storage::ObjectStore;
