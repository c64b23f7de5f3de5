//! Cairn's integration tests: one binary, a module per area, so the workspace links once.
//!
//! Two tiers (ARCHITECTURE.md, "Test tiers"):
//! - fast: `cargo test --workspace` runs every unit test and the tests here that need no
//!   network, no root and no QEMU (servers on loopback, repositories the test writes);
//! - slow: the tests marked `#[ignore = "slow: …"]` (QEMU boots, the real Debian mirror,
//!   loop devices, network namespaces), run with the fast ones by `cargo xtask test`
//!   (`--include-ignored`), which CI runs. A slow test never skips: a missing tool fails it,
//!   naming the tool.

mod support;

mod bundle;
mod ci_recipe;
mod faults;
mod flash;
mod hermetic;
mod images;
mod layers;
mod mirror;
mod nodes;
mod os;
mod pins;
mod pxe;
mod registry;
mod registry_faults;
mod sbom;
mod scripts;
mod trust;
mod verify;
