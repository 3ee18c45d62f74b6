//! The Kafka listener: an accept loop bounded by a connection semaphore, and per connection a
//! reader that frames and decodes requests in order and a writer that sends responses in request
//! order. Each response is a spawned task (at most `max_inflight_per_connection` at once);
//! what must happen in order happens in order: offset assignment of produce requests in the
//! reader before the request is queued, and the work of every order-dependent request
//! ([`handler::in_request_order`]: commits, group and admin requests, metadata and offset reads)
//! one after the other through the connection's ordered lane. Fetch long polls and produce
//! acknowledgements run beside them.
//!
//! Framing: a 4-byte size, then the body. The size is checked against `max_request_bytes` (and
//! `max_admin_request_bytes` for everything but Produce) before anything is allocated. A malformed
//! frame or request, an unknown API key or an unsupported version (other than ApiVersions, which
//! gets Kafka's fallback answer) closes that connection only.
//!
//! Memory admission: before its body is read, a frame reserves its whole charge (its size times
//! what decoding may expand it to, see [`charge_of`]) at once from a process-wide budget
//! (`max_inflight_request_bytes`) and holds it until its response is written. Nothing ever holds
//! part of a charge while waiting for more, so the budget cannot deadlock; and everything that
//! holds a charge ends within a bound: a frame's bytes may not stop arriving for
//! `request_read_timeout_ms`, a response write must progress within
//! `response_write_timeout_ms`, handlers end by their own timeouts. Frames of at most [`SMALL_FRAME`] bytes (metadata, group and offset requests, small
//! produces) draw from a separate lane of 1/8 of the budget, so large frames queued for the main
//! budget never keep a client from its heartbeat. An idle connection (nothing in flight, nothing
//! sent for `connections_max_idle_ms`) is closed, and one client address may hold at most
//! `max_connections_per_ip` connections (more are closed on accept).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::messages::{SaslAuthenticateResponse, SaslHandshakeResponse};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, WriteHalf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::broker::Broker;
use crate::handler::{self, Pending};
use crate::metrics as m;
use crate::security::quota::{Quotas, CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE};
use crate::security::sasl::{Authenticator, SaslSettings, Step};
use crate::security::tls::Tls;
use crate::security::{ConnInfo, Listener, ANONYMOUS};
use wal_core::util::lock;

/// The largest SASL token a v0 client may send as a raw frame.
const MAX_RAW_TOKEN: usize = 64 * 1024;

/// Frames up to this size draw from the small-frame lane of the budget.
pub const SMALL_FRAME: usize = 64 * 1024;
/// The small-frame lane holds at least this much.
const SMALL_LANE_MIN: usize = 16 * SMALL_FRAME;
/// How many times its wire size a decoded request may take, at most (see [`charge_of`]).
const ADMIN_EXPANSION: usize = 16;
const PRODUCE_EXPANSION: usize = 2;
/// A response buffer grown past this by a large response is dropped, not kept for the next one.
const KEEP_RESPONSE_BUFFER: usize = 1 << 20;

