//! Who may act on the admin listener. Viewing stays open (the listener is on loopback by
//! default); anything that changes state (drain, enable, sign, reject, revoke) or reads the
//! CA's lists needs a bearer token from `[lb] admin_token_file`, and a request from another
//! site is refused whatever it carries.
//!
//! The token travels in `Authorization: Bearer …`, which a browser never adds by itself: a
//! page on another origin can neither read the token nor make the browser send it, and a
//! cross-origin `fetch` with that header needs a CORS preflight this listener never grants.
//! `Origin` and `Sec-Fetch-Site` are checked as well, so that a form posted from elsewhere is
//! refused before its token (there is none) is even looked at.

use http::{header, HeaderMap};

use crate::config::{err, LbConfigError};

/// One operator allowed to act: a name for the audit trail and a token.
#[derive(Clone)]
pub(crate) struct AdminToken {
    pub(crate) name: String,
    token: String,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Shortest token accepted: 128 bits in hex.
const MIN_TOKEN: usize = 32;

/// Parses a token file: one `name token` per line, `#` comments and blank lines ignored.
/// Names are what the audit trail and the CA see (the CA must list them in
/// `admin_certnames` for CA actions).
pub(crate) fn parse_tokens(text: &str) -> Result<Vec<AdminToken>, String> {
    let mut tokens: Vec<AdminToken> = Vec::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(name), Some(token), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("line {number}: expected `name token`"));
        };
        let name_ok = name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !name_ok {
            return Err(format!("line {number}: name {name:?}: lowercase letters, digits, '.', '_' or '-', at most 64"));
        }
        if token.len() < MIN_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("line {number}: the token of {name} must be at least {MIN_TOKEN} printable characters (e.g. `openssl rand -hex 32`)"));
        }
        if tokens.iter().any(|t| t.name == name) {
            return Err(format!("line {number}: {name} appears twice"));
        }
        tokens.push(AdminToken { name: name.to_owned(), token: token.to_owned() });
    }
    if tokens.is_empty() {
        return Err("no `name token` line".into());
    }
    Ok(tokens)
}

/// Reads `admin_token_file`.
pub(crate) fn read_tokens(path: &std::path::Path) -> Result<Vec<AdminToken>, LbConfigError> {
    let key = "admin_token_file";
    let text =
        std::fs::read_to_string(path).map_err(|e| err(key, format!("{}: {e}", path.display())))?;
    parse_tokens(&text).map_err(|e| err(key, format!("{}: {e}", path.display())))
}

/// Why an action was refused; each maps to a status in [`Refusal::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The request came from a page of another site.
    CrossSite,
    /// No `admin_token_file` is configured: nobody may act.
    NoTokens,
    /// No or a wrong bearer token.
    Unauthenticated,
}

impl Refusal {
    pub(crate) fn status(self) -> http::StatusCode {
        match self {
            Self::CrossSite | Self::NoTokens => http::StatusCode::FORBIDDEN,
            Self::Unauthenticated => http::StatusCode::UNAUTHORIZED,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::CrossSite => "refused: a request from another site",
            Self::NoTokens => "refused: actions need [lb] admin_token_file, which is not set",
            Self::Unauthenticated => {
                "refused: a valid admin token is needed (Authorization: Bearer …)"
            }
        }
    }
}

/// The operator a request acts for, or why it may not act.
pub(crate) fn authorize<'a>(
    tokens: &'a [AdminToken],
    headers: &HeaderMap,
) -> Result<&'a AdminToken, Refusal> {
    if is_cross_site(headers) {
        return Err(Refusal::CrossSite);
    }
    if tokens.is_empty() {
        return Err(Refusal::NoTokens);
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(Refusal::Unauthenticated)?;
    tokens
        .iter()
        .find(|t| constant_time_eq(t.token.as_bytes(), presented.as_bytes()))
        .ok_or(Refusal::Unauthenticated)
}

/// A browser says where a request comes from: `Sec-Fetch-Site` (anything but same-origin or
/// none, the latter for typed URLs and tools), and `Origin`, which must name the host the
/// request was sent to.
fn is_cross_site(headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    if fetch_site.is_some_and(|s| s != b"same-origin" && s != b"none") {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return false };
    let host = headers.get(header::HOST).map(|v| v.as_bytes()).unwrap_or_default();
    let origin = origin.as_bytes();
    let authority =
        origin.strip_prefix(b"http://").or_else(|| origin.strip_prefix(b"https://")).unwrap_or(b"");
    authority.is_empty() || authority != host
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn tokens() -> Vec<AdminToken> {
        parse_tokens(&format!("# operators\nalice {TOKEN}\n\nbob {TOKEN}ff\n")).expect("valid")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                value.parse().expect("a header value"),
            );
        }
        map
    }

    #[test]
    fn a_token_file_names_each_operator_and_refuses_weak_or_odd_lines() {
        let parsed = tokens();
        assert_eq!(parsed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["alice", "bob"]);
        assert!(parse_tokens("alice short").expect_err("refused").contains("at least 32"));
        assert!(parse_tokens(&format!("Alice {TOKEN}")).expect_err("refused").contains("name"));
        assert!(parse_tokens(&format!("alice {TOKEN} extra"))
            .expect_err("refused")
            .contains("line 1"));
        assert!(parse_tokens(&format!("a {TOKEN}\na {TOKEN}"))
            .expect_err("refused")
            .contains("twice"));
        assert!(parse_tokens("# nothing\n").expect_err("refused").contains("no `name token`"));
    }

    #[test]
    fn the_right_bearer_token_acts_for_its_operator() {
        let tokens = tokens();
        let bob = format!("Bearer {TOKEN}ff");
        let ok = headers(&[("authorization", &bob), ("host", "127.0.0.1:8141")]);
        assert_eq!(authorize(&tokens, &ok).map(|t| t.name.as_str()), Ok("bob"));
        let same_origin = headers(&[
            ("authorization", &bob),
            ("host", "127.0.0.1:8141"),
            ("origin", "http://127.0.0.1:8141"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(authorize(&tokens, &same_origin).is_ok());
    }

    #[test]
    fn no_token_a_wrong_one_or_no_token_file_is_refused() {
        let tokens = tokens();
        assert_eq!(authorize(&tokens, &headers(&[])).err(), Some(Refusal::Unauthenticated));
        let wrong = headers(&[("authorization", "Bearer 0123456789abcdef0123456789abcdee")]);
        assert_eq!(authorize(&tokens, &wrong).err(), Some(Refusal::Unauthenticated));
        let basic = headers(&[("authorization", &format!("Basic {TOKEN}"))]);
        assert_eq!(authorize(&tokens, &basic).err(), Some(Refusal::Unauthenticated));
        let good = headers(&[("authorization", &format!("Bearer {TOKEN}"))]);
        assert_eq!(authorize(&[], &good).err(), Some(Refusal::NoTokens));
    }

    #[test]
    fn requests_from_another_site_are_refused_even_with_a_token() {
        let tokens = tokens();
        let bearer = format!("Bearer {TOKEN}");
        for pairs in [
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
            vec![("origin", "http://evil.example"), ("host", "127.0.0.1:8141")],
            vec![("origin", "null"), ("host", "127.0.0.1:8141")],
        ] {
            let mut all = pairs.clone();
            all.push(("authorization", &bearer));
            assert_eq!(
                authorize(&tokens, &headers(&all)).err(),
                Some(Refusal::CrossSite),
                "{pairs:?}"
            );
        }
    }
}
