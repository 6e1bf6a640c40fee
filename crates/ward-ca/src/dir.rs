//! The CA directory: what `ward ca init` writes and every other command reads.
//!
//! ```text
//! DIR/ca.toml            documented configuration
//! DIR/root.crt           self-signed root (trust anchor to distribute)
//! DIR/root.key           root key (absent with --offline-root)
//! DIR/intermediate.crt   online intermediate, signed by the root
//! DIR/intermediate.key   its key (0600)
//! DIR/admin.crt          admin client identity spiffe://<TD>/ward/admin (+ intermediate)
//! DIR/admin.key          its key (0600)
//! DIR/root-ocsp.crt      root-issued delegated OCSP responder (id-kp-OCSPSigning,
//!                        ocsp-nocheck) that signs answers about the intermediate
//! DIR/root-ocsp.key      its key (0600)
//! DIR/jwt.key            ES256 key signing JWT-SVIDs (0600); made by the first
//!                        `ward ca serve` that finds none
//! DIR/jwt-previous/      retired JWT keys' public JWKs, published until every
//!                        token they signed has expired (see [`jwt_keys`])
//! DIR/ward.db            the CA's store (SQLite), unless ca.toml names another
//! DIR/intermediates/     intermediates made by `ward ca rotate intermediate`
//!                        and `ward ca intermediate csr|install` (see [`rotation`])
//! DIR/roots/             roots made by `ward ca rotate root`, with their
//!                        rollover certificates (see [`roots`])
//! ```
//!
//! `ward ca init` creates the store and records the admin certificate in it
//! (origin `admin`); every other command opens the store as it is and
//! refuses a missing, empty or damaged one (a new, empty store would forget
//! every token, certificate and revocation). Only `ward ca init` and an
//! explicit `--init-storage` create one.
//!
//! CA directories made before the OCSP responder existed lack the two
//! `root-ocsp.*` files; `ward ca serve` then signs answers about the
//! intermediate with `root.key` when it is in the directory, and refuses
//! them (`unauthorized`) with an offline root.
//!
//! Initialisation is all-or-nothing: every key and certificate is made in
//! memory first, files are created without ever replacing one, and a failure
//! part-way removes what was written.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use ward_pki::issue::{CaSpec, Issuer, LeafRequest, Profile, new_root};
use ward_pki::ocsp::Signer;
use ward_pki::{Fingerprint, KeyType, PrivateKey, Serial, TrustDomain, pem};
use ward_store::{Origin, Store};

use crate::config::{CaSection, IssuanceSection, KeysSection};
use crate::files::{self, PUBLIC_MODE, Replace, SECRET_MODE};
use crate::pkcs11::{self, KeyUri};
use crate::{CaConfig, Error};

/// Path of the admin identity inside the trust domain.
pub const ADMIN_PATH: &str = "/ward/admin";

const CONFIG: &str = "ca.toml";
const ROOT_CRT: &str = "root.crt";
const ROOT_KEY: &str = "root.key";
const INTERMEDIATE_CRT: &str = "intermediate.crt";
const INTERMEDIATE_KEY: &str = "intermediate.key";
const ADMIN_CRT: &str = "admin.crt";
const ADMIN_KEY: &str = "admin.key";
const ROOT_OCSP_CRT: &str = "root-ocsp.crt";
const ROOT_OCSP_KEY: &str = "root-ocsp.key";
const JWT_KEY: &str = "jwt.key";
/// The default SQLite store.
const DATABASE: &str = "ward.db";
/// Files whose presence means "a CA lives here".
const CA_FILES: [&str; 11] = [
    DATABASE,
    CONFIG,
    ROOT_CRT,
    ROOT_KEY,
    INTERMEDIATE_CRT,
    INTERMEDIATE_KEY,
    ADMIN_CRT,
    ADMIN_KEY,
    ROOT_OCSP_CRT,
    ROOT_OCSP_KEY,
    JWT_KEY,
];

/// Who signs OCSP answers about the intermediates one root issued.
#[derive(Debug)]
pub enum RootOcspSigner {
    /// The root-issued delegated responder written by `ward ca init` (or,
    /// for a rotated root, by `ward ca rotate root`).
    Delegated(Signer),
    /// The root key itself (a directory made before the responder existed).
    RootKey(Signer),
    /// Nobody: offline root and no (valid) delegated responder.
    None,
}

