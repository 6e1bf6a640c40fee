//! The CA's HTTP API as it travels (SPEC §5): the JSON bodies of every
//! request and answer, defined once for the server (`ward-ca`), the client
//! library (`ward-client`) and the CLI.
//!
//! Serde only: no validation, no HTTP, no clock. Fields are the strings the
//! wire carries; the CA parses them (SPIFFE IDs, durations, serials) where it
//! decides on them. Changing a field here changes the wire: SPEC.md is the
//! contract, and the end-to-end tests check it.

#![forbid(unsafe_code)]

pub mod admin;
pub mod entries;
pub mod error;
pub mod federation;
pub mod issuance;
pub mod jwt;
pub mod paths;
pub mod revocation;

pub use admin::{
    CertificateList, CertificatePage, CertificateView, CreateTokenRequest, CreatedTokenView,
    RevokeTokenQuery, RevokedToken, TokenList, TokenView,
};
pub use entries::{CreateEntryRequest, EntryList, EntryView, NodeSignRequest};
pub use error::ErrorBody;
pub use federation::FederatedBundles;
pub use issuance::{IssueRequest, Issued, RenewRequest, SeedRequest, SeedResponse, SignRequest};
pub use jwt::{JwtSvidRequest, JwtSvidResponse, NodeJwtSvidRequest};
pub use revocation::{RevokeRequest, RevokeResponse};
