//! The LogStore node: holds replicated blocks of active segments in bounded memory, answers
//! fences and reads, and uploads what it holds to object storage in the background.
//!
//! Each segment's blocks must arrive in order (the first at the segment base, each next at the
//! previous end), so a node's copy is always a contiguous run. The writer names one node of the
//! segment's set as uploader (`upload_now`); every other node uploads a block itself once it is
//! `takeover_ms` old and not known to be in storage, so a segment that lost replicas is still
//! uploaded completely by a survivor. A segment the writer marked `shared` (the default) goes
//! into the node's shared objects: one object per cut holds the due blocks of every log the node
//! holds, within the node's PUT budget (the same object writer a MemoryBuffer gateway uses), and
//! each block's place is committed as its chunk key in metadata (merged into one transaction per
//! object) before the node reports it stored; a second replica's upload of the same block just
//! points the key at an identical copy. Other segments' runs of blocks are stored under the
//! segment's prefix with put-if-absent (identical bytes on every replica). A block is dropped
//! once it is known to be in storage.
//!
//! A fence raises the segment's minimum epoch: appends from older epochs are refused from then
//! on. The node registers itself in the MetaStore under `logstore/nodes/{id}` with a lease.
//!
//! Without a data directory the node is memory-only and draws a fresh random incarnation at every
//! start: data of an earlier incarnation is gone. With one (`data_dir`), every append and fence
//! is also written to a local [`journal`](super::journal) and fsync'd before the node answers;
//! a restarted node replays it and keeps its incarnation, so it still counts as a replica holding
//! its blocks (and still refuses the epochs it fenced).
//!
//! Size: over 400 lines because the server, the uploader and the journal hook-up share one
//! `Node` and its lock discipline; the rules themselves are in [`replica`](super::replica).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot, Notify, Semaphore};

use super::journal::{self, Journal, Record};
use super::proto::{read_frame, Append, ErrorCode, Request, Response, SegKey};
use super::replica::{Appended, Effects, Replica, Upload};
use super::{registration_key, NodeInfo};
use crate::config::ObjectLimits;
use crate::error::{Result, StorageError, WalError};
use crate::format::{decode_block_header, ChunkEntry};
use crate::log::objects::ObjectWriter;
use crate::log::{block_key, json, keys, ChunkLoc, ChunkRef};
use crate::meta::batcher::{TxnBatcher, DEFAULT_MAX_TXN_OPS};
use crate::meta::{MetaStore, Op, Registration, Txn};
use crate::storage::ObjectStore;
use crate::util::{lock, random_nonzero_id};

/// Bytes of not-yet-uploaded blocks a node holds by default before it refuses appends.
pub const DEFAULT_MAX_HELD_BYTES: usize = 1 << 30;
/// A non-uploader replica uploads a block itself once it is this old and not known stored.
pub const DEFAULT_TAKEOVER_MS: u64 = 2_000;
/// Lease of the node's registration.
pub const DEFAULT_LEASE_TTL_SECS: i64 = 10;
/// Uploads a node runs at once.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 16;
/// A failed upload is tried again this soon.
const UPLOAD_RETRY: Duration = Duration::from_millis(500);
/// Blocks queued for the node's shared objects at once (each waits for its object and commit).
const SHARED_UPLOADS: usize = 4096;

/// Metric names of the node.
pub mod metric {
    pub const APPENDS_TOTAL: &str = "logstore_appends_total";
    pub const APPEND_BYTES_TOTAL: &str = "logstore_append_bytes_total";
    pub const REFUSED_TOTAL: &str = "logstore_refused_total";
    pub const HELD_BYTES: &str = "logstore_held_bytes";
    pub const UPLOADS_TOTAL: &str = "logstore_uploads_total";
    pub const UPLOAD_ERRORS_TOTAL: &str = "logstore_upload_errors_total";
    pub const UPLOAD_SECONDS: &str = "logstore_upload_seconds";
    /// Blocks merged into one uploaded object.
    pub const UPLOAD_BLOCKS: &str = "logstore_upload_blocks";
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    /// Where clients reach this node (defaults to the bound listen address).
    pub advertise: Option<String>,
    pub max_held_bytes: usize,
    pub takeover_ms: u64,
    pub lease_ttl_secs: i64,
    pub upload_concurrency: usize,
    /// Directory of the local journal; `None` keeps the node memory-only.
    pub data_dir: Option<PathBuf>,
    /// The journal is rewritten once it is this large and mostly holds uploaded data.
    pub journal_compact_bytes: u64,
    /// How shared objects are cut (PUT budget, sizes): the process's `wal.*` settings.
    pub objects: ObjectLimits,
}

