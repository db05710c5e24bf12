//! Puppet certnames: the one name that becomes a file name, a URL segment and a CN.

use std::fmt;

use thiserror::Error;

/// Longest certname accepted. File names are limited to 255 bytes and we append `.pem`.
pub const MAX_CERTNAME_LEN: usize = 250;

/// A certname that follows puppetserver's rules (`validate-subject!`): lower case, no wildcard,
/// dot-separated labels of `[A-Za-z0-9_-]` that end in an alphanumeric or `_`, a first label
/// that does not start with `-`. Such a name is safe as a file name and as a URL segment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Certname(String);

/// Why a string is not a certname; the `Display` text is puppetserver's message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CertnameError {
    #[error("Certificate names must be lower case.")]
    UpperCase,
    #[error("Subject contains a wildcard, which is not allowed: {0}")]
    Wildcard(String),
    #[error("Subject hostname format is invalid")]
    Format,
    #[error("Certificate name is longer than {MAX_CERTNAME_LEN} characters")]
    TooLong,
}

impl Certname {
    /// Parses `name` with puppetserver's rules, checked in its order.
    pub fn parse(name: &str) -> Result<Self, CertnameError> {
        if name.chars().any(|c| c.is_uppercase()) {
            return Err(CertnameError::UpperCase);
        }
        if name.contains('*') {
            return Err(CertnameError::Wildcard(name.to_owned()));
        }
        if name.len() > MAX_CERTNAME_LEN {
            return Err(CertnameError::TooLong);
        }
        if !has_valid_labels(name) {
            return Err(CertnameError::Format);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn has_valid_labels(name: &str) -> bool {
    if name.ends_with('-') || name.starts_with('-') {
        return false;
    }
    name.split('.').all(is_valid_label)
}

/// `^[\p{Alnum}\-_]*[\p{Alnum}_]$` with Java's ASCII-only `\p{Alnum}`.
fn is_valid_label(label: &str) -> bool {
    let inner_ok = label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let last_ok = label.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    inner_ok && last_ok
}

impl fmt::Display for Certname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Certname {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certname_rules_match_puppetserver() {
        use CertnameError::*;
        let cases: &[(&str, Result<(), CertnameError>)] = &[
            ("agent1.example.com", Ok(())),
            ("a", Ok(())),
            ("_underscore.example.com", Ok(())),
            ("web-01.example.com", Ok(())),
            ("x.-y.example", Ok(())),
            ("ca", Ok(())),
            ("Agent1.example.com", Err(UpperCase)),
            ("agent1.EXAMPLE.com", Err(UpperCase)),
            ("*.example.com", Err(Wildcard("*.example.com".into()))),
            ("a*b", Err(Wildcard("a*b".into()))),
            ("", Err(Format)),
            ("-agent", Err(Format)),
            ("agent-", Err(Format)),
            ("agent.", Err(Format)),
            (".agent", Err(Format)),
            ("a..b", Err(Format)),
            ("..", Err(Format)),
            ("../../etc/passwd", Err(Format)),
            ("a/b", Err(Format)),
            ("a b", Err(Format)),
            ("a%2e", Err(Format)),
            ("a\0b", Err(Format)),
            ("agent-.example.com", Err(Format)),
            ("ägent", Err(Format)),
            ("a\nb", Err(Format)),
        ];
        for (input, expected) in cases {
            let got = Certname::parse(input).map(|_| ());
            assert_eq!(&got, expected, "certname {input:?}");
        }
    }

    #[test]
    fn overlong_names_are_refused_before_they_reach_a_file_name() {
        let long = "a".repeat(MAX_CERTNAME_LEN + 1);
        assert_eq!(Certname::parse(&long), Err(CertnameError::TooLong));
        let ok = "a".repeat(MAX_CERTNAME_LEN);
        assert!(Certname::parse(&ok).is_ok());
    }
}
