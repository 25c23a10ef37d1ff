//! The compressed protocol (`CLIENT_COMPRESS`), between a client and the router only: once the
//! handshake's OK is sent, the bytes of the ordinary packets travel inside frames, each a
//! 7-byte header (3-byte little-endian length of the frame's payload, a 1-byte sequence id,
//! the 3-byte length before compression, 0 when the payload is not compressed) and a zlib
//! payload. A frame may hold several packets or part of one.
//!
//! [`CompressedRead`] and [`CompressedWrite`] sit under the packet reader and writer, so the
//! session sees plain packets either way. Frames are numbered apart from the packets: the
//! client starts each command's frames at 0, and the router's answer goes on from the last
//! frame it read (the two halves share that number). The writer makes one frame per flush
//! (more for an answer beyond 16 MiB, or when [`FRAME_AT`] bytes are waiting), compressed
//! when it is at least [`MIN_COMPRESS`] bytes and compression makes it smaller, as the server
//! does.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The header before each frame's payload.
const HEADER: usize = 7;
/// The largest payload (or uncompressed length) a frame's 3-byte lengths can say.
const MAX_FRAME: usize = 0xff_ffff;
/// Shorter payloads go uncompressed (the server's `MIN_COMPRESS_LENGTH`).
pub const MIN_COMPRESS: usize = 50;
/// The writer frames what is waiting once this much is (a large result set is sent as it
/// comes, not held whole until the flush).
pub const FRAME_AT: usize = 64 * 1024;
/// How many bytes each read from the wire makes room for.
const READ_CHUNK: usize = 16 * 1024;

/// The frame sequence number both halves of a connection share.
pub type FrameSeq = Arc<AtomicU8>;

fn u24(b: &[u8]) -> usize {
    usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16
}

fn put_u24(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// The read half: frames from `inner`, their packets' bytes out.
#[derive(Debug)]
pub struct CompressedRead<R> {
    inner: R,
    /// Bytes of frames read, not yet decoded (a partial frame).
    raw: BytesMut,
    /// Decoded bytes not yet handed out.
    plain: BytesMut,
    seq: FrameSeq,
}

impl<R> CompressedRead<R> {
    /// Frames read from `inner`, after `early` (bytes already read from it).
    pub fn new(inner: R, early: BytesMut, seq: FrameSeq) -> Self {
        CompressedRead {
            inner,
            raw: early,
            plain: BytesMut::new(),
            seq,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Decodes the first frame of `raw` into `plain` if it is whole; whether it was.
    fn decode_one(&mut self) -> io::Result<bool> {
        if self.raw.len() < HEADER {
            return Ok(false);
        }
        let (len, seq, plain_len) = (u24(&self.raw[..3]), self.raw[3], u24(&self.raw[4..7]));
        // (No room is reserved for what a header announces: it grows as bytes arrive.)
        if self.raw.len() < HEADER + len {
            return Ok(false);
        }
        self.raw.advance(HEADER);
        let payload = self.raw.split_to(len);
        if plain_len == 0 {
            self.plain.extend_from_slice(&payload);
        } else {
            let start = self.plain.len();
            self.plain.resize(start + plain_len, 0);
            let mut z = Decompress::new(true);
            let status = z
                .decompress(&payload, &mut self.plain[start..], FlushDecompress::Finish)
                .map_err(|e| invalid(format!("a compressed frame does not inflate: {e}")))?;
            if status != Status::StreamEnd || z.total_out() as usize != plain_len {
                return Err(invalid(format!(
                    "a compressed frame says {plain_len} bytes and inflates to {} ({status:?})",
                    z.total_out()
                )));
            }
        }
        self.seq.store(seq.wrapping_add(1), Ordering::Release);
        Ok(true)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for CompressedRead<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.plain[..n]);
                this.plain.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.decode_one()? {
                continue;
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut into = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut into))?;
            if into.filled().is_empty() {
                return Poll::Ready(if this.raw.is_empty() {
                    Ok(())
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                });
            }
            this.raw.extend_from_slice(into.filled());
        }
    }
}

/// The write half: packets' bytes in, frames to `inner`.
#[derive(Debug)]
pub struct CompressedWrite<W> {
    inner: W,
    /// Bytes written, not yet framed.
    pending: Vec<u8>,
    /// Frames not yet (wholly) written to `inner`, from `sent` on.
    out: Vec<u8>,
    sent: usize,
    seq: FrameSeq,
}

