//! Packet framing: a 4-byte header (3-byte little-endian length, 1-byte sequence id) before
//! each payload; payloads of 2^24-1 bytes or more continue in the next packet.
//!
//! Client connections mostly sit idle, so their reader and writer can hold no buffer at all
//! between commands: the reader waits for the next command without one (see
//! [`PacketReader::with_chunk`]) and the writer gives its buffer back on
//! [`PacketWriter::release`].

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The largest payload one packet carries; a payload this long continues in the next packet.
pub const MAX_PAYLOAD: usize = 0xff_ffff;

/// Why a packet could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection in the middle of a packet")]
    Truncated,
    #[error("packet of {size} bytes is larger than max_allowed_packet ({max})")]
    TooLarge { size: usize, max: usize },
}

/// How many bytes a reader without a buffer takes per read (into the stack; see
/// [`PacketReader::with_chunk`]). Client commands are mostly shorter than this.
const UNBUFFERED_READ: usize = 2048;

/// Reads whole packets (continuations joined) from a byte stream.
#[derive(Debug)]
pub struct PacketReader<R> {
    inner: R,
    buf: BytesMut,
    /// Bytes of a refused (too large) packet still on the wire.
    unread: usize,
    /// How much room each read makes in the buffer.
    chunk: usize,
    /// Hold no buffer while nothing is buffered (client connections, idle most of the time).
    lean: bool,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    /// A reader with 16 KiB reads (backend connections: result sets).
    pub fn new(inner: R) -> Self {
        Self::buffered(inner, 16 * 1024)
    }

    /// A reader making `chunk` bytes of room per read, for client connections, which mostly
    /// send short commands and mostly sit idle. It holds no buffer between messages: while
    /// nothing is buffered it reads into the stack and keeps only what arrived (exactly that
    /// many bytes), and a message that is all the buffer held is handed over whole instead of
    /// split off, so an idle connection costs no buffer memory. Larger packets still get the
    /// room they need.
    pub fn with_chunk(inner: R, chunk: usize) -> Self {
        PacketReader {
            inner,
            buf: BytesMut::new(),
            unread: 0,
            chunk: chunk.max(64),
            lean: true,
        }
    }

    fn buffered(inner: R, chunk: usize) -> Self {
        PacketReader {
            lean: false,
            ..Self::with_chunk(inner, chunk)
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The bytes read but not consumed yet.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The stream and the bytes read from it but not consumed (when a connection switches to
    /// TLS after a packet, these are the start of the TLS handshake).
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }

    /// How much room each read makes in the buffer.
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// Reads and drops the rest of a packet refused as too large (up to `limit` bytes), so
    /// that the peer can finish sending it and read the error that follows.
    pub async fn skip_refused(&mut self, limit: usize) -> std::io::Result<()> {
        let mut left = self.unread.min(limit);
        let mut scratch = vec![0u8; 64 * 1024];
        while left > 0 {
            let n = self.inner.read(&mut scratch[..left.min(64 * 1024)]).await?;
            if n == 0 {
                break;
            }
            left -= n;
        }
        self.unread = 0;
        Ok(())
    }

    /// Bytes of buffer memory held (whether or not they hold unread bytes).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        if self.lean && self.buf.capacity() == 0 {
            return self.fill_unbuffered().await;
        }
        if self.buf.capacity() - self.buf.len() < (self.chunk / 4).min(4096) {
            self.buf.reserve(self.chunk);
        }
        self.inner.read_buf(&mut self.buf).await
    }

