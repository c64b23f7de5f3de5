//! The example container images: built twice under different environments with equal
//! digests, and read back by independent tools (skopeo, umoci, tar).

use crate::support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use support::{copy_project, json, repo_root, require_tool, run_ok};

/// Builds `image` in a copy of the project at `dir` under the given environment.
fn build_in(
    dir: &Path,
    image: &str,
    tz: &str,
    lang: &str,
    umask: &str,
    faketime: Option<&str>,
) -> serde_json::Value {
    copy_project(dir);
    json(&run_ok(
        support::xtask_varied(dir, tz, lang, umask, faketime).args([
            "build-image",
            image,
            "--json",
        ]),
    ))
}

fn digests(v: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = vec![(
        "index".to_string(),
        v["index"]["digest"].as_str().unwrap().to_string(),
    )];
    for (arch, m) in v["manifests"].as_object().unwrap() {
        out.push((
            format!("manifest {arch}"),
            m["digest"].as_str().unwrap().to_string(),
        ));
        out.push((
            format!("layer {arch}"),
            m["layer"]["digest"].as_str().unwrap().to_string(),
        ));
    }
    out
}

/// Every example image built once, in a copy of the project under UTC (shared by the tests).
fn first_builds() -> &'static BTreeMap<&'static str, serde_json::Value> {
    static FIRST: OnceLock<BTreeMap<&'static str, serde_json::Value>> = OnceLock::new();
    FIRST.get_or_init(|| {
        EXAMPLE_IMAGES
            .iter()
            .map(|image| {
                let dir = tempfile::Builder::new()
                    .prefix("cairn-images-")
                    .tempdir()
                    .unwrap()
                    .keep();
                (*image, build_in(&dir, image, "UTC", "C", "022", None))
            })
            .collect()
    })
}

const EXAMPLE_IMAGES: [&str; 2] = ["haproxy", "keepalived"];

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn example_images_are_bit_for_bit_reproducible() {
    for image in EXAMPLE_IMAGES {
        let first = &first_builds()[image];
        let b = tempfile::tempdir().unwrap();
        let b_deep = b.path().join("a/much/longer/build/directory");
        std::fs::create_dir_all(&b_deep).unwrap();
        let second = build_in(
            &b_deep,
            image,
            "Pacific/Kiritimati",
            "de_DE.UTF-8",
            "077",
            Some("+1234d"),
        );
        assert_eq!(
            digests(first),
            digests(&second),
            "{image} differs between builds"
        );
        assert_eq!(
            first["manifests"].as_object().unwrap().len(),
            3,
            "{image}: all three arches"
        );
        assert_eq!(
            second["manifests"]["aarch64"]["cached"], false,
            "the second build really built"
        );
    }
}

/// Layers are compressed on every core the build may use, as gzip members of fixed-size
/// pieces: a build pinned to one core (`taskset -c 0`) gives the bytes a build on all
/// cores gave, and the layers really are several members.
#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn layers_do_not_depend_on_the_core_count() {
    let taskset = require_tool("taskset", "util-linux");
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        cores >= 2,
        "this test compares one core with several; the machine has {cores}"
    );
    let first = &first_builds()["haproxy"];
    let dir = tempfile::tempdir().unwrap();
    copy_project(dir.path());
    let one_core = json(&run_ok(
        Command::new(taskset)
            .args(["-c", "0"])
            .arg(env!("CARGO_BIN_EXE_xtask"))
            .arg("--root")
            .arg(dir.path())
            .args(["--quiet", "build-image", "haproxy", "--json"])
            .env_remove("CAIRN_STORE"),
    ));
    assert_eq!(one_core["manifests"]["x86_64"]["cached"], false);
    assert_eq!(
        digests(first),
        digests(&one_core),
        "one core against {cores}"
    );
    // Count the gzip members of the x86_64 layer: a member starts at each header that
    // follows the previous member's 8-byte trailer; decoding them one by one finds them.
    let layer = one_core["manifests"]["x86_64"]["layer"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let bytes = std::fs::read(dir.path().join("artifacts/blobs/sha256").join(layer)).unwrap();
    let mut members = 0;
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let mut d = flate2::bufread::GzDecoder::new(rest);
        std::io::copy(&mut d, &mut std::io::sink()).unwrap();
        rest = d.into_inner();
        members += 1;
    }
    assert!(members > 4, "the layer is {members} gzip members");
}

/// The example images hash to what `tests/expected-digests.toml` says (a cross-machine
/// check: CI builds on a different machine every run).
#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn example_images_match_the_committed_digests() {
    let mut actual = support::digests::Digests::new();
    for (image, built) in first_builds() {
        actual.insert(image.to_string(), digests(built).into_iter().collect());
    }
    support::digests::check("images", cairn_steps::BUILDER_VERSION, &actual);
}

