//! `cargo xtask lock`: resolve every image's package closure per arch from the suite's
//! signed indexes and pin it in `inputs.lock`.

use crate::fetch::{Cache, Download};
use crate::lockfile::{LockedArch, LockedImage, LockedPackage, LockedUrl, Lockfile, VERSION};
use crate::mirror;
use cairn_debian::{PackageIndex, Release};
use cairn_formats::Digest;
use cairn_project::{Arch, ImageSpec, Project};
use cairn_steps::error::Context as _;
use cairn_steps::{Context, Error};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Overrides the default keyring (Nix shells keep it elsewhere).
pub const KEYRING_ENV: &str = "CAIRN_DEBIAN_KEYRING";

/// What `lock` did, per image and arch: (image, arch, packages, total bytes).
#[derive(Debug, Clone, Default)]
pub struct LockSummary {
    pub entries: Vec<(String, Arch, usize, u64)>,
    /// Kubernetes inputs newly pinned from upstream's checksum files.
    pub kubernetes: Vec<String>,
    pub changed: bool,
}

/// A suite of one mirror, verified.
struct Suite {
    mirror: String,
    name: String,
    release: Release,
}

fn keyring_path(spec: &ImageSpec) -> PathBuf {
    match &spec.keyring {
        Some(k) if k.is_absolute() => k.clone(),
        Some(k) => spec.dir().join(k),
        None => std::env::var_os(KEYRING_ENV)
            .filter(|k| !k.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_KEYRING), PathBuf::from),
    }
}

fn fetch_suite(spec: &ImageSpec, mirror: &str, keyring: &PathBuf) -> Result<Suite, Error> {
    let keyring_bytes = std::fs::read(keyring).map_err(|e| {
        Error::msg(format!(
            "cannot read keyring {}: {e}: install debian-archive-keyring, or set `keyring` in {}",
            keyring.display(),
            spec.path.display()
        ))
    })?;
    let url = format!("{mirror}/dists/{}/InRelease", spec.suite);
    let bytes = crate::fetch::get_bytes(&url)?;
    let text = String::from_utf8(bytes).map_err(|_| Error::msg(format!("{url} is not text")))?;
    let release_text = cairn_debian::verify_inrelease(&keyring_bytes, &text)
        .context(|| format!("verifying {url} with {}", keyring.display()))?;
    let release = Release::parse(&release_text).context(|| format!("reading {url}"))?;
    if release.suite.as_deref() != Some(spec.suite.as_str())
        && release.codename.as_deref() != Some(spec.suite.as_str())
    {
        return Err(Error::msg(format!(
            "{url} is signed for suite {:?} (codename {:?}), not {:?}: the mirror serves another suite",
            release.suite.as_deref().unwrap_or(""),
            release.codename.as_deref().unwrap_or(""),
            spec.suite
        )));
    }
    if let Some(until) = release.valid_until {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if until < now {
            return Err(Error::msg(format!(
                "{url} expired (Valid-Until is in the past): the mirror is stale; use a current mirror"
            )));
        }
    }
    Ok(Suite {
        mirror: mirror.to_string(),
        name: spec.suite.clone(),
        release,
    })
}

/// The Packages index of one component and arch, as a download verified by the Release.
fn index_download(suite: &Suite, component: &str, debian_arch: &str) -> Result<Download, Error> {
    for file in ["Packages.xz", "Packages.gz", "Packages"] {
        let key = format!("{component}/binary-{debian_arch}/{file}");
        if let Some((size, sha)) = suite.release.sha256.get(&key) {
            return Ok(Download {
                name: format!("{} {key}", suite.name),
                url: format!("{}/dists/{}/{key}", suite.mirror, suite.name),
                sha256: Digest::from_hex(sha).map_err(|e| Error::msg(e.to_string()))?,
                size: Some(*size),
            });
        }
    }
    Err(Error::msg(format!(
        "suite {} has no Packages index for {component}/binary-{debian_arch}: check `suite` and `components`",
        suite.name
    )))
}

fn read_index(cache: &Cache, download: &Download) -> Result<String, Error> {
    let path = cache.path(&download.sha256);
    let file =
        std::fs::File::open(&path).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    let mut reader: Box<dyn Read> = if download.url.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(
            std::io::BufReader::new(file),
        ))
    } else if download.url.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
    } else {
        Box::new(file)
    };
    let mut text = String::new();
    reader
        .read_to_string(&mut text)
        .map_err(|e| Error::msg(format!("decompressing {}: {e}", download.url)))?;
    Ok(text)
}

