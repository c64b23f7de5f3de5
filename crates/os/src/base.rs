//! The root filesystem of an OS image: packages unpacked, then what their maintainer
//! scripts would have done, done declaratively (users and groups from base-passwd and
//! sysusers.d, enabled units, the CA bundle, dpkg's status, an empty machine-id,
//! modules.dep), written as one squashfs shared by every node of that (image, arch).

use crate::maintainer::{
    Accounts, apply_alternatives, dpkg_status, enable_unit, parse_alternatives,
};
use crate::modules::depmod;
use crate::rootfs::Rootfs;
use cairn_formats::Digest;
use cairn_inputs::fetch::{Cache, Download};
use cairn_inputs::lockfile::{LockedPackage, Lockfile};
use cairn_inputs::mirror;
use cairn_oci::Descriptor;
use cairn_project::{Arch, ImageKind, ImageSpec, Project};
use cairn_steps::error::Context as _;
use cairn_steps::{BUILDER_VERSION, Context, Error, Output, Step};
use cairn_store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The outputs of an OS image's base step for one arch.
pub struct OsResult {
    pub image: String,
    pub arch: Arch,
    pub kernel_release: String,
    pub squashfs: Descriptor,
    pub kernel: Descriptor,
    pub initramfs: Descriptor,
    /// Raspberry Pi firmware (`/usr/lib/raspi-firmware/*`) and the kernel's Broadcom device
    /// trees, by file name: what an SD card's boot partition is made of.
    pub boot_files: BTreeMap<String, Descriptor>,
    /// The image's `source_date_epoch`, as the lock resolved it: what the node built on
    /// this base uses, without asking the lock again.
    pub epoch: u64,
    pub cached: bool,
}

/// What a node adds to its image's base OS: the cluster's Kubernetes binaries (pinned
/// downloads, fetched into the download cache when missing) and their units. Shared by
/// every node of the cluster on that arch.
#[derive(Debug, Clone, Default)]
pub struct OsExtras {
    /// Path in the image, the pinned download, mode.
    pub binaries: Vec<(String, Download, u32)>,
    /// Path in the image and text (mode 0644).
    pub texts: Vec<(String, String)>,
    /// Path in the image and target.
    pub symlinks: Vec<(String, String)>,
}

impl OsResult {
    pub fn to_json(&self, store: &std::path::Path) -> serde_json::Value {
        let blob = |b: &Descriptor| serde_json::json!({"digest": b.digest.to_string(), "size": b.size, "path": store.join("blobs/sha256").join(b.digest.hex()).display().to_string()});
        serde_json::json!({
            "kernel_release": self.kernel_release,
            "squashfs": blob(&self.squashfs),
            "kernel": blob(&self.kernel),
            "initramfs": blob(&self.initramfs),
            "boot_files": self.boot_files.iter().map(|(name, b)| (name.clone(), blob(b))).collect::<serde_json::Map<_, _>>(),
            "cached": self.cached,
        })
    }

    fn from_record(image: &str, arch: Arch, epoch: u64, r: OsRecord, cached: bool) -> OsResult {
        OsResult {
            image: image.into(),
            arch,
            epoch,
            kernel_release: r.kernel_release,
            squashfs: r.squashfs,
            kernel: r.kernel,
            initramfs: r.initramfs,
            boot_files: r.boot_files,
            cached,
        }
    }
}

/// What the `os-base` step records.
#[derive(Serialize, Deserialize)]
struct OsRecord {
    kernel_release: String,
    squashfs: Descriptor,
    kernel: Descriptor,
    initramfs: Descriptor,
    boot_files: BTreeMap<String, Descriptor>,
}

impl Output for OsRecord {
    fn blobs(&self) -> Vec<Digest> {
        [&self.squashfs, &self.kernel, &self.initramfs]
            .into_iter()
            .chain(self.boot_files.values())
            .map(|d| d.digest)
            .collect()
    }
    fn sizes(&self) -> Vec<(Digest, u64)> {
        [&self.squashfs, &self.kernel, &self.initramfs]
            .into_iter()
            .chain(self.boot_files.values())
            .map(|d| (d.digest, d.size))
            .collect()
    }
}

