//! The optional local journal of a LogStore node: every append and fence is written to a file in
//! the node's data directory and fsync'd before the node answers, so a node that restarts (a
//! crash, SIGKILL, a redeploy) comes back holding what it acknowledged, with the same incarnation.
//!
//! The file is a sequence of records, each `len: u32 | crc32c: u32 | body` (big-endian), the
//! body starting with a kind byte. The first record is a header naming the node and its
//! incarnation. Replay stops at the first torn or corrupt record (a crash mid-write leaves at most
//! the unacknowledged tail there). Records are applied idempotently (a block already held is
//! skipped, fences and stored marks only rise), so a snapshot followed by records that were
//! already in flight when it was taken replays to the same state.
//!
//! One thread owns the file: callers queue records (in the order the node's state changed) and
//! wait for a ticket; the thread writes every queued record, fsyncs once for the batch (group
//! commit) and answers the tickets. When the file has grown past `compact_bytes` and holds more
//! than four times the live data, the thread rewrites it as a snapshot of the node's state
//! (written to a temporary file, fsync'd, renamed over the journal).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;

use super::proto::SegKey;
use crate::error::{Result, WalError};

const FILE: &str = "journal";
const TMP: &str = "journal.tmp";
const MAGIC: &[u8; 8] = b"WALJRNL1";
/// A record larger than this is corrupt (blocks are at most a few MiB plus one entry).
const MAX_RECORD: usize = 256 << 20;

/// Rewrite the journal once it is at least this large (and mostly dead).
pub const DEFAULT_COMPACT_BYTES: u64 = 64 << 20;

/// One change of a node's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Header {
        node_id: String,
        incarnation: u64,
    },
    Append {
        seg: SegKey,
        epoch: u64,
        seg_base: u64,
        base: u64,
        end: u64,
        /// Bound for the node's shared objects (see [`Append::shared`](super::proto::Append)).
        shared: bool,
        block: Bytes,
    },
    Fence {
        seg: SegKey,
        epoch: u64,
    },
    /// Every block of the segment below `stored_end` is in object storage.
    Stored {
        seg: SegKey,
        stored_end: u64,
    },
    /// A segment's identity and marks (snapshots).
    Seg {
        seg: SegKey,
        epoch: u64,
        base: u64,
        fence: u64,
        stored_end: u64,
    },
}

impl Record {
    fn encode(&self, out: &mut BytesMut) {
        let mut b = BytesMut::new();
        let key = |b: &mut BytesMut, k: &SegKey| {
            b.put_u64(k.log_id);
            b.put_u64(k.segment);
        };
        match self {
            Record::Header { node_id, incarnation } => {
                b.put_u8(0);
                b.put_slice(MAGIC);
                b.put_u64(*incarnation);
                b.put_u32(node_id.len() as u32);
                b.put_slice(node_id.as_bytes());
            }
            Record::Append { seg, epoch, seg_base, base, end, shared, block } => {
                // (kind 5: the same record of a block bound for shared objects)
                b.put_u8(if *shared { 5 } else { 1 });
                key(&mut b, seg);
                for v in [*epoch, *seg_base, *base, *end] {
                    b.put_u64(v);
                }
                b.put_slice(block);
            }
            Record::Fence { seg, epoch } => {
                b.put_u8(2);
                key(&mut b, seg);
                b.put_u64(*epoch);
            }
            Record::Stored { seg, stored_end } => {
                b.put_u8(3);
                key(&mut b, seg);
                b.put_u64(*stored_end);
            }
            Record::Seg { seg, epoch, base, fence, stored_end } => {
                b.put_u8(4);
                key(&mut b, seg);
                for v in [*epoch, *base, *fence, *stored_end] {
                    b.put_u64(v);
                }
            }
        }
        out.put_u32(b.len() as u32);
        out.put_u32(crc32c::crc32c(&b));
        out.put_slice(&b);
    }

    fn decode(mut b: Bytes) -> Option<Record> {
        fn u64s<const N: usize>(b: &mut Bytes) -> Option<[u64; N]> {
            if b.remaining() < N * 8 {
                return None;
            }
            Some(std::array::from_fn(|_| b.get_u64()))
        }
        if b.is_empty() {
            return None;
        }
        let kind = b.get_u8();
        let rec = match kind {
            0 => {
                if b.remaining() < 20 || &b[..8] != MAGIC {
                    return None;
                }
                b.advance(8);
                let incarnation = b.get_u64();
                let n = b.get_u32() as usize;
                if b.remaining() != n {
                    return None;
                }
                Record::Header { node_id: String::from_utf8(b.to_vec()).ok()?, incarnation }
            }
            1 | 5 => {
                let [log_id, segment, epoch, seg_base, base, end] = u64s::<6>(&mut b)?;
                Record::Append { seg: SegKey { log_id, segment }, epoch, seg_base, base, end, shared: kind == 5, block: b }
            }
            2 => {
                let [log_id, segment, epoch] = u64s::<3>(&mut b)?;
                Record::Fence { seg: SegKey { log_id, segment }, epoch }
            }
            3 => {
                let [log_id, segment, stored_end] = u64s::<3>(&mut b)?;
                Record::Stored { seg: SegKey { log_id, segment }, stored_end }
            }
            4 => {
                let [log_id, segment, epoch, base, fence, stored_end] = u64s::<6>(&mut b)?;
                Record::Seg { seg: SegKey { log_id, segment }, epoch, base, fence, stored_end }
            }
            _ => return None,
        };
        Some(rec)
    }
}

