//! `gen-fixtures`: regenerates Ward's committed test PKI.
//!
//! Usage: `cargo run -p ward-testkit --bin gen-fixtures [OUT_DIR]`, where
//! `OUT_DIR` defaults to `crates/ward-testkit/fixtures`. Everything that
//! ward-pki can build is built with ward-pki, so the good fixtures are exactly
//! what Ward issues; [`hostile`] uses rcgen for the few certificates ward-pki
//! refuses to make, and `fixtures/gen-legacy.sh` uses the openssl command for
//! the two that aws-lc refuses to make (RSA-1024, SHA-1). The catalog in
//! [`catalog`] names every file and renders `README.md`.
//!
//! Dates are fixed so committed fixtures neither rot nor change meaning; keys
//! and serials are random, so output differs byte for byte on every run. It
//! never deletes files: a renamed fixture leaves its old files behind, and
//! the structure test in `tests/fixtures.rs` then fails until they are removed.

#![forbid(unsafe_code)]

mod catalog;
mod hostile;

use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use time::macros::datetime;
use ward_pki::issue::{CaSpec, Issued, Issuer, LeafRequest, Profile, new_root};
use ward_pki::{KeyType, PrivateKey, Serial, pem};

/// Start of validity of the CAs and the good leaves.
pub(crate) const GOOD_FROM: OffsetDateTime = datetime!(2020-01-01 00:00 UTC);
/// End of validity of the CAs and the good leaves.
pub(crate) const GOOD_UNTIL: OffsetDateTime = datetime!(2120-01-01 00:00 UTC);
/// Issuance time of `expired` (valid for one day from then).
const EXPIRED_ISSUED: OffsetDateTime = datetime!(2021-01-01 00:00 UTC);
/// Issuance time of `not-yet-valid` (valid for 365 days from then).
const NOT_YET_VALID_ISSUED: OffsetDateTime = datetime!(2100-01-01 00:00 UTC);

/// A root and intermediate with their keys.
struct Hierarchy {
    root: Issued,
    intermediate: Issuer,
    /// The intermediate again, for [`hostile`]'s rcgen-built certificates.
    signer: hostile::Signer,
}

/// Where files go; remembers what it wrote.
struct Out {
    dir: PathBuf,
    written: Vec<String>,
}

/// The SANs and EKU profile of one leaf.
struct Leaf<'a> {
    profile: Profile,
    spiffe_id: &'a str,
    serves_localhost: bool,
}

fn main() -> anyhow::Result<()> {
    let dir = match std::env::args_os().nth(1) {
        Some(arg) if arg == "-h" || arg == "--help" => {
            println!(
                "usage: gen-fixtures [OUT_DIR]  (default: {})",
                ward_testkit::fixtures_dir().display()
            );
            return Ok(());
        }
        Some(arg) => PathBuf::from(arg),
        None => ward_testkit::fixtures_dir(),
    };
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Out {
        dir,
        written: Vec::new(),
    };

    let real = hierarchy(Some(&mut out))?;
    good_leaves(&mut out, &real)?;
    hostile_leaves(&mut out, &real)?;
    run_legacy_script(&mut out)?;

    for file in catalog::files() {
        if !out.written.iter().any(|w| w == file) {
            bail!("{file} is in the catalog but was not generated");
        }
    }
    if let Some(extra) = out
        .written
        .iter()
        .find(|w| !catalog::files().any(|f| f == w.as_str()))
    {
        bail!("{extra} was generated but is missing from the catalog");
    }
    out.write("README.md", catalog::readme().as_bytes(), false)?;
    println!(
        "wrote {} fixtures to {}",
        out.written.len(),
        out.dir.display()
    );
    Ok(())
}

