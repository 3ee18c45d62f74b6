//! The compactor: for every partition this gateway leads of a topic whose `cleanup.policy`
//! holds `compact`, a wal-core compaction pass ([`wal_core::Wal::compact_log`]) with the
//! topic's `min.cleanable.dirty.ratio`, `min.compaction.lag.ms`, `max.compaction.lag.ms` and
//! `delete.retention.ms`, every `compaction_check_interval_ms` (Kafka's
//! `log.cleaner.backoff.ms`), one partition at a time (Kafka's one cleaner thread).
//!
//! The producer state is snapshotted first and the pass stops at the snapshot's offset, so a
//! new owner never rebuilds idempotence state from batches compaction emptied (Kafka keeps the
//! last batch of each producer for the same reason), and at the last stable offset, so no
//! record of an open transaction supersedes a committed one (Kafka's first uncleanable
//! offset). Records are read with [`crate::batch::compact::KafkaKeys`], which drops those of
//! aborted transactions. Gauges: the largest cleanable ratio and compaction lag
//! over the partitions of the last round.

use std::sync::Arc;
use std::time::Duration;

use super::Broker;
use crate::batch::compact::KafkaKeys;
use crate::metrics as m;

/// Sweeps of replaced segment objects run every this many rounds.
const SWEEP_EVERY: u64 = 20;

/// What one round over every compacted partition did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Round {
    pub partitions: usize,
    pub passes: usize,
    pub segments_rewritten: usize,
    pub records_removed: u64,
    pub max_cleanable_ratio: f64,
    pub max_lag_ms: u64,
}

pub async fn compact_once(broker: &Broker, sweep: bool) -> Round {
    let mut round = Round::default();
    for topic in broker.topics() {
        let s = topic.meta.settings(&broker.cfg.wal);
        if !s.compact {
            continue;
        }
        for p in &topic.partitions {
            if !broker.leads(p) {
                continue; // the partition's owner compacts it
            }
            round.partitions += 1;
            if let Err(e) = p.snapshot_producers(&*broker.meta).await {
                tracing::warn!(log = %p.log, error = %e, "compaction: snapshotting producer state failed; skipped this round");
                continue;
            }
            let Some(snapshot) = p.snapshot_offset() else { continue };
            let upto = snapshot.min(p.last_stable_offset().max(0) as u64);
            let keys: Arc<dyn wal_core::log::RecordKeys> = Arc::new(KafkaKeys { aborted: wal_core::util::lock(&p.txns).aborted_ranges() });
            let policy = wal_core::log::CompactionPolicy {
                upto,
                max_keys: broker.cfg.compaction_max_keys,
                block_bytes: broker.cfg.wal.flush_max_bytes,
                ..s.compaction
            };
            match broker.wal.compact_log(&p.log, &policy, keys).await {
                Ok(pass) => {
                    round.passes += pass.ran as usize;
                    round.segments_rewritten += pass.segments_rewritten;
                    round.records_removed += pass.records_removed;
                    round.max_cleanable_ratio = round.max_cleanable_ratio.max(pass.cleanable_ratio);
                    round.max_lag_ms = round.max_lag_ms.max(pass.lag_ms);
                }
                Err(e) => tracing::warn!(log = %p.log, error = %e, "compaction pass failed; retried next round"),
            }
            if sweep {
                if let Err(e) = broker.wal.sweep_compacted(&p.log).await {
                    tracing::warn!(log = %p.log, error = %e, "sweeping replaced segment objects failed");
                }
            }
        }
    }
    metrics::gauge!(m::COMPACTION_CLEANABLE_RATIO).set(round.max_cleanable_ratio);
    metrics::gauge!(m::COMPACTION_LAG_SECONDS).set(round.max_lag_ms as f64 / 1000.0);
    metrics::gauge!(m::COMPACTED_PARTITIONS).set(round.partitions as f64);
    round
}

pub fn spawn(broker: Arc<Broker>) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_millis(broker.cfg.compaction_check_interval_ms);
    for g in [m::COMPACTION_CLEANABLE_RATIO, m::COMPACTION_LAG_SECONDS, m::COMPACTED_PARTITIONS] {
        metrics::gauge!(g).set(0.0); // exported from the start
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        for n in 1u64.. {
            tick.tick().await;
            compact_once(&broker, n % SWEEP_EVERY == 0).await;
        }
    })
}
