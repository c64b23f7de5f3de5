//! Deterministic `newc` cpio writer (the initramfs format): inode numbers assigned in write
//! order from 1, no device numbers, mtime given by the caller.

use std::io::{self, Read, Write};

/// Kind and permission bits of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpioKind {
    Dir,
    File,
    Symlink,
    CharDevice,
}

impl CpioKind {
    fn bits(self) -> u32 {
        match self {
            CpioKind::Dir => 0o040000,
            CpioKind::File => 0o100000,
            CpioKind::Symlink => 0o120000,
            CpioKind::CharDevice => 0o020000,
        }
    }
}

pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
    /// Device numbers of the next header (character devices only).
    rdev: Option<(u32, u32)>,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            next_ino: 1,
            written: 0,
            rdev: None,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }

    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        uid: u32,
        gid: u32,
        nlink: u32,
        mtime: u32,
        size: u32,
        name: &str,
    ) -> io::Result<()> {
        let (rmajor, rminor) = self.rdev.take().unwrap_or((0, 0));
        let header = format!(
            "070701{ino:08X}{mode:08X}{uid:08X}{gid:08X}{nlink:08X}{mtime:08X}{size:08X}{:08X}{:08X}{rmajor:08X}{rminor:08X}{:08X}{:08X}",
            0,
            0,
            name.len() + 1,
            0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    fn entry(
        &mut self,
        path: &str,
        kind: CpioKind,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: u32,
        size: u64,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        // A character device's numbers belong to this entry only, written or refused.
        let rdev = self.rdev.take();
        if path.is_empty()
            || path.starts_with('/')
            || path.split('/').any(|c| c == ".." || c.is_empty())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cpio path {path:?} must be relative and normalised"),
            ));
        }
        // A name ends at its NUL, and this one name ends the archive: either would make
        // readers (the kernel's unpacker) see something else than was written.
        if path.contains('\0') || path == "TRAILER!!!" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cpio path {path:?} cannot be stored in a newc archive"),
            ));
        }
        let size32 = u32::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path}: newc cannot hold a file of {size} bytes"),
            )
        })?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.rdev = rdev;
        let nlink = if kind == CpioKind::Dir { 2 } else { 1 };
        self.header(
            ino,
            kind.bits() | (mode & 0o7777),
            uid,
            gid,
            nlink,
            mtime,
            size32,
            path,
        )?;
        let mut limited = data.take(size);
        let n = io::copy(&mut limited, &mut self.out)?;
        self.written += n;
        if n != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path}: expected {size} bytes, got {n}"),
            ));
        }
        self.pad()
    }

    pub fn dir(&mut self, path: &str, mode: u32, mtime: u32) -> io::Result<()> {
        self.entry(path, CpioKind::Dir, mode, 0, 0, mtime, 0, &mut io::empty())
    }

    pub fn file(&mut self, path: &str, mode: u32, mtime: u32, data: &[u8]) -> io::Result<()> {
        self.entry(
            path,
            CpioKind::File,
            mode,
            0,
            0,
            mtime,
            data.len() as u64,
            &mut &data[..],
        )
    }

    pub fn file_from(
        &mut self,
        path: &str,
        mode: u32,
        mtime: u32,
        size: u64,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        self.entry(path, CpioKind::File, mode, 0, 0, mtime, size, data)
    }

    pub fn symlink(&mut self, path: &str, target: &str, mtime: u32) -> io::Result<()> {
        self.entry(
            path,
            CpioKind::Symlink,
            0o777,
            0,
            0,
            mtime,
            target.len() as u64,
            &mut target.as_bytes(),
        )
    }

    /// A character device node (`dev/console` is 5:1).
    pub fn char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
        mtime: u32,
    ) -> io::Result<()> {
        self.rdev = Some((major, minor));
        self.entry(
            path,
            CpioKind::CharDevice,
            mode,
            0,
            0,
            mtime,
            0,
            &mut io::empty(),
        )
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(0, 0, 0, 0, 1, 0, 0, "TRAILER!!!")?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    pub fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("bin", 0o755, 0).unwrap();
        w.file("bin/busybox", 0o755, 0, b"#!busybox\n").unwrap();
        w.symlink("bin/sh", "busybox", 0).unwrap();
        w.file("init", 0o700, 0, b"#!/bin/sh\nexec /sbin/init\n")
            .unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn golden() {
        let bytes = sample();
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(bytes.len() % 4, 0);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("TRAILER!!!"));
        assert_eq!(
            Digest::of(&bytes).to_string(),
            "sha256:55847621ff0218179010a78a1f1f0e4e4d3174dedb9c56114af511959671e6ad"
        );
    }

    #[test]
    fn refuses_escaping_paths() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("../etc/passwd", 0o644, 0, b"").is_err());
        assert!(w.file("/init", 0o644, 0, b"").is_err());
    }

    /// Found by the `cpio_roundtrip` fuzz target: a NUL in a name was written as it was,
    /// and a reader took the name to end there.
    #[test]
    fn refuses_names_a_reader_would_read_otherwise() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.dir("\u{8}\0", 0o755, 0).is_err());
        assert!(w.file("etc/a\0b", 0o644, 0, b"x").is_err());
        assert!(w.file("TRAILER!!!", 0o644, 0, b"x").is_err());
        assert!(w.file("etc/TRAILER!!!", 0o644, 0, b"x").is_ok());
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.windows(10).filter(|w| w == b"TRAILER!!!").count(), 2);
    }

    /// Found by the `cpio_roundtrip` fuzz target: a refused character device left its
    /// device numbers to the next entry.
    #[test]
    fn a_refused_device_leaves_nothing_to_the_next_entry() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.char_device("/dev/console", 0o600, 255, 255, 0).is_err());
        w.symlink("bin/sh", "busybox", 0).unwrap();
        let bytes = w.finish().unwrap();
        // rdevmajor and rdevminor of the first header.
        assert_eq!(&bytes[78..94], b"0000000000000000");
    }
}
