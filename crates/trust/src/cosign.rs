//! cosign's key-based signature format, which `cosign verify --key` and Harbor read: for a
//! manifest `sha256:<hex>` in a repository, the tag `sha256-<hex>.sig` holds an OCI manifest
//! whose layers are simple-signing payloads (JSON naming the repository and the digest),
//! each with its base64 ECDSA signature in the `dev.cosignproject.cosign/signature`
//! annotation. Several keys' signatures are several layers of that one manifest.

use crate::TrustError;
use crate::keys::{PublicKey, SigningKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cairn_formats::Digest;
use cairn_oci::artifact;
use cairn_store::Store;

pub use cairn_oci::media::COSIGN_SIMPLE_SIGNING as SIMPLE_SIGNING_MEDIA;
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const SIGNATURE_TYPE: &str = "cosign container image signature";
/// The time cosign writes into a signature's config unless told to record one.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
pub use cairn_oci::media::COSIGN_ATTESTATION_ARTIFACT as ATTESTATION_ARTIFACT_TYPE;
/// The artifact types cosign gives signature and attestation manifests that name their
/// subject (OCI 1.1 referrers); Harbor shows such referrers as the subject's accessories.
pub use cairn_oci::media::COSIGN_SIGNATURE_ARTIFACT as SIGNATURE_ARTIFACT_TYPE;

/// The manifest a signature or attestation manifest is about: with one, the manifest
/// carries `artifactType` and `subject`, so a registry with the referrers API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// The tag that holds the signatures of `digest`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// The simple-signing payload for `digest` in `repository` (`registry/namespace/name`),
/// byte for byte as cosign writes it.
pub fn payload(repository: &str, digest: &Digest) -> Vec<u8> {
    format!(
        "{{\"critical\":{{\"identity\":{{\"docker-reference\":{}}},\"image\":{{\"docker-manifest-digest\":\"{digest}\"}},\"type\":\"{SIGNATURE_TYPE}\"}},\"optional\":null}}",
        serde_json::to_string(repository).expect("string")
    )
    .into_bytes()
}

/// One signature: a payload and its base64 signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub payload: Vec<u8>,
    pub signature: String,
}

impl Signature {
    pub fn new(key: &SigningKey, repository: &str, digest: &Digest) -> Signature {
        let payload = payload(repository, digest);
        let signature = B64.encode(key.sign(&payload));
        Signature { payload, signature }
    }

    /// Checks the signature with `key` and that the payload claims `digest`.
    pub fn verify(&self, key: &PublicKey, digest: &Digest) -> Result<(), TrustError> {
        let sig = B64
            .decode(self.signature.trim())
            .map_err(|_| TrustError("its signature annotation is not base64".into()))?;
        if !key.verify(&self.payload, &sig) {
            return Err(TrustError(format!(
                "its signature does not verify with key {}",
                key.id()
            )));
        }
        let claims: serde_json::Value = serde_json::from_slice(&self.payload)
            .map_err(|_| TrustError("its payload is not JSON".into()))?;
        let claimed = claims["critical"]["image"]["docker-manifest-digest"].as_str();
        if claims["critical"]["type"] != SIGNATURE_TYPE {
            return Err(TrustError(format!(
                "its payload is not a {SIGNATURE_TYPE:?}"
            )));
        }
        if claimed != Some(digest.to_string().as_str()) {
            return Err(TrustError(format!(
                "it signs {}, not {digest}",
                claimed.unwrap_or("no digest")
            )));
        }
        Ok(())
    }
}

/// A signature manifest's layers: (payload descriptor digest, size, base64 signature).
pub fn layers(manifest: &[u8]) -> Result<Vec<(Digest, u64, String)>, TrustError> {
    let v: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|e| TrustError(format!("a signature manifest is not JSON: {e}")))?;
    let mut out = Vec::new();
    for l in v["layers"].as_array().into_iter().flatten() {
        if l["mediaType"] != SIMPLE_SIGNING_MEDIA {
            continue;
        }
        let digest = l["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| TrustError(format!("a signature layer without a digest: {l}")))?;
        let size = l["size"].as_u64().unwrap_or(0);
        let sig = l["annotations"][SIGNATURE_ANNOTATION]
            .as_str()
            .unwrap_or_default()
            .to_string();
        out.push((digest, size, sig));
    }
    Ok(out)
}

