//! Certificates, requests, the CRL and expirations: what agents use, mostly unauthenticated.

use axum::{
    extract::State as AxState,
    response::{IntoResponse, Response},
    Json,
};
use http::{HeaderMap, StatusCode};

use super::{
    blocking,
    extract::{Admin, Authenticated, LimitedBody, RawSubject, Subject},
    stamped_response, text, ApiError, State,
};

/// `GET certificate/{subject}`: the CA bundle for `ca`, else the signed certificate.
pub(super) async fn get_certificate(
    AxState(state): AxState<State>,
    Subject(name): Subject,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let missing = format!("Could not find certificate {name}");
    let stamped = if name.as_str() == "ca" {
        Some(blocking(&state, |ca| Ok(ca.store().ca_bundle()?)).await?)
    } else {
        blocking(&state, move |ca| Ok(ca.store().certificate(&name)?)).await?
    };
    let Some(stamped) = stamped else { return Err(ApiError::NotFound(missing)) };
    Ok(stamped_response(&headers, stamped))
}

/// `GET certificate_request/{subject}`.
pub(super) async fn get_request(
    AxState(state): AxState<State>,
    Subject(name): Subject,
) -> Result<Response, ApiError> {
    let missing = format!("Could not find certificate_request {name}");
    match blocking(&state, move |ca| Ok(ca.store().request(&name)?)).await? {
        Some(pem) => Ok(text(StatusCode::OK, pem)),
        None => Err(ApiError::NotFound(missing)),
    }
}

/// `PUT certificate_request/{subject}`: checked, then signed at once when autosign says so,
/// otherwise saved as pending. The name is checked by the service, after the duplicate check,
/// as puppetserver orders it.
pub(super) async fn put_request(
    AxState(state): AxState<State>,
    RawSubject(subject): RawSubject,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let pending = blocking(&state, move |ca| ca.check_request(&subject, &body)).await?;
    let autosign = state.autosign();
    if autosign.decide(&pending.name, &pending.submitted).await {
        blocking(&state, move |ca| ca.autosign(&pending)).await?;
    } else {
        let name = pending.name.clone();
        // With autosign off nothing was decided; a setting or policy that said no is recorded.
        let declined = !matches!(*autosign, crate::autosign::Autosign::Off);
        blocking(&state, move |ca| {
            ca.save_request(&pending)?;
            if declined {
                ca.autosign_declined(&pending);
            }
            Ok(())
        })
        .await?;
        tracing::info!(certname = %name, "certificate request saved; waiting to be signed");
    }
    Ok(text(StatusCode::OK, ""))
}

/// `DELETE certificate_request/{subject}` (denied by puppetserver's default auth.conf; here
/// open to admins).
pub(super) async fn delete_request(
    Admin(actor): Admin,
    AxState(state): AxState<State>,
    Subject(name): Subject,
) -> Result<Response, ApiError> {
    let missing = format!("No certificate request for {name}");
    if blocking(&state, move |ca| ca.delete_request(&name, &actor)).await? {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Err(ApiError::NotFound(missing))
}

/// `GET certificate_revocation_list/{anything}`: the whole CRL chain.
pub(super) async fn get_crl(
    AxState(state): AxState<State>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let stamped = blocking(&state, |ca| Ok(ca.store().crl_chain()?)).await?;
    Ok(stamped_response(&headers, stamped))
}

/// `GET expirations`: notAfter of each CA certificate and nextUpdate of each CRL, for any
/// authenticated caller.
pub(super) async fn expirations(
    _: Authenticated,
    AxState(state): AxState<State>,
) -> Result<Response, ApiError> {
    let (certs, crls) =
        blocking(&state, |ca| Ok((ca.store().ca_bundle()?, ca.store().crl_chain()?))).await?;
    let mut ca_certs = serde_json::Map::new();
    for der in pki::pemfile::blocks(&certs.bytes, "CERTIFICATE").unwrap_or_default() {
        if let Some(d) = pki::describe::certificate(&der) {
            let not_after = d.cert.map(|c| c.not_after).unwrap_or_default();
            ca_certs.insert(d.common_name, not_after.into());
        }
    }
    let mut crl_map = serde_json::Map::new();
    for der in pki::pemfile::blocks(&crls.bytes, "X509 CRL").unwrap_or_default() {
        if let Ok(info) = pki::crl::CrlInfo::from_der(&der) {
            let issuer = pki::describe::name_common_name(&info.issuer_raw).unwrap_or_default();
            let next = info.next_update.map(pki::timefmt::puppet_date).unwrap_or_default();
            crl_map.insert(issuer, next.into());
        }
    }
    Ok(Json(serde_json::json!({ "ca-certs": ca_certs, "crls": crl_map })).into_response())
}