impl NodeConfig {
    pub fn new(node_id: impl Into<String>) -> Self {
        NodeConfig {
            node_id: node_id.into(),
            advertise: None,
            max_held_bytes: DEFAULT_MAX_HELD_BYTES,
            takeover_ms: DEFAULT_TAKEOVER_MS,
            lease_ttl_secs: DEFAULT_LEASE_TTL_SECS,
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            data_dir: None,
            journal_compact_bytes: journal::DEFAULT_COMPACT_BYTES,
            objects: ObjectLimits::default(),
        }
    }
    pub fn validate(&self) -> Result<()> {
        let ok_id = !self.node_id.is_empty()
            && self.node_id.len() <= 128
            && self.node_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok_id {
            return Err(WalError::Config(format!("invalid LogStore node id {:?}", self.node_id)));
        }
        if self.max_held_bytes < 1 << 20
            || self.takeover_ms == 0
            || self.lease_ttl_secs < 2
            || self.upload_concurrency == 0
            || self.journal_compact_bytes < 1 << 20
        {
            return Err(WalError::Config(
                "logstore: max_held_bytes >= 1MiB, takeover_ms > 0, lease_ttl_secs >= 2, upload_concurrency > 0, journal_compact_bytes >= 1MiB".into(),
            ));
        }
        Ok(())
    }
}

struct Node {
    cfg: NodeConfig,
    incarnation: u64,
    store: Arc<dyn ObjectStore>,
    /// Shared objects, and the chunk keys that say where their blocks lie.
    objects: ObjectWriter,
    txns: TxnBatcher,
    state: Mutex<Replica>,
    space: Notify,
    work: Notify,
    /// Stored ends that rose, pushed to every connection.
    stored: broadcast::Sender<(SegKey, u64)>,
    /// Set when the node stops: every connection closes.
    stop: tokio::sync::watch::Sender<bool>,
    journal: OnceLock<Journal>,
}

/// What a request gets: an answer now, an answer once its journal record is on disk, or none.
enum Reply {
    Now(Response),
    Durable(Response, oneshot::Receiver<bool>),
}

impl journal::Snapshot for Node {
    fn snapshot(&self) -> (Vec<Record>, u64) {
        let st = lock(&self.state);
        (st.snapshot(), st.held() as u64)
    }
}

/// A running node. Dropping it does not stop it; call [`LogStoreNode::shutdown`].
pub struct LogStoreNode {
    pub addr: SocketAddr,
    pub incarnation: u64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    registration: Arc<Registration>,
    node: Arc<Node>,
}