/// Writes a signature manifest holding `signatures` (in order) into the store: payloads,
/// config, manifest. Returns the manifest's digest and size.
pub fn write_manifest(
    store: &Store,
    signatures: &[Signature],
    subject: Option<&Subject>,
) -> Result<(Digest, u64), TrustError> {
    let layers: Vec<(Vec<u8>, &str, serde_json::Value)> = signatures
        .iter()
        .map(|s| {
            (
                s.payload.clone(),
                SIMPLE_SIGNING_MEDIA,
                serde_json::json!({SIGNATURE_ANNOTATION: s.signature}),
            )
        })
        .collect();
    write_layers(
        store,
        &layers,
        subject.map(|s| (SIGNATURE_ARTIFACT_TYPE, s)),
    )
}

/// The annotation of an attestation layer naming its predicate type.
pub const PREDICATE_ANNOTATION: &str = "predicateType";

/// The tag that holds the attestations of `digest`.
pub fn attestation_tag(digest: &Digest) -> String {
    format!("sha256-{}.att", digest.hex())
}

/// Writes an attestation manifest (cosign's `.att`): one DSSE envelope per layer, each
/// annotated with its predicate type.
pub fn write_attestations(
    store: &Store,
    attestations: &[(Vec<u8>, String)],
    subject: Option<&Subject>,
) -> Result<(Digest, u64), TrustError> {
    let layers: Vec<(Vec<u8>, &str, serde_json::Value)> = attestations
        .iter()
        .map(|(envelope, predicate)| {
            (
                envelope.clone(),
                crate::dsse::ENVELOPE_MEDIA,
                serde_json::json!({SIGNATURE_ANNOTATION: "", PREDICATE_ANNOTATION: predicate}),
            )
        })
        .collect();
    write_layers(
        store,
        &layers,
        subject.map(|s| (ATTESTATION_ARTIFACT_TYPE, s)),
    )
}

