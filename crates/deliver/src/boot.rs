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
    /// Where the console logs go (`<node>-<attempt>.log`); `<node>.lock` there keeps two
    /// boot tests of one node from writing them at once.
    pub log_dir: PathBuf,
    /// Print the console as it comes.
    pub echo: bool,
    /// SD nodes: boot a second time from the same disk and check that the data partition
    /// made on the first boot is found again.
    pub reboot: bool,
    /// The node's secrets file: flashed onto the card (SD) or served (PXE). The node must
    /// then report `secrets=present`, without it `secrets=absent`.
    pub secrets: Option<Vec<u8>>,
    /// SD nodes: boot this card file as it is (written by `flash`, data partition and all)
    /// instead of a fresh temporary one; it is grown (sparse) to the test card's size when
    /// smaller. `secrets` then says what the card holds, and nothing is flashed.
    pub card: Option<PathBuf>,
    /// SD nodes: first boot the card with the node writing to its data partition, and kill
    /// QEMU at a random moment while it writes; then boot it again and check the data
    /// partition was checked and kept, with the last synced write whole.
    pub power_cut: bool,
    /// SD nodes: QEMU's generic machine or the node's own board model.
    pub machine: Machine,
}

/// Which QEMU machine an SD node boots on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Machine {
    /// `virt` with the card as a virtio disk and the kernel and initramfs from the store.
    #[default]
    Virt,
    /// The node's board (`raspi2b`, `raspi3b`, `raspi4b`) with the card on its SD
    /// controller, and the kernel, initramfs and device tree read from the card.
    Board,
}

/// A boot killed while the node wrote to its data partition.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerCut {
    /// Seconds between the node's first synced write and the kill.
    pub after_first_sync: f64,
    /// The last round the node said it synced before the kill: `round=N sha256=HEX`.
    pub last_synced: Option<String>,
    /// The last round the node said it was replacing `data` with: `round=N sha256=HEX`.
    pub last_replacing: Option<String>,
    pub log: PathBuf,
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
    /// What the initramfs said when it checked the data partition (`cairn: checked ...`).
    pub data_check: Option<String>,
    /// What an earlier `cairn.test=write` boot left: `round=N sha256=HEX`.
    pub kept: Option<String>,
    /// After `power_cut`: the boot that was cut.
    pub power_cut: Option<PowerCut>,
    /// The QEMU machine the node booted on.
    pub machine: String,
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
            "data_check": self.data_check,
            "kept": self.kept,
            "power_cut": self.power_cut.as_ref().map(|c| serde_json::json!({
                "after_first_sync": (c.after_first_sync * 10.0).round() / 10.0,
                "last_synced": c.last_synced,
                "last_replacing": c.last_replacing,
                "log": c.log.display().to_string(),
            })),
            "machine": self.machine,
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "log": self.log.display().to_string(),
        })
    }
}

