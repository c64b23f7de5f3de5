//! Cairn's initramfs: busybox (from busybox-static), e2fsprogs' `mke2fs` and `e2fsck`
//! with the libraries they link (to make and check the journaled ext4 data partition
//! before it is mounted), the kernel modules the boards of an arch need (with their
//! modules.dep closure), and an init that mounts the squashfs root read-only under a
//! writable overlay and switches to systemd. A deterministic newc cpio, gzip-compressed.

use crate::rootfs::{Kind, Rootfs};
use cairn_formats::cpio::CpioWriter;
use cairn_project::Arch;
use cairn_steps::Error;
use std::collections::{BTreeMap, BTreeSet};

/// Modules loaded at boot, for every board of the arch: QEMU's virt machine (virtio), the
/// Raspberry Pi SD controllers and the regulators they wait for, and the filesystems.
pub fn boot_modules(arch: Arch) -> Vec<&'static str> {
    let mut m = vec![
        "squashfs",
        "overlay",
        "loop",
        "virtio_blk",
        "virtio_net",
        "vfat",
        "nls_cp437",
        "nls_ascii",
        "ext4",
        // ext4 checksums with crc32c, requested from the crypto API at mount time.
        "crc32c_generic",
    ];
    match arch {
        Arch::Aarch64 | Arch::Armv7 => m.extend([
            "virtio_mmio",
            "sdhci",
            "sdhci_pltfm",
            "sdhci_iproc",
            "bcm2835",
            "fixed",
            "gpio_regulator",
        ]),
        // Common server NICs, for a root fetched over HTTP.
        Arch::X86_64 => m.extend(["e1000", "e1000e", "igb", "r8169", "tg3"]),
    }
    m
}

pub const INIT: &str = include_str!("initramfs/init.sh");

/// Programs copied from the OS image, at the same path, with the dynamic linker and every
/// library they need (found in the multiarch directories, as ld.so would).
pub const PROGRAMS: &[&str] = &["usr/sbin/e2fsck", "usr/sbin/mke2fs"];

/// e2fsck's configuration in the initramfs: a Raspberry Pi has no real-time clock, so its
/// clock reads 1970 until NTP answers, and every superblock time would look like the
/// future (which makes `e2fsck -p` stop and ask).
pub const E2FSCK_CONF: &str = "# Written by Cairn: boards without a real-time clock boot in 1970.\n[options]\n\tbroken_system_clock = 1\n";

/// The files of `programs` and of everything they link, by path in the initramfs (the same
/// as in the image; a library by its soname in the directory it was found in).
fn programs_with_libraries(
    fs: &mut Rootfs,
    arch: Arch,
    programs: &[&str],
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let t = crate::ldconfig::triplet(arch);
    let dirs = [
        format!("usr/lib/{t}"),
        format!("lib/{t}"),
        "usr/lib".to_string(),
        "lib".to_string(),
    ];
    let mut out = BTreeMap::new();
    let mut queue: Vec<(String, String)> = programs
        .iter()
        .map(|p| (p.to_string(), format!("/{p}")))
        .collect();
    let mut done = BTreeSet::new();
    while let Some((path, what)) = queue.pop() {
        if !done.insert(path.clone()) {
            continue;
        }
        let real = fs.resolve(&path).ok_or_else(|| {
            Error::msg(format!(
                "the initramfs needs {what}, which the OS image does not have: add e2fsprogs to `packages`"
            ))
        })?;
        let bytes = fs
            .read_file(&real)?
            .ok_or_else(|| Error::msg(format!("{what} (/{real}) is not a regular file")))?;
        let linkage = cairn_formats::elf::read_linkage(&bytes)
            .ok_or_else(|| Error::msg(format!("{what} (/{real}) is not an ELF file")))?;
        if let Some(interp) = &linkage.interpreter {
            queue.push((interp.trim_start_matches('/').to_string(), interp.clone()));
        }
        for lib in &linkage.needed {
            let found = dirs
                .iter()
                .map(|d| format!("{d}/{lib}"))
                .find(|p| fs.resolve(p).is_some())
                .ok_or_else(|| {
                    Error::msg(format!(
                        "{what} needs {lib}, which is in none of /{} of the OS image",
                        dirs.join(", /")
                    ))
                })?;
            queue.push((found, format!("{lib} (needed by {what})")));
        }
        out.insert(path, bytes);
    }
    Ok(out)
}

/// busybox udhcpc's hook: configure the leased address and route (used to fetch a root
/// over HTTP; flushed again before switching to systemd).
pub const UDHCPC_SCRIPT: &str = include_str!("initramfs/udhcpc.sh");

/// Every kernel release with a directory under `usr/lib/modules/`, sorted.
pub fn kernel_releases(fs: &Rootfs) -> Vec<String> {
    fs.nodes()
        .iter()
        .filter(|(p, n)| {
            matches!(n.kind, Kind::Dir)
                && p.starts_with("usr/lib/modules/")
                && p.matches('/').count() == 3
        })
        .map(|(p, _)| p["usr/lib/modules/".len()..].to_string())
        .collect()
}

/// The kernel release under `usr/lib/modules/` (exactly one is expected).
pub fn kernel_release(fs: &Rootfs, image: &str, arch: Arch) -> Result<String, Error> {
    match kernel_releases(fs).as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::msg(format!(
            "image {image} has no kernel for {arch}: add the kernel package (e.g. linux-image-{}) to `arch_packages.{arch}`",
            match arch {
                Arch::X86_64 => "amd64",
                Arch::Armv7 => "armmp",
                Arch::Aarch64 => "arm64",
            }
        ))),
        many => Err(Error::msg(format!(
            "image {image} has several kernels for {arch} ({}): keep one",
            many.join(", ")
        ))),
    }
}

