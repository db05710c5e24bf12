//! CRL distribution without shared storage: the LB pulls the CRL from the CA pool, checks it,
//! and installs it in its TLS configuration (which closes live connections it revokes).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, StatusCode};
use pki::crl::CrlInfo;
use thiserror::Error;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::{
    config::CrlPull,
    fetch::{self, Get},
    pool::Member,
    state::LbState,
};

/// The CRL path agents use too.
const CRL_PATH: &str = "/puppet-ca/v1/certificate_revocation_list/ca";
/// Largest CRL chain accepted (a CRL of ~100k revocations is a few MB).
const MAX_CRL_BYTES: usize = 64 * 1024 * 1024;

/// Why a fetched CRL was not installed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum CrlRejected {
    #[error("not a PEM CRL chain: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Chain(#[from] pki::crl::ChainError),
    #[error(transparent)]
    Update(#[from] pki::crl::UpdateError),
}

/// Checks a fetched CRL chain against the CA bundle ([`pki::crl::verify_chain`], the rules
/// the TLS front applies too) and against the CRL in use: current, and numbered at least as
/// high.
pub(crate) fn check(
    pem: &[u8],
    ca_bundle: &[u8],
    current: Option<(&CrlInfo, &[u8])>,
    now: OffsetDateTime,
) -> Result<CrlInfo, CrlRejected> {
    let unreadable = |e: pki::pemfile::PemError| CrlRejected::Unreadable(e.to_string());
    let crls = pki::pemfile::blocks(pem, "X509 CRL").map_err(unreadable)?;
    let cas = pki::pemfile::blocks(ca_bundle, "CERTIFICATE").map_err(unreadable)?;
    let chain = pki::crl::verify_chain(&crls, &cas)?;
    pki::crl::check_update(&chain.first, pem, current, now)?;
    Ok(chain.first)
}

/// Reads the cached CRL, if the cache is configured and readable.
pub(crate) fn read_cache(pull: &CrlPull) -> Option<Vec<u8>> {
    let path = pull.cache.as_ref()?;
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::info!(cache = %path.display(), error = %e, "no cached CRL; waiting for the first pull");
            None
        }
    }
}

/// Pulls every `refresh` until `stop`; the first pull happens at once.
pub(crate) async fn pull_loop(state: Arc<LbState>, pull: CrlPull, mut stop: watch::Receiver<bool>) {
    let mut since: Option<Validator> = None;
    loop {
        match pull_once(&state, &pull, since.as_ref()).await {
            Ok(Some(validator)) => {
                since = Some(validator);
                state.metrics.crl_pulled("a new CRL installed");
            }
            Ok(None) => state.metrics.crl_pulled("unchanged"),
            Err(e) => {
                state.metrics.crl_pulled(format!("failed: {e}"));
                state.metrics.crl_pull_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(pool = %pull.pool, error = %e, "CRL pull failed; keeping the CRL in use");
            }
        }
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            () = tokio::time::sleep(pull.refresh) => {}
        }
    }
}

/// What identifies the CRL an LB holds, for a conditional pull.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Validator {
    /// The CA's `ETag` (crossbar's CAs send one): exact, sent as `If-None-Match`.
    ETag(String),
    /// Without an `ETag` (puppetserver), the `Date` of the answer, sent as
    /// `If-Modified-Since`: whole seconds, so a CRL replaced twice within the second of a pull
    /// is missed until the next change.
    Date(String),
}

impl Validator {
    fn of(headers: &http::HeaderMap) -> Self {
        let value = |name| headers.get(name).and_then(|v: &http::HeaderValue| v.to_str().ok());
        match (value(header::ETAG), value(header::DATE)) {
            (Some(etag), _) => Self::ETag(etag.to_owned()),
            (None, Some(date)) => Self::Date(date.to_owned()),
            (None, None) => Self::Date(httpdate::fmt_http_date(std::time::SystemTime::now())),
        }
    }
}

/// One pull: `Ok(Some(validator))` when a new CRL was installed, `Ok(None)` when unchanged.
async fn pull_once(
    state: &LbState,
    pull: &CrlPull,
    since: Option<&Validator>,
) -> Result<Option<Validator>, String> {
    let proxy = state.proxy();
    let pool = proxy.pool(&pull.pool).ok_or_else(|| format!("no pool named '{}'", pull.pool))?;
    let mut members: Vec<&Arc<Member>> = pool.members().iter().collect();
    members.sort_by_key(|m| (!m.is_healthy() || m.is_drained(), m.standby));
    let mut errors = Vec::new();
    for member in members {
        match fetch(member, since).await {
            Ok(Fetched::NotModified) => return Ok(None),
            Ok(Fetched::Crl { body, validator }) => {
                return install(state, pull, &body).map(|changed| changed.then_some(validator))
            }
            Err(e) => errors.push(format!("{}: {e}", member.url())),
        }
    }
    Err(errors.join("; "))
}

