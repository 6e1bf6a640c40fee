//! Node attestation: one Workload API socket serving several workloads,
//! each identified by what the kernel says about the caller and matched
//! against registration entries (selectors → SPIFFE ID).
//!
//! At connection time (before any request is read) the agent takes the
//! caller's credentials from the socket (`SO_PEERCRED`: uid, gid, pid as
//! they were when the caller called `connect()`), then reads, for that pid,
//! `/proc/PID/exe` (its path and, when an entry needs it, the SHA-256 of
//! the file it names) and the cgroup v2 path from `/proc/PID/cgroup`. The
//! process start time (`/proc/PID/stat`) is read before and after: if it
//! changed, the pid was reused meanwhile and only uid and gid are kept.
//! Every request on that connection is answered for those credentials.
//!
//! Limits (docs/attestation.md): a process can pass its connection to
//! another (fd passing, fork after connect) and the receiver is served as
//! the original caller; a process may `exec` another binary after
//! connecting; path, digest and cgroup are readable only when the agent
//! may read the caller's `/proc` entries (run it as root, or as the same
//! user); the executable's digest is of the file at connection time,
//! capped at [`MAX_EXE`] bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use ward_client::Svid;
use ward_client::node::NodeClient;
use ward_client::schedule::{Backoff, backoff_delay, random_jitter, renew_at};
use ward_client::workload_api::proto::{
    Jwtsvid, JwtsvidRequest, JwtsvidResponse, X509svid, X509svidResponse,
};
use ward_pki::SpiffeId;
use ward_pki::selector::{Selector, parse_selectors};

/// Largest executable hashed for `unix:sha256:` selectors.
pub const MAX_EXE: u64 = 1 << 30;

/// Largest registrations file read.
pub const MAX_REGISTRATIONS_FILE: u64 = 1 << 20;

/// Most entries an agent serves.
pub const MAX_ENTRIES: usize = 1000;

/// Largest `/proc` text file read.
const MAX_PROC_FILE: u64 = 64 * 1024;

/// One entry this agent serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The SPIFFE ID a matching caller gets.
    pub spiffe_id: SpiffeId,
    /// All must match.
    pub selectors: Vec<Selector>,
}

impl Entry {
    /// Whether every selector matches `caller`.
    pub fn matches(&self, caller: &Caller) -> bool {
        self.selectors.iter().all(|s| match s {
            Selector::Uid(n) => caller.uid == *n,
            Selector::Gid(n) => caller.gid == *n,
            Selector::Path(p) => caller.exe.as_deref() == Some(p.as_str()),
            Selector::Sha256(h) => caller.sha256.as_deref() == Some(h.as_str()),
            Selector::Cgroup(c) => caller.cgroup.as_deref() == Some(c.as_str()),
        })
    }
}

