//! The CA's state in PostgreSQL, so that any number of CA nodes on any hosts sign at once,
//! sharing nothing but the database.
//!
//! What is where: each node's `cadir` holds only `ca_crt.pem` and `ca_key.pem` (the key never
//! enters the database); requests, certificates, the inventory, revocations, every CRL and the
//! audit trail live in the database ([`schema`], `v1.sql`).
//!
//! How it stays right with several active nodes and a database that fails over:
//! - serials are random (126 bits, [`pki::Serial::from_random`]) under the table's primary
//!   key: no counter to share, nothing to reuse when a failover loses the last commits; a
//!   collision makes the service sign again with another;
//! - a signing is one transaction (the certificate, the current-certificate pointer, the
//!   request's removal), committed before the certificate is returned;
//! - a CRL change is one transaction under an advisory lock (one writer at a time, no leader
//!   to elect), numbered above the last and at least the time in milliseconds; every node
//!   serves the newest row, read through on each request, so a revocation made on one node is
//!   in the CRL every node serves as soon as the revoking call returns, with `Last-Modified`
//!   from the CRL's own `thisUpdate`;
//! - while the database is unreachable, writes fail with [`StoreError::Unavailable`] (HTTP
//!   503 + `Retry-After`), and the CA certificate, the last CRL and the certificates this node
//!   has seen are served from memory.
//!
//! The store's methods block (the [`CaStore`] contract); they run the database's async client
//! on a small runtime of their own, so they must be called from blocking threads, never from
//! inside an async task.

mod connect;
mod ops;
mod schema;
mod sql;
mod transfer;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use deadpool_postgres::{Object, Pool};
use time::OffsetDateTime;

pub use connect::{check_url, redact, DbSettings};

use crate::store::{CaStore, Stamped, StoreError};

/// The advisory lock every CRL change takes ("crl" in ASCII).
const CRL_LOCK: i64 = 0x0063_726c;
/// Most certificates a node keeps in memory to serve while the database is away.
const CERT_CACHE: usize = 100_000;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        connect::classify(&e)
    }
}

/// A CA store in PostgreSQL.
pub struct PgStore {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    settings: DbSettings,
    cadir: PathBuf,
    /// The CRLs of the CAs above this one (PEM), served after its own.
    chain_rest: Vec<u8>,
    crl: Mutex<Option<CachedCrl>>,
    certs: Mutex<HashMap<String, Stamped>>,
}

/// The newest CRL this node has served.
#[derive(Clone)]
struct CachedCrl {
    number: i64,
    chain: Stamped,
}

impl PgStore {
    /// Opens the database of the CA whose certificate and key are in `cadir`: creates or
    /// migrates the schema, and checks that the database holds this CA.
    pub fn open(settings: &DbSettings, cadir: &Path) -> Result<Self, StoreError> {
        Self::attach(settings, cadir, true)
    }

    /// Checks, without changing anything (no migration), that the database is reachable and
    /// holds the CA of `cadir` (`crossbar check`).
    pub fn inspect(settings: &DbSettings, cadir: &Path) -> Result<(), StoreError> {
        Self::attach(settings, cadir, false).map(drop)
    }

    fn attach(settings: &DbSettings, cadir: &Path, migrate: bool) -> Result<Self, StoreError> {
        let mut store = Self::connect(settings, cadir)?;
        let ca_der = first_cert(&store.ca_bundle()?.bytes, cadir)?;
        let (meta, rest) = store.run(async |client| {
            if migrate {
                schema::migrate(client).await?;
            } else if !schema::exists(client).await? {
                return Ok((None, None));
            }
            let mut values = [None, None];
            for (slot, key) in values.iter_mut().zip(["ca_cert", "crl_chain_rest"]) {
                let row =
                    client.query_opt("SELECT value FROM ca_meta WHERE key = $1", &[&key]).await?;
                *slot = row.map(|r| r.get::<_, Vec<u8>>(0));
            }
            let [meta, rest] = values;
            Ok((meta, rest))
        })?;
        match meta {
            None => {
                return Err(StoreError::Database(format!(
                    "{} holds no CA: make one with `crossbar ca setup --database`, or import one with `crossbar ca import --database`",
                    redact(&settings.url)
                )))
            }
            Some(der) if der != ca_der => {
                return Err(StoreError::Database(format!(
                    "{} holds another CA than {}/ca_crt.pem",
                    redact(&settings.url),
                    cadir.display()
                )))
            }
            Some(_) => {}
        }
        store.chain_rest = rest.unwrap_or_default();
        // The CRL in memory from the start, so that this node serves it through an outage
        // even if no one asked it for the CRL before.
        store.crl_chain()?;
        Ok(store)
    }

