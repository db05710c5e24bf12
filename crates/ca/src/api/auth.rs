//! Who is calling the CA API. The `X-Client-*` headers are believed only from an
//! authenticated LB: one that sends the proxy secret in `X-Crossbar-Proxy-Secret` (and, when
//! `trusted_proxies` is set, from one of those addresses). A source address alone is not
//! enough: on a one-host install every local process shares the loopback address. Everyone
//! else is anonymous.

use std::{collections::HashSet, net::IpAddr};

use http::HeaderMap;
use ipnet::IpNet;
use percent_encoding::percent_decode;

use super::error::ApiError;

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    /// A client whose certificate the proxy verified.
    Client {
        certname: String,
        cli_auth: bool,
    },
}

/// Who may do what: how LBs prove themselves, and admin certnames, from `[ca]`.
#[derive(Clone, Default)]
pub struct AccessPolicy {
    /// The secret LBs send; `None` believes no identity header at all.
    pub proxy_secret: Option<String>,
    /// When not empty, LBs must also connect from one of these networks.
    pub trusted_proxies: Vec<IpNet>,
    pub admin_certnames: HashSet<String>,
}

impl std::fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessPolicy")
            .field("proxy_secret", &self.proxy_secret.as_ref().map(|_| "…"))
            .field("trusted_proxies", &self.trusted_proxies)
            .field("admin_certnames", &self.admin_certnames)
            .finish()
    }
}

/// The header an LB proves itself with.
pub(super) const PROXY_SECRET_HEADER: &str = "x-crossbar-proxy-secret";

impl AccessPolicy {
    /// Whether the request comes from an authenticated LB.
    fn is_authenticated_lb(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        let Some(secret) = &self.proxy_secret else { return false };
        let sent = headers.get(PROXY_SECRET_HEADER).map_or(&[][..], |v| v.as_bytes());
        let allowed = self.trusted_proxies.is_empty()
            || self.trusted_proxies.iter().any(|n| n.contains(&peer));
        constant_time_eq(sent, secret.as_bytes()) && allowed
    }

    /// Reads the caller from an authenticated LB's headers (exact `SUCCESS`, a CN in the DN).
    pub fn caller(&self, peer: IpAddr, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if !self.is_authenticated_lb(peer, headers) {
            if headers.contains_key("x-client-verify") {
                tracing::debug!(%peer, "X-Client-* headers from a caller that is not an authenticated LB; treating it as anonymous");
            }
            return Ok(Caller::Anonymous);
        }
        let verified = headers.get("x-client-verify").is_some_and(|v| v.as_bytes() == b"SUCCESS");
        let certname =
            headers.get("x-client-dn").and_then(|v| v.to_str().ok()).and_then(common_name);
        let (true, Some(certname)) = (verified, certname) else {
            return Ok(Caller::Anonymous);
        };
        let cli_auth = match headers.get("x-client-cert") {
            Some(value) => header_cert_has_cli_auth(value.as_bytes(), &certname)?,
            None => false,
        };
        Ok(Caller::Client { certname, cli_auth })
    }

