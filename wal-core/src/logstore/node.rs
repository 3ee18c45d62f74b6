//! The LogStore node: holds replicated blocks of active segments in bounded memory, answers
//! fences and reads, and uploads what it holds to object storage in the background.
//!
//! Each segment's blocks must arrive in order (the first at the segment base, each next at the
//! previous end), so a node's copy is always a contiguous run. The writer names one node of the
//! segment's set as uploader (`upload_now`); every other node uploads a block itself once it is
//! `takeover_ms` old and not known to be in storage, so a segment that lost replicas is still
//! uploaded completely by a survivor. Blocks are stored under the same key a MemoryBuffer writer
//! would use, with put-if-absent: every replica holds identical bytes, so a second upload of a
//! block is harmless. A block is dropped once it is known to be in storage.
//!
//! A fence raises the segment's minimum epoch: appends from older epochs are refused from then
//! on. The node registers itself in the MetaStore under `logstore/nodes/{id}` with a lease.
//!
//! Without a data directory the node is memory-only and draws a fresh random incarnation at every
//! start: data of an earlier incarnation is gone. With one (`data_dir`), every append and fence
//! is also written to a local [`journal`](super::journal) and fsync'd before the node answers;
//! a restarted node replays it and keeps its incarnation, so it still counts as a replica holding
//! its blocks (and still refuses the epochs it fenced).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot, Notify, Semaphore};

use super::journal::{self, Journal, Record};
use super::proto::{read_frame, ErrorCode, Request, Response, SegKey};
use super::{registration_key, NodeInfo};
use crate::error::{Result, StorageError, WalError};
use crate::log::block_key;
use crate::meta::{MetaStore, Registration};
use crate::storage::ObjectStore;

/// Bytes of not-yet-uploaded blocks a node holds by default before it refuses appends.
pub const DEFAULT_MAX_HELD_BYTES: usize = 1 << 30;
/// A non-uploader replica uploads a block itself once it is this old and not known stored.
pub const DEFAULT_TAKEOVER_MS: u64 = 2_000;
/// Lease of the node's registration.
pub const DEFAULT_LEASE_TTL_SECS: i64 = 10;
/// Uploads a node runs at once.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 16;

/// Metric names of the node.
pub mod metric {
    pub const APPENDS_TOTAL: &str = "logstore_appends_total";
    pub const APPEND_BYTES_TOTAL: &str = "logstore_append_bytes_total";
    pub const REFUSED_TOTAL: &str = "logstore_refused_total";
    pub const HELD_BYTES: &str = "logstore_held_bytes";
    pub const UPLOADS_TOTAL: &str = "logstore_uploads_total";
    pub const UPLOAD_ERRORS_TOTAL: &str = "logstore_upload_errors_total";
    pub const UPLOAD_SECONDS: &str = "logstore_upload_seconds";
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

struct Blk {
    end: u64,
    data: Bytes,
    at: Instant,
    upload_now: bool,
    uploading: bool,
    uploaded: bool,
}

struct Seg {
    epoch: u64,
    fence: u64,
    base: u64,
    /// End of the contiguous run held (or uploaded).
    end: u64,
    /// Every block below this is in object storage.
    upto: u64,
    blocks: BTreeMap<u64, Blk>,
    touched: Instant,
}

impl Seg {
    /// A segment first seen in a fence: its identity is adopted at the first append.
    fn fenced_only() -> Seg {
        Seg::new(0, 0)
    }

    fn new(epoch: u64, base: u64) -> Seg {
        Seg { epoch, fence: 0, base, end: base, upto: base, blocks: BTreeMap::new(), touched: Instant::now() }
    }

    fn is_fenced_only(&self) -> bool {
        self.blocks.is_empty() && self.end == 0 && self.epoch == 0
    }