/// An attestation manifest's layers: (envelope digest, size, predicate type).
pub fn attestation_layers(manifest: &[u8]) -> Result<Vec<(Digest, u64, String)>, TrustError> {
    let v: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|e| TrustError(format!("an attestation manifest is not JSON: {e}")))?;
    let mut out = Vec::new();
    for l in v["layers"].as_array().into_iter().flatten() {
        let digest = l["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| TrustError(format!("an attestation layer without a digest: {l}")))?;
        out.push((
            digest,
            l["size"].as_u64().unwrap_or(0),
            l["annotations"][PREDICATE_ANNOTATION]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
    }
    Ok(out)
}

/// Writes layers (bytes, media type, annotations) with cosign's config into the store;
/// with a subject, also the artifact type and the subject.
fn write_layers(
    store: &Store,
    layers: &[(Vec<u8>, &str, serde_json::Value)],
    subject: Option<(&str, &Subject)>,
) -> Result<(Digest, u64), TrustError> {
    let err = |e: cairn_store::StoreError| TrustError(format!("writing a signature: {e}"));
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    let mut history = Vec::new();
    for (bytes, media, annotations) in layers {
        let digest = store.write_blob(bytes).map_err(err)?;
        let annotations = annotations
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()));
        descriptors.push(artifact::annotated(
            artifact::blob(media, digest, bytes.len() as u64),
            annotations,
        ));
        diff_ids.push(digest.to_string());
        history.push(serde_json::json!({"created": ZERO_TIME}));
    }
    let config = serde_json::json!({
        "architecture": "",
        "created": ZERO_TIME,
        "history": history,
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    });
    let config = cairn_formats::json::to_canonical_vec(&config).expect("json");
    let config_digest = store.write_blob(&config).map_err(err)?;
    let mut manifest = artifact::Manifest {
        artifact_type: None,
        config: artifact::blob(
            cairn_oci::media::IMAGE_CONFIG,
            config_digest,
            config.len() as u64,
        ),
        layers: descriptors,
        subject: None,
        annotations: Default::default(),
    };
    if let Some((artifact_type, s)) = subject {
        manifest.artifact_type = Some(artifact_type.into());
        manifest.subject = Some(artifact::blob(&s.media_type, s.digest, s.size));
    }
    let manifest = manifest.to_blob().bytes;
    let digest = store.write_blob(&manifest).map_err(err)?;
    Ok((digest, manifest.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_cosigns_bytes_and_signatures_check_key_and_digest() {
        let d = Digest::of(b"manifest");
        assert_eq!(
            String::from_utf8(payload("reg.lan:5000/lab/haproxy", &d)).unwrap(),
            format!(
                "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"reg.lan:5000/lab/haproxy\"}},\"image\":{{\"docker-manifest-digest\":\"{d}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
            )
        );
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", d.hex()));
        let key = SigningKey::generate().unwrap();
        let s = Signature::new(&key, "reg/lab/haproxy", &d);
        s.verify(&key.public(), &d).unwrap();
        let other = Digest::of(b"other");
        assert!(
            s.verify(&key.public(), &other)
                .unwrap_err()
                .0
                .contains("not sha256:")
        );
        let stranger = SigningKey::generate().unwrap().public();
        assert!(
            s.verify(&stranger, &d)
                .unwrap_err()
                .0
                .contains("does not verify")
        );
        let mut tampered = s.clone();
        tampered.payload[20] ^= 1;
        assert!(tampered.verify(&key.public(), &d).is_err());

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), || {}).unwrap();
        let (m, _) = write_manifest(&store, std::slice::from_ref(&s), None).unwrap();
        let ls = layers(&store.read_blob(&m).unwrap()).unwrap();
        assert_eq!(ls.len(), 1);
        assert_eq!(ls[0].0, Digest::of(&s.payload));
        assert_eq!(ls[0].2, s.signature);
        // The same signatures make the same manifest.
        assert_eq!(
            write_manifest(&store, std::slice::from_ref(&s), None)
                .unwrap()
                .0,
            m
        );
        // With a subject, a referrer: the artifact type cosign gives it, and the subject.
        let subject = Subject {
            media_type: cairn_oci::media::MANIFEST.into(),
            digest: d,
            size: 123,
        };
        let (r, _) = write_manifest(&store, &[s], Some(&subject)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&store.read_blob(&r).unwrap()).unwrap();
        assert_eq!(v["artifactType"], SIGNATURE_ARTIFACT_TYPE);
        assert_eq!(v["subject"]["digest"], d.to_string());
        assert_eq!(v["subject"]["size"], 123);
        assert_eq!(layers(&store.read_blob(&r).unwrap()).unwrap(), ls);
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    /// Signature manifests keep the bytes earlier Cairn wrote (a signature is found by the
    /// digest of the manifest that holds it).
    #[test]
    fn signature_manifests_keep_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), || {}).unwrap();
        let d = Digest::of(b"signed");
        let s = Signature {
            payload: payload("reg.lan/lab/haproxy", &d),
            signature: "MEUCIQ==".into(),
        };
        let (plain, _) = write_manifest(&store, std::slice::from_ref(&s), None).unwrap();
        let subject = Subject {
            media_type: cairn_oci::media::MANIFEST.into(),
            digest: d,
            size: 123,
        };
        let (referrer, _) = write_manifest(&store, &[s], Some(&subject)).unwrap();
        assert_eq!(
            [plain.to_string(), referrer.to_string()],
            [
                "sha256:47a134b0eefc6070f9fcadaa06726514669367688a03e92ae112279dd2954af8"
                    .to_string(),
                "sha256:611966068bfa31ef3b02469863dfa9c7cb5f0a12f8dd14327e3677582e953e20"
                    .to_string()
            ]
        );
    }
}
