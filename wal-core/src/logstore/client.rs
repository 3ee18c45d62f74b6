//! Connections to LogStore nodes, node discovery, and the stored-prefix notifications.
//!
//! One multiplexed TCP connection per node address and process. [`NodeClient::call`] queues its
//! frame synchronously, so frames reach a node in the order they were queued (a segment's blocks
//! must arrive in order); answers are matched by request id. A broken connection fails every
//! request queued on it, and the next call connects anew. Nodes push `Stored` notifications;
//! they and the `stored_end` of every answer feed one watch per segment ([`Replication::stored`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::proto::{read_frame, Request, Response, SegKey};
use super::{NodeInfo, REGISTRATION_PREFIX};
use crate::error::{MetaError, Result, WalError};
use crate::meta::MetaStore;
use crate::util::lock;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

struct Conn {
    tx: mpsc::UnboundedSender<Bytes>,
    pending: Pending,
    dead: Arc<std::sync::atomic::AtomicBool>,
}

/// A connection (made on demand) to one node.
pub struct NodeClient {
    addr: String,
    conn: Mutex<Option<Conn>>,
    stored: Arc<StoredMap>,
}

type StoredMap = DashMap<SegKey, watch::Sender<u64>>;

fn note_stored(map: &StoredMap, seg: SegKey, stored_end: u64) {
    if let Some(w) = map.get(&seg) {
        w.send_if_modified(|v| {
            if stored_end > *v {
                *v = stored_end;
                true
            } else {
                false
            }
        });
    }
}

impl NodeClient {
    fn connection(&self) -> (mpsc::UnboundedSender<Bytes>, Pending) {
        let mut c = lock(&self.conn);
        if let Some(conn) = c.as_ref() {
            if !conn.dead.load(Ordering::Acquire) {
                return (conn.tx.clone(), conn.pending.clone());
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(run_conn(self.addr.clone(), rx, pending.clone(), dead.clone(), self.stored.clone()));
        *c = Some(Conn { tx: tx.clone(), pending: pending.clone(), dead });
        (tx, pending)
    }

    /// Queues `req` (now, in order) and returns its answer's receiver; `Err` on the receiver
    /// means the connection broke.
    pub fn call(&self, id: u64, req: &Request) -> oneshot::Receiver<Response> {
        let (tx, pending) = self.connection();
        let (otx, orx) = oneshot::channel();
        lock(&pending).insert(id, otx);
        if tx.send(req.encode()).is_err() {
            lock(&pending).remove(&id);
        }
        orx
    }

    /// Queues a request that gets no answer.
    pub fn send(&self, req: &Request) {
        let (tx, _) = self.connection();
        let _ = tx.send(req.encode());
    }
}

async fn run_conn(
    addr: String,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    pending: Pending,
    dead: Arc<std::sync::atomic::AtomicBool>,
    stored: Arc<StoredMap>,
) {
    let connected = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr)).await;
    let sock = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "cannot reach LogStore node");
            dead.store(true, Ordering::Release);
            lock(&pending).clear();
            return;
        }
        Err(_) => {
            dead.store(true, Ordering::Release);
            lock(&pending).clear();
            return;
        }
    };
    let _ = sock.set_nodelay(true);
    let (mut rd, mut wr) = sock.into_split();
    let p2 = pending.clone();
    let reader = async move {
        loop {
            let body = match read_frame(&mut rd).await {
                Ok(Some(b)) => b,
                _ => break,
            };
            let resp = match Response::decode(body) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "malformed answer from a LogStore node");
                    break;
                }
            };
            if let Response::Stored { seg, stored_end } = resp {
                note_stored(&stored, seg, stored_end);
                continue;
            }
            let waiter = lock(&p2).remove(&resp.id());
            if let Some(w) = waiter {
                let _ = w.send(resp);
            }
        }
    };
    let writer = async move {
        while let Some(frame) = rx.recv().await {
            // Write what is queued in one go.
            let mut batch = vec![frame];
            while batch.len() < 64 {
                match rx.try_recv() {
                    Ok(f) => batch.push(f),
                    Err(_) => break,
                }
            }
            for f in batch {
                if wr.write_all(&f).await.is_err() {
                    return;
                }
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
    dead.store(true, Ordering::Release);
    lock(&pending).clear();
}

/// Quorum settings (see [`crate::config::QuorumConfig`]) plus process-wide state: node clients,
/// discovery, recent node failures and the stored-prefix watches.
pub struct Replication {
    meta: Arc<dyn MetaStore>,
    clients: DashMap<String, Arc<NodeClient>>,
    stored: Arc<StoredMap>,
    /// Node id -> (incarnation, when) of its last failure.
    failures: DashMap<String, (u64, Instant)>,
    next_id: AtomicU64,
}

impl Replication {
    pub fn new(meta: Arc<dyn MetaStore>) -> Self {
        Replication {
            meta,
            clients: DashMap::new(),
            stored: Arc::new(DashMap::new()),
            failures: DashMap::new(),
            next_id: AtomicU64::new(1),
        }
    }

    pub fn request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn client(&self, addr: &str) -> Arc<NodeClient> {
        self.clients
            .entry(addr.to_string())
            .or_insert_with(|| Arc::new(NodeClient { addr: addr.to_string(), conn: Mutex::new(None), stored: self.stored.clone() }))
            .clone()
    }

    /// The registered nodes.
    pub async fn discover(&self) -> Result<Vec<NodeInfo>> {
        let l = self.meta.list(REGISTRATION_PREFIX).await?;
        let mut v = Vec::new();
        for kv in l.kvs {
            match serde_json::from_slice::<NodeInfo>(&kv.value) {
                Ok(n) => v.push(n),
                Err(e) => {
                    return Err(WalError::Meta(MetaError::Permanent { op: "decode", message: format!("{}: {e}", kv.key) }));
                }
            }
        }
        Ok(v)
    }

    pub fn note_failure(&self, node: &NodeInfo) {
        self.failures.insert(node.id.clone(), (node.incarnation, Instant::now()));
    }

    /// Whether this incarnation of the node failed within `window` (a restarted node has a new
    /// incarnation and is usable at once).
    pub fn failed_recently(&self, node: &NodeInfo, window: Duration) -> bool {
        self.failures.get(&node.id).map(|f| f.0 == node.incarnation && f.1.elapsed() < window).unwrap_or(false)
    }

    /// The watch of a segment's stored prefix (created at `base` when new).
    pub fn stored(&self, seg: SegKey, base: u64) -> watch::Receiver<u64> {
        self.stored.entry(seg).or_insert_with(|| watch::channel(base).0).subscribe()
    }

    pub fn note_stored(&self, seg: SegKey, stored_end: u64) {
        note_stored(&self.stored, seg, stored_end);
    }

    pub fn forget(&self, seg: SegKey) {
        self.stored.remove(&seg);
    }
}
