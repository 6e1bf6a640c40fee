//! CA keys in a PKCS#11 token (an HSM; SoftHSM2 in tests).
//!
//! [`TokenKey`] is a [`RemoteKey`]: the CA signs certificates, CRLs and
//! OCSP answers through it exactly as with a key file, while the secret
//! stays in the token. Signatures go through a small pool of logged-in
//! sessions, so concurrent issuance does not queue on one session. A token
//! that goes away fails the signature (the CA answers 503); the pool then
//! drops its sessions and the next signature finds the token again, so the
//! CA recovers on its own when the token comes back.
//!
//! [`generate`] makes a key pair in the token for `ward ca init`: the
//! private half is sensitive and not extractable.
//!
//! Tokens sign ECDSA over a hash they are given (`CKM_ECDSA`, the one
//! mechanism every token has): the hash is computed here and the raw
//! `r‖s` the token returns is encoded as the DER `ECDSA-Sig-Value` X.509
//! wants. RSA uses `CKM_SHA256_RSA_PKCS` (the CA signs PKCS#1 v1.5 with
//! SHA-256), Ed25519 `CKM_EDDSA`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_lc_rs::{digest, signature};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use ward_pki::{KeyType, PrivateKey, PublicKeyKind, RemoteKey};
use zeroize::Zeroizing;

pub mod uri;

mod der;

pub use uri::{KeyUri, UriError};

/// Sessions a key keeps open for concurrent signatures.
pub const POOL_SIZE: usize = 8;

/// How long a signature waits for a free session before it gives up.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Least time between two re-initializations of a module.
const REINIT_EVERY: Duration = Duration::from_secs(1);

/// Largest PIN file read.
const MAX_PIN_FILE: u64 = 1024;

/// Why the token could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The configuration is wrong (module, PIN file, key type); retrying
    /// will not help.
    #[error("{0}")]
    Config(String),
    /// The token (or the key in it) cannot be reached now.
    #[error("{0}")]
    Unavailable(String),
}

fn ck(what: impl Into<String>) -> impl FnOnce(CkError) -> TokenError {
    let what = what.into();
    move |e| match e {
        CkError::LibraryLoading(e) => TokenError::Config(format!("{what}: {e}")),
        CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange, _) => {
            TokenError::Config(format!("{what}: the PIN was refused ({e})"))
        }
        other => TokenError::Unavailable(format!("{what}: {other}")),
    }
}

/// A loaded and initialized PKCS#11 module, and when it was last
/// re-initialized.
struct Module {
    ctx: Pkcs11,
    reinitialized: Option<Instant>,
}

/// The loaded and initialized PKCS#11 modules of this process, by path: a
/// module may be initialized only once.
fn modules() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Module>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Module>>> = OnceLock::new();
    MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn initialize(ctx: &Pkcs11, path: &Path) -> Result<(), TokenError> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(TokenError::Config(format!(
            "initializing the PKCS#11 module {}: {e}",
            path.display()
        ))),
    }
}

fn module(path: &Path) -> Result<Pkcs11, TokenError> {
    let mut modules = modules();
    if let Some(m) = modules.get(path) {
        return Ok(m.ctx.clone());
    }
    let ctx = Pkcs11::new(path).map_err(|e| {
        TokenError::Config(format!(
            "loading the PKCS#11 module {}: {e}",
            path.display()
        ))
    })?;
    initialize(&ctx, path)?;
    modules.insert(
        path.to_owned(),
        Module {
            ctx: ctx.clone(),
            reinitialized: None,
        },
    );
    Ok(ctx)
}

/// Finalizes and initializes the module again, at most once per
/// [`REINIT_EVERY`]: some modules (SoftHSM2 among them) notice a token
/// that came back only then. Every session of the module is closed by it;
/// the pools find that out on their next signature and open new ones.
fn reinitialize(path: &Path) -> Result<(), TokenError> {
    let mut modules = modules();
    let Some(m) = modules.get_mut(path) else {
        return Ok(());
    };
    if m.reinitialized
        .is_some_and(|at| at.elapsed() < REINIT_EVERY)
    {
        return Ok(());
    }
    m.reinitialized = Some(Instant::now());
    tracing::warn!(module = %path.display(), "re-initializing the PKCS#11 module to find the token again");
    let _ = m.ctx.clone().finalize();
    initialize(&m.ctx, path)
}

