//! `flash`: a node's SD-card image onto a card (`--device`) or into an image file
//! (`--file`), with its secrets written into the card's reserved `cairn-secrets.env`.
//!
//! Before a byte is written, a device must be a whole block device, not mounted, not in use
//! (opened with `O_EXCL`, as bmaptool does), removable unless forced, and at least as large
//! as the image. Only the blocks the image's bmap names are written (the gap before the
//! first partition, free FAT clusters and padding keep what the card held); block 0 is
//! cleared first and written last, so a card cut off mid-way has no partition table. Then everything
//! is fsynced, dropped from the page cache and read back: a difference names its first
//! offset. The store's image is never changed; the secrets exist only on the card.

use cairn_disk::bmap::BlockMap;
use cairn_formats::Digest;
use cairn_node::build::{
    ANNOTATION_SECRETS_OFFSET, ANNOTATION_SECRETS_SIZE, MEDIA_BMAP, MEDIA_DISK,
};
use cairn_steps::Error;
use cairn_store::Store;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the image goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A whole block device (`/dev/sdX`, `/dev/mmcblk0`).
    Device(PathBuf),
    /// A regular file (created when missing; an existing file keeps its size if larger).
    File(PathBuf),
}

impl Target {
    pub fn path(&self) -> &Path {
        match self {
            Target::Device(p) | Target::File(p) => p,
        }
    }
}

/// How to flash.
#[derive(Debug, Clone)]
pub struct FlashConfig {
    pub target: Target,
    /// The node's secrets file (KEY=value lines), written into the reserved file.
    pub secrets: Option<Vec<u8>>,
    /// Write to a device that does not say it is removable.
    pub force: bool,
    pub progress: bool,
}

/// What a flash did.
#[derive(Debug, Clone)]
pub struct FlashReport {
    pub node: String,
    pub target: PathBuf,
    pub image: Digest,
    pub image_size: u64,
    pub bytes_written: u64,
    pub bytes_skipped: u64,
    pub secrets: bool,
    pub seconds: f64,
}

impl FlashReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "node": self.node,
            "target": self.target.display().to_string(),
            "image": {"digest": self.image.to_string(), "size": self.image_size},
            "bytes_written": self.bytes_written,
            "bytes_skipped": self.bytes_skipped,
            "secrets": self.secrets,
            "verified": true,
            "seconds": (self.seconds * 100.0).round() / 100.0,
        })
    }
}

/// A node's SD image in the store, and what flashing it needs to know.
#[derive(Debug, Clone)]
pub struct NodeImage {
    pub node: String,
    pub disk: Digest,
    pub size: u64,
    /// The bmap of the image, when the artifact carries one.
    pub bmap: Option<BlockMap>,
    /// Offset and size of the reserved secrets file.
    pub secrets_area: Option<(u64, u64)>,
}

impl NodeImage {
    /// Reads node `name`'s artifact (by its tag) from the store.
    pub fn from_store(store: &Store, name: &str) -> Result<NodeImage, Error> {
        let tag = store.tag(name)?.ok_or_else(|| {
            Error::msg(format!(
                "the store has no node {name}: run `cargo xtask build-node {name}`, or pull it with `--from REGISTRY/NAMESPACE`"
            ))
        })?;
        let manifest: serde_json::Value = serde_json::from_slice(&store.read_blob(&tag.digest)?)
            .map_err(|e| Error::at(format!("node {name}: manifest {}", tag.digest), e))?;
        if manifest["artifactType"] != cairn_node::build::ARTIFACT_TYPE {
            return Err(Error::msg(format!(
                "{name} is not a node in the store (it is tagged {}): only nodes are flashed",
                tag.digest
            )));
        }
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        let layer = |media: &str| {
            layers
                .iter()
                .find(|l| l["mediaType"] == media)
                .and_then(|l| {
                    Some((
                        l["digest"].as_str()?.parse::<Digest>().ok()?,
                        l["size"].as_u64()?,
                    ))
                })
        };
        let (disk, size) = layer(MEDIA_DISK).ok_or_else(|| {
            Error::msg(format!(
                "node {name} has no disk image: it boots by PXE; serve it with `cargo xtask serve-pxe {name}`"
            ))
        })?;
        let bmap = match layer(MEDIA_BMAP) {
            Some((digest, _)) => {
                let text = String::from_utf8(store.read_blob(&digest)?)
                    .map_err(|_| Error::msg(format!("node {name}: the bmap is not text")))?;
                let map = cairn_disk::bmap::parse(&text)
                    .map_err(|e| Error::at(format!("node {name}: bmap {digest}"), e))?;
                if map.image_size != size {
                    return Err(Error::msg(format!(
                        "node {name}: the bmap is for {} bytes, the image has {size}",
                        map.image_size
                    )));
                }
                Some(map)
            }
            None => None,
        };
        let annotation = |key: &str| {
            manifest["annotations"][key]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
        };
        let secrets_area = match (
            annotation(ANNOTATION_SECRETS_OFFSET),
            annotation(ANNOTATION_SECRETS_SIZE),
        ) {
            (Some(offset), Some(len)) if offset.checked_add(len).is_some_and(|end| end <= size) => {
                Some((offset, len))
            }
            (None, None) => None,
            _ => {
                return Err(Error::msg(format!(
                    "node {name}: the manifest's secrets area is outside the image"
                )));
            }
        };
        Ok(NodeImage {
            node: name.to_string(),
            disk,
            size,
            bmap,
            secrets_area,
        })
    }

