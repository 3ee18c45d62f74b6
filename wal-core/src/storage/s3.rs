//! The S3 backend (aws-sdk-s3), for AWS S3 and any S3-compatible store.
//!
//! `put_if_absent` is a PutObject with `If-None-Match: *`: the store answers 412 when the key
//! exists, which becomes [`StorageError::AlreadyExists`]. A 409 (a concurrent conditional write
//! in progress), 5xx, throttling and network failures are transient; other 4xx are permanent.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{validate_key, ObjectMeta, ObjectStore};
use crate::error::StorageError;

/// How to reach a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Endpoint URL for S3-compatible stores (e.g. `http://127.0.0.1:9000`); AWS when empty.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Key prefix under which every object of this deployment lives (no leading or trailing `/`).
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible servers.
    pub path_style: bool,
    /// Credentials; when absent, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` are read.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Per-attempt timeout of one request.
    pub request_timeout_ms: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: String::new(),
            prefix: String::new(),
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            request_timeout_ms: 10_000,
        }
    }
}

impl S3Config {
    pub fn validate(&self) -> Result<(), String> {
        if self.bucket.is_empty() {
            return Err("s3.bucket must be set".into());
        }
        if self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return Err("s3.prefix must not start or end with '/'".into());
        }
        if self.request_timeout_ms == 0 {
            return Err("s3.request_timeout_ms must be positive".into());
        }
        Ok(())
    }
}

pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
}

fn classify<E>(op: &'static str, e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> StorageError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let status = http_status(&e);
    let construction = matches!(e, SdkError::ConstructionFailure(_));
    let message = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
    match status {
        Some(s) if s == 429 || s == 409 || s >= 500 => StorageError::Transient { op, message },
        Some(_) => StorageError::Permanent { op, message },
        None if construction => StorageError::Permanent { op, message },
        None => StorageError::Transient { op, message },
    }
}

impl S3Store {
    pub fn new(cfg: &S3Config) -> Result<Self, StorageError> {
        cfg.validate().map_err(|message| StorageError::Permanent { op: "config", message })?;
        let ak = cfg.access_key_id.clone().or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok()).unwrap_or_default();
        let sk = cfg.secret_access_key.clone().or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok()).unwrap_or_default();
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .credentials_provider(Credentials::new(ak, sk, None, None, "wal-core"))
            .force_path_style(cfg.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_millis(cfg.request_timeout_ms))
                    .build(),
            );
        if let Some(ep) = &cfg.endpoint {
            b = b.endpoint_url(ep);
        }
        Ok(S3Store { client: Client::from_conf(b.build()), bucket: cfg.bucket.clone(), prefix: cfg.prefix.clone() })
    }

    fn full(&self, key: &str) -> Result<String, StorageError> {
        validate_key(key)?;
        Ok(if self.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.prefix) })
    }

    /// Creates the bucket when it does not exist (for tests and first runs against a fresh store).
    pub async fn ensure_bucket(&self) -> Result<(), StorageError> {
        if self.client.head_bucket().bucket(&self.bucket).send().await.is_ok() {
            return Ok(());
        }
        match self.client.create_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = classify("create_bucket", e);
                // Lost a creation race: the bucket exists now.
                match self.client.head_bucket().bucket(&self.bucket).send().await {
                    Ok(_) => Ok(()),
                    Err(_) => Err(err),
                }
            }
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let full = self.full(key)?;
        let r = self.client.put_object().bucket(&self.bucket).key(&full).if_none_match("*").body(ByteStream::from(data)).send().await;
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                if http_status(&e) == Some(412) {
                    return Err(StorageError::AlreadyExists(key.to_string()));
                }
                Err(classify("put", e))
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let full = self.full(key)?;
        match self.client.get_object().bucket(&self.bucket).key(&full).send().await {
            Ok(out) => {
                out.body.collect().await.map(|d| d.into_bytes()).map_err(|e| StorageError::Transient { op: "get", message: e.to_string() })
            }
            Err(e) if http_status(&e) == Some(404) => Err(StorageError::NotFound(key.to_string())),
            Err(e) => Err(classify("get", e)),
        }
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        let full = self.full(key)?;
        if range.end <= range.start {
            // Still report a missing object as missing.
            self.client.head_object().bucket(&self.bucket).key(&full).send().await.map_err(|e| {
                if http_status(&e) == Some(404) {
                    StorageError::NotFound(key.to_string())
                } else {
                    classify("head", e)
                }
            })?;
            return Ok(Bytes::new());
        }
        let r =
            self.client.get_object().bucket(&self.bucket).key(&full).range(format!("bytes={}-{}", range.start, range.end - 1)).send().await;
        match r {
            Ok(out) => out
                .body
                .collect()
                .await
                .map(|d| d.into_bytes())
                .map_err(|e| StorageError::Transient { op: "get_range", message: e.to_string() }),
            Err(e) if http_status(&e) == Some(404) => Err(StorageError::NotFound(key.to_string())),
            Err(e) if http_status(&e) == Some(416) => Ok(Bytes::new()),
            Err(e) => Err(classify("get_range", e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let full_prefix = if self.prefix.is_empty() { prefix.to_string() } else { format!("{}/{prefix}", self.prefix) };
        let strip = if self.prefix.is_empty() { 0 } else { self.prefix.len() + 1 };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self.client.list_objects_v2().bucket(&self.bucket).prefix(&full_prefix);
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let page = req.send().await.map_err(|e| classify("list", e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    if k.len() >= strip {
                        out.push(ObjectMeta { key: k[strip..].to_string(), size: o.size().unwrap_or(0).max(0) as u64 });
                    }
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let full = self.full(key)?;
        match self.client.delete_object().bucket(&self.bucket).key(&full).send().await {
            Ok(_) => Ok(()),
            Err(e) if http_status(&e) == Some(404) => Ok(()),
            Err(e) => Err(classify("delete", e)),
        }
    }

    fn backend(&self) -> &'static str {
        "s3"
    }
}

fn http_status<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}
