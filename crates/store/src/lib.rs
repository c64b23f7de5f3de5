//! The content-addressed store: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/`) plus an action cache (`cache/actions/`), with atomic writes and a lock
//! against concurrent builds.
//!
//! Architecture invariant: a blob file exists under `blobs/sha256/<hex>` only if its bytes
//! hash to `<hex>`: every write goes to `tmp/`, is hashed while written, fsynced and renamed.

mod error;
mod gc;

pub use error::StoreError;
pub use gc::{GcReport, VerifyReport, child_digests};

use cairn_formats::{Digest, HashingWriter};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
/// Where pulled and imported tags came from (see [`Store::origins`]).
const ORIGINS: &str = "origins.json";
pub const REF_NAME: &str = cairn_oci::REF_NAME;

/// An open store, holding its lock until dropped.
pub struct Store {
    root: PathBuf,
    _lock: File,
}

/// What a cached step produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The step kind, for people reading the cache.
    pub step: String,
    /// Every blob the output refers to; the record counts only while they all exist.
    pub blobs: Vec<Digest>,
    /// Step-specific output (descriptors, sizes, ...).
    pub output: serde_json::Value,
}

/// One tagged entry of `index.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub name: String,
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, waiting for the lock if another
    /// process holds it; `on_wait` is called once before waiting.
    pub fn open(root: &Path, on_wait: impl FnOnce()) -> Result<Store, StoreError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |e| StoreError::Io {
                path: path.clone(),
                err: e,
            }
        };
        for dir in ["blobs/sha256", "cache/actions", "tmp"] {
            fs::create_dir_all(root.join(dir)).map_err(err(&root.join(dir)))?;
        }
        let lock_path = root.join(".lock");
        let lock = lock_exclusive(&lock_path, on_wait).map_err(err(&lock_path))?;
        let store = Store {
            root: root.to_path_buf(),
            _lock: lock,
        };
        // Leftovers of a killed process (temp files, an import's staging directory): nothing
        // references them, and the lock says no other process is using them.
        if let Ok(entries) = fs::read_dir(root.join("tmp")) {
            for e in entries.flatten() {
                let _ = match e.file_type() {
                    Ok(t) if t.is_dir() => fs::remove_dir_all(e.path()),
                    _ => fs::remove_file(e.path()),
                };
            }
        }
        if !root.join("oci-layout").exists() {
            store.write_file_atomic(&root.join("oci-layout"), OCI_LAYOUT.as_bytes())?;
        }
        if !root.join("index.json").exists() {
            store.write_index(&[])?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Writes `bytes` as a blob (a no-op when it exists) and returns its digest.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(bytes);
        let intact =
            std::fs::metadata(self.blob_path(&digest)).is_ok_and(|m| m.len() == bytes.len() as u64);
        if !intact {
            let mut w = self.blob_writer()?;
            w.write_all(bytes).map_err(|e| StoreError::Io {
                path: self.root.join("tmp"),
                err: e,
            })?;
            w.finish(Some(digest))?;
        }
        Ok(digest)
    }

    /// A writer that hashes into a temp file; [`BlobWriter::finish`] moves it into place.
    /// Moves `staged`, a file under the store's `tmp/` whose bytes the caller hashed to
    /// `digest` while writing them (as an import does), into place: made readable, fsynced
    /// and renamed, without reading it again. An intact copy already there is kept.
    pub fn adopt(&self, staged: &Path, digest: &Digest) -> Result<(), StoreError> {
        let err = |e: io::Error| StoreError::Io {
            path: staged.to_path_buf(),
            err: e,
        };
        let file = File::open(staged).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        let path = self.blob_path(digest);
        if fs::metadata(&path).is_ok_and(|m| m.len() == size) {
            return Ok(());
        }
        readable(&file).map_err(err)?;
        file.sync_all().map_err(err)?;
        fs::rename(staged, &path).map_err(err)
    }

    pub fn blob_writer(&self) -> Result<BlobWriter<'_>, StoreError> {
        let tmp =
            tempfile::NamedTempFile::new_in(self.root.join("tmp")).map_err(|e| StoreError::Io {
                path: self.root.join("tmp"),
                err: e,
            })?;
        Ok(BlobWriter {
            store: self,
            inner: HashingWriter::new(io::BufWriter::with_capacity(1 << 20, tmp)),
        })
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::MissingBlob { digest: *digest }
            } else {
                StoreError::Io { path, err: e }
            }
        })
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::MissingBlob { digest: *digest }
            } else {
                StoreError::Io { path, err: e }
            }
        })
    }

    fn action_path(&self, key: &Digest) -> PathBuf {
        self.root
            .join("cache/actions")
            .join(format!("{}.json", key.hex()))
    }

    /// The cached output of the step with `key`, if it is recorded and all its blobs exist.
    pub fn action_get(&self, key: &Digest) -> Option<ActionRecord> {
        let bytes = fs::read(self.action_path(key)).ok()?;
        let record: ActionRecord = serde_json::from_slice(&bytes).ok()?;
        record
            .blobs
            .iter()
            .all(|d| self.has_blob(d))
            .then_some(record)
    }

    pub fn action_put(&self, key: &Digest, record: &ActionRecord) -> Result<(), StoreError> {
        let bytes =
            cairn_formats::json::to_canonical_vec(record).expect("action records serialise");
        self.write_file_atomic(&self.action_path(key), &bytes)
    }

    /// The tagged entries of `index.json`, sorted by tag.
    pub fn tags(&self) -> Result<Vec<Tag>, StoreError> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(|e| StoreError::Io {
            path: path.clone(),
            err: e,
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                what: e.to_string(),
            })?;
        let mut tags = Vec::new();
        for m in value["manifests"].as_array().into_iter().flatten() {
            let digest = m["digest"].as_str().and_then(|d| d.parse().ok());
            let (Some(digest), Some(size), Some(media_type)) =
                (digest, m["size"].as_u64(), m["mediaType"].as_str())
            else {
                return Err(StoreError::Corrupt {
                    path: path.clone(),
                    what: format!("bad manifest entry {m}"),
                });
            };
            let name = m["annotations"][REF_NAME]
                .as_str()
                .unwrap_or("")
                .to_string();
            tags.push(Tag {
                name,
                media_type: media_type.to_string(),
                digest,
                size,
            });
        }
        tags.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tags)
    }

    pub fn tag(&self, name: &str) -> Result<Option<Tag>, StoreError> {
        Ok(self.tags()?.into_iter().find(|t| t.name == name))
    }

    /// Points tag `name` at a blob, replacing an earlier entry of that name.
    pub fn set_tag(&self, tag: Tag) -> Result<(), StoreError> {
        let mut tags = self.tags()?;
        tags.retain(|t| t.name != tag.name);
        tags.push(tag);
        tags.sort_by(|a, b| a.name.cmp(&b.name));
        self.write_index(&tags)
    }

    /// Where each tag that did not come from a build came from (`pulled from REG/NS`,
    /// `imported from FILE`), kept in `origins.json` beside `index.json`: `store gc` keeps
    /// such tags, and `store list` shows it. A tag a build sets has no origin.
    pub fn origins(&self) -> BTreeMap<String, String> {
        fs::read(self.root.join(ORIGINS))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Records (or, with `None`, forgets) where `tag` came from.
    pub fn set_origin(&self, tag: &str, origin: Option<&str>) -> Result<(), StoreError> {
        let mut origins = self.origins();
        let changed = match origin {
            Some(o) => origins.insert(tag.to_string(), o.to_string()).as_deref() != Some(o),
            None => origins.remove(tag).is_some(),
        };
        if !changed {
            return Ok(());
        }
        let bytes = cairn_formats::json::to_canonical_vec(&origins).expect("strings serialise");
        self.write_file_atomic(&self.root.join(ORIGINS), &bytes)
    }

    pub(crate) fn write_index(&self, tags: &[Tag]) -> Result<(), StoreError> {
        use cairn_oci::artifact;
        let manifests = tags
            .iter()
            .map(|t| {
                artifact::annotated(
                    artifact::blob(&t.media_type, t.digest, t.size),
                    [(REF_NAME, t.name.as_str())],
                )
            })
            .collect();
        let bytes = artifact::index(manifests).bytes;
        self.write_file_atomic(&self.root.join("index.json"), &bytes)
    }

    /// Writes `path` by temp file, fsync and rename.
    pub fn write_file_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let err = |e: io::Error| StoreError::Io {
            path: path.to_path_buf(),
            err: e,
        };
        let mut tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp")).map_err(err)?;
        tmp.write_all(bytes).map_err(err)?;
        readable(tmp.as_file()).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(path).map_err(|e| err(e.error))?;
        Ok(())
    }
}

