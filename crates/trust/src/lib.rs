//! Trust in what Cairn publishes: signing keys (PKCS#8 P-256 or cosign's encrypted key
//! files) and cosign's signature format, so `cosign verify` and Harbor read Cairn's
//! signatures and Cairn reads theirs; DSSE envelopes for in-toto attestations (SBOM,
//! provenance).

pub mod cosign;
pub mod dsse;
pub mod keys;
pub mod record;

pub use keys::{PublicKey, SigningKey};

/// A trust failure, as a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustError(pub String);

impl std::fmt::Display for TrustError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TrustError {}