impl LogStoreNode {
    /// Binds `listen`, registers in `meta` and starts serving.
    pub async fn start(cfg: NodeConfig, listen: SocketAddr, store: Arc<dyn ObjectStore>, meta: Arc<dyn MetaStore>) -> Result<LogStoreNode> {
        cfg.validate()?;
        let listener = TcpListener::bind(listen).await.map_err(|e| WalError::Config(format!("logstore cannot listen on {listen}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| WalError::Config(e.to_string()))?;
        let replayed = match &cfg.data_dir {
            Some(dir) => Some(journal::replay(dir, &cfg.node_id)?),
            None => None,
        };
        let mut state = Replica::default();
        let incarnation = replayed.as_ref().and_then(|r| r.incarnation).unwrap_or_else(random_nonzero_id);
        if let Some(r) = replayed {
            let n = r.records.len();
            let now = Instant::now();
            for rec in r.records {
                state.apply(rec, now);
            }
            tracing::info!(
                records = n,
                held = state.held(),
                segments = state.segments(),
                dropped_tail = r.dropped_bytes,
                incarnation,
                "logstore journal replayed"
            );
        }
        let info = NodeInfo { id: cfg.node_id.clone(), addr: cfg.advertise.clone().unwrap_or_else(|| addr.to_string()), incarnation };
        let (stored, _) = broadcast::channel(4096);
        let objects = ObjectWriter::start(store.clone(), cfg.objects);
        let txns = TxnBatcher::start(meta.clone(), DEFAULT_MAX_TXN_OPS);
        let node = Arc::new(Node {
            cfg,
            incarnation,
            store,
            objects,
            txns,
            state: Mutex::new(state),
            space: Notify::new(),
            work: Notify::new(),
            stored,
            stop: tokio::sync::watch::channel(false).0,
            journal: OnceLock::new(),
        });
        metrics::gauge!(metric::HELD_BYTES).set(lock(&node.state).held() as f64);
        if let Some(dir) = &node.cfg.data_dir {
            // Start from a compacted copy of what was replayed (a torn tail is gone with it).
            let header = Record::Header { node_id: node.cfg.node_id.clone(), incarnation };
            let (state, _) = journal::Snapshot::snapshot(&*node);
            let weak: std::sync::Weak<dyn journal::Snapshot> = Arc::downgrade(&(node.clone() as Arc<dyn journal::Snapshot>));
            let j = Journal::open(dir, header, state, node.cfg.journal_compact_bytes, weak)?;
            let _ = node.journal.set(j);
        }
        let value = serde_json::to_vec(&info).expect("node info serializes");
        let registration = Arc::new(Registration::register(meta, registration_key(&info.id), value.into(), node.cfg.lease_ttl_secs).await?);
        tracing::info!(node = %info.id, addr = %info.addr, incarnation, "logstore node ready");
        let mut tasks = Vec::new();
        let n = node.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((sock, _)) => {
                        let _ = sock.set_nodelay(true);
                        tokio::spawn(serve(n.clone(), sock));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "logstore accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
        tasks.push(tokio::spawn(uploader(node.clone())));
        tasks.push(tokio::spawn(keep_registered(registration.clone(), node.cfg.lease_ttl_secs)));
        Ok(LogStoreNode { addr, incarnation, tasks, registration, node })
    }

    /// Stops serving and withdraws the registration (held data is dropped).
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.node.stop.send_replace(true);
        if let Some(j) = self.node.journal.get() {
            j.close();
        }
        let _ = self.registration.revoke().await;
    }

    /// Stops serving without withdrawing the registration (a crash, for tests).
    pub fn kill(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.node.stop.send_replace(true);
        if let Some(j) = self.node.journal.get() {
            j.close();
        }
    }

    /// Bytes of blocks held (not yet known stored).
    pub fn held_bytes(&self) -> usize {
        lock(&self.node.state).held()
    }
}

async fn keep_registered(registration: Arc<Registration>, ttl: i64) {
    let ttl = Duration::from_secs(ttl.max(1) as u64);
    crate::meta::keep_renewing(ttl, "logstore", || registration.renew()).await
}

async fn serve(node: Arc<Node>, sock: TcpStream) {
    let mut stop = node.stop.subscribe();
    tokio::select! {
        _ = serve_conn(node.clone(), sock) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

async fn serve_conn(node: Arc<Node>, sock: TcpStream) {
    let (mut rd, mut wr) = sock.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(1024);
    let mut notes = node.stored.subscribe();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(b) => if wr.write_all(&b).await.is_err() { break },
                    None => break,
                },
                n = notes.recv() => match n {
                    Ok((seg, stored_end)) => if wr.write_all(&Response::Stored { seg, stored_end }.encode()).await.is_err() { break },
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                },
            }
        }
    });
    loop {
        let body = match read_frame(&mut rd).await {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "logstore connection closed");
                break;
            }
        };
        let req = match Request::decode(body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "logstore: malformed request; closing the connection");
                break;
            }
        };
        let sent = match node.handle(req).await {
            Some(Reply::Now(resp)) => tx.send(resp.encode()).await.is_ok(),
            Some(Reply::Durable(resp, on_disk)) => {
                // Answer once the journal has it, without holding up the next request.
                let (tx, node) = (tx.clone(), node.clone());
                tokio::spawn(async move {
                    if on_disk.await.unwrap_or(false) {
                        let _ = tx.send(resp.encode()).await;
                    } else {
                        tracing::error!("logstore journal failed: the node stops serving");
                        node.stop.send_replace(true);
                    }
                });
                true
            }
            None => true,
        };
        if !sent {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

impl Node {
    async fn handle(&self, req: Request) -> Option<Reply> {
        match req {
            Request::Append(a) => Some(self.append(a).await),
            Request::Fence { id, seg, epoch } => {
                let mut st = lock(&self.state);
                let (answer, fx) = st.fence(seg, epoch, Instant::now());
                let resp = Response::Fenced { id, incarnation: self.incarnation, stored_end: answer.stored_end, blocks: answer.blocks };
                Some(self.reply(resp, fx))
            }
            Request::Read { id, seg, base } => Some(Reply::Now(Response::Block { id, data: lock(&self.state).read(seg, base) })),
            Request::ReadRun { id, seg, base, max_bytes } => {
                Some(Reply::Now(Response::Blocks { id, blocks: lock(&self.state).read_run(seg, base, max_bytes as usize) }))
            }
            Request::Progress { seg, stored_end } => {
                let mut st = lock(&self.state);
                let fx = st.stored(seg, stored_end);
                self.journal(fx);
                drop(st);
                self.space.notify_waiters();
                None
            }
        }
    }

    /// Queues a state change's records in the journal (none without one); returns the ticket of
    /// the record the answer waits for. Called with the state lock held, so records reach the
    /// journal in the order the state changed; a record queued later is on disk only after
    /// every earlier one.
    fn journal(&self, fx: Effects) -> Option<oneshot::Receiver<bool>> {
        let j = self.journal.get()?;
        let ticket = fx.wait.map(|r| j.write(r));
        for n in fx.notes {
            j.note(n);
        }
        ticket
    }

    /// `resp`, sent once the change's journal records are on disk (at once without a journal).
    fn reply(&self, resp: Response, fx: Effects) -> Reply {
        match self.journal(fx) {
            Some(on_disk) => Reply::Durable(resp, on_disk),
            None => Reply::Now(resp),
        }
    }

    async fn append(&self, a: Append) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let space = self.space.notified();
            {
                let mut st = lock(&self.state);
                let (outcome, fx) = st.append(&a, self.cfg.max_held_bytes, Instant::now());
                match outcome {
                    Appended::Ok { stored_end } => {
                        let held = st.held();
                        let reply = self.reply(Response::Ok { id: a.id, stored_end }, fx);
                        drop(st);
                        metrics::gauge!(metric::HELD_BYTES).set(held as f64);
                        metrics::counter!(metric::APPENDS_TOTAL).increment(1);
                        metrics::counter!(metric::APPEND_BYTES_TOTAL).increment(a.block.len() as u64);
                        if a.upload_now {
                            self.work.notify_one();
                        }
                        return reply;
                    }
                    Appended::Refused { code, message } => {
                        metrics::counter!(metric::REFUSED_TOTAL).increment(1);
                        return Reply::Now(Response::Error { id: a.id, code, message });
                    }
                    Appended::Full => {}
                }
            }
            if Instant::now() >= deadline || tokio::time::timeout_at(deadline.into(), space).await.is_err() {
                metrics::counter!(metric::REFUSED_TOTAL).increment(1);
                let message = format!("node holds {} bytes not yet uploaded", lock(&self.state).held());
                return Reply::Now(Response::Error { id: a.id, code: ErrorCode::Busy, message });
            }
        }
    }
}

