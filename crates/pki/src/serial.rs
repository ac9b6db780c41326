//! Certificate serial numbers.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use rand::rngs::OsRng;

/// Bytes of randomness in every serial this crate issues: 128 bits.
pub const SERIAL_RANDOM_BYTES: usize = 16;

/// Longest serial accepted from a certificate or a string: RFC 5280 allows 20 octets.
const MAX_SERIAL_BYTES: usize = 20;

/// Why a serial number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not hex, or an odd number of digits.
    #[error("serial must be an even number of hex digits")]
    NotHex,
    /// Longer than RFC 5280 allows.
    #[error("serial must be at most 20 bytes")]
    TooLong,
    /// Zero, or a negative DER integer.
    #[error("serial must be a positive integer")]
    NotPositive,
}

/// A certificate serial number: a positive integer, kept as its big-endian magnitude without
/// leading zero bytes.
///
/// Displays as lowercase hex (`openssl x509 -serial` prints the same digits in uppercase), and
/// parses back from hex in either case. Two `Serial`s are equal exactly when the integers are.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A fresh random serial: 128 bits from the operating system's RNG, never zero.
    pub fn random() -> Self {
        loop {
            let mut bytes = [0u8; SERIAL_RANDOM_BYTES];
            OsRng.fill_bytes(&mut bytes);
            if let Ok(serial) = Self::from_be_bytes(&bytes) {
                return serial;
            }
        }
    }

    /// A serial from an unsigned big-endian magnitude; leading zero bytes are ignored.
    pub fn from_be_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let first = bytes
            .iter()
            .position(|&b| b != 0)
            .ok_or(Error::NotPositive)?;
        let magnitude = &bytes[first..];
        if magnitude.len() > MAX_SERIAL_BYTES {
            return Err(Error::TooLong);
        }
        Ok(Self(magnitude.to_vec()))
    }

    /// A serial from the content octets of a DER INTEGER (two's complement), as found in a
    /// certificate; refuses zero and negative values.
    pub(crate) fn from_der_integer(content: &[u8]) -> Result<Self, Error> {
        if content.first().is_some_and(|&b| b & 0x80 != 0) {
            return Err(Error::NotPositive);
        }
        Self::from_be_bytes(content)
    }

    /// The big-endian magnitude, without leading zero bytes.
    pub fn as_be_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lowercase hex of [`Serial::as_be_bytes`].
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// How many bits the integer needs (the position of its highest set bit).
    pub fn bit_len(&self) -> usize {
        // from_be_bytes guarantees a non-zero first byte.
        self.0.len() * 8 - self.0[0].leading_zeros() as usize
    }
}

impl FromStr for Serial {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s).map_err(|_| Error::NotHex)?;
        Self::from_be_bytes(&bytes)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_serials_are_positive_distinct_and_at_most_128_bits() {
        let a = Serial::random();
        let b = Serial::random();
        assert_ne!(a, b);
        assert!(a.bit_len() <= 128 && a.bit_len() > 64, "{a:?}");
    }

    #[test]
    fn hex_round_trips_and_ignores_case_and_leading_zeros() {
        let serial: Serial = "00A1b2".parse().unwrap();
        assert_eq!(serial.to_string(), "a1b2");
        assert_eq!(serial.as_be_bytes(), [0xa1, 0xb2]);
        assert_eq!(serial.bit_len(), 16);
        assert_eq!("a1b2".parse::<Serial>().unwrap(), serial);
    }

    #[test]
    fn bad_serials_are_refused_with_the_rule() {
        assert_eq!(
            "xyz".parse::<Serial>().unwrap_err().to_string(),
            "serial must be an even number of hex digits"
        );
        assert_eq!(
            "0000".parse::<Serial>().unwrap_err().to_string(),
            "serial must be a positive integer"
        );
        assert_eq!(
            "01".repeat(21).parse::<Serial>().unwrap_err().to_string(),
            "serial must be at most 20 bytes"
        );
        assert_eq!(
            Serial::from_der_integer(&[0x80, 1]).unwrap_err(),
            Error::NotPositive
        );
        assert_eq!(
            Serial::from_der_integer(&[0x00, 0x80]).unwrap().to_hex(),
            "80"
        );
    }
}
