//! Metadata: the small key-value trait the log keeps its state in, and its backends.
//!
//! The contract (checked for every backend by `wal_core::testing::meta_store_conformance`):
//! - every successful write bumps one store-wide `revision`; a key remembers the revision of its
//!   creation and last modification;
//! - [`MetaStore::txn`] applies all its operations atomically when every comparison holds, and
//!   nothing otherwise (`ModRevision(key, 0)` holds exactly when the key is absent);
//! - [`MetaStore::watch`] delivers every later change under a prefix, in revision order;
//! - a key put with a lease disappears when the lease expires or is revoked.
//!
//! Backends: [`embedded::EmbeddedMeta`] (single node, a journal file that survives restarts) and
//! `etcd::EtcdMeta` (behind the `etcd` cargo feature).

pub mod batcher;
pub mod embedded;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod faulty;

use crate::util::lock;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::MetaError;
use crate::metrics as m;

/// A stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// The lease the key is attached to, 0 for none.
    pub lease: i64,
}

/// The result of a prefix read: the keys, and the store revision they were read at (watch from
/// there to miss nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub kvs: Vec<KeyValue>,
    pub revision: i64,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's last modification revision equals this (0: the key is absent).
    ModRevision(String, i64),
    /// The key exists and holds exactly this value.
    Value(String, Bytes),
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Bytes, lease: i64 },
    Delete(String),
    DeletePrefix(String),
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>) -> Op {
        Op::Put { key: key.into(), value: value.into(), lease: 0 }
    }
}

/// An atomic compare-and-write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn when(mut self, c: Compare) -> Self {
        self.compares.push(c);
        self
    }
    pub fn then(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }
}

/// The outcome of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether every comparison held (and so the operations were applied).
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// For a delete, the key with an empty value and the deletion revision as `mod_revision`.
    pub kv: KeyValue,
}

/// Events of a watch. An `Err` means the watch broke (lagging consumer, lost connection): the
/// consumer re-reads the state and watches again.
pub type WatchStream = mpsc::Receiver<Result<WatchEvent, MetaError>>;

/// Bound of the queue between a watch source and its consumer.
pub const WATCH_QUEUE_CAPACITY: usize = 1024;

#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError>;
    /// Every key starting with `prefix`, sorted by key, with the store revision of the read.
    async fn list(&self, prefix: &str) -> Result<Listing, MetaError>;
    async fn txn(&self, txn: Txn) -> Result<TxnResult, MetaError>;
    /// Changes under `prefix` after the store revision `after_revision` (0: from now on).
    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream, MetaError>;
    /// Grants a lease that expires `ttl_secs` after its last keep-alive.
    async fn grant_lease(&self, ttl_secs: i64) -> Result<i64, MetaError>;
    /// Refreshes a lease; [`MetaError::LeaseNotFound`] once it expired.
    async fn keep_alive(&self, lease: i64) -> Result<(), MetaError>;
    /// Revokes a lease, deleting its keys.
    async fn revoke_lease(&self, lease: i64) -> Result<(), MetaError>;
    /// A short backend name for logs and metrics.
    fn backend(&self) -> &'static str;
}

/// Shorthand: put a key unconditionally.
pub async fn put(store: &dyn MetaStore, key: &str, value: impl Into<Bytes>) -> Result<i64, MetaError> {
    Ok(store.txn(Txn::new().then(Op::put(key, value))).await?.revision)
}

/// Applies unconditional writes in transactions of at most `max_ops` operations each (etcd
/// refuses a transaction over its `--max-txn-ops`, 128 by default): for writes that need not be
/// atomic together, such as the committed offsets of many partitions. Stops at the first error;
/// the transactions before it stay applied.
pub async fn write_in_chunks(store: &dyn MetaStore, ops: Vec<Op>, max_ops: usize) -> Result<(), MetaError> {
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        let txn = Txn { compares: Vec::new(), ops: ops.by_ref().take(max_ops.max(1)).collect() };
        store.txn(txn).await?;
    }
    Ok(())
}

