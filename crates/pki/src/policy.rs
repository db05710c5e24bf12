//! What a CA will sign: puppetserver's subject, SAN, extension and signature checks, plus a
//! minimum key strength. Every rejection carries puppetserver's wording where it has one.

use thiserror::Error;

use crate::{
    certname::Certname,
    csr::{AltName, Csr, EcCurve, KeyKind},
    oid,
};

/// Smallest RSA modulus crossbar signs.
pub const MIN_RSA_BITS: usize = 2048;

/// The signing policy switches, as in puppetserver's `ca.conf`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CsrPolicy {
    /// `allow-subject-alt-names`: sign SANs other than the lone `DNS:<certname>`.
    pub allow_subject_alt_names: bool,
    /// `allow-authorization-extensions`: sign extensions under `1.3.6.1.4.1.34380.1.3`.
    pub allow_authorization_extensions: bool,
}

/// Why a CSR is not signed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyViolation {
    #[error("Instance name \"{cn}\" does not match requested key \"{name}\"")]
    NameMismatch { cn: String, name: String },
    #[error("{0}")]
    BadSubject(#[from] crate::certname::CertnameError),
    #[error(
        "CSR '{name}' contains extra subject alternative names ({names}), which are disallowed. \
         To allow subject alternative names, set allow-subject-alt-names to true in your ca.conf \
         file. Then restart the puppetserver and try signing this certificate again."
    )]
    AltNamesDisallowed { name: String, names: String },
    #[error(
        "CSR '{name}' subject alternative names ({names}) contain a wildcard, which is not allowed"
    )]
    AltNameWildcard { name: String, names: String },
    #[error("CSR '{name}' contains subject alternative names of unsupported kinds ({names}); only DNS and IP names are signed")]
    AltNameKind { name: String, names: String },
    #[error(
        "CSR '{name}' contains an authorization extension, which is disallowed. To allow \
         authorization extensions, set allow-authorization-extensions to true in your ca.conf \
         file. Then restart the puppetserver and try signing this certificate again."
    )]
    AuthorizationExtension { name: String },
    #[error("Found extensions that are not permitted: {0}")]
    ExtensionsNotPermitted(String),
    #[error("CSR '{name}' has an RSA key of {bits} bits; the minimum is {MIN_RSA_BITS}")]
    WeakRsaKey { name: String, bits: usize },
    #[error("CSR '{name}' uses an unsupported key ({what}); RSA of at least {MIN_RSA_BITS} bits, EC P-256 or P-384 are accepted")]
    UnsupportedKey { name: String, what: String },
    #[error("CSR contains a public key that does not correspond to the signing key")]
    BadSignature,
}

/// Step 3 of puppetserver's pipeline: the CSR's CN must be the name in the URL, and a valid one.
pub fn check_subject(name: &Certname, csr: &Csr) -> Result<(), PolicyViolation> {
    let cn = csr.common_name().unwrap_or_default();
    if cn != name.as_str() {
        return Err(PolicyViolation::NameMismatch { cn: cn.to_owned(), name: name.to_string() });
    }
    Certname::parse(cn)?;
    Ok(())
}

impl CsrPolicy {
    /// The whole signing check, in puppetserver's order (`validate-csr`): subject, SANs,
    /// authorization extensions, the extension whitelist, then key strength and signature.
    pub fn review(&self, name: &Certname, csr: &Csr) -> Result<(), PolicyViolation> {
        check_subject(name, csr)?;
        self.check_alt_names(name, csr)?;
        self.check_authorization_extensions(name, csr)?;
        check_whitelist(csr)?;
        check_key(name, csr)?;
        if !csr.signature_valid() {
            return Err(PolicyViolation::BadSignature);
        }
        Ok(())
    }

    fn check_alt_names(&self, name: &Certname, csr: &Csr) -> Result<(), PolicyViolation> {
        let names = csr.alt_names();
        let only_own_name = matches!(names, [AltName::Dns(dns)] if dns == name.as_str());
        if names.is_empty() || only_own_name {
            return Ok(());
        }
        let listed = || join(names.iter().map(ToString::to_string));
        if !self.allow_subject_alt_names {
            return Err(PolicyViolation::AltNamesDisallowed {
                name: name.to_string(),
                names: listed(),
            });
        }
        if names.iter().any(|n| matches!(n, AltName::Other(_))) {
            return Err(PolicyViolation::AltNameKind { name: name.to_string(), names: listed() });
        }
        if names.iter().any(|n| matches!(n, AltName::Dns(d) if d.contains('*'))) {
            return Err(PolicyViolation::AltNameWildcard {
                name: name.to_string(),
                names: listed(),
            });
        }
        Ok(())
    }

    fn check_authorization_extensions(
        &self,
        name: &Certname,
        csr: &Csr,
    ) -> Result<(), PolicyViolation> {
        let has_auth =
            csr.extensions().iter().any(|e| oid::is_under(&e.oid, oid::PP_AUTH_CERT_EXT));
        if has_auth && !self.allow_authorization_extensions {
            return Err(PolicyViolation::AuthorizationExtension { name: name.to_string() });
        }
        Ok(())
    }
}

fn check_whitelist(csr: &Csr) -> Result<(), PolicyViolation> {
    let refused: Vec<&str> = csr
        .extensions()
        .iter()
        .map(|e| e.oid.as_str())
        .filter(|oid| !oid::is_signable_extension(oid))
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    Err(PolicyViolation::ExtensionsNotPermitted(join(refused.into_iter())))
}

fn check_key(name: &Certname, csr: &Csr) -> Result<(), PolicyViolation> {
    let unsupported =
        |what: String| PolicyViolation::UnsupportedKey { name: name.to_string(), what };
    match &csr.public_key().kind {
        KeyKind::Rsa { bits } if *bits >= MIN_RSA_BITS => Ok(()),
        KeyKind::Rsa { bits } => {
            Err(PolicyViolation::WeakRsaKey { name: name.to_string(), bits: *bits })
        }
        KeyKind::Ec { curve: EcCurve::P256 | EcCurve::P384 } => Ok(()),
        KeyKind::Ec { curve: EcCurve::Unsupported } => {
            Err(unsupported("an EC curve other than P-256 or P-384".into()))
        }
        KeyKind::Other { algorithm } => Err(unsupported(format!("algorithm {algorithm}"))),
    }
}

fn join<T: AsRef<str>>(items: impl Iterator<Item = T>) -> String {
    items.map(|s| s.as_ref().to_owned()).collect::<Vec<_>>().join(", ")
}
