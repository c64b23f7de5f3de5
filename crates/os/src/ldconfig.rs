//! `/etc/ld.so.cache`, as dpkg's `ldconfig` trigger would leave it: the directories of
//! `/etc/ld.so.conf` (with its `include`s) and the arch's multiarch library directories,
//! each shared object's soname pointing at `DIR/SONAME`. glibc-hwcaps subdirectories are
//! not scanned (nothing Cairn's images install uses them). Written without running
//! anything, so the same for every host and arch; the bytes are `cairn_formats::ldcache`'s.

use crate::rootfs::{Kind, Rootfs};
use cairn_formats::ldcache::{self, Entry};
use cairn_project::Arch;
use cairn_steps::Error;
use std::collections::BTreeMap;

/// The arch's multiarch tuple (`/usr/lib/<triplet>`).
pub fn triplet(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64-linux-gnu",
        Arch::Aarch64 => "aarch64-linux-gnu",
        Arch::Armv7 => "arm-linux-gnueabihf",
    }
}

/// The directories `ld.so.conf` names, in order, includes expanded (`*` in a file name).
fn conf_dirs(fs: &mut Rootfs, file: &str, depth: u32, out: &mut Vec<String>) -> Result<(), Error> {
    if depth > 8 {
        return Ok(());
    }
    let Some(bytes) = fs.read_file(file.trim_start_matches('/'))? else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let include = line
            .strip_prefix("include")
            .filter(|rest| rest.starts_with(char::is_whitespace));
        if let Some(pattern) = include {
            let pattern = pattern.trim();
            let pattern = if pattern.starts_with('/') {
                pattern.to_string()
            } else {
                // Relative to the including file's directory.
                let dir = file.rsplit_once('/').map_or("", |(d, _)| d);
                format!("{dir}/{pattern}")
            };
            let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", &pattern));
            let Some(real) = fs.resolve(dir.trim_start_matches('/')) else {
                continue;
            };
            let matches = |n: &str| match name.split_once('*') {
                Some((prefix, suffix)) => {
                    n.len() >= prefix.len() + suffix.len()
                        && n.starts_with(prefix)
                        && n.ends_with(suffix)
                }
                None => n == name,
            };
            // Sorted by name, as ldconfig's glob gives them.
            let included: Vec<String> = fs
                .entries_in(&real)
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| matches(n))
                .collect();
            for m in included {
                conf_dirs(fs, &format!("{dir}/{m}"), depth + 1, out)?;
            }
        } else if !line.starts_with("hwcap") {
            // `DIR=TYPE` is an old form; the type is ignored.
            let dir = line.split('=').next().unwrap_or(line).trim_end_matches('/');
            out.push(dir.to_string());
        }
    }
    Ok(())
}

/// Writes `/etc/ld.so.cache` for the tree as it stands, unless the spec wrote one or the
/// tree holds no shared library (a static image). Returns the number of libraries.
pub fn add_ld_so_cache(fs: &mut Rootfs, arch: Arch) -> Result<usize, Error> {
    if fs.nodes().contains_key("etc/ld.so.cache") {
        return Ok(0);
    }
    let (bytes, n) = ld_so_cache(fs, arch)?;
    if n > 0 {
        fs.add_file("/etc/ld.so.cache", &bytes, 0o644, 0, 0)?;
    }
    Ok(n)
}

/// The cache for the tree as it stands, and how many libraries it lists.
pub fn ld_so_cache(fs: &mut Rootfs, arch: Arch) -> Result<(Vec<u8>, usize), Error> {
    let mut dirs = Vec::new();
    conf_dirs(fs, "/etc/ld.so.conf", 0, &mut dirs)?;
    let t = triplet(arch);
    dirs.push(format!("/lib/{t}"));
    dirs.push(format!("/usr/lib/{t}"));
    let mut seen_real = Vec::new();
    let mut entries = Vec::new();
    // A library reached by its file and by its links is read and parsed once.
    let mut parsed: BTreeMap<String, Option<cairn_formats::elf::Shared>> = BTreeMap::new();
    for dir in dirs {
        let Some(real) = fs.resolve(dir.trim_start_matches('/')) else {
            continue;
        };
        if seen_real.contains(&real) {
            continue;
        }
        seen_real.push(real.clone());
        for (name, kind) in fs.entries_in(&real) {
            if !(name.starts_with("lib") || name.starts_with("ld-")) || !name.contains(".so") {
                continue;
            }
            let Some(target) = fs.resolve(&format!("{real}/{name}")) else {
                continue; // a dangling link
            };
            if !parsed.contains_key(&target) {
                let elf = fs
                    .read_file(&target)?
                    .and_then(|bytes| cairn_formats::elf::read_shared(&bytes));
                parsed.insert(target.clone(), elf);
            }
            let Some(elf) = &parsed[&target] else {
                continue; // a linker script, or not a library
            };
            let Some(flags) = ldcache::flags_of(elf) else {
                continue;
            };
            let soname = elf.soname.clone().unwrap_or_else(|| name.clone());
            // ldconfig's rule for links: a link keeps its own name when it points at a file
            // named as the soname (or at the `.so` link the soname extends).
            let key = if matches!(kind, Kind::Symlink(_)) && name != soname {
                let base = target.rsplit('/').next().unwrap_or(&target);
                if base == soname || (base.ends_with(".so") && soname.starts_with(base)) {
                    name.clone()
                } else {
                    soname
                }
            } else {
                soname
            };
            entries.push(Entry {
                path: format!("{dir}/{key}"),
                soname: key,
                flags,
            });
        }
    }
    let bytes = ldcache::write(&entries);
    let n = u32::from_le_bytes(bytes[20..24].try_into().expect("header")) as usize;
    Ok((bytes, n))
}
