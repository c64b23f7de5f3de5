//! OpenPGP, as far as checking an archive's `InRelease` needs it (RFC 4880 and RFC 9580):
//! keyrings of v4 keys, cleartext-signed messages, and v4 signatures by RSA and Ed25519
//! keys, through `ring`, which the TLS stack already brings.
//!
//! Written by hand instead of taking a general OpenPGP crate: the one Cairn used brought
//! every algorithm OpenPGP ever had (73 crates, a quarter of the first compile) for two
//! verifications. Nothing here is secret: every input is public, so the code need not be
//! constant-time. A key that is not v4, or of another algorithm, is kept only to be named.
//!
//! What is checked, as gpgv does it: a signing subkey counts only with a binding signature
//! from its primary key and a back-signature from itself; a revocation signature that
//! verifies takes the key out; a critical subpacket not understood voids its signature.
//! Expiry is not checked (a pinned lock is read long after its keys expire).

use base64::Engine;
use ring::{digest, signature};
use std::fmt::Write as _;

/// One public key: a primary key or a subkey.
#[derive(Debug, Clone)]
pub struct Key {
    /// The v4 fingerprint (SHA-1 of the key packet), or empty for another version.
    pub fingerprint: Vec<u8>,
    material: Material,
    /// The packet body, hashed into signatures over the key.
    body: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ed25519([u8; 32]),
    /// Another version or algorithm.
    Unsupported,
}

/// A transferable public key: the primary key and the subkeys bound to it for signing.
#[derive(Debug, Clone)]
pub struct Cert {
    pub primary: Key,
    /// Subkeys that may sign: bound by the primary key, cross-certified, not revoked.
    pub signing_subkeys: Vec<Key>,
    /// The primary key carries a revocation signature that verifies.
    pub revoked: bool,
}

impl Key {
    /// The key ID: the fingerprint's last 8 bytes, in hex.
    pub fn id(&self) -> String {
        hex::encode(&self.fingerprint[self.fingerprint.len().saturating_sub(8)..])
    }

    /// Whether `issuer` (a fingerprint or key ID in lower-case hex, as a signature's
    /// subpacket gives it) names this key.
    pub fn is_named_by(&self, issuer: &str) -> bool {
        !self.fingerprint.is_empty() && hex::encode(&self.fingerprint).ends_with(issuer)
    }

    pub fn is_supported(&self) -> bool {
        !matches!(self.material, Material::Unsupported)
    }

    /// What signatures over this key hash first: `0x99`, the body's length, the body.
    fn hashed_form(&self, out: &mut Vec<u8>) {
        out.push(0x99);
        out.extend_from_slice(&(self.body.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.body);
    }
}

/// A packet: its tag and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub tag: u8,
    pub body: &'a [u8],
}

/// Splits `data` into packets (both header formats). Partial lengths belong to data
/// packets, never to keys or signatures, so they are refused.
pub fn packets(mut data: &[u8]) -> Result<Vec<Packet<'_>>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let first = data[0];
        if first & 0x80 == 0 {
            return Err(format!(
                "byte {first:#04x} does not start an OpenPGP packet"
            ));
        }
        let (tag, header, len): (u8, usize, usize) = if first & 0x40 != 0 {
            let tag = first & 0x3f;
            match data.get(1).copied() {
                Some(o) if o < 192 => (tag, 2, o as usize),
                Some(o) if o < 224 => {
                    let o2 = *data.get(2).ok_or("a packet header is cut short")?;
                    (tag, 3, ((o as usize - 192) << 8) + o2 as usize + 192)
                }
                Some(255) => {
                    let b = data.get(2..6).ok_or("a packet header is cut short")?;
                    (tag, 6, u32::from_be_bytes(b.try_into().unwrap()) as usize)
                }
                Some(_) => {
                    return Err(format!(
                        "packet of tag {tag} has a partial length, which keys and signatures never use"
                    ));
                }
                None => return Err("a packet header is cut short".into()),
            }
        } else {
            let tag = (first >> 2) & 0x0f;
            match first & 3 {
                0 => (
                    tag,
                    2,
                    *data.get(1).ok_or("a packet header is cut short")? as usize,
                ),
                1 => {
                    let b = data.get(1..3).ok_or("a packet header is cut short")?;
                    (tag, 3, u16::from_be_bytes(b.try_into().unwrap()) as usize)
                }
                2 => {
                    let b = data.get(1..5).ok_or("a packet header is cut short")?;
                    (tag, 5, u32::from_be_bytes(b.try_into().unwrap()) as usize)
                }
                _ => (tag, 1, data.len() - 1),
            }
        };
        let end = header
            .checked_add(len)
            .filter(|&end| end <= data.len())
            .ok_or_else(|| format!("a packet of tag {tag} runs past the end of the data"))?;
        out.push(Packet {
            tag,
            body: &data[header..end],
        });
        data = &data[end..];
    }
    Ok(out)
}

