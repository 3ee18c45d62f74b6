//! Shared write objects: the process cuts one object from the blocks of every log it writes,
//! within a PUT budget, so object-store requests follow bytes, not logs or produce requests.
//!
//! Writers hand each cut block to [`ObjectWriter::put`]; a task queues them and cuts an object
//! from the queue (in arrival order, at most `max_object_bytes` and `max_object_chunks`) when no
//! other budgeted PUT is in flight and the [`PutBudget`] has a token (group commit: a lightly loaded process
//! stores a block in about one PUT, a busier one in objects of about throughput x PUT latency),
//! or at once when the queue already fills an object (a loaded process then stores full
//! objects in parallel, whatever the budget: PUTs follow bytes). At most `max_inflight_objects` PUTs run at
//! once. Each block's writer learns where its block lies ([`ChunkLoc`]) once the object is
//! stored, and commits it to its own log's metadata (the transaction batcher then merges those
//! commits into one round trip). An object nothing points into any more is deleted later by the
//! garbage collector (see `log::flusher`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::{keys, ChunkLoc};
use crate::config::ObjectLimits;
use crate::format::{encode_shared, ChunkEntry};
use crate::metrics as m;
use crate::storage::{put_retrying, ObjectStore, PutError};
use crate::util::{now_ms, random_nonzero_id};

/// Budgeted (not full) objects in flight at once: what arrives meanwhile goes into the next one.
/// One: under a producer's bounded window `W` a busy log's objects then settle at about `W/2`
/// (what arrived during the previous PUT), so a full-speed stream writes objects as large as
/// its window allows at one PUT stream's throughput; two in flight halved the objects (about
/// 530 PUTs per GiB measured) for little throughput.
const EAGER_INFLIGHT: usize = 1;

/// Blocks queued for the object writer at most (writers wait beyond it; their own buffers are
/// bounded by bytes).
const QUEUE: usize = 8192;

/// A token bucket of PUTs: `rate` per second, up to `burst` saved.
#[derive(Debug, Clone)]
pub struct PutBudget {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl PutBudget {
    pub fn new(rate_per_sec: u32, now: Instant) -> Self {
        let rate = rate_per_sec.max(1) as f64;
        let burst = (rate / 4.0).max(1.0);
        PutBudget { rate, burst, tokens: burst, at: now }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.at = now;
    }

    pub fn available(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Spends a token (or goes into debt for an over-budget PUT of a full object).
    pub fn spend(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }

    /// When the next token is there.
    pub fn next_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

/// What the cut decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct ObjectCutInput {
    pub queued_bytes: usize,
    pub queued_chunks: usize,
    pub token: bool,
    pub inflight: usize,
    pub max_inflight: usize,
    pub max_bytes: usize,
    pub max_chunks: usize,
}

/// Whether to cut an object now: data is queued, a PUT slot is free, and either the queue fills
/// an object (PUTs follow bytes, whatever the budget) or the budget has a token and fewer than
/// [`EAGER_INFLIGHT`] PUTs are in flight (group commit: what arrives meanwhile goes into the next
/// object, so objects grow with the load).
pub fn cut_object_now(i: ObjectCutInput) -> bool {
    let full = i.queued_bytes >= i.max_bytes || i.queued_chunks >= i.max_chunks;
    i.queued_chunks > 0 && i.inflight < i.max_inflight && (full || (i.token && i.inflight < EAGER_INFLIGHT))
}

struct Queued {
    entry: ChunkEntry,
    data: Bytes,
    at: Instant,
    reply: oneshot::Sender<Result<ChunkLoc, PutError>>,
}

/// The process's shared-object writer. Cheap to share.
pub(crate) struct ObjectWriter {
    tx: mpsc::Sender<Queued>,
}

impl ObjectWriter {
    pub fn start(store: Arc<dyn ObjectStore>, limits: ObjectLimits) -> ObjectWriter {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx, limits));
        ObjectWriter { tx }
    }

    /// Stores a block in the next shared object; returns where it lies.
    pub async fn put(&self, entry: ChunkEntry, data: Bytes) -> Result<ChunkLoc, PutError> {
        self.queue(entry, data).await.await
    }

    /// Queues a block now (blocks queued one after another lie in that order, consecutive in
    /// one object when they share it: a reader fetches them in one range GET); the returned
    /// future resolves to where it lies once stored.
    pub async fn queue(&self, entry: ChunkEntry, data: Bytes) -> impl std::future::Future<Output = Result<ChunkLoc, PutError>> {
        let stopped = || PutError::Failed(crate::error::StorageError::Transient { op: "put", message: "object writer stopped".into() });
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(Queued { entry, data, at: Instant::now(), reply }).await;
        async move {
            sent.map_err(|_| stopped())?;
            rx.await.unwrap_or_else(|_| Err(stopped()))
        }
    }
}

type Replies = Vec<(oneshot::Sender<Result<ChunkLoc, PutError>>, ChunkLoc)>;

