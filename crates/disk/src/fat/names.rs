//! Names and directory records: which names are 8.3, generated short names, VFAT long
//! names and the 32-byte records that hold them.

use super::{FatTimestamp, invalid, put_u16, put_u32};
use std::collections::BTreeSet;
use std::io;

const ATTR_LONG_NAME: u8 = 0x0F;
const LOWERCASE_BASE: u8 = 0x08;
const LOWERCASE_EXTENSION: u8 = 0x10;
/// Punctuation allowed in short names and labels, besides ASCII letters and digits.
const SHORT_NAME_PUNCTUATION: &[u8] = b"!#$%&'()-@^_`{}~";
/// Where the 13 UTF-16 units of a long-name record go.
const LONG_NAME_UNIT_OFFSETS: [usize; 13] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

/// Refuses names FAT cannot hold or Windows would alter.
pub(super) fn validate_name(path: &str, name: &str) -> io::Result<()> {
    let problem = if name.is_empty() {
        "has an empty component (it must be relative, without `//` or a trailing `/`)"
    } else if name == "." || name == ".." {
        "has a `.` or `..` component"
    } else if name
        .chars()
        .any(|c| c < ' ' || c == '\x7f' || "\\:*?\"<>|".contains(c))
    {
        "contains a control character or one of \\ : * ? \" < > |"
    } else if name.ends_with('.') || name.ends_with(' ') {
        "has a name ending in `.` or a space, which Windows strips"
    } else if name.encode_utf16().count() > 255 {
        "has a name longer than 255 UTF-16 units"
    } else {
        return Ok(());
    };
    Err(invalid(format!("FAT path {path:?} {problem}")))
}

/// The label padded to 11 bytes, or `None` for an empty one.
pub(super) fn volume_label(label: &str) -> io::Result<Option<[u8; 11]>> {
    if label.is_empty() {
        return Ok(None);
    }
    let allowed = |b: u8| {
        b.is_ascii_uppercase()
            || b.is_ascii_digit()
            || b == b' '
            || SHORT_NAME_PUNCTUATION.contains(&b)
    };
    if label.len() > 11 || !label.bytes().all(allowed) {
        return Err(invalid(format!(
            "FAT volume label {label:?} must be at most 11 uppercase ASCII letters, digits, \
             spaces or !#$%&'()-@^_`{{}}~"
        )));
    }
    let mut padded = [b' '; 11];
    padded[..label.len()].copy_from_slice(label.as_bytes());
    Ok(Some(padded))
}

/// How one name is stored: a short name, its case flags, and the long name if needed.
pub(super) struct DiskName {
    pub(super) short: [u8; 11],
    pub(super) case_flags: u8,
    pub(super) long: Option<Vec<u16>>,
}

impl DiskName {
    pub(super) fn record_count(&self) -> u64 {
        1 + self
            .long
            .as_ref()
            .map_or(0, |units| units.len().div_ceil(13) as u64)
    }
}

/// Names of one directory's entries, given in sorted order. Exact 8.3 names are reserved
/// first so a generated `~N` name never takes one.
pub(super) fn disk_names(names: &[&str]) -> Vec<DiskName> {
    let exact: Vec<_> = names.iter().map(|name| exact_short_name(name)).collect();
    let mut taken: BTreeSet<[u8; 11]> = exact.iter().flatten().map(|(short, _)| *short).collect();
    names
        .iter()
        .zip(exact)
        .map(|(name, exact)| match exact {
            Some((short, case_flags)) => DiskName {
                short,
                case_flags,
                long: None,
            },
            None => DiskName {
                short: generated_short_name(name, &mut taken),
                case_flags: 0,
                long: Some(name.encode_utf16().collect()),
            },
        })
        .collect()
}

fn is_short_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || SHORT_NAME_PUNCTUATION.contains(&b)
}

/// The padded short name and case flags if `name` is a valid 8.3 name whose base and
/// extension are each all-uppercase or all-lowercase.
fn exact_short_name(name: &str) -> Option<([u8; 11], u8)> {
    let (base, extension) = name.split_once('.').unwrap_or((name, ""));
    if base.is_empty() || base.len() > 8 || extension.len() > 3 {
        return None;
    }
    if !base
        .bytes()
        .chain(extension.bytes())
        .all(is_short_name_byte)
    {
        return None;
    }
    let case_flag = |part: &str, flag: u8| {
        let lower = part.bytes().any(|b| b.is_ascii_lowercase());
        let upper = part.bytes().any(|b| b.is_ascii_uppercase());
        match (lower, upper) {
            (true, true) => None,
            (true, false) => Some(flag),
            _ => Some(0),
        }
    };
    let flags = case_flag(base, LOWERCASE_BASE)? | case_flag(extension, LOWERCASE_EXTENSION)?;
    let mut short = [b' '; 11];
    short[..base.len()].copy_from_slice(base.to_ascii_uppercase().as_bytes());
    short[8..8 + extension.len()].copy_from_slice(extension.to_ascii_uppercase().as_bytes());
    Some((short, flags))
}