fn install(state: &LbState, pull: &CrlPull, body: &[u8]) -> Result<bool, String> {
    let tls = state.tls();
    let snapshot = tls.current();
    let current = snapshot.crl.as_ref().map(|c| (c, snapshot.material.crl_pem.as_slice()));
    if current.is_some_and(|(_, pem)| pem == body) {
        return Ok(false);
    }
    let info = check(body, &snapshot.material.client_ca_pem, current, OffsetDateTime::now_utc())
        .map_err(|e| format!("CRL refused: {e}"))?;
    tls.install_crl(body.to_vec()).map_err(|e| format!("CRL does not load: {e}"))?;
    state.metrics.crl_pulls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(pool = %pull.pool, crl_number = info.number, revoked = info.revoked.len(), "installed a new CRL from the CA");
    if let Some(path) = &pull.cache {
        if let Err(e) = write_cache(path, body) {
            tracing::warn!(cache = %path.display(), error = %e, "could not cache the CRL");
        }
    }
    Ok(true)
}

fn write_cache(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

enum Fetched {
    NotModified,
    Crl { body: Bytes, validator: Validator },
}

async fn fetch(member: &Member, since: Option<&Validator>) -> Result<Fetched, String> {
    let (if_none_match, if_modified_since) = match since {
        Some(Validator::ETag(tag)) => (Some(tag.as_str()), None),
        Some(Validator::Date(date)) => (None, Some(date.as_str())),
        None => (None, None),
    };
    let fetched = fetch::get(Get {
        authority: member.upstream.authority(),
        path: CRL_PATH,
        user_agent: "crossbar-crl-pull",
        if_modified_since,
        if_none_match,
        max_body: MAX_CRL_BYTES,
        timeout: Duration::from_secs(10),
    })
    .await?;
    match fetched.status {
        StatusCode::NOT_MODIFIED => Ok(Fetched::NotModified),
        StatusCode::OK => {
            Ok(Fetched::Crl { validator: Validator::of(&fetched.headers), body: fetched.body })
        }
        other => Err(format!("answered {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TestCa as Ca;
    use pki::crl::{ChainError, UpdateError};

    fn crl_pem(ca: &Ca, number: u64, this_update: OffsetDateTime, revoked: &[u8]) -> Vec<u8> {
        pki::pemfile::encode("X509 CRL", &ca.crl_der(number, this_update, revoked)).into_bytes()
    }

    #[test]
    fn a_pull_is_conditional_on_the_etag_when_the_ca_sends_one() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::DATE, "Tue, 01 Dec 2026 22:00:00 GMT".parse().expect("date"));
        assert_eq!(
            Validator::of(&headers),
            Validator::Date("Tue, 01 Dec 2026 22:00:00 GMT".into())
        );
        headers.insert(header::ETAG, "\"crl-17\"".parse().expect("etag"));
        assert_eq!(Validator::of(&headers), Validator::ETag("\"crl-17\"".into()));
    }

    #[test]
    fn fetched_crls_are_checked_before_use() {
        let now = OffsetDateTime::now_utc();
        let ours = Ca::new("lb.example.com");
        let theirs = Ca::new("evil.example.com");
        let current_pem = crl_pem(&ours, 5, now, &[2]);
        let current =
            CrlInfo::from_der(&pki::pemfile::blocks(&current_pem, "X509 CRL").expect("pem")[0])
                .expect("info");
        let in_use = Some((&current, current_pem.as_slice()));
        let six_years_ago = now - time::Duration::days(6 * 365);
        type Case<'a> =
            (&'a str, Vec<u8>, Option<(&'a CrlInfo, &'a [u8])>, Result<u64, CrlRejected>);
        let cases: Vec<Case<'_>> = vec![
            ("a newer CRL", crl_pem(&ours, 6, now, &[2, 3]), in_use, Ok(6)),
            ("the first CRL ever", crl_pem(&ours, 0, now, &[]), None, Ok(0)),
            ("the same CRL again", current_pem.clone(), in_use, Ok(5)),
            (
                "signed by another CA",
                crl_pem(&theirs, 7, now, &[]),
                in_use,
                Err(CrlRejected::Chain(ChainError::UnknownIssuer)),
            ),
            (
                "an older CRL",
                crl_pem(&ours, 4, now, &[]),
                in_use,
                Err(CrlRejected::Update(UpdateError::Backwards { current: 5, new: 4 })),
            ),
            (
                "same number, other entries",
                crl_pem(&ours, 5, now, &[9]),
                in_use,
                Err(CrlRejected::Update(UpdateError::Conflicting(5))),
            ),
            (
                "garbage",
                b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n".to_vec(),
                in_use,
                Err(CrlRejected::Chain(ChainError::Unreadable(String::new()))),
            ),
            ("not PEM", b"hello".to_vec(), in_use, Err(CrlRejected::Unreadable(String::new()))),
        ];
        for (what, pem, current, expected) in cases {
            let got = check(&pem, &ours.bundle_pem(), current, now).map(|info| info.number);
            match (&got, &expected) {
                (Err(CrlRejected::Unreadable(_)), Err(CrlRejected::Unreadable(_)))
                | (
                    Err(CrlRejected::Chain(ChainError::Unreadable(_))),
                    Err(CrlRejected::Chain(ChainError::Unreadable(_))),
                ) => {}
                _ => assert_eq!(got, expected, "{what}"),
            }
        }
        let expired = crl_pem(&ours, 9, six_years_ago, &[]);
        assert!(matches!(
            check(&expired, &ours.bundle_pem(), in_use, now),
            Err(CrlRejected::Update(UpdateError::Expired(_)))
        ));
    }
}