/// What `ward ca init` needs to know.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// The trust domain the CA issues for.
    pub trust_domain: TrustDomain,
    /// Organisation name in the CA subjects.
    pub name: String,
    /// Key type for the root, intermediate and admin keys.
    pub key_type: KeyType,
    /// Root lifetime (10 years by default).
    pub root_validity: Duration,
    /// Intermediate lifetime (1 year by default).
    pub intermediate_validity: Duration,
    /// Write the root key here instead of into the directory.
    pub offline_root: Option<PathBuf>,
    /// Optional DNS name constraints on the intermediate.
    pub permitted_dns: Vec<String>,
    /// The store to create and write into ca.toml (`postgres://…` or a
    /// SQLite path); `None`: `DIR/ward.db`.
    pub database: Option<String>,
    /// Make the root, intermediate and root OCSP responder keys in this
    /// PKCS#11 token instead of key files.
    pub pkcs11: Option<Pkcs11Init>,
}

/// Where `ward ca init --pkcs11-module` makes the CA keys.
#[derive(Clone, Debug)]
pub struct Pkcs11Init {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The file holding the user PIN.
    pub pin_file: PathBuf,
}

/// The outcome of a successful `init`.
#[derive(Clone, Debug)]
pub struct InitReport {
    /// SHA-256 of the root certificate (what agents pin).
    pub root_fingerprint: Fingerprint,
    /// The admin identity.
    pub admin_spiffe_id: String,
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// The admin certificate (leaf), to record in the store.
    pub admin_certificate: CertificateDer<'static>,
    /// Keys made in a PKCS#11 token (removed again if init fails later).
    pub token_keys: Vec<KeyUri>,
    /// Whether `init` created the directory itself.
    created_dir: bool,
}

/// A CA directory on disk.
#[derive(Clone, Debug)]
pub struct CaDir {
    path: PathBuf,
}

impl CaDir {
    /// The CA directory at `path` (nothing is read yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CaDir { path: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// `DIR/root.crt`.
    pub fn root_cert_path(&self) -> PathBuf {
        self.file(ROOT_CRT)
    }

    /// `DIR/intermediate.crt`.
    pub fn intermediate_cert_path(&self) -> PathBuf {
        self.file(INTERMEDIATE_CRT)
    }

    /// `DIR/admin.crt`.
    pub fn admin_cert_path(&self) -> PathBuf {
        self.file(ADMIN_CRT)
    }

    /// `DIR/admin.key`.
    pub fn admin_key_path(&self) -> PathBuf {
        self.file(ADMIN_KEY)
    }

    /// The first CA file found in the directory, if any.
    fn existing_ca_file(&self) -> Option<PathBuf> {
        CA_FILES
            .iter()
            .map(|f| self.file(f))
            .find(|p| p.symlink_metadata().is_ok())
    }

    /// Creates a new CA hierarchy here. Refuses if the directory already
    /// holds any CA file; leaves nothing behind on failure.
    pub fn init(&self, opts: &InitOptions, now: OffsetDateTime) -> Result<InitReport, Error> {
        if let Some(found) = self.existing_ca_file() {
            return Err(Error::AlreadyExists(format!(
                "{} already holds a CA (found {}); refusing to touch it",
                self.path.display(),
                found.display()
            )));
        }
        if let Some(offline) = &opts.offline_root
            && offline.symlink_metadata().is_ok()
        {
            return Err(Error::AlreadyExists(format!(
                "{} already exists; refusing to overwrite a key",
                offline.display()
            )));
        }
        if opts.name.trim().is_empty() {
            return Err(Error::Config("the CA name must not be empty".into()));
        }
        if opts.pkcs11.is_some() && opts.offline_root.is_some() {
            return Err(Error::Config(
                "--offline-root and --pkcs11-module exclude each other: with a token the root key stays in the token".into(),
            ));
        }
        let mut token_keys = Vec::new();
        let made = self.init_keys(opts, now, &mut token_keys);
        match made {
            Ok(report) => Ok(report),
            Err(e) => {
                destroy_token_keys(&token_keys);
                Err(e)
            }
        }
    }

