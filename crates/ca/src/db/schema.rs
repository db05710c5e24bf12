//! The schema, created and migrated by crossbar itself: numbered migrations applied in order,
//! each in its own transaction, under an advisory lock so that two nodes starting at once do
//! not both apply one.

use tokio_postgres::Client;

use crate::store::StoreError;

/// The migrations, in order. Never edit one that shipped; add the next.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("v1.sql"))];

/// The advisory lock key migrations take ("crossbar" in ASCII).
const MIGRATION_LOCK: i64 = 0x6372_6f73_7362_6172;

/// Applies what is missing; returns the versions applied. A database migrated by a newer
/// crossbar is refused (this one would not know its tables).
pub(super) async fn migrate(client: &mut Client) -> Result<Vec<i32>, StoreError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let applied = apply(client).await;
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    let applied = applied?;
    unlocked?;
    Ok(applied)
}

async fn apply(client: &mut Client) -> Result<Vec<i32>, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS crossbar_schema (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let row =
        client.query_one("SELECT coalesce(max(version), 0) FROM crossbar_schema", &[]).await?;
    let current: i32 = row.get(0);
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > known {
        return Err(StoreError::Database(format!(
            "the schema is at version {current}, newer than this crossbar's {known}: upgrade crossbar"
        )));
    }
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO crossbar_schema (version) VALUES ($1)", &[version]).await?;
        tx.commit().await?;
        applied.push(*version);
    }
    Ok(applied)
}

/// Whether crossbar's schema is there at all.
pub(super) async fn exists(client: &Client) -> Result<bool, StoreError> {
    let row = client.query_one("SELECT to_regclass('crossbar_schema') IS NOT NULL", &[]).await?;
    Ok(row.get(0))
}