    /// Admin operations: a certname in `admin_certnames`, or a certificate with `pp_cli_auth`.
    pub fn is_admin(&self, caller: &Caller) -> bool {
        match caller {
            Caller::Anonymous => false,
            Caller::Client { certname, cli_auth } => {
                *cli_auth || self.admin_certnames.contains(certname)
            }
        }
    }
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The first CN of an RFC 2253 DN (`CN=a,O=b`) or of OpenSSL's slash form (`/CN=a/O=b`).
pub fn common_name(dn: &str) -> Option<String> {
    let parts: Vec<&str> =
        if dn.starts_with('/') { dn.split('/').collect() } else { dn.split(',').collect() };
    parts.iter().find_map(|part| {
        let (key, value) = part.trim().split_once('=')?;
        (key.trim().eq_ignore_ascii_case("cn") && !value.is_empty())
            .then(|| value.trim().to_owned())
    })
}

/// Decodes `X-Client-Cert` (percent-encoding only: `+` stays `+`), which must be exactly one
/// PEM certificate; `None` when it is for another name than `certname` (it then grants
/// nothing).
fn header_cert(
    value: &[u8],
    certname: &str,
) -> Result<Option<(Vec<u8>, pki::describe::Description)>, ApiError> {
    let decoded: Vec<u8> = percent_decode(value).collect();
    let der = pki::pemfile::single_block(&decoded, &["CERTIFICATE"])
        .map_err(|e| ApiError::BadClientCert(e.to_string()))?;
    let description = pki::describe::certificate(&der)
        .ok_or_else(|| ApiError::BadClientCert("not an X.509 certificate".into()))?;
    if description.common_name != certname {
        tracing::warn!(dn_cn = certname, cert_cn = %description.common_name, "X-Client-Cert does not belong to X-Client-DN; ignoring it");
        return Ok(None);
    }
    Ok(Some((der, description)))
}

fn header_cert_has_cli_auth(value: &[u8], certname: &str) -> Result<bool, ApiError> {
    Ok(header_cert(value, certname)?.is_some_and(|(_, description)| {
        description.authorization_extensions.get("pp_cli_auth").is_some_and(|v| v == "true")
    }))
}

/// The DER certificate an authenticated client presented to the LB (`X-Client-Cert`), if it
/// is the client's own.
pub(super) fn presented_cert(
    headers: &HeaderMap,
    certname: &str,
) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(value) = headers.get("x-client-cert") else { return Ok(None) };
    Ok(header_cert(value.as_bytes(), certname)?.map(|(der, _)| der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names_from_both_dn_forms() {
        let cases = [
            ("CN=agent1.example.com", Some("agent1.example.com")),
            ("CN=agent1,O=Example", Some("agent1")),
            ("O=Example, CN=agent1", Some("agent1")),
            ("/CN=agent1.example.com", Some("agent1.example.com")),
            ("/O=x/CN=agent1", Some("agent1")),
            ("cn=lower", Some("lower")),
            ("O=Example", None),
            ("CN=", None),
            ("", None),
        ];
        for (dn, expected) in cases {
            assert_eq!(common_name(dn).as_deref(), expected, "{dn:?}");
        }
    }

    #[test]
    fn headers_count_only_from_an_authenticated_lb_and_only_with_success() {
        let secret = "0123456789abcdef0123";
        let policy = AccessPolicy {
            proxy_secret: Some(secret.into()),
            trusted_proxies: vec!["127.0.0.1/32".parse().expect("net")],
            admin_certnames: HashSet::from(["admin".to_owned()]),
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-client-verify", "SUCCESS".parse().expect("value"));
        headers.insert("x-client-dn", "CN=admin".parse().expect("value"));
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        let remote: IpAddr = "10.1.2.3".parse().expect("ip");
        assert_eq!(
            policy.caller(local, &headers).expect("caller"),
            Caller::Anonymous,
            "no secret: any local process could send these headers"
        );
        headers.insert(PROXY_SECRET_HEADER, "0123456789abcdef0124".parse().expect("value"));
        assert_eq!(
            policy.caller(local, &headers).expect("caller"),
            Caller::Anonymous,
            "a wrong secret"
        );
        headers.insert(PROXY_SECRET_HEADER, secret.parse().expect("value"));
        let caller = policy.caller(local, &headers).expect("caller");
        assert_eq!(caller, Caller::Client { certname: "admin".into(), cli_auth: false });
        assert!(policy.is_admin(&caller));
        assert_eq!(
            policy.caller(remote, &headers).expect("caller"),
            Caller::Anonymous,
            "the secret from outside trusted_proxies"
        );
        let anywhere = AccessPolicy { trusted_proxies: vec![], ..policy.clone() };
        assert!(matches!(anywhere.caller(remote, &headers), Ok(Caller::Client { .. })));
        let no_secret = AccessPolicy { proxy_secret: None, ..policy.clone() };
        assert_eq!(no_secret.caller(local, &headers).expect("caller"), Caller::Anonymous);
        headers.insert("x-client-verify", "success".parse().expect("value"));
        assert_eq!(policy.caller(local, &headers).expect("caller"), Caller::Anonymous);
        headers.insert("x-client-verify", "SUCCESS".parse().expect("value"));
        headers.insert("x-client-cert", "not%20a%20cert".parse().expect("value"));
        assert!(matches!(policy.caller(local, &headers), Err(ApiError::BadClientCert(_))));
    }
}