    fn init_keys(
        &self,
        opts: &InitOptions,
        now: OffsetDateTime,
        token_keys: &mut Vec<KeyUri>,
    ) -> Result<InitReport, Error> {
        // Everything in memory first: nothing below can fail half-way on disk.
        let spec = CaSpec {
            name: opts.name.clone(),
            root_validity: opts.root_validity,
            intermediate_validity: opts.intermediate_validity,
            permitted_dns: opts.permitted_dns.clone(),
        };
        let keygen = |what: &str| {
            opts.key_type
                .generate()
                .map_err(Error::pki(format!("generating the {what} key")))
        };
        // CA keys go into the token when there is one; labels carry a
        // random suffix so several CAs can share a token.
        let mut suffix = [0u8; 4];
        aws_lc_rs::rand::fill(&mut suffix)
            .map_err(|_| Error::Config("drawing a key label".into()))?;
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let mut ca_keygen = |what: &str, role: &str| -> Result<PrivateKey, Error> {
            let Some(init) = &opts.pkcs11 else {
                return keygen(what);
            };
            let template = KeyUri {
                token: init.token.clone(),
                object: None,
                id: None,
                serial: None,
                manufacturer: None,
                model: None,
                module: init.module.clone(),
                pin_file: init.pin_file.clone(),
            };
            let made = pkcs11::generate(&template, &format!("ward-{role}-{suffix}"), opts.key_type)
                .map_err(|e| {
                    Error::Config(format!(
                        "generating the {what} key in the PKCS#11 token: {e}"
                    ))
                })?;
            token_keys.push(made.uri);
            made.key
                .private_key()
                .map_err(|e| Error::Config(format!("the {what} key in the PKCS#11 token: {e}")))
        };
        let root_key = ca_keygen("root", "root")?;
        let root = new_root(&spec, &root_key, now).map_err(Error::pki("building the root"))?;
        let root_key_pem = key_file(&root_key)?;
        let root_issuer =
            Issuer::new(root.der.clone(), root_key).map_err(Error::pki("loading the root"))?;
        let int_key = ca_keygen("intermediate", "intermediate")?;
        let int = root_issuer
            .sign_intermediate(&spec, &int_key, now)
            .map_err(Error::pki("signing the intermediate"))?;
        let int_key_pem = key_file(&int_key)?;
        // nginx (`ssl_ocsp on`) also asks about the intermediate, and OpenSSL
        // accepts that answer only from the root or a root-issued responder
        // (ARCHITECTURE.md, trap 13): issue one now, while the root key is
        // at hand, so the online CA never needs the root key.
        let ocsp_key = ca_keygen("root OCSP responder", "root-ocsp")?;
        let root_ocsp = ward_pki::ocsp::issue_responder(
            &root_issuer,
            &ocsp_key,
            &opts.name,
            "Root OCSP Responder",
            opts.intermediate_validity,
            now,
        )
        .map_err(Error::pki("signing the root's OCSP responder certificate"))?;
        let int_issuer = Issuer::new(int.der.clone(), int_key)
            .map_err(Error::pki("loading the intermediate"))?;
        let admin_id = opts
            .trust_domain
            .id(ADMIN_PATH)
            .map_err(Error::pki("naming the admin identity"))?;
        let admin_key = keygen("admin")?;
        let admin = int_issuer
            .sign_leaf(
                &admin_key.public_key_der(),
                &LeafRequest {
                    profile: Profile::Client,
                    spiffe_id: Some(admin_id.clone()),
                    dns_names: Vec::new(),
                    ip_addresses: Vec::new(),
                    common_name: None,
                    ttl: opts.intermediate_validity,
                    clamp_to_issuer: true,
                    serial: Serial::random(now).map_err(Error::pki("drawing a serial"))?,
                    crl_url: None,
                    ocsp_url: None,
                },
                now,
            )
            .map_err(Error::pki("signing the admin certificate"))?;
        // The pre-issuance lint every certificate of this CA goes through.
        let admin_lint = ward_pki::lint::LintPolicy {
            max_workload_lifetime: opts.intermediate_validity,
            ..Default::default()
        };
        ward_pki::lint::pre_issuance(&admin.der, &int.der, &admin_lint, now)
            .map_err(|e| Error::Config(format!("the admin certificate: {e}")))?;
        let config = CaConfig {
            ca: CaSection {
                trust_domain: opts.trust_domain.clone(),
                name: opts.name.clone(),
                key_type: opts.key_type,
                offline_root: opts.offline_root.is_some(),
            },
            issuance: IssuanceSection::default(),
            limits: Default::default(),
            revocation: Default::default(),
            storage: crate::config::StorageSection {
                database: opts.database.clone(),
            },
            acme: None,
            keys: match token_keys.as_slice() {
                [root, intermediate, root_ocsp] => KeysSection {
                    root: Some(root.to_string()),
                    intermediate: Some(intermediate.to_string()),
                    root_ocsp: Some(root_ocsp.to_string()),
                },
                _ => Default::default(),
            },
            bundle: Default::default(),
            federation: Default::default(),
        };
        let in_token = !token_keys.is_empty();

        let mut plan: Vec<(PathBuf, Vec<u8>, u32)> = vec![
            // ca.toml first: it claims the directory.
            (
                self.file(CONFIG),
                config.to_documented_toml().into_bytes(),
                PUBLIC_MODE,
            ),
            (
                self.file(ROOT_CRT),
                pem::cert_to_pem(&root.der).into_bytes(),
                PUBLIC_MODE,
            ),
            (
                self.file(INTERMEDIATE_CRT),
                pem::cert_to_pem(&int.der).into_bytes(),
                PUBLIC_MODE,
            ),
            (self.file(INTERMEDIATE_KEY), int_key_pem, SECRET_MODE),
            (self.file(ROOT_OCSP_KEY), key_file(&ocsp_key)?, SECRET_MODE),
            (
                self.file(ADMIN_CRT),
                pem::certs_to_pem([admin.der.as_ref(), int.der.as_ref()]).into_bytes(),
                PUBLIC_MODE,
            ),
            (self.file(ADMIN_KEY), key_file(&admin_key)?, SECRET_MODE),
            (
                self.file(ROOT_OCSP_CRT),
                pem::cert_to_pem(&root_ocsp.der).into_bytes(),
                PUBLIC_MODE,
            ),
        ];
        let root_key_path = opts
            .offline_root
            .clone()
            .unwrap_or_else(|| self.file(ROOT_KEY));
        plan.push((root_key_path, root_key_pem, SECRET_MODE));
        if in_token {
            // The token holds the three CA keys: no key files for them.
            let token_files = [
                self.file(INTERMEDIATE_KEY),
                self.file(ROOT_OCSP_KEY),
                self.file(ROOT_KEY),
            ];
            plan.retain(|(path, _, _)| !token_files.contains(path));
        }

        let created_dir = !self.path.exists();
        if created_dir {
            create_private_dir(&self.path)?;
        }
        let mut written = Vec::new();
        for (path, contents, mode) in &plan {
            if let Err(err) = files::write_atomic(path, contents, *mode, Replace::Never) {
                for done in &written {
                    let _ = fs::remove_file(done);
                }
                if created_dir {
                    let _ = fs::remove_dir(&self.path);
                }
                return Err(err);
            }
            written.push(path.clone());
        }
        // Key bytes in `plan` are not wrapped; wipe them before returning.
        for (_, contents, mode) in &mut plan {
            if *mode == SECRET_MODE {
                zero(contents);
            }
        }
        Ok(InitReport {
            root_fingerprint: Fingerprint::of_der(&root.der),
            admin_spiffe_id: admin_id.to_string(),
            files: written,
            admin_certificate: admin.der,
            token_keys: token_keys.clone(),
            created_dir,
        })
    }

