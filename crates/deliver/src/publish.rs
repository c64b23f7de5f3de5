//! `publish` and `pull`: images and nodes between the store and a registry. A container
//! image goes as its image index. A node goes as an OCI artifact whose disk image is
//! zstd-compressed and split into chunks of at most `chunk_size` bytes (proxies in front of
//! Harbor refuse huge bodies); `pull` joins and decompresses the chunks, checks the disk
//! image's digest, and rebuilds the node's store manifest byte for byte.

use cairn_formats::Digest;
use cairn_inputs::lockfile::Lockfile;
use cairn_node::build::{self, ARTIFACT_TYPE, MEDIA_DISK, NodeFile, NodeResult};
use cairn_project::{ImageKind, Project};
use cairn_registry::RegistryOptions;
use cairn_registry::{Descriptor, PushOptions, PushReport};
use cairn_steps::error::Context as _;
use cairn_steps::{BUILDER_VERSION, Context, Error, Output, Step};
use cairn_store::{BlobWriter, Store, Tag};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// A chunk of a zstd-compressed disk image.
pub use cairn_oci::media::DISK_CHUNK as MEDIA_DISK_CHUNK;
pub const DEFAULT_CHUNK_SIZE: u64 = 512 << 20;
const ZSTD_LEVEL: i32 = 3;

fn repository(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// What a publish did.
#[derive(Debug, Clone)]
pub struct Published {
    pub name: String,
    pub kind: &'static str,
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
    pub report: PushReport,
    /// The signature tags (`sha256-<hex>.sig`) pushed with `--sign`, one per manifest.
    pub signatures: Vec<String>,
    /// The attestation tag (`sha256-<hex>.att`: SBOM and provenance) pushed with `--sign`.
    pub attestations: Option<String>,
}

impl Published {
    pub fn to_json(&self, registry: &str) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "kind": self.kind,
            "reference": format!("{registry}/{}:{}", self.repository, self.tag),
            "digest": self.digest.to_string(),
            "blobs": self.report.blobs,
            "blobs_uploaded": self.report.blobs_uploaded,
            "blobs_present": self.report.blobs_present,
            "blobs_mounted": self.report.blobs_mounted,
            "bytes_uploaded": self.report.bytes_uploaded,
            "manifests": self.report.manifests,
            "signatures": self.signatures,
            "attestations": self.attestations,
        })
    }
}

/// Builds `name` (an image or a node) if needed and pushes it; with `sign`, signs every
/// manifest pushed (an image's index and per-arch manifests, a node's artifact manifest).
pub fn publish(
    ctx: &Context,
    project: &Project,
    lock: &Lockfile,
    name: &str,
    options: &RegistryOptions,
    sign: Option<&cairn_trust::SigningKey>,
) -> Result<Published, Error> {
    let (client, namespace) = options.client()?;
    let (kind, root) = if let Some(image) = project.image(name) {
        if image.kind == ImageKind::Os {
            return Err(Error::msg(format!(
                "{name} is an OS image: publish the nodes built from it (`cargo xtask publish NODE`)"
            )));
        }
        let r = cairn_os::container::build_image(ctx, project, lock, name, &[])?;
        (
            "image",
            Descriptor {
                media_type: cairn_oci::media::INDEX.into(),
                digest: r.index,
                size: r.index_size,
            },
        )
    } else if project.node(name).is_some() {
        let r = build::build_node(ctx, project, lock, name)?;
        let store = ctx.open_store()?;
        ("node", registry_form(&store, &r, options.chunk_size)?)
    } else {
        return Err(Error::msg(format!(
            "{name:?} is neither an image (images/{name}.toml) nor a node (nodes/{name}.toml)"
        )));
    };
    let store = ctx.open_store()?;
    let repo = repository(&namespace, name);
    // Blobs the build cache already holds (kernels, squashfs, layers) are mounted, not sent.
    let push_options = PushOptions {
        parallel: options.parallel,
        mount_from: vec![repository(
            &namespace,
            cairn_registry::cache::CACHE_REPOSITORY,
        )],
        ..PushOptions::default()
    };
    let bars = cairn_steps::progress::BlobBars::new(ctx.progress, "pushing");
    let push = || {
        cairn_registry::push::push(
            &client,
            &store,
            &repo,
            &root,
            &options.tag,
            &push_options,
            &bars,
        )
    };
    let report = match push() {
        Err(cairn_registry::RegistryError::Auth { message, .. })
            if options.create_project && message.contains("create project") =>
        {
            let project_name = namespace.split('/').next().unwrap_or(&namespace);
            cairn_registry::harbor_create_project(&client, project_name)
                .context(|| format!("creating project {project_name} in {}", client.config.host))?;
            eprintln!("created project {project_name} in {}", client.config.host);
            push()
        }
        other => other,
    }
    .map_err(Error::from)
    .context(|| {
        format!(
            "pushing {name} to {}/{repo}:{}",
            client.config.host, options.tag
        )
    })?;
    bars.clear();
    let mut signatures = Vec::new();
    let mut attestations = None;
    if let Some(key) = sign {
        let bytes = store.read_blob(&root.digest)?;
        let (manifests, _) = cairn_registry::push::children(&bytes)?;
        for (i, d) in std::iter::once(&root).chain(manifests.iter()).enumerate() {
            let signed =
                cairn_registry::signatures::sign(&client, &store, &repo, d, key).context(|| {
                    format!(
                        "signing {name} {} in {}/{repo}",
                        d.digest, client.config.host
                    )
                })?;
            if i == 0 {
                // Kept beside the artifact in the store, so export carries it and import
                // and flash check it offline.
                let carried = (kind == "node").then(|| bytes.clone());
                cairn_supply::signed::record(
                    &store,
                    name,
                    root.digest,
                    carried,
                    signed.signatures,
                )?;
            }
            signatures.push(signed.tag);
        }
        attestations = Some(
            cairn_supply::attest::attach(
                ctx, project, lock, &client, &store, &repo, name, kind, &root, key,
            )
            .context(|| format!("attaching the SBOM and provenance of {name}"))?,
        );
    }
    Ok(Published {
        name: name.to_string(),
        kind,
        repository: repo,
        tag: options.tag.clone(),
        digest: root.digest,
        report,
        signatures,
        attestations,
    })
}

