//! Strict HTTP/1.1 at the edge, before a request is routed: exactly one valid `Host`;
//! absolute-form targets normalised to origin-form when they name this LB, refused otherwise;
//! `CONNECT` and `TRACE` refused. Pure: the request head and this LB's names in, a verdict out.

use std::{collections::HashSet, fmt, net::IpAddr, sync::Arc};

use http::{header, request::Parts, uri::Authority, HeaderValue, Method, Uri};

/// Why a request was refused before it reached a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No `Host` header (RFC 9112 §3.2: 400).
    NoHost,
    /// More than one `Host` header.
    TwoHosts,
    /// A `Host` that is not a valid authority.
    BadHost,
    /// An absolute-form target naming a host this LB is not.
    ForeignTarget,
    /// `CONNECT` or `TRACE`: this is not a forward proxy, and backends must not echo heads.
    Method,
}

impl Refusal {
    pub(crate) const ALL: [Self; 5] =
        [Self::NoHost, Self::TwoHosts, Self::BadHost, Self::ForeignTarget, Self::Method];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::NoHost => "no_host",
            Self::TwoHosts => "two_hosts",
            Self::BadHost => "bad_host",
            Self::ForeignTarget => "foreign_target",
            Self::Method => "method",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoHost => "the request has no Host header",
            Self::TwoHosts => "the request has more than one Host header",
            Self::BadHost => "the Host header is not a valid host",
            Self::ForeignTarget => "the request target names a host this load balancer is not",
            Self::Method => "this method is not allowed here",
        })
    }
}

/// The names this LB answers to: the DNS names and addresses of its certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LbNames {
    names: HashSet<String>,
}

impl LbNames {
    pub(crate) fn new(names: impl IntoIterator<Item = String>) -> Arc<Self> {
        Arc::new(Self { names: names.into_iter().map(|n| n.to_ascii_lowercase()).collect() })
    }

    fn contains(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.names.contains(&ip.to_string());
        }
        self.names.contains(host.trim_end_matches('.'))
    }
}

/// Checks a request head, normalising an absolute-form target that names this LB (its `Host`
/// then becomes the target's authority, as RFC 9112 §3.2.2 asks).
pub(crate) fn check(parts: &mut Parts, names: &LbNames) -> Result<(), Refusal> {
    if parts.method == Method::CONNECT || parts.method == Method::TRACE {
        return Err(Refusal::Method);
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next().ok_or(Refusal::NoHost)?;
    if hosts.next().is_some() {
        return Err(Refusal::TwoHosts);
    }
    let host_ok = host.to_str().ok().and_then(|h| h.parse::<Authority>().ok()).is_some();
    if !host_ok {
        return Err(Refusal::BadHost);
    }
    let Some(authority) = parts.uri.authority().cloned() else { return Ok(()) };
    if !names.contains(authority.host()) {
        return Err(Refusal::ForeignTarget);
    }
    let origin = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = origin.parse::<Uri>().map_err(|_| Refusal::ForeignTarget)?;
    let host = HeaderValue::from_str(authority.as_str()).map_err(|_| Refusal::BadHost)?;
    parts.headers.insert(header::HOST, host);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn head(method: &str, target: &str, hosts: &[&str]) -> Parts {
        let mut builder = Request::builder().method(method).uri(target);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).expect("a request").into_parts().0
    }

    /// Method, target, `Host` headers; the target and `Host` after the check, or the refusal.
    type Case<'a> = (&'a str, &'a str, &'a [&'a str], Result<(&'a str, &'a str), Refusal>);

    #[test]
    fn heads_are_checked_and_absolute_targets_normalised() {
        let names = LbNames::new(["puppetlb.example.com".into(), "127.0.0.1".into()]);
        #[rustfmt::skip]
        let cases: [Case<'_>; 12] = [
            ("GET", "/puppet/v3/node/a", &["puppetlb.example.com:8140"], Ok(("/puppet/v3/node/a", "puppetlb.example.com:8140"))),
            ("GET", "/x", &[], Err(Refusal::NoHost)),
            ("GET", "/x", &["a", "b"], Err(Refusal::TwoHosts)),
            ("GET", "/x", &["a b"], Err(Refusal::BadHost)),
            ("GET", "https://evil.example.com/x", &["puppetlb.example.com"], Err(Refusal::ForeignTarget)),
            ("GET", "https://PuppetLB.example.com:8140/x?y=1", &["other"], Ok(("/x?y=1", "PuppetLB.example.com:8140"))),
            ("GET", "http://127.0.0.1:8140/x", &["127.0.0.1"], Ok(("/x", "127.0.0.1:8140"))),
            ("GET", "http://[::1]/x", &["127.0.0.1"], Err(Refusal::ForeignTarget)),
            ("CONNECT", "evil.example.com:443", &["evil.example.com:443"], Err(Refusal::Method)),
            ("TRACE", "/x", &["puppetlb.example.com"], Err(Refusal::Method)),
            ("PUT", "/puppet-ca/v1/certificate_request/a", &["localhost"], Ok(("/puppet-ca/v1/certificate_request/a", "localhost"))),
            ("GET", "https://puppetlb.example.com.", &["x"], Ok(("/", "puppetlb.example.com."))),
        ];
        for (method, target, hosts, expected) in cases {
            let mut parts = head(method, target, hosts);
            let got = check(&mut parts, &names).map(|()| {
                let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok());
                (parts.uri.to_string(), host.unwrap_or("").to_owned())
            });
            let expected = expected.map(|(uri, host)| (uri.to_owned(), host.to_owned()));
            assert_eq!(got, expected, "{method} {target} {hosts:?}");
        }
    }
}
