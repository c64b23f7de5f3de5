//! `export` and `import`, the offline reinstall end to end: a bundle written on one store is
//! read by skopeo, imported into an empty store of another checkout whose mirror cannot be
//! reached, flashed with secrets and booted under QEMU from the card alone, to
//! `secrets=present`. A bundle with its inputs lets that checkout change a node and rebuild
//! it offline to the digests an online build gives. Truncated and altered bundles are
//! refused, leaving the store as it was.

use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{copy_project, json, pin_stand_ins, require_tool, run_err, run_ok, xtask};

const JOIN_TOKEN: &str = "q7zt3x.k4m9p2w8r6v1n5b3";

/// A checkout with no internet: an unreachable mirror and its own, empty, download cache.
fn offline(dir: &Path) -> Command {
    let mut c = xtask(dir);
    c.env("CAIRN_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
        .arg("--download-cache")
        .arg(dir.join("download-cache"));
    c
}

fn tags(store: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(store.join("index.json")) else {
        return Vec::new();
    };
    json(&text)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn n_blobs(store: &Path) -> usize {
    std::fs::read_dir(store.join("blobs/sha256")).map_or(0, |d| d.count())
}

/// Boots an SD card image the way a Pi would be given it: kernel, initramfs and command
/// line read from the card's FAT (mtools), the card as the disk. Returns the console.
fn boot_card(card: &Path, work: &Path) -> String {
    let _one = support::one_at_a_time();
    let qemu = require_tool("qemu-system-aarch64", "qemu-system-arm");
    let mcopy = require_tool("mcopy", "mtools");
    for f in ["vmlinuz", "initrd.img", "cmdline.txt"] {
        run_ok(
            Command::new(&mcopy)
                .arg("-i")
                .arg(format!("{}@@4M", card.display()))
                .arg(format!("::/{f}"))
                .arg(work.join(f)),
        );
    }
    // A card larger than the image, as real ones are.
    let len = std::fs::metadata(card).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(card)
        .unwrap()
        .set_len(len + (512 << 20))
        .unwrap();
    let cmdline: Vec<String> = std::fs::read_to_string(work.join("cmdline.txt"))
        .unwrap()
        .split_whitespace()
        .filter(|a| !a.starts_with("console="))
        .map(str::to_string)
        .chain(["console=ttyAMA0", "cairn.test=poweroff", "panic=-1"].map(String::from))
        .collect();
    let mut child = support::boot_priority()
        .arg(qemu)
        .args([
            "-M",
            "virt",
            "-cpu",
            "cortex-a53",
            "-m",
            "1024",
            "-smp",
            "2",
        ])
        .args(["-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(work.join("vmlinuz"))
        .arg("-initrd")
        .arg(work.join("initrd.img"))
        .arg("-append")
        .arg(cmdline.join(" "))
        .arg("-drive")
        .arg(format!("if=none,id=d0,file={},format=raw", card.display()))
        .args(["-device", "virtio-blk-device,drive=d0"])
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-device,netdev=n0",
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(work.join("console.log")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(480) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no poweroff within 480 s:\n{}",
                std::fs::read_to_string(work.join("console.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    String::from_utf8_lossy(&std::fs::read(work.join("console.log")).unwrap()).into_owned()
}

#[test]
#[ignore = "slow: QEMU boots"]
fn offline_reinstall_from_a_bundle_boots_with_its_secrets() {
    let online = tempfile::tempdir().unwrap();
    copy_project(online.path());
    pin_stand_ins(online.path());
    let bundle = online.path().join("cluster.tar");
    let exported = json(&run_ok(
        xtask(online.path())
            .args(["export", "pi-worker", "haproxy", "--json", "--output"])
            .arg(&bundle),
    ));
    assert_eq!(
        exported["names"],
        serde_json::json!(["pi-worker", "haproxy"])
    );

    // skopeo reads the bundle as an OCI archive.
    let skopeo = require_tool("skopeo", "skopeo");
    let index = json(&run_ok(Command::new(&skopeo).args([
        "inspect",
        "--raw",
        &format!("oci-archive:{}:haproxy", bundle.display()),
    ])));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 3);

    // A checkout that never built anything and cannot reach a mirror.
    let site = tempfile::tempdir().unwrap();
    copy_project(site.path());
    let store = site.path().join("artifacts");

    // A truncated or altered bundle is refused, and leaves the store as it was.
    let bytes = std::fs::read(&bundle).unwrap();
    let truncated = site.path().join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = run_err(offline(site.path()).arg("import").arg(&truncated));
    assert!(err.contains("truncated"), "{err}");
    // Altered: one byte flipped in the middle of the largest blob (the disk image).
    let altered = site.path().join("altered.tar");
    let mut changed = bytes.clone();
    let (offset, size) = tar::Archive::new(&bytes[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.raw_file_position(), e.header().size().unwrap()))
        .max_by_key(|(_, size)| *size)
        .unwrap();
    changed[(offset + size / 2) as usize] ^= 0x55;
    std::fs::write(&altered, &changed).unwrap();
    let err = run_err(offline(site.path()).arg("import").arg(&altered));
    assert!(
        err.contains("is altered") && err.contains("nothing was imported"),
        "{err}"
    );
    assert!(tags(&store).is_empty(), "no tag after a refused import");
    assert_eq!(n_blobs(&store), 0, "no blob after a refused import");

    let imported = json(&run_ok(
        offline(site.path()).args(["import", "--json"]).arg(&bundle),
    ));
    assert_eq!(
        imported["tags"],
        serde_json::json!(["pi-worker", "haproxy", "pi-worker.sbom", "haproxy.sbom"])
    );
    // Each artifact's SBOM came along, as an SPDX artifact whose subject is the artifact.
    let index = json(&std::fs::read_to_string(store.join("index.json")).unwrap());
    let entry = |tag: &str| {
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("no {tag}"))
            .clone()
    };
    let sbom_manifest = json(
        &std::fs::read_to_string(
            store
                .join("blobs/sha256")
                .join(&entry("pi-worker.sbom")["digest"].as_str().unwrap()[7..]),
        )
        .unwrap(),
    );
    assert_eq!(sbom_manifest["artifactType"], "application/spdx+json");
    assert_eq!(
        sbom_manifest["subject"]["digest"],
        entry("pi-worker")["digest"]
    );
    let spdx = json(
        &std::fs::read_to_string(
            store
                .join("blobs/sha256")
                .join(&sbom_manifest["layers"][0]["digest"].as_str().unwrap()[7..]),
        )
        .unwrap(),
    );
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    assert_eq!(spdx["packages"][0]["name"], "pi-worker");
    let again = json(&run_ok(
        offline(site.path()).args(["import", "--json"]).arg(&bundle),
    ));
    assert_eq!(again["blobs_added"], 0, "importing twice changes nothing");
    run_ok(offline(site.path()).args(["store", "verify"]));

    let secrets = site.path().join("pi-worker.secrets");
    std::fs::write(&secrets, format!("join_token={JOIN_TOKEN}\n")).unwrap();
    let card = site.path().join("card.img");
    run_ok(
        offline(site.path())
            .args(["flash", "pi-worker", "--file"])
            .arg(&card)
            .arg("--secrets")
            .arg(&secrets),
    );
    let work = tempfile::tempdir().unwrap();
    let console = boot_card(&card, work.path());
    let report = console
        .lines()
        .find(|l| l.contains("cairn-node: hostname="))
        .unwrap_or_else(|| panic!("no report:\n{console}"));
    assert!(report.contains("hostname=pi-worker"), "{report}");
    assert!(report.contains("secrets=present"), "{report}");
    assert!(
        console.contains("cairn-kubernetes: active success"),
        "the join ran"
    );
    assert!(!console.contains(JOIN_TOKEN), "the token is on the console");
}

fn node_digests(out: &serde_json::Value) -> Vec<(String, String)> {
    let node = &out["nodes"][0];
    let mut v = vec![(
        "manifest".to_string(),
        node["manifest"]["digest"].as_str().unwrap().to_string(),
    )];
    for (title, f) in node["files"].as_object().unwrap() {
        v.push((title.clone(), f["digest"].as_str().unwrap().to_string()));
    }
    v
}

fn add_ssh_key(project: &Path) {
    let file = project.join("nodes/pi-worker.toml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("\n[ssh]\nauthorized_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ1bmRsZS1vZmZsaW5lLXJlYnVpbGQtMDAwMDAwMDAw site@offline\"]\n");
    std::fs::write(&file, text).unwrap();
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn a_bundle_with_inputs_rebuilds_a_changed_node_offline_to_the_online_digests() {
    let online = tempfile::tempdir().unwrap();
    copy_project(online.path());
    pin_stand_ins(online.path());
    let bundle = online.path().join("with-inputs.tar");
    let exported = json(&run_ok(
        xtask(online.path())
            .args(["export", "pi-worker", "--with-inputs", "--json", "--output"])
            .arg(&bundle),
    ));
    assert!(exported["inputs"].as_u64().unwrap() > 100, "{exported}");

    let site = tempfile::tempdir().unwrap();
    copy_project(site.path());
    // The site's checkout carries the same lock (with the Kubernetes pins).
    std::fs::copy(
        online.path().join("inputs.lock"),
        site.path().join("inputs.lock"),
    )
    .unwrap();
    let imported = json(&run_ok(
        offline(site.path()).args(["import", "--json"]).arg(&bundle),
    ));
    assert!(
        imported["inputs_added"].as_u64().unwrap() > 100,
        "{imported}"
    );

    // The same change on both sides: one node's SSH key.
    add_ssh_key(online.path());
    add_ssh_key(site.path());
    let offline_build = json(&run_ok(offline(site.path()).args([
        "build-node",
        "pi-worker",
        "--json",
    ])));
    let online_build = json(&run_ok(xtask(online.path()).args([
        "build-node",
        "pi-worker",
        "--json",
    ])));
    assert_eq!(node_digests(&offline_build), node_digests(&online_build));
    assert_eq!(
        offline_build["nodes"][0]["base_cached"], false,
        "the base was rebuilt offline"
    );
}
