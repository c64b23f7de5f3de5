//! `build-node`: a node's bootable artifact. The base OS of its (image, arch) plus the
//! cluster's Kubernetes binaries (one squashfs shared by every node of that arch), the
//! node's own configuration (a small cpio appended to the initramfs), and then either an
//! SD-card image (MBR, FAT32 boot partition, squashfs root) or a PXE bundle (kernel,
//! initramfs, squashfs, iPXE script). The result is an OCI artifact manifest in the store,
//! tagged with the node's name, one layer per file.

use crate::config::{self, BootFacts, Overlay, OverlayEntry};
use crate::disk;
use cairn_formats::Digest;
use cairn_formats::cpio::CpioWriter;
use cairn_inputs::fetch::Download;
use cairn_inputs::lockfile::Lockfile;
use cairn_oci::{Descriptor, artifact};
use cairn_os::base::{OsExtras, OsResult};
use cairn_project::{Arch, BootMethod, NodeSpec, Project};
use cairn_steps::error::Context as _;
use cairn_steps::{BUILDER_VERSION, Context, Error, Output, Step};
use cairn_store::{Store, Tag};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A disk image's block map, in bmaptool's format.
pub use cairn_oci::media::BMAP as MEDIA_BMAP;
pub use cairn_oci::media::DISK as MEDIA_DISK;
pub use cairn_oci::media::INITRAMFS as MEDIA_INITRAMFS;
pub use cairn_oci::media::IPXE as MEDIA_IPXE;
pub use cairn_oci::media::KERNEL as MEDIA_KERNEL;
/// The artifact type of a node manifest.
pub use cairn_oci::media::NODE_ARTIFACT as ARTIFACT_TYPE;
pub use cairn_oci::media::SQUASHFS as MEDIA_SQUASHFS;
pub use cairn_oci::media::TEXT as MEDIA_TEXT;
/// Annotations of a node manifest: where the SD image's reserved secrets file lies.
pub const ANNOTATION_SECRETS_OFFSET: &str = "dev.cairn.secrets.offset";
pub const ANNOTATION_SECRETS_SIZE: &str = "dev.cairn.secrets.size";
pub use cairn_oci::artifact::EMPTY_CONFIG;

/// One file of a node's artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFile {
    /// File name (`org.opencontainers.image.title`).
    pub title: String,
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// What `build-node` produced for one node.
#[derive(Debug, Clone)]
pub struct NodeResult {
    pub node: String,
    pub node_id: Digest,
    pub arch: Arch,
    pub boot: BootMethod,
    /// The artifact manifest (tagged with the node's name).
    pub manifest: Descriptor,
    pub files: Vec<NodeFile>,
    /// Kernel command line (SD: cmdline.txt; PXE: the iPXE script's).
    pub cmdline: String,
    /// Whether the shared base OS came from the action cache.
    pub base_cached: bool,
    /// Whether the whole node came from the action cache.
    pub cached: bool,
}

impl NodeResult {
    pub fn file(&self, title: &str) -> Option<&NodeFile> {
        self.files.iter().find(|f| f.title == title)
    }

