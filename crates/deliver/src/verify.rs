//! `verify --rebuild`: builds an image or node again in a scratch store from the lock and
//! compares it with what the store (or a registry) holds, blob by blob. Where they differ
//! it says where inside the artifact: a tar entry of a layer, a file of a squashfs, a section
//! of a disk image, a key of a JSON document, with both sizes and digests. A stored blob
//! whose bytes no longer hash to its name is found too: its content is compared with the
//! rebuilt one.

use cairn_formats::Digest;
use cairn_inputs::lockfile::Lockfile;
use cairn_node::build::{MEDIA_DISK, MEDIA_SQUASHFS};
use cairn_project::Project;
use cairn_registry::RegistryOptions;
use cairn_steps::{Context, Error};
use cairn_store::Store;
use std::collections::BTreeMap;
use std::io::Read;

/// What a verification found.
#[derive(Debug, Clone)]
pub struct Verified {
    pub name: String,
    /// The root the store (or registry) holds, and the one rebuilt.
    pub expected: Digest,
    pub rebuilt: Digest,
    /// Empty when the artifact was rebuilt bit for bit.
    pub differences: Vec<String>,
}

impl Verified {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "expected": self.expected.to_string(),
            "rebuilt": self.rebuilt.to_string(),
            "reproduced": self.differences.is_empty(),
            "differences": self.differences,
        })
    }
}

/// (size, content digest, metadata) of each entry of an archive or filesystem.
type Entries = BTreeMap<String, (u64, Digest, String)>;

fn tar_entries(bytes: &[u8]) -> Result<Entries, String> {
    let reader: Box<dyn Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut out = Entries::new();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let h = entry.header();
        let meta = format!(
            "type {:?} mode {:o} owner {}:{} mtime {} link {:?}",
            h.entry_type(),
            h.mode().unwrap_or(0),
            h.uid().unwrap_or(0),
            h.gid().unwrap_or(0),
            h.mtime().unwrap_or(0),
            h.link_name()
                .ok()
                .flatten()
                .map(|l| l.to_string_lossy().into_owned())
        );
        let mut content = Vec::new();
        entry.read_to_end(&mut content).map_err(|e| e.to_string())?;
        out.insert(path, (content.len() as u64, Digest::of(&content), meta));
    }
    Ok(out)
}

fn squashfs_entries(bytes: &[u8]) -> Result<Entries, String> {
    let fs = backhand::FilesystemReader::from_reader(std::io::Cursor::new(bytes))
        .map_err(|e| e.to_string())?;
    let mut out = Entries::new();
    for node in fs.files() {
        let h = &node.header;
        let mut meta = format!(
            "mode {:o} owner {}:{} mtime {}",
            h.permissions, h.uid, h.gid, h.mtime
        );
        let content = match &node.inner {
            backhand::InnerNode::File(f) => {
                let mut c = Vec::new();
                fs.file(f)
                    .reader()
                    .read_to_end(&mut c)
                    .map_err(|e| e.to_string())?;
                c
            }
            backhand::InnerNode::Symlink(l) => {
                meta.push_str(&format!(" -> {}", l.link.display()));
                Vec::new()
            }
            other => {
                meta.push_str(&format!(
                    " {}",
                    match other {
                        backhand::InnerNode::Dir(_) => "dir",
                        _ => "special",
                    }
                ));
                Vec::new()
            }
        };
        out.insert(
            node.fullpath.to_string_lossy().into_owned(),
            (content.len() as u64, Digest::of(&content), meta),
        );
    }
    Ok(out)
}

