//! Delivery, the last stage: artifacts leave the store. `publish` and `pull` move images and
//! nodes to and from a registry; `flash` writes a node's card; `bundle` exports and imports
//! everything as one file; `boot` boots a node's artifact under QEMU (served by
//! `cairn-pxe`'s HTTP server for PXE nodes) and reads its console report.
//!
//! It reads what the earlier stages built (and builds it through them when missing); it
//! never changes how an artifact is made, so nothing here can change a digest.

pub mod attest;
pub mod bundle;
pub mod card;
pub mod flash;
pub mod publish;
pub mod sbom;
pub mod signed;
pub mod verify;
