//! A root filesystem assembled from unpacked packages plus declared files, users and
//! symlinks. Metadata lives in memory (a sorted map); file bytes in one scratch file, so
//! memory stays bounded whatever the image size.
//!
//! Merged /usr is applied as the packages are unpacked: `bin/`, `sbin/`, `lib*/` entries land
//! under `usr/`, and the top-level links are Cairn's own.

use crate::unpack::{Entry, Unpacked, unpack_into};
use cairn_formats::tar::{EntryMeta, TarWriter};
use cairn_formats::{Digest, HashingWriter};
use cairn_steps::Error;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

const MERGED: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// Who declared an entry that is allowed to replace a package's (the image spec).
pub const SPEC: &str = "the image spec";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File {
        offset: u64,
        size: u64,
        sha256: Digest,
    },
    Symlink(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// The package (or the spec) that put it there.
    pub owner: String,
}

pub struct Rootfs {
    nodes: BTreeMap<String, Node>,
    scratch: BufWriter<File>,
    scratch_len: u64,
}

/// A .deb to unpack: where it is, its package name, the sha256 the lock pins, and how
/// errors name it (`libc6 2.41-12`).
#[derive(Debug, Clone)]
pub struct Deb {
    pub path: std::path::PathBuf,
    pub package: String,
    pub sha256: Digest,
    pub label: String,
}

/// The .debs of locked packages, in the download cache.
pub fn debs<'a>(
    cache: &cairn_inputs::fetch::Cache,
    packages: impl IntoIterator<Item = &'a cairn_inputs::lockfile::LockedPackage>,
) -> Result<Vec<Deb>, Error> {
    packages
        .into_iter()
        .map(|p| {
            let sha256 = Digest::from_hex(&p.sha256)
                .map_err(|e| Error::at(format!("inputs.lock: package {}", p.name), e))?;
            Ok(Deb {
                path: cache.path(&sha256),
                package: p.name.clone(),
                sha256,
                label: format!("{} {}", p.name, p.version),
            })
        })
        .collect()
}

/// The merged-/usr location of a path (`bin/sh` -> `usr/bin/sh`); `None` for the top-level
/// names themselves, which Cairn creates as links.
pub(crate) fn merged_usr(path: &str) -> Option<String> {
    let first = path.split('/').next().unwrap_or("");
    if MERGED.contains(&first) {
        if path == first {
            return None;
        }
        return Some(format!("usr/{path}"));
    }
    Some(path.to_string())
}

