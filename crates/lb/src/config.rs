//! The `[lb]` section: raw serde form, then the checked settings.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use thiserror::Error;

use crate::{
    pool::{Member, Pool},
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
    #[serde(default)]
    pub crl: Option<PathBuf>,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePool {
    pub members: Vec<FileMember>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMember {
    pub url: String,
    #[serde(default)]
    pub standby: bool,
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
    pub drain: Option<String>,
}

/// The checked `[lb]` settings.
#[derive(Debug, Clone)]
pub struct LbConfig {
    pub listen: SocketAddr,
    pub tls: TlsFiles,
    pub tls_reload_interval: Duration,
    pub routes: RouteTable,
    pub pools: Vec<PoolConfig>,
    pub upstream: UpstreamSettings,
    pub serve: ServeSettings,
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: String,
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
            if pool.members.is_empty() {
                return Err(err(
                    format!("pools.{name}.members"),
                    "a pool needs at least one member",
                ));
            }
            for (i, m) in pool.members.iter().enumerate() {
                Upstream::new(&m.url, UpstreamSettings::default())
                    .map_err(|e| err(format!("pools.{name}.members[{i}].url"), e.to_string()))?;
            }
            pools.push(PoolConfig { name: name.clone(), members: pool.members.clone() });
        }
        let t = &file.timeouts;
        let upstream_defaults = UpstreamSettings::default();
        let serve_defaults = ServeSettings::default();
        Ok(Self {
            listen: file.listen,
            tls: TlsFiles {
                cert: file.cert,
                key: file.key,
                client_ca: file.client_ca,
                crl: file.crl,
            },
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
                        Upstream::new(&m.url, self.upstream.clone())
                            .ok()
                            .map(|u| Member::new(u, m.standby))
                    })
                    .collect();
                Pool::new(p.name.clone(), members)
            })
            .collect()
    }
}
