//! `/etc/ld.so.cache` in glibc's current format (`glibc-ld.so.cache1.1`, the only one
//! glibc 2.32 and later write or read): a header, one fixed-size entry per library, and a
//! string table. The dynamic linker binary-searches the entries, so their order is
//! glibc's: by soname descending under `_dl_cache_libcmp` (digit runs compare as numbers),
//! then by flags descending. No hwcaps extension is written (optional in the format).

use crate::elf::Shared;

/// `FLAG_ELF_LIBC6`: a glibc library; the arch's bits are added to it.
pub const FLAG_ELF_LIBC6: i32 = 0x0003;
pub const FLAG_X8664_LIB64: i32 = 0x0300;
pub const FLAG_ARM_LIBHF: i32 = 0x0900;
pub const FLAG_AARCH64_LIB64: i32 = 0x0a00;
pub const FLAG_ARM_LIBSF: i32 = 0x0b00;

const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const HEADER: usize = 48;
const ENTRY: usize = 24;
/// `cache_file_new_flags_endian_little`.
const LITTLE_ENDIAN: u8 = 2;

/// One library: the name programs ask for, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub soname: String,
    pub path: String,
    pub flags: i32,
}

/// The cache flags of a shared object, from its ELF header, as ldconfig gives them on
/// these arches (an ARM object marked with neither float ABI fits either); `None` for an
/// object of another arch.
pub fn flags_of(elf: &Shared) -> Option<i32> {
    match (elf.machine, elf.class64) {
        (crate::elf::EM_X86_64, true) => Some(FLAG_ELF_LIBC6 | FLAG_X8664_LIB64),
        (crate::elf::EM_AARCH64, true) => Some(FLAG_ELF_LIBC6 | FLAG_AARCH64_LIB64),
        (crate::elf::EM_ARM, false) if elf.arm_hard_float => Some(FLAG_ELF_LIBC6 | FLAG_ARM_LIBHF),
        (crate::elf::EM_ARM, false) if elf.arm_soft_float => Some(FLAG_ELF_LIBC6 | FLAG_ARM_LIBSF),
        (crate::elf::EM_ARM, false) => Some(FLAG_ELF_LIBC6),
        _ => None,
    }
}

/// glibc's `_dl_cache_libcmp`: byte order, except that runs of digits compare as numbers
/// and a digit sorts after any other byte.
pub fn libcmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() {
        let (ca, cb) = (a[i], b.get(j).copied().unwrap_or(0));
        if ca.is_ascii_digit() {
            if !cb.is_ascii_digit() {
                return Ordering::Greater;
            }
            let number = |s: &[u8], k: &mut usize| {
                let mut v: u64 = 0;
                while *k < s.len() && s[*k].is_ascii_digit() {
                    v = v.saturating_mul(10).saturating_add(u64::from(s[*k] - b'0'));
                    *k += 1;
                }
                v
            };
            let (va, vb) = (number(a, &mut i), number(b, &mut j));
            if va != vb {
                return va.cmp(&vb);
            }
        } else if cb.is_ascii_digit() {
            return Ordering::Less;
        } else if ca != cb {
            return ca.cmp(&cb);
        } else {
            i += 1;
            j += 1;
        }
    }
    if j < b.len() {
        Ordering::Less
    } else {
        Ordering::Equal
    }
}

/// The cache file for `entries` (in any order; the first of equal soname and flags wins,
/// as the first directory searched does).
pub fn write(entries: &[Entry]) -> Vec<u8> {
    let mut kept: Vec<&Entry> = Vec::new();
    for e in entries {
        if !kept
            .iter()
            .any(|k| k.soname == e.soname && k.flags == e.flags)
        {
            kept.push(e);
        }
    }
    kept.sort_by(|x, y| libcmp(&y.soname, &x.soname).then(y.flags.cmp(&x.flags)));
    let strings_start = HEADER + ENTRY * kept.len();
    let mut strings: Vec<u8> = Vec::new();
    let mut table: Vec<u8> = Vec::with_capacity(ENTRY * kept.len());
    for e in &kept {
        // The path ends with the soname mostly: then the key is the path's tail.
        let value = (strings_start + strings.len()) as u32;
        strings.extend_from_slice(e.path.as_bytes());
        strings.push(0);
        let key = if e.path.ends_with(&format!("/{}", e.soname)) {
            value + (e.path.len() - e.soname.len()) as u32
        } else {
            let k = (strings_start + strings.len()) as u32;
            strings.extend_from_slice(e.soname.as_bytes());
            strings.push(0);
            k
        };
        table.extend_from_slice(&e.flags.to_le_bytes());
        table.extend_from_slice(&key.to_le_bytes());
        table.extend_from_slice(&value.to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes()); // osversion, unused
        table.extend_from_slice(&0u64.to_le_bytes()); // hwcap
    }
    let mut out = Vec::with_capacity(strings_start + strings.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(kept.len() as u32).to_le_bytes());
    out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    out.push(LITTLE_ENDIAN);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&0u32.to_le_bytes()); // no extension
    out.extend_from_slice(&[0; 12]);
    debug_assert_eq!(out.len(), HEADER);
    out.extend_from_slice(&table);
    out.extend_from_slice(&strings);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn libcmp_is_glibcs() {
        assert_eq!(libcmp("libc.so.6", "libc.so.6"), Ordering::Equal);
        assert_eq!(libcmp("libfoo.so.10", "libfoo.so.9"), Ordering::Greater);
        assert_eq!(libcmp("libfoo.so.1", "libfoo.so.1.2"), Ordering::Less);
        assert_eq!(
            libcmp("lib2", "liba"),
            Ordering::Greater,
            "a digit after a letter"
        );
        assert_eq!(libcmp("libz.so", "liba.so"), Ordering::Greater);
    }

    #[test]
    fn the_layout_is_glibcs() {
        let bytes = write(&[
            Entry {
                soname: "libz.so.1".into(),
                path: "/lib/x86_64-linux-gnu/libz.so.1".into(),
                flags: 0x0303,
            },
            Entry {
                soname: "libc.so.6".into(),
                path: "/lib/x86_64-linux-gnu/libc.so.6".into(),
                flags: 0x0303,
            },
            Entry {
                soname: "libc.so.6".into(),
                path: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
                flags: 0x0303,
            },
        ]);
        assert_eq!(&bytes[..20], b"glibc-ld.so.cache1.1");
        assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 2);
        let entry = |i: usize| {
            let e = &bytes[HEADER + i * ENTRY..];
            let at = |o: usize| u32::from_le_bytes(e[o..o + 4].try_into().unwrap()) as usize;
            let cstr = |o: usize| {
                let end = bytes[o..].iter().position(|&b| b == 0).unwrap();
                String::from_utf8(bytes[o..o + end].to_vec()).unwrap()
            };
            (at(0), cstr(at(4)), cstr(at(8)))
        };
        // Descending: libz before libc; the first directory's libc kept.
        assert_eq!(
            entry(0),
            (
                0x0303,
                "libz.so.1".into(),
                "/lib/x86_64-linux-gnu/libz.so.1".into()
            )
        );
        assert_eq!(
            entry(1),
            (
                0x0303,
                "libc.so.6".into(),
                "/lib/x86_64-linux-gnu/libc.so.6".into()
            )
        );
        let strings = u32::from_le_bytes(bytes[24..28].try_into().unwrap()) as usize;
        assert_eq!(bytes.len(), HEADER + 2 * ENTRY + strings);
    }
}
