//! The build graph: specs and lock to steps (lock, fetch, unpack, assemble, layers,
//! manifests), each keyed for the action cache.

pub mod bench;
pub mod bench_node;
pub mod bench_push;
pub mod boot;
pub mod disk;
pub mod error;
pub mod fetch;
pub mod image;
pub mod initramfs;
pub mod kubernetes;
pub mod lock;
pub mod lockfile;
pub mod mirror;
pub mod node;
pub mod node_config;
pub mod os;
pub mod progress;
pub mod publish;
pub mod pxe;
pub mod remote_cache;
pub mod rootfs;
pub mod serve;

pub use cairn_registry;
pub use error::Error;

use std::path::PathBuf;

/// The version of Cairn's builders; part of every step key, so a change of any builder's
/// output is a change of this number.
pub const BUILDER_VERSION: &str = "cairn-builders-3";

/// Where things are, decided once by the command line.
#[derive(Debug, Clone)]
pub struct Context {
    /// The project root (holds `images/`, `nodes/`, `inputs.lock`).
    pub root: PathBuf,
    /// The store (`artifacts/` by default).
    pub store: PathBuf,
    /// Download cache shared between checkouts.
    pub cache: PathBuf,
    /// Show progress bars (on a terminal, unless `--quiet` or `--json`).
    pub progress: bool,
    /// A registry used as a shared build cache (`--cache`), if any.
    pub remote_cache: Option<publish::RegistryOptions>,
    /// Steps taken from the remote cache instead of built, in this process.
    pub substituted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Set after the remote cache failed once: it is not asked again in this process.
    pub remote_cache_off: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Context {
    /// The default download cache: `$CAIRN_CACHE_DIR`, else `$XDG_CACHE_HOME/cairn`, else
    /// `~/.cache/cairn`.
    pub fn default_cache() -> PathBuf {
        if let Some(dir) = std::env::var_os("CAIRN_CACHE_DIR") {
            return PathBuf::from(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("cairn");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        home.join(".cache/cairn")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.root.join("inputs.lock")
    }
}
