//! The store contract on PostgreSQL: each operation is one statement or one transaction.

use std::{collections::HashSet, time::SystemTime};

use pki::{crl::CrlInfo, Certname, IssuedCert, Serial};
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;

use super::{
    sql::{self, all, exec, one, opt},
    CachedCrl, PgStore, CRL_LOCK,
};
use crate::{
    audit::{AuditEvent, AuditRecord},
    store::{
        Admission, CaStore, CrlUpdateFailure, CrlUpdateFn, Existing, IssueFrom, Stamped, StoreError,
    },
};

fn name_of(row: &tokio_postgres::Row) -> Result<Certname, StoreError> {
    let text: String = row.get(0);
    Certname::parse(&text)
        .map_err(|e| StoreError::Database(format!("a stored certname {text:?}: {e}")))
}

/// An audit event's columns besides the node.
struct AuditRow<'a> {
    actor: String,
    action: &'static str,
    certname: Option<&'a str>,
    serial: Option<Vec<u8>>,
    detail: Option<&'a str>,
}

impl<'a> AuditRow<'a> {
    fn of(event: &'a AuditEvent) -> Self {
        Self {
            actor: event.actor.to_string(),
            action: event.action.as_str(),
            certname: event.certname.as_ref().map(Certname::as_str),
            serial: event.serial.map(Serial::to_be_bytes),
            detail: event.detail.as_deref(),
        }
    }
}

impl CaStore for PgStore {
    fn ca_bundle(&self) -> Result<Stamped, StoreError> {
        self.file("ca_crt.pem")
    }

