//! Debian archives: signed Release files, Packages indexes, dependency resolution and
//! native `.deb` unpacking.
//!
//! Architecture invariant: this crate does no network I/O. Callers fetch bytes and hand
//! them over; everything here is parsing, checking and resolving.

pub mod control;
pub mod deb;
pub mod kmod;
pub mod kmod_index;
pub mod openpgp;
pub mod packages;
pub mod release;
pub mod resolve;
pub mod version;

pub use deb::{DebEntry, DebEntryKind, DebError, unpack_data};
pub use packages::{Dependency, Package, PackageIndex, Relation};
pub use release::{Release, ReleaseError, verify_inrelease};
pub use resolve::{Resolution, ResolveError, resolve};