    /// `ward ca init`: [`CaDir::init`], then creates the store and records
    /// the admin certificate in it. All or nothing: if the store cannot be
    /// made, every file written is removed again.
    pub async fn init_with_store(
        &self,
        opts: &InitOptions,
        now: OffsetDateTime,
    ) -> Result<InitReport, Error> {
        let report = self.init(opts, now)?;
        let url = self.database_url(&self.config()?, None);
        let sqlite_file = (!is_postgres(&url)).then(|| PathBuf::from(sqlite_path(&url)));
        if let Some(file) = &sqlite_file
            && file.symlink_metadata().is_ok()
        {
            self.undo_init(&report, None);
            return Err(Error::AlreadyExists(format!(
                "{} already exists; refusing to reuse another CA's store",
                file.display()
            )));
        }
        let created = async {
            let store = ward_store::connect(&url)
                .await
                .map_err(|e| Error::Storage(format!("creating the CA store: {e}")))?;
            if store
                .count_certificates()
                .await
                .map_err(|e| Error::Storage(format!("reading the new CA store: {e}")))?
                > 0
            {
                store.close().await;
                return Err(Error::AlreadyExists(
                    "the database already holds another CA's certificates; give each CA its own"
                        .into(),
                ));
            }
            let recorded = record_dir_certificate(
                store.as_ref(),
                &report.admin_certificate,
                Origin::Admin,
                now,
            )
            .await;
            store.close().await;
            recorded
        }
        .await;
        if let Err(e) = created {
            self.undo_init(&report, sqlite_file.as_deref());
            return Err(e);
        }
        Ok(report)
    }

