//! Signing keys, in the forms the ecosystem writes them: an unencrypted PKCS#8 PEM P-256 key
//! (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`), cosign's encrypted
//! key file (`cosign generate-key-pair`: scrypt, then NaCl's secretbox around the PKCS#8
//! key), and public keys as PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
//!
//! Signatures are ECDSA P-256 over SHA-256, DER-encoded, with RFC 6979 nonces: the same key
//! and message give the same signature, so signing keeps publishing reproducible.

use crate::TrustError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use xsalsa20poly1305::aead::{Aead, KeyInit};

/// The environment variable cosign reads an encrypted key's password from.
pub const PASSWORD_ENV: &str = "COSIGN_PASSWORD";

/// PEM types of cosign's encrypted keys (the newer first).
const ENCRYPTED_TYPES: [&str; 2] = [
    "ENCRYPTED SIGSTORE PRIVATE KEY",
    "ENCRYPTED COSIGN PRIVATE KEY",
];

/// scrypt's cost for keys Cairn writes: the one every cosign version reads (N = 2^15).
const SCRYPT_LOG_N: u8 = 15;

/// A P-256 signing key. Its `Debug` shows only the public key's id.
pub struct SigningKey(p256::ecdsa::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public().id())
    }
}

/// A P-256 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(p256::ecdsa::VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(kind) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {kind}-----");
        let mut body = String::new();
        for l in lines.by_ref() {
            if l.trim() == end {
                break;
            }
            body.push_str(l.trim());
        }
        if let Ok(bytes) = B64.decode(body.as_bytes()) {
            out.push((kind.to_string(), bytes));
        }
    }
    out
}

fn pem(kind: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {kind}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {kind}-----\n"));
    out
}

impl SigningKey {
    /// Reads a key file: PKCS#8 PEM, or cosign's encrypted key with its password in
    /// `COSIGN_PASSWORD`.
    pub fn load(path: &std::path::Path) -> Result<SigningKey, TrustError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TrustError(format!("signing key {}: {e}", path.display())))?;
        let password = std::env::var_os(PASSWORD_ENV).map(|p| p.into_encoded_bytes());
        SigningKey::from_pem(&text, password.as_deref(), &path.display().to_string())
    }

    /// A new random key.
    pub fn generate() -> Result<SigningKey, TrustError> {
        loop {
            let mut bytes = [0u8; 32];
            getrandom::getrandom(&mut bytes)
                .map_err(|e| TrustError(format!("no randomness from the system: {e}")))?;
            // A scalar of zero or above the group order is refused: draw again.
            if let Ok(k) = p256::ecdsa::SigningKey::from_bytes((&bytes).into()) {
                return Ok(SigningKey(k));
            }
        }
    }

    /// Reads a key file's text: PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY`, or cosign's
    /// encrypted key (which needs `password`). `what` names the file in errors.
    pub fn from_pem(
        text: &str,
        password: Option<&[u8]>,
        what: &str,
    ) -> Result<SigningKey, TrustError> {
        let blocks = pem_blocks(text);
        for (kind, der) in &blocks {
            match kind.as_str() {
                "PRIVATE KEY" => {
                    return p256::ecdsa::SigningKey::from_pkcs8_der(der).map(SigningKey).map_err(|e| {
                        TrustError(format!(
                            "{what} is not a P-256 private key ({e}): make one with `cargo xtask keygen` or `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`"
                        ))
                    });
                }
                "EC PRIVATE KEY" => {
                    return p256::SecretKey::from_sec1_der(der)
                        .map(|k| SigningKey(k.into()))
                        .map_err(|e| {
                            TrustError(format!("{what} is not a P-256 EC private key: {e}"))
                        });
                }
                k if ENCRYPTED_TYPES.contains(&k) => {
                    let password = password.ok_or_else(|| {
                        TrustError(format!(
                            "{what} is cosign's encrypted key: set {PASSWORD_ENV} to its password"
                        ))
                    })?;
                    let der = decrypt(der, password)
                        .map_err(|e| TrustError(format!("{what}: {}", e.0)))?;
                    return p256::ecdsa::SigningKey::from_pkcs8_der(&der)
                        .map(SigningKey)
                        .map_err(|e| TrustError(format!("{what} holds no P-256 key ({e})")));
                }
                _ => {}
            }
        }
        let kinds: Vec<&str> = blocks.iter().map(|(k, _)| k.as_str()).collect();
        Err(TrustError(format!(
            "{what} holds no private key ({}): expected PEM `PRIVATE KEY` (PKCS#8 P-256) or cosign's `ENCRYPTED SIGSTORE PRIVATE KEY`",
            if kinds.is_empty() {
                "no PEM block".to_string()
            } else {
                format!("found {}", kinds.join(", "))
            }
        )))
    }

    /// The key as unencrypted PKCS#8 PEM (what openssl writes).
    pub fn to_pkcs8_pem(&self) -> Result<String, TrustError> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|s| s.to_string())
            .map_err(|e| TrustError(format!("encoding the key: {e}")))
    }

    /// The key as cosign's encrypted key file, under `password`.
    pub fn to_cosign_pem(&self, password: &[u8]) -> Result<String, TrustError> {
        let der = self
            .0
            .to_pkcs8_der()
            .map_err(|e| TrustError(format!("encoding the key: {e}")))?;
        let body = encrypt(der.as_bytes(), password)?;
        Ok(pem(ENCRYPTED_TYPES[0], &body))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }

    /// ECDSA P-256 over SHA-256 of `message`, DER-encoded.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = self.0.sign(message);
        sig.to_der().as_bytes().to_vec()
    }
}

