//! `/usr/lib/udev/hwdb.bin`, as udev's postinst (`systemd-hwdb --usr update`) would leave
//! it: compiled from the `*.hwdb` files of `/etc/udev/hwdb.d` and `/usr/lib/udev/hwdb.d`
//! (by file name, `/etc` winning a name both have, a file linked to `/dev/null` masked).
//! Without it the node compiles its database at first boot (`systemd-hwdb-update.service`:
//! minutes on a Pi 2, where its 90 s limit fails the unit). The bytes are
//! `cairn_formats::hwdb`'s.

use crate::rootfs::{Kind, Rootfs};
use cairn_formats::hwdb::{self, Source};
use cairn_steps::Error;
use std::collections::BTreeMap;

const DIRS: [&str; 2] = ["etc/udev/hwdb.d", "usr/lib/udev/hwdb.d"];
const BIN: &str = "usr/lib/udev/hwdb.bin";

/// Adds `hwdb.bin` when the root has hwdb sources (udev installed); `udev_control` is udev's
/// dpkg control text, whose version the file's header records. Returns systemd's warnings
/// about the sources, as `FILE:LINE: what` (the lines are skipped, as systemd skips them).
pub fn add_hwdb_bin(fs: &mut Rootfs, udev_control: Option<&str>) -> Result<Vec<String>, Error> {
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    for dir in DIRS.iter().rev() {
        for (name, kind) in fs.entries_in(dir) {
            if name.ends_with(".hwdb") {
                let path = format!("{dir}/{name}");
                match kind {
                    Kind::Symlink(target) if target == "/dev/null" => {
                        by_name.remove(&name);
                    }
                    Kind::Dir => {}
                    _ => {
                        by_name.insert(name, path);
                    }
                }
            }
        }
    }
    let mut texts = Vec::new();
    for path in by_name.values() {
        let real = fs.resolve(path).unwrap_or_else(|| path.clone());
        if let Some(text) = fs.read_file(&real)? {
            texts.push((format!("/{path}"), text));
        }
    }
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let sources: Vec<Source> = texts
        .iter()
        .map(|(path, text)| Source { path, text })
        .collect();
    let (bytes, warnings) = hwdb::compile(&sources, tool_version(udev_control));
    // systemd-hwdb writes it read-only.
    fs.add_file(BIN, &bytes, 0o444, 0, 0)?;
    Ok(warnings
        .into_iter()
        .map(|w| format!("{}:{}: {}", w.path, w.line, w.what))
        .collect())
}

/// systemd's major version from udev's `Version:` (`257.13-1~deb13u1` → 257).
fn tool_version(control: Option<&str>) -> u64 {
    control
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("Version:")))
        .map(str::trim)
        .and_then(|v| {
            let digits: String = v
                .split(':')
                .next_back()
                .unwrap_or(v)
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tool_version_is_udevs_major_version() {
        assert_eq!(
            super::tool_version(Some("Package: udev\nVersion: 257.13-1~deb13u1\n")),
            257
        );
        assert_eq!(super::tool_version(Some("Version: 1:2.0\n")), 2);
        assert_eq!(super::tool_version(None), 0);
    }
}
