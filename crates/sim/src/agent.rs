//! What one agent run sends, as data: the requests in order, with realistic bodies and the
//! headers of the agent's version. Puppet 7 (reference section 8.6); Puppet 8.10 adds, on a
//! connection of its own without a client certificate, the conditional refresh of the CA
//! certificate and the CRL (both answered 304 while unchanged, so every run asks once they are
//! a day old), and, when its certificate nears its end, `POST certificate_renewal` with its
//! client certificate. No I/O.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method};

/// The kinds of request the simulator measures separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Node,
    FileMetadatas,
    Catalog,
    Report,
    CaCert,
    Crl,
    Csr,
    Cert,
    Status,
    Fixed,
    Renewal,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Node,
        Kind::FileMetadatas,
        Kind::Catalog,
        Kind::Report,
        Kind::CaCert,
        Kind::Crl,
        Kind::Csr,
        Kind::Cert,
        Kind::Status,
        Kind::Fixed,
        Kind::Renewal,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::FileMetadatas => "file_metadatas",
            Kind::Catalog => "catalog",
            Kind::Report => "report",
            Kind::CaCert => "ca_cert",
            Kind::Crl => "crl",
            Kind::Csr => "csr",
            Kind::Cert => "cert",
            Kind::Status => "status",
            Kind::Fixed => "request",
            Kind::Renewal => "renewal",
        }
    }
}

/// One request of a run.
#[derive(Debug, Clone)]
pub struct Step {
    pub kind: Kind,
    pub method: Method,
    pub path: String,
    pub content_type: Option<&'static str>,
    pub body: Bytes,
    /// `Accept`, `X-Puppet-Version`, `User-Agent`, `If-Modified-Since`, as the agent sends them.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Which Puppet the simulated agents are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Generation {
    /// Debian 12's puppet-agent 7.23.
    #[default]
    Puppet7,
    /// Debian 13's puppet-agent 8.10 (OpenVox 8 sends the same).
    Puppet8,
}

impl Generation {
    pub fn version(self) -> &'static str {
        match self {
            Self::Puppet7 => "7.23.0",
            Self::Puppet8 => "8.10.0",
        }
    }

    pub fn user_agent(self) -> &'static str {
        match self {
            Self::Puppet7 => "Puppet/7.23.0 Ruby/3.1.2-p20 (x86_64-linux-gnu)",
            Self::Puppet8 => "Puppet/8.10.0 Ruby/3.3.8-p144 (x86_64-linux-gnu)",
        }
    }

    /// What the agent accepts for a request of `kind`: CA requests take `text/plain`; Puppet 8
    /// no longer offers PSON, and asks for rich JSON catalogs.
    fn accept(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (_, Kind::CaCert | Kind::Crl | Kind::Csr | Kind::Cert | Kind::Renewal) => "text/plain",
            (Self::Puppet7, _) => "application/json, text/pson",
            (Self::Puppet8, Kind::Catalog) => "application/vnd.puppet.rich+json, application/json",
            (Self::Puppet8, _) => "application/json",
        }
    }
}

impl std::str::FromStr for Generation {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "7" => Ok(Self::Puppet7),
            "8" => Ok(Self::Puppet8),
            other => Err(format!("unknown Puppet version {other:?}: 7 or 8")),
        }
    }
}

/// One run: the requests without a client certificate (Puppet 8's refreshes), then those of
/// the run proper, on a connection with the agent's certificate.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub refresh: Vec<Step>,
    pub steps: Vec<Step>,
}

impl RunPlan {
    /// Numbers this run for the stub compiler (see [`crate::stub::RUN_HEADER`]): its catalog
    /// request carries `run`, so the stub gives it the same compile time behind every LB.
    pub fn number(&mut self, run: u64) {
        for step in self.steps.iter_mut().filter(|step| step.kind == Kind::Catalog) {
            step.headers.push((HeaderName::from_static(crate::stub::RUN_HEADER), run.into()));
        }
    }
}

/// Where in the first run interval an agent's first run falls, as a fraction of it (Puppet's
/// splay): from a hash of the certname, so that every LB measured in a benchmark sees the same
/// arrivals.
pub fn splay_fraction(certname: &str) -> f64 {
    (crate::stable_hash(("splay", certname)) >> 11) as f64 / (1u64 << 53) as f64
}

