//! The embedded metadata store for single-node use: an in-memory ordered map made durable by an
//! append-only journal (one CRC-framed record per transaction, fsynced before the transaction is
//! answered), compacted into a snapshot when it grows. A torn record at the journal tail (a crash
//! mid-write) is cut off at open.
//!
//! Leased keys live in memory only: a restart ends every lease, as the death of its holder would.
//!
//! Size: over 400 lines because the backend is one unit (journal file, revisions, leases,
//! watches share one lock and one replay path); splitting it would spread one invariant over
//! several files.

use crate::util::lock;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{broadcast, mpsc};

use super::{Compare, EventKind, KeyValue, Listing, MetaStore, Op, Txn, TxnResult, WatchEvent, WatchStream, WATCH_QUEUE_CAPACITY};
use crate::error::MetaError;

const JOURNAL: &str = "meta.journal";
/// Recent events kept so a watch can start slightly in the past (after a list).
const HISTORY_EVENTS: usize = 4096;
/// The journal is rewritten as a snapshot once it exceeds this and 4x the live data.
const COMPACT_MIN_BYTES: u64 = 64 << 20;
/// Bound on one journal record, so a corrupt length cannot ask for a huge allocation. Replay
/// treats a longer record as a torn tail, so no transaction may write one: a larger one is
/// refused (etcd refuses requests over 1.5 MiB by default).
const MAX_RECORD_BYTES: usize = 256 << 20;
/// A compaction snapshot is written as records of about this size (the live data may be far
/// larger than one record may be).
const SNAPSHOT_RECORD_BYTES: usize = 16 << 20;
const LEASE_REAP_INTERVAL: Duration = Duration::from_millis(200);

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_DELETE_PREFIX: u8 = 3;
const OP_RESTORE: u8 = 4;

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: HashSet<String>,
}

struct Inner {
    map: BTreeMap<String, KeyValue>,
    revision: i64,
    leases: HashMap<i64, Lease>,
    next_lease: i64,
    journal: Option<File>,
    journal_bytes: u64,
    dir: Option<PathBuf>,
    fsync: bool,
    history: VecDeque<WatchEvent>,
    /// [`MAX_RECORD_BYTES`] and [`SNAPSHOT_RECORD_BYTES`] (smaller in tests).
    max_record: usize,
    snapshot_record: usize,
    compact_min: u64,
}

/// The embedded store. `open` a directory for durability, or `in_memory` for tests.
pub struct EmbeddedMeta {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<WatchEvent>,
}

fn perm(op: &'static str, e: impl std::fmt::Display) -> MetaError {
    MetaError::Permanent { op, message: e.to_string() }
}

impl EmbeddedMeta {
    /// A store with no persistence.
    pub fn in_memory() -> Self {
        Self::build(Inner::empty(None, None, false))
    }

    /// Opens (or creates) a durable store in `dir`, replaying its journal.
    pub fn open(dir: impl AsRef<Path>, fsync: bool) -> Result<Self, MetaError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| perm("open", e))?;
        let path = dir.join(JOURNAL);
        let mut inner = Inner::empty(None, Some(dir.clone()), fsync);
        let good_len = if path.exists() { inner.replay(&path)? } else { 0 };
        let file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(|e| perm("open", e))?;
        file.set_len(good_len).map_err(|e| perm("open", e))?; // cut a torn tail
        let mut file = file;
        use std::io::Seek;
        file.seek(std::io::SeekFrom::End(0)).map_err(|e| perm("open", e))?;
        inner.journal = Some(file);
        inner.journal_bytes = good_len;
        Ok(Self::build(inner))
    }

    fn build(inner: Inner) -> Self {
        let (events, _) = broadcast::channel(HISTORY_EVENTS);
        let inner = Arc::new(Mutex::new(inner));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&inner);
            let tx = events.clone();
            handle.spawn(reap_leases(weak, tx));
        }
        EmbeddedMeta { inner, events }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner, &broadcast::Sender<WatchEvent>) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let inner = self.inner.clone();
        let tx = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let mut g = lock(&inner);
            f(&mut g, &tx)
        })
        .await
        .map_err(|e| MetaError::Transient { op: "spawn", message: e.to_string() })?
    }
}