/// Reads a PIN file: at most 1 KiB, one line, the newline dropped.
pub fn read_pin(path: &Path) -> Result<Zeroizing<String>, TokenError> {
    use std::io::Read as _;
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| TokenError::Config(format!("reading the PIN file {shown}: {e}")))?;
    let mut pin = Zeroizing::new(String::new());
    file.take(MAX_PIN_FILE + 1)
        .read_to_string(&mut pin)
        .map_err(|e| TokenError::Config(format!("reading the PIN file {shown}: {e}")))?;
    if pin.len() as u64 > MAX_PIN_FILE {
        return Err(TokenError::Config(format!(
            "the PIN file {shown} is longer than {MAX_PIN_FILE} bytes"
        )));
    }
    let trimmed = pin.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() || trimmed.contains(['\n', '\r']) {
        return Err(TokenError::Config(format!(
            "the PIN file {shown} must hold the PIN on one line"
        )));
    }
    Ok(Zeroizing::new(trimmed.to_owned()))
}

/// The token, reached through its module and logged in as the user.
struct Token {
    ctx: Pkcs11,
    uri: KeyUri,
    pin: Zeroizing<String>,
}

impl Token {
    fn open(uri: &KeyUri) -> Result<Self, TokenError> {
        let pin = read_pin(&uri.pin_file)?;
        let ctx = module(&uri.module)?;
        Ok(Token {
            ctx,
            uri: uri.clone(),
            pin,
        })
    }

    /// The slot holding the token the URI names; when it is missing, the
    /// module is re-initialized (rate-limited) and asked again.
    fn slot(&self) -> Result<Slot, TokenError> {
        match self.find_slot() {
            Err(TokenError::Unavailable(_)) => {
                reinitialize(&self.uri.module)?;
                self.find_slot()
            }
            found => found,
        }
    }

    fn find_slot(&self) -> Result<Slot, TokenError> {
        let slots = self
            .ctx
            .get_slots_with_token()
            .map_err(ck("listing the PKCS#11 slots"))?;
        for slot in slots {
            let Ok(info) = self.ctx.get_token_info(slot) else {
                continue;
            };
            let same = |want: &Option<String>, have: &str| {
                want.as_deref().is_none_or(|w| w == have.trim_end())
            };
            if info.label().trim_end() == self.uri.token
                && same(&self.uri.serial, info.serial_number())
                && same(&self.uri.manufacturer, info.manufacturer_id())
                && same(&self.uri.model, info.model())
            {
                return Ok(slot);
            }
        }
        Err(TokenError::Unavailable(format!(
            "no token labelled {:?} is present in {}",
            self.uri.token,
            self.uri.module.display()
        )))
    }

    /// A new session, logged in as the user.
    fn session(&self, read_write: bool) -> Result<Session, TokenError> {
        let slot = self.slot()?;
        let session = if read_write {
            self.ctx.open_rw_session(slot)
        } else {
            self.ctx.open_ro_session(slot)
        }
        .map_err(ck(format!(
            "opening a session on token {:?}",
            self.uri.token
        )))?;
        let pin = AuthPin::new(self.pin.as_str().into());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(ck(format!("logging in to token {:?}", self.uri.token))(e)),
        }
    }

    /// The one private key the URI names.
    fn find_key(&self, session: &Session) -> Result<ObjectHandle, TokenError> {
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        if let Some(label) = &self.uri.object {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &self.uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        let found = session
            .find_objects(&template)
            .map_err(ck("looking up the key in the token"))?;
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(TokenError::Unavailable(format!(
                "token {:?} holds no private key {}",
                self.uri.token,
                self.key_name()
            ))),
            more => Err(TokenError::Config(format!(
                "token {:?} holds {} private keys {}; name one with id=",
                self.uri.token,
                more.len(),
                self.key_name()
            ))),
        }
    }

    fn key_name(&self) -> String {
        match (&self.uri.object, &self.uri.id) {
            (Some(label), _) => format!("labelled {label:?}"),
            (None, Some(id)) => format!("with id {}", der::hex(id)),
            (None, None) => "(unnamed)".into(),
        }
    }
}

