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

    pub fn symlink(&mut self, path: &str, target: &str, meta: EntryMeta) -> io::Result<()> {
        let mut header = Self::header(tar::EntryType::Symlink, meta, 0);
        self.builder.append_link(&mut header, path, target)
    }

    /// A hard link to an earlier entry `target` (a path in the same archive).
    pub fn hardlink(&mut self, path: &str, target: &str, meta: EntryMeta) -> io::Result<()> {
        let mut header = Self::header(tar::EntryType::Link, meta, 0);
        self.builder.append_link(&mut header, path, target)
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
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
