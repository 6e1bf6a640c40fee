//! The harness every CA scenario shares: a CA directory on SQLite or a fresh
//! PostgreSQL database and `ward ca serve` processes that are killed when
//! dropped (here), an HTTPS client trusting the CA root ([`client`]), and
//! openssl and curl as judges and clients ([`oracles`]).

mod client;
mod oracles;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) use self::client::{Client, Req, Resp, burst, count, serials_of_token, sign_req};
pub(crate) use self::oracles::{
    canon_serial, cert_pubkey, curl, distinct, key_pubkey, not_after, openssl, pem_certs, sans,
    x509,
};
pub(crate) use crate::common::{OutputText, Pki, openssl_verify, ward};

/// How long a server may take to print its readiness line or to exit.
const PROCESS_DEADLINE: Duration = Duration::from_secs(60);

/// Which storage a CA runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// `DIR/ward.db`, the default.
    Sqlite,
    /// A fresh database in `WARD_TEST_DATABASE_URL`'s server.
    Postgres,
}

/// Runs one scenario `fn(Backend)` as two tests, `sqlite` and `postgres`,
/// in a module named after the scenario.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario(crate::harness::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario(crate::harness::Backend::Postgres).await;
            }
        }
    )*};
}

/// 64 random-enough bits as hex, for unique names.
pub(crate) fn random_hex() -> String {
    use std::hash::{BuildHasher, RandomState};
    let n = RandomState::new().hash_one((std::process::id(), Instant::now()));
    format!("{n:016x}")
}

fn psql(url: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
        .output()
        .expect("psql runs")
}

/// `base` with its database name replaced by `name` (query kept).
fn with_database(base: &str, name: &str) -> String {
    let (main, query) = match base.split_once('?') {
        Some((m, q)) => (m, format!("?{q}")),
        None => (base, String::new()),
    };
    let authority = main.find("://").expect("a URL") + 3;
    let path = main[authority..]
        .find('/')
        .map_or(main.len(), |i| i + authority);
    format!("{}/{name}{query}", &main[..path])
}

/// A fresh PostgreSQL database, dropped (connections and all) on drop.
struct PgDb {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDb {
    fn create() -> Option<PgDb> {
        let base = std::env::var("WARD_TEST_DATABASE_URL")
            .ok()
            .filter(|s| !s.is_empty())?;
        let name = format!("ward_e2e_{}", random_hex());
        let out = psql(&base, &format!("CREATE DATABASE {name}"));
        assert!(
            out.status.success(),
            "CREATE DATABASE failed: {}",
            out.stderr_text()
        );
        Some(PgDb {
            url: with_database(&base, &name),
            admin_url: base,
            name,
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A token as `ward token create --format json` prints it.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    /// The secret (`wdt_…`).
    pub(crate) secret: String,
    /// The public id (`tok_…`).
    pub(crate) id: String,
}

/// A CA directory and its database.
pub(crate) struct Ca {
    pki: Pki,
    db: Option<PgDb>,
    files: AtomicUsize,
    /// Environment every `ward` process of this CA gets.
    envs: Vec<(String, String)>,
}

impl Ca {
    /// A fresh CA on `backend`; `None` (after saying so) when PostgreSQL is
    /// asked for but `WARD_TEST_DATABASE_URL` is not set.
    pub(crate) fn new(backend: Backend) -> Option<Ca> {
        Ca::new_with(backend, &[])
    }

    /// Like [`Ca::new`], with extra `ward ca init` flags (`--key-type …`).
    pub(crate) fn new_with(backend: Backend, init: &[&str]) -> Option<Ca> {
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let Some(db) = PgDb::create() else {
                    println!("skipped: WARD_TEST_DATABASE_URL not set");
                    return None;
                };
                Some(db)
            }
        };
        Some(Ca {
            pki: Pki::init(init),
            db,
            files: AtomicUsize::new(0),
            envs: Vec::new(),
        })
    }

    /// A CA made by `init` in `pki` (a directory with no CA yet) on
    /// SQLite, every `ward` process of which gets `envs`.
    #[allow(dead_code)] // used by the hsm tests, not by every binary
    pub(crate) fn in_pki(pki: Pki, init: &[&str], envs: Vec<(String, String)>) -> Ca {
        Ca {
            pki: pki.init_here(init, &envs),
            db: None,
            files: AtomicUsize::new(0),
            envs,
        }
    }

    /// The environment every `ward` process of this CA gets.
    #[allow(dead_code)] // used by the hsm and revocation tests, not by every binary
    pub(crate) fn envs(&self) -> &[(String, String)] {
        &self.envs
    }

    /// The CA directory.
    pub(crate) fn dir(&self) -> &str {
        self.pki.ca_dir()
    }

    /// A file in the CA directory.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        Path::new(self.dir()).join(name)
    }