const ENV: &str = "production";
const PLUGINS_SHALLOW: &str =
    "recurse=false&links=manage&checksum_type=sha256&source_permissions=ignore";
const DEEP: &str = "recurse=true&max_files=-1&ignore=.svn&ignore=CVS&ignore=.git&ignore=.hg&links=follow&checksum_type=sha256";

/// The date the simulated agents last saw the CA certificate and CRL change (what Puppet 8
/// sends in `If-Modified-Since`): before any CA a test makes, so an unchanged file answers 304.
const LAST_SEEN: &str = "Mon, 01 Jan 2024 00:00:00 GMT";

/// One run of agent `certname` of `generation`: for Puppet 8, the CA and CRL refresh and, with
/// `renew`, the renewal; then `node` only on a first run (later runs take the environment from
/// their last run summary), pluginsync's `file_metadatas`, the catalog POST with the facts,
/// the report PUT.
pub fn plan(
    generation: Generation,
    certname: &str,
    first: bool,
    renew: bool,
    facts: &Bytes,
    report: &Bytes,
) -> RunPlan {
    let mut plan = RunPlan { refresh: Vec::new(), steps: Vec::new() };
    if generation == Generation::Puppet8 {
        for (kind, path) in [
            (Kind::CaCert, "/puppet-ca/v1/certificate/ca"),
            (Kind::Crl, "/puppet-ca/v1/certificate_revocation_list/ca"),
        ] {
            let mut step = Step::get_as(generation, kind, path);
            step.headers.push((header::IF_MODIFIED_SINCE, HeaderValue::from_static(LAST_SEEN)));
            plan.refresh.push(step);
        }
        if renew {
            let mut step =
                Step::get_as(generation, Kind::Renewal, "/puppet-ca/v1/certificate_renewal");
            step.method = Method::POST;
            step.content_type = Some("text/plain");
            plan.steps.push(step);
        }
    }
    plan.steps.extend(run_as(generation, certname, first, facts, report));
    plan
}

/// The requests of one Puppet 7 run (see [`plan`]).
pub fn run(certname: &str, first: bool, facts: &Bytes, report: &Bytes) -> Vec<Step> {
    run_as(Generation::Puppet7, certname, first, facts, report)
}

fn run_as(
    generation: Generation,
    certname: &str,
    first: bool,
    facts: &Bytes,
    report: &Bytes,
) -> Vec<Step> {
    let get = |kind, path: String| Step::get_as(generation, kind, path);
    let uuid = fastrand::u64(..);
    let mut steps = Vec::with_capacity(7);
    if first {
        steps.push(get(Kind::Node, format!("/puppet/v3/node/{certname}?environment={ENV}&configured_environment={ENV}&transaction_uuid={uuid:016x}")));
    }
    steps.push(get(
        Kind::FileMetadatas,
        format!("/puppet/v3/file_metadatas/plugins?{PLUGINS_SHALLOW}&environment={ENV}"),
    ));
    steps.push(get(
        Kind::FileMetadatas,
        format!(
            "/puppet/v3/file_metadatas/pluginfacts?{DEEP}&source_permissions=use&environment={ENV}"
        ),
    ));
    steps.push(get(
        Kind::FileMetadatas,
        format!(
            "/puppet/v3/file_metadatas/plugins?{DEEP}&source_permissions=ignore&environment={ENV}"
        ),
    ));
    steps.push(get(Kind::FileMetadatas, format!("/puppet/v3/file_metadatas/locales?{DEEP}&ignore=*.pot&ignore=config.yaml&source_permissions=ignore&environment={ENV}")));
    let mut catalog =
        get(Kind::Catalog, format!("/puppet/v3/catalog/{certname}?environment={ENV}"));
    catalog.method = Method::POST;
    catalog.content_type = Some("application/x-www-form-urlencoded");
    catalog.body = facts.clone();
    steps.push(catalog);
    let mut put = get(Kind::Report, format!("/puppet/v3/report/{certname}?environment={ENV}"));
    put.method = Method::PUT;
    put.content_type = Some("application/json");
    put.body = report.clone();
    steps.push(put);
    steps
}

impl Step {
    /// A body-less GET, as Puppet 7 sends it.
    pub fn get(kind: Kind, path: impl Into<String>) -> Self {
        Self::get_as(Generation::Puppet7, kind, path)
    }

