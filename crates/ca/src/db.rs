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
mod schema;
mod transfer;

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use deadpool_postgres::{Object, Pool};
use pki::{crl::CrlInfo, Certname, IssuedCert, Serial};
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;

pub use connect::{check_url, redact, DbSettings};

use crate::{
    audit::AuditEvent,
    store::{CaStore, CrlUpdateFailure, CrlUpdateFn, Existing, IssueFrom, Stamped, StoreError},
};

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
    fn run<T>(
        &self,
        op: impl AsyncFnOnce(&mut Object) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.block(async {
            let mut client = self.pool.get().await.map_err(connect::pool_error)?;
            op(&mut client).await
        })
    }

    fn block<T>(&self, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Unavailable("the store is closing".into()));
        };
        let timeout = self.settings.timeout;
        runtime.block_on(async {
            tokio::time::timeout(timeout, work).await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "no answer from the database within {timeout:?}"
                )))
            })
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

fn first_cert(bundle: &[u8], cadir: &Path) -> Result<Vec<u8>, StoreError> {
    pki::pemfile::blocks(bundle, "CERTIFICATE")
        .ok()
        .and_then(|certs| certs.into_iter().next())
        .ok_or_else(|| StoreError::Corrupt {
            path: cadir.join("ca_crt.pem"),
            what: "no certificate".into(),
        })
}

fn name_of(row: &tokio_postgres::Row) -> Result<Certname, StoreError> {
    let text: String = row.get(0);
    Certname::parse(&text)
        .map_err(|e| StoreError::Database(format!("a stored certname {text:?}: {e}")))
}

impl CaStore for PgStore {
    fn ca_bundle(&self) -> Result<Stamped, StoreError> {
        self.file("ca_crt.pem")
    }

    fn crl_chain(&self) -> Result<Stamped, StoreError> {
        let cached = self.crl.lock().ok().and_then(|c| c.clone());
        let known = cached.as_ref().map_or(-1, |c| c.number);
        let newest = self.run(async |client| {
            let row = client
                .query_opt("SELECT number FROM ca_crl ORDER BY number DESC LIMIT 1", &[])
                .await?
                .ok_or_else(|| StoreError::Database("no CRL in the database".into()))?;
            let number: i64 = row.get(0);
            if number == known {
                return Ok(None);
            }
            let row = client
                .query_one("SELECT der, this_update FROM ca_crl WHERE number = $1", &[&number])
                .await?;
            Ok(Some((number, row.get::<_, Vec<u8>>(0), row.get::<_, OffsetDateTime>(1))))
        });
        match (newest, cached) {
            (Ok(None), Some(cached)) => Ok(cached.chain),
            (Ok(Some((number, der, this_update))), _) => {
                let chain = self.chain(number, &der, this_update);
                if let Ok(mut slot) = self.crl.lock() {
                    *slot = Some(CachedCrl { number, chain: chain.clone() });
                }
                Ok(chain)
            }
            (Err(StoreError::Unavailable(why)), Some(cached)) => {
                tracing::debug!(%why, "database unavailable; serving the last CRL this node saw");
                Ok(cached.chain)
            }
            (Err(e), _) => Err(e),
            (Ok(None), None) => Err(StoreError::Database("no CRL in the database".into())),
        }
    }

    fn ca_key_pem(&self) -> Result<String, StoreError> {
        let stamped = self.file("ca_key.pem")?;
        String::from_utf8(stamped.bytes).map_err(|_| StoreError::Corrupt {
            path: self.cadir.join("ca_key.pem"),
            what: "not text".into(),
        })
    }

    fn certificate(&self, name: &Certname) -> Result<Option<Stamped>, StoreError> {
        let found = self.run(async |client| {
            let row = client
                .query_opt(
                    "SELECT c.pem, cur.updated_at FROM ca_current cur JOIN ca_cert c USING (serial) WHERE cur.certname = $1",
                    &[&name.as_str()],
                )
                .await?;
            Ok(row.map(|r| {
                let bytes = r.get::<_, Option<Vec<u8>>>(0).unwrap_or_default();
                Stamped::new(bytes, SystemTime::from(r.get::<_, OffsetDateTime>(1)))
            }))
        });
        match found {
            Ok(Some(stamped)) => {
                self.remember(name.as_str(), stamped.clone());
                Ok(Some(stamped))
            }
            Ok(None) => {
                self.forget(name.as_str());
                Ok(None)
            }
            Err(StoreError::Unavailable(why)) => match self.cached(name.as_str()) {
                Some(stamped) => Ok(Some(stamped)),
                None => Err(StoreError::Unavailable(why)),
            },
            Err(e) => Err(e),
        }
    }

