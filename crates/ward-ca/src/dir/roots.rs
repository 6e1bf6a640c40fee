//! Root rotation (issue 20): `ward ca rotate root` makes the next root R2
//! (same subject as the current root R1, a new key), the two rollover
//! certificates of RFC 4210 section 4.4 (R2's key certified by R1, R1's key
//! certified by R2), and R2's first intermediate I2, and records them in
//! the store with the time I2 starts signing (`now + overlap`).
//!
//! ```text
//! DIR/roots/<sha256>.crt               the next root
//! DIR/roots/<sha256>.key               its key (0600; absent when in a token)
//! DIR/roots/<sha256>.new-with-old.crt  its key certified by the root it replaces
//! DIR/roots/<sha256>.old-with-new.crt  the replaced root's key certified by it
//! DIR/roots/<sha256>-ocsp.crt          its delegated OCSP responder (id-kp-OCSPSigning,
//!                                      ocsp-nocheck), as `root-ocsp.crt` is the first root's
//! DIR/roots/<sha256>-ocsp.key          its key (0600), or <sha256>-ocsp.uri naming it in
//!                                      the PKCS#11 token when the first one's is there
//! DIR/intermediates/<sha256>.crt|.key  its first intermediate
//! ```
//!
//! Phases, decided by [`resolve_trust`] from the store on every replica:
//!
//! 1. published: R2 joins the bundle everything follows (`/v1/roots`, the
//!    `ca_bundle` of every issuance and renewal, the SPIFFE bundle); I1
//!    still signs, and its chains carry R1-by-R2, so a peer that already
//!    trusts only R2 verifies them;
//! 2. switched: I2 signs; its chains carry R2-by-R1, so a peer that still
//!    trusts only R1 verifies them;
//! 3. retired: no published intermediate is issued by R1 any more (the
//!    intermediate rotation machinery keeps I1 published until its last
//!    certificate can have expired): R1 leaves the bundle and chains carry
//!    no rollover certificate.
//!
//! Must never: let a certificate chain to a root that is not in the bundle
//! already, or drop a root from the bundle while a published intermediate
//! is issued by it.

use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use ward_pki::issue::Issuer;
use ward_pki::ocsp::Signer;
use ward_pki::pem;
use ward_store::{CaIntermediate, CaRoot, Store};
use x509_parser::prelude::X509Certificate;

use super::rotation::{next_ca_key, next_intermediate_key};
use super::{CaDir, RootOcspSigner};
use crate::Error;
use crate::authority::fingerprint_hex;
use crate::files::{self, PUBLIC_MODE, Replace, SECRET_MODE};

/// The subdirectory rotated roots live in.
pub const ROOTS: &str = "roots";
/// Suffixes of a rotated root's delegated OCSP responder files.
const OCSP_CRT: &str = "-ocsp.crt";
const OCSP_KEY: &str = "-ocsp.key";
const OCSP_URI: &str = "-ocsp.uri";

/// What `ward ca rotate root` is asked.
#[derive(Clone, Debug)]
pub struct RootRotateOptions {
    /// How long the next root is distributed before its intermediate signs.
    pub overlap: Duration,
    /// Lifetime of the next root; `None`: the current root's.
    pub validity: Option<Duration>,
    /// Lifetime of its first intermediate; `None`: the current one's.
    pub intermediate_validity: Option<Duration>,
    /// The current root's key file when it is kept offline.
    pub root_key: Option<PathBuf>,
}

/// What a root rotation recorded.
#[derive(Clone, Debug)]
pub struct RootRotation {
    /// The next root.
    pub root: CaRoot,
    /// Its first intermediate.
    pub intermediate: CaIntermediate,
    /// Its delegated OCSP responder, which signs answers about the
    /// intermediates it issues.
    pub ocsp_responder: CertificateDer<'static>,
}

