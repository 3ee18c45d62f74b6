//! Compressed record batches, checked as Kafka's broker checks them: the records are
//! decompressed (gzip, snappy in xerial framing or raw, lz4 frames, zstd; pure-Rust decoders)
//! and walked by [`super::records::walk`], streaming, with a hard bound on the decompressed
//! bytes ([`MAX_DECOMPRESSED_BYTES`] and [`MAX_RATIO`] times the compressed size, whichever is
//! lower), so a decompression bomb costs at most that much CPU and a few buffers of memory. The
//! batch itself is stored as it came, unless its topic's `compression.type` names another codec:
//! then [`decompress`] and [`compress`] rewrite it ([`super::rewrite`]).
//!
//! Decompression is CPU work: [`validate_off_thread`] runs it on the blocking pool, at most
//! one per core at a time.

use std::io::{BufReader, Read};
use std::sync::OnceLock;

use tokio::sync::Semaphore;

use super::records::{read_error, walk, OutputBound, RecordStats};
use super::{BatchError, BatchInfo, HEADER_LEN};

/// The most bytes one batch's records may decompress to.
pub const MAX_DECOMPRESSED_BYTES: u64 = 256 << 20;
/// ... and at most this many times the compressed size (a generous bound: text compresses
/// 5-20x, zeros far more; past it a batch is treated as a bomb), with a floor of 1 MiB.
pub const MAX_RATIO: u64 = 1000;

pub const GZIP: i16 = 1;
pub const SNAPPY: i16 = 2;
pub const LZ4: i16 = 3;
pub const ZSTD: i16 = 4;

/// The decompressed-size bound of `compressed` bytes.
pub fn bound(compressed: usize) -> u64 {
    (compressed as u64).saturating_mul(MAX_RATIO).clamp(1 << 20, MAX_DECOMPRESSED_BYTES)
}

/// A reader that fails once more than `left` bytes came through.
struct Bounded<R> {
    inner: R,
    left: u64,
    bound: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One byte more would pass the bound: is there any?
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(OutputBound(self.bound))),
            };
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Snappy as Kafka clients write it: xerial framing (a magic header, then blocks of
/// `u32 length | raw snappy`, as the Java client writes), or one raw snappy block (librdkafka).
struct Snappy<'a> {
    /// Compressed input not decoded yet.
    data: &'a [u8],
    /// Whether `data` is one raw block rather than xerial blocks.
    raw: bool,
    /// The current decoded block and the read position in it.
    out: Vec<u8>,
    at: usize,
    /// Decoded bytes still allowed.
    left: u64,
    bound: u64,
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER: usize = 16;

impl<'a> Snappy<'a> {
    fn new(data: &'a [u8], bound: u64) -> Snappy<'a> {
        let framed = data.len() >= XERIAL_HEADER && data.starts_with(XERIAL_MAGIC);
        let data = if framed { &data[XERIAL_HEADER..] } else { data };
        Snappy { data, raw: !framed, out: Vec::new(), at: 0, left: bound, bound }
    }

    /// Decodes one raw block into `out`, refusing one that would pass the bound before
    /// allocating for it (a raw block states its decoded length up front).
    fn decode(&mut self, block: &[u8]) -> std::io::Result<()> {
        let n = snap::raw::decompress_len(block).map_err(std::io::Error::other)? as u64;
        if n > self.left {
            return Err(std::io::Error::other(OutputBound(self.bound)));
        }
        self.left -= n;
        self.out.resize(n as usize, 0);
        snap::raw::Decoder::new().decompress(block, &mut self.out).map_err(std::io::Error::other)?;
        self.at = 0;
        Ok(())
    }

    /// Decodes the next block; false at the end of the input.
    fn next_block(&mut self) -> std::io::Result<bool> {
        if self.data.is_empty() {
            return Ok(false);
        }
        let block = if self.raw {
            std::mem::take(&mut self.data)
        } else {
            let len = self.data.get(..4).map(|l| u32::from_be_bytes(l.try_into().expect("4 bytes")) as usize);
            let Some(block) = len.and_then(|len| self.data.get(4..4 + len)) else {
                return Err(std::io::Error::other("truncated snappy block"));
            };
            self.data = &self.data[4 + block.len()..];
            block
        };
        self.decode(block)?;
        Ok(true)
    }
}

impl Read for Snappy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.out.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A decoder of `codec` over the compressed records `data`.
fn decoder<'a>(data: &'a [u8], codec: i16, bound: u64) -> Result<Box<dyn Read + 'a>, BatchError> {
    Ok(match codec {
        GZIP => Box::new(flate2::bufread::MultiGzDecoder::new(data)),
        SNAPPY => Box::new(Snappy::new(data, bound)),
        LZ4 => Box::new(lz4_flex::frame::FrameDecoder::new(data)),
        ZSTD => Box::new(ruzstd::decoding::StreamingDecoder::new(data).map_err(|e| BatchError::Decompress(e.to_string()))?),
        other => return Err(BatchError::Codec(other)),
    })
}

