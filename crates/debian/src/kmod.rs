//! Kernel module metadata: the `.modinfo` section of a module's ELF file, and
//! `modules.dep` / `modules.alias` with their binary indexes as depmod writes them
//! (Debian's kernel packages ship none: their postinst runs depmod).

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
    // Offsets and sizes come from the file: every sum is checked, so a crafted header
    // is "truncated", never an overflow.
    let bytes = |o: usize, n: usize| o.checked_add(n).and_then(|end| elf.get(o..end));
    let u16_at = |o: usize| {
        bytes(o, 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or("truncated ELF")
    };
    let u32_at = |o: usize| {
        bytes(o, 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
            .ok_or("truncated ELF")
    };
    let u64_at = |o: usize| {
        bytes(o, 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
            .ok_or("truncated ELF")
    };
    let (shoff, shentsize, shnum, shstrndx) = if is64 {
        (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?)
    } else {
        (u32_at(0x20)?, u16_at(0x2e)?, u16_at(0x30)?, u16_at(0x32)?)
    };
    let section = |i: usize| -> Result<(usize, usize, usize), String> {
        let h = i
            .checked_mul(shentsize)
            .and_then(|o| o.checked_add(shoff))
            .ok_or("truncated ELF")?;
        let at = |o: usize| h.checked_add(o).ok_or("truncated ELF");
        Ok(if is64 {
            (u32_at(h)?, u64_at(at(0x18)?)?, u64_at(at(0x20)?)?)
        } else {
            (u32_at(h)?, u32_at(at(0x10)?)?, u32_at(at(0x14)?)?)
        })
    };
    let (_, str_off, str_size) = section(shstrndx)?;
    let names = bytes(str_off, str_size).ok_or("truncated ELF string table")?;
    for i in 0..shnum {
        let (name_off, off, size) = section(i)?;
        let name = names
            .get(name_off..)
            .and_then(|n| n.split(|b| *b == 0).next())
            .unwrap_or(b"");
        if name == wanted.as_bytes() {
            return Ok(Some(bytes(off, size).ok_or("truncated ELF section")?));
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

/// One module: its path relative to `/lib/modules/KVER/`, its `.modinfo` and the symbols
/// it exports (`__ksymtab_strings`).
pub struct ModuleInfo {
    pub path: String,
    pub info: Vec<(String, String)>,
    pub exports: Vec<String>,
}

/// The symbols a module exports: the names in its `__ksymtab_strings` section.
pub fn exports(elf: &[u8]) -> Result<Vec<String>, String> {
    Ok(elf_section(elf, "__ksymtab_strings")?
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
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

/// kmod's binary indexes for a kernel's modules, by file name: `modules.dep.bin` from
/// `dep` (the text [`depmod`] wrote), `modules.alias.bin` from the modules' aliases,
/// `modules.symbols.bin` from their exports (libkmod loads its indexes only when this
/// one is there too),
/// `modules.builtin.bin` and `modules.builtin.alias.bin` from the kernel package's
/// `modules.builtin` and `modules.builtin.modinfo`. A module's priority is its place in
/// `modules.order` (those not listed come after, by path), as depmod's.
pub fn depmod_indexes(
    modules: &[ModuleInfo],
    dep: &str,
    order: &str,
    builtin: &str,
    builtin_modinfo: &[u8],
) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    use crate::kmod_index::{normalize_alias, write_index};
    let mut priority: BTreeMap<String, u32> = BTreeMap::new();
    for line in order.lines() {
        if let Some(name) = module_name(line.trim()) {
            let next = priority.len() as u32;
            priority.entry(name).or_insert(next);
        }
    }
    let mut sorted: Vec<&ModuleInfo> = modules.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    for m in &sorted {
        if let Some(name) = module_name(&m.path) {
            let next = priority.len() as u32;
            priority.entry(name).or_insert(next);
        }
    }
    let prio = |name: &str| priority.get(name).copied().unwrap_or(u32::MAX);
    let mut deps = Vec::new();
    for line in dep.lines() {
        let path = line.split(':').next().unwrap_or_default();
        let name = module_name(path).ok_or_else(|| format!("modules.dep line {line:?}"))?;
        deps.push((name, line.to_string()));
    }
    let dep_bin = write_index(deps.iter().map(|(n, l)| (n.as_str(), l.as_str(), prio(n))))?;
    let mut aliases = Vec::new();
    for m in &sorted {
        let name = module_name(&m.path).unwrap_or_default();
        for (k, v) in &m.info {
            if let Some(a) = normalize_alias(v).filter(|a| k == "alias" && a.is_ascii()) {
                aliases.push((a, name.clone()));
            }
        }
    }
    let alias_bin = write_index(
        aliases
            .iter()
            .map(|(a, n)| (a.as_str(), n.as_str(), prio(n))),
    )?;
    let mut symbols = Vec::new();
    for m in &sorted {
        let name = module_name(&m.path).unwrap_or_default();
        for sym in m.exports.iter().filter(|s| s.is_ascii()) {
            symbols.push((format!("symbol:{sym}"), name.clone()));
        }
    }
    let symbols_bin = write_index(
        symbols
            .iter()
            .map(|(k, n)| (k.as_str(), n.as_str(), prio(n))),
    )?;
    let builtin_names: Vec<String> = builtin.lines().filter_map(module_name).collect();
    let builtin_bin = write_index(builtin_names.iter().map(|n| (n.as_str(), "", 0)))?;
    let mut builtin_aliases = Vec::new();
    for entry in builtin_modinfo.split(|b| *b == 0) {
        let entry = String::from_utf8_lossy(entry);
        if let Some((module, alias)) = entry.split_once(".alias=")
            && let Some(a) = normalize_alias(alias).filter(|a| a.is_ascii())
        {
            builtin_aliases.push((a, module.replace('-', "_")));
        }
    }
    let builtin_alias_bin = write_index(
        builtin_aliases
            .iter()
            .map(|(a, n)| (a.as_str(), n.as_str(), 0)),
    )?;
    Ok(vec![
        ("modules.dep.bin", dep_bin),
        ("modules.alias.bin", alias_bin),
        ("modules.symbols.bin", symbols_bin),
        ("modules.builtin.bin", builtin_bin),
        ("modules.builtin.alias.bin", builtin_alias_bin),
    ])
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
                exports: vec![],
            },
            ModuleInfo {
                path: "kernel/a/virtio-blk.ko.xz".into(),
                info: info("virtio_ring,virtio"),
                exports: vec![],
            },
            ModuleInfo {
                path: "kernel/a/virtio_ring.ko.xz".into(),
                info: info("virtio"),
                exports: vec![],
            },
            ModuleInfo {
                path: "kernel/a/virtio.ko.xz".into(),
                info: info(""),
                exports: vec![],
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
            exports: vec![],
        }];
        assert!(depmod(&bad).unwrap_err().contains("depends on missing"));
    }

    /// Found by the `binaries` fuzz target: header fields near `usize::MAX` made the
    /// offset sums overflow (a panic in debug builds, a wrapped offset in release ones).
    #[test]
    fn headers_pointing_past_the_address_space_are_truncated_elves() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes()); // shoff
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes()); // shentsize
        elf[0x3c..0x3e].copy_from_slice(&1u16.to_le_bytes()); // shnum
        assert_eq!(modinfo(&elf).unwrap_err(), "truncated ELF");
        // A section header inside the file whose string table lies at usize::MAX.
        elf[0x28..0x30].copy_from_slice(&0u64.to_le_bytes());
        elf[0x18..0x20].copy_from_slice(&u64::MAX.to_le_bytes());
        elf[0x20..0x28].copy_from_slice(&2u64.to_le_bytes());
        assert!(modinfo(&elf).unwrap_err().contains("truncated"));
        assert!(exports(&elf).is_err());
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
