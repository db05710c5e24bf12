//! The CA's operations over a [`CaStore`]: submit, sign, revoke, clean, report. Blocking; the
//! HTTP API runs them on blocking threads, the offline CLI calls them directly.

use std::{sync::Arc, time::Duration};

use pki::{
    crl::{self, CrlInfo},
    describe::{self, Description},
    policy, AltName, CaSigner, CertRequest, Certname, Csr, CsrPolicy, IssuedCert, KeyAlgorithm,
    Validity,
};
use time::OffsetDateTime;

use crate::{
    audit::{Action, Actor, AuditEvent},
    error::CaError,
    metrics::CaMetrics,
    store::{CaStore, Existing, IssueFrom, StoreError},
};

/// Times a signing is tried again with a new serial when the store says it is taken (random
/// serials: a collision is astronomically rare, two in a row never happen).
const SERIAL_ATTEMPTS: usize = 5;

/// Signing settings, from `[ca]`.
#[derive(Debug, Clone)]
pub struct CaSettings {
    pub policy: CsrPolicy,
    /// Lifetime of issued certificates (Puppet's `ca_ttl`).
    pub cert_ttl: Duration,
    /// Puppet's `allow_duplicate_certs`: a new CSR replaces an existing request or certificate.
    pub allow_duplicate_certs: bool,
    /// Refuse new CSRs while this many are pending.
    pub max_pending_requests: usize,
    /// Puppet 8's automatic renewal (`allow-auto-renewal`), with the lifetime of renewed
    /// certificates (`auto-renewal-cert-ttl`); `None` turns it off.
    pub auto_renewal_ttl: Option<Duration>,
}

/// puppetserver's `auto-renewal-cert-ttl` default: 90 days.
pub const DEFAULT_AUTO_RENEWAL_TTL: Duration = Duration::from_secs(90 * 86_400);

impl Default for CaSettings {
    fn default() -> Self {
        Self {
            policy: CsrPolicy::default(),
            cert_ttl: pki::issue::DEFAULT_CERT_TTL,
            allow_duplicate_certs: false,
            max_pending_requests: 50_000,
            auto_renewal_ttl: Some(DEFAULT_AUTO_RENEWAL_TTL),
        }
    }
}

/// What a bulk signing did, name by name (puppetserver's `POST /sign` answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    pub signed: Vec<String>,
    /// Names with no pending request (a name listed twice lands here the second time).
    pub no_csr: Vec<String>,
    /// Names whose request policy refused, or that failed to sign; their requests stay.
    pub signing_errors: Vec<String>,
}

/// A request saved by [`CaService::accept_request`], not yet signed.
#[derive(Debug, Clone)]
pub struct PendingRequest {
    pub name: Certname,
    pub csr: Csr,
    /// The body as submitted (what an autosign policy executable reads on stdin).
    pub submitted: Vec<u8>,
    /// The name already has a pending request for the same key: the agent submitted again
    /// (it does after any failure, every `waitforcert`). Autosign may sign it now, which ends
    /// the case of a CA that saved a request and died before autosigning it; otherwise it
    /// answers 400 "already has a requested certificate", as puppetserver does.
    pub resubmitted_from: Option<Vec<u8>>,
}

/// Where a certname stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Requested,
    Signed,
    Revoked,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Signed => "signed",
            Self::Revoked => "revoked",
        }
    }
}

/// One entry of `certificate_status(es)`.
#[derive(Debug, Clone)]
pub struct CertStatus {
    pub name: Certname,
    pub state: State,
    pub description: Description,
}

impl CertStatus {
    /// puppetserver's status object (reference section 2.5).
    pub fn to_json(&self) -> serde_json::Value {
        let d = &self.description;
        let mut object = serde_json::json!({
            "name": self.name.as_str(),
            "state": self.state.as_str(),
            "fingerprint": d.fingerprints.sha256,
            "fingerprints": {
                "SHA1": d.fingerprints.sha1,
                "SHA256": d.fingerprints.sha256,
                "SHA512": d.fingerprints.sha512,
                "default": d.fingerprints.sha256,
            },
            "dns_alt_names": d.dns_alt_names,
            "subject_alt_names": d.subject_alt_names,
            "authorization_extensions": d.authorization_extensions,
        });
        if let (Some(cert), Some(map)) = (&d.cert, object.as_object_mut()) {
            let serial =
                cert.serial.map_or(serde_json::Value::Null, |s| serde_json::json!(s.value()));
            map.insert("serial_number".into(), serial);
            map.insert("not_before".into(), serde_json::json!(cert.not_before));
            map.insert("not_after".into(), serde_json::json!(cert.not_after));
        }
        object
    }
}

