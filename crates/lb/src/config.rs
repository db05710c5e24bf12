//! The `[lb]` section: the file's form ([`FileLbConfig`]), the checks that turn it into the
//! settings the LB runs with ([`LbConfig`]), and every settings type the other modules read.
//! Nothing here does I/O; reading the files a config names is [`crate::Lb::build`]'s job.

mod file;
mod range;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use thiserror::Error;

pub use file::FileLbConfig;
use file::{FileCheck, FileHealth, FileLimits, FilePool, FileRoute, FileTimeouts, OneOf};
use range::Range;

use crate::{
    balance::Strategy,
    route::{Matcher, Route, RouteTable, CA_POOL},
};

/// The checked `[lb]` settings.
#[derive(Debug, Clone)]
pub struct LbConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) admin_listen: Option<SocketAddr>,
    /// Who may act on the admin listener (none: nobody).
    pub(crate) admin_tokens: Vec<crate::admin::AdminToken>,
    /// The other LBs' admin listeners (`host:port`), shown on the admin page.
    pub(crate) admin_peers: Vec<String>,
    pub(crate) tls: TlsFiles,
    pub(crate) tls_reload_interval: Duration,
    /// Pull the CRL from this pool every `refresh` (instead of a file).
    pub(crate) crl_pull: Option<CrlPull>,
    pub(crate) routes: RouteTable,
    pub(crate) pools: Vec<PoolConfig>,
    pub(crate) upstream: UpstreamSettings,
    pub(crate) serve: ServeSettings,
    pub(crate) requests: RequestLimits,
}

/// A `[lb]` value that cannot be used; the text names the key.
#[derive(Debug, Clone, Error)]
#[error("[lb] {key}: {reason}")]
pub struct LbConfigError {
    pub key: String,
    pub reason: String,
}

pub(crate) fn err(key: impl Into<String>, reason: impl Into<String>) -> LbConfigError {
    LbConfigError { key: key.into(), reason: reason.into() }
}

/// Where the TLS material comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) client_ca: PathBuf,
    /// A CRL file (PEM, possibly a chain), or none: then the CRLs come from elsewhere.
    pub(crate) crl: Option<PathBuf>,
}

/// `crl = { pool = "ca", refresh = "30s", cache = "/var/lib/crossbar/crl.pem" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CrlPull {
    pub(crate) pool: String,
    pub(crate) refresh: Duration,
    /// Where the last good CRL is kept, so a restart has one even while the CA is down.
    pub(crate) cache: Option<PathBuf>,
}

/// Limits of the listener and of one client connection.
#[derive(Debug, Clone)]
pub(crate) struct ServeSettings {
    pub(crate) handshake_timeout: Duration,
    pub(crate) header_read_timeout: Duration,
    /// How long a client connection stays idle in hyper before it is parked without hyper's
    /// buffers (see [`crate::idle`]); zero parks it as soon as it is idle.
    pub(crate) idle_park: Duration,
    pub(crate) max_connections: usize,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub(crate) drain_grace: Duration,
    /// Largest request head (request line and headers), in bytes: 431 beyond.
    pub(crate) max_head_bytes: usize,
    /// Most header fields in a request head: 431 beyond.
    pub(crate) max_headers: usize,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(60),
            idle_park: Duration::from_secs(1),
            max_connections: 50_000,
            drain_grace: Duration::from_secs(30),
            max_head_bytes: 16 * 1024,
            max_headers: 100,
        }
    }
}

/// How slowly a client may send a request body before the LB gives up on it (408).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestLimits {
    /// Longest pause between two pieces of a body.
    pub(crate) body_idle: Duration,
    /// Bytes per second a body must average once `body_idle` has passed since it started (so a
    /// trickle cannot hold a backend slot for long); zero turns the check off.
    pub(crate) body_min_rate: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self { body_idle: Duration::from_secs(20), body_min_rate: 500 }
    }
}

/// Timeouts and pool sizes for the connections to one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamSettings {
    pub(crate) connect_timeout: Duration,
    /// From the request's last byte written to the response head. puppetserver compiles can
    /// take minutes; agents wait up to `http_read_timeout` (10 min).
    pub(crate) response_timeout: Duration,
    /// How long an unused connection is kept (below the backend's own idle timeout).
    pub(crate) idle_timeout: Duration,
    /// Idle connections kept per member by each worker thread.
    pub(crate) max_idle: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(20),
            max_idle: 64,
        }
    }
}

