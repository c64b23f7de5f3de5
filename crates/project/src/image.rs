//! `images/<name>.toml`: an OS or container image recipe.

use crate::node::{find_key, find_table_key};
use crate::values::{Arch, Mode, Name};
use crate::{SpecError, stem};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// A container image (OCI image index, one manifest per arch).
    Container,
    /// A node operating system (kernel, systemd, ...), booted by nodes.
    Os,
}

/// Runtime settings of a container image (the OCI image config).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSettings {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub name: String,
    pub uid: u32,
    /// Primary group id; a group of the user's name is created with it unless declared.
    pub gid: u32,
    #[serde(default = "default_home")]
    pub home: String,
    #[serde(default = "default_shell")]
    pub shell: String,
    #[serde(default)]
    pub comment: String,
}

fn default_home() -> String {
    "/nonexistent".into()
}

fn default_shell() -> String {
    "/usr/sbin/nologin".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub name: String,
    pub gid: u32,
    #[serde(default)]
    pub members: Vec<String>,
}

/// A file placed into the image: `content` inline or `source` (relative to `images/`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub source: Option<PathBuf>,
    #[serde(default = "default_file_mode")]
    pub mode: Mode,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

fn default_file_mode() -> Mode {
    Mode(0o644)
}

/// A file fetched from a URL and pinned by sha256 in the lock (`cargo xtask lock` fetches
/// and hashes it once, as nix-prefetch-url does). In `url`, `{arch}` becomes Cairn's arch,
/// `{debian_arch}` Debian's and `{go_arch}` Go's (`amd64`, `arm`, `arm64`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadSpec {
    pub name: String,
    pub url: String,
    /// Where the file goes in the image.
    pub path: String,
    #[serde(default = "default_file_mode")]
    pub mode: Mode,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

