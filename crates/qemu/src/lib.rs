//! `boot-test`: boots a node's artifact under QEMU (software emulation) and checks what the
//! running system reports on its console: hostname, address, role and whether its secrets
//! arrived. aarch64 and armv7 boot QEMU's `virt` machine with the node's kernel, initramfs
//! and a card written by `flash` (secrets included); x86_64 boots by PXE through QEMU's
//! built-in TFTP and Cairn's HTTP server on loopback, which serves the node's secrets file
//! under the node's own path. With secrets, the node prints its journal before powering
//! off, and no secret value may appear anywhere on the console.

//!
//! A crate of its own beside the pipeline: only the command line (`boot-test`) and the tests
//! boot nodes. `sd` builds the QEMU command line of an SD node (a card written by `flash`),
//! `boot` runs the attempts (PXE through Cairn's HTTP server), `run` reads the console.

mod boot;
mod run;
mod sd;

pub use boot::boot_test;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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