/// A little reader over a packet body.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.data.len() < n {
            return Err("a packet is cut short".into());
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<usize, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    /// A multiprecision integer: its bit count, then its big-endian bytes.
    fn mpi(&mut self) -> Result<&'a [u8], String> {
        let bits = self.u16()?;
        self.take(bits.div_ceil(8))
    }
}

/// Parses a public key or subkey packet body.
fn parse_key(body: &[u8]) -> Result<Key, String> {
    let mut r = Reader { data: body };
    let version = r.u8()?;
    if version != 4 {
        return Ok(Key {
            fingerprint: Vec::new(),
            material: Material::Unsupported,
            body: body.to_vec(),
        });
    }
    r.take(4)?; // creation time
    let algorithm = r.u8()?;
    let material = match algorithm {
        // RSA (encrypt or sign), RSA sign-only.
        1 | 3 => {
            let n = strip_zeros(r.mpi()?).to_vec();
            let e = strip_zeros(r.mpi()?).to_vec();
            Material::Rsa { n, e }
        }
        // EdDSA (the legacy form, with the curve's OID): only Ed25519 is in use.
        22 => {
            let oid_len = r.u8()? as usize;
            let oid = r.take(oid_len)?;
            let point = r.mpi()?;
            const ED25519: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x0f, 0x01];
            match (oid == ED25519, point) {
                (true, [0x40, rest @ ..]) if rest.len() == 32 => {
                    Material::Ed25519(rest.try_into().unwrap())
                }
                _ => Material::Unsupported,
            }
        }
        27 => Material::Ed25519(r.take(32)?.try_into().unwrap()),
        _ => Material::Unsupported,
    };
    let mut hashed = Vec::with_capacity(body.len() + 3);
    let mut key = Key {
        fingerprint: Vec::new(),
        material,
        body: body.to_vec(),
    };
    key.hashed_form(&mut hashed);
    key.fingerprint = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &hashed)
        .as_ref()
        .to_vec();
    Ok(key)
}

fn strip_zeros(mut b: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = b {
        b = rest;
    }
    b
}

/// A v4 signature packet, parsed.
#[derive(Debug, Clone)]
pub struct Signature {
    pub kind: u8,
    algorithm: u8,
    hash: u8,
    /// From the version octet to the end of the hashed subpackets: hashed after the data.
    hashed_part: Vec<u8>,
    /// The issuer's fingerprint (subpacket 33) or key ID (16), in hex, as the signature
    /// names it; the key is never taken on this word, only tried first.
    pub issuer: Option<String>,
    /// Key flags (subpacket 27, first octet), when the hashed area has them.
    key_flags: Option<u8>,
    /// An embedded signature (subpacket 32): a subkey's back-signature.
    embedded: Option<Box<Signature>>,
    /// A critical subpacket this code does not understand voids the signature.
    critical_unknown: Option<u8>,
    values: Vec<Vec<u8>>,
    version: u8,
}

