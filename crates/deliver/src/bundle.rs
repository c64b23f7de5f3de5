//! `export` and `import`: images and nodes (and, on request, every input the lock pins)
//! as one OCI image layout in a tar, so a cluster can be reinstalled, and with its inputs
//! rebuilt, on a machine that has never been online. skopeo reads the bundle as an
//! `oci-archive:`.
//!
//! The bundle is written in a fixed order with fixed metadata, so the same store gives the
//! same bytes. `import` hashes every blob while it streams into a staging directory and
//! lands nothing (no blob, no tag, no input) until the whole bundle has been read and
//! every blob the tags reach is there: a truncated or altered bundle leaves the store as it
//! was. Importing twice changes nothing.

use cairn_formats::Digest;
use cairn_formats::tar::{EntryMeta, TarWriter};
use cairn_inputs::fetch::{Cache, Download};
use cairn_inputs::lockfile::Lockfile;
use cairn_oci::{OciDescriptor, artifact};
use cairn_project::{ImageKind, Project};
use cairn_steps::{Context, Error};
use cairn_store::Tag;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The tag of the inputs artifact inside a bundle.
pub const INPUTS_REF: &str = "cairn-inputs";
pub use cairn_oci::media::INPUTS_ARTIFACT as INPUTS_ARTIFACT_TYPE;
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const TITLE: &str = "org.opencontainers.image.title";
/// An SPDX JSON document, and the tag suffix of an artifact's SBOM in a bundle.
pub use cairn_oci::media::SPDX as SBOM_MEDIA;
pub const SBOM_TAG_SUFFIX: &str = ".sbom";
const META: EntryMeta = EntryMeta {
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: 0,
};

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub names: Vec<String>,
    pub blobs: usize,
    pub inputs: usize,
    pub bytes: u64,
}

/// The tag of `name`, built first when the project defines it.
fn tag_of(ctx: &Context, project: &Project, lock: &Lockfile, name: &str) -> Result<Tag, Error> {
    if let Some(spec) = project.image(name) {
        if spec.kind == ImageKind::Os {
            return Err(Error::msg(format!(
                "{name} is an OS image: export the nodes built from it"
            )));
        }
        cairn_os::container::build_image(ctx, project, lock, name, &[])?;
    } else if project.node(name).is_some() {
        cairn_node::build::build_node(ctx, project, lock, name)?;
    }
    ctx.open_store()?.tag(name)?.ok_or_else(|| {
        Error::msg(format!(
            "{name:?} is neither an image (images/{name}.toml), a node (nodes/{name}.toml) nor a tag in the store"
        ))
    })
}

/// The inputs artifact: every .deb and URL input of the lock, from the download cache
/// (fetched first when missing). Returns its manifest and the cache files it names.
fn inputs_artifact(
    ctx: &Context,
    lock: &Lockfile,
) -> Result<(Vec<u8>, Vec<(Digest, PathBuf)>), Error> {
    let cache = Cache::new(&ctx.cache);
    let mut wanted: BTreeMap<Digest, (String, String, u64)> = BTreeMap::new();
    let mut missing = Vec::new();
    let mirror = || cairn_inputs::mirror::resolve(None);
    for p in &lock.package {
        let sha = Digest::from_hex(&p.sha256)
            .map_err(|e| Error::at(format!("inputs.lock: package {}", p.name), e))?;
        let title = p.path.rsplit('/').next().unwrap_or(&p.path).to_string();
        if !cache.has(&sha) {
            missing.push(Download {
                name: format!("{} {} {}", p.name, p.version, p.arch),
                url: format!("{}/{}", mirror()?, p.path),
                sha256: sha,
                size: Some(p.size),
            });
        }
        wanted.insert(
            sha,
            (title, cairn_oci::media::DEBIAN_PACKAGE.into(), p.size),
        );
    }
    let mut url_inputs = Vec::new();
    for u in &lock.url {
        let sha = Digest::from_hex(&u.sha256)
            .map_err(|e| Error::at(format!("inputs.lock: url {}", u.url), e))?;
        if !cache.has(&sha) {
            missing.push(Download {
                name: u.name.clone(),
                url: u.url.clone(),
                sha256: sha,
                size: u.size,
            });
        }
        url_inputs.push((sha, u.name.clone(), u.size));
    }
    cache
        .fetch_all(&missing, ctx.progress)
        .map_err(|e| e.context("fetching the inputs to export"))?;
    // A pin from upstream's checksum file has no size: the fetched file gives it.
    for (sha, name, size) in url_inputs {
        let size = match size {
            Some(s) => s,
            None => std::fs::metadata(cache.path(&sha))
                .map_err(|e| Error::at(format!("{}", cache.path(&sha).display()), e))?
                .len(),
        };
        wanted.insert(sha, (name, cairn_oci::media::OCTET_STREAM.into(), size));
    }
    let layers = wanted
        .iter()
        .map(|(d, (title, media, size))| {
            artifact::annotated(artifact::blob(media, *d, *size), [(TITLE, title.as_str())])
        })
        .collect();
    let manifest =
        artifact::Manifest::artifact(INPUTS_ARTIFACT_TYPE, artifact::empty_config(true), layers);
    let files = wanted.keys().map(|d| (*d, cache.path(d))).collect();
    Ok((manifest.to_blob().bytes, files))
}

