//! TLS listeners (rustls): the server certificate chain and key from PEM files, re-read when
//! either file changes on disk (checked at most every `reload_check_ms`, at a handshake, so a
//! rotated certificate is served to new connections without a restart; a file that does not
//! load keeps the previous certificate and is retried); optional (`requested`) or required
//! client certificates checked against `ca_file` (Kafka's `ssl.client.auth`), the principal taken
//! from the certificate subject by `principal_mapping_rules` (see `principal.rs`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::principal::{subject_dn, MappingRules};
use super::ANONYMOUS;
use crate::metrics as m;
use wal_core::util::lock;

/// Kafka's `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    None,
    Requested,
    Required,
}

/// The `[tls]` table: what every SSL and SASL_SSL listener serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (the server's certificate first).
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM certificates of the authorities client certificates must chain to.
    pub ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// Kafka's `ssl.principal.mapping.rules`.
    pub principal_mapping_rules: String,
    /// How often, at most, a handshake looks whether the certificate files changed.
    pub reload_check_ms: u64,
    /// Longest a TLS handshake may take.
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            ca_file: None,
            client_auth: ClientAuth::None,
            principal_mapping_rules: "DEFAULT".into(),
            reload_check_ms: 5_000,
            handshake_timeout_ms: 10_000,
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn load_key(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{}: no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| anyhow::anyhow!("certificate and key: {e}"))
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &Path) -> Stamp {
    let md = std::fs::metadata(p).ok()?;
    Some((md.modified().ok()?, md.len()))
}

struct Current {
    checked: Instant,
    stamps: (Stamp, Stamp),
    key: Arc<CertifiedKey>,
}

/// The server certificate, re-read when its files change.
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    every: Duration,
    provider: Arc<CryptoProvider>,
    current: Mutex<Current>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert").field("cert", &self.cert).field("key", &self.key).finish()
    }
}

impl ReloadingCert {
    fn open(cert: &Path, key: &Path, every: Duration, provider: Arc<CryptoProvider>) -> anyhow::Result<ReloadingCert> {
        let stamps = (stamp(cert), stamp(key));
        let loaded = load_key(cert, key, &provider)?;
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            every,
            provider,
            current: Mutex::new(Current { checked: Instant::now(), stamps, key: Arc::new(loaded) }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut c = lock(&self.current);
        if c.checked.elapsed() >= self.every {
            c.checked = Instant::now();
            let stamps = (stamp(&self.cert), stamp(&self.key));
            if stamps != c.stamps {
                match load_key(&self.cert, &self.key, &self.provider) {
                    Ok(k) => {
                        c.key = Arc::new(k);
                        c.stamps = stamps;
                        metrics::counter!(m::TLS_RELOADS_TOTAL, "result" => "ok").increment(1);
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => {
                        // A half-written rotation: keep serving the old pair, look again later.
                        metrics::counter!(m::TLS_RELOADS_TOTAL, "result" => "error").increment(1);
                        tracing::warn!(error = %e, "TLS certificate changed on disk but does not load; keeping the previous one");
                    }
                }
            }
        }
        c.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// What a TLS listener accepts connections with.
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    rules: MappingRules,
    timeout: Duration,
}

impl Tls {
    pub fn new(cfg: &TlsConfig) -> anyhow::Result<Tls> {
        let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) else {
            anyhow::bail!("a TLS listener needs tls.cert_file and tls.key_file");
        };
        let provider = provider();
        let verifier = match cfg.client_auth {
            ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
            auth => {
                let ca = cfg.ca_file.as_ref().ok_or_else(|| anyhow::anyhow!("tls.client_auth needs tls.ca_file"))?;
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca).map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))? {
                    roots.add(c.map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?)?;
                }
                let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let b = if auth == ClientAuth::Requested { b.allow_unauthenticated() } else { b };
                b.build()?
            }
        };
        let resolver = ReloadingCert::open(cert, key, Duration::from_millis(cfg.reload_check_ms), provider.clone())?;
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(resolver));
        let rules = MappingRules::parse(&cfg.principal_mapping_rules).map_err(|e| anyhow::anyhow!("tls.principal_mapping_rules: {e}"))?;
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            rules,
            timeout: Duration::from_millis(cfg.handshake_timeout_ms),
        })
    }

    /// The handshake, then the principal: the mapped certificate subject, or ANONYMOUS
    /// without a client certificate.
    pub async fn accept(&self, stream: TcpStream) -> Result<(TlsStream<TcpStream>, String), String> {
        let tls = match tokio::time::timeout(self.timeout, self.acceptor.accept(stream)).await {
            Err(_) => return Err("TLS handshake timed out".into()),
            Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
            Ok(Ok(s)) => s,
        };
        let principal = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            None => ANONYMOUS.to_string(),
            Some(cert) => {
                let dn = subject_dn(cert).ok_or("unreadable client certificate subject")?;
                let name = self.rules.apply(&dn).ok_or_else(|| format!("no principal mapping rule matches {dn}"))?;
                format!("User:{name}")
            }
        };
        Ok((tls, principal))
    }
}