/// The newest root of a root rotation whose switch has passed at `now`.
pub fn current_root(rows: &[CaRoot], now: OffsetDateTime) -> Option<&CaRoot> {
    rows.iter()
        .filter(|r| r.cancelled_at.is_none() && r.signs_from <= now)
        .max_by_key(|r| (r.signs_from, r.created_at))
}

/// What the CA distributes and accepts at a moment of a root rotation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// The trust bundle everything follows, newest root first.
    pub bundle: Vec<CertificateDer<'static>>,
    /// Every root not cancelled and not expired, retired ones too: what
    /// the CA accepts client certificates under (its own `admin.crt`
    /// chains to the first root for as long as it lives).
    pub known: Vec<CertificateDer<'static>>,
    /// Rollover certificates appended to the signing intermediate's
    /// chains, so peers trusting only another root of the bundle verify
    /// them.
    pub extra: Vec<CertificateDer<'static>>,
}

/// Whether `cert` names `issuer` as its issuer and carries its signature.
fn issued_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    cert.issuer() == issuer.subject()
        && ward_pki::sig::verify_cert(cert, issuer.public_key()).is_ok()
}

fn still_valid(cert: &X509Certificate<'_>, now: OffsetDateTime) -> bool {
    cert.validity().not_after.timestamp() > now.unix_timestamp()
}

/// Decides the bundle, the accepted roots and the rollover certificates to
/// append from the directory's roots (`root.crt`), the store's root rows
/// and the intermediates published now (`published`, the signing one
/// first). A root is in the bundle when it is the newest one not
/// cancelled, or when a published intermediate is issued by it.
pub fn resolve_trust(
    dir_roots: &[CertificateDer<'static>],
    rows: &[CaRoot],
    published: &[CertificateDer<'static>],
    now: OffsetDateTime,
) -> Trust {
    let mut live: Vec<&CaRoot> = rows.iter().filter(|r| r.cancelled_at.is_none()).collect();
    live.sort_by_key(|r| (r.signs_from, r.created_at));
    // Generations: the directory's roots, then each rotated root.
    let mut generations: Vec<Vec<CertificateDer<'static>>> = vec![dir_roots.to_vec()];
    generations.extend(
        live.iter()
            .map(|r| vec![CertificateDer::from(r.der.clone())]),
    );
    let issued_any = |root: &CertificateDer<'static>| {
        let Ok((_, r)) = x509_parser::parse_x509_certificate(root) else {
            return false;
        };
        published
            .iter()
            .any(|i| x509_parser::parse_x509_certificate(i).is_ok_and(|(_, i)| issued_by(&i, &r)))
    };
    let valid = |c: &CertificateDer<'static>| {
        x509_parser::parse_x509_certificate(c).is_ok_and(|(_, c)| still_valid(&c, now))
    };
    let newest = generations.len() - 1;
    let mut bundle = Vec::new();
    for (g, roots) in generations.iter().enumerate().rev() {
        for root in roots {
            if (g == newest || issued_any(root)) && (valid(root) || g == 0) {
                bundle.push(root.clone());
            }
        }
    }
    let known = dir_roots
        .iter()
        .cloned()
        .chain(
            live.iter()
                .map(|r| CertificateDer::from(r.der.clone()))
                .filter(|c| valid(c)),
        )
        .collect();
    // The root that issued the signing intermediate, and the rollover
    // certificates that lead from it to each other root of the bundle.
    let mut extra = Vec::new();
    let signer_root = published.first().and_then(|signing| {
        let (_, s) = x509_parser::parse_x509_certificate(signing).ok()?;
        generations
            .iter()
            .flatten()
            .find(|r| x509_parser::parse_x509_certificate(r).is_ok_and(|(_, r)| issued_by(&s, &r)))
            .cloned()
    });
    if let Some(signer_root) = signer_root
        && let Ok((_, x)) = x509_parser::parse_x509_certificate(&signer_root)
    {
        for row in &live {
            for cross in [&row.new_with_old, &row.old_with_new] {
                let Ok((_, c)) = x509_parser::parse_x509_certificate(cross) else {
                    continue;
                };
                if c.public_key().raw != x.public_key().raw || !still_valid(&c, now) {
                    continue;
                }
                let leads_to_other = bundle.iter().any(|y| {
                    y.as_ref() != signer_root.as_ref()
                        && x509_parser::parse_x509_certificate(y)
                            .is_ok_and(|(_, y)| issued_by(&c, &y))
                });
                if leads_to_other {
                    extra.push(CertificateDer::from(cross.clone()));
                }
            }
        }
    }
    Trust {
        bundle,
        known,
        extra,
    }
}

