//! A Raspberry Pi SD-card image: an MBR with a FAT32 boot partition (the Pi firmware,
//! device trees, kernel, initramfs, config.txt, cmdline.txt, and a reserved secrets file)
//! and the squashfs root. The disk identifier and the FAT volume id derive from the node
//! id.
//!
//! The card past the image: the root has a slot of `root_slot_mib` from its start, and the
//! data partition the initramfs makes on first boot starts right after that slot, at a
//! sector the kernel command line names (`cairn.data.start=`). It depends on the node's
//! definition only, so a re-flash with a root grown past a MiB boundary finds the data
//! filesystem where it left it.
//!
//! Secrets never enter the image: `cairn-secrets.env` is a file of fixed size whose bytes
//! hold only a note until `flash` overwrites them in place on the card. Its clusters are
//! one contiguous run at an offset recorded in the node's manifest, so the image's digest
//! never depends on a secret and read-back verification covers the secrets too.

use cairn_disk::fat::{FatConfig, FatEntry};
use cairn_disk::mbr::MbrPartition;
use cairn_formats::Digest;
use cairn_os::base::OsResult;
use cairn_project::{Arch, NodeSpec};
use cairn_steps::Error;
use cairn_store::Store;
use std::collections::BTreeMap;
use std::io::Write;

/// Changes whenever the disk layout below changes (part of the node step key).
pub const LAYOUT_VERSION: u32 = 3;
/// The reserved secrets file on the boot partition (`/boot/firmware/cairn-secrets.env`).
pub const SECRETS_FILE: &str = "cairn-secrets.env";
/// Its fixed size: the most a node's secrets file may hold.
pub const SECRETS_BYTES: u64 = 4096;
/// What the reserved file holds until `flash --secrets` writes over it (then padded with
/// newlines to [`SECRETS_BYTES`]). The initramfs treats a file with no `KEY=value` line as
/// no secrets.
pub const SECRETS_PLACEHOLDER: &str = "# Cairn: no secrets on this card yet. `cargo xtask flash NODE --secrets FILE` writes\n# them here (KEY=value lines, at most 4096 bytes); they never enter the image.\n";

/// The reserved file's bytes: `content` padded with newlines to [`SECRETS_BYTES`].
pub fn secrets_bytes(content: &[u8]) -> Result<Vec<u8>, Error> {
    if content.len() as u64 > SECRETS_BYTES {
        return Err(Error::msg(format!(
            "the secrets file is {} bytes; the card reserves {SECRETS_BYTES}",
            content.len()
        )));
    }
    if content.contains(&0) {
        return Err(Error::msg(
            "the secrets file holds a NUL byte: it must be text (KEY=value lines)",
        ));
    }
    let mut bytes = content.to_vec();
    bytes.resize(SECRETS_BYTES as usize, b'\n');
    Ok(bytes)
}
const SECTOR: u64 = 512;
/// The boot partition starts at 4 MiB (erase-block aligned, as Raspberry Pi OS does).
const BOOT_START: u64 = 4 << 20;
/// 128 MiB: room for the largest kernel (arm64's uncompressed Image, ~38 MB), the
/// initramfs and the firmware, and enough clusters for FAT32 with 512-byte clusters.
const BOOT_SIZE: u64 = 128 << 20;
const ALIGN: u64 = 1 << 20;
const ROOT_START: u64 = BOOT_START + BOOT_SIZE;

/// Byte offset of node's data partition on its card: the end of the root's slot.
pub fn data_start(node: &NodeSpec) -> u64 {
    ROOT_START + (node.root_slot_mib() << 20)
}

/// Identifiers that must stay stable for a node: from its node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskIds {
    /// MBR disk signature (`PARTUUID=<disk_id>-NN`).
    pub disk_id: u32,
    /// FAT volume id of the boot partition.
    pub volume_id: u32,
}

impl DiskIds {
    pub fn from_node_id(node_id: &Digest) -> DiskIds {
        let b = node_id.as_bytes();
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        // Zero means "no signature" to some tools; the digest picks another word then.
        let disk_id = [0, 8, 16, 24]
            .into_iter()
            .map(word)
            .find(|w| *w != 0)
            .unwrap_or(1);
        DiskIds {
            disk_id,
            volume_id: word(4),
        }
    }

    pub fn partuuid(&self, partition: u32) -> String {
        format!("{:08x}-{partition:02x}", self.disk_id)
    }
}

/// Kernel command line of an SD-booted node.
pub fn sd_cmdline(node: &NodeSpec, ids: &DiskIds) -> String {
    let serial = node.board.info().serial_console;
    format!(
        "console=tty1 console={serial},115200 cairn.root=PARTUUID={} cairn.data.start={} rootwait",
        ids.partuuid(2),
        data_start(node) / SECTOR
    )
}

fn config_txt(node: &NodeSpec, node_id: &Digest) -> String {
    let arm_64bit = if node.arch == Arch::Aarch64 { 1 } else { 0 };
    format!(
        "# Rendered by Cairn for node {} (node id {}).\n\
         arm_64bit={arm_64bit}\n\
         enable_uart=1\n\
         upstream_kernel=1\n\
         disable_overscan=1\n\
         kernel=vmlinuz\n\
         initramfs initrd.img followkernel\n",
        node.name,
        node_id.hex()
    )
}

