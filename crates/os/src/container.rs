//! `cargo xtask build-image`: one layer per arch from the locked packages and the spec's
//! files, an image config and manifest per arch, an image index, tagged in the store.

use crate::rootfs::Rootfs;
use cairn_formats::{Digest, HashingWriter, gzip};
use cairn_inputs::fetch::{Cache, Download};
use cairn_inputs::lockfile::{LockedImage, LockedPackage, Lockfile};
use cairn_inputs::mirror;
use cairn_oci::{self as oci, ContainerConfig, OciMediaType, Platform};
use cairn_project::{Arch, ImageKind, ImageSpec, Project};
use cairn_steps::error::Context as _;
use cairn_steps::{BUILDER_VERSION, Context, Error, Output, Step};
use cairn_store::{Store, Tag};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchResult {
    pub arch: Arch,
    pub platform: String,
    pub manifest: Digest,
    pub manifest_size: u64,
    pub layer: Digest,
    pub layer_size: u64,
    /// Whether the layer came from the action cache.
    pub cached: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageResult {
    pub name: String,
    /// The tag in `index.json`: the name, or `NAME-ARCH...` for a build of some arches.
    pub tag: String,
    pub index: Digest,
    pub index_size: u64,
    pub layout: PathBuf,
    pub arches: Vec<ArchResult>,
}

impl ImageResult {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "image": self.name,
            "index": { "digest": self.index.to_string(), "size": self.index_size },
            "layout": self.layout.display().to_string(),
            "tag": self.tag,
            "reference": format!("oci:{}:{}", self.layout.display(), self.tag),
            "manifests": self.arches.iter().map(|a| (a.arch.as_str().to_string(), serde_json::json!({
                "platform": a.platform,
                "digest": a.manifest.to_string(),
                "size": a.manifest_size,
                "layer": { "digest": a.layer.to_string(), "size": a.layer_size },
                "cached": a.cached,
            }))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// The tag of a build for some of an image's arches: `haproxy-aarch64`, `haproxy-x86_64-armv7`.
pub fn subset_tag(name: &str, arches: &[&str]) -> String {
    format!("{name}-{}", arches.join("-"))
}

fn platform(arch: Arch) -> Platform {
    let (architecture, variant) = arch.oci();
    Platform {
        architecture,
        variant,
    }
}

/// Content of a declared file.
pub(crate) fn file_bytes(spec: &ImageSpec, f: &cairn_project::FileSpec) -> Result<Vec<u8>, Error> {
    match (&f.content, &f.source) {
        (Some(c), _) => Ok(c.as_bytes().to_vec()),
        (None, Some(src)) => {
            let path = spec.dir().join(src);
            std::fs::read(&path).map_err(|e| {
                Error::at(
                    format!(
                        "{}: file {}: {}",
                        spec.path.display(),
                        f.path,
                        path.display()
                    ),
                    e,
                )
            })
        }
        (None, None) => Err(Error::msg(format!(
            "{}: file {} has no content",
            spec.path.display(),
            f.path
        ))),
    }
}

/// `/etc/passwd`, `/etc/group` and `/etc/shadow` from the spec (passwords locked).
fn account_files(spec: &ImageSpec, epoch: u64) -> Vec<(&'static str, String, u32, u64)> {
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut shadow = format!("root:*:{}:0:99999:7:::\n", epoch / 86_400);
    let mut groups: BTreeMap<u32, (String, Vec<String>)> = BTreeMap::new();
    groups.insert(0, ("root".into(), vec![]));
    groups.insert(42, ("shadow".into(), vec![]));
    groups.insert(65534, ("nogroup".into(), vec![]));
    for g in &spec.groups {
        groups.insert(g.gid, (g.name.clone(), g.members.clone()));
    }
    for u in &spec.users {
        passwd.push_str(&format!(
            "{}:x:{}:{}:{}:{}:{}\n",
            u.name, u.uid, u.gid, u.comment, u.home, u.shell
        ));
        shadow.push_str(&format!("{}:!:{}:0:99999:7:::\n", u.name, epoch / 86_400));
        groups
            .entry(u.gid)
            .or_insert_with(|| (u.name.clone(), vec![]));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    shadow.push_str(&format!("nobody:*:{}:0:99999:7:::\n", epoch / 86_400));
    let group: String = groups
        .iter()
        .map(|(gid, (name, members))| format!("{name}:x:{gid}:{}\n", members.join(",")))
        .collect();
    vec![
        ("/etc/passwd", passwd, 0o644, 0),
        ("/etc/group", group, 0o644, 0),
        ("/etc/shadow", shadow, 0o640, 42),
    ]
}

/// Everything a layer is made of, hashed into its action-cache key.
struct LayerPlan<'a> {
    arch: Arch,
    packages: Vec<&'a LockedPackage>,
    files: Vec<(String, Vec<u8>, u32, u64, u64)>,
    downloads: Vec<PlannedDownload>,
    step: Step,
}

struct PlannedDownload {
    name: String,
    url: String,
    path: String,
    sha256: Digest,
    size: Option<u64>,
    mode: u32,
    uid: u64,
    gid: u64,
}

fn plan_layer<'a>(
    spec: &ImageSpec,
    lock: &'a Lockfile,
    locked: &'a LockedImage,
    arch: Arch,
    epoch: u64,
) -> Result<LayerPlan<'a>, Error> {
    let packages = lock.packages(locked, arch)?;
    let mut files = Vec::new();
    for (path, text, mode, gid) in account_files(spec, epoch) {
        files.push((path.to_string(), text.into_bytes(), mode, 0, gid));
    }
    for f in &spec.files {
        files.push((
            f.path.clone(),
            file_bytes(spec, f)?,
            f.mode.0,
            u64::from(f.uid),
            u64::from(f.gid),
        ));
    }
    let mut downloads = Vec::new();
    for d in &spec.downloads {
        let url = d.url_for(arch);
        let pinned = lock.url.iter().find(|u| u.url == url).ok_or_else(|| {
            Error::msg(format!("inputs.lock has no pin for download {} ({url}) of image {}: run `cargo xtask lock`", d.name, spec.name))
        })?;
        downloads.push(PlannedDownload {
            name: d.name.clone(),
            url,
            path: d.path.clone(),
            sha256: Digest::from_hex(&pinned.sha256)
                .map_err(|e| Error::at(format!("inputs.lock: url {}", pinned.url), e))?,
            size: pinned.size,
            mode: d.mode.0,
            uid: u64::from(d.uid),
            gid: u64::from(d.gid),
        });
    }
    let key_doc = serde_json::json!({
        "step": "container-layer",
        "builder": BUILDER_VERSION,
        "arch": arch.as_str(),
        "source_date_epoch": epoch,
        "packages": packages.iter().map(|p| format!("{} {}", p.name, p.sha256)).collect::<Vec<_>>(),
        "files": files.iter().map(|(p, b, m, u, g)| format!("{p} {} {m:o} {u} {g}", Digest::of(b))).collect::<Vec<_>>(),
        "dirs": spec.dirs.iter().map(|d| format!("{} {:o} {} {}", d.path, d.mode.0, d.uid, d.gid)).collect::<Vec<_>>(),
        "symlinks": spec.symlinks.iter().map(|s| format!("{} {}", s.path, s.target)).collect::<Vec<_>>(),
        "downloads": downloads.iter().map(|d| format!("{} {} {:o} {} {}", d.path, d.sha256, d.mode, d.uid, d.gid)).collect::<Vec<_>>(),
        "compression": format!("gzip-{}-members-{}", gzip::LEVEL, gzip::BLOCK),
    });
    Ok(LayerPlan {
        arch,
        packages,
        files,
        downloads,
        step: Step::new(format!("container-layer {} {arch}", spec.name), &key_doc),
    })
}

/// What the `container-layer` step records.
#[derive(Serialize, Deserialize)]
struct Layer {
    digest: Digest,
    size: u64,
    diff_id: Digest,
}

impl Output for Layer {
    fn blobs(&self) -> Vec<Digest> {
        vec![self.digest]
    }
    fn sizes(&self) -> Vec<(Digest, u64)> {
        vec![(self.digest, self.size)]
    }
}

fn build_layer(
    store: &Store,
    cache: &Cache,
    spec: &ImageSpec,
    plan: &LayerPlan<'_>,
    epoch: u64,
) -> Result<Layer, Error> {
    let mut fs = Rootfs::new(&store.root().join("tmp"))?;
    let debs = crate::rootfs::debs(cache, plan.packages.iter().copied())?;
    fs.add_debs(&debs, crate::parallel::threads())?;
    for d in &spec.dirs {
        fs.add_dir(&d.path, d.mode.0, u64::from(d.uid), u64::from(d.gid))?;
    }
    for (path, bytes, mode, uid, gid) in &plan.files {
        fs.add_file(path, bytes, *mode, *uid, *gid)?;
    }
    for d in &plan.downloads {
        fs.add_file_from(
            &d.path,
            &cache.path(&d.sha256),
            &d.sha256,
            d.mode,
            d.uid,
            d.gid,
        )
        .context(|| format!("download {}", d.name))?;
    }
    for s in &spec.symlinks {
        fs.add_symlink(&s.path, &s.target)?;
    }
    fs.add_merged_usr_links();
    fs.add_ca_bundle()?;
    crate::ldconfig::add_ld_so_cache(&mut fs, plan.arch)?;
    let blob = store.blob_writer()?;
    // Every core the process may use (a `taskset` or a cgroup limits it); the bytes do not
    // depend on how many.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let diff = HashingWriter::new(gzip::members_writer(blob, threads));
    let diff = fs.write_tar(diff, epoch)?;
    let (gz, diff_id, _) = diff.finish();
    let blob = gz
        .finish()
        .map_err(|e| Error::at("compressing the layer", e))?;
    let (digest, size) = blob.finish(None)?;
    Ok(Layer {
        digest,
        size,
        diff_id,
    })
}

fn container_config(spec: &ImageSpec) -> ContainerConfig {
    let c = spec.config.clone().unwrap_or_default();
    ContainerConfig {
        entrypoint: c.entrypoint,
        cmd: c.cmd,
        env: c.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        user: c.user,
        working_dir: c.workdir,
        exposed_ports: c.exposed_ports,
        labels: c.labels,
        stop_signal: c.stop_signal,
    }
}

/// Builds image `name` for `arches` (all of the spec's when empty).
pub fn build_image(
    ctx: &Context,
    project: &Project,
    lock: &Lockfile,
    name: &str,
    arches: &[Arch],
) -> Result<ImageResult, Error> {
    let spec = project.image(name).ok_or_else(|| {
        let known: Vec<&str> = project
            .images
            .iter()
            .filter(|i| i.kind == ImageKind::Container)
            .map(|i| i.name.as_str())
            .collect();
        Error::msg(format!(
            "no container image named {name:?} in images/: there are {}",
            known.join(", ")
        ))
    })?;
    if spec.kind != ImageKind::Container {
        return Err(Error::msg(format!(
            "{} is an OS image (kind = \"os\"): nodes are built from it with `cargo xtask build-node`",
            spec.path.display()
        )));
    }
    if let Some(a) = arches.iter().find(|a| !spec.arches.contains(a)) {
        return Err(Error::msg(format!(
            "image {name} is not built for {a}: add it to `arches` in {}",
            spec.path.display()
        )));
    }
    // The spec's order, each arch once, whatever the order of the flags.
    let arches: Vec<Arch> = spec
        .arches
        .iter()
        .copied()
        .filter(|a| arches.is_empty() || arches.contains(a))
        .collect();
    let tag_name = if arches.len() == spec.arches.len() {
        name.to_string()
    } else {
        subset_tag(name, &arches.iter().map(|a| a.as_str()).collect::<Vec<_>>())
    };
    let locked = lock.image_for(spec)?;
    let epoch = locked.epoch(spec);
    let plans: Vec<LayerPlan<'_>> = arches
        .iter()
        .map(|a| plan_layer(spec, lock, locked, *a, epoch))
        .collect::<Result<_, _>>()?;

    let store = ctx.open_store()?;
    let cache = Cache::new(&ctx.cache);

    let mut layers: BTreeMap<Arch, (Layer, bool)> = BTreeMap::new();
    for p in &plans {
        if let Some(layer) = cairn_steps::step::lookup::<Layer>(ctx, &store, &p.step) {
            layers.insert(p.arch, (layer, true));
        }
    }
    // Anything without a usable record is built.
    let todo: Vec<&LayerPlan<'_>> = plans
        .iter()
        .filter(|p| !layers.contains_key(&p.arch))
        .collect();
    if !todo.is_empty() {
        let mut downloads = Vec::new();
        for p in &todo {
            for pkg in &p.packages {
                let sha = Digest::from_hex(&pkg.sha256)
                    .map_err(|e| Error::at(format!("inputs.lock: package {}", pkg.name), e))?;
                if !cache.has(&sha) {
                    let mirror = mirror::resolve(spec.mirror.as_deref())?;
                    downloads.push(Download {
                        name: format!("{} {} {}", pkg.name, pkg.version, pkg.arch),
                        url: format!("{mirror}/{}", pkg.path),
                        sha256: sha,
                        size: Some(pkg.size),
                    });
                }
            }
        }
        for p in &todo {
            for d in &p.downloads {
                if !cache.has(&d.sha256) {
                    downloads.push(Download {
                        name: format!("download {}", d.name),
                        url: d.url.clone(),
                        sha256: d.sha256,
                        size: d.size,
                    });
                }
            }
        }
        cache.fetch_all(&downloads, ctx.progress)?;
        let spinner = cairn_steps::progress::spinner(
            ctx.progress,
            &format!(
                "building {name} layers for {}",
                todo.iter()
                    .map(|p| p.arch.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        let built: Vec<(Arch, &Step, Result<Layer, Error>)> = std::thread::scope(|s| {
            let handles: Vec<_> = todo
                .iter()
                .map(|p| {
                    (
                        p.arch,
                        &p.step,
                        s.spawn(|| build_layer(&store, &cache, spec, p, epoch)),
                    )
                })
                .collect();
            handles
                .into_iter()
                .map(|(a, k, h)| {
                    (
                        a,
                        k,
                        h.join()
                            .unwrap_or_else(|_| Err(Error::msg("layer builder panicked"))),
                    )
                })
                .collect()
        });
        spinner.finish_and_clear();
        for (arch, step, layer) in built {
            let layer = layer.context(|| format!("building {name} for {arch}"))?;
            cairn_steps::step::record(ctx, &store, step, &layer)?;
            layers.insert(arch, (layer, false));
        }
    }

    let config = container_config(spec);
    let mut results = Vec::new();
    let mut manifest_descriptors = Vec::new();
    for arch in &arches {
        let (layer, cached) = &layers[arch];
        let platform = platform(*arch);
        let config_blob = oci::image_config(
            platform,
            &config,
            &[layer.diff_id],
            epoch,
            &format!("cairn build-image {name}"),
        );
        store.write_blob(&config_blob.bytes)?;
        let manifest = oci::image_manifest(
            oci::descriptor(
                OciMediaType::ImageConfig,
                config_blob.digest,
                config_blob.size(),
            ),
            vec![oci::descriptor(
                OciMediaType::ImageLayerGzip,
                layer.digest,
                layer.size,
            )],
            &BTreeMap::new(),
        );
        store.write_blob(&manifest.bytes)?;
        manifest_descriptors.push(oci::platform_manifest_descriptor(
            platform,
            manifest.digest,
            manifest.size(),
        ));
        results.push(ArchResult {
            arch: *arch,
            platform: platform.to_string(),
            manifest: manifest.digest,
            manifest_size: manifest.size(),
            layer: layer.digest,
            layer_size: layer.size,
            cached: *cached,
        });
    }
    let index = oci::image_index(manifest_descriptors, &BTreeMap::new());
    store.write_blob(&index.bytes)?;
    let tag = Tag {
        name: tag_name.clone(),
        media_type: cairn_oci::media::INDEX.into(),
        digest: index.digest,
        size: index.size(),
    };
    if store.tag(&tag_name)?.as_ref() != Some(&tag) {
        store.set_tag(tag)?;
    }
    // Built here: no longer a pulled or imported copy.
    store.set_origin(&tag_name, None)?;
    Ok(ImageResult {
        name: name.to_string(),
        tag: tag_name,
        index: index.digest,
        index_size: index.size(),
        layout: ctx.store.clone(),
        arches: results,
    })
}
