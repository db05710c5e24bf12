//! CRL distribution without shared storage: the LB pulls the CRL from the CA pool, checks it,
//! and installs it in its TLS configuration (which closes live connections it revokes).

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use pki::crl::CrlInfo;
use thiserror::Error;
use time::OffsetDateTime;
use tokio::{net::TcpStream, sync::watch};

use crate::{pool::Member, LbState};

/// The CRL path agents use too.
const CRL_PATH: &str = "/puppet-ca/v1/certificate_revocation_list/ca";
/// Largest CRL chain accepted (a CRL of ~100k revocations is a few MB).
const MAX_CRL_BYTES: usize = 64 * 1024 * 1024;

/// `crl = { pool = "ca", refresh = "30s", cache = "/var/lib/crossbar/crl.pem" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlPull {
    pub pool: String,
    pub refresh: Duration,
    /// Where the last good CRL is kept, so a restart has one even while the CA is down.
    pub cache: Option<PathBuf>,
}

/// Why a fetched CRL was not installed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CrlRejected {
    #[error("not a PEM CRL chain: {0}")]
    Unreadable(String),
    #[error("not signed by any CA in the client CA bundle")]
    NotSignedByCa,
    #[error("expired: nextUpdate {0} is in the past")]
    Expired(String),
    #[error("has no nextUpdate")]
    NoNextUpdate,
    #[error("CRL number goes backwards ({new} after {current})")]
    Backwards { current: u64, new: u64 },
    #[error("same CRL number {0} with different contents")]
    Conflicting(u64),
}

/// Checks a fetched CRL chain against the CA bundle and the CRL in use. The CA's own CRL (the
/// first) must be signed by a CA of the bundle, current, and numbered at least as high as the
/// one in use; the others, when their issuer is in the bundle, must be signed by it.
pub fn check(
    pem: &[u8],
    ca_bundle: &[u8],
    current: Option<(&CrlInfo, &[u8])>,
    now: OffsetDateTime,
) -> Result<CrlInfo, CrlRejected> {
    let crls = pki::pemfile::blocks(pem, "X509 CRL")
        .map_err(|e| CrlRejected::Unreadable(e.to_string()))?;
    let cas = pki::pemfile::blocks(ca_bundle, "CERTIFICATE")
        .map_err(|e| CrlRejected::Unreadable(e.to_string()))?;
    let mut first = None;
    for (i, der) in crls.iter().enumerate() {
        let info = CrlInfo::from_der(der).map_err(|e| CrlRejected::Unreadable(e.to_string()))?;
        let issuers: Vec<&Vec<u8>> =
            cas.iter().filter(|ca| issuer_matches(ca, &info.issuer_raw)).collect();
        let signed = issuers.iter().any(|ca| {
            spki_of(ca).is_some_and(|spki| pki::crl::verify_signature(der, &spki).is_ok())
        });
        if !signed && (i == 0 || !issuers.is_empty()) {
            return Err(CrlRejected::NotSignedByCa);
        }
        if i == 0 {
            first = Some(info);
        }
    }
    let info = first.ok_or_else(|| CrlRejected::Unreadable("no CRL".into()))?;
    let next = info.next_update.ok_or(CrlRejected::NoNextUpdate)?;
    if next <= now {
        return Err(CrlRejected::Expired(pki::timefmt::puppet_date(next)));
    }
    if let Some((current, current_pem)) = current {
        if info.number < current.number {
            return Err(CrlRejected::Backwards { current: current.number, new: info.number });
        }
        if info.number == current.number && pem != current_pem {
            return Err(CrlRejected::Conflicting(info.number));
        }
    }
    Ok(info)
}

fn issuer_matches(ca_der: &[u8], issuer_raw: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(ca_der)
        .is_ok_and(|(_, cert)| cert.subject().as_raw() == issuer_raw)
}

fn spki_of(ca_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(ca_der).ok()?;
    Some(cert.public_key().raw.to_vec())
}

