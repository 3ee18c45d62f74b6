//! An in-memory object store for unit tests, simulations and benchmarks; it honours the full
//! trait contract, including put-if-absent.

use crate::util::lock;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{clip, validate_key, ObjectMeta, ObjectStore};
use crate::error::StorageError;

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        lock(&self.objects)
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        validate_key(key)?;
        let mut m = self.map();
        if m.contains_key(key) {
            return Err(StorageError::AlreadyExists(key.to_string()));
        }
        m.insert(key.to_string(), data);
        Ok(())
    }
    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        self.map().get(key).cloned().ok_or_else(|| StorageError::NotFound(key.to_string()))
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        let b = self.get(key).await?;
        Ok(b.slice(clip(b.len() as u64, range)))
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        Ok(self
            .map()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectMeta { key: k.clone(), size: v.len() as u64 })
            .collect())
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.map().remove(key);
        Ok(())
    }
    fn backend(&self) -> &'static str {
        "memory"
    }
}
