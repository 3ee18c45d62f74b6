//! Offsets committed inside a transaction (TxnOffsetCommit): pending per producer id until the
//! transaction ends, durable in the MetaStore (`gw/txnoff/{producer id}`), committed on its
//! COMMIT marker and dropped on ABORT ([`super::Coordinator::complete_txn_offsets`]). While
//! one is pending, OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT for that
//! partition (KIP-447), so a consumer taking over waits rather than re-reading.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use wal_core::meta::{Op, Txn};
use wal_core::{MetaError, MetaStore};

use super::offsets::Committed;

const PREFIX: &str = "gw/txnoff/";

fn key(pid: i64) -> String {
    format!("{PREFIX}{pid:020}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: Committed,
}

pub struct TxnOffsets {
    meta: Arc<dyn MetaStore>,
    pending: Mutex<BTreeMap<i64, Vec<PendingOffset>>>,
}

impl TxnOffsets {
    pub async fn load(meta: Arc<dyn MetaStore>) -> Result<TxnOffsets, MetaError> {
        let mut pending = BTreeMap::new();
        for kv in meta.list(PREFIX).await?.kvs {
            let pid = kv.key[PREFIX.len()..].parse::<i64>().ok();
            if let (Some(pid), Ok(v)) = (pid, serde_json::from_slice::<Vec<PendingOffset>>(&kv.value)) {
                pending.insert(pid, v);
            }
        }
        Ok(TxnOffsets { meta, pending: Mutex::new(pending) })
    }

    /// Adds (or replaces, per partition) pending offsets of `pid`'s transaction.
    pub async fn add(&self, pid: i64, offsets: Vec<PendingOffset>) -> Result<(), MetaError> {
        let all = {
            let mut p = wal_core::util::lock(&self.pending);
            let v = p.entry(pid).or_default();
            for o in offsets {
                v.retain(|x| !(x.group == o.group && x.topic == o.topic && x.partition == o.partition));
                v.push(o);
            }
            v.clone()
        };
        self.meta.txn(Txn::new().then(Op::put(key(pid), serde_json::to_vec(&all).expect("serializes")))).await?;
        Ok(())
    }

    /// The pending offsets of `pid` (also those another gateway stored before this one became
    /// the groups' coordinator).
    pub async fn of(&self, pid: i64) -> Result<Vec<PendingOffset>, MetaError> {
        if let Some(v) = wal_core::util::lock(&self.pending).get(&pid) {
            return Ok(v.clone());
        }
        Ok(match self.meta.get(&key(pid)).await? {
            Some(kv) => serde_json::from_slice(&kv.value).unwrap_or_default(),
            None => Vec::new(),
        })
    }

    /// Forgets `pid`'s pending offsets (its transaction ended).
    pub async fn forget(&self, pid: i64) -> Result<(), MetaError> {
        self.meta.txn(Txn::new().then(Op::Delete(key(pid)))).await?;
        wal_core::util::lock(&self.pending).remove(&pid);
        Ok(())
    }

    /// Whether a transaction holds a pending offset for the partition of the group.
    pub fn is_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        wal_core::util::lock(&self.pending).values().flatten().any(|o| o.group == group && o.topic == topic && o.partition == partition)
    }
}
