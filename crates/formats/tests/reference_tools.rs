//! Differential checks: GNU cpio reads what the cpio writer wrote.

use cairn_formats::cpio::CpioWriter;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    assert!(
        found,
        "host tool `{tool}` is missing: install it with `apt-get install {package}` (or run `cargo xtask test`)"
    );
}

#[test]
fn gnu_cpio_extracts_the_newc_archive() {
    require("cpio", "cpio");
    let mut w = CpioWriter::new(Vec::new());
    w.dir("bin", 0o755, 1_700_000_000).unwrap();
    w.file("bin/busybox", 0o755, 1_700_000_000, b"#!busybox\n")
        .unwrap();
    w.symlink("bin/sh", "busybox", 1_700_000_000).unwrap();
    w.dir("etc", 0o700, 1_700_000_000).unwrap();
    w.file("etc/secret", 0o600, 1_700_000_000, b"").unwrap();
    let big: Vec<u8> = (0..100_003u32).map(|i| (i % 253) as u8).collect();
    w.file("lib/modules.bin", 0o644, 1_700_000_000, &big)
        .unwrap();
    let archive = w.finish().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("cpio")
        .args(["-i", "-d", "-m", "--no-absolute-filenames", "--quiet"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&archive).unwrap();
    assert!(child.wait().unwrap().success());
    let root = dir.path();
    assert_eq!(
        std::fs::read(root.join("bin/busybox")).unwrap(),
        b"#!busybox\n"
    );
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    assert_eq!(
        std::fs::metadata(root.join("etc/secret"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(root.join("etc"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o700
    );
    assert_eq!(std::fs::read(root.join("lib/modules.bin")).unwrap(), big);

    let mut w = CpioWriter::new(Vec::new());
    w.char_device("console", 0o600, 5, 1, 0).unwrap();
    let dev = w.finish().unwrap();
    let mut l = Command::new("cpio")
        .args(["-t", "-v", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    l.stdin.take().unwrap().write_all(&dev).unwrap();
    let out = String::from_utf8(l.wait_with_output().unwrap().stdout).unwrap();
    assert!(
        out.starts_with("crw-------")
            && out.contains("5,   1")
            && out.trim_end().ends_with("console"),
        "{out}"
    );

    let listing = Command::new("cpio")
        .args(["-t", "-v", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut listing = listing;
    listing.stdin.take().unwrap().write_all(&archive).unwrap();
    let out = String::from_utf8(listing.wait_with_output().unwrap().stdout).unwrap();
    assert!(
        out.lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("bin/busybox")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with("bin/sh -> busybox")),
        "{out}"
    );
}