/// A pool as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolConfig {
    pub(crate) name: String,
    pub(crate) settings: PoolSettings,
    pub(crate) members: Vec<MemberConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberConfig {
    pub(crate) url: String,
    pub(crate) standby: bool,
    pub(crate) max_in_flight: Option<usize>,
}

/// How a pool balances, checks, queues and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolSettings {
    pub(crate) strategy: Strategy,
    /// Active check (`GET path`, expecting 200 and `expect` in the body); `None` disables it.
    pub(crate) check: Option<ActiveCheck>,
    pub(crate) health: HealthPolicy,
    /// Take a member out on a 5xx answer, not only on connection failures.
    pub(crate) eject_on_5xx: bool,
    pub(crate) queue_max: usize,
    pub(crate) queue_timeout: Duration,
    /// `Retry-After` for shed requests is drawn from this range (seconds).
    pub(crate) retry_after: (u64, u64),
    /// Largest request body the LB forwards to this pool (413 beyond); `None` is unlimited.
    pub(crate) max_body: Option<u64>,
    /// A secret sent to every member in `X-Crossbar-Proxy-Secret`, which crossbar's CA asks
    /// for before it believes `X-Client-*` headers.
    pub(crate) proxy_secret: Option<Secret>,
}

/// A shared secret; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActiveCheck {
    pub(crate) path: String,
    pub(crate) expect: String,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

/// When a member leaves and rejoins rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthPolicy {
    /// Consecutive good probes that bring an unhealthy member back.
    pub(crate) rise: u32,
    /// Consecutive bad probes that take a healthy member out.
    pub(crate) fall: u32,
    /// First re-probe delay after a passive ejection; doubles up to `max_backoff`.
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            rise: 2,
            fall: 2,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            check: Some(ActiveCheck {
                path: "/status/v1/simple".into(),
                expect: "running".into(),
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(2),
            }),
            health: HealthPolicy::default(),
            eject_on_5xx: false,
            queue_max: 1000,
            queue_timeout: Duration::from_secs(30),
            retry_after: (5, 15),
            max_body: None,
            proxy_secret: None,
        }
    }
}

// The ranges every setting is checked against: zero or huge values are refused with the key
// named, never left to panic a timer or a buffer at run time.
const RELOAD_INTERVAL: Range<Duration> = Range::new(ms(100), hours(1));
const CONNECT: Range<Duration> = Range::new(ms(10), mins(5));
const RESPONSE: Range<Duration> = Range::new(secs(1), hours(24));
const BACKEND_IDLE: Range<Duration> = Range::new(ms(100), hours(1));
const HANDSHAKE: Range<Duration> = Range::new(ms(100), mins(10));
const HEADER_READ: Range<Duration> = Range::new(ms(100), hours(1));
const IDLE_PARK: Range<Duration> = Range::new(Duration::ZERO, hours(1));
const DRAIN: Range<Duration> = Range::new(Duration::ZERO, hours(1));
const BODY_IDLE: Range<Duration> = Range::new(ms(100), hours(1));
const CRL_REFRESH: Range<Duration> = Range::new(secs(1), hours(24));
const CHECK_INTERVAL: Range<Duration> = Range::new(ms(50), hours(1));
const CHECK_TIMEOUT: Range<Duration> = Range::new(ms(10), mins(10));
const QUEUE_TIMEOUT: Range<Duration> = Range::new(Duration::ZERO, hours(1));
const RETRY_AFTER: Range<Duration> = Range::new(secs(1), hours(1));
const MAX_CONNECTIONS: Range<usize> = Range::new(1, 1_000_000);
const MAX_IN_FLIGHT: Range<usize> = Range::new(1, 100_000);
const QUEUE_MAX: Range<usize> = Range::new(0, 1_000_000);
const RISE_FALL: Range<u32> = Range::new(1, 100);
/// hyper's read buffer cannot be smaller than 8 KiB, but the head limit can.
const HEAD_BYTES: Range<u64> = Range::new(1024, 1024 * 1024);
const HEADERS: Range<usize> = Range::new(8, 1000);
const BODY_MIN_RATE: Range<u64> = Range::new(0, 1 << 30);
const MAX_BODY: Range<u64> = Range::new(1, 1 << 40);

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
const fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}
const fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

