//! Key pairs: the algorithms crossbar generates, and loading keys from PEM files.

use std::{fmt, str::FromStr};

use rcgen::{KeyPair, RsaKeySize, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256};
use thiserror::Error;

/// Key algorithms for the CA and for certificates crossbar generates itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// RSA with a 4096-bit modulus: Puppet's default `keylength`.
    #[default]
    Rsa4096,
    Rsa2048,
    EcP256,
    EcP384,
}

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("unknown key algorithm {0:?}: expected rsa-4096, rsa-2048, ec-p256 or ec-p384")]
    UnknownAlgorithm(String),
    #[error("could not generate a {alg} key: {source}")]
    Generate { alg: KeyAlgorithm, source: rcgen::Error },
    #[error("not a usable private key (PKCS#8, PKCS#1 RSA or SEC1 EC, unencrypted): {0}")]
    Load(rcgen::Error),
}

impl KeyAlgorithm {
    /// A fresh key pair of this algorithm.
    pub fn generate(self) -> Result<KeyPair, KeyError> {
        let result = match self {
            Self::Rsa4096 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_4096),
            Self::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
            Self::EcP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
            Self::EcP384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
        };
        result.map_err(|source| KeyError::Generate { alg: self, source })
    }
}

impl FromStr for KeyAlgorithm {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rsa-4096" | "rsa" => Ok(Self::Rsa4096),
            "rsa-2048" => Ok(Self::Rsa2048),
            "ec-p256" | "ec" => Ok(Self::EcP256),
            "ec-p384" => Ok(Self::EcP384),
            other => Err(KeyError::UnknownAlgorithm(other.to_owned())),
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rsa4096 => "rsa-4096",
            Self::Rsa2048 => "rsa-2048",
            Self::EcP256 => "ec-p256",
            Self::EcP384 => "ec-p384",
        })
    }
}

/// Loads a private key from PEM, whatever its encoding; RSA keys sign with SHA-256, as
/// puppetserver's do.
pub fn load_key_pem(pem: &str) -> Result<KeyPair, KeyError> {
    KeyPair::from_pem(pem).map_err(KeyError::Load)
}

/// The public half of `key`, as policy and issuing see it.
pub fn public_key_info(key: &KeyPair) -> Option<crate::csr::PublicKeyInfo> {
    use rcgen::PublicKeyData;
    crate::csr::PublicKeyInfo::from_spki_der(&key.subject_public_key_info())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_round_trip_through_their_names() {
        for alg in [
            KeyAlgorithm::Rsa4096,
            KeyAlgorithm::Rsa2048,
            KeyAlgorithm::EcP256,
            KeyAlgorithm::EcP384,
        ] {
            assert_eq!(alg.to_string().parse::<KeyAlgorithm>().ok(), Some(alg));
        }
        assert!("dsa".parse::<KeyAlgorithm>().is_err());
    }

    #[test]
    fn generated_keys_load_back() {
        for alg in [KeyAlgorithm::EcP256, KeyAlgorithm::EcP384] {
            let key = alg.generate().expect("generate");
            let loaded = load_key_pem(&key.serialize_pem()).expect("load");
            assert_eq!(loaded.public_key_raw(), key.public_key_raw());
        }
        assert!(
            load_key_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err()
        );
    }
}
