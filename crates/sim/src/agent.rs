//! What one Puppet 7 agent run sends (reference section 8.6), as data: the requests in order,
//! with realistic bodies. No I/O.

use bytes::Bytes;
use http::Method;

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
}

impl Kind {
    pub const ALL: [Kind; 10] = [
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
}

/// The agent's version, as it sends it in `X-Puppet-Version` and `User-Agent`.
pub const PUPPET_VERSION: &str = "7.23.0";
pub const USER_AGENT: &str = "Puppet/7.23.0 Ruby/3.1.2-p20 (x86_64-linux-gnu)";

const ENV: &str = "production";
const PLUGINS_SHALLOW: &str =
    "recurse=false&links=manage&checksum_type=sha256&source_permissions=ignore";
const DEEP: &str = "recurse=true&max_files=-1&ignore=.svn&ignore=CVS&ignore=.git&ignore=.hg&links=follow&checksum_type=sha256";

/// The requests of one run of agent `certname`: `node` only on a first run (later runs take
/// the environment from their last run summary), pluginsync's `file_metadatas`, the catalog
/// POST with the facts, the report PUT.
pub fn run(certname: &str, first: bool, facts: &Bytes, report: &Bytes) -> Vec<Step> {
    let uuid = fastrand::u64(..);
    let mut steps = Vec::with_capacity(7);
    if first {
        steps.push(Step::get(Kind::Node, format!("/puppet/v3/node/{certname}?environment={ENV}&configured_environment={ENV}&transaction_uuid={uuid:016x}")));
    }
    steps.push(Step::get(
        Kind::FileMetadatas,
        format!("/puppet/v3/file_metadatas/plugins?{PLUGINS_SHALLOW}&environment={ENV}"),
    ));
    steps.push(Step::get(
        Kind::FileMetadatas,
        format!(
            "/puppet/v3/file_metadatas/pluginfacts?{DEEP}&source_permissions=use&environment={ENV}"
        ),
    ));
    steps.push(Step::get(
        Kind::FileMetadatas,
        format!(
            "/puppet/v3/file_metadatas/plugins?{DEEP}&source_permissions=ignore&environment={ENV}"
        ),
    ));
    steps.push(Step::get(Kind::FileMetadatas, format!("/puppet/v3/file_metadatas/locales?{DEEP}&ignore=*.pot&ignore=config.yaml&source_permissions=ignore&environment={ENV}")));
    steps.push(Step {
        kind: Kind::Catalog,
        method: Method::POST,
        path: format!("/puppet/v3/catalog/{certname}?environment={ENV}"),
        content_type: Some("application/x-www-form-urlencoded"),
        body: facts.clone(),
    });
    steps.push(Step {
        kind: Kind::Report,
        method: Method::PUT,
        path: format!("/puppet/v3/report/{certname}?environment={ENV}"),
        content_type: Some("application/json"),
        body: report.clone(),
    });
    steps
}

impl Step {
    /// A body-less GET.
    pub fn get(kind: Kind, path: impl Into<String>) -> Self {
        Self {
            kind,
            method: Method::GET,
            path: path.into(),
            content_type: None,
            body: Bytes::new(),
        }
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
    values.insert("puppetversion".into(), PUPPET_VERSION.into());
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
        "puppet_version": PUPPET_VERSION,
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
    fn bodies_have_realistic_sizes() {
        let facts = catalog_form("a.example.com");
        let report = report_json("a.example.com");
        assert!((15_000..40_000).contains(&facts.len()), "facts form {} bytes", facts.len());
        assert!((15_000..60_000).contains(&report.len()), "report {} bytes", report.len());
        assert!(std::str::from_utf8(&facts)
            .is_ok_and(|f| f.starts_with("facts_format=application%2Fjson&facts=%7B")));
    }
}
