//! `inputs.lock`: every external input pinned by sha256, written in a stable, sorted,
//! one-item-per-line TOML so that diffs read well.

use cairn_project::{Arch, ImageSpec};
use cairn_steps::Error;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    /// Debian architecture or `all`.
    pub arch: String,
    /// Path relative to the mirror root.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedArch {
    pub arch: Arch,
    /// `name=version` of every package in the closure, sorted.
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    pub name: String,
    /// The spec's lock inputs hash when this was locked; a different one means stale.
    pub inputs: String,
    pub suite: String,
    pub source_date_epoch: u64,
    pub arch: Vec<LockedArch>,
}

impl LockedImage {
    /// The `SOURCE_DATE_EPOCH` of every build from this image (its layers, base OS,
    /// nodes and SBOMs): the spec's own when it sets one, else the one locked.
    pub fn epoch(&self, spec: &ImageSpec) -> u64 {
        spec.source_date_epoch.unwrap_or(self.source_date_epoch)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedUrl {
    pub name: String,
    pub url: String,
    /// Unknown for a pin taken from upstream's published checksum files (`lock` pins
    /// those without downloading the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockfile {
    pub version: u32,
    #[serde(default)]
    pub image: Vec<LockedImage>,
    #[serde(default)]
    pub package: Vec<LockedPackage>,
    #[serde(default)]
    pub url: Vec<LockedUrl>,
}

impl Lockfile {
    pub fn read(path: &Path) -> Result<Option<Lockfile>, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::at(path.display(), e)),
        };
        let lock: Lockfile = toml::from_str(&text).map_err(|e| {
            // Where, as line:column, when the parser knows.
            let at = e
                .span()
                .map(|span| {
                    let before = text.get(..span.start).unwrap_or(&text);
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!(":{line}:{column}")
                })
                .unwrap_or_default();
            Error::msg(format!(
                "{}{at} is not a valid lock file ({}): restore it from version control (`git checkout -- inputs.lock`), or run `cargo xtask lock` to pin the inputs again (that needs the mirror)",
                path.display(),
                e.message().trim_end()
            ))
        })?;
        if lock.version != VERSION {
            return Err(Error::msg(format!(
                "{} has version {}, this Cairn writes {VERSION}: run `cargo xtask lock`",
                path.display(),
                lock.version
            )));
        }
        Ok(Some(lock))
    }

    /// The locked image for `spec`, checked to be current.
    pub fn image_for(&self, spec: &ImageSpec) -> Result<&LockedImage, Error> {
        let stale = |why: &str| {
            Error::msg(format!(
                "inputs.lock is stale for image {} ({why}): run `cargo xtask lock`",
                spec.name
            ))
        };
        let image = self
            .image
            .iter()
            .find(|i| i.name == spec.name)
            .ok_or_else(|| stale("not locked yet"))?;
        if image.inputs != spec.lock_inputs() {
            return Err(stale(&format!(
                "{} changed since it was locked",
                spec.path.display()
            )));
        }
        Ok(image)
    }

    /// The packages of `image` for `arch`, in name order.
    pub fn packages(&self, image: &LockedImage, arch: Arch) -> Result<Vec<&LockedPackage>, Error> {
        let locked = image.arch.iter().find(|a| a.arch == arch).ok_or_else(|| {
            Error::msg(format!(
                "inputs.lock has no {arch} packages for image {}: run `cargo xtask lock`",
                image.name
            ))
        })?;
        locked
            .packages
            .iter()
            .map(|nv| {
                let (name, version) = nv.split_once('=').unwrap_or((nv, ""));
                self.package
                    .iter()
                    .find(|p| p.name == name && p.version == version && (p.arch == arch.debian() || p.arch == "all"))
                    .ok_or_else(|| Error::msg(format!("inputs.lock lists {nv} for {} {arch} but has no [[package]] entry for it: run `cargo xtask lock`", image.name)))
            })
            .collect()
    }

    /// Canonical text: sorted, one item per line.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# Written by `cargo xtask lock`: every input pinned by sha256. Do not edit by hand.\n",
        );
        let _ = writeln!(out, "version = {}", self.version);
        let mut images = self.image.clone();
        images.sort_by(|a, b| a.name.cmp(&b.name));
        for image in &images {
            let _ = write!(
                out,
                "\n[[image]]\nname = {}\ninputs = {}\nsuite = {}\nsource_date_epoch = {}\n",
                q(&image.name),
                q(&image.inputs),
                q(&image.suite),
                image.source_date_epoch
            );
            let mut arches = image.arch.clone();
            arches.sort_by_key(|a| a.arch);
            for arch in &arches {
                let _ = write!(
                    out,
                    "\n[[image.arch]]\narch = {}\npackages = [\n",
                    q(arch.arch.as_str())
                );
                let mut packages = arch.packages.clone();
                packages.sort();
                for p in &packages {
                    let _ = writeln!(out, "  {},", q(p));
                }
                out.push_str("]\n");
            }
        }
        let mut packages = self.package.clone();
        packages.sort();
        packages.dedup();
        for p in &packages {
            let _ = write!(
                out,
                "\n[[package]]\nname = {}\nversion = {}\narch = {}\npath = {}\nsize = {}\nsha256 = {}\n",
                q(&p.name),
                q(&p.version),
                q(&p.arch),
                q(&p.path),
                p.size,
                q(&p.sha256)
            );
        }
        let mut urls = self.url.clone();
        urls.sort();
        for u in &urls {
            let _ = write!(
                out,
                "\n[[url]]\nname = {}\nurl = {}\n",
                q(&u.name),
                q(&u.url)
            );
            if let Some(size) = u.size {
                let _ = writeln!(out, "size = {size}");
            }
            let _ = writeln!(out, "sha256 = {}", q(&u.sha256));
        }
        out
    }
}