/// Writes `names` (images and nodes, built when needed) and, with `with_inputs`, every
/// input of the lock into `output` as an OCI layout in a tar.
pub fn export(
    ctx: &Context,
    project: &Project,
    lock: &Lockfile,
    names: &[String],
    with_inputs: bool,
    output: &Path,
) -> Result<Exported, Error> {
    let mut tags = Vec::new();
    for name in names {
        tags.push(
            tag_of(ctx, project, lock, name).map_err(|e| e.context(format!("exporting {name}")))?,
        );
    }
    let store = ctx.open_store()?;
    let (mut blobs, missing) = store.reachable(&tags.iter().map(|t| t.digest).collect::<Vec<_>>());
    if let Some(d) = missing.first() {
        return Err(Error::msg(format!(
            "the store lacks blob {d}: run `cargo xtask store verify --repair`, then build again"
        )));
    }
    let mut index: Vec<OciDescriptor> = tags
        .iter()
        .map(|t| {
            artifact::annotated(
                artifact::blob(&t.media_type, t.digest, t.size),
                [(REF_NAME, t.name.as_str())],
            )
        })
        .collect();
    // Each artifact's SBOM beside it, tagged `NAME.sbom`, pointing at it as its subject.
    for t in &tags {
        let sbom = cairn_supply::sbom::sbom(ctx, project, lock, &t.name, &[])
            .map_err(|e| e.context(format!("exporting the SBOM of {}", t.name)))?;
        let sbom_digest = store.write_blob(&sbom)?;
        store.write_blob(artifact::EMPTY_CONFIG)?;
        let layer = artifact::annotated(
            artifact::blob(SBOM_MEDIA, sbom_digest, sbom.len() as u64),
            [(TITLE, format!("{}.spdx.json", t.name))],
        );
        let mut manifest =
            artifact::Manifest::artifact(SBOM_MEDIA, artifact::empty_config(false), vec![layer]);
        manifest.subject = Some(artifact::blob(&t.media_type, t.digest, t.size));
        let manifest = manifest.to_blob().bytes;
        let digest = store.write_blob(&manifest)?;
        for d in [digest, sbom_digest, Digest::of(artifact::EMPTY_CONFIG)] {
            blobs.insert(d);
        }
        index.push(artifact::annotated(
            artifact::of_artifact_type(
                artifact::blob(cairn_oci::media::MANIFEST, digest, manifest.len() as u64),
                SBOM_MEDIA,
            ),
            [(REF_NAME, format!("{}{SBOM_TAG_SUFFIX}", t.name))],
        ));
    }
    // Each artifact's signatures (`NAME.sig`, recorded by a signed publish or a pull), so
    // `import --verify-key` checks them offline; a record of an older build stays behind.
    for t in &tags {
        let Some(sig) = store.tag(&cairn_trust::record::tag(&t.name))? else {
            continue;
        };
        let read = |d: &Digest| store.read_blob(d).ok();
        let current = cairn_trust::record::read(&store.read_blob(&sig.digest)?, &read)
            .and_then(|r| cairn_trust::record::covers(&r, &t.digest));
        if let Err(e) = current {
            eprintln!(
                "warning: not exporting the signatures of {} ({}): {e}",
                t.name, t.digest
            );
            continue;
        }
        let (reached, missing) = store.reachable(&[sig.digest]);
        if let Some(d) = missing.first() {
            return Err(Error::msg(format!(
                "the signatures of {} lack blob {d}: pull {} again",
                t.name, t.name
            )));
        }
        blobs.extend(reached);
        index.push(artifact::annotated(
            artifact::of_artifact_type(
                artifact::blob(&sig.media_type, sig.digest, sig.size),
                cairn_trust::record::ARTIFACT_TYPE,
            ),
            [(REF_NAME, sig.name.as_str())],
        ));
    }
    // Blob path by digest: the store's, or the download cache's for inputs.
    let mut paths: BTreeMap<Digest, PathBuf> =
        blobs.iter().map(|d| (*d, store.blob_path(d))).collect();
    let mut n_inputs = 0;
    if with_inputs {
        let (manifest, files) = inputs_artifact(ctx, lock)?;
        n_inputs = files.len();
        let digest = store.write_blob(&manifest)?;
        store.write_blob(artifact::EMPTY_CONFIG)?;
        for d in [digest, Digest::of(artifact::EMPTY_CONFIG)] {
            blobs.insert(d);
            paths.insert(d, store.blob_path(&d));
        }
        for (d, path) in files {
            paths.entry(d).or_insert(path);
        }
        index.push(artifact::annotated(
            artifact::of_artifact_type(
                artifact::blob(cairn_oci::media::MANIFEST, digest, manifest.len() as u64),
                INPUTS_ARTIFACT_TYPE,
            ),
            [(REF_NAME, INPUTS_REF)],
        ));
    }
    let index_bytes = artifact::index(index).bytes;

    // Written beside the output and renamed when complete: never half a bundle.
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // What an export killed there before left behind goes first.
    cairn_store::sweep_temp_files(dir, ".cairn-export-");
    let tmp = cairn_store::shared_temp_file(dir, ".cairn-export-")
        .map_err(|e| Error::at(dir.display(), e))?;
    let io = |e: std::io::Error| Error::at(format!("writing {}", output.display()), e);
    let total: u64 = paths
        .values()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = cairn_steps::progress::bytes(ctx.progress, total, "exporting");
    let mut tar = TarWriter::new(std::io::BufWriter::with_capacity(1 << 20, tmp.as_file()));
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    tar.file("oci-layout", META, layout.len() as u64, &layout[..])
        .map_err(io)?;
    tar.file(
        "index.json",
        META,
        index_bytes.len() as u64,
        &index_bytes[..],
    )
    .map_err(io)?;
    tar.dir(
        "blobs",
        EntryMeta {
            mode: 0o755,
            ..META
        },
    )
    .map_err(io)?;
    tar.dir(
        "blobs/sha256",
        EntryMeta {
            mode: 0o755,
            ..META
        },
    )
    .map_err(io)?;
    for (digest, path) in &paths {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::at(format!("{} ({digest})", path.display()), e))?;
        let size = file.metadata().map_err(io)?.len();
        // Hashed as it is written: a damaged copy never leaves in a bundle (the temp file
        // goes with the error).
        let mut reader = cairn_formats::HashingReader::new(bar.wrap_read(file));
        tar.file(
            &format!("blobs/sha256/{}", digest.hex()),
            META,
            size,
            &mut reader,
        )
        .map_err(io)?;
        let (_, found, _) = reader.finish();
        if found != *digest {
            return Err(Error::digest_mismatch(format!(
                "{} should hash to {digest} and hashes to {found}: not exported; run `cargo xtask store verify --repair`, then build or pull what it belongs to again",
                path.display()
            )));
        }
    }
    let mut w = tar.finish().map_err(io)?;
    w.flush().map_err(io)?;
    drop(w);
    bar.finish_and_clear();
    tmp.as_file().sync_all().map_err(io)?;
    let bytes = tmp.as_file().metadata().map_err(io)?.len();
    tmp.persist(output)
        .map_err(|e| Error::msg(format!("{}: {}", output.display(), e.error)))?;
    Ok(Exported {
        names: names.to_vec(),
        blobs: paths.len(),
        inputs: n_inputs,
        bytes,
    })
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    pub tags: Vec<String>,
    pub blobs_added: usize,
    pub blobs_present: usize,
    pub inputs_added: usize,
}

