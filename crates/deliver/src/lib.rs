//! Delivery, the last stage: artifacts leave the store. `publish` and `pull` move images and
//! nodes to and from a registry, `serve` is the HTTP file server over store blobs, and
//! `boot` boots a node's artifact under QEMU and reads its console report.
//!
//! It reads what the earlier stages built (and builds it through them when missing); it
//! never changes how an artifact is made, so nothing here can change a digest.

pub mod boot;
pub mod bundle;
pub mod flash;
pub mod publish;
pub mod serve;