/// Assembles the OS root filesystem of `spec` for `arch`.
pub fn assemble(
    store: &Store,
    cache: &Cache,
    spec: &ImageSpec,
    packages: &[&LockedPackage],
    arch: Arch,
    epoch: u64,
    extras: &OsExtras,
) -> Result<Rootfs, Error> {
    let mut fs = Rootfs::new(&store.root().join("tmp"))?;
    let mut controls = BTreeMap::new();
    let mut alternatives = Vec::new();
    let debs = crate::rootfs::debs(cache, packages.iter().copied())?;
    let infos = fs.add_debs(&debs, crate::parallel::threads())?;
    for (p, info) in packages.iter().zip(infos) {
        controls.insert(p.name.clone(), info.control);
        if let Some((_, script)) = info.control_files.iter().find(|(n, _)| n == "postinst") {
            alternatives.extend(parse_alternatives(&String::from_utf8_lossy(script)));
        }
    }
    fs.add_merged_usr_links();
    apply_alternatives(&mut fs, &alternatives)?;

    // Users and groups: base-passwd's static ids, then sysusers.d, then the spec.
    let mut accounts = Accounts::default();
    let master_passwd = fs.read_file("usr/share/base-passwd/passwd.master")?;
    let master_group = fs.read_file("usr/share/base-passwd/group.master")?;
    match (master_passwd, master_group) {
        (Some(p), Some(g)) => {
            accounts.parse_master(&String::from_utf8_lossy(&p), &String::from_utf8_lossy(&g))
        }
        _ => accounts.parse_master(
            "root:x:0:0:root:/root:/bin/sh\n",
            "root:x:0:\nshadow:x:42:\n",
        ),
    }
    for file in fs.files_under("usr/lib/sysusers.d") {
        if file.ends_with(".conf") {
            let text =
                String::from_utf8_lossy(&fs.read_file(&file)?.unwrap_or_default()).into_owned();
            accounts.sysusers(&text, &file)?;
        }
    }
    for g in &spec.groups {
        accounts.add_group(&g.name, Some(g.gid))?;
    }
    for u in &spec.users {
        accounts.add_group(&u.name, Some(u.gid))?;
        accounts.add_user(&u.name, Some(u.uid), &u.comment, &u.home, &u.shell)?;
    }
    let shadow_gid = u64::from(accounts.gid_of("shadow").unwrap_or(0));
    for (path, text, mode, gid) in accounts.files(epoch, shadow_gid) {
        fs.add_file(path, text.as_bytes(), mode, 0, gid)?;
    }

    fs.add_file(
        "/var/lib/dpkg/status",
        dpkg_status(&controls).as_bytes(),
        0o644,
        0,
        0,
    )?;
    fs.add_file("/etc/machine-id", b"", 0o444, 0, 0)?;
    fs.add_ca_bundle()?;
    depmod(&mut fs)?;
    for d in &spec.dirs {
        fs.add_dir(&d.path, d.mode.0, u64::from(d.uid), u64::from(d.gid))?;
    }
    for f in &spec.files {
        let bytes = crate::container::file_bytes(spec, f)?;
        fs.add_file(
            &f.path,
            &bytes,
            f.mode.0,
            u64::from(f.uid),
            u64::from(f.gid),
        )?;
    }
    for s in &spec.symlinks {
        fs.add_symlink(&s.path, &s.target)?;
    }
    for (path, download, mode) in &extras.binaries {
        let digest = &download.sha256;
        fs.add_file_from(path, &cache.path(digest), digest, *mode, 0, 0)
            .context(|| format!("adding {path}"))?;
    }
    for (path, text) in &extras.texts {
        fs.add_file(path, text.as_bytes(), 0o644, 0, 0)?;
    }
    for (path, target) in &extras.symlinks {
        fs.add_symlink(path, target)?;
    }
    // After every file is in place, as dpkg's ldconfig trigger runs last.
    crate::ldconfig::add_ld_so_cache(&mut fs, arch)?;
    // As udev's postinst, after the spec's files (which may add hwdb sources).
    let udev = controls.get("udev").map(String::as_str);
    for warning in crate::hwdb::add_hwdb_bin(&mut fs, udev)? {
        eprintln!("warning: {warning} (skipped, as systemd-hwdb skips it)");
    }
    // What systemd-update-done leaves after a first boot: /etc is up to date with /usr,
    // whose caches and users were made above. No node then runs ldconfig.service or
    // systemd-sysusers.service at boot (`ConditionNeedsUpdate=/etc`): ldconfig alone took
    // 417 s of a Pi 2's first boot. Its mtime is the epoch, as /usr's.
    fs.add_file("/etc/.updated", update_done(epoch).as_bytes(), 0o644, 0, 0)?;
    // After the spec's own files, which may add units.
    for unit in &spec.services {
        enable_unit(&mut fs, unit)?;
    }
    if let Some(target) = &spec.default_target {
        fs.add_symlink(
            "/etc/systemd/system/default.target",
            &format!("/usr/lib/systemd/system/{target}"),
        )?;
    }
    Ok(fs)
}

