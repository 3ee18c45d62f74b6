//! Group commit for metadata transactions: concurrent transactions of different logs become one.
//!
//! Writers of many logs whose blocks went out in one shared object finish their uploads at the
//! same moment and each commit a small transaction (compare its epoch, put its segment record
//! and chunk references). [`TxnBatcher::txn`] queues them; one task takes everything queued
//! while the previous round ran and runs it as a single transaction: every comparison of every
//! member must hold, so each log stays fenced exactly as strictly as alone. When the merged
//! transaction fails a comparison, the members are run one by one (nothing of the merged one
//! was applied), so a fenced writer fails alone and the others commit. Members that touch the
//! same key, or that would pass the store's per-transaction limits, wait for the next round.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Compare, MetaStore, Op, Txn, TxnResult};
use crate::error::MetaError;
use crate::metrics as m;

/// etcd's default `--max-txn-ops`: comparisons and operations are each limited to this.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// Transactions queued for the batcher at most (callers wait beyond it).
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<TxnResult, MetaError>>;

/// Merges concurrent transactions into one round trip. Cheap to clone.
#[derive(Clone)]
pub struct TxnBatcher {
    tx: mpsc::Sender<(Txn, Reply)>,
}

impl TxnBatcher {
    /// Starts the batcher's task over `meta`; `max_ops` bounds comparisons and operations of a
    /// merged transaction (a single larger one still runs, alone).
    pub fn start(meta: Arc<dyn MetaStore>, max_ops: usize) -> TxnBatcher {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(meta, rx, max_ops.max(1)));
        TxnBatcher { tx }
    }

    /// Runs `txn`, possibly merged with others; the result is this transaction's own.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResult, MetaError> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send((txn, reply)).await.is_err() {
            return Err(MetaError::Transient { op: "txn", message: "transaction batcher stopped".into() });
        }
        rx.await.unwrap_or(Err(MetaError::Transient { op: "txn", message: "transaction batcher stopped".into() }))
    }
}

fn keys_of(t: &Txn) -> impl Iterator<Item = &str> {
    t.compares
        .iter()
        .map(|c| match c {
            Compare::ModRevision(k, _) | Compare::Value(k, _) => k.as_str(),
        })
        .chain(t.ops.iter().map(|o| match o {
            Op::Put { key, .. } => key.as_str(),
            Op::Delete(k) | Op::DeletePrefix(k) => k.as_str(),
        }))
}

/// Splits the queue into the next round: members in order while they fit the limits and touch
/// no key an earlier member touches (a prefix delete conflicts with everything).
pub(crate) fn next_round(queue: &mut Vec<(Txn, Reply)>, max_ops: usize) -> Vec<(Txn, Reply)> {
    let mut round = Vec::new();
    let mut rest = Vec::new();
    let (mut compares, mut ops) = (0, 0);
    let mut touched: HashSet<String> = HashSet::new();
    let mut closed = false;
    for (t, r) in queue.drain(..) {
        let prefix = t.ops.iter().any(|o| matches!(o, Op::DeletePrefix(_)));
        let fits = round.is_empty()
            || (!closed
                && !prefix
                && compares + t.compares.len() <= max_ops
                && ops + t.ops.len() <= max_ops
                && keys_of(&t).all(|k| !touched.contains(k)));
        if fits {
            compares += t.compares.len();
            ops += t.ops.len();
            touched.extend(keys_of(&t).map(String::from));
            closed |= prefix;
            round.push((t, r));
        } else {
            rest.push((t, r));
        }
    }
    *queue = rest;
    round
}

async fn run(meta: Arc<dyn MetaStore>, mut rx: mpsc::Receiver<(Txn, Reply)>, max_ops: usize) {
    let mut queue: Vec<(Txn, Reply)> = Vec::new();
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(item) => queue.push(item),
                None => return,
            }
        }
        while let Ok(item) = rx.try_recv() {
            queue.push(item);
        }
        let round = next_round(&mut queue, max_ops);
        metrics::histogram!(m::META_TXN_MEMBERS).record(round.len() as f64);
        if round.len() == 1 {
            let (t, reply) = round.into_iter().next().expect("one");
            let _ = reply.send(meta.txn(t).await);
            continue;
        }
        let mut merged = Txn::new();
        for (t, _) in &round {
            merged.compares.extend(t.compares.iter().cloned());
            merged.ops.extend(t.ops.iter().cloned());
        }
        match meta.txn(merged).await {
            Ok(r) if r.succeeded => {
                for (_, reply) in round {
                    let _ = reply.send(Ok(r));
                }
            }
            Ok(_) => {
                // Some member's comparison failed and nothing was applied: each on its own.
                for (t, reply) in round {
                    let _ = reply.send(meta.txn(t).await);
                }
            }
            Err(e) => {
                // Outcome unknown for all: each caller decides (they retry idempotent commits).
                let (retriable, text) = (e.is_retriable(), e.to_string());
                for (_, reply) in round {
                    let err = if retriable {
                        MetaError::Transient { op: "txn", message: text.clone() }
                    } else {
                        MetaError::Permanent { op: "txn", message: text.clone() }
                    };
                    let _ = reply.send(Err(err));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::embedded::EmbeddedMeta;

    fn put(k: &str) -> Txn {
        Txn::new().when(Compare::ModRevision(format!("epoch/{k}"), 0)).then(Op::put(format!("seg/{k}"), "v"))
    }

    #[test]
    fn a_round_takes_members_in_order_within_limits_and_without_shared_keys() {
        let mut q: Vec<(Txn, Reply)> = ["a", "b", "a", "c"].iter().map(|k| (put(k), oneshot::channel().0)).collect();
        let round = next_round(&mut q, 128);
        assert_eq!(round.len(), 3, "the second 'a' shares keys with the first");
        assert_eq!(q.len(), 1);
        let mut q: Vec<(Txn, Reply)> = (0..10).map(|i| (put(&i.to_string()), oneshot::channel().0)).collect();
        assert_eq!(next_round(&mut q, 4).len(), 4, "at most 4 comparisons and 4 operations");
        let mut q: Vec<(Txn, Reply)> =
            vec![(Txn::new().then(Op::DeletePrefix("seg/".into())), oneshot::channel().0), (put("x"), oneshot::channel().0)];
        assert_eq!(next_round(&mut q, 128).len(), 1, "a prefix delete runs alone");
    }

    #[tokio::test]
    async fn merged_members_keep_their_own_fencing() {
        let meta: Arc<dyn MetaStore> = Arc::new(EmbeddedMeta::in_memory());
        super::super::put(&*meta, "epoch/fenced", "2").await.unwrap();
        let b = TxnBatcher::start(meta.clone(), 128);
        let calls: Vec<_> = ["ok1", "fenced", "ok2"].iter().map(|k| b.txn(put(k))).collect();
        let results = futures::future::join_all(calls).await;
        let ok: Vec<bool> = results.iter().map(|r| r.as_ref().unwrap().succeeded).collect();
        assert_eq!(ok, vec![true, false, true]);
        assert!(meta.get("seg/ok1").await.unwrap().is_some());
        assert!(meta.get("seg/fenced").await.unwrap().is_none(), "a fenced member applies nothing");
        assert!(meta.get("seg/ok2").await.unwrap().is_some());
    }
}
