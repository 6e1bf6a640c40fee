//! Lets every gRPC client through the Workload API socket, whatever
//! `:authority` it sends (ARCHITECTURE.md, trap 15).
//!
//! Over a Unix socket, gRPC C-core (grpcio, py-spiffe) sends the
//! percent-encoded socket path as `:authority` and grpc-java the raw path.
//! Neither is a valid URI authority, and the `h2` crate under tonic resets
//! such a stream with PROTOCOL_ERROR before any handler runs; it has no
//! option to relax that. The authority means nothing on a local socket, so
//! [`AnyAuthority`] sits between the socket and h2 and rewrites the
//! client's HEADERS frames: each header block is HPACK-decoded (with the
//! client's dynamic table, kept across blocks), an `:authority` that does
//! not parse is replaced by `localhost`, and the block is re-encoded as
//! plain literals that never touch h2's dynamic table. Every other frame,
//! and everything the server writes, passes through unchanged.
//!
//! Malformed HTTP/2 from the client closes the connection; this layer
//! never panics on input and buffers at most one header block.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use hyper::http::uri::Authority;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame header length.
const FRAME_HEADER: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Largest frame written towards h2: the smallest SETTINGS_MAX_FRAME_SIZE
/// a peer may announce, so it always fits.
const MAX_FRAME: usize = 16_384;
/// Largest header block accepted (all its frames together).
const MAX_BLOCK: usize = 256 * 1024;
/// Largest dynamic table size a client may switch to.
const MAX_TABLE: usize = 64 * 1024;
/// What an unparsable authority becomes.
const REPLACEMENT: &[u8] = b"localhost";

/// Why a client's byte stream was refused.
#[derive(Debug, thiserror::Error)]
#[error("HTTP/2 from the Workload API client: {0}")]
pub(crate) struct Malformed(String);

/// A header block being collected from HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct Pending {
    stream: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
}

/// Rewrites the client-to-server bytes of one HTTP/2 connection.
pub(crate) struct Rewriter {
    preface_done: bool,
    /// Bytes of a non-header frame still to pass through unread.
    passthrough: usize,
    decoder: loona_hpack::Decoder<'static>,
    block: Vec<u8>,
    pending: Option<Pending>,
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter")
            .field("preface_done", &self.preface_done)
            .field("passthrough", &self.passthrough)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl Default for Rewriter {
    fn default() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(MAX_TABLE);
        Rewriter {
            preface_done: false,
            passthrough: 0,
            decoder,
            block: Vec::new(),
            pending: None,
        }
    }
}

impl Rewriter {
    /// Moves everything complete in `input` to `out`, rewritten; an
    /// incomplete frame stays in `input` for the next call.
    pub(crate) fn process(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<(), Malformed> {
        loop {
            if !self.preface_done {
                if input.len() < PREFACE.len() {
                    return Ok(());
                }
                out.extend_from_slice(&input.split_to(PREFACE.len()));
                self.preface_done = true;
            }
            if self.passthrough > 0 {
                let n = self.passthrough.min(input.len());
                if n == 0 {
                    return Ok(());
                }
                out.extend_from_slice(&input.split_to(n));
                self.passthrough -= n;
                continue;
            }
            if input.len() < FRAME_HEADER {
                return Ok(());
            }
            let len =
                usize::from(input[0]) << 16 | usize::from(input[1]) << 8 | usize::from(input[2]);
            let kind = input[3];
            if kind != TYPE_HEADERS && kind != TYPE_CONTINUATION {
                if self.pending.is_some() {
                    return Err(Malformed(format!(
                        "frame type {kind:#x} inside a header block (CONTINUATION expected)"
                    )));
                }
                out.extend_from_slice(&input.split_to(FRAME_HEADER));
                self.passthrough = len;
                continue;
            }
            if self.block.len() + len > MAX_BLOCK {
                return Err(Malformed(format!(
                    "header block larger than {MAX_BLOCK} bytes"
                )));
            }
            if input.len() < FRAME_HEADER + len {
                input.reserve(FRAME_HEADER + len - input.len());
                return Ok(());
            }
            let frame = input.split_to(FRAME_HEADER + len);
            self.header_frame(&frame, out)?;
        }
    }

    /// One complete HEADERS or CONTINUATION frame.
    fn header_frame(&mut self, frame: &[u8], out: &mut BytesMut) -> Result<(), Malformed> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream: [u8; 4] = [frame[5], frame[6], frame[7], frame[8]];
        let mut payload = &frame[FRAME_HEADER..];
        if kind == TYPE_HEADERS {
            if self.pending.is_some() {
                return Err(Malformed("HEADERS inside a header block".into()));
            }
            if flags & FLAG_PADDED != 0 {
                let (&pad, rest) = payload
                    .split_first()
                    .ok_or_else(|| Malformed("PADDED HEADERS without a pad length".into()))?;
                let keep = rest
                    .len()
                    .checked_sub(usize::from(pad))
                    .ok_or_else(|| Malformed("padding longer than the HEADERS frame".into()))?;
                payload = &rest[..keep];
            }
            let priority = if flags & FLAG_PRIORITY != 0 {
                let (fields, rest) = payload
                    .split_at_checked(5)
                    .ok_or_else(|| Malformed("PRIORITY HEADERS too short".into()))?;
                payload = rest;
                let mut p = [0u8; 5];
                p.copy_from_slice(fields);
                Some(p)
            } else {
                None
            };
            self.pending = Some(Pending {
                stream,
                end_stream: flags & FLAG_END_STREAM != 0,
                priority,
            });
        } else {
            match &self.pending {
                Some(p) if p.stream == stream => {}
                _ => return Err(Malformed("CONTINUATION outside a header block".into())),
            }
        }
        self.block.extend_from_slice(payload);
        if flags & FLAG_END_HEADERS != 0 {
            self.emit(out)?;
        }
        Ok(())
    }