/// A counter advanced by [`advance_counter`]: its new value and the revision that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advanced {
    /// The value before this advance (0 when the key was absent).
    pub previous: u64,
    /// The value written.
    pub value: u64,
    /// The store revision of the write (what later commits compare against).
    pub revision: i64,
}

/// The value of a counter key written by [`advance_counter`] (0 when unreadable).
pub fn counter_value(kv: &KeyValue) -> u64 {
    std::str::from_utf8(&kv.value).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// Advances the decimal counter at `key` by `step` with a compare-and-swap on its revision, and
/// retries a lost race. `guard` sees the value about to be written and returns the rest of the
/// same transaction (more comparisons and operations) with a value to hand back when the round
/// succeeds; when one of its comparisons fails, the round is simply tried again, so `guard`
/// must itself notice a condition that makes retrying pointless (it reads the store anew every
/// round) and return an error. Log ids, writer epochs and producer ids are counters of this kind.
pub async fn advance_counter<T, E, Fut>(
    meta: &dyn MetaStore,
    key: &str,
    step: u64,
    mut guard: impl FnMut(u64) -> Fut,
) -> Result<(Advanced, T), E>
where
    E: From<MetaError>,
    Fut: std::future::Future<Output = Result<(Txn, T), E>>,
{
    loop {
        let (rev, previous) = match meta.get(key).await? {
            Some(kv) => (kv.mod_revision, counter_value(&kv)),
            None => (0, 0),
        };
        let value = previous + step;
        let (txn, out) = guard(value).await?;
        let r = meta.txn(txn.when(Compare::ModRevision(key.to_string(), rev)).then(Op::put(key, value.to_string()))).await?;
        if r.succeeded {
            return Ok((Advanced { previous, value, revision: r.revision }, out));
        }
    }
}

/// A key kept in the store under a lease while its owner lives (a LogStore node's or a gateway's
/// registration): [`Registration::renew`] keeps the lease alive, and puts the key again under a
/// new lease when the old one expired (the owner was paused or partitioned away).
pub struct Registration {
    meta: std::sync::Arc<dyn MetaStore>,
    key: String,
    value: Bytes,
    ttl_secs: i64,
    lease: std::sync::Mutex<i64>,
}

impl Registration {
    /// Puts `key` = `value` under a new lease of `ttl_secs`.
    pub async fn register(
        meta: std::sync::Arc<dyn MetaStore>,
        key: String,
        value: Bytes,
        ttl_secs: i64,
    ) -> Result<Registration, MetaError> {
        let lease = Self::put_leased(&*meta, &key, &value, ttl_secs).await?;
        Ok(Registration { meta, key, value, ttl_secs, lease: std::sync::Mutex::new(lease) })
    }

    async fn put_leased(meta: &dyn MetaStore, key: &str, value: &Bytes, ttl_secs: i64) -> Result<i64, MetaError> {
        let lease = meta.grant_lease(ttl_secs).await?;
        meta.txn(Txn::new().then(Op::Put { key: key.to_string(), value: value.clone(), lease })).await?;
        Ok(lease)
    }

    fn current(&self) -> i64 {
        *lock(&self.lease)
    }

    /// Keeps the lease alive; returns `true` when it had expired and the key was put again
    /// under a new one. Any other failure (etcd slow or unreachable for a moment) is returned
    /// as it is: the lease may well be alive, and registering again would make the owner give up
    /// and re-acquire everything it holds; the caller tries again within the lease.
    pub async fn renew(&self) -> Result<bool, MetaError> {
        match self.meta.keep_alive(self.current()).await {
            Ok(()) => Ok(false),
            Err(e @ MetaError::LeaseNotFound(_)) => {
                tracing::warn!(key = %self.key, error = %e, "lease lost; registering again");
                let lease = Self::put_leased(&*self.meta, &self.key, &self.value, self.ttl_secs).await?;
                *lock(&self.lease) = lease;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Revokes the lease: the key goes at once.
    pub async fn revoke(&self) -> Result<(), MetaError> {
        self.meta.revoke_lease(self.current()).await
    }
}

/// Runs `renew` (a lease's keep-alive) every third of `ttl`, forever; after a failure again
/// after a twelfth of it (100 ms to 1 s), so a brief metadata outage never lets the lease lapse.
/// `what` names the registration in the warning a failure logs.
pub async fn keep_renewing<T, F, Fut>(ttl: std::time::Duration, what: &'static str, mut renew: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, MetaError>>,
{
    let every = ttl / 3;
    let retry = (ttl / 12).clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(1));
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        wait = match renew().await {
            Ok(_) => every,
            Err(e) => {
                tracing::warn!(error = %e, registration = what, "renewing a registration failed; retrying");
                retry
            }
        };
    }
}

/// Wraps any store with latency metrics.
pub struct Instrumented<S>(pub S);

fn observe<T>(op: &'static str, t: Instant, r: &Result<T, MetaError>) {
    let result = match r {
        Ok(_) => "ok",
        Err(e) if e.is_retriable() => "transient",
        Err(_) => "error",
    };
    metrics::counter!(m::META_REQUESTS_TOTAL, "op" => op, "result" => result).increment(1);
    metrics::histogram!(m::META_REQUEST_SECONDS, "op" => op).record(t.elapsed().as_secs_f64());
}

#[async_trait]
impl<S: MetaStore> MetaStore for Instrumented<S> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError> {
        let t = Instant::now();
        let r = self.0.get(key).await;
        observe("get", t, &r);
        r
    }
    async fn list(&self, prefix: &str) -> Result<Listing, MetaError> {
        let t = Instant::now();
        let r = self.0.list(prefix).await;
        observe("list", t, &r);
        r
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResult, MetaError> {
        let t = Instant::now();
        let r = self.0.txn(txn).await;
        observe("txn", t, &r);
        r
    }
    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream, MetaError> {
        self.0.watch(prefix, after_revision).await
    }
    async fn grant_lease(&self, ttl_secs: i64) -> Result<i64, MetaError> {
        let t = Instant::now();
        let r = self.0.grant_lease(ttl_secs).await;
        observe("lease_grant", t, &r);
        r
    }
    async fn keep_alive(&self, lease: i64) -> Result<(), MetaError> {
        let t = Instant::now();
        let r = self.0.keep_alive(lease).await;
        observe("lease_keep_alive", t, &r);
        r
    }
    async fn revoke_lease(&self, lease: i64) -> Result<(), MetaError> {
        self.0.revoke_lease(lease).await
    }
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_registration_comes_back_after_its_lease_is_gone() {
        let meta: std::sync::Arc<dyn MetaStore> = std::sync::Arc::new(embedded::EmbeddedMeta::in_memory());
        let r = Registration::register(meta.clone(), "reg/a".into(), Bytes::from_static(b"v"), 10).await.unwrap();
        assert_eq!(meta.get("reg/a").await.unwrap().unwrap().value, Bytes::from_static(b"v"));
        assert!(!r.renew().await.unwrap(), "a live lease is only kept alive");
        r.revoke().await.unwrap();
        assert!(meta.get("reg/a").await.unwrap().is_none(), "revoking removes the key");
        assert!(r.renew().await.unwrap(), "a lost lease registers again");
        assert_eq!(meta.get("reg/a").await.unwrap().unwrap().value, Bytes::from_static(b"v"));
        assert!(!r.renew().await.unwrap());
    }

    #[tokio::test]
    async fn a_transient_keep_alive_failure_keeps_the_registration() {
        let meta = std::sync::Arc::new(faulty::FaultyMeta::new(embedded::EmbeddedMeta::in_memory()));
        let r = Registration::register(meta.clone(), "reg/b".into(), Bytes::from_static(b"v"), 10).await.unwrap();
        let lease = meta.get("reg/b").await.unwrap().unwrap().lease;
        meta.fail_keep_alives();
        assert!(r.renew().await.is_err(), "the failure is reported");
        assert_eq!(meta.get("reg/b").await.unwrap().unwrap().lease, lease, "not registered again under a new lease");
        meta.heal();
        assert!(!r.renew().await.unwrap(), "the same lease, kept alive");
        assert_eq!(meta.get("reg/b").await.unwrap().unwrap().lease, lease);
    }
}
