//! Pure, deterministic writers for the formats Cairn produces.
//!
//! Architecture invariant: nothing in this crate reads the clock, the environment or the
//! filesystem. Every writer takes `impl Write` and data; time is a parameter.

pub mod cpio;
pub mod digest;
pub mod elf;
pub mod fdt;
pub mod gzip;
pub mod hwdb;
pub mod json;
pub mod ldcache;
pub mod tar;

pub use digest::{Digest, DigestParseError, HashingReader, HashingWriter};