/// How a key type signs through PKCS#11.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    /// CKM_ECDSA over a hash computed here; `field` bytes per coordinate.
    Ecdsa {
        hash: &'static digest::Algorithm,
        field: usize,
    },
    /// CKM_SHA256_RSA_PKCS.
    RsaSha256,
    /// CKM_EDDSA (pure Ed25519).
    Ed25519,
}

impl Scheme {
    fn of(key_type: KeyType) -> Result<Self, TokenError> {
        Ok(match key_type {
            KeyType::EcdsaP256 => Scheme::Ecdsa {
                hash: &digest::SHA256,
                field: 32,
            },
            KeyType::EcdsaP384 => Scheme::Ecdsa {
                hash: &digest::SHA384,
                field: 48,
            },
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => Scheme::RsaSha256,
            KeyType::Ed25519 => Scheme::Ed25519,
            other => {
                return Err(TokenError::Config(format!(
                    "{other} keys cannot be kept in a PKCS#11 token (ecdsa-p256, ecdsa-p384, rsa-* and ed25519 can)"
                )));
            }
        })
    }

    fn verification(self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            Scheme::Ecdsa { field: 48, .. } => &signature::ECDSA_P384_SHA384_ASN1,
            Scheme::Ecdsa { .. } => &signature::ECDSA_P256_SHA256_ASN1,
            Scheme::RsaSha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Scheme::Ed25519 => &signature::ED25519,
        }
    }
}

/// A session of the pool with the key looked up in it.
struct Pooled {
    session: Session,
    key: ObjectHandle,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Pooled>,
    /// Sessions open, idle or in use.
    open: usize,
}

/// A private key in a PKCS#11 token, signing through a pool of sessions.
pub struct TokenKey {
    token: Token,
    scheme: Scheme,
    spki: Vec<u8>,
    pool: Mutex<PoolState>,
    freed: Condvar,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("token", &self.token.uri.token)
            .field("key", &self.token.key_name())
            .finish()
    }
}

impl TokenKey {
    /// Opens the key `uri` names, whose public key is `spki_der` (from its
    /// certificate), and proves it: one signature, checked against that
    /// public key, so a wrong key is found now rather than by clients.
    pub fn open(uri: &KeyUri, spki_der: &[u8]) -> Result<Arc<Self>, TokenError> {
        let key_type = PublicKeyKind::from_spki_der(spki_der)
            .and_then(PublicKeyKind::key_type)
            .map_err(|e| TokenError::Config(format!("the certificate's key: {e}")))?;
        let key = Arc::new(TokenKey {
            token: Token::open(uri)?,
            scheme: Scheme::of(key_type)?,
            spki: spki_der.to_vec(),
            pool: Mutex::new(PoolState::default()),
            freed: Condvar::new(),
        });
        key.prove()?;
        Ok(key)
    }

    /// The key as a [`PrivateKey`] the CA signs with.
    pub fn private_key(self: &Arc<Self>) -> Result<PrivateKey, TokenError> {
        PrivateKey::remote(self.clone()).map_err(|e| TokenError::Config(e.to_string()))
    }