    /// The byte ranges to write: the bmap's (plus the secrets area), or the whole image.
    fn ranges(&self) -> Vec<(u64, u64)> {
        let mut ranges = match &self.bmap {
            Some(map) => map.byte_ranges(),
            None => vec![(0, self.size)],
        };
        if let Some((offset, len)) = self.secrets_area {
            ranges.push((offset, offset + len));
        }
        cairn_disk::bmap::blocks_of(&ranges)
            .into_iter()
            .map(|(first, last)| {
                let bs = cairn_disk::bmap::BLOCK_SIZE;
                (first * bs, ((last + 1) * bs).min(self.size))
            })
            .collect()
    }
}

const O_EXCL: i32 = libc::O_EXCL;

/// The sysfs directory of a block device node.
fn sysfs_of(path: &Path) -> Result<PathBuf, Error> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::at(path.display(), e))?;
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let link = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    link.canonicalize()
        .map_err(|e| Error::msg(format!("{}: {} ({e})", path.display(), link.display())))
}

/// `major:minor` of a device and of each of its partitions.
fn device_numbers(sys: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let read = |d: &Path| {
        std::fs::read_to_string(d.join("dev"))
            .ok()
            .map(|s| s.trim().to_string())
    };
    out.extend(read(sys));
    if let Ok(entries) = std::fs::read_dir(sys) {
        for e in entries.flatten() {
            if e.path().join("partition").exists() {
                out.extend(read(&e.path()));
            }
        }
    }
    out
}

/// Refuses a device that must not be written; returns its size.
fn check_device(path: &Path, image_size: u64, force: bool) -> Result<u64, Error> {
    let meta = std::fs::metadata(path).map_err(|e| Error::at(path.display(), e))?;
    if !meta.file_type().is_block_device() {
        return Err(Error::msg(format!(
            "{} is not a block device: use --file to write an image file",
            path.display()
        )));
    }
    let sys = sysfs_of(path)?;
    if sys.join("partition").exists() {
        let disk = sys
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(Error::msg(format!(
            "{} is a partition: flash the whole card (/dev/{disk})",
            path.display()
        )));
    }
    let numbers = device_numbers(&sys);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let (Some(dev), Some(point)) = (fields.get(2), fields.get(4)) {
            if numbers.iter().any(|n| n == dev) {
                return Err(Error::msg(format!(
                    "{} is mounted (device {dev} on {point}): unmount it first",
                    path.display()
                )));
            }
        }
    }
    let removable = std::fs::read_to_string(sys.join("removable"))
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    if !removable && !force {
        return Err(Error::msg(format!(
            "{} does not say it is removable: it may be a system disk. Check it is the card, then pass --force",
            path.display()
        )));
    }
    let sectors: u64 = std::fs::read_to_string(sys.join("size"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::msg(format!("{}: cannot read its size", path.display())))?;
    let size = sectors * 512;
    if size < image_size {
        return Err(Error::msg(format!(
            "{} holds {size} bytes, the image needs {image_size}: use a larger card",
            path.display()
        )));
    }
    Ok(size)
}

