//! Signed `InRelease` files: OpenPGP verification and the SHA256 list of the indexes.

use crate::control::paragraphs;
use crate::openpgp::{self, Cert};
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
                "no signature verifies with the keyring (signed by keys {}): the file was altered, or the keyring lacks the archive's key",
                issuers.join(", ")
            ),
            ReleaseError::Field(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReleaseError {}

/// Parses a keyring: binary (concatenated transferable public keys, as
/// debian-archive-keyring ships) or ASCII-armoured, one or several blocks.
pub fn parse_keyring(bytes: &[u8]) -> Result<Vec<Cert>, ReleaseError> {
    let keyring = ReleaseError::Keyring;
    let certs = match std::str::from_utf8(bytes) {
        Ok(text) if text.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") => {
            let mut certs = Vec::new();
            for block in openpgp::dearmor(text, "PUBLIC KEY BLOCK").map_err(keyring)? {
                certs.extend(openpgp::read_certs(&block).map_err(keyring)?);
            }
            certs
        }
        _ => openpgp::read_certs(bytes).map_err(keyring)?,
    };
    if certs.is_empty() {
        return Err(ReleaseError::Keyring("no public key in it".into()));
    }
    if !certs.iter().any(|c| c.primary.is_supported()) {
        return Err(ReleaseError::Keyring(
            "none of its keys is a v4 RSA or Ed25519 key, the kinds Cairn checks signatures with"
                .into(),
        ));
    }
    Ok(certs)
}

