//! Serial numbers and the `serial` file's hex format.

use std::fmt;

use thiserror::Error;

/// A certificate serial number allocated by the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serial(u64);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid serial {0:?}: expected a hexadecimal number")]
pub struct SerialError(pub String);

impl Serial {
    /// The CA certificate's own serial in a fresh puppetserver CA.
    pub const FIRST: Serial = Serial(1);

    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    pub const fn value(self) -> u64 {
        self.0
    }

    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }

    /// Reads the `serial` file: hex, either case, padded or not (puppetserver writes `%04X`, the
    /// Ruby CLI lower-case unpadded).
    pub fn parse_file(text: &str) -> Result<Self, SerialError> {
        let hex = text.trim();
        let hex = hex.strip_prefix("0x").or_else(|| hex.strip_prefix("0X")).unwrap_or(hex);
        if hex.is_empty() || hex.len() > 16 {
            return Err(SerialError(text.to_owned()));
        }
        u64::from_str_radix(hex, 16).map(Self).map_err(|_| SerialError(text.to_owned()))
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
        if significant.len() > 8 {
            return None;
        }
        Some(Self(significant.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))))
    }

    /// Big-endian bytes without leading zeros (a zero serial is one zero byte).
    pub fn to_be_bytes(self) -> Vec<u8> {
        let bytes = self.0.to_be_bytes();
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(7);
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
            ("10000000000000000", None),
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
        assert_eq!(Serial::from_be_bytes(&[1; 9]), None);
    }
}