/// Drops the target's pages from the page cache, so the read-back reads the medium.
fn drop_cache(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is open for the call; fadvise only hints the kernel.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// Reads `len` bytes of the image at `offset`, with the secrets laid over their area.
fn expected(
    image: &mut (impl Read + Seek),
    offset: u64,
    buf: &mut [u8],
    secrets: Option<(u64, &[u8])>,
) -> std::io::Result<()> {
    image.seek(SeekFrom::Start(offset))?;
    image.read_exact(buf)?;
    if let Some((at, bytes)) = secrets {
        let end = offset + buf.len() as u64;
        let s_end = at + bytes.len() as u64;
        if at < end && s_end > offset {
            let from = at.max(offset);
            let to = s_end.min(end);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
        }
    }
    Ok(())
}

/// Compares `target` with the image (secrets laid over their area) over `ranges`; a
/// difference names its first byte.
pub fn verify(
    image: &mut (impl Read + Seek),
    target: &mut (impl Read + Seek),
    ranges: &[(u64, u64)],
    secrets: Option<(u64, &[u8])>,
    progress: &dyn Fn(u64),
) -> Result<(), Error> {
    let mut want = vec![0u8; 4 << 20];
    let mut got = vec![0u8; 4 << 20];
    for &(from, to) in ranges {
        let mut at = from;
        while at < to {
            let n = (to - at).min(want.len() as u64) as usize;
            expected(image, at, &mut want[..n], secrets)
                .map_err(|e| Error::at("reading the image", e))?;
            target
                .seek(SeekFrom::Start(at))
                .and_then(|_| target.read_exact(&mut got[..n]))
                .map_err(|e| Error::at(format!("reading back at byte {at}"), e))?;
            if want[..n] != got[..n] {
                let i = want[..n]
                    .iter()
                    .zip(&got[..n])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0) as u64;
                return Err(Error::msg(format!(
                    "it differs from the image at byte {} (0x{:x}): the card may be faulty or fake",
                    at + i,
                    at + i
                )));
            }
            at += n as u64;
            progress(n as u64);
        }
    }
    Ok(())
}

/// Writes `image` (from `store`) to the target and verifies it.
pub fn flash(store: &Store, image: &NodeImage, config: &FlashConfig) -> Result<FlashReport, Error> {
    let start = Instant::now();
    let secrets = match &config.secrets {
        Some(bytes) => {
            let (offset, len) = image.secrets_area.ok_or_else(|| {
                Error::msg(format!(
                    "node {}'s image reserves no place for secrets (it was built by an older Cairn): rebuild it with `cargo xtask build-node {}`",
                    image.node, image.node
                ))
            })?;
            if bytes.len() as u64 > len {
                return Err(Error::msg(format!(
                    "the secrets are {} bytes; node {}'s card reserves {len}",
                    bytes.len(),
                    image.node
                )));
            }
            let mut padded = bytes.clone();
            padded.resize(len as usize, b'\n');
            Some((offset, padded))
        }
        None => None,
    };
    let mut out = match &config.target {
        Target::Device(path) => {
            check_device(path, image.size, config.force)?;
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(O_EXCL)
                .open(path)
                .map_err(|e| {
                    if e.raw_os_error() == Some(libc::EBUSY) {
                        Error::msg(format!(
                            "{} is in use (mounted, or held by another program or the kernel): refusing to write it",
                            path.display()
                        ))
                    } else {
                        Error::at(path.display(), e)
                    }
                })?
        }
        Target::File(path) => {
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.file_type().is_block_device() {
                    return Err(Error::msg(format!(
                        "{} is a block device: use --device to flash a card",
                        path.display()
                    )));
                }
                if !meta.is_file() {
                    return Err(Error::msg(format!(
                        "{} is not a regular file",
                        path.display()
                    )));
                }
                if meta.len() > 0 && !config.force {
                    return Err(Error::msg(format!(
                        "{} exists: pass --force to replace it with the image",
                        path.display()
                    )));
                }
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return Err(Error::msg(format!(
                        "{}: the directory {} does not exist: create it, or write the image elsewhere",
                        path.display(),
                        dir.display()
                    )));
                }
            }
            // The file becomes exactly the image: unwritten blocks are holes (zeros). With
            // secrets in it, only its owner may read it (whatever the umask, and also when
            // --force replaces a file that was readable).
            let mode = if secrets.is_some() { 0o600 } else { 0o666 };
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(path)
                .map_err(|e| Error::at(path.display(), e))?;
            let sized = (|| {
                if secrets.is_some() {
                    use std::os::unix::fs::PermissionsExt;
                    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                }
                file.set_len(image.size)
            })();
            if let Err(e) = sized {
                // Created or emptied above: not left behind as a file that is not the image.
                let _ = std::fs::remove_file(path);
                return Err(Error::at(path.display(), e));
            }
            file
        }
    };
    let written = write_and_verify(store, image, config, &mut out, secrets.as_ref(), start);
    if written.is_err() {
        if let Target::File(path) = &config.target {
            // Never an image file that is not the image: what was begun goes.
            let _ = std::fs::remove_file(path);
        }
    }
    written
}