impl PublicKey {
    pub fn load(path: &std::path::Path) -> Result<PublicKey, TrustError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TrustError(format!("public key {}: {e}", path.display())))?;
        PublicKey::from_pem(&text, &path.display().to_string())
    }

    pub fn from_pem(text: &str, what: &str) -> Result<PublicKey, TrustError> {
        for (kind, der) in pem_blocks(text) {
            if kind == "PUBLIC KEY" {
                return p256::ecdsa::VerifyingKey::from_public_key_der(&der)
                    .map(PublicKey)
                    .map_err(|e| TrustError(format!("{what} is not a P-256 public key: {e}")));
            }
        }
        Err(TrustError(format!(
            "{what} holds no PEM `PUBLIC KEY` block (the `.pub` file `cargo xtask keygen` or `cosign generate-key-pair` writes)"
        )))
    }

    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 public key encodes")
    }

    fn der(&self) -> Vec<u8> {
        self.0
            .to_public_key_der()
            .expect("a P-256 public key encodes")
            .as_bytes()
            .to_vec()
    }

    /// `sha256:<hex>` of the key's SubjectPublicKeyInfo: how messages name a key.
    pub fn id(&self) -> String {
        cairn_formats::Digest::of(&self.der()).to_string()
    }

    /// Whether `signature` (DER) is this key's ECDSA P-256 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        p256::ecdsa::Signature::from_der(signature)
            .is_ok_and(|sig| self.0.verify(message, &sig).is_ok())
    }
}

/// cosign's (go-securesystemslib's) encrypted form: JSON naming the KDF and cipher, with
/// the secretbox output (tag, then ciphertext) in base64.
fn encrypt(plaintext: &[u8], password: &[u8]) -> Result<Vec<u8>, TrustError> {
    let mut salt = [0u8; 32];
    let mut nonce = [0u8; 24];
    getrandom::getrandom(&mut salt)
        .and_then(|()| getrandom::getrandom(&mut nonce))
        .map_err(|e| TrustError(format!("no randomness from the system: {e}")))?;
    let key = kdf(password, &salt, SCRYPT_LOG_N, 8, 1)?;
    let cipher = xsalsa20poly1305::XSalsa20Poly1305::new((&key).into());
    // The crate's output is NaCl's secretbox layout (tag, then ciphertext), as cosign's.
    let boxed = cipher
        .encrypt((&nonce).into(), plaintext)
        .map_err(|_| TrustError("encrypting the key failed".into()))?;
    let doc = serde_json::json!({
        "kdf": {"name": "scrypt", "params": {"N": 1u32 << SCRYPT_LOG_N, "r": 8, "p": 1}, "salt": B64.encode(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": B64.encode(nonce)},
        "ciphertext": B64.encode(&boxed),
    });
    Ok(serde_json::to_vec(&doc).expect("json"))
}

fn decrypt(body: &[u8], password: &[u8]) -> Result<Vec<u8>, TrustError> {
    let bad = |why: &str| TrustError(format!("not a cosign encrypted key ({why})"));
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|_| bad("not JSON"))?;
    if doc["kdf"]["name"] != "scrypt" || doc["cipher"]["name"] != "nacl/secretbox" {
        return Err(bad("expected scrypt and nacl/secretbox"));
    }
    let params = &doc["kdf"]["params"];
    let (n, r, p) = (
        params["N"].as_u64().unwrap_or(0),
        params["r"].as_u64().unwrap_or(0),
        params["p"].as_u64().unwrap_or(0),
    );
    // The parameters cosign's library accepts; anything else could be a denial of service.
    if !matches!(n, 32768 | 65536 | 131072) || r != 8 || p != 1 {
        return Err(bad(&format!(
            "unsupported scrypt parameters N={n} r={r} p={p}"
        )));
    }
    let field = |v: &serde_json::Value, name: &str| {
        v.as_str()
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| bad(&format!("no {name}")))
    };
    let salt = field(&doc["kdf"]["salt"], "salt")?;
    let nonce = field(&doc["cipher"]["nonce"], "nonce")?;
    let boxed = field(&doc["ciphertext"], "ciphertext")?;
    if nonce.len() != 24 || boxed.len() < 16 {
        return Err(bad("a short nonce or ciphertext"));
    }
    let key = kdf(password, &salt, n.trailing_zeros() as u8, 8, 1)?;
    let cipher = xsalsa20poly1305::XSalsa20Poly1305::new((&key).into());
    let nonce: [u8; 24] = nonce.try_into().expect("checked");
    cipher
        .decrypt((&nonce).into(), boxed.as_slice())
        .map_err(|_| {
            TrustError(format!(
                "the password in {PASSWORD_ENV} does not open it (or the file was altered)"
            ))
        })
}

