//! Kubernetes pins from upstream's published checksum files, against a loopback server laid
//! out as upstream's releases are (k3s's GitHub release assets with `sha256sum-<arch>.txt`,
//! dl.k8s.io's `<binary>.sha256`): `lock` pins a version without downloading a binary,
//! `build-node` then fetches and checks the binaries, and every failure names the URL.

use crate::support;

use std::path::Path;
use support::server::{Fault, Server};
use support::{copy_example, copy_project, json, run_err, run_ok, sha256_hex, stand_in, xtask};

/// Lays out a k3s release `v<version>` under `root/k3s`: the three binaries and their
/// checksum files, which also list assets Cairn does not use (as the real ones do).
fn k3s_release(root: &Path, version: &str, drop_armhf: bool) {
    let dir = root.join(format!("k3s/v{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    for (goarch, asset) in [
        ("amd64", "k3s"),
        ("arm64", "k3s-arm64"),
        ("arm", "k3s-armhf"),
    ] {
        let bytes = stand_in("k3s", goarch);
        std::fs::write(dir.join(asset), &bytes).unwrap();
        let mut sums = format!(
            "{}  k3s-airgap-images-{goarch}.tar.zst\n",
            sha256_hex(format!("images {goarch}").as_bytes())
        );
        if !(drop_armhf && goarch == "arm") {
            sums.push_str(&format!("{}  {asset}\n", sha256_hex(bytes.as_bytes())));
        }
        std::fs::write(dir.join(format!("sha256sum-{goarch}.txt")), sums).unwrap();
    }
}

fn set_download_url(project: &Path, template: &str, version: Option<&str>) {
    let path = project.join("nodes/cluster.toml");
    let text: String = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("download_url = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut text = text.replace(
        "cni = \"flannel\"\n",
        &format!("cni = \"flannel\"\ndownload_url = \"{template}\"\n"),
    );
    if let Some(v) = version {
        let old = text
            .lines()
            .find(|l| l.starts_with("version = "))
            .unwrap()
            .to_string();
        text = text.replace(&old, &format!("version = \"{v}\""));
    }
    std::fs::write(&path, text).unwrap();
}

fn requests(server: &Server) -> Vec<String> {
    std::mem::take(&mut *server.requests.lock().unwrap())
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn lock_pins_k3s_from_the_release_checksums_and_build_node_fetches_and_checks_it() {
    let upstream = tempfile::tempdir().unwrap();
    k3s_release(upstream.path(), "1.32.7+k3s1", false);
    k3s_release(upstream.path(), "1.32.8+k3s1", true);
    let server = Server::start(upstream.path().to_path_buf());
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    copy_project(p);
    set_download_url(
        p,
        &format!("{}/k3s/v{{version}}/{{asset}}", server.url),
        None,
    );

    // One command pins the version: only the checksum files are read.
    let out = json(&run_ok(xtask(p).args(["lock", "--json"])));
    assert_eq!(
        out["kubernetes_pinned"],
        serde_json::json!([
            "kubernetes/k3s-amd64",
            "kubernetes/k3s-arm64",
            "kubernetes/k3s-arm"
        ])
    );
    let mut seen = requests(&server);
    seen.sort();
    assert_eq!(
        seen,
        [
            "/k3s/v1.32.7+k3s1/sha256sum-amd64.txt",
            "/k3s/v1.32.7+k3s1/sha256sum-arm.txt",
            "/k3s/v1.32.7+k3s1/sha256sum-arm64.txt",
        ],
        "no binary was downloaded to pin it"
    );
    let lock = std::fs::read_to_string(p.join("inputs.lock")).unwrap();
    let arm64 = stand_in("k3s", "arm64");
    assert!(
        lock.contains(&format!(
            "[[url]]\nname = \"kubernetes/k3s-arm64\"\nurl = \"{}/k3s/v1.32.7+k3s1/k3s-arm64\"\nsha256 = \"{}\"\n",
            server.url,
            sha256_hex(arm64.as_bytes())
        )),
        "{lock}"
    );
    assert!(
        !lock.contains("github.com"),
        "the old version's pins are dropped"
    );
    // Locking again reads nothing: the pins are kept.
    run_ok(xtask(p).args(["lock"]));
    assert!(requests(&server).is_empty());
    assert_eq!(
        std::fs::read_to_string(p.join("inputs.lock")).unwrap(),
        lock
    );

    // build-node fetches the pinned binary and checks it. A download cache of its own,
    // sharing the .debs but not the stand-ins an earlier run may have fetched.
    let cache = project.path().join("download-cache");
    let shared = cairn_steps::Context::default_cache().join("sha256");
    std::fs::create_dir_all(cache.join("sha256")).unwrap();
    let stand_ins: Vec<String> = ["amd64", "arm64", "arm"]
        .iter()
        .map(|a| sha256_hex(stand_in("k3s", a).as_bytes()))
        .collect();
    for entry in std::fs::read_dir(&shared).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !stand_ins.contains(&name) {
            std::os::unix::fs::symlink(entry.path(), cache.join("sha256").join(&name)).unwrap();
        }
    }
    let build = |node: &str| {
        let mut c = xtask(p);
        c.arg("--download-cache")
            .arg(&cache)
            .args(["build-node", node, "--json"]);
        c
    };
    let out = json(&run_ok(&mut build("pi-worker")));
    assert_eq!(out["nodes"][0]["node"], "pi-worker");
    assert_eq!(requests(&server), ["/k3s/v1.32.7+k3s1/k3s-arm64"]);
    let squashfs = out["nodes"][0]["files"]["root.squashfs"]["path"]
        .as_str()
        .unwrap();
    let k3s =
        run_ok(
            std::process::Command::new(support::require_tool("unsquashfs", "squashfs-tools"))
                .args(["-cat", squashfs, "/usr/local/bin/k3s"]),
        );
    assert_eq!(k3s, arm64, "the pinned binary is the node's k3s");

    // A server that serves other bytes than the release's checksums say: refused, naming
    // the URL and both digests, and nothing of pi-legacy is tagged.
    let armhf_path = "/k3s/v1.32.7+k3s1/k3s-armhf";
    server.fault(
        armhf_path,
        Fault::Replace(b"#!/bin/sh\necho tampered\n".to_vec()),
    );
    let err = run_err(&mut build("pi-legacy"));
    assert!(
        err.contains(&format!("{}{armhf_path}", server.url)),
        "{err}"
    );
    assert!(
        err.contains("sha256 mismatch")
            && err.contains(&sha256_hex(stand_in("k3s", "arm").as_bytes()))
            && err.contains(&sha256_hex(b"#!/bin/sh\necho tampered\n")),
        "{err}"
    );
    assert!(
        err.contains("cargo xtask prefetch URL --file PATH"),
        "{err}"
    );
    let index = std::fs::read_to_string(p.join("artifacts/index.json")).unwrap_or_default();
    assert!(!index.contains("pi-legacy"), "no tag for a failed build");
    server.clear_faults();

    // A version whose checksum file lacks an arch's binary: the error names the file and
    // the asset, and the lock stays as it was.
    set_download_url(
        p,
        &format!("{}/k3s/v{{version}}/{{asset}}", server.url),
        Some("1.32.8+k3s1"),
    );
    let err = run_err(xtask(p).args(["lock"]));
    assert!(
        err.contains(&format!(
            "{}/k3s/v1.32.8+k3s1/sha256sum-arm.txt lists no sha256 for k3s-armhf",
            server.url
        )) && err.contains("check `kubernetes.version`"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("inputs.lock")).unwrap(),
        lock
    );

    // A version upstream does not have (404), and an upstream that cannot be reached.
    set_download_url(
        p,
        &format!("{}/k3s/v{{version}}/{{asset}}", server.url),
        Some("1.99.0+k3s1"),
    );
    let err = run_err(xtask(p).args(["lock"]));
    assert!(
        err.contains(&format!("{}/k3s/v1.99.0+k3s1/sha256sum-", server.url)) && err.contains("404"),
        "{err}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let cluster = std::fs::read_to_string(p.join("nodes/cluster.toml")).unwrap();
    std::fs::write(
        p.join("nodes/cluster.toml"),
        cluster.replace(&server.url, &dead),
    )
    .unwrap();
    let err = run_err(xtask(p).args(["lock"]));
    assert!(
        err.contains(&format!("{dead}/k3s/v1.99.0+k3s1/sha256sum-"))
            && err.contains("must be reachable to pin")
            && err.contains("--sha256 HEX"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("inputs.lock")).unwrap(),
        lock
    );

    // Pinned, but the binary's server cannot be reached at build time: the URL is named
    // with the way around it.
    set_download_url(
        p,
        &format!("{dead}/k3s/v{{version}}/{{asset}}"),
        Some("1.32.7+k3s1"),
    );
    std::fs::write(p.join("inputs.lock"), lock.replace(&server.url, &dead)).unwrap();
    let err = run_err(&mut build("pi-legacy"));
    assert!(
        err.contains(&format!(
            "fetching kubernetes/k3s-arm from {dead}/k3s/v1.32.7+k3s1/k3s-armhf"
        )) && err.contains("Connection refused")
            && err.contains("add it with `cargo xtask prefetch URL --file PATH`"),
        "{err}"
    );
}

/// dl.k8s.io's form: a `.sha256` file holding only the hash, next to each binary.
#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn lock_pins_kubeadm_from_dl_k8s_io_sha256_files() {
    let upstream = tempfile::tempdir().unwrap();
    for arch in ["amd64", "arm64"] {
        let dir = upstream
            .path()
            .join(format!("release/v1.32.7/bin/linux/{arch}"));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["kubeadm", "kubelet", "kubectl"] {
            let bytes = stand_in(name, arch);
            std::fs::write(dir.join(name), &bytes).unwrap();
            std::fs::write(
                dir.join(format!("{name}.sha256")),
                sha256_hex(bytes.as_bytes()),
            )
            .unwrap();
        }
    }
    let server = Server::start(upstream.path().to_path_buf());
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    copy_example("kubeadm", p);
    set_download_url(
        p,
        &format!(
            "{}/release/v{{version}}/bin/linux/{{go_arch}}/{{name}}",
            server.url
        ),
        None,
    );
    let out = json(&run_ok(xtask(p).args(["lock", "--json"])));
    assert_eq!(
        out["kubernetes_pinned"].as_array().unwrap().len(),
        6,
        "{out}"
    );
    let seen = requests(&server);
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(seen.iter().all(|r| r.ends_with(".sha256")), "{seen:?}");
    let lock = std::fs::read_to_string(p.join("inputs.lock")).unwrap();
    assert!(lock.contains(&format!(
        "[[url]]\nname = \"kubernetes/kubelet-arm64\"\nurl = \"{}/release/v1.32.7/bin/linux/arm64/kubelet\"\nsha256 = \"{}\"\n",
        server.url,
        sha256_hex(stand_in("kubelet", "arm64").as_bytes())
    )), "{lock}");
    assert!(
        !lock.contains("dl.k8s.io"),
        "the upstream URLs' pins were replaced"
    );
}
