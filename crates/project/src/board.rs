//! What each board is, in one place: the arches it runs, how it boots, the firmware and
//! device trees its boot partition needs, its serial console, and QEMU's model of it for
//! `boot-test --machine board`. Adding a board is one entry of [`Board::info`] (and a
//! variant of [`Board`]) plus its test below.

use crate::node::{Board, BootMethod};
use crate::values::Arch;

/// Everything Cairn knows about one board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardInfo {
    /// The arches a node of this board may be built for.
    pub arches: &'static [Arch],
    pub boot: BootMethod,
    /// Firmware files the board's boot firmware loads from the boot partition.
    pub firmware: &'static [&'static str],
    /// The device tree the firmware loads for this board (empty for a PC).
    pub dtb: &'static str,
    /// Device trees of the board's variants, copied to the card when the kernel has them.
    pub variant_dtbs: &'static [&'static str],
    /// The kernel's serial console on the board's pins.
    pub serial_console: &'static str,
    /// QEMU's model of the board, when it has one.
    pub qemu: Option<QemuBoard>,
}

/// QEMU's model of a board (`boot-test --machine board`) and what a boot on it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QemuBoard {
    /// `-M`.
    pub machine: &'static str,
    /// `-m`: QEMU's model fixes the board's memory size.
    pub memory: &'static str,
    /// Kernel arguments the model needs.
    pub kernel_args: &'static [&'static str],
    /// (node, property) pairs removed from the test's copy of the board's device tree,
    /// for hardware QEMU does not model (the card's image is never changed).
    pub dtb_removals: &'static [(&'static str, &'static str)],
    /// Whether the board's Ethernet is on USB (QEMU's usb-net stands in for it).
    pub usb_ethernet: bool,
}

impl Board {
    /// The name a node file gives the board (`board = "rpi4"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Board::Rpi4 => "rpi4",
            Board::Rpi3 => "rpi3",
            Board::Rpi2 => "rpi2",
            Board::Pc => "pc",
        }
    }

    pub fn info(self) -> &'static BoardInfo {
        match self {
            Board::Rpi4 => &RPI4,
            Board::Rpi3 => &RPI3,
            Board::Rpi2 => &RPI2,
            Board::Pc => &PC,
        }
    }
}

const RPI4: BoardInfo = BoardInfo {
    arches: &[Arch::Aarch64, Arch::Armv7],
    boot: BootMethod::Sd,
    firmware: &["start4.elf", "fixup4.dat"],
    dtb: "bcm2711-rpi-4-b.dtb",
    variant_dtbs: &["bcm2711-rpi-400.dtb", "bcm2711-rpi-cm4.dtb"],
    // The Pi 3 and 4 put Bluetooth on the PL011, leaving the mini UART (ttyS1) on the pins.
    serial_console: "ttyS1",
    qemu: Some(QemuBoard {
        machine: "raspi4b",
        memory: "2G",
        // QEMU models neither the Pi 4's clocks nor its interrupt and I2C controllers of
        // the brcmstb kind; the kernel must not wait for them.
        kernel_args: &[
            "clk_ignore_unused",
            "initcall_blacklist=brcmstb_l2_driver_init,brcmstb_i2c_driver_init",
        ],
        // The SD controllers' regulators and power sequence are not modelled, and the
        // kernel would wait for them forever; QEMU also puts the card on the older
        // controller (mmc@7e300000), which the Pi 4's tree marks as a non-removable
        // Wi-Fi slot.
        dtb_removals: &[
            ("mmc@7e340000", "vqmmc-supply"),
            ("mmc@7e340000", "vmmc-supply"),
            ("mmc@7e300000", "mmc-pwrseq"),
            ("mmc@7e300000", "non-removable"),
        ],
        // QEMU's raspi4b models no Ethernet at all.
        usb_ethernet: false,
    }),
};

