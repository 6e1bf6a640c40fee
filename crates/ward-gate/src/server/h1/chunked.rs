//! Finding the end of a chunked body that passes through unchanged.
//!
//! The gate forwards `Transfer-Encoding: chunked` bodies byte for byte; it
//! only has to know where the body ends, so that the next message on the
//! connection starts in the right place. [`Scanner`] follows the framing of
//! RFC 9112 §7.1 strictly (CRLF line ends, hexadecimal sizes that fit in 64
//! bits, bounded extension and trailer lines) and rejects anything else:
//! a lenient scanner is how request smuggling starts.

/// Longest chunk-size line extension or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Most trailer bytes accepted in all.
const MAX_TRAILERS: usize = 16 * 1024;

/// Where the scanner is in the framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hexadecimal chunk size; `digits` seen so far.
    Size { digits: u8 },
    /// In a chunk extension, up to the CR.
    Ext,
    /// Expecting the LF after a chunk-size line.
    SizeLf,
    /// In chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// Expecting the LF ending a trailer line.
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    /// The body has ended.
    Done,
}

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub(crate) struct ChunkError(&'static str);

/// Follows a chunked body as its bytes go by.
#[derive(Debug, Clone)]
pub(crate) struct Scanner {
    state: State,
    size: u64,
    line: usize,
    trailers: usize,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            state: State::Size { digits: 0 },
            size: 0,
            line: 0,
            trailers: 0,
        }
    }
}

impl Scanner {
    /// Whether the whole body, trailers included, has gone by.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes of the body; returns how many belong to it (all of
    /// `buf`, or fewer when the body ends inside `buf`).
    pub(crate) fn feed(&mut self, buf: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                State::Done => return Ok(i),
                State::Data(left) => {
                    let avail = (buf.len() - i) as u64;
                    let take = left.min(avail);
                    // `take` ≤ the bytes left in `buf`, so it fits in usize.
                    i += usize::try_from(take).unwrap_or(buf.len() - i);
                    self.state = if take == left {
                        State::DataCr
                    } else {
                        State::Data(left - take)
                    };
                    continue;
                }
                _ => {}
            }
            let b = buf[i];
            i += 1;
            self.state = match self.state {
                State::Size { digits } => match hex(b) {
                    Some(v) => {
                        if digits >= 16 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        self.size = (self.size << 4) | u64::from(v);
                        State::Size { digits: digits + 1 }
                    }
                    None if digits == 0 => return Err(ChunkError("missing chunk size")),
                    None => match b {
                        b'\r' => State::SizeLf,
                        b';' | b' ' | b'\t' => {
                            self.line = 0;
                            State::Ext
                        }
                        _ => return Err(ChunkError("invalid chunk size")),
                    },
                },
                State::Ext => match b {
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(ChunkError("bare LF in chunk extension")),
                    _ => {
                        self.line += 1;
                        if self.line > MAX_LINE {
                            return Err(ChunkError("chunk extension too long"));
                        }
                        State::Ext
                    }
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk size line not ended by CRLF"));
                    }
                    let size = std::mem::take(&mut self.size);
                    if size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data(size)
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError("chunk data not followed by CRLF"));
                    }
                    State::DataLf
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk data not followed by CRLF"));
                    }
                    State::Size { digits: 0 }
                }
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(ChunkError("bare LF in trailers")),
                    _ => {
                        self.line = 1;
                        self.count_trailer()?;
                        State::Trailer
                    }
                },
                State::Trailer => match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(ChunkError("bare LF in trailers")),
                    _ => {
                        self.line += 1;
                        if self.line > MAX_LINE {
                            return Err(ChunkError("trailer line too long"));
                        }
                        self.count_trailer()?;
                        State::Trailer
                    }
                },
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError("trailer line not ended by CRLF"));
                    }
                    State::TrailerStart
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunked body not ended by CRLF"));
                    }
                    State::Done
                }
                // Handled before a byte is taken.
                s @ (State::Data(_) | State::Done) => s,
            };
        }
        Ok(i)
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(ChunkError("trailers too large"));
        }
        Ok(())
    }
}

/// The value of one hex digit, either case.
fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes; returns the bytes consumed.
    fn scan(body: &[u8], step: usize) -> Result<(usize, bool), ChunkError> {
        let mut s = Scanner::default();
        let mut used = 0;
        for piece in body.chunks(step) {
            let n = s.feed(piece)?;
            used += n;
            if s.is_done() {
                break;
            }
        }
        Ok((used, s.is_done()))
    }

    #[test]
    fn finds_the_end_whatever_the_split() {
        let body = b"5\r\nhello\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\nGET /next";
        let end = body.len() - b"GET /next".len();
        for step in 1..body.len() {
            assert_eq!(scan(body, step), Ok((end, true)), "step {step}");
        }
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        assert_eq!(scan(b"5\r\nhel", 64), Ok((6, false)));
        assert_eq!(scan(b"0\r\n", 64), Ok((3, false)));
        assert_eq!(scan(b"0\r\n\r", 64), Ok((4, false)));
    }

    #[test]
    fn rejects_malformed_framing() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"0\r\n\n",
            b"0\r\nx: y\n\r\n",
            b"11111111111111111\r\n",
            b"-1\r\n",
            b"5 \n",
        ] {
            assert!(scan(bad, 64).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_64_bit_size_is_accepted_as_framing() {
        let mut s = Scanner::default();
        assert_eq!(s.feed(b"ffffffffffffffff\r\nab"), Ok(20));
        assert!(!s.is_done());
    }

    #[test]
    fn bounds_extensions_and_trailers() {
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'a', MAX_LINE + 1));
        assert!(scan(&long_ext, 64).is_err());
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..(MAX_TRAILERS / 100 + 1) {
            trailers.extend(std::iter::repeat_n(b'a', 100));
            trailers.extend(b"\r\n");
        }
        assert!(scan(&trailers, 64).is_err());
    }
}
