//! PEM framing: splitting bundles and chains into blocks, and writing blocks back.

use thiserror::Error;

/// A PEM text that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PemError {
    #[error("not valid PEM: {0}")]
    Malformed(String),
    #[error("expected a PEM block labelled {expected}, found {found}")]
    WrongLabel { expected: &'static str, found: String },
    #[error("no PEM block labelled {0} found")]
    Missing(&'static str),
    #[error("expected exactly one PEM block, found {0}")]
    NotOne(usize),
}

/// All blocks of `text` whose label is `label`, in order, as DER.
pub fn blocks(text: &[u8], label: &'static str) -> Result<Vec<Vec<u8>>, PemError> {
    let parsed = pem::parse_many(text).map_err(|e| PemError::Malformed(e.to_string()))?;
    let mut out = Vec::with_capacity(parsed.len());
    for block in parsed {
        if block.tag() != label {
            return Err(PemError::WrongLabel { expected: label, found: block.tag().to_owned() });
        }
        out.push(block.into_contents());
    }
    if out.is_empty() {
        return Err(PemError::Missing(label));
    }
    Ok(out)
}

/// The single block in `text`, whose label must be one of `labels`.
pub fn single_block(text: &[u8], labels: &[&'static str]) -> Result<Vec<u8>, PemError> {
    let mut parsed = pem::parse_many(text).map_err(|e| PemError::Malformed(e.to_string()))?;
    if parsed.len() != 1 {
        return Err(PemError::NotOne(parsed.len()));
    }
    let block = parsed.remove(0);
    if !labels.contains(&block.tag()) {
        return Err(PemError::WrongLabel { expected: labels[0], found: block.tag().to_owned() });
    }
    Ok(block.into_contents())
}

/// Encodes DER as PEM with 64-column lines and `\n` endings, as OpenSSL and puppetserver do.
pub fn encode(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

/// Splits a PEM text into the exact text of each block (with its trailing newline), so that
/// blocks we do not own can be written back byte for byte.
pub fn raw_blocks(text: &str) -> Vec<&str> {
    const END: &str = "-----END ";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let Some(end_rel) = rest[start..].find(END) else {
            break;
        };
        let after_end = start + end_rel + END.len();
        let Some(close_rel) = rest[after_end..].find("-----") else {
            break;
        };
        let mut stop = after_end + close_rel + 5;
        if rest[stop..].starts_with("\r\n") {
            stop += 2;
        } else if rest[stop..].starts_with('\n') {
            stop += 1;
        }
        out.push(&rest[start..stop]);
        rest = &rest[stop..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_blocks_keep_their_bytes() {
        let a = encode("X509 CRL", b"first");
        let b = "-----BEGIN X509 CRL-----\r\nc2Vjb25k\r\n-----END X509 CRL-----\r\n";
        let text = format!("{a}{b}");
        assert_eq!(raw_blocks(&text), vec![a.as_str(), b]);
    }

    #[test]
    fn single_block_rejects_bundles_and_wrong_labels() {
        let one = encode("CERTIFICATE REQUEST", b"x");
        assert!(single_block(one.as_bytes(), &["CERTIFICATE REQUEST"]).is_ok());
        let two = format!("{one}{one}");
        assert_eq!(
            single_block(two.as_bytes(), &["CERTIFICATE REQUEST"]),
            Err(PemError::NotOne(2))
        );
        assert!(matches!(
            single_block(encode("CERTIFICATE", b"x").as_bytes(), &["CERTIFICATE REQUEST"]),
            Err(PemError::WrongLabel { .. })
        ));
        assert_eq!(single_block(b"", &["CERTIFICATE REQUEST"]), Err(PemError::NotOne(0)));
    }
}
