//! The transaction coordinator (Kafka's transactions, KIP-98): one gateway coordinates each
//! transactional id (chosen like a group's coordinator), with its state in the MetaStore
//! (`gw/txn/{hex id}`, written with a compare-and-swap on its revision), so a new coordinator
//! continues where a failed one stopped.
//!
//! A transaction: InitProducerId gives the id its producer id and the next epoch (fencing older
//! incarnations; a transaction they left open is aborted first, its markers written with the
//! new epoch); AddPartitionsToTxn / AddOffsetsToTxn make it Ongoing; EndTxn moves it to
//! PrepareCommit / PrepareAbort (persisted), then the markers are delivered to every partition
//! ([`markers`]: the leader's own partitions directly, other gateways' by WriteTxnMarkers) and
//! the group offsets of the transaction completed, then it is CompleteCommit / CompleteAbort.
//! Delivery is retried until done: a coordinator that dies in a Prepare state leaves it to
//! the next one (its background pass finishes every Prepare state it finds). The same pass
//! aborts Ongoing transactions past their `transaction.timeout.ms`, bumping the epoch so the
//! producer that went silent is fenced.

pub mod markers;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use wal_core::meta::{Compare, Op, Txn};
use wal_core::MetaStore;

use crate::broker::Broker;

/// Kafka's `transaction.max.timeout.ms` default.
pub const MAX_TIMEOUT_MS: i32 = 900_000;
const PREFIX: &str = "gw/txn/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl Status {
    /// Kafka's state names (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            Status::Empty => "Empty",
            Status::Ongoing => "Ongoing",
            Status::PrepareCommit => "PrepareCommit",
            Status::PrepareAbort => "PrepareAbort",
            Status::CompleteCommit => "CompleteCommit",
            Status::CompleteAbort => "CompleteAbort",
        }
    }
}

/// One transactional id's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub status: Status,
    pub partitions: BTreeSet<(String, i32)>,
    pub groups: BTreeSet<String>,
    /// When the current transaction started (its first AddPartitions / AddOffsets).
    pub started_ms: u64,
}

