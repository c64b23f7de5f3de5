//! Signatures in a registry, in cosign's format: `publish --sign KEY` adds a signature for
//! every manifest it pushes (kept beside any other key's signatures of the same manifest);
//! `pull --verify-key KEY.pub` refuses a manifest no signature of that key covers.

use cairn_formats::Digest;
use cairn_registry::{Client, Descriptor, PushOptions, RegistryError};
use cairn_steps::Error;
use cairn_store::Store;
use cairn_trust::cosign::{self, Signature};
use cairn_trust::{PublicKey, SigningKey};
use std::path::Path;

/// Reads a signing key file: PKCS#8 PEM, or cosign's encrypted key with its password in
/// `COSIGN_PASSWORD`.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::msg(format!("signing key {}: {e}", path.display())))?;
    let password =
        std::env::var_os(cairn_trust::keys::PASSWORD_ENV).map(|p| p.into_encoded_bytes());
    SigningKey::from_pem(&text, password.as_deref(), &path.display().to_string())
        .map_err(|e| Error::msg(e.0))
}

pub fn load_public_key(path: &Path) -> Result<PublicKey, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::msg(format!("public key {}: {e}", path.display())))?;
    PublicKey::from_pem(&text, &path.display().to_string()).map_err(|e| Error::msg(e.0))
}

/// The signature manifest `repo` holds for `digest`, if any: its signatures, with their
/// payloads fetched (verified by digest) into the store.
fn existing(
    client: &Client,
    store: &Store,
    repo: &str,
    digest: &Digest,
) -> Result<Option<Vec<Signature>>, Error> {
    let tag = cosign::signature_tag(digest);
    let (_, bytes) = match cairn_registry::pull::get_manifest(client, repo, &tag) {
        Ok(m) => m,
        Err(RegistryError::Http { status: 404, .. }) => return Ok(None),
        Err(e) => return Err(Error::from(e)),
    };
    let mut out = Vec::new();
    for (payload, size, signature) in cosign::layers(&bytes).map_err(|e| Error::msg(e.0))? {
        if size > 1 << 20 {
            return Err(Error::msg(format!(
                "{repo}:{tag} has a signature payload of {size} bytes: not a signature"
            )));
        }
        let d = Descriptor {
            media_type: cosign::SIMPLE_SIGNING_MEDIA.into(),
            digest: payload,
            size,
        };
        let mut report = cairn_registry::pull::PullReport::default();
        cairn_registry::pull::fetch_blob(
            client,
            store,
            repo,
            &d,
            &mut report,
            &cairn_registry::NoProgress,
        )?;
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
) -> Result<(String, bool), Error> {
    let reference = format!("{}/{repo}", client.config.host);
    let ours = Signature::new(key, &reference, digest);
    let tag = cosign::signature_tag(digest);
    let mut all = existing(client, store, repo, digest)?.unwrap_or_default();
    if all.contains(&ours) {
        return Ok((tag, false));
    }
    all.push(ours);
    let (manifest, size) = cosign::write_manifest(store, &all).map_err(|e| Error::msg(e.0))?;
    let root = Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: manifest,
        size,
    };
    cairn_registry::push::push(
        client,
        store,
        repo,
        &root,
        &tag,
        &PushOptions::default(),
        &cairn_registry::NoProgress,
    )?;
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
) -> Result<(), Error> {
    let tag = cosign::signature_tag(digest);
    let where_ = format!("{}/{repo}", client.config.host);
    let Some(signatures) = existing(client, store, repo, digest)? else {
        return Err(Error::msg(format!(
            "{where_}@{digest} is not signed (there is no {tag}): refusing it under --verify-key {}; publish it with `--sign KEY`",
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
    Err(Error::msg(format!(
        "{where_}@{digest} is not signed by {} ({}): refusing it. Its {} signature(s): {}",
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