    /// The root certificate.
    pub(crate) fn root(&self) -> PathBuf {
        self.pki.root()
    }

    /// The test's temporary directory.
    pub(crate) fn pki(&self) -> &Pki {
        &self.pki
    }

    /// A fresh path in the temporary directory, named after `stem`.
    pub(crate) fn scratch(&self, stem: &str) -> PathBuf {
        let n = self.files.fetch_add(1, Ordering::Relaxed);
        self.pki.path(&format!("{n:03}-{stem}"))
    }

    /// Writes `text` to a fresh scratch file.
    pub(crate) fn write(&self, stem: &str, text: &str) -> PathBuf {
        let path = self.scratch(stem);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `--database URL` for PostgreSQL, nothing for SQLite.
    pub(crate) fn db_args(&self) -> Vec<String> {
        match &self.db {
            Some(db) => vec!["--database".into(), db.url.clone()],
            None => Vec::new(),
        }
    }

    /// `--init-storage` for PostgreSQL (a fresh database holds no store
    /// yet; `ca init` made the SQLite one), nothing for SQLite.
    pub(crate) fn init_storage_args(&self) -> Vec<&'static str> {
        match &self.db {
            Some(_) => vec!["--init-storage"],
            None => Vec::new(),
        }
    }

    /// The PostgreSQL URL of this CA's database, if it has one.
    #[allow(dead_code)] // used by the records tests, not by every binary
    pub(crate) fn database_url(&self) -> Option<&str> {
        self.db.as_ref().map(|db| db.url.as_str())
    }

