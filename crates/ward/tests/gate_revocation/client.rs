//! A rustls client with TLS 1.3 session resumption (in-memory tickets, as
//! rustls does by default) that keeps HTTP/1.1 connections alive, or talks
//! lines to a TCP tenant.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};

/// A client identity and its session cache.
pub(crate) struct Client {
    config: Arc<ClientConfig>,
}

/// An open connection.
pub(crate) struct Conn {
    tls: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl Client {
    /// A client presenting `crt`/`key`, trusting `root`; `resume` keeps
    /// session tickets for resumption.
    pub(crate) fn new(root: &str, crt: &Path, key: &Path, resume: bool) -> Client {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(root).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let chain: Vec<_> = CertificateDer::pem_file_iter(crt)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let mut config = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
        if !resume {
            config.resumption = Resumption::disabled();
        }
        Client {
            config: Arc::new(config),
        }
    }

    /// Connects, completes the handshake and reads the server's first
    /// records: session tickets when it accepted the client certificate,
    /// an alert when it did not (TLS 1.3 refuses a client certificate after
    /// the client's Finished). The gate sends tickets on every handshake.
    pub(crate) fn connect(&self, addr: SocketAddr) -> io::Result<Conn> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(self.config.clone(), name).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        // The first call may only write the client's last flight; the
        // second then reads. Nothing read at all: the server closed.
        if tls.conn.complete_io(&mut tls.sock)?.0 == 0
            && tls.conn.complete_io(&mut tls.sock)?.0 == 0
        {
            return Err(closed());
        }
        Ok(Conn {
            tls,
            buf: Vec::new(),
        })
    }

    /// One request on a new connection: Ok(status) or the error.
    pub(crate) fn get_once(&self, addr: SocketAddr) -> io::Result<u16> {
        self.connect(addr)?.get("/")
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed")
}

impl Conn {
    /// Whether the handshake resumed a session.
    pub(crate) fn resumed(&self) -> bool {
        self.tls.conn.handshake_kind() == Some(HandshakeKind::Resumed)
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.tls.read(&mut chunk)?;
        if n == 0 {
            return Err(closed());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// `GET path` with keep-alive; the response status (the body is read
    /// and dropped; `Content-Length` framing).
    pub(crate) fn get(&mut self, path: &str) -> io::Result<u16> {
        write!(self.tls, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        self.tls.flush()?;
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad response: {head}")))?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .ok_or_else(|| io::Error::other(format!("no content-length: {head}")))?;
        while self.buf.len() < end + length {
            self.fill()?;
        }
        self.buf.drain(..end + length);
        Ok(status)
    }

    /// Sends `line` to a TCP tenant and returns the answer line.
    pub(crate) fn line(&mut self, line: &str) -> io::Result<String> {
        writeln!(self.tls, "{line}")?;
        self.tls.flush()?;
        let end = loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                break i;
            }
            self.fill()?;
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..=end);
        Ok(text)
    }
}