/// Resolves and pins every image of `project`; writes `inputs.lock` if it changed.
pub fn lock(ctx: &Context, project: &Project) -> Result<LockSummary, Error> {
    let cache = Cache::new(&ctx.cache);
    let old = Lockfile::read(&ctx.lock_path())?.unwrap_or_default();
    let spinner = cairn_steps::progress::spinner(ctx.progress, "reading suites");

    // 1. Verified Release files, one per (mirror, suite, keyring).
    let mut suites: BTreeMap<(String, String, PathBuf), Suite> = BTreeMap::new();
    let mut image_suite = Vec::new();
    for spec in &project.images {
        let mirror = mirror::resolve(spec.mirror.as_deref())
            .context(|| format!("locking image {}", spec.name))?;
        let keyring = keyring_path(spec);
        let key = (mirror.clone(), spec.suite.clone(), keyring.clone());
        if !suites.contains_key(&key) {
            spinner.set_message(format!("verifying {} {}", spec.suite, "InRelease"));
            let suite = fetch_suite(spec, &mirror, &keyring)
                .context(|| format!("locking image {} ({})", spec.name, spec.path.display()))?;
            suites.insert(key.clone(), suite);
        }
        image_suite.push(key);
    }

    // 2. Every Packages index needed, downloaded in parallel into the cache.
    let mut index_keys: BTreeMap<(usize, String, String), Download> = BTreeMap::new();
    let suite_list: Vec<&(String, String, PathBuf)> = suites.keys().collect();
    for (spec, key) in project.images.iter().zip(&image_suite) {
        let suite_no = suite_list
            .iter()
            .position(|k| *k == key)
            .expect("suite was fetched");
        let suite = &suites[key];
        for arch in &spec.arches {
            for component in &spec.components {
                let d = index_download(suite, component, arch.debian())
                    .context(|| format!("locking image {} ({})", spec.name, spec.path.display()))?;
                index_keys.insert((suite_no, component.clone(), arch.debian().to_string()), d);
            }
        }
    }
    spinner.set_message("downloading package indexes");
    let downloads: Vec<Download> = index_keys.values().cloned().collect();
    cache.fetch_all(&downloads, false)?;

    // 3. One PackageIndex per (suite, components, arch), parsed in parallel.
    type IndexKey = (usize, Vec<String>, String);
    let mut wanted: BTreeMap<IndexKey, Vec<Download>> = BTreeMap::new();
    for (spec, key) in project.images.iter().zip(&image_suite) {
        let suite_no = suite_list
            .iter()
            .position(|k| *k == key)
            .expect("suite was fetched");
        for arch in &spec.arches {
            let files = spec
                .components
                .iter()
                .map(|c| index_keys[&(suite_no, c.clone(), arch.debian().to_string())].clone())
                .collect();
            wanted.insert(
                (suite_no, spec.components.clone(), arch.debian().to_string()),
                files,
            );
        }
    }
    spinner.set_message("reading package indexes");
    let parsed: Vec<(IndexKey, Result<PackageIndex, Error>)> = std::thread::scope(|s| {
        let handles: Vec<_> = wanted
            .iter()
            .map(|(k, files)| {
                let cache = &cache;
                (
                    k.clone(),
                    s.spawn(move || {
                        let mut index = PackageIndex::default();
                        for f in files {
                            let text = read_index(cache, f)?;
                            index.add(&text, &f.url).map_err(Error::msg)?;
                        }
                        Ok(index)
                    }),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(k, h)| (k, h.join().expect("index parser panicked")))
            .collect()
    });
    let mut indexes = BTreeMap::new();
    for (k, r) in parsed {
        indexes.insert(k, r?);
    }

    // 4. Resolve each image and arch.
    let mut lock = Lockfile {
        version: VERSION,
        ..Lockfile::default()
    };
    let mut summary = LockSummary::default();
    for (spec, key) in project.images.iter().zip(&image_suite) {
        let suite_no = suite_list
            .iter()
            .position(|k| *k == key)
            .expect("suite was fetched");
        let suite = &suites[key];
        let mut arches = Vec::new();
        for arch in &spec.arches {
            spinner.set_message(format!("resolving {} for {arch}", spec.name));
            let index = &indexes[&(suite_no, spec.components.clone(), arch.debian().to_string())];
            let resolution = cairn_debian::resolve(
                index,
                arch.debian(),
                &spec.packages_for(*arch),
                &spec.exclude,
            )
            .context(|| {
                format!(
                    "locking image {} ({}) for {arch}",
                    spec.name,
                    spec.path.display()
                )
            })?;
            let mut names = Vec::new();
            let mut total = 0;
            for p in &resolution.packages {
                names.push(format!("{}={}", p.name, p.version));
                total += p.size;
                lock.package.push(LockedPackage {
                    name: p.name.clone(),
                    version: p.version.clone(),
                    arch: p.arch.clone(),
                    path: p.filename.clone(),
                    size: p.size,
                    sha256: p.sha256.to_ascii_lowercase(),
                });
            }
            summary
                .entries
                .push((spec.name.clone(), *arch, names.len(), total));
            arches.push(LockedArch {
                arch: *arch,
                packages: names,
            });
        }
        // An unchanged closure keeps its timestamp, so re-locking changes no digest.
        let previous = old.image.iter().find(|i| {
            i.name == spec.name && i.suite == spec.suite && same_arches(&i.arch, &arches)
        });
        let source_date_epoch = spec
            .source_date_epoch
            .or(previous.map(|p| p.source_date_epoch))
            .unwrap_or(suite.release.date);
        lock.image.push(LockedImage {
            name: spec.name.clone(),
            inputs: spec.lock_inputs(),
            suite: spec.suite.clone(),
            source_date_epoch,
            arch: arches,
        });
    }
    // 5. URL inputs: a URL pinned before keeps its pin; a new one is fetched and hashed.
    for spec in &project.images {
        for d in &spec.downloads {
            for arch in &spec.arches {
                let url = d.url_for(*arch);
                if lock.url.iter().any(|u| u.url == url) {
                    continue;
                }
                let pinned = match old.url.iter().find(|u| u.url == url) {
                    Some(u) => u.clone(),
                    None => {
                        spinner.set_message(format!("pinning {url}"));
                        let (digest, size) = cache
                            .fetch_unpinned(
                                &url,
                                &format!("download {} of image {}", d.name, spec.name),
                            )
                            .context(|| {
                                format!("locking image {} ({})", spec.name, spec.path.display())
                            })?;
                        LockedUrl {
                            name: format!("{}/{}", spec.name, d.name),
                            url: url.clone(),
                            size: Some(size),
                            sha256: digest.hex(),
                        }
                    }
                };
                lock.url.push(pinned);
            }
        }
    }
    // 6. The Kubernetes binaries of the nodes' arches: a pin is kept; a new one (a new
    // version, a new arch) comes from upstream's checksum files, without downloading the
    // binaries. Pins of versions and arches no node needs any more are dropped.
    let mut arches: Vec<Arch> = project.nodes.iter().map(|n| n.arch).collect();
    arches.sort();
    arches.dedup();
    let mut unpinned = Vec::new();
    for input in crate::kubernetes::all_inputs(&project.cluster, &arches) {
        if lock.url.iter().any(|u| u.url == input.url) {
            continue;
        }
        match old.url.iter().find(|u| u.url == input.url) {
            Some(u) => lock.url.push(u.clone()),
            None => unpinned.push(input),
        }
    }
    if !unpinned.is_empty() {
        spinner.set_message(format!(
            "pinning Kubernetes {} from upstream's checksum files",
            project.cluster.kubernetes.version
        ));
        let pinned = crate::kubernetes::pin_from_checksums(&project.cluster, &unpinned)?;
        summary
            .kubernetes
            .extend(pinned.iter().map(|u| u.name.clone()));
        lock.url.extend(pinned);
    }
    spinner.finish_and_clear();
    summary.changed = write_lock(ctx, &lock)?;
    Ok(summary)
}

/// Writes `inputs.lock` (atomically) if its text changed; says whether it did.
pub fn write_lock(ctx: &Context, lock: &Lockfile) -> Result<bool, Error> {
    let text = lock.to_toml();
    let path = ctx.lock_path();
    let old_text = std::fs::read_to_string(&path).unwrap_or_default();
    if text == old_text {
        return Ok(false);
    }
    let mut tmp = tempfile::NamedTempFile::new_in(&ctx.root)
        .map_err(|e| Error::msg(format!("{}: {e}", ctx.root.display())))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(|e| Error::msg(e.to_string()))?;
    cairn_store::readable(tmp.as_file()).map_err(|e| Error::msg(e.to_string()))?;
    tmp.persist(&path)
        .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    Ok(true)
}

fn same_arches(a: &[LockedArch], b: &[LockedArch]) -> bool {
    let norm = |l: &[LockedArch]| {
        let mut v: Vec<(Arch, Vec<String>)> = l
            .iter()
            .map(|x| {
                let mut p = x.packages.clone();
                p.sort();
                (x.arch, p)
            })
            .collect();
        v.sort();
        v
    };
    norm(a) == norm(b)
}