async fn reap_leases(inner: Weak<Mutex<Inner>>, tx: broadcast::Sender<WatchEvent>) {
    let mut tick = tokio::time::interval(LEASE_REAP_INTERVAL);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let mut g = lock(&inner);
        let now = Instant::now();
        let expired: Vec<i64> = g.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            if let Err(e) = g.drop_lease(id, &tx) {
                tracing::warn!(error = %e, lease = id, "could not expire lease");
            }
        }
    }
}

fn put_str(buf: &mut BytesMut, s: &[u8]) {
    buf.put_u32_le(s.len() as u32);
    buf.put_slice(s);
}

impl Inner {
    fn empty(journal: Option<File>, dir: Option<PathBuf>, fsync: bool) -> Self {
        Inner {
            map: BTreeMap::new(),
            revision: 0,
            leases: HashMap::new(),
            next_lease: 1,
            journal,
            journal_bytes: 0,
            dir,
            fsync,
            history: VecDeque::new(),
            max_record: MAX_RECORD_BYTES,
            snapshot_record: SNAPSHOT_RECORD_BYTES,
            compact_min: COMPACT_MIN_BYTES,
        }
    }

    /// Replays the journal at `path`; returns the length of its valid prefix.
    fn replay(&mut self, path: &Path) -> Result<u64, MetaError> {
        let mut data = Vec::new();
        File::open(path).and_then(|mut f| f.read_to_end(&mut data)).map_err(|e| perm("replay", e))?;
        let mut pos = 0usize;
        while data.len() - pos >= 8 {
            let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4")) as usize;
            let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4"));
            if len > self.max_record || data.len() - pos - 8 < len {
                break;
            }
            let rec = &data[pos + 8..pos + 8 + len];
            if crc32c::crc32c(rec) != crc {
                break;
            }
            if self.apply_record(rec).is_err() {
                break;
            }
            pos += 8 + len;
        }
        if pos < data.len() {
            tracing::warn!(path = %path.display(), valid = pos, total = data.len(), "cut a torn journal tail");
        }
        Ok(pos as u64)
    }

    fn apply_record(&mut self, rec: &[u8]) -> Result<(), ()> {
        let mut r = Reader { buf: rec, pos: 0 };
        let rev = r.u64()? as i64;
        let n = r.u32()?;
        for _ in 0..n {
            match r.u8()? {
                OP_PUT => {
                    let (k, v) = (r.string()?, r.bytes()?);
                    let create = self.map.get(&k).map(|kv| kv.create_revision).unwrap_or(rev);
                    self.map.insert(k.clone(), KeyValue { key: k, value: v, create_revision: create, mod_revision: rev, lease: 0 });
                }
                OP_DELETE => {
                    self.map.remove(&r.string()?);
                }
                OP_DELETE_PREFIX => {
                    let p = r.string()?;
                    self.map.retain(|k, _| !k.starts_with(&p));
                }
                OP_RESTORE => {
                    let (k, v) = (r.string()?, r.bytes()?);
                    let (c, m) = (r.u64()? as i64, r.u64()? as i64);
                    self.map.insert(k.clone(), KeyValue { key: k, value: v, create_revision: c, mod_revision: m, lease: 0 });
                }
                _ => return Err(()),
            }
        }
        self.revision = self.revision.max(rev);
        Ok(())
    }

    fn write_record(&mut self, rec: &[u8]) -> Result<(), MetaError> {
        if rec.len() > self.max_record {
            return Err(MetaError::Permanent {
                op: "txn",
                message: format!("transaction of {} bytes exceeds the embedded store's limit of {} bytes", rec.len(), self.max_record),
            });
        }
        let Some(f) = self.journal.as_mut() else { return Ok(()) };
        let mut framed = Vec::with_capacity(rec.len() + 8);
        framed.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        framed.extend_from_slice(&crc32c::crc32c(rec).to_le_bytes());
        framed.extend_from_slice(rec);
        let before = self.journal_bytes;
        let r = f.write_all(&framed).and_then(|_| if self.fsync { f.sync_data() } else { Ok(()) });
        if let Err(e) = r {
            // Cut whatever part of the record reached the file, so replay never applies it.
            let _ = f.set_len(before);
            use std::io::Seek;
            let _ = f.seek(std::io::SeekFrom::Start(before));
            return Err(MetaError::Transient { op: "journal", message: e.to_string() });
        }
        self.journal_bytes += framed.len() as u64;
        Ok(())
    }

