//! Signed `InRelease` files: OpenPGP verification and the SHA256 list of the indexes.

use crate::control::paragraphs;
use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseError {
    Keyring(String),
    Parse(String),
    /// No signature verified with any key of the keyring.
    BadSignature {
        issuers: Vec<String>,
    },
    Field(String),
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseError::Keyring(e) => write!(f, "keyring: {e}"),
            ReleaseError::Parse(e) => write!(f, "not a signed InRelease file: {e}"),
            ReleaseError::BadSignature { issuers } => write!(
                f,
                "no signature verifies with the keyring (signed by key ids {}): the file was altered, or the keyring lacks the archive's key",
                issuers.join(", ")
            ),
            ReleaseError::Field(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReleaseError {}

/// Parses a keyring: binary (concatenated transferable public keys, as
/// debian-archive-keyring ships) or ASCII-armoured, one or several blocks.
pub fn parse_keyring(bytes: &[u8]) -> Result<Vec<SignedPublicKey>, ReleaseError> {
    const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
    let mut keys = Vec::new();
    match std::str::from_utf8(bytes) {
        Ok(text) if text.contains(BEGIN) => {
            // The armour reader stops after the first block, so split per block.
            for block in text.split(BEGIN).skip(1) {
                let armored = format!("{BEGIN}{block}");
                let (iter, _) = SignedPublicKey::from_armor_many(armored.as_bytes())
                    .map_err(|e| ReleaseError::Keyring(e.to_string()))?;
                keys.extend(iter.filter_map(Result::ok));
            }
        }
        _ => {
            let iter = SignedPublicKey::from_bytes_many(bytes)
                .map_err(|e| ReleaseError::Keyring(e.to_string()))?;
            keys.extend(iter.filter_map(Result::ok));
        }
    }
    if keys.is_empty() {
        return Err(ReleaseError::Keyring("no usable public key in it".into()));
    }
    Ok(keys)
}

/// Verifies a cleartext-signed InRelease; returns the signed Release text only when at
/// least one signature verifies with a key (or properly bound subkey) of `keyring`.
pub fn verify_inrelease(keyring: &[u8], inrelease: &str) -> Result<String, ReleaseError> {
    let keys = parse_keyring(keyring)?;
    let (msg, _) = CleartextSignedMessage::from_string(inrelease)
        .map_err(|e| ReleaseError::Parse(e.to_string()))?;
    if msg.signatures().is_empty() {
        return Err(ReleaseError::Parse("it carries no signature".into()));
    }
    let signed = msg.signed_text();
    for sig in msg.signatures() {
        for key in &keys {
            if sig.verify(&key.primary_key, signed.as_bytes()).is_ok() {
                return Ok(to_lf(&signed));
            }
            for sub in &key.public_subkeys {
                if sig.verify(&sub.key, signed.as_bytes()).is_ok()
                    && sub.verify_bindings(&key.primary_key).is_ok()
                {
                    return Ok(to_lf(&signed));
                }
            }
        }
    }
    let issuers = msg
        .signatures()
        .iter()
        .flat_map(|s| {
            s.issuer_key_id()
                .into_iter()
                .map(|k| hex::encode(k.as_ref()))
        })
        .collect();
    Err(ReleaseError::BadSignature { issuers })
}

fn to_lf(signed: &str) -> String {
    let mut s = signed.replace("\r\n", "\n");
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// A verified Release file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub suite: Option<String>,
    pub codename: Option<String>,
    /// `Date`, as seconds since the epoch.
    pub date: u64,
    /// `Valid-Until`, as seconds since the epoch, when the archive sets one.
    pub valid_until: Option<u64>,
    /// Index path (`main/binary-arm64/Packages.xz`) -> (size, sha256 hex).
    pub sha256: BTreeMap<String, (u64, String)>,
}

impl Release {
    pub fn parse(text: &str) -> Result<Release, ReleaseError> {
        let para = paragraphs(text)
            .next()
            .ok_or_else(|| ReleaseError::Field("empty Release file".into()))?;
        let date_text = para
            .get("Date")
            .ok_or_else(|| ReleaseError::Field("Release has no Date".into()))?;
        let date = parse_rfc2822(date_text).ok_or_else(|| {
            ReleaseError::Field(format!(
                "Release Date {date_text:?} is not an RFC 2822 date"
            ))
        })?;
        let mut sha256 = BTreeMap::new();
        for line in para.get("SHA256").unwrap_or("").lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let [hash, size, path] = parts[..] {
                let size = size.parse().map_err(|_| {
                    ReleaseError::Field(format!("bad size in SHA256 line {line:?}"))
                })?;
                sha256.insert(path.to_string(), (size, hash.to_ascii_lowercase()));
            }
        }
        if sha256.is_empty() {
            return Err(ReleaseError::Field("Release has no SHA256 list".into()));
        }
        Ok(Release {
            suite: para.get("Suite").map(str::to_string),
            codename: para.get("Codename").map(str::to_string),
            date,
            valid_until: para.get("Valid-Until").and_then(parse_rfc2822),
            sha256,
        })
    }
}

/// `Sat, 21 Nov 2026 08:12:33 UTC` (or `+0000`) -> seconds since the epoch.
pub fn parse_rfc2822(s: &str) -> Option<u64> {
    let s = s.split_once(',').map_or(s, |(_, rest)| rest).trim();
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [day, month, year, time, zone, ..] = parts[..] else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month)? as i64
        + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms[..] else { return None };
    let offset = match zone {
        "UTC" | "GMT" | "Z" => 0,
        z if z.len() == 5 && z.is_ascii() && (z.starts_with('+') || z.starts_with('-')) => {
            let v: i64 = z[1..3].parse::<i64>().ok()? * 3600 + z[3..5].parse::<i64>().ok()? * 60;
            if z.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    // days_from_civil (Howard Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t = days * 86_400 + h * 3600 + m * 60 + sec - offset;
    u64::try_from(t).ok()
}

#[cfg(feature = "signing")]
pub mod signing {
    //! Key generation and cleartext signing, for tests that serve their own repository.
    use pgp::composed::{CleartextSignedMessage, KeyType, SecretKeyParamsBuilder, SignedSecretKey};
    use pgp::ser::Serialize;
    use pgp::types::Password;

    pub use pgp::composed::SignedSecretKey as SecretKey;

    /// A fresh ed25519 signing key (v4, which gpgv 2.2 reads too).
    pub fn generate_key() -> SignedSecretKey {
        SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .primary_user_id("Cairn Test Archive <test@cairn.invalid>".into())
            .build()
            .expect("key parameters are complete")
            .generate(rand::thread_rng())
            .expect("key generation")
    }

    /// The binary public keyring of `key`.
    pub fn public_keyring(key: &SignedSecretKey) -> Vec<u8> {
        key.to_public_key()
            .to_bytes()
            .expect("serialising a public key")
    }

    /// `text` as a cleartext-signed InRelease.
    pub fn sign_cleartext(key: &SignedSecretKey, text: &str) -> String {
        CleartextSignedMessage::sign(
            rand::thread_rng(),
            text,
            &key.primary_key,
            &Password::empty(),
        )
        .expect("signing")
        .to_armored_string(Default::default())
        .expect("armouring")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_rfc2822("Tue, 14 Nov 2023 22:13:20 UTC"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rfc2822("Tue, 14 Nov 2023 23:13:20 +0100"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rfc2822("Tue, 29 Feb 2000 00:00:00 UTC"),
            Some(951_782_400)
        );
        assert_eq!(parse_rfc2822("yesterday"), None);
        assert_eq!(parse_rfc2822("Tue, 14 Nov 2023 23:13:20 +é0"), None);
    }

    #[test]
    fn release_fields() {
        let text = "Origin: Debian\nSuite: testing\nCodename: trixie\nDate: Tue, 14 Nov 2023 22:13:20 UTC\nSHA256:\n 0a 12 main/binary-amd64/Packages.xz\n 0b 99 main/binary-arm64/Packages\n";
        let r = Release::parse(text).unwrap();
        assert_eq!(r.date, 1_700_000_000);
        assert_eq!(r.codename.as_deref(), Some("trixie"));
        assert_eq!(
            r.sha256["main/binary-amd64/Packages.xz"],
            (12, "0a".to_string())
        );
    }

    #[test]
    fn garbage_keyring_is_an_error() {
        assert!(matches!(
            parse_keyring(b"not a key"),
            Err(ReleaseError::Keyring(_))
        ));
    }
}
