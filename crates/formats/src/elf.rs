//! Just enough of ELF to describe a shared object for the dynamic linker's cache (class,
//! machine, ARM float ABI, `DT_SONAME`) and to copy a program with the libraries it needs
//! (`PT_INTERP`, `DT_NEEDED`). Little-endian only (every arch Cairn builds).

pub const EM_ARM: u16 = 40;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_SONAME: u64 = 14;
const EF_ARM_ABI_FLOAT_SOFT: u32 = 0x200;
const EF_ARM_ABI_FLOAT_HARD: u32 = 0x400;

/// A shared object's header facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    pub class64: bool,
    pub machine: u16,
    pub arm_hard_float: bool,
    pub arm_soft_float: bool,
    pub soname: Option<String>,
}

/// What the dynamic linker needs to run a program or load a library.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Linkage {
    /// `PT_INTERP`: the dynamic linker's path (`None` for a static program or a library).
    pub interpreter: Option<String>,
    /// `DT_NEEDED`, in the file's order.
    pub needed: Vec<String>,
}

/// Reads the linkage of a little-endian ELF executable or shared object; `None` for
/// anything else.
pub fn read_linkage(b: &[u8]) -> Option<Linkage> {
    parse(b, false).map(|(_, l)| l)
}

/// Reads a little-endian ELF shared object (`ET_DYN`); `None` for anything else, or a
/// file too damaged to read.
pub fn read_shared(b: &[u8]) -> Option<Shared> {
    parse(b, true).map(|(s, _)| s)
}

fn parse(b: &[u8], shared_only: bool) -> Option<(Shared, Linkage)> {
    if b.len() < 52 || &b[..4] != b"\x7fELF" || b[5] != 1 {
        return None;
    }
    let class64 = match b[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    // Offsets come from the file: every sum is checked, and one past the end is `None`.
    let bytes = |o: usize, n: usize| b.get(o..o.checked_add(n)?);
    let u16_at = |o: usize| Some(u16::from_le_bytes(bytes(o, 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(bytes(o, 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(bytes(o, 8)?.try_into().ok()?));
    // A word of the file's class, widened.
    let word = |o: usize| {
        if class64 {
            u64_at(o)
        } else {
            u32_at(o).map(u64::from)
        }
    };
    match u16_at(16)? {
        ET_DYN => {}
        ET_EXEC if !shared_only => {}
        _ => return None,
    }
    let machine = u16_at(18)?;
    let (phoff, flags, phentsize, phnum) = if class64 {
        (u64_at(32)?, u32_at(48)?, u16_at(54)?, u16_at(56)?)
    } else {
        (
            u64::from(u32_at(28)?),
            u32_at(36)?,
            u16_at(42)?,
            u16_at(44)?,
        )
    };
    // Program headers: (type, offset, vaddr, filesz).
    let mut loads = Vec::new();
    let mut dynamic = None;
    let mut interp = None;
    for i in 0..u64::from(phnum) {
        let at = usize::try_from(phoff.checked_add(i * u64::from(phentsize))?).ok()?;
        let p_type = u32_at(at)?;
        let field = |o: usize| at.checked_add(o);
        let (offset, vaddr, filesz) = if class64 {
            (u64_at(field(8)?)?, u64_at(field(16)?)?, u64_at(field(32)?)?)
        } else {
            (
                u64::from(u32_at(field(4)?)?),
                u64::from(u32_at(field(8)?)?),
                u64::from(u32_at(field(16)?)?),
            )
        };
        match p_type {
            PT_LOAD => loads.push((offset, vaddr, filesz)),
            PT_DYNAMIC => dynamic = Some((offset, filesz)),
            PT_INTERP => interp = Some((offset, filesz)),
            _ => {}
        }
    }
    let to_offset = |addr: u64| {
        loads
            .iter()
            .find(|(_, v, size)| addr >= *v && addr - v < *size)
            .and_then(|(o, v, _)| (addr - v).checked_add(*o))
    };
    // A NUL-terminated string at file offset `at`.
    let string_at = |at: u64| -> Option<String> {
        let rest = b.get(usize::try_from(at).ok()?..)?;
        let end = rest.iter().position(|&c| c == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    let mut linkage = Linkage::default();
    if let Some((offset, _)) = interp {
        linkage.interpreter = Some(string_at(offset)?);
    }
    let mut soname = None;
    if let Some((offset, size)) = dynamic {
        let entry = if class64 { 16 } else { 8 };
        let (mut strtab, mut name, mut needed) = (None, None, Vec::new());
        for i in 0..size / entry {
            let at = usize::try_from(offset.checked_add(i * entry)?).ok()?;
            let (tag, value) = (word(at)?, word(at.checked_add(entry as usize / 2)?)?);
            match tag {
                0 => break,
                DT_STRTAB => strtab = Some(value),
                DT_SONAME => name = Some(value),
                DT_NEEDED => needed.push(value),
                _ => {}
            }
        }
        if let Some(strtab) = strtab {
            let strtab = to_offset(strtab)?;
            if let Some(name) = name {
                soname = Some(string_at(strtab.checked_add(name)?)?);
            }
            for n in needed {
                linkage.needed.push(string_at(strtab.checked_add(n)?)?);
            }
        }
    }
    let shared = Shared {
        class64,
        machine,
        arm_hard_float: machine == EM_ARM && flags & EF_ARM_ABI_FLOAT_HARD != 0,
        arm_soft_float: machine == EM_ARM && flags & EF_ARM_ABI_FLOAT_SOFT != 0,
        soname,
    };
    Some((shared, linkage))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `binaries` fuzz target: a program header table at the end of the
    /// address space made the offset sums overflow.
    #[test]
    fn headers_pointing_past_the_address_space_are_not_read() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[16] = 3; // ET_DYN
        elf[18] = 0x3e;
        for phoff in [u64::MAX, u64::MAX - 4, u64::MAX - 40] {
            elf[32..40].copy_from_slice(&phoff.to_le_bytes());
            elf[54..56].copy_from_slice(&56u16.to_le_bytes());
            elf[56..58].copy_from_slice(&1u16.to_le_bytes());
            assert!(read_linkage(&elf).is_none(), "{phoff:x}");
            assert!(read_shared(&elf).is_none());
        }
    }

    #[test]
    fn reads_the_host_libc() {
        // Whatever the host is, its libc is a shared object naming itself libc.so.6.
        let path = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
        let Some(path) = path else {
            panic!("no host libc.so.6 to read");
        };
        let s = read_shared(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(s.soname.as_deref(), Some("libc.so.6"));
        assert!(s.class64);
        assert!(read_shared(b"\x7fELF not really").is_none());
        let libc = read_linkage(&std::fs::read(path).unwrap()).unwrap();
        assert!(
            libc.needed.iter().any(|n| n.starts_with("ld-linux")),
            "{libc:?}"
        );
        assert!(read_shared(b"#!/bin/sh\n").is_none());
    }

    #[test]
    fn reads_what_a_host_program_links() {
        // /bin/sh of any Debian host: dash, linked to libc and run by the arch's ld.so.
        let sh = std::fs::read(std::fs::canonicalize("/bin/sh").unwrap()).unwrap();
        let l = read_linkage(&sh).unwrap();
        assert!(
            l.interpreter.as_deref().unwrap().contains("/ld-linux"),
            "{l:?}"
        );
        assert_eq!(l.needed, ["libc.so.6"]);
    }
}