/// Decompresses and walks the records of a whole compressed batch `b` (header included).
pub fn validate(b: &[u8], info: &BatchInfo) -> Result<RecordStats, BatchError> {
    validate_within(b, info, bound(b.len() - HEADER_LEN))
}

/// [`validate`] with the decompressed bytes bounded by `bound`.
fn validate_within(b: &[u8], info: &BatchInfo, bound: u64) -> Result<RecordStats, BatchError> {
    let r = decoder(&b[HEADER_LEN..], info.attributes & 0x07, bound)?;
    let mut r = BufReader::with_capacity(64 << 10, Bounded { inner: r, left: bound, bound });
    walk(&mut r, info.record_count, info.base_timestamp)
}

/// The records of a whole batch `b` uncompressed (bounded as [`validate`] is).
pub fn decompress(b: &[u8], info: &BatchInfo) -> Result<Vec<u8>, BatchError> {
    let data = &b[HEADER_LEN..];
    let codec = info.attributes & 0x07;
    if codec == 0 {
        return Ok(data.to_vec());
    }
    let bound = bound(data.len());
    let mut out = Vec::with_capacity(data.len().saturating_mul(4));
    Bounded { inner: decoder(data, codec, bound)?, left: bound, bound }.read_to_end(&mut out).map_err(read_error)?;
    Ok(out)
}

/// Compresses records with `codec` as Kafka's clients do: gzip at `gzip_level` (-1: the
/// codec's default), snappy in xerial framing (32 KiB blocks, as the Java client writes and
/// every client reads), lz4 frames with independent blocks, zstd at the encoder's one level.
/// Codec 0 returns the records as they are.
pub fn compress(codec: i16, raw: &[u8], gzip_level: i32) -> Vec<u8> {
    use std::io::Write;
    match codec {
        GZIP => {
            let level = if gzip_level < 0 { flate2::Compression::default() } else { flate2::Compression::new(gzip_level as u32) };
            let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 2), level);
            e.write_all(raw).expect("writes to a Vec");
            e.finish().expect("writes to a Vec")
        }
        SNAPPY => {
            let mut out = XERIAL_MAGIC.to_vec();
            out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]); // version 1, compatible with 1
            let mut enc = snap::raw::Encoder::new();
            for chunk in raw.chunks(32 << 10) {
                let c = enc.compress_vec(chunk).expect("a chunk within snappy's limits");
                out.extend_from_slice(&(c.len() as u32).to_be_bytes());
                out.extend(c);
            }
            out
        }
        LZ4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(raw.len() / 2));
            e.write_all(raw).expect("writes to a Vec");
            e.finish().expect("writes to a Vec")
        }
        ZSTD => ruzstd::encoding::compress_to_vec(raw, ruzstd::encoding::CompressionLevel::Fastest),
        _ => raw.to_vec(),
    }
}

/// Decompressions running at once, at most one per core.
pub(super) fn slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| Semaphore::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)))
}

