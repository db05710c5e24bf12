//! The `[ca]` section: raw serde form, then the checked settings.

use std::{collections::HashSet, net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;
use serde::{de, Deserialize, Deserializer};

use crate::{
    api::AccessPolicy,
    autosign::{Autosign, DEFAULT_POLICY_TIMEOUT},
    service::CaSettings,
};

/// `[ca]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCaConfig {
    pub listen: SocketAddr,
    /// Plain-HTTP admin endpoints of the CA role (`/metrics`); keep it on loopback.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    pub cadir: PathBuf,
    #[serde(default)]
    pub autosign: FileAutosign,
    #[serde(default)]
    pub allow_subject_alt_names: bool,
    #[serde(default)]
    pub allow_authorization_extensions: bool,
    #[serde(default)]
    pub allow_duplicate_certs: bool,
    /// A file holding the secret LBs send before their `X-Client-*` headers are believed.
    #[serde(default)]
    pub proxy_secret_file: Option<PathBuf>,
    /// When set, LBs must also connect from these networks.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    #[serde(default)]
    pub admin_certnames: Vec<String>,
    /// Lifetime of issued certificates, Puppet's `ca_ttl` (e.g. `5y`).
    #[serde(default)]
    pub cert_ttl: Option<String>,
    #[serde(default)]
    pub max_pending_requests: Option<usize>,
    /// Puppet 8's automatic certificate renewal (`allow-auto-renewal`); on unless `false`.
    #[serde(default)]
    pub allow_auto_renewal: Option<bool>,
    /// Lifetime of renewed certificates (`auto-renewal-cert-ttl`), 90 days unless set.
    #[serde(default)]
    pub auto_renewal_cert_ttl: Option<String>,
    /// Keep the CA's state in PostgreSQL (a libpq-style URL) instead of `cadir`, which then
    /// holds only `ca_crt.pem` and `ca_key.pem`.
    #[serde(default)]
    pub database: Option<String>,
    /// Most database connections this node holds.
    #[serde(default)]
    pub database_pool: Option<usize>,
    /// Connecting to the database, and each operation, at most this long.
    #[serde(default)]
    pub database_timeout: Option<String>,
    /// How long a request waits for an unavailable database (a failover) before answering 503.
    #[serde(default)]
    pub database_outage_wait: Option<String>,
    /// The CA bundle of the database's TLS certificate (with `sslmode=require` in the URL).
    #[serde(default)]
    pub database_ca: Option<PathBuf>,
    /// A file whose first line is the database password, so that the URL (and this config)
    /// need not hold it.
    #[serde(default)]
    pub database_password_file: Option<PathBuf>,
    /// This node's name in the database's rows and audit trail; the host name and `listen`
    /// unless set.
    #[serde(default)]
    pub node_name: Option<String>,
}

