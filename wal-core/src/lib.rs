//! wal-core: a write-ahead log on object storage in the Woodpecker design, in Rust.
//!
//! A [`Wal`] holds many named logs. Each log has one writer at a time ([`LogWriter`], fenced by a
//! metadata epoch) and any number of readers ([`LogReader`]). Entries are opaque bytes with a
//! record count and a timestamp; offsets are dense and never reused. Data lives in object storage
//! as self-describing blocks; metadata lives in etcd or in an embedded store.
//!
//! # Glossary (one word per idea, everywhere in the code)
//! - **entry**: what is appended: opaque bytes, a record count and a max timestamp. An entry
//!   gets the offsets `[base, base + count)`.
//! - **written**: the next offset to assign (accepted in the writer's buffer).
//! - **block**: entries encoded together into one object-format unit (`format::block`).
//! - **flush**: cutting buffered entries into a block and starting its persist step (the group
//!   commit decision); [`LogWriter::flush`] flushes everything and waits until it is durable.
//! - **persist**: what makes a block durable, per buffer mode: **upload** (one PUT to object
//!   storage, MemoryBuffer) or **replicate** (to the segment's LogStore nodes, QuorumBuffer).
//! - **stored**: in object storage. `stored_end`: every block below this offset is stored (a
//!   LogStore node's, or what a node tells the writer with `Stored`).
//! - **commit**: recording stored blocks in the log's metadata, compared against the epoch.
//! - **durable**: acknowledged and readable. `durable_end`: every offset below it is durable
//!   (MemoryBuffer: stored and committed; QuorumBuffer: held by `ack_quorum` replicas).
//! - **epoch**: the writer's generation; a newer epoch **fences** every older writer.
//! - **segment**: a run of blocks of one epoch; **active** (receiving blocks) or **sealed**
//!   (immutable, with an index object). **roll**: start the next segment.
//! - **shared object**: one object holding blocks of many logs (MemoryBuffer); each block in it
//!   is a **chunk**, whose place (object, byte range) is a `chunk/` metadata key.
//! - **segment flushing**: rewriting a sealed segment out of shared objects into its own data
//!   and index objects (the segment's **layout** says where its blocks are).
//! - **replica**: a LogStore node holding a QuorumBuffer segment's blocks until they are stored.
//!
//! # Layout
//! - [`entry`]: what is appended and read back.
//! - [`format`]: the block and segment-index object formats (versioned, CRC32C, bounds-checked).
//! - [`storage`]: the `ObjectStore` trait; local directory, S3, in-memory and fault-injecting
//!   backends.
//! - [`meta`]: the `MetaStore` trait; embedded (journal file) and etcd (feature `etcd`) backends;
//!   the transaction batcher that merges concurrent commits.
//! - [`log`]: the log API: the writer pipeline (`log/writer/`: open, cut, upload or replicate,
//!   commit, ack), readers (tail cache, block cache), recovery and sealing, retention cleaner.
//! - [`logstore`]: QuorumBuffer mode: the LogStore node service, its wire protocol, and the
//!   client side (connections, discovery).
//! - [`config`], [`error`], [`metrics`]: named configuration, typed errors, metric names.
//! - [`util`]: a poison-tolerant lock, `now_ms`, random non-zero ids.
//! - `testing` (tests, or the `testing` feature only): conformance suites every backend runs, and a
//!   harness that starts real etcd and S3-compatible servers on loopback for integration tests.

pub mod config;
pub mod entry;
pub mod error;
pub mod format;
pub mod log;
pub mod logstore;
pub mod meta;
pub mod metrics;
pub mod storage;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod util;

pub use config::{BufferMode, QuorumConfig, WalConfig};
pub use entry::{AppendAck, Entry, StoredEntry};
pub use error::{FormatError, MetaError, StorageError, WalError};
pub use log::{LogInfo, LogMeta, LogReader, LogWriter, Wal};
pub use meta::MetaStore;
pub use storage::ObjectStore;
