//! The base OS root filesystem (squashfs) of the example OS image: reproducible, read by
//! unsquashfs, and holding what maintainer scripts would have made, checked against the
//! real tools (dpkg, depmod).

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use support::{copy_project, json, require_tool, run_ok};

fn build_os(
    dir: &Path,
    arch: &str,
    tz: &str,
    umask: &str,
    faketime: Option<&str>,
) -> serde_json::Value {
    json(&run_ok(
        support::xtask_varied(dir, tz, "C.UTF-8", umask, faketime)
            .args(["build-os", "node-os", "--arch", arch, "--json"]),
    ))
}

fn deps(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.split_whitespace().map(str::to_string).collect(),
            )
        })
        .collect()
}

/// Extracts `paths` of the squashfs into `dest` with unsquashfs.
fn unsquash(image: &Path, dest: &Path, paths: &[&str]) {
    let unsquashfs = require_tool("unsquashfs", "squashfs-tools");
    let out = Command::new(unsquashfs)
        .arg("-q")
        .arg("-n")
        .arg("-d")
        .arg(dest)
        .arg(image)
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "unsquashfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the root's own x86_64 `systemd-hwdb` (through the root's dynamic linker: the node's
/// glibc may be newer than the host's) with `args`; its standard output.
fn image_hwdb(root: &Path, args: &[&str]) -> String {
    let lib = root.join("usr/lib/x86_64-linux-gnu");
    let out = Command::new(lib.join("ld-linux-x86-64.so.2"))
        .arg("--library-path")
        .arg(format!(
            "{}:{}",
            lib.display(),
            lib.join("systemd").display()
        ))
        .arg(root.join("usr/bin/systemd-hwdb"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-hwdb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Our `hwdb.bin` against the one the image's own `systemd-hwdb --usr update` (udev's
/// postinst) compiles from the same sources: systemd's reader gives the same properties
/// for a modalias of every 40th record of every source file, and for some the boards have.
fn check_hwdb(root: &Path) {
    let ours = root.join("usr/lib/udev/hwdb.bin");
    assert!(
        std::fs::metadata(&ours).unwrap().len() > 1 << 20,
        "the image holds its compiled hardware database"
    );
    let theirs = tempfile::tempdir().unwrap();
    let theirs = theirs.path();
    std::fs::create_dir_all(theirs.join("usr/lib/udev")).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(root.join("usr/lib/udev/hwdb.d"))
        .arg(theirs.join("usr/lib/udev"))
        .status()
        .unwrap();
    assert!(cp.success());
    let root_arg = theirs.to_str().unwrap();
    image_hwdb(root, &["update", "--usr", "--strict", "--root", root_arg]);
    let mut modaliases = vec![
        "usb:v1D6Bp0002d0606dc09dsc00dp01ic09isc00ip00in00".to_string(),
        "usb:v0424pEC00d0200dcFFdsc00dp01icFFisc00ip01in00".to_string(),
        "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00".to_string(),
        "of:NsdhostT(null)Cbrcm,bcm2835-sdhost".to_string(),
    ];
    let mut sources: Vec<_> = std::fs::read_dir(root.join("usr/lib/udev/hwdb.d"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    sources.sort();
    for source in &sources {
        let text = std::fs::read_to_string(source).unwrap();
        let matches = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with([' ', '#']) && !l.contains('['));
        modaliases.extend(
            matches
                .step_by(40)
                .map(|m| m.replace('*', "").replace('?', "0")),
        );
    }
    assert!(modaliases.len() > 1000, "{} modaliases", modaliases.len());
    let mut found = 0;
    for modalias in &modaliases {
        let a = image_hwdb(root, &["query", "--root", root.to_str().unwrap(), modalias]);
        let b = image_hwdb(root, &["query", "--root", root_arg, modalias]);
        assert_eq!(a, b, "the properties of {modalias}");
        found += usize::from(!a.is_empty());
    }
    assert!(
        found * 10 > modaliases.len() * 9,
        "{found} of {} found",
        modaliases.len()
    );
}

/// Our modules.dep against the host's depmod run on the same modules: the same
/// dependency sets, and our order loads right to left.
fn check_depmod(root: &Path) {
    let depmod = require_tool("depmod", "kmod");
    let modules = root.join("usr/lib/modules");
    let kver = std::fs::read_dir(&modules)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    let ours = deps(&std::fs::read_to_string(modules.join(&kver).join("modules.dep")).unwrap());
    let base = tempfile::tempdir().unwrap();
    let copy = base.path().join("lib/modules").join(&kver);
    std::fs::create_dir_all(&copy).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", modules.join(&kver).display()))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::remove_file(copy.join("modules.dep")).unwrap();
    let st = Command::new(depmod)
        .arg("-b")
        .arg(base.path())
        .arg(&kver)
        .status()
        .unwrap();
    assert!(st.success(), "depmod failed");
    let theirs = deps(&std::fs::read_to_string(copy.join("modules.dep")).unwrap());
    assert!(ours.len() > 1000, "only {} modules", ours.len());
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (module, list) in &ours {
        let a: BTreeSet<&String> = list.iter().collect();
        let b: BTreeSet<&String> = theirs[module].iter().collect();
        assert_eq!(a, b, "dependencies of {module}");
        // Every dependency's own dependencies come after it on the line.
        for (i, d) in list.iter().enumerate() {
            for dd in &ours[d] {
                assert!(
                    list[i + 1..].contains(dd),
                    "{module}: {dd} (needed by {d}) is not to its right"
                );
            }
        }
    }
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn aarch64_base_os_is_reproducible_and_holds_what_maintainer_scripts_would_make() {
    let _serial = support::one_at_a_time();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let b_deep = b.path().join("x/y/z");
    std::fs::create_dir_all(&b_deep).unwrap();
    copy_project(a.path());
    copy_project(&b_deep);
    let first = build_os(a.path(), "aarch64", "UTC", "022", None);
    let second = build_os(&b_deep, "aarch64", "Asia/Kathmandu", "077", Some("+400d"));
    for output in ["squashfs", "kernel", "initramfs"] {
        assert_eq!(
            first["arches"]["aarch64"][output]["digest"],
            second["arches"]["aarch64"][output]["digest"],
            "{output} differs"
        );
    }
    assert_eq!(second["arches"]["aarch64"]["cached"], false);
    // Built again in the same store: the action cache answers.
    let again = build_os(a.path(), "aarch64", "UTC", "022", None);
    assert_eq!(again["arches"]["aarch64"]["cached"], true);

    let image = Path::new(
        first["arches"]["aarch64"]["squashfs"]["path"]
            .as_str()
            .unwrap(),
    )
    .to_path_buf();
    let listing = Command::new(require_tool("unsquashfs", "squashfs-tools"))
        .arg("-lln")
        .arg(&image)
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    for needed in [
        "squashfs-root/usr/lib/systemd/systemd",
        "squashfs-root/usr/sbin/sshd",
        "squashfs-root/usr/sbin/nft",
        "squashfs-root/usr/bin/busybox",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(needed)),
            "{needed} missing"
        );
    }
    // The example cluster runs k3s, which brings its own containerd.
    assert!(
        !listing
            .lines()
            .any(|l| l.ends_with("squashfs-root/usr/bin/containerd")),
        "Debian's containerd in a k3s cluster's image"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("lrwxrwxrwx 0/0") && l.contains("squashfs-root/bin -> usr/bin")),
        "merged /usr"
    );
    let info = Command::new(require_tool("unsquashfs", "squashfs-tools"))
        .arg("-s")
        .arg(&image)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("Compression zstd"));

    let root = tempfile::tempdir().unwrap();
    let root = root.path().join("root");
    unsquash(
        &image,
        &root,
        &[
            "etc",
            "var/lib/dpkg",
            "usr/lib/modules",
            "usr/share/ca-certificates",
        ],
    );
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.starts_with("root:x:0:0:root:/root:/bin/bash\n"),
        "base-passwd first: {passwd}"
    );
    for user in [
        "sshd:x:",
        "systemd-network:x:",
        "systemd-resolve:x:",
        "messagebus:x:",
    ] {
        assert!(
            passwd.contains(user),
            "sysusers.d user {user} missing: {passwd}"
        );
    }
    let shadow = std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    assert!(
        shadow.lines().all(|l| {
            let p = l.split(':').nth(1).unwrap();
            p == "*" || p == "!*"
        }),
        "every password locked: {shadow}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(group.contains("\nshadow:x:42:"), "{group}");
    assert_eq!(
        std::fs::metadata(root.join("etc/machine-id"))
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/systemd/system/multi-user.target.wants/ssh.service"))
            .unwrap(),
        Path::new("/usr/lib/systemd/system/ssh.service")
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/systemd/system/default.target")).unwrap(),
        Path::new("/usr/lib/systemd/system/multi-user.target")
    );
    assert!(
        root.join("etc/systemd/system/sysinit.target.wants/systemd-timesyncd.service")
            .is_symlink()
    );
    // As systemd-update-done would leave it: /etc is up to date with this /usr, so
    // `ConditionNeedsUpdate=/etc` (ldconfig, sysusers) is false on the node.
    let mtime = |p: &str| {
        std::fs::metadata(root.join(p))
            .unwrap_or_else(|e| panic!("{p} in the base OS: {e}"))
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    assert_eq!(
        mtime("etc/.updated"),
        mtime("usr"),
        "/etc/.updated is /usr's age"
    );
    let updated = std::fs::read_to_string(root.join("etc/.updated")).unwrap();
    assert!(
        updated.ends_with(&format!("\nTIMESTAMP_NSEC={}000000000\n", mtime("usr"))),
        "{updated}"
    );
    let bundle = std::fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(bundle.matches("BEGIN CERTIFICATE").count() > 100);

    // dpkg itself reads the status file.
    let dpkg = Command::new(require_tool("dpkg-query", "dpkg"))
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Package} ${db:Status-Abbrev}\n"])
        .output()
        .unwrap();
    let installed = String::from_utf8(dpkg.stdout).unwrap();
    assert!(dpkg.status.success());
    let lock: toml::Value =
        toml::from_str(&std::fs::read_to_string(a.path().join("inputs.lock")).unwrap()).unwrap();
    let n_locked = lock["image"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"].as_str() == Some("node-os"))
        .unwrap()["arch"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["arch"].as_str() == Some("aarch64"))
        .unwrap()["packages"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        installed.lines().filter(|l| l.ends_with(" ii ")).count(),
        n_locked,
        "{installed}"
    );
    assert!(installed.lines().any(|l| l == "systemd ii "));

    check_depmod(&root);
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn x86_64_and_armv7_base_os_modules_and_hardware_database_match_depmod_and_systemd_hwdb() {
    let _serial = support::one_at_a_time();
    let project = tempfile::tempdir().unwrap();
    copy_project(project.path());
    let mut x86_hwdb = None;
    for arch in ["x86_64", "armv7"] {
        let out = build_os(project.path(), arch, "UTC", "022", None);
        let image =
            Path::new(out["arches"][arch]["squashfs"]["path"].as_str().unwrap()).to_path_buf();
        let root = tempfile::tempdir().unwrap();
        let root = root.path().join("root");
        let mut paths = vec!["usr/lib/modules", "etc/passwd", "usr/lib/udev"];
        if arch == "x86_64" {
            paths.extend(["usr/bin/systemd-hwdb", "usr/lib/x86_64-linux-gnu"]);
        }
        unsquash(&image, &root, &paths);
        assert!(
            std::fs::read_to_string(root.join("etc/passwd"))
                .unwrap()
                .contains("sshd:x:")
        );
        check_depmod(&root);
        let hwdb = std::fs::read(root.join("usr/lib/udev/hwdb.bin")).unwrap();
        match &x86_hwdb {
            None => {
                check_hwdb(&root);
                x86_hwdb = Some(hwdb);
            }
            // The database is little-endian on every arch: the same sources, the same bytes.
            Some(x86) => assert!(*x86 == hwdb, "armv7's hwdb.bin differs from x86_64's"),
        }
    }
}

/// The aarch64 initramfs holds busybox, Cairn's init, the console node and the boards'
/// modules with their dependencies. (Booting is tested per node in nodes.rs.)
#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn aarch64_initramfs_holds_init_busybox_and_modules() {
    let _serial = support::one_at_a_time();
    let project = tempfile::tempdir().unwrap();
    copy_project(project.path());
    let out = build_os(project.path(), "aarch64", "UTC", "022", None);
    let o = &out["arches"]["aarch64"];
    let path = |k: &str| o[k]["path"].as_str().unwrap().to_string();

    // The initramfs holds busybox, init, the console node and the modules with their deps.
    let cpio = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc {} | cpio -t --quiet", path("initramfs")))
        .output()
        .unwrap();
    let listing = String::from_utf8(cpio.stdout).unwrap();
    let kver = o["kernel_release"].as_str().unwrap();
    for needed in [
        "init",
        "bin/busybox",
        "dev/console",
        "etc/cairn/modules",
        &format!("lib/modules/{kver}/modules.dep"),
        &format!("lib/modules/{kver}/kernel/fs/squashfs/squashfs.ko.xz"),
        &format!("lib/modules/{kver}/kernel/drivers/mmc/host/sdhci-iproc.ko.xz"),
        &format!("lib/modules/{kver}/kernel/drivers/mmc/host/sdhci.ko.xz"),
        // e2fsprogs for the data partition, with the dynamic linker and what they link.
        "usr/sbin/mke2fs",
        "usr/sbin/e2fsck",
        "lib/ld-linux-aarch64.so.1",
        "usr/lib/aarch64-linux-gnu/libc.so.6",
        "usr/lib/aarch64-linux-gnu/libext2fs.so.2",
        "usr/lib/aarch64-linux-gnu/libcom_err.so.2",
        "etc/mke2fs.conf",
        "etc/e2fsck.conf",
    ] {
        assert!(
            listing.lines().any(|l| l == needed),
            "{needed} not in the initramfs:\n{listing}"
        );
    }
    let kernel = std::fs::read(path("kernel")).unwrap();
    assert_eq!(&kernel[56..60], b"ARM\x64", "an arm64 Image");
}
