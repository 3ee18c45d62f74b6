//! The LogStore wire protocol: length-prefixed binary frames over TCP.
//!
//! A frame is a 4-byte big-endian length, then a 1-byte kind, then the kind's fields (big-endian
//! integers; byte strings as a 4-byte length and the bytes). Requests carry a request id that the
//! node echoes; `Stored` notifications (id 0) are pushed by the node when its uploaded prefix of
//! a segment grows. Every length read from the wire is checked against the frame before use, so
//! a hostile or corrupt frame yields [`ProtoError`], never a panic or a large allocation.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Frames above this are refused before their body is read (a block is at most a few MiB plus
/// one entry of at most `max_entry_bytes`).
pub const MAX_FRAME_BYTES: usize = 160 << 20;

/// A malformed frame.
#[derive(Debug, thiserror::Error)]
#[error("malformed LogStore frame: {0}")]
pub struct ProtoError(pub String);

/// Identifies one segment of one log on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegKey {
    pub log_id: u64,
    pub segment: u64,
}

/// One encoded block of a segment for a replica to hold. Blocks of a segment arrive in order:
/// the first at `seg_base`, each next one at the previous one's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    pub id: u64,
    pub seg: SegKey,
    /// The writer's epoch; the segment's identity is (`seg`, `epoch`, `seg_base`).
    pub epoch: u64,
    pub seg_base: u64,
    /// The block's offsets `[base, end)`.
    pub base: u64,
    pub end: u64,
    /// This node should upload the block at once (it is the segment's designated uploader).
    pub upload_now: bool,
    /// The segment's blocks go into the node's shared objects (each block's place a chunk key
    /// in metadata), not into objects of their own under the segment's prefix.
    pub shared: bool,
    /// Every block of the segment below this is in object storage (learned by the writer).
    pub stored_end: u64,
    pub block: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Store one encoded block of a segment.
    Append(Append),
    /// Refuse appends to the segment from epochs below `epoch`; answers what the node holds.
    Fence { id: u64, seg: SegKey, epoch: u64 },
    /// The stored bytes of the block starting at `base`, if the node holds it.
    Read { id: u64, seg: SegKey, base: u64 },
    /// Every block of the segment below `stored_end` is in object storage (no answer).
    Progress { seg: SegKey, stored_end: u64 },
    /// The stored bytes of the consecutive blocks the node holds from `base` on, at most
    /// `max_bytes` of them (but at least the first): a writer taking over reads a replica's
    /// tail in a few requests instead of one per block. (Nodes before this kind close the
    /// connection on it; the writer then reads block by block.)
    ReadRun { id: u64, seg: SegKey, base: u64, max_bytes: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The segment was fenced by a newer epoch.
    Fenced = 1,
    /// The block does not continue what the node holds of the segment.
    Gap = 2,
    /// The node's memory bound is reached.
    Busy = 3,
    Invalid = 4,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Ok {
        id: u64,
        stored_end: u64,
    },
    Error {
        id: u64,
        code: ErrorCode,
        message: String,
    },
    Fenced {
        id: u64,
        incarnation: u64,
        stored_end: u64,
        blocks: Vec<(u64, u64)>,
    },
    Block {
        id: u64,
        data: Option<Bytes>,
    },
    /// Pushed: every block of the segment below `stored_end` is in object storage.
    Stored {
        seg: SegKey,
        stored_end: u64,
    },
    /// Answers `ReadRun`: consecutive blocks from its `base` (none if it is not held).
    Blocks {
        id: u64,
        blocks: Vec<Bytes>,
    },
}

impl Response {
    /// The request id this answers (0 for notifications).
    pub fn id(&self) -> u64 {
        match self {
            Response::Ok { id, .. }
            | Response::Error { id, .. }
            | Response::Fenced { id, .. }
            | Response::Block { id, .. }
            | Response::Blocks { id, .. } => *id,
            Response::Stored { .. } => 0,
        }
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_u32(v.len() as u32);
    b.put_slice(v);
}

fn put_seg(b: &mut BytesMut, s: SegKey) {
    b.put_u64(s.log_id);
    b.put_u64(s.segment);
}

/// Encodes a frame, length prefix included.
fn frame(kind: u8, body: impl FnOnce(&mut BytesMut), hint: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + hint);
    b.put_u32(0);
    b.put_u8(kind);
    body(&mut b);
    let len = (b.len() - 4) as u32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b.freeze()
}

