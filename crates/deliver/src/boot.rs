//! `boot-test`: boots a node's artifact under QEMU (software emulation) and checks what the
//! running system reports on its console: hostname, address, role and whether its secrets
//! arrived. aarch64 and armv7 boot QEMU's `virt` machine with the node's kernel, initramfs
//! and a card written by `flash` (secrets included); x86_64 boots by PXE through QEMU's
//! built-in TFTP and Cairn's HTTP server on loopback, which serves the node's secrets file
//! under the node's own path. With secrets, the node prints its journal before powering
//! off, and no secret value may appear anywhere on the console.

use cairn_node::build::NodeResult;
use cairn_project::{Arch, BootMethod, NodeSpec, Role};
use cairn_steps::Error;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How to boot.
#[derive(Debug, Clone)]
pub struct BootConfig {
    /// Give up on one boot after this long.
    pub timeout: Duration,
    /// Boots to try before failing (TCG guests have been seen to stall once in a while).
    pub attempts: u32,
    /// Where the console logs go (`<node>-<attempt>.log`).
    pub log_dir: PathBuf,
    /// Print the console as it comes.
    pub echo: bool,
    /// SD nodes: boot a second time from the same disk and check that the data partition
    /// made on the first boot is found again.
    pub reboot: bool,
    /// The node's secrets file: flashed onto the card (SD) or served (PXE). The node must
    /// then report `secrets=present`, without it `secrets=absent`.
    pub secrets: Option<Vec<u8>>,
}

/// What the booted node said about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct BootReport {
    pub hostname: String,
    pub addresses: Vec<String>,
    pub role: String,
    pub node_id: String,
    pub secrets: String,
    /// The writable layer: `created:/dev/vda3` (first boot), `existing:/dev/vda3`, `tmpfs`.
    pub writable: String,
    /// After `reboot`: the writable layer the second boot reported.
    pub rebooted_writable: Option<String>,
    /// After `reboot`: the second boot's console log.
    pub rebooted_log: Option<PathBuf>,
    pub seconds: f64,
    pub log: PathBuf,
}

impl BootReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "hostname": self.hostname,
            "addresses": self.addresses,
            "role": self.role,
            "node_id": self.node_id,
            "secrets": self.secrets,
            "writable": self.writable,
            "rebooted_writable": self.rebooted_writable,
            "rebooted_log": self.rebooted_log.as_ref().map(|l| l.display().to_string()),
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "log": self.log.display().to_string(),
        })
    }
}