/// A blob being written. Dropped without `finish`, it leaves nothing behind.
pub struct BlobWriter<'a> {
    store: &'a Store,
    inner: HashingWriter<io::BufWriter<tempfile::NamedTempFile>>,
}

impl BlobWriter<'_> {
    pub fn n_bytes(&self) -> u64 {
        self.inner.n_bytes()
    }

    /// Moves the blob into place. With `expected`, a different digest is an error and the
    /// blob is discarded.
    pub fn finish(self, expected: Option<Digest>) -> Result<(Digest, u64), StoreError> {
        let tmp_dir = self.store.root.join("tmp");
        let (buffered, digest, size) = self.inner.finish();
        let err = |e: io::Error| StoreError::Io {
            path: tmp_dir.clone(),
            err: e,
        };
        let tmp = buffered.into_inner().map_err(|e| err(e.into_error()))?;
        if let Some(expected) = expected {
            if expected != digest {
                return Err(StoreError::DigestMismatch {
                    expected,
                    found: digest,
                });
            }
        }
        let path = self.store.blob_path(&digest);
        // An existing file of another size is a damaged copy: replace it.
        let intact = std::fs::metadata(&path).is_ok_and(|m| m.len() == size);
        if !intact {
            readable(tmp.as_file()).map_err(err)?;
            tmp.as_file().sync_all().map_err(err)?;
            tmp.persist(&path).map_err(|e| err(e.error))?;
        }
        Ok((digest, size))
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Temp files are created 0600; what lands in the store is readable by everyone (0644),
/// as any tool reading the layout expects.
/// Opens (creating if needed) `path` and takes an exclusive lock on it, held until the
/// returned file is dropped (or its process dies); `on_wait` is called once before waiting
/// for another holder.
pub fn lock_exclusive(path: &Path, on_wait: impl FnOnce()) -> io::Result<File> {
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            on_wait();
            lock.lock()?;
        }
        Err(fs::TryLockError::Error(e)) => return Err(e),
    }
    Ok(lock)
}

