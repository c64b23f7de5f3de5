//! Kernel module metadata: the `.modinfo` section of a module's ELF file, and
//! `modules.dep` / `modules.alias` as depmod writes them (Debian's kernel packages ship
//! none: their postinst runs depmod).

use std::collections::{BTreeMap, BTreeSet};

/// `key=value` strings of a module's `.modinfo` section, in file order.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>, String> {
    let section = elf_section(elf, ".modinfo")?.ok_or("no .modinfo section")?;
    Ok(section
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let s = String::from_utf8_lossy(s);
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect())
}

fn elf_section<'a>(elf: &'a [u8], wanted: &str) -> Result<Option<&'a [u8]>, String> {
    if elf.len() < 52 || &elf[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    let is64 = match elf[4] {
        1 => false,
        2 => true,
        c => return Err(format!("unknown ELF class {c}")),
    };
    if elf[5] != 1 {
        return Err("big-endian ELF is not supported".into());
    }
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or("truncated ELF")
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
            .ok_or("truncated ELF")
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
            .ok_or("truncated ELF")
    };
    let (shoff, shentsize, shnum, shstrndx) = if is64 {
        (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?)
    } else {
        (u32_at(0x20)?, u16_at(0x2e)?, u16_at(0x30)?, u16_at(0x32)?)
    };
    let section = |i: usize| -> Result<(usize, usize, usize), String> {
        let h = shoff + i * shentsize;
        Ok(if is64 {
            (u32_at(h)?, u64_at(h + 0x18)?, u64_at(h + 0x20)?)
        } else {
            (u32_at(h)?, u32_at(h + 0x10)?, u32_at(h + 0x14)?)
        })
    };
    let (_, str_off, str_size) = section(shstrndx)?;
    let names = elf
        .get(str_off..str_off + str_size)
        .ok_or("truncated ELF string table")?;
    for i in 0..shnum {
        let (name_off, off, size) = section(i)?;
        let name = names
            .get(name_off..)
            .and_then(|n| n.split(|b| *b == 0).next())
            .unwrap_or(b"");
        if name == wanted.as_bytes() {
            return Ok(Some(
                elf.get(off..off + size).ok_or("truncated ELF section")?,
            ));
        }
    }
    Ok(None)
}

/// A module's name as the kernel knows it: file name without `.ko[.xz|.zst|.gz]`, `-` as `_`.
pub fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file
        .strip_suffix(".xz")
        .or_else(|| file.strip_suffix(".zst"))
        .or_else(|| file.strip_suffix(".gz"))
        .unwrap_or(file);
    stem.strip_suffix(".ko").map(|s| s.replace('-', "_"))
}

/// One module: its path relative to `/lib/modules/KVER/` and its `.modinfo`.
pub struct ModuleInfo {
    pub path: String,
    pub info: Vec<(String, String)>,
}

/// `modules.dep` and `modules.alias` for a set of modules. Each dependency line lists the
/// full closure, dependents first, so that loading from right to left works.
pub fn depmod(modules: &[ModuleInfo]) -> Result<(String, String), String> {
    let mut by_name: BTreeMap<String, &ModuleInfo> = BTreeMap::new();
    for m in modules {
        let name =
            module_name(&m.path).ok_or_else(|| format!("{} is not a module file name", m.path))?;
        by_name.insert(name, m);
    }
    let deps_of = |m: &ModuleInfo| -> Vec<String> {
        m.info
            .iter()
            .filter(|(k, _)| k == "depends")
            .flat_map(|(_, v)| {
                v.split(',')
                    .filter(|d| !d.is_empty())
                    .map(|d| d.replace('-', "_"))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let mut sorted: Vec<&ModuleInfo> = modules.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut dep = String::new();
    let mut alias = String::from("# Aliases extracted from modules themselves.\n");
    for m in &sorted {
        // Post-order DFS over the dependencies, then reversed.
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(String, bool)> =
            deps_of(m).into_iter().rev().map(|d| (d, false)).collect();
        while let Some((name, done)) = stack.pop() {
            if done {
                order.push(name);
                continue;
            }
            if !seen.insert(name.clone()) {
                continue;
            }
            let dm = by_name.get(&name).ok_or_else(|| {
                format!(
                    "{} depends on {name}, which is not among the modules",
                    m.path
                )
            })?;
            stack.push((name, true));
            for d in deps_of(dm).into_iter().rev() {
                if !seen.contains(&d) {
                    stack.push((d, false));
                }
            }
        }
        order.reverse();
        let paths: Vec<&str> = order.iter().map(|n| by_name[n].path.as_str()).collect();
        dep.push_str(&format!("{}:", m.path));
        for p in paths {
            dep.push(' ');
            dep.push_str(p);
        }
        dep.push('\n');
    }
    for (name, m) in &by_name {
        for (k, v) in &m.info {
            if k == "alias" {
                alias.push_str(&format!("alias {v} {name}\n"));
            }
        }
    }
    Ok((dep, alias))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(deps: &str) -> Vec<(String, String)> {
        vec![
            ("depends".into(), deps.into()),
            ("alias".into(), "fs-x".into()),
        ]
    }

    #[test]
    fn closure_lists_dependents_first() {
        let modules = vec![
            ModuleInfo {
                path: "kernel/fs/overlay.ko.xz".into(),
                info: info(""),
            },
            ModuleInfo {
                path: "kernel/a/virtio-blk.ko.xz".into(),
                info: info("virtio_ring,virtio"),
            },
            ModuleInfo {
                path: "kernel/a/virtio_ring.ko.xz".into(),
                info: info("virtio"),
            },
            ModuleInfo {
                path: "kernel/a/virtio.ko.xz".into(),
                info: info(""),
            },
        ];
        let (dep, alias) = depmod(&modules).unwrap();
        assert_eq!(
            dep,
            "kernel/a/virtio-blk.ko.xz: kernel/a/virtio_ring.ko.xz kernel/a/virtio.ko.xz\nkernel/a/virtio.ko.xz:\nkernel/a/virtio_ring.ko.xz: kernel/a/virtio.ko.xz\nkernel/fs/overlay.ko.xz:\n"
        );
        assert!(alias.contains("alias fs-x virtio_blk\n"));
        assert_eq!(
            module_name("kernel/x/nls_cp437.ko.zst").as_deref(),
            Some("nls_cp437")
        );
        let bad = vec![ModuleInfo {
            path: "kernel/a.ko".into(),
            info: info("missing"),
        }];
        assert!(depmod(&bad).unwrap_err().contains("depends on missing"));
    }

    #[test]
    fn modinfo_of_a_small_elf64() {
        // A minimal ELF64 with a section string table and a .modinfo section.
        let section = b"license=GPL\0depends=a,b\0name=x\0";
        let shstr = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let modinfo_off = elf.len();
        elf.extend_from_slice(section);
        let shstr_off = elf.len();
        elf.extend_from_slice(shstr);
        let shoff = elf.len();
        let sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            h
        };
        let headers = [
            sh(0, 0, 0),
            sh(1, shstr_off, shstr.len()),
            sh(11, modinfo_off, section.len()),
        ]
        .concat();
        elf.extend_from_slice(&headers);
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        let info = super::modinfo(&elf).unwrap();
        assert_eq!(info[1], ("depends".to_string(), "a,b".to_string()));
        assert!(super::modinfo(b"not elf at all, not at all, not at all, not at all, ok").is_err());
    }
}