/// Limits shared by every connection.
pub struct Limits {
    pub connections: Arc<Semaphore>,
    /// The main request budget, and its capacity.
    pub request_bytes: Arc<Semaphore>,
    request_capacity: usize,
    /// The small-frame lane, and its capacity.
    pub small_request_bytes: Arc<Semaphore>,
    small_capacity: usize,
    /// Bytes charged now, over both (the `gateway_inflight_request_bytes` gauge).
    charged: Arc<AtomicUsize>,
    /// Open connections by client address.
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in its address's count, given back when dropped.
struct PerIp {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerIp {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<PerIp> {
        let mut map = lock(counts);
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerIp { counts: counts.clone(), ip })
    }
}

impl Drop for PerIp {
    fn drop(&mut self) {
        let mut map = lock(&self.counts);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Limits {
    pub fn new(b: &Broker) -> Arc<Limits> {
        let budget = b.cfg.max_inflight_request_bytes;
        let small = (budget / 8).max(SMALL_LANE_MIN);
        Arc::new(Limits {
            connections: Arc::new(Semaphore::new(b.cfg.max_connections)),
            request_bytes: Arc::new(Semaphore::new(budget)),
            request_capacity: budget,
            small_request_bytes: Arc::new(Semaphore::new(small)),
            small_capacity: small,
            charged: Arc::new(AtomicUsize::new(0)),
            per_ip: Arc::default(),
        })
    }

    /// Reserves a frame's whole charge at once (first come, first served within its lane).
    async fn admit(&self, size: usize, api_key: i16) -> Result<Charge, ConnError> {
        let (lane, capacity) = if size <= SMALL_FRAME {
            (&self.small_request_bytes, self.small_capacity)
        } else {
            (&self.request_bytes, self.request_capacity)
        };
        let bytes = charge_of(size, api_key).min(capacity);
        let permit = lane.clone().acquire_many_owned(bytes as u32).await.map_err(|_| protocol("shutdown", "shutting down"))?;
        let now = self.charged.fetch_add(bytes, Ordering::AcqRel) + bytes;
        metrics::gauge!(m::INFLIGHT_REQUEST_BYTES).set(now as f64);
        Ok(Charge { _permit: permit, bytes, charged: self.charged.clone() })
    }
}

/// What a frame of `size` bytes is charged: its wire size times how far decoding may expand it
/// (a Produce request is mostly record bytes kept as they arrived; other requests decode into
/// structures several times their wire size, e.g. ~16x for an array of empty group ids).
pub fn charge_of(size: usize, api_key: i16) -> usize {
    let factor = if api_key == ApiKey::Produce as i16 { PRODUCE_EXPANSION } else { ADMIN_EXPANSION };
    size.saturating_mul(factor).min(u32::MAX as usize)
}

/// A frame's share of the request budget, returned when dropped (its response written).
struct Charge {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
    charged: Arc<AtomicUsize>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        let now = self.charged.fetch_sub(self.bytes, Ordering::AcqRel) - self.bytes;
        metrics::gauge!(m::INFLIGHT_REQUEST_BYTES).set(now as f64);
    }
}

/// A bound listener: its socket, what it advertises and speaks, and its TLS acceptor if any.
pub struct Bound {
    pub socket: TcpListener,
    pub listener: Arc<Listener>,
    pub tls: Option<Arc<Tls>>,
}

/// Serves one plaintext listener (the main one) until `shutdown` turns true.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    let spec = broker.cfg.listener_specs().swap_remove(0).0;
    serve_all(vec![Bound { socket: listener, listener: Arc::new(spec), tls: None }], broker, shutdown).await
}

/// Serves every listener, with one set of limits, until `shutdown` turns true.
pub async fn serve_all(bound: Vec<Bound>, broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    let limits = Limits::new(&broker);
    let mut loops = tokio::task::JoinSet::new();
    for b in bound {
        loops.spawn(accept_loop(b, broker.clone(), limits.clone(), shutdown.clone()));
    }
    while loops.join_next().await.is_some() {}
}

async fn accept_loop(bound: Bound, broker: Arc<Broker>, limits: Arc<Limits>, mut shutdown: watch::Receiver<bool>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = limits.connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            a = bound.socket.accept() => a,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(per_ip) = PerIp::take(&limits.per_ip, peer.ip(), broker.cfg.max_connections_per_ip) else {
                    metrics::counter!(m::CONNECTIONS_REFUSED_TOTAL, "reason" => "per_ip").increment(1);
                    tracing::debug!(%peer, "too many connections from this address; closing");
                    continue; // dropping the stream closes it
                };
                let _ = stream.set_nodelay(true);
                metrics::counter!(m::CONNECTIONS_TOTAL).increment(1);
                let (b, l, s) = (broker.clone(), limits.clone(), shutdown.clone());
                let (listener, tls) = (bound.listener.clone(), bound.tls.clone());
                conns.spawn(async move {
                    metrics::gauge!(m::CONNECTIONS).increment(1.0);
                    let result = match tls {
                        None => connection(stream, peer, ANONYMOUS.to_string(), listener, b, l, s).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok((stream, principal)) => {
                                if principal != ANONYMOUS {
                                    metrics::counter!(m::AUTHENTICATIONS_TOTAL, "listener" => listener.name.clone(), "mechanism" => "SSL", "result" => "ok")
                                        .increment(1);
                                }
                                connection(stream, peer, principal, listener, b, l, s).await
                            }
                            Err(e) => {
                                metrics::counter!(m::TLS_HANDSHAKE_FAILURES_TOTAL, "listener" => listener.name.clone()).increment(1);
                                Err(ConnError::Protocol(e))
                            }
                        },
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection closed");
                    }
                    metrics::gauge!(m::CONNECTIONS).decrement(1.0);
                    drop(per_ip);
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
    /// A raw SASL token (after a v0 SaslHandshake): written as a size and the bytes, no header.
    raw: Option<Bytes>,
    _charge: Charge,
    /// Decremented when the response is written (or dropped).
    _in_flight: InFlight,
}

/// Counts a connection's requests between being read and their response being written.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(n: &Arc<AtomicUsize>) -> InFlight {
        n.fetch_add(1, Ordering::AcqRel);
        InFlight(n.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

fn timed_out(kind: &'static str) -> ConnError {
    metrics::counter!(m::CONNECTION_TIMEOUTS_TOTAL, "kind" => kind).increment(1);
    ConnError::Timeout(kind)
}

fn protocol(kind: &'static str, msg: impl Into<String>) -> ConnError {
    metrics::counter!(m::PROTOCOL_ERRORS_TOTAL, "kind" => kind).increment(1);
    ConnError::Protocol(msg.into())
}

/// What a SASL exchange step answers, and whether the connection ends after it.
struct SaslReply {
    response: ResponseKind,
    close: bool,
}

async fn sasl_handshake(sasl: &mut Option<Authenticator>, version: i16, req: kafka_protocol::messages::SaslHandshakeRequest) -> SaslReply {
    let Some(a) = sasl.as_mut() else {
        // Not a SASL listener: Kafka answers ILLEGAL_SASL_STATE.
        let r = SaslHandshakeResponse::default().with_error_code(ResponseError::IllegalSaslState.code());
        return SaslReply { response: ResponseKind::SaslHandshake(r), close: true };
    };
    let mechanisms = a.mechanisms().iter().map(|m| handler::s(m.clone())).collect();
    let r = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
    match a.handshake(&req.mechanism, version) {
        Ok(()) => SaslReply { response: ResponseKind::SaslHandshake(r), close: false },
        Err(e) => SaslReply { response: ResponseKind::SaslHandshake(r.with_error_code(e.code())), close: true },
    }
}

async fn sasl_authenticate(
    sasl: &mut Option<Authenticator>,
    conn: &ConnInfo,
    req: kafka_protocol::messages::SaslAuthenticateRequest,
) -> SaslReply {
    let fail = |e: ResponseError, msg: String| SaslReply {
        response: ResponseKind::SaslAuthenticate(
            SaslAuthenticateResponse::default().with_error_code(e.code()).with_error_message(Some(handler::s(msg))),
        ),
        close: true,
    };
    let Some(a) = sasl.as_mut().filter(|a| a.in_exchange()) else {
        return fail(ResponseError::IllegalSaslState, "SaslAuthenticate without a SaslHandshake".into());
    };
    match a.authenticate(&req.auth_bytes).await {
        Step::Continue(token) => SaslReply {
            response: ResponseKind::SaslAuthenticate(SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token))),
            close: false,
        },
        Step::Done { token, principal, lifetime_ms } => {
            auth_metric(conn, "ok");
            conn.set_principal(principal);
            let r = SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token)).with_session_lifetime_ms(lifetime_ms);
            SaslReply { response: ResponseKind::SaslAuthenticate(r), close: false }
        }
        Step::Failed(msg) => {
            auth_metric(conn, "failed");
            fail(ResponseError::SaslAuthenticationFailed, msg)
        }
    }
}

