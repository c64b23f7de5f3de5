//! Block maps in bmaptool's format 2.0 (`NAME.img.bmap`): which 4 KiB blocks of a disk image
//! hold data, with a sha256 per range and one over the file itself. A flasher writes only
//! the mapped blocks; everything else (the gap before the first partition, free FAT
//! clusters, padding) may keep whatever the card held. bmaptool reads what [`write`] writes,
//! and [`parse`] reads what bmaptool writes.

use sha2::Digest as _;
use std::io::{self, Read, Seek, SeekFrom};

pub const BLOCK_SIZE: u64 = 4096;
const CHECKSUM_PLACEHOLDER: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// A run of mapped blocks, `first..=last`, with the sha256 of their bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub first: u64,
    pub last: u64,
    pub sha256: Option<String>,
}

/// A parsed block map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMap {
    pub image_size: u64,
    pub block_size: u64,
    pub ranges: Vec<Range>,
}

impl BlockMap {
    pub fn mapped_blocks(&self) -> u64 {
        self.ranges.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// The mapped byte ranges `[start, end)`, clipped to the image.
    pub fn byte_ranges(&self) -> Vec<(u64, u64)> {
        self.ranges
            .iter()
            .map(|r| {
                (
                    r.first * self.block_size,
                    ((r.last + 1) * self.block_size).min(self.image_size),
                )
            })
            .collect()
    }
}

/// Blocks touched by the byte ranges `[start, end)`, merged, in order.
pub fn blocks_of(byte_ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut blocks: Vec<(u64, u64)> = byte_ranges
        .iter()
        .filter(|(start, end)| end > start)
        .map(|(start, end)| (start / BLOCK_SIZE, (end - 1) / BLOCK_SIZE))
        .collect();
    blocks.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (first, last) in blocks {
        match merged.last_mut() {
            Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
}

/// The block map of `image` (`image_size` bytes) whose data lies in `byte_ranges`.
pub fn write(
    image: &mut (impl Read + Seek),
    image_size: u64,
    byte_ranges: &[(u64, u64)],
) -> io::Result<String> {
    let blocks = blocks_of(byte_ranges);
    let blocks_count = image_size.div_ceil(BLOCK_SIZE);
    if let Some((_, last)) = blocks.last().filter(|(_, last)| *last >= blocks_count) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("block {last} is past the image's {blocks_count} blocks"),
        ));
    }
    let mut ranges = String::new();
    let mut mapped = 0;
    let mut buf = vec![0u8; 1 << 20];
    for (first, last) in &blocks {
        mapped += last - first + 1;
        let start = first * BLOCK_SIZE;
        let end = ((last + 1) * BLOCK_SIZE).min(image_size);
        image.seek(SeekFrom::Start(start))?;
        let mut hash = sha2::Sha256::new();
        let mut left = end - start;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            image.read_exact(&mut buf[..n])?;
            hash.update(&buf[..n]);
            left -= n as u64;
        }
        let sum = hex::encode(hash.finalize());
        let blocks = if first == last {
            format!("{first}")
        } else {
            format!("{first}-{last}")
        };
        ranges.push_str(&format!(
            "        <Range chksum=\"{sum}\"> {blocks} </Range>\n"
        ));
    }
    let text = format!(
        "<?xml version=\"1.0\" ?>\n\
         <!-- Written by Cairn: the blocks of the disk image that hold data. Blocks not\n     \
         listed need not be written (bmaptool's format 2.0). -->\n\
         <bmap version=\"2.0\">\n    \
         <ImageSize> {image_size} </ImageSize>\n    \
         <BlockSize> {BLOCK_SIZE} </BlockSize>\n    \
         <BlocksCount> {blocks_count} </BlocksCount>\n    \
         <MappedBlocksCount> {mapped} </MappedBlocksCount>\n    \
         <ChecksumType> sha256 </ChecksumType>\n    \
         <BmapFileChecksum> {CHECKSUM_PLACEHOLDER} </BmapFileChecksum>\n    \
         <BlockMap>\n{ranges}    </BlockMap>\n\
         </bmap>\n"
    );
    let sum = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    Ok(text.replacen(CHECKSUM_PLACEHOLDER, &sum, 1))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn element<'a>(text: &'a str, name: &str) -> io::Result<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text
        .find(&open)
        .ok_or_else(|| invalid(format!("no <{name}>")))?
        + open.len();
    let end = text[start..]
        .find(&close)
        .ok_or_else(|| invalid(format!("no </{name}>")))?;
    Ok(text[start..start + end].trim())
}

