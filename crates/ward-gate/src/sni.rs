//! A small, strict reader of the server name in a ClientHello, for the SNI
//! passthrough decision.
//!
//! The passthrough path only needs the server name, and it needs it for
//! every new connection, so it does not build a whole rustls connection
//! (`Acceptor`) for it. [`read`] answers only for the common shape: one
//! handshake record holding exactly one complete ClientHello whose outer
//! structure (lengths, null compression, no repeated extension, a
//! `signature_algorithms` extension) is sound and whose `server_name`
//! extension holds one plain DNS host name. Everything else is
//! [`Sni::Unsure`], and the caller asks rustls, as before.
//!
//! What this reader does not check: the contents of extensions other than
//! `server_name` (key shares, versions, ...). A passthrough route forwards
//! such a ClientHello to its upstream, which terminates TLS and judges it.
//! Where this reader names a server, rustls either names the same one or
//! refuses the ClientHello; the `sni` fuzz target checks exactly that.

/// What the first bytes of a connection say about its server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sni {
    /// The first TLS record has not fully arrived.
    Incomplete,
    /// A sound ClientHello, with its host name (lowercase) if it has one.
    Found(Option<String>),
    /// Not a shape this reader answers for (not TLS, a ClientHello split
    /// over records, malformed, an unusual name): rustls decides.
    Unsure,
}

/// TLS record content type `handshake`.
const HANDSHAKE: u8 = 22;
/// Handshake message type `client_hello`.
const CLIENT_HELLO: u8 = 1;
/// The largest plaintext record (RFC 8446, 5.1).
const MAX_RECORD: usize = 16 * 1024;
/// Extension `server_name` (RFC 6066).
const SERVER_NAME: u16 = 0;
/// Extension `signature_algorithms`, which rustls requires.
const SIGNATURE_ALGORITHMS: u16 = 13;
/// More extensions than this are left to rustls.
const MAX_EXTENSIONS: usize = 64;
/// The longest DNS name (RFC 1035, without the root label).
const MAX_NAME: usize = 253;

/// Reads the server name from the bytes a client sent first.
pub fn read(bytes: &[u8]) -> Sni {
    read_record(bytes).unwrap_or(Sni::Unsure)
}

/// A cursor over a byte slice; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `None`: unsure.
fn read_record(bytes: &[u8]) -> Option<Sni> {
    // The record header: handshake, TLS 1.x, a plausible length.
    let Some((&kind, rest)) = bytes.split_first() else {
        return Some(Sni::Incomplete);
    };
    if kind != HANDSHAKE {
        return None;
    }
    if rest.first().is_some_and(|&major| major != 3) || rest.get(1).is_some_and(|&minor| minor > 4)
    {
        return None;
    }
    let Some(len) = rest.get(2..4) else {
        return Some(Sni::Incomplete);
    };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let Some(record) = bytes.get(5..5 + len) else {
        return Some(Sni::Incomplete);
    };
    // Exactly one handshake message, a ClientHello, fills the record.
    let mut r = Reader(record);
    if r.u8()? != CLIENT_HELLO {
        return None;
    }
    let body_len = r.u24()?;
    let body = r.take(body_len)?;
    if !r.is_empty() {
        return None;
    }
    client_hello(body).map(Sni::Found)
}