/// Parses `cairn-node: hostname=... address=a,b role=... node=... id=... secrets=...`.
pub fn parse_report(line: &str) -> Option<BTreeMap<String, String>> {
    let rest = &line[line.find("cairn-node: hostname=")? + "cairn-node: ".len()..];
    // A kernel message may land on the console inside the line: `writable=tmpfs[  21.2]`.
    let rest = rest.split_once('[').map_or(rest, |(r, _)| r);
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

/// The card and QEMU arguments of an SD boot, made once per attempt; `command` gives a
/// fresh QEMU command for each boot of that card.
struct SdBoot {
    program: &'static str,
    args: Vec<std::ffi::OsString>,
    append: String,
    machine: &'static str,
}

impl SdBoot {
    fn command(&self, test_mode: &str) -> Command {
        let mut cmd = Command::new(self.program);
        cmd.args(&self.args);
        cmd.arg("-append")
            .arg(format!("{} cairn.test={test_mode} panic=-1", self.append));
        cmd
    }
}

/// Sizes of the test card: `virt` takes any size, an SD card a power of two.
fn card_size(node: &NodeSpec, image_size: u64, machine: Machine) -> u64 {
    let data_start = cairn_node::disk::data_start(node).max(image_size);
    match machine {
        Machine::Virt => data_start + (512 << 20),
        Machine::Board => (data_start + (256 << 20)).next_power_of_two(),
    }
}

/// Prepares the card of an SD boot (flashed anew into `dir`, or the user's) and the QEMU
/// arguments that boot it.
fn sd_boot(
    store: &Path,
    node: &NodeSpec,
    result: &NodeResult,
    config: &BootConfig,
    dir: &Path,
) -> Result<SdBoot, Error> {
    let store_handle = cairn_store::Store::open(store, || {})?;
    let image = crate::flash::NodeImage::from_store(&store_handle, &result.node)?;
    let size = card_size(node, image.size, config.machine);
    let card = match &config.card {
        Some(card) => {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(card)
                .map_err(|e| {
                    Error::msg(format!(
                        "card {}: {e} (write one with cargo xtask flash {} --file {})",
                        card.display(),
                        result.node,
                        card.display()
                    ))
                })?;
            let mut sector = [0u8; 512];
            std::io::Read::read_exact(&mut file, &mut sector)
                .map_err(|e| Error::at(format!("card {}", card.display()), e))?;
            let found = cairn_formats::mbr::read_mbr(&sector).map_or(0, |(id, _)| id);
            let ids = cairn_node::disk::DiskIds::from_node_id(&result.node_id);
            if found != ids.disk_id {
                return Err(Error::msg(format!(
                    "card {} has disk identifier {found:08x}, not node {}'s {:08x}: it holds another node's image (or none); flash it with cargo xtask flash {} first",
                    card.display(),
                    result.node,
                    ids.disk_id,
                    result.node
                )));
            }
            let len = file
                .metadata()
                .map_err(|e| Error::at(format!("card {}", card.display()), e))?
                .len();
            // Never shrunk; an SD card's size stays a power of two.
            let wanted = match config.machine {
                Machine::Virt => size.max(len),
                Machine::Board => size.max(len).next_power_of_two(),
            };
            if wanted != len {
                file.set_len(wanted)
                    .map_err(|e| Error::at(format!("growing card {}", card.display()), e))?;
            }
            card.clone()
        }
        None => {
            // The card as `flash` writes it (secrets included), larger than the image as
            // real cards are, so the data partition can be made; the store's image is not
            // touched.
            let card = dir.join("card.img");
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
            std::fs::OpenOptions::new()
                .write(true)
                .open(&card)
                .and_then(|f| f.set_len(size))
                .map_err(|e| Error::at(card.display(), e))?;
            card
        }
    };
    drop(store_handle);
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let mut arg = |a: &str| args.push(a.into());
    let mut append: Vec<String> = result
        .cmdline
        .split_whitespace()
        .filter(|a| !a.starts_with("console="))
        .map(str::to_string)
        .collect();
    append.push("console=ttyAMA0".into());
    let machine = match config.machine {
        Machine::Virt => {
            let blob = |title: &str| -> Result<String, Error> {
                let f = result.file(title).ok_or_else(|| {
                    Error::msg(format!(
                        "node {} has no {title} in its artifact",
                        result.node
                    ))
                })?;
                Ok(store
                    .join("blobs/sha256")
                    .join(f.digest.hex())
                    .display()
                    .to_string())
            };
            for a in ["-m", "1024", "-smp", "2", "-nographic", "-no-reboot"] {
                arg(a);
            }
            match node.arch {
                Arch::Aarch64 => ["-M", "virt", "-cpu", "cortex-a53"].map(&mut arg),
                _ => ["-M", "virt,highmem=off", "-cpu", "cortex-a15"].map(&mut arg),
            };
            for a in [
                "-kernel",
                &blob("vmlinuz")?,
                "-initrd",
                &blob("initrd.img")?,
            ] {
                arg(a);
            }
            arg("-drive");
            arg(&format!("if=none,id=d0,file={},format=raw", card.display()));
            for a in [
                "-device",
                "virtio-blk-device,drive=d0",
                "-netdev",
                "user,id=n0",
            ] {
                arg(a);
            }
            let mac = node.mac.map(|m| format!(",mac={m}")).unwrap_or_default();
            arg("-device");
            arg(&format!("virtio-net-device,netdev=n0{mac}"));
            "virt"
        }
        Machine::Board => {
            let qemu = node.board.info().qemu.ok_or_else(|| {
                Error::msg(format!(
                    "node {} is a {:?}: QEMU has no model of its board",
                    result.node, node.board
                ))
            })?;
            let (model, memory) = (qemu.machine, qemu.memory);
            append.extend(qemu.kernel_args.iter().map(|s| s.to_string()));
            // What the Pi's firmware would load: the files on the card's boot partition.
            let boot = crate::card::BootPartition::open(&card)?;
            let dtb_name = node.board.info().dtb;
            for (name, out) in [
                ("vmlinuz", "vmlinuz"),
                ("initrd.img", "initrd.img"),
                (dtb_name, "board.dtb"),
            ] {
                let bytes = boot.read(name)?;
                let bytes = if out == "board.dtb" {
                    crate::card::dtb_for_qemu(node.board, bytes)?
                } else {
                    bytes
                };
                std::fs::write(dir.join(out), bytes)
                    .map_err(|e| Error::at(format!("{}", dir.join(out).display()), e))?;
            }
            for a in ["-M", model, "-m", memory, "-nographic", "-no-reboot"] {
                arg(a);
            }
            for (flag, file) in [
                ("-kernel", "vmlinuz"),
                ("-initrd", "initrd.img"),
                ("-dtb", "board.dtb"),
            ] {
                arg(flag);
                arg(&dir.join(file).display().to_string());
            }
            arg("-drive");
            arg(&format!("if=sd,file={},format=raw", card.display()));
            // The Pi 2 and 3 have their Ethernet on USB: QEMU's USB network device on the
            // board's USB controller stands in for it (under TCG it enumerates minutes into
            // the boot, so its address is not checked). QEMU's raspi4b has no Ethernet.
            if qemu.usb_ethernet {
                for a in ["-netdev", "user,id=n0", "-device", "usb-net,netdev=n0"] {
                    arg(a);
                }
            }
            model
        }
    };
    Ok(SdBoot {
        program: qemu_binary(node.arch),
        args,
        append: append.join(" "),
        machine,
    })
}

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
fn run_once(
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
        let r = parse_report("cairn-node: hostname=w role=worker writable=tmpfs[   21.245399] cdrom: Uniform CD-ROM driver").unwrap();
        assert_eq!(r["writable"], "tmpfs");
        assert!(!r.contains_key("cdrom:"));
    }

    #[test]
    fn test_cards_fit_the_data_partition_and_the_sd_controller() {
        let node = NodeSpec::parse(
            Path::new("nodes/pi.toml"),
            "hostname = \"pi\"\narch = \"aarch64\"\nboard = \"rpi4\"\nboot = \"sd\"\nrole = \"worker\"\nimage = \"node-os\"\nroot_slot_mib = 512\n[network]\ndhcp = true\n",
        )
        .unwrap();
        let start = cairn_node::disk::data_start(&node);
        assert_eq!(start, (132 + 512) << 20);
        assert_eq!(
            card_size(&node, 300 << 20, Machine::Virt),
            start + (512 << 20)
        );
        assert_eq!(card_size(&node, 300 << 20, Machine::Board), 1 << 30);
    }
}
