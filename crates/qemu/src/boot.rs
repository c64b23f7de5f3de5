//! `boot_test`: the attempts, the card or the PXE server, and the report.

use crate::run::{check, run_once};
use crate::sd::{qemu_binary, sd_boot};
use crate::{BootConfig, BootReport, Machine, PowerCut};
use cairn_node::build::NodeResult;
use cairn_project::{BootMethod, NodeSpec};
use cairn_steps::Error;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Boots `result` (the artifact of `node`) and checks its report.
pub fn boot_test(
    store: &Path,
    node: &NodeSpec,
    result: &NodeResult,
    config: &BootConfig,
) -> Result<BootReport, Error> {
    std::fs::create_dir_all(&config.log_dir).map_err(|e| Error::at(config.log_dir.display(), e))?;
    if node.boot != BootMethod::Sd
        && (config.card.is_some() || config.power_cut || config.machine == Machine::Board)
    {
        return Err(Error::msg(format!(
            "node {} boots by PXE: a card, a power cut and a board model are for SD nodes",
            result.node
        )));
    }
    // Two boot tests of one node would write the same console logs: the second waits.
    let lock_path = config.log_dir.join(format!("{}.lock", result.node));
    let _lock = cairn_store::lock_exclusive(&lock_path, || {
        eprintln!(
            "waiting for another boot test of {} to finish (it holds {})",
            result.node,
            lock_path.display()
        )
    })
    .map_err(|e| Error::at(lock_path.display(), e))?;
    let mut last_error = Error::msg("no boot attempted");
    for attempt in 1..=config.attempts.max(1) {
        let log = config
            .log_dir
            .join(format!("{}-{attempt}.log", result.node));
        let mut _server = None;
        let tftp_dir = tempfile::tempdir().map_err(|e| Error::other(e))?;
        let (cmd, sd, machine) = match node.boot {
            BootMethod::Sd => {
                let sd = sd_boot(store, node, result, config, tftp_dir.path())?;
                let machine = sd.machine.to_string();
                (sd.command("poweroff"), Some(sd), machine)
            }
            BootMethod::Pxe => {
                let mut cmd = Command::new(qemu_binary(node.arch));
                cmd.args(["-m", "1024", "-smp", "2", "-nographic", "-no-reboot"]);
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
                    std::fs::write(&file, secrets).map_err(|e| Error::other(e))?;
                    routes.insert(format!("{prefix}/secrets.env"), file);
                }
                let server = cairn_pxe::http::serve("127.0.0.1:0", routes)?;
                // QEMU's user network reaches the host's loopback at 10.0.2.2.
                let base_url = format!("http://10.0.2.2:{}{prefix}", server.addr.port());
                let bootstrap = format!(
                    "#!ipxe\n# Cairn boot test: what a PXE server's DHCP answer would chain to.\nset base-url {base_url}\nset cairn-args cairn.test=poweroff panic=-1\nchain ${{base-url}}/boot.ipxe\n"
                );
                std::fs::write(tftp_dir.path().join("bootstrap.ipxe"), bootstrap)
                    .map_err(|e| Error::other(e))?;
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
                (cmd, None, "pc".to_string())
            }
        };
        let mut power_cut = None;
        if config.power_cut {
            let sd = sd.as_ref().expect("checked: an SD node");
            let cut_log = config
                .log_dir
                .join(format!("{}-{attempt}-cut.log", result.node));
            // A moment in the first seconds of writing, different each run.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let delay = Duration::from_millis(200 + u64::from(nanos) % 2800);
            match run_once(sd.command("write"), &cut_log, config, Some(delay)) {
                Ok(_) => {
                    let console = std::fs::read_to_string(&cut_log).unwrap_or_default();
                    power_cut = Some(PowerCut {
                        after_first_sync: delay.as_secs_f64(),
                        last_synced: console
                            .lines()
                            .filter_map(|l| l.split_once("cairn-test: synced "))
                            .map(|(_, r)| r.trim().to_string())
                            .next_back(),
                        last_replacing: console
                            .lines()
                            .filter_map(|l| l.split_once("cairn-test: replacing with "))
                            .map(|(_, r)| r.trim().to_string())
                            .next_back(),
                        log: cut_log,
                    });
                }
                Err(e) => {
                    last_error = e.context("the boot to cut while writing");
                    continue;
                }
            }
        }
        let second = if config.reboot {
            sd.as_ref().map(|sd| sd.command("poweroff"))
        } else {
            None
        };
        match run_once(cmd, &log, config, None) {
            Ok((fields, seconds)) => {
                let mut rebooted_log = None;
                let rebooted_writable = match second {
                    Some(again) => {
                        let log2 = config
                            .log_dir
                            .join(format!("{}-{attempt}-reboot.log", result.node));
                        rebooted_log = Some(log2.clone());
                        match run_once(again, &log2, config, None) {
                            Ok((f, _)) => Some(f.get("writable").cloned().unwrap_or_default()),
                            Err(e) => {
                                last_error = e.context("the second boot");
                                continue;
                            }
                        }
                    }
                    None => None,
                };
                let console = std::fs::read_to_string(&log).unwrap_or_default();
                let said = |prefix: &str| {
                    console
                        .lines()
                        .find_map(|l| l.split_once(prefix).map(|(_, r)| r.trim().to_string()))
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
                    data_check: said("cairn: checked the data partition ")
                        .map(|r| format!("checked the data partition {r}")),
                    kept: said("cairn-test: kept "),
                    power_cut,
                    machine,
                    seconds,
                    log: log.clone(),
                };
                check(node, result, &report, config)?;
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

/// The values of a secrets file's `KEY=value` lines (those long enough to search for).
pub(crate) fn secret_values(secrets: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(secrets)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|v| v.len() >= 8)
        .collect()
}
