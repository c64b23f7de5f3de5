//! Reading one file from the root directory of a FAT32 filesystem: what a board's
//! firmware does with the boot partition (the kernel, initramfs and device tree). Long
//! names are matched without case, as the firmware and Linux's vfat do; short names too.

use std::io::{self, Read, Seek, SeekFrom};

const ATTR_LONG_NAME: u8 = 0x0F;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_VOLUME_ID: u8 = 0x08;
/// Cluster numbers at or above this end a chain (or mark a bad cluster).
const END_OF_CHAIN_MIN: u32 = 0x0FFF_FFF7;

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The content of the regular file `name` in the root directory of the FAT32 filesystem
/// starting at byte `offset` of `disk`; `None` when there is no such file.
pub fn read_root_file<R: Read + Seek>(
    disk: &mut R,
    offset: u64,
    name: &str,
) -> io::Result<Option<Vec<u8>>> {
    let mut boot = [0u8; 512];
    disk.seek(SeekFrom::Start(offset))?;
    disk.read_exact(&mut boot)?;
    let u16_at = |o: usize| u16::from_le_bytes([boot[o], boot[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([boot[o], boot[o + 1], boot[o + 2], boot[o + 3]]);
    if boot[510..512] != [0x55, 0xAA] || u16_at(17) != 0 || u32_at(36) == 0 {
        return Err(bad(format!(
            "no FAT32 filesystem at byte {offset} (no boot signature, or a FAT12/16 layout)"
        )));
    }
    let sector = u64::from(u16_at(11));
    let per_cluster = u64::from(boot[13]);
    if !matches!(sector, 512 | 1024 | 2048 | 4096) || !per_cluster.is_power_of_two() {
        return Err(bad(format!(
            "FAT32 at byte {offset}: {sector}-byte sectors, {per_cluster} per cluster"
        )));
    }
    let fat_start = offset + u64::from(u16_at(14)) * sector;
    let fat_sectors = u64::from(u32_at(36));
    let data_start = fat_start + u64::from(boot[16]) * fat_sectors * sector;
    let cluster_bytes = per_cluster * sector;
    let clusters = (fat_sectors * sector / 4) as u32;
    let fat = |disk: &mut R, cluster: u32| -> io::Result<u32> {
        if cluster < 2 || cluster >= clusters {
            return Err(bad(format!(
                "FAT32 at byte {offset}: cluster {cluster} out of range"
            )));
        }
        let mut b = [0u8; 4];
        disk.seek(SeekFrom::Start(fat_start + u64::from(cluster) * 4))?;
        disk.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b) & 0x0FFF_FFFF)
    };
    // Reads a cluster chain, at most `limit` bytes; a chain that comes back to a cluster
    // is a loop in the FAT, an error.
    let chain = |disk: &mut R, first: u32, limit: u64| -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut cluster = first;
        let mut seen = std::collections::BTreeSet::new();
        while (2..END_OF_CHAIN_MIN).contains(&cluster) && (out.len() as u64) < limit {
            if !seen.insert(cluster) {
                return Err(bad(format!(
                    "FAT32 at byte {offset}: a cluster chain loops"
                )));
            }
            let at = out.len();
            out.resize(at + cluster_bytes as usize, 0);
            disk.seek(SeekFrom::Start(
                data_start + u64::from(cluster - 2) * cluster_bytes,
            ))?;
            disk.read_exact(&mut out[at..])?;
            cluster = fat(disk, cluster)?;
        }
        if (out.len() as u64) < limit && cluster != 0 && cluster < END_OF_CHAIN_MIN {
            return Err(bad(format!(
                "FAT32 at byte {offset}: a cluster chain is cut short"
            )));
        }
        Ok(out)
    };
    let root = chain(disk, u32_at(44), 64 << 20)?;
    let mut long: Vec<u16> = Vec::new();
    for e in root.chunks_exact(32) {
        match e[0] {
            0 => break,
            0xE5 => {
                long.clear();
                continue;
            }
            _ => {}
        }
        let attr = e[11];
        if attr == ATTR_LONG_NAME {
            // Entries come last piece first; each holds 13 UTF-16 units.
            let piece: Vec<u16> = [1..11, 14..26, 28..32]
                .into_iter()
                .flat_map(|r| {
                    e[r].chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                })
                .take_while(|&u| u != 0 && u != 0xFFFF)
                .collect();
            if e[0] & 0x40 != 0 {
                long.clear();
            }
            long.splice(0..0, piece);
            continue;
        }
        let long_name = String::from_utf16_lossy(&long);
        long.clear();
        if attr & (ATTR_DIRECTORY | ATTR_VOLUME_ID) != 0 {
            continue;
        }
        let base = String::from_utf8_lossy(&e[0..8]).trim_end().to_string();
        let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_string();
        let short = if ext.is_empty() {
            base
        } else {
            format!("{base}.{ext}")
        };
        if !(long_name.eq_ignore_ascii_case(name) || short.eq_ignore_ascii_case(name)) {
            continue;
        }
        let first = u32::from(u16::from_le_bytes([e[20], e[21]])) << 16
            | u32::from(u16::from_le_bytes([e[26], e[27]]));
        let size = u64::from(u32::from_le_bytes([e[28], e[29], e[30], e[31]]));
        if size == 0 {
            return Ok(Some(Vec::new()));
        }
        if size > u64::from(clusters.saturating_sub(2)) * cluster_bytes {
            return Err(bad(format!(
                "FAT32 at byte {offset}: {name} claims {size} bytes, more than the filesystem holds"
            )));
        }
        let mut bytes = chain(disk, first, size)?;
        if (bytes.len() as u64) < size {
            return Err(bad(format!(
                "FAT32 at byte {offset}: {name} is {size} bytes but its clusters hold {}",
                bytes.len()
            )));
        }
        bytes.truncate(size as usize);
        return Ok(Some(bytes));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fat::{FatConfig, FatEntry, write_fat32};
    use std::collections::BTreeMap;

    #[test]
    fn reads_back_what_the_writer_wrote_at_an_offset() {
        let mut entries = BTreeMap::new();
        let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
        entries.insert(
            "bcm2711-rpi-4-b.dtb".to_string(),
            FatEntry::File(big.clone()),
        );
        entries.insert(
            "config.txt".to_string(),
            FatEntry::File(b"arm_64bit=1\n".to_vec()),
        );
        entries.insert("empty".to_string(), FatEntry::File(Vec::new()));
        entries.insert("overlays".to_string(), FatEntry::Dir);
        let config = FatConfig {
            size_bytes: 40 << 20,
            volume_id: 1,
            label: "BOOT".into(),
            hidden_sectors: 8,
            mtime: 0,
        };
        let mut disk = vec![0u8; 4096];
        write_fat32(&config, &entries, &mut disk).unwrap();
        let mut r = std::io::Cursor::new(disk);
        assert_eq!(
            read_root_file(&mut r, 4096, "BCM2711-RPI-4-B.DTB")
                .unwrap()
                .unwrap(),
            big
        );
        assert_eq!(
            read_root_file(&mut r, 4096, "config.txt").unwrap().unwrap(),
            b"arm_64bit=1\n"
        );
        assert_eq!(read_root_file(&mut r, 4096, "empty").unwrap().unwrap(), b"");
        assert_eq!(read_root_file(&mut r, 4096, "overlays").unwrap(), None);
        assert_eq!(read_root_file(&mut r, 4096, "vmlinuz").unwrap(), None);
        assert!(read_root_file(&mut r, 0, "config.txt").is_err());

        // A file whose cluster points at itself, claiming 4 GiB: an error, not a loop.
        let mut disk = r.into_inner();
        let root = find(&disk, b"CONFIG  TXT");
        disk[root + 28..root + 32].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut r = std::io::Cursor::new(disk.clone());
        assert!(read_root_file(&mut r, 4096, "config.txt").is_err());
        disk[root + 28..root + 32].copy_from_slice(&100_000u32.to_le_bytes());
        let first = u32::from(u16::from_le_bytes([disk[root + 26], disk[root + 27]]));
        let fat = 4096 + 32 * 512 + first as usize * 4;
        disk[fat..fat + 4].copy_from_slice(&first.to_le_bytes());
        let mut r = std::io::Cursor::new(disk);
        match read_root_file(&mut r, 4096, "config.txt") {
            Err(e) => assert!(e.to_string().contains("loops"), "{e}"),
            Ok(bytes) => panic!("read {} bytes through a loop", bytes.map_or(0, |b| b.len())),
        }
    }

    fn find(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).position(|w| w == needle).unwrap()
    }
}
