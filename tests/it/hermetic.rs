//! Lock and build against a small signed repository the test writes and serves on
//! loopback, including every fault and bad-input path.

use crate::support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::deb::{self, Item, RepoPackage};
use support::server::{Fault, Server};
use support::{json, run_err, run_ok, xtask};

struct Repo {
    server: Server,
    dir: tempfile::TempDir,
    project: tempfile::TempDir,
    cache: tempfile::TempDir,
}

fn pkg(
    name: &str,
    version: &str,
    depends: &str,
    provides: &str,
    items: &[Item<'_>],
) -> RepoPackage {
    RepoPackage {
        name: name.into(),
        version: version.into(),
        depends: depends.into(),
        provides: provides.into(),
        deb: deb::build(name, version, "all", depends, items),
    }
}

const HELLO: &[u8] = b"#!/bin/sh\necho hello from cairn\n";

fn repo() -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let key = cairn_debian::release::signing::generate_key();
    let packages = vec![
        pkg(
            "hello",
            "1.0-1",
            "libfoo (>= 1.0), mta | exim-lite",
            "",
            &[
                Item::Dir("usr", 0o755),
                Item::Dir("usr/bin", 0o755),
                Item::File("usr/bin/hello", HELLO, 0o755),
                Item::Dir("etc", 0o755),
                Item::File("etc/hello.conf", b"greeting=hi\n", 0o644),
            ],
        ),
        pkg(
            "libfoo",
            "1.2-1",
            "",
            "",
            &[
                Item::Dir("usr", 0o755),
                Item::Dir("usr/lib", 0o755),
                Item::File("usr/lib/libfoo.so.1", b"\x7fELF not really", 0o644),
                Item::Symlink("usr/lib/libfoo.so", "libfoo.so.1"),
            ],
        ),
        pkg(
            "postfix-lite",
            "3.0-1",
            "",
            "mta",
            &[
                Item::Dir("usr", 0o755),
                Item::Dir("usr/sbin", 0o755),
                Item::File("usr/sbin/sendmail", b"postfix", 0o755),
            ],
        ),
        pkg(
            "exim-lite",
            "4.0-1",
            "",
            "mta",
            &[
                Item::Dir("usr", 0o755),
                Item::Dir("usr/sbin", 0o755),
                Item::File("usr/sbin/sendmail", b"exim", 0o755),
            ],
        ),
        pkg(
            "setuid-tool",
            "1-1",
            "",
            "",
            &[
                Item::Dir("usr", 0o755),
                Item::Dir("usr/bin", 0o755),
                Item::File("usr/bin/tool", b"tool", 0o4755),
            ],
        ),
        pkg(
            "legacy-bin",
            "1-1",
            "",
            "",
            &[
                Item::Dir("bin", 0o755),
                Item::File("bin/legacy", b"legacy", 0o755),
            ],
        ),
        pkg(
            "evil",
            "1-1",
            "",
            "",
            &[Item::RawFile("./../../etc/evil", b"pwned")],
        ),
        pkg(
            "evil-link",
            "1-1",
            "",
            "",
            &[
                Item::Dir("usr", 0o755),
                Item::Symlink("usr/escape", "../../../.."),
                Item::File("usr/escape/etc/evil", b"pwned", 0o644),
            ],
        ),
        pkg(
            "evil-abs",
            "1-1",
            "",
            "",
            &[Item::RawFile("/etc/evil", b"pwned")],
        ),
        pkg(
            "clash-a",
            "1-1",
            "",
            "",
            &[
                Item::Dir("etc", 0o755),
                Item::File("etc/clash.conf", b"a", 0o644),
            ],
        ),
        pkg(
            "clash-b",
            "1-1",
            "",
            "",
            &[
                Item::Dir("etc", 0o755),
                Item::File("etc/clash.conf", b"b", 0o644),
            ],
        ),
    ];
    deb::write_repo(
        dir.path(),
        "cairn-test",
        &["amd64", "arm64"],
        &packages,
        &key,
    );
    std::fs::create_dir_all(dir.path().join("tools")).unwrap();
    std::fs::write(dir.path().join("tools/greet-amd64"), b"greet for amd64\n").unwrap();
    std::fs::write(dir.path().join("tools/greet-arm64"), b"greet for arm64\n").unwrap();
    let server = Server::start(dir.path().to_path_buf());

    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(project.path().join("nodes")).unwrap();
    std::fs::create_dir_all(project.path().join("images")).unwrap();
    std::fs::copy(
        support::repo_root().join("nodes/cluster.toml"),
        project.path().join("nodes/cluster.toml"),
    )
    .unwrap();
    std::fs::write(
        project.path().join("keyring.gpg"),
        cairn_debian::release::signing::public_keyring(&key),
    )
    .unwrap();
    let repo = Repo {
        server,
        dir,
        project,
        cache: tempfile::tempdir().unwrap(),
    };
    repo.image(
        "app",
        r#"packages = ["hello", "postfix-lite", "setuid-tool", "legacy-bin"]"#,
    );
    repo
}