    /// The segment `key` as (epoch, base) names it: created if unknown, and a segment known
    /// only from a fence adopts that identity (keeping its fence).
    fn named(segs: &mut HashMap<SegKey, Seg>, key: SegKey, epoch: u64, base: u64) -> &mut Seg {
        let s = segs.entry(key).or_insert_with(|| Seg::new(epoch, base));
        if s.is_fenced_only() {
            let fence = s.fence;
            *s = Seg { fence, ..Seg::new(epoch, base) };
        }
        s
    }
}

struct NodeState {
    segs: HashMap<SegKey, Seg>,
    held: usize,
}

struct Node {
    cfg: NodeConfig,
    incarnation: u64,
    store: Arc<dyn ObjectStore>,
    state: Mutex<NodeState>,
    space: Notify,
    work: Notify,
    uploaded: broadcast::Sender<(SegKey, u64)>,
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
        let mut out = Vec::new();
        for (k, s) in &st.segs {
            out.push(Record::Seg { seg: *k, epoch: s.epoch, base: s.base, fence: s.fence, upto: s.upto });
            for (b, blk) in &s.blocks {
                out.push(Record::Append { seg: *k, epoch: s.epoch, seg_base: s.base, base: *b, end: blk.end, block: blk.data.clone() });
            }
        }
        (out, st.held as u64)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut state = NodeState { segs: HashMap::new(), held: 0 };
        let incarnation = match replayed.as_ref().and_then(|r| r.incarnation) {
            Some(v) => v,
            None => loop {
                let v: u64 = rand::random();
                if v != 0 {
                    break v;
                }
            },
        };
        if let Some(r) = replayed {
            let n = r.records.len();
            for rec in r.records {
                apply(&mut state, rec);
            }
            tracing::info!(
                records = n,
                held = state.held,
                segments = state.segs.len(),
                dropped_tail = r.dropped_bytes,
                incarnation,
                "logstore journal replayed"
            );
        }
        let info = NodeInfo { id: cfg.node_id.clone(), addr: cfg.advertise.clone().unwrap_or_else(|| addr.to_string()), incarnation };
        let (uploaded, _) = broadcast::channel(4096);
        let node = Arc::new(Node {
            cfg,
            incarnation,
            store,
            state: Mutex::new(state),
            space: Notify::new(),
            work: Notify::new(),
            uploaded,
            stop: tokio::sync::watch::channel(false).0,
            journal: OnceLock::new(),
        });
        metrics::gauge!(metric::HELD_BYTES).set(lock(&node.state).held as f64);
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
        lock(&self.node.state).held
    }
}

async fn keep_registered(registration: Arc<Registration>, ttl: i64) {
    let every = Duration::from_millis((ttl as u64 * 1000) / 3);
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = registration.renew().await {
            tracing::warn!(error = %e, "logstore registration failed");
        }
    }
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
    let mut notes = node.uploaded.subscribe();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(b) => if wr.write_all(&b).await.is_err() { break },
                    None => break,
                },
                n = notes.recv() => match n {
                    Ok((seg, upto)) => if wr.write_all(&Response::Uploaded { seg, upto }.encode()).await.is_err() { break },
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
        match node.handle(req).await {
            Some(Reply::Now(resp)) => {
                if tx.send(resp.encode()).await.is_err() {
                    break;
                }
            }
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
            }
            None => {}
        }
    }
    drop(tx);
    let _ = writer.await;
}

impl Node {
    async fn handle(&self, req: Request) -> Option<Reply> {
        match req {
            Request::Append { id, seg, epoch, seg_base, base, end, upload_now, flushed_upto, block } => {
                Some(self.append(id, seg, epoch, seg_base, base, end, upload_now, flushed_upto, block).await)
            }
            Request::Fence { id, seg, epoch } => {
                let mut st = lock(&self.state);
                let s = st.segs.entry(seg).or_insert_with(Seg::fenced_only);
                s.fence = s.fence.max(epoch);
                let blocks = s.blocks.iter().map(|(b, k)| (*b, k.end)).collect();
                let resp = Response::Fenced { id, incarnation: self.incarnation, uploaded_upto: s.upto, blocks };
                Some(self.durable(resp, || Record::Fence { seg, epoch }))
            }
            Request::Read { id, seg, base } => {
                let st = lock(&self.state);
                let data = st.segs.get(&seg).and_then(|s| s.blocks.get(&base)).map(|b| b.data.clone());
                Some(Reply::Now(Response::Block { id, data }))
            }
            Request::Progress { seg, flushed_upto } => {
                let mut st = lock(&self.state);
                let NodeState { segs, held } = &mut *st;
                if let Some(s) = segs.get_mut(&seg) {
                    self.advance(seg, s, flushed_upto, held);
                }
                drop(st);
                self.space.notify_waiters();
                None
            }
        }
    }