    pub fn to_json(&self, store: &std::path::Path) -> serde_json::Value {
        let files: serde_json::Map<String, serde_json::Value> = self
            .files
            .iter()
            .map(|f| {
                (
                    f.title.clone(),
                    serde_json::json!({
                        "digest": f.digest.to_string(),
                        "size": f.size,
                        "media_type": f.media_type,
                        "path": store.join("blobs/sha256").join(f.digest.hex()).display().to_string(),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "node": self.node,
            "node_id": self.node_id.hex(),
            "arch": self.arch.as_str(),
            "boot": boot_name(self.boot),
            "manifest": {"digest": self.manifest.digest.to_string(), "size": self.manifest.size},
            "files": files,
            "cmdline": self.cmdline,
            "base_cached": self.base_cached,
            "cached": self.cached,
        })
    }

    fn from_record(node: &NodeSpec, node_id: Digest, r: NodeRecord, cached: bool) -> NodeResult {
        NodeResult {
            node: node.name.clone(),
            node_id,
            arch: node.arch,
            boot: node.boot,
            manifest: Descriptor {
                media_type: cairn_oci::media::MANIFEST.into(),
                ..r.manifest
            },
            files: r
                .files
                .into_iter()
                .map(|(title, d)| NodeFile {
                    title,
                    media_type: d.media_type,
                    digest: d.digest,
                    size: d.size,
                })
                .collect(),
            cmdline: r.cmdline,
            base_cached: true,
            cached,
        }
    }
}

/// What the `node` step records.
#[derive(Serialize, Deserialize)]
struct NodeRecord {
    /// The node's id (hex), for people reading the cache.
    node_id: String,
    manifest: Descriptor,
    /// By title, each with its media type.
    files: BTreeMap<String, Descriptor>,
    cmdline: String,
}

impl Output for NodeRecord {
    fn blobs(&self) -> Vec<Digest> {
        self.files
            .values()
            .map(|f| f.digest)
            .chain([self.manifest.digest, Digest::of(EMPTY_CONFIG)])
            .collect()
    }
    fn sizes(&self) -> Vec<(Digest, u64)> {
        self.files
            .values()
            .chain([&self.manifest])
            .map(|f| (f.digest, f.size))
            .collect()
    }
}

fn boot_name(boot: BootMethod) -> &'static str {
    match boot {
        BootMethod::Sd => "sd",
        BootMethod::Pxe => "pxe",
    }
}

/// The node's overlay as a gzip'd newc cpio whose files sit under `cairn/node/` (the
/// initramfs copies them onto the root's writable layer).
pub fn overlay_cpio(overlay: &Overlay, mtime: u32) -> Result<Vec<u8>, Error> {
    let err = |e: std::io::Error| Error::at("writing the node overlay", e);
    let mut w = CpioWriter::new(cairn_formats::gzip::writer(Vec::new()));
    w.dir("cairn", 0o755, mtime).map_err(err)?;
    w.dir("cairn/node", 0o755, mtime).map_err(err)?;
    for (path, entry) in overlay {
        let path = format!("cairn/node/{path}");
        match entry {
            OverlayEntry::Dir(mode) => w.dir(&path, *mode, mtime),
            OverlayEntry::File(bytes, mode) => w.file(&path, *mode, mtime, bytes),
            OverlayEntry::Symlink(target) => w.symlink(&path, target, mtime),
        }
        .map_err(err)?;
    }
    w.finish().map_err(err)?.finish().map_err(err)
}

/// The base OS with the cluster's Kubernetes binaries, for `node`.
fn base(
    ctx: &Context,
    project: &Project,
    lock: &Lockfile,
    node: &NodeSpec,
) -> Result<OsResult, Error> {
    let inputs = cairn_inputs::kubernetes::inputs(&project.cluster, node.arch);
    let pins = cairn_inputs::kubernetes::pins(lock, &inputs)?;
    let extras = OsExtras {
        binaries: pins
            .into_iter()
            .map(|(input, sha256, size)| {
                let download = Download {
                    name: input.name,
                    url: input.url,
                    sha256,
                    size,
                };
                (input.path, download, 0o755)
            })
            .collect(),
        texts: crate::kubernetes::units(&project.cluster)
            .into_iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect(),
        symlinks: crate::kubernetes::symlinks(&project.cluster),
    };
    cairn_os::base::build_os_with(ctx, project, lock, node.image.get_ref(), node.arch, &extras)
}

/// Builds (or finds in the action cache) the artifact of node `name`.
pub fn build_node(
    ctx: &Context,
    project: &Project,
    lock: &Lockfile,
    name: &str,
) -> Result<NodeResult, Error> {
    let node = project.node(name).ok_or_else(|| {
        let known: Vec<&str> = project.nodes.iter().map(|n| n.name.as_str()).collect();
        Error::msg(format!(
            "no node named {name:?} (no nodes/{name}.toml); nodes: {}",
            known.join(", ")
        ))
    })?;
    if project.image(name).is_some() {
        return Err(Error::msg(format!(
            "node {name} and image {name} share a name, and so would share a tag: rename one"
        )));
    }
    let cluster = &project.cluster;
    let cluster_ca = config::read_cluster_ca(cluster)?;
    let node_id = config::node_id(cluster, node, cluster_ca.as_deref())?;
    let base = base(ctx, project, lock, node)?;
    let epoch = base.epoch;

    let (cmdline, boot_partition) = match node.boot {
        BootMethod::Sd => {
            let ids = disk::DiskIds::from_node_id(&node_id);
            (
                disk::sd_cmdline(node, &ids),
                Some(format!("PARTUUID={}", ids.partuuid(1))),
            )
        }
        BootMethod::Pxe => (crate::pxe::cmdline(), None),
    };
    let overlay = config::render(
        cluster,
        node,
        &node_id,
        cluster_ca.as_deref(),
        &BootFacts { boot_partition },
    );
    let overlay = overlay_cpio(&overlay, epoch as u32)?;
    let key_doc = serde_json::json!({
        "step": "node",
        "builder": BUILDER_VERSION,
        "definition": String::from_utf8_lossy(&config::canonical_definition(cluster, node, cluster_ca.as_deref())?),
        "base": {
            "squashfs": base.squashfs.digest.to_string(),
            "kernel": base.kernel.digest.to_string(),
            "initramfs": base.initramfs.digest.to_string(),
            "boot_files": base.boot_files.iter().map(|(n, b)| format!("{n} {}", b.digest)).collect::<Vec<_>>(),
        },
        "source_date_epoch": epoch,
        "overlay": Digest::of(&overlay).to_string(),
        "cmdline": cmdline,
        "layout": disk::LAYOUT_VERSION,
    });
    let step = Step::new(format!("node {name}"), &key_doc);
    let store = ctx.open_store()?;
    let (record, cached) = cairn_steps::step::run(ctx, &store, &step, || {
        let built = Built {
            node,
            node_id: &node_id,
            base: &base,
            cmdline: &cmdline,
            overlay,
            epoch,
        };
        built.build(ctx, &store)
    })?;
    let mut result = NodeResult::from_record(node, node_id, record, cached);
    result.base_cached = base.cached;
    tag(&store, &result)?;
    Ok(result)
}

/// What the `node` step builds from: all resolved before its key.
struct Built<'a> {
    node: &'a NodeSpec,
    node_id: &'a Digest,
    base: &'a OsResult,
    cmdline: &'a str,
    overlay: Vec<u8>,
    epoch: u64,
}

impl Built<'_> {
    /// The node's files, their manifest and its empty config, written to the store.
    fn build(self, ctx: &Context, store: &Store) -> Result<NodeRecord, Error> {
        let Built {
            node,
            node_id,
            base,
            cmdline,
            overlay,
            epoch,
        } = self;
        let name = node.name.as_str();
        let spinner =
            cairn_steps::progress::spinner(ctx.progress, &format!("building node {name}"));
        let mut files = Vec::new();
        let mut secrets_offset = None;
        let mut initrd = store.read_blob(&base.initramfs.digest)?;
        initrd.extend_from_slice(&overlay);
        let initrd_digest = store.write_blob(&initrd)?;
        let mut push = |title: &str, media: &str, digest: Digest, size: u64| {
            files.push(NodeFile {
                title: title.into(),
                media_type: media.into(),
                digest,
                size,
            })
        };
        push(
            "vmlinuz",
            MEDIA_KERNEL,
            base.kernel.digest,
            base.kernel.size,
        );
        push(
            "initrd.img",
            MEDIA_INITRAMFS,
            initrd_digest,
            initrd.len() as u64,
        );
        push(
            "root.squashfs",
            MEDIA_SQUASHFS,
            base.squashfs.digest,
            base.squashfs.size,
        );
        match node.boot {
            BootMethod::Sd => {
                spinner.set_message(format!("writing the SD image of {name}"));
                let kernel = store.read_blob(&base.kernel.digest)?;
                let boot = disk::boot_partition_files(
                    node, &base, &store, kernel, initrd, &cmdline, &node_id,
                )
                .context(|| format!("node {name} ({})", node.path.display()))?;
                let cmd = format!("{cmdline}\n");
                push(
                    "cmdline.txt",
                    MEDIA_TEXT,
                    store.write_blob(cmd.as_bytes())?,
                    cmd.len() as u64,
                );
                let image = disk::write_sd_image(&store, node, &node_id, &boot, &base, epoch)
                    .context(|| format!("writing the SD image of node {name}"))?;
                let mut blob = store.open_blob(&image.digest)?;
                let bmap = cairn_disk::bmap::write(&mut blob, image.size, &image.mapped)
                    .map_err(|e| Error::at(format!("the block map of node {name}'s image"), e))?;
                push(&format!("{name}.img"), MEDIA_DISK, image.digest, image.size);
                push(
                    &format!("{name}.img.bmap"),
                    MEDIA_BMAP,
                    store.write_blob(bmap.as_bytes())?,
                    bmap.len() as u64,
                );
                secrets_offset = Some(image.secrets_offset);
            }
            BootMethod::Pxe => {
                let mac = node.mac.expect("checked when the node loaded");
                let script =
                    crate::pxe::node_script(node, &node_id, &mac, &cmdline, &base.squashfs.digest);
                push(
                    &crate::pxe::script_name(&mac),
                    MEDIA_IPXE,
                    store.write_blob(script.as_bytes())?,
                    script.len() as u64,
                );
                let chain = crate::pxe::CHAIN_SCRIPT;
                push(
                    "boot.ipxe",
                    MEDIA_IPXE,
                    store.write_blob(chain.as_bytes())?,
                    chain.len() as u64,
                );
            }
        }
        files.sort_by(|a, b| a.title.cmp(&b.title));
        spinner.finish_and_clear();

        let mut annotations = node_annotations(node, &node_id, epoch);
        if let Some(offset) = secrets_offset {
            annotations.insert(ANNOTATION_SECRETS_OFFSET.into(), offset.to_string().into());
            annotations.insert(
                ANNOTATION_SECRETS_SIZE.into(),
                disk::SECRETS_BYTES.to_string().into(),
            );
        }
        let manifest = manifest_json(&annotations, &files);
        store.write_blob(EMPTY_CONFIG)?;
        let manifest_digest = store.write_blob(&manifest)?;
        Ok(NodeRecord {
            node_id: node_id.hex(),
            manifest: Descriptor::blob(manifest_digest, manifest.len() as u64),
            files: files
                .into_iter()
                .map(|f| {
                    let d = Descriptor {
                        media_type: f.media_type,
                        digest: f.digest,
                        size: f.size,
                    };
                    (f.title, d)
                })
                .collect(),
            cmdline: cmdline.to_string(),
        })
    }
}

