//! PEM in and out, for certificates.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::Error;

/// Every `CERTIFICATE` block of a PEM bundle, in order. Other blocks (keys,
/// parameters) are skipped; a bundle without certificates is an error.
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidPem(e.to_string()))?;
    if certs.is_empty() {
        return Err(Error::InvalidPem("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// Certificates from bytes that are either PEM or a single DER certificate.
pub fn parse_certs_any(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateDer::from(bytes.to_vec())]);
    }
    parse_certs(bytes)
}

/// One DER certificate as a PEM block.
pub fn cert_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + 70);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Several DER certificates as one PEM bundle.
pub fn certs_to_pem<'a>(ders: impl IntoIterator<Item = &'a [u8]>) -> String {
    ders.into_iter().map(cert_to_pem).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_errors() {
        let ders: [&[u8]; 2] = [&[0x30, 0x03, 1, 2, 3], &[0x30, 0x01, 9]];
        let pem = certs_to_pem(ders);
        let back = parse_certs(pem.as_bytes()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].as_ref(), ders[0]);
        assert!(parse_certs(b"nothing here").is_err());
        assert!(
            parse_certs(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").is_err()
        );
        assert_eq!(parse_certs_any(ders[0]).unwrap()[0].as_ref(), ders[0]);
    }
}
