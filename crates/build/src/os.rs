//! The root filesystem of an OS image: packages unpacked, then what their maintainer
//! scripts would have done, done declaratively (users and groups from base-passwd and
//! sysusers.d, enabled units, the CA bundle, dpkg's status, an empty machine-id,
//! modules.dep), written as one squashfs shared by every node of that (image, arch).

use crate::error::Context as _;
use crate::fetch::{Cache, Download};
use crate::lockfile::Lockfile;
use crate::rootfs::{Kind, Rootfs};
use crate::{BUILDER_VERSION, Context, Error, mirror};
use cairn_formats::Digest;
use cairn_spec::{Arch, ImageKind, ImageSpec, Project};
use cairn_store::{ActionRecord, Store};
use std::collections::BTreeMap;
use std::io::Read;

/// The outputs of an OS image's base step for one arch.
pub struct OsResult {
    pub image: String,
    pub arch: Arch,
    pub kernel_release: String,
    pub squashfs: (Digest, u64),
    pub kernel: (Digest, u64),
    pub initramfs: (Digest, u64),
    /// Raspberry Pi firmware (`/usr/lib/raspi-firmware/*`) and the kernel's Broadcom device
    /// trees, by file name: what an SD card's boot partition is made of.
    pub boot_files: BTreeMap<String, (Digest, u64)>,
    pub cached: bool,
}

/// What a node adds to its image's base OS: the cluster's Kubernetes binaries (from the
/// download cache) and their units. Shared by every node of the cluster on that arch.
#[derive(Debug, Clone, Default)]
pub struct OsExtras {
    /// Path in the image, cached file's digest and size, mode.
    pub binaries: Vec<(String, Digest, u64, u32)>,
    /// Path in the image and text (mode 0644).
    pub texts: Vec<(String, String)>,
}

impl OsResult {
    pub fn to_json(&self, store: &std::path::Path) -> serde_json::Value {
        let blob = |(d, size): (Digest, u64)| serde_json::json!({"digest": d.to_string(), "size": size, "path": store.join("blobs/sha256").join(d.hex()).display().to_string()});
        serde_json::json!({
            "kernel_release": self.kernel_release,
            "squashfs": blob(self.squashfs),
            "kernel": blob(self.kernel),
            "initramfs": blob(self.initramfs),
            "boot_files": self.boot_files.iter().map(|(name, b)| (name.clone(), blob(*b))).collect::<serde_json::Map<_, _>>(),
            "cached": self.cached,
        })
    }

    fn from_record(image: &str, arch: Arch, o: &serde_json::Value) -> Option<OsResult> {
        let blob = |k: &str| {
            Some((
                o[k]["digest"].as_str()?.parse().ok()?,
                o[k]["size"].as_u64()?,
            ))
        };
        Some(OsResult {
            image: image.into(),
            arch,
            kernel_release: o["kernel_release"].as_str()?.to_string(),
            squashfs: blob("squashfs")?,
            kernel: blob("kernel")?,
            initramfs: blob("initramfs")?,
            boot_files: o["boot_files"]
                .as_object()?
                .iter()
                .map(|(name, b)| {
                    Some((
                        name.clone(),
                        (b["digest"].as_str()?.parse().ok()?, b["size"].as_u64()?),
                    ))
                })
                .collect::<Option<_>>()?,
            cached: true,
        })
    }
}

/// Users and groups, in file order.
#[derive(Default)]
struct Accounts {
    passwd: Vec<[String; 7]>,
    group: Vec<(String, u32, Vec<String>)>,
    shadow_locked: BTreeMap<String, &'static str>,
}

impl Accounts {
    fn uid_used(&self, id: u32) -> bool {
        self.passwd.iter().any(|p| p[2] == id.to_string())
    }
    fn gid_used(&self, id: u32) -> bool {
        self.group.iter().any(|g| g.1 == id)
    }
    fn gid_of(&self, name: &str) -> Option<u32> {
        self.group.iter().find(|g| g.0 == name).map(|g| g.1)
    }
    /// systemd-sysusers' choice: the highest free system id, from 999 down.
    fn allocate(&self, both: bool) -> Result<u32, Error> {
        (100..=999)
            .rev()
            .find(|id| !self.gid_used(*id) && (!both || !self.uid_used(*id)))
            .ok_or_else(|| Error::msg("no free system id left between 100 and 999"))
    }

