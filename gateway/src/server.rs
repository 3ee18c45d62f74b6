//! The Kafka listener: an accept loop bounded by a connection semaphore, and per connection a
//! reader that frames and decodes requests in order and a writer that sends responses in request
//! order. Requests of one connection are handled concurrently (each response is a spawned task,
//! at most `max_inflight_per_connection` at once); what must happen in order (offset assignment
//! of produce requests) happens in the reader before the request is queued.
//!
//! Framing: a 4-byte size, then the body. The size is checked against `max_request_bytes` (and
//! `max_admin_request_bytes` for everything but Produce) and against a process-wide budget of
//! request bytes in flight before anything is allocated. A malformed frame or request, an unknown
//! API key or an unsupported version (other than ApiVersions, which gets Kafka's fallback answer)
//! closes that connection only.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::broker::Broker;
use crate::handler::{self, Pending};
use crate::metrics as m;

/// Limits shared by every connection.
pub struct Limits {
    pub connections: Arc<Semaphore>,
    pub request_bytes: Arc<Semaphore>,
}

impl Limits {
    pub fn new(b: &Broker) -> Arc<Limits> {
        Arc::new(Limits {
            connections: Arc::new(Semaphore::new(b.cfg.max_connections)),
            request_bytes: Arc::new(Semaphore::new(b.cfg.max_inflight_request_bytes)),
        })
    }
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let limits = Limits::new(&broker);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = limits.connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                metrics::counter!(m::CONNECTIONS_TOTAL).increment(1);
                let (b, l, s) = (broker.clone(), limits.clone(), shutdown.clone());
                conns.spawn(async move {
                    metrics::gauge!(m::CONNECTIONS).increment(1.0);
                    if let Err(e) = connection(stream, peer, b, l, s).await {
                        tracing::debug!(%peer, error = %e, "connection closed");
                    }
                    metrics::gauge!(m::CONNECTIONS).decrement(1.0);
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        while conns.try_join_next().is_some() {}
    }
    // Let connections finish what they were answering, briefly.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async { while conns.join_next().await.is_some() {} }).await;
}

struct Queued {
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    started: Instant,
    response: tokio::task::JoinHandle<Option<ResponseKind>>,
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
}

fn protocol(kind: &'static str, msg: impl Into<String>) -> ConnError {
    metrics::counter!(m::PROTOCOL_ERRORS_TOTAL, "kind" => kind).increment(1);
    ConnError::Protocol(msg.into())
}

async fn connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    broker: Arc<Broker>,
    limits: Arc<Limits>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let client_host = format!("/{}", peer.ip());
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Queued>(broker.cfg.max_inflight_per_connection);
    let writer = tokio::spawn(write_loop(wr, rx));
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let result = loop {
        let frame = tokio::select! {
            f = read_frame(&mut rd, &broker, &limits) => f,
            _ = shutdown.changed() => break Ok(()),
        };
        let (body, permit) = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        match decode(body) {
            Ok(Decoded::Request { header, request, api_key }) => {
                let version = header.request_api_version;
                let pending: Pending = handler::dispatch(&broker, &header, &client_host, api_key, request).await;
                let q = Queued {
                    correlation_id: header.correlation_id,
                    api_key,
                    version,
                    started: Instant::now(),
                    response: tokio::spawn(pending),
                    _permit: permit,
                };
                if tx.send(q).await.is_err() {
                    break Ok(()); // the writer stopped (peer gone)
                }
            }
            Ok(Decoded::ApiVersionsFallback { correlation_id }) => {
                let q = Queued {
                    correlation_id,
                    api_key: ApiKey::ApiVersions,
                    version: 0,
                    started: Instant::now(),
                    response: tokio::spawn(async { Some(ResponseKind::ApiVersions(handler::api_versions::fallback())) }),
                    _permit: permit,
                };
                if tx.send(q).await.is_err() {
                    break Ok(());
                }
            }
            Err(e) => break Err(e),
        }
    };
    drop(tx);
    let _ = writer.await;
    result
}

/// Frame bodies are read (and charged to the in-flight budget) in steps of at least this size,
/// doubling with what has arrived.
const FRAME_CHUNK: usize = 64 * 1024;