/// Builds the initramfs (gzip'd newc cpio) from the OS root filesystem.
pub fn build(
    fs: &mut Rootfs,
    arch: Arch,
    kver: &str,
    modules: &[&str],
    mtime: u32,
) -> Result<Vec<u8>, Error> {
    let busybox = fs.read_file("usr/bin/busybox")?.ok_or_else(|| {
        Error::msg("the OS image has no /usr/bin/busybox: add busybox-static to `packages`")
    })?;
    let moddir = format!("usr/lib/modules/{kver}");
    let dep_text = String::from_utf8_lossy(
        &fs.read_file(&format!("{moddir}/modules.dep"))?
            .unwrap_or_default(),
    )
    .into_owned();
    let deps: BTreeMap<String, Vec<String>> = dep_text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.split_whitespace().map(str::to_string).collect(),
            )
        })
        .collect();
    let by_name: BTreeMap<String, &String> = deps
        .keys()
        .filter_map(|p| cairn_debian::kmod::module_name(p).map(|n| (n, p)))
        .collect();
    let builtin_text = String::from_utf8_lossy(
        &fs.read_file(&format!("{moddir}/modules.builtin"))?
            .unwrap_or_default(),
    )
    .into_owned();
    let builtin: BTreeSet<String> = builtin_text
        .lines()
        .filter_map(cairn_debian::kmod::module_name)
        .collect();
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut loaded = Vec::new();
    for m in modules {
        if builtin.contains(*m) {
            continue;
        }
        let path = by_name.get(*m).ok_or_else(|| {
            Error::msg(format!(
                "kernel {kver} has no module {m}, neither loadable nor built in"
            ))
        })?;
        loaded.push(m.to_string());
        wanted.insert((*path).clone());
        wanted.extend(deps[*path].iter().cloned());
    }
    // Files of the archive, by path (sorted), parents made explicit.
    enum Entry {
        Dir,
        File(Vec<u8>, u32),
        Symlink(String),
        Console,
    }
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let add = |path: String, e: Entry, entries: &mut BTreeMap<String, Entry>| {
        let mut parent = path.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            entries.entry(p.to_string()).or_insert(Entry::Dir);
            parent = p;
        }
        entries.insert(path, e);
    };
    add(
        "bin/busybox".into(),
        Entry::File(busybox, 0o755),
        &mut entries,
    );
    add(
        "bin/sh".into(),
        Entry::Symlink("busybox".into()),
        &mut entries,
    );
    add(
        "init".into(),
        Entry::File(INIT.as_bytes().to_vec(), 0o755),
        &mut entries,
    );
    add("dev/console".into(), Entry::Console, &mut entries);
    for (path, bytes) in programs_with_libraries(fs, arch, PROGRAMS)? {
        add(path, Entry::File(bytes, 0o755), &mut entries);
    }
    if let Some(conf) = fs.read_file("etc/mke2fs.conf")? {
        add(
            "etc/mke2fs.conf".into(),
            Entry::File(conf, 0o644),
            &mut entries,
        );
    }
    add(
        "etc/e2fsck.conf".into(),
        Entry::File(E2FSCK_CONF.as_bytes().to_vec(), 0o644),
        &mut entries,
    );
    // e2fsck asks whether the device is mounted.
    add(
        "etc/mtab".into(),
        Entry::Symlink("../proc/self/mounts".into()),
        &mut entries,
    );
    add(
        "etc/cairn/udhcpc.script".into(),
        Entry::File(UDHCPC_SCRIPT.as_bytes().to_vec(), 0o755),
        &mut entries,
    );
    add(
        "etc/cairn/modules".into(),
        Entry::File(format!("{}\n", loaded.join("\n")).into_bytes(), 0o644),
        &mut entries,
    );
    let mut dep_out = String::new();
    for path in &wanted {
        let bytes = fs
            .read_file(&format!("{moddir}/{path}"))?
            .ok_or_else(|| Error::msg(format!("modules.dep names {path}, which is missing")))?;
        add(
            format!("lib/modules/{kver}/{path}"),
            Entry::File(bytes, 0o644),
            &mut entries,
        );
        dep_out.push_str(&format!("{path}:"));
        for d in &deps[path] {
            dep_out.push(' ');
            dep_out.push_str(d);
        }
        dep_out.push('\n');
    }
    add(
        format!("lib/modules/{kver}/modules.dep"),
        Entry::File(dep_out.into_bytes(), 0o644),
        &mut entries,
    );
    for dir in ["proc", "sys", "run", "lower", "upper", "newroot"] {
        entries.insert(dir.into(), Entry::Dir);
    }
    let mut w = CpioWriter::new(cairn_formats::gzip::writer(Vec::new()));
    let err = |e: std::io::Error| Error::at("writing the initramfs", e);
    for (path, e) in &entries {
        match e {
            Entry::Dir => w.dir(path, 0o755, mtime).map_err(err)?,
            Entry::File(bytes, mode) => w.file(path, *mode, mtime, bytes).map_err(err)?,
            Entry::Symlink(t) => w.symlink(path, t, mtime).map_err(err)?,
            Entry::Console => w.char_device(path, 0o600, 5, 1, mtime).map_err(err)?,
        }
    }
    w.finish().map_err(err)?.finish().map_err(err)
}