/// Joins a symlink target to the directory holding the link, lexically; `None` if `..`
/// climbs above the root.
fn join_link(link_path: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        let mut p: Vec<&str> = link_path.split('/').collect();
        p.pop();
        p
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

impl Rootfs {
    pub fn new(scratch_dir: &Path) -> Result<Rootfs, Error> {
        let scratch =
            tempfile::tempfile_in(scratch_dir).map_err(|e| Error::at(scratch_dir.display(), e))?;
        Ok(Rootfs {
            nodes: BTreeMap::new(),
            scratch: BufWriter::with_capacity(1 << 20, scratch),
            scratch_len: 0,
        })
    }

    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    /// The real location of `path` (relative), every symlink on the way followed, the last
    /// one included; `None` when it does not exist or a link leads out of the root.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut current = merged_usr(path).unwrap_or_else(|| path.to_string());
        for _ in 0..40 {
            current = self.resolve_parents(&current).ok()?;
            match &self.nodes.get(&current)?.kind {
                Kind::Symlink(target) => {
                    let next = join_link(&current, target)?;
                    current = merged_usr(&next).unwrap_or(next);
                }
                _ => return Some(current),
            }
        }
        None
    }

    /// Follows symlinks in the parents of `path` (as dpkg would on the target), returning the
    /// real location. A link that leads out of the root is an error.
    fn resolve_parents(&self, path: &str) -> Result<String, String> {
        let mut current = path.to_string();
        'restart: for _ in 0..40 {
            let parts: Vec<&str> = current.split('/').collect();
            for i in 1..parts.len() {
                let prefix = parts[..i].join("/");
                if let Some(Node {
                    kind: Kind::Symlink(target),
                    ..
                }) = self.nodes.get(&prefix)
                {
                    let Some(resolved) = join_link(&prefix, target) else {
                        return Err(format!(
                            "goes through symlink {prefix} -> {target}, which leads outside the root"
                        ));
                    };
                    let resolved = merged_usr(&resolved).unwrap_or(resolved);
                    current = if resolved.is_empty() {
                        parts[i..].join("/")
                    } else {
                        format!("{resolved}/{}", parts[i..].join("/"))
                    };
                    continue 'restart;
                }
            }
            return Ok(current);
        }
        Err("goes through too many levels of symlinks".into())
    }

    fn ensure_parents(&mut self, path: &str, owner: &str) -> Result<(), String> {
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..parts.len() {
            let prefix = parts[..i].join("/");
            match self.nodes.get(&prefix) {
                None => {
                    self.nodes.insert(
                        prefix,
                        Node {
                            kind: Kind::Dir,
                            mode: 0o755,
                            uid: 0,
                            gid: 0,
                            owner: owner.to_string(),
                        },
                    );
                }
                Some(Node {
                    kind: Kind::Dir, ..
                }) => {}
                Some(other) => {
                    return Err(format!(
                        "needs {prefix} to be a directory, but {} made it a file",
                        other.owner
                    ));
                }
            }
        }
        Ok(())
    }

    /// Inserts a node, reporting conflicts. The spec may replace what a package put there.
    fn insert(&mut self, path: &str, node: Node) -> Result<(), Error> {
        let path = self
            .resolve_parents(path)
            .map_err(|why| Error::msg(format!("{}: entry {path:?} {why}", node.owner)))?;
        self.ensure_parents(&path, &node.owner)
            .map_err(|why| Error::msg(format!("{}: entry {path:?} {why}", node.owner)))?;
        match self.nodes.get(&path) {
            None => {}
            Some(old) => {
                let same = match (&old.kind, &node.kind) {
                    (Kind::Dir, Kind::Dir) => node.owner != SPEC,
                    (Kind::File { sha256: a, .. }, Kind::File { sha256: b, .. }) => {
                        a == b && old.mode == node.mode
                    }
                    (Kind::Symlink(a), Kind::Symlink(b)) => a == b,
                    _ => false,
                };
                if same {
                    return Ok(());
                }
                if node.owner != SPEC && old.owner != SPEC {
                    return Err(Error::msg(format!(
                        "conflict: /{path} is shipped by both {} and {} with different content; `exclude` one of them",
                        old.owner, node.owner
                    )));
                }
            }
        }
        self.nodes.insert(path, node);
        Ok(())
    }

    fn store_bytes(&mut self, r: &mut dyn Read) -> io::Result<(u64, u64, Digest)> {
        let offset = self.scratch_len;
        let mut w = HashingWriter::new(&mut self.scratch);
        io::copy(r, &mut w)?;
        let (_, digest, size) = w.finish();
        self.scratch_len += size;
        Ok((offset, size, digest))
    }

    /// Unpacks .debs in the order given, as one after the other would: the same tree, the
    /// same conflicts, the first error in package order. The work that dominates a build
    /// (checking each .deb's sha256, decompressing its data.tar, hashing its files) runs on
    /// `threads` threads, each writing file bytes into its own range of the scratch file;
    /// the tree is then filled in package order on this thread. Where in the scratch file
    /// the bytes lie never reaches an output (they are read back by path order).
    pub fn add_debs(
        &mut self,
        debs: &[Deb],
        threads: usize,
    ) -> Result<Vec<cairn_debian::deb::DebInfo>, Error> {
        self.scratch
            .flush()
            .map_err(|e| Error::at("scratch file", e))?;
        let next = std::sync::atomic::AtomicU64::new(self.scratch_len);
        let job = std::sync::atomic::AtomicUsize::new(0);
        // The largest first (a kernel package takes as long as all the rest together), so
        // the threads finish together; the tree is still filled in the given order.
        let mut order: Vec<usize> = (0..debs.len()).collect();
        order.sort_by_key(|&i| {
            std::cmp::Reverse(std::fs::metadata(&debs[i].path).map_or(0, |m| m.len()))
        });
        let results: Vec<std::sync::Mutex<Option<Result<Unpacked, Error>>>> =
            debs.iter().map(|_| Default::default()).collect();
        {
            let file = self.scratch.get_ref();
            let work = || {
                loop {
                    let n = job.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&i) = order.get(n) else { break };
                    let deb = &debs[i];
                    let r = unpack_into(file, &next, deb)
                        .map_err(|e| e.context(format!("unpacking {}", deb.label)));
                    *results[i].lock().unwrap() = Some(r);
                }
            };
            std::thread::scope(|s| {
                for _ in 1..threads.clamp(1, debs.len().max(1)) {
                    s.spawn(work);
                }
                work();
            });
        }
        self.scratch_len = next.into_inner();
        io::Seek::seek(&mut self.scratch, io::SeekFrom::Start(self.scratch_len))
            .map_err(|e| Error::at("scratch file", e))?;
        let mut infos = Vec::with_capacity(debs.len());
        for (deb, result) in debs.iter().zip(results) {
            let unpacked = result
                .into_inner()
                .unwrap()
                .expect("every .deb was unpacked")?;
            let package = deb.package.as_str();
            for e in unpacked.entries {
                let meta = |kind| Node {
                    kind,
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    owner: package.to_string(),
                };
                let node = match e.kind {
                    Entry::Node(kind) => meta(kind),
                    Entry::Hardlink(target) => {
                        let target = merged_usr(&target).unwrap_or_default();
                        let resolved = self.resolve_parents(&target).unwrap_or(target.clone());
                        match self.nodes.get(&resolved) {
                            Some(Node {
                                kind: kind @ Kind::File { .. },
                                ..
                            }) => meta(kind.clone()),
                            _ => {
                                return Err(Error::msg(format!(
                                    "{package}: hard link {} points at {target:?}, which is not a file of the package",
                                    e.raw_path
                                ))
                                .context(format!("unpacking {}", deb.label)));
                            }
                        }
                    }
                };
                self.insert(&e.path, node)
                    .map_err(|err| err.context(format!("unpacking {}", deb.label)))?;
            }
            infos.push(unpacked.info);
        }
        Ok(infos)
    }

    /// Writes what is buffered to the scratch file, so [`Rootfs::read_flushed`] sees it.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.scratch
            .flush()
            .map_err(|e| Error::at("scratch file", e))
    }

    /// The content of the regular file at `path`, from a shared reference (several
    /// threads at once): the caller flushed since the file was added.
    pub fn read_flushed(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let Some(Node {
            kind: Kind::File { offset, size, .. },
            ..
        }) = self.nodes.get(path)
        else {
            return Ok(None);
        };
        let mut out = vec![0u8; *size as usize];
        self.scratch
            .get_ref()
            .read_exact_at(&mut out, *offset)
            .map_err(|e| Error::at("scratch file", e))?;
        Ok(Some(out))
    }

    /// The content of the regular file at `path` (relative), if there is one.
    pub fn read_file(&mut self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        self.flush()?;
        self.read_flushed(path)
    }

    /// The names and kinds of the entries directly in `dir` (relative, sorted by name).
    pub fn entries_in(&self, dir: &str) -> Vec<(String, Kind)> {
        let start = format!("{dir}/");
        self.nodes
            .range(start.clone()..)
            .take_while(|(p, _)| p.starts_with(&start))
            .filter(|(p, _)| !p[start.len()..].contains('/'))
            .map(|(p, n)| (p[start.len()..].to_string(), n.kind.clone()))
            .collect()
    }

    /// Paths of the regular files under `prefix/` (relative, sorted).
    pub fn files_under(&self, prefix: &str) -> Vec<String> {
        let start = format!("{prefix}/");
        self.nodes
            .range(start.clone()..)
            .take_while(|(p, _)| p.starts_with(&start))
            .filter(|(_, n)| matches!(n.kind, Kind::File { .. }))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Writes the tree as a squashfs (zstd), every mtime `mtime`, sorted by path.
    pub fn write_squashfs<W: Write + io::Seek>(
        &mut self,
        out: W,
        mtime: u32,
    ) -> Result<(W, u64), Error> {
        self.scratch
            .flush()
            .map_err(|e| Error::at("scratch file", e))?;
        crate::squashfs::write(&self.nodes, self.scratch.get_ref(), out, mtime)
    }

    /// A file from the spec (replaces a package's file at that path).
    pub fn add_file(
        &mut self,
        path: &str,
        bytes: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Result<(), Error> {
        let (offset, size, sha256) = self
            .store_bytes(&mut &bytes[..])
            .map_err(|e| Error::at("scratch file", e))?;
        self.insert(
            &rel(path),
            Node {
                kind: Kind::File {
                    offset,
                    size,
                    sha256,
                },
                mode,
                uid,
                gid,
                owner: SPEC.into(),
            },
        )
    }

    /// A file from the download cache, streamed (its sha256 checked against the lock).
    pub fn add_file_from(
        &mut self,
        path: &str,
        source: &Path,
        expected: &Digest,
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Result<(), Error> {
        let open = || File::open(source).map_err(|e| Error::at(source.display(), e));
        let (digest, _) =
            cairn_store::hash_reader(open()?).map_err(|e| Error::at(source.display(), e))?;
        if digest != *expected {
            return Err(Error::msg(format!(
                "{} has sha256 {digest}, but the lock pins {expected}: the cached file is corrupt; delete it and build again",
                source.display()
            )));
        }
        let (offset, size, sha256) = self
            .store_bytes(&mut open()?)
            .map_err(|e| Error::at("scratch file", e))?;
        self.insert(
            &rel(path),
            Node {
                kind: Kind::File {
                    offset,
                    size,
                    sha256,
                },
                mode,
                uid,
                gid,
                owner: SPEC.into(),
            },
        )
    }

    pub fn add_dir(&mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Result<(), Error> {
        self.insert(
            &rel(path),
            Node {
                kind: Kind::Dir,
                mode,
                uid,
                gid,
                owner: SPEC.into(),
            },
        )
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), Error> {
        self.insert(
            &rel(path),
            Node {
                kind: Kind::Symlink(target.into()),
                mode: 0o777,
                uid: 0,
                gid: 0,
                owner: SPEC.into(),
            },
        )
    }

    /// What `update-ca-certificates` would write: every certificate under
    /// `/usr/share/ca-certificates`, in path order, as `/etc/ssl/certs/ca-certificates.crt`.
    /// Returns whether there were any.
    pub fn add_ca_bundle(&mut self) -> Result<bool, Error> {
        self.scratch
            .flush()
            .map_err(|e| Error::at("scratch file", e))?;
        let mut bundle = Vec::new();
        for (path, node) in self.nodes.range("usr/share/ca-certificates/".to_string()..) {
            if !path.starts_with("usr/share/ca-certificates/") {
                break;
            }
            if let (true, Kind::File { offset, size, .. }) = (path.ends_with(".crt"), &node.kind) {
                let start = bundle.len();
                bundle.resize(start + *size as usize, 0);
                self.scratch
                    .get_ref()
                    .read_exact_at(&mut bundle[start..], *offset)
                    .map_err(|e| Error::at("scratch file", e))?;
                if !bundle.ends_with(b"\n") {
                    bundle.push(b'\n');
                }
            }
        }
        if bundle.is_empty() {
            return Ok(false);
        }
        let (offset, size, sha256) = self
            .store_bytes(&mut &bundle[..])
            .map_err(|e| Error::at("scratch file", e))?;
        self.insert(
            "etc/ssl/certs/ca-certificates.crt",
            Node {
                kind: Kind::File {
                    offset,
                    size,
                    sha256,
                },
                mode: 0o644,
                uid: 0,
                gid: 0,
                owner: SPEC.into(),
            },
        )?;
        Ok(true)
    }

    /// The top-level merged-/usr links, for the lib directories that exist.
    pub fn add_merged_usr_links(&mut self) {
        for name in MERGED {
            let target = format!("usr/{name}");
            if name == "bin" || name == "sbin" || name == "lib" || self.nodes.contains_key(&target)
            {
                self.nodes.insert(
                    name.to_string(),
                    Node {
                        kind: Kind::Symlink(target),
                        mode: 0o777,
                        uid: 0,
                        gid: 0,
                        owner: "merged /usr".into(),
                    },
                );
            }
        }
    }

    /// Writes the tree as a tar, sorted by path, every mtime `mtime`.
    pub fn write_tar<W: Write>(&mut self, out: W, mtime: u64) -> Result<W, Error> {
        self.scratch
            .flush()
            .map_err(|e| Error::at("scratch file", e))?;
        let scratch = self.scratch.get_ref();
        let mut tar = TarWriter::new(out);
        let io_err = |e: io::Error| Error::at("writing the layer", e);
        for (path, node) in &self.nodes {
            let meta = EntryMeta {
                mode: node.mode,
                uid: node.uid,
                gid: node.gid,
                mtime,
            };
            match &node.kind {
                Kind::Dir => tar.dir(path, meta).map_err(io_err)?,
                Kind::Symlink(target) => tar.symlink(path, target, meta).map_err(io_err)?,
                Kind::File { offset, size, .. } => {
                    let reader = ScratchReader {
                        file: scratch,
                        offset: *offset,
                        remaining: *size,
                    };
                    tar.file(path, meta, *size, reader).map_err(io_err)?;
                }
            }
        }
        tar.finish().map_err(io_err)
    }
}

/// A spec path (`/bin/x`) as a tree path, with merged /usr applied (`usr/bin/x`).
fn rel(path: &str) -> String {
    let p = path.trim_start_matches('/');
    merged_usr(p).unwrap_or_else(|| format!("usr/{p}"))
}

/// A file's bytes in the scratch file, read in place.
pub(crate) struct ScratchReader<'a> {
    pub file: &'a File,
    pub offset: u64,
    pub remaining: u64,
}

impl Read for ScratchReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(self.remaining as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        self.offset += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_usr_and_links() {
        assert_eq!(merged_usr("bin/sh").as_deref(), Some("usr/bin/sh"));
        assert_eq!(merged_usr("bin"), None);
        assert_eq!(merged_usr("libexec/x").as_deref(), Some("libexec/x"));
        assert_eq!(
            join_link("usr/lib/a", "../share/b").as_deref(),
            Some("usr/share/b")
        );
        assert_eq!(join_link("etc/x", "/usr/y").as_deref(), Some("usr/y"));
        assert_eq!(join_link("etc/x", "../../.."), None);
    }

    #[test]
    fn spec_overrides_packages_conflicts_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut fs = Rootfs::new(dir.path()).unwrap();
        fs.add_file("/etc/a", b"1", 0o644, 0, 0).unwrap();
        fs.add_file("/etc/a", b"2", 0o600, 0, 0).unwrap();
        let Node {
            kind: Kind::File { size, .. },
            mode,
            ..
        } = fs.nodes()["etc/a"].clone()
        else {
            panic!()
        };
        assert_eq!((size, mode), (1, 0o600));
        let n = |owner: &str, data: &[u8], fs: &mut Rootfs| {
            let (offset, size, sha256) = fs.store_bytes(&mut &data[..]).unwrap();
            fs.insert(
                "usr/share/x",
                Node {
                    kind: Kind::File {
                        offset,
                        size,
                        sha256,
                    },
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    owner: owner.into(),
                },
            )
        };
        n("pkg-a", b"same", &mut fs).unwrap();
        n("pkg-b", b"same", &mut fs).unwrap();
        let err = n("pkg-c", b"different", &mut fs).unwrap_err().to_string();
        assert!(
            err.contains("/usr/share/x is shipped by both pkg-a and pkg-c"),
            "{err}"
        );
    }

    #[test]
    fn symlinked_parents_are_followed_inside_and_refused_outside() {
        let dir = tempfile::tempdir().unwrap();
        let mut fs = Rootfs::new(dir.path()).unwrap();
        fs.add_symlink("/etc/conf", "../usr/share/conf").unwrap();
        fs.add_file("/etc/conf/x", b"x", 0o644, 0, 0).unwrap();
        assert!(fs.nodes().contains_key("usr/share/conf/x"));
        fs.add_symlink("/evil", "../../..").unwrap();
        let err = fs
            .add_file("/evil/etc/passwd", b"x", 0o644, 0, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("leads outside the root"), "{err}");
    }
}