/// What a journal held at start: the incarnation to keep (None when there was no usable journal)
/// and the records after the header, in order.
pub struct Replayed {
    pub incarnation: Option<u64>,
    pub records: Vec<Record>,
    /// Bytes after the last good record (a torn tail), dropped.
    pub dropped_bytes: u64,
}

fn io_err(path: &Path, e: std::io::Error) -> WalError {
    WalError::Config(format!("logstore journal {}: {e}", path.display()))
}

/// Reads the journal in `dir` (if any). A journal of another node is refused.
pub fn replay(dir: &Path, node_id: &str) -> Result<Replayed> {
    let path = dir.join(FILE);
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Replayed { incarnation: None, records: Vec::new(), dropped_bytes: 0 })
        }
        Err(e) => return Err(io_err(&path, e)),
    };
    let total = f.metadata().map_err(|e| io_err(&path, e))?.len();
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut good = 0u64;
    let mut records = Vec::new();
    let mut incarnation = None;
    loop {
        let mut head = [0u8; 8];
        if r.read_exact(&mut head).is_err() {
            break;
        }
        let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
        if len == 0 || len > MAX_RECORD || good + 8 + len as u64 > total {
            break;
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() || crc32c::crc32c(&body) != crc {
            break;
        }
        let Some(rec) = Record::decode(Bytes::from(body)) else { break };
        good += 8 + len as u64;
        match rec {
            Record::Header { node_id: id, incarnation: inc } if incarnation.is_none() && records.is_empty() => {
                if id != node_id {
                    return Err(WalError::Config(format!("logstore journal {} belongs to node {id:?}, not {node_id:?}", path.display())));
                }
                incarnation = Some(inc);
            }
            _ if incarnation.is_none() => break,
            Record::Header { .. } => break,
            rec => records.push(rec),
        }
    }
    if incarnation.is_none() {
        records.clear();
    }
    Ok(Replayed { incarnation, records, dropped_bytes: total - good })
}

/// Something that can describe the live state as records (the node, for snapshots).
pub trait Snapshot: Send + Sync {
    /// The records that rebuild the current state, and the bytes of block data among them.
    fn snapshot(&self) -> (Vec<Record>, u64);
}

/// A record to write, and who waits for it to be on disk (nobody for stored marks).
type Job = (Record, Option<oneshot::Sender<bool>>);

/// The handle the node queues records on.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Job>,
    closed: Arc<AtomicBool>,
}

impl Journal {
    /// Writes a fresh journal in `dir` holding `header` and `state` (fsync'd, renamed into place),
    /// then starts the writer thread on it. `snap` is asked for the state at later compactions.
    pub fn open(
        dir: &Path,
        header: Record,
        state: Vec<Record>,
        compact_bytes: u64,
        snap: std::sync::Weak<dyn Snapshot>,
    ) -> Result<Journal> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let file = rewrite(dir, &header, &state)?;
        let (tx, rx) = mpsc::channel();
        let dir = dir.to_path_buf();
        let closed = Arc::new(AtomicBool::new(false));
        let c = closed.clone();
        std::thread::Builder::new()
            .name("logstore-journal".into())
            .spawn(move || writer(dir, file, header, compact_bytes, snap, rx, c))
            .map_err(|e| WalError::Config(format!("cannot start the journal thread: {e}")))?;
        Ok(Journal { tx, closed })
    }

    /// Stops writing: the thread exits at its next record without touching the files again (so a
    /// node started again on the same directory in this process owns them alone).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Queues a record; the receiver answers `true` once it is on disk (`false`: the journal
    /// failed and the node must not acknowledge).
    pub fn write(&self, rec: Record) -> oneshot::Receiver<bool> {
        let (t, r) = oneshot::channel();
        let _ = self.tx.send((rec, Some(t)));
        r
    }

    /// Queues a record nobody waits for (stored marks: losing one only costs a re-upload).
    pub fn note(&self, rec: Record) {
        let _ = self.tx.send((rec, None));
    }
}

