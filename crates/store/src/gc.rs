//! `store verify` (re-hash everything) and `store gc` (keep what the tags reach).

use crate::{ActionRecord, Store, StoreError, hash_reader};
use cairn_formats::Digest;
use std::collections::BTreeSet;
use std::fs;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct VerifyReport {
    pub n_blobs: usize,
    pub n_bytes: u64,
    /// Blob files whose content does not hash to their name: (name, actual digest).
    pub corrupt: Vec<(String, Option<Digest>)>,
    /// Blobs that a tag reaches but that are absent: (tag, digest).
    pub missing: Vec<(String, Digest)>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}

/// The step name of a base OS's record (`os-base IMAGE ARCH`), which `gc` keeps whole
/// while a kept tag reaches one of its blobs.
const BASE_STEP: &str = "os-base ";

#[derive(Debug, Default, Clone, PartialEq)]
pub struct GcReport {
    pub removed_tags: Vec<String>,
    /// Each removed tag and the bytes of the blobs only it reached (what dropping it alone
    /// frees).
    pub removed_tag_bytes: Vec<(String, u64)>,
    pub removed_blobs: usize,
    pub removed_bytes: u64,
    pub removed_actions: usize,
    pub kept_blobs: usize,
}

/// The blobs an OCI index or manifest names: its manifests, layers, config and subject.
pub fn child_digests(doc: &serde_json::Value) -> Vec<Digest> {
    cairn_oci::children(doc)
        .into_iter()
        .filter_map(|(_, c)| c["digest"].as_str().and_then(|s| s.parse().ok()))
        .collect()
}