fn duration(
    key: &str,
    value: Option<&str>,
    default: Duration,
    range: Range<Duration>,
) -> Result<Duration, LbConfigError> {
    let Some(text) = value else { return Ok(default) };
    let parsed = pki::timefmt::parse_duration(text).map_err(|e| err(key, e.to_string()))?;
    range.check(key, parsed)
}

impl TryFrom<FileLbConfig> for LbConfig {
    type Error = LbConfigError;

    fn try_from(file: FileLbConfig) -> Result<Self, Self::Error> {
        let routes = file
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| route(i, r, &file))
            .collect::<Result<Vec<_>, _>>()?;
        let pools = file
            .pools
            .iter()
            .map(|(name, pool)| pool_config(name, pool))
            .collect::<Result<Vec<_>, _>>()?;
        let (crl_file, crl_pull) = crl(file.crl.as_ref(), &file)?;
        Ok(Self {
            listen: file.listen,
            admin_listen: file.admin_listen,
            admin_peers: file
                .admin_peers
                .iter()
                .map(|url| {
                    crate::upstream::Endpoint::parse(url)
                        .map(|e| e.authority)
                        .map_err(|e| err("admin_peers", e.to_string()))
                })
                .collect::<Result<_, _>>()?,
            admin_tokens: match &file.admin_token_file {
                Some(path) => crate::admin::read_tokens(path)?,
                None => Vec::new(),
            },
            tls: TlsFiles {
                cert: file.cert,
                key: file.key,
                client_ca: file.client_ca,
                crl: crl_file,
            },
            crl_pull,
            tls_reload_interval: duration(
                "tls_reload_interval",
                file.tls_reload_interval.as_deref(),
                Duration::from_secs(2),
                RELOAD_INTERVAL,
            )?,
            routes: RouteTable::with_defaults(routes),
            pools,
            upstream: upstream(&file.timeouts)?,
            serve: serve(&file.timeouts, &file.limits, file.max_connections)?,
            requests: requests(&file.timeouts, &file.limits)?,
        })
    }
}

fn crl(
    value: Option<&OneOf<file::FileCrlTable>>,
    file: &FileLbConfig,
) -> Result<(Option<PathBuf>, Option<CrlPull>), LbConfigError> {
    let table = match value {
        None => return Ok((None, None)),
        Some(OneOf::Str(path)) => return Ok((Some(PathBuf::from(path)), None)),
        Some(OneOf::Bool(_)) => {
            return Err(err("crl", "a path, { file = … } or { pool = …, refresh = … }"))
        }
        Some(OneOf::Table(table)) => table,
    };
    match (&table.file, &table.pool) {
        (Some(path), None) if table.refresh.is_none() && table.cache.is_none() => {
            Ok((Some(path.clone()), None))
        }
        (None, Some(pool)) => {
            if !file.pools.contains_key(pool) && pool != CA_POOL {
                return Err(err("crl.pool", format!("no pool named {pool:?}")));
            }
            let refresh = duration(
                "crl.refresh",
                table.refresh.as_deref(),
                Duration::from_secs(30),
                CRL_REFRESH,
            )?;
            Ok((None, Some(CrlPull { pool: pool.clone(), refresh, cache: table.cache.clone() })))
        }
        _ => Err(err("crl", "give either file = … or pool = … (with refresh and cache)")),
    }
}

fn upstream(t: &FileTimeouts) -> Result<UpstreamSettings, LbConfigError> {
    let d = UpstreamSettings::default();
    Ok(UpstreamSettings {
        connect_timeout: duration(
            "timeouts.connect",
            t.connect.as_deref(),
            d.connect_timeout,
            CONNECT,
        )?,
        response_timeout: duration(
            "timeouts.response",
            t.response.as_deref(),
            d.response_timeout,
            RESPONSE,
        )?,
        idle_timeout: duration(
            "timeouts.backend_idle",
            t.backend_idle.as_deref(),
            d.idle_timeout,
            BACKEND_IDLE,
        )?,
        max_idle: d.max_idle,
    })
}