/// Verifies a cleartext-signed InRelease; returns the signed Release text only when at
/// least one signature verifies with a key (or properly bound subkey) of `keyring` that
/// is not revoked.
pub fn verify_inrelease(keyring: &[u8], inrelease: &str) -> Result<String, ReleaseError> {
    let certs = parse_keyring(keyring)?;
    let msg = openpgp::read_cleartext(inrelease).map_err(ReleaseError::Parse)?;
    for sig in &msg.signatures {
        for cert in certs.iter().filter(|c| !c.revoked) {
            let keys = std::iter::once(&cert.primary).chain(&cert.signing_subkeys);
            // Only the key the signature names is tried (each try hashes the whole
            // text); an unnamed issuer leaves every key to try.
            for key in keys.filter(|k| sig.issuer.as_ref().is_none_or(|i| k.is_named_by(i))) {
                if msg.verified_by(sig, key) {
                    return Ok(msg.text);
                }
            }
        }
    }
    let issuers = msg
        .signatures
        .iter()
        .map(|s| s.issuer.clone().unwrap_or_else(|| "(not named)".into()))
        .collect();
    Err(ReleaseError::BadSignature { issuers })
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

#[cfg(any(test, feature = "signing"))]
pub mod signing {
    //! Keys and cleartext signatures made by GnuPG, for tests that serve their own
    //! repository: what Cairn verifies comes from an implementation other than its own.
    use std::path::Path;
    use std::process::{Command, Stdio};

    /// A key pair in its own GnuPG home, removed (agent included) on drop.
    pub struct SecretKey {
        home: tempfile::TempDir,
        /// The fingerprint of the key that signs: the primary key, or a subkey.
        signer: String,
        primary: String,
    }

    fn gpg(home: &Path, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
        let mut child = Command::new("gpg")
            .arg("--homedir")
            .arg(home)
            .args([
                "--batch",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running gpg (apt-get install gpg gpg-agent)");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.unwrap_or_default().to_vec();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            stdin.write_all(&input).unwrap();
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn fingerprints(home: &Path) -> Vec<String> {
        String::from_utf8(gpg(home, &["--with-colons", "--list-keys"], None))
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("fpr:::::::::"))
            .map(|f| f.trim_end_matches(':').to_string())
            .collect()
    }

    /// A fresh key of `algorithm` (`ed25519`, `rsa2048`, ...), as `gpg --quick-gen-key`
    /// names them, that certifies and signs.
    pub fn generate(algorithm: &str) -> SecretKey {
        let home = tempfile::Builder::new()
            .prefix("cairn-gpg-")
            .tempdir()
            .unwrap();
        gpg(
            home.path(),
            &[
                "--quick-gen-key",
                "Cairn Test Archive <test@cairn.invalid>",
                algorithm,
                "cert,sign",
                "never",
            ],
            None,
        );
        let primary = fingerprints(home.path()).remove(0);
        SecretKey {
            home,
            signer: primary.clone(),
            primary,
        }
    }

    /// A fresh ed25519 key, as a third-party archive would have.
    pub fn generate_key() -> SecretKey {
        generate("ed25519")
    }

    impl SecretKey {
        /// Adds a signing subkey of `algorithm`, which signs from then on.
        pub fn add_signing_subkey(&mut self, algorithm: &str) {
            gpg(
                self.home.path(),
                &["--quick-add-key", &self.primary, algorithm, "sign", "never"],
                None,
            );
            self.signer = fingerprints(self.home.path()).pop().unwrap();
        }

        /// Revokes the primary key with the revocation certificate gpg made with it.
        pub fn revoke(&self) {
            let rev = self
                .home
                .path()
                .join("openpgp-revocs.d")
                .join(format!("{}.rev", self.primary));
            // gpg writes it with `:` before the armour so it is not imported by mistake.
            let text = std::fs::read_to_string(&rev)
                .unwrap()
                .replace(":-----", "-----");
            gpg(self.home.path(), &["--import"], Some(text.as_bytes()));
        }

        /// The fingerprint of the key that signs, in lower-case hex.
        pub fn signer(&self) -> String {
            self.signer.to_ascii_lowercase()
        }
    }

    impl Drop for SecretKey {
        fn drop(&mut self) {
            let _ = Command::new("gpgconf")
                .arg("--homedir")
                .arg(self.home.path())
                .args(["--kill", "gpg-agent"])
                .output();
        }
    }

    /// The binary public keyring of `key`.
    pub fn public_keyring(key: &SecretKey) -> Vec<u8> {
        gpg(key.home.path(), &["--export", &key.primary], None)
    }

    /// `text` as a cleartext-signed InRelease, as `gpg --clearsign` writes it.
    pub fn sign_cleartext(key: &SecretKey, text: &str) -> String {
        let signer = format!("{}!", key.signer);
        let out = gpg(
            key.home.path(),
            &[
                "--digest-algo",
                "SHA512",
                "--local-user",
                &signer,
                "--clearsign",
            ],
            Some(text.as_bytes()),
        );
        String::from_utf8(out).unwrap()
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

    const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

    fn debian_keyring() -> Vec<u8> {
        std::fs::read(DEBIAN_KEYRING).unwrap_or_else(|e| {
            panic!("{DEBIAN_KEYRING}: {e} (apt-get install debian-archive-keyring)")
        })
    }

    /// trixie's InRelease as the archive published it on 2026-11-21: two RSA signatures by
    /// signing subkeys and one Ed25519 signature by a primary key.
    fn trixie() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/trixie-InRelease"
        ))
        .unwrap()
    }

    #[test]
    fn debian_archive_signatures_each_verify() {
        let keyring = debian_keyring();
        let text = verify_inrelease(&keyring, &trixie()).unwrap();
        assert!(text.starts_with("Origin: Debian\n"), "{}", &text[..40]);
        let release = Release::parse(&text).unwrap();
        assert_eq!(release.codename.as_deref(), Some("trixie"));
        assert!(release.sha256.contains_key("main/binary-arm64/Packages.xz"));

        // Each signature on its own, with the key that made it.
        let certs = parse_keyring(&keyring).unwrap();
        let msg = openpgp::read_cleartext(&trixie()).unwrap();
        let mut by = Vec::new();
        for sig in &msg.signatures {
            let mut found = None;
            for cert in &certs {
                if msg.verified_by(sig, &cert.primary) {
                    found = Some(("primary", cert.primary.id()));
                }
                for sub in &cert.signing_subkeys {
                    if msg.verified_by(sig, sub) {
                        found = Some(("subkey", sub.id()));
                    }
                }
            }
            by.push(found.expect("every signature verifies with a key of the keyring"));
        }
        assert_eq!(
            by,
            [
                ("subkey", "6ed0e7b82643e131".to_string()),
                ("subkey", "78dba3bc47ef2265".to_string()),
                ("primary", "762f67a0b2c39de4".to_string()),
            ]
        );
    }

    #[test]
    fn an_altered_release_or_a_foreign_keyring_fails() {
        let altered = trixie().replacen("Codename: trixie", "Codename: trixia", 1);
        let err = verify_inrelease(&debian_keyring(), &altered).unwrap_err();
        assert_eq!(
            err,
            ReleaseError::BadSignature {
                issuers: vec![
                    "4cb50190207b4758a3f73a796ed0e7b82643e131".into(),
                    "b8e5f13176d2a7a75220028078dba3bc47ef2265".into(),
                    "41587f7db8c774bccf131416762f67a0b2c39de4".into(),
                ]
            }
        );
        let other = signing::generate_key();
        let err = verify_inrelease(&signing::public_keyring(&other), &trixie()).unwrap_err();
        assert!(matches!(err, ReleaseError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn gnupg_signatures_verify_by_algorithm_and_subkey() {
        // Trailing blanks are not signed; a line starting with `-` is dash-escaped.
        let text = "Origin: Cairn Tests  \n- dash\n\nSuite: t\t\n";
        let expected = "Origin: Cairn Tests\n- dash\n\nSuite: t\n";
        let mut keys = Vec::new();
        for algorithm in ["ed25519", "rsa2048", "rsa4096"] {
            keys.push(signing::generate(algorithm));
        }
        let mut with_subkey = signing::generate("ed25519");
        with_subkey.add_signing_subkey("rsa3072");
        keys.push(with_subkey);
        for key in &keys {
            let signed = signing::sign_cleartext(key, text);
            let keyring = signing::public_keyring(key);
            assert_eq!(
                verify_inrelease(&keyring, &signed).as_deref(),
                Ok(expected),
                "{}",
                key.signer()
            );
            let altered = signed.replacen("Suite: t", "Suite: u", 1);
            assert_eq!(
                verify_inrelease(&keyring, &altered),
                Err(ReleaseError::BadSignature {
                    issuers: vec![key.signer()]
                })
            );
        }
        // The ed25519 key does not verify the RSA key's signature.
        let signed = signing::sign_cleartext(&keys[1], text);
        assert!(verify_inrelease(&signing::public_keyring(&keys[0]), &signed).is_err());

        // A subkey without its binding signature is not the key's.
        let with_subkey = &keys[3];
        let signed = signing::sign_cleartext(with_subkey, text);
        let keyring = signing::public_keyring(with_subkey);
        let mut unbound = Vec::new();
        let mut after_subkey = false;
        for p in openpgp::packets(&keyring).unwrap() {
            after_subkey |= p.tag == 14;
            if p.tag == 2 && after_subkey {
                continue;
            }
            // New-format headers, as the test rewrites them.
            unbound.push(0xc0 | p.tag);
            unbound.push(255);
            unbound.extend_from_slice(&(p.body.len() as u32).to_be_bytes());
            unbound.extend_from_slice(p.body);
        }
        let certs = parse_keyring(&unbound).unwrap();
        assert!(certs[0].signing_subkeys.is_empty());
        assert!(verify_inrelease(&unbound, &signed).is_err());
        // Nor with a binding signature that does not verify (its last byte changed).
        let mut forged = keyring.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(openpgp::packets(&forged).unwrap().last().unwrap().tag, 2);
        assert!(
            parse_keyring(&forged).unwrap()[0]
                .signing_subkeys
                .is_empty()
        );
        assert!(verify_inrelease(&forged, &signed).is_err());
        assert_eq!(parse_keyring(&keyring).unwrap()[0].signing_subkeys.len(), 1);
    }

    #[test]
    fn a_revoked_key_verifies_nothing() {
        let key = signing::generate("ed25519");
        let signed = signing::sign_cleartext(&key, "Suite: t\n");
        assert!(verify_inrelease(&signing::public_keyring(&key), &signed).is_ok());
        key.revoke();
        let keyring = signing::public_keyring(&key);
        assert!(parse_keyring(&keyring).unwrap()[0].revoked);
        assert!(verify_inrelease(&keyring, &signed).is_err());
    }

    #[test]
    fn armoured_keyrings_and_framing() {
        let key = signing::generate("ed25519");
        let signed = signing::sign_cleartext(&key, "Suite: t\n");
        let binary = signing::public_keyring(&key);
        let armoured = format!(
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n{}\n-----END PGP PUBLIC KEY BLOCK-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &binary)
        );
        // Two blocks: another key first, then this one.
        let other = signing::public_keyring(&signing::generate("ed25519"));
        let both = format!(
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: other\n\n{}\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n{armoured}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &other)
        );
        assert_eq!(parse_keyring(both.as_bytes()).unwrap().len(), 2);
        assert!(verify_inrelease(both.as_bytes(), &signed).is_ok());

        let before = format!("Suite: evil\n{signed}");
        let after = format!("{signed}Suite: evil\n");
        for bad in [
            before,
            after,
            signed.replacen("\nSuite: t", "\n-Suite: t", 1),
        ] {
            assert!(
                matches!(verify_inrelease(&binary, &bad), Err(ReleaseError::Parse(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn garbage_keyring_is_an_error() {
        assert!(matches!(
            parse_keyring(b"not a key"),
            Err(ReleaseError::Keyring(_))
        ));
    }
}
