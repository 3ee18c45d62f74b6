//! Partition ownership: the cluster loop that follows the topic registry and acquires or
//! releases partitions as ownership moves, the leadership checks every partition API applies
//! (leader epoch, NOT_LEADER_OR_FOLLOWER), and what a failed append does to the partition's
//! writer (reopened while this gateway owns it, dropped once another does).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use wal_core::WalError;

use super::partition::Partition;
use super::topics::{TopicMeta, TOPIC_PREFIX};
use super::{Broker, Topic};

impl Broker {
    /// One round of the cluster loop: follow the topic registry, recompute ownership,
    /// acquire what this gateway owns and release what it no longer owns. Errors are logged and
    /// retried at the next round.
    pub async fn cluster_tick(&self) {
        if !self.cluster.serving() {
            // (after a pause: register again before owning anything)
            if let Err(e) = self.cluster.renew().await {
                tracing::warn!(error = %e, "renewing the cluster registration failed");
            }
        }
        if let Err(e) = self.sync_topics().await {
            tracing::warn!(error = %e, "reading the topic registry failed");
        }
        let parts: Vec<(String, i32)> =
            self.topics().iter().flat_map(|t| t.partitions.iter().map(|p| (t.meta.name.clone(), p.index))).collect();
        match self.cluster.refresh(&parts).await {
            Ok(true) => {
                // Coordinators may have moved here: committed offsets are read again.
                if let Err(e) = self.groups.offsets.reload().await {
                    tracing::warn!(error = %e, "reloading committed offsets failed");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "reading cluster membership failed"),
        }
        let mut work = Vec::new();
        for t in self.topics() {
            for p in &t.partitions {
                let owns = self.cluster.owns(&t.meta.name, p.index);
                if owns && !self.leads(p) {
                    let (p, opts) = (p.clone(), self.writer_options(&t.meta));
                    work.push(futures::future::Either::Left(async move {
                        let started = std::time::Instant::now();
                        match p.acquire(&self.wal, opts, self.cluster.generation()).await {
                            Ok(Some(epoch)) => {
                                tracing::info!(log = %p.log, epoch, ms = started.elapsed().as_millis() as u64, "took partition over");
                                if let Err(e) = self.cluster.record_leader(&p.log, epoch as i32).await {
                                    tracing::warn!(log = %p.log, error = %e, "recording the leader");
                                }
                            }
                            Ok(None) => {}
                            Err(e) => tracing::warn!(log = %p.log, error = %e, "taking partition over failed; retrying"),
                        }
                    }));
                } else if !owns && p.holds_writer() {
                    let p = p.clone();
                    work.push(futures::future::Either::Right(async move {
                        p.release(&*self.meta).await;
                    }));
                }
            }
        }
        futures::future::join_all(work).await;
        let led: usize = self.topics().iter().map(|t| t.partitions.iter().filter(|p| self.leads(p)).count()).sum();
        metrics::gauge!(crate::metrics::PARTITIONS_LED).set(led as f64);
        metrics::gauge!(crate::metrics::CLUSTER_MEMBERS).set(self.cluster.view().members.len() as f64);
    }

    /// Follows topics created, deleted or changed by other gateways.
    pub(super) async fn sync_topics(&self) -> anyhow::Result<()> {
        // The registry is read under the admin lock: read before a local delete finished, it
        // brought the deleted topic back (and re-created its logs) until the next round.
        let _g = self.admin.lock().await;
        let listing = self.meta.list(TOPIC_PREFIX).await?;
        let mut seen = std::collections::HashSet::new();
        for kv in listing.kvs {
            let tm: TopicMeta = serde_json::from_slice(&kv.value)?;
            seen.insert(tm.name.clone());
            match self.topic(&tm.name) {
                None => {
                    let t = self.open_topic(tm).await?;
                    self.insert(t);
                }
                Some(t) if t.meta.id != tm.id => {
                    // Deleted and created again elsewhere.
                    self.remove_topic_local(&t).await;
                    let t = self.open_topic(tm).await?;
                    self.insert(t);
                }
                Some(t) if t.meta != tm => {
                    let mut partitions = t.partitions.clone();
                    for i in t.meta.partitions..tm.partitions {
                        partitions.push(Partition::open(&self.wal, Arc::from(tm.name.as_str()), i).await?);
                    }
                    self.insert(Arc::new(Topic { meta: tm, partitions }));
                }
                Some(_) => {}
            }
        }
        for t in self.topics() {
            if !seen.contains(&t.meta.name) {
                self.remove_topic_local(&t).await;
            }
        }
        Ok(())
    }

    /// Forgets a topic deleted elsewhere (its writers closed; the log is the deleter's business).
    async fn remove_topic_local(&self, t: &Topic) {
        self.topics.write().unwrap_or_else(|p| p.into_inner()).remove(&t.meta.name);
        self.groups.offsets.forget_topic(&t.meta.name);
        for p in &t.partitions {
            p.close().await;
            // The cached log state is the deleted log's: a topic created again has new logs.
            self.wal.forget_log(&p.log);
        }
    }

    /// Whether this gateway leads the partition now (owns it and holds a live writer).
    pub fn leads(&self, p: &Partition) -> bool {
        self.cluster.owns(&p.topic, p.index) && p.leading() && p.generation() == self.cluster.generation()
    }

    /// The leader epoch clients see for a partition: this gateway's writer epoch where it
    /// leads, else the epoch the owner recorded.
    pub fn leader_epoch(&self, p: &Partition) -> i32 {
        if p.leading() {
            return p.leader_epoch();
        }
        self.cluster.view().leaders.get(&p.log).map(|r| r.epoch).unwrap_or(-1)
    }

    /// Checks a request's view of the partition's leadership: FENCED_LEADER_EPOCH when it names
    /// an older epoch than the current leader's (here or elsewhere), NOT_LEADER_OR_FOLLOWER when
    /// this gateway does not lead the partition, UNKNOWN_LEADER_EPOCH when it names a newer one
    /// (-1: the request names none).
    pub fn leader_epoch_error(&self, p: &Partition, requested: i32) -> Option<ResponseError> {
        let ours = self.leader_epoch(p);
        if requested >= 0 && requested < ours {
            return Some(ResponseError::FencedLeaderEpoch);
        }
        if !self.leads(p) {
            return Some(ResponseError::NotLeaderOrFollower);
        }
        (requested > ours).then_some(ResponseError::UnknownLeaderEpoch)
    }

    /// An append to the partition failed with `e` under the writer of `epoch`: once another
    /// gateway owns the partition the writer is dropped for good (the new owner fenced it);
    /// while this one owns it, a failed writer (outcome unknown) is reopened in the background.
    pub fn append_failed(&self, p: &Arc<Partition>, e: &WalError, epoch: u64) {
        if !self.cluster.owns(&p.topic, p.index) {
            p.drop_failed_writer();
        } else if matches!(e, WalError::WriterFailed(_)) {
            let (wal, p) = (self.wal.clone(), p.clone());
            let opts = self.topic(&p.topic).map(|t| self.writer_options(&t.meta)).unwrap_or_default();
            tokio::spawn(async move {
                if let Err(e) = p.reopen_writer(&wal, opts, epoch).await {
                    tracing::warn!(log = %p.log, error = %e, "reopening writer failed");
                }
            });
        }
    }

    pub fn writer_options(&self, tm: &TopicMeta) -> wal_core::log::WriterOptions {
        let s = tm.settings(&self.cfg.wal);
        wal_core::log::WriterOptions {
            segment_max_bytes: Some(s.segment_bytes),
            segment_max_age_ms: Some(s.segment_ms),
            buffer: Some(s.buffer),
        }
    }
}