    /// Waits for bytes holding no buffer: each poll reads into the stack, and only bytes that
    /// arrived are copied to the heap (an allocation of exactly their size).
    async fn fill_unbuffered(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| {
            let mut room = [MaybeUninit::<u8>::uninit(); UNBUFFERED_READ];
            let mut read = ReadBuf::uninit(&mut room);
            match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let got = read.filled();
                    self.buf.extend_from_slice(got);
                    Poll::Ready(Ok(got.len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Reads one message: its first sequence id, the id of its last packet, and the joined
    /// payload. `Ok(None)` when the stream ends cleanly between messages.
    pub async fn read_message(
        &mut self,
        max_len: usize,
    ) -> Result<Option<(u8, u8, BytesMut)>, PacketError> {
        if self.lean && self.buf.is_empty() {
            // What is left of the last message's buffer: give it back before waiting.
            self.buf = BytesMut::new();
        }
        let mut payload = BytesMut::new();
        let mut first_seq = None;
        loop {
            while self.buf.len() < 4 {
                if self.fill().await? == 0 {
                    return if self.buf.is_empty() && first_seq.is_none() {
                        Ok(None)
                    } else {
                        Err(PacketError::Truncated)
                    };
                }
            }
            let len = usize::from(self.buf[0])
                | usize::from(self.buf[1]) << 8
                | usize::from(self.buf[2]) << 16;
            let seq = self.buf[3];
            let total = payload.len() + len;
            if total > max_len {
                // What of this packet is not read yet, so that a caller may skip it.
                self.unread = (4 + len).saturating_sub(self.buf.len());
                self.buf.clear();
                return Err(PacketError::TooLarge {
                    size: total,
                    max: max_len,
                });
            }
            while self.buf.len() < 4 + len {
                self.buf.reserve(4 + len - self.buf.len());
                if self.fill().await? == 0 {
                    return Err(PacketError::Truncated);
                }
            }
            self.buf.advance(4);
            let chunk = if self.lean && self.buf.len() == len {
                // The whole buffer: handed over, so that nothing stays behind while idle.
                std::mem::take(&mut self.buf)
            } else {
                self.buf.split_to(len)
            };
            first_seq.get_or_insert(seq);
            if payload.is_empty() && len < MAX_PAYLOAD {
                payload = chunk;
            } else {
                payload.extend_from_slice(&chunk);
            }
            if len < MAX_PAYLOAD {
                return Ok(Some((first_seq.unwrap_or(seq), seq, payload)));
            }
        }
    }
}

/// Appends `payload` framed as packets starting at sequence id `seq`; returns the next id.
pub fn frame(mut seq: u8, payload: &[u8], out: &mut Vec<u8>) -> u8 {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        out.push(seq);
        out.extend_from_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_PAYLOAD {
            return seq;
        }
    }
}

/// Buffers outgoing packets; one `flush` per response keeps small replies to one write.
///
/// The buffer is allocated on demand (the first message queued after [`PacketWriter::release`]
/// sizes it) and kept across flushes within a response, so that relaying a large result
/// reuses it.
#[derive(Debug)]
pub struct PacketWriter<W> {
    inner: W,
    buf: Vec<u8>,
    /// What the buffer shrinks back to after a large response.
    capacity: usize,
}

impl<W: AsyncWrite + Unpin> PacketWriter<W> {
    pub fn new(inner: W) -> Self {
        Self::with_capacity(inner, 16 * 1024)
    }

    /// A writer whose buffer shrinks back to `capacity` bytes after a response that made it
    /// grow past 1 MiB. Nothing is allocated until the first message is queued.
    pub fn with_capacity(inner: W, capacity: usize) -> Self {
        PacketWriter {
            inner,
            buf: Vec::new(),
            capacity,
        }
    }

    /// Queues one message, split into packets as needed; returns the next sequence id.
    pub fn push(&mut self, seq: u8, payload: &[u8]) -> u8 {
        // One allocation of the right size when the buffer is empty, not one per header part.
        self.buf.reserve(payload.len() + 4);
        frame(seq, payload, &mut self.buf)
    }

    /// Queues bytes that are already framed (relayed packets).
    pub fn push_raw(&mut self, framed: &[u8]) {
        self.buf.extend_from_slice(framed);
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The stream, once nothing is queued (see [`PacketWriter::pending`]).
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// The buffer size this writer shrinks back to.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of buffer memory held.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Gives the buffer back when nothing is queued (a client session about to wait for its
    /// next command): an idle connection then holds no output buffer, whatever size the last
    /// response made it grow to.
    pub fn release(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf).await?;
            // A no-op on TCP; on TLS it pushes out records still held by the TLS layer.
            self.inner.flush().await?;
            self.buf.clear();
            if self.buf.capacity() > (1 << 20).max(self.capacity) {
                self.buf.shrink_to(self.capacity);
            }
        }
        Ok(())
    }

    /// Writes framed bytes straight through, after anything queued.
    pub async fn write_raw(&mut self, framed: &[u8]) -> std::io::Result<()> {
        self.flush().await?;
        self.inner.write_all(framed).await?;
        self.inner.flush().await
    }

    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_and_joins_large_payloads() {
        let payload: Vec<u8> = (0..MAX_PAYLOAD + 10).map(|i| (i % 251) as u8).collect();
        let mut w = PacketWriter::new(Vec::new());
        let next = w.push(0, &payload);
        assert_eq!(next, 2);
        w.push(2, &[]);
        w.flush().await.unwrap();
        let bytes = w.inner.clone();
        let mut r = PacketReader::new(&bytes[..]);
        let (first, last, got) = r.read_message(usize::MAX).await.unwrap().unwrap();
        assert_eq!((first, last), (0, 1));
        assert_eq!(&got[..], &payload[..]);
        let (seq, _, empty) = r.read_message(usize::MAX).await.unwrap().unwrap();
        assert_eq!(seq, 2);
        assert!(empty.is_empty());
        assert!(r.read_message(usize::MAX).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn refuses_oversized_and_truncated_packets() {
        let mut w = PacketWriter::new(Vec::new());
        w.push(0, &[7u8; 100]);
        w.flush().await.unwrap();
        let bytes = w.inner.clone();
        let mut r = PacketReader::new(&bytes[..]);
        assert!(matches!(
            r.read_message(50).await,
            Err(PacketError::TooLarge { size: 100, max: 50 })
        ));
        let mut r = PacketReader::new(&bytes[..20]);
        assert!(matches!(
            r.read_message(1000).await,
            Err(PacketError::Truncated)
        ));
    }

    #[tokio::test]
    async fn a_client_writer_gives_back_what_a_big_result_made_it_grow_to() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let drain = tokio::spawn(async move {
            let mut client = client;
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut w = PacketWriter::with_capacity(server, 2048);
        assert_eq!(
            w.buffer_capacity(),
            0,
            "nothing allocated before the first reply"
        );
        // A result of many rows, queued in a few pieces as a relay does.
        let row = [b'x'; 1000];
        let mut seq = 1;
        for _ in 0..300 {
            seq = w.push(seq, &row);
        }
        w.flush().await.unwrap();
        assert!(
            w.buffer_capacity() >= 300 * 1004,
            "kept across the response's flushes"
        );
        w.push(seq, &[0xfe, 0, 0, 2, 0]);
        w.release();
        assert_eq!(w.pending(), 9, "nothing queued is dropped");
        w.flush().await.unwrap();
        w.release();
        assert_eq!(w.buffer_capacity(), 0, "an idle writer holds no buffer");
        w.push(0, b"ok");
        assert!(w.buffer_capacity() >= 6 && w.buffer_capacity() < 64);
        w.shutdown().await.unwrap();
        drop(w);
        let all = drain.await.unwrap();
        assert_eq!(all.len(), 300 * 1004 + 9 + 6);
    }

    #[tokio::test]
    async fn a_client_reader_holds_no_buffer_between_messages() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut r = PacketReader::with_chunk(server, 2048);
        let mut out = Vec::new();
        frame(0, b"\x03SELECT 1", &mut out);
        client.write_all(&out).await.unwrap();
        let (_, _, p) = r.read_message(1 << 20).await.unwrap().unwrap();
        assert_eq!(&p[..], b"\x03SELECT 1");
        assert_eq!(r.buffer_capacity(), 0, "the message took the whole buffer");
        drop(p);

        // A big statement, read in several pieces, then two small ones in one write.
        let big: Vec<u8> = (0..100_000).map(|i| (i % 250) as u8).collect();
        out.clear();
        frame(0, &big, &mut out);
        let reading = tokio::spawn(async move {
            let (_, _, p) = r.read_message(1 << 20).await.unwrap().unwrap();
            (r, p)
        });
        for piece in out.chunks(7000) {
            client.write_all(piece).await.unwrap();
        }
        let (mut r, p) = reading.await.unwrap();
        assert_eq!(&p[..], &big[..]);
        drop(p);
        out.clear();
        frame(0, b"\x0e", &mut out);
        frame(0, b"\x03SELECT 2", &mut out);
        client.write_all(&out).await.unwrap();
        let (_, _, p) = r.read_message(1 << 20).await.unwrap().unwrap();
        assert_eq!(&p[..], b"\x0e");
        let (_, _, p) = r.read_message(1 << 20).await.unwrap().unwrap();
        assert_eq!(&p[..], b"\x03SELECT 2");
        assert_eq!(
            r.buffer_capacity(),
            0,
            "nothing kept after the big statement"
        );

        // Waiting for the next message holds no buffer either, and the end of the stream
        // between messages is a clean end.
        let waiting = tokio::spawn(async move {
            let m = r.read_message(1 << 20).await;
            (m.unwrap().is_none(), r.buffer_capacity())
        });
        tokio::task::yield_now().await;
        drop(client);
        assert_eq!(waiting.await.unwrap(), (true, 0));
    }
}
