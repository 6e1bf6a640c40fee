//! Intermediate rotation (issue 20): `ward ca rotate intermediate` makes the
//! next intermediate with the root key and records it in the store with the
//! time it starts signing (`now + overlap`); every `ward ca serve` sharing
//! the store publishes it at once (`GET /v1/intermediates`, OCSP) and
//! switches to it at that time, together, without a restart. The previous
//! intermediate stays published and keeps answering OCSP for its
//! certificates until the last of them can have expired.
//!
//! ```text
//! DIR/intermediates/<sha256>.crt   a rotated intermediate
//! DIR/intermediates/<sha256>.key   its key (0600)
//! ```
//!
//! `DIR/intermediate.crt` stays the intermediate of the directory as
//! `ward ca init` made it: it signs until the first rotation switches.
//!
//! Must never: let a cancelled or not-yet-due intermediate sign, or write a
//! key file that the store does not name (a failed rotation removes its
//! files).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use ward_pki::issue::{CaSpec, Issuer};
use ward_pki::{Fingerprint, PrivateKey, pem};
use ward_store::{CaIntermediate, Store};

use super::{CaDir, ROOT_KEY, read_certs, token_key};
use crate::config::KeysSection;
use crate::files::{self, PUBLIC_MODE, Replace, SECRET_MODE};
use crate::pkcs11::{self, KeyUri};
use crate::{CaConfig, Error};

/// The subdirectory rotated intermediates live in.
pub const INTERMEDIATES: &str = "intermediates";

/// What `ward ca rotate intermediate` is asked.
#[derive(Clone, Debug)]
pub struct RotateOptions {
    /// How long the next intermediate is published before it signs.
    pub overlap: Duration,
    /// Lifetime of the next intermediate; `None`: the current one's.
    pub validity: Option<Duration>,
    /// The root key file when it is kept offline (`--offline-root`).
    pub root_key: Option<PathBuf>,
}

/// Which intermediate signs at a time, and which are published besides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The rotated intermediate that signs; `None`: `DIR/intermediate.crt`.
    pub signing: Option<CaIntermediate>,
    /// Rotated intermediates published besides it (the pending one first).
    pub others: Vec<CaIntermediate>,
    /// Whether `DIR/intermediate.crt` is still published (it signs, or its
    /// certificates may still be valid).
    pub keep_initial: bool,
}

/// Decides from the store's rows which intermediate signs at `now`: the
/// last one not cancelled whose `signs_from` has passed, else the
/// directory's own. A replaced intermediate stays published until
/// `max_ttl` after its successor took over (no certificate it signed can
/// outlive that) or its own expiry, whichever is first.
pub fn resolve(rows: &[CaIntermediate], max_ttl: Duration, now: OffsetDateTime) -> Resolved {
    let mut live: Vec<&CaIntermediate> = rows.iter().filter(|r| r.cancelled_at.is_none()).collect();
    live.sort_by_key(|r| (r.signs_from, r.created_at));
    let signing_at = live.iter().rposition(|r| r.signs_from <= now);
    let mut others = Vec::new();
    for (i, row) in live.iter().enumerate() {
        match signing_at {
            Some(s) if i == s => {}
            Some(s) if i < s => {
                let successor = live[i + 1].signs_from;
                if now < (successor + max_ttl).min(row.not_after) {
                    others.push((*row).clone());
                }
            }
            _ => others.insert(0, (*row).clone()),
        }
    }
    let keep_initial = match signing_at {
        None => true,
        Some(_) => now < live[0].signs_from + max_ttl,
    };
    Resolved {
        signing: signing_at.map(|s| live[s].clone()),
        others,
        keep_initial,
    }
}

