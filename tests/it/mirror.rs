//! Locking against the real Debian mirror of the host's apt sources (or
//! CAIRN_DEBIAN_MIRROR), for all three arches.

use crate::support;

use std::path::Path;
use support::kill::{Moments, files_in, kill_after, timed};
use support::{copy_project, run_ok, xtask};

/// A copy of the project holding only the haproxy image, and no lock.
fn haproxy_project() -> tempfile::TempDir {
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
    project
}

#[test]
#[ignore = "slow: the Debian mirror"]
fn lock_haproxy_against_the_host_mirror_for_all_three_arches() {
    let project = haproxy_project();
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

/// `lock` killed with SIGKILL at random moments while it downloads, verifies and parses the
/// indexes into an empty cache and while it writes: `inputs.lock` is then missing or whole,
/// never cut, and the next run sweeps what the kills left and writes the undisturbed text.
#[test]
#[ignore = "slow: the Debian mirror"]
fn a_killed_lock_leaves_no_half_lock_and_no_temp_files() {
    let mut moments = Moments::new();
    let quiet = haproxy_project();
    let killed = haproxy_project();
    let lock_in = |project: &Path, cache: &Path| {
        let mut c = xtask(project);
        c.arg("--download-cache").arg(cache).arg("lock");
        c
    };
    let quiet_cache = quiet.path().join("download-cache");
    let took = timed(&mut lock_in(quiet.path(), &quiet_cache), "");
    let text = std::fs::read_to_string(quiet.path().join("inputs.lock")).unwrap();
    let cache = killed.path().join("download-cache");
    let lock = killed.path().join("inputs.lock");
    let mut cut = Vec::new();
    let mut killed_mid_work = 0;
    for _ in 0..4 {
        let at = took.mul_f64(moments.next());
        let was_running = kill_after(&mut lock_in(killed.path(), &cache), "", at);
        killed_mid_work += usize::from(was_running);
        cut.push(format!(
            "{:.2}s{}",
            at.as_secs_f64(),
            if was_running { "" } else { " (done)" }
        ));
        if let Ok(left) = std::fs::read_to_string(&lock) {
            assert_eq!(left, text, "a lock killed at {at:?} left a cut inputs.lock");
        }
        // The next round starts from this round's cache: it must not trust a cut download.
    }
    eprintln!(
        "lock: undisturbed {:.2}s, killed at {}",
        took.as_secs_f64(),
        cut.join(", ")
    );
    assert!(killed_mid_work >= 1, "no kill landed while lock worked");
    // What a kill inside the write leaves (the window is too short to hit by chance).
    std::fs::write(
        killed.path().join(".inputs.lock-AbC123"),
        &text[..text.len() / 2],
    )
    .unwrap();
    run_ok(&mut lock_in(killed.path(), &cache));
    // Two runs against a live mirror: a mirror update between them would differ, so the
    // undisturbed side locks again right after.
    run_ok(&mut lock_in(quiet.path(), &quiet_cache));
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap(),
        std::fs::read_to_string(quiet.path().join("inputs.lock")).unwrap(),
        "the lock after kills is the undisturbed lock"
    );
    assert_eq!(
        files_in(killed.path(), ".inputs.lock-"),
        Vec::<String>::new()
    );
    assert_eq!(files_in(killed.path(), ".tmp"), Vec::<String>::new());
    assert_eq!(files_in(&cache.join("tmp"), ""), Vec::<String>::new());
}
