//! Signatures kept in the store beside what they sign, so they travel with an artifact
//! (publish, pull, export, import) and are checked with no network (`import` and `flash`
//! with `--verify-key`).
//!
//! The tag `NAME.sig` points at a record: a manifest whose one layer is cosign's signature
//! manifest, written without a subject so the store's walk never reaches what it signs,
//! and whose annotation `dev.cairn.signed` names the digest signed. An image is signed as
//! the index the store tags. A node is signed in its registry form (disk image as chunks),
//! whose annotation `dev.cairn.node.manifest` names the store's manifest; the record
//! carries that small registry manifest's bytes (base64), so the chain signature →
//! registry form → store manifest is checked offline, without the chunks.

use crate::TrustError;
use crate::cosign::{self, Signature};
use crate::keys::PublicKey;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cairn_formats::Digest;
use cairn_oci::artifact;
use cairn_store::Store;

pub use cairn_oci::media::SIGNATURES_ARTIFACT as ARTIFACT_TYPE;
/// The store tag of `NAME`'s signatures is `NAME.sig`.
pub const TAG_SUFFIX: &str = ".sig";
const SIGNED: &str = "dev.cairn.signed";
const SIGNED_MANIFEST: &str = "dev.cairn.signed.manifest";
const NODE_MANIFEST: &str = "dev.cairn.node.manifest";

/// The store tag holding `name`'s signatures.
pub fn tag(name: &str) -> String {
    format!("{name}{TAG_SUFFIX}")
}

/// What a record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The digest the signatures claim.
    pub signed: Digest,
    /// The signed manifest's bytes, when the store tags another manifest (a node).
    pub signed_manifest: Option<Vec<u8>>,
    pub signatures: Vec<Signature>,
}

/// Writes a record into the store; returns its manifest's digest and size.
pub fn write(store: &Store, record: &Record) -> Result<(Digest, u64), TrustError> {
    let err = |e: cairn_store::StoreError| TrustError(format!("writing a signature record: {e}"));
    let (sig, sig_size) = cosign::write_manifest(store, &record.signatures, None)?;
    store.write_blob(b"{}").map_err(err)?;
    let mut m = artifact::Manifest::artifact(
        ARTIFACT_TYPE,
        artifact::empty_config(false),
        vec![artifact::annotated(
            artifact::blob(cairn_oci::media::MANIFEST, sig, sig_size),
            [(SIGNED, record.signed.to_string())],
        )],
    );
    m.annotations
        .insert(SIGNED.into(), record.signed.to_string());
    if let Some(bytes) = &record.signed_manifest {
        m.annotations
            .insert(SIGNED_MANIFEST.into(), B64.encode(bytes));
    }
    let bytes = m.to_blob().bytes;
    let digest = store.write_blob(&bytes).map_err(err)?;
    Ok((digest, bytes.len() as u64))
}

/// Reads a record manifest; `read` gives the bytes of a blob it names (the store's, or a
/// bundle's while it is being imported).
pub fn read(
    manifest: &[u8],
    read: &dyn Fn(&Digest) -> Option<Vec<u8>>,
) -> Result<Record, TrustError> {
    let bad = |what: &str| TrustError(format!("a signature record {what}"));
    let v: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|_| bad("that is not JSON"))?;
    if v["artifactType"] != ARTIFACT_TYPE {
        return Err(bad("of another artifact type"));
    }
    let signed: Digest = v["annotations"][SIGNED]
        .as_str()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| bad("that names no signed digest"))?;
    let signed_manifest = match v["annotations"][SIGNED_MANIFEST].as_str() {
        Some(text) => Some(
            B64.decode(text)
                .map_err(|_| bad("whose signed manifest is not base64"))?,
        ),
        None => None,
    };
    let mut signatures = Vec::new();
    for layer in v["layers"].as_array().into_iter().flatten() {
        let digest: Digest = layer["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| bad("with a layer without a digest"))?;
        let sig = read(&digest)
            .ok_or_else(|| TrustError(format!("the signature manifest {digest} is missing")))?;
        for (payload, _, signature) in cosign::layers(&sig)? {
            let payload = read(&payload)
                .ok_or_else(|| TrustError(format!("the signature payload {payload} is missing")))?;
            signatures.push(Signature { payload, signature });
        }
    }
    Ok(Record {
        signed,
        signed_manifest,
        signatures,
    })
}