/// What `clean` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanOutcome {
    pub missing: Vec<Certname>,
}

/// The CA: a store, the signing key, and the settings.
pub struct CaService {
    store: Arc<dyn CaStore>,
    signer: CaSigner,
    settings: CaSettings,
    metrics: Arc<CaMetrics>,
}

impl CaService {
    /// Loads the CA certificate (first of `ca_crt.pem`) and key from `store`.
    pub fn open(store: Arc<dyn CaStore>, settings: CaSettings) -> Result<Self, CaError> {
        let bundle = store.ca_bundle()?;
        let certs = pki::pemfile::blocks(&bundle.bytes, "CERTIFICATE")
            .map_err(|e| CaError::Setup(format!("ca_crt.pem: {e}")))?;
        let key = pki::key::load_key_pem(&store.ca_key_pem()?)
            .map_err(|e| CaError::Setup(format!("ca_key.pem: {e}")))?;
        let first = certs
            .into_iter()
            .next()
            .ok_or_else(|| CaError::Setup("ca_crt.pem holds no certificate".into()))?;
        let signer = CaSigner::new(first, key).map_err(|e| CaError::Setup(e.to_string()))?;
        Ok(Self { store, signer, settings, metrics: Arc::default() })
    }

    /// Counts into `metrics` (a reloaded service keeps counting where the last one stopped).
    pub fn with_metrics(mut self, metrics: Arc<CaMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Arc<CaMetrics> {
        &self.metrics
    }

    pub fn store(&self) -> &Arc<dyn CaStore> {
        &self.store
    }

    pub fn signer(&self) -> &CaSigner {
        &self.signer
    }

    pub fn settings(&self) -> &CaSettings {
        &self.settings
    }

    /// Steps 1–3 of puppetserver's CSR pipeline: parse, duplicate check, subject check. Nothing
    /// is stored yet.
    pub fn check_request(&self, name: &str, body: &[u8]) -> Result<PendingRequest, CaError> {
        let name = Certname::parse(name)?;
        let csr = Csr::from_pem(body)?;
        let admission = self.store.admission(&name, self.settings.max_pending_requests)?;
        let mut resubmitted_from = None;
        if !self.settings.allow_duplicate_certs {
            match (admission.existing, admission.request) {
                (None, _) => {}
                (Some(Existing::Request), Some(stored)) if same_key(&stored, &csr) => {
                    resubmitted_from = Some(stored);
                }
                (Some(existing), _) => return Err(self.duplicate(&name, existing)),
            }
        }
        policy::check_subject(&name, &csr).map_err(CaError::Rejected)?;
        if resubmitted_from.is_none() && admission.pending >= self.settings.max_pending_requests {
            return Err(CaError::TooManyPending(admission.pending));
        }
        Ok(PendingRequest { name, csr, submitted: body.to_vec(), resubmitted_from })
    }

    /// Step 4: saves the request as pending (the duplicate check is repeated under the lock).
    /// A request submitted again for the same key is already pending: 400, as puppetserver
    /// answers a duplicate.
    pub fn save_request(&self, pending: &PendingRequest) -> Result<(), CaError> {
        if pending.resubmitted_from.is_some() {
            return Err(self.duplicate(&pending.name, Existing::Request));
        }
        let overwrite = self.settings.allow_duplicate_certs;
        let pem = pending.csr.to_pem();
        match self.store.save_request(&pending.name, pem.as_bytes(), overwrite) {
            Err(StoreError::Conflict { existing, .. }) => {
                return Err(self.duplicate(&pending.name, existing))
            }
            other => other?,
        }
        self.audit(AuditEvent::new(
            &Actor::Agent(pending.name.to_string()),
            Action::Submit,
            Some(&pending.name),
        ));
        Ok(())
    }

    /// Steps 1–4 for a request that is not autosigned.
    pub fn accept_request(&self, name: &str, body: &[u8]) -> Result<PendingRequest, CaError> {
        let pending = self.check_request(name, body)?;
        self.save_request(&pending)?;
        Ok(pending)
    }

    /// Steps 5–6 for an autosigned request: policy, then signing. A request that policy refuses
    /// answers 400 and stays pending, as in puppetserver; one that is signed is never written to
    /// `requests/` (puppetserver writes and deletes it). A request submitted again for the same
    /// key replaces and signs the pending one.
    pub fn autosign(&self, pending: &PendingRequest) -> Result<IssuedCert, CaError> {
        if let Err(violation) = self.settings.policy.review(&pending.name, &pending.csr) {
            if pending.resubmitted_from.is_none() {
                self.save_request(pending)?;
            }
            self.audit(
                AuditEvent::new(&Actor::Autosign, Action::AutosignRefused, Some(&pending.name))
                    .detail(violation.to_string()),
            );
            return Err(CaError::Rejected(violation));
        }
        let request = CertRequest::from_csr(pending.name.clone(), &pending.csr);
        let ttl = self.initial_ttl(&pending.csr, None);
        let from = match &pending.resubmitted_from {
            Some(stored) => IssueFrom::Request(stored),
            None => IssueFrom::Fresh,
        };
        self.issue(&request, from, ttl, &|issued| {
            AuditEvent::new(&Actor::Autosign, Action::Sign, Some(&pending.name))
                .serial(issued.serial)
        })
    }

    /// Records that autosign declined a request (it stays pending; an operator signs it).
    pub fn autosign_declined(&self, pending: &PendingRequest) {
        self.audit(
            AuditEvent::new(&Actor::Autosign, Action::AutosignRefused, Some(&pending.name))
                .detail("the autosign setting or policy said no"),
        );
    }

    /// puppetserver's rule: a request with `pp_auth_auto_renew = true` gets the renewal
    /// lifetime when renewal is on (whatever `cert_ttl` an operator asked for); otherwise
    /// `ttl`, or the CA's `cert_ttl`.
    fn initial_ttl(&self, csr: &Csr, ttl: Option<Duration>) -> Option<Duration> {
        match self.settings.auto_renewal_ttl {
            Some(renewal) if csr.wants_auto_renewal() => Some(renewal),
            _ => ttl,
        }
    }

    /// An operator's signing of a pending request (`certificate_status` PUT, `ca sign`).
    pub fn sign(
        &self,
        name: &Certname,
        ttl: Option<Duration>,
        actor: &Actor,
    ) -> Result<IssuedCert, CaError> {
        let Some(stored) = self.store.request(name)? else {
            return Err(CaError::NoRequest(name.clone()));
        };
        let csr = Csr::from_pem(&stored)
            .map_err(|e| CaError::Setup(format!("stored request for {name} is unreadable: {e}")))?;
        self.settings.policy.review(name, &csr).map_err(CaError::SignRefused)?;
        let request = CertRequest::from_csr(name.clone(), &csr);
        let ttl = self.initial_ttl(&csr, ttl);
        self.issue(&request, IssueFrom::Request(&stored), ttl, &|issued| {
            AuditEvent::new(actor, Action::Sign, Some(name)).serial(issued.serial)
        })
    }

    /// Signs each pending request of `names` in turn (puppetserver 8's `POST /sign`). A name
    /// that is not a certname is a signing error.
    pub fn sign_many(&self, names: &[String], actor: &Actor) -> BulkOutcome {
        let mut outcome = BulkOutcome::default();
        for text in names {
            let signed = Certname::parse(text)
                .map_err(CaError::from)
                .and_then(|name| self.sign(&name, None, actor));
            match signed {
                Ok(_) => outcome.signed.push(text.clone()),
                Err(CaError::NoRequest(_)) => outcome.no_csr.push(text.clone()),
                Err(e) => {
                    tracing::warn!(certname = %text, error = %e, "failed in bulk signing");
                    outcome.signing_errors.push(text.clone());
                }
            }
        }
        outcome
    }

    /// Signs every pending request (puppetserver 8's `POST /sign/all`), in name order.
    pub fn sign_all(&self, actor: &Actor) -> Result<BulkOutcome, CaError> {
        let mut names: Vec<String> =
            self.store.requests()?.into_iter().map(|(name, _)| name.to_string()).collect();
        names.sort();
        Ok(self.sign_many(&names, actor))
    }

    /// Renews the certificate `der` that an authenticated client presented (Puppet 8's
    /// `certificate_renewal`): the same name, key, SANs and extensions, a new serial, valid
    /// for the renewal lifetime. The certificate must be this CA's and not revoked; the old
    /// one stays valid, as puppetserver leaves it.
    pub fn renew(&self, der: &[u8]) -> Result<IssuedCert, CaError> {
        let ttl = self.settings.auto_renewal_ttl.ok_or(CaError::RenewalDisabled)?;
        if !self.signer.issued(der) {
            return Err(CaError::RenewalForeign);
        }
        let request = CertRequest::from_certificate(der)?;
        let serial = describe::certificate(der)
            .and_then(|d| d.cert)
            .map(|c| c.serial_bytes)
            .ok_or(CaError::RenewalInvalid)?;
        if self.crl()?.is_revoked(&serial) {
            tracing::warn!(certname = %request.name, "refused to renew a revoked certificate");
            return Err(CaError::RenewalInvalid);
        }
        let actor = Actor::Agent(request.name.to_string());
        let issued = self.issue(&request, IssueFrom::Renewal, Some(ttl), &|issued| {
            let not_after = pki::timefmt::puppet_date(issued.validity.not_after);
            AuditEvent::new(&actor, Action::Renew, Some(&request.name))
                .serial(issued.serial)
                .detail(format!("valid until {not_after}"))
        })?;
        let not_after = pki::timefmt::puppet_date(issued.validity.not_after);
        tracing::info!(certname = %request.name, serial = %issued.serial, %not_after, "renewed certificate");
        Ok(issued)
    }

    /// Reserves a serial, signs (without holding the store's lock), and stores; signs again
    /// with another serial when the store says the first was taken.
    /// Signs `request` and stores the certificate together with its audit event (`audit`
    /// describes the signing, given the certificate).
    fn issue(
        &self,
        request: &CertRequest,
        from: IssueFrom<'_>,
        ttl: Option<Duration>,
        audit: &dyn Fn(&IssuedCert) -> AuditEvent,
    ) -> Result<IssuedCert, CaError> {
        let ttl = ttl.unwrap_or(self.settings.cert_ttl);
        let validity = Validity::puppet(OffsetDateTime::now_utc(), ttl);
        let overwrite = self.settings.allow_duplicate_certs;
        let started = std::time::Instant::now();
        for _ in 0..SERIAL_ATTEMPTS {
            let serial = self.store.reserve_serial()?;
            let issued = self.signer.issue(request, serial, validity)?;
            let event = audit(&issued);
            match self.store.store_issued(&request.name, &issued, from, overwrite, &event) {
                Err(StoreError::Conflict { existing, .. }) => {
                    return Err(self.duplicate(&request.name, existing))
                }
                Err(StoreError::SerialTaken(serial)) => {
                    tracing::warn!(certname = %request.name, %serial, "serial collision; signing again with another");
                }
                other => {
                    other?;
                    tracing::info!(certname = %request.name, serial = %issued.serial, "signed certificate");
                    event.log();
                    self.metrics.event(event.action, &event.actor);
                    self.metrics.signing_took(started.elapsed());
                    return Ok(issued);
                }
            }
        }
        Err(CaError::Setup(format!("{SERIAL_ATTEMPTS} serials in a row were taken")))
    }

    /// Logs an audit event and hands it to the store; a store that cannot keep it now does not
    /// undo the write it records (the log line stays).
    fn audit(&self, event: AuditEvent) {
        event.log();
        self.metrics.event(event.action, &event.actor);
        if let Err(e) = self.store.record(&event) {
            tracing::warn!(error = %e, action = event.action.as_str(), "could not keep an audit event in the store");
        }
    }

    /// Issues a certificate for a key made here (`crossbar ca generate`); returns the key PEM.
    pub fn generate(
        &self,
        name: &Certname,
        alt_names: Vec<AltName>,
        cli_auth: bool,
        key: KeyAlgorithm,
    ) -> Result<(String, IssuedCert), CaError> {
        let key_pair = key.generate().map_err(|e| CaError::Setup(e.to_string()))?;
        let public_key = pki::key::public_key_info(&key_pair)
            .ok_or_else(|| CaError::Setup("generated key has an unreadable public key".into()))?;
        let request = CertRequest {
            name: name.clone(),
            public_key,
            alt_names,
            extensions: Vec::new(),
            cli_auth,
        };
        let actor = Actor::offline();
        let issued = self.issue(&request, IssueFrom::Fresh, None, &|issued| {
            AuditEvent::new(&actor, Action::Sign, Some(name))
                .serial(issued.serial)
                .detail("generated with its key")
        })?;
        Ok((key_pair.serialize_pem(), issued))
    }

    /// Revokes the certificates of `names` in one CRL update. Every name must have one.
    pub fn revoke(&self, names: &[Certname], actor: &Actor) -> Result<(), CaError> {
        let mut serials = Vec::with_capacity(names.len());
        for name in names {
            serials
                .push(self.cert_serial(name)?.ok_or_else(|| CaError::NoCertificate(name.clone()))?);
        }
        let changed = self.revoke_serials(&serials)?;
        for (name, serial) in names.iter().zip(&serials) {
            tracing::info!(certname = %name, "revoked certificate");
            let mut event = AuditEvent::new(actor, Action::Revoke, Some(name));
            event.serial = pki::Serial::from_be_bytes(serial);
            if !changed {
                event = event.detail("already revoked; the CRL is unchanged");
            }
            self.audit(event);
        }
        Ok(())
    }

    fn revoke_serials(&self, serials: &[Vec<u8>]) -> Result<bool, CaError> {
        if serials.is_empty() {
            return Ok(false);
        }
        let signer = &self.signer;
        let now = OffsetDateTime::now_utc();
        let floor = self.store.crl_number_floor(now);
        let mut update = |current: &[u8]| {
            let info = CrlInfo::from_der(current)?;
            crl::revoke(signer, &info, serials, now, floor)
        };
        Ok(self.store.update_crl(&mut update)?)
    }

    /// `certificate_status` DELETE: removes the certificate and the request, without revoking.
    pub fn delete(&self, name: &Certname, actor: &Actor) -> Result<(), CaError> {
        let had_cert = self.store.delete_certificate(name)?;
        let had_request = self.store.delete_request(name)?;
        if had_cert || had_request {
            self.audit(AuditEvent::new(actor, Action::Delete, Some(name)));
            return Ok(());
        }
        Err(CaError::NotFound("Resource not found.".into()))
    }

    /// `certificate_request` DELETE: removes a pending request; whether there was one.
    pub fn delete_request(&self, name: &Certname, actor: &Actor) -> Result<bool, CaError> {
        let had = self.store.delete_request(name)?;
        if had {
            self.audit(AuditEvent::new(actor, Action::DeleteRequest, Some(name)));
        }
        Ok(had)
    }

    /// `clean`: revokes the existing certificates (one CRL update), then deletes their files.
    /// Requests are kept, as puppetserver does.
    pub fn clean(&self, names: &[Certname], actor: &Actor) -> Result<CleanOutcome, CaError> {
        let mut serials = Vec::new();
        let mut present = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            match self.cert_serial(name)? {
                Some(serial) => {
                    serials.push(serial);
                    present.push(name);
                }
                None => missing.push(name.clone()),
            }
        }
        self.revoke_serials(&serials)?;
        for (name, serial) in present.into_iter().zip(&serials) {
            self.store.delete_certificate(name)?;
            tracing::info!(certname = %name, "cleaned certificate");
            let mut event = AuditEvent::new(actor, Action::Clean, Some(name));
            event.serial = pki::Serial::from_be_bytes(serial);
            self.audit(event);
        }
        Ok(CleanOutcome { missing })
    }

