//! MBR (DOS) partition table writer and reader: the first 512-byte sector of a disk image.
//!
//! No boot code; the disk signature is the caller's. CHS fields use the conventional
//! 255 heads and 63 sectors per track, and `FE FF FF` (cylinder 1023, head 254,
//! sector 63) for addresses beyond cylinder 1023, as sfdisk writes them.

use std::io::{self, Write};

/// Partition type of a FAT32 filesystem addressed by LBA.
pub const MBR_KIND_FAT32_LBA: u8 = 0x0C;
/// Partition type of a Linux filesystem.
pub const MBR_KIND_LINUX: u8 = 0x83;

const CHS_HEADS: u32 = 255;
const CHS_SECTORS_PER_TRACK: u32 = 63;
const CHS_BEYOND_CYLINDER_1023: [u8; 3] = [0xFE, 0xFF, 0xFF];
const DISK_SIGNATURE_OFFSET: usize = 440;
const PARTITION_TABLE_OFFSET: usize = 446;
const PARTITION_ENTRY_BYTES: usize = 16;

/// One primary partition, in 512-byte sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrPartition {
    pub start_lba: u32,
    pub sectors: u32,
    /// Partition type, such as [`MBR_KIND_FAT32_LBA`] or [`MBR_KIND_LINUX`].
    pub kind: u8,
    pub bootable: bool,
}

impl MbrPartition {
    /// One past the last sector.
    fn end_lba(&self) -> u64 {
        self.start_lba as u64 + self.sectors as u64
    }
}

/// Writes the 512-byte MBR sector with `partitions` in the given order (at most 4; they
/// must start at sector 1 or later, be non-empty, fit in 32-bit LBAs and not overlap).
pub fn write_mbr(disk_id: u32, partitions: &[MbrPartition], mut out: impl Write) -> io::Result<()> {
    validate_partitions(partitions)?;
    let mut sector = [0u8; 512];
    sector[DISK_SIGNATURE_OFFSET..DISK_SIGNATURE_OFFSET + 4]
        .copy_from_slice(&disk_id.to_le_bytes());
    // 444..446 stay zero ("not copy-protected").
    for (index, partition) in partitions.iter().enumerate() {
        let offset = PARTITION_TABLE_OFFSET + index * PARTITION_ENTRY_BYTES;
        sector[offset..offset + PARTITION_ENTRY_BYTES].copy_from_slice(&partition_entry(partition));
    }
    sector[510..512].copy_from_slice(&[0x55, 0xAA]);
    out.write_all(&sector)
}

fn validate_partitions(partitions: &[MbrPartition]) -> io::Result<()> {
    if partitions.len() > 4 {
        return Err(invalid(format!(
            "an MBR holds at most 4 primary partitions, got {}",
            partitions.len()
        )));
    }
    for (index, partition) in partitions.iter().enumerate() {
        let number = index + 1;
        if partition.start_lba == 0 || partition.sectors == 0 || partition.kind == 0 {
            return Err(invalid(format!(
                "MBR partition {number} must start at sector 1 or later, have sectors and a \
                 non-zero type: {partition:?}"
            )));
        }
        if partition.end_lba() > 1 << 32 {
            return Err(invalid(format!(
                "MBR partition {number} ends beyond the 32-bit sector limit (2 TiB): {partition:?}"
            )));
        }
        for (other_index, other) in partitions.iter().enumerate().skip(index + 1) {
            if (partition.start_lba as u64) < other.end_lba()
                && (other.start_lba as u64) < partition.end_lba()
            {
                return Err(invalid(format!(
                    "MBR partitions {number} and {} overlap: {partition:?} and {other:?}",
                    other_index + 1
                )));
            }
        }
    }
    Ok(())
}

fn partition_entry(partition: &MbrPartition) -> [u8; 16] {
    let mut entry = [0u8; 16];
    entry[0] = if partition.bootable { 0x80 } else { 0x00 };
    entry[1..4].copy_from_slice(&chs(partition.start_lba));
    entry[4] = partition.kind;
    entry[5..8].copy_from_slice(&chs((partition.end_lba() - 1) as u32));
    entry[8..12].copy_from_slice(&partition.start_lba.to_le_bytes());
    entry[12..16].copy_from_slice(&partition.sectors.to_le_bytes());
    entry
}

/// The packed (head, sector | cylinder high bits, cylinder low byte) of an LBA.
fn chs(lba: u32) -> [u8; 3] {
    let cylinder = lba / (CHS_HEADS * CHS_SECTORS_PER_TRACK);
    if cylinder > 1023 {
        return CHS_BEYOND_CYLINDER_1023;
    }
    let head = (lba / CHS_SECTORS_PER_TRACK) % CHS_HEADS;
    let sector = lba % CHS_SECTORS_PER_TRACK + 1;
    [
        head as u8,
        sector as u8 | ((cylinder >> 8) as u8) << 6,
        cylinder as u8,
    ]
}

/// The disk signature and the non-empty primary partitions (by number, 1-4) of an MBR
/// sector; `None` without the 55 AA signature.
pub fn read_mbr(sector: &[u8; 512]) -> Option<(u32, Vec<(u8, MbrPartition)>)> {
    if sector[510..512] != [0x55, 0xAA] {
        return None;
    }
    let u32_at =
        |o: usize| u32::from_le_bytes([sector[o], sector[o + 1], sector[o + 2], sector[o + 3]]);
    let partitions = (0..4)
        .filter_map(|i| {
            let at = PARTITION_TABLE_OFFSET + i * PARTITION_ENTRY_BYTES;
            let p = MbrPartition {
                bootable: sector[at] == 0x80,
                kind: sector[at + 4],
                start_lba: u32_at(at + 8),
                sectors: u32_at(at + 12),
            };
            (p.kind != 0 && p.sectors != 0).then_some((i as u8 + 1, p))
        })
        .collect();
    Some((u32_at(DISK_SIGNATURE_OFFSET), partitions))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chs_conversion() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(255 * 63 * 1023 + 62), [0, 63 | 0xC0, 0xFF]);
        assert_eq!(chs(255 * 63 * 1024), CHS_BEYOND_CYLINDER_1023);
    }

    #[test]
    fn reads_what_it_writes() {
        let parts = [
            MbrPartition {
                start_lba: 8192,
                sectors: 262144,
                kind: MBR_KIND_FAT32_LBA,
                bootable: true,
            },
            MbrPartition {
                start_lba: 270336,
                sectors: 4096,
                kind: MBR_KIND_LINUX,
                bootable: false,
            },
        ];
        let mut out = Vec::new();
        write_mbr(0xdeadbeef, &parts, &mut out).unwrap();
        let (id, read) = read_mbr(out[..512].try_into().unwrap()).unwrap();
        assert_eq!(id, 0xdeadbeef);
        assert_eq!(read, [(1, parts[0]), (2, parts[1])]);
        assert!(read_mbr(&[0u8; 512]).is_none());
    }
}
