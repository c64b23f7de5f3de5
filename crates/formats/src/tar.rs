//! Deterministic tar writer.
//!
//! Every header is built by hand from the metadata given (GNU format, no user or group
//! names, no device numbers), so nothing of the host leaks in. Entry order is the caller's:
//! callers pass entries sorted by path.

use std::io::{self, Read, Write};

/// Metadata of one entry. All fields are explicit; there are no defaults taken from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch; normally the build's `SOURCE_DATE_EPOCH`.
    pub mtime: u64,
}

pub struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
}

impl<W: Write> TarWriter<W> {
    pub fn new(writer: W) -> Self {
        let mut builder = tar::Builder::new(writer);
        builder.follow_symlinks(false);
        TarWriter { builder }
    }

    fn header(kind: tar::EntryType, meta: EntryMeta, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(meta.mode & 0o7777);
        header.set_uid(meta.uid);
        header.set_gid(meta.gid);
        header.set_mtime(meta.mtime);
        header.set_size(size);
        header
    }

    /// A directory. `path` is relative, without a leading `/` or `./`.
    pub fn dir(&mut self, path: &str, meta: EntryMeta) -> io::Result<()> {
        check_path(path.trim_end_matches('/'))?;
        let mut header = Self::header(tar::EntryType::Directory, meta, 0);
        let path = format!("{}/", path.trim_end_matches('/'));
        self.builder.append_data(&mut header, path, io::empty())
    }

    /// A regular file of exactly `size` bytes read from `data`.
    pub fn file(
        &mut self,
        path: &str,
        meta: EntryMeta,
        size: u64,
        data: impl Read,
    ) -> io::Result<()> {
        check_path(path)?;
        let mut header = Self::header(tar::EntryType::Regular, meta, size);
        let mut limited = data.take(size);
        let mut counted = CountingReader {
            inner: &mut limited,
            n_bytes: 0,
        };
        self.builder.append_data(&mut header, path, &mut counted)?;
        if counted.n_bytes != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{path}: expected {size} bytes of file data, got {}",
                    counted.n_bytes
                ),
            ));
        }
        Ok(())
    }

    /// A symbolic link. `target` is stored byte for byte, as `readlink` gave it.
    ///
    /// Written by hand: the `tar` crate's `append_link` normalises a target (`a//b` becomes
    /// `a/b`) only when the result fits the header's 100 bytes, and stores a longer one as
    /// given, so the same kind of target came out two ways depending on its length.
    pub fn symlink(&mut self, path: &str, target: &str, meta: EntryMeta) -> io::Result<()> {
        check_path(path)?;
        // Refused before anything is written: the `tar` crate writes a long path's
        // extension header first and would leave it without its entry.
        if target.is_empty() || target.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path}: a symlink's target {target:?} must be a non-empty path"),
            ));
        }
        let mut header = Self::header(tar::EntryType::Symlink, meta, 0);
        let raw = target.as_bytes();
        let field = header.as_old().linkname.len();
        if raw.len() > field {
            // GNU's long link name: a `K` member holding the target and its NUL, then
            // the entry, whose own field keeps the target's first bytes.
            let mut long = tar::Header::new_gnu();
            let name = b"././@LongLink";
            long.as_old_mut().name[..name.len()].copy_from_slice(name);
            long.set_mode(0o644);
            long.set_uid(0);
            long.set_gid(0);
            long.set_mtime(0);
            long.set_size(raw.len() as u64 + 1);
            long.set_entry_type(tar::EntryType::GNULongLink);
            long.set_cksum();
            self.builder.append(&long, raw.chain(&[0u8][..]))?;
            header.as_old_mut().linkname.copy_from_slice(&raw[..field]);
        } else {
            header.set_link_name_literal(raw)?;
        }
        self.builder.append_data(&mut header, path, io::empty())
    }

    /// A hard link to an earlier entry `target` (a path in the same archive).
    pub fn hardlink(&mut self, path: &str, target: &str, meta: EntryMeta) -> io::Result<()> {
        check_path(path)?;
        check_path(target)?;
        let mut header = Self::header(tar::EntryType::Link, meta, 0);
        self.builder.append_link(&mut header, path, target)
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

/// Entry names must be written as given: the `tar` crate would silently drop empty and `.`
/// components (and refuses `..`, a leading `/` and NUL), so such a path is refused here,
/// naming it, instead of landing in the layer as another path.
fn check_path(path: &str) -> io::Result<()> {
    if path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tar entry path {path:?} must be relative and normalised"),
        ));
    }
    Ok(())
}

