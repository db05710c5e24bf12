//! The `[lb]` section: raw serde form, then the checked settings.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use thiserror::Error;

use crate::{
    crl::CrlPull,
    health::HealthPolicy,
    pool::{ActiveCheck, MemberSpec, Pool, PoolSettings},
    route::{Matcher, Route, RouteTable},
    server::ServeSettings,
    tls::TlsFiles,
    upstream::{Upstream, UpstreamSettings},
};

/// `[lb]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLbConfig {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// A CRL file (watched), or the CA pool to pull it from.
    #[serde(default)]
    pub crl: Option<FileCrl>,
    /// Loopback address of the admin endpoints (`/healthz`, `/metrics`, `/pools`).
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    #[serde(default)]
    pub pools: BTreeMap<String, FilePool>,
    #[serde(default)]
    pub routes: Vec<FileRoute>,
    /// How often the TLS files are checked for changes.
    #[serde(default)]
    pub tls_reload_interval: Option<String>,
    #[serde(default)]
    pub timeouts: FileTimeouts,
    #[serde(default)]
    pub max_connections: Option<usize>,
}

/// `crl = "/path"`, `{ file = "/path" }` or `{ pool = "ca", refresh = "30s" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileCrl {
    Path(PathBuf),
    File { file: PathBuf },
    Pool { pool: String, refresh: Option<String>, cache: Option<PathBuf> },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePool {
    pub members: Vec<FileMember>,
    #[serde(default)]
    pub balance: Option<String>,
    #[serde(default)]
    pub health: Option<FileHealth>,
    #[serde(default)]
    pub eject_on_5xx: bool,
    #[serde(default)]
    pub queue: FileQueue,
    #[serde(default)]
    pub retry_after: Option<FileRange>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileMember {
    pub url: String,
    #[serde(default)]
    pub standby: bool,
    #[serde(default)]
    pub max_in_flight: Option<usize>,
}

/// `health = false` (passive ejection only), or the active check's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileHealth {
    Switch(bool),
    Check(FileCheck),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCheck {
    pub path: Option<String>,
    pub expect: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQueue {
    pub max: Option<usize>,
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRange {
    pub min: String,
    pub max: String,
}

/// A route: exactly one of `prefix`, `regex` or `environment`, and the pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub prefix: Option<String>,
    pub regex: Option<String>,
    pub environment: Option<String>,
    pub pool: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    pub connect: Option<String>,
    pub response: Option<String>,
    pub backend_idle: Option<String>,
    pub handshake: Option<String>,
    pub header_read: Option<String>,
    pub idle_park: Option<String>,
    pub drain: Option<String>,
}

/// The checked `[lb]` settings.
#[derive(Debug, Clone)]
pub struct LbConfig {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub tls: TlsFiles,
    pub tls_reload_interval: Duration,
    /// Pull the CRL from this pool every `refresh` (instead of, or on top of, a file).
    pub crl_pull: Option<CrlPull>,
    pub routes: RouteTable,
    pub pools: Vec<PoolConfig>,
    pub upstream: UpstreamSettings,
    pub serve: ServeSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub name: String,
    pub settings: PoolSettings,
    pub members: Vec<FileMember>,
}

/// An `[lb]` value that cannot be used; the text names the key.
#[derive(Debug, Clone, Error)]
#[error("[lb] {key}: {reason}")]
pub struct LbConfigError {
    pub key: String,
    pub reason: String,
}

fn err(key: impl Into<String>, reason: impl Into<String>) -> LbConfigError {
    LbConfigError { key: key.into(), reason: reason.into() }
}

fn duration(
    key: &str,
    value: &Option<String>,
    default: Duration,
) -> Result<Duration, LbConfigError> {
    match value {
        Some(text) => pki::timefmt::parse_duration(text).map_err(|e| err(key, e.to_string())),
        None => Ok(default),
    }
}

impl TryFrom<FileLbConfig> for LbConfig {
    type Error = LbConfigError;

    fn try_from(file: FileLbConfig) -> Result<Self, Self::Error> {
        let routes = file
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| route(i, r, &file.pools))
            .collect::<Result<Vec<_>, _>>()?;
        let mut pools = Vec::new();
        for (name, pool) in &file.pools {
            pools.push(pool_config(name, pool)?);
        }
        let (crl_file, crl_pull) = match file.crl {
            None => (None, None),
            Some(FileCrl::Path(path) | FileCrl::File { file: path }) => (Some(path), None),
            Some(FileCrl::Pool { pool, refresh, cache }) => {
                if !file.pools.contains_key(&pool) && pool != crate::route::CA_POOL {
                    return Err(err("crl.pool", format!("no pool named {pool:?}")));
                }
                let refresh = duration("crl.refresh", &refresh, Duration::from_secs(30))?;
                (None, Some(CrlPull { pool, refresh, cache }))
            }
        };
        let t = &file.timeouts;
        let upstream_defaults = UpstreamSettings::default();
        let serve_defaults = ServeSettings::default();
        Ok(Self {
            listen: file.listen,
            admin_listen: file.admin_listen,
            tls: TlsFiles {
                cert: file.cert,
                key: file.key,
                client_ca: file.client_ca,
                crl: crl_file,
            },
            crl_pull,
            tls_reload_interval: duration(
                "tls_reload_interval",
                &file.tls_reload_interval,
                Duration::from_secs(2),
            )?,
            routes: RouteTable::with_defaults(routes),
            pools,
            upstream: UpstreamSettings {
                connect_timeout: duration(
                    "timeouts.connect",
                    &t.connect,
                    upstream_defaults.connect_timeout,
                )?,
                response_timeout: duration(
                    "timeouts.response",
                    &t.response,
                    upstream_defaults.response_timeout,
                )?,
                idle_timeout: duration(
                    "timeouts.backend_idle",
                    &t.backend_idle,
                    upstream_defaults.idle_timeout,
                )?,
                max_idle: upstream_defaults.max_idle,
            },
            serve: ServeSettings {
                handshake_timeout: duration(
                    "timeouts.handshake",
                    &t.handshake,
                    serve_defaults.handshake_timeout,
                )?,
                header_read_timeout: duration(
                    "timeouts.header_read",
                    &t.header_read,
                    serve_defaults.header_read_timeout,
                )?,
                idle_park: duration("timeouts.idle_park", &t.idle_park, serve_defaults.idle_park)?,
                max_connections: file.max_connections.unwrap_or(serve_defaults.max_connections),
                drain_grace: duration("timeouts.drain", &t.drain, serve_defaults.drain_grace)?,
            },
        })
    }
}

fn route(
    index: usize,
    file: &FileRoute,
    pools: &BTreeMap<String, FilePool>,
) -> Result<Route, LbConfigError> {
    let key = format!("routes[{index}]");
    if !pools.contains_key(&file.pool) {
        return Err(err(format!("{key}.pool"), format!("no pool named {:?}", file.pool)));
    }
    let matcher = match (&file.prefix, &file.regex, &file.environment) {
        (Some(prefix), None, None) => Matcher::Prefix(prefix.clone()),
        (None, Some(re), None) => Matcher::Regex(
            regex::Regex::new(re).map_err(|e| err(format!("{key}.regex"), e.to_string()))?,
        ),
        (None, None, Some(env)) => Matcher::Environment(env.clone()),
        _ => return Err(err(key, "give exactly one of prefix, regex or environment")),
    };
    Ok(Route { matcher, pool: file.pool.clone() })
}

fn pool_config(name: &str, file: &FilePool) -> Result<PoolConfig, LbConfigError> {
    let key = |k: &str| format!("pools.{name}.{k}");
    if file.members.is_empty() {
        return Err(err(key("members"), "a pool needs at least one member"));
    }
    for (i, m) in file.members.iter().enumerate() {
        Upstream::new(&m.url, UpstreamSettings::default())
            .map_err(|e| err(key(&format!("members[{i}].url")), e.to_string()))?;
        if m.max_in_flight == Some(0) {
            return Err(err(key(&format!("members[{i}].max_in_flight")), "must be at least 1"));
        }
    }
    let defaults = PoolSettings::default();
    let strategy = match &file.balance {
        Some(text) => text.parse().map_err(|e: String| err(key("balance"), e))?,
        None => defaults.strategy,
    };
    let (check, health) = health_settings(&key("health"), file.health.as_ref())?;
    let queue_timeout =
        duration(&key("queue.timeout"), &file.queue.timeout, defaults.queue_timeout)?;
    let retry_after = match &file.retry_after {
        None => defaults.retry_after,
        Some(range) => {
            let min = duration(&key("retry_after.min"), &Some(range.min.clone()), Duration::ZERO)?
                .as_secs();
            let max = duration(&key("retry_after.max"), &Some(range.max.clone()), Duration::ZERO)?
                .as_secs();
            if min == 0 || max < min {
                return Err(err(key("retry_after"), "needs 1s <= min <= max"));
            }
            (min, max)
        }
    };
    let settings = PoolSettings {
        strategy,
        check,
        health,
        eject_on_5xx: file.eject_on_5xx,
        queue_max: file.queue.max.unwrap_or(defaults.queue_max),
        queue_timeout,
        retry_after,
    };
    Ok(PoolConfig { name: name.to_owned(), settings, members: file.members.clone() })
}

fn health_settings(
    key: &str,
    file: Option<&FileHealth>,
) -> Result<(Option<ActiveCheck>, HealthPolicy), LbConfigError> {
    let default_check = PoolSettings::default().check;
    let policy = HealthPolicy::default();
    let check = match file {
        None | Some(FileHealth::Switch(true)) => return Ok((default_check, policy)),
        Some(FileHealth::Switch(false)) => return Ok((None, policy)),
        Some(FileHealth::Check(check)) => check,
    };
    let base = default_check.unwrap_or(ActiveCheck {
        path: String::new(),
        expect: String::new(),
        interval: Duration::ZERO,
        timeout: Duration::ZERO,
    });
    let path = check.path.clone().unwrap_or(base.path);
    if !path.starts_with('/') {
        return Err(err(format!("{key}.path"), "must start with '/'"));
    }
    let active = ActiveCheck {
        path,
        expect: check.expect.clone().unwrap_or(base.expect),
        interval: duration(&format!("{key}.interval"), &check.interval, base.interval)?,
        timeout: duration(&format!("{key}.timeout"), &check.timeout, base.timeout)?,
    };
    let policy = HealthPolicy {
        rise: check.rise.unwrap_or(policy.rise).max(1),
        fall: check.fall.unwrap_or(policy.fall).max(1),
        ..policy
    };
    Ok((Some(active), policy))
}

impl LbConfig {
    /// Builds the pools with their connection settings.
    pub fn build_pools(&self) -> Vec<Pool> {
        self.pools
            .iter()
            .map(|p| {
                let members = p
                    .members
                    .iter()
                    .filter_map(|m| {
                        let upstream = Upstream::new(&m.url, self.upstream.clone()).ok()?;
                        Some((
                            upstream,
                            MemberSpec { standby: m.standby, max_in_flight: m.max_in_flight },
                        ))
                    })
                    .collect();
                Pool::new(p.name.clone(), p.settings.clone(), members)
            })
            .collect()
    }
}