    fn add_group(&mut self, name: &str, gid: Option<u32>) -> Result<u32, Error> {
        if let Some(g) = self.gid_of(name) {
            return Ok(g);
        }
        let gid = match gid {
            Some(g) if !self.gid_used(g) => g,
            _ => self.allocate(false)?,
        };
        self.group.push((name.to_string(), gid, Vec::new()));
        Ok(gid)
    }

    fn add_user(
        &mut self,
        name: &str,
        id: Option<u32>,
        gecos: &str,
        home: &str,
        shell: &str,
    ) -> Result<(), Error> {
        if self.passwd.iter().any(|p| p[0] == name) {
            return Ok(());
        }
        let uid = match id {
            Some(u) if !self.uid_used(u) => u,
            _ => match self.gid_of(name) {
                Some(g) if !self.uid_used(g) => g,
                _ => self.allocate(true)?,
            },
        };
        let gid = self.add_group(name, Some(uid))?;
        self.passwd.push([
            name.into(),
            "x".into(),
            uid.to_string(),
            gid.to_string(),
            gecos.into(),
            home.into(),
            shell.into(),
        ]);
        self.shadow_locked.insert(name.to_string(), "!*");
        Ok(())
    }

    fn parse_master(&mut self, passwd: &str, group: &str) {
        for line in passwd.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() == 7 {
                self.passwd.push(std::array::from_fn(|i| {
                    if i == 1 {
                        "x".to_string()
                    } else {
                        f[i].to_string()
                    }
                }));
                self.shadow_locked.insert(f[0].to_string(), "*");
            }
        }
        for line in group.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split(':').collect();
            if let (4, Ok(gid)) = (f.len(), f.get(2).map_or(Ok(0), |g| g.parse::<u32>())) {
                let members = f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect();
                self.group.push((f[0].to_string(), gid, members));
            }
        }
    }

    /// Applies a sysusers.d file (`u`, `g` and `m` lines; ranges are ignored).
    fn sysusers(&mut self, text: &str, file: &str) -> Result<(), Error> {
        for line in text.lines() {
            let words = split_quoted(line);
            let Some(kind) = words.first() else { continue };
            if kind.starts_with('#') {
                continue;
            }
            let arg = |i: usize| words.get(i).map(String::as_str).filter(|w| *w != "-");
            let name =
                arg(1).ok_or_else(|| Error::msg(format!("{file}: line {line:?} has no name")))?;
            let id = arg(2)
                .and_then(|i| i.split(':').next())
                .and_then(|i| i.parse::<u32>().ok());
            match kind.trim_end_matches('!') {
                "u" => self.add_user(
                    name,
                    id,
                    arg(3).unwrap_or(""),
                    arg(4).unwrap_or("/"),
                    arg(5).unwrap_or("/usr/sbin/nologin"),
                )?,
                "g" => {
                    self.add_group(name, id)?;
                }
                "m" => {
                    let group = arg(2)
                        .ok_or_else(|| Error::msg(format!("{file}: line {line:?} has no group")))?
                        .to_string();
                    self.add_group(&group, None)?;
                    if let Some(g) = self.group.iter_mut().find(|g| g.0 == group) {
                        if !g.2.iter().any(|m| m == name) {
                            g.2.push(name.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn files(&self, epoch: u64, shadow_gid: u64) -> Vec<(&'static str, String, u32, u64)> {
        let days = epoch / 86_400;
        let passwd: String = self
            .passwd
            .iter()
            .map(|p| format!("{}\n", p.join(":")))
            .collect();
        let group: String = self
            .group
            .iter()
            .map(|g| format!("{}:x:{}:{}\n", g.0, g.1, g.2.join(",")))
            .collect();
        let shadow: String = self
            .passwd
            .iter()
            .map(|p| {
                format!(
                    "{}:{}:{days}:0:99999:7:::\n",
                    p[0],
                    self.shadow_locked.get(&p[0]).copied().unwrap_or("*")
                )
            })
            .collect();
        let gshadow: String = self
            .group
            .iter()
            .map(|g| format!("{}:*::{}\n", g.0, g.2.join(",")))
            .collect();
        vec![
            ("/etc/passwd", passwd, 0o644, 0),
            ("/etc/group", group, 0o644, 0),
            ("/etc/shadow", shadow, 0o640, shadow_gid),
            ("/etc/gshadow", gshadow, 0o640, shadow_gid),
        ]
    }
}

fn split_quoted(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// `/var/lib/dpkg/status` for the unpacked packages (sorted by name).
pub fn dpkg_status(controls: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for control in controls.values() {
        let mut lines = control.trim_end().lines();
        if let Some(first) = lines.next() {
            out.push_str(first);
            out.push_str("\nStatus: install ok installed\n");
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
            out.push('\n');
        }
    }
    out
}

/// One `update-alternatives --install` from a maintainer script: the master
/// (link, name, path), its priority, and its slaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    pub link: String,
    pub name: String,
    pub path: String,
    pub priority: i64,
    pub slaves: Vec<(String, String, String)>,
}

/// The `update-alternatives --install` calls of a postinst whose arguments are literal
/// (no shell variables), continued lines joined.
pub fn parse_alternatives(script: &str) -> Vec<Alternative> {
    let joined = script.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let Some(at) = line.find("update-alternatives") else {
            continue;
        };
        let words: Vec<&str> = line[at..]
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|w| !w.is_empty())
            .collect();
        let Some(i) = words.iter().position(|w| *w == "--install") else {
            continue;
        };
        let args = &words[i + 1..];
        if args.len() < 4 || args[..4].iter().any(|a| a.contains('$')) {
            continue;
        }
        let Ok(priority) = args[3].parse() else {
            continue;
        };
        let mut alt = Alternative {
            link: args[0].into(),
            name: args[1].into(),
            path: args[2].into(),
            priority,
            slaves: Vec::new(),
        };
        let mut rest = &args[4..];
        while rest.len() >= 4 && rest[0] == "--slave" {
            if !rest[1..4].iter().any(|a| a.contains('$')) {
                alt.slaves
                    .push((rest[1].into(), rest[2].into(), rest[3].into()));
            }
            rest = &rest[4..];
        }
        out.push(alt);
    }
    out
}

/// What `update-alternatives` would leave in automatic mode: for each name, the
/// alternative with the highest priority whose target is in the image, as symlinks
/// `link -> /etc/alternatives/name -> path` (slaves likewise).
fn apply_alternatives(fs: &mut Rootfs, alternatives: &[Alternative]) -> Result<(), Error> {
    let mut best: BTreeMap<&str, &Alternative> = BTreeMap::new();
    let present = |fs: &Rootfs, path: &str| {
        let p = path.trim_start_matches('/');
        fs.nodes().contains_key(p) || fs.nodes().contains_key(&format!("usr/{p}"))
    };
    for a in alternatives {
        if !present(fs, &a.path) {
            continue;
        }
        match best.get(a.name.as_str()) {
            Some(b) if b.priority >= a.priority => {}
            _ => {
                best.insert(&a.name, a);
            }
        }
    }
    for a in best.values() {
        let mut links = vec![(a.link.as_str(), a.name.as_str(), a.path.as_str())];
        links.extend(
            a.slaves
                .iter()
                .filter(|(_, _, path)| present(fs, path))
                .map(|(l, n, p)| (l.as_str(), n.as_str(), p.as_str())),
        );
        for (link, name, path) in links {
            let state = format!("/etc/alternatives/{name}");
            fs.add_symlink(&state, path)?;
            if !present(fs, link) {
                fs.add_symlink(link, &state)?;
            }
        }
    }
    Ok(())
}

/// `systemctl enable` for `unit`: symlinks from its [Install] section.
fn enable_unit(fs: &mut Rootfs, unit: &str) -> Result<(), Error> {
    let (template, instance) = match unit.split_once('@') {
        Some((base, rest)) if !rest.starts_with('.') => (
            format!("{base}@.{}", rest.rsplit('.').next().unwrap_or("service")),
            Some(unit),
        ),
        _ => (unit.to_string(), None),
    };
    let file = ["usr/lib/systemd/system", "etc/systemd/system"]
        .iter()
        .map(|d| format!("{d}/{template}"))
        .find(|p| fs.nodes().contains_key(p));
    let Some(file) = file else {
        return Err(Error::msg(format!(
            "service {unit}: no unit file {template} in the image: add the package that ships it"
        )));
    };
    let text = match fs.read_file(&file)? {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => {
            // A symlink (an alias): follow it once.
            let Some(Kind::Symlink(target)) = fs.nodes().get(&file).map(|n| n.kind.clone()) else {
                return Err(Error::msg(format!(
                    "service {unit}: {file} is not a unit file"
                )));
            };
            let target = format!(
                "usr/lib/systemd/system/{}",
                target.rsplit('/').next().unwrap_or(&target)
            );
            String::from_utf8_lossy(&fs.read_file(&target)?.unwrap_or_default()).into_owned()
        }
    };
    let mut in_install = false;
    let mut links = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            for v in value.split_whitespace() {
                match key.trim() {
                    "WantedBy" => links.push(format!(
                        "etc/systemd/system/{v}.wants/{}",
                        instance.unwrap_or(unit)
                    )),
                    "RequiredBy" => links.push(format!(
                        "etc/systemd/system/{v}.requires/{}",
                        instance.unwrap_or(unit)
                    )),
                    "Alias" => links.push(format!("etc/systemd/system/{v}")),
                    _ => {}
                }
            }
        }
    }
    if links.is_empty() {
        return Err(Error::msg(format!(
            "service {unit}: {file} has no [Install] section; it cannot be enabled"
        )));
    }
    let target = format!("/{file}");
    for link in links {
        fs.add_symlink(&link, &target)?;
    }
    Ok(())
}

/// `modules.dep` and `modules.alias` for every kernel under `usr/lib/modules/`.
fn depmod(fs: &mut Rootfs) -> Result<Vec<String>, Error> {
    let kernels = crate::initramfs::kernel_releases(fs);
    for release in &kernels {
        let dir = &format!("usr/lib/modules/{release}");
        let mut modules = Vec::new();
        for path in fs.files_under(dir) {
            let rel = path[dir.len() + 1..].to_string();
            if cairn_debian::kmod::module_name(&rel).is_none() {
                continue;
            }
            let bytes = fs.read_file(&path)?.unwrap_or_default();
            let elf = decompress_module(&rel, &bytes)?;
            let info = cairn_debian::kmod::modinfo(&elf)
                .map_err(|e| Error::msg(format!("/{path}: {e}")))?;
            modules.push(cairn_debian::kmod::ModuleInfo { path: rel, info });
        }
        let (dep, alias) =
            cairn_debian::kmod::depmod(&modules).map_err(|e| Error::msg(format!("/{dir}: {e}")))?;
        fs.add_file(&format!("{dir}/modules.dep"), dep.as_bytes(), 0o644, 0, 0)?;
        fs.add_file(
            &format!("{dir}/modules.alias"),
            alias.as_bytes(),
            0o644,
            0,
            0,
        )?;
    }
    Ok(kernels)
}

fn decompress_module(path: &str, bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let r = if path.ends_with(".xz") {
        liblzma::read::XzDecoder::new_multi_decoder(bytes).read_to_end(&mut out)
    } else if path.ends_with(".zst") {
        zstd_decode(bytes, &mut out)
    } else if path.ends_with(".gz") {
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)
    } else {
        out.extend_from_slice(bytes);
        Ok(out.len())
    };
    r.map_err(|e| Error::msg(format!("decompressing module {path}: {e}")))?;
    Ok(out)
}

fn zstd_decode(bytes: &[u8], out: &mut Vec<u8>) -> std::io::Result<usize> {
    let decoded = zstd::stream::decode_all(bytes)?;
    out.extend_from_slice(&decoded);
    Ok(decoded.len())
}

/// Assembles the OS root filesystem of `spec` for `arch`.
pub fn assemble(
    store: &Store,
    cache: &Cache,
    spec: &ImageSpec,
    lock: &Lockfile,
    arch: Arch,
    epoch: u64,
    extras: &OsExtras,
) -> Result<Rootfs, Error> {
    let locked = lock.image_for(spec)?;
    let packages = lock.packages(locked, arch)?;
    let mut fs = Rootfs::new(&store.root().join("tmp"))?;
    let mut controls = BTreeMap::new();
    let mut alternatives = Vec::new();
    for p in &packages {
        let sha = Digest::from_hex(&p.sha256)
            .map_err(|e| Error::msg(format!("inputs.lock: package {}: {e}", p.name)))?;
        let info = fs
            .add_deb(&cache.path(&sha), &p.name, &sha)
            .context(|| format!("unpacking {} {}", p.name, p.version))?;
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
        let bytes = crate::image::file_bytes(spec, f)?;
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
    for (path, digest, _, mode) in &extras.binaries {
        fs.add_file_from(path, &cache.path(digest), digest, *mode, 0, 0)
            .context(|| format!("adding {path}"))?;
    }
    for (path, text) in &extras.texts {
        fs.add_file(path, text.as_bytes(), 0o644, 0, 0)?;
    }
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

fn step_key(
    spec: &ImageSpec,
    lock: &Lockfile,
    arch: Arch,
    epoch: u64,
    extras: &OsExtras,
) -> Result<Digest, Error> {
    let locked = lock.image_for(spec)?;
    let packages = lock.packages(locked, arch)?;
    let mut files = Vec::new();
    for f in &spec.files {
        let bytes = crate::image::file_bytes(spec, f)?;
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
        "extra_binaries": extras.binaries.iter().map(|(p, d, size, mode)| format!("{p} {d} {size} {mode:o}")).collect::<Vec<_>>(),
        "extra_texts": extras.texts.iter().map(|(p, t)| format!("{p} {}", Digest::of(t.as_bytes()))).collect::<Vec<_>>(),
        "boot_files": "raspi-firmware+broadcom-dtbs",
    });
    Ok(Digest::of(
        &cairn_formats::json::to_canonical_vec(&doc).expect("json"),
    ))
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
    let locked = lock.image_for(spec)?;
    let epoch = spec.source_date_epoch.unwrap_or(locked.source_date_epoch);
    let key = step_key(spec, lock, arch, epoch, extras)?;
    let store = Store::open(&ctx.store, || {
        eprintln!(
            "waiting for another cairn process to release {}",
            ctx.store.join(".lock").display()
        )
    })?;
    if let Some(record) = crate::remote_cache::get(ctx, &store, &key) {
        if let Some(r) = OsResult::from_record(image, arch, &record.output) {
            return Ok(r);
        }
    }
    let cache = Cache::new(&ctx.cache);
    let mut downloads = Vec::new();
    for p in lock.packages(locked, arch)? {
        let sha = Digest::from_hex(&p.sha256)
            .map_err(|e| Error::msg(format!("inputs.lock: package {}: {e}", p.name)))?;
        if !cache.has(&sha) {
            let mirror = mirror::resolve(spec.mirror.as_deref())?;
            downloads.push(Download {
                name: format!("{} {} {}", p.name, p.version, p.arch),
                url: format!("{mirror}/{}", p.path),
                sha256: sha,
                size: p.size,
            });
        }
    }
    cache.fetch_all(&downloads, ctx.progress)?;
    let spinner = crate::progress::spinner(ctx.progress, &format!("assembling {image} for {arch}"));
    for (path, digest, _, _) in &extras.binaries {
        if !cache.has(digest) {
            return Err(Error::msg(format!(
                "{path} ({digest}) is pinned in inputs.lock but not in the download cache {}: run `cargo xtask prefetch URL --file PATH` again",
                ctx.cache.display()
            )));
        }
    }
    let mut fs = assemble(&store, &cache, spec, lock, arch, epoch, extras)
        .context(|| format!("assembling {image} for {arch}"))?;
    let kver = crate::initramfs::kernel_release(&fs, image, arch)?;
    let mut boot_files = BTreeMap::new();
    let mut boot_paths: Vec<String> = fs.files_under("usr/lib/raspi-firmware");
    boot_paths.extend(
        fs.files_under(&format!("usr/lib/linux-image-{kver}"))
            .into_iter()
            .filter(|p| {
                let name = p.rsplit('/').next().unwrap_or("");
                (name.starts_with("bcm27") || name.starts_with("bcm28")) && name.ends_with(".dtb")
            }),
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
        &kver,
        &crate::initramfs::boot_modules(arch),
        epoch as u32,
    )?;
    let initramfs = store
        .write_blob(&initramfs)
        .map(|d| (d, initramfs.len() as u64))?;
    spinner.set_message(format!("writing the {image} squashfs for {arch}"));
    let tmp = tempfile::NamedTempFile::new_in(store.root().join("tmp"))
        .map_err(|e| Error::msg(e.to_string()))?;
    let (tmp, _) = fs.write_squashfs(std::io::BufWriter::new(tmp), epoch as u32)?;
    let tmp = tmp.into_inner().map_err(|e| Error::msg(e.to_string()))?;
    let mut w = store.blob_writer()?;
    std::io::copy(
        &mut std::fs::File::open(tmp.path()).map_err(|e| Error::msg(e.to_string()))?,
        &mut w,
    )
    .map_err(|e| Error::msg(e.to_string()))?;
    let squashfs = w.finish(None)?;
    spinner.finish_and_clear();
    let result = OsResult {
        image: image.into(),
        arch,
        kernel_release: kver,
        squashfs,
        kernel,
        initramfs,
        boot_files,
        cached: false,
    };
    let mut output = result.to_json(std::path::Path::new(""));
    output.as_object_mut().expect("object").remove("cached");
    crate::remote_cache::put(
        ctx,
        &store,
        &key,
        &ActionRecord {
            step: format!("os-base {image} {arch}"),
            blobs: [squashfs.0, kernel.0, initramfs.0]
                .into_iter()
                .chain(result.boot_files.values().map(|b| b.0))
                .collect(),
            output,
        },
    )?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternatives_parse_from_debian_postinsts() {
        let iptables = "if [ \"$1\" = configure ]; then\n\tupdate-alternatives \\\n\t  --install /usr/sbin/iptables iptables /usr/sbin/iptables-legacy 10 \\\n\t  --slave /usr/sbin/iptables-save iptables-save /usr/sbin/iptables-legacy-save\n        update-alternatives \\\n          --install /usr/sbin/iptables iptables /usr/sbin/iptables-nft 20 \\\n          --slave /usr/sbin/iptables-save iptables-save /usr/sbin/iptables-nft-save\n  update-alternatives --install /usr/bin/x x \"$DIR/x\" 5\nfi\n";
        let alts = parse_alternatives(iptables);
        assert_eq!(alts.len(), 2, "{alts:?}");
        assert_eq!(
            alts[1],
            Alternative {
                link: "/usr/sbin/iptables".into(),
                name: "iptables".into(),
                path: "/usr/sbin/iptables-nft".into(),
                priority: 20,
                slaves: vec![(
                    "/usr/sbin/iptables-save".into(),
                    "iptables-save".into(),
                    "/usr/sbin/iptables-nft-save".into()
                )],
            }
        );
        assert_eq!(alts[0].priority, 10);
    }
}