    fn crl_chain(&self) -> Result<Stamped, StoreError> {
        let cached = self.crl.lock().ok().and_then(|c| c.clone());
        let known = cached.as_ref().map_or(-1, |c| c.number);
        let mut read = async |client: &mut deadpool_postgres::Object| {
            let row = opt(&*client, sql::NEWEST_CRL_NUMBER, &[])
                .await?
                .ok_or_else(|| StoreError::Database("no CRL in the database".into()))?;
            let number: i64 = row.get(0);
            if number == known {
                return Ok(None);
            }
            let row = one(&*client, sql::CRL_BY_NUMBER, &[&number]).await?;
            Ok(Some((number, row.get::<_, Vec<u8>>(0), row.get::<_, OffsetDateTime>(1))))
        };
        // With a CRL in memory, one attempt; without, wait out an outage as writes do.
        let newest = if cached.is_some() { self.run_once(&mut read) } else { self.run(read) };
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
        let mut read = async |client: &mut deadpool_postgres::Object| {
            let row = opt(&*client, sql::CURRENT_CERT, &[&name.as_str()]).await?;
            Ok(row.map(|r| {
                let bytes = r.get::<_, Option<Vec<u8>>>(0).unwrap_or_default();
                Stamped::new(bytes, SystemTime::from(r.get::<_, OffsetDateTime>(1)))
            }))
        };
        // One attempt; a certificate this node has seen is served from memory through an
        // outage, any other waits it out as writes do.
        let found = match self.run_once(&mut read) {
            Err(StoreError::Unavailable(why)) => match self.cached(name.as_str()) {
                Some(stamped) => {
                    tracing::debug!(%why, certname = %name, "database unavailable; serving the certificate from memory");
                    return Ok(Some(stamped));
                }
                None => self.run(read),
            },
            other => other,
        };
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
            Ok(opt(&*client, sql::REQUEST, &[&name.as_str()]).await?.map(|r| r.get(0)))
        })
    }

    fn existing(&self, name: &Certname) -> Result<Option<Existing>, StoreError> {
        self.run(async |client| {
            let row = one(&*client, sql::NAME_STATE, &[&name.as_str()]).await?;
            Ok(match (row.get::<_, bool>(1), row.get::<_, Option<Vec<u8>>>(0).is_some()) {
                (true, _) => Some(Existing::Certificate),
                (false, true) => Some(Existing::Request),
                (false, false) => None,
            })
        })
    }

    fn certificates(&self) -> Result<Vec<(Certname, Vec<u8>)>, StoreError> {
        self.run(async |client| {
            let rows = all(&*client, sql::ALL_CURRENT_CERTS, &[]).await?;
            rows.iter().map(|r| Ok((name_of(r)?, r.get(1)))).collect()
        })
    }

    fn requests(&self) -> Result<Vec<(Certname, Vec<u8>)>, StoreError> {
        self.run(async |client| {
            let rows = all(&*client, sql::ALL_REQUESTS, &[]).await?;
            rows.iter().map(|r| Ok((name_of(r)?, r.get(1)))).collect()
        })
    }

    fn expired_serials(&self, now: OffsetDateTime) -> Result<HashSet<Vec<u8>>, StoreError> {
        self.run(async |client| {
            let rows = all(&*client, sql::EXPIRED_SERIALS, &[&now]).await?;
            Ok(rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
        })
    }

    fn admission(&self, name: &Certname, limit: usize) -> Result<Admission, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(async |client| {
            let row = one(&*client, sql::ADMISSION, &[&name.as_str(), &limit]).await?;
            let (request, has_cert): (Option<Vec<u8>>, bool) = (row.get(0), row.get(1));
            let existing = match (has_cert, request.is_some()) {
                (true, _) => Some(Existing::Certificate),
                (false, true) => Some(Existing::Request),
                (false, false) => None,
            };
            let pending = usize::try_from(row.get::<_, i64>(2)).unwrap_or(usize::MAX);
            Ok(Admission { existing, request: request.filter(|_| !has_cert), pending })
        })
    }

    fn pending_count(&self) -> Result<usize, StoreError> {
        self.run(async |client| {
            let count: i64 = one(&*client, sql::PENDING_COUNT, &[]).await?.get(0);
            Ok(usize::try_from(count).unwrap_or(usize::MAX))
        })
    }

    fn save_request(&self, name: &Certname, pem: &[u8], overwrite: bool) -> Result<(), StoreError> {
        let node = self.settings.node.as_str();
        self.run(async |client| {
            let tx = client.transaction().await?;
            exec(&tx, sql::LOCK_NAME, &[&name.as_str()]).await?;
            if !overwrite {
                let has_cert: bool = one(&tx, sql::NAME_STATE, &[&name.as_str()]).await?.get(1);
                if has_cert {
                    return Err(StoreError::Conflict {
                        name: name.clone(),
                        existing: Existing::Certificate,
                    });
                }
            }
            let insert = if overwrite { sql::UPSERT_REQUEST } else { sql::INSERT_REQUEST };
            if exec(&tx, insert, &[&name.as_str(), &pem, &node]).await? == 0 {
                return Err(StoreError::Conflict {
                    name: name.clone(),
                    existing: Existing::Request,
                });
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn delete_request(&self, name: &Certname) -> Result<bool, StoreError> {
        self.run(async |client| {
            Ok(exec(&*client, sql::DELETE_REQUEST, &[&name.as_str()]).await? > 0)
        })
    }

    fn delete_certificate(&self, name: &Certname) -> Result<bool, StoreError> {
        self.forget(name.as_str());
        self.run(async |client| {
            Ok(exec(&*client, sql::DELETE_CURRENT, &[&name.as_str()]).await? > 0)
        })
    }

    fn reserve_serial(&self) -> Result<Serial, StoreError> {
        let mut bytes = [0u8; 16];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| StoreError::Database("no randomness for a serial".into()))?;
        Ok(Serial::from_random(bytes))
    }

    /// One transaction in two round trips: BEGIN, the name's lock and what it holds; then
    /// (the duplicate check passed) the certificate, the current pointer, the request's
    /// removal, the audit row and COMMIT, which rolls everything back if a write failed.
    fn store_issued(
        &self,
        name: &Certname,
        issued: &IssuedCert,
        from: IssueFrom<'_>,
        overwrite: bool,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        let node = self.settings.node.as_str();
        let serial = issued.serial.to_be_bytes();
        let kind = if matches!(from, IssueFrom::Renewal) { "renew" } else { "sign" };
        let row = AuditRow::of(audit);
        let name_text = name.as_str();
        let v = &issued.validity;
        let pem = issued.pem.as_bytes();
        type Param<'p> = &'p (dyn tokio_postgres::types::ToSql + Sync);
        let cert_row: [Param<'_>; 7] =
            [&serial, &name_text, &pem, &v.not_before, &v.not_after, &node, &kind];
        let current_row: [Param<'_>; 2] = [&name_text, &serial];
        let audit_row: [Param<'_>; 6] =
            [&node, &row.actor, &row.action, &row.certname, &row.serial, &row.detail];
        let remove_request = matches!(from, IssueFrom::Request(_));
        self.run(async |client| {
            // Every statement prepared (cached on the connection) before any is sent, so that
            // they go out in the order written.
            let (lock, state, insert_cert, upsert_current, delete_request, insert_audit) = tokio::try_join!(
                client.prepare_cached(sql::LOCK_NAME),
                client.prepare_cached(sql::NAME_STATE),
                client.prepare_cached(sql::INSERT_CERT),
                client.prepare_cached(sql::UPSERT_CURRENT),
                client.prepare_cached(sql::DELETE_REQUEST),
                client.prepare_cached(sql::INSERT_AUDIT),
            )?;
            let by_name: [Param<'_>; 1] = [&name_text];
            let (begun, locked, state) = tokio::join!(
                client.batch_execute("BEGIN"),
                client.execute(&lock, &by_name),
                client.query_one(&state, &by_name),
            );
            let checked = begun.and(locked).and(state).map_err(StoreError::from).and_then(|state| {
                check_name(name, from, overwrite, state.get::<_, Option<Vec<u8>>>(0).as_deref(), state.get(1))
            });
            if let Err(e) = checked {
                client.batch_execute("ROLLBACK").await?;
                return Err(e);
            }
            let (cert, current, removed, audited, committed) = tokio::join!(
                client.execute(&insert_cert, &cert_row),
                client.execute(&upsert_current, &current_row),
                async {
                    if remove_request {
                        client.execute(&delete_request, &by_name).await
                    } else {
                        Ok(0)
                    }
                },
                client.execute(&insert_audit, &audit_row),
                client.batch_execute("COMMIT"),
            );
            if let Err(e) = cert {
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    return Err(StoreError::SerialTaken(issued.serial));
                }
                return Err(e.into());
            }
            current?;
            removed?;
            audited?;
            committed?;
            Ok(())
        })?;
        self.remember(name_text, Stamped::new(issued.pem.clone().into_bytes(), SystemTime::now()));
        Ok(())
    }

    fn update_crl(&self, update: &mut CrlUpdateFn<'_>) -> Result<bool, CrlUpdateFailure> {
        let node = self.settings.node.as_str();
        let changed = self.run(async |client| {
            let tx = client.transaction().await?;
            exec(&tx, sql::LOCK_CRL, &[&CRL_LOCK]).await?;
            let current: Vec<u8> = opt(&tx, sql::NEWEST_CRL, &[])
                .await?
                .ok_or_else(|| StoreError::Database("no CRL in the database".into()))?
                .get(0);
            let next = match update(&current) {
                Ok(Some(next)) => next,
                Ok(None) => return Ok(Ok(None)),
                Err(e) => return Ok(Err(e)),
            };
            let info = match CrlInfo::from_der(&next) {
                Ok(info) => info,
                Err(e) => return Ok(Err(e)),
            };
            let number = i64::try_from(info.number).map_err(|_| {
                StoreError::Database(format!("CRL number {} does not fit", info.number))
            })?;
            let next_update = info.next_update.unwrap_or(info.this_update);
            let entries = i32::try_from(info.revoked.len()).unwrap_or(i32::MAX);
            exec(
                &tx,
                sql::INSERT_CRL,
                &[&number, &info.this_update, &next_update, &next, &entries, &node],
            )
            .await?;
            let serials: Vec<Vec<u8>> = info.revoked.iter().map(|e| e.serial.clone()).collect();
            exec(&tx, sql::MARK_REVOKED, &[&serials]).await?;
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
        let row = AuditRow::of(event);
        self.run(async |client| {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                [&node, &row.actor, &row.action, &row.certname, &row.serial, &row.detail];
            exec(&*client, sql::INSERT_AUDIT, &params).await?;
            Ok(())
        })
    }

    fn recent_audit(&self, limit: usize) -> Result<Option<Vec<AuditRecord>>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(async |client| {
            let rows = all(&*client, sql::RECENT_AUDIT, &[&limit]).await?;
            Ok(Some(rows.iter().map(audit_record).collect()))
        })
    }
}

fn audit_record(row: &tokio_postgres::Row) -> AuditRecord {
    let serial: Option<Vec<u8>> = row.get(5);
    AuditRecord {
        at: row.get(0),
        node: row.get(1),
        actor: row.get(2),
        action: row.get(3),
        certname: row.get(4),
        serial: serial.map(|bytes| bytes.iter().map(|b| format!("{b:02X}")).collect()),
        detail: row.get(6),
    }
}

/// puppetserver's duplicate check, on what the name holds now (under its lock).
fn check_name(
    name: &Certname,
    from: IssueFrom<'_>,
    overwrite: bool,
    request: Option<&[u8]>,
    has_cert: bool,
) -> Result<(), StoreError> {
    let conflict = |existing| Err(StoreError::Conflict { name: name.clone(), existing });
    match from {
        IssueFrom::Request(expected) if request != Some(expected) => {
            Err(StoreError::RequestChanged(name.clone()))
        }
        IssueFrom::Request(_) | IssueFrom::Fresh if !overwrite && has_cert => {
            conflict(Existing::Certificate)
        }
        IssueFrom::Fresh if !overwrite && request.is_some() => conflict(Existing::Request),
        IssueFrom::Request(_) | IssueFrom::Fresh | IssueFrom::Renewal => Ok(()),
    }
}