    fn connect(settings: &DbSettings, cadir: &Path) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ca-db")
            .enable_all()
            .build()
            .map_err(StoreError::io("start the database runtime", cadir))?;
        let pool = {
            let _entered = runtime.enter();
            connect::pool(settings)?
        };
        Ok(Self {
            runtime: Some(runtime),
            pool,
            settings: settings.clone(),
            cadir: cadir.to_owned(),
            chain_rest: Vec::new(),
            crl: Mutex::new(None),
            certs: Mutex::new(HashMap::new()),
        })
    }

    /// The database, for messages.
    pub fn describe(&self) -> String {
        redact(&self.settings.url)
    }

    /// Runs `op` with a pooled connection, within the timeout.
    /// Runs `op` with a pooled connection. While the database is unavailable it tries again,
    /// for up to `outage_wait` (a failover usually ends within it, and Puppet 7 agents cannot
    /// retry a 503 themselves), then gives up with [`StoreError::Unavailable`].
    fn run<T>(
        &self,
        mut op: impl AsyncFnMut(&mut Object) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + self.settings.outage_wait;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.run_once(&mut op) {
                Err(StoreError::Unavailable(why)) if Instant::now() + pause < deadline => {
                    tracing::debug!(%why, ?pause, "database unavailable; trying again");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// One attempt at `op`, within the timeout: for reads that have a copy in memory to fall
    /// back on.
    ///
    /// A connection goes back to the pool only after an operation that finished or failed
    /// cleanly; one that timed out, or failed because the database is unavailable, may be
    /// hung or inside a transaction, and is dropped (so the pool checks nothing on reuse).
    fn run_once<T>(
        &self,
        op: &mut impl AsyncFnMut(&mut Object) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Unavailable("the store is closing".into()));
        };
        let timeout = self.settings.timeout;
        runtime.block_on(async {
            let started = tokio::time::Instant::now();
            let got = tokio::time::timeout(timeout, self.pool.get()).await;
            let mut client = match got {
                Ok(got) => got.map_err(connect::pool_error)?,
                Err(_) => return Err(unavailable(timeout)),
            };
            let left = timeout.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, op(&mut client)).await {
                Ok(Err(StoreError::Unavailable(why))) => {
                    drop(Object::take(client));
                    Err(StoreError::Unavailable(why))
                }
                Ok(done) => done,
                Err(_) => {
                    drop(Object::take(client));
                    Err(unavailable(timeout))
                }
            }
        })
    }

    fn remember(&self, name: &str, stamped: Stamped) {
        if let Ok(mut certs) = self.certs.lock() {
            if certs.len() >= CERT_CACHE {
                certs.clear();
            }
            certs.insert(name.to_owned(), stamped);
        }
    }

    fn cached(&self, name: &str) -> Option<Stamped> {
        self.certs.lock().ok()?.get(name).cloned()
    }

    fn forget(&self, name: &str) {
        if let Ok(mut certs) = self.certs.lock() {
            certs.remove(name);
        }
    }

    fn file(&self, name: &str) -> Result<Stamped, StoreError> {
        let path = self.cadir.join(name);
        let bytes = std::fs::read(&path).map_err(StoreError::io("read", &path))?;
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(StoreError::io("stat", &path))?;
        Ok(Stamped::new(bytes, modified))
    }

    /// The CRL chain: the newest CA CRL (PEM) and the CRLs above it, the same bytes on every
    /// node; dated by the CRL's `thisUpdate` and tagged by its number, so that conditional
    /// requests get the same answer whichever node they reach.
    fn chain(&self, number: i64, der: &[u8], this_update: OffsetDateTime) -> Stamped {
        let mut bytes = pki::pemfile::encode("X509 CRL", der).into_bytes();
        bytes.extend_from_slice(&self.chain_rest);
        Stamped { bytes, modified: SystemTime::from(this_update), etag: format!("crl-{number}") }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // A store may be dropped inside an async task (a configuration reload): a runtime may
        // not block there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn unavailable(timeout: Duration) -> StoreError {
    StoreError::Unavailable(format!("no answer from the database within {timeout:?}"))
}

fn first_cert(bundle: &[u8], cadir: &Path) -> Result<Vec<u8>, StoreError> {
    pki::pemfile::blocks(bundle, "CERTIFICATE")
        .ok()
        .and_then(|certs| certs.into_iter().next())
        .ok_or_else(|| StoreError::Corrupt {
            path: cadir.join("ca_crt.pem"),
            what: "no certificate".into(),
        })
}