/// The host name of a ClientHello body (after the handshake header).
fn client_hello(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    if r.vec8()?.len() > 32 {
        return None; // legacy_session_id
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    if !r.vec8()?.contains(&0) {
        return None; // rustls requires null compression
    }
    let extensions = r.vec16()?;
    if !r.is_empty() {
        return None;
    }
    let mut r = Reader(extensions);
    let mut seen = [0u16; MAX_EXTENSIONS];
    let mut count = 0;
    let mut name = None;
    let mut signature_algorithms = false;
    while !r.is_empty() {
        let kind = r.u16()?;
        let data = r.vec16()?;
        if count == MAX_EXTENSIONS || seen[..count].contains(&kind) {
            return None;
        }
        seen[count] = kind;
        count += 1;
        match kind {
            SERVER_NAME => name = Some(host_name(data)?),
            SIGNATURE_ALGORITHMS => signature_algorithms = true,
            _ => {}
        }
    }
    signature_algorithms.then_some(name)
}

/// The one `host_name` of a `server_name` extension, lowercase.
fn host_name(data: &[u8]) -> Option<String> {
    let mut r = Reader(data);
    let list = r.vec16()?;
    if !r.is_empty() {
        return None;
    }
    let mut r = Reader(list);
    if r.u8()? != 0 {
        return None; // not host_name
    }
    let name = r.vec16()?;
    if !r.is_empty() || !is_plain_dns_name(name) {
        return None;
    }
    let mut name = name.to_vec();
    name.make_ascii_lowercase();
    String::from_utf8(name).ok()
}

/// Letters, digits and inner hyphens in labels of 1 to 63 bytes, at most
/// 253 bytes, and a letter in the last label (so never an IP address).
/// Any other name, even one DNS allows, is left to rustls.
fn is_plain_dns_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > MAX_NAME {
        return false;
    }
    let labels_ok = name.split(|&b| b == b'.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.first() != Some(&b'-')
            && label.last() != Some(&b'-')
            && label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    });
    let last = name.rsplit(|&b| b == b'.').next().unwrap_or_default();
    labels_ok && last.iter().any(u8::is_ascii_alphabetic)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A ClientHello body with these extensions `(type, data)`.
    fn body(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend_from_slice(&[7; 32]);
        b.push(32);
        b.extend_from_slice(&[9; 32]);
        b.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
        b.extend_from_slice(&[1, 0]);
        let mut ext = Vec::new();
        for (kind, data) in extensions {
            ext.extend_from_slice(&kind.to_be_bytes());
            ext.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
            ext.extend_from_slice(data);
        }
        b.extend_from_slice(&u16::try_from(ext.len()).unwrap().to_be_bytes());
        b.extend_from_slice(&ext);
        b
    }

    /// A `server_name` extension's data naming `name`.
    fn sni(name: &[u8]) -> Vec<u8> {
        let n = u16::try_from(name.len()).unwrap();
        let mut d = (n + 3).to_be_bytes().to_vec();
        d.push(0);
        d.extend_from_slice(&n.to_be_bytes());
        d.extend_from_slice(name);
        d
    }

    fn sig() -> (u16, Vec<u8>) {
        (SIGNATURE_ALGORITHMS, vec![0, 2, 0x08, 0x04])
    }

    /// One handshake record around a ClientHello body.
    fn record(body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut hs = vec![CLIENT_HELLO, len[1], len[2], len[3]];
        hs.extend_from_slice(body);
        let mut r = vec![HANDSHAKE, 3, 1];
        r.extend_from_slice(&u16::try_from(hs.len()).unwrap().to_be_bytes());
        r.extend_from_slice(&hs);
        r
    }

    fn hello(name: &[u8]) -> Vec<u8> {
        record(&body(&[(SERVER_NAME, sni(name)), sig()]))
    }

    fn found(name: &str) -> Sni {
        Sni::Found(Some(name.to_owned()))
    }

    #[test]
    fn reads_the_name_lowercase_and_ignores_what_follows_the_record() {
        assert_eq!(read(&hello(b"B.Example.Test")), found("b.example.test"));
        let mut more = hello(b"a.test");
        more.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert_eq!(read(&more), found("a.test"));
        assert_eq!(read(&record(&body(&[sig()]))), Sni::Found(None));
    }

    #[test]
    fn every_truncation_is_incomplete_or_unsure_never_a_name() {
        let full = hello(b"b.example.test");
        for cut in 0..full.len() {
            assert_eq!(read(&full[..cut]), Sni::Incomplete, "cut at {cut}");
        }
        // The record claims fewer bytes than the ClientHello needs: every
        // shortened record is malformed.
        let body = body(&[(SERVER_NAME, sni(b"b.example.test")), sig()]);
        for cut in 0..body.len() {
            let mut short = record(&body[..cut]);
            // Keep the handshake length of the full body.
            let len = u32::try_from(body.len()).unwrap().to_be_bytes();
            short[6..9].copy_from_slice(&len[1..]);
            assert_eq!(read(&short), Sni::Unsure, "body cut at {cut}");
            assert_eq!(read(&record(&body[..cut])), Sni::Unsure, "cut at {cut}");
        }
    }

    #[test]
    fn record_headers_it_does_not_answer_for() {
        let good = hello(b"a.test");
        let with = |i: usize, v: u8| {
            let mut b = good.clone();
            b[i] = v;
            b
        };
        assert_eq!(read(b"GET / HTTP/1.1\r\n"), Sni::Unsure);
        assert_eq!(read(&with(0, 23)), Sni::Unsure, "not a handshake record");
        assert_eq!(read(&with(1, 2)), Sni::Unsure, "not TLS 1.x");
        assert_eq!(read(&with(2, 9)), Sni::Unsure, "unknown minor version");
        assert_eq!(read(&with(5, 2)), Sni::Unsure, "a ServerHello");
        // Zero and oversized record lengths.
        assert_eq!(read(&[HANDSHAKE, 3, 1, 0, 0]), Sni::Unsure);
        assert_eq!(read(&[HANDSHAKE, 3, 1, 0x40, 1]), Sni::Unsure);
        assert_eq!(read(&[HANDSHAKE, 3, 1, 0x40, 0]), Sni::Incomplete);
        // A handshake length past the record: split over records.
        let mut split = good.clone();
        split[8] += 1;
        assert_eq!(read(&split), Sni::Unsure);
        // A record longer than its ClientHello: a second message follows.
        let mut trailing = good.clone();
        trailing.push(0);
        let len = u16::from_be_bytes([trailing[3], trailing[4]]) + 1;
        trailing[3..5].copy_from_slice(&len.to_be_bytes());
        assert_eq!(read(&trailing), Sni::Unsure);
    }

    #[test]
    fn malformed_client_hello_bodies_are_left_to_rustls() {
        let ext = |e: &[(u16, Vec<u8>)]| read(&record(&body(e)));
        let name = || (SERVER_NAME, sni(b"a.test"));
        assert_eq!(ext(&[name()]), Sni::Unsure, "no signature_algorithms");
        assert_eq!(ext(&[name(), sig(), name()]), Sni::Unsure, "repeated");
        assert_eq!(ext(&[name(), sig(), sig()]), Sni::Unsure, "repeated");
        let many: Vec<_> = (100..100 + MAX_EXTENSIONS as u16)
            .map(|k| (k, vec![]))
            .collect();
        assert_eq!(ext(&[&many[..], &[sig()]].concat()), Sni::Unsure);
        assert_eq!(ext(&many[..MAX_EXTENSIONS - 1]), Sni::Unsure);
        assert_eq!(
            ext(&[&many[..MAX_EXTENSIONS - 1], &[sig()]].concat()),
            Sni::Found(None)
        );

        let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = body(&[name(), sig()]);
            f(&mut b);
            read(&record(&b))
        };
        assert_eq!(mutate(&|_| {}), found("a.test"));
        assert_eq!(mutate(&|b| b[34] = 33), Sni::Unsure, "session id > 32");
        assert_eq!(mutate(&|b| b[34] = 200), Sni::Unsure, "session id overruns");
        assert_eq!(mutate(&|b| b[68] = 3), Sni::Unsure, "odd suites length");
        assert_eq!(mutate(&|b| b[68] = 0), Sni::Unsure, "no suites");
        assert_eq!(mutate(&|b| b[68] = 0xff), Sni::Unsure, "suites overrun");
        assert_eq!(mutate(&|b| b[74] = 1), Sni::Unsure, "no null compression");
        assert_eq!(mutate(&|b| b[73] = 0), Sni::Unsure, "no compression");
        assert_eq!(mutate(&|b| b[76] += 1), Sni::Unsure, "extensions overrun");
        assert_eq!(
            mutate(&|b| b.push(0)),
            Sni::Unsure,
            "bytes after extensions"
        );
        assert_eq!(
            mutate(&|b| b[79..81].copy_from_slice(&[0xff, 0xff])),
            Sni::Unsure,
            "an extension overruns"
        );
        let no_extensions = mutate(&|b| b.truncate(75));
        assert_eq!(no_extensions, Sni::Unsure);
    }

    #[test]
    fn server_name_extensions_it_does_not_answer_for() {
        let with = |data: Vec<u8>| read(&record(&body(&[(SERVER_NAME, data), sig()])));
        assert_eq!(with(vec![]), Sni::Unsure, "empty");
        assert_eq!(with(vec![0, 0]), Sni::Unsure, "empty list");
        let mut two = sni(b"a.test");
        two.extend_from_slice(&[0, 0, 1, b'b']);
        let list = u16::try_from(two.len() - 2).unwrap();
        two[0..2].copy_from_slice(&list.to_be_bytes());
        assert_eq!(with(two), Sni::Unsure, "two names");
        let mut other_type = sni(b"a.test");
        other_type[2] = 1;
        assert_eq!(with(other_type), Sni::Unsure, "not host_name");
        let mut long_list = sni(b"a.test");
        long_list[1] += 1;
        assert_eq!(with(long_list), Sni::Unsure, "list overruns");
        let mut short_list = sni(b"a.test");
        short_list[1] -= 1;
        assert_eq!(with(short_list), Sni::Unsure, "name overruns list");
        let mut trailing = sni(b"a.test");
        trailing.push(0);
        assert_eq!(with(trailing), Sni::Unsure, "bytes after the list");
        let mut long_name = sni(b"a.test");
        long_name[4] += 1;
        assert_eq!(with(long_name), Sni::Unsure, "name overruns");
    }

    #[test]
    fn only_plain_dns_names_are_answered() {
        let ok = |n: &str| read(&hello(n.as_bytes())) == found(&n.to_ascii_lowercase());
        assert!(ok("a.test"));
        assert!(ok("localhost"));
        assert!(ok("x-1.Example.ORG"));
        assert!(ok(&format!("{}.test", "a".repeat(63))));
        let long = format!(
            "{}.{}.test",
            vec!["c".repeat(63); 3].join("."),
            "c".repeat(56)
        );
        assert_eq!(long.len(), 253);
        assert!(ok(&long));
        for bad in [
            "127.0.0.1",
            "10.0.0.1.2",
            "::1",
            "a..test",
            ".a.test",
            "a.test.",
            "-a.test",
            "a-.test",
            "a_b.test",
            "a b.test",
            "a.123",
            "é.test",
            "a\0.test",
        ] {
            assert_eq!(read(&hello(bad.as_bytes())), Sni::Unsure, "{bad:?}");
        }
        let too_long = format!("{}.test", "a".repeat(64));
        assert_eq!(read(&hello(too_long.as_bytes())), Sni::Unsure);
        let too_long = format!("a{long}");
        assert_eq!(read(&hello(too_long.as_bytes())), Sni::Unsure);
    }
}