impl CaDir {
    /// Makes the next root, its rollover certificates and its first
    /// intermediate, writes them under `DIR/roots/` and
    /// `DIR/intermediates/`, and records them in `store` to switch after
    /// `opts.overlap`. Refused while any rotation is pending; nothing
    /// stays behind on failure.
    pub async fn rotate_root(
        &self,
        store: &dyn Store,
        opts: &RootRotateOptions,
        now: OffsetDateTime,
    ) -> Result<RootRotation, Error> {
        let config = self.config()?;
        let rows = store
            .roots()
            .await
            .map_err(|e| Error::Storage(format!("reading the CA roots: {e}")))?;
        let old = self.root_issuer(&config, &rows, opts.root_key.as_deref(), now)?;
        let validity = opts.validity.unwrap_or_else(|| {
            let life = old.not_after() - old.not_before();
            Duration::from_secs(u64::try_from(life.whole_seconds()).unwrap_or(0))
        });
        let spec = self.next_intermediate_spec(&config, opts.intermediate_validity)?;
        let (root_key, root_uri) = next_ca_key(&config, &config.keys.root, "root")?;
        let mut token_keys: Vec<crate::pkcs11::KeyUri> = root_uri.iter().cloned().collect();
        let mut written: Vec<PathBuf> = Vec::new();
        let made = self.make_root(
            &old,
            root_key,
            root_uri.as_ref(),
            validity,
            &spec,
            opts.overlap,
            now,
            &mut token_keys,
            &mut written,
        );
        let undo = |e: Error, first: Option<&CaIntermediate>| {
            for path in &written {
                let _ = std::fs::remove_file(path);
            }
            if let Some(first) = first {
                self.remove_intermediate_files(&first.fingerprint);
            }
            super::destroy_token_keys(&token_keys);
            e
        };
        let done = match made {
            Ok(done) => done,
            Err(e) => return Err(undo(e, None)),
        };
        // Recorded like every certificate the CA signs (origin
        // `ocsp-responder`), before the rotation itself, so that no
        // rotation exists whose responder is unrecorded.
        if let Err(e) = crate::authority::record_signed(
            store,
            &done.ocsp_responder,
            ward_store::Origin::OcspResponder,
            now,
        )
        .await
        {
            return Err(undo(
                Error::Storage(format!(
                    "recording the next root's OCSP responder certificate: {e}"
                )),
                Some(&done.intermediate),
            ));
        }
        if let Err(e) = store.add_root(&done.root, &done.intermediate).await {
            return Err(undo(
                Error::Storage(format!("recording the next root: {e}")),
                Some(&done.intermediate),
            ));
        }
        Ok(done)
    }

