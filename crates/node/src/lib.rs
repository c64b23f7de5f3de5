//! Nodes, the third stage: a node's own configuration rendered from `cluster.toml` and its
//! file (`config`, with the Kubernetes parts in `kubernetes`, the static scripts and units
//! as files under `files/`), the node id, and its boot medium: the SD-card image (`disk`)
//! or the PXE bundle's iPXE scripts (`pxe`), put together and tagged by `build`.
//!
//! It never renders a secret (only placeholders and where the secrets file is read from),
//! never rebuilds the shared base OS for one node's change, and never talks to a registry.

pub mod build;
pub mod config;
pub mod disk;
pub mod kubernetes;
pub mod pxe;
pub mod secrets;
