//! `serve-pxe` on a real LAN the test builds itself: a "router" network namespace running
//! Debian's dnsmasq as the LAN's DHCP server, a "provisioning host" namespace holding a
//! bridge with `serve-pxe` on it, and x86-storage under QEMU on a tap device of that bridge,
//! booting from its PXE ROM (iPXE) through the proxy DHCP answer to `secrets=present`.
//! TFTP serves the locked iPXE binaries to PXE ROMs (read here with curl). No traffic
//! leaves the namespaces.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{copy_project, pin_stand_ins, require_tool, run_err, run_ok, xtask};

const JOIN_TOKEN: &str = "q7zt3x.k4m9p2w8r6v1n5b3";

/// Two namespaces and the processes in them, removed on drop.
struct Lan {
    router: String,
    host: String,
    children: Vec<Child>,
}

impl Lan {
    fn new() -> Lan {
        let ip = require_tool("ip", "iproute2");
        let id = std::process::id();
        let lan = Lan {
            router: format!("cairn-r{id}"),
            host: format!("cairn-h{id}"),
            children: Vec::new(),
        };
        let (r, h) = (&lan.router, &lan.host);
        for args in [
            vec!["netns", "add", r],
            vec!["netns", "add", h],
            vec![
                "-n", r, "link", "add", "r0", "type", "veth", "peer", "name", "l0", "netns", h,
            ],
            vec!["-n", r, "addr", "add", "10.0.10.1/24", "dev", "r0"],
            vec!["-n", r, "link", "set", "r0", "up"],
            vec!["-n", r, "link", "set", "lo", "up"],
            vec!["-n", h, "link", "add", "br0", "type", "bridge"],
            vec!["-n", h, "link", "set", "l0", "master", "br0"],
            vec!["-n", h, "link", "set", "l0", "up"],
            vec!["-n", h, "addr", "add", "10.0.10.2/24", "dev", "br0"],
            vec!["-n", h, "link", "set", "br0", "up"],
            vec!["-n", h, "link", "set", "lo", "up"],
            vec!["-n", h, "tuntap", "add", "dev", "tap0", "mode", "tap"],
            vec!["-n", h, "link", "set", "tap0", "master", "br0"],
            vec!["-n", h, "link", "set", "tap0", "up"],
        ] {
            run_ok(Command::new(&ip).args(args));
        }
        lan
    }

