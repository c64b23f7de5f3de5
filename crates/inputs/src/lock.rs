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
                sha256: Digest::from_hex(sha).map_err(|e| Error::other(e))?,
                size: Some(*size),
            });
        }
    }
    Err(Error::msg(format!(
        "suite {} has no Packages index for {component}/binary-{debian_arch}: check `suite` and `components`",
        suite.name
    )))
}

/// Decompresses a cached Packages file into `index`. One thread decompresses while this
/// one parses what came before, in pieces cut at paragraph ends: xz decoding and parsing
/// each take about half the time of reading a large index.
fn read_index(cache: &Cache, download: &Download, index: &mut PackageIndex) -> Result<(), Error> {
    /// A piece: at least this much text, up to the end of a paragraph.
    const PIECE: usize = 4 << 20;
    let path = cache.path(&download.sha256);
    let file = std::fs::File::open(&path).map_err(|e| Error::at(path.display(), e))?;
    let url = &download.url;
    let decompress_error = |e: std::io::Error| Error::at(format!("decompressing {url}"), e);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        let decoder = s.spawn(move || -> Result<(), std::io::Error> {
            let mut reader: Box<dyn Read> = if url.ends_with(".xz") {
                Box::new(liblzma::read::XzDecoder::new_multi_decoder(
                    std::io::BufReader::new(file),
                ))
            } else if url.ends_with(".gz") {
                Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
                    file,
                )))
            } else {
                Box::new(file)
            };
            let mut buf: Vec<u8> = Vec::with_capacity(PIECE + (1 << 20));
            // Where the last empty line of `buf` ends: paragraphs never span one.
            let mut cut = None;
            loop {
                let start = buf.len();
                buf.resize(start + (1 << 20), 0);
                let n = reader.read(&mut buf[start..])?;
                buf.truncate(start + n);
                if n == 0 {
                    break;
                }
                let from = start.saturating_sub(1);
                if let Some(i) = buf[from..].windows(2).rposition(|w| w == b"\n\n") {
                    cut = Some(from + i + 2);
                }
                if let Some(end) = cut.filter(|_| buf.len() >= PIECE) {
                    let rest = buf.split_off(end);
                    let piece = std::mem::replace(&mut buf, rest);
                    buf.reserve(PIECE + (1 << 20));
                    cut = None;
                    if tx.send(piece).is_err() {
                        return Ok(());
                    }
                }
            }
            if !buf.is_empty() {
                let _ = tx.send(buf);
            }
            Ok(())
        });
        let mut parsed = Ok(());
        for piece in rx {
            let text = match String::from_utf8(piece) {
                Ok(t) => t,
                Err(_) => {
                    parsed = Err(Error::msg(format!("{url}: the index is not UTF-8")));
                    break;
                }
            };
            if let Err(e) = index.add_paragraphs(&text, url) {
                parsed = Err(Error::msg(e));
                break;
            }
        }
        // Dropping the receiver (above, at the loop's end) stops the decoder early on error.
        let decoded = decoder.join().expect("index decoder panicked");
        decoded.map_err(decompress_error)?;
        parsed
    })
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
                            read_index(cache, f, &mut index)?;
                        }
                        index.index_providers();
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

/// The prefix of `inputs.lock`'s temp file while it is written, beside it.
pub const LOCK_TEMP: &str = ".inputs.lock-";

/// Writes `inputs.lock` (atomically) if its text changed; says whether it did.
pub fn write_lock(ctx: &Context, lock: &Lockfile) -> Result<bool, Error> {
    // A killed `lock` may have left its temp file beside the lock: the next one sweeps it.
    cairn_store::sweep_temp_files(&ctx.root, LOCK_TEMP);
    let text = lock.to_toml();
    let path = ctx.lock_path();
    let old_text = std::fs::read_to_string(&path).unwrap_or_default();
    if text == old_text {
        return Ok(false);
    }
    let io = |e: std::io::Error| Error::at(format!("writing {}", path.display()), e);
    let mut tmp = cairn_store::shared_temp_file(&ctx.root, LOCK_TEMP).map_err(io)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(io)?;
    cairn_store::readable(tmp.as_file()).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(&path).map_err(|e| io(e.error))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// An index of `n` packages, with Depends and Provides, about 300 bytes each.
    fn index_text(n: usize) -> String {
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&format!(
                "Package: p{i}\nVersion: 1.{i}\nArchitecture: amd64\nDescription: package {i}\n long text\n .\n more\nFilename: pool/main/p{i}.deb\nSize: {i}\nSHA256: {:064x}\nDepends: p{} (>= 1), libc6\nProvides: v{}\n\n",
                i,
                i / 2,
                i % 7
            ));
        }
        text
    }

    fn cached(cache: &Cache, url: &str, bytes: &[u8]) -> Download {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        let (sha256, size) = cache.add_file(file.path()).unwrap();
        Download {
            name: "index".into(),
            url: url.into(),
            sha256,
            size: Some(size),
        }
    }

    #[test]
    fn an_index_read_in_pieces_is_the_index_read_whole() {
        // 60,000 packages of about 260 bytes: several pieces and a remainder.
        let text = index_text(60_000);
        assert!(text.len() > 12 << 20);
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(text.as_bytes()).unwrap();
        let xz = xz.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let mut whole = PackageIndex::default();
        whole.add(&text, "u").unwrap();
        for (url, bytes) in [("u/Packages.xz", &xz[..]), ("u/Packages", text.as_bytes())] {
            let download = cached(&cache, url, bytes);
            let mut pieces = PackageIndex::default();
            read_index(&cache, &download, &mut pieces).unwrap();
            pieces.index_providers();
            assert_eq!(pieces.packages, whole.packages, "{url}");
            assert_eq!(pieces.providers, whole.providers, "{url}");
        }
        assert_eq!(whole.packages.len(), 60_000);
        assert_eq!(whole.providers["v3"].len(), 8571);

        // A cut xz stream and a bad package are errors that name the file.
        let cut = cached(&cache, "u/cut/Packages.xz", &xz[..xz.len() / 2]);
        let err = read_index(&cache, &cut, &mut PackageIndex::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("decompressing u/cut/Packages.xz"),
            "{err}"
        );
        let bad = text.replacen("Size: 59999", "Size: many", 1);
        let bad = cached(&cache, "u/bad/Packages", bad.as_bytes());
        let err = read_index(&cache, &bad, &mut PackageIndex::default()).unwrap_err();
        assert_eq!(err.to_string(), "u/bad/Packages: package p59999: bad Size");
    }
}
