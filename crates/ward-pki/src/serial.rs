//! Certificate serial numbers and SHA-256 fingerprints.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, hex};

/// Octets of a new serial: 5 of time, [`RANDOM_LEN`] from the CSPRNG.
const SERIAL_LEN: usize = 16;

/// Octets of a new serial that come from the CSPRNG: 88 bits, above the
/// 64 that SPEC §2 (and the CA/Browser Forum) ask for.
const RANDOM_LEN: usize = 11;

/// Marks the first octet of a new serial: keeps it non-zero (minimal DER)
/// with the top bit clear (positive), whatever the time.
const TIME_MARK: u8 = 0x40;

/// A certificate serial number: a positive integer of at most 20 octets,
/// held as its minimal big-endian magnitude.
///
/// Parsed from hex in either case with optional colons (what
/// `openssl x509 -serial` prints, with or without its `serial=` prefix);
/// displayed as lowercase hex.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A fresh serial: the second of `now` (the caller's clock), then 88
    /// bits from the OS CSPRNG.
    ///
    /// Unpredictable and unique like a fully random one, but serials of
    /// one second sort together, so a CA database's serial index grows at
    /// its right edge instead of touching a random page per certificate.
    /// The second it reveals is in the certificate's notBefore anyway.
    pub fn random(now: time::OffsetDateTime) -> Result<Self, Error> {
        let mut random = [0u8; RANDOM_LEN];
        aws_lc_rs::rand::fill(&mut random)
            .map_err(|_| Error::Crypto("the system random generator failed".into()))?;
        // Before 1970 counts as second 0, as it always has.
        let secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        Ok(Self::timed(secs, &random))
    }

    /// The serial [`Serial::random`] makes at `secs` (Unix time) with these
    /// random octets: the low 38 bits of `secs` under [`TIME_MARK`] in the
    /// first five octets (it wraps in the year 10680), then `random`.
    fn timed(secs: u64, random: &[u8; RANDOM_LEN]) -> Self {
        let time = (secs & 0x3f_ffff_ffff).to_be_bytes();
        let mut bytes = Vec::with_capacity(SERIAL_LEN);
        bytes.extend_from_slice(&time[3..]);
        bytes[0] |= TIME_MARK;
        bytes.extend_from_slice(random);
        Serial(bytes)
    }

    /// A serial from the big-endian magnitude octets of a DER INTEGER
    /// (leading zero octets are dropped).
    pub fn from_be_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        let magnitude = &bytes[start..];
        if magnitude.is_empty() {
            return Err(Error::InvalidHex {
                what: "serial number",
                input: hex::encode(bytes),
                reason: "a serial number must be positive",
            });
        }
        if magnitude.len() > 20 {
            return Err(Error::InvalidHex {
                what: "serial number",
                input: hex::encode(bytes),
                reason: "longer than 20 octets",
            });
        }
        Ok(Serial(magnitude.to_vec()))
    }

    /// The minimal big-endian magnitude.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The serial as rcgen wants it: DER INTEGER content, with a leading zero
    /// octet when the top bit is set so the value stays positive.
    pub fn to_rcgen(&self) -> rcgen::SerialNumber {
        if self.0[0] & 0x80 != 0 {
            let mut v = Vec::with_capacity(self.0.len() + 1);
            v.push(0);
            v.extend_from_slice(&self.0);
            rcgen::SerialNumber::from_slice(&v)
        } else {
            rcgen::SerialNumber::from_slice(&self.0)
        }
    }
}

impl FromStr for Serial {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let trimmed = input.trim();
        let trimmed = trimmed.strip_prefix("serial=").unwrap_or(trimmed);
        let trimmed = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
            .unwrap_or(trimmed);
        // `openssl` prints an odd number of digits never, but humans might.
        let padded;
        let digits = if trimmed.bytes().filter(|b| *b != b':').count() % 2 == 1 {
            padded = format!("0{trimmed}");
            &padded
        } else {
            trimmed
        };
        let bytes = hex::decode("serial number", digits).map_err(|_| Error::InvalidHex {
            what: "serial number",
            input: input.to_owned(),
            reason: "expected hex digits, optionally separated by ':'",
        })?;
        Serial::from_be_bytes(&bytes).map_err(|e| match e {
            Error::InvalidHex { what, reason, .. } => Error::InvalidHex {
                what,
                input: input.to_owned(),
                reason,
            },
            other => other,
        })
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

impl Serialize for Serial {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Serial {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The SHA-256 digest of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of the given DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Uppercase, colon-separated, as `openssl x509 -fingerprint -sha256` prints it.
    pub fn to_colon_hex(&self) -> String {
        hex::encode_colons(&self.0)
    }