/// A TOML basic string.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What changed from `old` to `new`, one line per change, for people: each image's
/// packages per arch (a new version, a package added or dropped), images added or dropped,
/// and URL pins (a new sha256, a pin added or dropped).
pub fn changes(old: &Lockfile, new: &Lockfile) -> Vec<String> {
    use std::collections::BTreeMap;
    let mut out = Vec::new();
    let versions = |a: &LockedArch| -> BTreeMap<String, String> {
        a.packages
            .iter()
            .filter_map(|p| p.split_once('='))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    };
    for image in &new.image {
        let Some(before) = old.image.iter().find(|i| i.name == image.name) else {
            out.push(format!("+ image {}", image.name));
            continue;
        };
        for arch in &image.arch {
            let now = versions(arch);
            let was = before
                .arch
                .iter()
                .find(|a| a.arch == arch.arch)
                .map(versions)
                .unwrap_or_default();
            let at = format!("{} {}", image.name, arch.arch);
            for (name, v) in &now {
                match was.get(name) {
                    None => out.push(format!("{at}: + {name} {v}")),
                    Some(w) if w != v => out.push(format!("{at}: {name} {w} -> {v}")),
                    Some(_) => {}
                }
            }
            for (name, w) in &was {
                if !now.contains_key(name) {
                    out.push(format!("{at}: - {name} {w}"));
                }
            }
        }
        for arch in &before.arch {
            if !image.arch.iter().any(|a| a.arch == arch.arch) {
                out.push(format!("{} {}: - arch", image.name, arch.arch));
            }
        }
    }
    for image in &old.image {
        if !new.image.iter().any(|i| i.name == image.name) {
            out.push(format!("- image {}", image.name));
        }
    }
    for u in &new.url {
        match old.url.iter().find(|o| o.name == u.name) {
            None => out.push(format!("+ url {} ({})", u.name, u.url)),
            Some(o) if o.sha256 != u.sha256 || o.url != u.url => out.push(format!(
                "url {}: {} sha256:{} -> {} sha256:{}",
                u.name,
                o.url,
                o.sha256.chars().take(12).collect::<String>(),
                u.url,
                u.sha256.chars().take(12).collect::<String>()
            )),
            Some(_) => {}
        }
    }
    for o in &old.url {
        if !new.url.iter().any(|u| u.name == o.name) {
            out.push(format!("- url {}", o.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_canonical() {
        let lock = Lockfile {
            version: VERSION,
            image: vec![LockedImage {
                name: "b".into(),
                inputs: "sha256:00".into(),
                suite: "trixie".into(),
                source_date_epoch: 7,
                arch: vec![
                    LockedArch {
                        arch: Arch::Aarch64,
                        packages: vec!["z=1".into(), "a=2".into()],
                    },
                    LockedArch {
                        arch: Arch::X86_64,
                        packages: vec!["a=2".into()],
                    },
                ],
            }],
            package: vec![LockedPackage {
                name: "a\"q".into(),
                version: "2".into(),
                arch: "all".into(),
                path: "pool/main/a/a_2_all.deb".into(),
                size: 3,
                sha256: "ab".repeat(32),
            }],
            url: vec![],
        };
        let text = lock.to_toml();
        assert!(
            text.contains("packages = [\n  \"a=2\",\n  \"z=1\",\n]"),
            "{text}"
        );
        assert!(text.find("arch = \"x86_64\"").unwrap() < text.find("arch = \"aarch64\"").unwrap());
        let back: Lockfile = toml::from_str(&text).unwrap();
        assert_eq!(back.to_toml(), text);
        assert_eq!(back.package, lock.package);
    }

    #[test]
    fn changes_name_each_package_image_and_pin() {
        let arch = |pkgs: &[&str]| LockedArch {
            arch: Arch::X86_64,
            packages: pkgs.iter().map(|p| p.to_string()).collect(),
        };
        let image = |name: &str, pkgs: &[&str]| LockedImage {
            name: name.into(),
            inputs: String::new(),
            suite: "bookworm".into(),
            source_date_epoch: 1,
            arch: vec![arch(pkgs)],
        };
        let url = |sha: &str| LockedUrl {
            name: "kubernetes/k3s".into(),
            url: "https://x/k3s".into(),
            size: None,
            sha256: sha.into(),
        };
        let old = Lockfile {
            version: VERSION,
            image: vec![
                image("app", &["libc6=2.36-9", "zlib1g=1:1.2.13", "gone=1"]),
                image("old", &[]),
            ],
            package: vec![],
            url: vec![url("aaaaaaaaaaaaaaaa")],
        };
        let new = Lockfile {
            version: VERSION,
            image: vec![
                image("app", &["libc6=2.36-10", "zlib1g=1:1.2.13", "added=2"]),
                image("new", &[]),
            ],
            package: vec![],
            url: vec![url("bbbbbbbbbbbbbbbb")],
        };
        assert_eq!(
            changes(&old, &new),
            [
                "app x86_64: + added 2",
                "app x86_64: libc6 2.36-9 -> 2.36-10",
                "app x86_64: - gone 1",
                "+ image new",
                "- image old",
                "url kubernetes/k3s: https://x/k3s sha256:aaaaaaaaaaaa -> https://x/k3s sha256:bbbbbbbbbbbb",
            ]
        );
        assert!(changes(&new, &new).is_empty());
    }
}