/// The step and the inputs it declares.
fn step(
    spec: &ImageSpec,
    packages: &[&LockedPackage],
    arch: Arch,
    epoch: u64,
    extras: &OsExtras,
) -> Result<Step, Error> {
    let mut files = Vec::new();
    for f in &spec.files {
        let bytes = crate::container::file_bytes(spec, f)?;
        files.push(format!(
            "{} {} {:o} {} {}",
            f.path,
            Digest::of(&bytes),
            f.mode.0,
            f.uid,
            f.gid
        ));
    }
    let doc = serde_json::json!({
        "step": "os-base",
        "initramfs_init": Digest::of(crate::initramfs::INIT.as_bytes()).to_string(),
        "initramfs_udhcpc": Digest::of(crate::initramfs::UDHCPC_SCRIPT.as_bytes()).to_string(),
        "initramfs_modules": crate::initramfs::boot_modules(arch),
        "builder": BUILDER_VERSION,
        "arch": arch.as_str(),
        "source_date_epoch": epoch,
        "packages": packages.iter().map(|p| format!("{} {}", p.name, p.sha256)).collect::<Vec<_>>(),
        "users": spec.users.iter().map(|u| format!("{} {} {} {} {} {}", u.name, u.uid, u.gid, u.comment, u.home, u.shell)).collect::<Vec<_>>(),
        "groups": spec.groups.iter().map(|g| format!("{} {} {}", g.name, g.gid, g.members.join(","))).collect::<Vec<_>>(),
        "files": files,
        "dirs": spec.dirs.iter().map(|d| format!("{} {:o} {} {}", d.path, d.mode.0, d.uid, d.gid)).collect::<Vec<_>>(),
        "symlinks": spec.symlinks.iter().map(|s| format!("{} {}", s.path, s.target)).collect::<Vec<_>>(),
        "services": spec.services,
        "default_target": spec.default_target,
        "compression": "zstd",
        "extra_binaries": extras.binaries.iter().map(|(p, d, mode)| format!("{p} {} {mode:o}", d.sha256)).collect::<Vec<_>>(),
        "extra_symlinks": extras.symlinks.iter().map(|(p, t)| format!("{p} {t}")).collect::<Vec<_>>(),
        "extra_texts": extras.texts.iter().map(|(p, t)| format!("{p} {}", Digest::of(t.as_bytes()))).collect::<Vec<_>>(),
        "boot_files": "raspi-firmware+broadcom-dtbs",
    });
    Ok(Step::new(format!("os-base {} {arch}", spec.name), &doc))
}

/// Builds (or finds in the action cache) the base OS squashfs of `image` for `arch`.
pub fn build_os(
    ctx: &Context,
    project: &Project,
    lock: &Lockfile,
    image: &str,
    arch: Arch,
) -> Result<OsResult, Error> {
    build_os_with(ctx, project, lock, image, arch, &OsExtras::default())
}

/// [`build_os`] with files added for a cluster (its Kubernetes binaries).
pub fn build_os_with(
    ctx: &Context,
    project: &Project,
    lock: &Lockfile,
    image: &str,
    arch: Arch,
    extras: &OsExtras,
) -> Result<OsResult, Error> {
    let spec = project
        .image(image)
        .ok_or_else(|| Error::msg(format!("no image named {image:?} in images/")))?;
    if spec.kind != ImageKind::Os {
        return Err(Error::msg(format!(
            "{} is a container image; an OS image has kind = \"os\"",
            spec.path.display()
        )));
    }
    if !spec.arches.contains(&arch) {
        return Err(Error::msg(format!(
            "image {image} is not built for {arch}: add it to `arches` in {}",
            spec.path.display()
        )));
    }
    // The lock is read once here; what it pins is handed down.
    let locked = lock.image_for(spec)?;
    let epoch = locked.epoch(spec);
    let packages = lock.packages(locked, arch)?;
    let step = step(spec, &packages, arch, epoch, extras)?;
    let store = ctx.open_store()?;
    let (record, cached) = cairn_steps::step::run(ctx, &store, &step, || {
        build_base(ctx, &store, spec, &packages, arch, epoch, extras)
    })?;
    Ok(OsResult::from_record(image, arch, epoch, record, cached))
}