pub fn readable(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o644))
}

/// Hashes a reader to the end.
pub fn hash_reader(mut r: impl Read) -> io::Result<(Digest, u64)> {
    let mut w = HashingWriter::new(io::sink());
    io::copy(&mut r, &mut w)?;
    let (_, digest, size) = w.finish();
    Ok((digest, size))
}

/// A temp file in a directory other processes share (the download cache, beside an
/// export's output), locked while it lives: [`sweep_temp_files`] tells one a killed
/// process left behind (nobody holds its lock) from one being written.
pub fn shared_temp_file(dir: &Path, prefix: &str) -> io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let tmp = tempfile::Builder::new().prefix(prefix).tempfile_in(dir)?;
        tmp.as_file().lock()?;
        // A sweep may have taken it for abandoned between its creation and the lock:
        // then its name is gone (or another file's), and a new one is made.
        let ino = tmp.as_file().metadata()?.ino();
        if fs::symlink_metadata(tmp.path()).is_ok_and(|m| m.ino() == ino) {
            return Ok(tmp);
        }
    }
}

/// Removes the temp files named `prefix*` in `dir` that killed processes left: those no
/// process holds the lock of. Returns how many were removed; errors are ignored (a sweep
/// is housekeeping, never a reason to fail).
pub fn sweep_temp_files(dir: &Path, prefix: &str) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let Ok(file) = File::options().read(true).open(e.path()) else {
            continue;
        };
        if file.try_lock().is_ok() && fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_the_store_removes_what_a_killed_process_left_in_tmp() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), || {}).unwrap());
        let tmp = dir.path().join("tmp");
        fs::write(tmp.join(".tmpAbC123"), b"half a blob").unwrap();
        fs::create_dir_all(tmp.join("import-XyZ/blobs")).unwrap();
        fs::write(tmp.join("import-XyZ/blobs/x"), b"staged").unwrap();
        let store = Store::open(dir.path(), || {}).unwrap();
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        assert!(store.root().join("index.json").is_file());
    }

    #[test]
    fn a_second_lock_waits_for_the_first_to_be_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.lock");
        let first = lock_exclusive(&path, || panic!("the first holder does not wait")).unwrap();
        let (waiting, waited) = std::sync::mpsc::channel();
        let (locked, got) = std::sync::mpsc::channel();
        let second = std::thread::spawn(move || {
            let lock = lock_exclusive(&path, || waiting.send(()).unwrap()).unwrap();
            locked.send(()).unwrap();
            drop(lock);
        });
        waited.recv().expect("the second locker says it waits");
        assert!(
            got.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the second lock was taken while the first was held"
        );
        drop(first);
        got.recv()
            .expect("the second lock is taken once the first is dropped");
        second.join().unwrap();
    }

    #[test]
    fn a_sweep_removes_only_abandoned_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let live = shared_temp_file(dir.path(), ".part-").unwrap();
        // What a killed writer leaves: the file, and no process holding its lock.
        let abandoned = dir.path().join(".part-abandoned");
        File::create(&abandoned).unwrap();
        let other = dir.path().join("kept");
        File::create(&other).unwrap();
        assert_eq!(sweep_temp_files(dir.path(), ".part-"), 1);
        assert!(!abandoned.exists());
        assert!(live.path().exists(), "a locked temp file is being written");
        assert!(other.exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists(), "a finished temp file removes itself");
        assert_eq!(sweep_temp_files(dir.path(), ".part-"), 0);
    }
}