impl CaDir {
    /// Makes the next intermediate, signed by the root, writes it and its
    /// key under `DIR/intermediates/`, and records it in `store` to start
    /// signing after `opts.overlap`. Refused while another one is pending.
    pub async fn rotate_intermediate(
        &self,
        store: &dyn Store,
        opts: &RotateOptions,
        now: OffsetDateTime,
    ) -> Result<CaIntermediate, Error> {
        let config = self.config()?;
        let roots = store
            .roots()
            .await
            .map_err(|e| Error::Storage(format!("reading the CA roots: {e}")))?;
        let root = self.root_issuer(&config, &roots, opts.root_key.as_deref(), now)?;
        let spec = self.next_intermediate_spec(&config, opts.validity)?;
        let (key, token_uri) = next_intermediate_key(&config)?;
        // A failure from here on leaves no key behind in the token either.
        let forget = |e: Error| {
            if let Some(uri) = &token_uri {
                super::destroy_token_keys(std::slice::from_ref(uri));
            }
            e
        };
        let issued = root
            .sign_intermediate(&spec, &key, now)
            .map_err(Error::pki("signing the next intermediate"))
            .map_err(forget)?;
        let next = self
            .write_intermediate(&issued.der, &key, token_uri.as_ref(), opts.overlap, now)
            .map_err(forget)?;
        if let Err(e) = store.add_intermediate(&next).await {
            self.remove_intermediate_files(&next.fingerprint);
            return Err(forget(Error::Storage(format!(
                "recording the next intermediate: {e}"
            ))));
        }
        Ok(next)
    }