    /// Removes what a failed [`CaDir::init_with_store`] wrote.
    fn undo_init(&self, report: &InitReport, sqlite_file: Option<&Path>) {
        for done in &report.files {
            let _ = fs::remove_file(done);
        }
        destroy_token_keys(&report.token_keys);
        if let Some(file) = sqlite_file {
            for suffix in ["", "-wal", "-shm"] {
                let mut name = file.as_os_str().to_owned();
                name.push(suffix);
                let _ = fs::remove_file(PathBuf::from(name));
            }
        }
        if report.created_dir {
            let _ = fs::remove_dir(&self.path);
        }
    }

    /// The store's URL: `override_url` (`--database`, `WARD_DATABASE_URL`),
    /// else ca.toml's `[storage] database`, else `DIR/ward.db`.
    pub fn database_url(&self, config: &CaConfig, override_url: Option<&str>) -> String {
        override_url
            .map(str::to_owned)
            .or_else(|| config.storage.database.clone())
            .unwrap_or_else(|| self.file(DATABASE).display().to_string())
    }

    /// Opens this CA's store as it is: a missing, empty or damaged store is
    /// an error naming it, never a new one.
    pub async fn open_store(
        &self,
        config: &CaConfig,
        override_url: Option<&str>,
    ) -> Result<Arc<dyn Store>, Error> {
        let url = self.database_url(config, override_url);
        ward_store::open_existing(&url)
            .await
            .map_err(|e| Error::Storage(format!("cannot open the CA store: {e}")))
    }

    /// Opens this CA's store, creating it when there is none (an explicit
    /// `--init-storage`), and records the directory's admin certificate.
    /// A damaged store is still an error, never replaced.
    pub async fn init_store(
        &self,
        config: &CaConfig,
        override_url: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Arc<dyn Store>, Error> {
        let url = self.database_url(config, override_url);
        let store = match ward_store::open_existing(&url).await {
            Ok(store) => store,
            Err(ward_store::StoreError::Missing(why)) => {
                tracing::warn!("{why}: creating a new, empty CA store as asked (--init-storage)");
                ward_store::connect(&url)
                    .await
                    .map_err(|e| Error::Storage(format!("creating the CA store: {e}")))?
            }
            Err(e) => return Err(Error::Storage(format!("cannot open the CA store: {e}"))),
        };
        self.record_own_certificates(store.as_ref(), now).await?;
        Ok(store)
    }

    /// Records the directory's admin certificate (origin `admin`) unless it
    /// already is: directories made before every certificate was recorded,
    /// and stores made with `--init-storage`.
    pub async fn record_own_certificates(
        &self,
        store: &dyn Store,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let path = self.admin_cert_path();
        if !path.exists() {
            return Ok(());
        }
        let Some(admin) = read_certs(&path)?.into_iter().next() else {
            return Err(Error::Config(format!(
                "{} holds no certificate",
                path.display()
            )));
        };
        record_dir_certificate(store, &admin, Origin::Admin, now).await
    }

    /// Reads and validates `ca.toml`.
    pub fn config(&self) -> Result<CaConfig, Error> {
        let path = self.file(CONFIG);
        if !path.exists() {
            return Err(Error::Config(format!(
                "{} does not hold a Ward CA (no {CONFIG}); create one with `ward ca init`",
                self.path.display()
            )));
        }
        CaConfig::parse(&files::read_to_string(&path)?)
    }

    /// The root certificate(s) as DER.
    pub fn roots(&self) -> Result<Vec<CertificateDer<'static>>, Error> {
        read_certs(&self.file(ROOT_CRT))
    }

