//! Serial numbers and the `serial` file's hex format.

use std::fmt;

use thiserror::Error;

/// A certificate serial number: puppetserver's sequential ones (from the `serial` file), or
/// crossbar's random 126-bit ones (the database store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serial(u128);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid serial {0:?}: expected a hexadecimal number")]
pub struct SerialError(pub String);

impl Serial {
    /// The CA certificate's own serial in a fresh puppetserver CA.
    pub const FIRST: Serial = Serial(1);

    pub const fn new(value: u64) -> Self {
        Self(value as u128)
    }

    pub const fn from_u128(value: u128) -> Self {
        Self(value)
    }

    pub const fn value(self) -> u128 {
        self.0
    }

    /// A random serial from 16 random bytes: positive, 126 random bits, always 16 bytes in DER
    /// (the top bit clear, the next one set), never equal to a sequential serial (those stay
    /// far below 2^126).
    pub const fn from_random(mut bytes: [u8; 16]) -> Self {
        bytes[0] = (bytes[0] & 0x7f) | 0x40;
        Self(u128::from_be_bytes(bytes))
    }

    /// Whether this is a random serial ([`Serial::from_random`]) rather than a sequential one:
    /// a CA directory's `serial` file counts only the sequential ones.
    pub const fn is_random(self) -> bool {
        self.0 >= 1 << 126
    }

    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }

    /// Reads the `serial` file: hex, either case, padded or not (puppetserver writes `%04X`, the
    /// Ruby CLI lower-case unpadded).
    pub fn parse_file(text: &str) -> Result<Self, SerialError> {
        let hex = text.trim();
        let hex = hex.strip_prefix("0x").or_else(|| hex.strip_prefix("0X")).unwrap_or(hex);
        if hex.is_empty() || hex.len() > 32 {
            return Err(SerialError(text.to_owned()));
        }
        u128::from_str_radix(hex, 16).map(Self).map_err(|_| SerialError(text.to_owned()))
    }

    /// The `serial` file's content as puppetserver writes it.
    pub fn to_file(self) -> String {
        format!("{:04X}", self.0)
    }

    /// From a certificate's big-endian serial bytes, if it fits.
    pub fn from_be_bytes(bytes: &[u8]) -> Option<Self> {
        let significant: &[u8] = match bytes.iter().position(|b| *b != 0) {
            Some(i) => &bytes[i..],
            None => &[],
        };
        if significant.len() > 16 {
            return None;
        }
        Some(Self(significant.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b))))
    }

    /// Big-endian bytes without leading zeros (a zero serial is one zero byte).
    pub fn to_be_bytes(self) -> Vec<u8> {
        let bytes = self.0.to_be_bytes();
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(15);
        bytes[first..].to_vec()
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04X}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_serials_are_positive_126_bit_and_16_bytes() {
        for bytes in [[0u8; 16], [0xff; 16], [0x80; 16], [0x3f; 16]] {
            let serial = Serial::from_random(bytes);
            assert!(serial.value() >= 1 << 126 && serial.value() < 1 << 127, "{serial}");
            assert!(serial.is_random() && !Serial::from_u128(serial.value() >> 1).is_random());
            assert_eq!(serial.to_be_bytes().len(), 16);
            assert_eq!(Serial::from_be_bytes(&serial.to_be_bytes()), Some(serial));
            assert_eq!(Serial::parse_file(&serial.to_file()), Ok(serial));
        }
    }

    #[test]
    fn serial_file_formats() {
        let cases = [
            ("0004", Some(4)),
            ("002", Some(2)),
            ("00FF", Some(255)),
            ("ff\n", Some(255)),
            (" 1a ", Some(26)),
            ("0x10", Some(16)),
            ("", None),
            ("xyz", None),
            ("-1", None),
            ("10000000000000000", Some(1 << 64)),
            ("100000000000000000000000000000000", None),
        ];
        for (text, expected) in cases {
            assert_eq!(Serial::parse_file(text).ok().map(Serial::value), expected, "{text:?}");
        }
        assert_eq!(Serial::new(4).to_file(), "0004");
        assert_eq!(Serial::new(0x12345).to_file(), "12345");
    }

    #[test]
    fn byte_forms_round_trip() {
        for v in [0u64, 1, 255, 256, 0x8000, u64::MAX] {
            let s = Serial::new(v);
            assert_eq!(Serial::from_be_bytes(&s.to_be_bytes()), Some(s));
        }
        assert_eq!(Serial::from_be_bytes(&[0, 0, 1]), Some(Serial::new(1)));
        assert_eq!(Serial::from_be_bytes(&[1; 17]), None);
        assert_eq!(Serial::from_be_bytes(&[1; 16]).map(|s| s.to_be_bytes()), Some(vec![1; 16]));
    }
}
