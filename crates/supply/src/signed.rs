//! Signatures in the store: recorded beside an artifact when it is published signed or
//! pulled, carried by `export`, and checked with no network by `import` and `flash`
//! (`--verify-key`). The record format is `cairn_trust::record`'s.

use cairn_formats::Digest;
use cairn_steps::{Context, Error};
use cairn_store::{Store, Tag};
use cairn_trust::cosign::Signature;
use cairn_trust::record::{self, Record};
use std::path::{Path, PathBuf};

/// A public key an artifact must carry a signature of.
pub struct Verify {
    pub key: cairn_trust::PublicKey,
    pub path: PathBuf,
}

impl Verify {
    pub fn load(path: &Path) -> Result<Verify, Error> {
        Ok(Verify {
            key: cairn_trust::PublicKey::load(path).map_err(|e| Error::msg(e.0))?,
            path: path.to_path_buf(),
        })
    }
}

/// Records `signatures` over `signed` as `name`'s in the store (tag `NAME.sig`), keeping
/// the signatures already recorded for the same digest. `signed_manifest` is the signed
/// manifest's bytes when the store tags another one (a node's registry form).
pub fn record(
    store: &Store,
    name: &str,
    signed: Digest,
    signed_manifest: Option<Vec<u8>>,
    signatures: Vec<Signature>,
) -> Result<(), Error> {
    let tag = record::tag(name);
    let mut all = Vec::new();
    if let Some(t) = store.tag(&tag)? {
        let bytes = store.read_blob(&t.digest)?;
        if let Ok(old) = record::read(&bytes, &|d| store.read_blob(d).ok())
            && old.signed == signed
        {
            all = old.signatures;
        }
    }
    for s in signatures {
        if !all.contains(&s) {
            all.push(s);
        }
    }
    let (digest, size) = record::write(
        store,
        &Record {
            signed,
            signed_manifest,
            signatures: all,
        },
    )
    .map_err(|e| Error::msg(e.0))?;
    store.set_tag(Tag {
        name: tag,
        media_type: cairn_oci::media::MANIFEST.into(),
        digest,
        size,
    })?;
    Ok(())
}

/// Checks that `name`, tagged at `tagged`, carries a signature by `v`'s key according to
/// the record manifest `record_manifest` (the `NAME.sig` tag's), reading blobs with
/// `read`. `place` says where the artifact is (the store, a bundle) for the error.
pub fn check(
    name: &str,
    tagged: &Digest,
    record_manifest: Option<&[u8]>,
    read: &dyn Fn(&Digest) -> Option<Vec<u8>>,
    v: &Verify,
    place: &str,
) -> Result<(), Error> {
    let Some(bytes) = record_manifest else {
        return Err(Error::msg(format!(
            "{name} ({tagged}) in {place} carries no signatures, and only what {} signed is accepted: pull it with --verify-key, or export it from a store that pulled or published it signed",
            v.path.display()
        )));
    };
    let r = record::read(bytes, read).map_err(|e| {
        Error::at(
            format!("{name} ({tagged}) in {place}: its signatures cannot be read"),
            e,
        )
    })?;
    record::verify(&r, tagged, &v.key).map_err(|e| {
        Error::at(
            format!(
                "{name} ({tagged}) in {place} is not signed by {}",
                v.path.display()
            ),
            e,
        )
    })
}

/// Checks the store's `name` against `v` with no network; returns the digest checked.
pub fn verify_stored(ctx: &Context, name: &str, v: &Verify) -> Result<Digest, Error> {
    let store = ctx.open_store()?;
    let place = format!("the store {}", ctx.store.display());
    let tag = store.tag(name)?.ok_or_else(|| {
        Error::msg(format!(
            "{name} is not in {place}: build it, pull it, or import a bundle that has it"
        ))
    })?;
    let record_manifest = match store.tag(&record::tag(name))? {
        Some(t) => Some(store.read_blob(&t.digest)?),
        None => None,
    };
    check(
        name,
        &tag.digest,
        record_manifest.as_deref(),
        &|d| store.read_blob(d).ok(),
        v,
        &place,
    )?;
    Ok(tag.digest)
}