/// The sections of an MBR disk image: sector 0, each partition, and what lies between.
fn disk_sections(bytes: &[u8]) -> Entries {
    let mut cuts: Vec<(String, u64, u64)> = vec![("MBR (sector 0)".into(), 0, 512)];
    if bytes.len() >= 512 && bytes[510..512] == [0x55, 0xaa] {
        for i in 0..4 {
            let e = &bytes[446 + 16 * i..446 + 16 * (i + 1)];
            let start = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]])) * 512;
            let len = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]])) * 512;
            if len > 0 {
                cuts.push((
                    format!("partition {} (type 0x{:02x})", i + 1, e[4]),
                    start,
                    start + len,
                ));
            }
        }
    }
    cuts.sort_by_key(|c| c.1);
    let mut out = Entries::new();
    let mut at = 0u64;
    let total = bytes.len() as u64;
    for (name, start, end) in cuts {
        let (start, end) = (start.min(total), end.min(total));
        if start > at {
            let gap = &bytes[at as usize..start as usize];
            out.insert(
                format!("bytes {at}..{start} (between sections)"),
                (gap.len() as u64, Digest::of(gap), String::new()),
            );
        }
        let s = &bytes[start as usize..end as usize];
        out.insert(
            format!("{name} at bytes {start}..{end}"),
            (s.len() as u64, Digest::of(s), String::new()),
        );
        at = at.max(end);
    }
    if at < total {
        let rest = &bytes[at as usize..];
        out.insert(
            format!("bytes {at}..{total} (after the last partition)"),
            (rest.len() as u64, Digest::of(rest), String::new()),
        );
    }
    out
}

fn compare_entries(what: &str, ours: &Entries, theirs: &Entries, out: &mut Vec<String>) {
    let mut keys: Vec<&String> = ours.keys().chain(theirs.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        match (ours.get(k), theirs.get(k)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                let mut line = format!(
                    "{what}: {k}: {} bytes {} in the store, {} bytes {} rebuilt",
                    a.0, a.1, b.0, b.1
                );
                if a.2 != b.2 {
                    line.push_str(&format!(" ({} vs {})", a.2, b.2));
                }
                out.push(line);
            }
            (Some(a), None) => out.push(format!(
                "{what}: {k}: only in the store ({} bytes {})",
                a.0, a.1
            )),
            (None, Some(b)) => out.push(format!(
                "{what}: {k}: only in the rebuild ({} bytes {})",
                b.0, b.1
            )),
            (None, None) => {}
        }
    }
}

/// The descriptors a manifest or index points at, labelled for messages.
fn children(bytes: &[u8]) -> Vec<(String, String, Digest)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let mut out = Vec::new();
    for (role, d) in cairn_oci::children(&v) {
        let label = match role {
            cairn_oci::Role::Manifest => {
                let p = &d["platform"];
                format!(
                    "manifest {}/{}{}",
                    p["os"].as_str().unwrap_or("?"),
                    p["architecture"].as_str().unwrap_or("?"),
                    p["variant"]
                        .as_str()
                        .map(|v| format!("/{v}"))
                        .unwrap_or_default()
                )
            }
            cairn_oci::Role::Config => "config".into(),
            cairn_oci::Role::Layer(i) => d["annotations"]["org.opencontainers.image.title"]
                .as_str()
                .map_or_else(|| format!("layer {i}"), |t| format!("file {t}")),
            // What a referrer is about is compared as its own artifact.
            cairn_oci::Role::Subject => continue,
        };
        if let Some(digest) = d["digest"].as_str().and_then(|s| s.parse().ok()) {
            out.push((
                label,
                d["mediaType"].as_str().unwrap_or_default().to_string(),
                digest,
            ));
        }
    }
    out
}