impl Request {
    pub fn encode(&self) -> Bytes {
        match self {
            Request::Append(Append { id, seg, epoch, seg_base, base, end, upload_now, shared, stored_end, block }) => frame(
                1,
                |b| {
                    b.put_u64(*id);
                    put_seg(b, *seg);
                    b.put_u64(*epoch);
                    b.put_u64(*seg_base);
                    b.put_u64(*base);
                    b.put_u64(*end);
                    b.put_u8(*upload_now as u8 | (*shared as u8) << 1);
                    b.put_u64(*stored_end);
                    put_bytes(b, block);
                },
                80 + block.len(),
            ),
            Request::Fence { id, seg, epoch } => frame(
                2,
                |b| {
                    b.put_u64(*id);
                    put_seg(b, *seg);
                    b.put_u64(*epoch);
                },
                32,
            ),
            Request::Read { id, seg, base } => frame(
                3,
                |b| {
                    b.put_u64(*id);
                    put_seg(b, *seg);
                    b.put_u64(*base);
                },
                32,
            ),
            Request::Progress { seg, stored_end } => frame(
                4,
                |b| {
                    put_seg(b, *seg);
                    b.put_u64(*stored_end);
                },
                24,
            ),
            Request::ReadRun { id, seg, base, max_bytes } => frame(
                5,
                |b| {
                    b.put_u64(*id);
                    put_seg(b, *seg);
                    b.put_u64(*base);
                    b.put_u32(*max_bytes);
                },
                36,
            ),
        }
    }

    /// Decodes a frame body (after the length prefix).
    pub fn decode(body: Bytes) -> Result<Request, ProtoError> {
        let mut r = Reader(body);
        let kind = r.u8()?;
        let req = match kind {
            1 => {
                let (id, seg, epoch, seg_base, base, end) = (r.u64()?, r.seg()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
                let flags = r.u8()?;
                if flags > 3 {
                    return Err(ProtoError(format!("unknown append flags {flags:#x}")));
                }
                let (upload_now, shared) = (flags & 1 != 0, flags & 2 != 0);
                Request::Append(Append { id, seg, epoch, seg_base, base, end, upload_now, shared, stored_end: r.u64()?, block: r.bytes()? })
            }
            2 => Request::Fence { id: r.u64()?, seg: r.seg()?, epoch: r.u64()? },
            3 => Request::Read { id: r.u64()?, seg: r.seg()?, base: r.u64()? },
            4 => Request::Progress { seg: r.seg()?, stored_end: r.u64()? },
            5 => Request::ReadRun { id: r.u64()?, seg: r.seg()?, base: r.u64()?, max_bytes: r.u32()? },
            k => return Err(ProtoError(format!("unknown request kind {k}"))),
        };
        r.finish()?;
        Ok(req)
    }
}

impl Response {
    pub fn encode(&self) -> Bytes {
        match self {
            Response::Ok { id, stored_end } => frame(
                1,
                |b| {
                    b.put_u64(*id);
                    b.put_u64(*stored_end);
                },
                16,
            ),
            Response::Error { id, code, message } => frame(
                2,
                |b| {
                    b.put_u64(*id);
                    b.put_u8(*code as u8);
                    put_bytes(b, message.as_bytes());
                },
                16 + message.len(),
            ),
            Response::Fenced { id, incarnation, stored_end, blocks } => frame(
                3,
                |b| {
                    b.put_u64(*id);
                    b.put_u64(*incarnation);
                    b.put_u64(*stored_end);
                    b.put_u32(blocks.len() as u32);
                    for (s, e) in blocks {
                        b.put_u64(*s);
                        b.put_u64(*e);
                    }
                },
                32 + 16 * blocks.len(),
            ),
            Response::Block { id, data } => frame(
                4,
                |b| {
                    b.put_u64(*id);
                    match data {
                        Some(d) => {
                            b.put_u8(1);
                            put_bytes(b, d);
                        }
                        None => b.put_u8(0),
                    }
                },
                16 + data.as_ref().map_or(0, |d| d.len()),
            ),
            Response::Stored { seg, stored_end } => frame(
                5,
                |b| {
                    put_seg(b, *seg);
                    b.put_u64(*stored_end);
                },
                24,
            ),
            Response::Blocks { id, blocks } => frame(
                6,
                |b| {
                    b.put_u64(*id);
                    b.put_u32(blocks.len() as u32);
                    for d in blocks {
                        put_bytes(b, d);
                    }
                },
                12 + blocks.iter().map(|d| 4 + d.len()).sum::<usize>(),
            ),
        }
    }