/// Checks that `record` is about `tagged` (the digest the store's tag points at): it signs
/// it directly, or signs the registry form that names it.
pub fn covers(record: &Record, tagged: &Digest) -> Result<(), TrustError> {
    if record.signed != *tagged {
        let Some(bytes) = &record.signed_manifest else {
            return Err(TrustError(format!(
                "its signatures are of {}, not of {tagged}",
                record.signed
            )));
        };
        if Digest::of(bytes) != record.signed {
            return Err(TrustError(format!(
                "the signed manifest it carries hashes to {}, not {}",
                Digest::of(bytes),
                record.signed
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|_| TrustError("the signed manifest it carries is not JSON".into()))?;
        let names = v["annotations"][NODE_MANIFEST].as_str();
        if names != Some(tagged.to_string().as_str()) {
            return Err(TrustError(format!(
                "its signatures are of {}, which names {} as its store manifest, not {tagged}",
                record.signed,
                names.unwrap_or("nothing")
            )));
        }
    }
    Ok(())
}

/// Checks that `tagged` carries a signature by `key`: the record covers it, and one of
/// its signatures verifies with the key and claims the signed digest.
pub fn verify(record: &Record, tagged: &Digest, key: &PublicKey) -> Result<(), TrustError> {
    covers(record, tagged)?;
    let mut seen = Vec::new();
    for s in &record.signatures {
        match s.verify(key, &record.signed) {
            Ok(()) => return Ok(()),
            Err(e) => seen.push(e.0),
        }
    }
    Err(TrustError(format!(
        "none of its {} signature(s) is by key {}{}",
        record.signatures.len(),
        key.id(),
        if seen.is_empty() {
            String::new()
        } else {
            format!(": {}", seen.join("; "))
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;

    #[test]
    fn records_round_trip_and_check_the_chain_to_the_store_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), || {}).unwrap();
        let key = SigningKey::generate().unwrap();
        let stranger = SigningKey::generate().unwrap();
        let reader = |d: &Digest| store.read_blob(d).ok();

        // An image: the signed digest is the tagged one.
        let index = Digest::of(b"index");
        let record = Record {
            signed: index,
            signed_manifest: None,
            signatures: vec![Signature::new(&key, "reg/lab/haproxy", &index)],
        };
        let (m, _) = write(&store, &record).unwrap();
        let back = read(&store.read_blob(&m).unwrap(), &reader).unwrap();
        assert_eq!(back, record);
        verify(&back, &index, &key.public()).unwrap();
        let e = verify(&back, &index, &stranger.public()).unwrap_err().0;
        assert!(e.contains("none of its 1 signature(s) is by key"), "{e}");
        let e = verify(&back, &Digest::of(b"other"), &key.public())
            .unwrap_err()
            .0;
        assert!(e.contains("its signatures are of sha256:"), "{e}");
        // The store's walk reaches the signature manifest and its payloads, nothing else.
        let (reach, missing) = store.reachable(&[m]);
        assert!(missing.is_empty());
        assert_eq!(
            reach.len(),
            5,
            "record, empty config, sig manifest, its config, payload"
        );

        // A node: signed in its registry form, which names the store manifest.
        let store_manifest = Digest::of(b"store form");
        let registry_form = format!(
            "{{\"annotations\":{{\"{NODE_MANIFEST}\":\"{store_manifest}\"}},\"layers\":[]}}"
        )
        .into_bytes();
        let signed = Digest::of(&registry_form);
        let node = Record {
            signed,
            signed_manifest: Some(registry_form.clone()),
            signatures: vec![Signature::new(&key, "reg/lab/pi-worker", &signed)],
        };
        let (m, _) = write(&store, &node).unwrap();
        let back = read(&store.read_blob(&m).unwrap(), &reader).unwrap();
        verify(&back, &store_manifest, &key.public()).unwrap();
        let e = verify(&back, &Digest::of(b"another node"), &key.public())
            .unwrap_err()
            .0;
        assert!(e.contains(&format!("names {store_manifest}")), "{e}");
        // A carried manifest that is not the one signed.
        let mut forged = back.clone();
        let mut altered = registry_form.clone();
        altered.push(b' ');
        forged.signed_manifest = Some(altered);
        let e = verify(&forged, &store_manifest, &key.public())
            .unwrap_err()
            .0;
        assert!(e.contains("hashes to"), "{e}");
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    /// A signature record keeps the bytes earlier Cairn wrote.
    #[test]
    fn a_record_manifest_keeps_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), || {}).unwrap();
        let signed = Digest::of(b"registry form");
        let record = Record {
            signed,
            signed_manifest: Some(b"{\"the\":\"registry form\"}".to_vec()),
            signatures: vec![Signature {
                payload: cosign::payload("reg.lan/lab/pi", &signed),
                signature: "MEUCIQ==".into(),
            }],
        };
        let (m, _) = write(&store, &record).unwrap();
        assert_eq!(
            m.to_string(),
            "sha256:894e4b584bcfb13cb9b1d3fd36bc1745def0a1986e9bc186e37945a953c178cd"
        );
    }
}