/// Reads one frame: `Ok(None)` on a clean end of stream between frames.
async fn read_frame(
    rd: &mut BufReader<OwnedReadHalf>,
    broker: &Broker,
    limits: &Arc<Limits>,
) -> Result<Option<(Bytes, OwnedSemaphorePermit)>, ConnError> {
    let mut head = [0u8; 6];
    let n = rd.read(&mut head[..1]).await?;
    if n == 0 {
        return Ok(None);
    }
    rd.read_exact(&mut head[1..4]).await.map_err(|_| protocol("truncated", "end of stream inside a frame header"))?;
    let size = i32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
    // Refuse what no API may send before waiting for more bytes: a peer that sends only a huge
    // size prefix is closed at once instead of holding the connection open.
    let largest = broker.cfg.max_request_bytes.max(broker.cfg.max_admin_request_bytes);
    if size < 8 || size as usize > largest {
        return Err(protocol("size", format!("invalid frame size {size} (limit {largest})")));
    }
    rd.read_exact(&mut head[4..]).await.map_err(|_| protocol("truncated", "end of stream inside a frame header"))?;
    let api_key = i16::from_be_bytes([head[4], head[5]]);
    let size = size as usize;
    let cap = if api_key == ApiKey::Produce as i16 { broker.cfg.max_request_bytes } else { broker.cfg.max_admin_request_bytes };
    if size > cap {
        return Err(protocol("size", format!("frame of {size} bytes for API {api_key} exceeds {cap}")));
    }
    // Memory and budget follow the bytes that actually arrive: a peer that announces a large frame
    // and stalls holds only what it sent, so it cannot starve other clients of the budget.
    let mut body = BytesMut::with_capacity(size.min(FRAME_CHUNK));
    body.put_slice(&head[4..]);
    let mut permit: Option<OwnedSemaphorePermit> = None;
    while body.len() < size {
        let step = (size - body.len()).min(FRAME_CHUNK.max(body.len()));
        let more = limits.request_bytes.clone().acquire_many_owned(step as u32).await.map_err(|_| protocol("shutdown", "shutting down"))?;
        match permit.as_mut() {
            Some(p) => p.merge(more),
            None => permit = Some(more),
        }
        let start = body.len();
        body.resize(start + step, 0);
        rd.read_exact(&mut body[start..]).await.map_err(|_| protocol("truncated", "end of stream inside a frame"))?;
    }
    let permit = match permit {
        Some(p) => p,
        None => limits.request_bytes.clone().acquire_many_owned(0).await.map_err(|_| protocol("shutdown", "shutting down"))?,
    };
    metrics::counter!(m::BYTES_RECEIVED_TOTAL).increment(size as u64 + 4);
    Ok(Some((body.freeze(), permit)))
}

// A request is decoded once and handled at once: the size difference costs one move, not memory.
#[allow(clippy::large_enum_variant)]
enum Decoded {
    Request {
        header: RequestHeader,
        request: RequestKind,
        api_key: ApiKey,
    },
    /// ApiVersions at a version we do not support: answer v0 with UNSUPPORTED_VERSION.
    ApiVersionsFallback {
        correlation_id: i32,
    },
}

fn decode(mut body: Bytes) -> Result<Decoded, ConnError> {
    let key = i16::from_be_bytes([body[0], body[1]]);
    let version = i16::from_be_bytes([body[2], body[3]]);
    let api_key = ApiKey::try_from(key).map_err(|_| protocol("api_key", format!("unknown API key {key}")))?;
    if !handler::supports(api_key, version) {
        if api_key == ApiKey::ApiVersions {
            let correlation_id = i32::from_be_bytes(body[4..8].try_into().expect("4 bytes"));
            return Ok(Decoded::ApiVersionsFallback { correlation_id });
        }
        return Err(protocol("version", format!("{api_key:?} v{version} is not supported")));
    }
    let header_version = api_key.request_header_version(version);
    // The decoder is third-party code: a panic in it closes this connection, nothing more.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let header = RequestHeader::decode(&mut body, header_version)?;
        let request = RequestKind::decode(api_key, &mut body, version)?;
        Ok::<_, anyhow::Error>((header, request))
    }));
    match decoded {
        Ok(Ok((header, request))) => {
            if body.has_remaining() {
                tracing::debug!(?api_key, version, extra = body.remaining(), "request has trailing bytes");
            }
            Ok(Decoded::Request { header, request, api_key })
        }
        Ok(Err(e)) => Err(protocol("decode", format!("malformed {api_key:?} v{version}: {e}"))),
        Err(_) => Err(protocol("decode", format!("decoder panicked on {api_key:?} v{version}"))),
    }
}

async fn write_loop(wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Queued>) {
    let mut w = BufWriter::with_capacity(256 << 10, wr);
    let mut buf = BytesMut::new();
    while let Some(q) = rx.recv().await {
        let api = crate::handler::api_name(q.api_key);
        let resp = match q.response.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(api, error = %e, "request handler failed");
                metrics::counter!(m::REQUESTS_TOTAL, "api" => api, "result" => "error").increment(1);
                return; // close: the client would otherwise wait forever for this response
            }
        };
        metrics::histogram!(m::REQUEST_SECONDS, "api" => api).record(q.started.elapsed().as_secs_f64());
        let Some(resp) = resp else {
            metrics::counter!(m::REQUESTS_TOTAL, "api" => api, "result" => "ok").increment(1);
            continue; // acks=0 produce: no response
        };
        buf.clear();
        buf.put_i32(0); // size, patched below
        let header_version = if q.api_key == ApiKey::ApiVersions { 0 } else { q.api_key.response_header_version(q.version) };
        let header = ResponseHeader::default().with_correlation_id(q.correlation_id);
        if let Err(e) = header.encode(&mut buf, header_version).and_then(|_| resp.encode(&mut buf, q.version)) {
            tracing::error!(api, version = q.version, error = %e, "cannot encode response; closing connection");
            metrics::counter!(m::REQUESTS_TOTAL, "api" => api, "result" => "error").increment(1);
            return;
        }
        metrics::counter!(m::REQUESTS_TOTAL, "api" => api, "result" => "ok").increment(1);
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        metrics::counter!(m::BYTES_SENT_TOTAL).increment(buf.len() as u64);
        if w.write_all(&buf).await.is_err() {
            return;
        }
        if rx.is_empty() && w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}
