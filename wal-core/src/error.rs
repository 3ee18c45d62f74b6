//! Typed errors at the crate boundary.
//!
//! Every error says whether retrying the same operation can succeed (`is_retriable`), so callers
//! (the gateway) can map it onto a retriable or fatal Kafka error code without string matching.

use std::fmt;

/// Errors from an [`crate::storage::ObjectStore`].
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// `put_if_absent` found an object already stored at the key.
    #[error("object {0} already exists")]
    AlreadyExists(String),
    /// The key does not exist.
    #[error("object {0} not found")]
    NotFound(String),
    /// A transient failure (network, throttling, 5xx, injected fault): retrying may succeed.
    #[error("transient object-store error during {op}: {message}")]
    Transient { op: &'static str, message: String },
    /// A permanent failure (bad credentials, missing bucket, invalid request).
    #[error("object-store error during {op}: {message}")]
    Permanent { op: &'static str, message: String },
}

impl StorageError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, StorageError::Transient { .. })
    }
}

/// Errors from a [`crate::meta::MetaStore`].
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A transient failure (connection lost, timeout, leader election): retrying may succeed.
    #[error("transient metadata-store error during {op}: {message}")]
    Transient { op: &'static str, message: String },
    /// A permanent failure (corrupt local store, invalid request).
    #[error("metadata-store error during {op}: {message}")]
    Permanent { op: &'static str, message: String },
    /// A lease that does not exist (expired or revoked).
    #[error("lease {0} not found")]
    LeaseNotFound(i64),
}

impl MetaError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, MetaError::Transient { .. })
    }
}

/// Errors decoding a block or index object: storage returned bytes we cannot trust.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("object too short: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    #[error("checksum mismatch in {what}: stored {stored:08x}, computed {computed:08x}")]
    Checksum { what: &'static str, stored: u32, computed: u32 },
    #[error("inconsistent object: {0}")]
    Inconsistent(String),
}

/// The error type of the log API.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("log {0:?} not found")]
    LogNotFound(String),
    #[error("log {0:?} already exists")]
    LogExists(String),
    /// Another writer opened the log with a newer epoch; this writer can never write again.
    #[error("writer of log {log:?} fenced: epoch {epoch} superseded")]
    Fenced { log: String, epoch: u64 },
    /// The offset is outside `[start, end]` of the log.
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: u64, start: u64, end: u64 },
    /// An upload failed permanently; the appends it carried were not stored. Retry the append.
    #[error("append not stored: {0}")]
    AppendFailed(String),
    /// The writer stopped in an unknown state (metadata unreachable); reopen it to continue.
    #[error("writer failed, reopen it: {0}")]
    WriterFailed(String),
    /// The writer was closed.
    #[error("writer closed")]
    Closed,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("corrupt data in {key}: {source}")]
    Format { key: String, source: FormatError },
}

impl WalError {
    /// Whether repeating the operation (possibly after reopening the writer) can succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            WalError::AppendFailed(_) | WalError::WriterFailed(_) => true,
            WalError::Storage(e) => e.is_retriable(),
            WalError::Meta(e) => e.is_retriable(),
            _ => false,
        }
    }
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;

/// A cheap, cloneable description of a failure that must be delivered to many waiters.
#[derive(Debug, Clone)]
pub(crate) enum SharedFailure {
    Fenced {
        log: String,
        epoch: u64,
    },
    Closed,
    /// The appends were not stored; the writer continues.
    Retriable(String),
    /// The writer stopped in an unknown state and must be reopened.
    WriterFailed(String),
}

impl SharedFailure {
    pub fn to_error(&self) -> WalError {
        match self {
            SharedFailure::Fenced { log, epoch } => WalError::Fenced { log: log.clone(), epoch: *epoch },
            SharedFailure::Closed => WalError::Closed,
            SharedFailure::Retriable(m) => WalError::AppendFailed(m.clone()),
            SharedFailure::WriterFailed(m) => WalError::WriterFailed(m.clone()),
        }
    }
    /// Whether the writer must stop after this failure.
    pub fn stops_writer(&self) -> bool {
        !matches!(self, SharedFailure::Retriable(_))
    }
}

impl fmt::Display for SharedFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_error())
    }
}