/// Parses a signature packet body. Versions other than 4 parse, and never verify.
pub fn parse_signature(body: &[u8]) -> Result<Signature, String> {
    parse_signature_in(body, false)
}

/// `embedded`: this is a back-signature inside another, and may hold none itself (a
/// nest of them would otherwise recurse as deep as the input is long).
fn parse_signature_in(body: &[u8], embedded: bool) -> Result<Signature, String> {
    let mut r = Reader { data: body };
    let version = r.u8()?;
    let mut sig = Signature {
        kind: 0,
        algorithm: 0,
        hash: 0,
        hashed_part: Vec::new(),
        issuer: None,
        key_flags: None,
        embedded: None,
        critical_unknown: None,
        values: Vec::new(),
        version,
    };
    if version != 4 {
        return Ok(sig);
    }
    sig.kind = r.u8()?;
    sig.algorithm = r.u8()?;
    sig.hash = r.u8()?;
    let hashed_len = r.u16()?;
    let hashed = r.take(hashed_len)?;
    sig.hashed_part = body[..6 + hashed_len].to_vec();
    read_subpackets(hashed, true, embedded, &mut sig)?;
    let unhashed_len = r.u16()?;
    let unhashed = r.take(unhashed_len)?;
    read_subpackets(unhashed, false, embedded, &mut sig)?;
    r.take(2)?; // the digest's first two octets, a quick check only
    match sig.algorithm {
        1 | 3 => sig.values.push(r.mpi()?.to_vec()),
        22 => {
            sig.values.push(r.mpi()?.to_vec());
            sig.values.push(r.mpi()?.to_vec());
        }
        27 => sig.values.push(r.take(64)?.to_vec()),
        _ => {}
    }
    Ok(sig)
}

fn read_subpackets(
    mut data: &[u8],
    hashed: bool,
    embedded: bool,
    sig: &mut Signature,
) -> Result<(), String> {
    while !data.is_empty() {
        let first = data[0] as usize;
        let (header, len): (usize, usize) = match first {
            0..192 => (1, first),
            192..255 => (
                2,
                ((first - 192) << 8)
                    + *data.get(1).ok_or("a subpacket is cut short")? as usize
                    + 192,
            ),
            _ => {
                let b = data.get(1..5).ok_or("a subpacket is cut short")?;
                (5, u32::from_be_bytes(b.try_into().unwrap()) as usize)
            }
        };
        let end = header
            .checked_add(len)
            .filter(|&end| end <= data.len() && len >= 1)
            .ok_or("a signature subpacket runs past its area")?;
        let kind = data[header] & 0x7f;
        let critical = data[header] & 0x80 != 0;
        let value = &data[header + 1..end];
        match kind {
            16 if value.len() == 8 && sig.issuer.is_none() => sig.issuer = Some(hex::encode(value)),
            33 if value.len() >= 2 => sig.issuer = Some(hex::encode(&value[1..])),
            27 if hashed => sig.key_flags = value.first().copied(),
            32 if !embedded => sig.embedded = Some(Box::new(parse_signature_in(value, true)?)),
            32 => {}
            // Creation and expiry times, preferences, revocation reasons, features,
            // notations, policy URIs, user IDs: read by others, not needed here.
            2..=4 | 7 | 9..=12 | 16 | 20..=26 | 28..=31 | 33..=35 | 37..=39 => {}
            other if critical && hashed => sig.critical_unknown = Some(other),
            _ => {}
        }
        data = &data[end..];
    }
    Ok(())
}

