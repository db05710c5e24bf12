//! The statements the store runs, each prepared once per pooled connection (deadpool keeps
//! them), and helpers that prepare, then run.

use deadpool_postgres::GenericClient;
use tokio_postgres::{types::ToSql, Row};

use crate::store::StoreError;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) async fn opt(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

pub(super) async fn one(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Row, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_one(&statement, params).await?)
}

pub(super) async fn all(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

/// Runs a statement; how many rows it changed. The raw error, for callers that look at its code.
pub(super) async fn exec_raw(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, tokio_postgres::Error> {
    let statement = c.prepare_cached(sql).await?;
    c.execute(&statement, params).await
}

pub(super) async fn exec(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    Ok(exec_raw(c, sql, params).await?)
}

/// Waits for the name's advisory lock (held until the transaction ends): every write to a
/// name's request or certificate takes it, so a check and the write after it are one step.
pub(super) const LOCK_NAME: &str = "SELECT pg_advisory_xact_lock(hashtext($1))";
/// The same for the CRL (one writer at a time, on any node).
pub(super) const LOCK_CRL: &str = "SELECT pg_advisory_xact_lock($1)";

pub(super) const NEWEST_CRL_NUMBER: &str = "SELECT number FROM ca_crl ORDER BY number DESC LIMIT 1";
pub(super) const CRL_BY_NUMBER: &str = "SELECT der, this_update FROM ca_crl WHERE number = $1";
pub(super) const NEWEST_CRL: &str = "SELECT der FROM ca_crl ORDER BY number DESC LIMIT 1";
pub(super) const INSERT_CRL: &str = "INSERT INTO ca_crl (number, this_update, next_update, der, entries, built_by) VALUES ($1, $2, $3, $4, $5, $6)";
pub(super) const MARK_REVOKED: &str =
    "UPDATE ca_cert SET revoked_at = now() WHERE revoked_at IS NULL AND serial = ANY($1)";

pub(super) const CURRENT_CERT: &str = "SELECT c.pem, cur.updated_at FROM ca_current cur JOIN ca_cert c USING (serial) WHERE cur.certname = $1";
pub(super) const ALL_CURRENT_CERTS: &str = "SELECT cur.certname, c.pem FROM ca_current cur JOIN ca_cert c USING (serial) WHERE c.pem IS NOT NULL ORDER BY cur.certname";
pub(super) const REQUEST: &str = "SELECT pem FROM ca_request WHERE certname = $1";
pub(super) const ALL_REQUESTS: &str = "SELECT certname, pem FROM ca_request ORDER BY certname";
pub(super) const PENDING_COUNT: &str = "SELECT count(*) FROM ca_request";
pub(super) const EXPIRED_SERIALS: &str = "SELECT serial FROM ca_cert WHERE not_after < $1";
/// A CSR's admission: the name's pending request, whether it has a certificate, and the
/// pending requests counted up to $2.
pub(super) const ADMISSION: &str = "SELECT (SELECT pem FROM ca_request WHERE certname = $1), EXISTS (SELECT 1 FROM ca_current WHERE certname = $1), (SELECT count(*) FROM (SELECT 1 FROM ca_request LIMIT $2) s)";
/// What the name holds: its pending request (if any) and whether it has a certificate.
pub(super) const NAME_STATE: &str = "SELECT (SELECT pem FROM ca_request WHERE certname = $1), EXISTS (SELECT 1 FROM ca_current WHERE certname = $1)";

pub(super) const INSERT_REQUEST: &str = "INSERT INTO ca_request (certname, pem, submitted_by) VALUES ($1, $2, $3) ON CONFLICT (certname) DO NOTHING";
pub(super) const UPSERT_REQUEST: &str = "INSERT INTO ca_request (certname, pem, submitted_by) VALUES ($1, $2, $3) ON CONFLICT (certname) DO UPDATE SET pem = EXCLUDED.pem, submitted_at = now(), submitted_by = EXCLUDED.submitted_by";
pub(super) const DELETE_REQUEST: &str = "DELETE FROM ca_request WHERE certname = $1";
pub(super) const DELETE_CURRENT: &str = "DELETE FROM ca_current WHERE certname = $1";
pub(super) const INSERT_CERT: &str = "INSERT INTO ca_cert (serial, certname, pem, not_before, not_after, issued_by, kind) VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(super) const UPSERT_CURRENT: &str = "INSERT INTO ca_current (certname, serial) VALUES ($1, $2) ON CONFLICT (certname) DO UPDATE SET serial = EXCLUDED.serial, updated_at = now()";
pub(super) const RECENT_AUDIT: &str = "SELECT extract(epoch FROM at)::float8, node, actor, action, certname, serial, detail FROM ca_audit ORDER BY id DESC LIMIT $1";
pub(super) const INSERT_AUDIT: &str = "INSERT INTO ca_audit (node, actor, action, certname, serial, detail) VALUES ($1, $2, $3, $4, $5, $6)";