fn auth_metric(conn: &ConnInfo, result: &'static str) {
    metrics::counter!(m::AUTHENTICATIONS_TOTAL, "listener" => conn.listener.name.clone(), "mechanism" => "SASL", "result" => result)
        .increment(1);
}

async fn connection<S>(
    stream: S,
    peer: std::net::SocketAddr,
    principal: String,
    listener: Arc<Listener>,
    broker: Arc<Broker>,
    limits: Arc<Limits>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let conn = ConnInfo::new(format!("/{}", peer.ip()), listener.clone(), principal);
    let mut sasl = listener.protocol.sasl().then(|| {
        Authenticator::new(SaslSettings {
            creds: broker.credentials.clone(),
            mechanisms: Arc::new(broker.cfg.sasl.mechanisms.clone()),
            reauth: Duration::from_millis(broker.cfg.sasl.connections_max_reauth_ms),
            oauth: broker.oauth.clone(),
        })
    });
    let failed_delay = Duration::from_millis(broker.cfg.sasl.failed_authentication_delay_ms);
    let (rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel::<Queued>(broker.cfg.max_inflight_per_connection);
    let writer = tokio::spawn(write_loop(wr, rx, Duration::from_millis(broker.cfg.response_write_timeout_ms)));
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut lane: Option<oneshot::Receiver<()>> = None;
    // Until when a quota keeps this connection from reading its next request.
    let mute: Arc<Mutex<Option<Instant>>> = Arc::default();
    let queue = |correlation_id, api_key, version, response, raw, charge, in_flight: &Arc<AtomicUsize>| Queued {
        correlation_id,
        api_key,
        version,
        started: Instant::now(),
        response,
        raw,
        _charge: charge,
        _in_flight: InFlight::new(in_flight),
    };
    let result = loop {
        if let Some(a) = sasl.as_mut().filter(|a| a.expects_raw_token()) {
            // After a v0 SaslHandshake the tokens come as raw frames (KIP-43's framing).
            let frame = tokio::select! {
                f = read_raw_frame(&mut rd, &broker, &limits) => f,
                _ = shutdown.changed() => break Ok(()),
            };
            let (token, charge) = match frame {
                Ok(f) => f,
                Err(e) => break Err(e),
            };
            let reply = match a.authenticate(&token).await {
                Step::Continue(t) => t,
                Step::Done { token, principal, .. } => {
                    auth_metric(&conn, "ok");
                    conn.set_principal(principal);
                    token
                }
                Step::Failed(msg) => {
                    // v0 has no error field: the connection closes, after the delay.
                    auth_metric(&conn, "failed");
                    tokio::time::sleep(failed_delay).await;
                    break Err(protocol("sasl", format!("authentication failed: {msg}")));
                }
            };
            let q = queue(0, ApiKey::SaslAuthenticate, 0, tokio::spawn(async { None }), Some(Bytes::from(reply)), charge, &in_flight);
            if tx.send(q).await.is_err() {
                break Ok(());
            }
            continue;
        }
        let muted = lock(&mute).take().filter(|u| *u > Instant::now());
        if let Some(until) = muted {
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = shutdown.changed() => break Ok(()),
            }
        }
        let frame = tokio::select! {
            f = read_frame(&mut rd, &broker, &limits, &in_flight) => f,
            _ = shutdown.changed() => break Ok(()),
        };
        let (body, permit) = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let frame_bytes = body.len();
        match decode(body) {
            Ok(Decoded::Request { header, request, api_key }) => {
                let version = header.request_api_version;
                let reply = match request {
                    RequestKind::SaslHandshake(r) => Ok(sasl_handshake(&mut sasl, version, r).await),
                    RequestKind::SaslAuthenticate(r) => Ok(sasl_authenticate(&mut sasl, &conn, r).await),
                    other => Err(other),
                };
                let request = match reply {
                    Ok(SaslReply { response, close }) => {
                        let delay = if close && api_key == ApiKey::SaslAuthenticate { failed_delay } else { Duration::ZERO };
                        let fut = tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            Some(response)
                        });
                        if tx.send(queue(header.correlation_id, api_key, version, fut, None, permit, &in_flight)).await.is_err() || close {
                            break if close { Err(protocol("sasl", "SASL exchange refused")) } else { Ok(()) };
                        }
                        continue;
                    }
                    Err(other) => other,
                };
                if let Some(a) = &sasl {
                    if !a.authenticated() && api_key != ApiKey::ApiVersions {
                        break Err(protocol("sasl", format!("unexpected {api_key:?} request before SASL authentication")));
                    }
                    if a.expired(Instant::now()) && api_key != ApiKey::ApiVersions {
                        break Err(protocol("sasl", "the SASL session expired without re-authentication"));
                    }
                }
                let mut pending: Pending = handler::dispatch(&broker, &header, &conn, api_key, request).await;
                if matches!(api_key, ApiKey::Produce | ApiKey::Fetch) && !broker.quotas.entries().is_empty() {
                    let client = header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
                    pending = throttled(pending, broker.quotas.clone(), &conn, client, api_key, frame_bytes, mute.clone());
                }
                if handler::in_request_order(api_key) {
                    pending = in_lane(&mut lane, pending);
                }
                if tx.send(queue(header.correlation_id, api_key, version, tokio::spawn(pending), None, permit, &in_flight)).await.is_err() {
                    break Ok(()); // the writer stopped (peer gone)
                }
            }
            Ok(Decoded::ApiVersionsFallback { correlation_id }) => {
                let fut = tokio::spawn(async { Some(ResponseKind::ApiVersions(handler::api_versions::fallback())) });
                if tx.send(queue(correlation_id, ApiKey::ApiVersions, 0, fut, None, permit, &in_flight)).await.is_err() {
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

/// Applies the client's byte-rate quota to a Produce (its request bytes) or a Fetch (the record
/// bytes of its answer): the answer carries the throttle time and the connection is muted for
/// it (Kafka's KIP-219 behaviour).
fn throttled(
    pending: Pending,
    quotas: Arc<Quotas>,
    conn: &ConnInfo,
    client: String,
    api: ApiKey,
    request_bytes: usize,
    mute: Arc<Mutex<Option<Instant>>>,
) -> Pending {
    let principal = conn.principal();
    let user = principal.strip_prefix("User:").unwrap_or(&principal).to_string();
    let produce = (api == ApiKey::Produce).then(|| quotas.record(PRODUCER_BYTE_RATE, &user, &client, request_bytes));
    if let Some(t) = produce.filter(|t| !t.is_zero()) {
        // Pipelined produce requests are already queued behind this one: mute now, not when
        // its acknowledgement is ready.
        *lock(&mute) = Some(Instant::now() + t);
    }
    Box::pin(async move {
        let mut resp = pending.await;
        let throttle = match (&resp, produce) {
            (_, Some(t)) => t,
            (Some(ResponseKind::Fetch(f)), None) => {
                let bytes = f.responses.iter().flat_map(|t| &t.partitions).map(|p| p.records.as_ref().map_or(0, |r| r.len())).sum();
                quotas.record(CONSUMER_BYTE_RATE, &user, &client, bytes)
            }
            _ => Duration::ZERO,
        };
        if !throttle.is_zero() {
            let ms = throttle.as_millis().min(i32::MAX as u128) as i32;
            match &mut resp {
                Some(ResponseKind::Produce(p)) => p.throttle_time_ms = ms,
                Some(ResponseKind::Fetch(f)) => f.throttle_time_ms = ms,
                _ => {}
            }
            if api == ApiKey::Fetch {
                *lock(&mute) = Some(Instant::now() + throttle);
            }
            let kind = if api == ApiKey::Produce { "produce" } else { "fetch" };
            metrics::counter!(m::THROTTLE_MS_TOTAL, "kind" => kind).increment(throttle.as_millis() as u64);
        }
        resp
    })
}

/// Reads one raw SASL token frame (a size, then the token).
async fn read_raw_frame<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    broker: &Broker,
    limits: &Arc<Limits>,
) -> Result<(Vec<u8>, Charge), ConnError> {
    let read_timeout = Duration::from_millis(broker.cfg.request_read_timeout_ms);
    let mut size = [0u8; 4];
    match tokio::time::timeout(Duration::from_millis(broker.cfg.connections_max_idle_ms), rd.read_exact(&mut size)).await {
        Err(_) => return Err(timed_out("idle")),
        Ok(Err(_)) => return Err(protocol("truncated", "end of stream before a SASL token")),
        Ok(Ok(_)) => {}
    }
    let size = i32::from_be_bytes(size);
    if size < 0 || size as usize > MAX_RAW_TOKEN {
        return Err(protocol("size", format!("invalid SASL token size {size}")));
    }
    let charge = limits.admit(size as usize, ApiKey::SaslAuthenticate as i16).await?;
    let mut token = vec![0u8; size as usize];
    match tokio::time::timeout(read_timeout, rd.read_exact(&mut token)).await {
        Err(_) => Err(timed_out("read")),
        Ok(Err(_)) => Err(protocol("truncated", "end of stream inside a SASL token")),
        Ok(Ok(_)) => Ok((token, charge)),
    }
}

/// Puts `pending` at the end of the connection's ordered lane: it starts once the lane's
/// previous request has its response (or was dropped with its connection).
fn in_lane(lane: &mut Option<oneshot::Receiver<()>>, pending: Pending) -> Pending {
    let (done, next) = oneshot::channel::<()>();
    let before = lane.replace(next);
    Box::pin(async move {
        if let Some(before) = before {
            let _ = before.await;
        }
        let response = pending.await;
        drop(done);
        response
    })
}

/// Reads one frame: `Ok(None)` on a clean end of stream between frames.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    broker: &Broker,
    limits: &Arc<Limits>,
    in_flight: &AtomicUsize,
) -> Result<Option<(Bytes, Charge)>, ConnError> {
    let mut head = [0u8; 6];
    let idle = Duration::from_millis(broker.cfg.connections_max_idle_ms);
    let n = loop {
        match tokio::time::timeout(idle, rd.read(&mut head[..1])).await {
            Ok(n) => break n?,
            // Waiting for a response (a long poll, a join) is not idleness.
            Err(_) if in_flight.load(Ordering::Acquire) > 0 => continue,
            Err(_) => return Err(timed_out("idle")),
        }
    };
    if n == 0 {
        return Ok(None);
    }
    let read_timeout = Duration::from_millis(broker.cfg.request_read_timeout_ms);
    let header = async {
        rd.read_exact(&mut head[1..4]).await?;
        let size = i32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
        // Refuse what no API may send before waiting for more bytes: a peer that sends only a
        // huge size prefix is closed at once instead of holding the connection open.
        let largest = broker.cfg.max_request_bytes.max(broker.cfg.max_admin_request_bytes);
        if size < 8 || size as usize > largest {
            return Ok(Err(protocol("size", format!("invalid frame size {size} (limit {largest})"))));
        }
        rd.read_exact(&mut head[4..]).await?;
        Ok::<_, std::io::Error>(Ok(size as usize))
    };
    let size = match tokio::time::timeout(read_timeout, header).await {
        Err(_) => return Err(timed_out("read")),
        Ok(Err(_)) => return Err(protocol("truncated", "end of stream inside a frame header")),
        Ok(Ok(r)) => r?,
    };
    let api_key = i16::from_be_bytes([head[4], head[5]]);
    let cap = if api_key == ApiKey::Produce as i16 { broker.cfg.max_request_bytes } else { broker.cfg.max_admin_request_bytes };
    if size > cap {
        return Err(protocol("size", format!("frame of {size} bytes for API {api_key} exceeds {cap}")));
    }
    // Waiting for budget is not this peer's fault and holds nothing; then the body's bytes may
    // not stop arriving for `request_read_timeout_ms`.
    let charge = limits.admit(size, api_key).await?;
    let mut body = BytesMut::zeroed(size);
    body[..2].copy_from_slice(&head[4..]);
    // Progress, not speed: a slow link may take long over a large frame, a stalled peer not.
    let mut filled = 2;
    while filled < size {
        match tokio::time::timeout(read_timeout, rd.read(&mut body[filled..])).await {
            Err(_) => return Err(timed_out("read")),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(protocol("truncated", "end of stream inside a frame")),
            Ok(Ok(n)) => filled += n,
        }
    }
    metrics::counter!(m::BYTES_RECEIVED_TOTAL).increment(size as u64 + 4);
    Ok(Some((body.freeze(), charge)))
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

async fn write_loop<S: AsyncWrite>(wr: WriteHalf<S>, mut rx: mpsc::Receiver<Queued>, write_timeout: Duration) {
    let mut w = BufWriter::with_capacity(256 << 10, wr);
    let mut buf = BytesMut::new();
    while let Some(q) = rx.recv().await {
        let api = crate::handler::api_name(q.api_key);
        if let Some(raw) = &q.raw {
            buf.clear();
            buf.put_i32(raw.len() as i32);
            buf.extend_from_slice(raw);
            if !write_progressing(&mut w, &buf, write_timeout).await || w.flush().await.is_err() {
                return;
            }
            continue;
        }
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
        let Ok(len) = i32::try_from(buf.len() - 4) else {
            tracing::error!(api, bytes = buf.len(), "response larger than a frame can carry; closing connection");
            metrics::counter!(m::REQUESTS_TOTAL, "api" => api, "result" => "error").increment(1);
            return;
        };
        metrics::counter!(m::REQUESTS_TOTAL, "api" => api, "result" => "ok").increment(1);
        buf[..4].copy_from_slice(&len.to_be_bytes());
        metrics::counter!(m::BYTES_SENT_TOTAL).increment(buf.len() as u64);
        if !write_progressing(&mut w, &buf, write_timeout).await {
            return;
        }
        if buf.capacity() > KEEP_RESPONSE_BUFFER {
            buf = BytesMut::new();
        }
        if rx.is_empty() {
            match tokio::time::timeout(write_timeout, w.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    timed_out("write");
                    return;
                }
            }
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

/// Writes `data`, giving up (false) on an error or when no byte went out for `timeout`.
async fn write_progressing<W: AsyncWrite + Unpin>(w: &mut BufWriter<W>, mut data: &[u8], timeout: Duration) -> bool {
    while !data.is_empty() {
        match tokio::time::timeout(timeout, w.write(data)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return false,
            Ok(Ok(n)) => data = &data[n..],
            Err(_) => {
                timed_out("write");
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One request of every supported API and version, encoded from its default value.
    fn samples() -> Vec<(ApiKey, i16, Vec<u8>)> {
        let mut out = Vec::new();
        for (api, _, _) in handler::SUPPORTED {
            let Some((lo, hi)) = handler::versions(*api) else { continue };
            for v in lo..=hi {
                let mut buf = BytesMut::new();
                RequestHeader::default()
                    .with_request_api_key(*api as i16)
                    .with_request_api_version(v)
                    .with_correlation_id(3)
                    .encode(&mut buf, api.request_header_version(v))
                    .unwrap();
                let Ok(req) = default_request(*api) else { continue };
                if req.encode(&mut buf, v).is_ok() {
                    out.push((*api, v, buf.to_vec()));
                }
            }
        }
        out
    }

    fn default_request(api: ApiKey) -> Result<RequestKind, ()> {
        use kafka_protocol::messages::*;
        Ok(match api {
            ApiKey::Produce => RequestKind::Produce(ProduceRequest::default()),
            ApiKey::Fetch => RequestKind::Fetch(FetchRequest::default()),
            ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default()),
            ApiKey::Metadata => RequestKind::Metadata(MetadataRequest::default()),
            ApiKey::OffsetCommit => RequestKind::OffsetCommit(OffsetCommitRequest::default()),
            ApiKey::OffsetFetch => RequestKind::OffsetFetch(OffsetFetchRequest::default()),
            ApiKey::FindCoordinator => RequestKind::FindCoordinator(FindCoordinatorRequest::default()),
            ApiKey::JoinGroup => RequestKind::JoinGroup(JoinGroupRequest::default()),
            ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default()),
            ApiKey::LeaveGroup => RequestKind::LeaveGroup(LeaveGroupRequest::default()),
            ApiKey::SyncGroup => RequestKind::SyncGroup(SyncGroupRequest::default()),
            ApiKey::DescribeGroups => RequestKind::DescribeGroups(DescribeGroupsRequest::default()),
            ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
            ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
            ApiKey::CreateTopics => RequestKind::CreateTopics(CreateTopicsRequest::default()),
            ApiKey::DeleteTopics => RequestKind::DeleteTopics(DeleteTopicsRequest::default()),
            ApiKey::DeleteRecords => RequestKind::DeleteRecords(DeleteRecordsRequest::default()),
            ApiKey::InitProducerId => RequestKind::InitProducerId(InitProducerIdRequest::default()),
            ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(DescribeConfigsRequest::default()),
            ApiKey::AlterConfigs => RequestKind::AlterConfigs(AlterConfigsRequest::default()),
            ApiKey::CreatePartitions => RequestKind::CreatePartitions(CreatePartitionsRequest::default()),
            ApiKey::DeleteGroups => RequestKind::DeleteGroups(DeleteGroupsRequest::default()),
            ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default()),
            ApiKey::OffsetDelete => RequestKind::OffsetDelete(OffsetDeleteRequest::default()),
            ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
            ApiKey::ConsumerGroupHeartbeat => RequestKind::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest::default()),
            ApiKey::ConsumerGroupDescribe => RequestKind::ConsumerGroupDescribe(ConsumerGroupDescribeRequest::default()),
            ApiKey::AddPartitionsToTxn => RequestKind::AddPartitionsToTxn(AddPartitionsToTxnRequest::default()),
            ApiKey::AddOffsetsToTxn => RequestKind::AddOffsetsToTxn(AddOffsetsToTxnRequest::default()),
            ApiKey::EndTxn => RequestKind::EndTxn(EndTxnRequest::default()),
            ApiKey::TxnOffsetCommit => RequestKind::TxnOffsetCommit(TxnOffsetCommitRequest::default()),
            ApiKey::WriteTxnMarkers => RequestKind::WriteTxnMarkers(WriteTxnMarkersRequest::default()),
            ApiKey::DescribeTransactions => RequestKind::DescribeTransactions(DescribeTransactionsRequest::default()),
            ApiKey::ListTransactions => RequestKind::ListTransactions(ListTransactionsRequest::default()),
            ApiKey::SaslHandshake => RequestKind::SaslHandshake(SaslHandshakeRequest::default()),
            ApiKey::SaslAuthenticate => RequestKind::SaslAuthenticate(SaslAuthenticateRequest::default()),
            ApiKey::DescribeUserScramCredentials => {
                RequestKind::DescribeUserScramCredentials(DescribeUserScramCredentialsRequest::default())
            }
            ApiKey::AlterUserScramCredentials => RequestKind::AlterUserScramCredentials(AlterUserScramCredentialsRequest::default()),
            ApiKey::DescribeAcls => RequestKind::DescribeAcls(DescribeAclsRequest::default()),
            ApiKey::CreateAcls => RequestKind::CreateAcls(CreateAclsRequest::default()),
            ApiKey::DeleteAcls => RequestKind::DeleteAcls(DeleteAclsRequest::default()),
            ApiKey::DescribeClientQuotas => RequestKind::DescribeClientQuotas(DescribeClientQuotasRequest::default()),
            ApiKey::AlterClientQuotas => RequestKind::AlterClientQuotas(AlterClientQuotasRequest::default()),
            _ => return Err(()),
        })
    }

    /// The decoder without the connection's `catch_unwind`: a panic fails the test.
    fn decode_raw(api: ApiKey, v: i16, frame: &[u8]) {
        let mut b = Bytes::copy_from_slice(frame);
        if RequestHeader::decode(&mut b, api.request_header_version(v)).is_ok() {
            let _ = RequestKind::decode(api, &mut b, v);
        }
    }

    #[test]
    fn every_supported_api_has_a_sample() {
        let s = samples();
        for (api, _, _) in handler::SUPPORTED {
            assert!(s.iter().any(|(a, _, _)| a == api), "{api:?} has no fuzz sample");
        }
    }

    proptest! {
        /// Request-decoding fuzz target: valid requests of every supported API and version with
        /// bytes overwritten, cut or extended, and lengths replaced by huge ones, decode to a
        /// request or an error, never a panic or an unbounded allocation (the test process
        /// would abort). `PROPTEST_CASES` sets the number of cases.
        #[test]
        fn request_decoding_never_panics(
            pick in any::<prop::sample::Index>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 0..6),
            cut in any::<prop::sample::Index>(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let samples = samples();
            let (api, v, frame) = &samples[pick.index(samples.len())];
            let mut f = frame.clone();
            for (at, kind, byte) in edits {
                let i = at.index(f.len().max(1)).min(f.len().saturating_sub(1));
                if f.is_empty() {
                    break;
                }
                match kind {
                    0 => f[i] = byte,
                    1 => f.splice(i..i, [0x7f, 0xff, 0xff, 0xff]).for_each(drop),
                    2 => f.splice(i..i, [0xff, 0xff, 0xff, 0xff, 0x0f]).for_each(drop),
                    _ => f.insert(i, byte),
                }
            }
            if !f.is_empty() && cut.index(4) == 0 {
                f.truncate(cut.index(f.len()));
            }
            f.extend_from_slice(&tail);
            decode_raw(*api, *v, &f);
            // the connection's own path as well (its catch_unwind is a last resort, not a pass)
            if f.len() >= 8 {
                let _ = decode(Bytes::from(f));
            }
        }
    }
}