    /// Decodes the collected block, fixes `:authority` and writes it as
    /// HEADERS (+ CONTINUATION) frames.
    fn emit(&mut self, out: &mut BytesMut) -> Result<(), Malformed> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        let mut encoded = Vec::with_capacity(self.block.len() + 64);
        self.decoder
            .decode_with_cb(&self.block, |name, value| {
                let value: &[u8] =
                    if &*name == b":authority" && Authority::try_from(&*value).is_err() {
                        REPLACEMENT
                    } else {
                        &value
                    };
                literal(&mut encoded, &name, value);
            })
            .map_err(|e| Malformed(format!("header block: {e}")))?;
        self.block.clear();
        let mut rest: &[u8] = &encoded;
        let mut first = true;
        loop {
            let room = MAX_FRAME
                - if first && pending.priority.is_some() {
                    5
                } else {
                    0
                };
            let (chunk, after) = rest.split_at(room.min(rest.len()));
            let last = after.is_empty();
            let mut flags = if last { FLAG_END_HEADERS } else { 0 };
            let kind = if first {
                if pending.end_stream {
                    flags |= FLAG_END_STREAM;
                }
                if pending.priority.is_some() {
                    flags |= FLAG_PRIORITY;
                }
                TYPE_HEADERS
            } else {
                TYPE_CONTINUATION
            };
            let priority: &[u8] = match (&pending.priority, first) {
                (Some(p), true) => p,
                _ => &[],
            };
            let len = chunk.len() + priority.len();
            // `len` ≤ MAX_FRAME, so it fits in the 24-bit length field.
            out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
            out.extend_from_slice(&pending.stream);
            out.extend_from_slice(priority);
            out.extend_from_slice(chunk);
            if last {
                return Ok(());
            }
            rest = after;
            first = false;
        }
    }
}

/// A literal header field without indexing, new name, no Huffman coding
/// (RFC 7541 §6.2.2): h2's dynamic table is never touched.
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    string(out, name);
    string(out, value);
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// An HPACK integer with an `prefix`-bit prefix (RFC 7541 §5.1).
fn integer(out: &mut Vec<u8>, high_bits: u8, prefix: u8, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(high_bits | value as u8);
        return;
    }
    out.push(high_bits | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// A connection whose inbound HTTP/2 is passed through a [`Rewriter`];
/// writes go straight to the socket.
#[derive(Debug)]
pub(crate) struct AnyAuthority<S> {
    inner: S,
    rewriter: Rewriter,
    input: BytesMut,
    output: BytesMut,
    eof: bool,
}

impl<S> AnyAuthority<S> {
    /// Wraps a freshly accepted connection.
    pub(crate) fn new(inner: S) -> Self {
        AnyAuthority {
            inner,
            rewriter: Rewriter::default(),
            input: BytesMut::with_capacity(16 * 1024),
            output: BytesMut::with_capacity(16 * 1024),
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AnyAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = buf.remaining().min(this.output.len());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            if read.filled().is_empty() {
                this.eof = true;
                continue;
            }
            this.input.extend_from_slice(read.filled());
            if let Err(e) = this.rewriter.process(&mut this.input, &mut this.output) {
                tracing::debug!(error = %e, "closing a Workload API connection");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AnyAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AnyAuthority<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests;