/// Splits a compressed stream into store blobs of at most `chunk` bytes.
struct ChunkSink<'a> {
    store: &'a Store,
    chunk: u64,
    current: Option<BlobWriter<'a>>,
    done: Vec<(Digest, u64)>,
}

impl Write for ChunkSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.current.is_none() {
            self.current = Some(self.store.blob_writer().map_err(std::io::Error::other)?);
        }
        let w = self.current.as_mut().expect("just set");
        let room = (self.chunk - w.n_bytes()) as usize;
        let n = buf.len().min(room);
        w.write_all(&buf[..n])?;
        if w.n_bytes() == self.chunk {
            let full = self.current.take().expect("current");
            self.done
                .push(full.finish(None).map_err(std::io::Error::other)?);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The node's manifest as it is published: its disk image as zstd chunks.
pub fn registry_form(store: &Store, r: &NodeResult, chunk_size: u64) -> Result<Descriptor, Error> {
    if chunk_size < 1 << 20 {
        return Err(Error::msg("--chunk-size must be at least 1 MiB"));
    }
    let key_doc = serde_json::json!({
        "step": "publish-node",
        "builder": BUILDER_VERSION,
        "manifest": r.manifest.digest.to_string(),
        "chunk_size": chunk_size,
        "zstd_level": ZSTD_LEVEL,
    });
    let step = Step::new(format!("publish-node {}", r.node), &key_doc);
    let (form, _) =
        cairn_steps::step::run_local(store, &step, || build_registry_form(store, r, chunk_size))?;
    Ok(Descriptor {
        media_type: cairn_oci::media::MANIFEST.into(),
        digest: form.digest,
        size: form.size,
    })
}

/// What the `publish-node` step records: the registry form's manifest, and the blobs it
/// names (the chunks, the node's other files).
#[derive(Serialize, Deserialize)]
struct RegistryForm {
    digest: Digest,
    size: u64,
    /// (Records before this field have it empty; their `blobs` list them.)
    #[serde(default)]
    parts: Vec<Digest>,
}

impl Output for RegistryForm {
    fn blobs(&self) -> Vec<Digest> {
        self.parts.iter().copied().chain([self.digest]).collect()
    }
    fn sizes(&self) -> Vec<(Digest, u64)> {
        vec![(self.digest, self.size)]
    }
}

fn build_registry_form(
    store: &Store,
    r: &NodeResult,
    chunk_size: u64,
) -> Result<RegistryForm, Error> {
    let original: serde_json::Value = serde_json::from_slice(&store.read_blob(&r.manifest.digest)?)
        .map_err(|e| Error::at(format!("node manifest {}", r.manifest.digest), e))?;
    let mut annotations = string_annotations(&original);
    annotations.insert(
        "dev.cairn.node.manifest".into(),
        r.manifest.digest.to_string(),
    );
    let mut files = Vec::new();
    for f in &r.files {
        if f.media_type != MEDIA_DISK {
            files.push(f.clone());
            continue;
        }
        let mut sink = ChunkSink {
            store,
            chunk: chunk_size,
            current: None,
            done: Vec::new(),
        };
        let mut enc =
            zstd::stream::Encoder::new(&mut sink, ZSTD_LEVEL).map_err(|e| Error::at("zstd", e))?;
        let mut disk = store.open_blob(&f.digest)?;
        std::io::copy(&mut disk, &mut enc)
            .map_err(|e| Error::at(format!("compressing {}", f.title), e))?;
        enc.finish()
            .map_err(|e| Error::at(format!("compressing {}", f.title), e))?;
        if let Some(last) = sink.current.take() {
            sink.done.push(last.finish(None)?);
        }
        for (i, (digest, size)) in sink.done.iter().enumerate() {
            files.push(NodeFile {
                title: format!("{}.zst.{i:03}", f.title),
                media_type: MEDIA_DISK_CHUNK.into(),
                digest: *digest,
                size: *size,
            });
        }
        annotations.insert("dev.cairn.disk".into(), f.title.clone());
        annotations.insert("dev.cairn.disk.digest".into(), f.digest.to_string());
        annotations.insert("dev.cairn.disk.size".into(), f.size.to_string());
        annotations.insert("dev.cairn.disk.chunks".into(), sink.done.len().to_string());
    }
    files.sort_by(|a, b| a.title.cmp(&b.title));
    let bytes = build::manifest_json(&annotations, &files);
    let digest = store.write_blob(&bytes)?;
    store.write_blob(build::EMPTY_CONFIG)?;
    Ok(RegistryForm {
        digest,
        size: bytes.len() as u64,
        parts: files.iter().map(|f| f.digest).collect(),
    })
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub name: String,
    pub kind: &'static str,
    /// The store's tag now points here (for a node: its rebuilt store manifest).
    pub digest: Digest,
    pub report: cairn_registry::pull::PullReport,
}

pub use cairn_supply::signed::Verify;

/// Pulls `name` from the registry into the store and tags it `name`, with its signatures
/// (tag `NAME.sig`) when it has any. With `verify`, the tag's manifest must carry a
/// signature of that key, checked before anything is pulled.
pub fn pull(
    ctx: &Context,
    name: &str,
    options: &RegistryOptions,
    verify: Option<&Verify>,
) -> Result<Pulled, Error> {
    let (client, namespace) = options.client()?;
    let repo = repository(&namespace, name);
    let store = ctx.open_store()?;
    let mut reference = options.tag.clone();
    let mut verified = None;
    if let Some(v) = verify {
        let (root, _) = cairn_registry::pull::get_manifest(&client, &repo, &options.tag)
            .map_err(Error::from)
            .context(|| format!("pulling {}/{repo}:{}", client.config.host, options.tag))?;
        verified = Some(cairn_registry::signatures::verify(
            &client,
            &store,
            &repo,
            &root.digest,
            &v.key,
            &v.path,
        )?);
        // Pull what was verified, whatever the tag points at by now.
        reference = root.digest.to_string();
    }
    let bars = cairn_steps::progress::BlobBars::new(ctx.progress, "pulling");
    let (root, report) = cairn_registry::pull::pull(&client, &store, &repo, &reference, &bars)
        .map_err(Error::from)
        .context(|| format!("pulling {}/{repo}:{}", client.config.host, options.tag))?;
    bars.clear();
    let bytes = store.read_blob(&root.digest)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::at(format!("{repo}: the manifest is not JSON"), e))?;
    let (kind, tag) = if v["artifactType"] == ARTIFACT_TYPE {
        ("node", node_from_registry_form(&store, &v)?)
    } else {
        (
            "image",
            Tag {
                name: name.into(),
                media_type: root.media_type.clone(),
                digest: root.digest,
                size: root.size,
            },
        )
    };
    let digest = tag.digest;
    let tag = Tag {
        name: name.into(),
        ..tag
    };
    store.set_tag(tag)?;
    store.set_origin(name, Some(&format!("pulled from {}", options.target)))?;
    // Its signatures come along (checked whenever they are used, not here), so `export`
    // carries them and `import`/`flash --verify-key` check them offline.
    let signatures = match verified {
        Some(signatures) => Some(signatures),
        None => cairn_registry::signatures::existing(&client, &store, &repo, &root.digest)
            .map_err(Error::from)
            .context(|| format!("reading the signatures of {}/{repo}", client.config.host))?,
    };
    if let Some(signatures) = signatures {
        let carried = (kind == "node").then_some(bytes);
        cairn_supply::signed::record(&store, name, root.digest, carried, signatures)?;
    }
    Ok(Pulled {
        name: name.into(),
        kind,
        digest,
        report,
    })
}

