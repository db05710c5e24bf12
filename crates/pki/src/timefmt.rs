//! Puppet's time formats: `2026-11-24T16:07:43UTC` timestamps and `5y`/`30s` durations.

use std::time::Duration;

use thiserror::Error;
use time::{format_description::FormatItem, macros::format_description, OffsetDateTime};

const PUPPET_DATE: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]UTC");

/// Formats `t` the way puppetserver writes dates in the inventory and status JSON.
pub fn puppet_date(t: OffsetDateTime) -> String {
    let utc = t.to_offset(time::UtcOffset::UTC);
    // The format only has numeric fields, so it cannot fail for an in-range date.
    utc.format(PUPPET_DATE).unwrap_or_else(|_| utc.unix_timestamp().to_string())
}

/// Reads a date as puppetserver writes it (`2026-11-24T16:07:43UTC`).
pub fn parse_puppet_date(text: &str) -> Option<OffsetDateTime> {
    time::PrimitiveDateTime::parse(text, PUPPET_DATE).ok().map(time::PrimitiveDateTime::assume_utc)
}

/// A duration string that does not follow Puppet's `<number>[smhdy]` form.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid duration {0:?}: expected a number with an optional unit s, m, h, d or y (e.g. 30s, 5y)")]
pub struct DurationError(pub String);

/// Parses Puppet durations: a bare number is seconds; `y` is 365 days as in Puppet's `ca_ttl`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(text.to_owned());
    let trimmed = text.trim();
    let (digits, unit) = match trimmed.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => trimmed.split_at(i),
        None => (trimmed, "s"),
    };
    let number: u64 = digits.parse().map_err(|_| err())?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "ms" => return Ok(Duration::from_millis(number)),
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "y" => 365 * 86_400,
        _ => return Err(err()),
    };
    number.checked_mul(unit_secs).map(Duration::from_secs).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("30", Some(30)),
            ("30s", Some(30)),
            ("2m", Some(120)),
            ("1h", Some(3600)),
            ("1d", Some(86_400)),
            ("5y", Some(5 * 365 * 86_400)),
            ("", None),
            ("s", None),
            ("5w", None),
            ("-5s", None),
            ("1.5h", None),
            ("99999999999999999999y", None),
        ];
        for (text, secs) in cases {
            assert_eq!(parse_duration(text).ok().map(|d| d.as_secs()), secs, "{text:?}");
        }
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn dates_look_like_puppetservers() {
        let t = OffsetDateTime::from_unix_timestamp(1_795_536_463).expect("valid timestamp");
        assert_eq!(puppet_date(t), "2026-11-24T16:07:43UTC");
        assert_eq!(parse_puppet_date("2026-11-24T16:07:43UTC"), Some(t));
        assert_eq!(parse_puppet_date("yesterday"), None);
    }
}