    fn exec(&self, netns: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", netns]).arg(program);
        c
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.router, &self.host] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn wait_for(path: &Path, text: &str, secs: u64) -> String {
    let start = Instant::now();
    loop {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        if s.contains(text) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{text:?} not in {} after {secs} s:\n{s}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "slow: network namespaces, QEMU"]
fn x86_storage_boots_from_serve_pxe_beside_the_lans_dhcp_server() {
    let dnsmasq = require_tool("dnsmasq", "dnsmasq-base");
    let qemu = require_tool("qemu-system-x86_64", "qemu-system-x86");
    let curl = require_tool("curl", "curl");
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    copy_project(dir);
    pin_stand_ins(dir);
    run_ok(xtask(dir).args(["build-node", "x86-storage"]));
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(
        secrets.join("x86-storage.env"),
        format!("join_token={JOIN_TOKEN}\n"),
    )
    .unwrap();
    let xtask_bin = PathBuf::from(env!("CARGO_BIN_EXE_xtask"));

    // An SD node is not served, and says what to do instead.
    let err = run_err(xtask(dir).args(["serve-pxe", "pi-worker", "--listen", "127.0.0.1"]));
    assert!(err.contains("boots from an SD card"), "{err}");
    // Secrets the node could not join with are refused before anything is served.
    let bad = dir.join("bad-secrets");
    std::fs::create_dir_all(&bad).unwrap();
    let serve_bad = || {
        let mut c = xtask(dir);
        c.args([
            "serve-pxe",
            "x86-storage",
            "--listen",
            "127.0.0.1",
            "--secrets-dir",
        ])
        .arg(&bad);
        c
    };
    let err = run_err(&mut serve_bad());
    assert!(
        err.contains("--secrets-dir serves x86-storage the file x86-storage.env")
            && err.contains("bad-secrets/x86-storage.env"),
        "{err}"
    );
    std::fs::write(bad.join("x86-storage.env"), "JOIN_TOKEN=abc\n").unwrap();
    let err = run_err(&mut serve_bad());
    assert!(
        err.contains("x86-storage.env:1: unknown key JOIN_TOKEN (keys are lower case: join_token)"),
        "{err}"
    );

    let mut lan = Lan::new();
    let logs = tempfile::tempdir().unwrap();
    let log = |name: &str| std::fs::File::create(logs.path().join(name)).unwrap();
    lan.children.push(
        lan.exec(&lan.router, &dnsmasq)
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--interface=r0",
                "--bind-interfaces",
                "--dhcp-range=10.0.10.100,10.0.10.150,255.255.255.0,1h",
                "--log-dhcp",
            ])
            .arg(format!(
                "--dhcp-leasefile={}",
                logs.path().join("leases").display()
            ))
            .arg(format!(
                "--pid-file={}",
                logs.path().join("dnsmasq.pid").display()
            ))
            .stdout(log("dnsmasq.log"))
            .stderr(log("dnsmasq.err"))
            .spawn()
            .unwrap(),
    );
    let host = lan.host.clone();
    let serve = |extra: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &host]).arg(&xtask_bin);
        c.arg("--root")
            .arg(dir)
            .args([
                "--quiet",
                "serve-pxe",
                "x86-storage",
                "--listen",
                "10.0.10.2",
            ])
            .arg("--secrets-dir")
            .arg(&secrets)
            .args(["--kernel-args", "cairn.test=poweroff panic=-1"])
            .args(extra)
            .env_remove("CAIRN_ROOT")
            .env_remove("CAIRN_STORE");
        c
    };
    lan.children.push(
        serve(&[])
            .stdout(Stdio::null())
            .stderr(log("serve.log"))
            .spawn()
            .unwrap(),
    );
    let serve_log = logs.path().join("serve.log");
    wait_for(&serve_log, "Stop with Ctrl-C", 120);

    // A second server on the same host is refused: its ports are taken.
    let err = run_err(&mut serve(&[]));
    assert!(err.contains("is taken"), "{err}");

    // A PXE ROM's first file, over TFTP from the router's side of the LAN: the locked
    // ipxe package's undionly.kpxe.
    let kpxe = logs.path().join("undionly.kpxe");
    run_ok(
        lan.exec(&lan.router, &curl)
            .args(["-s", "-o"])
            .arg(&kpxe)
            .arg("tftp://10.0.10.2/undionly.kpxe"),
    );
    let bytes = std::fs::read(&kpxe).unwrap();
    assert!(
        bytes.len() > 50_000,
        "undionly.kpxe is {} bytes",
        bytes.len()
    );
    let missing = lan
        .exec(&lan.router, &curl)
        .args(["-s", "-o", "/dev/null", "tftp://10.0.10.2/etc/passwd"])
        .status()
        .unwrap();
    assert!(!missing.success(), "only the iPXE files are served");

    // The node boots from its PXE ROM on the tap device.
    let console = logs.path().join("console.log");
    let _one = support::one_at_a_time();
    let mut vm = lan
        .exec(&lan.host, Path::new("nice"))
        .args(["-n", "-10"])
        .arg(&qemu)
        .args(["-M", "pc", "-cpu", "max", "-m", "1024", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-boot", "n"])
        .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
        .args(["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:10:31"])
        .stdin(Stdio::null())
        .stdout(log("console.log"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while vm.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(480) {
            let _ = vm.kill();
            let _ = vm.wait();
            panic!(
                "no poweroff within 480 s:\n{}\nserve-pxe:\n{}",
                std::fs::read_to_string(&console).unwrap_or_default(),
                std::fs::read_to_string(&serve_log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = String::from_utf8_lossy(&std::fs::read(&console).unwrap()).into_owned();
    let report = out
        .lines()
        .find(|l| l.contains("cairn-node: hostname="))
        .unwrap_or_else(|| panic!("no report:\n{out}"));
    assert!(report.contains("hostname=x86-storage"), "{report}");
    assert!(report.contains("address=10.0.10.31/24"), "{report}");
    assert!(report.contains("secrets=present"), "{report}");
    assert!(
        out.contains("cairn: secrets read from http://10.0.10.2:8080/x86-storage/secrets.env"),
        "{out}"
    );
    assert!(
        out.contains("cairn-kubernetes: active success"),
        "the join ran"
    );
    assert!(!out.contains(JOIN_TOKEN), "the token is on the console");
    // What every boot test checks, and x86-storage's k3s: this is its only boot.
    crate::nodes::check_console("x86-storage", &out);
    crate::nodes::check_k3s("x86-storage", &out, &["first"]);

    // What the server did, line by line: the proxy answer to iPXE, then every file.
    let served = std::fs::read_to_string(&serve_log).unwrap();
    assert!(
        served.contains(
            "dhcp 52:54:00:00:10:31 DISCOVER (iPXE) -> http://10.0.10.2:8080/x86-storage/boot.ipxe"
        ),
        "{served}"
    );
    for path in [
        "/x86-storage/boot.ipxe",
        "/x86-storage/52-54-00-00-10-31.ipxe",
        "/x86-storage/vmlinuz",
        "/x86-storage/initrd.img",
        "/x86-storage/root.squashfs",
        "/x86-storage/secrets.env",
    ] {
        assert!(
            served.contains(&format!("GET {path} 200")),
            "{path}:\n{served}"
        );
    }
    assert!(
        served.contains("tftp") && served.contains("undionly.kpxe sending"),
        "{served}"
    );
    // The LAN's own server gave the address.
    let leases = std::fs::read_to_string(logs.path().join("leases")).unwrap_or_default();
    assert!(
        leases.contains("52:54:00:00:10:31"),
        "dnsmasq leased it: {leases}"
    );
}
