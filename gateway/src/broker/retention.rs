//! Retention: per partition, truncates the log before the newest segment that `retention.ms` or
//! `retention.bytes` lets go, then lets the WAL cleaner delete whole segments below the start.
//! The active (last) segment is never deleted. The same loop expires the committed offsets of
//! groups without members after `offsets_retention_ms` (Kafka's `offsets.retention.minutes`).

use std::sync::Arc;
use std::time::Duration;

use wal_core::log::{SegmentMeta, SegmentState};

use super::Broker;

/// The offset to truncate before, given the segments (oldest first) and the topic limits.
pub fn retention_point(segs: &[SegmentMeta], retention_ms: i64, retention_bytes: i64, now_ms: i64) -> Option<u64> {
    let candidates = segs.len().saturating_sub(1); // never the last segment
    let mut point = None;
    if retention_ms >= 0 {
        let cutoff = now_ms - retention_ms;
        for s in segs.iter().take(candidates) {
            let newest = if s.max_timestamp >= 0 { s.max_timestamp } else { s.created_ms as i64 };
            if s.state == SegmentState::Sealed && newest < cutoff {
                point = Some(s.end_offset);
            } else {
                break;
            }
        }
    }
    if retention_bytes >= 0 {
        let mut total: i64 = segs.iter().map(|s| s.bytes as i64).sum();
        for s in segs.iter().take(candidates) {
            if s.state != SegmentState::Sealed || total - (s.bytes as i64) < retention_bytes {
                break;
            }
            total -= s.bytes as i64;
            point = Some(point.unwrap_or(0).max(s.end_offset));
        }
    }
    point
}

pub async fn enforce_once(broker: &Broker) -> anyhow::Result<u64> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let mut truncated = 0;
    for topic in broker.topics() {
        let s = topic.meta.settings(&broker.cfg.wal);
        // Only cleanup.policy=delete (alone or with compact) deletes by age or size.
        if !s.delete || (s.retention_ms < 0 && s.retention_bytes < 0) {
            continue;
        }
        for p in &topic.partitions {
            if !broker.leads(p) {
                continue; // the partition's owner enforces it
            }
            // One partition failing (its metadata unreadable for a moment) must not stop
            // retention for the others: logged, and tried again at the next pass.
            let segs = match broker.wal.segments(&p.log).await {
                Ok(segs) => segs,
                Err(e) => {
                    tracing::warn!(log = %p.log, error = %e, "retention: reading segments failed");
                    continue;
                }
            };
            if let Some(point) = retention_point(&segs, s.retention_ms, s.retention_bytes, now) {
                if point > p.reader.start_offset() {
                    match broker.wal.truncate(&p.log, point).await {
                        Ok(_) => truncated += 1,
                        Err(e) => tracing::warn!(log = %p.log, error = %e, "retention: truncating failed"),
                    }
                }
            }
        }
    }
    if truncated > 0 {
        broker.wal.clean_once().await?;
    }
    Ok(truncated)
}

pub fn spawn(broker: Arc<Broker>) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_millis(broker.cfg.retention_check_interval_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = enforce_once(&broker).await {
                tracing::warn!(error = %e, "retention pass failed");
            }
            let retention = Duration::from_millis(broker.cfg.offsets_retention_ms);
            if let Err(e) = broker.groups.expire_offsets(retention, |g| broker.cluster.coordinates(g)).await {
                tracing::warn!(error = %e, "expiring committed offsets failed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: u64, base: u64, end: u64, bytes: u64, ts: i64, sealed: bool) -> SegmentMeta {
        SegmentMeta {
            id,
            epoch: 1,
            base_offset: base,
            end_offset: end,
            bytes,
            blocks: 1,
            max_timestamp: ts,
            state: if sealed { SegmentState::Sealed } else { SegmentState::Active },
            created_ms: 0,
            replicas: Vec::new(),
            ack_quorum: 0,
            fixed_end: None,
            layout: Default::default(),
            compacted: None,
        }
    }

    #[test]
    fn time_and_size_retention() {
        let segs = vec![seg(0, 0, 10, 100, 1000, true), seg(1, 10, 20, 100, 2000, true), seg(2, 20, 30, 100, 3000, false)];
        assert_eq!(retention_point(&segs, 500, -1, 1600), Some(10));
        assert_eq!(retention_point(&segs, 500, -1, 2600), Some(20));
        assert_eq!(retention_point(&segs, 500, -1, 9999), Some(20), "never the active segment");
        assert_eq!(retention_point(&segs, -1, 50, 0), Some(20));
        assert_eq!(retention_point(&segs, -1, 150, 0), Some(10));
        assert_eq!(retention_point(&segs, -1, 250, 0), None);
        assert_eq!(retention_point(&segs, -1, 300, 0), None);
        assert_eq!(retention_point(&segs, -1, -1, 0), None);
    }
}