fn tag(store: &Store, r: &NodeResult) -> Result<(), Error> {
    let tag = Tag {
        name: r.node.clone(),
        media_type: cairn_oci::media::MANIFEST.into(),
        digest: r.manifest.digest,
        size: r.manifest.size,
    };
    if store.tag(&r.node)?.as_ref() != Some(&tag) {
        store.set_tag(tag)?;
    }
    // Built here: no longer a pulled or imported copy.
    store.set_origin(&r.node, None)?;
    Ok(())
}

/// The annotations of a node's manifest.
fn node_annotations(node: &NodeSpec, node_id: &Digest, epoch: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "org.opencontainers.image.created".into(),
            cairn_oci::rfc3339(epoch),
        ),
        ("dev.cairn.node".into(), node.name.clone()),
        ("dev.cairn.node-id".into(), node_id.hex()),
        ("dev.cairn.arch".into(), node.arch.as_str().into()),
        ("dev.cairn.boot".into(), boot_name(node.boot).into()),
        ("dev.cairn.hostname".into(), node.hostname.to_string()),
    ])
}

/// A node's OCI artifact manifest: the empty config, one layer per file (sorted by title).
pub fn manifest_json(annotations: &BTreeMap<String, String>, files: &[NodeFile]) -> Vec<u8> {
    let layers = files
        .iter()
        .map(|f| {
            artifact::annotated(
                artifact::blob(&f.media_type, f.digest, f.size),
                [("org.opencontainers.image.title", f.title.as_str())],
            )
        })
        .collect();
    let mut m = artifact::Manifest::artifact(ARTIFACT_TYPE, artifact::empty_config(true), layers);
    m.annotations = annotations.clone();
    m.to_blob().bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's manifest bytes are part of its digest (tests/expected-digests.toml): these
    /// are the bytes every earlier Cairn wrote for these files.
    #[test]
    fn a_node_manifest_keeps_its_bytes() {
        let files = vec![
            NodeFile {
                title: "initrd.img".into(),
                media_type: MEDIA_INITRAMFS.into(),
                digest: Digest::of(b"initrd"),
                size: 6,
            },
            NodeFile {
                title: "pi.img".into(),
                media_type: MEDIA_DISK.into(),
                digest: Digest::of(b"disk"),
                size: 4,
            },
        ];
        let mut annotations = BTreeMap::new();
        annotations.insert("dev.cairn.node".to_string(), "pi".to_string());
        annotations.insert(ANNOTATION_SECRETS_OFFSET.to_string(), "4096".to_string());
        let bytes = manifest_json(&annotations, &files);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"annotations":{"dev.cairn.node":"pi","#),
            "{text}"
        );
        assert!(text.contains(r#""config":{"data":"e30=","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","mediaType":"application/vnd.oci.empty.v1+json","size":2}"#), "{text}");
        assert_eq!(
            Digest::of(&bytes).to_string(),
            "sha256:83c4ac2c083cd0f26a007a4dcb6dc85cd66486f4806864205e03153e4ed64d87"
        );
    }
}
