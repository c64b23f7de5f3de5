//! Reading a flashed card as a board's firmware would: the files of its boot partition
//! (partition 1, FAT32). And the device tree QEMU's board models can boot with: QEMU does
//! not model every part the board's real device tree describes, so `boot-test` removes
//! those properties from its copy; the card itself is never changed.

use cairn_project::Board;
use cairn_steps::Error;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The boot partition of a card image.
pub struct BootPartition {
    card: PathBuf,
    file: File,
    offset: u64,
}

impl BootPartition {
    pub fn open(card: &Path) -> Result<BootPartition, Error> {
        let err = |e: std::io::Error| Error::at(format!("card {}", card.display()), e);
        let mut file = File::open(card).map_err(err)?;
        let mut sector = [0u8; 512];
        file.read_exact(&mut sector).map_err(err)?;
        let (_, partitions) = cairn_disk::mbr::read_mbr(&sector)
            .ok_or_else(|| Error::msg(format!("card {} has no partition table", card.display())))?;
        let (_, boot) = partitions.iter().find(|(n, _)| *n == 1).ok_or_else(|| {
            Error::msg(format!(
                "card {} has no partition 1 (the boot partition)",
                card.display()
            ))
        })?;
        Ok(BootPartition {
            card: card.to_path_buf(),
            file,
            offset: u64::from(boot.start_lba) * 512,
        })
    }

    /// The file `name` of the partition's root directory.
    pub fn read(&self, name: &str) -> Result<Vec<u8>, Error> {
        // read_root_file seeks to every place it reads.
        let mut file = &self.file;
        cairn_disk::fat::read_root_file(&mut file, self.offset, name)
            .map_err(|e| Error::at(format!("card {}: boot partition", self.card.display()), e))?
            .ok_or_else(|| {
                Error::msg(format!(
                    "card {} has no {name} on its boot partition",
                    self.card.display()
                ))
            })
    }
}

/// The board's device tree without the properties QEMU's model of the board cannot honour
/// (`QemuBoard::dtb_removals`).
pub fn dtb_for_qemu(board: Board, mut dtb: Vec<u8>) -> Result<Vec<u8>, Error> {
    let remove = board.info().qemu.map_or(&[][..], |q| q.dtb_removals);
    let removed = cairn_formats::fdt::remove_properties(&mut dtb, remove)
        .map_err(|e| Error::at(format!("the {board:?} device tree on the card"), e))?;
    if removed != remove.len() {
        return Err(Error::msg(format!(
            "the {board:?} device tree on the card has {removed} of the {} properties QEMU cannot model ({remove:?}): it is not the tree this test knows",
            remove.len()
        )));
    }
    Ok(dtb)
}
