//! One ACME conversation: the account (restored from the state directory
//! or created, with EAB when configured) and one order (identifiers →
//! challenges answered → finalize with a fresh P-256 key → chain).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse,
    CertificateIdentifier, ChallengeType, ExternalAccountKey, HttpClient, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, Der};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};
use zeroize::Zeroizing;

use crate::state::{ACCOUNT_FILE, StateDir};
use crate::{AcmeSettings, ChallengeKind, Challenges, Error};

/// How long an order may take to become ready, and then valid.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// `account.json`: the directory the account belongs to and its
/// credentials (the account key, PKCS#8).
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Largest ACME response body read: a directory, an order or a chain is
/// a few KiB.
const MAX_RESPONSE: usize = 1 << 20;

/// instant-acme's HTTP client with a cap on response bodies (its own
/// client reads them whole, however large).
struct Limited(HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>);

impl HttpClient for Limited {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.0.request(req);
        Box::pin(async move {
            let rsp = fut
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let (parts, body) = rsp.into_parts();
            let body = http_body_util::Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| {
                    instant_acme::Error::Other(
                        format!("response body (limit {MAX_RESPONSE} bytes): {e}").into(),
                    )
                })?
                .to_bytes();
            Ok(BytesResponse {
                parts,
                body: Box::new(body),
            })
        })
    }
}

/// The HTTP client for the ACME server: Ward's TLS configuration with
/// `ca_bundle`'s roots, or the system's roots.
fn builder(settings: &AcmeSettings) -> Result<instant_acme::AccountBuilder, Error> {
    let roots = match &settings.ca_bundle {
        Some(bundle) => {
            let roots = CertificateDer::pem_file_iter(bundle)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| Error::Config(format!("ca_bundle {}: {e}", bundle.display())))?;
            if roots.is_empty() {
                return Err(Error::Config(format!(
                    "ca_bundle {} holds no certificate",
                    bundle.display()
                )));
            }
            roots
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                return Err(Error::Config(format!(
                    "no system roots to verify the ACME server with (set ca_bundle): {:?}",
                    found.errors
                )));
            }
            found.certs
        }
    };
    let tls = ward_tls::acme::acme_client_config(&roots)
        .map_err(|e| Error::Config(format!("ACME server roots: {e}")))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client = HyperClient::builder(TokioExecutor::new()).build(connector);
    Ok(Account::builder_with_http(Box::new(Limited(client))))
}

/// The account for `settings`: restored from the state directory when it
/// belongs to the same directory URL, else created (and stored, 0600).
pub async fn account(settings: &AcmeSettings, state: &StateDir) -> Result<Account, Error> {
    if let Some(bytes) = state.read(ACCOUNT_FILE)? {
        let bytes = Zeroizing::new(bytes);
        match serde_json::from_slice::<StoredAccount>(&bytes) {
            Ok(stored) if stored.directory == settings.directory => {
                return builder(settings)?
                    .from_credentials(stored.credentials)
                    .await
                    .map_err(Error::protocol("restoring the account"));
            }
            Ok(_) => {
                tracing::info!(directory = %settings.directory, "the stored account belongs to another directory; creating a new one")
            }
            Err(e) => {
                tracing::warn!(error = %e, "the stored account is unreadable; creating a new one")
            }
        }
    }
    let eab = match (&settings.eab_kid, &settings.eab_hmac_file) {
        (Some(kid), Some(file)) => {
            let text = Zeroizing::new(
                std::fs::read_to_string(file)
                    .map_err(Error::io(format!("reading {}", file.display())))?,
            );
            let key = Zeroizing::new(
                URL_SAFE_NO_PAD
                    .decode(text.trim().trim_end_matches('='))
                    .map_err(|e| {
                        Error::Config(format!(
                            "eab_hmac_file {}: not base64url: {e}",
                            file.display()
                        ))
                    })?,
            );
            Some(ExternalAccountKey::new(kid.clone(), &key))
        }
        _ => None,
    };
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contact,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder(settings)?
        .create(&new, settings.directory.clone(), eab.as_ref())
        .await
        .map_err(Error::protocol(format!(
            "creating an account at {}",
            settings.directory
        )))?;
    let stored = StoredAccount {
        directory: settings.directory.clone(),
        credentials,
    };
    let json = Zeroizing::new(
        serde_json::to_vec(&stored).map_err(|e| Error::Config(format!("account: {e}")))?,
    );
    state.write(ACCOUNT_FILE, &json, 0o600)?;
    tracing::info!(account = %account.id(), "ACME account created");
    Ok(account)
}

/// What [`obtain`] returns: the chain and its key, PEM.
pub struct Obtained {
    /// The chain, leaf first.
    pub chain_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: Zeroizing<String>,
}

/// Something to undo once the order is decided.
enum Cleanup {
    TlsAlpn(String),
    Http(String),
    Dns(String, String),
}