    /// Rewrites `[limits]` in ca.toml (read when the server starts):
    /// (per second, burst) per source address and per token.
    pub(crate) fn set_limits(&self, address: (u32, u32), token: (u32, u32)) {
        let path = self.file("ca.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let out: Vec<String> = text
            .lines()
            .map(|line| {
                let value = match line.split_once(" = ").map(|(k, _)| k) {
                    Some("per_address_per_second") => address.0,
                    Some("per_address_burst") => address.1,
                    Some("per_token_per_second") => token.0,
                    Some("per_token_burst") => token.1,
                    _ => return line.to_owned(),
                };
                format!("{} = {value}", line.split_once(" = ").unwrap().0)
            })
            .collect();
        let new = out.join("\n") + "\n";
        assert_ne!(new, text, "ca.toml has no [limits] to change");
        std::fs::write(&path, new).unwrap();
    }

    /// Runs `ward` with `args` followed by this CA's `--dir` and `--database`.
    pub(crate) fn ward(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend(["--dir".to_owned(), self.dir().to_owned()]);
        all.extend(self.db_args());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        crate::common::ward_env(&refs, &self.envs)
    }

    /// `ward token create --spiffe-id ID EXTRA… --format json`.
    pub(crate) fn token(&self, spiffe_id: &str, extra: &[&str]) -> Token {
        let mut args = vec![
            "token",
            "create",
            "--spiffe-id",
            spiffe_id,
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = self.ward(&args);
        assert!(
            out.status.success(),
            "token create failed: {}",
            out.stderr_text()
        );
        let json: Value = serde_json::from_str(&out.stdout_text()).unwrap();
        Token {
            secret: json["token"].as_str().unwrap().to_owned(),
            id: json["id"].as_str().unwrap().to_owned(),
        }
    }

    /// `ward token revoke ID [--with-certificates]`.
    pub(crate) fn revoke(&self, id: &str, with_certificates: bool) {
        let mut args = vec!["token", "revoke", id];
        if with_certificates {
            args.push("--with-certificates");
        }
        let out = self.ward(&args);
        assert!(out.status.success(), "token revoke: {}", out.stderr_text());
    }

    /// The token as `ward token list --format json` shows it.
    pub(crate) fn token_info(&self, id: &str) -> Value {
        let out = self.ward(&["token", "list", "--format", "json"]);
        assert!(out.status.success(), "token list: {}", out.stderr_text());
        let json: Value = serde_json::from_str(&out.stdout_text()).unwrap();
        json["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("no token {id} in {json}"))
            .clone()
    }

    /// Starts `ward ca serve` on this CA and waits until it accepts.
    pub(crate) fn serve(&self) -> Server {
        Server::start(self)
    }

    /// A client trusting this CA's root, without a client certificate.
    pub(crate) fn client(&self, server: &Server) -> Client {
        Client::new(server.addr, &self.root(), None)
    }

    /// A client presenting the admin certificate.
    pub(crate) fn admin(&self, server: &Server) -> Client {
        Client::new(
            server.addr,
            &self.root(),
            Some((&self.file("admin.crt"), &self.file("admin.key"))),
        )
    }

    /// An openssl-made P-256 CSR with an empty subject and `-addext` values.
    pub(crate) fn csr(&self, addext: &[&str]) -> Csr {
        let key = self.scratch("csr.key");
        let csr = self.scratch("csr.pem");
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-subj", "/"]);
        for ext in addext {
            cmd.args(["-addext", ext]);
        }
        let out = cmd
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl req: {}", out.stderr_text());
        Csr {
            pem: std::fs::read_to_string(&csr).unwrap(),
            key,
        }
    }
}

/// A CSR and the file holding its private key.
#[derive(Clone, Debug)]
pub(crate) struct Csr {
    /// The CSR, PEM.
    pub(crate) pem: String,
    /// Its private key (PKCS#8 PEM).
    pub(crate) key: PathBuf,
}

/// A running `ward ca serve`; killed and reaped when dropped.
pub(crate) struct Server {
    child: Option<Child>,
    /// Where it accepts HTTPS.
    pub(crate) addr: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(
    pipe: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
    ready: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let (Some(tx), Some(addr)) =
                (&ready, line.strip_prefix("ward ca: listening on https://"))
            {
                let _ = tx.send(addr.to_owned());
            }
            let mut buf = into.lock().unwrap();
            buf.push_str(&line);
            buf.push('\n');
        }
    })
}

impl Server {
    /// Starts `ward ca serve --listen 127.0.0.1:0` and waits for its
    /// readiness line.
    pub(crate) fn start(ca: &Ca) -> Server {
        Server::start_with(ca, &[])
    }

    /// Like [`Server::start`], with extra `ward ca serve` arguments.
    pub(crate) fn start_with(ca: &Ca, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(["ca", "serve", "--dir", ca.dir(), "--listen", "127.0.0.1:0"])
            .args(ca.db_args())
            // A fresh PostgreSQL database holds no store yet: create it, as
            // an operator does on first start (`ca init` made the SQLite one).
            .args(ca.init_storage_args())
            .args(extra)
            .envs(ca.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ward ca serve starts");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone(), None),
            collect(child.stderr.take().unwrap(), stderr.clone(), Some(tx)),
        ];
        let mut server = Server {
            child: Some(child),
            addr: "127.0.0.1:0".parse().unwrap(),
            stdout,
            stderr,
            readers,
        };
        match rx.recv_timeout(PROCESS_DEADLINE) {
            Ok(addr) => server.addr = addr.parse().expect("a socket address"),
            Err(e) => {
                server.kill();
                panic!("ward ca serve never got ready ({e}): {}", server.stderr());
            }
        }
        server
    }

    /// Everything it wrote on stdout so far (the audit log).
    pub(crate) fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything it wrote on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `https://127.0.0.1:PORT/path`, for curl.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    fn reap(&mut self, mut child: Child) -> ExitStatus {
        let deadline = Instant::now() + PROCESS_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ward ca serve did not exit in time: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        let child = self.child.take().expect("still running");
        let out = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .output()
            .expect("kill runs");
        assert!(out.status.success(), "kill -TERM: {}", out.stderr_text());
        self.reap(child)
    }

    /// SIGKILL, then reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.reap(child);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`.
pub(crate) async fn poll<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