impl Store {
    fn blob_names(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join("blobs/sha256");
        let mut names = Vec::new();
        for e in fs::read_dir(&dir).map_err(|err| StoreError::Io {
            path: dir.clone(),
            err,
        })? {
            let e = e.map_err(|err| StoreError::Io {
                path: dir.clone(),
                err,
            })?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Every blob reachable from `roots` (indexes and manifests are followed).
    /// Missing blobs are returned separately.
    pub fn reachable(&self, roots: &[Digest]) -> (BTreeSet<Digest>, Vec<Digest>) {
        let mut seen = BTreeSet::new();
        let mut missing = Vec::new();
        let mut stack: Vec<Digest> = roots.to_vec();
        while let Some(d) = stack.pop() {
            if !seen.insert(d) {
                continue;
            }
            // Only JSON documents (manifests and indexes, at most 4 MiB) have children;
            // layers and disk images are never read whole.
            let Ok(size) = std::fs::metadata(self.blob_path(&d)).map(|m| m.len()) else {
                missing.push(d);
                continue;
            };
            if size > 4 << 20 {
                continue;
            }
            let Ok(bytes) = self.read_blob(&d) else {
                missing.push(d);
                continue;
            };
            if bytes.first() != Some(&b'{') {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            stack.extend(child_digests(&v));
        }
        (seen, missing)
    }

    /// Re-hashes every blob and checks that every tag's closure is present.
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        for name in self.blob_names()? {
            let path = self.root.join("blobs/sha256").join(&name);
            let file = fs::File::open(&path).map_err(|err| StoreError::Io {
                path: path.clone(),
                err,
            })?;
            let (digest, size) = hash_reader(file).map_err(|err| StoreError::Io {
                path: path.clone(),
                err,
            })?;
            report.n_blobs += 1;
            report.n_bytes += size;
            progress(size);
            if digest.hex() != name {
                report.corrupt.push((name, Some(digest)));
            }
        }
        for tag in self.tags()? {
            let (_, missing) = self.reachable(&[tag.digest]);
            report
                .missing
                .extend(missing.into_iter().map(|d| (tag.name.clone(), d)));
        }
        Ok(report)
    }

    /// Deletes corrupt blobs and the action records that name them, so that the next build
    /// writes them again. Returns how many blobs were removed.
    pub fn repair(&self, report: &VerifyReport) -> Result<usize, StoreError> {
        let mut bad = BTreeSet::new();
        for (name, _) in &report.corrupt {
            let path = self.root.join("blobs/sha256").join(name);
            fs::remove_file(&path).map_err(|err| StoreError::Io {
                path: path.clone(),
                err,
            })?;
            if let Ok(d) = Digest::from_hex(name) {
                bad.insert(d);
            }
        }
        let actions = self.root.join("cache/actions");
        for e in fs::read_dir(&actions)
            .map_err(|err| StoreError::Io {
                path: actions.clone(),
                err,
            })?
            .flatten()
        {
            let record: Option<ActionRecord> = fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if record.is_none_or(|r| r.blobs.iter().any(|d| bad.contains(d))) {
                fs::remove_file(e.path()).map_err(|err| StoreError::Io {
                    path: e.path(),
                    err,
                })?;
            }
        }
        Ok(report.corrupt.len())
    }

    /// Drops tags not in `keep_tags`, then every blob no remaining tag reaches, then action
    /// records whose blobs are gone.
    pub fn gc(&self, keep_tags: &BTreeSet<String>) -> Result<GcReport, StoreError> {
        self.collect(keep_tags, false)
    }

    /// What [`Store::gc`] would remove, removing nothing.
    pub fn gc_dry_run(&self, keep_tags: &BTreeSet<String>) -> Result<GcReport, StoreError> {
        self.collect(keep_tags, true)
    }

    fn collect(&self, keep_tags: &BTreeSet<String>, dry_run: bool) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        let tags = self.tags()?;
        let (kept, dropped): (Vec<_>, Vec<_>) =
            tags.into_iter().partition(|t| keep_tags.contains(&t.name));
        let roots: Vec<Digest> = kept.iter().map(|t| t.digest).collect();
        let (mut live, _) = self.reachable(&roots);
        // A base OS that a kept node still runs stays whole: its record and the boot files
        // and kernel only the record names, so the next node built on it is not a rebuild.
        let actions = self.root.join("cache/actions");
        for e in fs::read_dir(&actions).into_iter().flatten().flatten() {
            let record: Option<ActionRecord> = fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if let Some(r) = record.filter(|r| r.step.starts_with(BASE_STEP)) {
                if r.blobs.iter().any(|d| live.contains(d)) {
                    live.extend(r.blobs);
                }
            }
        }
        let size = |d: &Digest| {
            fs::metadata(self.blob_path(d))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        for t in &dropped {
            let (reached, _) = self.reachable(&[t.digest]);
            let only: u64 = reached.iter().filter(|d| !live.contains(d)).map(size).sum();
            report.removed_tag_bytes.push((t.name.clone(), only));
        }
        report.removed_tags = dropped.iter().map(|t| t.name.clone()).collect();
        if !dry_run {
            self.write_index(&kept)?;
            for t in &dropped {
                self.set_origin(&t.name, None)?;
            }
        }
        for name in self.blob_names()? {
            let keep = Digest::from_hex(&name).is_ok_and(|d| live.contains(&d));
            if keep {
                report.kept_blobs += 1;
                continue;
            }
            let path = self.root.join("blobs/sha256").join(&name);
            report.removed_bytes += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if !dry_run {
                fs::remove_file(&path).map_err(|err| StoreError::Io {
                    path: path.clone(),
                    err,
                })?;
            }
            report.removed_blobs += 1;
        }
        let actions = self.root.join("cache/actions");
        for e in fs::read_dir(&actions)
            .map_err(|err| StoreError::Io {
                path: actions.clone(),
                err,
            })?
            .flatten()
        {
            let record: Option<ActionRecord> = fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let alive = record.is_some_and(|r| r.blobs.iter().all(|d| live.contains(d)));
            if !alive {
                if !dry_run {
                    fs::remove_file(e.path()).map_err(|err| StoreError::Io {
                        path: e.path(),
                        err,
                    })?;
                }
                report.removed_actions += 1;
            }
        }
        Ok(report)
    }
}