fn number(text: &str, name: &str) -> io::Result<u64> {
    let value = element(text, name)?;
    value
        .parse()
        .map_err(|_| invalid(format!("<{name}> is not a number: {value:?}")))
}

/// Reads a block map of format 2.x with sha256 checksums, checking the file's own checksum.
pub fn parse(text: &str) -> io::Result<BlockMap> {
    let version = text
        .split("<bmap version=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .ok_or_else(|| invalid("not a bmap file (no <bmap version=...>)".into()))?;
    if !version.starts_with("2.") {
        return Err(invalid(format!("bmap format {version}: only 2.x is read")));
    }
    let kind = element(text, "ChecksumType")?;
    if kind != "sha256" {
        return Err(invalid(format!(
            "bmap checksum type {kind}: only sha256 is read"
        )));
    }
    let recorded = element(text, "BmapFileChecksum")?;
    let zeroed = text.replacen(recorded, CHECKSUM_PLACEHOLDER, 1);
    let actual = hex::encode(sha2::Sha256::digest(zeroed.as_bytes()));
    if actual != recorded {
        return Err(invalid(format!(
            "the bmap file's checksum is {actual}, it says {recorded}: the file is damaged"
        )));
    }
    let image_size = number(text, "ImageSize")?;
    let block_size = number(text, "BlockSize")?;
    if block_size == 0 {
        return Err(invalid("block size 0".into()));
    }
    let map = element(text, "BlockMap")?;
    let mut ranges = Vec::new();
    for part in map.split("<Range").skip(1) {
        let (attrs, rest) = part
            .split_once('>')
            .ok_or_else(|| invalid("a <Range> is not closed".into()))?;
        let body = rest.split("</Range>").next().unwrap_or_default().trim();
        let sha256 = attrs
            .split("chksum=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(str::to_string);
        let (first, last) = body.split_once('-').unwrap_or((body, body));
        let parse = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| invalid(format!("range {body:?} is not block numbers")))
        };
        let (first, last) = (parse(first)?, parse(last)?);
        let end = last.checked_add(1).and_then(|n| n.checked_mul(block_size));
        let limit = image_size.div_ceil(block_size).checked_mul(block_size);
        if last < first || end.is_none() || limit.is_none() || end > limit {
            return Err(invalid(format!(
                "range {body:?} is outside the image of {image_size} bytes"
            )));
        }
        ranges.push(Range {
            first,
            last,
            sha256,
        });
    }
    Ok(BlockMap {
        image_size,
        block_size,
        ranges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_maps_parse_back_with_their_checksums() {
        let mut image = vec![0u8; 10 * BLOCK_SIZE as usize];
        image[..512].fill(1);
        image[5 * 4096 + 7] = 9;
        image[6 * 4096..8 * 4096].fill(3);
        let ranges = [(0, 512), (5 * 4096 + 7, 5 * 4096 + 8), (6 * 4096, 8 * 4096)];
        let text = write(
            &mut std::io::Cursor::new(&image),
            image.len() as u64,
            &ranges,
        )
        .unwrap();
        let map = parse(&text).unwrap();
        assert_eq!(map.image_size, 40960);
        assert_eq!(
            map.ranges
                .iter()
                .map(|r| (r.first, r.last))
                .collect::<Vec<_>>(),
            [(0, 0), (5, 7)]
        );
        assert_eq!(map.mapped_blocks(), 4);
        assert_eq!(
            map.ranges[1].sha256.as_deref(),
            Some(hex::encode(sha2::Sha256::digest(&image[5 * 4096..8 * 4096])).as_str())
        );
        let damaged = text.replace("<ImageSize> 40960", "<ImageSize> 40961");
        assert!(parse(&damaged).unwrap_err().to_string().contains("damaged"));
    }
}