const RPI3: BoardInfo = BoardInfo {
    arches: &[Arch::Aarch64, Arch::Armv7],
    boot: BootMethod::Sd,
    firmware: &["bootcode.bin", "start.elf", "fixup.dat"],
    dtb: "bcm2837-rpi-3-b.dtb",
    variant_dtbs: &["bcm2837-rpi-3-b-plus.dtb", "bcm2837-rpi-3-a-plus.dtb"],
    serial_console: "ttyS1",
    qemu: Some(QemuBoard {
        machine: "raspi3b",
        memory: "1G",
        kernel_args: &[],
        dtb_removals: &[],
        usb_ethernet: true,
    }),
};

const RPI2: BoardInfo = BoardInfo {
    arches: &[Arch::Armv7],
    boot: BootMethod::Sd,
    firmware: &["bootcode.bin", "start.elf", "fixup.dat"],
    dtb: "bcm2836-rpi-2-b.dtb",
    variant_dtbs: &["bcm2837-rpi-3-b.dtb"],
    serial_console: "ttyAMA0",
    qemu: Some(QemuBoard {
        machine: "raspi2b",
        memory: "1G",
        kernel_args: &[],
        // With DMA, sdhost-bcm2835 on QEMU's model sometimes waits 10 s for an interrupt
        // that does not come ("timeout waiting for hardware interrupt"), and the driver's
        // DMA completion then runs on the request the timeout already ended (an oops in
        // `bcm2835_finish_data`, seen in CI on both attempts of one run). Without `dmas`
        // the driver moves the data itself (PIO), as it does on any board without a DMA
        // channel.
        dtb_removals: &[("mmc@7e202000", "dmas"), ("mmc@7e202000", "dma-names")],
        usb_ethernet: true,
    }),
};

const PC: BoardInfo = BoardInfo {
    arches: &[Arch::X86_64],
    boot: BootMethod::Pxe,
    firmware: &[],
    dtb: "",
    variant_dtbs: &[],
    serial_console: "ttyS0",
    qemu: None,
};

/// Whether a kernel package's device tree is one the base OS keeps for the Pi boards'
/// boot partitions: the BCM27xx and BCM28xx family.
pub fn is_pi_dtb(file_name: &str) -> bool {
    (file_name.starts_with("bcm27") || file_name.starts_with("bcm28"))
        && file_name.ends_with(".dtb")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Board; 4] = [Board::Rpi4, Board::Rpi3, Board::Rpi2, Board::Pc];

    #[test]
    fn every_sd_board_has_firmware_a_kept_device_tree_and_a_qemu_model() {
        for board in ALL {
            let info = board.info();
            assert!(!info.arches.is_empty(), "{board:?}");
            match info.boot {
                BootMethod::Sd => {
                    assert!(!info.firmware.is_empty(), "{board:?}");
                    for dtb in std::iter::once(&info.dtb).chain(info.variant_dtbs) {
                        assert!(is_pi_dtb(dtb), "{board:?}: the base OS keeps {dtb}");
                    }
                    let qemu = info.qemu.expect("an SD board boots on QEMU's model");
                    assert!(qemu.machine.starts_with("raspi"), "{board:?}");
                }
                BootMethod::Pxe => {
                    assert!(info.firmware.is_empty() && info.dtb.is_empty());
                    assert!(info.qemu.is_none());
                }
            }
        }
    }

    #[test]
    fn the_examples_boards_are_what_their_firmware_expects() {
        let pi4 = Board::Rpi4.info();
        assert_eq!(pi4.firmware, ["start4.elf", "fixup4.dat"]);
        assert_eq!(pi4.dtb, "bcm2711-rpi-4-b.dtb");
        assert_eq!(pi4.serial_console, "ttyS1");
        assert_eq!(pi4.qemu.unwrap().machine, "raspi4b");
        let pi2 = Board::Rpi2.info();
        assert_eq!(pi2.arches, [Arch::Armv7]);
        assert_eq!(pi2.serial_console, "ttyAMA0");
        assert!(pi2.qemu.unwrap().usb_ethernet);
        assert!(!is_pi_dtb("bcm2711-rpi-4-b.dtbo") && !is_pi_dtb("rk3399.dtb"));
    }
}

/// As the node file writes it.
impl std::fmt::Display for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
