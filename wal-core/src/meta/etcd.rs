//! The etcd backend (etcd-client): transactions map onto etcd `Txn`, watches onto etcd watches
//! (with the start revision), leases onto etcd leases.

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare as EC, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, Txn as ETxn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;

use super::{Compare, EventKind, KeyValue, Listing, MetaStore, Op, Txn, TxnResult, WatchEvent, WatchStream, WATCH_QUEUE_CAPACITY};
use crate::error::MetaError;

/// Keys per page of a [`MetaStore::list`].
pub const LIST_PAGE: i64 = 1000;

/// The end of the key range holding every key that starts with `prefix` (etcd's rule: the
/// prefix with its last byte below 0xff incremented and the rest dropped).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

/// A MetaStore on an etcd cluster. Every key is stored under `root` (e.g. `/wal`).
pub struct EtcdMeta {
    client: Client,
    root: String,
}

fn err(op: &'static str, e: etcd_client::Error) -> MetaError {
    match e {
        etcd_client::Error::InvalidArgs(m) => MetaError::Permanent { op, message: m },
        other => MetaError::Transient { op, message: other.to_string() },
    }
}

impl EtcdMeta {
    /// Connects to `endpoints` (e.g. `["http://127.0.0.1:2379"]`).
    pub async fn connect(endpoints: &[String], root: &str) -> Result<Self, MetaError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(5))
            .with_timeout(std::time::Duration::from_secs(10))
            .with_keep_alive(std::time::Duration::from_secs(5), std::time::Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(opts)).await.map_err(|e| err("connect", e))?;
        Ok(EtcdMeta { client, root: root.trim_end_matches('/').to_string() })
    }

    fn full(&self, key: &str) -> String {
        format!("{}/{key}", self.root)
    }

    fn strip(&self, key: &[u8]) -> String {
        let k = String::from_utf8_lossy(key);
        k.strip_prefix(&format!("{}/", self.root)).unwrap_or(&k).to_string()
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        KeyValue {
            key: self.strip(kv.key()),
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        }
    }
}

#[async_trait]
impl MetaStore for EtcdMeta {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError> {
        let mut kv = self.client.kv_client();
        let r = kv.get(self.full(key), None).await.map_err(|e| err("get", e))?;
        Ok(r.kvs().first().map(|kv| self.kv(kv)))
    }

    /// Read in pages of [`LIST_PAGE`] keys, every page at the revision of the first (one
    /// consistent view however many keys; one response stays far below the client's 4 MiB
    /// message limit unless values are huge).
    async fn list(&self, prefix: &str) -> Result<Listing, MetaError> {
        let mut kv = self.client.kv_client();
        let full = self.full(prefix).into_bytes();
        let end = prefix_end(&full);
        let mut from = full;
        let mut kvs = Vec::new();
        let mut revision = 0;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(LIST_PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let r = kv.get(from.clone(), Some(opts)).await.map_err(|e| err("list", e))?;
            if revision == 0 {
                revision = r.header().map(|h| h.revision()).unwrap_or(0);
            }
            kvs.extend(r.kvs().iter().map(|kv| self.kv(kv)));
            match r.kvs().last() {
                Some(last) if r.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(Listing { kvs, revision })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, MetaError> {
        let compares: Vec<EC> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::ModRevision(k, rev) => EC::mod_revision(self.full(k), CompareOp::Equal, *rev),
                Compare::Value(k, v) => EC::value(self.full(k), CompareOp::Equal, v.to_vec()),
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let opts = (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
                    TxnOp::put(self.full(key), value.to_vec(), opts)
                }
                Op::Delete(key) => TxnOp::delete(self.full(key), None),
                Op::DeletePrefix(p) => TxnOp::delete(self.full(p), Some(DeleteOptions::new().with_prefix())),
            })
            .collect();
        let mut kv = self.client.kv_client();
        let r = kv.txn(ETxn::new().when(compares).and_then(ops)).await.map_err(|e| {
            let s = e.to_string();
            if s.contains("requested lease not found") {
                return MetaError::LeaseNotFound(0);
            }
            err("txn", e)
        })?;
        Ok(TxnResult { succeeded: r.succeeded(), revision: r.header().map(|h| h.revision()).unwrap_or(0) })
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream, MetaError> {
        let mut opts = WatchOptions::new().with_prefix();
        if after_revision > 0 {
            opts = opts.with_start_revision(after_revision + 1);
        }
        let mut wc = self.client.watch_client();
        let mut stream = wc.watch(self.full(prefix), Some(opts)).await.map_err(|e| err("watch", e))?;
        let (tx, rx) = mpsc::channel(WATCH_QUEUE_CAPACITY);
        let root = self.root.clone();
        tokio::spawn(async move {
            let strip = |k: &[u8]| {
                let k = String::from_utf8_lossy(k);
                k.strip_prefix(&format!("{root}/")).unwrap_or(&k).to_string()
            };
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.canceled() {
                            let _ = tx
                                .send(Err(MetaError::Transient {
                                    op: "watch",
                                    message: format!("watch canceled: {}", resp.cancel_reason()),
                                }))
                                .await;
                            return;
                        }
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            let kind = match ev.event_type() {
                                EventType::Put => EventKind::Put,
                                EventType::Delete => EventKind::Delete,
                            };
                            let kv = KeyValue {
                                key: strip(kv.key()),
                                value: Bytes::copy_from_slice(kv.value()),
                                create_revision: kv.create_revision(),
                                mod_revision: kv.mod_revision(),
                                lease: kv.lease(),
                            };
                            if tx.send(Ok(WatchEvent { kind, kv })).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Err(MetaError::Transient { op: "watch", message: "watch stream ended".into() })).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(err("watch", e))).await;
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn grant_lease(&self, ttl_secs: i64) -> Result<i64, MetaError> {
        let mut lc = self.client.lease_client();
        Ok(lc.grant(ttl_secs, None).await.map_err(|e| err("lease_grant", e))?.id())
    }

    async fn keep_alive(&self, lease: i64) -> Result<(), MetaError> {
        let mut lc = self.client.lease_client();
        let map = |e: etcd_client::Error| {
            if e.to_string().contains("not found") {
                MetaError::LeaseNotFound(lease)
            } else {
                err("lease_keep_alive", e)
            }
        };
        let (mut keeper, mut stream) = lc.keep_alive(lease).await.map_err(map)?;
        keeper.keep_alive().await.map_err(map)?;
        match stream.message().await.map_err(map)? {
            Some(r) if r.ttl() > 0 => Ok(()),
            _ => Err(MetaError::LeaseNotFound(lease)),
        }
    }

    async fn revoke_lease(&self, lease: i64) -> Result<(), MetaError> {
        let mut lc = self.client.lease_client();
        match lc.revoke(lease).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("not found") => Ok(()),
            Err(e) => Err(err("lease_revoke", e)),
        }
    }

    fn backend(&self) -> &'static str {
        "etcd"
    }
}