struct CountingReader<R> {
    inner: R,
    n_bytes: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n_bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    /// Found by the `tar_roundtrip` fuzz target: `a//b` was written as `a/b`.
    #[test]
    fn refuses_paths_it_would_store_as_another() {
        let meta = EntryMeta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let mut w = TarWriter::new(Vec::new());
        for bad in ["\u{1}//-", "a/./b", "./a", "/etc", "a/../b", "a\0b", ""] {
            assert!(w.dir(bad, meta).is_err(), "{bad:?}");
            assert!(w.file(bad, meta, 0, io::empty()).is_err(), "{bad:?}");
            assert!(w.symlink(bad, "x", meta).is_err(), "{bad:?}");
        }
        assert!(w.hardlink("x", "a//b", meta).is_err());
        // Found by the same target: a long path's extension header was written before
        // an empty target was refused, leaving an entry without its member.
        let long = "d/".repeat(80) + "x";
        assert!(w.symlink(&long, "", meta).is_err());
        assert!(w.symlink(&long, "a\0", meta).is_err());
        w.dir("etc/", meta).unwrap();
        w.symlink("etc/x", "../usr/./lib", meta).unwrap();
        // Found by the same target: a target too long for the header was kept as given
        // while a short one was normalised. Both are kept as given now.
        let long_target = "a//".to_string() + &"b".repeat(120);
        w.symlink("etc/y", &long_target, meta).unwrap();
        w.symlink(&long, &long_target, meta).unwrap();
        let exactly = "c/./".to_string() + &"d".repeat(96);
        w.symlink("etc/z", &exactly, meta).unwrap();
        let bytes = w.finish().unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let entries: Vec<(String, Option<String>)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8(l.into_owned()).unwrap());
                (name, link)
            })
            .collect();
        let expected = [
            ("etc/".to_string(), None),
            ("etc/x".to_string(), Some("../usr/./lib".to_string())),
            ("etc/y".to_string(), Some(long_target.clone())),
            (long.clone(), Some(long_target)),
            ("etc/z".to_string(), Some(exactly)),
        ];
        assert_eq!(entries, expected);
    }

    pub(crate) fn sample_tar() -> Vec<u8> {
        let meta = |mode| EntryMeta {
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
        };
        let mut w = TarWriter::new(Vec::new());
        w.dir("etc", meta(0o755)).unwrap();
        w.file("etc/hostname", meta(0o644), 6, &b"cairn\n"[..])
            .unwrap();
        w.file("etc/shadow", meta(0o640), 0, io::empty()).unwrap();
        w.dir("tmp", meta(0o1777)).unwrap();
        w.symlink("bin", "usr/bin", meta(0o777)).unwrap();
        w.file(
            "usr/bin/su",
            EntryMeta {
                mode: 0o4755,
                uid: 0,
                gid: 0,
                mtime: 1,
            },
            3,
            &b"su\n"[..],
        )
        .unwrap();
        w.hardlink("usr/bin/su2", "usr/bin/su", meta(0o4755))
            .unwrap();
        let long = format!("usr/share/{}/file", "d".repeat(120));
        w.file(&long, meta(0o600), 1, &b"x"[..]).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn golden_digest() {
        let bytes = sample_tar();
        assert_eq!(bytes.len() % 512, 0);
        assert_eq!(
            Digest::of(&bytes).to_string(),
            "sha256:bbb8a53ca333d88a821c16b51bbe7c6a0a03956f90819f8736578b0d34bbc651"
        );
    }

    #[test]
    fn short_data_is_an_error() {
        let mut w = TarWriter::new(Vec::new());
        let meta = EntryMeta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let err = w.file("a", meta, 10, &b"abc"[..]).unwrap_err();
        assert!(err.to_string().contains("expected 10 bytes"), "{err}");
    }

    #[test]
    fn headers_carry_exactly_the_given_metadata() {
        let bytes = sample_tar();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            seen.push((
                entry.path().unwrap().to_string_lossy().into_owned(),
                h.mode().unwrap(),
                h.mtime().unwrap(),
                h.username().unwrap().unwrap_or("").to_string(),
            ));
        }
        assert_eq!(
            seen[0],
            ("etc/".to_string(), 0o755, 1_700_000_000, String::new())
        );
        assert_eq!(seen[3].1, 0o1777);
        assert_eq!(
            seen[5],
            ("usr/bin/su".to_string(), 0o4755, 1, String::new())
        );
        assert!(seen[7].0.len() > 100, "long name kept: {}", seen[7].0);
        assert_eq!(seen.len(), 8);
    }
}
