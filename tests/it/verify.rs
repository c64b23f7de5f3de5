//! `verify --rebuild`: an image and a node rebuilt from the lock in a scratch store match
//! the store bit for bit; a changed input and an altered stored blob are each reported
//! where they differ inside the artifact (a layer's tar entry, a section of the disk image),
//! with both sizes and digests. Each scenario builds in a checkout of its own.

use crate::support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::{copy_project, json, pin_stand_ins, run_ok, xtask};

fn verify(dir: &Path, name: &str) -> (bool, serde_json::Value) {
    let out = xtask(dir)
        .args(["verify", "--rebuild", name, "--json"])
        .output()
        .unwrap();
    let doc = json(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(out.status.success(), doc["reproduced"] == true, "{doc}");
    (out.status.success(), doc)
}

fn blob(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("artifacts/blobs/sha256").join(&digest[7..])
}

/// A checkout of the examples (with the Kubernetes stand-ins pinned) in a new directory.
fn checkout() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_project(tmp.path());
    pin_stand_ins(tmp.path());
    tmp
}

fn differences(doc: &serde_json::Value) -> Vec<String> {
    doc["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn an_image_rebuilds_bit_for_bit_and_a_changed_input_is_named_by_entry() {
    let tmp = checkout();
    let dir = tmp.path();
    run_ok(xtask(dir).args(["build-image", "haproxy", "--json"]));
    // `verify NAME` rebuilds: --rebuild is implied.
    let doc = json(&run_ok(xtask(dir).args(["verify", "haproxy", "--json"])));
    assert_eq!(doc["reproduced"], true, "{doc}");
    assert_eq!(doc["expected"], doc["rebuilt"]);

    // A changed input (a file the spec copies in): the entry is named.
    let cfg = dir.join("images/files/haproxy.cfg");
    let original = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{original}# changed after the build\n")).unwrap();
    let (ok, doc) = verify(dir, "haproxy");
    assert!(!ok);
    let diffs = differences(&doc);
    let n = original.len();
    for arch in ["linux/amd64", "linux/arm/v7", "linux/arm64"] {
        assert!(
            diffs.iter().any(|d| d.starts_with(&format!(
                "haproxy > manifest {arch} > layer 0: etc/haproxy/haproxy.cfg: {n} bytes sha256:"
            )) && d.contains(&format!("{} bytes sha256:", n + 26))),
            "{arch}: {diffs:#?}"
        );
    }
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn a_stored_layer_altered_in_place_is_named_as_damaged_and_by_entry() {
    let tmp = checkout();
    let dir = tmp.path();
    let image = json(&run_ok(xtask(dir).args([
        "build-image",
        "haproxy",
        "--json",
    ])));
    let n = std::fs::read(dir.join("images/files/haproxy.cfg"))
        .unwrap()
        .len();
    // Still a valid tar.gz, one file's bytes changed.
    let index = image["index"]["digest"].as_str().unwrap();
    let index_doc = json(&std::fs::read_to_string(blob(dir, index)).unwrap());
    let manifest = index_doc["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .unwrap();
    let manifest_doc =
        json(&std::fs::read_to_string(blob(dir, manifest["digest"].as_str().unwrap())).unwrap());
    let layer = blob(dir, manifest_doc["layers"][0]["digest"].as_str().unwrap());
    let mut tar_bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(&layer).unwrap())
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let needle = b"timeout connect 5s";
    let at = tar_bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("haproxy.cfg in the layer");
    tar_bytes[at + 16] = b'9';
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes).unwrap();
    std::fs::set_permissions(&layer, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&layer, gz.finish().unwrap()).unwrap();
    let (ok, doc) = verify(dir, "haproxy");
    assert!(!ok);
    let diffs = differences(&doc);
    assert!(
        diffs.iter().any(|d| d
            .starts_with("haproxy > manifest linux/amd64 > layer 0: the store's copy of sha256:")
            && d.contains("is damaged")),
        "{diffs:#?}"
    );
    assert!(
        diffs.iter().any(|d| d.starts_with(&format!(
            "haproxy > manifest linux/amd64 > layer 0: etc/haproxy/haproxy.cfg: {n} bytes sha256:"
        ))),
        "{diffs:#?}"
    );
    assert_eq!(
        doc["expected"], doc["rebuilt"],
        "the digests agree; the bytes do not"
    );
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn a_node_rebuilds_bit_for_bit_and_an_altered_boot_partition_is_named_by_section() {
    let tmp = checkout();
    let dir = tmp.path();
    let node = json(&run_ok(xtask(dir).args([
        "build-node",
        "pi-worker",
        "--json",
    ])));
    let (ok, doc) = verify(dir, "pi-worker");
    assert!(ok, "{doc}");
    let img = std::path::PathBuf::from(
        node["nodes"][0]["files"]["pi-worker.img"]["path"]
            .as_str()
            .unwrap(),
    );
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[(4 << 20) + 100_000] ^= 0xff;
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&img, &bytes).unwrap();
    let (ok, doc) = verify(dir, "pi-worker");
    assert!(!ok);
    let diffs = differences(&doc);
    assert!(
        diffs.iter().any(|d| d.starts_with("pi-worker > file pi-worker.img: partition 1 (type 0x0c) at bytes 4194304..138412032: 134217728 bytes sha256:")),
        "{diffs:#?}"
    );
    assert!(
        !diffs.iter().any(|d| d.contains("partition 2")),
        "only the boot partition: {diffs:#?}"
    );
}
