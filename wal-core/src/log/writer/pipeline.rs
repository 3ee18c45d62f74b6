//! The writer's task: drives flush -> persist -> commit -> ack for either strategy.
//!
//! Each round: the strategy's preparation (QuorumBuffer commits what the replicas stored and
//! rolls when needed), then blocks are cut while the flush decision says so and a persist slot
//! is free, then the task waits for the oldest block's persist step, new data, the oldest
//! entry's age, a stored notice or a retry time. Finished blocks are handled strictly in order:
//! the first one plus every later one already finished; a failure fails everything behind it.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::cut::Cut;
use super::{InFlight, PersistError, SegCursor, Strategy, WriterInner};
use crate::error::{SharedFailure, StorageError};
use crate::log::ChunkLoc;
use crate::metrics as m;
use crate::util::lock;

impl Strategy {
    /// Work before cutting; breaks when the writer must stop.
    async fn prepare(
        &mut self,
        w: &WriterInner,
        cur: &mut SegCursor,
        pipeline: &mut VecDeque<InFlight>,
        retry_at: &mut Option<tokio::time::Instant>,
    ) -> ControlFlow<()> {
        match self {
            Strategy::Memory => ControlFlow::Continue(()),
            Strategy::Quorum(q) => w.quorum_prepare(cur, q, pipeline, retry_at).await,
        }
    }

    /// Whether no block may be cut now (QuorumBuffer: the next one needs a roll first).
    fn holds(&self, w: &WriterInner, cur: &SegCursor) -> bool {
        match self {
            Strategy::Memory => false,
            Strategy::Quorum(q) => w.needs_roll(cur, q),
        }
    }

    /// Whether segments roll at cut time, by the block's size.
    fn rolls_at_cut(&self) -> bool {
        matches!(self, Strategy::Memory)
    }

    /// Starts the persist step of a cut block.
    fn persist(&self, w: &Arc<WriterInner>, c: Cut) -> InFlight {
        metrics::gauge!(m::UPLOADS_INFLIGHT).increment(1.0);
        match self {
            Strategy::Memory => {
                let me = w.clone();
                let (key, data, seg_id, info) = (c.key, c.data, c.seg_id, c.info);
                let task = tokio::spawn(async move {
                    let r = me.upload(&key, seg_id, info, data).await;
                    metrics::gauge!(m::UPLOADS_INFLIGHT).decrement(1.0);
                    r
                });
                InFlight { seg_id: c.seg_id, info: c.info, entries: c.entries, task, loc: None }
            }
            Strategy::Quorum(q) => w.replicate(q, c),
        }
    }

    /// The blocks' persist steps succeeded (in order): make them durable and acknowledge.
    /// On a failed commit, hands the blocks back with the failure.
    async fn persisted(&mut self, w: &WriterInner, cur: &mut SegCursor, done: Vec<InFlight>) -> Result<(), (SharedFailure, Vec<InFlight>)> {
        match self {
            Strategy::Memory => match w.commit(cur, &done, true).await {
                Ok(()) => {
                    w.release(done);
                    Ok(())
                }
                Err(f) => Err((f, done)),
            },
            Strategy::Quorum(q) => {
                w.quorum_reached(q, done);
                Ok(())
            }
        }
    }

    /// Whether everything acknowledged is in object storage and committed.
    fn all_stored(&self) -> bool {
        match self {
            Strategy::Memory => true,
            Strategy::Quorum(q) => q.all_stored(),
        }
    }

    fn stored_watch(&self) -> Option<(tokio::sync::watch::Receiver<u64>, u64)> {
        match self {
            Strategy::Memory => None,
            Strategy::Quorum(q) => q.stored_watch(),
        }
    }
}

