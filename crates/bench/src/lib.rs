//! Benchmarks: Cairn against the peer tools in the same run (`pigz`, `sha256sum`, `dd`,
//! `mksquashfs`, `skopeo`, `mmdebstrap`). They report; tests never time. Nothing in the pipeline depends
//! on this crate.

pub mod flash;
pub mod image;
pub mod mirror;
pub mod node;
pub mod push;