/// Parses `cairn-node: hostname=... address=a,b role=... node=... id=... secrets=...`.
pub fn parse_report(line: &str) -> Option<BTreeMap<String, String>> {
    let rest = &line[line.find("cairn-node: hostname=")? + "cairn-node: ".len()..];
    Some(
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn qemu_binary(arch: Arch) -> &'static str {
    match arch {
        Arch::Aarch64 => "qemu-system-aarch64",
        Arch::Armv7 => "qemu-system-arm",
        Arch::X86_64 => "qemu-system-x86_64",
    }
}

/// Boots `result` (the artifact of `node`) and checks its report.
pub fn boot_test(
    store: &Path,
    node: &NodeSpec,
    result: &NodeResult,
    config: &BootConfig,
) -> Result<BootReport, Error> {
    std::fs::create_dir_all(&config.log_dir)
        .map_err(|e| Error::msg(format!("{}: {e}", config.log_dir.display())))?;
    let blob = |title: &str| -> Result<PathBuf, Error> {
        let f = result.file(title).ok_or_else(|| {
            Error::msg(format!(
                "node {} has no {title} in its artifact",
                result.node
            ))
        })?;
        Ok(store.join("blobs/sha256").join(f.digest.hex()))
    };
    let mut last_error = Error::msg("no boot attempted");
    for attempt in 1..=config.attempts.max(1) {
        let log = config
            .log_dir
            .join(format!("{}-{attempt}.log", result.node));
        let mut _server = None;
        let tftp_dir = tempfile::tempdir().map_err(|e| Error::msg(e.to_string()))?;
        let mut cmd = Command::new(qemu_binary(node.arch));
        cmd.args(["-m", "1024", "-smp", "2", "-nographic", "-no-reboot"]);
        match (node.boot, node.arch) {
            (BootMethod::Sd, arch) => {
                let append = qemu_cmdline(&result.cmdline, arch);
                match arch {
                    Arch::Aarch64 => cmd.args(["-M", "virt", "-cpu", "cortex-a53"]),
                    _ => cmd.args(["-M", "virt,highmem=off", "-cpu", "cortex-a15"]),
                };
                cmd.arg("-kernel").arg(blob("vmlinuz")?);
                cmd.arg("-initrd").arg(blob("initrd.img")?);
                cmd.arg("-append").arg(append);
                // The card as `flash` writes it (secrets included), 512 MiB larger than the
                // image as real cards are, so the data partition can be made; the store's
                // image is not touched.
                let card = tftp_dir.path().join("card.img");
                let store_handle = cairn_store::Store::open(store, || {})?;
                let image = crate::flash::NodeImage::from_store(&store_handle, &result.node)?;
                crate::flash::flash(
                    &store_handle,
                    &image,
                    &crate::flash::FlashConfig {
                        target: crate::flash::Target::File(card.clone()),
                        secrets: config.secrets.clone(),
                        force: false,
                        progress: false,
                    },
                )
                .map_err(|e| e.context("writing the test card"))?;
                drop(store_handle);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&card)
                    .and_then(|f| f.set_len(image.size + (512 << 20)))
                    .map_err(|e| Error::msg(format!("{}: {e}", card.display())))?;
                cmd.arg("-drive")
                    .arg(format!("if=none,id=d0,file={},format=raw", card.display()));
                cmd.args(["-device", "virtio-blk-device,drive=d0"]);
                cmd.args(["-netdev", "user,id=n0"]);
                let mac = node.mac.map(|m| format!(",mac={m}")).unwrap_or_default();
                cmd.args(["-device", &format!("virtio-net-device,netdev=n0{mac}")]);
            }
            (BootMethod::Pxe, _) => {
                let mac = node
                    .mac
                    .ok_or_else(|| Error::msg("a PXE node needs a MAC address"))?;
                let prefix = format!("/{}", result.node);
                let mut routes = BTreeMap::new();
                for f in &result.files {
                    routes.insert(
                        format!("{prefix}/{}", f.title),
                        store.join("blobs/sha256").join(f.digest.hex()),
                    );
                }
                if let Some(secrets) = &config.secrets {
                    let file = tftp_dir.path().join("secrets.env");
                    std::fs::write(&file, secrets).map_err(|e| Error::msg(e.to_string()))?;
                    routes.insert(format!("{prefix}/secrets.env"), file);
                }
                let server = cairn_pxe::http::serve("127.0.0.1:0", routes)?;
                // QEMU's user network reaches the host's loopback at 10.0.2.2.
                let base_url = format!("http://10.0.2.2:{}{prefix}", server.addr.port());
                let bootstrap = format!(
                    "#!ipxe\n# Cairn boot test: what a PXE server's DHCP answer would chain to.\nset base-url {base_url}\nset cairn-args cairn.test=poweroff panic=-1\nchain ${{base-url}}/boot.ipxe\n"
                );
                std::fs::write(tftp_dir.path().join("bootstrap.ipxe"), bootstrap)
                    .map_err(|e| Error::msg(e.to_string()))?;
                _server = Some(server);
                cmd.args(["-M", "pc", "-cpu", "max"]);
                cmd.args([
                    "-netdev",
                    &format!(
                        "user,id=n0,tftp={},bootfile=bootstrap.ipxe",
                        tftp_dir.path().display()
                    ),
                ]);
                cmd.args(["-device", &format!("virtio-net-pci,netdev=n0,mac={mac}")]);
                cmd.args(["-boot", "n"]);
            }
        }
        let second = if config.reboot && node.boot == BootMethod::Sd {
            let mut again = Command::new(cmd.get_program());
            again.args(cmd.get_args());
            Some(again)
        } else {
            None
        };
        match run_once(cmd, &log, config) {
            Ok((fields, seconds)) => {
                let mut rebooted_log = None;
                let rebooted_writable = match second {
                    Some(again) => {
                        let log2 = config
                            .log_dir
                            .join(format!("{}-{attempt}-reboot.log", result.node));
                        rebooted_log = Some(log2.clone());
                        match run_once(again, &log2, config) {
                            Ok((f, _)) => Some(f.get("writable").cloned().unwrap_or_default()),
                            Err(e) => {
                                last_error = e.context("the second boot");
                                continue;
                            }
                        }
                    }
                    None => None,
                };
                let report = BootReport {
                    hostname: fields.get("hostname").cloned().unwrap_or_default(),
                    addresses: fields
                        .get("address")
                        .map(|a| {
                            a.split(',')
                                .filter(|s| !s.is_empty() && *s != "none")
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default(),
                    role: fields.get("role").cloned().unwrap_or_default(),
                    node_id: fields.get("id").cloned().unwrap_or_default(),
                    secrets: fields.get("secrets").cloned().unwrap_or_default(),
                    writable: fields.get("writable").cloned().unwrap_or_default(),
                    rebooted_writable,
                    rebooted_log,
                    seconds,
                    log: log.clone(),
                };
                check(node, result, &report, config.secrets.as_deref())?;
                return Ok(report);
            }
            Err(e) => {
                if config.echo {
                    eprintln!("boot attempt {attempt} of {} failed: {e}", result.node);
                }
                last_error = e;
            }
        }
    }
    Err(last_error)
}

/// The node's kernel command line for QEMU's `virt`: its own consoles replaced by the
/// PL011 one, plus the boot test's poweroff.
fn qemu_cmdline(cmdline: &str, _arch: Arch) -> String {
    let mut args: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|a| !a.starts_with("console="))
        .collect();
    args.extend(["console=ttyAMA0", "cairn.test=poweroff", "panic=-1"]);
    args.join(" ")
}

/// The values of a secrets file's `KEY=value` lines (those long enough to search for).
fn secret_values(secrets: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(secrets)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|v| v.len() >= 8)
        .collect()
}