    fn request(&self, name: &Certname) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(async |client| {
            let row = client
                .query_opt("SELECT pem FROM ca_request WHERE certname = $1", &[&name.as_str()])
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn existing(&self, name: &Certname) -> Result<Option<Existing>, StoreError> {
        self.run(async |client| {
            let row = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM ca_current WHERE certname = $1), EXISTS (SELECT 1 FROM ca_request WHERE certname = $1)",
                    &[&name.as_str()],
                )
                .await?;
            Ok(match (row.get(0), row.get(1)) {
                (true, _) => Some(Existing::Certificate),
                (false, true) => Some(Existing::Request),
                (false, false) => None,
            })
        })
    }

    fn certificates(&self) -> Result<Vec<(Certname, Vec<u8>)>, StoreError> {
        self.run(async |client| {
            let rows = client
                .query(
                    "SELECT cur.certname, c.pem FROM ca_current cur JOIN ca_cert c USING (serial) WHERE c.pem IS NOT NULL ORDER BY cur.certname",
                    &[],
                )
                .await?;
            rows.iter().map(|r| Ok((name_of(r)?, r.get(1)))).collect()
        })
    }

    fn requests(&self) -> Result<Vec<(Certname, Vec<u8>)>, StoreError> {
        self.run(async |client| {
            let rows =
                client.query("SELECT certname, pem FROM ca_request ORDER BY certname", &[]).await?;
            rows.iter().map(|r| Ok((name_of(r)?, r.get(1)))).collect()
        })
    }