impl Repo {
    fn image(&self, name: &str, packages_line: &str) {
        let text = format!(
            "kind = \"container\"\nsuite = \"cairn-test\"\narches = [\"x86_64\", \"aarch64\"]\n{packages_line}\nmirror = \"{}\"\nkeyring = \"../keyring.gpg\"\n\n[config]\nentrypoint = [\"/usr/bin/hello\"]\n\n[[files]]\npath = \"/etc/motd\"\ncontent = \"built by cairn\\n\"\nmode = \"0600\"\n",
            self.server.url
        );
        std::fs::write(
            self.project.path().join(format!("images/{name}.toml")),
            text,
        )
        .unwrap();
    }

    fn xtask(&self) -> Command {
        let mut c = xtask(self.project.path());
        c.env("CAIRN_CACHE_DIR", self.cache.path());
        c
    }

    fn store(&self) -> PathBuf {
        self.project.path().join("artifacts")
    }

    fn n_blobs(&self) -> usize {
        std::fs::read_dir(self.store().join("blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn lock(&self) -> String {
        run_ok(self.xtask().arg("lock"));
        std::fs::read_to_string(self.project.path().join("inputs.lock")).unwrap()
    }
}

fn pool(name: &str, version: &str) -> String {
    format!("/pool/main/{name}_{version}_all.deb")
}

/// The entries of a gzip'd tar layer: (path, mode, kind, content).
fn layer_entries(path: &Path) -> Vec<(String, u32, char, Vec<u8>)> {
    let gz = flate2_free_gunzip(path);
    let mut archive = tar::Archive::new(&gz[..]);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            let mode = e.header().mode().unwrap();
            let kind = match e.header().entry_type() {
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                _ => 'f',
            };
            let mut data = Vec::new();
            if kind == 'l' {
                data = e.link_name_bytes().unwrap().to_vec();
            } else {
                e.read_to_end(&mut data).unwrap();
            }
            (path, mode, kind, data)
        })
        .collect()
}