    /// The shape of the next intermediate: the current one's name
    /// constraints, `validity` or the current one's lifetime.
    pub(super) fn next_intermediate_spec(
        &self,
        config: &CaConfig,
        validity: Option<Duration>,
    ) -> Result<CaSpec, Error> {
        let current = self.intermediate_cert()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&current)
            .map_err(|e| Error::Config(format!("reading the intermediate: {e}")))?;
        let current_life =
            parsed.validity().not_after.timestamp() - parsed.validity().not_before.timestamp();
        let validity = validity.unwrap_or(Duration::from_secs(
            u64::try_from(current_life).unwrap_or(0),
        ));
        let permitted_dns = parsed
            .name_constraints()
            .ok()
            .flatten()
            .and_then(|nc| nc.value.permitted_subtrees.clone())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| match &t.base {
                x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                _ => None,
            })
            .collect();
        Ok(CaSpec {
            name: config.ca.name.clone(),
            root_validity: validity,
            intermediate_validity: validity,
            permitted_dns,
        })
    }

    /// Writes a rotated intermediate and its key (never replacing a file)
    /// and returns its store record; nothing stays behind on failure.
    pub(super) fn write_intermediate(
        &self,
        der: &CertificateDer<'_>,
        key: &PrivateKey,
        token_uri: Option<&KeyUri>,
        overlap: Duration,
        now: OffsetDateTime,
    ) -> Result<CaIntermediate, Error> {
        let fingerprint = Fingerprint::of_der(der)
            .to_string()
            .replace(':', "")
            .to_lowercase();
        let (_, parsed) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Error::Config(format!("reading the next intermediate: {e}")))?;
        let not_after =
            OffsetDateTime::from_unix_timestamp(parsed.validity().not_after.timestamp())
                .map_err(|e| Error::Config(format!("the next intermediate's notAfter: {e}")))?;
        let sub = self.path.join(INTERMEDIATES);
        if !sub.exists() {
            super::create_private_dir(&sub)?;
        }
        let crt = sub.join(format!("{fingerprint}.crt"));
        let key_ref = match token_uri {
            Some(uri) => uri.to_string(),
            None => {
                let key_ref = format!("{INTERMEDIATES}/{fingerprint}.key");
                let key_pem = key
                    .to_pkcs8_pem()
                    .map_err(Error::pki("writing the next intermediate key"))?;
                files::write_atomic(
                    &self.path.join(&key_ref),
                    key_pem.as_bytes(),
                    SECRET_MODE,
                    Replace::Never,
                )?;
                key_ref
            }
        };
        if let Err(e) = files::write_atomic(
            &crt,
            pem::cert_to_pem(der).as_bytes(),
            PUBLIC_MODE,
            Replace::Never,
        ) {
            self.remove_intermediate_files(&fingerprint);
            return Err(e);
        }
        Ok(CaIntermediate {
            fingerprint,
            der: der.to_vec(),
            key_ref,
            signs_from: now + overlap,
            not_after,
            created_at: now,
            cancelled_at: None,
        })
    }

    pub(super) fn remove_intermediate_files(&self, fingerprint: &str) {
        let sub = self.path.join(INTERMEDIATES);
        for ext in ["crt", "key"] {
            let _ = std::fs::remove_file(sub.join(format!("{fingerprint}.{ext}")));
        }
    }

    /// The root that signs intermediates now, with its key: the newest
    /// root of a root rotation whose switch has passed, else `root.crt`.
    /// Its key: `root_key` (an offline root file), else the store's key
    /// reference (a rotated root), else `DIR/root.key`, else the token
    /// ca.toml names.
    pub(super) fn root_issuer(
        &self,
        config: &CaConfig,
        rotated: &[ward_store::CaRoot],
        root_key: Option<&Path>,
        now: OffsetDateTime,
    ) -> Result<Issuer, Error> {
        if let Some(row) = super::roots::current_root(rotated, now) {
            let cert = CertificateDer::from(row.der.clone());
            let key = match root_key {
                Some(path) => self.read_key(path)?,
                None => self.load_key_ref(&row.key_ref, &cert, "rotated root")?,
            };
            return Issuer::new(cert, key).map_err(Error::pki(format!(
                "pairing the root {} with its key",
                row.fingerprint
            )));
        }
        let root = self
            .roots()?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Config("root.crt holds no certificate".into()))?;
        let key = match (root_key, KeysSection::uri(&config.keys.root, "root")?) {
            (Some(path), _) => self.read_key(path)?,
            (None, Some(uri)) => token_key(&uri, &root, "root")?,
            (None, None) => {
                let path = self.file(ROOT_KEY);
                if !path.exists() {
                    return Err(Error::Config(format!(
                        "the root key is not in {} (offline root): pass --root-key FILE",
                        self.path.display()
                    )));
                }
                self.read_key(&path)?
            }
        };
        Issuer::new(root, key).map_err(Error::pki("pairing root.crt with the root key"))
    }

    /// The key a store row names: a `pkcs11:` URI (proven to be `cert`'s)
    /// or a file inside the CA directory.
    pub(super) fn load_key_ref(
        &self,
        key_ref: &str,
        cert: &CertificateDer<'_>,
        what: &str,
    ) -> Result<PrivateKey, Error> {
        if key_ref.starts_with("pkcs11:") {
            let uri: KeyUri = key_ref
                .parse()
                .map_err(|e| Error::Config(format!("the store's key URI of a {what}: {e}")))?;
            return token_key(&uri, cert, what);
        }
        if key_ref.contains("..") || Path::new(key_ref).is_absolute() {
            return Err(Error::Config(format!(
                "the store names a {what} key outside the CA directory: {key_ref}"
            )));
        }
        self.read_key(&self.path.join(key_ref))
    }

    /// Loads a rotated intermediate with its key, checking the file is the
    /// certificate the store names.
    pub fn load_intermediate(&self, row: &CaIntermediate) -> Result<Issuer, Error> {
        let cert = CertificateDer::from(row.der.clone());
        if row.key_ref.starts_with("pkcs11:") {
            let uri: KeyUri = row.key_ref.parse().map_err(|e| {
                Error::Config(format!(
                    "the store's key URI of the intermediate {}: {e}",
                    row.fingerprint
                ))
            })?;
            let key = token_key(&uri, &cert, "rotated intermediate")?;
            return Issuer::new(cert, key).map_err(Error::pki(format!(
                "pairing the intermediate {} with its key in the PKCS#11 token",
                row.fingerprint
            )));
        }
        if row.key_ref.contains("..") || Path::new(&row.key_ref).is_absolute() {
            return Err(Error::Config(format!(
                "the store names an intermediate key outside the CA directory: {}",
                row.key_ref
            )));
        }
        let key = self.read_key(&self.path.join(&row.key_ref))?;
        Issuer::new(cert, key).map_err(Error::pki(format!(
            "pairing the intermediate {} with {}",
            row.fingerprint, row.key_ref
        )))
    }
}

