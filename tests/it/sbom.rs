//! `sbom`: SPDX 2.3 documents for the example images and nodes, validated by the SPDX
//! project's own validator (`pyspdxtools`, which `cargo xtask test` installs), checked
//! against the lock, and byte-identical when made in another directory under another time
//! zone, locale, umask and clock.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use support::{copy_project, json, run_err, run_ok, xtask};

fn validate(doc: &Path) {
    let tool = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("pyspdxtools"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("pyspdxtools (the SPDX validator, PyPI package spdx-tools) is missing: `cargo xtask test` installs it into target/test-tools/spdx and puts it on PATH")
        });
    let out = Command::new(tool).arg("-i").arg(doc).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !said.contains("invalid"),
        "{}: {said}",
        doc.display()
    );
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn sboms_are_valid_spdx_made_from_the_lock_and_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    copy_project(&a);
    let lock: toml::Value =
        toml::from_str(&std::fs::read_to_string(a.join("inputs.lock")).unwrap()).unwrap();
    let packages: BTreeMap<(String, String, String), String> = lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_string();
            ((s("name"), s("version"), s("arch")), s("sha256"))
        })
        .collect();

    for (name, args) in [
        ("haproxy", vec![]),
        ("haproxy", vec!["--arch", "armv7"]),
        ("pi-worker", vec![]),
        ("pi-legacy", vec![]),
        ("x86-storage", vec![]),
    ] {
        let file = dir
            .path()
            .join(format!("{name}{}.spdx.json", args.join("")));
        run_ok(
            xtask(&a)
                .args(["sbom", name, "--output"])
                .arg(&file)
                .args(&args),
        );
        validate(&file);
        let doc = json(&std::fs::read_to_string(&file).unwrap());
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(
            doc["creationInfo"]["creators"][0],
            format!("Tool: {}", cairn_steps::BUILDER_VERSION)
        );
        let pkgs = doc["packages"].as_array().unwrap();
        let root = &pkgs[0];
        assert_eq!(root["name"], name);
        // Every package is in the lock, with its sha256 and a purl naming it exactly.
        let mut debs = 0;
        for p in &pkgs[1..] {
            let sha = p["checksums"][0]["checksumValue"].as_str().unwrap();
            let locator = p["externalRefs"][0]["referenceLocator"].as_str();
            match locator {
                Some(purl) => {
                    debs += 1;
                    let arch = purl
                        .split("?arch=")
                        .nth(1)
                        .unwrap()
                        .split('&')
                        .next()
                        .unwrap();
                    let key = (
                        p["name"].as_str().unwrap().to_string(),
                        p["versionInfo"].as_str().unwrap().to_string(),
                        arch.to_string(),
                    );
                    assert_eq!(packages.get(&key).map(String::as_str), Some(sha), "{key:?}");
                    assert!(
                        purl.starts_with(&format!("pkg:deb/debian/{}@", key.0))
                            && purl.ends_with("&distro=trixie"),
                        "{purl}"
                    );
                }
                None => {
                    // A URL input: the node's k3s binary, pinned from upstream.
                    assert!(
                        p["name"].as_str().unwrap().starts_with("kubernetes/k3s-"),
                        "{p}"
                    );
                    let url = p["downloadLocation"].as_str().unwrap();
                    assert!(
                        url.starts_with(
                            "https://github.com/k3s-io/k3s/releases/download/v1.32.7%2Bk3s1/"
                        ),
                        "{url}"
                    );
                    let pinned = lock["url"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|u| u["url"].as_str() == Some(url))
                        .unwrap();
                    assert_eq!(pinned["sha256"].as_str(), Some(sha));
                }
            }
        }
        let rels = doc["relationships"].as_array().unwrap();
        assert_eq!(
            rels.len(),
            pkgs.len(),
            "DESCRIBES plus one CONTAINS per package"
        );
        assert_eq!(rels[0]["relationshipType"], "DESCRIBES");
        match name {
            "haproxy" if args.is_empty() => {
                // Three arches' packages (arch `all` ones once).
                for arch in ["amd64", "armhf", "arm64"] {
                    assert!(
                        pkgs.iter().any(|p| p["name"] == "libc6"
                            && p["externalRefs"][0]["referenceLocator"]
                                .as_str()
                                .unwrap()
                                .contains(&format!("arch={arch}&"))),
                        "libc6 {arch}"
                    );
                }
                let haproxy = pkgs[1..].iter().find(|p| p["name"] == "haproxy").unwrap();
                assert_eq!(
                    haproxy["licenseDeclared"], "GPL-2.0-or-later",
                    "from its DEP-5 copyright file"
                );
            }
            "haproxy" => assert!(pkgs[1..].iter().all(|p| {
                let purl = p["externalRefs"][0]["referenceLocator"].as_str().unwrap();
                purl.contains("arch=armhf&") || purl.contains("arch=all&")
            })),
            _ => {
                assert_eq!(root["primaryPackagePurpose"], "OPERATING-SYSTEM");
                assert_eq!(pkgs.len() - 1 - debs, 1, "one k3s binary");
                assert!(pkgs.iter().any(|p| p["name"] == "systemd"));
            }
        }
    }
    let err = run_err(xtask(&a).args(["sbom", "node-os"]));
    assert!(
        err.contains("node-os is an OS image: ask for the SBOM of a node"),
        "{err}"
    );
    let err = run_err(xtask(&a).args(["sbom", "pi-worker", "--arch", "x86_64"]));
    assert!(err.contains("node pi-worker is aarch64"), "{err}");

    // Another checkout, another environment: the same bytes.
    let b = dir.path().join("elsewhere/deeper/b");
    copy_project(&b);
    for name in ["haproxy", "pi-worker"] {
        let first = run_ok(xtask(&a).args(["sbom", name]));
        let second = run_ok(
            support::xtask_varied(&b, "Pacific/Chatham", "fr_FR.UTF-8", "077", Some("+1234d"))
                .args(["sbom", name]),
        );
        assert_eq!(first, second, "{name}: the SBOM depends on the environment");
    }
}