    /// A body-less GET with the headers of `generation`.
    pub fn get_as(generation: Generation, kind: Kind, path: impl Into<String>) -> Self {
        let headers = vec![
            (header::ACCEPT, HeaderValue::from_static(generation.accept(kind))),
            (
                HeaderName::from_static("x-puppet-version"),
                HeaderValue::from_static(generation.version()),
            ),
            (header::USER_AGENT, HeaderValue::from_static(generation.user_agent())),
        ];
        Self {
            kind,
            method: Method::GET,
            path: path.into(),
            content_type: None,
            body: Bytes::new(),
            headers,
        }
    }

    /// Whether `status` is what the agent takes as success for this request: a 2xx, or a 304
    /// to a conditional refresh.
    pub fn succeeded(&self, status: http::StatusCode) -> bool {
        status.is_success()
            || (status == http::StatusCode::NOT_MODIFIED
                && self.headers.iter().any(|(name, _)| name == header::IF_MODIFIED_SINCE))
    }
}

/// The catalog request's form body: `facts_format`, the URL-encoded JSON facts (about 20 KiB, the
/// size of a Linux node's facts), and the other fields Puppet 7 sends.
pub fn catalog_form(certname: &str) -> Bytes {
    let facts = facts_json(certname);
    let encoded = form_encode(&facts);
    Bytes::from(format!(
        "facts_format=application%2Fjson&facts={encoded}&environment={ENV}&configured_environment={ENV}&check_environment=true&transaction_uuid={:016x}&job_uuid=&static_catalog=true&checksum_type=sha256.sha384.sha512.sha224.md5",
        fastrand::u64(..)
    ))
}

fn facts_json(certname: &str) -> String {
    let mut values = serde_json::Map::new();
    values.insert("clientcert".into(), certname.into());
    values.insert("fqdn".into(), certname.into());
    values.insert("hostname".into(), certname.split('.').next().unwrap_or(certname).into());
    values.insert("kernel".into(), "Linux".into());
    values.insert("os".into(), serde_json::json!({"family": "Debian", "name": "Debian", "release": {"full": "12.8", "major": "12"}}));
    values.insert("puppetversion".into(), Generation::Puppet7.version().into());
    for i in 0..200 {
        values.insert(
            format!("fact_{i:03}"),
            format!("value {i} of a simulated node, padding to a realistic size").into(),
        );
    }
    serde_json::json!({ "name": certname, "values": values, "timestamp": "2026-11-25T12:00:00.000000000+00:00", "expiration": "2026-11-25T12:30:00.000000000+00:00" }).to_string()
}

/// A Puppet 7 report of about 30 KiB.
pub fn report_json(certname: &str) -> Bytes {
    let logs: Vec<serde_json::Value> = (0..60)
        .map(|i| serde_json::json!({"level": "notice", "message": format!("simulated change {i}"), "source": "Puppet", "tags": ["notice"], "time": "2026-11-25T12:00:00.000000000+00:00", "file": null, "line": null}))
        .collect();
    let resources: serde_json::Map<String, serde_json::Value> = (0..80)
        .map(|i| (format!("File[/etc/sim/{i}]"), serde_json::json!({"title": format!("/etc/sim/{i}"), "resource_type": "File", "changed": false, "skipped": false, "failed": false, "events": [], "evaluation_time": 0.001})))
        .collect();
    // The fields a Puppet 7 agent's report carries (format 12), so puppetserver's report
    // handler reads it as it reads a real one.
    let report = serde_json::json!({
        "host": certname,
        "time": "2026-11-25T12:00:00.000000000+00:00",
        "configuration_version": 1_764_072_000,
        "transaction_uuid": format!("{:032x}", fastrand::u128(..)),
        "catalog_uuid": format!("{:032x}", fastrand::u128(..)),
        "code_id": null,
        "job_id": null,
        "cached_catalog_status": "not_used",
        "report_format": 12,
        "puppet_version": Generation::Puppet7.version(),
        "status": "unchanged",
        "transaction_completed": true,
        "noop": false,
        "noop_pending": false,
        "corrective_change": false,
        "environment": ENV,
        "server_used": "puppet:8140",
        "logs": logs,
        "metrics": {},
        "resource_statuses": resources,
    });
    Bytes::from(report.to_string())
}

