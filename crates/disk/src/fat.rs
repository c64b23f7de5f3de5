//! Deterministic FAT32 writer with a static layout (for boot partitions).
//!
//! The same input always gives the same bytes:
//! - 512-byte sectors; 32 reserved sectors with the boot sector at 0, FSInfo at 1, their
//!   backups at 6 and 7; two identical FATs; the root directory starts at cluster 2.
//! - Sectors per cluster follow Microsoft's FAT32 table, by filesystem size: up to 260 MiB
//!   1 sector, up to 8 GiB 8, up to 16 GiB 16, up to 32 GiB 32, above that 64. Every size
//!   from about 32.5 MiB up then has at least the 65525 clusters FAT32 requires.
//! - Every directory and file gets one contiguous run of clusters, depth-first: a
//!   directory's own clusters, then its entries sorted by name (byte order), recursively.
//! - A name that is a valid 8.3 name gets a short entry only, lowercase base or extension
//!   marked with the NT case flags (as Linux does); any other name gets VFAT long-name
//!   entries and a short name `BASIS~N.EXT`, numbered in sorted order within its directory.
//! - Every timestamp is the caller's `mtime` as a UTC date, clamped to 1980..2107.
//! - The BPB geometry is fixed at 32 sectors per track and 64 heads, which divides every
//!   whole-MiB size: older mtools refuse a filesystem whose sector count is not a multiple
//!   of the sectors per track (63 would almost never be).

mod names;
mod read;
mod time;

pub use read::read_root_file;

use names::{
    DiskName, disk_names, long_name_records, short_name_checksum, short_record, validate_name,
    volume_label,
};
use std::collections::BTreeMap;
use std::io::{self, Write};
use time::FatTimestamp;

const SECTOR_BYTES: u64 = 512;
const RESERVED_SECTORS: u64 = 32;
const FAT_COUNT: u64 = 2;
const FSINFO_SECTOR: u16 = 1;
const BACKUP_BOOT_SECTOR: u16 = 6;
const ROOT_CLUSTER: u32 = 2;
const MIN_FAT32_CLUSTERS: u64 = 65525;
const MEDIA_FIXED_DISK: u8 = 0xF8;
const END_OF_CHAIN: u32 = 0x0FFF_FFFF;
const SECTORS_PER_TRACK: u16 = 32;
const HEADS: u16 = 64;
const RECORD_BYTES: u64 = 32;
const MAX_RECORDS_PER_DIRECTORY: u64 = 65536;
const MAX_FILE_BYTES: u64 = u32::MAX as u64;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
/// (largest filesystem in sectors, sectors per cluster), Microsoft's FAT32 table.
const CLUSTER_SIZE_STEPS: [(u64, u64); 5] = [
    (532_480, 1),
    (16_777_216, 8),
    (33_554_432, 16),
    (67_108_864, 32),
    (u32::MAX as u64, 64),
];
/// `int 0x18` (no bootable disk: try the next device), then halt forever.
const BOOT_CODE: [u8; 5] = [0xCD, 0x18, 0xF4, 0xEB, 0xFD];

/// The filesystem-wide settings. Nothing is taken from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatConfig {
    /// Size of the whole filesystem, a multiple of 512; the output is exactly this long.
    pub size_bytes: u64,
    /// Volume serial number, shown as `XXXX-XXXX` (the filesystem UUID on Linux).
    pub volume_id: u32,
    /// Up to 11 characters: uppercase ASCII letters, digits, spaces and
    /// ``!#$%&'()-@^_`{}~``. Empty for no label.
    pub label: String,
    /// Sectors before the filesystem on its disk: the partition's start LBA, or 0.
    pub hidden_sectors: u32,
    /// Seconds since the epoch, used for every timestamp; normally `SOURCE_DATE_EPOCH`.
    pub mtime: u64,
}

/// One entry of the tree, keyed by a relative path such as `overlays/foo.dtbo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FatEntry {
    Dir,
    File(Vec<u8>),
}

