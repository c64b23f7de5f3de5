//! One .deb unpacked by a worker thread: its sha256 checked, its file bytes written into
//! the root filesystem's scratch file (hashed on the way), its entries listed in archive
//! order for the tree to place.

use crate::rootfs::{Deb, Kind};
use cairn_debian::{DebEntryKind, unpack_data};
use cairn_formats::HashingWriter;
use cairn_steps::Error;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

/// What a worker found in one .deb: its entries in archive order, not yet in the tree.
pub(crate) struct Unpacked {
    pub info: cairn_debian::deb::DebInfo,
    pub entries: Vec<UnpackedEntry>,
}

pub(crate) struct UnpackedEntry {
    /// Merged-/usr path.
    pub path: String,
    /// As the package has it (for messages).
    pub raw_path: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub kind: Entry,
}

pub(crate) enum Entry {
    Node(Kind),
    /// Resolved against the tree when the package's entries are placed.
    Hardlink(String),
}

/// Checks one .deb's sha256 and unpacks it: file bytes into ranges of `scratch` reserved
/// from `next`, hashed on the way; entries listed in archive order.
pub(crate) fn unpack_into(
    scratch: &File,
    next: &std::sync::atomic::AtomicU64,
    deb: &Deb,
) -> Result<Unpacked, Error> {
    let package = deb.package.as_str();
    let open = || {
        File::open(&deb.path)
            .map_err(|e| Error::at(format!("{package}: {}", deb.path.display()), e))
    };
    let (digest, _) = cairn_store::hash_reader(open()?)
        .map_err(|e| Error::at(format!("{package}: {}", deb.path.display()), e))?;
    if digest != deb.sha256 {
        return Err(Error::msg(format!(
            "{package}: {} has sha256 {digest}, but the lock pins {}: the cached file is corrupt; delete it and build again",
            deb.path.display(),
            deb.sha256
        )));
    }
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let info = unpack_data(open()?, package, |entry, data| {
        let Some(path) = crate::rootfs::merged_usr(&entry.path) else {
            return Ok(());
        };
        let kind = match &entry.kind {
            DebEntryKind::Dir => Entry::Node(Kind::Dir),
            DebEntryKind::File { size } => {
                let offset = next.fetch_add(*size, std::sync::atomic::Ordering::Relaxed);
                let mut hasher = HashingWriter::new(io::sink());
                let mut at = 0u64;
                loop {
                    let n = match data.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    if at + n as u64 > *size {
                        return Err(io::Error::other(format!(
                            "{}: more data than its {size} bytes",
                            entry.path
                        )));
                    }
                    hasher.write_all(&buf[..n])?;
                    scratch.write_all_at(&buf[..n], offset + at)?;
                    at += n as u64;
                }
                if at != *size {
                    return Err(io::Error::other(format!(
                        "{}: {at} bytes where its header says {size}",
                        entry.path
                    )));
                }
                let (_, sha256, _) = hasher.finish();
                Entry::Node(Kind::File {
                    offset,
                    size: *size,
                    sha256,
                })
            }
            DebEntryKind::Symlink { target } => Entry::Node(Kind::Symlink(target.clone())),
            DebEntryKind::Hardlink { target } => Entry::Hardlink(target.clone()),
        };
        entries.push(UnpackedEntry {
            path,
            raw_path: entry.path.clone(),
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            kind,
        });
        Ok(())
    })?;
    Ok(Unpacked { info, entries })
}
