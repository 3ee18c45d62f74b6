//! The object store and metadata store a configuration names, instrumented with metrics. The
//! gateway and the `logstore` subcommand both open their backends here.

use std::sync::Arc;

use wal_core::meta::MetaStore;
use wal_core::ObjectStore;

use crate::config::{GatewayConfig, MetadataKind, StorageKind};

/// The object store and metadata store the configuration names (shared with `logstore`).
pub async fn backends(cfg: &GatewayConfig) -> anyhow::Result<(Arc<dyn ObjectStore>, Arc<dyn MetaStore>)> {
    let store: Arc<dyn ObjectStore> = match cfg.storage {
        StorageKind::Local => {
            Arc::new(wal_core::storage::Instrumented(wal_core::storage::local::LocalStore::open(cfg.data_dir.join("objects"))?))
        }
        StorageKind::S3 => {
            let s3 = wal_core::storage::s3::S3Store::new(&cfg.s3)?;
            if let Err(e) = s3.ensure_bucket().await {
                tracing::warn!(error = %e, bucket = %cfg.s3.bucket, "could not check or create the bucket");
            }
            Arc::new(wal_core::storage::Instrumented(s3))
        }
    };
    let meta: Arc<dyn MetaStore> = match cfg.metadata {
        MetadataKind::Embedded => {
            Arc::new(wal_core::meta::Instrumented(wal_core::meta::embedded::EmbeddedMeta::open(cfg.data_dir.join("meta"), true)?))
        }
        #[cfg(feature = "etcd")]
        MetadataKind::Etcd => {
            Arc::new(wal_core::meta::Instrumented(wal_core::meta::etcd::EtcdMeta::connect(&cfg.etcd_endpoints, &cfg.etcd_root).await?))
        }
        #[cfg(not(feature = "etcd"))]
        MetadataKind::Etcd => anyhow::bail!("this binary was built without the `etcd` feature"),
    };
    Ok((store, meta))
}