impl<W> CompressedWrite<W> {
    pub fn new(inner: W, seq: FrameSeq) -> Self {
        CompressedWrite {
            inner,
            pending: Vec::new(),
            out: Vec::new(),
            sent: 0,
            seq,
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Frames everything pending (in frames of at most [`MAX_FRAME`] bytes) into `out`.
    fn frame_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for part in pending.chunks(MAX_FRAME) {
            let seq = self.seq.fetch_add(1, Ordering::AcqRel);
            let packed = (part.len() >= MIN_COMPRESS)
                .then(|| deflate(part))
                .flatten()
                .filter(|z| z.len() < part.len());
            match packed {
                Some(z) => {
                    put_u24(&mut self.out, z.len());
                    self.out.push(seq);
                    put_u24(&mut self.out, part.len());
                    self.out.extend_from_slice(&z);
                }
                None => {
                    put_u24(&mut self.out, part.len());
                    self.out.push(seq);
                    put_u24(&mut self.out, 0);
                    self.out.extend_from_slice(part);
                }
            }
        }
        // The buffer is kept for the next frame, emptied.
        self.pending = pending;
        self.pending.clear();
    }
}

/// `data` deflated (zlib), or `None` if it could not be.
fn deflate(data: &[u8]) -> Option<Vec<u8>> {
    let mut z = Compress::new(Compression::default(), true);
    let mut out = Vec::with_capacity(data.len() + 64);
    loop {
        let before = z.total_in() as usize;
        match z.compress_vec(&data[before..], &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => return Some(out),
            Ok(_) => out.reserve(out.capacity().max(64)),
            Err(_) => return None,
        }
    }
}

impl<W: AsyncWrite + Unpin> CompressedWrite<W> {
    /// Writes `out` to `inner` until it is all written.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for CompressedWrite<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if this.pending.len() >= FRAME_AT {
            this.frame_pending();
            ready!(this.poll_send(cx))?;
        }
        this.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            ready!(this.poll_send(cx))?;
            this.frame_pending();
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Frames `data` as a peer would: compressed or not, sequence `seq`.
    fn frame(data: &[u8], seq: u8, compress: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if compress {
            let z = deflate(data).unwrap();
            put_u24(&mut out, z.len());
            out.push(seq);
            put_u24(&mut out, data.len());
            out.extend_from_slice(&z);
        } else {
            put_u24(&mut out, data.len());
            out.push(seq);
            put_u24(&mut out, 0);
            out.extend_from_slice(data);
        }
        out
    }

    #[tokio::test]
    async fn frames_are_read_whole_or_in_pieces_compressed_or_not() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
        let mut wire = frame(b"\x03\x00\x00\x00\x03SELECT 1", 0, false);
        wire.extend(frame(&big, 1, true));
        let seq = FrameSeq::default();
        // One byte per read from the wire: every partial header and payload is handled.
        let (mut client, server) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            client.write_all(&wire).await.unwrap();
            client.shutdown().await.unwrap();
        });
        let mut r = CompressedRead::new(server, BytesMut::new(), seq.clone());
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        let mut want = b"\x03\x00\x00\x00\x03SELECT 1".to_vec();
        want.extend(&big);
        assert_eq!(got, want);
        assert_eq!(
            seq.load(Ordering::Acquire),
            2,
            "the next frame is the second's + 1"
        );
    }

    #[tokio::test]
    async fn a_frame_that_lies_about_its_length_is_an_error_not_a_hang() {
        let mut bad = frame(&[b'x'; 500], 0, true);
        bad[4] = 0x10; // says 16 + 256 bytes before compression
        let mut r = CompressedRead::new(&bad[..], BytesMut::new(), FrameSeq::default());
        let e = r.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        let cut = &frame(b"hello world", 0, false)[..9];
        let mut r = CompressedRead::new(cut, BytesMut::new(), FrameSeq::default());
        let e = r.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn an_answer_beyond_16_mib_goes_in_several_frames() {
        let big: Vec<u8> = (0..MAX_FRAME + 1000).map(|i| (i % 13) as u8).collect();
        let mut w = CompressedWrite::new(Vec::new(), FrameSeq::default());
        w.pending.extend_from_slice(&big);
        w.flush().await.unwrap();
        let wire = w.inner;
        let first = u24(&wire[..3]);
        assert_eq!(
            u24(&wire[4..7]),
            MAX_FRAME,
            "the first frame holds 16 MiB - 1"
        );
        assert_eq!(
            wire[HEADER + first + 3],
            1,
            "the second frame is numbered 1"
        );
        let mut r = CompressedRead::new(&wire[..], BytesMut::new(), FrameSeq::default());
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert!(got == big);
    }

    #[tokio::test]
    async fn answers_are_numbered_after_the_last_frame_read_and_small_ones_stay_plain() {
        let seq = FrameSeq::default();
        seq.store(5, Ordering::Release);
        let mut w = CompressedWrite::new(Vec::new(), seq.clone());
        w.write_all(b"short").await.unwrap();
        w.flush().await.unwrap();
        let big = vec![b'a'; 100_000];
        // More than FRAME_AT waiting when the second part comes: framed before the flush.
        w.write_all(&big[..70_000]).await.unwrap();
        w.write_all(&big[70_000..]).await.unwrap();
        w.flush().await.unwrap();
        let wire = w.inner;
        assert_eq!(&wire[..HEADER], &[5, 0, 0, 5, 0, 0, 0]);
        assert_eq!(&wire[HEADER..HEADER + 5], b"short");
        // Back through a reader: the next frames compressed, numbered 6 (the first 70,000
        // bytes, framed at FRAME_AT) and 7 (the rest, at the flush).
        let rest = &wire[HEADER + 5..];
        assert_eq!(rest[3], 6);
        assert!(u24(&rest[4..7]) > 0, "compressed");
        assert!(wire.len() < 5_000, "{} bytes on the wire", wire.len());
        let mut r = CompressedRead::new(rest, BytesMut::new(), FrameSeq::default());
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, big);
        assert_eq!(seq.load(Ordering::Acquire), 8);
    }
}
