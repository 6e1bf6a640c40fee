//! The Authority Information Access extension (RFC 5280 §4.2.2.1) that
//! points clients at an OCSP responder.
//!
//! Its own module because leaf issuance ([`crate::issue`]) writes it and
//! the OCSP code ([`crate::ocsp`]) builds on issuance: keeping it in
//! either would make the two import each other.

use der::Encode;
use der::asn1::{Ia5String, ObjectIdentifier};
use rcgen::CustomExtension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};

use crate::Error;

/// id-ad-ocsp.
const OID_AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
/// id-pe-authorityInfoAccess, as rcgen wants it.
const ARCS_AIA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];

/// The Authority Information Access extension with one id-ad-ocsp URI.
pub(crate) fn extension(url: &str) -> Result<CustomExtension, Error> {
    let uri = Ia5String::new(url)
        .map_err(|_| Error::Policy(format!("OCSP URL {url:?} is not an ASCII string")))?;
    let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
        access_method: OID_AD_OCSP,
        access_location: GeneralName::UniformResourceIdentifier(uri),
    }]);
    let der = aia
        .to_der()
        .map_err(|e| Error::Crypto(format!("OCSP encoding (authorityInfoAccess): {e}")))?;
    Ok(CustomExtension::from_oid_content(ARCS_AIA, der))
}