    fn maybe_compact(&mut self) -> Result<(), MetaError> {
        let Some(dir) = self.dir.clone() else { return Ok(()) };
        let live: u64 = self.map.values().map(|kv| (kv.key.len() + kv.value.len() + 40) as u64).sum();
        if self.journal_bytes < self.compact_min || self.journal_bytes < live * 4 {
            return Ok(());
        }
        // The snapshot: every durable key as a restore op, in records of bounded size (each
        // replays on its own; together they rebuild the map at this revision).
        let mut framed = Vec::new();
        let mut rec = BytesMut::new();
        let mut ops = 0u32;
        let flush = |rec: &mut BytesMut, ops: &mut u32, framed: &mut Vec<u8>, revision: i64| {
            let mut full = BytesMut::with_capacity(rec.len() + 12);
            full.put_u64_le(revision as u64);
            full.put_u32_le(*ops);
            full.put_slice(rec);
            framed.extend_from_slice(&(full.len() as u32).to_le_bytes());
            framed.extend_from_slice(&crc32c::crc32c(&full).to_le_bytes());
            framed.extend_from_slice(&full);
            rec.clear();
            *ops = 0;
        };
        for kv in self.map.values().filter(|kv| kv.lease == 0) {
            if ops > 0 && rec.len() + kv.key.len() + kv.value.len() + 32 > self.snapshot_record {
                flush(&mut rec, &mut ops, &mut framed, self.revision);
            }
            rec.put_u8(OP_RESTORE);
            put_str(&mut rec, kv.key.as_bytes());
            put_str(&mut rec, &kv.value);
            rec.put_u64_le(kv.create_revision as u64);
            rec.put_u64_le(kv.mod_revision as u64);
            ops += 1;
        }
        flush(&mut rec, &mut ops, &mut framed, self.revision);
        let tmp = dir.join(format!("{JOURNAL}.tmp"));
        let mut f = File::create(&tmp).map_err(|e| perm("compact", e))?;
        f.write_all(&framed).and_then(|_| f.sync_all()).map_err(|e| perm("compact", e))?;
        std::fs::rename(&tmp, dir.join(JOURNAL)).map_err(|e| perm("compact", e))?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| perm("compact", e))?;
        let mut f = OpenOptions::new().append(true).open(dir.join(JOURNAL)).map_err(|e| perm("compact", e))?;
        use std::io::Seek;
        f.seek(std::io::SeekFrom::End(0)).map_err(|e| perm("compact", e))?;
        self.journal = Some(f);
        self.journal_bytes = framed.len() as u64;
        Ok(())
    }

    fn holds(&self, c: &Compare) -> bool {
        match c {
            Compare::ModRevision(k, rev) => self.map.get(k).map(|kv| kv.mod_revision).unwrap_or(0) == *rev,
            Compare::Value(k, v) => self.map.get(k).is_some_and(|kv| kv.value == *v),
        }
    }

    fn txn(&mut self, txn: Txn, tx: &broadcast::Sender<WatchEvent>) -> Result<TxnResult, MetaError> {
        if !txn.compares.iter().all(|c| self.holds(c)) {
            return Ok(TxnResult { succeeded: false, revision: self.revision });
        }
        for op in &txn.ops {
            if let Op::Put { lease, .. } = op {
                if *lease != 0 && !self.leases.contains_key(lease) {
                    return Err(MetaError::LeaseNotFound(*lease));
                }
            }
        }
        let rev = self.revision + 1;
        let mut rec = BytesMut::new();
        rec.put_u64_le(rev as u64);
        rec.put_u32_le(txn.ops.len() as u32);
        for op in &txn.ops {
            match op {
                // A leased key is not journaled; its delete is, so no older value resurrects.
                Op::Put { key, lease, .. } if *lease != 0 => {
                    rec.put_u8(OP_DELETE);
                    put_str(&mut rec, key.as_bytes());
                }
                Op::Put { key, value, .. } => {
                    rec.put_u8(OP_PUT);
                    put_str(&mut rec, key.as_bytes());
                    put_str(&mut rec, value);
                }
                Op::Delete(key) => {
                    rec.put_u8(OP_DELETE);
                    put_str(&mut rec, key.as_bytes());
                }
                Op::DeletePrefix(p) => {
                    rec.put_u8(OP_DELETE_PREFIX);
                    put_str(&mut rec, p.as_bytes());
                }
            }
        }
        self.write_record(&rec)?;
        self.revision = rev;
        for op in txn.ops {
            match op {
                Op::Put { key, value, lease } => {
                    let create = self.map.get(&key).map(|kv| kv.create_revision).unwrap_or(rev);
                    if let Some(old) = self.map.get(&key) {
                        if old.lease != 0 && old.lease != lease {
                            if let Some(l) = self.leases.get_mut(&old.lease) {
                                l.keys.remove(&key);
                            }
                        }
                    }
                    if lease != 0 {
                        self.leases.get_mut(&lease).expect("checked above").keys.insert(key.clone());
                    }
                    let kv = KeyValue { key: key.clone(), value, create_revision: create, mod_revision: rev, lease };
                    self.map.insert(key, kv.clone());
                    self.emit(tx, WatchEvent { kind: EventKind::Put, kv });
                }
                Op::Delete(key) => {
                    if self.map.remove(&key).is_some() {
                        self.emit(tx, deleted(key, rev));
                    }
                }
                Op::DeletePrefix(p) => {
                    let keys: Vec<String> =
                        self.map.range(p.clone()..).take_while(|(k, _)| k.starts_with(&p)).map(|(k, _)| k.clone()).collect();
                    for k in keys {
                        self.map.remove(&k);
                        self.emit(tx, deleted(k, rev));
                    }
                }
            }
        }
        // The transaction is durable and applied: a failed compaction is only retried later.
        if let Err(e) = self.maybe_compact() {
            tracing::warn!(error = %e, "compacting the metadata journal failed");
        }
        Ok(TxnResult { succeeded: true, revision: rev })
    }

    fn emit(&mut self, tx: &broadcast::Sender<WatchEvent>, ev: WatchEvent) {
        if self.history.len() == HISTORY_EVENTS {
            self.history.pop_front();
        }
        self.history.push_back(ev.clone());
        let _ = tx.send(ev);
    }

    fn drop_lease(&mut self, id: i64, tx: &broadcast::Sender<WatchEvent>) -> Result<(), MetaError> {
        let Some(lease) = self.leases.remove(&id) else { return Err(MetaError::LeaseNotFound(id)) };
        let ops: Vec<Op> = lease.keys.into_iter().filter(|k| self.map.get(k).is_some_and(|kv| kv.lease == id)).map(Op::Delete).collect();
        if !ops.is_empty() {
            self.txn(Txn { compares: vec![], ops }, tx)?;
        }
        Ok(())
    }
}