fn check(
    node: &NodeSpec,
    result: &NodeResult,
    report: &BootReport,
    secrets: Option<&[u8]>,
) -> Result<(), Error> {
    let mut wrong = Vec::new();
    let expected_secrets = if secrets.is_some() {
        "present"
    } else {
        "absent"
    };
    if report.secrets != expected_secrets {
        wrong.push(format!(
            "secrets={}, expected {expected_secrets}",
            report.secrets
        ));
    }
    if let Some(secrets) = secrets {
        let console = std::fs::read_to_string(&report.log).unwrap_or_default();
        if !(console.contains("cairn-journal: begin") && console.contains("cairn-journal: end")) {
            wrong.push("no journal on the console to check for secrets".to_string());
        }
        for value in secret_values(secrets) {
            if console.contains(&value) {
                wrong.push(format!(
                    "a secret value ({}...) appears on the console or in the journal",
                    &value[..4]
                ));
            }
        }
    }
    if report.hostname != node.hostname.to_string() {
        wrong.push(format!(
            "hostname {:?}, expected {}",
            report.hostname, node.hostname
        ));
    }
    let role = match node.role {
        Role::ControlPlane => "control-plane",
        Role::Worker => "worker",
    };
    if report.role != role {
        wrong.push(format!("role {:?}, expected {role}", report.role));
    }
    match node.network.address {
        Some(a) if !report.addresses.contains(&a.to_string()) => wrong.push(format!(
            "addresses {:?}, expected {a} among them",
            report.addresses
        )),
        None if report.addresses.is_empty() => wrong.push("no address from DHCP".to_string()),
        _ => {}
    }
    if node.boot == BootMethod::Sd && !report.writable.starts_with("created:") {
        wrong.push(format!(
            "writable layer {:?}, expected a data partition created on first boot",
            report.writable
        ));
    }
    if let Some(w) = &report.rebooted_writable {
        if !w.starts_with("existing:") {
            wrong.push(format!(
                "after a reboot the writable layer is {w:?}, expected the existing data partition"
            ));
        }
    }
    if report.node_id != result.node_id.hex() {
        wrong.push(format!(
            "node id {}, expected {}",
            report.node_id,
            result.node_id.hex()
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "node {} booted but reported {} (console log: {})",
            result.node,
            wrong.join("; "),
            report.log.display()
        )))
    }
}