/// Decompresses with the host's gzip: an independent reader of our gzip output.
fn flate2_free_gunzip(path: &Path) -> Vec<u8> {
    support::require_tool("gzip", "gzip");
    let out = Command::new("gzip").arg("-dc").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "gzip -dc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn lock_build_and_rebuild_from_a_signed_loopback_repository() {
    let repo = repo();
    let lock = repo.lock();
    for p in [
        "hello=1.0-1",
        "libfoo=1.2-1",
        "postfix-lite=3.0-1",
        "setuid-tool=1-1",
        "legacy-bin=1-1",
    ] {
        assert!(
            lock.contains(&format!("  \"{p}\",")),
            "{p} missing from:\n{lock}"
        );
    }
    assert!(
        !lock.contains("exim-lite"),
        "the requested provider wins:\n{lock}"
    );
    assert!(
        lock.contains("source_date_epoch = 1700000000"),
        "epoch is the Release date:\n{lock}"
    );
    assert!(!lock.contains("127.0.0.1"), "no mirror host in the lock");

    let out = json(&run_ok(repo.xtask().args(["build-image", "app", "--json"])));
    let index = out["index"]["digest"].as_str().unwrap().to_string();
    assert_eq!(out["manifests"]["x86_64"]["cached"], false);
    let layer = out["manifests"]["aarch64"]["layer"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let layer_path = repo.store().join("blobs/sha256").join(&layer);
    let gzip_t = Command::new("gzip")
        .arg("-t")
        .arg(&layer_path)
        .status()
        .unwrap();
    assert!(gzip_t.success(), "gzip -t rejects the layer");

    let entries = layer_entries(&layer_path);
    let find = |p: &str| {
        entries.iter().find(|e| e.0 == p).unwrap_or_else(|| {
            panic!(
                "{p} not in layer: {:?}",
                entries.iter().map(|e| &e.0).collect::<Vec<_>>()
            )
        })
    };
    assert_eq!(find("usr/bin/hello").3, HELLO);
    assert_eq!(find("usr/bin/hello").1, 0o755);
    assert_eq!(find("usr/bin/tool").1, 0o4755, "setuid kept");
    assert_eq!(
        find("usr/bin/legacy").3,
        b"legacy",
        "merged /usr: bin/legacy moved"
    );
    assert_eq!(
        (find("bin").2, find("bin").3.as_slice()),
        ('l', &b"usr/bin"[..])
    );
    assert_eq!(
        (
            find("usr/lib/libfoo.so").2,
            find("usr/lib/libfoo.so").3.as_slice()
        ),
        ('l', &b"libfoo.so.1"[..])
    );
    assert_eq!(find("usr/sbin/sendmail").3, b"postfix");
    assert_eq!(
        (find("etc/motd").1, find("etc/motd").3.as_slice()),
        (0o600, &b"built by cairn\n"[..])
    );
    assert!(String::from_utf8_lossy(&find("etc/passwd").3).starts_with("root:x:0:0:"));
    let paths: Vec<&String> = entries.iter().map(|e| &e.0).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "entries are sorted");

    // The host's tar reads it too, with the same modes.
    let tar_tv = Command::new("tar")
        .arg("-tvzf")
        .arg(&layer_path)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&tar_tv.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwsr-xr-x 0/0") && l.ends_with("usr/bin/tool")),
        "{listing}"
    );
    assert!(
        listing.contains("2023-11-14"),
        "mtime is the epoch: {listing}"
    );

    // Warm: nothing to build, same digest, no new blob, no request to the server.
    let n_blobs = repo.n_blobs();
    let n_requests = repo.server.requests.lock().unwrap().len();
    let again = json(&run_ok(repo.xtask().args(["build-image", "app", "--json"])));
    assert_eq!(again["index"]["digest"], index.as_str());
    assert_eq!(again["manifests"]["x86_64"]["cached"], true);
    assert_eq!(again["manifests"]["aarch64"]["cached"], true);
    assert_eq!(repo.n_blobs(), n_blobs);
    assert_eq!(repo.server.requests.lock().unwrap().len(), n_requests);

    // A fresh store with the download cache filled: same digests, no download.
    std::fs::remove_dir_all(repo.store()).unwrap();
    let cold = json(&run_ok(repo.xtask().args([
        "build-image",
        "app",
        "--arch",
        "aarch64",
        "--json",
    ])));
    assert_eq!(
        cold["manifests"]["aarch64"]["digest"],
        out["manifests"]["aarch64"]["digest"]
    );
    assert_eq!(repo.server.requests.lock().unwrap().len(), n_requests);

    // Re-locking an unchanged repository changes nothing.
    assert_eq!(repo.lock(), lock);
}

#[test]
fn a_tampered_deb_is_refused_and_leaves_nothing() {
    let repo = repo();
    repo.lock();
    let real = std::fs::read(
        repo.dir
            .path()
            .join(pool("libfoo", "1.2-1").trim_start_matches('/')),
    )
    .unwrap();
    let mut evil = real.clone();
    let last = evil.len() - 1;
    evil[last] ^= 0xff;
    repo.server
        .fault(&pool("libfoo", "1.2-1"), Fault::Replace(evil));
    let err = run_err(repo.xtask().args(["build-image", "app"]));
    assert!(
        err.contains("fetching libfoo 1.2-1 all")
            && err.contains("sha256 mismatch: expected sha256:"),
        "{err}"
    );
    assert_eq!(repo.n_blobs(), 0, "no blob in the store");
    assert!(
        !repo
            .cache
            .path()
            .join("sha256")
            .join(cairn_formats::Digest::of(&real).hex())
            .exists()
    );
    assert_eq!(
        std::fs::read_dir(repo.cache.path().join("tmp"))
            .unwrap()
            .count(),
        0,
        "no half-written download"
    );
    // A different size is caught before any of it is trusted.
    repo.server.fault(
        &pool("libfoo", "1.2-1"),
        Fault::Replace([real.clone(), b"more".to_vec()].concat()),
    );
    let err = run_err(repo.xtask().args(["build-image", "app"]));
    assert!(
        err.contains("more than the") && err.contains("bytes the lock pins"),
        "{err}"
    );
}