fn elf_machine(path: &Path) -> u16 {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is not ELF", path.display());
    u16::from_le_bytes([bytes[18], bytes[19]])
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn skopeo_and_umoci_read_the_haproxy_image() {
    let skopeo = require_tool("skopeo", "skopeo");
    let umoci = require_tool("umoci", "umoci");
    let project = tempfile::tempdir().unwrap();
    copy_project(project.path());
    let built = json(&run_ok(support::xtask(project.path()).args([
        "build-image",
        "haproxy",
        "--json",
    ])));
    let layout = project.path().join("artifacts");
    let reference = format!("oci:{}:haproxy", layout.display());

    let raw = run_ok(Command::new(&skopeo).args(["inspect", "--raw", &reference]));
    let index = json(&raw);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["architecture"].as_str().unwrap(),
                m["platform"]["variant"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(platforms, ["amd64/", "arm/v7", "arm64/"]);
    assert_eq!(
        cairn_formats::Digest::of(raw.as_bytes()).to_string(),
        built["index"]["digest"].as_str().unwrap()
    );

    let expected_cfg = std::fs::read(repo_root().join("images/files/haproxy.cfg")).unwrap();
    for (arch, oci_arch, variant, machine) in [
        ("x86_64", "amd64", None, 62u16),
        ("armv7", "arm", Some("v7"), 40),
        ("aarch64", "arm64", None, 183),
    ] {
        let work = tempfile::tempdir().unwrap();
        let mut over = vec!["--override-arch".to_string(), oci_arch.to_string()];
        if let Some(v) = variant {
            over.extend(["--override-variant".to_string(), v.to_string()]);
        }
        // skopeo inspect resolves the platform's manifest and config.
        let inspect = json(&run_ok(
            Command::new(&skopeo)
                .args(&over)
                .args(["inspect", &reference]),
        ));
        assert_eq!(inspect["Architecture"], oci_arch);
        assert_eq!(
            inspect["Layers"][0],
            built["manifests"][arch]["layer"]["digest"]
        );
        // skopeo copy to dir: (verifies every digest on the way).
        let dir_dest = work.path().join("dir");
        run_ok(Command::new(&skopeo).args(&over).args([
            "copy",
            "--quiet",
            &reference,
            &format!("dir:{}", dir_dest.display()),
        ]));
        let manifest = json(&std::fs::read_to_string(dir_dest.join("manifest.json")).unwrap());
        assert_eq!(
            manifest["layers"][0]["digest"],
            built["manifests"][arch]["layer"]["digest"]
        );
        assert_eq!(
            cairn_formats::Digest::of(&std::fs::read(dir_dest.join("manifest.json")).unwrap())
                .to_string(),
            built["manifests"][arch]["digest"].as_str().unwrap()
        );

        // umoci unpacks a single-platform copy; check the files and what they declare.
        let single = work.path().join("single");
        run_ok(Command::new(&skopeo).args(&over).args([
            "copy",
            "--quiet",
            &reference,
            &format!("oci:{}:haproxy", single.display()),
        ]));
        let bundle = work.path().join("bundle");
        run_ok(
            Command::new(&umoci)
                .args([
                    "unpack",
                    "--image",
                    &format!("{}:haproxy", single.display()),
                ])
                .arg(&bundle),
        );
        let rootfs = bundle.join("rootfs");
        assert_eq!(
            elf_machine(&rootfs.join("usr/sbin/haproxy")),
            machine,
            "{arch}: haproxy binary for the wrong machine"
        );
        assert_eq!(
            std::fs::metadata(rootfs.join("usr/sbin/haproxy"))
                .unwrap()
                .mode()
                & 0o7777,
            0o755
        );
        assert_eq!(
            std::fs::read(rootfs.join("etc/haproxy/haproxy.cfg")).unwrap(),
            expected_cfg
        );
        let lib = std::fs::metadata(rootfs.join("var/lib/haproxy")).unwrap();
        assert_eq!(
            (lib.mode() & 0o7777, lib.uid(), lib.gid()),
            (0o750, 101, 101),
            "{arch}: declared dir mode and owner"
        );
        let shadow = std::fs::metadata(rootfs.join("etc/shadow")).unwrap();
        assert_eq!((shadow.mode() & 0o7777, shadow.gid()), (0o640, 42));
        assert!(
            std::fs::read_to_string(rootfs.join("etc/passwd"))
                .unwrap()
                .contains("haproxy:x:101:101:HAProxy:/var/lib/haproxy:/usr/sbin/nologin")
        );
        assert_eq!(
            std::fs::read_link(rootfs.join("lib")).unwrap(),
            Path::new("usr/lib")
        );
        assert!(rootfs.join("usr/lib").read_dir().unwrap().count() > 2);
        let ca_bundle =
            std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
        assert!(
            ca_bundle.matches("-----BEGIN CERTIFICATE-----").count() > 100,
            "{arch}: CA bundle from ca-certificates"
        );
        let runtime = json(&std::fs::read_to_string(bundle.join("config.json")).unwrap());
        assert_eq!(
            runtime["process"]["args"],
            serde_json::json!([
                "/usr/sbin/haproxy",
                "-W",
                "-db",
                "-f",
                "/etc/haproxy/haproxy.cfg"
            ])
        );
        assert_eq!(
            runtime["process"]["user"]["uid"], 101,
            "umoci resolved the user through /etc/passwd"
        );
        assert_eq!(runtime["process"]["cwd"], "/var/lib/haproxy");

        // /etc/ld.so.cache as dpkg's ldconfig trigger leaves it: on amd64 the host's glibc
        // ldconfig rebuilds it from the same tree, and both list the same libraries, paths,
        // flags and order (`ldconfig -p`). The other arches are the same code with their
        // ELF flags, read by their own linker when the nodes boot.
        let ours = rootfs.join("etc/ld.so.cache");
        assert!(ours.is_file(), "{arch}: no /etc/ld.so.cache");
        if arch == "x86_64" {
            let ldconfig = ["/usr/sbin/ldconfig", "/sbin/ldconfig"]
                .into_iter()
                .map(Path::new)
                .find(|p| p.is_file())
                .expect("the host's ldconfig (libc-bin)");
            run_ok(
                Command::new(ldconfig)
                    .args(["-X", "-r"])
                    .arg(&rootfs)
                    .args(["-C", "/etc/ld.so.cache.reference"]),
            );
            let list = |file: &Path| -> Vec<String> {
                run_ok(Command::new(ldconfig).arg("-p").arg("-C").arg(file))
                    .lines()
                    .filter(|l| !l.starts_with("Cache generated by"))
                    .map(|l| match l.split_once(" libs found in cache") {
                        Some((n, _)) => format!("{n} libs"),
                        None => l.to_string(),
                    })
                    .collect()
            };
            let reference = list(&rootfs.join("etc/ld.so.cache.reference"));
            assert!(
                reference.len() > 20
                    && reference.contains(
                        &"\tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6"
                            .to_string()
                    ),
                "{reference:?}"
            );
            assert_eq!(list(&ours), reference);
        }
    }
}

/// Two checkouts that share one cargo target directory run one xtask binary (cargo reuses
/// it: its fingerprints hash paths relative to the workspace). Each must build its own specs
/// into its own store, from wherever inside it the command runs, whatever path the binary
/// was compiled in or cargo's `CARGO_MANIFEST_DIR` names.
#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn the_project_root_is_the_checkout_the_command_runs_in() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    copy_project(a.path());
    copy_project(b.path());
    let spec = b.path().join("images/haproxy.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    assert!(text.contains("Kubernetes API load balancer"));
    std::fs::write(
        &spec,
        text.replace("Kubernetes API load balancer", "checkout B's balancer"),
    )
    .unwrap();
    let mut built = Vec::new();
    for (checkout, cwd) in [
        (a.path(), a.path().join("images")),
        (b.path(), b.path().join("nodes")),
    ] {
        let out = json(&run_ok(
            Command::new(env!("CARGO_BIN_EXE_xtask"))
                .args([
                    "--quiet",
                    "build-image",
                    "haproxy",
                    "--arch",
                    "x86_64",
                    "--json",
                ])
                .current_dir(&cwd)
                .env("CARGO_MANIFEST_DIR", repo_root().join("xtask"))
                .env_remove("CAIRN_ROOT")
                .env_remove("CAIRN_STORE"),
        ));
        let layout = Path::new(out["layout"].as_str().unwrap()).to_path_buf();
        assert_eq!(
            layout.canonicalize().unwrap(),
            checkout.join("artifacts").canonicalize().unwrap(),
            "run in {}, the store must be that checkout's",
            cwd.display()
        );
        built.push(out["manifests"]["x86_64"]["digest"].clone());
    }
    assert_ne!(
        built[0], built[1],
        "checkout B's own spec (another label) was built"
    );
    // Outside any checkout, the command says where it looked and what to do.
    let outside = tempfile::tempdir().unwrap();
    let err = support::run_err(
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["--quiet", "build-image", "haproxy"])
            .current_dir(outside.path())
            .env_remove("CARGO_MANIFEST_DIR")
            .env_remove("CAIRN_ROOT"),
    );
    assert!(
        err.contains("no Cairn project at or above") && err.contains("--root"),
        "{err}"
    );
}