fn key(tid: &str) -> String {
    format!("{PREFIX}{}", hex(tid.as_bytes()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    String::from_utf8(bytes?).ok()
}

/// One id's state as this coordinator holds it, with the revision of its key.
struct Entry {
    /// Serializes the operations on one id (they await storage and markers).
    op: tokio::sync::Mutex<()>,
    state: Mutex<Option<(TxnMeta, i64)>>,
}

pub struct TxnCoordinator {
    meta: Arc<dyn MetaStore>,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

/// The producer id and epoch of a request against the state (Kafka's order of errors).
fn check_identity(m: &TxnMeta, pid: i64, epoch: i16) -> Result<(), ResponseError> {
    if m.producer_id != pid {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if epoch < m.producer_epoch {
        return Err(ResponseError::ProducerFenced);
    }
    if epoch > m.producer_epoch {
        return Err(ResponseError::InvalidProducerEpoch);
    }
    Ok(())
}

/// The checks every request of an ongoing producer passes: its identity, then no end running.
fn check_producer(m: &TxnMeta, pid: i64, epoch: i16) -> Result<(), ResponseError> {
    check_identity(m, pid, epoch)?;
    if matches!(m.status, Status::PrepareCommit | Status::PrepareAbort) {
        return Err(ResponseError::ConcurrentTransactions);
    }
    Ok(())
}

fn now_ms() -> u64 {
    wal_core::util::now_ms()
}

impl TxnCoordinator {
    pub fn new(meta: Arc<dyn MetaStore>) -> Arc<TxnCoordinator> {
        Arc::new(TxnCoordinator { meta, entries: Mutex::new(HashMap::new()) })
    }

    fn entry(&self, tid: &str) -> Arc<Entry> {
        let mut m = wal_core::util::lock(&self.entries);
        m.entry(tid.to_string()).or_insert_with(|| Arc::new(Entry { op: tokio::sync::Mutex::new(()), state: Mutex::new(None) })).clone()
    }

    /// The id's state, read from the MetaStore (a coordinator that just took the id over sees
    /// what the previous one stored).
    async fn load(&self, e: &Entry, tid: &str) -> Result<Option<TxnMeta>, ResponseError> {
        let kv = self.meta.get(&key(tid)).await.map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        let loaded = match kv {
            Some(kv) => {
                Some((serde_json::from_slice::<TxnMeta>(&kv.value).map_err(|_| ResponseError::UnknownServerError)?, kv.mod_revision))
            }
            None => None,
        };
        let out = loaded.as_ref().map(|(m, _)| m.clone());
        *wal_core::util::lock(&e.state) = loaded;
        Ok(out)
    }

    /// Stores `m` if the key is still at the revision this coordinator read.
    async fn store(&self, e: &Entry, m: &TxnMeta) -> Result<(), ResponseError> {
        let rev = wal_core::util::lock(&e.state).as_ref().map(|(_, r)| *r).unwrap_or(0);
        let k = key(&m.transactional_id);
        let value = serde_json::to_vec(m).expect("serializes");
        let r = self
            .meta
            .txn(Txn::new().when(Compare::ModRevision(k.clone(), rev)).then(Op::put(k.clone(), value)))
            .await
            .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        if !r.succeeded {
            // another coordinator wrote it: this one is stale
            *wal_core::util::lock(&e.state) = None;
            return Err(ResponseError::NotCoordinator);
        }
        // (the key's revision is the transaction's)
        *wal_core::util::lock(&e.state) = Some((m.clone(), r.revision));
        Ok(())
    }

    /// InitProducerId with a transactional id: the producer id and the next epoch.
    pub async fn init_producer_id(
        &self,
        b: &Broker,
        tid: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ResponseError> {
        if timeout_ms <= 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let e = self.entry(tid);
        let _op = e.op.lock().await;
        let current = self.load(&e, tid).await?;
        let mut m = match current {
            None => {
                let pid = b.allocate_producer_id().await.map_err(|(e, _)| e)?;
                let m = TxnMeta {
                    transactional_id: tid.to_string(),
                    producer_id: pid,
                    producer_epoch: 0,
                    timeout_ms,
                    status: Status::Empty,
                    partitions: BTreeSet::new(),
                    groups: BTreeSet::new(),
                    started_ms: 0,
                };
                self.store(&e, &m).await?;
                return Ok((pid, 0));
            }
            Some(m) => m,
        };
        if let Some((pid, epoch)) = expected.filter(|(p, _)| *p >= 0) {
            // KIP-360: a producer that knows its id and epoch asks to continue with them.
            if pid != m.producer_id || (epoch != m.producer_epoch && epoch != m.producer_epoch - 1) {
                return Err(ResponseError::ProducerFenced);
            }
        }
        // What the previous incarnation left: an open transaction is aborted (its markers at
        // the next epoch fence it), one being completed is finished.
        if m.status == Status::Ongoing {
            m.producer_epoch = m.producer_epoch.saturating_add(1);
            m.status = Status::PrepareAbort;
            self.store(&e, &m).await?;
        }
        if matches!(m.status, Status::PrepareCommit | Status::PrepareAbort) {
            self.complete(b, &e, &mut m).await?;
        }
        if m.producer_epoch >= i16::MAX - 1 {
            m.producer_id = b.allocate_producer_id().await.map_err(|(e, _)| e)?;
            m.producer_epoch = 0;
        } else {
            m.producer_epoch += 1;
        }
        m.timeout_ms = timeout_ms;
        m.status = Status::Empty;
        m.partitions.clear();
        m.groups.clear();
        self.store(&e, &m).await?;
        Ok((m.producer_id, m.producer_epoch))
    }

    /// The state to change for a request of `pid`/`epoch` on `tid`, checked; Ongoing from
    /// here on (a new transaction starts on its first partition or group).
    async fn ongoing(&self, e: &Entry, tid: &str, pid: i64, epoch: i16) -> Result<TxnMeta, ResponseError> {
        let mut m = self.load(e, tid).await?.ok_or(ResponseError::InvalidProducerIdMapping)?;
        check_producer(&m, pid, epoch)?;
        if m.status != Status::Ongoing {
            m.status = Status::Ongoing;
            m.partitions.clear();
            m.groups.clear();
            m.started_ms = now_ms();
        }
        Ok(m)
    }

    /// AddPartitionsToTxn: adds partitions to the producer's transaction.
    pub async fn add_partitions(&self, b: &Broker, tid: &str, pid: i64, epoch: i16, parts: &[(String, i32)]) -> Result<(), ResponseError> {
        for (t, p) in parts {
            if b.partition(t, *p).is_none() {
                return Err(ResponseError::UnknownTopicOrPartition);
            }
        }
        let e = self.entry(tid);
        let _op = e.op.lock().await;
        let mut m = self.ongoing(&e, tid, pid, epoch).await?;
        let before = m.clone();
        m.partitions.extend(parts.iter().cloned());
        if m != before {
            self.store(&e, &m).await?;
        }
        Ok(())
    }

    /// AddPartitionsToTxn v4+ with `verify_only` (KIP-890 part 1, as a partition leader asks):
    /// for each partition, whether the producer's ongoing transaction holds it
    /// (INVALID_TXN_STATE otherwise); nothing changes.
    pub async fn verify(
        &self,
        tid: &str,
        pid: i64,
        epoch: i16,
        parts: &[(String, i32)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let e = self.entry(tid);
        let _op = e.op.lock().await;
        let m = self.load(&e, tid).await?.ok_or(ResponseError::InvalidProducerIdMapping)?;
        check_producer(&m, pid, epoch)?;
        Ok(parts
            .iter()
            .map(|tp| (m.status != Status::Ongoing || !m.partitions.contains(tp)).then_some(ResponseError::InvalidTxnState))
            .collect())
    }

    /// AddOffsetsToTxn: the transaction will commit offsets of `group`.
    pub async fn add_offsets(&self, tid: &str, pid: i64, epoch: i16, group: &str) -> Result<(), ResponseError> {
        let e = self.entry(tid);
        let _op = e.op.lock().await;
        let mut m = self.ongoing(&e, tid, pid, epoch).await?;
        let before = m.clone();
        m.groups.insert(group.to_string());
        if m != before {
            self.store(&e, &m).await?;
        }
        Ok(())
    }

    /// EndTxn: commits or aborts the producer's transaction once every marker is written.
    pub async fn end_txn(&self, b: &Broker, tid: &str, pid: i64, epoch: i16, commit: bool) -> Result<(), ResponseError> {
        let e = self.entry(tid);
        let _op = e.op.lock().await;
        let mut m = self.load(&e, tid).await?.ok_or(ResponseError::InvalidProducerIdMapping)?;
        check_identity(&m, pid, epoch)?;
        match (m.status, commit) {
            (Status::Ongoing, _) => {
                m.status = if commit { Status::PrepareCommit } else { Status::PrepareAbort };
                self.store(&e, &m).await?;
                self.complete(b, &e, &mut m).await
            }
            // a retry of the same EndTxn, or one whose delivery is still running
            (Status::PrepareCommit, true) | (Status::PrepareAbort, false) => self.complete(b, &e, &mut m).await,
            (Status::CompleteCommit, true) | (Status::CompleteAbort, false) => Ok(()),
            // nothing was added: nothing to end
            (Status::Empty, _) => Ok(()),
            _ => Err(ResponseError::InvalidTxnState),
        }
    }

    /// Delivers the markers of a Prepare state and completes the group offsets, then stores
    /// the Complete state. Fails (the state stays Prepare, retried later) if a partition's
    /// leader cannot be reached within a few attempts.
    async fn complete(&self, b: &Broker, e: &Entry, m: &mut TxnMeta) -> Result<(), ResponseError> {
        let commit = match m.status {
            Status::PrepareCommit => true,
            Status::PrepareAbort => false,
            _ => return Ok(()),
        };
        markers::deliver(b, m.producer_id, m.producer_epoch, commit, &m.partitions, &m.groups).await?;
        m.status = if commit { Status::CompleteCommit } else { Status::CompleteAbort };
        self.store(e, m).await
    }

    /// Whether a transactional batch of `pid`/`epoch` may go to `topic`/`partition`: when this
    /// gateway holds the transaction's state, the partition must be in the ongoing
    /// transaction (KIP-890's verification, so no batch opens a transaction no marker will
    /// close); a transaction coordinated elsewhere is not checked here.
    pub fn verify_produce(&self, tid: Option<&str>, pid: i64, epoch: i16, topic: &str, partition: i32) -> Result<(), ResponseError> {
        // (Kafka: transactional records need the request's transactional id)
        let Some(tid) = tid else { return Err(ResponseError::TransactionalIdAuthorizationFailed) };
        let Some(e) = wal_core::util::lock(&self.entries).get(tid).cloned() else { return Ok(()) };
        let state = wal_core::util::lock(&e.state);
        let Some((m, _)) = state.as_ref() else { return Ok(()) };
        if m.producer_id != pid {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if epoch < m.producer_epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        if m.status != Status::Ongoing || !m.partitions.contains(&(topic.to_string(), partition)) {
            return Err(ResponseError::InvalidTxnState);
        }
        Ok(())
    }

    /// Every transactional id whose state the MetaStore holds.
    pub async fn all(&self) -> Result<Vec<TxnMeta>, ResponseError> {
        let l = self.meta.list(PREFIX).await.map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        Ok(l.kvs.iter().filter_map(|kv| serde_json::from_slice::<TxnMeta>(&kv.value).ok()).collect())
    }

    /// One id's state (DescribeTransactions).
    pub async fn describe(&self, tid: &str) -> Result<Option<TxnMeta>, ResponseError> {
        let kv = self.meta.get(&key(tid)).await.map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        Ok(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
    }

    /// The background pass over the ids this gateway coordinates: aborts Ongoing transactions
    /// past their timeout (with the epoch bumped) and finishes Prepare states; returns how many
    /// transactions it ended.
    pub async fn expire_once(&self, b: &Broker) -> usize {
        let Ok(list) = self.meta.list(PREFIX).await else { return 0 };
        let mut ended = 0;
        for kv in list.kvs {
            let Some(tid) = kv.key.strip_prefix(PREFIX).and_then(unhex) else { continue };
            if !b.cluster.coordinates(&tid) {
                continue;
            }
            let Ok(m) = serde_json::from_slice::<TxnMeta>(&kv.value) else { continue };
            let due = match m.status {
                Status::Ongoing => m.started_ms + m.timeout_ms as u64 <= now_ms(),
                Status::PrepareCommit | Status::PrepareAbort => true,
                _ => false,
            };
            if !due {
                continue;
            }
            let e = self.entry(&tid);
            let _op = e.op.lock().await;
            let Ok(Some(mut m)) = self.load(&e, &tid).await else { continue };
            if m.status == Status::Ongoing {
                if m.started_ms + m.timeout_ms as u64 > now_ms() {
                    continue;
                }
                tracing::info!(transactional_id = %tid, producer_id = m.producer_id, "transaction timed out: aborting");
                m.producer_epoch = m.producer_epoch.saturating_add(1);
                m.status = Status::PrepareAbort;
                if self.store(&e, &m).await.is_err() {
                    continue;
                }
            }
            match self.complete(b, &e, &mut m).await {
                Ok(()) => ended += 1,
                Err(err) => tracing::warn!(transactional_id = %tid, error = ?err, "completing a transaction failed; retried next pass"),
            }
        }
        ended
    }
}

/// Runs [`TxnCoordinator::expire_once`] every second.
pub fn spawn(b: Arc<Broker>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            b.txns.expire_once(&b).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_any_bytes_round_trip_through_their_keys() {
        for tid in ["app-1", "a/b c", "ünï"] {
            assert_eq!(unhex(key(tid).strip_prefix(PREFIX).unwrap()).as_deref(), Some(tid));
        }
    }

    #[test]
    fn producer_checks_follow_kafka() {
        let m = TxnMeta {
            transactional_id: "t".into(),
            producer_id: 5,
            producer_epoch: 3,
            timeout_ms: 1000,
            status: Status::Ongoing,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            started_ms: 0,
        };
        assert_eq!(check_producer(&m, 5, 3), Ok(()));
        assert_eq!(check_producer(&m, 6, 3), Err(ResponseError::InvalidProducerIdMapping));
        assert_eq!(check_producer(&m, 5, 2), Err(ResponseError::ProducerFenced));
        assert_eq!(check_producer(&m, 5, 4), Err(ResponseError::InvalidProducerEpoch));
        let preparing = TxnMeta { status: Status::PrepareCommit, ..m };
        assert_eq!(check_producer(&preparing, 5, 3), Err(ResponseError::ConcurrentTransactions));
    }
}