/// `application/x-www-form-urlencoded` value encoding.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3 / 2);
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numbered_run_tells_the_stub_its_number_on_the_catalog_request_only() {
        let mut plan =
            plan(Generation::Puppet7, "a.example.com", true, false, &Bytes::new(), &Bytes::new());
        plan.number(3);
        let numbered: Vec<Kind> = plan
            .steps
            .iter()
            .filter(|step| {
                step.headers
                    .iter()
                    .any(|(name, value)| name == crate::stub::RUN_HEADER && value == "3")
            })
            .map(|step| step.kind)
            .collect();
        assert_eq!(numbered, [Kind::Catalog]);
    }

    #[test]
    fn splay_is_the_same_for_a_node_every_time_and_spread_over_the_interval() {
        let fractions: Vec<f64> =
            (0..1000).map(|i| splay_fraction(&format!("agent{i}.example.com"))).collect();
        assert_eq!(fractions[0], splay_fraction("agent0.example.com"));
        assert!(fractions.iter().all(|f| (0.0..1.0).contains(f)));
        let first_half = fractions.iter().filter(|f| **f < 0.5).count();
        assert!((430..570).contains(&first_half), "{first_half} of 1000 in the first half");
    }

    #[test]
    fn a_run_follows_the_agents_order() {
        let facts = catalog_form("a.example.com");
        let report = report_json("a.example.com");
        let first: Vec<Kind> =
            run("a.example.com", true, &facts, &report).iter().map(|s| s.kind).collect();
        assert_eq!(
            first,
            [
                Kind::Node,
                Kind::FileMetadatas,
                Kind::FileMetadatas,
                Kind::FileMetadatas,
                Kind::FileMetadatas,
                Kind::Catalog,
                Kind::Report
            ]
        );
        let later = run("a.example.com", false, &facts, &report);
        assert_eq!(later.len(), 6);
        assert!(later[4]
            .path
            .starts_with("/puppet/v3/catalog/a.example.com?environment=production"));
        assert_eq!(later[4].method, Method::POST);
    }

    #[test]
    fn a_puppet8_run_refreshes_without_a_certificate_and_renews_when_due() {
        let facts = catalog_form("a.example.com");
        let report = report_json("a.example.com");
        let plan = plan(Generation::Puppet8, "a.example.com", false, true, &facts, &report);
        let refresh: Vec<(Kind, &str)> =
            plan.refresh.iter().map(|s| (s.kind, s.path.as_str())).collect();
        assert_eq!(
            refresh,
            [
                (Kind::CaCert, "/puppet-ca/v1/certificate/ca"),
                (Kind::Crl, "/puppet-ca/v1/certificate_revocation_list/ca")
            ]
        );
        assert!(plan
            .refresh
            .iter()
            .all(|s| s.headers.iter().any(|(n, _)| n == header::IF_MODIFIED_SINCE)));
        assert!(
            plan.refresh[0].succeeded(http::StatusCode::NOT_MODIFIED),
            "304 is an answer to a refresh"
        );
        assert_eq!(plan.steps[0].kind, Kind::Renewal);
        assert_eq!((plan.steps[0].method.clone(), plan.steps[0].body.len()), (Method::POST, 0));
        assert_eq!(plan.steps.len(), 7, "the renewal and the six requests of a later run");
        let version = |s: &Step| {
            s.headers.iter().find(|(n, _)| n == "x-puppet-version").map(|(_, v)| v.clone())
        };
        assert!(plan.steps.iter().all(|s| version(s) == Some(HeaderValue::from_static("8.10.0"))));
        let seven = plan_of_7();
        assert!(seven.refresh.is_empty() && seven.steps.iter().all(|s| s.kind != Kind::Renewal));
        assert!(!seven.steps[0].succeeded(http::StatusCode::NOT_MODIFIED));
    }

    fn plan_of_7() -> RunPlan {
        let facts = catalog_form("a.example.com");
        plan(
            Generation::Puppet7,
            "a.example.com",
            true,
            true,
            &facts,
            &report_json("a.example.com"),
        )
    }

    #[test]
    fn bodies_have_realistic_sizes() {
        let facts = catalog_form("a.example.com");
        let report = report_json("a.example.com");
        assert!((15_000..40_000).contains(&facts.len()), "facts form {} bytes", facts.len());
        assert!((15_000..60_000).contains(&report.len()), "report {} bytes", report.len());
        assert!(std::str::from_utf8(&facts)
            .is_ok_and(|f| f.starts_with("facts_format=application%2Fjson&facts=%7B")));
    }
}