fn serve(
    t: &FileTimeouts,
    limits: &FileLimits,
    max_connections: Option<usize>,
) -> Result<ServeSettings, LbConfigError> {
    let d = ServeSettings::default();
    let head_bytes = match &limits.header_bytes {
        Some(value) => {
            HEAD_BYTES.check("limits.header_bytes", value.bytes("limits.header_bytes")?)?
        }
        None => d.max_head_bytes as u64,
    };
    Ok(ServeSettings {
        handshake_timeout: duration(
            "timeouts.handshake",
            t.handshake.as_deref(),
            d.handshake_timeout,
            HANDSHAKE,
        )?,
        header_read_timeout: duration(
            "timeouts.header_read",
            t.header_read.as_deref(),
            d.header_read_timeout,
            HEADER_READ,
        )?,
        idle_park: duration("timeouts.idle_park", t.idle_park.as_deref(), d.idle_park, IDLE_PARK)?,
        max_connections: MAX_CONNECTIONS
            .check("max_connections", max_connections.unwrap_or(d.max_connections))?,
        drain_grace: duration("timeouts.drain", t.drain.as_deref(), d.drain_grace, DRAIN)?,
        max_head_bytes: usize::try_from(head_bytes).unwrap_or(d.max_head_bytes),
        max_headers: HEADERS.check("limits.headers", limits.headers.unwrap_or(d.max_headers))?,
    })
}

fn requests(t: &FileTimeouts, limits: &FileLimits) -> Result<RequestLimits, LbConfigError> {
    let d = RequestLimits::default();
    let body_min_rate = match &limits.body_min_rate {
        Some(value) => value.bytes("limits.body_min_rate")?,
        None => d.body_min_rate,
    };
    Ok(RequestLimits {
        body_idle: duration("timeouts.body_idle", t.body_idle.as_deref(), d.body_idle, BODY_IDLE)?,
        body_min_rate: BODY_MIN_RATE.check("limits.body_min_rate", body_min_rate)?,
    })
}

fn route(index: usize, r: &FileRoute, file: &FileLbConfig) -> Result<Route, LbConfigError> {
    let key = format!("routes[{index}]");
    if !file.pools.contains_key(&r.pool) {
        return Err(err(format!("{key}.pool"), format!("no pool named {:?}", r.pool)));
    }
    let matcher = match (&r.prefix, &r.regex, &r.environment) {
        (Some(prefix), None, None) if prefix.starts_with('/') => Matcher::Prefix(prefix.clone()),
        (Some(_), None, None) => return Err(err(format!("{key}.prefix"), "must start with '/'")),
        (None, Some(re), None) => Matcher::Regex(
            regex::RegexBuilder::new(re)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| err(format!("{key}.regex"), e.to_string()))?,
        ),
        (None, None, Some(env)) if !env.is_empty() => Matcher::Environment(env.clone()),
        (None, None, Some(_)) => return Err(err(format!("{key}.environment"), "is empty")),
        _ => return Err(err(key, "give exactly one of prefix, regex or environment")),
    };
    Ok(Route { matcher, pool: r.pool.clone() })
}

fn pool_config(name: &str, file: &FilePool) -> Result<PoolConfig, LbConfigError> {
    let key = |k: &str| format!("pools.{name}.{k}");
    if file.members.is_empty() {
        return Err(err(key("members"), "a pool needs at least one member"));
    }
    let mut members = Vec::with_capacity(file.members.len());
    for (i, m) in file.members.iter().enumerate() {
        crate::upstream::Endpoint::parse(&m.url)
            .map_err(|e| err(key(&format!("members[{i}].url")), e.to_string()))?;
        let max_in_flight = m
            .max_in_flight
            .map(|max| MAX_IN_FLIGHT.check(&key(&format!("members[{i}].max_in_flight")), max))
            .transpose()?;
        members.push(MemberConfig { url: m.url.clone(), standby: m.standby, max_in_flight });
    }
    let d = PoolSettings::default();
    let strategy = match &file.balance {
        Some(text) => text.parse().map_err(|e: String| err(key("balance"), e))?,
        None => d.strategy,
    };
    let (check, health) = health_settings(&key("health"), file.health.as_ref())?;
    let retry_after = match &file.retry_after {
        None => d.retry_after,
        Some(range) => {
            let min = duration(&key("retry_after.min"), Some(&range.min), secs(1), RETRY_AFTER)?;
            let max = duration(&key("retry_after.max"), Some(&range.max), secs(1), RETRY_AFTER)?;
            if max < min {
                return Err(err(key("retry_after"), "needs min <= max"));
            }
            (min.as_secs(), max.as_secs())
        }
    };
    let max_body = match &file.max_body {
        Some(value) => Some(MAX_BODY.check(&key("max_body"), value.bytes(&key("max_body"))?)?),
        None => None,
    };
    let proxy_secret = match &file.proxy_secret_file {
        Some(path) => Some(Secret::new(read_secret(&key("proxy_secret_file"), path)?)),
        None => None,
    };
    let settings = PoolSettings {
        strategy,
        check,
        health,
        eject_on_5xx: file.eject_on_5xx,
        queue_max: QUEUE_MAX.check(&key("queue.max"), file.queue.max.unwrap_or(d.queue_max))?,
        queue_timeout: duration(
            &key("queue.timeout"),
            file.queue.timeout.as_deref(),
            d.queue_timeout,
            QUEUE_TIMEOUT,
        )?,
        retry_after,
        max_body,
        proxy_secret,
    };
    Ok(PoolConfig { name: name.to_owned(), settings, members })
}

