//! Range checks and byte sizes for the config: every number the LB runs with is bounded.

use std::fmt::Debug;

use serde::Deserialize;

use super::{err, LbConfigError};

/// The values a setting may take, both ends included.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range<T> {
    min: T,
    max: T,
}

impl<T: PartialOrd + Copy + Debug> Range<T> {
    pub(crate) const fn new(min: T, max: T) -> Self {
        Self { min, max }
    }

    /// `value` when it is within the range, else an error naming `key`.
    pub(crate) fn check(&self, key: &str, value: T) -> Result<T, LbConfigError> {
        if value < self.min || value > self.max {
            return Err(err(
                key,
                format!("{value:?} is out of range (from {:?} to {:?})", self.min, self.max),
            ));
        }
        Ok(value)
    }
}

/// A size in bytes: a number, or a string with a unit (`16KiB`, `4MiB`, `1GiB`, `500B`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub(crate) enum Bytes {
    Count(u64),
    Text(String),
}

impl Bytes {
    pub(crate) fn bytes(&self, key: &str) -> Result<u64, LbConfigError> {
        let text = match self {
            Self::Count(n) => return Ok(*n),
            Self::Text(text) => text.trim(),
        };
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => {
                return Err(err(
                    key,
                    format!("{text:?}: a size is a number with B, KiB, MiB or GiB"),
                ))
            }
        };
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .ok_or_else(|| err(key, format!("{text:?} is not a size")))
    }
}
