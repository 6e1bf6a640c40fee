//! A fresh private key and a CSR proving possession of it.
//!
//! The CSR carries no names: the CA takes the identity from the token (on
//! `/v1/sign`) or from the current certificate (on `/v1/renew`).

use ward_pki::{KeyType, PrivateKey};
use zeroize::Zeroizing;

use crate::ClientError;

/// A new key of `key_type` and a PEM CSR signed with it.
pub(crate) fn key_and_csr(key_type: KeyType) -> Result<(PrivateKey, String), ClientError> {
    let key = key_type
        .generate()
        .map_err(|e| ClientError::Config(format!("cannot generate a key: {e}")))?;
    let csr = key
        .csr_pem()
        .map_err(|e| ClientError::Config(format!("cannot build the CSR: {e}")))?;
    Ok((key, csr))
}

/// The key as PKCS#8 DER, wiped on drop.
pub(crate) fn pkcs8(key: &PrivateKey) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    key.to_pkcs8_der()
        .map_err(|e| ClientError::Config(format!("cannot encode the key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_is_signed_by_the_new_key() {
        let (key, csr) = key_and_csr(KeyType::EcdsaP256).unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let params = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        use rcgen::PublicKeyData as _;
        assert_eq!(
            params.public_key.subject_public_key_info(),
            key.public_key_der()
        );
        let (_, again) = key_and_csr(KeyType::EcdsaP256).unwrap();
        assert_ne!(csr, again, "every CSR comes with a fresh key");
    }
}