/// Builds a root and intermediate named for `example.org`. With `out`, writes
/// them as the real hierarchy; without, they are the imposter's.
fn hierarchy(mut out: Option<&mut Out>) -> anyhow::Result<Hierarchy> {
    let lifetime = std::time::Duration::try_from(GOOD_UNTIL - GOOD_FROM)?;
    let spec = CaSpec {
        name: "example.org".into(),
        root_validity: lifetime,
        intermediate_validity: lifetime,
        permitted_dns: Vec::new(),
    };
    let root_key = KeyType::EcdsaP256.generate()?;
    let root = new_root(&spec, &root_key, GOOD_FROM)?;
    if let Some(out) = out.as_mut() {
        out.cert("root.crt", &[&root.der])?;
        out.key("root.key", &root_key)?;
    }
    // RSA so that gen-legacy.sh can sign with sha1WithRSAEncryption.
    let int_key = KeyType::Rsa2048.generate()?;
    let int =
        Issuer::new(root.der.clone(), root_key)?.sign_intermediate(&spec, &int_key, GOOD_FROM)?;
    if let Some(out) = out.as_mut() {
        out.cert("intermediate.crt", &[&int.der])?;
        out.key("intermediate.key", &int_key)?;
    }
    let signer = hostile::Signer::new(&int.der, &int_key.to_pkcs8_pem()?)?;
    Ok(Hierarchy {
        root,
        intermediate: Issuer::new(int.der, int_key)?,
        signer,
    })
}

fn good_leaves(out: &mut Out, ca: &Hierarchy) -> anyhow::Result<()> {
    for (name, profile, serves_localhost) in [
        ("server", Profile::Server, true),
        ("client", Profile::Client, false),
        ("peer", Profile::Peer, true),
    ] {
        let leaf = Leaf {
            profile,
            spiffe_id: &format!("spiffe://example.org/{name}"),
            serves_localhost,
        };
        let (cert, key) = issue(ca, &leaf, GOOD_FROM, GOOD_UNTIL - GOOD_FROM)?;
        out.leaf(name, &cert, Some(ca), &key)?;
    }
    Ok(())
}

fn hostile_leaves(out: &mut Out, real: &Hierarchy) -> anyhow::Result<()> {
    let peer = |spiffe_id| Leaf {
        profile: Profile::Peer,
        spiffe_id,
        serves_localhost: true,
    };
    let good_life = GOOD_UNTIL - GOOD_FROM;

    let (cert, key) = issue(
        real,
        &peer("spiffe://example.org/expired"),
        EXPIRED_ISSUED,
        time::Duration::days(1),
    )?;
    out.leaf("expired", &cert, Some(real), &key)?;

    let (cert, key) = issue(
        real,
        &peer("spiffe://example.org/not-yet-valid"),
        NOT_YET_VALID_ISSUED,
        time::Duration::days(365),
    )?;
    out.leaf("not-yet-valid", &cert, Some(real), &key)?;

    let server_only = Leaf {
        profile: Profile::Server,
        spiffe_id: "spiffe://example.org/server-only",
        serves_localhost: true,
    };
    let (cert, key) = issue(real, &server_only, GOOD_FROM, good_life)?;
    out.leaf("server-only", &cert, Some(real), &key)?;

    let (cert, key) = issue(
        real,
        &peer("spiffe://example.org/missing-intermediate"),
        GOOD_FROM,
        good_life,
    )?;
    out.leaf("missing-intermediate", &cert, None, &key)?;

    let (cert, key) = issue(real, &peer("spiffe://evil.example/x"), GOOD_FROM, good_life)?;
    out.leaf("wrong-td", &cert, Some(real), &key)?;

    // Same names as the real hierarchy, other keys; claims the server's names.
    let imposter = hierarchy(None)?;
    out.cert("other-root.crt", &[&imposter.root.der])?;
    let (cert, key) = issue(
        &imposter,
        &peer("spiffe://example.org/server"),
        GOOD_FROM,
        good_life,
    )?;
    out.leaf("imposter", &cert, Some(&imposter), &key)?;

    // Built with rcgen directly: ward-pki refuses to make these.
    type Build = fn(&hostile::Signer, &PrivateKey) -> anyhow::Result<Vec<u8>>;
    let builders: [(&str, Build); 3] = [
        ("no-eku", hostile::Signer::no_eku),
        ("ca-leaf", hostile::Signer::ca_leaf),
        ("two-uris", hostile::Signer::two_uris),
    ];
    for (name, build) in builders {
        let key = KeyType::EcdsaP256.generate()?;
        let cert = CertificateDer::from(build(&real.signer, &key)?);
        out.leaf(name, &cert, Some(real), &key)?;
    }
    Ok(())
}