/// The `os-base` step's work: the packages fetched, the root assembled, its boot files,
/// kernel, initramfs and squashfs written to the store.
fn build_base(
    ctx: &Context,
    store: &Store,
    spec: &ImageSpec,
    packages: &[&LockedPackage],
    arch: Arch,
    epoch: u64,
    extras: &OsExtras,
) -> Result<OsRecord, Error> {
    let image = spec.name.as_str();
    let cache = Cache::new(&ctx.cache);
    let mut downloads = Vec::new();
    for p in packages {
        let sha = Digest::from_hex(&p.sha256)
            .map_err(|e| Error::at(format!("inputs.lock: package {}", p.name), e))?;
        if !cache.has(&sha) {
            let mirror = mirror::resolve(spec.mirror.as_deref())?;
            downloads.push(Download {
                name: format!("{} {} {}", p.name, p.version, p.arch),
                url: format!("{mirror}/{}", p.path),
                sha256: sha,
                size: Some(p.size),
            });
        }
    }
    cache.fetch_all(&downloads, ctx.progress)?;
    let binaries: Vec<Download> = extras
        .binaries
        .iter()
        .filter(|(_, d, _)| !cache.has(&d.sha256))
        .map(|(_, d, _)| d.clone())
        .collect();
    cache.fetch_all(&binaries, ctx.progress).map_err(|e| {
        Error::msg(format!(
            "{e}\nwhere this machine cannot reach that URL, download the file elsewhere and add it with `cargo xtask prefetch URL --file PATH` (checked against the lock's sha256)"
        ))
    })?;
    let spinner =
        cairn_steps::progress::spinner(ctx.progress, &format!("assembling {image} for {arch}"));
    let mut fs = assemble(store, &cache, spec, packages, arch, epoch, extras)
        .context(|| format!("assembling {image} for {arch}"))?;
    let kver = crate::initramfs::kernel_release(&fs, image, arch)?;
    let mut boot_files = BTreeMap::new();
    let mut boot_paths: Vec<String> = fs.files_under("usr/lib/raspi-firmware");
    boot_paths.extend(
        fs.files_under(&format!("usr/lib/linux-image-{kver}"))
            .into_iter()
            .filter(|p| cairn_project::board::is_pi_dtb(p.rsplit('/').next().unwrap_or(""))),
    );
    for path in boot_paths {
        let name = path.rsplit('/').next().unwrap_or(&path).to_string();
        if let Some(bytes) = fs.read_file(&path)? {
            let digest = store.write_blob(&bytes)?;
            boot_files.insert(name, (digest, bytes.len() as u64));
        }
    }
    let kernel_path = format!("boot/vmlinuz-{kver}");
    let kernel = fs.read_file(&kernel_path)?.ok_or_else(|| {
        Error::msg(format!(
            "image {image} for {arch}: the kernel package has no /{kernel_path}"
        ))
    })?;
    let kernel = store
        .write_blob(&kernel)
        .map(|d| (d, kernel.len() as u64))?;
    spinner.set_message(format!("writing the {image} initramfs for {arch}"));
    let initramfs = crate::initramfs::build(
        &mut fs,
        arch,
        &kver,
        &crate::initramfs::boot_modules(arch),
        epoch as u32,
    )?;
    let initramfs = store
        .write_blob(&initramfs)
        .map(|d| (d, initramfs.len() as u64))?;
    spinner.set_message(format!("writing the {image} squashfs for {arch}"));
    let tmp =
        tempfile::NamedTempFile::new_in(store.root().join("tmp")).map_err(|e| Error::other(e))?;
    let (tmp, _) = fs.write_squashfs(std::io::BufWriter::new(tmp), epoch as u32)?;
    let tmp = tmp.into_inner().map_err(|e| Error::other(e))?;
    // Hashed from the page cache and renamed into place: not written a second time.
    let squashfs = cairn_store::hash_reader(std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(tmp.path()).map_err(|e| Error::other(e))?,
    ))
    .map_err(|e| Error::at(tmp.path().display(), e))?;
    let staged = tmp.into_temp_path();
    store.adopt(&staged, &squashfs.0)?;
    spinner.finish_and_clear();
    let blob = |(digest, size): (Digest, u64)| Descriptor::blob(digest, size);
    Ok(OsRecord {
        kernel_release: kver,
        squashfs: blob(squashfs),
        kernel: blob(kernel),
        initramfs: blob(initramfs),
        boot_files: boot_files
            .into_iter()
            .map(|(name, b)| (name, blob(b)))
            .collect(),
    })
}

/// `/etc/.updated` as systemd-update-done writes it: /usr's modification time, in
/// nanoseconds, for which /etc's updates were made (read only when the seconds agree).
fn update_done(epoch: u64) -> String {
    format!(
        "# Written by Cairn at build time, as systemd-update-done would: /etc holds the\n\
         # caches and users made for this /usr. See man:systemd-update-done.service(8).\n\
         TIMESTAMP_NSEC={}\n",
        u128::from(epoch) * 1_000_000_000
    )
}