/// Parses one entry from its wire or file form.
pub fn entry(spiffe_id: &str, selectors: &[String]) -> Result<Entry, String> {
    let spiffe_id: SpiffeId = spiffe_id.parse().map_err(|e| format!("{e}"))?;
    let selectors = parse_selectors(selectors).map_err(|e| e.to_string())?;
    Ok(Entry {
        spiffe_id,
        selectors,
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntries {
    #[serde(default)]
    entry: Vec<FileEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    spiffe_id: String,
    selectors: Vec<String>,
}

/// Reads a registrations file (TOML, `[[entry]]` tables with `spiffe_id`
/// and `selectors`).
pub fn load_file(path: &Path) -> Result<Vec<Entry>, String> {
    let fail = |e: String| format!("registrations file {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut text = String::new();
    file.take(MAX_REGISTRATIONS_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(e.to_string()))?;
    if text.len() as u64 > MAX_REGISTRATIONS_FILE {
        return Err(fail(format!("larger than {MAX_REGISTRATIONS_FILE} bytes")));
    }
    let parsed: FileEntries = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
    if parsed.entry.is_empty() {
        return Err(fail("no [[entry]]".into()));
    }
    if parsed.entry.len() > MAX_ENTRIES {
        return Err(fail(format!("more than {MAX_ENTRIES} entries")));
    }
    parsed
        .entry
        .iter()
        .enumerate()
        .map(|(i, e)| {
            entry(&e.spiffe_id, &e.selectors).map_err(|m| fail(format!("entry {}: {m}", i + 1)))
        })
        .collect()
}

/// What the kernel said about a caller when it connected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Process id, when the kernel gave one.
    pub pid: Option<i32>,
    /// `/proc/PID/exe`.
    pub exe: Option<String>,
    /// SHA-256 of that executable, lowercase hex (when an entry needs it).
    pub sha256: Option<String>,
    /// cgroup v2 path.
    pub cgroup: Option<String>,
}

impl Caller {
    /// A short description for logs (no secrets in it).
    pub fn describe(&self) -> String {
        format!(
            "uid {} gid {} pid {} exe {}",
            self.uid,
            self.gid,
            self.pid.map_or_else(|| "?".into(), |p| p.to_string()),
            self.exe.as_deref().unwrap_or("?")
        )
    }
}

fn read_small(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(MAX_PROC_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Field 22 of `/proc/PID/stat` (after the parenthesised command name).
fn start_time(proc_dir: &Path) -> Option<String> {
    let stat = read_small(&proc_dir.join("stat"))?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_owned)
}

fn sha256_file(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_EXE {
            return None;
        }
        ctx.update(&buf[..n]);
    }
    Some(
        ctx.finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// Reads what `/proc` says about `pid` (blocking file I/O).
fn resolve(uid: u32, gid: u32, pid: Option<i32>, hash: bool) -> Caller {
    let mut caller = Caller {
        uid,
        gid,
        pid,
        ..Default::default()
    };
    let Some(pid) = pid.filter(|p| *p > 0) else {
        return caller;
    };
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let Some(before) = start_time(&dir) else {
        return caller;
    };
    let exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned));
    let sha256 = if hash && exe.is_some() {
        sha256_file(&dir.join("exe"))
    } else {
        None
    };
    let cgroup = read_small(&dir.join("cgroup")).and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(str::to_owned)
    });
    if start_time(&dir).as_deref() != Some(before.as_str()) {
        tracing::warn!(
            pid,
            "the caller's pid was reused while it was read; only uid and gid count"
        );
        return caller;
    }
    caller.exe = exe;
    caller.sha256 = sha256;
    caller.cgroup = cgroup;
    caller
}

/// Identifies the peer of a freshly accepted connection.
pub async fn identify(stream: &UnixStream, hash: bool) -> Result<Caller, std::io::Error> {
    let cred = stream.peer_cred()?;
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
    tokio::task::spawn_blocking(move || resolve(uid, gid, pid, hash))
        .await
        .map_err(std::io::Error::other)
}

/// A connection with the caller it was identified as.
#[derive(Debug)]
pub struct Attested {
    pub(crate) stream: UnixStream,
    pub(crate) caller: Arc<Caller>,
}

impl tokio::io::AsyncRead for Attested {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Attested {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Attested {
    type ConnectInfo = Arc<Caller>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.caller.clone()
    }
}

/// The SVIDs this agent holds for its entries, by SPIFFE ID.
pub type NodeSvids = Arc<BTreeMap<SpiffeId, Arc<Svid>>>;

/// The entries served on the socket and their current SVIDs.
#[derive(Clone, Debug)]
pub struct Attestation {
    /// The entries (from a file at start-up, or from the CA once the agent
    /// has its own identity).
    pub entries: watch::Receiver<Arc<Vec<Entry>>>,
    /// Current SVIDs.
    pub svids: watch::Receiver<NodeSvids>,
    /// The CA client acting as this node agent, once it has its identity
    /// (JWT-SVIDs for attested callers are minted through it).
    pub node: watch::Receiver<Option<NodeClient>>,
}

impl Attestation {
    /// `FetchJWTSVID` for an attested caller entitled to `ids`: a token per
    /// ID (or for the one `wanted`, which must be among them), minted by the
    /// CA for this node and cached per (ID, audience set).
    pub async fn fetch_jwt(
        &self,
        ids: &[SpiffeId],
        req: &JwtsvidRequest,
    ) -> Result<JwtsvidResponse, Status> {
        ward_pki::jwt::check_audience(&req.audience).map_err(Status::invalid_argument)?;
        let chosen: Vec<&SpiffeId> = if req.spiffe_id.is_empty() {
            ids.iter().collect()
        } else {
            let one = ids
                .iter()
                .find(|id| id.as_str() == req.spiffe_id)
                .ok_or_else(|| {
                    Status::permission_denied(
                        "the requested SPIFFE ID is not one of this caller's entries",
                    )
                })?;
            vec![one]
        };
        let Some(node) = self.node.borrow().clone() else {
            return Err(Status::unavailable(
                "the agent has no identity yet; retry with backoff",
            ));
        };
        let mut svids = Vec::with_capacity(chosen.len());
        for id in chosen {
            let token = node.jwt_svid(id, &req.audience).await.map_err(|e| {
                tracing::warn!(spiffe_id = %id, error = %e, "cannot obtain a workload JWT-SVID");
                if e.is_definitive_refusal() {
                    Status::permission_denied(format!("the CA refused a JWT-SVID for {id}: {e}"))
                } else {
                    Status::unavailable(format!("cannot obtain a JWT-SVID for {id}: {e}"))
                }
            })?;
            svids.push(Jwtsvid {
                spiffe_id: id.to_string(),
                svid: token,
                hint: String::new(),
            });
        }
        Ok(JwtsvidResponse { svids })
    }

    /// Whether any entry needs the executable's digest.
    pub fn needs_digest(&self) -> bool {
        self.entries
            .borrow()
            .iter()
            .any(|e| e.selectors.iter().any(|s| matches!(s, Selector::Sha256(_))))
    }

    /// The SPIFFE IDs `caller` gets (in entry order, without repeats);
    /// `PermissionDenied` when none matches.
    pub fn ids_for(&self, caller: Option<&Arc<Caller>>) -> Result<Vec<SpiffeId>, Status> {
        let denied = || Status::permission_denied("no registration entry matches this caller");
        let caller = caller.ok_or_else(denied)?;
        let mut ids: Vec<SpiffeId> = Vec::new();
        let entries = self.entries.borrow().clone();
        for e in entries.iter().filter(|e| e.matches(caller)) {
            if !ids.contains(&e.spiffe_id) {
                ids.push(e.spiffe_id.clone());
            }
        }
        if ids.is_empty() {
            tracing::info!(caller = %caller.describe(), "workload API caller matches no entry");
            return Err(denied());
        }
        Ok(ids)
    }
}

/// Obtains the SVID of `id` from the CA and keeps it renewed (at two
/// thirds of its lifetime, retrying with backoff), publishing each one into
/// `svids`. Runs until aborted.
pub async fn keep(
    node: NodeClient,
    id: SpiffeId,
    svids: Arc<watch::Sender<NodeSvids>>,
    backoff: Backoff,
) {
    loop {
        let mut failures = 0u32;
        let svid = loop {
            match node.svid_for(&id).await {
                Ok(svid) => break Arc::new(svid),
                Err(e) => {
                    // An expired SVID is never handed out.
                    svids.send_if_modified(|map| {
                        if !map
                            .get(&id)
                            .is_some_and(|s| s.is_expired(SystemTime::now()))
                        {
                            return false;
                        }
                        let mut next = (**map).clone();
                        next.remove(&id);
                        *map = Arc::new(next);
                        true
                    });
                    failures = failures.saturating_add(1);
                    let delay = backoff_delay(failures, backoff, random_jitter());
                    tracing::error!(spiffe_id = %id, error = %e, retry_in = ?delay, "cannot obtain the workload SVID");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        tracing::info!(spiffe_id = %id, serial = %svid.serial(), "workload SVID obtained");
        let at = renew_at(
            svid.not_before(),
            svid.not_after(),
            svid.received_at(),
            random_jitter(),
        );
        svids.send_modify(|map| {
            let mut next = (**map).clone();
            next.insert(id.clone(), svid);
            *map = Arc::new(next);
        });
        let delay = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(delay).await;
    }
}

/// The SVIDs of `ids` held now, in `ids` order.
fn held(map: &NodeSvids, ids: &[SpiffeId]) -> Vec<Arc<Svid>> {
    ids.iter().filter_map(|id| map.get(id).cloned()).collect()
}

fn x509_response(svids: &[Arc<Svid>]) -> X509svidResponse {
    X509svidResponse {
        svids: svids
            .iter()
            .map(|s| X509svid {
                spiffe_id: s.spiffe_id().to_string(),
                x509_svid: s.chain_der_concat(),
                x509_svid_key: s.key_pkcs8_der().to_vec(),
                bundle: s.bundle_der_concat(),
                hint: String::new(),
            })
            .collect(),
        crl: Vec::new(),
        federated_bundles: HashMap::new(),
    }
}

/// The stream `FetchX509SVID` answers with.
pub(crate) type SvidStream = Pin<Box<dyn Stream<Item = Result<X509svidResponse, Status>> + Send>>;

/// A stream of the caller's SVIDs: now, and after each of them rotates.
pub(crate) fn follow_svids(
    mut svids: watch::Receiver<NodeSvids>,
    ids: Vec<SpiffeId>,
) -> Result<SvidStream, Status> {
    let first = held(&svids.borrow_and_update(), &ids);
    if first.is_empty() {
        return Err(Status::unavailable(
            "the agent has no SVID for this workload yet; retry with backoff",
        ));
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let serials = |v: &[Arc<Svid>]| v.iter().map(|s| s.serial().clone()).collect::<Vec<_>>();
        let mut sent = serials(&first);
        if tx.send(Ok(x509_response(&first))).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                changed = svids.changed() => {
                    if changed.is_err() {
                        let _ = tx.send(Err(Status::unavailable("the agent is shutting down"))).await;
                        return;
                    }
                }
                () = tx.closed() => return,
            }
            let now = held(&svids.borrow_and_update(), &ids);
            if now.is_empty() {
                let _ = tx
                    .send(Err(Status::unavailable(
                        "the agent holds no valid SVID for this workload now; retry with backoff",
                    )))
                    .await;
                return;
            }
            if serials(&now) == sent {
                continue;
            }
            sent = serials(&now);
            if tx.send(Ok(x509_response(&now))).await.is_err() {
                return;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Accepts connections on `listener`, identifies each caller, and yields
/// the identified connections; a caller that cannot be identified (no
/// peer credentials) is dropped.
pub(crate) fn incoming(
    listener: tokio::net::UnixListener,
    attest: Attestation,
) -> ReceiverStream<std::io::Result<Attested>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "workload API accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let tx = tx.clone();
            let hash = attest.needs_digest();
            tokio::spawn(async move {
                match identify(&stream, hash).await {
                    Ok(caller) => {
                        let _ = tx
                            .send(Ok(Attested {
                                stream,
                                caller: Arc::new(caller),
                            }))
                            .await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot identify a workload API caller; closing")
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Keeps the SVIDs of the node's entries: one renewal task per SPIFFE ID;
/// with [`crate::Registrations::FromCa`], the entries are fetched now and
/// every [`crate::ENTRIES_REFRESH`] (tasks of removed IDs stop, their
/// SVIDs are no longer served). Runs until aborted.
pub(crate) async fn serve_entries(
    node: NodeClient,
    source: crate::Registrations,
    entries: watch::Sender<Arc<Vec<Entry>>>,
    svids: Arc<watch::Sender<NodeSvids>>,
    backoff: Backoff,
) {
    let mut tasks: BTreeMap<SpiffeId, AbortOnDrop> = BTreeMap::new();
    loop {
        if matches!(source, crate::Registrations::FromCa) {
            match node.entries().await {
                Ok(list) => {
                    let parsed: Vec<Entry> = list
                        .iter()
                        .take(MAX_ENTRIES)
                        .filter_map(|e| match entry(&e.spiffe_id, &e.selectors) {
                            Ok(parsed) => Some(parsed),
                            Err(why) => {
                                tracing::warn!(entry = %e.id, error = %why, "skipping an unusable entry from the CA");
                                None
                            }
                        })
                        .collect();
                    entries.send_replace(Arc::new(parsed));
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot fetch this node's entries from the CA")
                }
            }
        }
        let wanted: Vec<SpiffeId> = entries
            .borrow()
            .iter()
            .map(|e| e.spiffe_id.clone())
            .collect();
        tasks.retain(|id, _| wanted.contains(id));
        svids.send_if_modified(|map| {
            if map.keys().all(|id| wanted.contains(id)) {
                return false;
            }
            let next = map
                .iter()
                .filter(|(id, _)| wanted.contains(id))
                .map(|(id, s)| (id.clone(), s.clone()))
                .collect();
            *map = Arc::new(next);
            true
        });
        for id in wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = tasks.entry(id.clone()) {
                let task = tokio::spawn(keep(node.clone(), id, svids.clone(), backoff));
                slot.insert(AbortOnDrop(task));
            }
        }
        match source {
            crate::Registrations::FromCa => tokio::time::sleep(crate::ENTRIES_REFRESH).await,
            _ => std::future::pending::<()>().await,
        }
    }
}

/// Aborts a task when dropped (so aborting [`serve_entries`] stops them all).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn all_selectors_must_match() {
        let e = entry(
            "spiffe://td/web",
            &["unix:uid:1001".into(), "unix:path:/usr/bin/python3".into()],
        )
        .unwrap();
        let mut c = Caller {
            uid: 1001,
            gid: 5,
            exe: Some("/usr/bin/python3".into()),
            ..Default::default()
        };
        assert!(e.matches(&c));
        c.uid = 1002;
        assert!(!e.matches(&c));
        c.uid = 1001;
        c.exe = None;
        assert!(!e.matches(&c));
    }

    #[test]
    fn the_own_process_is_identified() {
        let me = resolve(0, 0, Some(std::process::id() as i32), true);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(me.exe.as_deref(), exe.to_str());
        let bytes = std::fs::read(&exe).unwrap();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(me.sha256.as_deref(), Some(hex.as_str()));
    }

    #[test]
    fn registration_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(
            &p,
            "[[entry]]\nspiffe_id = \"spiffe://td/a\"\nselectors = [\"unix:uid:1\"]\n",
        )
        .unwrap();
        assert_eq!(load_file(&p).unwrap().len(), 1);
        std::fs::write(
            &p,
            "[[entry]]\nspiffe_id = \"spiffe://td/a\"\nselectors = [\"unix:uid:x\"]\n",
        )
        .unwrap();
        assert!(load_file(&p).unwrap_err().contains("entry 1"));
        std::fs::write(&p, "").unwrap();
        assert!(load_file(&p).is_err());
    }
}