/// Writes a FAT32 filesystem of exactly `config.size_bytes` bytes holding `entries`.
/// Parent directories are created as needed.
pub fn write_fat32(
    config: &FatConfig,
    entries: &BTreeMap<String, FatEntry>,
    out: impl Write,
) -> io::Result<()> {
    let label = volume_label(&config.label)?;
    let items = flatten_tree(entries)?;
    let geometry = Geometry::for_size(config.size_bytes)?;
    let cluster_bytes = geometry.sectors_per_cluster * SECTOR_BYTES;
    let used_clusters = used_clusters(&items, cluster_bytes);
    if geometry.cluster_count < MIN_FAT32_CLUSTERS || used_clusters > geometry.cluster_count {
        return Err(invalid(format!(
            "FAT32 of {} bytes is too small: it has {} clusters of {cluster_bytes} bytes, \
             FAT32 needs at least {MIN_FAT32_CLUSTERS} and the content {used_clusters}; \
             {} bytes are needed",
            config.size_bytes,
            geometry.cluster_count,
            size_needed(&items)
        )));
    }
    let first_clusters = first_clusters(&items, cluster_bytes);
    let stamp = FatTimestamp::from_unix(config.mtime);
    let mut out = CountingWriter::new(out);

    let free_clusters = geometry.cluster_count - used_clusters;
    let next_free = if free_clusters > 0 {
        ROOT_CLUSTER + used_clusters as u32
    } else {
        u32::MAX
    };
    let boot = boot_sector(config, &label.unwrap_or(*b"NO NAME    "), &geometry);
    let fsinfo = fsinfo_sector(free_clusters as u32, next_free);
    // Sectors 0 and 1, then their backups at 6 and 7.
    for _copy in 0..2 {
        out.bytes(&boot)?;
        out.bytes(&fsinfo)?;
        out.zeros_until(out.written + 4 * SECTOR_BYTES)?;
    }
    out.zeros_until(RESERVED_SECTORS * SECTOR_BYTES)?;

    let fat = fat_bytes(&items, cluster_bytes);
    for copy in 1..=FAT_COUNT {
        out.bytes(&fat)?;
        out.zeros_until((RESERVED_SECTORS + copy * geometry.fat_sectors) * SECTOR_BYTES)?;
    }

    for (index, item) in items.iter().enumerate() {
        let end = out.written + item_clusters(item, cluster_bytes) * cluster_bytes;
        match item {
            Item::File(data) => out.bytes(data)?,
            Item::Dir { .. } => {
                let records = directory_bytes(&items, index, &first_clusters, label, &stamp);
                out.bytes(&records)?
            }
        }
        out.zeros_until(end)?;
    }
    out.zeros_until(config.size_bytes)
}

/// Where the bytes of the file at `path` start, counted from the start of the filesystem,
/// in the layout [`write_fat32`] gives `entries`; `None` when `path` is not a non-empty file
/// of `entries`. A file's clusters are one contiguous run, so a file of fixed size can be
/// overwritten in place later (Cairn's reserved secrets file) without touching the FAT.
pub fn file_offset(
    config: &FatConfig,
    entries: &BTreeMap<String, FatEntry>,
    path: &str,
) -> io::Result<Option<u64>> {
    let Some(FatEntry::File(data)) = entries.get(path) else {
        return Ok(None);
    };
    if data.is_empty() {
        return Ok(None);
    }
    let items = flatten_tree(entries)?;
    let geometry = Geometry::for_size(config.size_bytes)?;
    let cluster_bytes = geometry.sectors_per_cluster * SECTOR_BYTES;
    let firsts = first_clusters(&items, cluster_bytes);
    // The items borrow the entries' bytes: the file is the item that holds this very slice.
    let index = items.iter().position(|item| {
        matches!(item, Item::File(d) if std::ptr::eq(d.as_ptr(), data.as_ptr()) && d.len() == data.len())
    });
    let Some(index) = index else {
        return Ok(None);
    };
    let data_start = (RESERVED_SECTORS + FAT_COUNT * geometry.fat_sectors) * SECTOR_BYTES;
    Ok(Some(
        data_start + (firsts[index] - ROOT_CLUSTER) as u64 * cluster_bytes,
    ))
}

/// How many bytes from the start of the filesystem hold anything: the reserved sectors, the
/// FATs and every used cluster. The rest is free clusters, whose content does not matter
/// (a flasher may skip it).
pub fn used_bytes(config: &FatConfig, entries: &BTreeMap<String, FatEntry>) -> io::Result<u64> {
    let items = flatten_tree(entries)?;
    let geometry = Geometry::for_size(config.size_bytes)?;
    let cluster_bytes = geometry.sectors_per_cluster * SECTOR_BYTES;
    let data_start = (RESERVED_SECTORS + FAT_COUNT * geometry.fat_sectors) * SECTOR_BYTES;
    Ok(data_start + used_clusters(&items, cluster_bytes) * cluster_bytes)
}

