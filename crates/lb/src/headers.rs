//! Header policy on the proxy path: strip what a client must not set, then set the identity
//! headers from the TLS session; drop hop-by-hop headers both ways.

use std::net::IpAddr;

use http::{header, HeaderMap, HeaderName, HeaderValue};

use crate::identity::ClientIdentity;

pub(crate) const X_CLIENT_VERIFY: HeaderName = HeaderName::from_static("x-client-verify");
pub(crate) const X_CLIENT_DN: HeaderName = HeaderName::from_static("x-client-dn");
pub(crate) const X_CLIENT_CERT: HeaderName = HeaderName::from_static("x-client-cert");
/// The secret crossbar's CA asks of an LB before it believes the identity headers.
pub(crate) const X_CROSSBAR_PROXY_SECRET: HeaderName =
    HeaderName::from_static("x-crossbar-proxy-secret");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

/// Whether `name` is one of the headers only the LB may set, in any spelling a backend might
/// fold into it: any case (HTTP names are case-insensitive) and `_` for `-` (CGI-style servers
/// read `X_Client_Verify` as `HTTP_X_CLIENT_VERIFY`). These are the identity headers and every
/// `X-Crossbar-` header.
fn is_identity_header(name: &HeaderName) -> bool {
    let folded = || name.as_str().bytes().map(|b| if b == b'_' { b'-' } else { b });
    if folded().take(11).eq(*b"x-crossbar-") {
        return true;
    }
    let bytes = name.as_str().as_bytes();
    if bytes.len() < 11 || !folded().take(9).eq(*b"x-client-") {
        return false;
    }
    matches!(&name.as_str()[9..], "verify" | "dn" | "cert")
}

/// Sends the pool's proxy secret (after [`apply_identity`] removed any client-sent copy).
pub(crate) fn set_proxy_secret(headers: &mut HeaderMap, secret: &crate::config::Secret) {
    if let Ok(value) = HeaderValue::from_str(&secret.0) {
        headers.insert(X_CROSSBAR_PROXY_SECRET, value);
    }
}

/// Sets the identity headers for an operator of the admin page (no certificate: the CA sees
/// the name, authorizes it against its `admin_certnames`, and records it in its audit trail).
pub(crate) fn apply_operator(
    headers: &mut HeaderMap,
    name: &str,
) -> Result<(), http::header::InvalidHeaderValue> {
    let dn = HeaderValue::from_str(&format!("CN={name}"))?;
    let spoofed: Vec<HeaderName> =
        headers.keys().filter(|n| is_identity_header(n)).cloned().collect();
    for header in spoofed {
        headers.remove(header);
    }
    headers.insert(X_CLIENT_VERIFY, HeaderValue::from_static("SUCCESS"));
    headers.insert(X_CLIENT_DN, dn);
    Ok(())
}

/// Removes every client-sent copy of the identity headers, then sets them from `identity`.
pub(crate) fn apply_identity(headers: &mut HeaderMap, identity: &ClientIdentity) {
    let spoofed: Vec<HeaderName> =
        headers.keys().filter(|n| is_identity_header(n)).cloned().collect();
    for name in spoofed {
        headers.remove(name);
    }
    match identity {
        ClientIdentity::Anonymous => {
            headers.insert(X_CLIENT_VERIFY, HeaderValue::from_static("NONE"));
        }
        ClientIdentity::Verified(client) => {
            headers.insert(X_CLIENT_VERIFY, HeaderValue::from_static("SUCCESS"));
            headers.insert(X_CLIENT_DN, client.dn.clone());
            headers.insert(X_CLIENT_CERT, client.cert.clone());
        }
    }
}

/// Drops hop-by-hop headers, including those a `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Appends the client address to `X-Forwarded-For` and sets `X-Forwarded-Proto: https`.
pub(crate) fn set_forwarded(headers: &mut HeaderMap, client: IpAddr) {
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {client}"),
        None => client.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spoofed() -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-client-verify", "SUCCESS"),
            ("X-Client-Verify", "SUCCESS"),
            ("X-CLIENT-DN", "CN=admin"),
            ("x-client-dn", "/CN=root"),
            ("x-client-cert", "forged"),
            ("x_client_verify", "SUCCESS"),
            ("X_Client_DN", "CN=admin"),
            ("x-client-certificate", "kept: not an identity header"),
            ("X-Crossbar-Proxy-Secret", "guessed"),
            ("x_crossbar_proxy_secret", "guessed"),
            ("x-puppet-version", "7.23.0"),
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    #[test]
    fn anonymous_clients_cannot_smuggle_an_identity() {
        let mut headers = spoofed();
        apply_identity(&mut headers, &ClientIdentity::Anonymous);
        let verify: Vec<_> = headers.get_all(X_CLIENT_VERIFY).iter().collect();
        assert_eq!(verify, [HeaderValue::from_static("NONE")]);
        assert!(headers.get(X_CLIENT_DN).is_none());
        assert!(headers.get(X_CLIENT_CERT).is_none());
        assert!(headers.get("x_client_verify").is_none() && headers.get("x_client_dn").is_none());
        assert!(headers.keys().all(|n| !n.as_str().replace('_', "-").starts_with("x-crossbar-")));
        assert_eq!(
            headers.get("x-client-certificate").map(|v| v.as_bytes()),
            Some(&b"kept: not an identity header"[..])
        );
        assert_eq!(headers.get("x-puppet-version").map(|v| v.as_bytes()), Some(&b"7.23.0"[..]));
    }

    #[test]
    fn verified_clients_get_exactly_one_copy_of_each() {
        let mut headers = spoofed();
        let client = crate::identity::VerifiedClient {
            certname: "agent1".into(),
            serial: vec![2],
            dn: HeaderValue::from_static("CN=agent1"),
            cert: HeaderValue::from_static("pem"),
        };
        apply_identity(&mut headers, &ClientIdentity::Verified(client));
        for (name, value) in
            [(X_CLIENT_VERIFY, "SUCCESS"), (X_CLIENT_DN, "CN=agent1"), (X_CLIENT_CERT, "pem")]
        {
            let all: Vec<_> = headers.get_all(&name).iter().collect();
            assert_eq!(all, [HeaderValue::from_static(value)], "{name}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go_including_those_connection_names() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut headers = HeaderMap::new();
        set_forwarded(&mut headers, "10.0.0.1".parse().expect("ip"));
        set_forwarded(&mut headers, "10.0.0.2".parse().expect("ip"));
        assert_eq!(
            headers.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"10.0.0.1, 10.0.0.2"[..])
        );
        assert_eq!(headers.get("x-forwarded-proto").map(|v| v.as_bytes()), Some(&b"https"[..]));
    }
}