    /// The intermediate certificate as DER.
    pub fn intermediate_cert(&self) -> Result<CertificateDer<'static>, Error> {
        let path = self.file(INTERMEDIATE_CRT);
        read_certs(&path)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Config(format!("{} holds no certificate", path.display())))
    }

    /// The intermediate with its key, ready to sign. Fails clearly when the
    /// key is unreadable, garbled, or not the intermediate's.
    pub fn intermediate_issuer(&self) -> Result<Issuer, Error> {
        let cert = self.intermediate_cert()?;
        let keys = self.config()?.keys;
        if let Some(uri) = KeysSection::uri(&keys.intermediate, "intermediate")? {
            let key = token_key(&uri, &cert, "intermediate")?;
            return Issuer::new(cert, key).map_err(Error::pki(format!(
                "pairing {} with its key in the PKCS#11 token",
                self.file(INTERMEDIATE_CRT).display()
            )));
        }
        let key_path = self.file(INTERMEDIATE_KEY);
        let key_pem = zeroize::Zeroizing::new(files::read_to_string(&key_path)?);
        let key = PrivateKey::from_pem(&key_pem)
            .map_err(Error::pki(format!("reading {}", key_path.display())))?;
        Issuer::new(cert, key).map_err(Error::pki(format!(
            "pairing {} with {}",
            self.file(INTERMEDIATE_CRT).display(),
            key_path.display()
        )))
    }
}

impl CaDir {
    /// `DIR/root-ocsp.crt`.
    pub fn root_ocsp_cert_path(&self) -> PathBuf {
        self.file(ROOT_OCSP_CRT)
    }