    fn prove(&self) -> Result<(), TokenError> {
        use x509_parser::prelude::FromDer as _;
        let msg = b"ward: does this token key belong to its certificate?";
        let sig = self.try_sign(msg)?;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&self.spki)
            .map_err(|e| TokenError::Config(format!("the certificate's key: {e}")))?;
        signature::UnparsedPublicKey::new(
            self.scheme.verification(),
            spki.subject_public_key.data.as_ref(),
        )
        .verify(msg, &sig)
        .map_err(|_| {
            TokenError::Config(format!(
                "the key {} in token {:?} does not belong to the certificate",
                self.token.key_name(),
                self.token.uri.token
            ))
        })
    }

    /// A session from the pool, or a new one while fewer than
    /// [`POOL_SIZE`] are open; else waits for one to be freed.
    fn acquire(&self) -> Result<Pooled, TokenError> {
        let mut state = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(pooled) = state.idle.pop() {
                return Ok(pooled);
            }
            if state.open < POOL_SIZE {
                state.open += 1;
                drop(state);
                let opened = self.token.session(false).and_then(|session| {
                    let key = self.token.find_key(&session)?;
                    Ok(Pooled { session, key })
                });
                if opened.is_err() {
                    let mut state = self.pool.lock().unwrap_or_else(|p| p.into_inner());
                    state.open -= 1;
                    self.freed.notify_one();
                }
                return opened;
            }
            let (next, timeout) = self
                .freed
                .wait_timeout(state, POOL_WAIT)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            if timeout.timed_out() && state.idle.is_empty() && state.open >= POOL_SIZE {
                return Err(TokenError::Unavailable(format!(
                    "all {POOL_SIZE} sessions of token {:?} stayed busy for {}s",
                    self.token.uri.token,
                    POOL_WAIT.as_secs()
                )));
            }
        }
    }

    fn release(&self, pooled: Pooled) {
        let mut state = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        state.idle.push(pooled);
        self.freed.notify_one();
    }

    /// Drops a failed session and every idle one: after a failure the
    /// token may have gone, and its other sessions with it.
    fn discard(&self, failed: Pooled) {
        let stale = {
            let mut state = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let stale = std::mem::take(&mut state.idle);
            state.open -= 1 + stale.len();
            self.freed.notify_all();
            stale
        };
        drop(failed);
        drop(stale);
    }

    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, TokenError> {
        let digest_buf;
        let (mechanism, data): (Mechanism<'_>, &[u8]) = match self.scheme {
            Scheme::Ecdsa { hash, .. } => {
                digest_buf = digest::digest(hash, msg);
                (Mechanism::Ecdsa, digest_buf.as_ref())
            }
            Scheme::RsaSha256 => (Mechanism::Sha256RsaPkcs, msg),
            Scheme::Ed25519 => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                msg,
            ),
        };
        // A session that fails may be stale (the token went away and came
        // back): retry once on a fresh one.
        let mut last = None;
        for _ in 0..2 {
            let pooled = self.acquire()?;
            match pooled.session.sign(&mechanism, pooled.key, data) {
                Ok(sig) => {
                    self.release(pooled);
                    return match self.scheme {
                        Scheme::Ecdsa { field, .. } => der::ecdsa_sig(&sig, field).map_err(|e| {
                            TokenError::Unavailable(format!("the token's signature: {e}"))
                        }),
                        _ => Ok(sig),
                    };
                }
                Err(e) => {
                    self.discard(pooled);
                    last = Some(ck(format!("signing with token {:?}", self.token.uri.token))(e));
                }
            }
        }
        Err(last.unwrap_or_else(|| TokenError::Unavailable("signing failed".into())))
    }
}

impl RemoteKey for TokenKey {
    fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        self.try_sign(msg).map_err(|e| {
            tracing::error!(error = %e, "the PKCS#11 token did not sign");
            e.to_string()
        })
    }
}

/// What [`generate`] made.
#[derive(Debug)]
pub struct Generated {
    /// The key's URI (token, label, id, module and PIN file).
    pub uri: KeyUri,
    /// The key, ready to sign.
    pub key: Arc<TokenKey>,
}