impl DownloadSpec {
    pub fn url_for(&self, arch: Arch) -> String {
        let go_arch = match arch {
            Arch::X86_64 => "amd64",
            Arch::Armv7 => "arm",
            Arch::Aarch64 => "arm64",
        };
        self.url
            .replace("{arch}", arch.as_str())
            .replace("{debian_arch}", arch.debian())
            .replace("{go_arch}", go_arch)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SymlinkSpec {
    pub path: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirSpec {
    pub path: String,
    #[serde(default = "default_dir_mode")]
    pub mode: Mode,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

fn default_dir_mode() -> Mode {
    Mode(0o755)
}

fn default_suite() -> String {
    "trixie".into()
}

fn default_components() -> Vec<String> {
    vec!["main".into()]
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub path: PathBuf,
    pub kind: ImageKind,
    /// Debian suite the packages come from.
    #[serde(default = "default_suite")]
    pub suite: String,
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    pub arches: Vec<Arch>,
    /// Requested packages; the lock pins their closure (Depends and Pre-Depends).
    pub packages: Vec<String>,
    /// Extra packages for one arch only (kernels, firmware).
    #[serde(default)]
    pub arch_packages: BTreeMap<Arch, Vec<String>>,
    /// Packages never pulled into the closure even when something depends on them.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// A Debian mirror URL; otherwise `CAIRN_DEBIAN_MIRROR`, then the host's apt sources.
    #[serde(default)]
    pub mirror: Option<String>,
    /// An OpenPGP keyring for the suite's InRelease; default: the host's debian-archive-keyring.
    #[serde(default)]
    pub keyring: Option<PathBuf>,
    /// Timestamp of every file; default: the Date of the suite's Release file at lock time.
    #[serde(default)]
    pub source_date_epoch: Option<u64>,
    #[serde(default)]
    pub config: Option<ContainerSettings>,
    #[serde(default)]
    pub users: Vec<UserSpec>,
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    #[serde(default)]
    pub dirs: Vec<DirSpec>,
    #[serde(default)]
    pub symlinks: Vec<SymlinkSpec>,
    #[serde(default)]
    pub downloads: Vec<DownloadSpec>,
    /// systemd units to enable (OS images), as `systemctl enable` would from their [Install].
    #[serde(default)]
    pub services: Vec<String>,
    /// The systemd default target (OS images).
    #[serde(default)]
    pub default_target: Option<String>,
}

impl ImageSpec {
    pub fn load(path: &Path) -> Result<ImageSpec, SpecError> {
        let source = std::fs::read_to_string(path).map_err(|e| SpecError::io(path, e))?;
        ImageSpec::parse(path, &source)
    }

    pub fn parse(path: &Path, source: &str) -> Result<ImageSpec, SpecError> {
        let name = stem(path);
        if let Err(msg) = name.parse::<Name>() {
            return Err(SpecError::at(
                path,
                source,
                None,
                format!("bad file name: {msg}"),
            ));
        }
        let mut spec: ImageSpec =
            toml::from_str(source).map_err(|e| SpecError::from_toml(path, source, &e))?;
        spec.name = name;
        spec.path = path.to_path_buf();
        let err = |key: &str, msg: String| SpecError::at(path, source, find_key(source, key), msg);
        let err_in = |table: &str, n: usize, key: &str, msg: String| {
            SpecError::at(path, source, find_table_key(source, table, n, key), msg)
        };
        if spec.arches.is_empty() {
            return Err(err(
                "arches",
                "no arches: list at least one of x86_64, armv7, aarch64".into(),
            ));
        }
        let mut arches = spec.arches.clone();
        arches.sort();
        arches.dedup();
        if arches.len() != spec.arches.len() {
            return Err(err("arches", "an arch is listed twice".into()));
        }
        if spec.packages.is_empty() {
            return Err(err(
                "packages",
                "no packages: list at least one Debian package".into(),
            ));
        }
        for (key, list) in [("packages", &spec.packages), ("exclude", &spec.exclude)]
            .into_iter()
            .chain(spec.arch_packages.values().map(|l| ("arch_packages", l)))
        {
            if let Some(p) = list.iter().find(|p| !valid_package_name(p)) {
                return Err(err(key, format!("{p:?} is not a Debian package name")));
            }
        }
        if let Some(arch) = spec.arch_packages.keys().find(|a| !spec.arches.contains(a)) {
            return Err(err("arch_packages", format!("{arch} is not in `arches`")));
        }
        for unit in spec.services.iter().chain(&spec.default_target) {
            let ok = unit.rsplit_once('.').is_some_and(|(n, t)| {
                !n.is_empty()
                    && ["service", "socket", "timer", "target", "path", "mount"].contains(&t)
            }) && !unit.contains('/');
            if !ok {
                return Err(err(
                    if spec.services.contains(unit) {
                        "services"
                    } else {
                        "default_target"
                    },
                    format!("{unit:?} is not a systemd unit name like ssh.service"),
                ));
            }
        }
        if spec.kind == ImageKind::Container
            && (!spec.services.is_empty() || spec.default_target.is_some())
        {
            return Err(err(
                "services",
                "`services` and `default_target` are for OS images (kind = \"os\")".into(),
            ));
        }
        if spec.kind == ImageKind::Os && spec.config.is_some() {
            return Err(err(
                "config",
                "an OS image has no container [config]".into(),
            ));
        }
        for (i, f) in spec.files.iter().enumerate() {
            if f.content.is_some() == f.source.is_some() {
                return Err(err_in(
                    "files",
                    i,
                    "path",
                    format!("file {}: give exactly one of `content` or `source`", f.path),
                ));
            }
            check_abs(&f.path).map_err(|m| err_in("files", i, "path", m))?;
            if let Some(src) = &f.source {
                if src.is_absolute()
                    || src
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(err_in(
                        "files",
                        i,
                        "source",
                        format!(
                            "file {}: source {} must be a path inside {}",
                            f.path,
                            src.display(),
                            spec.dir().display()
                        ),
                    ));
                }
                let full = spec.dir().join(src);
                if !full.is_file() {
                    return Err(err_in(
                        "files",
                        i,
                        "source",
                        format!(
                            "{} does not exist (paths are relative to {})",
                            full.display(),
                            spec.dir().display()
                        ),
                    ));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, d) in spec.downloads.iter().enumerate() {
            check_abs(&d.path).map_err(|m| err_in("downloads", i, "path", m))?;
            if !(d.url.starts_with("http://")
                || d.url.starts_with("https://")
                || d.url.starts_with("file://"))
            {
                return Err(err_in(
                    "downloads",
                    i,
                    "url",
                    format!(
                        "download {}: {:?} must be an http://, https:// or file:// URL",
                        d.name, d.url
                    ),
                ));
            }
            if !names.insert(d.name.as_str()) {
                return Err(err_in(
                    "downloads",
                    i,
                    "name",
                    format!("download {:?} is declared twice", d.name),
                ));
            }
        }
        for (i, s) in spec.symlinks.iter().enumerate() {
            check_abs(&s.path).map_err(|m| err_in("symlinks", i, "path", m))?;
        }
        for (i, d) in spec.dirs.iter().enumerate() {
            check_abs(&d.path).map_err(|m| err_in("dirs", i, "path", m))?;
        }
        let mut user_names = std::collections::BTreeSet::new();
        let mut uids = std::collections::BTreeSet::new();
        for (i, u) in spec.users.iter().enumerate() {
            if u.name.is_empty() || u.name.contains([':', '\n', ' ']) {
                return Err(err_in(
                    "users",
                    i,
                    "name",
                    format!("invalid user name {:?}", u.name),
                ));
            }
            if u.name == "root"
                || u.uid == 0
                || !user_names.insert(u.name.as_str())
                || !uids.insert(u.uid)
            {
                return Err(err_in(
                    "users",
                    i,
                    "uid",
                    format!(
                        "user {} (uid {}) is declared twice or clashes with root",
                        u.name, u.uid
                    ),
                ));
            }
        }
        let mut group_names = std::collections::BTreeSet::new();
        let mut gids = std::collections::BTreeSet::new();
        for (i, g) in spec.groups.iter().enumerate() {
            if g.name.is_empty()
                || g.name.contains([':', '\n', ' ', ','])
                || g.name == "root"
                || !group_names.insert(g.name.as_str())
                || !gids.insert(g.gid)
                || g.gid == 0
            {
                return Err(err_in(
                    "groups",
                    i,
                    "gid",
                    format!(
                        "group {} (gid {}) is invalid, declared twice or clashes with root",
                        g.name, g.gid
                    ),
                ));
            }
        }
        if let Some(c) = &spec.config {
            for port in &c.exposed_ports {
                let (num, proto) = port.split_once('/').unwrap_or((port, "tcp"));
                if num.parse::<u16>().map_or(true, |n| n == 0)
                    || !["tcp", "udp", "sctp"].contains(&proto)
                {
                    return Err(err(
                        "exposed_ports",
                        format!("{port:?} is not a port like \"6443/tcp\""),
                    ));
                }
            }
            if let Some(user) = &c.user {
                let name = user.split(':').next().unwrap_or("");
                let known = name == "root"
                    || name.parse::<u32>().is_ok()
                    || spec.users.iter().any(|u| u.name == name);
                if !known {
                    return Err(err(
                        "user",
                        format!(
                            "user {name:?} is not declared: add it under [[users]] or use a numeric uid"
                        ),
                    ));
                }
            }
        }
        let word = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !word(&spec.suite) {
            return Err(err(
                "suite",
                format!("{:?} is not a suite name like \"trixie\"", spec.suite),
            ));
        }
        if let Some(c) = spec.components.iter().find(|c| !word(c)) {
            return Err(err(
                "components",
                format!("{c:?} is not a component name like \"main\""),
            ));
        }
        if let Some(m) = &spec.mirror {
            if !(m.starts_with("http://") || m.starts_with("https://") || m.starts_with("file://"))
            {
                return Err(err(
                    "mirror",
                    format!("mirror {m:?} must be an http://, https:// or file:// URL"),
                ));
            }
        }
        Ok(spec)
    }

    /// The directory that holds the spec (`source` paths are relative to it).
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Hash of everything that decides what the lock holds for this image: when it changes,
    /// the lock is stale.
    /// The packages requested for one arch: `packages` plus `arch_packages[arch]`.
    pub fn packages_for(&self, arch: Arch) -> Vec<String> {
        let mut all = self.packages.clone();
        all.extend(self.arch_packages.get(&arch).into_iter().flatten().cloned());
        all
    }

    pub fn lock_inputs(&self) -> String {
        let value = serde_json::json!({
            "suite": self.suite,
            "components": self.components,
            "arches": self.arches,
            "packages": self.packages,
            "arch_packages": self.arch_packages,
            "exclude": self.exclude,
            "source_date_epoch": self.source_date_epoch,
            "downloads": self.downloads.iter().map(|d| (&d.name, &d.url)).collect::<Vec<_>>(),
        });
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(value.to_string().as_bytes()))
        )
    }
}

fn check_abs(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.split('/').any(|c| c == ".." || c == ".") || path.len() < 2 {
        return Err(format!(
            "path {path:?} must be absolute, without `.` or `..`"
        ));
    }
    Ok(())
}

fn valid_package_name(p: &str) -> bool {
    p.len() >= 2
        && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}
