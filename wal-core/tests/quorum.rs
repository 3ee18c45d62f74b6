//! QuorumBuffer mode against real LogStore nodes on loopback (in this process, each with its
//! own listener and connections), on in-memory storage and metadata: acknowledgements at 2 of 3,
//! node loss and return, too few nodes, fencing of a stale writer, recovery from replicas when
//! nothing reached storage, and the limit: replicas that all restart empty keep only what was
//! stored. The same scenarios with separate processes, etcd and S3 run in the gateway's tests.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use wal_core::logstore::{LogStoreNode, NodeConfig};
use wal_core::meta::MetaStore;
use wal_core::storage::faulty::FaultOps;
use wal_core::{BufferMode, ObjectStore, Wal, WalConfig, WalError};

fn quorum_config() -> WalConfig {
    let mut c = small_config();
    c.buffer = BufferMode::Quorum;
    c.quorum.replica_timeout_ms = 1_000;
    c.quorum.node_backoff_ms = 60_000;
    c
}

async fn node(m: &MemWal, id: &str, takeover_ms: u64) -> LogStoreNode {
    node_with(m, id, takeover_ms, m.wal.config().put_budget_per_sec).await
}

async fn node_with(m: &MemWal, id: &str, takeover_ms: u64, put_budget_per_sec: u32) -> LogStoreNode {
    let mut cfg = NodeConfig::new(id);
    cfg.objects.put_budget_per_sec = put_budget_per_sec;
    cfg.takeover_ms = takeover_ms;
    cfg.lease_ttl_secs = 2;
    let store: Arc<dyn ObjectStore> = m.store.clone();
    let meta: Arc<dyn MetaStore> = m.meta.clone();
    LogStoreNode::start(cfg, "127.0.0.1:0".parse().unwrap(), store, meta).await.unwrap()
}

async fn three_nodes(m: &MemWal) -> Vec<LogStoreNode> {
    vec![node(m, "ls-a", 500).await, node(m, "ls-b", 500).await, node(m, "ls-c", 500).await]
}