/// Issues a leaf with ward-pki, exactly as Ward would, at time `now`.
fn issue(
    ca: &Hierarchy,
    leaf: &Leaf<'_>,
    now: OffsetDateTime,
    lifetime: time::Duration,
) -> anyhow::Result<(CertificateDer<'static>, PrivateKey)> {
    let key = KeyType::EcdsaP256.generate()?;
    let (dns_names, ip_addresses) = if leaf.serves_localhost {
        (
            vec!["localhost".to_owned()],
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let req = LeafRequest {
        profile: leaf.profile,
        spiffe_id: Some(leaf.spiffe_id.parse()?),
        dns_names,
        ip_addresses,
        common_name: None,
        ttl: std::time::Duration::try_from(lifetime)?,
        clamp_to_issuer: false,
        serial: Serial::random(now)?,
        crl_url: None,
        ocsp_url: None,
    };
    let issued = ca
        .intermediate
        .sign_leaf(&key.public_key_der(), &req, now)?;
    Ok((issued.der, key))
}

/// Runs `gen-legacy.sh` (kept beside the committed fixtures) on `out.dir`.
fn run_legacy_script(out: &mut Out) -> anyhow::Result<()> {
    let script = ward_testkit::fixture("gen-legacy.sh");
    let status = Command::new("sh")
        .arg(&script)
        .arg(&out.dir)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); is openssl installed?",
            script.display()
        );
    }
    for name in ["rsa-1024", "sha1"] {
        for ext in ["crt", "key"] {
            let file = format!("{name}.{ext}");
            if !out.dir.join(&file).is_file() {
                bail!("{} did not write {file}", script.display());
            }
            out.written.push(file);
        }
    }
    Ok(())
}

impl Out {
    /// Writes `leaf` (plus the intermediate of `chain`, if any) to
    /// `NAME.crt` and its key to `NAME.key`.
    fn leaf(
        &mut self,
        name: &str,
        leaf: &CertificateDer<'_>,
        chain: Option<&Hierarchy>,
        key: &PrivateKey,
    ) -> anyhow::Result<()> {
        let mut certs = vec![leaf];
        certs.extend(chain.map(|h| h.intermediate.cert_der()));
        self.cert(&format!("{name}.crt"), &certs)?;
        self.key(&format!("{name}.key"), key)
    }

    fn cert(&mut self, name: &str, certs: &[&CertificateDer<'_>]) -> anyhow::Result<()> {
        let pem = pem::certs_to_pem(certs.iter().map(|c| c.as_ref()));
        self.write(name, pem.as_bytes(), false)?;
        self.written.push(name.to_owned());
        Ok(())
    }

    fn key(&mut self, name: &str, key: &PrivateKey) -> anyhow::Result<()> {
        self.write(name, key.to_pkcs8_pem()?.as_bytes(), true)?;
        self.written.push(name.to_owned());
        Ok(())
    }

    /// Writes a file, readable by its owner only when `private`.
    fn write(&self, name: &str, bytes: &[u8], private: bool) -> anyhow::Result<()> {
        let path = self.dir.join(name);
        write_file(&path, bytes, private).with_context(|| format!("writing {}", path.display()))
    }
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let mode = if private { 0o600 } else { 0o644 };
        options.mode(mode);
        // `mode` applies only to new files; fix up one that already exists.
        if path.exists() {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = private;
    options.open(path)?.write_all(bytes)
}