/// The smallest `size_bytes` that holds `entries` such that every larger size up to the
/// next cluster-size step (260 MiB, 8 GiB, ...) holds them too. Assumes a volume label.
pub fn fat32_size_needed(entries: &BTreeMap<String, FatEntry>) -> io::Result<u64> {
    Ok(size_needed(&flatten_tree(entries)?))
}

fn size_needed(items: &[Item]) -> u64 {
    let mut previous_step_sectors = 0;
    for (step_sectors, sectors_per_cluster) in CLUSTER_SIZE_STEPS {
        let used = used_clusters(items, sectors_per_cluster * SECTOR_BYTES);
        // One cluster of headroom: growing the FAT by a sector can cost one cluster, so with
        // it every larger size of the same step fits too.
        let clusters = used.max(MIN_FAT32_CLUSTERS) + 1;
        let sectors = (RESERVED_SECTORS
            + FAT_COUNT * fat_sectors_for_clusters(clusters)
            + clusters * sectors_per_cluster)
            .max(previous_step_sectors + 1);
        if sectors <= step_sectors || sectors_per_cluster == 64 {
            return sectors * SECTOR_BYTES;
        }
        previous_step_sectors = step_sectors;
    }
    unreachable!("the last step takes any size")
}

/// Sizes of the regions, all derived from the filesystem size.
struct Geometry {
    total_sectors: u64,
    sectors_per_cluster: u64,
    fat_sectors: u64,
    cluster_count: u64,
}

impl Geometry {
    fn for_size(size_bytes: u64) -> io::Result<Geometry> {
        let total_sectors = size_bytes / SECTOR_BYTES;
        if !size_bytes.is_multiple_of(SECTOR_BYTES) || total_sectors > u32::MAX as u64 {
            return Err(invalid(format!(
                "FAT32 size {size_bytes} must be a multiple of 512 bytes and below 2 TiB"
            )));
        }
        let (_, sectors_per_cluster) = CLUSTER_SIZE_STEPS
            .into_iter()
            .find(|(step_sectors, _)| total_sectors <= *step_sectors)
            .expect("the last step takes any u32 size");
        let available = total_sectors.saturating_sub(RESERVED_SECTORS);
        let clusters_with = |fat_sectors: u64| {
            available.saturating_sub(FAT_COUNT * fat_sectors) / sectors_per_cluster
        };
        // The smallest FAT with an entry for every cluster of the data area it leaves.
        let mut fat_sectors = fat_sectors_for_clusters(available / sectors_per_cluster);
        while fat_sectors > 1
            && fat_sectors_for_clusters(clusters_with(fat_sectors - 1)) < fat_sectors
        {
            fat_sectors -= 1;
        }
        Ok(Geometry {
            total_sectors,
            sectors_per_cluster,
            fat_sectors,
            cluster_count: clusters_with(fat_sectors),
        })
    }
}

/// FAT sectors holding `clusters` entries plus the two reserved ones.
fn fat_sectors_for_clusters(clusters: u64) -> u64 {
    ((clusters + 2) * 4).div_ceil(SECTOR_BYTES)
}

/// A directory or file in write order, with what its directory records need.
enum Item<'a> {
    File(&'a [u8]),
    Dir {
        /// Index of the parent directory; `None` for the root.
        parent: Option<usize>,
        children: Vec<(DiskName, usize)>,
        record_count: u64,
    },
}

/// A directory as given, before layout.
#[derive(Default)]
struct DirNode<'a> {
    children: BTreeMap<&'a str, Node<'a>>,
    /// Uppercased name to name, to refuse names differing only in case.
    folded_names: BTreeMap<String, &'a str>,
}

enum Node<'a> {
    Dir(DirNode<'a>),
    File(&'a [u8]),
}

impl<'a> DirNode<'a> {
    fn child(&mut self, path: &str, name: &'a str, node: Node<'a>) -> io::Result<&mut Node<'a>> {
        let folded = name.to_uppercase();
        if let Some(existing) = self.folded_names.get(&folded).filter(|n| **n != name) {
            return Err(invalid(format!(
                "FAT path {path:?}: {name:?} and {existing:?} differ only in case, \
                 and FAT names are case-insensitive"
            )));
        }
        self.folded_names.insert(folded, name);
        Ok(self.children.entry(name).or_insert(node))
    }
}