    /// The signer for OCSP answers about the intermediate: the delegated
    /// responder of `ward ca init` while it is valid at `now`, else the root
    /// key when it is in the directory, else none.
    pub fn root_ocsp_signer(&self, now: OffsetDateTime) -> Result<RootOcspSigner, Error> {
        let keys = self.config()?.keys;
        let crt = self.file(ROOT_OCSP_CRT);
        if crt.exists() {
            let cert = read_certs(&crt)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::Config(format!("{} holds no certificate", crt.display())))?;
            let key = match KeysSection::uri(&keys.root_ocsp, "root_ocsp")? {
                Some(uri) => token_key(&uri, &cert, "root OCSP responder")?,
                None => self.read_key(&self.file(ROOT_OCSP_KEY))?,
            };
            let signer = Signer::new(&cert, key, std::slice::from_ref(&cert))
                .map_err(Error::pki(format!("loading {}", crt.display())))?;
            if signer.not_after() > now {
                return Ok(RootOcspSigner::Delegated(signer));
            }
        }
        let root_key = self.file(ROOT_KEY);
        let root_uri = KeysSection::uri(&keys.root, "root")?;
        if root_key.exists() || root_uri.is_some() {
            let root = self
                .roots()?
                .into_iter()
                .next()
                .ok_or_else(|| Error::Config(format!("{ROOT_CRT} holds no certificate")))?;
            let key = match &root_uri {
                Some(uri) => token_key(uri, &root, "root")?,
                None => self.read_key(&root_key)?,
            };
            let signer = Signer::new(&root, key, &[])
                .map_err(Error::pki(format!("pairing {ROOT_CRT} with {ROOT_KEY}")))?;
            return Ok(RootOcspSigner::RootKey(signer));
        }
        Ok(RootOcspSigner::None)
    }

    /// The JWT-SVID signing key, `DIR/jwt.key`; made (0600, never
    /// replacing one) when the directory has none, so CA directories made
    /// before JWT-SVIDs existed gain one on their next start.
    pub fn jwt_signer(&self) -> Result<ward_pki::jwt::JwtSigner, Error> {
        use ward_pki::jwt::JwtSigner;
        let path = self.file(JWT_KEY);
        let bad = |e: ward_pki::jwt::JwtError| Error::Config(format!("{}: {e}", path.display()));
        if !path.exists() {
            let signer = JwtSigner::generate().map_err(bad)?;
            match files::write_atomic(
                &path,
                signer.to_pem().as_bytes(),
                SECRET_MODE,
                Replace::Never,
            ) {
                Ok(()) => return Ok(signer),
                // Another process made one first: use that.
                Err(Error::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let pem = zeroize::Zeroizing::new(files::read_to_string(&path)?);
        JwtSigner::from_pem(&pem).map_err(bad)
    }

    fn read_key(&self, path: &Path) -> Result<PrivateKey, Error> {
        let pem = zeroize::Zeroizing::new(files::read_to_string(path)?);
        PrivateKey::from_pem(&pem).map_err(Error::pki(format!("reading {}", path.display())))
    }
}

/// The key of `cert` in a PKCS#11 token, proven to be that certificate's.
fn token_key(uri: &KeyUri, cert: &CertificateDer<'_>, what: &str) -> Result<PrivateKey, Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| Error::Config(format!("the {what} certificate: {e}")))?;
    pkcs11::TokenKey::open(uri, parsed.public_key().raw)
        .and_then(|k| k.private_key())
        .map_err(|e| Error::Config(format!("the {what} key in the PKCS#11 token: {e}")))
}

/// Removes keys a failed `ward ca init` made in a token.
/// The PEM file of a key `init` writes; nothing for a key in a token (its
/// plan entry is dropped before anything is written).
fn key_file(key: &PrivateKey) -> Result<Vec<u8>, Error> {
    if key.is_remote() {
        return Ok(Vec::new());
    }
    key.to_pkcs8_pem()
        .map(|pem| pem.as_bytes().to_vec())
        .map_err(Error::pki("writing a key"))
}

fn destroy_token_keys(uris: &[KeyUri]) {
    for uri in uris {
        if let Err(e) = pkcs11::destroy(uri) {
            tracing::warn!(error = %e, key = %uri, "could not remove a key made in the PKCS#11 token");
        }
    }
}

/// Records one certificate of the directory, naming it in errors.
async fn record_dir_certificate(
    store: &dyn Store,
    der: &[u8],
    origin: Origin,
    now: OffsetDateTime,
) -> Result<(), Error> {
    crate::authority::record_signed(store, der, origin, now)
        .await
        .map_err(|e| {
            let detail = match &e {
                crate::authority::AuthorityError::Internal(m) => m.clone(),
                crate::authority::AuthorityError::Unavailable(s) => s.to_string(),
                other => other.to_string(),
            };
            Error::Storage(format!("recording the {origin} certificate: {detail}"))
        })
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The file of a SQLite URL (`sqlite://PATH`, `sqlite:PATH` or a path).
fn sqlite_path(url: &str) -> &str {
    match url.strip_prefix("sqlite:") {
        Some(rest) => rest.strip_prefix("//").unwrap_or(rest),
        None => url,
    }
}

fn zero(bytes: &mut [u8]) {
    use zeroize::Zeroize;
    bytes.zeroize();
}

fn create_private_dir(path: &Path) -> Result<(), Error> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .map_err(Error::io(format!("creating {}", path.display())))
}

/// Reads every certificate of a PEM (or single DER) file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = fs::read(path).map_err(Error::io(format!("reading {}", path.display())))?;
    pem::parse_certs_any(&bytes).map_err(Error::pki(format!("reading {}", path.display())))
}

mod checks;
pub mod jwt_keys;
mod open;
pub mod roots;
pub mod rotation;

pub use open::{Storage, policy};

#[cfg(test)]
mod tests;