/// Orders a certificate for `settings.domains`, answering its challenges
/// through `challenges` (or the dns hook); `replaces` names the
/// certificate it succeeds (ARI).
pub async fn obtain(
    account: &Account,
    settings: &AcmeSettings,
    challenges: &Challenges,
    replaces: Option<CertificateIdentifier<'static>>,
) -> Result<Obtained, Error> {
    let ids: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut new = NewOrder::new(&ids);
    if let Some(p) = &settings.profile {
        new = new.profile(p);
    }
    if let Some(r) = replaces {
        new = new.replaces(r);
    }
    let mut order = account
        .new_order(&new)
        .await
        .map_err(Error::protocol("newOrder"))?;
    let mut undo = Vec::new();
    let answered = answer_all(&mut order, settings, challenges, &mut undo).await;
    let ready = match answered {
        Ok(()) => {
            let policy = RetryPolicy::new()
                .initial_delay(Duration::from_millis(250))
                .backoff(1.5)
                .timeout(ORDER_TIMEOUT);
            order
                .poll_ready(&policy)
                .await
                .map_err(Error::protocol("waiting for the order to become ready"))
        }
        Err(e) => Err(e),
    };
    for step in undo {
        match step {
            Cleanup::TlsAlpn(name) => challenges.remove_tls_alpn(&name),
            Cleanup::Http(token) => challenges.remove_http(&token),
            Cleanup::Dns(fqdn, value) => {
                if let Some(hook) = &settings.dns_hook
                    && let Err(e) = crate::dns01::run_hook(hook, "cleanup", &fqdn, &value).await
                {
                    tracing::warn!(error = %e, "dns-01 cleanup failed");
                }
            }
        }
    }
    match ready? {
        OrderStatus::Ready => {}
        status => {
            return Err(Error::Challenge(format!(
                "the order became {status:?}: {}",
                why_invalid(&mut order).await
            )));
        }
    }
    let key = rcgen::KeyPair::generate().map_err(|e| Error::Certificate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(settings.domains.clone())
        .map_err(|e| Error::Certificate(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| Error::Certificate(format!("CSR: {e}")))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(Error::protocol("finalize"))?;
    let policy = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(ORDER_TIMEOUT);
    let chain_pem = order
        .poll_certificate(&policy)
        .await
        .map_err(Error::protocol("downloading the certificate"))?;
    Ok(Obtained {
        chain_pem,
        key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

async fn answer_all(
    order: &mut instant_acme::Order,
    settings: &AcmeSettings,
    challenges: &Challenges,
    undo: &mut Vec<Cleanup>,
) -> Result<(), Error> {
    let kind = match settings.challenge {
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::Dns01 => ChallengeType::Dns01,
    };
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz.map_err(Error::protocol("reading an authorization"))?;
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => {
                return Err(Error::Challenge(format!(
                    "authorization for {} is {other:?}",
                    authz.identifier()
                )));
            }
        }
        let name = authz.identifier().to_string();
        let Some(mut challenge) = authz.challenge(kind.clone()) else {
            return Err(Error::Challenge(format!(
                "the server offers no {:?} challenge for {name}",
                settings.challenge
            )));
        };
        let key_authorization = challenge.key_authorization();
        match settings.challenge {
            ChallengeKind::TlsAlpn01 => {
                challenges.add_tls_alpn(&name, key_authorization.digest().as_ref())?;
                undo.push(Cleanup::TlsAlpn(name.clone()));
            }
            ChallengeKind::Http01 => {
                challenges.add_http(&challenge.token, key_authorization.as_str());
                undo.push(Cleanup::Http(challenge.token.clone()));
            }
            ChallengeKind::Dns01 => {
                let fqdn = crate::dns01::record_name(&name);
                let value = key_authorization.dns_value();
                let hook = settings
                    .dns_hook
                    .as_deref()
                    .ok_or_else(|| Error::Config("dns-01 needs dns_hook".into()))?;
                undo.push(Cleanup::Dns(fqdn.clone(), value.clone()));
                crate::dns01::run_hook(hook, "present", &fqdn, &value).await?;
            }
        }
        challenge
            .set_ready()
            .await
            .map_err(Error::protocol(format!(
                "answering the challenge for {name}"
            )))?;
        tracing::debug!(%name, challenge = ?settings.challenge, "challenge answered");
    }
    Ok(())
}

/// The validation errors of an invalid order's challenges, for the log.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(Ok(authz)) = authzs.next().await {
        for c in &authz.challenges {
            if let Some(e) = &c.error {
                reasons.push(format!("{}: {e}", authz.identifier()));
            }
        }
    }
    if reasons.is_empty() {
        "no reason given".into()
    } else {
        reasons.join("; ")
    }
}

/// The RFC 9773 identifier of `leaf` (AKI keyIdentifier and serial), or
/// `None` if it has no AKI.
pub fn cert_id(leaf: &CertificateDer<'_>) -> Option<CertificateIdentifier<'static>> {
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    let aki = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0),
            _ => None,
        })?;
    Some(
        CertificateIdentifier::new(
            Der::from_slice(aki),
            Der::from_slice(cert.tbs_certificate.raw_serial()),
        )
        .into_owned(),
    )
}