/// A manifest's annotations (OCI's are strings: any other value is left out, and the
/// manifest rebuilt from them then fails its digest check).
fn string_annotations(manifest: &serde_json::Value) -> BTreeMap<String, String> {
    manifest["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// Joins and decompresses the disk chunks, then rebuilds the node's store manifest and
/// checks it is the one that was published.
fn node_from_registry_form(store: &Store, v: &serde_json::Value) -> Result<Tag, Error> {
    let mut annotations = string_annotations(v);
    let take = |a: &mut BTreeMap<String, String>, k: &str| a.remove(k);
    let expected: Digest = take(&mut annotations, "dev.cairn.node.manifest")
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| Error::msg("a node artifact without dev.cairn.node.manifest"))?;
    let disk = take(&mut annotations, "dev.cairn.disk");
    let disk_digest: Option<Digest> =
        take(&mut annotations, "dev.cairn.disk.digest").and_then(|d| d.parse().ok());
    let disk_size: Option<u64> =
        take(&mut annotations, "dev.cairn.disk.size").and_then(|d| d.parse().ok());
    take(&mut annotations, "dev.cairn.disk.chunks");
    let mut files = Vec::new();
    let mut chunks = Vec::new();
    for l in v["layers"].as_array().into_iter().flatten() {
        let f = NodeFile {
            title: l["annotations"]["org.opencontainers.image.title"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
            digest: l["digest"]
                .as_str()
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| Error::msg(format!("bad layer {l}")))?,
            size: l["size"].as_u64().unwrap_or_default(),
        };
        if f.media_type == MEDIA_DISK_CHUNK {
            chunks.push(f);
        } else {
            files.push(f);
        }
    }
    if let (Some(title), Some(digest), Some(size)) = (disk, disk_digest, disk_size) {
        // `.zst.000`, `.zst.001`, ... `.zst.1000`: by number, not by text.
        let index = |f: &NodeFile| {
            f.title
                .rsplit('.')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        };
        chunks.sort_by_key(index);
        let joined = chunks
            .iter()
            .map(|c| store.open_blob(&c.digest))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .fold(Box::new(std::io::empty()) as Box<dyn Read>, |acc, f| {
                Box::new(acc.chain(f))
            });
        let mut dec = zstd::stream::Decoder::new(joined).map_err(|e| Error::at("zstd", e))?;
        let mut w = store.blob_writer()?;
        // At most one byte more than announced, so a bad stream cannot fill the disk.
        std::io::copy(&mut (&mut dec).take(size + 1), &mut w)
            .map_err(|e| Error::at(format!("decompressing {title}"), e))?;
        let (got, got_size) = w.finish(Some(digest))?;
        if got_size != size {
            return Err(Error::msg(format!(
                "{title}: {got_size} bytes after decompression, the manifest says {size}"
            )));
        }
        files.push(NodeFile {
            title,
            media_type: MEDIA_DISK.into(),
            digest: got,
            size,
        });
    }
    files.sort_by(|a, b| a.title.cmp(&b.title));
    let bytes = build::manifest_json(&annotations, &files);
    let digest = Digest::of(&bytes);
    if digest != expected {
        return Err(Error::msg(format!(
            "the node manifest rebuilt from the registry is {digest}, the published one was {expected}"
        )));
    }
    store.write_blob(&bytes)?;
    store.write_blob(build::EMPTY_CONFIG)?;
    Ok(Tag {
        name: String::new(),
        media_type: cairn_oci::media::MANIFEST.into(),
        digest,
        size: bytes.len() as u64,
    })
}