/// Reads a secret file (see [`pki::secret::parse_secret`]).
pub fn read_secret(key: &str, path: &std::path::Path) -> Result<String, LbConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| err(key, format!("{}: {e}", path.display())))?;
    pki::secret::parse_secret(&text).map_err(|e| err(key, format!("{}: {e}", path.display())))
}

fn health_settings(
    key: &str,
    file: Option<&FileHealth>,
) -> Result<(Option<ActiveCheck>, HealthPolicy), LbConfigError> {
    let default_check = PoolSettings::default().check;
    let policy = HealthPolicy::default();
    let check: &FileCheck = match file {
        None | Some(OneOf::Bool(true)) => return Ok((default_check, policy)),
        Some(OneOf::Bool(false)) => return Ok((None, policy)),
        Some(OneOf::Str(_)) => return Err(err(key, "true, false or a table")),
        Some(OneOf::Table(check)) => check,
    };
    let Some(base) = default_check else { return Ok((None, policy)) };
    let path = check.path.clone().unwrap_or(base.path);
    if !path.starts_with('/') {
        return Err(err(format!("{key}.path"), "must start with '/'"));
    }
    let active = ActiveCheck {
        path,
        expect: check.expect.clone().unwrap_or(base.expect),
        interval: duration(
            &format!("{key}.interval"),
            check.interval.as_deref(),
            base.interval,
            CHECK_INTERVAL,
        )?,
        timeout: duration(
            &format!("{key}.timeout"),
            check.timeout.as_deref(),
            base.timeout,
            CHECK_TIMEOUT,
        )?,
    };
    let policy = HealthPolicy {
        rise: RISE_FALL.check(&format!("{key}.rise"), check.rise.unwrap_or(policy.rise))?,
        fall: RISE_FALL.check(&format!("{key}.fall"), check.fall.unwrap_or(policy.fall))?,
        ..policy
    };
    Ok((Some(active), policy))
}

impl LbConfig {
    /// The address agents connect to.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The admin listener's address, if any.
    pub fn admin_listen(&self) -> Option<SocketAddr> {
        self.admin_listen
    }

    /// Whether a pool by this name is configured.
    pub fn has_pool(&self, name: &str) -> bool {
        self.pools.iter().any(|p| p.name == name)
    }

    /// Makes the CA of this process the `ca` pool when none is configured (one process, one
    /// code path: the LB still reaches it over HTTP), with the secret that CA asks for.
    /// Returns whether it did.
    pub fn add_local_ca_pool(&mut self, url: &str, secret: Secret) -> bool {
        if self.has_pool(CA_POOL) {
            return false;
        }
        let settings = PoolSettings { proxy_secret: Some(secret), ..PoolSettings::default() };
        let member = MemberConfig { url: url.to_owned(), standby: false, max_in_flight: None };
        self.pools.push(PoolConfig { name: CA_POOL.into(), settings, members: vec![member] });
        true
    }

    /// What this configuration means, one line each (for `crossbar check`).
    pub fn describe(&self) -> Vec<String> {
        crate::describe::lines(self)
    }
}

#[cfg(test)]
mod tests;
