//! Inputs, the first stage: what a build may read, pinned. Where Debian packages come from
//! (`mirror`), verified downloads into the shared cache (`fetch`), the lock's model and
//! canonical text (`lockfile`), the `lock` command that resolves and pins every image's
//! packages (`lock`), and the Kubernetes binaries as pinned URL inputs (`kubernetes`).
//!
//! It must not build anything: it hands later stages verified bytes and pins, nothing else.
//! `lock` is the only step in Cairn that looks at what a mirror currently offers.

pub mod fetch;
pub mod kubernetes;
pub mod lock;
pub mod lockfile;
pub mod mirror;
