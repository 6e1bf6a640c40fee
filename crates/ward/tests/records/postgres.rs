//! PostgreSQL reads the client's CN: a throwaway server (initdb into a
//! temporary directory, run as the `postgres` system user because initdb
//! refuses root) with a Ward server certificate, Ward's root as
//! `ssl_ca_file` and `hostssl all all 127.0.0.1/32 cert
//! clientcert=verify-full`, accepts a Ward-issued client certificate whose
//! CN a token bound (`ward token create --cn app_user`) as the role
//! `app_user`, and refuses one naming another role.
//!
//! Skipped with a notice when the PostgreSQL server binaries are missing, or
//! the test cannot switch to an unprivileged user (not root), unless `CI`.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::identity::csr_with_subject;
use super::offline::cert_create;
use crate::common::OutputText;
use crate::harness::{Backend, Ca, sign_req};

/// The newest `/usr/lib/postgresql/VERSION/bin` holding `initdb` and `postgres`.
fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// uid and gid of a system user, from `id`.
fn ids_of(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        out.status.success().then_some(())?;
        out.stdout_text().trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// A command run as `uid:gid` (set between fork and exec: no wrapper
/// process, so the child's PID is the server's own).
fn as_user(bin: &Path, (uid, gid): (u32, u32)) -> Command {
    let mut cmd = Command::new(bin);
    cmd.uid(uid).gid(gid).env_remove("PGDATA");
    cmd
}

/// Gives `path` to `uid:gid` with `mode`.
fn hand_over(path: &Path, (uid, gid): (u32, u32), mode: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The throwaway server; stopped by its PID when dropped.
struct Postgres {
    child: Child,
    port: u16,
    socket_dir: PathBuf,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn psql(args: &[&str]) -> Output {
    Command::new("psql")
        .args(args)
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("psql runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_accepts_the_bound_cn() {
    let under_ci = std::env::var_os("CI").is_some();
    let (Some(bin), Some(ids)) = (pg_bin(), ids_of("postgres")) else {
        assert!(
            !under_ci,
            "the PostgreSQL server and its postgres user are required under CI"
        );
        println!("skipped: no PostgreSQL server binaries or no postgres user");
        return;
    };
    // Switching to the postgres user needs root.
    if Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout_text()
        .trim()
        != "0"
    {
        assert!(
            !under_ci,
            "this test switches to the postgres user and needs root under CI"
        );
        println!("skipped: not root, cannot run the throwaway server as postgres");
        return;
    }
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = ca.serve();
    let client = ca.client(&server);

    // The client: a token binding CN app_user, a CSR asking for it.
    let token = ca.token(
        "spiffe://example.org/db/app",
        &["--cn", "app_user", "--profile", "client"],
    );
    let (csr, key) = csr_with_subject(&ca, "/CN=app_user");
    let issued = client
        .send(&sign_req(&token.secret, &csr))
        .await
        .expect(201);
    let chain = ca.write("app.crt", issued["chain"].as_str().unwrap());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Another client whose CN names no role that may log in as app_user.
    let other_token = ca.token(
        "spiffe://example.org/db/other",
        &["--cn", "intruder", "--profile", "client"],
    );
    let (other_csr, other_key) = csr_with_subject(&ca, "/CN=intruder");
    let other = client
        .send(&sign_req(&other_token.secret, &other_csr))
        .await
        .expect(201);
    let other_chain = ca.write("other.crt", other["chain"].as_str().unwrap());
    std::fs::set_permissions(&other_key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The server's certificate (offline issuance) and its directory.
    let tls = cert_create(
        &ca,
        "pg-server",
        &[
            "--profile",
            "server",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
        ],
    );
    let base = ca.pki().path("pg");
    std::fs::create_dir_all(&base).unwrap();
    // The temporary directory above is root's (0700): let postgres through.
    let mut up = base.parent();
    while let Some(dir) = up {
        if dir == std::env::temp_dir() || dir.parent().is_none() {
            break;
        }
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o711)).unwrap();
        up = dir.parent();
    }
    hand_over(&base, ids, 0o700);
    let data = base.join("data");
    let out = as_user(&bin.join("initdb"), ids)
        .args([
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb: {}{}",
        out.stdout_text(),
        out.stderr_text()
    );
    for (from, name, mode) in [
        (&tls.chain, "server.crt", 0o644),
        (&tls.key, "server.key", 0o600),
        (&ca.root(), "root.crt", 0o644),
    ] {
        let to = data.join(name);
        std::fs::copy(from, &to).unwrap();
        hand_over(&to, ids, mode);
    }
    let hba = data.join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all postgres trust\nhostssl all all 127.0.0.1/32 cert clientcert=verify-full\n",
    )
    .unwrap();
    hand_over(&hba, ids, 0o600);

    // Start it on a free port (picked by binding port 0), retrying on a race.
    let mut pg = None;
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = as_user(&bin.join("postgres"), ids)
            .args(["-D", data.to_str().unwrap(), "-k", base.to_str().unwrap()])
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "ssl=on"])
            .args([
                "-c",
                "ssl_cert_file=server.crt",
                "-c",
                "ssl_key_file=server.key",
            ])
            .args(["-c", "ssl_ca_file=root.crt"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready = loop {
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break true;
            }
            assert!(Instant::now() < deadline, "postgres never accepted");
            std::thread::sleep(Duration::from_millis(50));
        };
        if ready {
            pg = Some(Postgres {
                child,
                port,
                socket_dir: base.clone(),
            });
            break;
        }
        let out = child.wait_with_output().unwrap();
        let err = out.stderr_text();
        assert!(err.contains("in use"), "postgres exited: {err}");
    }
    let pg = pg.expect("postgres started");
    let port = pg.port.to_string();
    let sock = pg.socket_dir.to_str().unwrap();
    let out = psql(&[
        "-h",
        sock,
        "-p",
        &port,
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "CREATE ROLE app_user LOGIN",
    ]);
    assert!(out.status.success(), "create role: {}", out.stderr_text());

    let connect = |chain: &Path, key: &Path| {
        let conninfo = format!(
            "host=127.0.0.1 port={port} dbname=postgres user=app_user sslmode=verify-full \
             sslrootcert={} sslcert={} sslkey={}",
            ca.root().display(),
            chain.display(),
            key.display()
        );
        psql(&[&conninfo, "-qAt", "-c", "SELECT current_user"])
    };
    let out = connect(&chain, &key);
    assert!(out.status.success(), "psql: {}", out.stderr_text());
    assert_eq!(out.stdout_text().trim(), "app_user");
    let out = connect(&other_chain, &other_key);
    assert!(
        !out.status.success(),
        "a certificate for another CN logged in"
    );
    assert!(
        out.stderr_text()
            .contains("certificate authentication failed"),
        "{}",
        out.stderr_text()
    );
    drop(pg);
}
