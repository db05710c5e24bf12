//! Reaching PostgreSQL: the settings, a bounded pool of connections (one that failed or timed
//! out is dropped, so that after a failover new ones find the new primary), TLS when the URL
//! asks for it, and which errors mean "unavailable now".

use std::{path::PathBuf, str::FromStr, sync::Arc, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// How a CA node reaches its database (`[ca] database` and its companions).
#[derive(Clone)]
pub struct DbSettings {
    /// A libpq-style URL: `postgresql://user:pass@host1:5432,host2:5432/crossbar?target_session_attrs=read-write&sslmode=require`.
    pub url: String,
    /// Most connections this node holds.
    pub pool_size: usize,
    /// Connecting, waiting for a pooled connection, and each operation, at most this long.
    pub timeout: Duration,
    /// How long an operation keeps trying while the database is unavailable.
    pub outage_wait: Duration,
    /// The CA bundle that signed the database's TLS certificate (when `sslmode` asks for TLS);
    /// the system's bundle when unset.
    pub tls_roots: Option<PathBuf>,
    /// A file whose first line is the password (instead of one in the URL).
    pub password_file: Option<PathBuf>,
    /// This node's name in the audit trail and on the rows it writes.
    pub node: String,
}

impl std::fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSettings")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("outage_wait", &self.outage_wait)
            .field("tls_roots", &self.tls_roots)
            .field("password_file", &self.password_file)
            .field("node", &self.node)
            .finish()
    }
}

/// The URL without its password, for logs and messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.split_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(name, _)| name);
            format!("{scheme}://{user}:…@{host}")
        }
        None => url.to_owned(),
    }
}

/// Checks that `url` is a PostgreSQL URL tokio-postgres reads.
pub fn check_url(url: &str) -> Result<(), String> {
    tokio_postgres::Config::from_str(url).map(drop).map_err(|e| e.to_string())
}

/// The pool for `settings` (no connection is made yet).
pub(super) fn pool(settings: &DbSettings) -> Result<Pool, StoreError> {
    let mut config = tokio_postgres::Config::from_str(&settings.url)
        .map_err(|e| StoreError::Database(format!("{}: {e}", redact(&settings.url))))?;
    if let Some(path) = &settings.password_file {
        config.password(read_password(path)?);
    }
    if config.get_connect_timeout().is_none() {
        // Per host: a dead first host must leave time for the next within one operation.
        let hosts = u32::try_from(config.get_hosts().len().max(1)).unwrap_or(u32::MAX);
        config.connect_timeout((settings.timeout / (hosts + 1)).max(Duration::from_millis(100)));
    }
    if config.get_application_name().is_none() {
        config.application_name(format!("crossbar {}", settings.node));
    }
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(settings)?);
    let manager = Manager::from_config(
        config,
        tls,
        // Fast: reused as they are. A connection that may be hung or inside a transaction is
        // never returned to the pool (`PgStore::run_once`), so no check per use is needed.
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .wait_timeout(Some(settings.timeout))
        .create_timeout(Some(settings.timeout))
        .recycle_timeout(Some(settings.timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Database(e.to_string()))
}

/// The first line of `path`, without its line ending; an empty one is refused.
fn read_password(path: &std::path::Path) -> Result<String, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        StoreError::Database(format!("database_password_file {}: {e}", path.display()))
    })?;
    let line = text.lines().next().unwrap_or_default().trim_end_matches('\r');
    if line.is_empty() {
        return Err(StoreError::Database(format!(
            "database_password_file {}: empty",
            path.display()
        )));
    }
    Ok(line.to_owned())
}

fn tls_config(settings: &DbSettings) -> Result<rustls::ClientConfig, StoreError> {
    let path =
        settings.tls_roots.clone().unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    let mut roots = rustls::RootCertStore::empty();
    // A missing system bundle only matters when the URL asks for TLS; connecting says so then.
    if let Ok(pem) = std::fs::read(&path) {
        for der in pki::pemfile::blocks(&pem, "CERTIFICATE").unwrap_or_default() {
            let _ = roots.add(der.into());
        }
    } else if settings.tls_roots.is_some() {
        return Err(StoreError::Database(format!(
            "database_ca {}: cannot read it",
            path.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Database(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// What a failed database operation means: unavailable now (the database is down, failing
/// over, read-only after a failover, or slow), a taken serial, or a refusal.
pub(super) fn classify(error: &tokio_postgres::Error) -> StoreError {
    match error.code() {
        None => StoreError::Unavailable(describe(error)),
        Some(code) if is_transient(code) => StoreError::Unavailable(describe(error)),
        Some(_) => StoreError::Database(describe(error)),
    }
}

/// What the server said (its message, detail and code), or the client's error with its cause:
/// tokio-postgres's own text is only "db error".
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
        return format!("{}{detail} [SQLSTATE {}]", db.message(), db.code().code());
    }
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

fn is_transient(code: &SqlState) -> bool {
    let class = &code.code()[..2];
    // 08: connection exceptions; 57: operator intervention (shutdown, cannot connect now);
    // 53: insufficient resources; 25006: read-only transaction (a replica, after a failover);
    // 40: transaction rollback (serialization failure, deadlock).
    matches!(class, "08" | "57" | "53" | "40") || *code == SqlState::READ_ONLY_SQL_TRANSACTION
}

/// The pool's own failures (no connection within the timeout, none could be made).
pub(super) fn pool_error(error: deadpool_postgres::PoolError) -> StoreError {
    match error {
        deadpool_postgres::PoolError::Backend(e) => classify(&e),
        other => StoreError::Unavailable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgresql://ca:s3cret@db1,db2/crossbar"),
            "postgresql://ca:…@db1,db2/crossbar"
        );
        assert_eq!(redact("postgresql://db1/crossbar"), "postgresql://db1/crossbar");
        assert!(check_url(
            "postgresql://ca@db1:5432,db2:5433/crossbar?target_session_attrs=read-write"
        )
        .is_ok());
        assert!(check_url("postgresql://ca@db1/crossbar?target_session_attrs=bogus").is_err());
    }
}