/// `autosign = true | false | "/path" | { policy = "/path", timeout = "30s" }`.
#[derive(Debug, Clone)]
pub enum FileAutosign {
    Switch(bool),
    Path(PathBuf),
    Policy(FilePolicy),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePolicy {
    policy: PathBuf,
    timeout: Option<String>,
}

impl Default for FileAutosign {
    fn default() -> Self {
        Self::Switch(false)
    }
}

/// By hand rather than `untagged`, so that a typo inside the table is reported by name.
impl<'de> Deserialize<'de> for FileAutosign {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> de::Visitor<'de> for Visit {
            type Value = FileAutosign;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, a path, or { policy = \"/path\", timeout = \"30s\" }")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<FileAutosign, E> {
                Ok(FileAutosign::Switch(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FileAutosign, E> {
                Ok(FileAutosign::Path(PathBuf::from(v)))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<FileAutosign, A::Error> {
                FilePolicy::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(FileAutosign::Policy)
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// Longest an autosign policy executable may run.
const MAX_POLICY_TIMEOUT: Duration = Duration::from_secs(600);
/// Most pending requests a CA can be told to hold.
const MAX_PENDING: usize = 10_000_000;

/// The checked `[ca]` settings.
#[derive(Debug, Clone)]
pub struct CaConfig {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub cadir: PathBuf,
    /// The database store, when `database` is set.
    pub database: Option<crate::db::DbSettings>,
    pub autosign: Autosign,
    pub settings: CaSettings,
    pub access: AccessPolicy,
}

/// A `[ca]` value that cannot be used; the text names the key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("[ca] {key}: {reason}")]
pub struct CaConfigError {
    pub key: &'static str,
    pub reason: String,
}

impl TryFrom<FileCaConfig> for CaConfig {
    type Error = CaConfigError;

    fn try_from(file: FileCaConfig) -> Result<Self, Self::Error> {
        let database = database(&file)?;
        let err = |key, reason: String| CaConfigError { key, reason };
        let cert_ttl = match &file.cert_ttl {
            Some(text) => {
                pki::timefmt::parse_duration(text).map_err(|e| err("cert_ttl", e.to_string()))?
            }
            None => pki::issue::DEFAULT_CERT_TTL,
        };
        if cert_ttl > pki::issue::MAX_TTL || cert_ttl.is_zero() {
            return Err(err("cert_ttl", "must be between 1s and 50y".into()));
        }
        let autosign = match file.autosign {
            FileAutosign::Switch(false) => Autosign::Off,
            FileAutosign::Switch(true) => Autosign::On,
            FileAutosign::Path(path) => Autosign::Path { path, timeout: DEFAULT_POLICY_TIMEOUT },
            FileAutosign::Policy(FilePolicy { policy, timeout }) => {
                let timeout = match timeout {
                    Some(t) => pki::timefmt::parse_duration(&t)
                        .map_err(|e| err("autosign.timeout", e.to_string()))?,
                    None => DEFAULT_POLICY_TIMEOUT,
                };
                if timeout < Duration::from_secs(1) || timeout > MAX_POLICY_TIMEOUT {
                    return Err(err("autosign.timeout", "must be between 1s and 10m".into()));
                }
                Autosign::Policy { path: policy, timeout }
            }
        };
        let max_pending_requests =
            file.max_pending_requests.unwrap_or(CaSettings::default().max_pending_requests);
        if max_pending_requests == 0 || max_pending_requests > MAX_PENDING {
            return Err(err(
                "max_pending_requests",
                format!("must be between 1 and {MAX_PENDING}"),
            ));
        }
        let auto_renewal_ttl = match &file.auto_renewal_cert_ttl {
            Some(text) => pki::timefmt::parse_duration(text)
                .map_err(|e| err("auto_renewal_cert_ttl", e.to_string()))?,
            None => crate::service::DEFAULT_AUTO_RENEWAL_TTL,
        };
        if auto_renewal_ttl > pki::issue::MAX_TTL || auto_renewal_ttl < Duration::from_secs(60) {
            return Err(err("auto_renewal_cert_ttl", "must be between 1m and 50y".into()));
        }
        let auto_renewal_ttl = file.allow_auto_renewal.unwrap_or(true).then_some(auto_renewal_ttl);
        let proxy_secret = match &file.proxy_secret_file {
            Some(path) => {
                Some(pki::secret::read_secret_file(path).map_err(|e| err("proxy_secret_file", e))?)
            }
            None => None,
        };
        for name in &file.admin_certnames {
            pki::Certname::parse(name)
                .map_err(|e| err("admin_certnames", format!("{name:?}: {e}")))?;
        }
        Ok(Self {
            listen: file.listen,
            admin_listen: file.admin_listen,
            cadir: file.cadir,
            database,
            autosign,
            settings: CaSettings {
                policy: pki::CsrPolicy {
                    allow_subject_alt_names: file.allow_subject_alt_names,
                    allow_authorization_extensions: file.allow_authorization_extensions,
                },
                cert_ttl,
                allow_duplicate_certs: file.allow_duplicate_certs,
                max_pending_requests,
                auto_renewal_ttl,
            },
            access: AccessPolicy {
                proxy_secret,
                trusted_proxies: file.trusted_proxies,
                admin_certnames: file.admin_certnames.into_iter().collect::<HashSet<_>>(),
            },
        })
    }
}

/// How long a request waits out a database outage by default: a failover's promotion takes
/// seconds, and Puppet 7 agents fail on a 503 (their Retry-After handling is broken before
/// Puppet 7.25, PUP-11853).
pub const DEFAULT_OUTAGE_WAIT: Duration = Duration::from_secs(20);

/// The database settings, checked; this node is named after the host and the CA's address.
fn database(file: &FileCaConfig) -> Result<Option<crate::db::DbSettings>, CaConfigError> {
    let err = |key, reason: String| CaConfigError { key, reason };
    let Some(url) = &file.database else { return Ok(None) };
    crate::db::check_url(url)
        .map_err(|e| err("database", format!("{}: {e}", crate::db::redact(url))))?;
    let pool_size = file.database_pool.unwrap_or(8);
    if !(1..=1000).contains(&pool_size) {
        return Err(err("database_pool", "must be between 1 and 1000".into()));
    }
    let timeout = match &file.database_timeout {
        Some(text) => pki::timefmt::parse_duration(text)
            .map_err(|e| err("database_timeout", e.to_string()))?,
        None => Duration::from_secs(5),
    };
    if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(600) {
        return Err(err("database_timeout", "must be between 100ms and 10m".into()));
    }
    let outage_wait = match &file.database_outage_wait {
        Some(text) => pki::timefmt::parse_duration(text)
            .map_err(|e| err("database_outage_wait", e.to_string()))?,
        None => DEFAULT_OUTAGE_WAIT,
    };
    if outage_wait > Duration::from_secs(600) {
        return Err(err("database_outage_wait", "must be at most 10m".into()));
    }
    let node = match &file.node_name {
        Some(name) if name.trim().is_empty() || name.len() > 200 => {
            return Err(err("node_name", "must be 1 to 200 characters".into()))
        }
        Some(name) => name.clone(),
        None => {
            // uname(2), not /proc: the packaged unit hides /proc's non-process files.
            let uname = rustix::system::uname();
            let host = uname.nodename().to_string_lossy().into_owned();
            format!("{} {}", host.trim(), file.listen)
        }
    };
    Ok(Some(crate::db::DbSettings {
        url: url.clone(),
        pool_size,
        timeout,
        outage_wait,
        tls_roots: file.database_ca.clone(),
        password_file: file.database_password_file.clone(),
        node,
    }))
}

/// Re-exported for callers that print the effective config.
pub fn describe_autosign(autosign: &Autosign) -> String {
    match autosign {
        Autosign::Off => "off".into(),
        Autosign::On => "on (every request)".into(),
        Autosign::Path { path, .. } => {
            format!("{} (executable: policy; otherwise globs)", path.display())
        }
        Autosign::Policy { path, timeout } => {
            format!("policy {} (timeout {timeout:?})", path.display())
        }
    }
}