/// Microsoft's basis-name algorithm: uppercase, drop spaces and leading dots, `_` for
/// what a short name cannot hold; then the first free `~N` tail. A name that is 8.3 but
/// for mixed case (`Makefile`) keeps its uppercase form without a tail when it is free.
fn generated_short_name(name: &str, taken: &mut BTreeSet<[u8; 11]>) -> [u8; 11] {
    if let Some((short, _)) = exact_short_name(&name.to_ascii_uppercase())
        && taken.insert(short)
    {
        return short;
    }
    let trimmed = name.trim_start_matches('.');
    let (base, extension) = trimmed.rsplit_once('.').unwrap_or((trimmed, ""));
    let basis = |part: &str, limit: usize| -> Vec<u8> {
        part.chars()
            .filter(|c| *c != ' ' && *c != '.')
            .map(|c| match u8::try_from(c) {
                Ok(b) if is_short_name_byte(b) => b.to_ascii_uppercase(),
                _ => b'_',
            })
            .take(limit)
            .collect()
    };
    let (base, extension) = (basis(base, 8), basis(extension, 3));
    for n in 1u32.. {
        let tail = format!("~{n}");
        let keep = base.len().min(8 - tail.len());
        let mut short = [b' '; 11];
        short[..keep].copy_from_slice(&base[..keep]);
        short[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        short[8..8 + extension.len()].copy_from_slice(&extension);
        if taken.insert(short) {
            return short;
        }
    }
    unreachable!("a directory holds fewer than 65536 names")
}

/// The checksum long-name records carry of their short name.
pub(super) fn short_name_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// A 32-byte short-name record; every timestamp is `stamp`.
pub(super) fn short_record(
    short: &[u8; 11],
    attributes: u8,
    case_flags: u8,
    first_cluster: u32,
    size: u32,
    stamp: &FatTimestamp,
) -> [u8; 32] {
    let mut r = [0u8; 32];
    r[..11].copy_from_slice(short);
    r[11] = attributes;
    r[12] = case_flags;
    r[13] = stamp.hundredths;
    put_u16(&mut r, 14, stamp.time);
    put_u16(&mut r, 16, stamp.date);
    put_u16(&mut r, 18, stamp.date); // last access
    put_u16(&mut r, 20, (first_cluster >> 16) as u16);
    put_u16(&mut r, 22, stamp.time);
    put_u16(&mut r, 24, stamp.date);
    put_u16(&mut r, 26, first_cluster as u16);
    put_u32(&mut r, 28, size);
    r
}

/// VFAT records for a long name, in on-disk order: the last part (flagged 0x40) first.
pub(super) fn long_name_records(units: &[u16], checksum: u8) -> Vec<[u8; 32]> {
    let count = units.len().div_ceil(13);
    (1..=count)
        .rev()
        .map(|sequence| {
            let mut r = [0u8; 32];
            r[0] = sequence as u8 | if sequence == count { 0x40 } else { 0 };
            r[11] = ATTR_LONG_NAME;
            r[13] = checksum;
            let part = &units[(sequence - 1) * 13..units.len().min(sequence * 13)];
            // After the name: one 0x0000 terminator if there is room, then 0xFFFF.
            let padding = std::iter::once(0x0000).chain(std::iter::repeat(0xFFFF));
            for (offset, unit) in LONG_NAME_UNIT_OFFSETS
                .iter()
                .zip(part.iter().copied().chain(padding))
            {
                put_u16(&mut r, *offset, unit);
            }
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        let names = [
            "Makefile",
            "README",
            "a b.tar.gz",
            "abcdefghij",
            "abcdef~1",
            "config.txt",
        ];
        let disk = disk_names(&names);
        let shorts: Vec<String> = disk
            .iter()
            .map(|d| String::from_utf8_lossy(&d.short).into_owned())
            .collect();
        assert_eq!(
            shorts,
            [
                "MAKEFILE   ",
                "README     ",
                "ABTAR~1 GZ ",
                "ABCDEF~2   ",
                "ABCDEF~1   ",
                "CONFIG  TXT"
            ]
        );
        assert_eq!(disk[5].case_flags, LOWERCASE_BASE | LOWERCASE_EXTENSION);
        assert!(disk[0].long.is_some() && disk[1].long.is_none());
    }
}
