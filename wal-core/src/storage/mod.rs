//! Object storage: the small trait every backend implements, and the backends.
//!
//! The contract (checked for every backend by `wal_core::testing::object_store_conformance`):
//! - `put_if_absent` stores a whole object atomically, or fails with
//!   [`StorageError::AlreadyExists`] when the key already holds an object; it never overwrites.
//!   This is the fencing primitive (S3 `If-None-Match: *`, a hard link on a local directory).
//! - `get` / `get_range` return exactly the stored bytes (a range is clipped at the object end);
//!   a missing key is [`StorageError::NotFound`].
//! - `list` returns every key starting with the prefix, sorted, with sizes.
//! - `delete` is idempotent: deleting a missing key succeeds.
//!
//! Backends: [`local::LocalStore`] (a directory), [`s3::S3Store`] (aws-sdk-s3), [`memory::MemoryStore`]
//! (tests and benchmarks), and the decorator [`faulty::FaultyStore`] that fails on purpose.

pub mod faulty;
pub mod local;
pub mod memory;
pub mod s3;

use std::ops::Range;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::StorageError;
use crate::metrics as m;

/// A stored object's key and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `data` at `key` unless an object already exists there.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError>;
    /// Reads a whole object.
    async fn get(&self, key: &str) -> Result<Bytes, StorageError>;
    /// Reads `range` of an object, clipped at the object's end.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError>;
    /// Lists the objects whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError>;
    /// Deletes an object; succeeds when it does not exist.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// A short backend name for logs and metrics labels.
    fn backend(&self) -> &'static str;
}

/// Checks that a key is a relative path of safe characters (so no backend can escape its root).
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && !key.starts_with('/')
        && key.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/=".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StorageError::Permanent { op: "validate", message: format!("invalid object key {key:?}") })
    }
}

/// Records the outcome and latency of one object-store call.
pub(crate) fn observe<T>(op: &'static str, started: Instant, r: &Result<T, StorageError>) {
    let result = match r {
        Ok(_) => "ok",
        Err(StorageError::NotFound(_)) => "not_found",
        Err(StorageError::AlreadyExists(_)) => "exists",
        Err(e) if e.is_retriable() => "transient",
        Err(_) => "error",
    };
    metrics::counter!(m::STORAGE_REQUESTS_TOTAL, "op" => op, "result" => result).increment(1);
    metrics::histogram!(m::STORAGE_REQUEST_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
}

/// Wraps any store with request metrics.
pub struct Instrumented<S>(pub S);

#[async_trait]
impl<S: ObjectStore> ObjectStore for Instrumented<S> {
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let t = Instant::now();
        let n = data.len();
        let r = self.0.put_if_absent(key, data).await;
        if r.is_ok() {
            metrics::counter!(m::STORAGE_PUT_BYTES_TOTAL).increment(n as u64);
        }
        observe("put", t, &r);
        r
    }
    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let t = Instant::now();
        let r = self.0.get(key).await;
        if let Ok(b) = &r {
            metrics::counter!(m::STORAGE_GET_BYTES_TOTAL).increment(b.len() as u64);
        }
        observe("get", t, &r);
        r
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        let t = Instant::now();
        let r = self.0.get_range(key, range).await;
        if let Ok(b) = &r {
            metrics::counter!(m::STORAGE_GET_BYTES_TOTAL).increment(b.len() as u64);
        }
        observe("get_range", t, &r);
        r
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let t = Instant::now();
        let r = self.0.list(prefix).await;
        observe("list", t, &r);
        r
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let t = Instant::now();
        let r = self.0.delete(key).await;
        observe("delete", t, &r);
        r
    }
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
}

pub(crate) fn clip(len: u64, range: Range<u64>) -> Range<usize> {
    let start = range.start.min(len) as usize;
    let end = range.end.min(len).max(range.start.min(len)) as usize;
    start..end
}

/// Why [`put_retrying`] gave up.
#[derive(Debug)]
pub enum PutError {
    /// An object with other bytes exists at the key (someone else owns it).
    Conflict(String),
    Failed(StorageError),
}

/// How [`put_retrying`] retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
}

impl RetryPolicy {
    pub fn backoff(&self, attempt: u32) -> std::time::Duration {
        std::time::Duration::from_millis(self.backoff_ms.saturating_mul(1 << attempt.min(16)).min(self.backoff_max_ms))
    }
}

/// Creates `key` with put-if-absent, retrying transient failures with backoff. A key found taken
/// is read back: identical bytes are our own earlier attempt whose answer was lost (success);
/// other bytes are a [`PutError::Conflict`].
pub async fn put_retrying(store: &dyn ObjectStore, key: &str, data: Bytes, policy: RetryPolicy) -> Result<(), PutError> {
    let mut last = None;
    for attempt in 0..policy.attempts {
        if attempt > 0 {
            tokio::time::sleep(policy.backoff(attempt - 1)).await;
        }
        match store.put_if_absent(key, data.clone()).await {
            Ok(()) => return Ok(()),
            Err(StorageError::AlreadyExists(_)) => match store.get(key).await {
                Ok(existing) if existing == data => return Ok(()),
                Ok(_) => return Err(PutError::Conflict(key.to_string())),
                Err(e) => last = Some(e),
            },
            Err(e) if e.is_retriable() => last = Some(e),
            Err(e) => {
                last = Some(e);
                break;
            }
        }
        metrics::counter!(crate::metrics::UPLOAD_ERRORS_TOTAL).increment(1);
    }
    Err(PutError::Failed(last.unwrap_or(StorageError::Transient { op: "put", message: "no attempt made".into() })))
}
