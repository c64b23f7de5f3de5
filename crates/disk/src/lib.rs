//! Pure, deterministic writers and readers of what a disk image is made of: the MBR
//! partition table, the FAT32 boot filesystem, and the bmap a flasher writes by.
//!
//! Architecture invariant: as in `cairn-formats`, nothing here reads the clock, the
//! environment or the filesystem. Every writer takes `impl Write` and data; time is a
//! parameter.

pub mod bmap;
pub mod fat;
pub mod mbr;
