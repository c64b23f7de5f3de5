//! The node's shell scripts and systemd units, kept as files beside the code that embeds them
//! (`include_str!`), checked with the tools made for them: `shellcheck` for every script,
//! `systemd-analyze verify` for every unit, in a scratch root holding the host's own units
//! and stand-ins for the programs the units start.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{repo_root, require_tool};

/// Every `*.sh` under `crates/*/src`, relative to the repository.
fn scripts() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "sh") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    for krate in std::fs::read_dir(repo_root().join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            walk(&src, &mut out);
        }
    }
    out.sort();
    out
}

/// Checks that are off for one script, and why.
const EXCEPTIONS: &[(&str, &str, &str)] = &[(
    "udhcpc.sh",
    "SC2154",
    "busybox udhcpc passes interface, ip, mask and router in the environment",
)];

#[test]
fn every_script_passes_shellcheck() {
    let shellcheck = require_tool("shellcheck", "shellcheck");
    let scripts = scripts();
    let names: BTreeSet<String> = scripts
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "init.sh",
        "udhcpc.sh",
        "secrets.sh",
        "report.sh",
        "kubernetes-up.sh",
    ] {
        assert!(
            names.contains(expected),
            "{expected} not found among {names:?}"
        );
    }
    let mut failures = Vec::new();
    for script in &scripts {
        let name = script.file_name().unwrap().to_string_lossy();
        let mut cmd = Command::new(&shellcheck);
        // The node runs them with busybox sh or dash: POSIX sh, warnings and errors.
        cmd.args(["--shell=sh", "--severity=warning", "--format=gcc"]);
        for (file, code, _why) in EXCEPTIONS {
            if name == *file {
                cmd.arg(format!("--exclude={code}"));
            }
        }
        let out = cmd.arg(script).output().expect("run shellcheck");
        if !out.status.success() {
            failures.push(format!(
                "{}\n{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    assert!(failures.is_empty(), "shellcheck:\n{}", failures.join("\n"));
}

/// The units as the node has them: (path in the image, file in the source tree).
const UNITS: &[(&str, &str)] = &[
    (
        "etc/systemd/system/cairn-secrets.service",
        "crates/node/src/files/cairn-secrets.service.in",
    ),
    (
        "etc/systemd/system/cairn-kubernetes.service",
        "crates/node/src/files/cairn-kubernetes.service",
    ),
    (
        "etc/systemd/system/cairn-report.service",
        "crates/node/src/files/cairn-report.service",
    ),
    (
        "usr/lib/systemd/system/kubelet.service",
        "crates/node/src/files/kubelet.service",
    ),
    (
        "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
        "crates/node/src/files/10-kubeadm.conf",
    ),
    (
        "usr/lib/systemd/system/k3s.service",
        "crates/node/src/files/k3s.service",
    ),
];

/// Programs the units start, made present (as stand-ins) in the scratch root.
const PROGRAMS: &[&str] = &[
    "usr/lib/cairn/secrets",
    "usr/lib/cairn/report",
    "usr/lib/cairn/kubernetes-up",
    "usr/local/bin/kubelet",
    "bin/sh",
];

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let analyze = require_tool("systemd-analyze", "systemd");
    let host_units = Path::new("/usr/lib/systemd/system");
    assert!(
        host_units.join("multi-user.target").exists(),
        "the host has no systemd units in {}",
        host_units.display()
    );
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // The host's units (targets the node's units name), then the node's own.
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    let status = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(status.success(), "copying the host's units");
    let mut paths = Vec::new();
    for (in_image, source) in UNITS {
        let text = std::fs::read_to_string(repo_root().join(source)).unwrap();
        let text = text.replace("@SECRETS_SOURCE@", "/boot/firmware/cairn-secrets.env");
        assert!(!text.contains('@'), "{source}: a placeholder is left");
        let dest = r.join(in_image);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(&dest, text).unwrap();
        if in_image.ends_with(".service") {
            paths.push(format!("/{in_image}"));
        }
    }
    for program in PROGRAMS {
        let dest = r.join(program);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(&dest, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // k3s's ExecStart is /bin/sh -c '... /usr/local/bin/k3s ...'.
    std::fs::write(r.join("usr/local/bin/k3s"), "#!/bin/sh\n").unwrap();

    let mut failures = Vec::new();
    for unit in &paths {
        let out = Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", r.display()))
            .arg(unit)
            .output()
            .expect("run systemd-analyze");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Any remark (an unknown key, a missing program) is a failure.
        let unexpected: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        if !out.status.success() || !unexpected.is_empty() {
            failures.push(format!("{unit}:\n{}", unexpected.join("\n")));
        }
    }
    assert_eq!(paths.len(), 5, "every service unit was checked");
    assert!(
        failures.is_empty(),
        "systemd-analyze verify:\n{}",
        failures.join("\n")
    );
}