/// Writes header + state to the temporary file, fsyncs it, renames it over the journal and
/// fsyncs the directory; returns the journal opened for appending.
fn rewrite(dir: &Path, header: &Record, state: &[Record]) -> Result<(File, u64)> {
    let tmp = dir.join(TMP);
    let path = dir.join(FILE);
    let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    let mut buf = BytesMut::new();
    header.encode(&mut buf);
    let mut size = 0u64;
    for r in state {
        r.encode(&mut buf);
        if buf.len() >= 4 << 20 {
            f.write_all(&buf).map_err(|e| io_err(&tmp, e))?;
            size += buf.len() as u64;
            buf.clear();
        }
    }
    f.write_all(&buf).map_err(|e| io_err(&tmp, e))?;
    size += buf.len() as u64;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))?;
    let f = OpenOptions::new().append(true).open(&path).map_err(|e| io_err(&path, e))?;
    Ok((f, size))
}

fn writer(
    dir: PathBuf,
    file: (File, u64),
    header: Record,
    compact_bytes: u64,
    snap: std::sync::Weak<dyn Snapshot>,
    rx: mpsc::Receiver<Job>,
    closed: Arc<AtomicBool>,
) {
    let (mut file, mut size) = file;
    let mut failed = false;
    while let Ok(first) = rx.recv() {
        if closed.load(Ordering::SeqCst) {
            return;
        }
        let mut buf = BytesMut::new();
        let mut waiters = Vec::new();
        let mut job = Some(first);
        while let Some((rec, t)) = job.take() {
            rec.encode(&mut buf);
            waiters.extend(t);
            if buf.len() < 16 << 20 {
                job = rx.try_recv().ok();
            }
        }
        if !failed {
            let ok = file.write_all(&buf).and_then(|_| if waiters.is_empty() { Ok(()) } else { file.sync_data() });
            if let Err(e) = ok {
                // The file may now hold a partial record: nothing more is written to it, and the
                // node stops acknowledging (every later ticket answers false).
                tracing::error!(dir = %dir.display(), error = %e, "logstore journal write failed; refusing appends from now on");
                failed = true;
            }
            size += buf.len() as u64;
        }
        for t in waiters {
            let _ = t.send(!failed);
        }
        if failed || size < compact_bytes {
            continue;
        }
        let Some(node) = snap.upgrade() else { return };
        if closed.load(Ordering::SeqCst) {
            return;
        }
        let (state, live) = node.snapshot();
        if size < live.saturating_mul(4) {
            continue;
        }
        match rewrite(&dir, &header, &state) {
            Ok((f, s)) => {
                tracing::info!(dir = %dir.display(), from = size, to = s, "logstore journal compacted");
                file = f;
                size = s;
            }
            Err(e) => tracing::warn!(error = %e, "logstore journal compaction failed; keeping the old file"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg() -> SegKey {
        SegKey { log_id: 7, segment: 3 }
    }

    struct Empty;
    impl Snapshot for Empty {
        fn snapshot(&self) -> (Vec<Record>, u64) {
            (Vec::new(), 0)
        }
    }

    fn records() -> Vec<Record> {
        vec![
            Record::Seg { seg: seg(), epoch: 2, base: 10, fence: 1, stored_end: 10 },
            Record::Append { seg: seg(), epoch: 2, seg_base: 10, base: 10, end: 15, shared: false, block: Bytes::from_static(b"hello") },
            Record::Append { seg: seg(), epoch: 2, seg_base: 10, base: 15, end: 16, shared: true, block: Bytes::from_static(b"!") },
            Record::Fence { seg: seg(), epoch: 3 },
            Record::Stored { seg: seg(), stored_end: 15 },
        ]
    }

    #[tokio::test]
    async fn records_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let header = Record::Header { node_id: "n1".into(), incarnation: 42 };
        let snap: std::sync::Arc<dyn Snapshot> = std::sync::Arc::new(Empty);
        let j =
            Journal::open(dir.path(), header, records()[..1].to_vec(), DEFAULT_COMPACT_BYTES, std::sync::Arc::downgrade(&snap)).unwrap();
        for r in &records()[1..] {
            assert!(j.write(r.clone()).await.unwrap());
        }
        let back = replay(dir.path(), "n1").unwrap();
        assert_eq!(back.incarnation, Some(42));
        assert_eq!(back.records, records());
        assert_eq!(back.dropped_bytes, 0);
        assert!(matches!(replay(dir.path(), "n2"), Err(WalError::Config(_))));
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let header = Record::Header { node_id: "n1".into(), incarnation: 5 };
        rewrite(dir.path(), &header, &records()).unwrap();
        let path = dir.path().join(FILE);
        let full = std::fs::read(&path).unwrap();
        // Cut inside the last record: the ones before it survive.
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let back = replay(dir.path(), "n1").unwrap();
        let n = records().len();
        assert_eq!(back.records, records()[..n - 1].to_vec());
        assert!(back.dropped_bytes > 0);
        // Flip a byte inside the Append record's block: it and everything after it go.
        let mut bad = full.clone();
        let at = bad.windows(5).position(|w| w == b"hello").unwrap();
        bad[at] ^= 0xff;
        std::fs::write(&path, &bad).unwrap();
        assert_eq!(replay(dir.path(), "n1").unwrap().records, records()[..1].to_vec());
        // A file without a valid header is no journal at all.
        std::fs::write(&path, &full[8..]).unwrap();
        let back = replay(dir.path(), "n1").unwrap();
        assert_eq!((back.incarnation, back.records.len()), (None, 0));
    }

    /// The live state, as the node keeps it: changed before its record is queued.
    struct Live(std::sync::Mutex<Vec<Record>>);
    impl Snapshot for Live {
        fn snapshot(&self) -> (Vec<Record>, u64) {
            let v = self.0.lock().unwrap().clone();
            let live = v.iter().map(|r| if let Record::Append { block, .. } = r { block.len() as u64 } else { 0 }).sum();
            (v, live)
        }
    }

    #[tokio::test]
    async fn a_grown_mostly_dead_journal_is_rewritten_as_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let header = Record::Header { node_id: "n1".into(), incarnation: 9 };
        let live = std::sync::Arc::new(Live(std::sync::Mutex::new(Vec::new())));
        let snap: std::sync::Arc<dyn Snapshot> = live.clone();
        let j = Journal::open(dir.path(), header, Vec::new(), 64 << 10, std::sync::Arc::downgrade(&snap)).unwrap();
        let big = Bytes::from(vec![7u8; 8 << 10]);
        let append = |i| Record::Append {
            seg: SegKey { log_id: 1, segment: i },
            epoch: 1,
            seg_base: 0,
            base: 0,
            end: 1,
            shared: true,
            block: big.clone(),
        };
        for i in 0..32u64 {
            // Only the newest block is live (the older ones reached object storage).
            *live.0.lock().unwrap() = vec![append(i)];
            assert!(j.write(append(i)).await.unwrap());
        }
        // A compaction runs after its batch is answered: one more record waits for it to finish.
        assert!(j.write(Record::Fence { seg: seg(), epoch: 4 }).await.unwrap());
        // 256 KiB written past a 64 KiB threshold with 8 KiB live: rewritten at least once, so
        // the file is far smaller than what was written, and replays to what is live.
        let size = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
        assert!(size < 128 << 10, "journal not compacted: {size} bytes");
        let back = replay(dir.path(), "n1").unwrap();
        assert_eq!(back.incarnation, Some(9));
        assert!(back.records.contains(&append(31)));
        assert!(!back.records.contains(&append(0)));
        assert_eq!(back.records.last(), Some(&Record::Fence { seg: seg(), epoch: 4 }));
        assert!(!dir.path().join(TMP).exists());
    }

    #[test]
    fn no_journal_yields_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let back = replay(dir.path(), "n1").unwrap();
        assert_eq!((back.incarnation, back.records.len()), (None, 0));
    }

    proptest::proptest! {
        /// Replay fuzz target: a journal damaged anywhere (cut, a byte flipped, garbage
        /// appended) replays without panicking to a prefix of what was written.
        #[test]
        fn a_damaged_journal_replays_a_prefix(damage in 0u8..3, at in proptest::prelude::any::<u16>(), byte in 1u8..=255, blocks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..8)) {
            let dir = tempfile::tempdir().unwrap();
            let header = Record::Header { node_id: "n1".into(), incarnation: 9 };
            let mut written = records();
            for (i, b) in blocks.into_iter().enumerate() {
                written.push(Record::Append { seg: seg(), epoch: 3, seg_base: 10, base: 16 + i as u64, end: 17 + i as u64, shared: i % 2 == 0, block: Bytes::from(b) });
            }
            rewrite(dir.path(), &header, &written).unwrap();
            let path = dir.path().join(FILE);
            let mut data = std::fs::read(&path).unwrap();
            let pos = at as usize % data.len();
            match damage {
                0 => data.truncate(pos),
                1 => data[pos] ^= byte,
                _ => data.extend_from_slice(&[byte; 11]),
            }
            std::fs::write(&path, &data).unwrap();
            let back = replay(dir.path(), "n1").unwrap();
            proptest::prop_assert!(back.records.len() <= written.len());
            proptest::prop_assert_eq!(&back.records[..], &written[..back.records.len()]);
            if damage == 2 {
                proptest::prop_assert_eq!(back.records.len(), written.len(), "garbage after the journal loses nothing");
            }
        }
    }
}