/// Compares the blob `a` of store `sa` (expected) with `b` of `sb` (rebuilt), descending
/// into manifests and into the contents of what differs.
fn compare(
    sa: &Store,
    a: &Digest,
    sb: &Store,
    b: &Digest,
    label: &str,
    media: &str,
    out: &mut Vec<String>,
) -> Result<(), Error> {
    let is_json = media.contains("manifest")
        || media.contains("index")
        || media.contains("config")
        || media.ends_with("+json");
    // Every stored blob is hashed again: a damaged copy is found even where the names agree.
    let (actual, size) = cairn_store::hash_reader(sa.open_blob(a)?)
        .map_err(|e| Error::at(format!("reading {a}"), e))?;
    let damaged = actual != *a;
    if damaged {
        out.push(format!(
            "{label}: the store's copy of {a} is damaged: its {size} bytes hash to {actual}"
        ));
    }
    if a == b && !damaged {
        if is_json {
            for (l, m, d) in children(&sa.read_blob(a)?) {
                compare(sa, &d, sb, &d, &format!("{label} > {l}"), &m, out)?;
            }
        }
        return Ok(());
    }
    let ours = sa.read_blob(a)?;
    let theirs = sb.read_blob(b)?;
    if is_json && serde_json::from_slice::<serde_json::Value>(&ours).is_ok() {
        let (ca, cb) = (children(&ours), children(&theirs));
        if !damaged {
            out.push(format!("{label}: {a} in the store, {b} rebuilt"));
        }
        if ca.len() != cb.len() {
            out.push(format!(
                "{label}: {} children in the store, {} rebuilt",
                ca.len(),
                cb.len()
            ));
        }
        for ((la, ma, da), (_, _, db)) in ca.iter().zip(cb.iter()) {
            compare(sa, da, sb, db, &format!("{label} > {la}"), ma, out)?;
        }
        if ca.is_empty() {
            let (va, vb): (serde_json::Value, serde_json::Value) = (
                serde_json::from_slice(&ours).unwrap_or_default(),
                serde_json::from_slice(&theirs).unwrap_or_default(),
            );
            for (k, x) in va.as_object().into_iter().flatten() {
                if vb.get(k) != Some(x) {
                    out.push(format!(
                        "{label}: key {k}: {x} in the store, {} rebuilt",
                        vb.get(k).map_or("nothing".into(), |v| v.to_string())
                    ));
                }
            }
        }
        return Ok(());
    }
    let head = format!(
        "{label}: {} bytes {a} in the store, {} bytes {b} rebuilt",
        ours.len(),
        theirs.len()
    );
    if !damaged {
        out.push(head);
    }
    let entries = |bytes: &[u8]| -> Option<Entries> {
        if media.contains("tar") {
            tar_entries(bytes).ok()
        } else if media == MEDIA_SQUASHFS || bytes.starts_with(b"hsqs") {
            squashfs_entries(bytes).ok()
        } else if media == MEDIA_DISK {
            Some(disk_sections(bytes))
        } else {
            None
        }
    };
    match (entries(&ours), entries(&theirs)) {
        (Some(ea), Some(eb)) => compare_entries(label, &ea, &eb, out),
        (None, Some(_)) => out.push(format!(
            "{label}: the store's copy cannot be read as its kind ({media})"
        )),
        _ => {}
    }
    Ok(())
}

/// Rebuilds `name` in a scratch store and compares it with the store's tag `name`, or with
/// `against`'s (pulled into a second scratch store).
pub fn verify_rebuild(
    ctx: &Context,
    project: &Project,
    lock: &Lockfile,
    name: &str,
    against: Option<&RegistryOptions>,
) -> Result<Verified, Error> {
    let scratch = tempfile::Builder::new()
        .prefix("verify-")
        .tempdir_in(std::env::temp_dir())
        .map_err(|e| Error::at("a scratch store", e))?;
    // The expected artifact: the store's, or the registry's pulled beside it.
    let (expected_store, expected) = match against {
        Some(options) => {
            let pulled_ctx = Context {
                store: scratch.path().join("expected"),
                substituter: None,
                ..ctx.clone()
            };
            let p = crate::publish::pull(&pulled_ctx, name, options, None)?;
            (pulled_ctx.open_store()?, p.digest)
        }
        None => {
            let store = ctx.open_store()?;
            let tag = store.tag(name)?.ok_or_else(|| {
                Error::msg(format!(
                    "the store {} has no {name}: build or pull it first, or compare with a registry (--against REG/NS)",
                    ctx.store.display()
                ))
            })?;
            (store, tag.digest)
        }
    };
    let rebuild_ctx = Context {
        store: scratch.path().join("rebuilt"),
        substituter: None,
        progress: false,
        ..ctx.clone()
    };
    let rebuilt = if project.node(name).is_some() {
        // (A node pulled from a registry is kept in the store in this same form.)
        cairn_node::build::build_node(&rebuild_ctx, project, lock, name)?
            .manifest
            .digest
    } else if project.image(name).is_some() {
        cairn_os::container::build_image(&rebuild_ctx, project, lock, name, &[])?.index
    } else {
        return Err(Error::msg(format!(
            "{name:?} is neither an image (images/{name}.toml) nor a node (nodes/{name}.toml)"
        )));
    };
    let rebuilt_store = rebuild_ctx.open_store()?;
    let mut differences = Vec::new();
    let media = cairn_oci::media::MANIFEST;
    compare(
        &expected_store,
        &expected,
        &rebuilt_store,
        &rebuilt,
        name,
        media,
        &mut differences,
    )?;
    Ok(Verified {
        name: name.to_string(),
        expected,
        rebuilt,
        differences,
    })
}
