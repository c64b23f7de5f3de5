//! Signatures in a registry, in cosign's format: a manifest's signatures live under the tag
//! `sha256-<hex>.sig` of its repository. Signing keeps the signatures other keys made;
//! verifying looks for one of a given key that claims the manifest's digest.
//!
//! Signature and attestation manifests also name their subject (OCI 1.1), so a registry
//! with the referrers API lists them under the signed manifest. One without it (the
//! distribution 2.8 engine) gets the referrers tag schema the OCI distribution spec gives
//! clients: an index under the tag `sha256-<hex>` listing them, which `oras discover` reads.

use crate::{Client, Descriptor, PushOptions, RegistryError};
use cairn_formats::Digest;
use cairn_oci::{OciDescriptor, artifact};
use cairn_store::Store;
use cairn_trust::cosign::{self, Signature, Subject};
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
    let Some(bytes) = optional_manifest(client, repo, &tag)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for (payload, size, signature) in
        cosign::layers(&bytes).map_err(|e| RegistryError::other(e.0))?
    {
        let payload = Descriptor {
            media_type: cosign::SIMPLE_SIGNING_MEDIA.into(),
            digest: payload,
            size,
        };
        out.push(Signature {
            payload: small_blob(client, store, repo, &tag, &payload, 1 << 20)?,
            signature,
        });
    }
    Ok(Some(out))
}