/// The files of the boot partition, by name.
pub fn boot_partition_files(
    node: &NodeSpec,
    base: &OsResult,
    store: &Store,
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    cmdline: &str,
    node_id: &Digest,
) -> Result<BTreeMap<String, FatEntry>, Error> {
    let board = node.board.info();
    let (firmware, dtb, optional) = (board.firmware, board.dtb, board.variant_dtbs);
    let mut files = BTreeMap::new();
    let mut take = |name: &str, required: bool| -> Result<(), Error> {
        match base.boot_files.get(name) {
            Some(blob) => {
                files.insert(
                    name.to_string(),
                    FatEntry::File(store.read_blob(&blob.digest)?),
                );
                Ok(())
            }
            None if !required => Ok(()),
            None if name.ends_with(".dtb") => Err(Error::msg(format!(
                "board {} needs the device tree {name}, which the kernel of image {} for {} does not ship",
                node.board,
                node.image.get_ref(),
                node.arch
            ))),
            None => Err(Error::msg(format!(
                "board {} needs the firmware file {name} from /usr/lib/raspi-firmware: add raspi-firmware to `arch_packages.{}` of image {} (component non-free-firmware), then run `cargo xtask lock`",
                node.board,
                node.arch,
                node.image.get_ref()
            ))),
        }
    };
    for f in firmware {
        take(f, true)?;
    }
    take(dtb, true)?;
    for d in optional {
        take(d, false)?;
    }
    files.insert(
        "config.txt".into(),
        FatEntry::File(config_txt(node, node_id).into_bytes()),
    );
    files.insert(
        "cmdline.txt".into(),
        FatEntry::File(format!("{cmdline}\n").into_bytes()),
    );
    files.insert("vmlinuz".into(), FatEntry::File(kernel));
    files.insert("initrd.img".into(), FatEntry::File(initrd));
    files.insert(
        SECRETS_FILE.into(),
        FatEntry::File(secrets_bytes(SECRETS_PLACEHOLDER.as_bytes())?),
    );
    Ok(files)
}

/// A written SD image and where things are in it.
#[derive(Debug, Clone)]
pub struct SdImage {
    pub digest: Digest,
    pub size: u64,
    /// Byte offset of the reserved secrets file's [`SECRETS_BYTES`] in the image.
    pub secrets_offset: u64,
    /// Byte ranges `[start, end)` that hold data (the rest is free space): for the bmap.
    pub mapped: Vec<(u64, u64)>,
}

/// Writes the SD image (MBR, boot partition, squashfs root) into the store.
pub fn write_sd_image(
    store: &Store,
    node: &NodeSpec,
    node_id: &Digest,
    boot: &BTreeMap<String, FatEntry>,
    base: &OsResult,
    epoch: u64,
) -> Result<SdImage, Error> {
    let ids = DiskIds::from_node_id(node_id);
    let root_start = ROOT_START;
    let root_size = base.squashfs.size.div_ceil(ALIGN) * ALIGN;
    if root_start + root_size > data_start(node) {
        return Err(Error::msg(format!(
            "{}: the root squashfs is {} MiB, more than its slot on the card (root_slot_mib = {}): raise root_slot_mib. A running node's data partition starts after the old slot, so its card is then flashed anew and its data made again",
            node.path.display(),
            root_size >> 20,
            node.root_slot_mib()
        )));
    }
    let partitions = [
        MbrPartition {
            start_lba: (BOOT_START / SECTOR) as u32,
            sectors: (BOOT_SIZE / SECTOR) as u32,
            kind: cairn_disk::mbr::MBR_KIND_FAT32_LBA,
            bootable: true,
        },
        MbrPartition {
            start_lba: (root_start / SECTOR) as u32,
            sectors: (root_size / SECTOR) as u32,
            kind: cairn_disk::mbr::MBR_KIND_LINUX,
            bootable: false,
        },
    ];
    let io = |what: &'static str| move |e: std::io::Error| Error::at(what, e);
    let mut w = std::io::BufWriter::with_capacity(1 << 20, store.blob_writer()?);
    cairn_disk::mbr::write_mbr(ids.disk_id, &partitions, &mut w)
        .map_err(io("writing the partition table"))?;
    zeros(&mut w, BOOT_START - SECTOR).map_err(io("writing the disk image"))?;
    let config = FatConfig {
        size_bytes: BOOT_SIZE,
        volume_id: ids.volume_id,
        label: "CAIRN-BOOT".into(),
        hidden_sectors: (BOOT_START / SECTOR) as u32,
        mtime: epoch,
    };
    cairn_disk::fat::write_fat32(&config, boot, &mut w)
        .map_err(io("writing the boot partition"))?;
    let secrets_offset = cairn_disk::fat::file_offset(&config, boot, SECRETS_FILE)
        .map_err(io("placing the secrets file"))?
        .ok_or_else(|| Error::msg("the boot partition has no reserved secrets file"))?
        + BOOT_START;
    let fat_used =
        cairn_disk::fat::used_bytes(&config, boot).map_err(io("measuring the boot partition"))?;
    let mut root = store.open_blob(&base.squashfs.digest)?;
    std::io::copy(&mut root, &mut w).map_err(io("copying the root squashfs"))?;
    zeros(&mut w, root_size - base.squashfs.size).map_err(io("writing the disk image"))?;
    let w = w
        .into_inner()
        .map_err(|e| Error::at("writing the disk image", e.into_error()))?;
    let (digest, size) = w.finish(None)?;
    Ok(SdImage {
        digest,
        size,
        secrets_offset,
        mapped: vec![
            (0, SECTOR),
            (BOOT_START, BOOT_START + fat_used),
            (root_start, root_start + base.squashfs.size),
        ],
    })
}

fn zeros(w: &mut impl Write, mut n: u64) -> std::io::Result<()> {
    let block = [0u8; 64 * 1024];
    while n > 0 {
        let k = n.min(block.len() as u64) as usize;
        w.write_all(&block[..k])?;
        n -= k as u64;
    }
    Ok(())
}