    /// The reply once `rec` is in the journal (at once without one). Called with the state lock
    /// held, so records reach the journal in the order the state changed; a record queued later
    /// is on disk only after every earlier one.
    fn durable(&self, resp: Response, rec: impl FnOnce() -> Record) -> Reply {
        match self.journal.get() {
            Some(j) => Reply::Durable(resp, j.write(rec())),
            None => Reply::Now(resp),
        }
    }

    /// [`advance`], noting a raised stored mark in the journal.
    fn advance(&self, key: SegKey, s: &mut Seg, upto: u64, held: &mut usize) {
        let before = s.upto;
        advance(s, upto, held);
        if s.upto > before {
            if let Some(j) = self.journal.get() {
                j.note(Record::Stored { seg: key, upto: s.upto });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn append(
        &self,
        id: u64,
        seg: SegKey,
        epoch: u64,
        seg_base: u64,
        base: u64,
        end: u64,
        upload_now: bool,
        flushed_upto: u64,
        block: Bytes,
    ) -> Reply {
        let err = |code, message: String| {
            metrics::counter!(metric::REFUSED_TOTAL).increment(1);
            Reply::Now(Response::Error { id, code, message })
        };
        if end <= base || base < seg_base {
            return err(ErrorCode::Invalid, format!("bad block range {base}..{end}"));
        }
        let len = block.len();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let space = self.space.notified();
            {
                let mut st = lock(&self.state);
                let NodeState { segs, held } = &mut *st;
                // (checked before a fence-only segment adopts the appender's identity)
                if let Some(fence) = segs.get(&seg).map(|s| s.fence).filter(|f| epoch < *f) {
                    return err(ErrorCode::Fenced, format!("segment fenced at epoch {fence}"));
                }
                let s = Seg::named(segs, seg, epoch, seg_base);
                if epoch != s.epoch || seg_base != s.base {
                    return err(ErrorCode::Invalid, format!("segment identity mismatch (epoch {epoch} vs {})", s.epoch));
                }
                s.touched = Instant::now();
                if base < s.end {
                    // A resend of a block we hold (or uploaded): idempotent.
                    let same = s.blocks.get(&base).map(|b| b.end == end).unwrap_or(end <= s.upto);
                    return if same {
                        // Answered once every record queued so far (this block's among them) is
                        // on disk: the stored mark is a harmless barrier.
                        let upto = s.upto;
                        self.durable(Response::Ok { id, uploaded_upto: upto }, || Record::Stored { seg, upto })
                    } else {
                        err(ErrorCode::Gap, format!("block {base}..{end} overlaps held data ending at {}", s.end))
                    };
                }
                if base != s.end {
                    return err(ErrorCode::Gap, format!("block starts at {base}, held data ends at {}", s.end));
                }
                if *held + len <= self.cfg.max_held_bytes || *held == 0 {
                    *held += len;
                    s.end = end;
                    let rec = || Record::Append { seg, epoch, seg_base, base, end, block: block.clone() };
                    let on_disk = self.journal.get().map(|j| j.write(rec()));
                    s.blocks.insert(base, Blk { end, data: block, at: Instant::now(), upload_now, uploading: false, uploaded: false });
                    self.advance(seg, s, flushed_upto, held);
                    let upto = s.upto;
                    metrics::gauge!(metric::HELD_BYTES).set(*held as f64);
                    metrics::counter!(metric::APPENDS_TOTAL).increment(1);
                    metrics::counter!(metric::APPEND_BYTES_TOTAL).increment(len as u64);
                    drop(st);
                    if upload_now {
                        self.work.notify_one();
                    }
                    let resp = Response::Ok { id, uploaded_upto: upto };
                    return match on_disk {
                        Some(t) => Reply::Durable(resp, t),
                        None => Reply::Now(resp),
                    };
                }
            }
            if Instant::now() >= deadline || tokio::time::timeout_at(deadline.into(), space).await.is_err() {
                return err(ErrorCode::Busy, format!("node holds {} bytes not yet uploaded", lock(&self.state).held));
            }
        }
    }
}

/// Applies one replayed journal record to the state (idempotently: see the journal module).
fn apply(st: &mut NodeState, rec: Record) {
    let NodeState { segs, held } = st;
    match rec {
        Record::Header { .. } => {}
        Record::Fence { seg, epoch } => {
            let s = segs.entry(seg).or_insert_with(Seg::fenced_only);
            s.fence = s.fence.max(epoch);
        }
        Record::Seg { seg, epoch, base, fence, upto } => {
            let s = Seg::named(segs, seg, epoch, base);
            s.fence = s.fence.max(fence);
            if s.epoch == epoch && s.base == base {
                advance(s, upto, held);
            }
        }
        Record::Stored { seg, upto } => {
            if let Some(s) = segs.get_mut(&seg).filter(|s| !s.is_fenced_only()) {
                advance(s, upto, held);
            }
        }
        Record::Append { seg, epoch, seg_base, base, end, block } => {
            let s = Seg::named(segs, seg, epoch, seg_base);
            if s.epoch != epoch || s.base != seg_base || base != s.end || end <= base {
                // Already held (a snapshot and the records in flight when it was taken overlap).
                return;
            }
            *held += block.len();
            s.end = end;
            s.blocks.insert(base, Blk { end, data: block, at: Instant::now(), upload_now: false, uploading: false, uploaded: false });
        }
    }
}

/// Raises the segment's stored prefix to `upto` (and over blocks uploaded in a row), dropping
/// what is known to be in object storage.
fn advance(s: &mut Seg, upto: u64, held: &mut usize) {
    if upto > s.upto {
        s.upto = upto.min(s.end.max(upto));
    }
    loop {
        let next = s.blocks.get(&s.upto).filter(|b| b.uploaded).map(|b| b.end);
        match next {
            Some(e) => s.upto = e,
            None => break,
        }
    }
    let keep = s.blocks.split_off(&s.upto);
    for (_, b) in std::mem::replace(&mut s.blocks, keep) {
        *held -= b.data.len();
    }
    // A block that straddles `upto` cannot exist: blocks are whole units.
    if s.upto > s.end {
        s.end = s.upto;
    }
}

async fn uploader(node: Arc<Node>) {
    let slots = Arc::new(Semaphore::new(node.cfg.upload_concurrency));
    let takeover = Duration::from_millis(node.cfg.takeover_ms);
    loop {
        let mut due = Vec::new();
        {
            let mut st = lock(&node.state);
            let now = Instant::now();
            st.segs.retain(|_, s| !(s.blocks.is_empty() && now.duration_since(s.touched) > Duration::from_secs(600)));
            for (k, s) in st.segs.iter_mut() {
                for (base, b) in s.blocks.iter_mut() {
                    if !b.uploading && !b.uploaded && (b.upload_now || now.duration_since(b.at) >= takeover) {
                        b.uploading = true;
                        due.push((*k, s.epoch, *base, b.end, b.data.clone()));
                    }
                }
            }
        }
        for (seg, epoch, base, end, data) in due {
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let n = node.clone();
            tokio::spawn(async move {
                let ok = upload(&n, seg, epoch, base, end, data).await;
                drop(permit);
                let mut st = lock(&n.state);
                let NodeState { segs, held } = &mut *st;
                let mut note = None;
                if let Some(s) = segs.get_mut(&seg) {
                    if let Some(b) = s.blocks.get_mut(&base) {
                        b.uploading = false;
                        b.uploaded = ok;
                        if !ok {
                            b.at = Instant::now() - takeover + Duration::from_millis(500); // retry soon
                            b.upload_now = false;
                        }
                    }
                    let before = s.upto;
                    n.advance(seg, s, 0, held);
                    if s.upto > before {
                        note = Some(s.upto);
                    }
                }
                metrics::gauge!(metric::HELD_BYTES).set(*held as f64);
                drop(st);
                n.space.notify_waiters();
                if let Some(upto) = note {
                    let _ = n.uploaded.send((seg, upto));
                }
            });
        }
        tokio::select! {
            _ = node.work.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

async fn upload(node: &Node, seg: SegKey, epoch: u64, base: u64, end: u64, data: Bytes) -> bool {
    let key = block_key(seg.log_id, seg.segment, epoch, base, end);
    let started = Instant::now();
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