/// The manifest under `tag`, or `None` when the registry has no such tag.
fn optional_manifest(
    client: &Client,
    repo: &str,
    tag: &str,
) -> Result<Option<Vec<u8>>, RegistryError> {
    match crate::pull::get_manifest(client, repo, tag) {
        Ok((_, bytes)) => Ok(Some(bytes)),
        Err(RegistryError::Http { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A blob a signature or attestation manifest under `tag` names, fetched (verified by
/// digest) into the store and read; one over `limit` bytes is refused unread.
fn small_blob(
    client: &Client,
    store: &Store,
    repo: &str,
    tag: &str,
    d: &Descriptor,
    limit: u64,
) -> Result<Vec<u8>, RegistryError> {
    if d.size > limit {
        return Err(RegistryError::other(format!(
            "{repo}:{tag} names a {} of {} bytes: refusing it",
            d.media_type, d.size
        )));
    }
    let mut report = crate::pull::PullReport::default();
    crate::pull::fetch_blob(client, store, repo, d, &mut report, &crate::NoProgress)?;
    Ok(store.read_blob(&d.digest)?)
}

/// What signing a manifest did.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The signature tag, `sha256-<hex>.sig`.
    pub tag: String,
    /// Whether a new signature manifest was pushed (not when this key had signed already).
    pub pushed: bool,
    /// Every signature the manifest now carries, this key's and others'.
    pub signatures: Vec<Signature>,
}

/// Signs `subject` (a manifest pushed to `repo` on `client`'s registry) with `key` and
/// pushes the signature manifest, keeping the signatures other keys made; a manifest this
/// key signed already is left as it is.
pub fn sign(
    client: &Client,
    store: &Store,
    repo: &str,
    subject: &Descriptor,
    key: &SigningKey,
) -> Result<Signed, RegistryError> {
    let digest = &subject.digest;
    let reference = format!("{}/{repo}", client.config.host);
    let ours = Signature::new(key, &reference, digest);
    let tag = cosign::signature_tag(digest);
    let mut all = existing(client, store, repo, digest)?.unwrap_or_default();
    if all.contains(&ours) {
        return Ok(Signed {
            tag,
            pushed: false,
            signatures: all,
        });
    }
    all.push(ours);
    let written = cosign::write_manifest(store, &all, Some(&as_subject(subject)));
    push_manifest(
        client,
        store,
        repo,
        &tag,
        subject,
        cosign::SIGNATURE_ARTIFACT_TYPE,
        written,
    )?;
    Ok(Signed {
        tag,
        pushed: true,
        signatures: all,
    })
}

fn as_subject(d: &Descriptor) -> Subject {
    Subject {
        media_type: d.media_type.clone(),
        digest: d.digest,
        size: d.size,
    }
}

/// Checks that `digest` in `repo` carries a signature by `key`, and returns every
/// signature it carries; the error names the digest, the key and what each one found was.
pub fn verify(
    client: &Client,
    store: &Store,
    repo: &str,
    digest: &Digest,
    key: &PublicKey,
    key_path: &Path,
) -> Result<Vec<Signature>, RegistryError> {
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
            Ok(()) => return Ok(signatures),
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
    subject: &Descriptor,
    attestations: &[(Vec<u8>, String)],
) -> Result<String, RegistryError> {
    let digest = &subject.digest;
    let tag = cosign::attestation_tag(digest);
    let mut all: Vec<(Vec<u8>, String)> = Vec::new();
    for (envelope, predicate) in fetch_attestations(client, store, repo, digest)? {
        if !attestations.iter().any(|(_, p)| *p == predicate) {
            all.push((envelope, predicate));
        }
    }
    all.extend(attestations.iter().cloned());
    let written = cosign::write_attestations(store, &all, Some(&as_subject(subject)));
    push_manifest(
        client,
        store,
        repo,
        &tag,
        subject,
        cosign::ATTESTATION_ARTIFACT_TYPE,
        written,
    )?;
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
    let Some(bytes) = optional_manifest(client, repo, &tag)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (layer, size, predicate) in
        cosign::attestation_layers(&bytes).map_err(|e| RegistryError::other(e.0))?
    {
        let envelope = Descriptor {
            media_type: cairn_trust::dsse::ENVELOPE_MEDIA.into(),
            digest: layer,
            size,
        };
        out.push((
            small_blob(client, store, repo, &tag, &envelope, 64 << 20)?,
            predicate,
        ));
    }
    Ok(out)
}

/// Pushes a signature or attestation manifest just written into the store under `tag`,
/// then makes sure the registry lists it among `subject`'s referrers.
fn push_manifest(
    client: &Client,
    store: &Store,
    repo: &str,
    tag: &str,
    subject: &Descriptor,
    artifact_type: &str,
    written: Result<(Digest, u64), cairn_trust::TrustError>,
) -> Result<(), RegistryError> {
    let (digest, size) = written.map_err(|e| RegistryError::other(e.0))?;
    let root = Descriptor {
        media_type: cairn_oci::media::MANIFEST.into(),
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
    if referrers_api(client, repo, &subject.digest)? {
        return Ok(());
    }
    refer_by_tag(client, repo, &subject.digest, &root, artifact_type)
}

/// Whether the registry answers the OCI 1.1 referrers API for `digest` (it then indexes
/// pushed manifests by their subject itself); one without it answers 404.
pub fn referrers_api(client: &Client, repo: &str, digest: &Digest) -> Result<bool, RegistryError> {
    let url = client.url(&format!("{repo}/referrers/{digest}"));
    let resp = client.request(
        "GET",
        &url,
        &crate::push::scope(repo),
        &[("Accept", cairn_oci::media::INDEX)],
        crate::client::Body::Empty,
        true,
    )?;
    let status = resp.status().as_u16();
    let json = crate::client::header(&resp, "content-type")
        .is_some_and(|t| t.starts_with(cairn_oci::media::INDEX));
    Ok(status == 200 && json)
}

/// The referrers tag schema: the index under `sha256-<hex>` lists `referrer` (replacing
/// an older referrer of the same artifact type, which a new signature manifest supersedes).
fn refer_by_tag(
    client: &Client,
    repo: &str,
    subject: &Digest,
    referrer: &Descriptor,
    artifact_type: &str,
) -> Result<(), RegistryError> {
    let tag = format!("sha256-{}", subject.hex());
    // Entry by entry: what other tools listed stays; only an entry that is not a
    // descriptor at all is left out, and said.
    let listed: Vec<serde_json::Value> = optional_manifest(client, repo, &tag)?
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|v| v["manifests"].as_array().cloned())
        .unwrap_or_default();
    let mut entries: Vec<OciDescriptor> = Vec::new();
    for e in listed {
        match serde_json::from_value::<OciDescriptor>(e.clone()) {
            Ok(d) => entries.push(d),
            Err(why) => eprintln!(
                "warning: {}/{repo}:{tag} lists {e}, which is not an OCI descriptor ({why}): leaving it out",
                client.config.host
            ),
        }
    }
    let ours = artifact::of_artifact_type(
        artifact::blob(&referrer.media_type, referrer.digest, referrer.size),
        artifact_type,
    );
    if entries.contains(&ours) {
        return Ok(());
    }
    entries.retain(|e| {
        e.artifact_type().as_ref().map(|t| t.to_string()).as_deref() != Some(artifact_type)
    });
    entries.push(ours);
    let bytes = artifact::index(entries).bytes;
    crate::push::put_manifest(client, repo, &tag, cairn_oci::media::INDEX, &bytes)
}
