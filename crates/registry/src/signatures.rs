//! Signatures in a registry, in cosign's format: a manifest's signatures live under the tag
//! `sha256-<hex>.sig` of its repository. Signing keeps the signatures other keys made;
//! verifying looks for one of a given key that claims the manifest's digest.

use crate::{Client, Descriptor, PushOptions, RegistryError};
use cairn_formats::Digest;
use cairn_store::Store;
use cairn_trust::cosign::{self, Signature};
use cairn_trust::{PublicKey, SigningKey};
use std::path::Path;

/// The signature manifest `repo` holds for `digest`, if any: its signatures, with their
/// payloads fetched (verified by digest) into the store.
pub fn existing(
    client: &Client,
    store: &Store,
    repo: &str,
    digest: &Digest,
) -> Result<Option<Vec<Signature>>, RegistryError> {
    let tag = cosign::signature_tag(digest);
    let (_, bytes) = match crate::pull::get_manifest(client, repo, &tag) {
        Ok(m) => m,
        Err(RegistryError::Http { status: 404, .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for (payload, size, signature) in
        cosign::layers(&bytes).map_err(|e| RegistryError::other(e.0))?
    {
        if size > 1 << 20 {
            return Err(RegistryError::other(format!(
                "{repo}:{tag} has a signature payload of {size} bytes: not a signature"
            )));
        }
        let d = Descriptor {
            media_type: cosign::SIMPLE_SIGNING_MEDIA.into(),
            digest: payload,
            size,
        };
        let mut report = crate::pull::PullReport::default();
        crate::pull::fetch_blob(client, store, repo, &d, &mut report, &crate::NoProgress)?;
        out.push(Signature {
            payload: store.read_blob(&payload)?,
            signature,
        });
    }
    Ok(Some(out))
}

/// Signs `digest` (a manifest pushed to `repo` on `client`'s registry) with `key` and pushes
/// the signature manifest, keeping the signatures other keys made. Returns the tag, and
/// whether anything was pushed (a manifest this key signed already is left as it is).
pub fn sign(
    client: &Client,
    store: &Store,
    repo: &str,
    digest: &Digest,
    key: &SigningKey,
) -> Result<(String, bool), RegistryError> {
    let reference = format!("{}/{repo}", client.config.host);
    let ours = Signature::new(key, &reference, digest);
    let tag = cosign::signature_tag(digest);
    let mut all = existing(client, store, repo, digest)?.unwrap_or_default();
    if all.contains(&ours) {
        return Ok((tag, false));
    }
    all.push(ours);
    let written = cosign::write_manifest(store, &all);
    push_manifest(client, store, repo, &tag, written)?;
    Ok((tag, true))
}

/// Checks that `digest` in `repo` carries a signature by `key`; the error names the
/// digest, the key and what each signature found was.
pub fn verify(
    client: &Client,
    store: &Store,
    repo: &str,
    digest: &Digest,
    key: &PublicKey,
    key_path: &Path,
) -> Result<(), RegistryError> {
    let tag = cosign::signature_tag(digest);
    let where_ = format!("{}/{repo}", client.config.host);
    let Some(signatures) = existing(client, store, repo, digest)? else {
        return Err(RegistryError::other(format!(
            "{where_}@{digest} is not signed (there is no {tag}), and only what {} signed is accepted",
            key_path.display()
        )));
    };
    let mut seen = Vec::new();
    for s in &signatures {
        match s.verify(key, digest) {
            Ok(()) => return Ok(()),
            Err(e) => seen.push(e.0),
        }
    }
    Err(RegistryError::other(format!(
        "{where_}@{digest} is not signed by {} ({}). Its {} signature(s): {}",
        key_path.display(),
        key.id(),
        signatures.len(),
        if seen.is_empty() {
            "none".to_string()
        } else {
            seen.join("; ")
        }
    )))
}

/// Attaches `attestations` (DSSE envelopes with their predicate types) to `digest` in
/// `repo`, under cosign's `sha256-<hex>.att` tag: an existing attestation of the same
/// predicate type is replaced, others are kept.
pub fn attest(
    client: &Client,
    store: &Store,
    repo: &str,
    digest: &Digest,
    attestations: &[(Vec<u8>, String)],
) -> Result<String, RegistryError> {
    let tag = cosign::attestation_tag(digest);
    let mut all: Vec<(Vec<u8>, String)> = Vec::new();
    for (envelope, predicate) in fetch_attestations(client, store, repo, digest)? {
        if !attestations.iter().any(|(_, p)| *p == predicate) {
            all.push((envelope, predicate));
        }
    }
    all.extend(attestations.iter().cloned());
    let written = cosign::write_attestations(store, &all);
    push_manifest(client, store, repo, &tag, written)?;
    Ok(tag)
}

/// The attestations attached to `digest` in `repo`: (DSSE envelope, predicate type).
pub fn fetch_attestations(
    client: &Client,
    store: &Store,
    repo: &str,
    digest: &Digest,
) -> Result<Vec<(Vec<u8>, String)>, RegistryError> {
    let tag = cosign::attestation_tag(digest);
    let (_, bytes) = match crate::pull::get_manifest(client, repo, &tag) {
        Ok(m) => m,
        Err(RegistryError::Http { status: 404, .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for (layer, size, predicate) in
        cosign::attestation_layers(&bytes).map_err(|e| RegistryError::other(e.0))?
    {
        if size > 64 << 20 {
            return Err(RegistryError::other(format!(
                "{repo}:{tag} has an attestation of {size} bytes: refusing it"
            )));
        }
        let d = Descriptor {
            media_type: cairn_trust::dsse::ENVELOPE_MEDIA.into(),
            digest: layer,
            size,
        };
        let mut report = crate::pull::PullReport::default();
        crate::pull::fetch_blob(client, store, repo, &d, &mut report, &crate::NoProgress)?;
        out.push((store.read_blob(&layer)?, predicate));
    }
    Ok(out)
}

/// Pushes a signature or attestation manifest just written into the store under `tag`.
fn push_manifest(
    client: &Client,
    store: &Store,
    repo: &str,
    tag: &str,
    written: Result<(Digest, u64), cairn_trust::TrustError>,
) -> Result<(), RegistryError> {
    let (digest, size) = written.map_err(|e| RegistryError::other(e.0))?;
    let root = Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest,
        size,
    };
    crate::push::push(
        client,
        store,
        repo,
        &root,
        tag,
        &PushOptions::default(),
        &crate::NoProgress,
    )?;
    Ok(())
}
