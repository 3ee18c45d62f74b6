//! A fault-injecting MetaStore decorator for tests: reads under a key prefix fail (one log's
//! metadata unreadable for a while), the next transactions touching a prefix are applied and
//! then reported as failed (the ambiguous outcome of an answer lost on the way back), or lease
//! keep-alives fail (a connection reset while the lease itself lives on).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{KeyValue, Listing, MetaStore, Op, Txn, TxnResult, WatchStream};
use crate::error::MetaError;
use crate::util::lock;

pub struct FaultyMeta<M> {
    inner: M,
    /// Gets and lists of keys under this prefix fail.
    unreadable: Mutex<Option<String>>,
    /// Transactions writing under `lose_prefix` still to apply-then-fail.
    lose_next: AtomicU64,
    lose_prefix: Mutex<String>,
    /// Answers lost so far.
    pub lost: AtomicU64,
    /// Keep-alives fail (transiently) while set.
    keep_alives_fail: AtomicBool,
}

fn transient(op: &'static str, message: &str) -> MetaError {
    MetaError::Transient { op, message: message.to_string() }
}

impl<M: MetaStore> FaultyMeta<M> {
    pub fn new(inner: M) -> Self {
        FaultyMeta {
            inner,
            unreadable: Mutex::new(None),
            lose_next: AtomicU64::new(0),
            lose_prefix: Mutex::new(String::new()),
            lost: AtomicU64::new(0),
            keep_alives_fail: AtomicBool::new(false),
        }
    }

    /// Reads under `prefix` fail until [`FaultyMeta::heal`].
    pub fn make_unreadable(&self, prefix: &str) {
        *lock(&self.unreadable) = Some(prefix.to_string());
    }

    /// The next `n` transactions with an operation under `prefix` are applied, then answered
    /// with a transient error.
    pub fn lose_answers(&self, prefix: &str, n: u64) {
        *lock(&self.lose_prefix) = prefix.to_string();
        self.lose_next.store(n, Ordering::SeqCst);
    }

    /// Keep-alives fail with a transient error until [`FaultyMeta::heal`].
    pub fn fail_keep_alives(&self) {
        self.keep_alives_fail.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        *lock(&self.unreadable) = None;
        self.lose_next.store(0, Ordering::SeqCst);
        self.keep_alives_fail.store(false, Ordering::SeqCst);
    }

    fn readable(&self, key: &str) -> Result<(), MetaError> {
        match lock(&self.unreadable).as_deref() {
            Some(p) if key.starts_with(p) || p.starts_with(key) => Err(transient("read", "injected: unreadable")),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl<M: MetaStore> MetaStore for FaultyMeta<M> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError> {
        self.readable(key)?;
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing, MetaError> {
        self.readable(prefix)?;
        self.inner.list(prefix).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResult, MetaError> {
        let prefix = lock(&self.lose_prefix).clone();
        let touches = txn.ops.iter().any(|op| match op {
            Op::Put { key, .. } | Op::Delete(key) | Op::DeletePrefix(key) => key.starts_with(&prefix),
        });
        let lose = touches && self.lose_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        let r = self.inner.txn(txn).await;
        if lose && r.is_ok() {
            self.lost.fetch_add(1, Ordering::SeqCst);
            return Err(transient("txn", "injected: applied, answer lost"));
        }
        r
    }
    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream, MetaError> {
        self.inner.watch(prefix, after_revision).await
    }
    async fn grant_lease(&self, ttl_secs: i64) -> Result<i64, MetaError> {
        self.inner.grant_lease(ttl_secs).await
    }
    async fn keep_alive(&self, lease: i64) -> Result<(), MetaError> {
        if self.keep_alives_fail.load(Ordering::SeqCst) {
            return Err(transient("lease_keep_alive", "injected: connection reset"));
        }
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: i64) -> Result<(), MetaError> {
        self.inner.revoke_lease(lease).await
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}
