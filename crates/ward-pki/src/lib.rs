//! Pure X.509 for Ward.
//!
//! Identities ([`SpiffeId`], [`TrustDomain`]), key material ([`KeyType`],
//! [`PrivateKey`]), certificate profiles and building ([`issue`]), inspection
//! ([`inspect`]) and path validation ([`verify`]).
//!
//! This crate performs no I/O and holds no global state: callers hand it bytes
//! and a clock reading, it hands back bytes and typed results. It must never
//! log, print or format private key material.

#![forbid(unsafe_code)]

mod aia;
pub mod cidr;
pub mod crl;
mod error;
mod hex;
mod id;
pub mod inspect;
pub mod issue;
pub mod jwt;
mod key;
pub mod lint;
pub mod ocsp;
pub mod pem;
pub mod perms;
pub mod rego;
pub mod selector;
mod serial;
pub mod sig;
mod ttl;
pub mod uri;
pub mod verify;

pub use error::Error;
pub use id::{SpiffeId, SpiffeIdPattern, TrustDomain};
pub use key::{KeyType, PrivateKey, PublicKeyKind, RemoteKey};
pub use serial::{Fingerprint, Serial};
pub use ttl::parse_duration;
