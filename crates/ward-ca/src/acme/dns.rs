//! A small DNS client for challenge validation: one question (A, AAAA or
//! TXT) over UDP to the configured resolver, falling back to TCP when the
//! answer is truncated. Written here because validation needs only these
//! three record types from one recursive resolver.
//!
//! Must never: trust an answer whose id or question does not match, or
//! read past the message (every offset is checked).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Record type A.
pub(crate) const A: u16 = 1;
/// Record type AAAA.
pub(crate) const AAAA: u16 = 28;
/// Record type TXT.
pub(crate) const TXT: u16 = 16;

/// How long one query may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A record's data, as validation needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// An address (A or AAAA).
    Addr(IpAddr),
    /// A TXT record's strings, concatenated.
    Txt(String),
}

fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a valid DNS name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    Ok(q)
}

/// Skips a (possibly compressed) name at `pos`; returns the offset after it.
fn skip_name(msg: &[u8], mut pos: usize) -> Result<usize, String> {
    loop {
        let len = *msg.get(pos).ok_or("truncated name")?;
        match len {
            0 => return Ok(pos + 1),
            l if l & 0xC0 == 0xC0 => return Ok(pos + 2),
            l => pos += 1 + usize::from(l),
        }
    }
}

fn u16_at(msg: &[u8], pos: usize) -> Result<u16, String> {
    match msg.get(pos..pos + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err("truncated message".into()),
    }
}

/// Parses an answer to query `id` for `qtype`: the matching records.
/// `Ok(None)` when the answer was truncated (retry over TCP).
fn parse_answer(msg: &[u8], id: u16, qtype: u16) -> Result<Option<Vec<Record>>, String> {
    if msg.len() < 12 || u16_at(msg, 0)? != id {
        return Err("answer does not match the query".into());
    }
    let flags = u16_at(msg, 2)?;
    if flags & 0x8000 == 0 {
        return Err("not an answer".into());
    }
    if flags & 0x0200 != 0 {
        return Ok(None);
    }
    match flags & 0x000F {
        0 | 3 => {} // NOERROR, NXDOMAIN (no records)
        rcode => return Err(format!("resolver answered with rcode {rcode}")),
    }
    let questions = u16_at(msg, 4)?;
    let answers = u16_at(msg, 6)?;
    let mut pos = 12;
    for _ in 0..questions {
        pos = skip_name(msg, pos)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        pos = skip_name(msg, pos)?;
        let rtype = u16_at(msg, pos)?;
        let rdlen = usize::from(u16_at(msg, pos + 8)?);
        let start = pos + 10;
        let data = msg
            .get(start..start + rdlen)
            .ok_or("truncated record data")?;
        pos = start + rdlen;
        if rtype != qtype {
            continue; // CNAMEs on the way
        }
        match (rtype, data.len()) {
            (A, 4) => out.push(Record::Addr(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            )))),
            (AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                out.push(Record::Addr(IpAddr::V6(Ipv6Addr::from(b))));
            }
            (TXT, _) => {
                let mut text = Vec::new();
                let mut i = 0;
                while i < data.len() {
                    let n = usize::from(data[i]);
                    text.extend_from_slice(data.get(i + 1..i + 1 + n).ok_or("truncated TXT")?);
                    i += 1 + n;
                }
                out.push(Record::Txt(String::from_utf8_lossy(&text).into_owned()));
            }
            _ => return Err("malformed address record".into()),
        }
    }
    Ok(Some(out))
}

fn random_id() -> u16 {
    let mut b = [0u8; 2];
    // A failed RNG leaves a fixed id; the question check still applies.
    let _ = aws_lc_rs::rand::fill(&mut b);
    u16::from_be_bytes(b)
}

/// Asks `server` for the `qtype` records of `name`.
pub(crate) async fn query(
    server: SocketAddr,
    name: &str,
    qtype: u16,
) -> Result<Vec<Record>, String> {
    let id = random_id();
    let q = encode_query(id, name, qtype)?;
    let udp = async {
        let bind: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
        sock.connect(server).await.map_err(|e| e.to_string())?;
        sock.send(&q).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        let n = sock.recv(&mut buf).await.map_err(|e| e.to_string())?;
        parse_answer(&buf[..n], id, qtype)
    };
    let first = tokio::time::timeout(TIMEOUT, udp)
        .await
        .map_err(|_| format!("DNS query to {server} timed out"))??;
    if let Some(records) = first {
        return Ok(records);
    }
    let tcp = async {
        let mut s = TcpStream::connect(server)
            .await
            .map_err(|e| e.to_string())?;
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        s.write_all(&framed).await.map_err(|e| e.to_string())?;
        let len = s.read_u16().await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        parse_answer(&buf, id, qtype)?.ok_or_else(|| "truncated over TCP".to_owned())
    };
    tokio::time::timeout(TIMEOUT, tcp)
        .await
        .map_err(|_| format!("DNS query to {server} over TCP timed out"))?
}

/// The first `nameserver` of /etc/resolv.conf (port 53).
pub(crate) fn system_resolver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next())
            .flatten()
            .and_then(|a| a.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_and_checked() {
        let q = encode_query(0x1234, "_acme-challenge.a.test", TXT).unwrap();
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1; // one answer
        a.extend_from_slice(&[0xC0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 0, 6, 5]);
        a.extend_from_slice(b"hello");
        assert_eq!(
            parse_answer(&a, 0x1234, TXT).unwrap().unwrap(),
            vec![Record::Txt("hello".into())]
        );
        assert!(parse_answer(&a, 0x1235, TXT).is_err());
        // Record data running past the message.
        let short = &a[..a.len() - 2];
        assert!(parse_answer(short, 0x1234, TXT).is_err());
        assert!(encode_query(1, "a..b", A).is_err());
    }
}
