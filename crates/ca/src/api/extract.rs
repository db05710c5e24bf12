//! Request extractors: who may call (checked before anything else, as puppetserver's
//! authorization middleware does) and the `{subject}` certname of the URL.

use std::{collections::HashMap, net::SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Path};
use http::request::Parts;
use pki::Certname;

use super::{ApiError, Caller, State};
use crate::error::CaError;

/// A caller allowed to administer the CA (`pp_cli_auth`, or a name in `admin_certnames`);
/// anyone else gets 403.
pub(super) struct Admin;

/// Any client whose certificate the proxy verified; anonymous callers get 403.
pub(super) struct Authenticated;

/// The URL's `{subject}`, checked as a certname before it touches a file (400 otherwise).
pub(super) struct Subject(pub(super) Certname);

fn caller(parts: &Parts, state: &State) -> Result<Caller, ApiError> {
    let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
        return Ok(Caller::Anonymous);
    };
    state.access().caller(peer.ip(), &parts.headers)
}

fn forbidden(parts: &Parts, caller: &Caller, why: &'static str) -> ApiError {
    let path = parts.uri.path();
    tracing::warn!(?caller, %path, method = %parts.method, "forbidden: {why}");
    ApiError::Forbidden { path: path.to_owned(), method: parts.method.clone() }
}

impl FromRequestParts<State> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        let caller = caller(parts, state)?;
        if state.access().is_admin(&caller) {
            return Ok(Self);
        }
        Err(forbidden(
            parts,
            &caller,
            "CA admin endpoints need pp_cli_auth or an admin_certnames entry",
        ))
    }
}

impl FromRequestParts<State> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        match caller(parts, state)? {
            Caller::Anonymous => Err(forbidden(
                parts,
                &Caller::Anonymous,
                "this endpoint needs a verified client certificate",
            )),
            Caller::Client { .. } => Ok(Self),
        }
    }
}

impl FromRequestParts<State> for Subject {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        let RawSubject(subject) = RawSubject::from_request_parts(parts, state).await?;
        Certname::parse(&subject).map(Self).map_err(|e| CaError::from(e).into())
    }
}

/// The URL's `{subject}` as sent (for the CSR pipeline, which checks it in puppetserver's
/// order). Picked by name: the Puppet 3 routes have an `{environment}` before it.
pub(super) struct RawSubject(pub(super) String);

impl FromRequestParts<State> for RawSubject {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        let Path(mut params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadInput(e.body_text()))?;
        params
            .remove("subject")
            .map(Self)
            .ok_or_else(|| ApiError::BadInput("Missing URL Segment".into()))
    }
}