/// Uploads what the replica says is due, `upload_concurrency` at a time.
async fn uploader(node: Arc<Node>) {
    let slots = Arc::new(Semaphore::new(node.cfg.upload_concurrency));
    let shared_slots = Arc::new(Semaphore::new(SHARED_UPLOADS));
    let takeover = Duration::from_millis(node.cfg.takeover_ms);
    loop {
        let due = lock(&node.state).due(Instant::now(), takeover);
        for job in due {
            let slots = if job.shared { &shared_slots } else { &slots };
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let n = node.clone();
            // Shared blocks are queued here, in the order `due` lists them (offset order in a
            // segment), so consecutive blocks lie consecutively in an object.
            let queued = if job.shared { Some(queue_shared(&node, &job).await) } else { None };
            tokio::spawn(async move {
                let ok = match queued {
                    Some(q) => finish_shared(&n, &job, q).await,
                    None => upload(&n, &job).await,
                };
                drop(permit);
                let mut st = lock(&n.state);
                let bases: Vec<u64> = job.blocks.iter().map(|(b, _)| *b).collect();
                let (rose, fx) = st.upload_done(job.seg, &bases, ok, Instant::now(), takeover, UPLOAD_RETRY);
                n.journal(fx);
                metrics::gauge!(metric::HELD_BYTES).set(st.held() as f64);
                drop(st);
                n.space.notify_waiters();
                if let Some(stored_end) = rose {
                    let _ = n.stored.send((job.seg, stored_end));
                }
            });
        }
        tokio::select! {
            _ = node.work.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// The object of a run: its one block as it is, or its blocks' entries encoded as one block
/// (every replica encodes the same entries to the same bytes, so a key names one content).
fn run_object(job: &Upload) -> Result<Bytes, crate::error::FormatError> {
    if let [(_, only)] = job.blocks.as_slice() {
        return Ok(only.clone());
    }
    let mut entries = Vec::new();
    for (_, b) in &job.blocks {
        entries.extend(crate::format::decode_block(b)?.1);
    }
    Ok(crate::format::encode_block(job.seg.log_id, job.seg.segment, job.epoch, &entries))
}

/// A block queued for a shared object: its max timestamp and where it will lie.
type QueuedShared = Option<(i64, Instant, futures::future::BoxFuture<'static, std::result::Result<ChunkLoc, crate::storage::PutError>>)>;

/// Queues one block for the node's next shared object (`None`: it does not decode).
async fn queue_shared(node: &Node, job: &Upload) -> QueuedShared {
    let [(base, data)] = job.blocks.as_slice() else { return None };
    let max_timestamp = match decode_block_header(data) {
        Ok(h) if h.base_offset == *base && h.end_offset == job.end => h.max_timestamp,
        _ => {
            // Cannot happen for blocks a writer encoded; refuse to store what we cannot read.
            tracing::error!(
                log_id = job.seg.log_id,
                segment = job.seg.segment,
                base,
                "logstore: a held block does not decode; not uploading it"
            );
            return None;
        }
    };
    let (log_id, segment) = (job.seg.log_id, job.seg.segment);
    let entry = ChunkEntry { log_id, segment, epoch: job.epoch, base_offset: *base, end_offset: job.end, pos: 0, len: 0 };
    Some((max_timestamp, Instant::now(), Box::pin(node.objects.queue(entry, data.clone()).await)))
}

/// Waits for a queued block's object, then commits its chunk key.
async fn finish_shared(node: &Node, job: &Upload, queued: QueuedShared) -> bool {
    let Some((max_timestamp, started, stored)) = queued else { return false };
    let (log_id, segment, base) = (job.seg.log_id, job.seg.segment, &job.base);
    let failed = |what: &str, e: String| {
        metrics::counter!(metric::UPLOAD_ERRORS_TOTAL).increment(1);
        tracing::warn!(log_id, segment, base, error = %e, "logstore shared upload failed ({what}); will retry");
        false
    };
    let loc = match stored.await {
        Ok(loc) => loc,
        Err(e) => return failed("object", format!("{e:?}")),
    };
    let r = ChunkRef { base_offset: *base, end_offset: job.end, max_timestamp, loc };
    match node.txns.txn(Txn::new().then(Op::put(keys::chunk(log_id, segment, *base), json(&r)))).await {
        Ok(_) => {
            metrics::counter!(metric::UPLOADS_TOTAL).increment(1);
            metrics::histogram!(metric::UPLOAD_SECONDS).record(started.elapsed().as_secs_f64());
            true
        }
        Err(e) => failed("chunk commit", e.to_string()),
    }
}

async fn upload(node: &Node, job: &Upload) -> bool {
    let key = block_key(job.seg.log_id, job.seg.segment, job.epoch, job.base, job.end);
    let data = match run_object(job) {
        Ok(d) => d,
        Err(e) => {
            // Cannot happen for blocks a writer encoded; refuse to store what we cannot read.
            tracing::error!(%key, error = %e, "logstore: a held block does not decode; not uploading it");
            return false;
        }
    };
    let started = Instant::now();
    metrics::histogram!(metric::UPLOAD_BLOCKS).record(job.blocks.len() as f64);
    match node.store.put_if_absent(&key, data).await {
        // Every replica holds the same bytes for a key: an existing object is this block.
        Ok(()) | Err(StorageError::AlreadyExists(_)) => {
            metrics::counter!(metric::UPLOADS_TOTAL).increment(1);
            metrics::histogram!(metric::UPLOAD_SECONDS).record(started.elapsed().as_secs_f64());
            true
        }
        Err(e) => {
            metrics::counter!(metric::UPLOAD_ERRORS_TOTAL).increment(1);
            tracing::warn!(%key, error = %e, "logstore upload failed; will retry");
            false
        }
    }
}
