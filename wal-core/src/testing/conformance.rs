//! Conformance suites: one for every `ObjectStore` backend, one for every `MetaStore` backend.
//! Each takes a fresh key prefix so that suites can share a server. They panic on a violation.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::error::{MetaError, StorageError};
use crate::meta::{Compare, EventKind, MetaStore, Op, Txn};
use crate::storage::ObjectStore;

/// Checks the `ObjectStore` contract.
pub async fn object_store_conformance(store: Arc<dyn ObjectStore>, prefix: &str) {
    let k = |s: &str| format!("{prefix}/{s}");
    // put-if-absent creates once and never overwrites
    store.put_if_absent(&k("a/1"), Bytes::from_static(b"first")).await.expect("first put");
    match store.put_if_absent(&k("a/1"), Bytes::from_static(b"second")).await {
        Err(StorageError::AlreadyExists(_)) => {}
        other => panic!("second put_if_absent must fail with AlreadyExists, got {other:?}"),
    }
    assert_eq!(store.get(&k("a/1")).await.expect("get"), Bytes::from_static(b"first"));
    // an empty object and a larger one
    store.put_if_absent(&k("a/empty"), Bytes::new()).await.expect("empty put");
    assert_eq!(store.get(&k("a/empty")).await.expect("get empty").len(), 0);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    store.put_if_absent(&k("b/big"), Bytes::from(big.clone())).await.expect("big put");
    assert_eq!(store.get(&k("b/big")).await.expect("get big"), Bytes::from(big.clone()));
    // ranges, including clipping at the end
    assert_eq!(&store.get_range(&k("b/big"), 10..20).await.expect("range")[..], &big[10..20]);
    assert_eq!(&store.get_range(&k("b/big"), 299_990..400_000).await.expect("clipped")[..], &big[299_990..]);
    assert_eq!(store.get_range(&k("b/big"), 500_000..500_010).await.expect("past end").len(), 0);
    // missing keys
    assert!(matches!(store.get(&k("missing")).await, Err(StorageError::NotFound(_))));
    assert!(matches!(store.get_range(&k("missing"), 0..4).await, Err(StorageError::NotFound(_))));
    // list: sorted, prefix-exact, with sizes
    let l = store.list(&k("a/")).await.expect("list");
    let keys: Vec<_> = l.iter().map(|o| o.key.clone()).collect();
    assert_eq!(keys, vec![k("a/1"), k("a/empty")]);
    assert_eq!(l[0].size, 5);
    let all = store.list(&format!("{prefix}/")).await.expect("list all");
    assert_eq!(all.len(), 3);
    assert!(store.list(&k("zzz/")).await.expect("empty list").is_empty());
    let partial = store.list(&k("a/e")).await.expect("partial-name prefix");
    assert_eq!(partial.len(), 1);
    // delete is idempotent
    store.delete(&k("a/1")).await.expect("delete");
    store.delete(&k("a/1")).await.expect("delete again");
    assert!(matches!(store.get(&k("a/1")).await, Err(StorageError::NotFound(_))));
    // after a delete the key can be created again
    store.put_if_absent(&k("a/1"), Bytes::from_static(b"again")).await.expect("recreate");
    // concurrent put_if_absent on one key: exactly one wins
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let s = store.clone();
        let key = k("race");
        tasks.push(tokio::spawn(async move { s.put_if_absent(&key, Bytes::from(vec![i; 64])).await }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(()) => wins += 1,
            Err(StorageError::AlreadyExists(_)) => {}
            Err(e) if e.is_retriable() => {} // a store may report a racing conditional write as a conflict
            Err(e) => panic!("unexpected error in race: {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one concurrent put_if_absent must win");
    let winner = store.get(&k("race")).await.expect("race winner");
    assert!(winner.iter().all(|b| *b == winner[0]), "the stored object is one writer's whole object");
    // invalid keys are refused, never escape the root
    assert!(store.put_if_absent("../escape", Bytes::new()).await.is_err());
    assert!(store.put_if_absent("/abs", Bytes::new()).await.is_err());
    for o in store.list(&format!("{prefix}/")).await.expect("list for cleanup") {
        store.delete(&o.key).await.expect("cleanup");
    }
}

/// Checks the `MetaStore` contract.
pub async fn meta_store_conformance(meta: Arc<dyn MetaStore>, prefix: &str) {
    let k = |s: &str| format!("{prefix}/{s}");
    assert!(meta.get(&k("x")).await.expect("get").is_none());
    // create-if-absent via ModRevision 0
    let r = meta.txn(Txn::new().when(Compare::ModRevision(k("x"), 0)).then(Op::put(k("x"), "1"))).await.expect("txn");
    assert!(r.succeeded);
    let kv = meta.get(&k("x")).await.expect("get").expect("present");
    assert_eq!(&kv.value[..], b"1");
    assert_eq!(kv.mod_revision, r.revision);
    assert_eq!(kv.create_revision, r.revision);
    let again = meta.txn(Txn::new().when(Compare::ModRevision(k("x"), 0)).then(Op::put(k("x"), "2"))).await.expect("txn");
    assert!(!again.succeeded, "create-if-absent must fail on an existing key");
    assert_eq!(&meta.get(&k("x")).await.unwrap().unwrap().value[..], b"1", "a failed txn writes nothing");
    // CAS on mod revision, atomic multi-key writes
    let ok = meta
        .txn(Txn::new().when(Compare::ModRevision(k("x"), kv.mod_revision)).then(Op::put(k("x"), "2")).then(Op::put(k("y"), "3")))
        .await
        .expect("cas");
    assert!(ok.succeeded);
    assert!(ok.revision > r.revision, "revisions increase");
    let stale = meta.txn(Txn::new().when(Compare::ModRevision(k("x"), kv.mod_revision)).then(Op::put(k("z"), "never"))).await.unwrap();
    assert!(!stale.succeeded, "a stale revision must fail the comparison");
    assert!(meta.get(&k("z")).await.unwrap().is_none());
    let x2 = meta.get(&k("x")).await.unwrap().unwrap();
    assert_eq!(x2.create_revision, kv.create_revision, "an update keeps the create revision");
    // value comparison
    assert!(
        meta.txn(Txn::new().when(Compare::Value(k("y"), Bytes::from_static(b"3"))).then(Op::put(k("y"), "4"))).await.unwrap().succeeded
    );
    assert!(
        !meta.txn(Txn::new().when(Compare::Value(k("y"), Bytes::from_static(b"3"))).then(Op::put(k("y"), "5"))).await.unwrap().succeeded
    );
    assert!(
        !meta.txn(Txn::new().when(Compare::Value(k("nope"), Bytes::from_static(b""))).then(Op::put(k("y"), "6"))).await.unwrap().succeeded
    );
    // list is sorted and prefix-exact
    meta.txn(Txn::new().then(Op::put(k("d/b"), "b")).then(Op::put(k("d/a"), "a")).then(Op::put(k("dd"), "x"))).await.unwrap();
    let l = meta.list(&k("d/")).await.unwrap();
    assert_eq!(l.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(), vec![k("d/a"), k("d/b")]);
    assert!(l.revision >= ok.revision);
    // watch from a listing revision sees every later change in order
    let mut w = meta.watch(&k("d/"), l.revision).await.expect("watch");
    meta.txn(Txn::new().then(Op::put(k("d/c"), "c"))).await.unwrap();
    meta.txn(Txn::new().then(Op::put(k("other"), "o"))).await.unwrap();
    meta.txn(Txn::new().then(Op::Delete(k("d/a")))).await.unwrap();
    meta.txn(Txn::new().then(Op::DeletePrefix(k("d/")))).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.recv())
            .await
            .expect("watch event in time")
            .expect("watch open")
            .expect("watch ok");
        seen.push((ev.kind, ev.kv.key.clone()));
    }
    assert_eq!(seen[0], (EventKind::Put, k("d/c")));
    assert_eq!(seen[1], (EventKind::Delete, k("d/a")));
    let mut rest: Vec<_> = seen[2..].to_vec();
    rest.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(rest, vec![(EventKind::Delete, k("d/b")), (EventKind::Delete, k("d/c"))]);
    assert!(meta.list(&k("d/")).await.unwrap().kvs.is_empty());
    assert!(meta.get(&k("dd")).await.unwrap().is_some(), "a prefix delete stops at the prefix");
    // a listing of more keys than one page of a backend (etcd's is 1,000), and more bytes than
    // one etcd response may carry (4 MiB by the client's default), is complete and sorted
    let value = Bytes::from(vec![b'v'; 2048]);
    let many: Vec<Op> = (0..2500).map(|i| Op::put(k(&format!("m/{i:05}")), value.clone())).collect();
    crate::meta::write_in_chunks(&*meta, many, crate::meta::batcher::DEFAULT_MAX_TXN_OPS).await.expect("many keys");
    let all = meta.list(&k("m/")).await.unwrap();
    assert_eq!(all.kvs.len(), 2500, "every key of a long listing");
    assert!(all.kvs.windows(2).all(|w| w[0].key < w[1].key), "a long listing is sorted");
    assert_eq!(all.kvs[1234].key, k("m/01234"));
    meta.txn(Txn::new().then(Op::DeletePrefix(k("m/")))).await.unwrap();
    // leases: keys vanish on revoke and on expiry; keep-alive keeps them
    let lease = meta.grant_lease(2).await.expect("grant");
    meta.txn(Txn::new().then(Op::Put { key: k("l1"), value: Bytes::from_static(b"v"), lease })).await.unwrap();
    assert_eq!(meta.get(&k("l1")).await.unwrap().unwrap().lease, lease);
    meta.revoke_lease(lease).await.expect("revoke");
    assert!(meta.get(&k("l1")).await.unwrap().is_none(), "revoking a lease deletes its keys");
    let lease = meta.grant_lease(1).await.expect("grant");
    meta.txn(Txn::new().then(Op::Put { key: k("l2"), value: Bytes::from_static(b"v"), lease })).await.unwrap();
    let lease_kept = meta.grant_lease(2).await.expect("grant");
    meta.txn(Txn::new().then(Op::Put { key: k("l3"), value: Bytes::from_static(b"v"), lease: lease_kept })).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while meta.get(&k("l2")).await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "an expired lease's key must disappear");
        meta.keep_alive(lease_kept).await.expect("keep alive");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(meta.get(&k("l3")).await.unwrap().is_some(), "a kept-alive lease's key stays");
    assert!(matches!(meta.keep_alive(lease).await, Err(MetaError::LeaseNotFound(_))));
    meta.revoke_lease(lease_kept).await.unwrap();
    meta.txn(Txn::new().then(Op::DeletePrefix(format!("{prefix}/")))).await.unwrap();
}