/// Runs QEMU until the guest powers off, the timeout passes, or the init fails.
fn run_once(
    mut cmd: Command,
    log_path: &Path,
    config: &BootConfig,
) -> Result<(BTreeMap<String, String>, f64), Error> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::msg(format!(
                "cannot run {:?}: {e} (install qemu-system-arm / qemu-system-x86)",
                cmd.get_program()
            ))
        })?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let mut log = std::fs::File::create(log_path)
        .map_err(|e| Error::msg(format!("{}: {e}", log_path.display())))?;
    let (tx, rx) = mpsc::channel::<String>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .split(b'\n')
            .map_while(Result::ok)
        {
            let _ = tx2.send(format!("qemu: {}", String::from_utf8_lossy(&line)));
        }
    });
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .split(b'\n')
            .map_while(Result::ok)
        {
            let _ = tx.send(String::from_utf8_lossy(&line).replace('\r', ""));
        }
    });
    let mut report = None;
    let mut failure = None;
    let mut tail: Vec<String> = Vec::new();
    loop {
        if start.elapsed() > config.timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::msg(format!(
                "no report within {} s (console log: {}):\n{}",
                config.timeout.as_secs(),
                log_path.display(),
                tail.join("\n")
            )));
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                if config.echo {
                    eprintln!("{line}");
                }
                if report.is_none() {
                    report = parse_report(&line);
                }
                if failure.is_none() && line.contains("cairn: ") && is_init_failure(&line) {
                    failure = Some(line.clone());
                }
                tail.push(line);
                if tail.len() > 40 {
                    tail.remove(0);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                let seconds = start.elapsed().as_secs_f64();
                return match (report, failure) {
                    (Some(r), _) => Ok((r, seconds)),
                    (None, Some(f)) => Err(Error::msg(format!(
                        "the initramfs failed: {f} (console log: {})",
                        log_path.display()
                    ))),
                    (None, None) => Err(Error::msg(format!(
                        "QEMU exited without a report from the node (console log: {}):\n{}",
                        log_path.display(),
                        tail.join("\n")
                    ))),
                };
            }
        }
    }
}

fn is_init_failure(line: &str) -> bool {
    [
        "did not appear",
        "cannot mount",
        "cannot fetch",
        "is not a squashfs",
        "does not have sha256",
        "got an address",
    ]
    .iter()
    .any(|s| line.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse() {
        let r = parse_report("[  OK  ] x\r cairn-node: hostname=pi-worker address=10.0.10.21/24,10.0.2.15/24 role=worker node=pi-worker id=ab secrets=absent").unwrap();
        assert_eq!(r["hostname"], "pi-worker");
        assert_eq!(r["address"], "10.0.10.21/24,10.0.2.15/24");
        assert_eq!(r["secrets"], "absent");
        assert!(parse_report("cairn: root /dev/vda").is_none());
    }

    #[test]
    fn qemu_cmdline_replaces_consoles() {
        assert_eq!(
            qemu_cmdline(
                "console=tty1 console=ttyS1,115200 cairn.root=PARTUUID=1-02 rootwait",
                Arch::Aarch64
            ),
            "cairn.root=PARTUUID=1-02 rootwait console=ttyAMA0 cairn.test=poweroff panic=-1"
        );
    }
}