async fn run(store: Arc<dyn ObjectStore>, mut rx: mpsc::Receiver<Queued>, l: ObjectLimits) {
    let mut queue: VecDeque<Queued> = VecDeque::new();
    let mut queued_bytes = 0usize;
    let mut budget = PutBudget::new(l.put_budget_per_sec, Instant::now());
    let mut inflight: JoinSet<(Result<(), PutError>, Replies)> = JoinSet::new();
    let mut open = true;
    loop {
        loop {
            let now = Instant::now();
            let input = ObjectCutInput {
                queued_bytes,
                queued_chunks: queue.len(),
                token: budget.available(now),
                inflight: inflight.len(),
                max_inflight: l.max_inflight_objects,
                max_bytes: l.max_object_bytes,
                max_chunks: l.max_object_chunks,
            };
            if !cut_object_now(input) {
                break;
            }
            budget.spend(now);
            let mut chunks = Vec::new();
            let mut replies = Vec::new();
            let mut bytes = 0usize;
            while let Some(q) = queue.front() {
                if !chunks.is_empty() && (bytes + q.data.len() > l.max_object_bytes || chunks.len() >= l.max_object_chunks) {
                    break;
                }
                let q = queue.pop_front().expect("front exists");
                bytes += q.data.len();
                metrics::histogram!(m::SHARED_QUEUE_SECONDS).record(q.at.elapsed().as_secs_f64());
                chunks.push((q.entry, q.data));
                replies.push(q.reply);
            }
            queued_bytes -= bytes;
            metrics::gauge!(m::SHARED_QUEUE_BYTES).set(queued_bytes as f64);
            let key = keys::shared_object(now_ms(), random_nonzero_id());
            let (obj, entries) = encode_shared(&chunks);
            metrics::counter!(m::SHARED_OBJECTS_TOTAL).increment(1);
            metrics::histogram!(m::SHARED_OBJECT_BYTES).record(obj.len() as f64);
            metrics::histogram!(m::SHARED_OBJECT_CHUNKS).record(entries.len() as f64);
            let replies: Replies =
                replies.into_iter().zip(&entries).map(|(r, e)| (r, ChunkLoc { object: key.clone(), pos: e.pos, len: e.len })).collect();
            let store = store.clone();
            inflight.spawn(async move { (put_retrying(&*store, &key, obj, l.retry).await, replies) });
        }
        if !open && queue.is_empty() && inflight.is_empty() {
            return;
        }
        // (with the eager PUTs in flight, a completion is what wakes the loop)
        let wait_token = !queue.is_empty() && inflight.len() < EAGER_INFLIGHT;
        let next_token = budget.next_at(Instant::now());
        tokio::select! {
            q = rx.recv(), if open => match q {
                Some(q) => {
                    queued_bytes += q.data.len();
                    queue.push_back(q);
                    metrics::gauge!(m::SHARED_QUEUE_BYTES).set(queued_bytes as f64);
                }
                None => open = false,
            },
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                if let Ok((result, replies)) = done {
                    for (reply, loc) in replies {
                        let _ = reply.send(match &result {
                            Ok(()) => Ok(loc),
                            Err(PutError::Conflict(k)) => Err(PutError::Conflict(k.clone())),
                            Err(PutError::Failed(e)) => Err(PutError::Failed(crate::error::StorageError::Transient {
                                op: "put",
                                message: e.to_string(),
                            })),
                        });
                    }
                }
            }
            _ = tokio::time::sleep_until(next_token.into()), if wait_token => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ObjectCutInput {
        ObjectCutInput { queued_bytes: 100, queued_chunks: 2, token: false, inflight: 0, max_inflight: 4, max_bytes: 1000, max_chunks: 10 }
    }

    #[test]
    fn an_object_is_cut_with_a_token_or_when_full_and_never_past_the_inflight_bound() {
        assert!(!cut_object_now(input()), "no token, not full: wait (larger objects)");
        assert!(cut_object_now(ObjectCutInput { token: true, ..input() }), "a token: group commit now");
        assert!(cut_object_now(ObjectCutInput { queued_bytes: 1000, ..input() }), "full by bytes: PUTs follow bytes");
        assert!(cut_object_now(ObjectCutInput { queued_chunks: 10, ..input() }), "full by chunks");
        assert!(!cut_object_now(ObjectCutInput { token: true, inflight: 4, ..input() }));
        assert!(!cut_object_now(ObjectCutInput { token: true, inflight: 1, ..input() }), "a budgeted PUT in flight: accumulate");
        assert!(cut_object_now(ObjectCutInput { queued_bytes: 1000, inflight: 3, ..input() }), "full objects go in parallel");
        assert!(!cut_object_now(ObjectCutInput { token: true, queued_chunks: 0, queued_bytes: 0, ..input() }));
    }

    #[test]
    fn the_budget_refills_at_its_rate_and_saves_a_quarter_second() {
        let t0 = Instant::now();
        let mut b = PutBudget::new(8, t0);
        assert!(b.available(t0));
        b.spend(t0);
        b.spend(t0);
        assert!(!b.available(t0), "a burst of 2 (a quarter of 8/s)");
        assert_eq!(b.next_at(t0), t0 + Duration::from_millis(125));
        assert!(b.available(t0 + Duration::from_millis(125)));
        // Over-budget PUTs (full objects) go into debt, delaying the next budgeted one.
        let mut b = PutBudget::new(10, t0);
        for _ in 0..4 {
            b.spend(t0);
        }
        assert!(!b.available(t0 + Duration::from_millis(200)));
        assert!(b.available(t0 + Duration::from_millis(250)));
        // A long idle time saves no more than the burst.
        let mut b = PutBudget::new(4, t0);
        let later = t0 + Duration::from_secs(60);
        b.spend(later);
        assert!(!b.available(later));
    }
}
