//! One QEMU run, read from its console, and the checks of what the node reported.

use crate::boot::secret_values;
use crate::{BootConfig, BootReport, Machine, parse_report};
use cairn_node::build::NodeResult;
use cairn_project::{BootMethod, NodeSpec, Role};
use cairn_steps::Error;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(crate) fn check(
    node: &NodeSpec,
    result: &NodeResult,
    report: &BootReport,
    config: &BootConfig,
) -> Result<(), Error> {
    let secrets = config.secrets.as_deref();
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
    // On a board model no address is checked: QEMU's raspi4b has no Ethernet (the Pi 4's
    // GENET is not modelled), and the Pi 2's USB one comes up too late under TCG.
    let has_nic = config.machine == Machine::Virt;
    match node.network.address {
        Some(a) if has_nic && !report.addresses.contains(&a.to_string()) => wrong.push(format!(
            "addresses {:?}, expected {a} among them",
            report.addresses
        )),
        None if has_nic && report.addresses.is_empty() => {
            wrong.push("no address from DHCP".to_string())
        }
        _ => {}
    }
    if node.boot == BootMethod::Sd {
        // A fresh test card gets its data partition now; a card that was booted before,
        // or that a power cut left, must keep its own.
        let expected = match (&config.card, config.power_cut) {
            (_, true) => "existing:",
            (None, false) => "created:",
            (Some(_), false) => "",
        };
        if !report.writable.starts_with(expected)
            || !(report.writable.starts_with("created:")
                || report.writable.starts_with("existing:"))
        {
            wrong.push(format!(
                "writable layer {:?}, expected {}",
                report.writable,
                match expected {
                    "created:" => "a data partition created on first boot",
                    "existing:" => "the data partition the cut boot wrote to",
                    _ => "a data partition",
                }
            ));
        }
        if report.writable.starts_with("existing:") && report.data_check.is_none() {
            wrong.push("the existing data partition was mounted without a check".to_string());
        }
    }
    if let Some(cut) = &report.power_cut {
        match (&cut.last_synced, &report.kept) {
            (None, _) => wrong.push(format!(
                "the node synced no write before the power cut (console log: {})",
                cut.log.display()
            )),
            (Some(_), None) => {
                wrong.push("after the power cut the node's data file is gone".to_string())
            }
            (Some(synced), Some(kept)) => {
                // The synced round, or the one replacing it when the rename got through.
                let whole = kept == synced || cut.last_replacing.as_ref() == Some(kept);
                if !whole {
                    wrong.push(format!(
                        "after the power cut the data file is {kept}; the last write synced before it was {synced}"
                    ));
                }
            }
        }
    }
    if let Some(log2) = &report.rebooted_log {
        let again = std::fs::read_to_string(log2).unwrap_or_default();
        if again.contains("recovering journal") {
            wrong.push(format!(
                "after a clean power-off the data partition's journal was replayed: it was not remounted read-only at shutdown (console log: {})",
                log2.display()
            ));
        }
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

/// Runs QEMU until the guest powers off, the timeout passes, or the init fails. With
/// `cut`, QEMU is killed (a power cut) that long after the node's first synced write.
pub(crate) fn run_once(
    mut cmd: Command,
    log_path: &Path,
    config: &BootConfig,
    cut: Option<Duration>,
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
    let mut log = std::fs::File::create(log_path).map_err(|e| Error::at(log_path.display(), e))?;
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
    let mut cut_at = None;
    loop {
        if cut_at.is_some_and(|at| Instant::now() >= at) {
            let _ = child.kill();
            let _ = child.wait();
            let _ = writeln!(log, "cairn boot-test: QEMU killed (a power cut)");
            return Ok((report.unwrap_or_default(), start.elapsed().as_secs_f64()));
        }
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
                // QEMU's raspi boards cannot power off: the kernel halts instead.
                if line.contains("reboot: Power off not available")
                    || line.contains("reboot: System halted")
                {
                    let _ = child.kill();
                }
                if let Some(delay) = cut
                    && cut_at.is_none()
                    && line.contains("cairn-test: synced ")
                {
                    cut_at = Some(Instant::now() + delay);
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
                    _ if cut.is_some() => Err(Error::msg(format!(
                        "QEMU exited before the power cut, the node wrote nothing (console log: {}):\n{}",
                        log_path.display(),
                        tail.join("\n")
                    ))),
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

pub(crate) fn is_init_failure(line: &str) -> bool {
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