#[test]
fn truncated_downloads_retry_then_fail_clearly_and_5xx_are_retried() {
    let repo = repo();
    repo.lock();
    repo.server
        .fault(&pool("hello", "1.0-1"), Fault::Truncate(100));
    let err = run_err(repo.xtask().args(["build-image", "app"]));
    assert!(
        err.contains("fetching hello 1.0-1 all")
            && err.contains("truncated download: the connection dropped after 100 of"),
        "{err}"
    );
    assert_eq!(repo.n_blobs(), 0);
    assert_eq!(
        std::fs::read_dir(repo.cache.path().join("tmp"))
            .unwrap()
            .count(),
        0
    );
    repo.server.clear_faults();
    repo.server
        .fault(&pool("hello", "1.0-1"), Fault::Status(503, 2));
    let before = repo
        .server
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.contains("hello_"))
        .count();
    run_ok(repo.xtask().args(["build-image", "app"]));
    let after = repo
        .server
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.contains("hello_"))
        .count();
    assert_eq!(after - before, 3, "two 503s, then the file");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let repo = repo();
    repo.lock();
    std::fs::remove_file(
        repo.dir
            .path()
            .join(pool("setuid-tool", "1-1").trim_start_matches('/')),
    )
    .unwrap();
    let err = run_err(repo.xtask().args(["build-image", "app"]));
    assert!(
        err.contains("fetching setuid-tool 1-1 all") && err.contains("404"),
        "{err}"
    );
    assert_eq!(repo.n_blobs(), 0);
    assert_eq!(
        std::fs::read_dir(repo.cache.path().join("tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn path_traversal_debs_are_refused_naming_package_and_entry() {
    let repo = repo();
    repo.image("evil", r#"packages = ["evil"]"#);
    repo.image("evillink", r#"packages = ["evil-link"]"#);
    repo.image("evilabs", r#"packages = ["evil-abs"]"#);
    repo.image("clash", r#"packages = ["clash-a", "clash-b"]"#);
    repo.lock();
    let err = run_err(repo.xtask().args(["build-image", "evilabs"]));
    assert!(
        err.contains("evil-abs: entry \"/etc/evil\" is an absolute path"),
        "{err}"
    );
    let err = run_err(repo.xtask().args(["build-image", "clash"]));
    assert!(err.contains("conflict: /etc/clash.conf is shipped by both clash-a and clash-b with different content"), "{err}");
    let err = run_err(repo.xtask().args(["build-image", "evil"]));
    assert!(
        err.contains("evil: entry \"./../../etc/evil\" climbs out of the root"),
        "{err}"
    );
    let err = run_err(repo.xtask().args(["build-image", "evillink"]));
    assert!(err.contains("evil-link: entry \"usr/escape/etc/evil\" goes through symlink usr/escape -> ../../../.., which leads outside the root"), "{err}");
    // Nothing of any of them landed in the store (no layer, no tag).
    let index = std::fs::read_to_string(repo.store().join("index.json")).unwrap();
    assert!(
        !index.contains("evil") && !index.contains("clash"),
        "{index}"
    );
    assert_eq!(repo.n_blobs(), 0);
}

#[test]
fn ambiguity_missing_packages_and_bad_signatures_are_lock_errors() {
    let repo = repo();
    repo.image("app", r#"packages = ["hello"]"#);
    let err = run_err(repo.xtask().arg("lock"));
    assert!(err.contains("images/app.toml") && err.contains("hello depends on `mta`, provided by exim-lite, postfix-lite: write the one you want into `packages`"), "{err}");
    assert!(
        !repo.project.path().join("inputs.lock").exists(),
        "no lock written on error"
    );

    repo.image("app", r#"packages = ["nosuchpackage"]"#);
    let err = run_err(repo.xtask().arg("lock"));
    assert!(
        err.contains("package \"nosuchpackage\" does not exist for amd64"),
        "{err}"
    );

    repo.image("app", r#"packages = ["hello", "exim-lite"]"#);
    let inrelease = repo.dir.path().join("dists/cairn-test/InRelease");
    let text = std::fs::read_to_string(&inrelease).unwrap();
    std::fs::write(
        &inrelease,
        text.replace("Origin: Cairn Tests", "Origin: Cairn Tesst"),
    )
    .unwrap();
    let err = run_err(repo.xtask().arg("lock"));
    assert!(
        err.contains("verifying")
            && err.contains("InRelease")
            && err.contains("no signature verifies with the keyring"),
        "{err}"
    );
    std::fs::write(&inrelease, text).unwrap();
    let lock = repo.lock();
    assert!(
        lock.contains("exim-lite=4.0-1") && !lock.contains("postfix-lite"),
        "{lock}"
    );
}

#[test]
fn a_stale_lock_and_bad_specs_are_errors_that_say_what_to_do() {
    let repo = repo();
    let err = run_err(repo.xtask().args(["build-image", "app"]));
    assert!(
        err.contains("inputs.lock does not exist: run `cargo xtask lock`"),
        "{err}"
    );
    repo.lock();
    repo.image("app", r#"packages = ["hello", "postfix-lite"]"#);
    let err = run_err(repo.xtask().args(["build-image", "app"]));
    assert!(
        err.contains("inputs.lock is stale for image app")
            && err.contains("run `cargo xtask lock`"),
        "{err}"
    );
    // lock says what it changed (the new package list drops what only the old one pulled).
    let locked = json(&run_ok(repo.xtask().args(["lock", "--json"])));
    let changes: Vec<&str> = locked["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for arch in ["x86_64", "aarch64"] {
        assert!(
            changes
                .iter()
                .any(|c| *c == format!("app {arch}: - setuid-tool 1-1")),
            "{changes:?}"
        );
    }
    let again = json(&run_ok(repo.xtask().args(["lock", "--json"])));
    assert_eq!(again["changes"], serde_json::json!([]));
    let err = run_err(repo.xtask().args(["build-image", "nope"]));
    assert!(
        err.contains("no container image named \"nope\" in images/: there are app"),
        "{err}"
    );
    let err = run_err(repo.xtask().args(["build-image", "app", "--arch", "armv7"]));
    assert!(err.contains("image app is not built for armv7"), "{err}");
    std::fs::write(
        repo.project.path().join("images/app.toml"),
        "kind = \"container\"\narches = [\"x86_64\"]\npackages = [\"hello\"]\ncolour = 1\n",
    )
    .unwrap();
    let err = run_err(repo.xtask().args(["build-image", "app"]));
    assert!(
        err.contains("images/app.toml:4:1: key `colour`: unknown field `colour`"),
        "{err}"
    );
}

#[test]
fn url_inputs_are_pinned_by_lock_and_verified_by_build() {
    let repo = repo();
    let spec = repo.project.path().join("images/app.toml");
    let mut text = std::fs::read_to_string(&spec).unwrap();
    text.push_str("\n[[downloads]]\nname = \"greet\"\nurl = \"URL/tools/greet-{go_arch}\"\npath = \"/usr/local/bin/greet\"\nmode = \"0755\"\n".replace("URL", &repo.server.url).as_str());
    std::fs::write(&spec, text).unwrap();
    let lock = repo.lock();
    let greet_amd64 = cairn_formats::Digest::of(b"greet for amd64\n").hex();
    assert!(lock.contains(&format!("name = \"app/greet\"\nurl = \"{}/tools/greet-amd64\"\nsize = 16\nsha256 = \"{greet_amd64}\"", repo.server.url)), "{lock}");
    assert!(lock.contains("/tools/greet-arm64"), "{lock}");

    let out = json(&run_ok(repo.xtask().args(["build-image", "app", "--json"])));
    for (arch, want) in [
        ("x86_64", &b"greet for amd64\n"[..]),
        ("aarch64", &b"greet for arm64\n"[..]),
    ] {
        let layer = out["manifests"][arch]["layer"]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        let entries = layer_entries(&repo.store().join("blobs/sha256").join(layer));
        let greet = entries
            .iter()
            .find(|e| e.0 == "usr/local/bin/greet")
            .expect("download in layer");
        assert_eq!((greet.1, greet.3.as_slice()), (0o755, want), "{arch}");
    }

    // Re-locking keeps the pin without fetching again, even when the server's file changed.
    std::fs::write(
        repo.dir.path().join("tools/greet-amd64"),
        b"greet, but evil\n",
    )
    .unwrap();
    let n = repo
        .server
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.contains("greet"))
        .count();
    assert_eq!(repo.lock(), lock);
    assert_eq!(
        repo.server
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains("greet"))
            .count(),
        n
    );
    // A build that has to download it again refuses the changed file.
    let fresh_cache = tempfile::tempdir().unwrap();
    std::fs::remove_dir_all(repo.store()).unwrap();
    let err = run_err(
        repo.xtask()
            .env("CAIRN_CACHE_DIR", fresh_cache.path())
            .args(["build-image", "app"]),
    );
    assert!(
        err.contains("fetching download greet from") && err.contains("sha256 mismatch"),
        "{err}"
    );
}

#[test]
fn arch_flags_order_subset_tags_and_spec_paths_under_bin() {
    let repo = repo();
    let spec = repo.project.path().join("images/app.toml");
    let mut text = std::fs::read_to_string(&spec).unwrap();
    text.push_str(
        "\n[[files]]\npath = \"/bin/healthcheck\"\ncontent = \"#!/bin/sh\\n\"\nmode = \"0755\"\n",
    );
    std::fs::write(&spec, text).unwrap();
    repo.lock();
    let a = json(&run_ok(repo.xtask().args([
        "build-image",
        "app",
        "--arch",
        "aarch64",
        "--arch",
        "x86_64",
        "--json",
    ])));
    let b = json(&run_ok(repo.xtask().args([
        "build-image",
        "app",
        "--arch",
        "x86_64",
        "--arch",
        "aarch64",
        "--arch",
        "x86_64",
        "--json",
    ])));
    assert_eq!(
        a["index"], b["index"],
        "flag order and repeats do not matter"
    );
    assert_eq!(a["tag"], "app", "all arches: the image's own tag");
    let one = json(&run_ok(repo.xtask().args([
        "build-image",
        "app",
        "--arch",
        "aarch64",
        "--json",
    ])));
    assert_eq!(one["tag"], "app-aarch64");
    let index = std::fs::read_to_string(repo.store().join("index.json")).unwrap();
    assert!(
        index.contains(a["index"]["digest"].as_str().unwrap()),
        "the full index keeps its tag: {index}"
    );
    // A spec file under /bin lands under usr/bin, beside the merged-/usr link: GNU tar extracts it.
    let layer = a["manifests"]["x86_64"]["layer"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let layer_path = repo.store().join("blobs/sha256").join(layer);
    let entries = layer_entries(&layer_path);
    assert!(
        entries
            .iter()
            .any(|e| e.0 == "usr/bin/healthcheck" && e.1 == 0o755)
    );
    assert!(!entries.iter().any(|e| e.0.starts_with("bin/")));
    let dest = tempfile::tempdir().unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&layer_path)
        .arg("-C")
        .arg(dest.path())
        .status()
        .unwrap();
    assert!(st.success());
    assert!(dest.path().join("bin/healthcheck").is_file());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(repo.store().join("index.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644,
        "the layout is readable by all"
    );
}

#[test]
fn store_verify_and_gc() {
    let repo = repo();
    repo.lock();
    let out = json(&run_ok(repo.xtask().args(["build-image", "app", "--json"])));
    let report = json(&run_ok(repo.xtask().args(["store", "verify", "--json"])));
    assert_eq!(report["ok"], true);
    assert_eq!(report["blobs"].as_u64().unwrap() as usize, repo.n_blobs());

    let layer = out["manifests"]["x86_64"]["layer"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let path = repo.store().join("blobs/sha256").join(&layer);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[100] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let mut verify = repo.xtask();
    verify.args(["store", "verify"]);
    let err = run_err(&mut verify);
    assert!(
        err.contains(&format!("corrupt: blobs/sha256/{layer} hashes to sha256:"))
            && err.contains("problems found in app; run `cargo xtask store verify --repair`"),
        "{err}"
    );
    // --repair removes it and the cache record; the next build writes it again.
    let out_repair = repo
        .xtask()
        .args(["store", "verify", "--repair", "--json"])
        .output()
        .unwrap();
    assert!(
        !out_repair.status.success(),
        "a corrupt store is still reported as a failure"
    );
    let repaired = json(&String::from_utf8(out_repair.stdout).unwrap());
    assert_eq!(repaired["repaired"], 1);
    assert_eq!(repaired["affected_tags"], serde_json::json!(["app"]));
    assert!(!path.exists(), "the corrupt blob is gone");
    let rebuilt = json(&run_ok(repo.xtask().args(["build-image", "app", "--json"])));
    assert_eq!(rebuilt["manifests"]["x86_64"]["cached"], false);
    assert_eq!(rebuilt["index"], out["index"]);
    assert_eq!(std::fs::read(&path).unwrap(), good);
    assert_eq!(
        json(&run_ok(repo.xtask().args(["store", "verify", "--json"])))["ok"],
        true
    );

    // Remove the spec: gc untags it and drops every blob it alone reached.
    std::fs::remove_file(repo.project.path().join("images/app.toml")).unwrap();
    let gc = json(&run_ok(repo.xtask().args(["store", "gc", "--json"])));
    assert_eq!(gc["removed_tags"], serde_json::json!(["app"]));
    assert_eq!(repo.n_blobs(), 0);
}

#[test]
fn store_gc_keeps_what_was_imported_unless_asked_and_says_what_it_would_remove() {
    let repo = repo();
    repo.lock();
    run_ok(repo.xtask().args(["build-image", "app"]));
    let bundle = repo.project.path().join("app.tar");
    run_ok(
        repo.xtask()
            .args(["export", "app", "--output"])
            .arg(&bundle),
    );
    // The spare laptop: another store, whose checkout no longer has the image's spec.
    let spare = repo.project.path().join("spare-store");
    let at_spare = || {
        let mut c = support::xtask_store(repo.project.path(), &spare);
        c.env("CAIRN_CACHE_DIR", repo.cache.path());
        c
    };
    run_ok(at_spare().arg("import").arg(&bundle));
    // store list: what each tag is and where it came from.
    let listed = json(&run_ok(repo.xtask().args(["store", "list", "--json"])));
    assert_eq!(listed["tags"][0]["tag"], "app");
    assert_eq!(listed["tags"][0]["kind"], "image");
    assert_eq!(listed["tags"][0]["from"], "built");
    assert!(listed["tags"][0]["bytes"].as_u64().unwrap() > 0);
    let listed = json(&run_ok(at_spare().args(["store", "list", "--json"])));
    let imported = format!("imported from {}", bundle.display());
    assert_eq!(
        listed["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (
                t["tag"].as_str().unwrap(),
                t["kind"].as_str().unwrap(),
                t["from"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [
            ("app", "image", imported.as_str()),
            ("app.sbom", "sbom", imported.as_str())
        ]
    );
    std::fs::remove_file(repo.project.path().join("images/app.toml")).unwrap();
    let blobs = || {
        std::fs::read_dir(spare.join("blobs/sha256"))
            .unwrap()
            .count()
    };
    let before = blobs();
    assert!(before > 0);

    // Kept, and said so.
    let out = at_spare().args(["store", "gc"]).output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "kept app (imported from {}; `store gc --pulled` or `store gc app` drops it)",
            bundle.display()
        )),
        "{err}"
    );
    assert_eq!(blobs(), before, "nothing of the imported image removed");

    // --dry-run says what --pulled would remove, and removes nothing.
    let dry = json(&run_ok(at_spare().args([
        "store",
        "gc",
        "--pulled",
        "--dry-run",
        "--json",
    ])));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["removed_tags"], serde_json::json!(["app", "app.sbom"]));
    assert!(dry["removed"][0]["bytes"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(dry["removed_blobs"].as_u64().unwrap() as usize, before);
    assert_eq!(blobs(), before);
    let out = at_spare()
        .args(["store", "gc", "--pulled", "--dry-run"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("would untag app (imported from")
            && err.contains(", and --pulled): ")
            && err.contains(&format!("would remove {before} blobs")),
        "{err}"
    );

    // Named: dropped; a name the store lacks is refused.
    let err = run_err(at_spare().args(["store", "gc", "nosuch"]));
    assert!(err.contains("the store has no tag \"nosuch\""), "{err}");
    // Under --json, a failure is JSON too.
    let out = at_spare()
        .args(["store", "gc", "nosuch", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let doc = json(&String::from_utf8(out.stdout).unwrap());
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .starts_with("the store has no tag \"nosuch\""),
        "{doc}"
    );
    assert_eq!(doc["kind"], "Other");
    let gc = json(&run_ok(at_spare().args(["store", "gc", "app", "--json"])));
    assert_eq!(gc["removed"][0]["tag"], "app");
    assert_eq!(gc["removed"][0]["why"], "as asked");
    assert_eq!(blobs(), 0);
}

#[test]
fn a_truncated_lock_is_named_with_its_line_and_what_to_do_offline() {
    let repo = repo();
    let text = repo.lock();
    let path = repo.project.path().join("inputs.lock");
    // Cut in the middle of a line, as a full disk or a bad copy leaves it.
    let cut = text.find("sha256 = \"").expect("a pinned sha256") + 12;
    std::fs::write(&path, &text[..cut]).unwrap();
    let line = text[..cut].matches('\n').count() + 1;
    let err = run_err(repo.xtask().args(["build-image", "app"]));
    assert!(
        err.contains(&format!("{}:{line}:", path.display()))
            && err.contains("is not a valid lock file")
            && err.contains("git checkout -- inputs.lock"),
        "{err}"
    );
}

#[test]
fn keygen_json_names_the_key_and_refuses_to_replace_it_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("ci");
    let out = json(&run_ok(
        xtask(dir.path())
            .args(["keygen", "--json", "--output"])
            .arg(&prefix),
    ));
    assert!(out["id"].as_str().unwrap().starts_with("sha256:"), "{out}");
    let key = std::path::PathBuf::from(out["private_key"].as_str().unwrap());
    assert_eq!(key, dir.path().join("ci.key"));
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions())
            & 0o777,
        0o600
    );
    assert!(std::path::Path::new(out["public_key"].as_str().unwrap()).is_file());
    let again = xtask(dir.path())
        .args(["keygen", "--json", "--output"])
        .arg(&prefix)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let doc = json(&String::from_utf8(again.stdout).unwrap());
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("exists: refusing to replace a key"),
        "{doc}"
    );
}

#[test]
fn export_hashes_what_it_writes_and_leaves_no_bundle_from_a_damaged_blob() {
    let repo = repo();
    repo.lock();
    let out = json(&run_ok(repo.xtask().args(["build-image", "app", "--json"])));
    let layer = out["manifests"]["x86_64"]["layer"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let path = repo.store().join("blobs/sha256").join(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let bundle = repo.project.path().join("app.tar");
    let err = run_err(
        repo.xtask()
            .args(["export", "app", "--output"])
            .arg(&bundle),
    );
    assert!(
        err.contains(&format!(
            "should hash to sha256:{layer} and hashes to sha256:"
        )) && err.contains("store verify --repair"),
        "{err}"
    );
    assert!(!bundle.exists(), "no bundle from a damaged store");
    let left: Vec<_> = std::fs::read_dir(repo.project.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".cairn-export-")
        })
        .collect();
    assert!(left.is_empty(), "no temp file left: {left:?}");
}

#[test]
fn each_command_lists_only_the_registry_flags_it_takes() {
    let dir = tempfile::tempdir().unwrap();
    let help = |cmd: &str| run_ok(xtask(dir.path()).args([cmd, "--help"]));
    let push_only = ["--chunk-size", "--parallel", "--create-project"];
    let publish = help("publish");
    for flag in push_only {
        assert!(publish.contains(flag), "publish takes {flag}: {publish}");
    }
    for cmd in ["pull", "flash", "verify", "serve-pxe"] {
        let text = help(cmd);
        assert!(
            text.contains("--insecure"),
            "{cmd} reaches a registry: {text}"
        );
        for flag in push_only {
            assert!(
                !text.contains(flag),
                "{cmd} does not push, yet lists {flag}"
            );
        }
    }
    let err = run_err(xtask(dir.path()).args(["pull", "x", "--parallel", "2"]));
    assert!(err.contains("unexpected argument '--parallel'"), "{err}");
}