fn deleted(key: String, rev: i64) -> WatchEvent {
    WatchEvent { kind: EventKind::Delete, kv: KeyValue { key, value: Bytes::new(), create_revision: 0, mod_revision: rev, lease: 0 } }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ()> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or(())?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ()> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, ()> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| ())?))
    }
    fn u64(&mut self) -> Result<u64, ()> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| ())?))
    }
    fn bytes(&mut self) -> Result<Bytes, ()> {
        let n = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }
    fn string(&mut self) -> Result<String, ()> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| ())
    }
}

#[async_trait]
impl MetaStore for EmbeddedMeta {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError> {
        Ok(self.lock().map.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Listing, MetaError> {
        let g = self.lock();
        let kvs = g.map.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v.clone()).collect();
        Ok(Listing { kvs, revision: g.revision })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, MetaError> {
        if self.lock().journal.is_none() {
            let mut g = self.lock();
            return g.txn(txn, &self.events);
        }
        self.blocking(move |g, tx| g.txn(txn, tx)).await
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream, MetaError> {
        let (out, rx) = mpsc::channel(WATCH_QUEUE_CAPACITY);
        let prefix = prefix.to_string();
        let (backlog, mut live) = {
            let g = self.lock();
            let after = if after_revision <= 0 { g.revision } else { after_revision };
            if let Some(first) = g.history.front() {
                if after + 1 < first.kv.mod_revision {
                    return Err(MetaError::Permanent { op: "watch", message: format!("revision {after} is compacted") });
                }
            }
            let backlog: Vec<WatchEvent> =
                g.history.iter().filter(|e| e.kv.mod_revision > after && e.kv.key.starts_with(&prefix)).cloned().collect();
            let last = backlog.last().map(|e| e.kv.mod_revision).unwrap_or(after);
            (backlog, (self.events.subscribe(), last.max(g.revision)))
        };
        tokio::spawn(async move {
            for ev in backlog {
                if out.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            let (ref mut sub, seen) = live;
            loop {
                match sub.recv().await {
                    Ok(ev) if ev.kv.mod_revision > seen && ev.kv.key.starts_with(&prefix) => {
                        if out.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = out.send(Err(MetaError::Transient { op: "watch", message: format!("watcher lagged by {n} events") })).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(rx)
    }

    async fn grant_lease(&self, ttl_secs: i64) -> Result<i64, MetaError> {
        if ttl_secs <= 0 {
            return Err(perm("lease_grant", "ttl must be positive"));
        }
        let mut g = self.lock();
        let id = g.next_lease;
        g.next_lease += 1;
        let ttl = Duration::from_secs(ttl_secs as u64);
        g.leases.insert(id, Lease { ttl, deadline: Instant::now() + ttl, keys: HashSet::new() });
        Ok(id)
    }

    async fn keep_alive(&self, lease: i64) -> Result<(), MetaError> {
        let mut g = self.lock();
        let l = g.leases.get_mut(&lease).ok_or(MetaError::LeaseNotFound(lease))?;
        if l.deadline <= Instant::now() {
            return Err(MetaError::LeaseNotFound(lease));
        }
        l.deadline = Instant::now() + l.ttl;
        Ok(())
    }

    async fn revoke_lease(&self, lease: i64) -> Result<(), MetaError> {
        let tx = self.events.clone();
        match self.lock().drop_lease(lease, &tx) {
            Err(MetaError::LeaseNotFound(_)) => Ok(()),
            r => r,
        }
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in `dir` with small limits: records of at most `max_record` bytes, snapshots in
    /// records of about `snapshot_record`, compaction from `compact_min` journal bytes.
    fn small(dir: &Path, max_record: usize, snapshot_record: usize, compact_min: u64) -> EmbeddedMeta {
        let m = EmbeddedMeta::open(dir, false).unwrap();
        {
            let mut g = m.lock();
            (g.max_record, g.snapshot_record, g.compact_min) = (max_record, snapshot_record, compact_min);
        }
        m
    }

    #[tokio::test]
    async fn a_transaction_larger_than_replay_accepts_is_refused_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let m = small(dir.path(), 4096, 1024, u64::MAX);
        super::super::put(&m, "kept", "v").await.unwrap();
        let big = Txn::new().then(Op::put("big", vec![b'x'; 8192]));
        assert!(matches!(m.txn(big).await, Err(MetaError::Permanent { .. })), "refused, not written");
        assert!(m.get("big").await.unwrap().is_none());
        super::super::put(&m, "after", "w").await.unwrap();
        drop(m);
        let m = small(dir.path(), 4096, 1024, u64::MAX);
        assert!(m.get("kept").await.unwrap().is_some() && m.get("after").await.unwrap().is_some(), "the journal replays whole");
    }

    #[tokio::test]
    async fn a_snapshot_larger_than_one_record_replays_completely() {
        let dir = tempfile::tempdir().unwrap();
        // Live data (~40 KB) far over one record (4 KB); compaction on from 16 KB of journal.
        let m = small(dir.path(), 4096, 2048, 16 << 10);
        for round in 0..8 {
            for i in 0..200 {
                super::super::put(&m, &format!("k/{i:04}"), format!("{round}-{}", "v".repeat(150))).await.unwrap();
            }
        }
        let before = m.list("k/").await.unwrap();
        let journal = std::fs::metadata(dir.path().join(JOURNAL)).unwrap().len();
        assert!(journal < 8 * 200 * 170, "the journal was compacted ({journal} bytes)");
        drop(m);
        let m = small(dir.path(), 4096, 2048, 16 << 10);
        let after = m.list("k/").await.unwrap();
        assert_eq!(after.kvs.len(), 200, "every key after a restart");
        assert_eq!(after.kvs, before.kvs, "values and revisions as before");
        assert!(after.kvs.iter().all(|kv| kv.value.starts_with(b"7-")));
    }

    /// Replay fuzz target: random transactions, then the journal damaged at a random place
    /// (cut short, a byte flipped, garbage appended). Reopening never panics and yields exactly
    /// the state after some prefix of the transactions (a record is all or nothing).
    /// `PROPTEST_CASES` sets how many cases run (CI: the default; longer runs: see the README).
    mod replay_fuzz {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Step {
            Put(u8, Vec<u8>),
            Delete(u8),
            DeletePrefix(u8),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                (0u8..16, proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(k, v)| Step::Put(k, v)),
                (0u8..16).prop_map(Step::Delete),
                (0u8..2).prop_map(Step::DeletePrefix),
            ]
        }

        fn key(k: u8) -> String {
            format!("{}/{k:02}", k % 2)
        }

        fn apply(model: &mut BTreeMap<String, Vec<u8>>, s: &Step) {
            match s {
                Step::Put(k, v) => {
                    model.insert(key(*k), v.clone());
                }
                Step::Delete(k) => {
                    model.remove(&key(*k));
                }
                Step::DeletePrefix(p) => model.retain(|k, _| !k.starts_with(&format!("{p}/"))),
            }
        }

        proptest! {
            #[test]
            fn a_damaged_journal_replays_a_prefix(steps in proptest::collection::vec(step(), 1..30), damage in 0u8..3, at in any::<u16>(), byte in 1u8..=255) {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let dir = tempfile::tempdir().unwrap();
                let mut states = vec![BTreeMap::new()];
                rt.block_on(async {
                    let m = EmbeddedMeta::open(dir.path(), false).unwrap();
                    for s in &steps {
                        let op = match s {
                            Step::Put(k, v) => Op::put(key(*k), v.clone()),
                            Step::Delete(k) => Op::Delete(key(*k)),
                            Step::DeletePrefix(p) => Op::DeletePrefix(format!("{p}/")),
                        };
                        m.txn(Txn::new().then(op)).await.unwrap();
                        let mut next = states.last().unwrap().clone();
                        apply(&mut next, s);
                        states.push(next);
                    }
                });
                let path = dir.path().join(JOURNAL);
                let mut data = std::fs::read(&path).unwrap();
                let pos = at as usize % data.len().max(1);
                match damage {
                    0 => data.truncate(pos),
                    1 => data[pos] ^= byte,
                    _ => data.extend_from_slice(&[byte; 13]),
                }
                std::fs::write(&path, &data).unwrap();
                let got: BTreeMap<String, Vec<u8>> = rt.block_on(async {
                    let m = EmbeddedMeta::open(dir.path(), false).unwrap();
                    m.list("").await.unwrap().kvs.into_iter().map(|kv| (kv.key, kv.value.to_vec())).collect()
                });
                prop_assert!(states.contains(&got), "replayed state is no prefix of the transactions: {got:?}");
                if damage == 2 {
                    prop_assert_eq!(&got, states.last().unwrap(), "garbage after the journal loses nothing");
                }
            }
        }
    }
}