impl Signature {
    /// Whether the signature verifies with `key` over `data` (the message, or the keys
    /// hashed for a binding), with the signature's own trailer appended.
    pub fn verify(&self, key: &Key, data: &[u8]) -> bool {
        if self.version != 4 || self.critical_unknown.is_some() {
            return false;
        }
        let mut message = Vec::with_capacity(data.len() + self.hashed_part.len() + 6);
        message.extend_from_slice(data);
        message.extend_from_slice(&self.hashed_part);
        message.extend_from_slice(&[0x04, 0xff]);
        message.extend_from_slice(&(self.hashed_part.len() as u32).to_be_bytes());
        match (&key.material, self.algorithm) {
            (Material::Rsa { n, e }, 1 | 3) => {
                let params = match self.hash {
                    8 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    9 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    10 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    _ => return false,
                };
                let Some(value) = self.values.first() else {
                    return false;
                };
                let value = strip_zeros(value);
                if value.len() > n.len() {
                    return false;
                }
                let mut padded = vec![0; n.len() - value.len()];
                padded.extend_from_slice(value);
                signature::RsaPublicKeyComponents { n, e }
                    .verify(params, &message, &padded)
                    .is_ok()
            }
            (Material::Ed25519(point), 22 | 27) => {
                let hash = match self.hash {
                    8 => &digest::SHA256,
                    9 => &digest::SHA384,
                    10 => &digest::SHA512,
                    _ => return false,
                };
                let mut rs = [0u8; 64];
                match (self.algorithm, &self.values[..]) {
                    (22, [r, s]) => {
                        let (r, s) = (strip_zeros(r), strip_zeros(s));
                        if r.len() > 32 || s.len() > 32 {
                            return false;
                        }
                        rs[32 - r.len()..32].copy_from_slice(r);
                        rs[64 - s.len()..].copy_from_slice(s);
                    }
                    (27, [v]) if v.len() == 64 => rs.copy_from_slice(v),
                    _ => return false,
                }
                // EdDSA signs the digest, not the message.
                let digest = digest::digest(hash, &message);
                signature::UnparsedPublicKey::new(&signature::ED25519, point)
                    .verify(digest.as_ref(), &rs)
                    .is_ok()
            }
            _ => false,
        }
    }
}

/// Signature types (RFC 9580, 5.2.1).
const CANONICAL_TEXT: u8 = 0x01;
const SUBKEY_BINDING: u8 = 0x18;
const PRIMARY_KEY_BINDING: u8 = 0x19;
const KEY_REVOCATION: u8 = 0x20;
const SUBKEY_REVOCATION: u8 = 0x28;
/// Key flag: this key may sign data.
const FLAG_SIGN: u8 = 0x02;

/// Reads the certificates of a binary keyring (concatenated transferable public keys).
/// Subkeys without a valid binding are dropped, as are revoked ones.
pub fn read_certs(data: &[u8]) -> Result<Vec<Cert>, String> {
    struct Pending {
        primary: Key,
        primary_sigs: Vec<Signature>,
        subkeys: Vec<(Key, Vec<Signature>)>,
        /// Signatures after a user ID or attribute (certifications): not needed.
        in_user_id: bool,
    }
    let mut pending: Vec<Pending> = Vec::new();
    for packet in packets(data)? {
        match packet.tag {
            6 => pending.push(Pending {
                primary: parse_key(packet.body)?,
                primary_sigs: Vec::new(),
                subkeys: Vec::new(),
                in_user_id: false,
            }),
            14 => {
                let key = parse_key(packet.body)?;
                if let Some(p) = pending.last_mut() {
                    p.subkeys.push((key, Vec::new()));
                }
            }
            13 | 17 => {
                if let Some(p) = pending.last_mut() {
                    p.in_user_id = p.subkeys.is_empty();
                }
            }
            2 => {
                let sig = parse_signature(packet.body)?;
                if let Some(p) = pending.last_mut() {
                    if let Some((_, sigs)) = p.subkeys.last_mut() {
                        sigs.push(sig);
                    } else if !p.in_user_id {
                        p.primary_sigs.push(sig);
                    }
                }
            }
            // Trust packets, user attributes' contents, anything newer: not needed.
            _ => {}
        }
    }
    let mut certs = Vec::new();
    for p in pending {
        let mut primary_hashed = Vec::new();
        p.primary.hashed_form(&mut primary_hashed);
        let revoked = p
            .primary_sigs
            .iter()
            .any(|s| s.kind == KEY_REVOCATION && s.verify(&p.primary, &primary_hashed));
        let mut signing_subkeys = Vec::new();
        for (sub, sigs) in p.subkeys {
            let mut both = primary_hashed.clone();
            sub.hashed_form(&mut both);
            let bound = sigs.iter().any(|s| {
                s.kind == SUBKEY_BINDING
                    && s.key_flags.is_none_or(|f| f & FLAG_SIGN != 0)
                    && s.verify(&p.primary, &both)
                    && s.embedded.as_ref().is_some_and(|back| {
                        back.kind == PRIMARY_KEY_BINDING && back.verify(&sub, &both)
                    })
            });
            let sub_revoked = sigs
                .iter()
                .any(|s| s.kind == SUBKEY_REVOCATION && s.verify(&p.primary, &both));
            if bound && !sub_revoked {
                signing_subkeys.push(sub);
            }
        }
        certs.push(Cert {
            primary: p.primary,
            signing_subkeys,
            revoked,
        });
    }
    Ok(certs)
}