    #[allow(clippy::too_many_arguments)]
    fn make_root(
        &self,
        old: &Issuer,
        root_key: ward_pki::PrivateKey,
        root_uri: Option<&crate::pkcs11::KeyUri>,
        validity: Duration,
        spec: &ward_pki::issue::CaSpec,
        overlap: Duration,
        now: OffsetDateTime,
        token_keys: &mut Vec<crate::pkcs11::KeyUri>,
        written: &mut Vec<PathBuf>,
    ) -> Result<RootRotation, Error> {
        let roll = old
            .rollover(&root_key, validity, now)
            .map_err(Error::pki("making the next root"))?;
        let fingerprint = fingerprint_hex(&roll.root.der);
        let sub = self.path.join(ROOTS);
        if !sub.exists() {
            super::create_private_dir(&sub)?;
        }
        let mut write = |name: String, bytes: &[u8], mode: u32| -> Result<(), Error> {
            let path = sub.join(name);
            files::write_atomic(&path, bytes, mode, Replace::Never)?;
            written.push(path);
            Ok(())
        };
        let key_ref = match root_uri {
            Some(uri) => uri.to_string(),
            None => {
                let key_pem = root_key
                    .to_pkcs8_pem()
                    .map_err(Error::pki("writing the next root key"))?;
                write(
                    format!("{fingerprint}.key"),
                    key_pem.as_bytes(),
                    SECRET_MODE,
                )?;
                format!("{ROOTS}/{fingerprint}.key")
            }
        };
        write(
            format!("{fingerprint}.crt"),
            pem::cert_to_pem(&roll.root.der).as_bytes(),
            PUBLIC_MODE,
        )?;
        write(
            format!("{fingerprint}.new-with-old.crt"),
            pem::cert_to_pem(&roll.new_with_old.der).as_bytes(),
            PUBLIC_MODE,
        )?;
        write(
            format!("{fingerprint}.old-with-new.crt"),
            pem::cert_to_pem(&roll.old_with_new.der).as_bytes(),
            PUBLIC_MODE,
        )?;
        let next_root = Issuer::new(roll.root.der.clone(), root_key)
            .map_err(Error::pki("loading the next root"))?;
        let config = self.config()?;
        // Answers about the intermediates R2 issues must come from R2 or a
        // responder R2 issued (ARCHITECTURE.md, trap 13): issue one now,
        // while R2's key is at hand, as `ward ca init` does for the first
        // root (same profile, the intermediate's lifetime), its key where
        // the first root's responder key is (a token or a file).
        let (ocsp_key, ocsp_uri) = next_ca_key(&config, &config.keys.root_ocsp, "root-ocsp")?;
        token_keys.extend(ocsp_uri.iter().cloned());
        let ocsp = ward_pki::ocsp::issue_responder(
            &next_root,
            &ocsp_key,
            &config.ca.name,
            "Root OCSP Responder",
            spec.intermediate_validity,
            now,
        )
        .map_err(Error::pki(
            "signing the next root's OCSP responder certificate",
        ))?;
        match &ocsp_uri {
            Some(uri) => write(
                format!("{fingerprint}{OCSP_URI}"),
                uri.to_string().as_bytes(),
                SECRET_MODE,
            )?,
            None => {
                let key_pem = ocsp_key
                    .to_pkcs8_pem()
                    .map_err(Error::pki("writing the next root's OCSP responder key"))?;
                write(
                    format!("{fingerprint}{OCSP_KEY}"),
                    key_pem.as_bytes(),
                    SECRET_MODE,
                )?;
            }
        }
        write(
            format!("{fingerprint}{OCSP_CRT}"),
            pem::cert_to_pem(&ocsp.der).as_bytes(),
            PUBLIC_MODE,
        )?;
        let (int_key, int_uri) = next_intermediate_key(&config)?;
        token_keys.extend(int_uri.iter().cloned());
        let issued = next_root
            .sign_intermediate(spec, &int_key, now)
            .map_err(Error::pki("signing the next root's intermediate"))?;
        let intermediate =
            self.write_intermediate(&issued.der, &int_key, int_uri.as_ref(), overlap, now)?;
        let root = CaRoot {
            fingerprint,
            der: roll.root.der.to_vec(),
            key_ref,
            previous: fingerprint_hex(old.cert_der()),
            new_with_old: roll.new_with_old.der.to_vec(),
            old_with_new: roll.old_with_new.der.to_vec(),
            intermediate: intermediate.fingerprint.clone(),
            signs_from: intermediate.signs_from,
            not_after: roll.root.not_after,
            created_at: now,
            cancelled_at: None,
        };
        Ok(RootRotation {
            root,
            intermediate,
            ocsp_responder: ocsp.der,
        })
    }