fn kdf(password: &[u8], salt: &[u8], log_n: u8, r: u32, p: u32) -> Result<[u8; 32], TrustError> {
    let params = scrypt::Params::new(log_n, r, p, 32)
        .map_err(|e| TrustError(format!("scrypt parameters: {e}")))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut key)
        .map_err(|e| TrustError(format!("scrypt: {e}")))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// go-securesystemslib's published known-answer vector (what cosign's key files use).
    #[test]
    fn opens_the_reference_encrypted_vector() {
        let body = br#"{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"N9a7x5JFGbrtB2uBR81jPwp0eiLR4A7FV3mjVAQrg1g="},"cipher":{"name":"nacl/secretbox","nonce":"2h8HxMmgRfuYdpswZBQaU3xJ1nkA/5Ik"},"ciphertext":"SEW6sUh0jf2wfdjJGPNS9+bkk2uB+Cxamf32zR8XkQ=="}"#;
        assert_eq!(decrypt(body, b"supersecret").unwrap(), b"reallyimportant");
        assert!(decrypt(body, b"supersecreT").is_err());
        let huge = String::from_utf8_lossy(body).replace("32768", "1048576");
        assert!(
            decrypt(huge.as_bytes(), b"supersecret")
                .unwrap_err()
                .0
                .contains("unsupported scrypt parameters")
        );
    }

    #[test]
    fn keys_round_trip_and_sign_deterministically() {
        let key = SigningKey::generate().unwrap();
        let pkcs8 = key.to_pkcs8_pem().unwrap();
        assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = SigningKey::from_pem(&pkcs8, None, "k").unwrap();
        assert_eq!(again.public(), key.public());
        let cosign = key.to_cosign_pem(b"pw").unwrap();
        assert!(cosign.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        let err = SigningKey::from_pem(&cosign, None, "cosign.key").unwrap_err();
        assert!(err.0.contains("set COSIGN_PASSWORD"), "{err:?}");
        let err = SigningKey::from_pem(&cosign, Some(b"wrong"), "cosign.key").unwrap_err();
        assert!(err.0.contains("does not open it"), "{err:?}");
        let opened = SigningKey::from_pem(&cosign, Some(b"pw"), "cosign.key").unwrap();
        assert_eq!(opened.public(), key.public());

        let public = PublicKey::from_pem(&key.public().to_pem(), "k.pub").unwrap();
        let sig = key.sign(b"payload");
        assert_eq!(sig, key.sign(b"payload"), "RFC 6979: deterministic");
        assert!(public.verify(b"payload", &sig));
        assert!(!public.verify(b"payload!", &sig));
        let other = SigningKey::generate().unwrap();
        assert!(!other.public().verify(b"payload", &sig));
        assert!(
            PublicKey::from_pem(&pkcs8, "k")
                .unwrap_err()
                .0
                .contains("no PEM `PUBLIC KEY`")
        );
        assert!(
            format!("{key:?}").starts_with("SigningKey(sha256:"),
            "no secret in Debug"
        );
    }
}