    fn cert_serial(&self, name: &Certname) -> Result<Option<Vec<u8>>, CaError> {
        let Some(stored) = self.store.certificate(name)? else {
            return Ok(None);
        };
        let description = describe_cert(name, &stored.bytes)?;
        Ok(description.cert.map(|c| c.serial_bytes))
    }

    /// The CA's current CRL (the first of the chain).
    pub fn crl(&self) -> Result<CrlInfo, CaError> {
        let chain = self.store.crl_chain()?;
        let first = pki::pemfile::blocks(&chain.bytes, "X509 CRL")
            .map_err(|e| CaError::Setup(format!("ca_crl.pem: {e}")))?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::Setup("ca_crl.pem holds no CRL".into()))?;
        Ok(CrlInfo::from_der(&first)?)
    }

    /// Status of one name; the certificate wins over a request.
    pub fn status(&self, name: &Certname) -> Result<Option<CertStatus>, CaError> {
        if let Some(cert) = self.store.certificate(name)? {
            let crl = self.crl()?;
            return Ok(Some(self.cert_status(name.clone(), &cert.bytes, &crl)?));
        }
        let Some(request) = self.store.request(name)? else {
            return Ok(None);
        };
        Ok(Some(request_status(name.clone(), &request)?))
    }

    /// All requests, then all certificates, optionally of one state.
    pub fn statuses(&self, only: Option<State>) -> Result<Vec<CertStatus>, CaError> {
        let mut out = Vec::new();
        if matches!(only, None | Some(State::Requested)) {
            for (name, pem) in self.store.requests()? {
                match request_status(name.clone(), &pem) {
                    Ok(status) => out.push(status),
                    Err(e) => {
                        tracing::warn!(certname = %name, error = %e, "skipping unreadable request")
                    }
                }
            }
        }
        if only == Some(State::Requested) {
            return Ok(out);
        }
        let crl = self.crl()?;
        for (name, pem) in self.store.certificates()? {
            match self.cert_status(name.clone(), &pem, &crl) {
                Ok(status) if only.is_none_or(|s| s == status.state) => out.push(status),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(certname = %name, error = %e, "skipping unreadable certificate")
                }
            }
        }
        Ok(out)
    }

    fn cert_status(
        &self,
        name: Certname,
        pem: &[u8],
        crl: &CrlInfo,
    ) -> Result<CertStatus, CaError> {
        let description = describe_cert(&name, pem)?;
        let revoked = description.cert.as_ref().is_some_and(|c| crl.is_revoked(&c.serial_bytes));
        let state = if revoked { State::Revoked } else { State::Signed };
        Ok(CertStatus { name, state, description })
    }

    /// Re-signs the CRL with the same entries when it expires within `margin` (puppetserver
    /// 8's daily job); returns whether it did.
    pub fn refresh_crl_if_expiring(&self, margin: Duration) -> Result<bool, CaError> {
        let signer = &self.signer;
        let now = OffsetDateTime::now_utc();
        let floor = self.store.crl_number_floor(now);
        let mut update = |current: &[u8]| {
            let info = CrlInfo::from_der(current)?;
            let expiring = info.next_update.is_none_or(|next| next < now + margin);
            if !expiring {
                return Ok(None);
            }
            crl::build(signer, &info.revoked, crl::next_number(info.number, floor), now).map(Some)
        };
        let changed = self.store.update_crl(&mut update)?;
        if changed {
            tracing::info!("re-signed a CRL that was close to its nextUpdate");
            self.audit(AuditEvent::new(&Actor::Ca, Action::CrlRefresh, None));
        }
        Ok(changed)
    }

    /// Removes from the CRL the entries of certificates that have expired (and repeated
    /// entries), in one CRL update; how many entries went.
    pub fn prune_crl(&self, actor: &Actor) -> Result<usize, CaError> {
        let now = OffsetDateTime::now_utc();
        let expired = self.store.expired_serials(now)?;
        let floor = self.store.crl_number_floor(now);
        let signer = &self.signer;
        let mut removed = 0;
        let mut update = |current: &[u8]| {
            let info = CrlInfo::from_der(current)?;
            let next = crl::prune(signer, &info, &expired, now, floor)?;
            if let Some(der) = &next {
                removed = info.revoked.len() - CrlInfo::from_der(der)?.revoked.len();
            }
            Ok(next)
        };
        if self.store.update_crl(&mut update)? {
            tracing::info!(removed, "pruned expired certificates from the CRL");
            self.audit(
                AuditEvent::new(actor, Action::CrlPrune, None)
                    .detail(format!("{removed} entries removed")),
            );
        }
        Ok(removed)
    }

    fn duplicate(&self, name: &Certname, existing: Existing) -> CaError {
        let state = match existing {
            Existing::Request => "requested",
            Existing::Certificate => match self.status(name) {
                Ok(Some(CertStatus { state: State::Revoked, .. })) => "revoked",
                _ => "signed",
            },
        };
        CaError::Duplicate { name: name.clone(), state }
    }
}

/// Whether the stored request `stored` (PEM) and `csr` carry the same public key.
fn same_key(stored: &[u8], csr: &Csr) -> bool {
    Csr::from_pem(stored).is_ok_and(|s| s.public_key().spki_der == csr.public_key().spki_der)
}

fn describe_cert(name: &Certname, pem: &[u8]) -> Result<Description, CaError> {
    let der = pki::pemfile::single_block(pem, &["CERTIFICATE"])
        .map_err(|e| CaError::Setup(format!("signed/{name}.pem: {e}")))?;
    describe::certificate(&der)
        .ok_or_else(|| CaError::Setup(format!("signed/{name}.pem is not a certificate")))
}

fn request_status(name: Certname, pem: &[u8]) -> Result<CertStatus, CaError> {
    let csr =
        Csr::from_pem(pem).map_err(|e| CaError::Setup(format!("requests/{name}.pem: {e}")))?;
    Ok(CertStatus { name, state: State::Requested, description: describe::request(&csr) })
}