/// Waits (bounded) until the log's metadata says everything acknowledged is in storage.
async fn wait_stored(wal: &Wal, name: &str, end: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let segs = wal.segments(name).await.unwrap();
        if segs.iter().map(|s| s.end_offset).max().unwrap_or(0) >= end {
            return;
        }
        assert!(Instant::now() < deadline, "blocks not stored within 20 s: {segs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Appends entries `seqs` (each `len` bytes), every one acknowledged, and records them.
async fn append_seqs(w: &wal_core::LogWriter, range: std::ops::Range<u64>, len: usize, seqs: &mut Vec<u64>) {
    for seq in range {
        w.append(entry(seq, len)).await.unwrap();
        seqs.push(seq);
    }
}

fn check_dense(all: &[wal_core::StoredEntry], seqs: &[u64]) {
    let got: Vec<u64> = all.iter().map(|e| seq_of(&e.data)).collect();
    assert_eq!(got, seqs, "every acknowledged entry once, in order");
    let mut off = 0;
    for e in all {
        assert_eq!(e.offset, off);
        off = e.end_offset();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_at_quorum_then_stored_and_sealed() {
    let m = mem_wal(quorum_config());
    let nodes = three_nodes(&m).await;
    m.wal.create_log("q").await.unwrap();
    let w = m.wal.open_writer("q").await.unwrap();
    let mut seqs = Vec::new();
    let mut end = 0;
    for seq in 0..300u64 {
        end = w.append(entry(seq, 200)).await.unwrap().end_offset;
        seqs.push(seq);
    }
    assert_eq!(w.durable(), end);
    // Readable at once (from the pinned tail), whatever has been stored yet.
    check_dense(&read_all(&m.wal, "q", 0).await, &seqs);
    wait_stored(&m.wal, "q", end).await;
    // The nodes dropped what is stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes.iter().any(|n| n.held_bytes() > 0) {
        assert!(Instant::now() < deadline, "nodes still hold stored blocks");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.close().await.unwrap();
    // A second process reads everything from object storage alone.
    let other = reopen(&m, quorum_config());
    check_dense(&read_all(&other, "q", 0).await, &seqs);
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_node_loses_nothing_losing_two_refuses_then_resumes() {
    let m = mem_wal(quorum_config());
    let mut nodes = three_nodes(&m).await;
    m.wal.create_log("q").await.unwrap();
    let w = m.wal.open_writer("q").await.unwrap();
    let mut seqs = Vec::new();
    append_seqs(&w, 0..100, 100, &mut seqs).await;
    nodes.remove(0).kill();
    for seq in 100..200u64 {
        // The first append after the kill may fail (its block was queued on the dead node and the
        // writer rolls); a retry must succeed on the two left.
        let mut ok = false;
        for _ in 0..3 {
            match w.append(entry(seq, 100)).await {
                Ok(_) => {
                    ok = true;
                    break;
                }
                Err(e) => assert!(e.is_retriable(), "{e}"),
            }
        }
        assert!(ok, "append {seq} failed three times with two nodes up");
        seqs.push(seq);
    }
    check_dense(&read_all(&m.wal, "q", 0).await, &seqs);
    // Two of three gone: appends fail with a retriable error, nothing is acknowledged.
    nodes.remove(0).kill();
    let before = w.durable();
    for seq in 200..203u64 {
        let e = w.append(entry(seq, 100)).await.unwrap_err();
        assert!(matches!(e, WalError::AppendFailed(_)), "{e}");
    }
    assert_eq!(w.durable(), before);
    // A node comes back (empty, new incarnation): appends resume.
    nodes.push(node(&m, "ls-a", 500).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    let seq = 203u64;
    loop {
        match w.append(entry(seq, 100)).await {
            Ok(_) => break,
            Err(e) => {
                assert!(e.is_retriable(), "{e}");
                assert!(Instant::now() < deadline, "appends did not resume: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    seqs.push(seq);
    let end = w.durable();
    check_dense(&read_all(&m.wal, "q", 0).await, &seqs);
    wait_stored(&m.wal, "q", end).await;
    w.close().await.unwrap();
    check_dense(&read_all(&reopen(&m, quorum_config()), "q", 0).await, &seqs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_writer_recovers_from_replicas_what_never_reached_storage() {
    let m = mem_wal(quorum_config());
    // The nodes cannot store anything: acknowledged data lives only on the replicas.
    m.store.set_ops(FaultOps::Puts);
    m.store.set_fail_probability(1.0);
    let nodes = three_nodes(&m).await;
    m.wal.create_log("q").await.unwrap();
    let w = m.wal.open_writer("q").await.unwrap();
    let mut seqs = Vec::new();
    append_seqs(&w, 0..50, 300, &mut seqs).await;
    let end = w.durable();
    w.abort(); // the writer process dies
    m.store.heal();
    // A new writer (another process) fences the replicas and recovers every acknowledged entry.
    let other = reopen(&m, quorum_config());
    let w2 = other.open_writer("q").await.unwrap();
    assert_eq!(w2.written(), end);
    check_dense(&read_all(&other, "q", 0).await, &seqs);
    w2.append(entry(50, 300)).await.unwrap();
    seqs.push(50);
    check_dense(&read_all(&other, "q", 0).await, &seqs);
    w2.close().await.unwrap();
    for n in nodes {
        n.shutdown().await;
    }
}

/// Nodes whose every PUT fails (reads go through): what they acknowledge stays on them.
struct NoPuts(Arc<dyn ObjectStore>);

#[async_trait::async_trait]
impl ObjectStore for NoPuts {
    async fn put_if_absent(&self, key: &str, _: bytes::Bytes) -> Result<(), wal_core::StorageError> {
        Err(wal_core::StorageError::Transient { op: "put", message: format!("{key}: refused by the test") })
    }
    async fn get(&self, key: &str) -> Result<bytes::Bytes, wal_core::StorageError> {
        self.0.get(key).await
    }
    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<bytes::Bytes, wal_core::StorageError> {
        self.0.get_range(key, range).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<wal_core::storage::ObjectMeta>, wal_core::StorageError> {
        self.0.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), wal_core::StorageError> {
        self.0.delete(key).await
    }
    fn backend(&self) -> &'static str {
        "no-puts"
    }
}

/// A writer taking over reads the replicas' tail in bulk: 60 blocks that only the replicas
/// hold reach object storage as one object (one chunk key each), not as 60.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_copies_the_replicas_tail_in_bulk() {
    let m = mem_wal(quorum_config());
    let mut nodes = Vec::new();
    for id in ["ls-a", "ls-b", "ls-c"] {
        let mut cfg = NodeConfig::new(id);
        cfg.lease_ttl_secs = 2;
        let store: Arc<dyn ObjectStore> = Arc::new(NoPuts(m.store.clone()));
        let meta: Arc<dyn MetaStore> = m.meta.clone();
        nodes.push(LogStoreNode::start(cfg, "127.0.0.1:0".parse().unwrap(), store, meta).await.unwrap());
    }
    m.wal.create_log("q").await.unwrap();
    let w = m.wal.open_writer("q").await.unwrap();
    let mut seqs = Vec::new();
    append_seqs(&w, 0..60, 300, &mut seqs).await; // one acknowledged block each
    let end = w.durable();
    w.abort();
    let objects_before = m.store.inner().list("").await.unwrap().len();
    let other = reopen(&m, quorum_config());
    let w2 = other.open_writer("q").await.unwrap();
    assert_eq!(w2.written(), end);
    check_dense(&read_all(&other, "q", 0).await, &seqs);
    let new_objects: Vec<String> =
        m.store.inner().list("").await.unwrap().into_iter().map(|o| o.key).filter(|k| k.contains("shared/")).collect();
    assert_eq!(new_objects.len(), 1, "the 60 replica-only blocks go into one object: {new_objects:?}");
    assert!(m.store.inner().list("").await.unwrap().len() <= objects_before + 2, "no object per block");
    assert_eq!(m.meta.list("chunk/").await.unwrap().kvs.len(), 60, "each block's place recorded");
    w2.close().await.unwrap();
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_is_refused_by_the_nodes() {
    let m = mem_wal(quorum_config());
    let nodes = three_nodes(&m).await;
    m.wal.create_log("q").await.unwrap();
    let old = m.wal.open_writer("q").await.unwrap();
    let mut seqs = Vec::new();
    append_seqs(&old, 0..20, 100, &mut seqs).await;
    // A new writer elsewhere: it fences the old one's segment on the replicas.
    let other = reopen(&m, quorum_config());
    let new = other.open_writer("q").await.unwrap();
    let e = old.append(entry(999, 100)).await.unwrap_err();
    assert!(matches!(e, WalError::Fenced { .. }), "stale writer got {e}");
    assert!(matches!(old.append(entry(998, 100)).await, Err(WalError::Fenced { .. })));
    append_seqs(&new, 20..30, 100, &mut seqs).await;
    check_dense(&read_all(&other, "q", 0).await, &seqs);
    new.close().await.unwrap();
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_restarted_empty_keep_exactly_what_was_stored() {
    let m = mem_wal(quorum_config());
    let nodes = three_nodes(&m).await;
    m.wal.create_log("q").await.unwrap();
    let w = m.wal.open_writer("q").await.unwrap();
    let mut seqs = Vec::new();
    append_seqs(&w, 0..40, 100, &mut seqs).await;
    let stored_end = w.durable();
    wait_stored(&m.wal, "q", stored_end).await;
    // From here the store refuses writes: what follows is acknowledged by the replicas only.
    m.store.set_ops(FaultOps::Puts);
    m.store.set_fail_probability(1.0);
    for seq in 40..60u64 {
        w.append(entry(seq, 100)).await.unwrap();
    }
    w.abort();
    for n in nodes {
        n.kill();
    }
    m.store.heal();
    // Every replica returns empty (new incarnations): the stored part survives, the rest is the
    // documented limit of the mode.
    let fresh = three_nodes(&m).await;
    let other = reopen(&m, quorum_config());
    let w2 = other.open_writer("q").await.unwrap();
    assert_eq!(w2.written(), stored_end);
    check_dense(&read_all(&other, "q", 0).await, &seqs);
    w2.close().await.unwrap();
    for n in fresh {
        n.shutdown().await;
    }
}

/// A node with a local journal in `dir`, on `addr` (port 0: any).
async fn journaled_node(m: &MemWal, id: &str, dir: &std::path::Path, addr: std::net::SocketAddr) -> LogStoreNode {
    let mut cfg = NodeConfig::new(id);
    cfg.takeover_ms = 500;
    cfg.lease_ttl_secs = 2;
    cfg.data_dir = Some(dir.to_path_buf());
    let store: Arc<dyn ObjectStore> = m.store.clone();
    let meta: Arc<dyn MetaStore> = m.meta.clone();
    // The killed node's listener closes when the runtime drops its aborted task: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match LogStoreNode::start(cfg.clone(), addr, store.clone(), meta.clone()).await {
            Ok(n) => return n,
            Err(e) if Instant::now() < deadline && e.to_string().contains("in use") => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Kills every node and starts it again on the same directory and port.
async fn crash_and_restart(m: &MemWal, nodes: Vec<LogStoreNode>, dirs: &[tempfile::TempDir]) -> Vec<LogStoreNode> {
    let mut back = Vec::new();
    for (i, n) in nodes.into_iter().enumerate() {
        let (addr, inc) = (n.addr, n.incarnation);
        n.kill();
        let again = journaled_node(m, &format!("ls-{i}"), dirs[i].path(), addr).await;
        assert_eq!(again.incarnation, inc, "a journaled node keeps its incarnation");
        back.push(again);
    }
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journaled_replicas_restart_holding_what_they_acknowledged() {
    let m = mem_wal(quorum_config());
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        nodes.push(journaled_node(&m, &format!("ls-{i}"), d.path(), "127.0.0.1:0".parse().unwrap()).await);
    }
    m.wal.create_log("q").await.unwrap();
    let w = m.wal.open_writer("q").await.unwrap();
    let mut seqs = Vec::new();
    append_seqs(&w, 0..40, 100, &mut seqs).await;
    wait_stored(&m.wal, "q", w.durable()).await;
    // From here nothing reaches storage: the rest is acknowledged by the replicas only.
    m.store.set_ops(FaultOps::Puts);
    m.store.set_fail_probability(1.0);
    append_seqs(&w, 40..60, 100, &mut seqs).await;
    let end = w.durable();
    w.abort();
    // Every node crashes and comes back from its journal (with memory-only nodes this loses
    // entries 40..60: see replicas_restarted_empty_keep_exactly_what_was_stored).
    let nodes = crash_and_restart(&m, nodes, &dirs).await;
    m.store.heal();
    let other = reopen(&m, quorum_config());
    let w2 = other.open_writer("q").await.unwrap();
    assert_eq!(w2.written(), end, "every acknowledged entry recovered from the journals");
    check_dense(&read_all(&other, "q", 0).await, &seqs);
    w2.close().await.unwrap();
    // And it all reaches storage: a reader with no node at all sees it.
    for n in nodes {
        n.shutdown().await;
    }
    check_dense(&read_all(&reopen(&m, quorum_config()), "q", 0).await, &seqs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journaled_nodes_remember_their_fences_across_a_restart() {
    use wal_core::logstore::proto::{Append, ErrorCode, Request, Response, SegKey};
    use wal_core::logstore::Replication;
    let m = mem_wal(quorum_config());
    let seg = SegKey { log_id: 9, segment: 4 };
    let append = |id, epoch| {
        Request::Append(Append {
            id,
            seg,
            epoch,
            seg_base: 100,
            base: 100,
            end: 101,
            upload_now: false,
            shared: false,
            stored_end: 0,
            block: bytes::Bytes::from_static(b"block"),
        })
    };
    for journal in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let start = |addr| {
            let (m, dir) = (&m, dir.path().to_path_buf());
            async move {
                if journal {
                    journaled_node(m, "ls-f", &dir, addr).await
                } else {
                    node(m, "ls-f", 500).await
                }
            }
        };
        let n = start("127.0.0.1:0".parse().unwrap()).await;
        let rep = Replication::new(m.meta.clone());
        let addr = n.addr.to_string();
        // A new writer (epoch 5) fences the segment before the old one (epoch 3) wrote to it.
        let r = rep.client(&addr).call(1, &Request::Fence { id: 1, seg, epoch: 5 }).await.unwrap();
        assert!(matches!(r, Response::Fenced { .. }), "{r:?}");
        let n = {
            let a = n.addr;
            n.kill();
            start(a).await
        };
        let addr = n.addr.to_string();
        let r = tokio::time::timeout(Duration::from_secs(5), rep.client(&addr).call(2, &append(2, 3))).await.unwrap().unwrap();
        if journal {
            assert!(matches!(r, Response::Error { code: ErrorCode::Fenced, .. }), "the stale epoch must stay fenced: {r:?}");
            let r = rep.client(&addr).call(3, &append(3, 5)).await.unwrap();
            assert!(matches!(r, Response::Ok { .. }), "the new epoch appends: {r:?}");
        } else {
            // The documented limit of memory-only nodes: the fence is gone with the process.
            assert!(matches!(r, Response::Ok { .. }), "{r:?}");
        }
        n.shutdown().await;
    }
}

/// The buffer mode is a per-log choice: in one process, a log on LogStore nodes (QuorumBuffer)
/// and a log straight to shared objects (MemoryBuffer), whichever the process default is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_log_chooses_its_buffer_mode_in_one_process() {
    use wal_core::log::{Layout, WriterOptions};
    for default in [BufferMode::Memory, BufferMode::Quorum] {
        let cfg = WalConfig { buffer: default, ..quorum_config() };
        let m = mem_wal(cfg.clone());
        let _nodes = three_nodes(&m).await;
        for (name, mode) in [("fast", BufferMode::Quorum), ("bulk", BufferMode::Memory)] {
            m.wal.create_log(name).await.unwrap();
            let w = m.wal.open_writer_with(name, WriterOptions { buffer: Some(mode), ..Default::default() }).await.unwrap();
            let mut seqs = Vec::new();
            append_seqs(&w, 0..20, 200, &mut seqs).await;
            w.close().await.unwrap();
            let segs = m.wal.segments(name).await.unwrap();
            let with_data: Vec<_> = segs.iter().filter(|s| s.end_offset > s.base_offset).collect();
            assert!(!with_data.is_empty());
            match mode {
                BufferMode::Quorum => assert!(with_data.iter().all(|s| !s.replicas.is_empty() && s.layout == Layout::Chunks), "{segs:?}"),
                BufferMode::Memory => assert!(with_data.iter().all(|s| s.replicas.is_empty() && s.layout == Layout::Chunks), "{segs:?}"),
            }
            check_dense(&read_all(&reopen(&m, cfg.clone()), name, 0).await, &seqs);
        }
    }
}

/// LogStore nodes put the blocks of every log they hold into shared objects (one PUT for many
/// logs' blocks), each block's place a chunk record; segment flushing rewrites the sealed
/// segments like MemoryBuffer ones, and the collector drops a replica's late record of a block
/// whose segment was already rewritten. With shared objects off, segments keep objects of
/// their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_objects_across_logs_and_flushing_rewrites_them() {
    use wal_core::log::{Layout, SegmentState};
    for shared in [true, false] {
        let cfg = WalConfig { shared_objects: shared, shared_gc_grace_ms: 0, ..quorum_config() };
        let m = mem_wal(cfg.clone());
        // (a low PUT budget: in-memory storage answers at once, so eager objects would hold one block)
        let mut nodes = Vec::new();
        for id in ["ls-a", "ls-b", "ls-c"] {
            nodes.push(node_with(&m, id, 5_000, 4).await);
        }
        let logs: Vec<String> = (0..8).map(|i| format!("q{i}")).collect();
        for name in &logs {
            m.wal.create_log(name).await.unwrap();
        }
        // (the writers close once everything they acknowledged is stored)
        let acked = append_concurrently(&m.wal, &logs, 60).await;
        let objects = m.store.inner().list("shared/").await.unwrap().len();
        let records = m.meta.list("chunk/").await.unwrap().kvs.len();
        println!("shared {shared}: {objects} shared objects, {records} chunk records");
        if shared {
            assert!(records >= logs.len(), "every log's blocks have chunk records");
            assert!(objects * 2 <= records, "{objects} objects for {records} blocks: the nodes merge logs' blocks");
        } else {
            assert_eq!((objects, records), (0, 0));
        }
        let other = reopen(&m, cfg.clone());
        for name in &logs {
            check_dense(&read_all(&other, name, 0).await, &acked[name]);
        }
        // The owner flushes the sealed segments out of the nodes' shared objects.
        let mut again = Vec::new();
        for name in &logs {
            again.push(m.wal.open_writer(name).await.unwrap());
        }
        let pass = m.wal.flush_segments_once(true).await.unwrap();
        for name in &logs {
            let segs = m.wal.segments(name).await.unwrap();
            let want = if shared { Layout::Flushed } else { Layout::Blocks };
            assert!(segs.iter().filter(|s| s.state == SegmentState::Sealed).all(|s| s.layout == want), "{segs:?}");
        }
        if shared {
            assert!(pass.segments_flushed >= logs.len() && pass.shared_objects_deleted > 0, "{pass:?}");
            assert_eq!(m.meta.list("chunk/").await.unwrap().kvs.len(), 0, "flushing deletes the records");
            // A replica's late record for a rewritten segment is stray: the collector drops it.
            let seg = m.wal.segments(&logs[0]).await.unwrap()[0].clone();
            let id = m.wal.log_info(&logs[0]).await.unwrap().id;
            let late = format!(
                r#"{{"base_offset":{},"end_offset":{},"max_timestamp":0,"object":"shared/0000000000001-00000000000000aa.obj","pos":0,"len":1}}"#,
                seg.base_offset, seg.end_offset
            );
            let key = format!("chunk/{id:016x}/{:010}/{:020}", seg.id, seg.base_offset);
            m.meta.txn(wal_core::meta::Txn::new().then(wal_core::meta::Op::put(key, late.into_bytes()))).await.unwrap();
            m.wal.flush_segments_once(true).await.unwrap();
            assert_eq!(m.meta.list("chunk/").await.unwrap().kvs.len(), 0, "the stray record is collected");
        }
        let other = reopen(&m, cfg.clone());
        for name in &logs {
            check_dense(&read_all(&other, name, 0).await, &acked[name]);
        }
        drop(again);
        for n in nodes {
            n.shutdown().await;
        }
    }
}

/// The segment's designated uploader alone uploads (within its PUT budget) while the writer
/// keeps the other replicas told what is stored: steady appends for two seconds make about
/// budget x seconds objects, not three times as many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_designated_uploader_uploads_within_its_budget() {
    let m = mem_wal(quorum_config());
    let mut nodes = Vec::new();
    for id in ["ls-a", "ls-b", "ls-c"] {
        nodes.push(node_with(&m, id, 2_000, 10).await);
    }
    m.wal.create_log("u").await.unwrap();
    let w = m.wal.open_writer("u").await.unwrap();
    let started = Instant::now();
    let mut seqs = Vec::new();
    let mut seq = 0;
    while started.elapsed() < Duration::from_secs(2) {
        append_seqs(&w, seq..seq + 5, 200, &mut seqs).await;
        seq += 5;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let objects = m.store.inner().list("shared/").await.unwrap().len();
    let blocks = m.meta.list("chunk/").await.unwrap().kvs.len();
    println!("{objects} shared objects for {blocks} blocks in 2 s");
    // 10/s for 2 s, plus the saved burst and a full object or two: far below 3 nodes' 60.
    assert!(objects <= 30, "{objects} objects: more than one node uploads");
    w.close().await.unwrap();
    check_dense(&read_all(&reopen(&m, quorum_config()), "u", 0).await, &seqs);
    for n in nodes {
        n.shutdown().await;
    }
}