/// Reads the cached CRL, if the cache is configured and readable.
pub fn read_cache(pull: &CrlPull) -> Option<Vec<u8>> {
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
pub async fn pull_loop(state: Arc<LbState>, pull: CrlPull, mut stop: watch::Receiver<bool>) {
    let mut since: Option<String> = None;
    loop {
        match pull_once(&state, &pull, since.as_deref()).await {
            Ok(Some(date)) => since = Some(date),
            Ok(None) => {}
            Err(e) => {
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

/// One pull: `Ok(Some(date))` when a new CRL was installed, `Ok(None)` when unchanged.
async fn pull_once(
    state: &LbState,
    pull: &CrlPull,
    since: Option<&str>,
) -> Result<Option<String>, String> {
    let proxy = state.proxy();
    let pool = proxy.pool(&pull.pool).ok_or_else(|| format!("no pool named '{}'", pull.pool))?;
    let mut members: Vec<&Arc<Member>> = pool.members().iter().collect();
    members.sort_by_key(|m| (!m.is_healthy() || m.is_drained(), m.standby));
    let mut errors = Vec::new();
    for member in members {
        match fetch(member, since).await {
            Ok(Fetched::NotModified) => return Ok(None),
            Ok(Fetched::Crl { body, date }) => {
                return install(state, pull, &body).map(|changed| changed.then_some(date))
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
    Crl { body: Bytes, date: String },
}

async fn fetch(member: &Member, since: Option<&str>) -> Result<Fetched, String> {
    let attempt = async {
        let stream = TcpStream::connect(member.upstream.authority())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request = Request::get(CRL_PATH)
            .header(header::HOST, member.upstream.authority())
            .header(header::USER_AGENT, "crossbar-crl-pull");
        if let Some(since) = since {
            request = request.header(header::IF_MODIFIED_SINCE, since);
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let date =
            response.headers().get(header::DATE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = Limited::new(response.into_body(), MAX_CRL_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        match status {
            StatusCode::NOT_MODIFIED => Ok(Fetched::NotModified),
            StatusCode::OK => Ok(Fetched::Crl {
                body,
                date: date.unwrap_or_else(|| httpdate::fmt_http_date(std::time::SystemTime::now())),
            }),
            other => Err(format!("answered {other}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer within 10s".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TestCa as Ca;

    fn crl_pem(ca: &Ca, number: u64, this_update: OffsetDateTime, revoked: &[u8]) -> Vec<u8> {
        pki::pemfile::encode("X509 CRL", &ca.crl_der(number, this_update, revoked)).into_bytes()
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
                Err(CrlRejected::NotSignedByCa),
            ),
            (
                "an older CRL",
                crl_pem(&ours, 4, now, &[]),
                in_use,
                Err(CrlRejected::Backwards { current: 5, new: 4 }),
            ),
            (
                "same number, other entries",
                crl_pem(&ours, 5, now, &[9]),
                in_use,
                Err(CrlRejected::Conflicting(5)),
            ),
            (
                "garbage",
                b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n".to_vec(),
                in_use,
                Err(CrlRejected::Unreadable(String::new())),
            ),
            ("not PEM", b"hello".to_vec(), in_use, Err(CrlRejected::Unreadable(String::new()))),
        ];
        for (what, pem, current, expected) in cases {
            let got = check(&pem, &ours.bundle_pem(), current, now).map(|info| info.number);
            match (&got, &expected) {
                (Err(CrlRejected::Unreadable(_)), Err(CrlRejected::Unreadable(_))) => {}
                _ => assert_eq!(got, expected, "{what}"),
            }
        }
        let expired = crl_pem(&ours, 9, six_years_ago, &[]);
        assert!(matches!(
            check(&expired, &ours.bundle_pem(), in_use, now),
            Err(CrlRejected::Expired(_))
        ));
    }
}