/// Builds the tree from the paths and lists it in write order: depth-first, sorted.
fn flatten_tree(entries: &BTreeMap<String, FatEntry>) -> io::Result<Vec<Item<'_>>> {
    let mut root = DirNode::default();
    for (path, entry) in entries {
        let names: Vec<&str> = path.split('/').collect();
        for name in &names {
            validate_name(path, name)?;
        }
        let (last, parents) = names.split_last().expect("split yields at least one part");
        let mut dir = &mut root;
        for parent in parents {
            dir = match dir.child(path, parent, Node::Dir(DirNode::default()))? {
                Node::Dir(sub) => sub,
                Node::File(_) => {
                    return Err(invalid(format!("FAT path {path:?}: {parent:?} is a file")));
                }
            };
        }
        let node = match entry {
            FatEntry::Dir => Node::Dir(DirNode::default()),
            FatEntry::File(data) => Node::File(data),
        };
        dir.child(path, last, node)?;
    }
    let mut items = Vec::new();
    flatten_dir(&root, String::new(), None, &mut items)?;
    Ok(items)
}

fn flatten_dir<'a>(
    dir: &DirNode<'a>,
    path: String,
    parent: Option<usize>,
    items: &mut Vec<Item<'a>>,
) -> io::Result<usize> {
    let index = items.len();
    items.push(Item::File(&[])); // replaced once the children are listed
    let names: Vec<&str> = dir.children.keys().copied().collect();
    // The root reserves a record for the volume label; a subdirectory has "." and "..".
    let mut record_count = if parent.is_some() { 2 } else { 1 };
    let mut children = Vec::new();
    for ((name, node), disk_name) in dir.children.iter().zip(disk_names(&names)) {
        let child_path = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}/{name}")
        };
        record_count += disk_name.record_count();
        let child = match node {
            Node::Dir(sub) => flatten_dir(sub, child_path, Some(index), items)?,
            Node::File(data) if data.len() as u64 > MAX_FILE_BYTES => {
                return Err(invalid(format!(
                    "FAT path {child_path:?}: {} bytes is over the FAT32 file limit of 4 GiB - 1",
                    data.len()
                )));
            }
            Node::File(data) => {
                items.push(Item::File(data));
                items.len() - 1
            }
        };
        children.push((disk_name, child));
    }
    if record_count > MAX_RECORDS_PER_DIRECTORY {
        return Err(invalid(format!(
            "FAT directory {path:?} needs {record_count} records, over the limit of 65536"
        )));
    }
    items[index] = Item::Dir {
        parent,
        children,
        record_count,
    };
    Ok(index)
}

fn item_clusters(item: &Item, cluster_bytes: u64) -> u64 {
    match item {
        Item::File(data) => (data.len() as u64).div_ceil(cluster_bytes),
        Item::Dir { record_count, .. } => (record_count * RECORD_BYTES).div_ceil(cluster_bytes),
    }
}

fn used_clusters(items: &[Item], cluster_bytes: u64) -> u64 {
    items
        .iter()
        .map(|item| item_clusters(item, cluster_bytes))
        .sum()
}

/// First cluster of each item (0 for an empty file): runs follow each other from cluster 2.
fn first_clusters(items: &[Item], cluster_bytes: u64) -> Vec<u32> {
    let mut next = ROOT_CLUSTER;
    let mut firsts = Vec::with_capacity(items.len());
    for item in items {
        let clusters = item_clusters(item, cluster_bytes) as u32;
        firsts.push(if clusters == 0 { 0 } else { next });
        next += clusters;
    }
    firsts
}