    fn expired_serials(&self, now: OffsetDateTime) -> Result<HashSet<Vec<u8>>, StoreError> {
        self.run(async |client| {
            let rows =
                client.query("SELECT serial FROM ca_cert WHERE not_after < $1", &[&now]).await?;
            Ok(rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
        })
    }

    fn pending_count(&self) -> Result<usize, StoreError> {
        self.run(async |client| {
            let count: i64 = client.query_one("SELECT count(*) FROM ca_request", &[]).await?.get(0);
            Ok(usize::try_from(count).unwrap_or(usize::MAX))
        })
    }

    fn save_request(&self, name: &Certname, pem: &[u8], overwrite: bool) -> Result<(), StoreError> {
        let node = self.settings.node.as_str();
        self.run(async |client| {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&name.as_str()]).await?;
            if !overwrite {
                let taken = tx.query_opt("SELECT 1 FROM ca_current WHERE certname = $1", &[&name.as_str()]).await?;
                if taken.is_some() {
                    return Err(StoreError::Conflict { name: name.clone(), existing: Existing::Certificate });
                }
            }
            let sql = if overwrite {
                "INSERT INTO ca_request (certname, pem, submitted_by) VALUES ($1, $2, $3) ON CONFLICT (certname) DO UPDATE SET pem = EXCLUDED.pem, submitted_at = now(), submitted_by = EXCLUDED.submitted_by"
            } else {
                "INSERT INTO ca_request (certname, pem, submitted_by) VALUES ($1, $2, $3) ON CONFLICT (certname) DO NOTHING"
            };
            let saved = tx.execute(sql, &[&name.as_str(), &pem, &node]).await?;
            if saved == 0 {
                return Err(StoreError::Conflict { name: name.clone(), existing: Existing::Request });
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn delete_request(&self, name: &Certname) -> Result<bool, StoreError> {
        self.run(async |client| {
            Ok(client
                .execute("DELETE FROM ca_request WHERE certname = $1", &[&name.as_str()])
                .await?
                > 0)
        })
    }

    fn delete_certificate(&self, name: &Certname) -> Result<bool, StoreError> {
        self.forget(name.as_str());
        self.run(async |client| {
            Ok(client
                .execute("DELETE FROM ca_current WHERE certname = $1", &[&name.as_str()])
                .await?
                > 0)
        })
    }

    fn reserve_serial(&self) -> Result<Serial, StoreError> {
        let mut bytes = [0u8; 16];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| StoreError::Database("no randomness for a serial".into()))?;
        Ok(Serial::from_random(bytes))
    }

    fn store_issued(
        &self,
        name: &Certname,
        issued: &IssuedCert,
        from: IssueFrom<'_>,
        overwrite: bool,
    ) -> Result<(), StoreError> {
        let node = self.settings.node.as_str();
        let serial = issued.serial.to_be_bytes();
        let kind = if matches!(from, IssueFrom::Renewal) { "renew" } else { "sign" };
        self.run(async |client| {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&name.as_str()]).await?;
            let has = |table: &'static str| {
                let tx = &tx;
                async move {
                    let sql = format!("SELECT 1 FROM {table} WHERE certname = $1");
                    Ok::<_, StoreError>(tx.query_opt(&sql, &[&name.as_str()]).await?.is_some())
                }
            };
            let conflict = |existing| StoreError::Conflict { name: name.clone(), existing };
            match from {
                IssueFrom::Request(expected) => {
                    let row = tx.query_opt("SELECT pem FROM ca_request WHERE certname = $1 FOR UPDATE", &[&name.as_str()]).await?;
                    if row.map(|r| r.get::<_, Vec<u8>>(0)).as_deref() != Some(expected) {
                        return Err(StoreError::RequestChanged(name.clone()));
                    }
                    if !overwrite && has("ca_current").await? {
                        return Err(conflict(Existing::Certificate));
                    }
                }
                IssueFrom::Fresh if !overwrite => {
                    if has("ca_current").await? {
                        return Err(conflict(Existing::Certificate));
                    }
                    if has("ca_request").await? {
                        return Err(conflict(Existing::Request));
                    }
                }
                IssueFrom::Fresh | IssueFrom::Renewal => {}
            }
            let inserted = tx
                .execute(
                    "INSERT INTO ca_cert (serial, certname, pem, not_before, not_after, issued_by, kind) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[&serial, &name.as_str(), &issued.pem.as_bytes(), &issued.validity.not_before, &issued.validity.not_after, &node, &kind],
                )
                .await;
            if let Err(e) = inserted {
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    return Err(StoreError::SerialTaken(issued.serial));
                }
                return Err(e.into());
            }
            tx.execute(
                "INSERT INTO ca_current (certname, serial) VALUES ($1, $2) ON CONFLICT (certname) DO UPDATE SET serial = EXCLUDED.serial, updated_at = now()",
                &[&name.as_str(), &serial],
            )
            .await?;
            if matches!(from, IssueFrom::Request(_)) {
                tx.execute("DELETE FROM ca_request WHERE certname = $1", &[&name.as_str()]).await?;
            }
            tx.commit().await?;
            Ok(())
        })?;
        self.remember(
            name.as_str(),
            Stamped::new(issued.pem.clone().into_bytes(), SystemTime::now()),
        );
        Ok(())
    }

    fn update_crl(&self, update: &mut CrlUpdateFn<'_>) -> Result<bool, CrlUpdateFailure> {
        let node = self.settings.node.as_str();
        let changed = self.run(async |client| {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CRL_LOCK]).await?;
            let row = tx
                .query_opt("SELECT der FROM ca_crl ORDER BY number DESC LIMIT 1", &[])
                .await?
                .ok_or_else(|| StoreError::Database("no CRL in the database".into()))?;
            let current: Vec<u8> = row.get(0);
            let next = match update(&current) {
                Ok(Some(next)) => next,
                Ok(None) => return Ok(Ok(None)),
                Err(e) => return Ok(Err(e)),
            };
            let info = match CrlInfo::from_der(&next) {
                Ok(info) => info,
                Err(e) => return Ok(Err(e)),
            };
            let number = i64::try_from(info.number)
                .map_err(|_| StoreError::Database(format!("CRL number {} does not fit", info.number)))?;
            let next_update = info.next_update.unwrap_or(info.this_update);
            let entries = i32::try_from(info.revoked.len()).unwrap_or(i32::MAX);
            tx.execute(
                "INSERT INTO ca_crl (number, this_update, next_update, der, entries, built_by) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&number, &info.this_update, &next_update, &next, &entries, &node],
            )
            .await?;
            let serials: Vec<Vec<u8>> = info.revoked.iter().map(|e| e.serial.clone()).collect();
            tx.execute(
                "UPDATE ca_cert SET revoked_at = now() WHERE revoked_at IS NULL AND serial = ANY($1)",
                &[&serials],
            )
            .await?;
            tx.commit().await?;
            Ok(Ok(Some((number, next, info.this_update))))
        })?;
        match changed? {
            None => Ok(false),
            Some((number, der, this_update)) => {
                let chain = self.chain(number, &der, this_update);
                if let Ok(mut slot) = self.crl.lock() {
                    *slot = Some(CachedCrl { number, chain });
                }
                Ok(true)
            }
        }
    }

    fn crl_number_floor(&self, now: OffsetDateTime) -> u64 {
        u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    }

    fn record(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let node = self.settings.node.as_str();
        let actor = event.actor.to_string();
        let certname = event.certname.as_ref().map(Certname::as_str);
        let serial = event.serial.map(Serial::to_be_bytes);
        let detail = event.detail.as_deref();
        self.run(async |client| {
            client
                .execute(
                    "INSERT INTO ca_audit (node, actor, action, certname, serial, detail) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[&node, &actor, &event.action.as_str(), &certname, &serial, &detail],
                )
                .await?;
            Ok(())
        })
    }
}
