//! Locking against the real Debian mirror of the host's apt sources (or
//! CAIRN_DEBIAN_MIRROR), for all three arches.

mod support;

use support::{copy_project, run_ok, xtask};

#[test]
fn lock_haproxy_against_the_host_mirror_for_all_three_arches() {
    let project = tempfile::tempdir().unwrap();
    copy_project(project.path());
    // Only the haproxy image (nodes reference the OS image, so drop them too).
    for entry in std::fs::read_dir(project.path().join("images")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") && !p.ends_with("haproxy.toml") {
            std::fs::remove_file(p).unwrap();
        }
    }
    for entry in std::fs::read_dir(project.path().join("nodes")).unwrap() {
        let p = entry.unwrap().path();
        if !p.ends_with("cluster.toml") {
            std::fs::remove_file(p).unwrap();
        }
    }
    std::fs::remove_file(project.path().join("inputs.lock")).unwrap();
    run_ok(xtask(project.path()).arg("lock"));
    let text = std::fs::read_to_string(project.path().join("inputs.lock")).unwrap();
    let lock: toml::Value = toml::from_str(&text).unwrap();
    let images = lock["image"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["name"].as_str(), Some("haproxy"));
    assert_eq!(images[0]["suite"].as_str(), Some("trixie"));
    let arches: Vec<&str> = images[0]["arch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["arch"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["x86_64", "armv7", "aarch64"]);
    let packages = lock["package"].as_array().unwrap();
    for (arch, debian) in [
        ("x86_64", "amd64"),
        ("armv7", "armhf"),
        ("aarch64", "arm64"),
    ] {
        let names: Vec<&str> = images[0]["arch"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["arch"].as_str() == Some(arch))
            .unwrap()["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        for needed in ["haproxy=", "libc6=", "libssl3t64=", "ca-certificates="] {
            assert!(
                names.iter().any(|n| n.starts_with(needed)),
                "{arch}: no {needed} in {names:?}"
            );
        }
        assert!(
            !names.iter().any(|n| n.starts_with("adduser=")),
            "excluded package locked for {arch}"
        );
        let haproxy = packages
            .iter()
            .find(|p| p["name"].as_str() == Some("haproxy") && p["arch"].as_str() == Some(debian))
            .unwrap_or_else(|| panic!("no haproxy {debian} package entry"));
        let path = haproxy["path"].as_str().unwrap();
        assert!(
            path.starts_with("pool/main/h/haproxy/haproxy_")
                && path.ends_with(&format!("_{debian}.deb")),
            "{path}"
        );
        let sha = haproxy["sha256"].as_str().unwrap();
        assert!(
            sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
            "{sha}"
        );
        assert!(haproxy["size"].as_integer().unwrap() > 100_000);
    }
    // No mirror host name is written into the lock.
    let mirror = cairn_build_mirror();
    assert!(!text.contains(&mirror), "the lock names the mirror");
    assert!(!text.contains("http"), "the lock holds no URL for packages");
    // Locking again changes nothing.
    run_ok(xtask(project.path()).arg("lock"));
    assert_eq!(
        std::fs::read_to_string(project.path().join("inputs.lock")).unwrap(),
        text
    );
}

fn cairn_build_mirror() -> String {
    std::env::var("CAIRN_DEBIAN_MIRROR")
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            let text = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
                .unwrap_or_default();
            text.lines()
                .find_map(|l| l.strip_prefix("URIs:"))
                .map(|u| u.trim().to_string())
                .unwrap_or_else(|| "http".into())
        })
}