/// The used part of the FAT; the rest is zero (free).
fn fat_bytes(items: &[Item], cluster_bytes: u64) -> Vec<u8> {
    let mut entries = vec![0x0FFF_FF00 | MEDIA_FIXED_DISK as u32, END_OF_CHAIN];
    for item in items {
        let clusters = item_clusters(item, cluster_bytes) as u32;
        let first = ROOT_CLUSTER + entries.len() as u32 - 2;
        entries.extend((1..clusters).map(|k| first + k));
        if clusters > 0 {
            entries.push(END_OF_CHAIN);
        }
    }
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

fn boot_sector(config: &FatConfig, label: &[u8; 11], geometry: &Geometry) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]); // jump to the boot code at 90
    s[3..11].copy_from_slice(b"MSWIN4.1"); // the OEM name Microsoft recommends
    put_u16(&mut s, 11, SECTOR_BYTES as u16);
    s[13] = geometry.sectors_per_cluster as u8;
    put_u16(&mut s, 14, RESERVED_SECTORS as u16);
    s[16] = FAT_COUNT as u8;
    // 17..21: root entry count and 16-bit sector count, zero on FAT32.
    s[21] = MEDIA_FIXED_DISK;
    put_u16(&mut s, 24, SECTORS_PER_TRACK);
    put_u16(&mut s, 26, HEADS);
    put_u32(&mut s, 28, config.hidden_sectors);
    put_u32(&mut s, 32, geometry.total_sectors as u32);
    put_u32(&mut s, 36, geometry.fat_sectors as u32);
    // 40: flags 0 (FATs mirrored), 42: version 0.0.
    put_u32(&mut s, 44, ROOT_CLUSTER);
    put_u16(&mut s, 48, FSINFO_SECTOR);
    put_u16(&mut s, 50, BACKUP_BOOT_SECTOR);
    s[64] = 0x80; // drive number
    s[66] = 0x29; // extended boot signature: id, label and type follow
    put_u32(&mut s, 67, config.volume_id);
    s[71..82].copy_from_slice(label);
    s[82..90].copy_from_slice(b"FAT32   ");
    s[90..90 + BOOT_CODE.len()].copy_from_slice(&BOOT_CODE);
    s[510..512].copy_from_slice(&[0x55, 0xAA]);
    s
}

fn fsinfo_sector(free_clusters: u32, next_free_cluster: u32) -> [u8; 512] {
    let mut s = [0u8; 512];
    put_u32(&mut s, 0, 0x4161_5252);
    put_u32(&mut s, 484, 0x6141_7272);
    put_u32(&mut s, 488, free_clusters);
    put_u32(&mut s, 492, next_free_cluster);
    put_u32(&mut s, 508, 0xAA55_0000);
    s
}

/// The records of directory `index`, unpadded.
fn directory_bytes(
    items: &[Item],
    index: usize,
    first_clusters: &[u32],
    label: Option<[u8; 11]>,
    stamp: &FatTimestamp,
) -> Vec<u8> {
    let Item::Dir {
        parent, children, ..
    } = &items[index]
    else {
        unreachable!("only directories have records")
    };
    let directory = |short, cluster| short_record(short, ATTR_DIRECTORY, 0, cluster, 0, stamp);
    let mut records = Vec::new();
    match (parent, label) {
        (None, Some(label)) => records.push(short_record(&label, ATTR_VOLUME_ID, 0, 0, 0, stamp)),
        (None, None) => {}
        (Some(parent), _) => {
            let own = first_clusters[index];
            // ".." of a directory in the root points at cluster 0, not the root's cluster.
            let parent_cluster = if *parent == 0 {
                0
            } else {
                first_clusters[*parent]
            };
            records.push(directory(b".          ", own));
            records.push(directory(b"..         ", parent_cluster));
        }
    }
    for (name, child) in children {
        let (attributes, size) = match &items[*child] {
            Item::File(data) => (ATTR_ARCHIVE, data.len() as u32),
            Item::Dir { .. } => (ATTR_DIRECTORY, 0),
        };
        if let Some(long) = &name.long {
            records.extend(long_name_records(long, short_name_checksum(&name.short)));
        }
        let (short, case_flags, first) = (&name.short, name.case_flags, first_clusters[*child]);
        records.push(short_record(
            short, attributes, case_flags, first, size, stamp,
        ));
    }
    records.concat()
}

fn put_u16(buf: &mut [u8], offset: usize, value: u16) {
    buf[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(buf: &mut [u8], offset: usize, value: u32) {
    buf[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Tracks the output offset and writes zero runs in 1 MiB chunks.
struct CountingWriter<W> {
    out: W,
    written: u64,
    zeros: Vec<u8>,
}

impl<W: Write> CountingWriter<W> {
    fn new(out: W) -> Self {
        CountingWriter {
            out,
            written: 0,
            zeros: vec![0; 1 << 20],
        }
    }

    fn bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn zeros_until(&mut self, offset: u64) -> io::Result<()> {
        while self.written < offset {
            let n = (offset - self.written).min(self.zeros.len() as u64) as usize;
            self.out.write_all(&self.zeros[..n])?;
            self.written += n as u64;
        }
        Ok(())
    }
}
