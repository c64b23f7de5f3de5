//! The QEMU command line of an SD node: the card (written by `flash`, secrets included), and
//! `virt` with the store's kernel and initramfs or the board's own model reading them from
//! the card.

use crate::{BootConfig, Machine};
use cairn_node::build::NodeResult;
use cairn_project::{Arch, NodeSpec};
use cairn_steps::Error;
use std::path::Path;
use std::process::Command;

pub(crate) fn qemu_binary(arch: Arch) -> &'static str {
    match arch {
        Arch::Aarch64 => "qemu-system-aarch64",
        Arch::Armv7 => "qemu-system-arm",
        Arch::X86_64 => "qemu-system-x86_64",
    }
}

/// The card and QEMU arguments of an SD boot, made once per attempt; `command` gives a
/// fresh QEMU command for each boot of that card.
pub(crate) struct SdBoot {
    pub(crate) program: &'static str,
    pub(crate) args: Vec<std::ffi::OsString>,
    pub(crate) append: String,
    pub(crate) machine: &'static str,
}

impl SdBoot {
    pub(crate) fn command(&self, test_mode: &str) -> Command {
        let mut cmd = Command::new(self.program);
        cmd.args(&self.args);
        cmd.arg("-append")
            .arg(format!("{} cairn.test={test_mode} panic=-1", self.append));
        cmd
    }
}

/// Sizes of the test card: `virt` takes any size, an SD card a power of two.
pub(crate) fn card_size(node: &NodeSpec, image_size: u64, machine: Machine) -> u64 {
    let data_start = cairn_node::disk::data_start(node).max(image_size);
    match machine {
        Machine::Virt => data_start + (512 << 20),
        Machine::Board => (data_start + (256 << 20)).next_power_of_two(),
    }
}

/// Prepares the card of an SD boot (flashed anew into `dir`, or the user's) and the QEMU
/// arguments that boot it.
pub(crate) fn sd_boot(
    store: &Path,
    node: &NodeSpec,
    result: &NodeResult,
    config: &BootConfig,
    dir: &Path,
) -> Result<SdBoot, Error> {
    let store_handle = cairn_store::Store::open(store, || {})?;
    let image = cairn_deliver::flash::NodeImage::from_store(&store_handle, &result.node)?;
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
            let found = cairn_disk::mbr::read_mbr(&sector).map_or(0, |(id, _)| id);
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
            cairn_deliver::flash::flash(
                &store_handle,
                &image,
                &cairn_deliver::flash::FlashConfig {
                    target: cairn_deliver::flash::Target::File(card.clone()),
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
                    "node {} is a {} board: QEMU has no model of it",
                    result.node, node.board
                ))
            })?;
            let (model, memory) = (qemu.machine, qemu.memory);
            append.extend(qemu.kernel_args.iter().map(|s| s.to_string()));
            // What the Pi's firmware would load: the files on the card's boot partition.
            let boot = cairn_deliver::card::BootPartition::open(&card)?;
            let dtb_name = node.board.info().dtb;
            for (name, out) in [
                ("vmlinuz", "vmlinuz"),
                ("initrd.img", "initrd.img"),
                (dtb_name, "board.dtb"),
            ] {
                let bytes = boot.read(name)?;
                let bytes = if out == "board.dtb" {
                    cairn_deliver::card::dtb_for_qemu(node.board, bytes)?
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_report;

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
