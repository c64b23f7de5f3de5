//! Root filesystems, the second stage: packages unpacked (never installed) and assembled
//! (`rootfs`), container images as OCI layers, manifests and indexes (`container`), and the
//! base OS of an OS image per arch (`base`): what maintainer scripts would have done, done
//! declaratively (`maintainer`), `modules.dep` (`modules`), the zstd squashfs, the kernel
//! and Cairn's initramfs (`initramfs`, its init and DHCP scripts beside it as files).
//!
//! It knows nothing of nodes, clusters or registries (a node adds its extras through
//! `base::OsExtras`), and reads only the lock and the specs.

pub mod base;
pub mod container;
pub mod hwdb;
pub mod initramfs;
pub mod ldconfig;
pub mod maintainer;
pub mod modules;
pub mod parallel;
pub mod rootfs;
mod squashfs;
mod unpack;