/// [`validate`] on the blocking pool, holding one of the per-core slots.
pub async fn validate_off_thread(b: bytes::Bytes, info: BatchInfo) -> Result<RecordStats, BatchError> {
    let _slot = slots().acquire().await.expect("never closed");
    tokio::task::spawn_blocking(move || validate(&b, &info)).await.unwrap_or_else(|e| Err(BatchError::Decompress(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::super::{encode_batch, put_varint, split};
    use super::*;

    /// Records 0..n (null key, value `value`) as they sit after a batch header.
    fn records(n: i32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let mut body = vec![0u8, 0];
            put_varint(&mut body, i as i64);
            put_varint(&mut body, -1);
            put_varint(&mut body, value.len() as i64);
            body.extend_from_slice(value);
            put_varint(&mut body, 0);
            put_varint(&mut out, body.len() as i64);
            out.extend(body);
        }
        out
    }

    /// A batch of `n` records compressed with `codec`, its header patched and CRC computed.
    fn batch(codec: i16, n: i32, raw: &[u8]) -> Vec<u8> {
        let mut b = encode_batch(&super::compress(codec, raw, -1), n, -1, -1, -1, wal_core::util::now_ms() as i64);
        b[21..23].copy_from_slice(&codec.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn check(b: &[u8]) -> Result<(), BatchError> {
        let (data, info) = split(&bytes::Bytes::copy_from_slice(b))?.pop().unwrap();
        validate(&data, &info).map(|_| ())
    }

    #[test]
    fn every_codec_validates_good_records_and_rejects_bad_ones() {
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            let good = records(50, b"hello hello hello");
            assert_eq!(check(&batch(codec, 50, &good)), Ok(()), "codec {codec}");
            // offset deltas 0, 1, ... broken inside the compressed data
            let mut skipped = records(2, b"v");
            let second = skipped.len() / 2;
            skipped[second + 3] = 4; // the second record's offset delta: 2
            assert!(matches!(check(&batch(codec, 2, &skipped)), Err(BatchError::Record(_))), "codec {codec}");
            // fewer records than the header says
            assert!(matches!(check(&batch(codec, 51, &good)), Err(BatchError::Record(_))), "codec {codec}");
            // compressed bytes that are no valid stream
            let mut garbage = batch(codec, 50, &good);
            let len = garbage.len();
            for x in &mut garbage[HEADER_LEN + 2..len - 2] {
                *x ^= 0x5a;
            }
            let crc = crc32c::crc32c(&garbage[21..]);
            garbage[17..21].copy_from_slice(&crc.to_be_bytes());
            assert!(check(&garbage).is_err(), "codec {codec}");
        }
        // raw snappy (librdkafka writes it without the xerial framing)
        let good = records(10, b"raw");
        let mut b = encode_batch(&snap::raw::Encoder::new().compress_vec(&good).unwrap(), 10, -1, -1, -1, wal_core::util::now_ms() as i64);
        b[21..23].copy_from_slice(&SNAPPY.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(check(&b), Ok(()));
        // a codec Kafka does not have
        let mut odd = batch(GZIP, 50, &records(50, b"x"));
        odd[22] = (odd[22] & !0x07) | 6;
        let crc = crc32c::crc32c(&odd[21..]);
        odd[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(check(&odd), Err(BatchError::Codec(6)));
    }

    /// One record whose value is `n` zeros.
    fn zeros_record(n: usize) -> Vec<u8> {
        let mut body = vec![0u8, 0, 0];
        put_varint(&mut body, -1);
        put_varint(&mut body, n as i64);
        body.resize(body.len() + n, 0);
        body.push(0);
        let mut out = Vec::new();
        put_varint(&mut out, body.len() as i64);
        out.extend(body);
        out
    }

    /// Decompression stops at the bound, whatever the codec: 4 MiB of records under a 1 MiB
    /// bound is refused, under an 8 MiB one accepted.
    #[test]
    fn decompression_stops_at_the_bound() {
        let raw = zeros_record(4 << 20);
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            let b = batch(codec, 1, &raw);
            let (data, info) = split(&bytes::Bytes::from(b)).unwrap().pop().unwrap();
            assert_eq!(validate_within(&data, &info, 1 << 20), Err(BatchError::TooLarge(1 << 20)), "codec {codec}");
            assert!(validate_within(&data, &info, 8 << 20).is_ok(), "codec {codec}");
        }
        assert_eq!(bound(10), 1 << 20, "a floor of 1 MiB");
        assert_eq!(bound(10_000), 10_000_000);
        assert_eq!(bound(1 << 30), MAX_DECOMPRESSED_BYTES);
    }

    /// A zstd bomb (8 MiB of zeros in a few hundred bytes) passes 1000x its size: refused.
    #[test]
    fn a_zstd_bomb_is_refused() {
        let b = batch(ZSTD, 1, &zeros_record(8 << 20));
        assert!(b.len() < 8 << 10, "{} bytes", b.len());
        assert!(matches!(check(&b), Err(BatchError::TooLarge(_))));
    }

    proptest::proptest! {
        /// Fuzz target: compressed batches with bytes flipped in the compressed data never
        /// panic (and never pass the bound).
        #[test]
        fn damaged_compressed_records_never_panic(codec in 1i16..5, flips in proptest::collection::vec((proptest::prelude::any::<u16>(), 1u8..=255), 1..4)) {
            let mut b = batch(codec, 20, &records(20, b"some value that repeats some value"));
            let body = b.len() - HEADER_LEN;
            for (at, x) in flips {
                b[HEADER_LEN + at as usize % body] ^= x;
            }
            let crc = crc32c::crc32c(&b[21..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            let _ = check(&b);
        }
    }
}
