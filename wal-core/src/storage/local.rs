//! A local-directory object store for single-node use.
//!
//! Keys map to files below the root. `put_if_absent` writes a temporary file, fsyncs it, and
//! publishes it with `link(2)`, which fails atomically when the target exists; the parent
//! directory is then fsynced. Readers therefore see a whole object or none, and a crash leaves at
//! most a stray temporary file (removed at open).

use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use super::{validate_key, ObjectMeta, ObjectStore};
use crate::error::StorageError;

const TMP_DIR: &str = ".tmp";

pub struct LocalStore {
    root: PathBuf,
    /// Whether writes are fsynced (on by default; benchmarks of other layers may turn it off).
    fsync: bool,
    next_tmp: AtomicU64,
}

fn io_err(op: &'static str, e: std::io::Error) -> StorageError {
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::InvalidInput | ErrorKind::InvalidData => {
            StorageError::Permanent { op, message: e.to_string() }
        }
        _ => StorageError::Transient { op, message: e.to_string() },
    }
}

impl LocalStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        let tmp = root.join(TMP_DIR);
        std::fs::create_dir_all(&tmp).map_err(|e| io_err("open", e))?;
        // Stray temporary files are the remains of puts cut short by a crash.
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let nonce = std::process::id() as u64;
        Ok(LocalStore { root, fsync: true, next_tmp: AtomicU64::new(nonce << 32) })
    }

    pub fn with_fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        validate_key(key)?;
        if key.starts_with(TMP_DIR) {
            return Err(StorageError::Permanent { op: "validate", message: format!("reserved key {key:?}") });
        }
        Ok(self.root.join(key))
    }

    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, StorageError> + Send + 'static) -> Result<T, StorageError> {
        tokio::task::spawn_blocking(f).await.map_err(|e| StorageError::Transient { op: "spawn", message: e.to_string() })?
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let key = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        let ft = e.file_type()?;
        if ft.is_dir() {
            if rel.is_empty() && name == TMP_DIR {
                continue;
            }
            walk(&e.path(), &key, out)?;
        } else if ft.is_file() {
            out.push(ObjectMeta { key, size: e.metadata()?.len() });
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let tmp = self.root.join(TMP_DIR).join(format!("{:x}", self.next_tmp.fetch_add(1, Ordering::Relaxed)));
        let fsync = self.fsync;
        let key = key.to_string();
        Self::blocking(move || {
            let parent = path.parent().expect("keys have a parent below the root").to_path_buf();
            std::fs::create_dir_all(&parent).map_err(|e| io_err("put", e))?;
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                f.write_all(&data)?;
                if fsync {
                    f.sync_data()?;
                }
                Ok(())
            };
            if let Err(e) = write() {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_err("put", e));
            }
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    if fsync {
                        sync_dir(&parent).map_err(|e| io_err("put", e))?;
                    }
                    Ok(())
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(StorageError::AlreadyExists(key)),
                Err(e) => Err(io_err("put", e)),
            }
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = self.path(key)?;
        let key = key.to_string();
        Self::blocking(move || match std::fs::read(&path) {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StorageError::NotFound(key)),
            Err(e) => Err(io_err("get", e)),
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        let path = self.path(key)?;
        let key = key.to_string();
        Self::blocking(move || {
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(StorageError::NotFound(key)),
                Err(e) => return Err(io_err("get", e)),
            };
            let len = f.metadata().map_err(|e| io_err("get", e))?.len();
            let r = super::clip(len, range);
            let mut buf = vec![0u8; r.end - r.start];
            f.seek(SeekFrom::Start(r.start as u64)).map_err(|e| io_err("get", e))?;
            f.read_exact(&mut buf).map_err(|e| io_err("get", e))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        // Walk only the deepest directory that the prefix names completely.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        if !dir_part.is_empty() {
            validate_key(dir_part)?;
        }
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let dir_part = dir_part.to_string();
        Self::blocking(move || {
            let mut out = Vec::new();
            walk(&root.join(&dir_part), &dir_part, &mut out).map_err(|e| io_err("list", e))?;
            out.retain(|o| o.key.starts_with(&prefix));
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        Self::blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("delete", e)),
        })
        .await
    }

    fn backend(&self) -> &'static str {
        "local"
    }
}