/// Generates a `key_type` key pair in the token `template` names (its
/// `token`, `module` and `pin_file`), labelled `label` with a random
/// CKA_ID. The private key is sensitive and not extractable.
pub fn generate(
    template: &KeyUri,
    label: &str,
    key_type: KeyType,
) -> Result<Generated, TokenError> {
    let scheme = Scheme::of(key_type)?;
    let token = Token::open(template)?;
    let session = token.session(true)?;
    let mut id = vec![0u8; 8];
    aws_lc_rs::rand::fill(&mut id)
        .map_err(|_| TokenError::Unavailable("drawing a key id".into()))?;
    let common = |private: bool| {
        vec![
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
            if private {
                Attribute::Sign(true)
            } else {
                Attribute::Verify(true)
            },
        ]
    };
    let mut public = common(false);
    let mut private = common(true);
    private.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
    ]);
    let mechanism = match key_type {
        KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::Ed25519 => {
            public.push(Attribute::EcParams(der::curve_params(key_type).to_vec()));
            if key_type == KeyType::Ed25519 {
                Mechanism::EccEdwardsKeyPairGen
            } else {
                Mechanism::EccKeyPairGen
            }
        }
        _ => {
            let bits: u64 = match key_type {
                KeyType::Rsa2048 => 2048,
                KeyType::Rsa3072 => 3072,
                _ => 4096,
            };
            public.push(Attribute::ModulusBits(bits.into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        }
    };
    let (pub_handle, _) = session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(ck(format!(
            "generating a {key_type} key in token {:?}",
            template.token
        )))?;
    let spki = match scheme {
        Scheme::RsaSha256 => {
            let attrs = session
                .get_attributes(
                    pub_handle,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
                .map_err(ck("reading the new public key"))?;
            let (mut n, mut e) = (None, None);
            for attr in attrs {
                match attr {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            match (n, e) {
                (Some(n), Some(e)) => der::rsa_spki(&n, &e),
                _ => {
                    return Err(TokenError::Unavailable(
                        "the token did not return the new RSA public key".into(),
                    ));
                }
            }
        }
        _ => {
            let attrs = session
                .get_attributes(pub_handle, &[AttributeType::EcPoint])
                .map_err(ck("reading the new public key"))?;
            let point = attrs.into_iter().find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            });
            let point = point.ok_or_else(|| {
                TokenError::Unavailable("the token did not return the new EC public key".into())
            })?;
            der::ec_spki(key_type, &point).map_err(TokenError::Unavailable)?
        }
    };
    drop(session);
    let uri = KeyUri {
        object: Some(label.to_owned()),
        id: Some(id),
        ..template.clone()
    };
    let key = TokenKey::open(&uri, &spki)?;
    Ok(Generated { uri, key })
}

/// Destroys the key pair (private and public objects) `uri` names: undoing
/// a failed `ward ca init`.
pub fn destroy(uri: &KeyUri) -> Result<(), TokenError> {
    let token = Token::open(uri)?;
    let session = token.session(true)?;
    let mut template = Vec::new();
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    if template.is_empty() {
        return Ok(());
    }
    for handle in session
        .find_objects(&template)
        .map_err(ck("looking up the keys to remove"))?
    {
        session
            .destroy_object(handle)
            .map_err(ck("removing a key from the token"))?;
    }
    Ok(())
}

/// The CKA_EXTRACTABLE and CKA_SENSITIVE values of the private key `uri`
/// names, as the token reports them (for `ward ca check` and tests).
pub fn key_protection(uri: &KeyUri) -> Result<(bool, bool), TokenError> {
    let token = Token::open(uri)?;
    let session = token.session(false)?;
    let key = token.find_key(&session)?;
    let attrs = session
        .get_attributes(key, &[AttributeType::Extractable, AttributeType::Sensitive])
        .map_err(ck("reading the key's attributes"))?;
    let (mut extractable, mut sensitive) = (true, false);
    for attr in attrs {
        match attr {
            Attribute::Extractable(v) => extractable = v,
            Attribute::Sensitive(v) => sensitive = v,
            _ => {}
        }
    }
    Ok((extractable, sensitive))
}
