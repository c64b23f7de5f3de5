//! The registry as a shared build cache (as a Nix substituter): a step's action record is
//! published under its key (tag = the key's hex) in `<namespace>/cairn-cache`, as an OCI
//! artifact whose config is the record and whose layers are the record's blobs. With
//! `--cache`, a step missing from the local action cache is looked up there first, pulled
//! and verified like any pull; a step that had to be built is offered back.
//!
//! Anyone who can push to the cache repository could otherwise have their bytes used in
//! every later build: with a signing key (`--cache-sign`) each entry is signed in cosign's
//! format, and with a public key (`--cache-verify-key`, or the signing key's own) an entry
//! is substituted only when that key signed it for this very step (the manifest names the
//! step's key); any other entry is ignored with a warning and the step is built.

use crate::{Client, Descriptor, PushOptions, RegistryOptions};
use cairn_formats::Digest;
use cairn_oci::artifact;
use cairn_steps::Error;
use cairn_store::{ActionRecord, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Who signs and whose signatures count, for the remote build cache.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Signs every entry this process publishes.
    pub sign: Option<Arc<cairn_trust::SigningKey>>,
    /// Substitutes only entries this key signed (and the file it came from, for messages).
    pub verify: Option<Arc<(cairn_trust::PublicKey, PathBuf)>>,
}

/// The manifest annotation naming the step an entry is for: a signature covers it, so a
/// signed entry cannot be replayed under another step's tag.
pub const ACTION_ANNOTATION: &str = "dev.cairn.action";

pub const CACHE_REPOSITORY: &str = "cairn-cache";
pub use cairn_oci::media::ACTION_ARTIFACT as ARTIFACT_TYPE;

fn repository(namespace: &str) -> String {
    if namespace.is_empty() {
        CACHE_REPOSITORY.to_string()
    } else {
        format!("{namespace}/{CACHE_REPOSITORY}")
    }
}

/// A registry as the step runner's substituter (`--cache`).
#[derive(Debug)]
pub struct RemoteCache {
    options: RegistryOptions,
    trust: Trust,
    /// Set after the cache failed once: it is not asked again in this process.
    off: AtomicBool,
}

impl RemoteCache {
    pub fn new(options: RegistryOptions, trust: Trust) -> RemoteCache {
        RemoteCache {
            options,
            trust,
            off: AtomicBool::new(false),
        }
    }
}

impl cairn_steps::Substituter for RemoteCache {
    fn fetch(&self, store: &Store, key: &Digest) -> Option<ActionRecord> {
        if self.off.load(Ordering::SeqCst) {
            return None;
        }
        match fetch(store, key, &self.options, &self.trust) {
            Ok(found) => found,
            Err(e) => {
                self.off.store(true, Ordering::SeqCst);
                eprintln!(
                    "warning: the build cache {} could not be read ({e}); building instead, without it",
                    self.options.target
                );
                None
            }
        }
    }

    fn offer(&self, store: &Store, key: &Digest, record: &ActionRecord) {
        if self.off.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = upload(store, key, record, &self.options, &self.trust) {
            self.off.store(true, Ordering::SeqCst);
            eprintln!(
                "warning: could not publish step {} to the build cache {}: {e}",
                record.step, self.options.target
            );
            eprintln!("(the build cache is not tried again in this run)");
        }
    }
}

fn client(options: &RegistryOptions) -> Result<(Client, String), Error> {
    options.client()
}

fn fetch(
    store: &Store,
    key: &Digest,
    options: &RegistryOptions,
    trust: &Trust,
) -> Result<Option<ActionRecord>, Error> {
    let (client, namespace) = client(options)?;
    let repo = repository(&namespace);
    let tag = key.hex();
    let (found, bytes) = match crate::pull::get_manifest(&client, &repo, &tag) {
        Err(crate::RegistryError::Http { status: 404, .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
        Ok(m) => m,
    };
    if let Some(v) = &trust.verify {
        let ignore = |why: String| {
            eprintln!(
                "warning: ignoring build-cache entry {}/{repo}:{tag}: {why}; building the step instead",
                client.config.host
            );
            Ok(None)
        };
        let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let names = manifest["annotations"][ACTION_ANNOTATION].as_str();
        if names != Some(tag.as_str()) {
            return ignore(format!(
                "it is not the entry of this step (its {ACTION_ANNOTATION} is {})",
                names.unwrap_or("missing")
            ));
        }
        if let Err(e) = crate::signatures::verify(&client, store, &repo, &found.digest, &v.0, &v.1)
        {
            return ignore(e.to_string());
        }
    }
    // What was checked, whatever the tag points at by now.
    let (root, _) = crate::pull::pull(
        &client,
        store,
        &repo,
        &found.digest.to_string(),
        &crate::NoProgress,
    )?;
    let manifest: serde_json::Value = serde_json::from_slice(&store.read_blob(&root.digest)?)
        .map_err(|e| Error::at(format!("{repo}:{tag}"), e))?;
    if manifest["artifactType"] != ARTIFACT_TYPE {
        return Err(Error::msg(format!(
            "{repo}:{tag} is not a Cairn build-cache entry"
        )));
    }
    let config: Digest = manifest["config"]["digest"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| Error::msg(format!("{repo}:{tag}: no config")))?;
    let record: ActionRecord = serde_json::from_slice(&store.read_blob(&config)?)
        .map_err(|e| Error::at(format!("{repo}:{tag}: the record is not valid"), e))?;
    if let Some(missing) = record.blobs.iter().find(|b| !store.has_blob(b)) {
        return Err(Error::msg(format!(
            "{repo}:{tag}: the record names {missing}, which the entry does not carry"
        )));
    }
    Ok(Some(record))
}

fn upload(
    store: &Store,
    key: &Digest,
    record: &ActionRecord,
    options: &RegistryOptions,
    trust: &Trust,
) -> Result<(), Error> {
    let (client, namespace) = client(options)?;
    let repo = repository(&namespace);
    let record_bytes = cairn_formats::json::to_canonical_vec(record).expect("json");
    let config = store.write_blob(&record_bytes)?;
    let mut layers = Vec::new();
    for b in &record.blobs {
        let size = std::fs::metadata(store.blob_path(b))
            .map_err(|e| Error::at(format!("blob {b}"), e))?
            .len();
        layers.push(artifact::blob(cairn_oci::media::OCTET_STREAM, *b, size));
    }
    let mut manifest = artifact::Manifest::artifact(
        ARTIFACT_TYPE,
        artifact::blob(
            cairn_oci::media::ACTION_RECORD,
            config,
            record_bytes.len() as u64,
        ),
        layers,
    );
    manifest.annotations = [
        ("dev.cairn.step".to_string(), record.step.clone()),
        (ACTION_ANNOTATION.to_string(), key.hex()),
    ]
    .into();
    let bytes = manifest.to_blob().bytes;
    let digest = store.write_blob(&bytes)?;
    let root = Descriptor {
        media_type: cairn_oci::media::MANIFEST.into(),
        digest,
        size: bytes.len() as u64,
    };
    crate::push::push(
        &client,
        store,
        &repo,
        &root,
        &key.hex(),
        &PushOptions {
            parallel: options.parallel,
            ..PushOptions::default()
        },
        &crate::NoProgress,
    )?;
    if let Some(signer) = &trust.sign {
        crate::signatures::sign(&client, store, &repo, &root, signer)?;
    }
    Ok(())
}
