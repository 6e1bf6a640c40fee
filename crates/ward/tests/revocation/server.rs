//! A `ward ca serve` with both listeners (`--listen` and `--http-listen` on
//! 127.0.0.1:0), started after its readiness lines, killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use crate::harness::Ca;

/// A running CA with its two addresses.
pub(crate) struct DualServer {
    child: Child,
    /// HTTPS listener.
    pub(crate) https: SocketAddr,
    /// Plain-HTTP listener.
    pub(crate) http: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl DualServer {
    /// Starts the server and waits for both readiness lines.
    pub(crate) fn start(ca: &Ca) -> DualServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(["ca", "serve", "--dir", ca.dir()])
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(ca.db_args())
            .args(ca.init_storage_args())
            .envs(ca.envs().iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ward ca serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let buf = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.strip_prefix("ward ca: listening on https://") {
                    let _ = tx.send((true, a.to_owned()));
                } else if let Some(a) = line.strip_prefix("ward ca: listening on http://") {
                    let _ = tx.send((false, a.to_owned()));
                }
                let mut b = buf.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
            }
        });
        let mut https = None;
        let mut http = None;
        while https.is_none() || http.is_none() {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok((true, a)) => https = Some(a.parse().unwrap()),
                Ok((false, a)) => http = Some(a.parse().unwrap()),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "ward ca serve never got ready ({e}): {}",
                        stderr.lock().unwrap()
                    );
                }
            }
        }
        DualServer {
            child,
            https: https.unwrap(),
            http: http.unwrap(),
            stderr,
        }
    }

    /// Everything it wrote on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for DualServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