    pub fn decode(body: Bytes) -> Result<Response, ProtoError> {
        let mut r = Reader(body);
        let kind = r.u8()?;
        let resp = match kind {
            1 => Response::Ok { id: r.u64()?, stored_end: r.u64()? },
            2 => {
                let id = r.u64()?;
                let code = match r.u8()? {
                    1 => ErrorCode::Fenced,
                    2 => ErrorCode::Gap,
                    3 => ErrorCode::Busy,
                    _ => ErrorCode::Invalid,
                };
                let message = String::from_utf8_lossy(&r.bytes()?).into_owned();
                Response::Error { id, code, message }
            }
            3 => {
                let id = r.u64()?;
                let incarnation = r.u64()?;
                let stored_end = r.u64()?;
                let n = r.u32()? as usize;
                if n > r.0.remaining() / 16 {
                    return Err(ProtoError(format!("block count {n} exceeds the frame")));
                }
                let mut blocks = Vec::with_capacity(n);
                for _ in 0..n {
                    blocks.push((r.u64()?, r.u64()?));
                }
                Response::Fenced { id, incarnation, stored_end, blocks }
            }
            4 => {
                let id = r.u64()?;
                let data = if r.u8()? != 0 { Some(r.bytes()?) } else { None };
                Response::Block { id, data }
            }
            5 => Response::Stored { seg: r.seg()?, stored_end: r.u64()? },
            6 => {
                let id = r.u64()?;
                let n = r.u32()? as usize;
                if n > r.0.remaining() / 4 {
                    return Err(ProtoError(format!("block count {n} exceeds the frame")));
                }
                let mut blocks = Vec::with_capacity(n);
                for _ in 0..n {
                    blocks.push(r.bytes()?);
                }
                Response::Blocks { id, blocks }
            }
            k => return Err(ProtoError(format!("unknown response kind {k}"))),
        };
        r.finish()?;
        Ok(resp)
    }
}

struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), ProtoError> {
        if self.0.remaining() < n {
            return Err(ProtoError(format!("truncated: need {n} bytes, {} left", self.0.remaining())));
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, ProtoError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u32(&mut self) -> Result<u32, ProtoError> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }
    fn u64(&mut self) -> Result<u64, ProtoError> {
        self.need(8)?;
        Ok(self.0.get_u64())
    }
    fn seg(&mut self) -> Result<SegKey, ProtoError> {
        Ok(SegKey { log_id: self.u64()?, segment: self.u64()? })
    }
    fn bytes(&mut self) -> Result<Bytes, ProtoError> {
        let n = self.u32()? as usize;
        self.need(n)?;
        Ok(self.0.split_to(n))
    }
    fn finish(self) -> Result<(), ProtoError> {
        if self.0.has_remaining() {
            return Err(ProtoError(format!("{} trailing bytes", self.0.remaining())));
        }
        Ok(())
    }
}

/// Reads one frame body from `rd`: `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(rd: &mut R) -> std::io::Result<Option<Bytes>> {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 4];
    let n = rd.read(&mut len[..1]).await?;
    if n == 0 {
        return Ok(None);
    }
    rd.read_exact(&mut len[1..]).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME_BYTES {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame length {len} out of bounds")));
    }
    // Grow with what arrives instead of trusting the length for the allocation.
    let mut body = BytesMut::with_capacity(len.min(1 << 20));
    while body.len() < len {
        let step = (len - body.len()).min((1 << 20).max(body.len()));
        let start = body.len();
        body.resize(start + step, 0);
        rd.read_exact(&mut body[start..]).await?;
    }
    Ok(Some(body.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(frame: Bytes) -> Bytes {
        frame.slice(4..)
    }

    #[test]
    fn requests_round_trip() {
        let seg = SegKey { log_id: 7, segment: 3 };
        let reqs = vec![
            Request::Append(Append {
                id: 1,
                seg,
                epoch: 2,
                seg_base: 10,
                base: 10,
                end: 20,
                upload_now: true,
                shared: true,
                stored_end: 10,
                block: Bytes::from_static(b"block bytes"),
            }),
            Request::Fence { id: 2, seg, epoch: 9 },
            Request::Read { id: 3, seg, base: 10 },
            Request::Progress { seg, stored_end: 20 },
            Request::ReadRun { id: 6, seg, base: 10, max_bytes: 8 << 20 },
        ];
        for r in reqs {
            assert_eq!(Request::decode(body(r.encode())).unwrap(), r);
        }
    }

    #[test]
    fn responses_round_trip() {
        let seg = SegKey { log_id: 1, segment: 0 };
        let resps = vec![
            Response::Ok { id: 1, stored_end: 5 },
            Response::Error { id: 2, code: ErrorCode::Gap, message: "gap".into() },
            Response::Fenced { id: 3, incarnation: 77, stored_end: 0, blocks: vec![(0, 5), (5, 9)] },
            Response::Block { id: 4, data: Some(Bytes::from_static(b"x")) },
            Response::Block { id: 5, data: None },
            Response::Stored { seg, stored_end: 9 },
            Response::Blocks { id: 6, blocks: vec![Bytes::from_static(b"ab"), Bytes::new(), Bytes::from_static(b"c")] },
            Response::Blocks { id: 7, blocks: Vec::new() },
        ];
        for r in resps {
            assert_eq!(Response::decode(body(r.encode())).unwrap(), r);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Request::decode(Bytes::from(data.clone()));
            let _ = Response::decode(Bytes::from(data));
        }

        #[test]
        fn truncated_frames_are_errors(cut in 1usize..60) {
            let f = Request::Append(Append {
                id: 1, seg: SegKey { log_id: 1, segment: 1 }, epoch: 1, seg_base: 0, base: 0, end: 1,
                upload_now: false, shared: false, stored_end: 0, block: Bytes::from_static(b"0123456789"),
            }).encode();
            let b = body(f);
            let cut = cut.min(b.len() - 1);
            prop_assert!(Request::decode(b.slice(..cut)).is_err());
        }
    }
}