    /// Constant-time comparison, for when a fingerprint pins trust.
    pub fn ct_eq(&self, other: &Fingerprint) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}

impl FromStr for Fingerprint {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let trimmed = input.trim();
        // Accept what `openssl x509 -fingerprint -sha256` prints.
        let trimmed = trimmed.rsplit_once('=').map_or(trimmed, |(_, value)| value);
        let bytes = hex::decode("fingerprint", trimmed).map_err(|e| match e {
            Error::InvalidHex { what, reason, .. } => Error::InvalidHex {
                what,
                input: input.to_owned(),
                reason,
            },
            other => other,
        })?;
        let array: [u8; 32] = bytes.try_into().map_err(|_| Error::InvalidHex {
            what: "fingerprint",
            input: input.to_owned(),
            reason: "a SHA-256 fingerprint has 32 octets (64 hex digits)",
        })?;
        Ok(Fingerprint(array))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn serial_round_trips_in_every_accepted_spelling() {
        let s: Serial = "0a:1B:2c".parse().unwrap();
        assert_eq!(s.to_string(), "0a1b2c");
        assert_eq!("serial=0A1B2C".parse::<Serial>().unwrap(), s);
        assert_eq!("A1B2C".parse::<Serial>().unwrap(), s);
        assert_eq!("000a1b2c".parse::<Serial>().unwrap(), s);
        assert_eq!(s.to_string().parse::<Serial>().unwrap(), s);
    }

    #[test]
    fn serial_rejects_garbage() {
        for bad in ["", "zz", "00", "0:0", &"ff".repeat(21), "12 34"] {
            assert!(bad.parse::<Serial>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn random_serials_are_positive_minimal_and_distinct() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let s = Serial::random(time::OffsetDateTime::now_utc()).unwrap();
            assert_eq!(s.as_bytes().len(), 16);
            assert!(s.as_bytes()[0] != 0 && s.as_bytes()[0] & 0x80 == 0);
            assert!(seen.insert(s));
        }
    }

    #[test]
    fn serials_of_later_seconds_sort_after_earlier_ones() {
        let low = [0u8; RANDOM_LEN];
        let high = [0xffu8; RANDOM_LEN];
        let now = 1_795_000_000;
        let a = Serial::timed(now, &high);
        let b = Serial::timed(now + 1, &low);
        assert!(a < b, "{a} then {b}");
        assert!(a.to_string() < b.to_string(), "hex order is numeric order");
        for s in [
            &a,
            &b,
            &Serial::timed(0, &low),
            &Serial::timed(u64::MAX, &high),
        ] {
            assert_eq!(s.as_bytes().len(), SERIAL_LEN);
            assert!(s.as_bytes()[0] & 0x80 == 0 && s.as_bytes()[0] != 0, "{s}");
        }
        assert_eq!(&a.as_bytes()[5..], &high);
    }

    #[test]
    fn high_bit_serial_gets_a_sign_octet_for_der() {
        let s = Serial::from_be_bytes(&[0x00, 0x80, 0x01]).unwrap();
        assert_eq!(s.as_bytes(), &[0x80, 0x01]);
        assert_eq!(s.to_rcgen().to_bytes(), vec![0x00, 0x80, 0x01]);
    }

    #[test]
    fn fingerprint_round_trips() {
        let f = Fingerprint::of_der(b"hello");
        let plain = f.to_string();
        assert_eq!(plain.len(), 64);
        assert_eq!(plain.parse::<Fingerprint>().unwrap(), f);
        assert_eq!(f.to_colon_hex().parse::<Fingerprint>().unwrap(), f);
        assert_eq!(plain.to_uppercase().parse::<Fingerprint>().unwrap(), f);
        let openssl = format!("sha256 Fingerprint={}", f.to_colon_hex());
        assert_eq!(openssl.parse::<Fingerprint>().unwrap(), f);
        assert!(f.ct_eq(&plain.parse().unwrap()));
        assert!("abcd".parse::<Fingerprint>().is_err());
        assert!("xy".repeat(32).parse::<Fingerprint>().is_err());
    }
}
