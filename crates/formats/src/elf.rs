//! Just enough of ELF to describe a shared object for the dynamic linker's cache: class,
//! machine, ARM float ABI and `DT_SONAME`. Little-endian only (every arch Cairn builds).

pub const EM_ARM: u16 = 40;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
const ET_DYN: u16 = 3;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
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

/// Reads a little-endian ELF shared object (`ET_DYN`); `None` for anything else, or a
/// file too damaged to read.
pub fn read_shared(b: &[u8]) -> Option<Shared> {
    if b.len() < 52 || &b[..4] != b"\x7fELF" || b[5] != 1 {
        return None;
    }
    let class64 = match b[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let u16_at = |o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
    // A word of the file's class, widened.
    let word = |o: usize| {
        if class64 {
            u64_at(o)
        } else {
            u32_at(o).map(u64::from)
        }
    };
    if u16_at(16)? != ET_DYN {
        return None;
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
    for i in 0..u64::from(phnum) {
        let at = usize::try_from(phoff.checked_add(i * u64::from(phentsize))?).ok()?;
        let p_type = u32_at(at)?;
        let (offset, vaddr, filesz) = if class64 {
            (u64_at(at + 8)?, u64_at(at + 16)?, u64_at(at + 32)?)
        } else {
            (
                u64::from(u32_at(at + 4)?),
                u64::from(u32_at(at + 8)?),
                u64::from(u32_at(at + 16)?),
            )
        };
        match p_type {
            PT_LOAD => loads.push((offset, vaddr, filesz)),
            PT_DYNAMIC => dynamic = Some((offset, filesz)),
            _ => {}
        }
    }
    let to_offset = |addr: u64| {
        loads
            .iter()
            .find(|(_, v, size)| addr >= *v && addr - v < *size)
            .map(|(o, v, _)| addr - v + o)
    };
    let mut soname = None;
    if let Some((offset, size)) = dynamic {
        let entry = if class64 { 16 } else { 8 };
        let (mut strtab, mut name) = (None, None);
        for i in 0..size / entry {
            let at = usize::try_from(offset + i * entry).ok()?;
            let (tag, value) = (word(at)?, word(at + entry as usize / 2)?);
            match tag {
                0 => break,
                DT_STRTAB => strtab = Some(value),
                DT_SONAME => name = Some(value),
                _ => {}
            }
        }
        if let (Some(strtab), Some(name)) = (strtab, name) {
            let at = usize::try_from(to_offset(strtab)?.checked_add(name)?).ok()?;
            let rest = b.get(at..)?;
            let end = rest.iter().position(|&c| c == 0)?;
            soname = Some(String::from_utf8_lossy(&rest[..end]).into_owned());
        }
    }
    Some(Shared {
        class64,
        machine,
        arm_hard_float: machine == EM_ARM && flags & EF_ARM_ABI_FLOAT_HARD != 0,
        arm_soft_float: machine == EM_ARM && flags & EF_ARM_ABI_FLOAT_SOFT != 0,
        soname,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(read_shared(b"#!/bin/sh\n").is_none());
    }
}