/// The write, the store's copy checked, block 0 last, and the read-back.
fn write_and_verify(
    store: &Store,
    image: &NodeImage,
    config: &FlashConfig,
    out: &mut File,
    secrets: Option<&(u64, Vec<u8>)>,
    start: Instant,
) -> Result<FlashReport, Error> {
    let target = config.target.path();
    let io = |what: &str, e: std::io::Error| Error::at(format!("{what} {}", target.display()), e);
    // A damaged copy in the store must not reach a card (the read-back would compare the
    // card with the same damaged bytes). It is hashed on the other core while the card is
    // written, and checked before block 0 makes the card bootable.
    let blob = store.open_blob(&image.disk)?;
    let hashing = std::thread::spawn(move || {
        cairn_store::hash_reader(std::io::BufReader::with_capacity(1 << 20, blob))
    });
    let mut source = store.open_blob(&image.disk)?;
    let ranges = image.ranges();
    let total: u64 = ranges.iter().map(|(a, b)| b - a).sum();
    let secrets_ref = secrets.map(|(at, b)| (*at, b.as_slice()));
    const FIRST: u64 = cairn_disk::bmap::BLOCK_SIZE;
    let mut buf = vec![0u8; 4 << 20];

    // Block 0 (the partition table) is cleared first and written last: a flash cut off
    // anywhere leaves a card with no partition table, never an old one over new data.
    out.seek(SeekFrom::Start(0))
        .and_then(|_| out.write_all(&[0u8; FIRST as usize]))
        .and_then(|_| out.sync_all())
        .map_err(|e| io("clearing the partition table of", e))?;
    let bar = cairn_steps::progress::bytes(config.progress, total, "writing");
    let mut write_range = |out: &mut File, from: u64, to: u64| -> Result<(), Error> {
        let mut at = from;
        while at < to {
            let n = (to - at).min(buf.len() as u64) as usize;
            expected(&mut source, at, &mut buf[..n], secrets_ref)
                .map_err(|e| Error::at(format!("reading the image {}", image.disk), e))?;
            out.seek(SeekFrom::Start(at))
                .map_err(|e| io("seeking", e))?;
            out.write_all(&buf[..n]).map_err(|e| io("writing", e))?;
            at += n as u64;
            bar.inc(n as u64);
        }
        Ok(())
    };
    for &(from, to) in &ranges {
        let from = from.max(FIRST);
        if from < to {
            write_range(out, from, to)?;
        }
    }
    out.sync_all().map_err(|e| io("syncing", e))?;
    let (found, _) = hashing
        .join()
        .map_err(|_| Error::msg("hashing the image failed"))?
        .map_err(|e| Error::at(format!("reading the image {}", image.disk), e))?;
    if found != image.disk {
        return Err(Error::msg(format!(
            "the store's copy of {} is damaged (it hashes to {found}); the card was left without a partition table. Run `cargo xtask store verify --repair`, then build or pull the node again",
            image.disk
        )));
    }
    if let Some(&(from, to)) = ranges.first().filter(|(from, _)| *from < FIRST) {
        write_range(out, from, to.min(FIRST))?;
    }
    out.sync_all().map_err(|e| io("syncing", e))?;
    bar.finish_and_clear();

    // Read back what was written, from the device, not the page cache.
    drop_cache(&out).map_err(|e| io("dropping the page cache of", e))?;
    let bar = cairn_steps::progress::bytes(config.progress, total, "verifying");
    verify(&mut source, out, &ranges, secrets_ref, &|n| bar.inc(n))
        .map_err(|e| e.context(format!("verifying {}", target.display())))?;
    bar.finish_and_clear();
    Ok(FlashReport {
        node: image.node.clone(),
        target: target.to_path_buf(),
        image: image.disk,
        image_size: image.size,
        bytes_written: total,
        bytes_skipped: image.size - total,
        secrets: secrets.is_some(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn verification_names_the_first_differing_byte_and_covers_the_secrets() {
        let image: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let secrets = b"join_token=x\n\n\n".to_vec();
        let mut card = image.clone();
        card[9000..9000 + secrets.len()].copy_from_slice(&secrets);
        let ranges = [(0, 8192), (8192, 20_000)];
        let with = Some((9000u64, secrets.as_slice()));
        verify(
            &mut Cursor::new(&image),
            &mut Cursor::new(&card),
            &ranges,
            with,
            &|_| {},
        )
        .unwrap();
        // Without the secrets laid over the image, the card differs where they are.
        let err = verify(
            &mut Cursor::new(&image),
            &mut Cursor::new(&card),
            &ranges,
            None,
            &|_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("at byte 9000 (0x2328)"), "{err}");
        // A byte the card did not keep, in an unmapped range, is not looked at; in a
        // mapped one it is named.
        card[15_000] ^= 0xff;
        verify(
            &mut Cursor::new(&image),
            &mut Cursor::new(&card),
            &[(0, 8192)],
            with,
            &|_| {},
        )
        .unwrap();
        let err = verify(
            &mut Cursor::new(&image),
            &mut Cursor::new(&card),
            &ranges,
            with,
            &|_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("at byte 15000"), "{err}");
    }
}
