//! Request extractors: who may call (checked before anything else, as puppetserver's
//! authorization middleware does) and the `{subject}` certname of the URL.

use std::{collections::HashMap, net::SocketAddr};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request},
};
use bytes::BytesMut;
use http::request::Parts;
use http_body_util::BodyExt;
use pki::Certname;

use super::{ApiError, Caller, State, MAX_BODY};
use crate::audit::Actor;
use crate::error::CaError;

/// A caller allowed to administer the CA (`pp_cli_auth`, or a name in `admin_certnames`);
/// anyone else gets 403.
pub(super) struct Admin(pub(super) Actor);

/// Any client whose certificate the proxy verified; anonymous callers get 403.
pub(super) struct Authenticated;

/// The certificate an authenticated client presented to the LB (Puppet 8 renewal): anonymous
/// callers get 403, a caller without a usable certificate 400.
pub(super) struct PresentedCert(pub(super) Vec<u8>);

impl FromRequestParts<State> for PresentedCert {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        let Caller::Client { certname, .. } = caller(parts, state)? else {
            return Err(forbidden(
                parts,
                &Caller::Anonymous,
                "renewal needs a verified client certificate",
            ));
        };
        match super::auth::presented_cert(&parts.headers, &certname)? {
            Some(der) => Ok(Self(der)),
            None => Err(CaError::RenewalInvalid.into()),
        }
    }
}

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
        if let (true, Caller::Client { certname, .. }) = (state.access().is_admin(&caller), &caller)
        {
            return Ok(Self(Actor::Admin(certname.clone())));
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

/// A request body of at most `MAX_BODY` bytes. A larger one is read on (and dropped) up to
/// `DRAIN_LIMIT` before the 413 goes out: a server that answers and closes with a body still
/// unread makes the kernel reset the connection, and the LB in front could lose the answer.
pub(super) struct LimitedBody(pub(super) Bytes);

/// How much of an oversized body is read and dropped so that its 413 arrives intact.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

impl FromRequest<State> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &State) -> Result<Self, ApiError> {
        let mut body = request.into_body();
        let mut kept = BytesMut::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| ApiError::BadInput(format!("unreadable request body: {e}")))?;
            let Ok(chunk) = frame.into_data() else { continue };
            seen += chunk.len();
            if seen <= MAX_BODY {
                kept.extend_from_slice(&chunk);
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
        if seen > MAX_BODY {
            return Err(ApiError::TooLarge(format!(
                "Request body too large: the CA reads at most {MAX_BODY} bytes"
            )));
        }
        Ok(Self(kept.freeze()))
    }
}