/// Decodes the ASCII armour blocks of `kind` (`PUBLIC KEY BLOCK`, `SIGNATURE`) in `text`
/// and returns their bytes, in order. The CRC-24 line is skipped: RFC 9580 makes it
/// optional, and the signatures inside are what is checked.
pub fn dearmor(text: &str, kind: &str) -> Result<Vec<Vec<u8>>, String> {
    let begin = format!("-----BEGIN PGP {kind}-----");
    let end = format!("-----END PGP {kind}-----");
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(|l| l.trim_end());
    while let Some(line) = lines.next() {
        if line != begin {
            continue;
        }
        // Armour headers up to the first empty line.
        let mut base64 = String::new();
        let mut in_headers = true;
        let mut ended = false;
        for line in lines.by_ref() {
            if line == end {
                ended = true;
                break;
            }
            if in_headers {
                if line.is_empty() {
                    in_headers = false;
                } else if !line.contains(": ") {
                    // No headers and no empty line: this is the data already.
                    in_headers = false;
                    base64.push_str(line);
                }
                continue;
            }
            if line.starts_with('=') {
                continue;
            }
            base64.push_str(line);
        }
        if !ended {
            return Err(format!("the armour has no `{end}` line"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(base64.as_bytes())
            .map_err(|e| format!("the armour's base64 does not decode: {e}"))?;
        blocks.push(bytes);
    }
    Ok(blocks)
}

/// A cleartext-signed message: the text as signed, and its signatures.
pub struct Cleartext {
    /// The signed lines, dash-escaping undone and trailing blanks removed, each ending
    /// in `\n`.
    pub text: String,
    pub signatures: Vec<Signature>,
    /// The text as hashed: lines joined by CR LF, no line ending after the last.
    canonical: Vec<u8>,
}

/// Splits a cleartext-signed message (RFC 9580, 7). Anything but blank lines before or
/// after the armour is refused, as apt does: the text outside is signed by no one.
pub fn read_cleartext(input: &str) -> Result<Cleartext, String> {
    const BEGIN: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
    const SIG_BEGIN: &str = "-----BEGIN PGP SIGNATURE-----";
    const SIG_END: &str = "-----END PGP SIGNATURE-----";
    let mut lines = input.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    loop {
        match lines.next() {
            Some(l) if l.trim_end() == BEGIN => break,
            Some(l) if l.trim().is_empty() => continue,
            Some(_) => return Err("text comes before `-----BEGIN PGP SIGNED MESSAGE-----`".into()),
            None => return Err("no `-----BEGIN PGP SIGNED MESSAGE-----` line".into()),
        }
    }
    // Armour headers (`Hash: SHA512`) up to an empty line.
    loop {
        match lines.next() {
            Some(l) if l.trim().is_empty() => break,
            Some(l) if l.contains(": ") => continue,
            Some(l) => return Err(format!("armour header {l:?} is not `Name: value`")),
            None => return Err("the message ends in its armour headers".into()),
        }
    }
    let mut signed: Vec<&str> = Vec::new();
    loop {
        match lines.next() {
            Some(l) if l.trim_end() == SIG_BEGIN => break,
            Some(l) => signed.push(match l.strip_prefix("- ") {
                Some(rest) => rest,
                None if l.starts_with('-') => {
                    return Err(format!("line {l:?} of the signed text is not dash-escaped"));
                }
                None => l,
            }),
            None => return Err("no `-----BEGIN PGP SIGNATURE-----` line".into()),
        }
    }
    let mut armour = String::from(SIG_BEGIN);
    armour.push('\n');
    let mut ended = false;
    for l in lines.by_ref() {
        armour.push_str(l);
        armour.push('\n');
        if l.trim_end() == SIG_END {
            ended = true;
            break;
        }
    }
    if !ended {
        return Err("no `-----END PGP SIGNATURE-----` line".into());
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return Err("text comes after `-----END PGP SIGNATURE-----`".into());
    }
    let mut signatures = Vec::new();
    for block in dearmor(&armour, "SIGNATURE")? {
        for packet in packets(&block)? {
            if packet.tag == 2 {
                signatures.push(parse_signature(packet.body)?);
            }
        }
    }
    if signatures.is_empty() {
        return Err("it carries no signature".into());
    }
    let mut text = String::new();
    let mut canonical = Vec::new();
    for (i, line) in signed.iter().enumerate() {
        let line = line.trim_end_matches([' ', '\t']);
        if i > 0 {
            canonical.extend_from_slice(b"\r\n");
        }
        canonical.extend_from_slice(line.as_bytes());
        let _ = writeln!(text, "{line}");
    }
    Ok(Cleartext {
        text,
        signatures,
        canonical,
    })
}

impl Cleartext {
    /// Whether `sig` is a text signature that verifies with `key` over this text.
    pub fn verified_by(&self, sig: &Signature, key: &Key) -> bool {
        sig.kind == CANONICAL_TEXT && sig.verify(key, &self.canonical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signature whose hashed area embeds `inner` (subpacket 32).
    fn wrap(inner: &[u8]) -> Vec<u8> {
        let mut sub = vec![0xff];
        sub.extend_from_slice(&(inner.len() as u32 + 1).to_be_bytes());
        sub.push(32);
        sub.extend_from_slice(inner);
        let mut sig = vec![4, 0x18, 22, 8];
        sig.extend_from_slice(&(sub.len() as u16).to_be_bytes());
        sig.extend_from_slice(&sub);
        // No unhashed area, the quick check, two empty MPIs.
        sig.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        sig
    }

    #[test]
    fn embedded_signatures_nest_one_level_only() {
        let mut sig = vec![4, 0x19, 22, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        for _ in 0..3 {
            sig = wrap(&sig);
        }
        let parsed = parse_signature(&sig).unwrap();
        let inner = parsed.embedded.expect("the first level is read");
        assert!(inner.embedded.is_none());
    }

    #[test]
    fn cut_and_oversized_packets_are_errors() {
        assert!(packets(&[0x99, 0x01]).is_err());
        assert!(packets(&[0xc6, 0xff, 0xff, 0xff, 0xff, 0xff, 0]).is_err());
        assert!(
            packets(&[0xc6, 0xe1, 0])
                .unwrap_err()
                .contains("partial length")
        );
        assert!(packets(&[0x42]).is_err());
        assert_eq!(packets(&[0xb4, 0x01, 0x61]).unwrap()[0].tag, 13);
    }
}