    /// The signer for OCSP answers about the intermediates the rotated
    /// root `row` issued: its delegated responder (`roots/<sha256>-ocsp.*`)
    /// while valid at `now`, else the root's own key when the directory or
    /// token holds it, else none (those questions are then refused, never
    /// answered by another root's responder).
    pub fn rotated_root_ocsp_signer(
        &self,
        row: &CaRoot,
        now: OffsetDateTime,
    ) -> Result<RootOcspSigner, Error> {
        let fingerprint = &row.fingerprint;
        if fingerprint.is_empty() || !fingerprint.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Config(format!(
                "the store names a root with a malformed fingerprint: {fingerprint:?}"
            )));
        }
        let root = CertificateDer::from(row.der.clone());
        let sub = self.path.join(ROOTS);
        let crt = sub.join(format!("{fingerprint}{OCSP_CRT}"));
        if crt.exists() {
            let cert = super::read_certs(&crt)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::Config(format!("{} holds no certificate", crt.display())))?;
            let issued = x509_parser::parse_x509_certificate(&cert)
                .ok()
                .zip(x509_parser::parse_x509_certificate(&root).ok())
                .is_some_and(|((_, c), (_, r))| issued_by(&c, &r));
            if !issued {
                return Err(Error::Config(format!(
                    "{} was not issued by the root {fingerprint}",
                    crt.display()
                )));
            }
            let uri_file = sub.join(format!("{fingerprint}{OCSP_URI}"));
            let key = if uri_file.exists() {
                let text = files::read_to_string(&uri_file)?;
                let uri: crate::pkcs11::KeyUri = text
                    .trim()
                    .parse()
                    .map_err(|e| Error::Config(format!("{}: {e}", uri_file.display())))?;
                super::token_key(&uri, &cert, "rotated root's OCSP responder")?
            } else {
                self.read_key(&sub.join(format!("{fingerprint}{OCSP_KEY}")))?
            };
            let signer = Signer::new(&cert, key, std::slice::from_ref(&cert))
                .map_err(Error::pki(format!("loading {}", crt.display())))?;
            if signer.not_after() > now {
                return Ok(RootOcspSigner::Delegated(signer));
            }
        }
        let in_dir = row.key_ref.starts_with("pkcs11:") || self.path.join(&row.key_ref).exists();
        if !in_dir {
            return Ok(RootOcspSigner::None);
        }
        let key = self.load_key_ref(&row.key_ref, &root, "rotated root")?;
        let signer = Signer::new(&root, key, &[]).map_err(Error::pki(format!(
            "pairing the root {fingerprint} with its key"
        )))?;
        Ok(RootOcspSigner::RootKey(signer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ward_pki::KeyType;
    use ward_pki::issue::{CaSpec, new_root};

    fn spec() -> CaSpec {
        CaSpec {
            name: "Test".into(),
            root_validity: Duration::from_secs(86_400 * 10),
            intermediate_validity: Duration::from_secs(86_400),
            permitted_dns: Vec::new(),
        }
    }

    /// R1 with I1, and a rollover to R2 with I2, as a store row.
    fn hierarchy() -> (
        CertificateDer<'static>,
        CertificateDer<'static>,
        CertificateDer<'static>,
        CaRoot,
    ) {
        let now = OffsetDateTime::now_utc();
        let k1 = KeyType::EcdsaP256.generate().unwrap();
        let r1 = new_root(&spec(), &k1, now).unwrap();
        let r1 = Issuer::new(r1.der, k1).unwrap();
        let i1 = r1
            .sign_intermediate(&spec(), &KeyType::EcdsaP256.generate().unwrap(), now)
            .unwrap();
        let k2 = KeyType::EcdsaP256.generate().unwrap();
        let roll = r1
            .rollover(&k2, Duration::from_secs(86_400 * 10), now)
            .unwrap();
        let r2 = Issuer::new(roll.root.der.clone(), k2).unwrap();
        let i2 = r2
            .sign_intermediate(&spec(), &KeyType::EcdsaP256.generate().unwrap(), now)
            .unwrap();
        let row = CaRoot {
            fingerprint: fingerprint_hex(&roll.root.der),
            der: roll.root.der.to_vec(),
            key_ref: "roots/x.key".into(),
            previous: fingerprint_hex(r1.cert_der()),
            new_with_old: roll.new_with_old.der.to_vec(),
            old_with_new: roll.old_with_new.der.to_vec(),
            intermediate: fingerprint_hex(&i2.der),
            signs_from: now,
            not_after: roll.root.not_after,
            created_at: now,
            cancelled_at: None,
        };
        (r1.cert_der().clone(), i1.der, i2.der, row)
    }

    #[test]
    fn the_bundle_and_the_rollover_certificates_follow_the_phases() {
        let (r1, i1, i2, row) = hierarchy();
        let r2 = CertificateDer::from(row.der.clone());
        let nwo = CertificateDer::from(row.new_with_old.clone());
        let own = CertificateDer::from(row.old_with_new.clone());
        let now = OffsetDateTime::now_utc();
        let rows = [row.clone()];
        let dir = [r1.clone()];

        // Published: I1 signs, I2 waits; both roots, I1 carries OldWithNew.
        let t = resolve_trust(&dir, &rows, &[i1.clone(), i2.clone()], now);
        assert_eq!(t.bundle, vec![r2.clone(), r1.clone()]);
        assert_eq!(t.extra, vec![own]);
        assert_eq!(t.known, vec![r1.clone(), r2.clone()]);

        // Switched: I2 signs, I1 still published; I2 carries NewWithOld.
        let t = resolve_trust(&dir, &rows, &[i2.clone(), i1.clone()], now);
        assert_eq!(t.bundle, vec![r2.clone(), r1.clone()]);
        assert_eq!(t.extra, vec![nwo]);

        // Retired: nothing of R1 published any more.
        let t = resolve_trust(&dir, &rows, std::slice::from_ref(&i2), now);
        assert_eq!(t.bundle, vec![r2.clone()]);
        assert!(t.extra.is_empty());
        assert_eq!(t.known, vec![r1.clone(), r2], "R1 is still accepted");

        // Cancelled: as if it never happened.
        let mut cancelled = row;
        cancelled.cancelled_at = Some(now);
        let t = resolve_trust(&dir, &[cancelled], &[i1], now);
        assert_eq!(t.bundle, vec![r1.clone()]);
        assert!(t.extra.is_empty());
        assert_eq!(t.known, vec![r1]);
    }

    #[test]
    fn the_rollover_certificates_are_self_issued_and_cross_verify() {
        let (r1, _, _, row) = hierarchy();
        let (_, r1) = x509_parser::parse_x509_certificate(&r1).unwrap();
        let (_, r2) = x509_parser::parse_x509_certificate(&row.der).unwrap();
        let (_, nwo) = x509_parser::parse_x509_certificate(&row.new_with_old).unwrap();
        let (_, own) = x509_parser::parse_x509_certificate(&row.old_with_new).unwrap();
        assert_eq!(
            r2.subject().as_raw(),
            r1.subject().as_raw(),
            "same subject bytes"
        );
        assert!(issued_by(&nwo, &r1) && nwo.public_key().raw == r2.public_key().raw);
        assert!(issued_by(&own, &r2) && own.public_key().raw == r1.public_key().raw);
        assert!(
            !issued_by(&nwo, &r2),
            "NewWithOld is not R2's own signature"
        );
    }
}