/// A key for the next intermediate where the current one is: in the same
/// PKCS#11 token (non-extractable, its URI returned), or in memory for a
/// file.
pub(super) fn next_intermediate_key(
    config: &CaConfig,
) -> Result<(PrivateKey, Option<KeyUri>), Error> {
    next_ca_key(config, &config.keys.intermediate, "intermediate")
}

/// A key for the next CA certificate of `role` (`intermediate`, `root`):
/// in the token `current` names, else in memory.
pub(super) fn next_ca_key(
    config: &CaConfig,
    current: &Option<String>,
    role: &str,
) -> Result<(PrivateKey, Option<KeyUri>), Error> {
    match KeysSection::uri(current, role)? {
        Some(current) => {
            let template = KeyUri {
                object: None,
                id: None,
                ..current
            };
            let mut suffix = [0u8; 4];
            aws_lc_rs::rand::fill(&mut suffix)
                .map_err(|_| Error::Config("drawing a key label".into()))?;
            let label = format!(
                "ward-{role}-{}",
                suffix
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
            let made = pkcs11::generate(&template, &label, config.ca.key_type).map_err(|e| {
                Error::Config(format!(
                    "generating the next {role} key in the PKCS#11 token: {e}"
                ))
            })?;
            match made.key.private_key() {
                Ok(key) => Ok((key, Some(made.uri))),
                Err(e) => {
                    super::destroy_token_keys(std::slice::from_ref(&made.uri));
                    Err(Error::Config(format!(
                        "the next {role} key in the PKCS#11 token: {e}"
                    )))
                }
            }
        }
        None => Ok((
            config
                .ca
                .key_type
                .generate()
                .map_err(Error::pki(format!("generating the next {role} key")))?,
            None,
        )),
    }
}

/// What [`apply`] put in force.
#[derive(Debug)]
pub struct Applied {
    /// Every intermediate in use, the signing one first.
    pub issuers: Vec<Arc<Issuer>>,
    /// The roots distributed and accepted, and the rollover certificates
    /// appended to chains.
    pub trust: super::roots::Trust,
}

/// Loads what [`resolve`] chose and hands it to the authority, with the
/// trust bundle [`super::roots::resolve_trust`] decides for the root
/// rotations in `roots`; keeps already loaded intermediates in `cache`.
pub fn apply(
    dir: &CaDir,
    authority: &crate::authority::Authority,
    rows: &[CaIntermediate],
    roots: &[ward_store::CaRoot],
    cache: &mut Vec<Arc<Issuer>>,
    now: OffsetDateTime,
) -> Result<Applied, Error> {
    let resolved = resolve(rows, authority.policy().max_ttl, now);
    let initial = &authority.initial_issuer();
    let mut load = |row: &CaIntermediate| -> Result<Arc<Issuer>, Error> {
        if let Some(i) = cache
            .iter()
            .find(|i| i.cert_der().as_ref() == row.der.as_slice())
        {
            return Ok(i.clone());
        }
        let issuer = Arc::new(dir.load_intermediate(row)?);
        cache.push(issuer.clone());
        Ok(issuer)
    };
    let signing = match &resolved.signing {
        Some(row) => load(row)?,
        None => initial.clone(),
    };
    let mut others = Vec::new();
    for row in &resolved.others {
        others.push(load(row)?);
    }
    if resolved.keep_initial && resolved.signing.is_some() {
        others.push(initial.clone());
    }
    cache.retain(|c| Arc::ptr_eq(c, &signing) || others.iter().any(|o| Arc::ptr_eq(o, c)));
    let mut all = vec![signing.clone()];
    all.extend(others.iter().cloned());
    let published: Vec<CertificateDer<'static>> =
        all.iter().map(|i| i.cert_der().clone()).collect();
    let trust = super::roots::resolve_trust(authority.directory_roots(), roots, &published, now);
    authority.set_intermediates(signing, others, &trust.bundle, &trust.extra);
    Ok(Applied {
        issuers: all,
        trust,
    })
}

/// The key waiting for its certificate between `ward ca intermediate csr`
/// and `ward ca intermediate install`.
pub const PENDING_KEY: &str = "pending.key";

/// Largest certificate file `install` reads.
const MAX_CERT_FILE: u64 = 256 * 1024;

impl CaDir {
    /// `ward ca intermediate csr`: makes the next intermediate's key
    /// (`DIR/intermediates/pending.key`, 0600) and returns a CSR for a root
    /// outside Ward to sign. Refused while an earlier CSR's key waits.
    pub fn intermediate_csr(&self) -> Result<String, Error> {
        let config = self.config()?;
        let sub = self.path.join(INTERMEDIATES);
        if !sub.exists() {
            super::create_private_dir(&sub)?;
        }
        let key_path = sub.join(PENDING_KEY);
        if key_path.exists() {
            return Err(Error::AlreadyExists(format!(
                "{} already waits for its certificate: install it (ward ca intermediate install) or remove the file",
                key_path.display()
            )));
        }
        let key = config
            .ca
            .key_type
            .generate()
            .map_err(Error::pki("generating the next intermediate key"))?;
        let csr = key
            .ca_csr_pem(
                &config.ca.name,
                &format!("{} Intermediate CA", config.ca.name),
            )
            .map_err(Error::pki("building the CSR"))?;
        let pem = key
            .to_pkcs8_pem()
            .map_err(Error::pki("writing the next intermediate key"))?;
        files::write_atomic(&key_path, pem.as_bytes(), SECRET_MODE, Replace::Never)?;
        Ok(csr)
    }

    /// `ward ca intermediate install`: takes the certificate a root signed
    /// for the pending key, checks it (issued by a root of `root.crt` or a
    /// rotated root not cancelled and not expired, a CA
    /// certificate allowed to sign certificates, for the pending key, valid
    /// now) and records it as the next intermediate, signing after
    /// `overlap`. Nothing changes when a check fails.
    pub async fn install_intermediate(
        &self,
        store: &dyn Store,
        cert_file: &Path,
        overlap: Duration,
        now: OffsetDateTime,
    ) -> Result<CaIntermediate, Error> {
        let len = std::fs::metadata(cert_file)
            .map_err(Error::io(format!("reading {}", cert_file.display())))?
            .len();
        if len > MAX_CERT_FILE {
            return Err(Error::Config(format!(
                "{} is larger than {MAX_CERT_FILE} bytes",
                cert_file.display()
            )));
        }
        let der = read_certs(cert_file)?.into_iter().next().ok_or_else(|| {
            Error::Config(format!("{} holds no certificate", cert_file.display()))
        })?;
        let key_path = self.path.join(INTERMEDIATES).join(PENDING_KEY);
        if !key_path.exists() {
            return Err(Error::Config(format!(
                "no key waits for a certificate ({} is missing): run ward ca intermediate csr first",
                key_path.display()
            )));
        }
        let key = self.read_key(&key_path)?;
        let bad = |why: String| Error::Config(format!("{}: {why}", cert_file.display()));
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| bad(format!("not a certificate: {e}")))?;
        if cert.public_key().raw != key.public_key_der().as_slice() {
            return Err(bad(
                "it is not for the key of ward ca intermediate csr".into()
            ));
        }
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        let signs = cert
            .key_usage()
            .ok()
            .flatten()
            .is_some_and(|ku| ku.value.key_cert_sign() && ku.value.crl_sign());
        if !is_ca || !signs {
            return Err(bad(
                "not a CA certificate allowed to sign certificates and CRLs (basicConstraints cA, keyUsage keyCertSign and cRLSign)".into(),
            ));
        }
        // Any root the CA knows: root.crt's, and a rotated root not
        // cancelled and not expired (after `ward ca rotate root` the next
        // intermediates are the new root's to sign).
        let rows = store
            .roots()
            .await
            .map_err(|e| Error::Storage(format!("reading the CA roots: {e}")))?;
        let roots = super::roots::resolve_trust(&self.roots()?, &rows, &[], now).known;
        let by_root = roots.iter().any(|r| {
            x509_parser::parse_x509_certificate(r).is_ok_and(|(_, root)| {
                ward_pki::sig::verify_cert(&cert, root.public_key()).is_ok()
                    && cert.issuer() == root.subject()
            })
        });
        if !by_root {
            return Err(bad(
                "not issued by the root in root.crt, nor by a rotated root that is neither cancelled nor expired".into(),
            ));
        }
        let (from, until) = (
            cert.validity().not_before.timestamp(),
            cert.validity().not_after.timestamp(),
        );
        if now.unix_timestamp() < from || now.unix_timestamp() >= until {
            return Err(bad("not valid now".into()));
        }
        let next = self.write_intermediate(&der, &key, None, overlap, now)?;
        if let Err(e) = store.add_intermediate(&next).await {
            self.remove_intermediate_files(&next.fingerprint);
            return Err(Error::Storage(format!(
                "recording the next intermediate: {e}"
            )));
        }
        let _ = std::fs::remove_file(&key_path);
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, signs_from: i64, not_after: i64, cancelled: bool) -> CaIntermediate {
        let t = |s| OffsetDateTime::from_unix_timestamp(s).unwrap();
        CaIntermediate {
            fingerprint: name.repeat(64),
            der: name.as_bytes().to_vec(),
            key_ref: format!("{name}.key"),
            signs_from: t(signs_from),
            not_after: t(not_after),
            created_at: t(signs_from - 10),
            cancelled_at: cancelled.then(|| t(signs_from - 5)),
        }
    }

    #[test]
    fn the_directory_intermediate_signs_until_the_first_switch() {
        let rows = [row("a", 1000, 100_000, false)];
        let now = OffsetDateTime::from_unix_timestamp(999).unwrap();
        let r = resolve(&rows, Duration::from_secs(60), now);
        assert_eq!(r.signing, None);
        assert_eq!(r.others, vec![rows[0].clone()]);
        assert!(r.keep_initial);
        let now = OffsetDateTime::from_unix_timestamp(1000).unwrap();
        let r = resolve(&rows, Duration::from_secs(60), now);
        assert_eq!(r.signing, Some(rows[0].clone()));
        assert!(r.others.is_empty());
        assert!(
            r.keep_initial,
            "the old one is published while its certificates live"
        );
        let now = OffsetDateTime::from_unix_timestamp(1060).unwrap();
        assert!(!resolve(&rows, Duration::from_secs(60), now).keep_initial);
    }

    #[test]
    fn a_cancelled_rotation_never_signs() {
        let rows = [row("a", 1000, 100_000, true)];
        let now = OffsetDateTime::from_unix_timestamp(5000).unwrap();
        let r = resolve(&rows, Duration::from_secs(60), now);
        assert_eq!(r.signing, None);
        assert!(r.others.is_empty());
        assert!(r.keep_initial);
    }

    #[test]
    fn a_replaced_rotation_stays_published_for_max_ttl() {
        let rows = [
            row("a", 1000, 100_000, false),
            row("b", 2000, 100_000, false),
        ];
        let at = |s| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let r = resolve(&rows, Duration::from_secs(60), at(2030));
        assert_eq!(r.signing, Some(rows[1].clone()));
        assert_eq!(r.others, vec![rows[0].clone()]);
        assert!(!r.keep_initial);
        let r = resolve(&rows, Duration::from_secs(60), at(2060));
        assert!(r.others.is_empty());
    }
}