/// The oldest block's persist step finished: takes it and every later finished one, in order.
/// Returns the blocks that succeeded and the first failure (its block back at the front).
fn finished(
    pipeline: &mut VecDeque<InFlight>,
    first: Result<Result<Option<ChunkLoc>, PersistError>, tokio::task::JoinError>,
) -> (Vec<InFlight>, Result<(), PersistError>) {
    let lost = |m: String| PersistError::Failed(StorageError::Transient { op: "put", message: m });
    let mut head = pipeline.pop_front().expect("the caller awaited it");
    let mut outcome = match first {
        Ok(Ok(loc)) => {
            head.loc = loc;
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(join) => Err(lost(join.to_string())),
    };
    let mut done = Vec::new();
    if outcome.is_ok() {
        done.push(head);
    } else {
        pipeline.push_front(head); // failed below, with everything behind it
    }
    while outcome.is_ok() && pipeline.front().is_some_and(|b| b.task.is_finished()) {
        let mut b = pipeline.pop_front().expect("checked");
        match (&mut b.task).now_or_never() {
            Some(Ok(Ok(loc))) => {
                b.loc = loc;
                done.push(b);
            }
            other => {
                outcome = Err(match other {
                    Some(Ok(Err(e))) => e,
                    _ => lost("upload task lost".into()),
                });
                pipeline.push_front(b);
            }
        }
    }
    (done, outcome)
}

pub(super) async fn run(w: Arc<WriterInner>, mut cur: SegCursor, mut strategy: Strategy) {
    let mut pipeline: VecDeque<InFlight> = VecDeque::new();
    let max = w.wal.cfg.max_inflight_uploads;
    let age = Duration::from_millis(w.wal.cfg.flush_max_age_ms);
    // When to try again a preparation step that failed.
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut closing_since: Option<Instant> = None;
    loop {
        if strategy.prepare(&w, &mut cur, &mut pipeline, &mut retry_at).await.is_break() {
            break;
        }
        let hold = strategy.holds(&w, &cur);
        while pipeline.len() < max && !hold {
            match w.cut(&mut cur, pipeline.len(), strategy.rolls_at_cut()) {
                Some(c) => pipeline.push_back(strategy.persist(&w, c)),
                None => break,
            }
        }
        let (closing, oldest) = {
            let st = lock(&w.state);
            (st.closing, st.buffer.front().map(|p| p.at))
        };
        if closing && pipeline.is_empty() && oldest.is_none() {
            if strategy.all_stored() {
                break;
            }
            let since = *closing_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_millis(w.wal.cfg.commit_timeout_ms) {
                tracing::warn!(log = %w.name, "closing before the replicas stored everything; the next writer recovers it");
                break;
            }
        }
        let mut stored_rx = strategy.stored_watch();
        if let Some((rx, end)) = &stored_rx {
            if *rx.borrow() >= *end && retry_at.is_none() {
                continue;
            }
        }
        let hold = strategy.holds(&w, &cur);
        let deadline = oldest.map(|t| tokio::time::Instant::from_std(t + age));
        tokio::select! {
            r = async { (&mut pipeline.front_mut().expect("checked").task).await }, if !pipeline.is_empty() => {
                let (done, outcome) = finished(&mut pipeline, r);
                // Make durable what succeeded, in order, then deal with a failure behind it.
                if let Err((f, done)) = strategy.persisted(&w, &mut cur, done).await {
                    let stop = f.stops_writer();
                    let mut all: VecDeque<InFlight> = done.into_iter().chain(pipeline.drain(..)).collect();
                    w.fail_all(f, &mut all, stop);
                    if stop {
                        break;
                    }
                    cur.roll_next = true;
                    continue;
                }
                if let Err(e) = outcome {
                    let fenced = matches!(e, PersistError::Conflict(_));
                    tracing::warn!(log = %w.name, error = %e, "persisting a block failed permanently; failing pending appends");
                    let f = if fenced {
                        SharedFailure::Fenced { log: w.name.clone(), epoch: w.epoch }
                    } else {
                        SharedFailure::Retriable(format!("block upload failed: {e}"))
                    };
                    w.fail_all(f, &mut pipeline, fenced);
                    if fenced {
                        break;
                    }
                    cur.roll_next = true;
                }
            }
            _ = w.wake.notified() => {}
            _ = async { tokio::time::sleep_until(deadline.expect("checked")).await }, if deadline.is_some() && pipeline.len() < max && !hold => {}
            _ = async { stored_rx.as_mut().expect("checked").0.changed().await }, if stored_rx.is_some() => {}
            _ = async { tokio::time::sleep_until(retry_at.expect("checked")).await }, if retry_at.is_some() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)), if closing => {}
        }
    }
    if lock(&w.state).closing && strategy.all_stored() {
        w.seal_at_close(&cur).await;
    }
    let mut st = lock(&w.state);
    if st.failure.is_none() {
        st.failure = Some(SharedFailure::Closed);
    }
}