/// Reads `bundle` into the store (and its inputs into the download cache), verifying
/// everything before anything lands. With `verify`, every image and node in it must carry
/// a signature by that key (the bundle's `NAME.sig`), or nothing lands.
pub fn import(
    ctx: &Context,
    bundle: &Path,
    verify: Option<&cairn_supply::signed::Verify>,
) -> Result<Imported, Error> {
    let store = ctx.open_store()?;
    let name = bundle.display().to_string();
    let bad = |what: String| Error::msg(format!("bundle {name}: {what}"));
    let file = std::fs::File::open(bundle).map_err(|e| bad(e.to_string()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let staging = tempfile::Builder::new()
        .prefix("import-")
        .tempdir_in(store.root().join("tmp"))
        .map_err(|e| Error::at(store.root().display(), e))?;
    let bar = cairn_steps::progress::bytes(ctx.progress, total, "importing");
    let mut archive = tar::Archive::new(bar.wrap_read(std::io::BufReader::new(file)));
    let mut index: Option<serde_json::Value> = None;
    let mut layout_seen = false;
    let mut staged: BTreeSet<Digest> = BTreeSet::new();
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("cannot read: {e} (truncated?)")))?;
        let path = entry
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        match path.as_str() {
            "oci-layout" => {
                let mut text = String::new();
                entry
                    .by_ref()
                    .take(4096)
                    .read_to_string(&mut text)
                    .map_err(|e| bad(format!("oci-layout: {e}")))?;
                if !text.contains("\"imageLayoutVersion\"") {
                    return Err(bad("oci-layout is not an OCI image layout".into()));
                }
                layout_seen = true;
            }
            "index.json" => {
                let mut bytes = Vec::new();
                entry
                    .by_ref()
                    .take(4 << 20)
                    .read_to_end(&mut bytes)
                    .map_err(|e| bad(format!("index.json: {e} (truncated?)")))?;
                index = Some(
                    serde_json::from_slice(&bytes)
                        .map_err(|e| bad(format!("index.json is not JSON: {e}")))?,
                );
            }
            p if p.starts_with("blobs/sha256/") && entry.header().entry_type().is_file() => {
                let hex = &p["blobs/sha256/".len()..];
                let expected = Digest::from_hex(hex)
                    .map_err(|_| bad(format!("{p} is not named by a sha256")))?;
                let size = entry.header().size().unwrap_or(0);
                let dest = staging.path().join(hex);
                let mut out = cairn_formats::HashingWriter::new(std::io::BufWriter::new(
                    std::fs::File::create(&dest).map_err(|e| bad(e.to_string()))?,
                ));
                let copied = std::io::copy(&mut entry, &mut out)
                    .map_err(|e| bad(format!("{p}: {e} (truncated?)")))?;
                let (w, digest, _) = out.finish();
                w.into_inner().map_err(|e| bad(e.to_string()))?;
                if copied != size {
                    return Err(bad(format!("{p}: {copied} of {size} bytes (truncated)")));
                }
                if digest != expected {
                    return Err(bad(format!(
                        "blob {expected} is altered: its bytes hash to {digest}; nothing was imported"
                    )));
                }
                staged.insert(digest);
            }
            _ => {}
        }
    }
    bar.finish_and_clear();
    if !layout_seen {
        return Err(bad("no oci-layout: not an OCI image layout".into()));
    }
    let index = index.ok_or_else(|| bad("no index.json (truncated?)".into()))?;
    let mut tags = Vec::new();
    let mut inputs_manifest = None;
    for m in index["manifests"].as_array().into_iter().flatten() {
        let digest: Digest = m["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| bad(format!("index.json: a descriptor without a digest: {m}")))?;
        let name = m["annotations"][REF_NAME].as_str().unwrap_or_default();
        if name == INPUTS_REF {
            inputs_manifest = Some(digest);
            continue;
        }
        if name.is_empty() {
            continue;
        }
        tags.push(Tag {
            name: name.to_string(),
            media_type: m["mediaType"]
                .as_str()
                .unwrap_or(cairn_oci::media::MANIFEST)
                .to_string(),
            digest,
            size: m["size"].as_u64().unwrap_or_default(),
        });
    }
    // Every blob the tags (and the inputs) reach must be in the bundle or the store.
    let has = |d: &Digest| staged.contains(d) || store.has_blob(d);
    let read = |d: &Digest| -> Option<Vec<u8>> {
        if staged.contains(d) {
            std::fs::read(staging.path().join(d.hex())).ok()
        } else {
            store.read_blob(d).ok()
        }
    };
    let mut stack: Vec<Digest> = tags.iter().map(|t| t.digest).collect();
    let mut seen = BTreeSet::new();
    while let Some(d) = stack.pop() {
        if !seen.insert(d) {
            continue;
        }
        if !has(&d) {
            return Err(bad(format!(
                "blob {d} is missing (the bundle is incomplete or truncated); nothing was imported"
            )));
        }
        let small = staged
            .contains(&d)
            .then(|| {
                std::fs::metadata(staging.path().join(d.hex()))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .or_else(|| std::fs::metadata(store.blob_path(&d)).ok().map(|m| m.len()))
            .is_some_and(|n| n <= 4 << 20);
        if !small {
            continue;
        }
        let Some(bytes) = read(&d) else { continue };
        if bytes.first() != Some(&b'{') {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        stack.extend(cairn_store::child_digests(&v));
    }

    let seen_from_tags = seen;

    // The inputs must all be in the bundle itself (they go to the download cache, not the
    // store); checked before anything lands.
    let mut inputs: BTreeSet<Digest> = BTreeSet::new();
    if let Some(m) = inputs_manifest {
        if !staged.contains(&m) {
            return Err(bad(format!(
                "the inputs manifest {m} is not in the bundle; nothing was imported"
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(&read(&m).unwrap_or_default())
            .map_err(|e| bad(format!("the inputs manifest: {e}")))?;
        for l in v["layers"].as_array().into_iter().flatten() {
            let Some(d) = l["digest"].as_str().and_then(|s| s.parse::<Digest>().ok()) else {
                return Err(bad(format!(
                    "the inputs manifest: a layer without a digest: {l}"
                )));
            };
            if !staged.contains(&d) {
                return Err(bad(format!(
                    "input {d} is not in the bundle (incomplete or truncated); nothing was imported"
                )));
            }
            inputs.insert(d);
        }
    }
    if let Some(v) = verify {
        let place = format!("bundle {name}");
        for t in &tags {
            let n = t.name.as_str();
            if n.ends_with(SBOM_TAG_SUFFIX) || n.ends_with(cairn_trust::record::TAG_SUFFIX) {
                continue;
            }
            let record = tags
                .iter()
                .find(|r| r.name == cairn_trust::record::tag(n))
                .and_then(|r| read(&r.digest));
            cairn_supply::signed::check(n, &t.digest, record.as_deref(), &read, v, &place)
                .map_err(|e| Error::msg(format!("{e}; nothing was imported")))?;
        }
    }
    // Blobs the tags reach belong in the store, even when they are inputs too.
    let in_store: BTreeSet<Digest> = seen_from_tags;

    // Everything is verified: land the inputs in the download cache, the rest in the store.
    let mut report = Imported::default();
    let cache = Cache::new(&ctx.cache);
    for d in &inputs {
        if cache.has(d) {
            continue;
        }
        let (got, _) = cache.add_file(&staging.path().join(d.hex()))?;
        if got != *d {
            return Err(bad(format!("input {d} changed while importing")));
        }
        report.inputs_added += 1;
    }
    for d in &staged {
        if inputs.contains(d) && !in_store.contains(d) {
            continue;
        }
        if store.has_blob(d) {
            report.blobs_present += 1;
            continue;
        }
        // Hashed while it was staged: moved into place, not copied and hashed again.
        store.adopt(&staging.path().join(d.hex()), d)?;
        report.blobs_added += 1;
    }
    for tag in tags {
        if store.tag(&tag.name)?.as_ref() != Some(&tag) {
            store.set_tag(tag.clone())?;
        }
        store.set_origin(&tag.name, Some(&format!("imported from {name}")))?;
        report.tags.push(tag.name);
    }
    Ok(report)
}
