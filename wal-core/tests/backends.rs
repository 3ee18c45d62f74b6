//! Backend conformance: every ObjectStore and MetaStore backend runs the same suite, including
//! real servers (moto_server for S3, etcd) started on loopback by the harness.

use std::sync::Arc;

use wal_core::meta::embedded::EmbeddedMeta;
use wal_core::storage::local::LocalStore;
use wal_core::storage::memory::MemoryStore;
use wal_core::storage::s3::S3Store;
use wal_core::testing::{meta_store_conformance, object_store_conformance, servers};
use wal_core::{MetaStore, ObjectStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    object_store_conformance(Arc::new(MemoryStore::new()), "conf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    object_store_conformance(Arc::new(LocalStore::open(dir.path()).unwrap()), "conf").await;
    // a crashed put leaves only a temporary file, removed at open
    std::fs::write(dir.path().join(".tmp").join("stray"), b"x").unwrap();
    let s = LocalStore::open(dir.path()).unwrap();
    assert!(std::fs::read_dir(dir.path().join(".tmp")).unwrap().next().is_none());
    assert!(s.list("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conforms_against_moto() {
    let Some(moto) = servers::start_moto() else { return };
    let s3 = S3Store::new(&servers::s3_config(&moto, "conformance", "some/prefix")).unwrap();
    s3.ensure_bucket().await.unwrap();
    object_store_conformance(Arc::new(s3), "conf").await;
    let bare = S3Store::new(&servers::s3_config(&moto, "conformance", "")).unwrap();
    object_store_conformance(Arc::new(bare), "conf2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_are_typed() {
    let Some(moto) = servers::start_moto() else { return };
    let s3 = S3Store::new(&servers::s3_config(&moto, "no-such-bucket", "")).unwrap();
    let e = s3.get("x").await.unwrap_err();
    assert!(!matches!(e, wal_core::StorageError::AlreadyExists(_)), "{e}");
    let mut cfg = servers::s3_config(&moto, "b", "");
    cfg.endpoint = Some("http://127.0.0.1:1".into());
    cfg.request_timeout_ms = 500;
    let down = S3Store::new(&cfg).unwrap();
    assert!(down.get("x").await.unwrap_err().is_retriable(), "an unreachable store is a transient error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_meta_conforms_in_memory() {
    meta_store_conformance(Arc::new(EmbeddedMeta::in_memory()), "conf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_meta_conforms_on_disk_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = Arc::new(EmbeddedMeta::open(dir.path(), true).unwrap());
        meta_store_conformance(m.clone(), "conf").await;
        wal_core::meta::put(&*m, "keep/a", "1").await.unwrap();
        wal_core::meta::put(&*m, "keep/b", "2").await.unwrap();
        let lease = m.grant_lease(60).await.unwrap();
        m.txn(wal_core::meta::Txn::new().then(wal_core::meta::Op::Put { key: "keep/leased".into(), value: "x".into(), lease }))
            .await
            .unwrap();
    }
    let m = EmbeddedMeta::open(dir.path(), true).unwrap();
    let l = m.list("keep/").await.unwrap();
    let keys: Vec<_> = l.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, vec!["keep/a", "keep/b"], "durable keys survive; leased keys end with the process");
    let a = m.get("keep/a").await.unwrap().unwrap();
    let r = wal_core::meta::put(&m, "keep/c", "3").await.unwrap();
    assert!(r > a.mod_revision, "revisions keep increasing across restarts");
    // a torn tail (crash mid-append) is cut, earlier records survive
    drop(m);
    let path = dir.path().join("meta.journal");
    let mut data = std::fs::read(&path).unwrap();
    data.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&path, &data).unwrap();
    let m = EmbeddedMeta::open(dir.path(), true).unwrap();
    assert_eq!(m.list("keep/").await.unwrap().kvs.len(), 3);
    wal_core::meta::put(&m, "keep/d", "4").await.unwrap();
    drop(m);
    let m = EmbeddedMeta::open(dir.path(), true).unwrap();
    assert_eq!(m.list("keep/").await.unwrap().kvs.len(), 4);
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_meta_conforms() {
    let Some(etcd) = servers::start_etcd() else { return };
    let m = wal_core::meta::etcd::EtcdMeta::connect(&[etcd.endpoint()], "/wal-test").await.unwrap();
    meta_store_conformance(Arc::new(m), "conf").await;
}
