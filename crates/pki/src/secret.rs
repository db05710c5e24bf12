//! The shared secret an LB proves itself to a CA with: the first line of a file both hold.
//! Reading it is the one file access here (bounded: a path like `/dev/zero` cannot hang it).

use std::{io::Read, path::Path};

/// Shortest secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

/// The secret in a secret file's text: its first line, trimmed, at least [`MIN_SECRET_LEN`]
/// printable ASCII characters (it travels in an HTTP header).
pub fn parse_secret(text: &str) -> Result<String, String> {
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.len() < MIN_SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the first line must be a secret of at least {MIN_SECRET_LEN} printable ASCII characters"
        ));
    }
    Ok(secret.to_owned())
}

/// Most bytes read from a secret file.
const MAX_SECRET_FILE: u64 = 4096;

/// Reads and parses a secret file; the error names the file.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SECRET_FILE).read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    parse_secret(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_first_lines_long_and_printable() {
        assert_eq!(parse_secret("0123456789abcdef\nrest").as_deref(), Ok("0123456789abcdef"));
        assert_eq!(parse_secret("  0123456789abcdef  \n").as_deref(), Ok("0123456789abcdef"));
        for bad in ["", "short", "0123456789 abcdef", "0123456789abcdé"] {
            assert!(parse_secret(bad).is_err(), "{bad:?}");
        }
    }
}
